/**
 * One authenticated client session on the server (docs/PROTOCOL.md §4.4, §6): answers
 * status and queue queries; for `submit_recon_job` takes the job in
 * (lib/server/intake.ts), follows it (lib/server/follow.ts) and delivers its results
 * (lib/server/delivery.ts). Version 3 adds requests by job id: `resume_upload`,
 * `follow_job`, `rerun_job` (lib/server/rerun.ts), `list_jobs`, `cancel_job`,
 * `get_job_log` (lib/server/job_requests.ts) and `redeliver_job`
 * (lib/server/destinations.ts). Messages are read by the rules of the
 * protocol version agreed in the handshake (`channel.version`); a request that cannot
 * be answered gets `error {kind, reason}` and the session stays at top level.
 *
 * @module
 */
import { statfs } from "node:fs/promises";
import * as path from "node:path";
import type { Channel } from "../wire/channel.ts";
import type { Incoming } from "../wire/record.ts";
import { ProtocolError, TransferError } from "../errors.ts";
import { type ClientMessage, type JobSummary, parseClientMessage } from "../wire/protocol.ts";
import { VERSION } from "../version.ts";
import { defaultCryptoBackend } from "../crypto/backend.ts";
import type { JobRecord } from "./job_store.ts";
import { type Intake, receiveJob, resumeUpload } from "./intake.ts";
import { type AfterJob, followJob, followJobById, jobInfo } from "./follow.ts";
import { cancelJobById, listJobs, readJobLog } from "./job_requests.ts";
import { rerunJob } from "./rerun.ts";
import { defaultDestinations, namableDestinations, redeliverJob } from "./destinations.ts";
import { Refusal } from "./refusal.ts";
import { peerAddress } from "./audit_jobs.ts";
import { mayActOn, type SessionContext } from "./session_context.ts";

export type { SessionContext } from "./session_context.ts";

/** Free bytes for an unprivileged user on the file system that holds `dir`. */
export async function diskFree(dir: string): Promise<number> {
  const stats = await statfs(dir);
  return Number(stats.bavail) * Number(stats.bsize);
}

/** Serve one channel until the client says goodbye or the connection ends. */
export async function serveSession(channel: Channel, context: SessionContext): Promise<void> {
  // A read left pending by a finished job is the next one to use (one reader at a time).
  let pending: Promise<Incoming> | undefined;
  while (true) {
    const incoming = await (pending ?? channel.receive());
    pending = undefined;
    if (incoming.type === "goodbye") return;
    if (incoming.type !== "message") {
      throw new TransferError(`client sent ${incoming.type} data outside a file transfer`);
    }
    // Each version's schema admits only its own messages (v3 types included below).
    const message = parseClientMessage(incoming.message, channel.version) as ClientMessage;
    let after: AfterJob | undefined;
    try {
      after = await answer(channel, message, context);
    } catch (error) {
      if (!(error instanceof Refusal)) throw error;
      context.setBusy?.(false);
      const what = message.type === "submit_recon_job" ? "job" : message.type;
      context.log.warn(`${context.peer}: ${what} refused: ${error.message}`);
      auditRefusal(message, error, context);
      await channel.send({ type: "error", kind: error.kind, reason: error.message });
      continue;
    }
    if (after) {
      if (after.ended) return;
      pending = after.next;
      context.setBusy?.(false);
    }
  }
}

/**
 * The audit line of a refused request (`request_refused`): a client asking for another
 * client's job, for every client's jobs or for priority high without the right, and
 * every other refusal, with the job it named.
 */
function auditRefusal(message: ClientMessage, refusal: Refusal, context: SessionContext): void {
  const jobId: unknown = "job_id" in message ? message.job_id : undefined;
  context.audit.record("request_refused", {
    client: context.client.name,
    address: peerAddress(context.peer),
    request: message.type,
    ...(typeof jobId === "string" ? { job: jobId } : {}),
    kind: refusal.kind,
    reason: refusal.message,
  }).catch((error) =>
    context.log.error(`audit log: cannot record request_refused: ${(error as Error).message}`)
  );
}

/** Answer one top-level request; a job request returns what comes after the job. */
async function answer(
  channel: Channel,
  message: ClientMessage,
  context: SessionContext,
): Promise<AfterJob | undefined> {
  switch (message.type) {
    case "get_server_status":
      await channel.send(await serverStatus(channel.version, context));
      return undefined;
    case "get_queue_details":
      await channel.send({
        type: "queue_details_response",
        jobs: queueDetails(channel.version, context),
      });
      return undefined;
    case "submit_recon_job":
      return await followIntake(channel, context, () => receiveJob(channel, message, context));
    case "resume_upload":
      return await followIntake(
        channel,
        context,
        () => resumeUpload(channel, message.job_id, context),
      );
    case "rerun_job":
      return await followIntake(channel, context, () => rerunJob(channel, message, context));
    case "follow_job":
      context.setBusy?.(true);
      return await followJobById(channel, message.job_id, message.deliver ?? false, context);
    case "list_jobs":
      await channel.send({ type: "job_list", ...listJobs(message, context) });
      return undefined;
    case "get_job_log":
      await channel.send({
        type: "job_log",
        ...await readJobLog(message.job_id, message.offset ?? 0, context),
      });
      return undefined;
    case "cancel_job": {
      if (channel.version < 3) throw new TransferError("client sent cancel_job outside a job");
      // (The schema's job id fields type as `never`; read them as what they are.)
      const jobId: string | undefined = message.job_id;
      if (jobId === undefined) {
        throw new ProtocolError("client sent cancel_job without a job_id at top level");
      }
      const record = await cancelJobById(jobId, message.reason, context);
      await channel.send({ type: "job_status", job: jobInfo(record, context) });
      return undefined;
    }
    case "redeliver_job":
      await channel.send({
        type: "job_status",
        job: jobInfo(redeliverJob(message, context), context),
      });
      return undefined;
    default:
      throw new TransferError(`client sent ${message.type} outside a job`);
  }
}

/**
 * Take a job in (a submission, a resumed upload or a re-run) and follow it to its
 * outcome. A transfer error is answered before the session ends, so the client
 * reports a transfer error.
 */
async function followIntake(
  channel: Channel,
  context: SessionContext,
  take: () => Promise<Intake>,
): Promise<AfterJob> {
  context.setBusy?.(true);
  let intake: Intake;
  try {
    intake = await take();
  } catch (error) {
    if (error instanceof TransferError && !channel.closed) {
      await channel.send({ type: "error", kind: "transfer", reason: error.message })
        .catch(() => {});
    }
    throw error;
  }
  return await followJob(channel, intake.id, intake.subscription, context, { deliver: true });
}

/**
 * `server_status_response`; version 3 adds priorities, kept bytes, free space, the
 * DICOM destinations this client may name, DEFAULT_DESTINATIONS, and the crypto backend.
 */
async function serverStatus(
  version: number,
  context: SessionContext,
): Promise<Record<string, unknown>> {
  const { store, scheduler, leases } = context;
  const counts = store.counts();
  const status: Record<string, unknown> = {
    type: "server_status_response",
    version: VERSION,
    uptime_seconds: Math.floor((Date.now() - context.startedAt) / 1000),
    max_concurrent_jobs: scheduler.maxWorkers,
    active_workers: scheduler.activeWorkers,
    queue_length: counts.byState.queued,
    jobs_completed: scheduler.counts.succeeded,
    jobs_failed: scheduler.counts.failed,
  };
  if (version < 3) return status;
  status.client = context.client.name;
  status.admin = context.client.admin;
  status.executor = context.executor;
  status.crypto = defaultCryptoBackend().description;
  const problem = scheduler.executorProblem;
  if (problem) {
    status.executor_problem = `${problem.reason} (since ${new Date(problem.since).toISOString()})`;
  }
  const kept = store.keptBytes();
  // A receiving job's verified bytes are on disk too; the store counts only whole inputs.
  let partial = 0;
  for (const bytes of leases.heldBytes.values()) partial += bytes;
  const free = await context.diskFree(context.reconFilePath).catch(() => undefined);
  return {
    ...status,
    jobs_cancelled: scheduler.counts.cancelled,
    queued_high: counts.queuedByPriority.high,
    queued_normal: counts.queuedByPriority.normal,
    queued_low: counts.queuedByPriority.low,
    kept_input_bytes: kept.inputs + partial,
    kept_result_bytes: kept.results,
    ...(free === undefined ? {} : { disk_free_bytes: free }),
    disk_free_margin: context.diskFreeMargin,
    // Always, [] for none: a client tells a server without destinations from an older one.
    destinations: namableDestinations(context),
    ...(defaultDestinations(context).length > 0
      ? { default_destinations: [...defaultDestinations(context)] }
      : {}),
  };
}

/**
 * `queue_details_response`: running jobs first, then queued ones in queue order.
 * Versions 1 and 2 see the words they always saw (`processing`, `queued`); version 3
 * the job's state, priority, queue position and client. Another client's job shows
 * no file name and no input directory (they may carry patient data), unless this
 * session's client is an admin.
 */
function queueDetails(version: number, context: SessionContext): JobSummary[] {
  const v3 = version >= 3;
  const summary = (record: JobRecord, percent?: number, position?: number): JobSummary => {
    const named = mayActOn(context, record);
    const job: JobSummary = {
      job_id: record.id,
      status: record.state === "running" ? (v3 ? "running" : "processing") : record.state,
      primary_file: named ? record.primaryFile : "",
      file_count: record.fileCount,
      submitted_at: new Date(record.submittedAt).toISOString(),
      input_dir: named ? path.basename(record.inputDir) : "",
      client: record.client,
    };
    if (record.startedAt !== undefined) job.started_at = new Date(record.startedAt).toISOString();
    if (record.executor !== "local") job.executor = record.executor;
    if (record.executorRef !== undefined) job.executor_ref = record.executorRef;
    if (percent !== undefined) job.percent = percent;
    if (v3) {
      job.priority = record.priority;
      if (position !== undefined) job.queue_position = position;
    }
    return job;
  };
  return [
    // From the store: the executor's id for the run (a Slurm job id) came after it started.
    ...context.scheduler.running().map((job) =>
      summary(context.store.get(job.id) ?? job.record, job.percent)
    ),
    ...context.store.queued().map((record, index) => summary(record, undefined, index + 1)),
  ];
}
