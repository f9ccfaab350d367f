/**
 * Jobs and the FIFO queue served by MAX_CONCURRENT_JOBS workers
 * (docs/PROTOCOL.md §6.3). A job's events (started, progress, finished) go to the
 * session that submitted it through an {@link AsyncQueue}; progress lines are
 * dropped rather than queued without bound when that session is slow.
 *
 * @module
 */
import { AsyncQueue } from "../async_queue.ts";
import type { FileEntry, JobSummary, ReconOptions } from "../wire/protocol.ts";
import type { ResultFile } from "./results.ts";

/** A job's life: queued → processing → completed | failed | cancelled. */
export type JobStatus = "queued" | "processing" | "completed" | "failed" | "cancelled";

/**
 * How a job's script run ended. `skipped` counts the entries of the output directory
 * that are not sent (docs/PROTOCOL.md §6.5); which and why is in the server log only.
 */
export type JobOutcome =
  | { ok: true; results: ResultFile[]; skipped: number }
  | { ok: false; reason: string; exitCode: number | null; stderrTail: string[] };

/** What the submitting session hears about its job. */
export type JobEvent =
  | { kind: "started" }
  | { kind: "progress"; text?: string; percent?: number }
  | { kind: "finished"; outcome: JobOutcome };

/** Most progress events waiting for a slow session before text lines are dropped. */
export const MAX_PENDING_EVENTS = 200;

/** One reconstruction job. */
export class Job {
  readonly id: string;
  readonly files: FileEntry[];
  readonly options: ReconOptions;
  readonly inputDir: string;
  readonly outputDir: string;
  readonly logPath: string;
  readonly submittedAt = new Date();
  readonly events = new AsyncQueue<JobEvent>();
  readonly abort = new AbortController();
  status: JobStatus = "queued";
  startedAt?: Date;
  percent?: number;
  droppedLines = 0;

  constructor(init: {
    id: string;
    files: FileEntry[];
    options: ReconOptions;
    inputDir: string;
    outputDir: string;
    logPath: string;
  }) {
    this.id = init.id;
    this.files = init.files;
    this.options = init.options;
    this.inputDir = init.inputDir;
    this.outputDir = init.outputDir;
    this.logPath = init.logPath;
  }

  get primaryFile(): string {
    return this.files[0]?.name ?? "";
  }

  /** Report progress; text lines are dropped when the session is far behind. */
  progress(event: { text?: string; percent?: number }): void {
    if (event.percent !== undefined) this.percent = event.percent;
    if (this.events.length >= MAX_PENDING_EVENTS) {
      if (event.percent === undefined) {
        this.droppedLines++;
        return;
      }
      this.droppedLines += this.events.dropWhere((e) => e.kind === "progress");
    }
    this.events.push({ kind: "progress", ...event });
  }

  summary(): JobSummary {
    const summary: JobSummary = {
      job_id: this.id,
      status: this.status,
      primary_file: this.primaryFile,
      file_count: this.files.length,
      submitted_at: this.submittedAt.toISOString(),
      input_dir: this.inputDir.split("/").pop() ?? "",
    };
    if (this.startedAt) summary.started_at = this.startedAt.toISOString();
    if (this.percent !== undefined) summary.percent = this.percent;
    return summary;
  }
}

/** Runs one job's script to an outcome (lib/server/worker.ts). */
export type JobExecutor = (job: Job) => Promise<JobOutcome>;

/** FIFO queue with a fixed number of workers. */
export class JobQueue {
  #maxWorkers: number;
  #execute: JobExecutor;
  #waiting: Job[] = [];
  #running = new Set<Job>();
  #idle: (() => void)[] = [];
  #accepting = true;
  completed = 0;
  failed = 0;

  constructor(maxWorkers: number, execute: JobExecutor) {
    if (!Number.isSafeInteger(maxWorkers) || maxWorkers < 1) {
      throw new RangeError(`MAX_CONCURRENT_JOBS must be at least 1, got ${maxWorkers}`);
    }
    this.#maxWorkers = maxWorkers;
    this.#execute = execute;
  }

  get maxWorkers(): number {
    return this.#maxWorkers;
  }

  get activeWorkers(): number {
    return this.#running.size;
  }

  get queueLength(): number {
    return this.#waiting.length;
  }

  /** Running jobs first, then queued ones in order. */
  jobs(): Job[] {
    return [...this.#running, ...this.#waiting];
  }

  /** Add a job; it starts as soon as a worker is free. */
  enqueue(job: Job): void {
    if (!this.#accepting) throw new Error("the server is shutting down");
    this.#waiting.push(job);
    this.#dispatch();
  }

  /** Remove a job that has not started. Returns true if it was waiting. */
  removeWaiting(job: Job): boolean {
    const index = this.#waiting.indexOf(job);
    if (index < 0) return false;
    this.#waiting.splice(index, 1);
    this.#notifyIdle();
    return true;
  }

  /**
   * Cancel a job, the one way jobs are cancelled (a client's `cancel_job`, a client gone
   * before `job_queued`, shutdown). A job still waiting leaves the queue, finishes as
   * cancelled with `reason` and loses its input directory (the promise settles when
   * that is removed, rejecting if it could not be); a running job is told to stop, and
   * its worker reports how it ended.
   */
  async cancel(job: Job, reason: string): Promise<void> {
    if (!this.removeWaiting(job)) {
      job.abort.abort(reason);
      return;
    }
    job.status = "cancelled";
    job.events.push({
      kind: "finished",
      outcome: { ok: false, reason, exitCode: null, stderrTail: [] },
    });
    await Deno.remove(job.inputDir, { recursive: true }).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
  }

  /**
   * Stop taking jobs and cancel the ones that never started (best effort: an input
   * directory that cannot be removed stays for the next start's recovery). Returns them.
   */
  async close(reason: string): Promise<Job[]> {
    this.#accepting = false;
    const waiting = [...this.#waiting];
    await Promise.all(waiting.map((job) => this.cancel(job, reason).catch(() => {})));
    return waiting;
  }

  /** Resolves when no job runs or waits. */
  idle(): Promise<void> {
    if (this.#running.size === 0 && this.#waiting.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  #notifyIdle(): void {
    if (this.#running.size === 0 && this.#waiting.length === 0) {
      for (const resolve of this.#idle.splice(0)) resolve();
    }
  }

  #dispatch(): void {
    while (this.#running.size < this.#maxWorkers && this.#waiting.length > 0) {
      const job = this.#waiting.shift()!;
      this.#running.add(job);
      job.status = "processing";
      job.startedAt = new Date();
      job.events.push({ kind: "started" });
      this.#run(job);
    }
  }

  async #run(job: Job): Promise<void> {
    let outcome: JobOutcome;
    try {
      outcome = await this.#execute(job);
    } catch (error) {
      outcome = {
        ok: false,
        reason: (error as Error).message,
        exitCode: null,
        stderrTail: [],
      };
    }
    job.status = outcome.ok ? "completed" : job.abort.signal.aborted ? "cancelled" : "failed";
    if (outcome.ok) this.completed++;
    else this.failed++;
    this.#running.delete(job);
    job.events.push({ kind: "finished", outcome });
    this.#dispatch();
    this.#notifyIdle();
  }
}
