/**
 * `rerun_job` (docs/PROTOCOL.md §6.9): a failed job whose inputs are still kept
 * (FAILED_INPUT_RETENTION) runs again as a new job, with a new id and `rerun_of`
 * naming the failed one, with the same options unless new ones are given. No byte is
 * uploaded: the inputs move to the new job (one rename of the input directory, then
 * the store), so the failed job no longer has them.
 *
 * @module
 */
import * as path from "node:path";
import type { Channel } from "../wire/channel.ts";
import { errorMessage } from "../errors.ts";
import {
  type ClientMessage,
  type MessageOf,
  parseReconOptions,
  type ReconOptions,
} from "../wire/protocol.ts";
import type { JobRecord } from "./job_store.ts";
import type { Intake } from "./intake.ts";
import { checkScript } from "./worker.ts";
import { Refusal, utc } from "./refusal.ts";
import { checkPriority, findJob, type SessionContext } from "./session_context.ts";
import { rerunDestinations } from "./destinations.ts";

/** Re-run the failed job `message.job_id` as a new job; sends `job_queued` for it. */
export async function rerunJob(
  channel: Channel,
  message: MessageOf<ClientMessage, "rerun_job">,
  context: SessionContext,
): Promise<Intake> {
  const { store, log, peer } = context;
  const old = findJob(context, message.job_id);
  if (old.state !== "failed") {
    throw new Refusal(`job ${old.id} ${stateWords(old.state)}; only a failed job can be re-run`);
  }
  const rerun = old.inputsRemoved ? store.rerunOf(old.id) : undefined;
  if (rerun) {
    throw new Refusal(
      `the inputs of job ${old.id} went to its re-run ${rerun.id} (${rerun.state}); ` +
        `re-run that job if it failed`,
    );
  }
  if (old.inputsRemoved || (old.inputsExpireAt ?? 0) <= context.now()) {
    const when = old.inputsExpireAt ?? old.finishedAt;
    throw new Refusal(
      `the inputs of job ${old.id} were not kept${
        when ? ` after ${utc(when)}` : ""
      } (FAILED_INPUT_RETENTION); submit its files again`,
      "expired",
    );
  }
  if (context.shuttingDown()) throw new Refusal("the server is shutting down; try again later");
  let options: ReconOptions = old.options;
  if (message.client_recon_options_json !== undefined) {
    try {
      options = parseReconOptions(message.client_recon_options_json);
    } catch (error) {
      throw new Refusal(errorMessage(error));
    }
  }
  const scriptProblem = await checkScript(context.reconScript);
  if (scriptProblem) throw new Refusal(`${scriptProblem}; tell the recon box's administrator`);
  const id = crypto.randomUUID();
  const inputs = store.inputs(old.id);
  const record = store.createReceiving({
    id,
    // The failed job's priority and options, unless the re-run names others.
    priority: checkPriority(message.priority ?? old.priority, context),
    client: context.client.name,
    peer,
    keyId: channel.keyId,
    options,
    inputDir: path.join(context.reconFilePath, `job_${id}_input`),
    outputDir: path.join(context.reconDicomDir, `job_${id}_output`),
    logPath: path.join(context.reconFilePath, `job_${id}.log`),
    files: inputs.map((input) => ({
      name: input.name,
      size: input.size,
      originalPath: input.originalPath,
    })),
    uploadExpiresAt: context.now() + context.uploadResumeWindow * 1000,
    rerunOf: old.id,
    deliverTo: rerunDestinations(old, context),
  });
  // The directory first: if it cannot move, the failed job keeps its inputs as they
  // were; if the store then refuses, it moves back.
  try {
    await Deno.rename(old.inputDir, record.inputDir);
    try {
      store.takeInputs(old.id, id);
    } catch (error) {
      await Deno.rename(record.inputDir, old.inputDir);
      throw error;
    }
  } catch (error) {
    const reason = `cannot move the inputs of job ${old.id} to the re-run: ${errorMessage(error)}`;
    store.markFailed(id, { reason, exitCode: null, stderrTail: [] });
    log.error(`job ${id}: ${reason}`);
    throw new Refusal(reason);
  }
  // Subscribed before the job can start, so its job_started is never missed.
  const subscription = context.scheduler.subscribe(id);
  store.markQueued(id);
  context.scheduler.wake();
  log.info(
    `${peer}: job ${id}: queued, a re-run of failed job ${old.id} with its ${inputs.length} kept input(s)`,
  );
  try {
    await channel.send({ type: "job_queued", job_id: id, files_received: inputs.length });
  } catch (error) {
    subscription.close(); // the job runs on; its client follows it when it reconnects
    throw error;
  }
  return { id, subscription };
}

/** A job's state as the end of "job X …": "has succeeded", "is queued". */
function stateWords(state: JobRecord["state"]): string {
  switch (state) {
    case "succeeded":
    case "expired":
      return `has ${state}`;
    case "cancelled":
      return "was cancelled";
    case "receiving":
      return "is still being uploaded";
    default:
      return `is ${state}`;
  }
}
