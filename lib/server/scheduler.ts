/**
 * The queue (docs/PROTOCOL.md §6.3): jobs are taken from the job store in priority
 * order (high, normal, low; submission order within a priority) by MAX_CONCURRENT_JOBS
 * workers. Every start is committed to the store (`queued → running`) before the
 * script runs, so the store, not this object, says what is queued: after a restart
 * the same order resumes.
 *
 * Live state exists only for running jobs (their percentage and the way to stop them)
 * and for the sessions following jobs (lib/server/job_events.ts). This module owns
 * `queued → running`, cancelling (`receiving | queued | running → cancelled`) and the
 * shutdown's `running → queued`; how a run ends is the worker's
 * (lib/server/worker.ts).
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { errorMessage } from "../errors.ts";
import { FINAL_STATES } from "../wire/protocol.ts";
import type { JobRecord, JobStore } from "./job_store.ts";
import { type JobEvent, Subscription } from "./job_events.ts";
import type { JobLeases } from "./job_leases.ts";
import { removeQuietly } from "./job_files.ts";
import { Refusal, unknownJob, utc } from "./refusal.ts";

/** Why a running job is being stopped. */
export type StopRequest =
  | { kind: "cancel"; reason: string; by: string }
  | { kind: "shutdown"; reason: string };

/**
 * How a job's script run ended. `results` carry the SHA-256 the store records;
 * `skipped` counts the entries of the output directory that are not sent (§6.5).
 */
export type JobOutcome =
  | {
    ok: true;
    results: RunResult[];
    skipped: number;
    stderrTail: string[];
  }
  | { ok: false; reason: string; exitCode: number | null; stderrTail: string[] };

/** A result file as collected and hashed by the worker. */
export interface RunResult {
  name: string;
  path: string;
  size: number;
  sha256: string;
  identity?: { dev: number; ino: number };
  /** The file's times when it was hashed (lib/server/results.ts hashResult). */
  mtimeMs?: number;
  ctimeMs?: number;
}

/** A job the scheduler started: what the worker needs and its live state. */
export class RunningJob {
  /** The job as `markRunning` returned it. */
  readonly record: JobRecord;
  readonly abort = new AbortController();
  percent?: number;
  /** Set once something asked the job to stop. */
  stop?: StopRequest;
  /** Settles with the final record, or undefined when a shutdown put the job back. */
  finished: Promise<JobRecord | undefined> = Promise.resolve(undefined);
  #publish: (event: JobEvent) => void;

  constructor(record: JobRecord, publish: (event: JobEvent) => void) {
    this.record = record;
    this.#publish = publish;
  }

  get id(): string {
    return this.record.id;
  }

  /** A line or a percentage from the script, for every session following the job. */
  progress(event: { text?: string; percent?: number }): void {
    if (event.percent !== undefined) this.percent = event.percent;
    this.#publish({ kind: "progress", ...event });
  }
}

/**
 * Thrown by an executor that cannot take a job now (Slurm does not answer): the job
 * goes back to its place in the queue without using up an attempt, and the scheduler
 * starts nothing for a while, doubling the wait each time (1 s up to 60 s).
 */
export class ExecutorUnavailable extends Error {}

/** Longest pause of the queue while the executor is unavailable. */
const MAX_EXECUTOR_BACKOFF_MS = 60_000;

/** What runs a job (lib/server/worker.ts), injected so tests can stand in for scripts. */
export interface Executor {
  /** Run the job's script to an outcome; never commits anything. */
  execute(job: RunningJob): Promise<JobOutcome>;
  /** Commit the run's final state and then keep or remove the job's files. */
  finish(job: RunningJob, outcome: JobOutcome): Promise<JobRecord>;
  /** Remove what a run stopped for a shutdown left in the output directory. */
  discard(job: RunningJob): Promise<void>;
}

/** Inputs of {@link Scheduler}. */
export interface SchedulerOptions {
  store: JobStore;
  maxWorkers: number;
  executor: Executor;
  leases: JobLeases;
  log: Logger;
}

/** Priority queue over the job store, with a fixed number of workers. */
export class Scheduler {
  readonly maxWorkers: number;
  /** Since this server started (PROTOCOL.md §4.3 `server_status_response`). */
  readonly counts = { succeeded: 0, failed: 0, cancelled: 0 };
  #store: JobStore;
  #executor: Executor;
  #leases: JobLeases;
  /** Why the executor cannot take jobs now, while it cannot. */
  #unavailable?: {
    reason: string;
    since: number;
    backoffMs: number;
    timer?: ReturnType<typeof setTimeout>;
  };
  #log: Logger;
  #running = new Map<string, RunningJob>();
  #followers = new Map<string, Set<Subscription>>();
  #dispatching = false;
  #idle: (() => void)[] = [];

  constructor(options: SchedulerOptions) {
    const { maxWorkers } = options;
    if (!Number.isSafeInteger(maxWorkers) || maxWorkers < 1) {
      throw new RangeError(`MAX_CONCURRENT_JOBS must be at least 1, got ${maxWorkers}`);
    }
    this.maxWorkers = maxWorkers;
    this.#store = options.store;
    this.#executor = options.executor;
    this.#leases = options.leases;
    this.#log = options.log;
  }

  get activeWorkers(): number {
    return this.#running.size;
  }

  /** The running jobs, in the order they started. */
  running(): RunningJob[] {
    return [...this.#running.values()];
  }

  /** The live state of job `id` while it runs. */
  live(id: string): RunningJob | undefined {
    return this.#running.get(id);
  }

  /** Start dispatching (after recovery), and again whenever a job was queued. */
  start(): void {
    this.#dispatching = true;
    this.#dispatch();
  }

  /**
   * Why jobs are not started now (the executor, e.g. Slurm, did not answer), with
   * since when; undefined while they are.
   */
  get executorProblem(): { reason: string; since: number } | undefined {
    const problem = this.#unavailable;
    return problem && { reason: problem.reason, since: problem.since };
  }

  /** A job was queued: start it if a worker is free. */
  wake(): void {
    this.#dispatch();
  }

  /**
   * Follow job `id`. When it is already final, the subscription holds its `finished`
   * event at once; otherwise events arrive as they happen. The caller checked that
   * the job exists.
   */
  subscribe(id: string): Subscription {
    const subscription = new Subscription(id, () => this.#followers.get(id)?.delete(subscription));
    const record = this.#store.get(id);
    if (!record || FINAL_STATES.includes(record.state) || record.state === "expired") {
      if (record) subscription.push({ kind: "finished", record });
      subscription.events.close();
      return subscription;
    }
    let set = this.#followers.get(id);
    if (!set) this.#followers.set(id, set = new Set());
    set.add(subscription);
    return subscription;
  }

  /**
   * Cancel job `id` for `by` (who asked: peer and key id) with `reason`. A job still
   * receiving or queued is cancelled at once and its inputs removed (an upload in
   * progress is stopped first); a running job's processes are all stopped
   * (lib/server/runner.ts) and its worker records it cancelled. Resolves with the job
   * in its final state. A final job is refused.
   */
  async cancel(id: string, reason: string, by: string): Promise<JobRecord> {
    const record = this.#store.get(id);
    if (!record) throw unknownJob(id);
    if (record.state === "running") {
      const job = this.#running.get(id);
      if (!job) throw new Refusal(`job ${id} is being started or stopped; try again`);
      if (!job.stop) {
        job.stop = { kind: "cancel", reason, by };
        job.abort.abort(reason);
      }
      return await job.finished ?? this.#store.get(id)!;
    }
    if (record.state === "receiving" || record.state === "queued") {
      // Recorded first: no worker starts it and no resumed upload continues it after this.
      const cancelled = this.#store.markCancelled(id, { reason, by });
      this.counts.cancelled++;
      this.#log.info(`job ${id}: cancelled while ${record.state} by ${by}: ${reason}`);
      await this.#leases.stopUpload(id);
      this.#leases.forgetUpload(id);
      if (await removeQuietly(record.inputDir, this.#log)) this.#store.setInputsRemoved(id);
      this.#finished(cancelled);
      return this.#store.get(id) ?? cancelled;
    }
    const expired = record.state === "expired";
    const when = expired ? record.expiredAt : record.finishedAt;
    const what = expired ? "expired" : `already ${record.state}`;
    const time = when === undefined ? "" : ` (${expired ? "on" : "finished"} ${utc(when)})`;
    throw new Refusal(`job ${id} ${what}${time}; there is nothing to cancel`);
  }

  /** Resolves when no job runs. */
  idle(): Promise<void> {
    if (this.#running.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idle.push(resolve));
  }

  /** Start no more jobs: what is queued stays queued in the store for the next start. */
  close(): void {
    this.#dispatching = false;
    clearTimeout(this.#unavailable?.timer);
  }

  /**
   * Start no more jobs and stop every running one for a shutdown: each is put back in
   * the queue without using up its attempt (PROTOCOL.md §7.5). Resolves when none runs.
   */
  async stopRunning(reason: string): Promise<void> {
    this.close();
    for (const job of this.#running.values()) {
      if (job.stop) continue;
      job.stop = { kind: "shutdown", reason };
      job.abort.abort(reason);
    }
    await this.idle();
  }

  /** End every subscription: the server stops, and its sessions with it. */
  closeSubscriptions(reason: string): void {
    for (const id of [...this.#followers.keys()]) this.#stopped(id, reason);
  }

  /** The job's followers hear that the server no longer follows it for them. */
  #stopped(id: string, reason: string): void {
    const set = this.#followers.get(id);
    this.#followers.delete(id);
    for (const subscription of set ?? []) {
      subscription.push({ kind: "stopped", reason });
      subscription.events.close();
    }
  }

  #publish(id: string, event: JobEvent): void {
    for (const subscription of this.#followers.get(id) ?? []) subscription.push(event);
  }

  /** Tell the job's followers it is final and let them go. */
  #finished(record: JobRecord): void {
    const set = this.#followers.get(record.id);
    this.#followers.delete(record.id);
    for (const subscription of set ?? []) {
      subscription.push({ kind: "finished", record });
      subscription.events.close();
    }
  }

  #dispatch(): void {
    while (
      this.#dispatching && this.#running.size < this.maxWorkers && !this.#unavailable?.timer
    ) {
      const next = this.#store.queued()[0];
      if (!next) return;
      let record: JobRecord;
      try {
        record = this.#store.markRunning(next.id);
      } catch (error) {
        // The store refused (a full disk, say): the job stays queued; the next wake retries.
        this.#log.error(`job ${next.id}: cannot start it: ${errorMessage(error)}`);
        return;
      }
      const job = new RunningJob(record, (event) => this.#publish(record.id, event));
      this.#running.set(record.id, job);
      this.#publish(record.id, { kind: "started" });
      job.finished = this.#run(job);
    }
  }

  async #run(job: RunningJob): Promise<JobRecord | undefined> {
    let outcome: JobOutcome;
    try {
      outcome = await this.#executor.execute(job);
      if (this.#unavailable) {
        this.#log.info(`the executor takes jobs again (${this.#unavailable.reason} is over)`);
        this.#unavailable = undefined;
      }
    } catch (error) {
      if (error instanceof ExecutorUnavailable && !job.stop) return this.#backOff(job, error);
      outcome = { ok: false, reason: errorMessage(error), exitCode: null, stderrTail: [] };
    }
    let final: JobRecord | undefined;
    let stopped = "the server lost track of the job; its log on the server says more";
    try {
      if (job.stop?.kind === "shutdown" && !outcome.ok) {
        this.#store.requeue(job.id, { refundAttempt: true });
        stopped = `${job.stop.reason}; the job is queued again for the server's next start`;
        await this.#executor.discard(job);
        this.#log.info(
          `job ${job.id}: stopped by the shutdown; it is queued again for the next start`,
        );
      } else {
        final = await this.#executor.finish(job, outcome);
        this.#count(final, job);
      }
    } catch (error) {
      // The store could not record it: the job stays `running` there, and the next
      // start of the server puts it back in the queue (lib/server/recovery.ts).
      this.#log.error(`job ${job.id}: cannot record how it ended: ${errorMessage(error)}`);
    }
    this.#running.delete(job.id);
    if (final) this.#finished(final);
    else this.#stopped(job.id, stopped);
    this.#dispatch();
    if (this.#running.size === 0) { for (const resolve of this.#idle.splice(0)) resolve(); }
    return final;
  }

  /** The executor could not take `job`: queue it again and pause the queue a while. */
  #backOff(job: RunningJob, error: ExecutorUnavailable): undefined {
    try {
      this.#store.requeue(job.id, { refundAttempt: true });
    } catch (requeueError) {
      this.#log.error(`job ${job.id}: cannot queue it again: ${errorMessage(requeueError)}`);
    }
    this.#running.delete(job.id);
    const backoffMs = Math.min(
      (this.#unavailable?.backoffMs ?? 500) * 2,
      MAX_EXECUTOR_BACKOFF_MS,
    );
    const since = this.#unavailable?.since ?? Date.now();
    if (!this.#unavailable?.timer) {
      this.#log.warn(
        `job ${job.id}: ${error.message}; it is queued again and no job starts for ${
          backoffMs / 1000
        } s`,
      );
      const timer = setTimeout(() => {
        if (this.#unavailable) this.#unavailable.timer = undefined;
        this.#dispatch();
      }, backoffMs);
      this.#unavailable = { reason: error.message, since, backoffMs, timer };
    }
    this.#publish(job.id, {
      kind: "progress",
      text: `waiting in the queue: ${error.message}; it starts when the executor answers again`,
    });
    if (this.#running.size === 0) { for (const resolve of this.#idle.splice(0)) resolve(); }
    return undefined;
  }

  #count(record: JobRecord, job: RunningJob): void {
    if (record.state === "succeeded") this.counts.succeeded++;
    else {
      // A job cancelled while running counts as failed too (PROTOCOL.md §6.3).
      this.counts.failed++;
      if (record.state === "cancelled" || job.stop?.kind === "cancel") this.counts.cancelled++;
    }
  }
}
