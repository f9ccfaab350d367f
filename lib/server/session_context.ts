/**
 * What a server session (lib/server/session.ts) needs from the server, and the small
 * helpers its steps share: intake (lib/server/intake.ts), following a job
 * (lib/server/follow.ts) and delivering its results (lib/server/delivery.ts).
 *
 * @module
 */
import { errorMessage } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Job, JobQueue } from "./jobs.ts";

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

/** Remove a directory tree; a failure other than "not there" is logged, not thrown. */
export async function removeQuietly(target: string, log: Logger): Promise<void> {
  await Deno.remove(target, { recursive: true }).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) {
      log.warn(`could not remove ${target}: ${error.message}`);
    }
  });
}

/** Cancel through the queue (lib/server/jobs.ts), logging an input directory left behind. */
export function cancelJob(
  job: Job,
  context: SessionContext,
  reason = "the job was cancelled by its client",
): void {
  context.queue.cancel(job, reason).catch((error) => {
    context.log.warn(`could not remove ${job.inputDir}: ${errorMessage(error)}`);
  });
}

/** Where a job's results stay on the server, as a client is told (RECON_DICOM_DIR relative). */
export function keptResultsHint(jobId: string): string {
  return `RECON_DICOM_DIR/job_${jobId}_output`;
}
