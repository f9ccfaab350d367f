/**
 * Taking a job in (docs/PROTOCOL.md §6.1 steps 1–4, §6.8): read the announcement
 * (version 1: the `files` of `submit_recon_job`; versions 2 and 3: `file_count`
 * `input_file` messages after it), check it, admit it against the free disk space,
 * record the job (`receiving`, with its id) before the first `request_file`, pull each
 * file with `request_file`, queue the job and send `job_queued`; or, for
 * `resume_upload`, pull what a cut-off upload still lacks.
 *
 * The files themselves are pulled by lib/server/upload.ts, which also keeps a cut-off
 * version 3 upload resumable.
 *
 * @module
 */
import * as path from "node:path";
import type { Channel } from "../wire/channel.ts";
import { errorMessage, ProtocolError } from "../errors.ts";
import { checkJobFileNames } from "../wire/file_names.ts";
import {
  type ClientMessage,
  type ClientMessageV1,
  type ClientMessageV2,
  type FileEntry,
  type MessageOf,
  parseClientMessage,
  parseReconOptions,
  type Priority,
  type ReconOptions,
} from "../wire/protocol.ts";
import type { JobRecord } from "./job_store.ts";
import { checkScript } from "./worker.ts";
import { heldBytes } from "./job_files.ts";
import { failUpload, type Intake, pullInputs } from "./upload.ts";
import { Refusal, utc } from "./refusal.ts";
import { UPLOAD_WINDOW_OVER } from "./sweeper.ts";
import { checkPriority, findJob, type SessionContext } from "./session_context.ts";
import { jobDestinations } from "./destinations.ts";

export { Refusal } from "./refusal.ts";
export type { Intake } from "./upload.ts";

/** `submit_recon_job` of any protocol version. */
export type Submit =
  | MessageOf<ClientMessage, "submit_recon_job">
  | MessageOf<ClientMessageV2, "submit_recon_job">
  | MessageOf<ClientMessageV1, "submit_recon_job">;

/** A submission as announced, before any check. */
interface Announcement {
  files: FileEntry[];
  optionsJson: string;
}

/**
 * Read the whole announcement. From version 2 on the `input_file` messages follow
 * `submit_recon_job` unasked, so they are read before any refusal, which keeps the
 * session in step; anything else in their place is a protocol error.
 */
async function readAnnouncement(channel: Channel, message: Submit): Promise<Announcement> {
  const optionsJson = message.client_recon_options_json;
  if ("files" in message) return { files: message.files, optionsJson };
  const files: FileEntry[] = [];
  for (let i = 0; i < message.file_count; i++) {
    const incoming = await channel.receive();
    const entry = incoming.type === "message"
      ? parseClientMessage(incoming.message, channel.version)
      : undefined;
    if (entry?.type !== "input_file") {
      throw new ProtocolError(
        `client sent ${entry?.type ?? incoming.type} where input_file ${
          i + 1
        } of ${message.file_count} belongs`,
      );
    }
    files.push({ name: entry.name, size: entry.size, ...pathOnClient(entry) });
  }
  return { files, optionsJson };
}

function pathOnClient(file: FileEntry): { original_path_on_client?: string } {
  return file.original_path_on_client === undefined
    ? {}
    : { original_path_on_client: file.original_path_on_client };
}

function checkSubmission(announced: Announcement, context: SessionContext): {
  files: FileEntry[];
  options: ReconOptions;
  total: number;
} {
  if (context.shuttingDown()) throw new Refusal("the server is shutting down; try again later");
  if (announced.files.length === 0) throw new Refusal("the job has no files");
  let options: ReconOptions;
  try {
    options = parseReconOptions(announced.optionsJson);
    checkJobFileNames(announced.files.map((file) => file.name));
  } catch (error) {
    throw new Refusal(errorMessage(error));
  }
  const total = announced.files.reduce((sum, file) => sum + file.size, 0);
  if (total > context.maxJobBytes) {
    throw new Refusal(
      `the job's ${total} bytes exceed MAX_JOB_BYTES (${context.maxJobBytes}) on the server`,
    );
  }
  const files = announced.files.map((file) => ({
    name: file.name,
    size: file.size,
    ...pathOnClient(file),
  }));
  return { files, options, total };
}

/**
 * Bytes that uploads still have to write: every `receiving` job's announced size less
 * what it already holds (its verified bytes are on disk, so free space counts them).
 */
export function bytesToCome(context: SessionContext): number {
  let bytes = 0;
  for (const job of context.store.inState("receiving")) {
    bytes += Math.max(0, job.inputBytes - (context.leases.heldBytes.get(job.id) ?? 0));
  }
  return bytes;
}

/**
 * Admit a job of `total` bytes against the free disk space and record it, or refuse
 * it. Kept inputs and results are already on disk; what uploads in progress and cut
 * off ones still have to write is booked. The check and the record happen with no
 * await between them (the store is synchronous), so two submissions checked at the
 * same time cannot both count the same free space.
 */
async function admit(
  context: SessionContext,
  total: number,
  record: () => JobRecord,
): Promise<JobRecord> {
  const dir = context.reconFilePath;
  const margin = context.diskFreeMargin;
  const free = await context.diskFree(dir);
  const needed = bytesToCome(context) + total;
  if (needed + margin > free) {
    throw new Refusal(
      `not enough disk space on the server for ${needed} bytes (${free} free in ${dir}, keeping ${margin} spare)`,
    );
  }
  return record();
}

/** Read and check a submission, record the job, pull every file, queue it. */
export async function receiveJob(
  channel: Channel,
  message: Submit,
  context: SessionContext,
): Promise<Intake> {
  const announced = await readAnnouncement(channel, message);
  const { files, options, total } = checkSubmission(announced, context);
  // Version 3 may name destinations; every job goes to DEFAULT_DESTINATIONS.
  const requested = channel.version >= 3 && "deliver" in message ? message.deliver : undefined;
  const deliverTo = jobDestinations(requested, context);
  const scriptProblem = await checkScript(context.reconScript);
  if (scriptProblem) throw new Refusal(`${scriptProblem}; tell the recon box's administrator`);
  await Deno.mkdir(context.reconFilePath, { recursive: true });
  const id = crypto.randomUUID();
  // Versions 1 and 2 know no priority or destinations: their schemas ignore those members.
  const v3 = channel.version >= 3;
  const priority: Priority = (v3 && "priority" in message ? message.priority : undefined) ??
    "normal";
  checkPriority(priority, context);
  const record = await admit(context, total, () =>
    context.store.createReceiving({
      id,
      priority,
      client: context.client.name,
      peer: context.peer,
      keyId: channel.keyId,
      options,
      inputDir: path.join(context.reconFilePath, `job_${id}_input`),
      outputDir: path.join(context.reconDicomDir, `job_${id}_output`),
      logPath: path.join(context.reconFilePath, `job_${id}.log`),
      files: files.map((file) => ({
        name: file.name,
        size: file.size,
        originalPath: file.original_path_on_client,
      })),
      uploadExpiresAt: context.now() + context.uploadResumeWindow * 1000,
      deliverTo,
    }));
  context.leases.heldBytes.set(id, 0);
  context.log.info(
    `${context.peer}: job ${id}: receiving ${files.length} file(s), ${total} bytes (priority ${priority})` +
      (deliverTo.length > 0 ? `, for ${deliverTo.join(", ")}` : ""),
  );
  try {
    await Deno.mkdir(record.inputDir, { mode: 0o700 });
  } catch (error) {
    await failUpload(context, record, error);
    throw error;
  }
  return await pullInputs(channel, record, context);
}

/**
 * `resume_upload`: pull what job `id`'s cut-off upload still lacks. A session still
 * uploading it (a connection not yet known to be dead) is stopped first.
 */
export async function resumeUpload(
  channel: Channel,
  id: string,
  context: SessionContext,
): Promise<Intake> {
  const found = findJob(context, id);
  const record = context.sweeper.settle(found);
  if (record.state !== "receiving") {
    if (record.state === "failed" && record.reason?.startsWith(UPLOAD_WINDOW_OVER)) {
      throw new Refusal(
        `the upload of job ${id} was not resumed in time and was removed on ${
          utc(record.finishedAt ?? context.now())
        }: ${record.reason}`,
        "expired",
      );
    }
    throw new Refusal(
      record.state === "queued" || record.state === "running"
        ? `job ${id} is already ${record.state}: its upload is complete; follow it instead`
        : `job ${id} is ${record.state}; it is not being uploaded`,
    );
  }
  if (context.shuttingDown()) throw new Refusal("the server is shutting down; try again later");
  await context.leases.stopUpload(id);
  await Deno.mkdir(record.inputDir, { recursive: true, mode: 0o700 });
  const inputs = context.store.inputs(id);
  const held = await heldBytes(record.inputDir, inputs);
  context.leases.heldBytes.set(id, held);
  const left = inputs.filter((input) => input.sha256 === undefined).length;
  context.log.info(
    `${context.peer}: job ${id}: resuming its upload: ${left} of ${inputs.length} file(s) to go, ${held} of ${record.inputBytes} bytes held`,
  );
  return await pullInputs(channel, record, context);
}
