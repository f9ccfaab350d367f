/**
 * What every way of seeing a job through shares (submit, resume, fetch, rerun; see
 * lib/client/run_job.ts): the events a display hears, the finished job, and the errors
 * a caller tells apart: the job failed, our interrupt cancelled it, or the server
 * cannot give it to us (`error` of kind not_found, expired or refused, PROTOCOL.md §6.6).
 *
 * @module
 */
import { statfs } from "node:fs/promises";
import { InterruptedError, JobError } from "../errors.ts";
import type { FileEntry, JobInfo } from "../wire/protocol.ts";

/** What the caller hears while the job runs (for the progress display). */
export type SubmitEvent =
  | { kind: "upload"; name: string; bytes: number; total: number }
  | { kind: "queued"; jobId: string }
  | { kind: "status"; job: JobInfo }
  | { kind: "started"; jobId: string }
  | { kind: "progress"; text?: string; percent?: number }
  | { kind: "notice"; text: string }
  | { kind: "download"; name: string; bytes: number; total: number };

/** A downloaded (and verified) result. */
export interface DownloadedFile {
  name: string;
  path: string;
  size: number;
  sha256: string;
}

/** The finished job, its results in the download directory. */
export interface SubmitResult {
  jobId: string;
  /** The inputs this client sent (empty for `fetch`, or a rerun, which send none). */
  uploaded: FileEntry[];
  resultDir: string;
  files: DownloadedFile[];
  /**
   * Entries the script wrote that the server did not send (`dicom_transfer_start`'s
   * `skipped`, 0 when absent): the results that came are good, but not complete.
   */
  skipped: number;
}

/** A job left running on the server (`--detach`). */
export interface QueuedJob {
  jobId: string;
  uploaded: FileEntry[];
}

/** Free bytes for an unprivileged user on the file system that holds `dir`. */
export async function diskFree(dir: string): Promise<number> {
  const stats = await statfs(dir);
  return Number(stats.bavail) * Number(stats.bsize);
}

/** Details of a failed job for the printed report. */
export class JobFailedError extends JobError {
  readonly jobId: string;
  readonly scriptExitCode: number | null;
  readonly stderrTail: string[];
  constructor(jobId: string, reason: string, exitCode: number | null, stderrTail: string[]) {
    super(`job ${jobId} failed: ${reason}`, {
      hint: stderrTail.length > 0
        ? `the script's last stderr lines are below; its whole output is in ` +
          `RECON_FILEPATH/job_${jobId}.log on the server (recon-client logs ${jobId}):\n  ` +
          stderrTail.join("\n  ")
        : undefined,
    });
    this.jobId = jobId;
    this.scriptExitCode = exitCode;
    this.stderrTail = stderrTail;
  }
}

/**
 * The job was cancelled on the server at our request (after an interrupt), and the
 * server confirmed it: nothing of it keeps running there.
 */
export class JobCancelledError extends InterruptedError {
  readonly jobId: string;
  constructor(jobId: string) {
    super(`job ${jobId} cancelled`);
    this.jobId = jobId;
  }
}

/** Why the server cannot do what we asked about a job (`error.kind`). */
export type UnavailableKind = "not_found" | "expired" | "refused";

/**
 * The server answered a request about a job with `error` of kind not_found, expired
 * or refused: one line in the server's words (exit code 1).
 */
export class JobUnavailableError extends JobError {
  readonly kind: UnavailableKind;
  constructor(kind: UnavailableKind, reason: string, options: { hint?: string } = {}) {
    super(reason, options);
    this.kind = kind;
  }
}

/** The kinds of {@link JobUnavailableError}, or undefined for any other `error.kind`. */
export function unavailableKind(kind: string | undefined): UnavailableKind | undefined {
  return kind === "not_found" || kind === "expired" || kind === "refused" ? kind : undefined;
}
