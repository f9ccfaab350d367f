/**
 * What a server session (lib/server/session.ts) needs from the server: the job store,
 * the scheduler, the sweeper, the leases on jobs' files and the settings its steps
 * read: intake (lib/server/intake.ts), following a job (lib/server/follow.ts),
 * delivering its results (lib/server/delivery.ts) and the version 3 requests
 * (lib/server/job_requests.ts, lib/server/rerun.ts).
 *
 * @module
 */
import type { Logger } from "../log.ts";
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
  startedAt: number;
  log: Logger;
  /** Session label for logs, e.g. `127.0.0.1:51234`. */
  peer: string;
  /** Who this session is, as a cancelled job records it: peer and key id. */
  by: string;
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
}

/** Where a job's results stay on the server, as a client is told (RECON_DICOM_DIR relative). */
export function keptResultsHint(jobId: string): string {
  return `RECON_DICOM_DIR/job_${jobId}_output`;
}
