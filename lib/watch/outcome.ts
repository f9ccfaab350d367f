/**
 * What a failed submission means for its files (docs/WATCH.md §5–§7): one pure
 * decision from the error and from whether the server had queued the job, so the
 * exactly-once rules can be read (and tested) in one place.
 *
 * | queued? | error                                   | outcome         | files become              |
 * | ------- | --------------------------------------- | --------------- | ------------------------- |
 * | no      | any, while stopping / InterruptedError  | `abandoned`     | pending (next start)      |
 * | no      | refusal: shutting down, disk space      | `unreachable`   | pending, backoff          |
 * | no      | other JobError (refused)                | `refused`       | failed                    |
 * | no      | TransferError (file changed or gone)    | `upload-failed` | re-checked, short backoff |
 * | no      | anything else (connection, protocol)    | `unreachable`   | pending, backoff          |
 * | yes     | JobCancelledError (confirmed cancel)    | `cancelled`     | pending (next start)      |
 * | yes     | JobError (the job failed on the server) | `job-failed`    | failed                    |
 * | yes     | ProtocolError (hostile server)          | `results-lost`  | failed                    |
 * | yes     | Interrupted or ConnectionError          | `orphaned`      | stay submitted, noted     |
 * | yes     | anything else (e.g. results not stored) | `results-lost`  | failed                    |
 *
 * Once the server has queued a job, no outcome makes its files pending again except a
 * cancellation the server confirmed: that is the "never twice" rule.
 *
 * @module
 */
import {
  ConnectionError,
  InterruptedError,
  JobError,
  ProtocolError,
  TransferError,
} from "../errors.ts";
import { JobCancelledError, JobFailedError } from "../client/submit.ts";

/** See the table in the module documentation. */
export type FailureOutcome =
  | "abandoned"
  | "unreachable"
  | "refused"
  | "upload-failed"
  | "cancelled"
  | "job-failed"
  | "orphaned"
  | "results-lost";

/**
 * A refusal that says nothing about the job itself: the server is going down or is
 * short of disk. Such a job waits and is sent again, as for an unreachable server.
 */
export function isTransientRefusal(error: unknown): boolean {
  return error instanceof JobError && !(error instanceof JobFailedError) &&
    /shutting down|disk space/i.test(error.message);
}

/** Classify a failed submission. */
export function classifyFailure(
  error: unknown,
  state: { queued: boolean; stopping: boolean },
): FailureOutcome {
  if (!state.queued) {
    if (state.stopping || error instanceof InterruptedError) return "abandoned";
    if (isTransientRefusal(error)) return "unreachable";
    if (error instanceof JobError) return "refused";
    if (error instanceof TransferError) return "upload-failed";
    return "unreachable";
  }
  if (error instanceof JobCancelledError) return "cancelled";
  if (error instanceof JobError) return "job-failed";
  if (error instanceof ProtocolError) return "results-lost";
  if (error instanceof InterruptedError || error instanceof ConnectionError) return "orphaned";
  return "results-lost";
}
