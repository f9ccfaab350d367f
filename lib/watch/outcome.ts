/**
 * What a failed job means for its files (docs/WATCH.md §5–§7): pure decisions from the
 * error and from where the job stood, so that the exactly-once rules can be read (and
 * tested) in one place.
 *
 * Before the server named a job (its first `request_file`) nothing of ours is on the
 * server, and the files stay `pending` unless the server refused them:
 *
 * | error                                   | outcome         | files become              |
 * | --------------------------------------- | --------------- | ------------------------- |
 * | any, while stopping / InterruptedError  | `abandoned`     | pending (next start)      |
 * | refusal: shutting down, disk space      | `unreachable`   | pending, backoff          |
 * | other JobError (refused)                | `refused`       | failed                    |
 * | TransferError (file changed or gone)    | `upload-failed` | re-checked, short backoff |
 * | anything else (connection, protocol)    | `unreachable`   | pending, backoff          |
 *
 * Once the server named the job, the files are `submitted` to that job, and the
 * watcher only ever reattaches to it; they become pending (a new job) only when the
 * server says it does not hold the job and never queued it:
 *
 * | phase     | error                                        | outcome          | files become                |
 * | --------- | -------------------------------------------- | ---------------- | --------------------------- |
 * | any       | InterruptedError, or anything while stopping | `left`           | submitted (reattached)      |
 * | uploading | TransferError (our file changed or gone)     | `upload-failed`  | pending, job cancelled      |
 * | uploading | JobUnavailableError not_found                | `gone`           | pending (sent as a new job) |
 * | uploading | JobUnavailableError expired                  | `upload-expired` | see {@link neverRan}        |
 * | any       | other JobUnavailableError (unknown, expired) | `unavailable`    | failed, the server's line   |
 * | any       | other JobError (the job failed, cancelled)   | `job-failed`     | failed                      |
 * | any       | KeyRejectedError (also as a cause)           | `key-rejected`   | submitted; watcher stops    |
 * | any       | connection lost, could not reconnect in time | `lost-contact`   | submitted, backoff          |
 * | any       | ProtocolError (hostile server)               | `results-lost`   | failed                      |
 * | any       | anything else (results not stored)           | `results-lost`   | failed                      |
 *
 * @module
 */
import {
  ConnectionError,
  InterruptedError,
  JobError,
  KeyRejectedError,
  LostContactError,
  TransferError,
} from "../errors.ts";
import { JobFailedError, JobUnavailableError } from "../client/job.ts";
import { isConnectionLoss } from "../client/reconnect.ts";
import type { JobInfo } from "../wire/protocol.ts";
import type { JobPhase } from "./state.ts";

/** See the tables in the module documentation. */
export type FailureOutcome =
  | "abandoned"
  | "unreachable"
  | "refused"
  | "upload-failed"
  | "left"
  | "gone"
  | "upload-expired"
  | "unavailable"
  | "job-failed"
  | "key-rejected"
  | "lost-contact"
  | "results-lost";

/** Where the job stood when it failed. */
export interface FailureState {
  /** Null until the server named the job. */
  phase: JobPhase | null;
  /** The watcher is stopping. */
  stopping: boolean;
}

/**
 * A refusal that says nothing about the job itself: the server is going down or is
 * short of disk. Such a job waits and is sent again, as for an unreachable server.
 */
export function isTransientRefusal(error: unknown): boolean {
  return error instanceof JobError && !(error instanceof JobFailedError) &&
    !(error instanceof JobUnavailableError) && /shutting down|disk space/i.test(error.message);
}

/** The server refused our key, directly or as the reason reconnecting gave up. */
export function keyRejected(error: unknown): KeyRejectedError | undefined {
  if (error instanceof KeyRejectedError) return error;
  if (error instanceof Error && error.cause instanceof KeyRejectedError) return error.cause;
  return undefined;
}

/** Classify a failed job. */
export function classifyFailure(error: unknown, state: FailureState): FailureOutcome {
  if (state.phase === null) {
    if (state.stopping || error instanceof InterruptedError) return "abandoned";
    if (isTransientRefusal(error)) return "unreachable";
    if (error instanceof JobError) return "refused";
    if (error instanceof TransferError) return "upload-failed";
    return "unreachable";
  }
  if (error instanceof JobError) {
    if (error instanceof JobUnavailableError) {
      if (state.phase === "uploading" && error.kind === "not_found") return "gone";
      if (state.phase === "uploading" && error.kind === "expired") return "upload-expired";
      return "unavailable";
    }
    return "job-failed";
  }
  if (error instanceof InterruptedError || state.stopping) return "left";
  if (error instanceof TransferError && state.phase === "uploading") return "upload-failed";
  if (keyRejected(error)) return "key-rejected";
  if (error instanceof LostContactError) return "lost-contact";
  // Before ProtocolError: a connection cut inside a frame is a lost connection too.
  if (error instanceof ConnectionError && isConnectionLoss(error)) return "lost-contact";
  return "results-lost";
}

/**
 * After a resumed upload was answered `expired`, the job as `follow_job` shows it
 * (undefined when the server refused to show it, e.g. expired too): true when the
 * server gave up the upload and the job never started, so sending the files again
 * as a new job cannot run them twice. `expired` alone cannot tell: a job whose
 * `job_queued` was lost with the connection, run and kept until its results expired,
 * is refused the same way once the client falls back to following it.
 */
export function neverRan(job: JobInfo | undefined): boolean {
  return job !== undefined && job.state === "failed" && job.attempts === 0 &&
    job.started_at === undefined;
}
