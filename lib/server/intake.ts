/**
 * Taking a job in (docs/PROTOCOL.md §6.1 steps 1–4): read the announcement (version 1:
 * the `files` of `submit_recon_job`; version 2: `file_count` `input_file` messages
 * after it), check it, book disk space, pull each file with `request_file`, queue the
 * job and send `job_queued`.
 *
 * A refused or broken submission leaves nothing behind: the job input directory is
 * removed before the session ends.
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
  type FileEntry,
  type MessageOf,
  parseClientMessage,
  parseReconOptions,
  type ReconOptions,
} from "../wire/protocol.ts";
import { MAX_MESSAGE_SIZE } from "../wire/record.ts";
import { receiveFileTo } from "../wire/transfer.ts";
import { Job } from "./jobs.ts";
import { checkScript } from "./worker.ts";
import { cancelJob, removeQuietly, type SessionContext } from "./session_context.ts";

/** `submit_recon_job` of either protocol version. */
export type Submit =
  | MessageOf<ClientMessage, "submit_recon_job">
  | MessageOf<ClientMessageV1, "submit_recon_job">;

/** A refusal the client is told about with an `error` message. */
export class Refusal extends Error {}

/** A submission as announced, before any check. */
interface Announcement {
  files: FileEntry[];
  optionsJson: string;
}

const encoder = new TextEncoder();

/**
 * Read the whole announcement. In version 2 the `input_file` messages follow
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
 * Book `total` bytes of disk for an upload, or refuse the job. The check and the
 * booking happen with no await between them, so two submissions checked at the same
 * time cannot both count the same free space.
 */
async function bookDiskSpace(context: SessionContext, total: number): Promise<void> {
  const dir = context.reconFilePath;
  const margin = context.diskFreeMargin;
  const free = await context.diskFree(dir);
  const booked = context.uploadsInProgress;
  const needed = booked.bytes + total;
  if (needed + margin > free) {
    throw new Refusal(
      `not enough disk space on the server for ${needed} bytes (${free} free in ${dir}, keeping ${margin} spare)`,
    );
  }
  booked.bytes += total;
}

/** Read and check a submission, pull every file into a fresh job input directory, queue it. */
export async function receiveJob(
  channel: Channel,
  message: Submit,
  context: SessionContext,
): Promise<Job> {
  const announced = await readAnnouncement(channel, message);
  const { files, options, total } = checkSubmission(announced, context);
  const scriptProblem = await checkScript(context.reconScript);
  if (scriptProblem) throw new Refusal(`${scriptProblem}; tell the recon box's administrator`);
  await Deno.mkdir(context.reconFilePath, { recursive: true });
  await bookDiskSpace(context, total);
  try {
    return await receiveFiles(channel, files, options, total, context);
  } finally {
    context.uploadsInProgress.bytes -= total;
  }
}

async function receiveFiles(
  channel: Channel,
  files: FileEntry[],
  options: ReconOptions,
  total: number,
  context: SessionContext,
): Promise<Job> {
  const id = crypto.randomUUID();
  const inputDir = path.join(context.reconFilePath, `job_${id}_input`);
  await Deno.mkdir(inputDir, { mode: 0o700 });
  const { log, peer } = context;
  log.info(`${peer}: job ${id}: receiving ${files.length} file(s), ${total} bytes`);
  try {
    for (const file of files) {
      if (context.shuttingDown()) throw new Refusal("the server is shutting down; try again later");
      await channel.send({
        type: "request_file",
        job_id: id,
        name: file.name,
        ...pathOnClient(file),
      });
      const digest = await receiveFileTo(channel, path.join(inputDir, file.name), file.size, {
        noOverwrite: true,
      });
      file.sha256 = digest.sha256;
      log.debug(`job ${id}: received ${file.name} (${file.size} bytes, sha256 ${digest.sha256})`);
    }
  } catch (error) {
    await removeQuietly(inputDir, log);
    log.warn(`${peer}: job ${id}: upload failed, removed ${inputDir}: ${errorMessage(error)}`);
    throw error;
  }
  const job = new Job({
    id,
    files,
    options,
    inputDir,
    outputDir: path.join(context.reconDicomDir, `job_${id}_output`),
    logPath: path.join(context.reconFilePath, `job_${id}.log`),
  });
  try {
    context.queue.enqueue(job);
  } catch (error) {
    await removeQuietly(inputDir, log);
    throw new Refusal(errorMessage(error));
  }
  log.info(`${peer}: job ${id}: queued (${context.queue.queueLength} waiting)`);
  try {
    await channel.send(jobQueued(channel.version, id, files));
  } catch (error) {
    // The client never learnt the job exists (it reports the upload as dropped): drop it.
    log.warn(`${peer}: job ${id}: client gone before it heard the job was queued; dropping it`);
    cancelJob(job, context, "the client was gone before the job was confirmed");
    throw error;
  }
  return job;
}

/**
 * `job_queued`. Version 2 names no files. Version 1 lists them (optional there) only
 * when the list fits MAX_MESSAGE_SIZE, so that a large job is not lost after its upload.
 */
function jobQueued(version: number, id: string, files: FileEntry[]): Record<string, unknown> {
  const message = { type: "job_queued", job_id: id, files_received: files.length };
  if (version !== 1) return message;
  const listed = { ...message, files };
  return encoder.encode(JSON.stringify(listed)).length <= MAX_MESSAGE_SIZE ? listed : message;
}
