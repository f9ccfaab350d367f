/**
 * One authenticated client session on the server (docs/PROTOCOL.md §6): answers
 * status and queue queries, and for `submit_recon_job` pulls each announced file with
 * `request_file`, queues the job, relays its progress, delivers its results and
 * reports `recon_complete` or `job_failed`.
 *
 * A refused or broken submission leaves nothing behind: the job input directory is
 * removed before the session ends.
 *
 * @module
 */
import * as path from "node:path";
import { statfs } from "node:fs/promises";
import type { Channel } from "../wire/channel.ts";
import type { Incoming } from "../wire/record.ts";
import { errorMessage, TransferError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { checkJobFileNames } from "../wire/file_names.ts";
import {
  type ClientMessage,
  type FileEntry,
  type MessageOf,
  parseClientMessage,
  parseReconOptions,
  type ReconOptions,
} from "../wire/protocol.ts";
import { receiveFileTo, sendFileFrom } from "../wire/transfer.ts";
import { VERSION } from "../version.ts";
import { Job, type JobEvent, type JobOutcome, type JobQueue } from "./jobs.ts";
import { checkScript } from "./worker.ts";

/** What a session needs from the server. */
export interface SessionContext {
  queue: JobQueue;
  reconFilePath: string;
  reconDicomDir: string;
  maxJobBytes: number;
  diskFreeMargin: number;
  startedAt: number;
  log: Logger;
  /** Session label for logs, e.g. `127.0.0.1:51234`. */
  peer: string;
  /** Set when the server is shutting down. */
  shuttingDown: () => boolean;
  /** RECON_SCRIPT: checked before an upload starts, so a missing script costs no upload. */
  reconScript: string;
  /** Bytes of uploads in progress on this server, so concurrent uploads cannot overbook the disk. */
  uploadsInProgress: { bytes: number };
  /** Free bytes on the file system that holds `dir` (statfs; a test can pretend). */
  diskFree: (dir: string) => Promise<number>;
  /** Told when a submitted job starts and stops occupying this session. */
  setBusy?: (busy: boolean) => void;
}

type Submit = MessageOf<ClientMessage, "submit_recon_job">;

/** A refusal the client is told about with an `error` message. */
class Refusal extends Error {}

async function removeQuietly(target: string, log: Logger): Promise<void> {
  await Deno.remove(target, { recursive: true }).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) {
      log.warn(`could not remove ${target}: ${error.message}`);
    }
  });
}

/** Serve one channel until the client says goodbye or the connection ends. */
export async function serveSession(channel: Channel, context: SessionContext): Promise<void> {
  const { log, peer } = context;
  // A read left pending by a finished job is the next one to use (one reader at a time).
  let pending: Promise<Incoming> | undefined;
  while (true) {
    const incoming = await (pending ?? channel.receive());
    pending = undefined;
    if (incoming.type === "goodbye") return;
    if (incoming.type !== "message") {
      throw new TransferError(`client sent ${incoming.type} data outside a file transfer`);
    }
    const message = parseClientMessage(incoming.message);
    switch (message.type) {
      case "get_server_status":
        await channel.send({
          type: "server_status_response",
          version: VERSION,
          uptime_seconds: Math.floor((Date.now() - context.startedAt) / 1000),
          max_concurrent_jobs: context.queue.maxWorkers,
          active_workers: context.queue.activeWorkers,
          queue_length: context.queue.queueLength,
          jobs_completed: context.queue.completed,
          jobs_failed: context.queue.failed,
        });
        break;
      case "get_queue_details":
        await channel.send({
          type: "queue_details_response",
          jobs: context.queue.jobs().map((job) => job.summary()),
        });
        break;
      case "submit_recon_job": {
        context.setBusy?.(true);
        const job = await receiveJob(channel, message, context).catch(async (error) => {
          if (error instanceof Refusal) {
            log.warn(`${peer}: job refused: ${error.message}`);
            await channel.send({ type: "error", kind: "refused", reason: error.message });
            return undefined;
          }
          if (error instanceof TransferError && !channel.closed) {
            // Say why before hanging up, so the client reports a transfer error.
            await channel.send({ type: "error", kind: "transfer", reason: error.message })
              .catch(() => {});
          }
          throw error;
        });
        if (job) {
          const after = await followJob(channel, job, context);
          if (after.ended) return;
          pending = after.next;
        }
        context.setBusy?.(false);
        break;
      }
      default:
        throw new TransferError(`client sent ${message.type} outside a job`);
    }
  }
}

function checkSubmission(message: Submit, context: SessionContext): {
  files: FileEntry[];
  options: ReconOptions;
  total: number;
} {
  if (context.shuttingDown()) throw new Refusal("the server is shutting down; try again later");
  if (message.files.length === 0) throw new Refusal("the job has no files");
  let options: ReconOptions;
  try {
    options = parseReconOptions(message.client_recon_options_json);
    checkJobFileNames(message.files.map((file) => file.name));
  } catch (error) {
    throw new Refusal(errorMessage(error));
  }
  const total = message.files.reduce((sum, file) => sum + file.size, 0);
  if (total > context.maxJobBytes) {
    throw new Refusal(
      `the job's ${total} bytes exceed MAX_JOB_BYTES (${context.maxJobBytes}) on the server`,
    );
  }
  const files = message.files.map((file) => ({
    name: file.name,
    size: file.size,
    original_path_on_client: file.original_path_on_client,
  }));
  return { files, options, total };
}

/** Free bytes for an unprivileged user on the file system that holds `dir`. */
export async function diskFree(dir: string): Promise<number> {
  const stats = await statfs(dir);
  return Number(stats.bavail) * Number(stats.bsize);
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

/** Pull every announced file into a fresh job input directory, then queue the job. */
async function receiveJob(
  channel: Channel,
  message: Submit,
  context: SessionContext,
): Promise<Job> {
  const { files, options, total } = checkSubmission(message, context);
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
        original_path_on_client: file.original_path_on_client,
      });
      const digest = await receiveFileTo(channel, path.join(inputDir, file.name), file.size, {
        noOverwrite: true,
      });
      (file as FileEntry).sha256 = digest.sha256;
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
    await channel.send({ type: "job_queued", job_id: id, files_received: files.length, files });
  } catch (error) {
    // The client never learnt the job exists (it reports the upload as dropped): drop it.
    log.warn(`${peer}: job ${id}: client gone before it heard the job was queued; dropping it`);
    cancelJob(job, context, "the client was gone before the job was confirmed");
    throw error;
  }
  return job;
}

/** A session following its job (see {@link followJob}). */
interface Following {
  channel: Channel;
  job: Job;
  context: SessionContext;
  /** The client's next record, while the session still reads from it. */
  incoming?: Promise<Incoming>;
  /** Set once the client is gone or cut off: nothing more is sent to it. */
  clientGone?: Error;
  /** The client said GOODBYE: the session ends with the job. */
  ended: boolean;
}

/** What comes after a followed job: the session's pending read, or its end. */
type AfterJob = { next?: Promise<Incoming>; ended?: boolean };

/**
 * Relay the job's events to the client while watching for `cancel_job` or a lost
 * connection; then deliver results or report the failure. A client that breaks the
 * protocol here is cut off, but its job is still seen through to an outcome, so
 * nothing is left without a log line saying where it is.
 */
async function followJob(channel: Channel, job: Job, context: SessionContext): Promise<AfterJob> {
  const following: Following = { channel, job, context, incoming: channel.receive(), ended: false };
  const outcome = await relayUntilOutcome(following);
  job.events.close();
  if (!outcome) return { next: following.incoming };
  return await reportOutcome(following, outcome);
}

/** Relay job events and answer the client's records until the job has an outcome. */
async function relayUntilOutcome(following: Following): Promise<JobOutcome | undefined> {
  const { job } = following;
  let event = job.events.next();
  while (true) {
    const { incoming } = following;
    const winner = await Promise.race([
      event.then((value) => ({ from: "job" as const, value })),
      ...(incoming
        ? [incoming.then(
          (value) => ({ from: "client" as const, value }),
          (error: Error) => ({ from: "lost" as const, error }),
        )]
        : []),
    ]);
    if (winner.from === "lost") clientLost(following, winner.error);
    else if (winner.from === "client") await fromClient(following, winner.value);
    else {
      const value = winner.value;
      if (!value) return undefined;
      event = job.events.next();
      if (value.kind === "finished") return value.outcome;
      await relayEvent(following, value);
    }
  }
}

/** Pass `job_started` or `job_progress` on, unless the client is gone. */
async function relayEvent(
  following: Following,
  event: Exclude<JobEvent, { kind: "finished" }>,
): Promise<void> {
  const { channel, job } = following;
  if (following.clientGone) return;
  const message = event.kind === "started"
    ? { type: "job_started", job_id: job.id }
    : { type: "job_progress", job_id: job.id, text: event.text, percent: event.percent };
  await channel.send(message).catch((error) => (following.clientGone = error));
}

function clientLost(following: Following, error: Error): void {
  const { job, context } = following;
  following.clientGone = error;
  following.incoming = undefined;
  context.log.info(`${context.peer}: job ${job.id}: client disconnected; the job continues`);
}

/** A record from the client while its job runs: GOODBYE, its own `cancel_job`, or a cut-off. */
async function fromClient(following: Following, record: Incoming): Promise<void> {
  const { channel, job, context } = following;
  if (record.type === "goodbye") {
    following.clientGone = new Error("the client ended the session");
    following.incoming = undefined;
    following.ended = true;
    context.log.info(`${context.peer}: job ${job.id}: client ended the session; the job continues`);
    await channel.close();
    return;
  }
  if (record.type !== "message") {
    return cutOff(following, `client sent ${record.type} data while its job runs`);
  }
  let message: ClientMessage;
  try {
    message = parseClientMessage(record.message);
  } catch (error) {
    return cutOff(following, `client sent an invalid message: ${errorMessage(error)}`);
  }
  if (message.type !== "cancel_job" || (message.job_id ?? job.id) !== job.id) {
    return cutOff(following, `client sent ${message.type} while its job runs`);
  }
  context.log.info(`${context.peer}: job ${job.id}: cancelled by the client`);
  cancelJob(job, context);
  following.incoming = channel.receive();
}

/** Stop listening to a client that broke the protocol; its job goes on. */
function cutOff(following: Following, reason: string): void {
  const { channel, job, context } = following;
  following.clientGone = new TransferError(reason);
  following.incoming = undefined;
  context.log.warn(
    `${context.peer}: job ${job.id}: ${reason}; closing the session, the job continues`,
  );
  channel.abort(following.clientGone);
}

/** Tell the client how its job ended: `job_failed`, or the results (§6.5). */
async function reportOutcome(following: Following, outcome: JobOutcome): Promise<AfterJob> {
  const { channel, job, context, incoming, clientGone, ended } = following;
  if (!outcome.ok) {
    await removeQuietly(job.outputDir, context.log);
    context.log.warn(`job ${job.id}: failed: ${outcome.reason} (log: ${job.logPath})`);
    if (!clientGone) {
      await channel.send({
        type: "job_failed",
        job_id: job.id,
        reason: outcome.reason,
        exit_code: outcome.exitCode,
        stderr_tail: outcome.stderrTail,
      });
    }
    return { next: incoming, ended };
  }
  if (clientGone || !incoming) {
    context.log.warn(
      `job ${job.id}: finished but its client is gone; results kept in ${job.outputDir}`,
    );
    return { ended };
  }
  // The relay loop left a read pending (incoming); deliver with it.
  await deliverResults(channel, job, outcome.results, incoming, context);
  return {};
}

/** Cancel through the queue (lib/server/jobs.ts), logging an input directory left behind. */
function cancelJob(
  job: Job,
  context: SessionContext,
  reason = "the job was cancelled by its client",
): void {
  context.queue.cancel(job, reason).catch((error) => {
    context.log.warn(`could not remove ${job.inputDir}: ${errorMessage(error)}`);
  });
}

async function deliverResults(
  channel: Channel,
  job: Job,
  results: { name: string; path: string; size: number }[],
  pending: Promise<Incoming>,
  context: SessionContext,
): Promise<void> {
  const { log, peer } = context;
  const expectFromClient = async (type: string): Promise<ClientMessage> => {
    const answer = await pending;
    const message = answer.type === "message" ? parseClientMessage(answer.message) : undefined;
    if (message?.type === "error") {
      throw new TransferError(`the client could not take the results: ${message.reason}`);
    }
    const about = (message as { job_id?: string } | undefined)?.job_id;
    if (message?.type !== type || about !== job.id) {
      const other = about && about !== job.id ? ` for job ${about}` : "";
      throw new TransferError(
        `expected ${type} for job ${job.id} from the client, got ${
          message?.type ?? answer.type
        }${other}`,
      );
    }
    return message;
  };
  try {
    await channel.send({
      type: "dicom_transfer_start",
      job_id: job.id,
      count: results.length,
      files: results.map(({ name, size }) => ({ name, size })),
    });
    const ack = await expectFromClient("dicom_transfer_ack");
    if (ack.type === "dicom_transfer_ack" && ack.status !== "ready") {
      throw new TransferError(`the client refused the results (status "${ack.status}")`);
    }
    const delivered: FileEntry[] = [];
    for (const result of results) {
      await channel.send({
        type: "result_file",
        job_id: job.id,
        name: result.name,
        size: result.size,
      });
      const digest = await sendFileFrom(channel, result.path, result.size, { noFollow: true });
      delivered.push({ name: result.name, size: result.size, sha256: digest.sha256 });
    }
    await channel.send({ type: "recon_complete", job_id: job.id, files: delivered });
    // Only the client's word that every file arrived intact lets the results go.
    pending = channel.receive();
    await expectFromClient("results_received");
    await removeQuietly(job.outputDir, log);
    log.info(`${peer}: job ${job.id}: delivered ${delivered.length} result file(s)`);
  } catch (error) {
    log.warn(
      `job ${job.id}: delivery failed (${errorMessage(error)}); results kept in ${job.outputDir}`,
    );
    throw error;
  }
}
