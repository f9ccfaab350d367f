/**
 * Submitting a job and seeing it through (docs/PROTOCOL.md §6), and the other ways
 * in: the functions the client's commands and the watch mode call. Each runs
 * {@link runJob} (lib/client/run_job.ts) with an opening:
 * - {@link submitJob}: announce the files, upload them, wait, take the results;
 * - {@link queueJob}: the same, but return once the job is queued (`--detach`);
 * - {@link submitWithoutResults}: the same, then follow the job to its end and take
 *   no results (`--no-download`: they go to the server's destinations);
 * - {@link resumeUpload}: finish a cut-off upload of a job whose id we kept;
 * - {@link followAndFetch}: wait for a job by id and take its results (`fetch`, a
 *   watcher that restarted after `job_queued`);
 * - {@link rerunJob}: run a failed job again from its kept inputs.
 *
 * With `connect` and `reconnectTimeoutMs` each reconnects after a lost connection
 * once the job has an id; with only `channel`, a lost connection ends it as before.
 *
 * @module
 */
import type { Channel } from "../wire/channel.ts";
import type { FileEntry, JobInfo, Priority, ReconOptions } from "../wire/protocol.ts";
import type { LocalFile } from "./files.ts";
import type { QueuedJob, SubmitResult } from "./job.ts";
import type { JobOptions, JobOutcome, Opening } from "./job_session.ts";
import { runJob, type RunJobOptions } from "./run_job.ts";

export {
  diskFree,
  type DownloadedFile,
  JobCancelledError,
  JobFailedError,
  JobUnavailableError,
  type QueuedJob,
  type SubmitEvent,
  type SubmitResult,
} from "./job.ts";

/** What every way in shares: sessions, reconnecting, interrupts. */
export interface SessionOptions extends Omit<JobOptions, "files" | "until"> {
  /** The first session, already open (the caller closes it); else `connect` opens one. */
  channel?: Channel;
  /** Opens a session; with `reconnectTimeoutMs`, a lost connection is made again. */
  connect?: () => Promise<Channel>;
  /** CLIENT_RECONNECT_TIMEOUT in ms. */
  reconnectTimeoutMs?: number;
  /** Test hooks for reconnecting. */
  reconnect?: RunJobOptions["reconnect"];
  /** Aborted on Ctrl-C: before queueing the upload is dropped; after, the job is cancelled. */
  signal?: AbortSignal;
}

/** Inputs of {@link submitJob} and {@link queueJob}. */
export interface SubmitOptions extends SessionOptions {
  files: LocalFile[];
  options: ReconOptions;
  /** Default normal. */
  priority?: Priority;
  /** Destinations on the server the results go to as well (PROTOCOL.md §6.11). */
  deliver?: string[];
}

function results(outcome: JobOutcome): SubmitResult {
  if (outcome.kind !== "results") throw new Error("the job ended without its results");
  return outcome.result;
}

/** Run one job end to end: upload, wait, results. */
export async function submitJob(options: SubmitOptions): Promise<SubmitResult> {
  return results(
    await runJob({
      ...options,
      opening: submitOpening(options),
    }),
  );
}

function submitOpening(options: SubmitOptions): Opening {
  return {
    kind: "submit",
    options: options.options,
    priority: options.priority,
    deliver: options.deliver,
  };
}

/** Submit and return once the server has queued the job (`--detach`). */
export async function queueJob(options: SubmitOptions): Promise<QueuedJob> {
  const outcome = await runJob({
    ...options,
    until: "queued",
    opening: submitOpening(options),
  });
  if (outcome.kind !== "queued") throw new Error("the job was not queued");
  return { jobId: outcome.jobId, uploaded: outcome.uploaded };
}

/**
 * Submit, then follow the job to its final state without its results (`--no-download`):
 * the job as the server last described it (with its deliveries), whatever the state.
 */
export async function submitWithoutResults(
  options: SubmitOptions,
): Promise<{ job: JobInfo; uploaded: FileEntry[] }> {
  const outcome = await runJob({ ...options, download: false, opening: submitOpening(options) });
  if (outcome.kind !== "ended") throw new Error("the job was not followed to its end");
  return { job: outcome.job, uploaded: outcome.uploaded };
}

/** Inputs of {@link resumeUpload}. */
export interface ResumeOptions extends SessionOptions {
  jobId: string;
  /** The job's inputs, as first announced. */
  files: LocalFile[];
  /** Stop once the job is queued. */
  until?: "queued" | "results";
}

/**
 * Finish the upload of `jobId` (the server sends `request_file` with the offset it
 * holds, for each file it lacks), then follow the job like a submission. A job the
 * server queued already (its `job_queued` lost with the connection) is followed.
 */
export async function resumeUpload(options: ResumeOptions): Promise<JobOutcome> {
  return await runJob({ ...options, opening: { kind: "resume" } });
}

/** Inputs of {@link followAndFetch}. */
export interface FetchOptions extends SessionOptions {
  jobId: string;
}

/**
 * Wait for job `jobId` to finish and take its results into `downloadDir/<jobId>/`,
 * after those an earlier fetch verified there (repeatable until they expire). A
 * failed or cancelled job throws JobFailedError; an unknown or expired one
 * JobUnavailableError. An interrupt stops following unless `cancelOnInterrupt`.
 */
export async function followAndFetch(options: FetchOptions): Promise<SubmitResult> {
  return results(
    await runJob({
      cancelOnInterrupt: false,
      ...options,
      opening: { kind: "follow" },
    }),
  );
}

/** Inputs of {@link rerunJob}. */
export interface RerunOptions extends SessionOptions {
  /** The failed job whose inputs run again. */
  jobId: string;
  /** New options for the script; the old job's when absent. */
  options?: ReconOptions;
  priority?: Priority;
  /** Stop once the new job is queued (`--detach`). */
  until?: "queued" | "results";
  /** False: follow the new job to its end without its results (`--no-download`). */
  download?: boolean;
}

/**
 * Run failed job `jobId` again as a new job from its kept inputs; follow the new job
 * like a submission (its id comes with `job_queued`, and `onJobId`).
 */
export async function rerunJob(options: RerunOptions): Promise<JobOutcome> {
  return await runJob({
    ...options,
    opening: {
      kind: "rerun",
      jobId: options.jobId,
      options: options.options,
      priority: options.priority,
    },
  });
}
