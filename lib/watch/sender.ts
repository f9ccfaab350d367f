/**
 * Sending the watch mode's pending groups (docs/WATCH.md §2, §5–§9): each group
 * becomes one job through {@link connectToServer}-style `connect` and
 * {@link submitJob}, followed to its results. One group uploads at a time; up to
 * {@link MAX_JOBS_IN_FLIGHT} wait for their results at once.
 *
 * The state file changes at each step: `submitted` with the job id the moment the
 * server queues the job (inside submitJob's event callback, before the next message
 * is read), then `done` or `failed`; what a failure means is decided by
 * {@link classifyFailure}. An unreachable server is retried with {@link Backoff}, with
 * one log line per change of state; a server that refuses our key is not retried at
 * all: `keyRejected` stops the watcher.
 *
 * @module
 */
import * as path from "node:path";
import type { Channel } from "../wire/channel.ts";
import { errorMessage, KeyRejectedError, ReconError } from "../errors.ts";
import type { ReconOptions } from "../wire/protocol.ts";
import { describeFiles, type LocalFile } from "../client/files.ts";
import { skippedWarning } from "../client/format.ts";
import { JobFailedError, submitJob, type SubmitResult } from "../client/submit.ts";
import type { Backoff } from "./backoff.ts";
import { runCompletionHook } from "./hook.ts";
import { classifyFailure } from "./outcome.ts";
import { describeFsError, type FileProbe, type WatchLog } from "./probe.ts";
import { sameStat, type StabilityTracker } from "./scanner.ts";
import type { FileRecord, StateStore } from "./state.ts";
import { names, seconds } from "./words.ts";

/** After a stop request, running jobs get this long to confirm their cancellation (ms). */
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

/** Starts and follows the submissions of pending groups. */
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

  constructor(options: SenderOptions) {
    this.#o = options;
  }

  /** Start sending the oldest pending group that may go, if nothing is uploading. */
  startNext(isOpen: (groupId: string) => boolean): void {
    const { signal, store, now } = this.#o;
    if (signal.aborted || this.#uploader !== undefined) return;
    if (this.#inFlight.size >= MAX_JOBS_IN_FLIGHT || now() < this.#notBefore) return;
    for (const { groupId, files } of store.pendingGroups()) {
      if (this.#inFlight.has(groupId) || isOpen(groupId)) continue;
      if ((this.#deferred.get(groupId) ?? 0) > now()) continue;
      this.#deferred.delete(groupId);
      this.#uploader = groupId;
      const submission: Submission = { done: Promise.resolve() };
      submission.done = this.#submit(groupId, files, submission).catch((error) => {
        // Only a broken state file gets here; the next start finds the files pending.
        this.#o.log.error(
          `unexpected error while sending ${names(files)}: ${errorMessage(error)}`,
        );
      });
      this.#inFlight.set(groupId, submission);
      return;
    }
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
      if (error instanceof KeyRejectedError) this.#o.keyRejected(error);
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

  async #submit(groupId: string, pending: FileRecord[], submission: Submission): Promise<void> {
    // Let startNext() register the submission before anything can finish.
    await Promise.resolve();
    const { store, log } = this.#o;
    let rows: FileRecord[] = [];
    let jobId: string | undefined;
    try {
      const sendable = await this.#sendable(groupId, pending);
      if (!sendable || sendable.length === 0) return;
      rows = sendable;
      const ids = rows.map((row) => row.id);
      let files: LocalFile[];
      try {
        files = await describeFiles(rows.map((row) => row.path));
      } catch (error) {
        const reason = errorMessage(error);
        store.markFailed(ids, reason, null);
        log.error(`cannot send ${names(rows)}: ${reason}; not sent`);
        return;
      }
      store.countAttempt(ids);
      let channel: Channel | undefined;
      try {
        channel = await this.#connect();
      } catch (error) {
        if (error instanceof KeyRejectedError) {
          store.notePending(ids, `not sent: ${error.message}`);
          this.#o.keyRejected(error);
        } else {
          this.#serverDown(error, ids);
        }
        return;
      }
      if (!channel) return;
      submission.channel = channel;
      this.#serverUp();
      log.info(`sending ${names(rows)} as one job (${files.length} file(s))`);
      const result = await submitJob({
        channel,
        files,
        options: this.#o.reconOptions,
        downloadDir: this.#o.downloadDir,
        maxResultBytes: this.#o.maxResultBytes,
        signal: this.#o.signal,
        onEvent: (event) => {
          if (event.kind === "queued") {
            jobId = event.jobId;
            store.markSubmitted(ids, event.jobId, this.#o.runId);
            log.info(`job ${event.jobId}: queued on the server (${names(rows)})`);
            if (this.#uploader === groupId) this.#uploader = undefined;
            this.#o.wake();
          } else if (event.kind === "started") {
            log.debug(`job ${event.jobId}: running`);
          }
        },
        onHostile: (message) => log.error(`hostile server behaviour: ${message}`),
      });
      await channel.close().catch(() => {});
      this.#done(rows, result);
    } catch (error) {
      await this.#failed(error, groupId, rows, jobId);
    } finally {
      submission.channel?.abort();
      if (this.#uploader === groupId) this.#uploader = undefined;
      this.#inFlight.delete(groupId);
      this.#o.wake();
    }
  }

  #done(rows: FileRecord[], result: SubmitResult): void {
    const { store, log } = this.#o;
    // The server's SHA-256 of each upload against ours from when the file was found
    // finished: a difference means the file changed after it looked complete.
    const changed = rows.filter((row) => {
      const sent = result.uploaded.find((entry) => entry.name === path.basename(row.path));
      // A baseline file sent by --retry was never hashed: nothing to compare with.
      return sent?.sha256 !== undefined && row.sha256 !== null && sent.sha256 !== row.sha256;
    });
    let note: string | undefined;
    if (changed.length > 0) {
      note = `${names(changed)} changed after it was found complete: the server got ` +
        "different content than recorded (raise CLIENT_DAEMON_STABILITY_DELAY?)";
      log.warn(`job ${result.jobId}: ${note}`);
    }
    const skipped = skippedWarning(result.skipped);
    if (skipped) log.warn(`job ${result.jobId}: ${skipped}`);
    store.markDone(rows.map((row) => row.id), result.jobId, result.resultDir, note);
    log.info(
      `job ${result.jobId}: done, ${result.files.length} result file(s) in ${result.resultDir}`,
    );
    if (this.#o.onComplete) this.#runHook(result.jobId, result.resultDir);
  }

  async #failed(
    error: unknown,
    groupId: string,
    rows: FileRecord[],
    jobId: string | undefined,
  ): Promise<void> {
    const { store, log } = this.#o;
    const ids = rows.map((row) => row.id);
    const message = errorMessage(error);
    const retry = `recon-client watch --retry ${jobId ?? rows[0]?.path ?? "FILE"}`;
    const outcome = classifyFailure(error, {
      queued: jobId !== undefined,
      stopping: this.#o.signal.aborted,
    });
    switch (outcome) {
      case "abandoned":
        store.notePending(ids, "upload abandoned when the watcher stopped");
        log.info(
          `stopped while sending ${names(rows)}; the server drops the partial upload; ` +
            "sent again at the next start",
        );
        return;
      case "unreachable":
        this.#serverDown(error, ids);
        return;
      case "refused":
        store.markFailed(ids, message, null);
        log.error(
          `${message} (${names(rows)}); not sent again automatically; after fixing the ` +
            `cause: ${retry}`,
        );
        return;
      case "upload-failed":
        log.warn(`sending ${names(rows)} failed: ${message}`);
        await this.#sendable(groupId, rows); // skips what vanished, defers what changed
        this.#notBefore = this.#o.now() + this.#o.backoff.fail();
        return;
      case "cancelled":
        if (
          store.markPendingAgain(
            ids,
            jobId!,
            `job ${jobId} was cancelled when the watcher stopped; sent again at the next start`,
          ) > 0
        ) {
          log.info(
            `job ${jobId}: cancelled on the server because the watcher is stopping; ` +
              `${names(rows)} will be sent again at the next start`,
          );
        }
        return;
      case "job-failed": {
        let reason = message;
        if (error instanceof JobFailedError && error.stderrTail.length > 0) {
          reason += ` (script stderr: ${error.stderrTail.at(-1)})`;
        }
        store.markFailed(ids, reason, jobId!);
        log.error(`${reason}; not sent again automatically; after fixing the cause: ${retry}`);
        return;
      }
      case "orphaned": {
        const what = this.#o.signal.aborted
          ? `the watcher stopped before job ${jobId} finished and its cancellation was not ` +
            "confirmed"
          : `the connection was lost while job ${jobId} ran (${message})`;
        const note = `${what}; the server may still run it and keeps its results there; ` +
          "not sent again automatically";
        store.noteSubmitted(ids, jobId!, note);
        log.warn(`${note} ('${retry}' sends it again)`);
        return;
      }
      case "results-lost": {
        const reason = `results not received: ${message}`;
        store.markFailed(ids, reason, jobId!);
        log.error(
          `job ${jobId}: ${reason}; not sent again automatically ('${retry}' sends it again)`,
        );
        return;
      }
    }
  }

  /** The server could not be reached (or is going down): back off; `ids` wait, noted. */
  #serverDown(error: unknown, ids: readonly number[]): void {
    const { backoff, log } = this.#o;
    const delay = backoff.fail();
    this.#notBefore = this.#o.now() + delay;
    const message = errorMessage(error);
    this.#o.store.notePending(ids, `waiting for the server: ${message}`);
    if (this.#serverProblem === message) {
      log.debug(`still failing (${message}); next attempt in ${seconds(delay)}`);
      return;
    }
    this.#serverProblem = message;
    const hint = error instanceof ReconError && error.hint ? ` (hint: ${error.hint})` : "";
    log.warn(
      `${message}${hint}; files wait and are retried with backoff ` +
        `(${seconds(backoff.baseMs)} doubling up to ${seconds(backoff.capMs)})`,
    );
  }

  #serverUp(): void {
    const { backoff } = this.#o;
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
   * After the stop signal: give submissions (cancelling their jobs) and hooks
   * {@link STOP_GRACE_MS}, then close what is left.
   */
  async stop(): Promise<void> {
    const active = [...this.#inFlight.values()];
    const busy = [...active.map((submission) => submission.done), ...this.#hooks];
    if (busy.length === 0) return;
    this.#o.log.info(
      `stopping: ${active.length} job(s) in progress are cancelled or abandoned` +
        (this.#hooks.size > 0 ? `, ${this.#hooks.size} completion hook(s) still run` : ""),
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
