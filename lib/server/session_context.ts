/**
 * What a server session (lib/server/session.ts) needs from the server: the job store,
 * the scheduler, the sweeper, the leases on jobs' files and the settings its steps
 * read: intake (lib/server/intake.ts), following a job (lib/server/follow.ts),
 * delivering its results (lib/server/delivery.ts), the version 3 requests
 * (lib/server/job_requests.ts, lib/server/rerun.ts) and the DICOM destinations a job's
 * results go to (lib/server/destinations.ts).
 *
 * @module
 */
import type { Logger } from "../log.ts";
import type { AuditSink } from "./audit_jobs.ts";
import type { ClientIdentity } from "./client_registry.ts";
import type { JobRecord } from "./job_store.ts";
import type { DeliverySummary, Priority } from "../wire/protocol.ts";
import { Refusal, unknownJob } from "./refusal.ts";
import type { JobStore } from "./job_store.ts";
import type { JobLeases } from "./job_leases.ts";
import type { Scheduler } from "./scheduler.ts";
import type { Sweeper } from "./sweeper.ts";

export { removeQuietly } from "./job_files.ts";

/** What a session needs from the server. */
export interface SessionContext {
  store: JobStore;
  scheduler: Scheduler;
  sweeper: Sweeper;
  leases: JobLeases;
  reconFilePath: string;
  reconDicomDir: string;
  maxJobBytes: number;
  diskFreeMargin: number;
  /** UPLOAD_RESUME_WINDOW in seconds. */
  uploadResumeWindow: number;
  /** VERIFY_AFTER_WRITE: read each uploaded file back and check its SHA-256. */
  verifyAfterWrite?: boolean;
  startedAt: number;
  log: Logger;
  /** Session label for logs, e.g. `127.0.0.1:51234`. */
  peer: string;
  /** Who this session is, as a cancelled job records it: `NAME at HOST:PORT`. */
  by: string;
  /** The client this session authenticated as (lib/server/client_registry.ts). */
  client: ClientIdentity;
  /** The audit log: sessions record what only they know (who received results). */
  audit: AuditSink;
  /** EXECUTOR: `local` or `slurm`. */
  executor: string;
  /** Set when the server is shutting down. */
  shuttingDown: () => boolean;
  /** RECON_SCRIPT: checked before an upload starts, so a missing script costs no upload. */
  reconScript: string;
  /** Free bytes on the file system that holds `dir` (statfs; a test can pretend). */
  diskFree: (dir: string) => Promise<number>;
  /** The clock (ms since the epoch). */
  now: () => number;
  /** Told when the session starts and stops being in the middle of a job. */
  setBusy?: (busy: boolean) => void;
  /** The names of recon.opts' `DESTINATION_<NAME>` lines (upper case); absent or empty: none. */
  destinations?: readonly string[];
  /** DEFAULT_DESTINATIONS: where every job's DICOM results go; absent: none. */
  defaultDestinations?: readonly string[];
  /** Send a succeeded job's results to `to` again (lib/server/pacs_delivery.ts). */
  redeliver?: (jobId: string, to: string[]) => DeliverySummary[];
}

/**
 * Whether the session's client may see and act on `job`: its own, or any job for an
 * admin client (docs/PROTOCOL.md §6.10).
 */
export function mayActOn(context: SessionContext, job: JobRecord): boolean {
  return context.client.admin || job.client === context.client.name;
}

/**
 * Job `id` as the store holds it, if this session's client may act on it; another
 * client's job is `not_found` exactly like a job that does not exist, so that a client
 * learns nothing of others' jobs.
 */
export function findJob(context: SessionContext, id: string): JobRecord {
  const job = context.store.get(id);
  if (!job || !mayActOn(context, job)) throw unknownJob(id);
  return job;
}

/**
 * `priority`, if the session's client may use it: `high` needs the client file's
 * `high-priority` flag (SHARED_KEY's client `default` has it).
 */
export function checkPriority(priority: Priority, context: SessionContext): Priority {
  if (priority === "high" && !context.client.highPriority) {
    throw new Refusal(
      `client ${context.client.name} may not use priority high (its line in the server's ` +
        "client file has no high-priority flag); submit with normal or low",
    );
  }
  return priority;
}

/** Where a job's results stay on the server, as a client is told (RECON_DICOM_DIR relative). */
export function keptResultsHint(jobId: string): string {
  return `RECON_DICOM_DIR/job_${jobId}_output`;
}
