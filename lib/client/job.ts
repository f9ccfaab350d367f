/**
 * What every way of seeing a job through shares (submit, resume, fetch, rerun; see
 * lib/client/run_job.ts): how a session opens, the options of a job's sessions, what
 * this client knows of the job across them ({@link ClientJob}), the events a display
 * hears, the finished job, and the errors a caller tells apart: the job failed, our
 * interrupt cancelled it, or the server cannot give it to us (`error` of kind
 * not_found, expired or refused, PROTOCOL.md §6.6).
 *
 * @module
 */
import { statfs } from "node:fs/promises";
import { InterruptedError, JobError } from "../errors.ts";
import type { FileEntry, JobInfo, Priority, ReconOptions } from "../wire/protocol.ts";
import type { DownloadedFile, ResultDownload } from "./download.ts";
import type { LocalFile } from "./files.ts";

export type { DownloadedFile };

/** What the caller hears while the job runs (for the progress display). */
export type SubmitEvent =
  | { kind: "upload"; name: string; bytes: number; total: number }
  | { kind: "queued"; jobId: string }
  | { kind: "status"; job: JobInfo }
  | { kind: "started"; jobId: string }
  | { kind: "progress"; text?: string; percent?: number }
  | { kind: "notice"; text: string }
  /** The connection was lost, or made again: shown even with `--json` (not `--quiet`). */
  | { kind: "reconnect"; text: string }
  | { kind: "download"; name: string; bytes: number; total: number };

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
  /** Set when the job was cancelled (by someone else: our own cancel is JobCancelledError). */
  readonly cancelledBy?: string;
  constructor(
    jobId: string,
    reason: string,
    exitCode: number | null,
    stderrTail: string[],
    cancel?: { cancelledBy: string },
  ) {
    const by = cancel?.cancelledBy ? ` by ${cancel.cancelledBy}` : "";
    super(
      cancel ? `job ${jobId} was cancelled${by}: ${reason}` : `job ${jobId} failed: ${reason}`,
      {
        hint: stderrTail.length > 0
          ? `the script's last stderr lines are below ('recon-client logs ${jobId}' prints ` +
            `the rest); its whole output is in RECON_FILEPATH/job_${jobId}.log on the server:\n  ` +
            stderrTail.join("\n  ")
          : undefined,
      },
    );
    this.jobId = jobId;
    this.scriptExitCode = exitCode;
    this.stderrTail = stderrTail;
    this.cancelledBy = cancel?.cancelledBy;
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

/** How a session begins. */
export type Opening =
  | { kind: "submit"; options: ReconOptions; priority?: Priority; deliver?: string[] }
  | { kind: "resume" }
  | { kind: "follow" }
  | { kind: "rerun"; jobId: string; options?: ReconOptions; priority?: Priority };

/** What a job's sessions need besides the channel. */
export interface JobOptions {
  /** The inputs (for a submission or a resumed upload; none otherwise). */
  files?: LocalFile[];
  /** CLIENT_DOWNLOAD_DIR; results go to `<downloadDir>/<job_id>/`. */
  downloadDir: string;
  /** Stop once the job is queued (`--detach`) instead of waiting for its results. */
  until?: "queued" | "results";
  /**
   * False (`--no-download`): once the job is queued, follow it in a session of its own
   * without its results (`follow_job` without `deliver`) to its final state, the outcome
   * `ended`; the results stay on the server (and go to its destinations). Needs
   * `connect`. Default true.
   */
  download?: boolean;
  /** CLIENT_MAX_RESULT_BYTES: refuse results whose announced total is larger; 0 = no cap. */
  maxResultBytes?: number;
  /**
   * VERIFY_AFTER_WRITE: read each result back once written and check its SHA-256 against
   * the server's; a mismatch fails the download and discards the file. Default false.
   */
  verifyAfterWrite?: boolean;
  /** Free bytes on the file system that holds `dir` (default statfs; a test can pretend). */
  diskFree?: (dir: string) => Promise<number>;
  onEvent?: (event: SubmitEvent) => void;
  /**
   * Told the job id as soon as the server names it (the first `request_file` of a
   * submission, `job_queued` of a rerun), before the job is queued.
   */
  onJobId?: (jobId: string) => void;
  /** Logs hostile server behaviour. */
  onHostile?: (message: string) => void;
  /**
   * What an interrupt means while the job waits or runs: cancel it on the server (a
   * submission, as Ctrl-C always did), or only stop following it (`fetch`, `wait`).
   * Default true.
   */
  cancelOnInterrupt?: boolean;
  /**
   * The command line of `recon-client fetch ID` or `cancel ID` for hints, with the
   * options this one was given (`--opts`, `--host`, …); see {@link defaultCommand}.
   */
  command?: (subcommand: "fetch" | "cancel", jobId: string) => string;
}

/** How a job's sessions ended. */
export type JobOutcome =
  | { kind: "queued"; jobId: string; uploaded: FileEntry[] }
  | { kind: "results"; result: SubmitResult }
  /** The job ended and its results were not fetched (`download` false): as the server last described it. */
  | { kind: "ended"; job: JobInfo; uploaded: FileEntry[] };

/** Where a job is, as far as this client knows. */
export type JobPhase = "upload" | "wait" | "download";

/** What this client knows of one job, across its sessions. */
export class ClientJob {
  jobId?: string;
  phase: JobPhase;
  /** Inputs whose upload ended with a FILE_END the server verified, by name. */
  readonly uploaded = new Map<string, FileEntry>();
  download?: ResultDownload;
  skipped = 0;
  /** Ctrl-C came: set before the session learns how to act on it. */
  interrupted = false;
  /** The interrupt came during an upload: cancel the job in a session of its own. */
  cancelWanted = false;

  constructor(phase: JobPhase, jobId?: string) {
    this.phase = phase;
    this.jobId = jobId;
  }
}

/** The default for {@link JobOptions.command}. */
export function defaultCommand(subcommand: "fetch" | "cancel", jobId: string): string {
  return `recon-client ${subcommand} ${jobId}`;
}
