/**
 * Pulling a job's input files (docs/PROTOCOL.md §6.1 steps 3–4, §6.8): `request_file`
 * for each input not yet verified, in announcement order (with the verified length as
 * `offset` when a version 3 upload resumes), then `receiving → queued` and
 * `job_queued`.
 *
 * Each input is received into a partial file of its own (`-partial-<index>` in the
 * job's input directory: no input name can start with `-`, §6.2) and renamed to its
 * name once FILE_END checked out (the SHA-256 recorded is the client's, or, for a
 * resumed file or with VERIFY_AFTER_WRITE, one computed here that matched it); then
 * the store records it verified. A cut-off
 * upload of a version 3 client keeps the verified bytes for UPLOAD_RESUME_WINDOW
 * from the cut-off (lib/server/sweeper.ts ends it then); a version 1 or 2 client
 * cannot resume, so its failed upload fails the job and leaves no input behind. This
 * module owns `receiving → queued` and that failure.
 *
 * @module
 */
import * as path from "node:path";
import type { Channel } from "../wire/channel.ts";
import { errorMessage } from "../errors.ts";
import type { FileEntry } from "../wire/protocol.ts";
import { MAX_MESSAGE_SIZE } from "../wire/record.ts";
import { partialLength, receiveFileResumable } from "../wire/file_receive.ts";
import type { InputRecord, JobRecord } from "./job_store.ts";
import type { Subscription } from "./job_events.ts";
import { partialPath, removeQuietly } from "./job_files.ts";
import { Refusal, utc } from "./refusal.ts";
import type { SessionContext } from "./session_context.ts";

/** A job taken in: its id, and the session's subscription to its events. */
export interface Intake {
  id: string;
  subscription: Subscription;
}

const encoder = new TextEncoder();

/** Pull every input not yet verified; queue the job; send `job_queued`. */
export async function pullInputs(
  channel: Channel,
  record: JobRecord,
  context: SessionContext,
): Promise<Intake> {
  const { id, inputDir } = record;
  const { store, leases, log, peer } = context;
  const inputs = store.inputs(id);
  const release = leases.beginUpload(id, () => channel.abort());
  let subscription: Subscription;
  try {
    let verified = inputs.reduce((sum, input) => sum + (input.sha256 ? input.size : 0), 0);
    for (const input of inputs) {
      if (input.sha256 !== undefined) continue;
      if (context.shuttingDown()) throw new Refusal("the server is shutting down; try again later");
      const partial = partialPath(inputDir, input.index);
      // Only a version 3 client can resume; for another a partial file is stale.
      const offset = channel.version >= 3 ? await partialLength(partial) : 0;
      await channel.send({
        type: "request_file",
        job_id: id,
        name: input.name,
        ...(input.originalPath === undefined
          ? {}
          : { original_path_on_client: input.originalPath }),
        ...(offset > 0 ? { offset } : {}),
      });
      const base = verified;
      const digest = await receiveFileResumable(channel, partial, input.size, offset, {
        onProgress: (bytes) => leases.heldBytes.set(id, base + bytes),
        verifyAfterWrite: context.verifyAfterWrite,
      });
      await Deno.rename(partial, path.join(inputDir, input.name));
      store.inputVerified(id, input.index, digest.sha256);
      verified += input.size;
      log.debug(
        `job ${id}: received ${input.name} (${input.size} bytes, sha256 ${digest.sha256}, ${
          context.verifyAfterWrite ? "read back and checked" : "as the client sent it"
        })`,
      );
    }
    // Subscribed before the job can start, so its job_started is never missed.
    subscription = context.scheduler.subscribe(id);
    try {
      store.markQueued(id);
    } catch (error) {
      subscription.close();
      throw error;
    }
  } catch (error) {
    release();
    await uploadStopped(channel, context, id, error);
    throw error;
  }
  release();
  leases.forgetUpload(id);
  context.scheduler.wake();
  log.info(`${peer}: job ${id}: queued (${store.counts().byState.queued} waiting)`);
  try {
    await channel.send(jobQueued(channel.version, id, store.inputs(id)));
  } catch (error) {
    subscription.close();
    if (channel.version >= 3) {
      // It knows the id from request_file: it follows the job when it reconnects.
      log.warn(
        `${peer}: job ${id}: client gone before it heard the job was queued; it stays queued`,
      );
    } else {
      // The client reports the upload as lost and will not ask again: drop the job.
      log.warn(`${peer}: job ${id}: client gone before it heard the job was queued; dropping it`);
      context.scheduler.cancel(id, "the client was gone before the job was confirmed", context.by)
        .catch((error) => log.warn(`job ${id}: could not cancel it: ${errorMessage(error)}`));
    }
    throw error;
  }
  return { id, subscription };
}

/**
 * An upload ended before its job was queued. A job cancelled meanwhile is the canceller's
 * to clean up. A version 3 client resumes it: the job stays `receiving`, with a fresh
 * UPLOAD_RESUME_WINDOW from now; for an older one it fails and its input goes.
 */
async function uploadStopped(
  channel: Channel,
  context: SessionContext,
  id: string,
  error: unknown,
): Promise<void> {
  const record = context.store.get(id);
  if (record?.state !== "receiving") return;
  if (channel.version >= 3) {
    const until = context.leases.cutOff(id, context.now() + context.uploadResumeWindow * 1000);
    const held = context.leases.heldBytes.get(id) ?? 0;
    context.log.warn(
      `${context.peer}: job ${id}: upload cut off with ${held} of ${record.inputBytes} bytes verified (${
        errorMessage(error)
      }); its client may resume it until ${utc(until)}`,
    );
    return;
  }
  await failUpload(context, record, error);
}

/** Fail a job whose upload cannot go on, and remove its input. */
export async function failUpload(
  context: SessionContext,
  record: JobRecord,
  error: unknown,
): Promise<void> {
  const { store, log, peer, leases } = context;
  try {
    store.markFailed(record.id, {
      reason: `the upload failed: ${errorMessage(error)}`,
      exitCode: null,
      stderrTail: [],
    });
  } catch (storeError) {
    log.error(`job ${record.id}: cannot record its failed upload: ${errorMessage(storeError)}`);
    return;
  }
  leases.forgetUpload(record.id);
  if (!await removeQuietly(record.inputDir, log)) return;
  store.setInputsRemoved(record.id);
  log.warn(
    `${peer}: job ${record.id}: upload failed, removed ${record.inputDir}: ${errorMessage(error)}`,
  );
}

/**
 * `job_queued`. Versions 2 and 3 name no files. Version 1 lists them (optional there)
 * only when the list fits MAX_MESSAGE_SIZE, so that a large job is not lost after its
 * upload.
 */
function jobQueued(version: number, id: string, inputs: InputRecord[]): Record<string, unknown> {
  const message = { type: "job_queued", job_id: id, files_received: inputs.length };
  if (version !== 1) return message;
  const files: FileEntry[] = [];
  for (const input of inputs) {
    files.push({
      name: input.name,
      size: input.size,
      ...(input.originalPath === undefined ? {} : { original_path_on_client: input.originalPath }),
      ...(input.sha256 === undefined ? {} : { sha256: input.sha256 }),
    });
  }
  const listed = { ...message, files };
  return encoder.encode(JSON.stringify(listed)).length <= MAX_MESSAGE_SIZE ? listed : message;
}
