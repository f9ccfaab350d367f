/**
 * Sending the watch mode's files (docs/WATCH.md §2, §5–§9): which job goes next, and
 * whether the server can be reached. Each pending group becomes one job, and each job
 * the server named (a `submitted` row, also one an earlier run left) is taken up again
 * instead of being sent as a new one; {@link JobRun} sees each through. One group
 * uploads at a time; up to {@link MAX_JOBS_IN_FLIGHT} jobs are followed at once.
 *
 * An unreachable server is retried with {@link Backoff}, with one log line per change
 * of state, for new jobs and for jobs to follow again alike, and noted in the state
 * file (since when, how many attempts) so `--status` can tell a watcher stuck in
 * backoff; a server that refuses our key is not retried at all: `keyRejected` stops
 * the watcher. On stop nothing is cancelled: the jobs stay on the server and the next
 * run takes them up again.
 *
 * @module
 */
import type { Channel } from "../wire/channel.ts";
import { errorMessage, type KeyRejectedError, ReconError } from "../errors.ts";
import type { ReconOptions } from "../wire/protocol.ts";
import type { RunJobOptions } from "../client/run_job.ts";
import type { Backoff } from "./backoff.ts";
import { runCompletionHook } from "./hook.ts";
import { JobRun, type JobRunContext, type Way } from "./job_run.ts";
import { keyRejected } from "./outcome.ts";
import { describeFsError, type FileProbe, type WatchLog } from "./probe.ts";
import { sameStat, type StabilityTracker } from "./scanner.ts";
import {
  type FileRecord,
  SERVER_TROUBLE_KEY,
  type ServerTrouble,
  type StateStore,
} from "./state.ts";
import { names, seconds } from "./words.ts";

export { RECONNECT_TIMEOUT_MS } from "./job_run.ts";

/** After a stop request, completion hooks and jobs in flight get this long (ms). */
export const STOP_GRACE_MS = 5_000;
/** Jobs followed at the same time (one uploads; the others wait for their results). */
export const MAX_JOBS_IN_FLIGHT = 8;

/** What the sender needs from the watch loop. */
export interface SenderOptions {
  store: StateStore;
  runId: string;
  connect: () => Promise<Channel>;
  reconOptions: ReconOptions;
  downloadDir: string;
  /** CLIENT_MAX_RESULT_BYTES: a job's results above it stay on the server (0: no cap). */
  maxResultBytes?: number;
  /** VERIFY_AFTER_WRITE: read each result back once written and check it. */
  verifyAfterWrite?: boolean;
  /** CLIENT_DAEMON_ON_COMPLETE, or "" for none. */
  onComplete: string;
  log: WatchLog;
  signal: AbortSignal;
  serverName?: string;
  probe: FileProbe;
  backoff: Backoff;
  tracker: StabilityTracker;
  stabilityMs: number;
  pollMs: number;
  stopGraceMs?: number;
  /**
   * CLIENT_RECONNECT_TIMEOUT (ms): how long one job's connection is made again before
   * the sender's backoff takes over (the job is never given up).
   */
  reconnectTimeoutMs?: number;
  /** Test hooks for runJob's reconnecting (delays, sleep). */
  reconnect?: RunJobOptions["reconnect"];
  now: () => number;
  /** A file could not be read: the loop logs it once and looks again later. */
  cannotRead: (file: string, message: string) => void;
  /** Something finished: run the loop again soon. */
  wake: () => void;
  /** The server refused our key: the watcher stops (nothing is retried). */
  keyRejected: (error: KeyRejectedError) => void;
}

interface Submission {
  done: Promise<void>;
  channel?: Channel;
}

/** Starts the jobs of pending groups and follows the jobs the server named. */
export class Sender {
  readonly #o: SenderOptions;
  readonly #inFlight = new Map<string, Submission>();
  /** Group id → not before (ms): a file of it is unreadable or changed. */
  readonly #deferred = new Map<string, number>();
  readonly #hooks = new Set<Promise<boolean>>();
  readonly #hookStop = new AbortController();
  #uploader?: string;
  #notBefore = 0;
  #serverProblem?: string;
  /** Since when the server cannot be reached, as noted in the state file. */
  #trouble?: ServerTrouble;

  constructor(options: SenderOptions) {
    this.#o = options;
  }

  /**
   * Reattach to the jobs the server named that nothing follows yet, then start sending
   * the oldest pending group that may go, if nothing is uploading.
   */
  startNext(isOpen: (groupId: string) => boolean): void {
    const { signal, store, now } = this.#o;
    if (signal.aborted || now() < this.#notBefore) return;
    for (const job of store.submittedJobs()) {
      if (this.#inFlight.size >= MAX_JOBS_IN_FLIGHT) return;
      if (this.#inFlight.has(job.groupId)) continue;
      if (job.phase === "uploading") {
        if (this.#uploader !== undefined) continue;
        this.#start(job.groupId, job.files, { kind: "resume", jobId: job.jobId });
      } else {
        this.#start(job.groupId, job.files, { kind: "follow", jobId: job.jobId, phase: job.phase });
      }
    }
    if (this.#uploader !== undefined || this.#inFlight.size >= MAX_JOBS_IN_FLIGHT) return;
    for (const { groupId, files } of store.pendingGroups()) {
      if (this.#inFlight.has(groupId) || isOpen(groupId)) continue;
      if ((this.#deferred.get(groupId) ?? 0) > now()) continue;
      this.#deferred.delete(groupId);
      this.#start(groupId, files, { kind: "submit" });
      return;
    }
  }

  #start(groupId: string, rows: FileRecord[], way: Way): void {
    if (way.kind !== "follow") this.#uploader = groupId;
    const submission: Submission = { done: Promise.resolve() };
    const job = new JobRun(this.#context, groupId, rows, way);
    submission.done = (async () => {
      // Let startNext() register the submission before anything can finish.
      await Promise.resolve();
      try {
        await job.run((channel) => submission.channel = channel);
      } catch (error) {
        // Only a broken state file gets here; the next start finds the files as they were.
        this.#o.log.error(
          `unexpected error while sending ${names(rows)}: ${errorMessage(error)}`,
        );
      } finally {
        submission.channel?.abort();
        if (this.#uploader === groupId) this.#uploader = undefined;
        this.#inFlight.delete(groupId);
        this.#o.wake();
      }
    })();
    this.#inFlight.set(groupId, submission);
  }

  /** What each {@link JobRun} needs of the sender. */
  get #context(): JobRunContext {
    const o = this.#o;
    return {
      ...o,
      open: () => this.#connect(),
      sendable: (groupId, rows) => this.#sendable(groupId, rows),
      serverDown: (error, jobId, note) => this.#serverDown(error, jobId, note),
      serverUp: () => this.#serverUp(),
      uploadFailed: () => this.#notBefore = o.now() + o.backoff.fail(),
      uploadDone: (groupId) => {
        if (this.#uploader !== groupId) return;
        this.#uploader = undefined;
        o.wake();
      },
      completed: (jobId, resultDir) => {
        if (o.onComplete) this.#runHook(jobId, resultDir);
      },
      keyRejected: (error) => o.keyRejected(error),
    };
  }

  /** The earliest time (ms) the sender may have something new to start. */
  nextWake(now: number): number | undefined {
    const times = [...this.#deferred.values()];
    if (this.#notBefore > now) times.push(this.#notBefore);
    const future = times.filter((at) => at > now);
    return future.length > 0 ? Math.min(...future) : undefined;
  }

  /** Check each pending file again just before sending; returns what can go now. */
  async #sendable(groupId: string, rows: FileRecord[]): Promise<FileRecord[] | undefined> {
    const { store, log, probe, tracker, now } = this.#o;
    const good: FileRecord[] = [];
    for (const row of rows) {
      const result = await probe.stat(row.path);
      if (result.kind === "gone" || result.kind === "other") {
        store.markSkipped(row.id, "deleted before it was sent");
        log.warn(`${row.path} was deleted before it was sent; skipped`);
        tracker.forget(row.path);
        continue;
      }
      if (result.kind === "file" && !sameStat(result.stat, row)) {
        // Touched or rewritten: not sent until it is stable again. Then the loop keeps
        // this record for the same content, or records a new scan and skips this one.
        // Only the tracker is told here (synchronously); the loop hashes and records.
        const verdict = tracker.observe(row.path, result.stat, now());
        if (verdict.kind === "waiting" && verdict.changedAfterSettled) {
          log.info(
            `${row.path} changed after it was found complete; not sent until it is ` +
              "complete again",
          );
        }
        this.#deferred.set(groupId, now() + this.#o.stabilityMs + this.#o.pollMs);
        return undefined;
      }
      try {
        if (result.kind === "error") throw new Error(result.message);
        await probe.checkReadable(row.path);
      } catch (error) {
        this.#o.cannotRead(row.path, describeFsError(error));
        this.#deferred.set(groupId, now() + this.#o.pollMs);
        return undefined;
      }
      good.push(row);
    }
    return good;
  }

  /**
   * Open one session and close it at once, to learn at start-up whether the server
   * accepts our key. Any other failure is only debug: it is reported (once) when there
   * is something to send.
   */
  async checkServer(): Promise<void> {
    let channel: Channel | undefined;
    try {
      channel = await this.#connect();
    } catch (error) {
      const rejected = keyRejected(error);
      if (rejected) this.#o.keyRejected(rejected);
      else this.#o.log.debug(`start-up check of the server: ${errorMessage(error)}`);
      return;
    }
    if (!channel) return;
    this.#o.log.debug(`${this.#o.serverName ?? "the server"} accepts our key`);
    await channel.close().catch(() => {});
  }

  /** Connect, or undefined when the watcher stops first. */
  async #connect(): Promise<Channel | undefined> {
    const { signal } = this.#o;
    if (signal.aborted) return undefined;
    const connecting = this.#o.connect();
    let onAbort = () => {};
    const stopped = new Promise<undefined>((resolve) => {
      onAbort = () => resolve(undefined);
      signal.addEventListener("abort", onAbort, { once: true });
    });
    try {
      const winner = await Promise.race([connecting, stopped]);
      if (winner === undefined) connecting.then((late) => late.abort(), () => {});
      return winner;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  /**
   * The server could not be reached (or is going down): back off. `note` records on
   * the job's files why they wait; a job the server named is followed again later.
   */
  #serverDown(error: unknown, jobId: string | undefined, note: (reason: string) => void): void {
    const { backoff, log } = this.#o;
    const delay = backoff.fail();
    const now = this.#o.now();
    this.#notBefore = now + delay;
    const message = errorMessage(error);
    note(`waiting for the server: ${message}`);
    this.#noteTrouble(message, now, delay);
    if (this.#serverProblem === message) {
      log.debug(`still failing (${message}); next attempt in ${seconds(delay)}`);
      return;
    }
    this.#serverProblem = message;
    const hint = error instanceof ReconError && error.hint ? ` (hint: ${error.hint})` : "";
    const what = jobId
      ? `job ${jobId} stays on the server and is followed again`
      : "files wait and are retried";
    log.warn(
      `${message}${hint}; ${what} with backoff ` +
        `(${seconds(backoff.baseMs)} doubling up to ${seconds(backoff.capMs)})`,
    );
  }

  /** Note for `--status` since when, and how often, the server could not be reached. */
  #noteTrouble(message: string, now: number, delay: number): void {
    const at = new Date(now).toISOString();
    this.#trouble = {
      runId: this.#o.runId,
      since: this.#trouble?.since ?? at,
      failures: (this.#trouble?.failures ?? 0) + 1,
      lastError: message,
      lastAttemptAt: at,
      nextAttemptAt: new Date(now + delay).toISOString(),
    };
    this.#writeTrouble(JSON.stringify(this.#trouble));
  }

  #writeTrouble(value: string | undefined): void {
    try {
      if (value === undefined) this.#o.store.deleteMeta(SERVER_TROUBLE_KEY);
      else this.#o.store.setMeta(SERVER_TROUBLE_KEY, value);
    } catch (error) {
      // Only --status reads it; sending goes on.
      this.#o.log.debug(`cannot note the server's state: ${errorMessage(error)}`);
    }
  }

  #serverUp(): void {
    const { backoff } = this.#o;
    if (this.#trouble !== undefined) {
      this.#trouble = undefined;
      this.#writeTrouble(undefined);
    }
    if (this.#serverProblem !== undefined) {
      this.#o.log.info(
        `${this.#o.serverName ?? "the server"} answers again after ${backoff.failures} ` +
          "failed attempt(s)",
      );
      this.#serverProblem = undefined;
    }
    backoff.succeed();
    this.#notBefore = 0;
  }

  #runHook(jobId: string, resultDir: string): void {
    const running = runCompletionHook({
      program: this.#o.onComplete,
      jobId,
      resultDir,
      log: this.#o.log,
      signal: this.#hookStop.signal,
    });
    this.#hooks.add(running);
    running.finally(() => this.#hooks.delete(running));
  }

  /**
   * After the stop signal: jobs in flight end at once (the stop interrupts them; they
   * stay on the server); completion hooks get {@link STOP_GRACE_MS}, then are stopped.
   */
  async stop(): Promise<void> {
    const active = [...this.#inFlight.values()];
    const busy = [...active.map((submission) => submission.done), ...this.#hooks];
    if (busy.length === 0) return;
    this.#o.log.info(
      `stopping: ${active.length} job(s) in progress stay on the server and are taken up ` +
        "again at the next start" +
        (this.#hooks.size > 0 ? `; ${this.#hooks.size} completion hook(s) still run` : ""),
    );
    const settled = Promise.allSettled(busy);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, this.#o.stopGraceMs ?? STOP_GRACE_MS);
    });
    await Promise.race([settled, grace]);
    clearTimeout(timer);
    for (const submission of active) submission.channel?.abort();
    this.#hookStop.abort();
    await settled;
  }
}
