/**
 * Retention (docs/PROTOCOL.md §6.6): what the server keeps, it keeps for a time.
 *
 * - A succeeded job's results, RESULT_RETENTION after it finished, fetched or not:
 *   the job becomes `expired` and its output directory is removed.
 * - A failed job's inputs (kept for a re-run), FAILED_INPUT_RETENTION after it
 *   finished: they are removed; the job stays `failed`.
 * - A cut-off upload, UPLOAD_RESUME_WINDOW after it was cut off (or after it began,
 *   whichever is later): the job fails with "the upload was not completed within
 *   UPLOAD_RESUME_WINDOW (N s)" and its partial input is removed.
 *
 * Each removal is logged in one line. The state change is committed first, the files
 * go next, and the store hears last that they are gone, so a removal cut short is
 * found and done again. Results a session is delivering and an upload in progress are
 * left until the session ends (lib/server/job_leases.ts). The sweeper runs at start
 * and then every {@link sweepInterval}; a request that looks at a job past its time
 * settles it on the spot ({@link Sweeper.settle}), so no answer depends on when the
 * last sweep ran. This module owns `succeeded → expired` and the failed upload.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { errorMessage } from "../errors.ts";
import type { JobRecord, JobStore } from "./job_store.ts";
import type { JobLeases } from "./job_leases.ts";
import { removeQuietly } from "./job_files.ts";

/** Inputs of {@link Sweeper}. */
export interface SweeperOptions {
  store: JobStore;
  leases: JobLeases;
  log: Logger;
  /** RESULT_RETENTION, FAILED_INPUT_RETENTION and UPLOAD_RESUME_WINDOW in seconds. */
  resultRetention: number;
  failedInputRetention: number;
  uploadResumeWindow: number;
  /** The clock (ms since the epoch); default Date.now. */
  now?: () => number;
  /** Between sweeps; default {@link sweepInterval} of the three retentions. */
  intervalMs?: number;
}

/**
 * How often to sweep: half the shortest retention, so nothing stays much past its
 * time, but at most every minute (a week's retention needs no finer clock) and at
 * least every 0.5 s (retentions of seconds, as in tests).
 */
export function sweepInterval(retentionsSeconds: number[]): number {
  const shortest = Math.min(60, ...retentionsSeconds.map((seconds) => seconds / 2));
  return Math.max(500, Math.round(shortest * 1000));
}

/** The start of the reason of an upload whose UPLOAD_RESUME_WINDOW ran out. */
export const UPLOAD_WINDOW_OVER = "the upload was not completed within UPLOAD_RESUME_WINDOW";

/** A retention in the words of recon.opts' comments: "3600 s". */
function seconds(value: number): string {
  return `${value} s`;
}

/** The periodic sweep and the on-the-spot settling of jobs past their time. */
export class Sweeper {
  #options: SweeperOptions;
  #now: () => number;
  #timer?: ReturnType<typeof setInterval>;
  /** Removals run one after another, whoever asked for them. */
  #work: Promise<void> = Promise.resolve();

  constructor(options: SweeperOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /** Sweep now and then periodically until {@link stop}. */
  start(): void {
    void this.sweep();
    const { resultRetention, failedInputRetention, uploadResumeWindow } = this.#options;
    const interval = this.#options.intervalMs ??
      sweepInterval([resultRetention, failedInputRetention, uploadResumeWindow]);
    this.#timer = setInterval(() => void this.sweep(), interval);
  }

  /** Stop sweeping; waits for removals in progress. */
  async stop(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#work;
  }

  /** One sweep: everything past its time now. Resolves when its removals are done. */
  sweep(): Promise<void> {
    const { store, log } = this.#options;
    let due;
    try {
      due = store.due(this.#now());
    } catch (error) {
      log.warn(`retention sweep failed: ${errorMessage(error)}`);
      return this.#work;
    }
    for (const job of [...due.uploads, ...due.results]) this.settle(job);
    for (const job of due.failedInputs) this.#queue(() => this.#removeFailedInputs(job));
    return this.#work;
  }

  /**
   * Job `record` as it is once whatever is past its time was recorded: a succeeded job
   * whose results expired is `expired`, an upload whose window ran out `failed`. The
   * change is committed before this returns; the files go right after.
   */
  settle(record: JobRecord): JobRecord {
    const { store, leases, log } = this.#options;
    const now = this.#now();
    try {
      if (record.state === "succeeded" || record.state === "expired") {
        if ((record.resultsExpireAt ?? Infinity) > now || record.resultsRemoved) return record;
        if (leases.resultsHeld(record.id)) return record;
        const expired = record.state === "expired" ? record : store.markExpired(record.id);
        this.#queue(() => this.#removeResults(expired));
        return expired;
      }
      if (record.state === "receiving") {
        const until = Math.max(
          record.uploadExpiresAt ?? Infinity,
          leases.resumeUntil.get(record.id) ?? 0,
        );
        if (until > now || leases.uploading(record.id)) return record;
        const failed = store.markFailed(record.id, {
          reason: `${UPLOAD_WINDOW_OVER} (${seconds(this.#options.uploadResumeWindow)})`,
          exitCode: null,
          stderrTail: [],
        });
        leases.forgetUpload(record.id);
        this.#queue(() => this.#removeUpload(failed));
        return failed;
      }
    } catch (error) {
      log.warn(`job ${record.id}: cannot settle its retention: ${errorMessage(error)}`);
    }
    return record;
  }

  #queue(task: () => Promise<void>): void {
    this.#work = this.#work.then(task).catch((error) => {
      this.#options.log.warn(`retention sweep failed: ${errorMessage(error)}`);
    });
  }

  async #removeResults(job: JobRecord): Promise<void> {
    const { store, log, resultRetention } = this.#options;
    if (!await removeQuietly(job.outputDir, log)) return;
    store.setResultsRemoved(job.id);
    log.info(
      `job ${job.id}: results expired (RESULT_RETENTION ${
        seconds(resultRetention)
      }); removed ${job.outputDir}`,
    );
  }

  async #removeFailedInputs(job: JobRecord): Promise<void> {
    const { store, log, failedInputRetention } = this.#options;
    if (!await removeQuietly(job.inputDir, log)) return;
    store.setInputsRemoved(job.id);
    log.info(
      `job ${job.id}: the failed job's inputs expired (FAILED_INPUT_RETENTION ${
        seconds(failedInputRetention)
      }); removed ${job.inputDir}`,
    );
  }

  async #removeUpload(job: JobRecord): Promise<void> {
    const { store, log } = this.#options;
    if (!await removeQuietly(job.inputDir, log)) return;
    store.setInputsRemoved(job.id);
    log.warn(`job ${job.id}: failed: ${job.reason}; removed ${job.inputDir}`);
  }
}
