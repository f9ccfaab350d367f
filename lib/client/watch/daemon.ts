/**
 * The watch loop (docs/WATCH.md): notice files in CLIENT_WATCH_DIRECTORY through
 * `Deno.watchFs` events and a periodic scan, wait until each is finished (stable and
 * readable), record it in the state file, group files that finish close together,
 * and send each group as one job with {@link submitJob}, following it to its results.
 *
 * Guarantees, with the state file as the only memory that counts:
 * - a file is recorded `pending` before anything is sent, and `submitted` (with the
 *   job id) as soon as the server queues it, so no restart sends it twice;
 * - a server that cannot be reached is retried with {@link Backoff}; one log line per
 *   change of state, not per attempt;
 * - a job that fails on the server is marked `failed` and not sent again by itself;
 * - on stop, an upload in progress is abandoned (the server removes the partial job)
 *   and a queued or running job is cancelled; both stay `pending` for the next start.
 *   A job whose cancellation is not confirmed within {@link STOP_GRACE_MS} stays
 *   `submitted`.
 *
 * @module
 */
import * as path from "node:path";
// @ts-types="npm:@types/picomatch@4.0.3"
import picomatch from "picomatch";
import type { Channel } from "../../channel.ts";
import {
  ConnectionError,
  errorMessage,
  InterruptedError,
  JobError,
  ProtocolError,
  ReconError,
  TransferError,
  UsageError,
} from "../../errors.ts";
import type { ReconOptions } from "../../protocol.ts";
import { describeFiles, type LocalFile } from "../files.ts";
import { JobCancelledError, JobFailedError, submitJob } from "../submit.ts";
import { Backoff } from "./backoff.ts";
import { runCompletionHook } from "./hook.ts";
import { denoProbe, describeFsError, type FileProbe, type WatchLog } from "./probe.ts";
import { type FileStat, Grouper, sameStat, StabilityTracker } from "./scanner.ts";
import type { FileRecord, StateStore } from "./state.ts";

/** After a stop request, running jobs get this long to confirm their cancellation (ms). */
export const STOP_GRACE_MS = 5_000;
/** Jobs followed at the same time (one uploads; the others wait for their results). */
export const MAX_JOBS_IN_FLIGHT = 8;
/** The loop never spins faster than this, however many file events arrive (ms). */
const MIN_TICK_MS = 100;

/** Inputs of {@link runWatchDaemon}; the entrypoint builds them from recon.opts and flags. */
export interface WatchDaemonOptions {
  /** Absolute CLIENT_WATCH_DIRECTORY. */
  watchDir: string;
  /** CLIENT_WATCH_PATTERN, a glob on the file name. */
  pattern: string;
  pollMs: number;
  stabilityMs: number;
  groupingMs: number;
  /** CLIENT_DAEMON_RECON_OPTIONS_JSON, already checked. */
  reconOptions: ReconOptions;
  /** CLIENT_DOWNLOAD_DIR; each job's results go to `<downloadDir>/<job_id>/`. */
  downloadDir: string;
  /** CLIENT_DAEMON_ON_COMPLETE program, or "" for none. */
  onComplete: string;
  store: StateStore;
  /** This run's id, recorded with each job it submits. */
  runId: string;
  /** Opens a session with the server (throws ConnectionError/HandshakeError). */
  connect: () => Promise<Channel>;
  log: WatchLog;
  /** Aborted on SIGTERM/SIGINT. */
  signal: AbortSignal;
  /** How the server is named in log lines, e.g. `recon.example.org:60000`. */
  serverName?: string;
  probe?: FileProbe;
  /** Use Deno.watchFs besides the scan (default true). */
  fileEvents?: boolean;
  stopGraceMs?: number;
  backoff?: Backoff;
  now?: () => number;
}

interface Submission {
  done: Promise<void>;
  channel?: Channel;
}

function names(rows: readonly { path: string }[]): string {
  const list = rows.map((row) => path.basename(row.path));
  return list.length <= 4
    ? list.join(", ")
    : `${list.slice(0, 3).join(", ")} and ${list.length - 3} more`;
}

function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}

/**
 * A refusal that says nothing about the job itself: the server is going down or
 * short of disk. Such a job waits and is sent again, like for an unreachable server.
 */
function transientRefusal(error: unknown): boolean {
  return error instanceof JobError && !(error instanceof JobFailedError) &&
    /shutting down|disk space/i.test(error.message);
}

class WatchDaemon {
  readonly #o: WatchDaemonOptions;
  readonly #log: WatchLog;
  readonly #probe: FileProbe;
  readonly #now: () => number;
  readonly #isMatch: (name: string) => boolean;
  readonly #tracker: StabilityTracker;
  readonly #grouper: Grouper;
  readonly #backoff: Backoff;
  readonly #dirty = new Set<string>();
  readonly #unreadable = new Map<string, string>();
  readonly #inFlight = new Map<string, Submission>();
  readonly #deferred = new Map<string, number>();
  readonly #hooks = new Set<Promise<boolean>>();
  readonly #hookStop = new AbortController();
  #nextScanAt = 0;
  #listProblem?: string;
  #serverProblem?: string;
  #notBefore = 0;
  #uploader?: string;
  #wakeUp?: () => void;
  #woken = false;

  constructor(options: WatchDaemonOptions) {
    this.#o = options;
    this.#log = options.log;
    this.#probe = options.probe ?? denoProbe;
    this.#now = options.now ?? Date.now;
    this.#isMatch = picomatch(options.pattern, { dot: false });
    this.#tracker = new StabilityTracker({ stabilityMs: options.stabilityMs });
    this.#grouper = new Grouper({ windowMs: options.groupingMs });
    this.#backoff = options.backoff ?? new Backoff();
  }

  async run(): Promise<void> {
    await this.#checkWatchDir();
    this.#announce();
    const events = this.#o.fileEvents === false ? undefined : this.#watchEvents();
    try {
      while (!this.#o.signal.aborted) {
        await this.#tick();
        await this.#sleep(this.#nextWake() - this.#now());
      }
    } finally {
      events?.watcher.close();
      await events?.done;
      await this.#stop();
    }
  }

  async #checkWatchDir(): Promise<void> {
    const dir = this.#o.watchDir;
    const hint = "set CLIENT_WATCH_DIRECTORY in recon.opts or pass --watch-dir DIR; " +
      "the watcher needs to list and read it";
    try {
      await this.#probe.list(dir);
    } catch (error) {
      throw new UsageError(`cannot watch ${dir}: ${describeFsError(error)}`, {
        hint,
        cause: error,
      });
    }
  }

  #announce(): void {
    const o = this.#o;
    this.#log.info(
      `watching ${o.watchDir} for ${o.pattern} (scan every ${seconds(o.pollMs)}, ` +
        `stable after ${seconds(o.stabilityMs)}, grouping ${seconds(o.groupingMs)}); ` +
        `state file ${o.store.path}`,
    );
    const rows = o.store.list();
    const pending = rows.filter((row) => row.status === "pending");
    if (pending.length > 0) {
      this.#log.info(
        `${pending.length} file(s) from an earlier run are still to be sent: ${names(pending)}`,
      );
    }
    const orphaned = rows.filter((row) => row.status === "submitted" && row.runId !== o.runId);
    if (orphaned.length > 0) {
      this.#log.warn(
        `${orphaned.length} file(s) were submitted by an earlier run that stopped before their ` +
          `results arrived (${names(orphaned)}); they are not sent again automatically ` +
          `(see 'recon-client watch --status'; '--retry FILE' sends one again)`,
      );
    }
  }

  #watchEvents(): { watcher: Deno.FsWatcher; done: Promise<void> } | undefined {
    let watcher: Deno.FsWatcher;
    try {
      watcher = Deno.watchFs(this.#o.watchDir, { recursive: false });
    } catch (error) {
      this.#log.info(
        `file events are not available for ${this.#o.watchDir} (${errorMessage(error)}); ` +
          `relying on the scan every ${seconds(this.#o.pollMs)}`,
      );
      return undefined;
    }
    const done = (async () => {
      try {
        for await (const event of watcher) {
          let relevant = false;
          for (const changed of event.paths) {
            // Non-recursive: every event is about a direct child; rebuild the path from
            // our own spelling of the directory (events may name it through symlinks).
            const name = path.basename(changed);
            if (this.#isMatch(name)) {
              this.#dirty.add(path.join(this.#o.watchDir, name));
              relevant = true;
            }
          }
          if (relevant) this.#wake();
        }
      } catch (error) {
        if (!this.#o.signal.aborted) {
          this.#log.info(
            `file events stopped (${errorMessage(error)}); relying on the scan every ${
              seconds(this.#o.pollMs)
            }`,
          );
        }
      }
    })();
    return { watcher, done };
  }

  #wake(): void {
    this.#woken = true;
    this.#wakeUp?.();
  }

  #sleep(ms: number): Promise<void> {
    const { signal } = this.#o;
    if (signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const finish = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", finish);
        this.#wakeUp = undefined;
        resolve();
      };
      signal.addEventListener("abort", finish, { once: true });
      // Even when woken at once, wait MIN_TICK_MS so a burst of events makes one tick.
      timer = setTimeout(() => {
        if (this.#woken) finish();
        else {
          this.#wakeUp = finish;
          timer = setTimeout(finish, Math.max(0, ms - MIN_TICK_MS));
        }
      }, MIN_TICK_MS);
    });
  }

  #nextWake(): number {
    const now = this.#now();
    const times = [this.#nextScanAt];
    const check = this.#tracker.nextCheck();
    if (check !== undefined) times.push(check);
    const closes = this.#grouper.closesAt(now);
    if (closes !== undefined) times.push(closes);
    if (this.#notBefore > now) times.push(this.#notBefore);
    for (const at of this.#deferred.values()) if (at > now) times.push(at);
    return Math.min(...times);
  }

  async #tick(): Promise<void> {
    this.#woken = false;
    const now = this.#now();
    if (now >= this.#nextScanAt) {
      this.#nextScanAt = now + this.#o.pollMs;
      await this.#scan();
    } else if (this.#dirty.size > 0) {
      const dirty = [...this.#dirty];
      this.#dirty.clear();
      for (const file of dirty) await this.#look(file);
    }
    for (const file of this.#tracker.due(this.#now())) {
      if (this.#o.signal.aborted) return;
      await this.#look(file);
    }
    this.#startSubmission();
  }

  async #scan(): Promise<void> {
    const dir = this.#o.watchDir;
    let entries: string[];
    try {
      entries = await this.#probe.list(dir);
    } catch (error) {
      const message = describeFsError(error);
      if (this.#listProblem !== message) {
        this.#log.warn(
          `cannot list ${dir}: ${message}; trying again every ${seconds(this.#o.pollMs)}`,
        );
        this.#listProblem = message;
      }
      return;
    }
    if (this.#listProblem !== undefined) {
      this.#log.info(`${dir} can be listed again`);
      this.#listProblem = undefined;
    }
    this.#dirty.clear();
    const present = new Set<string>();
    for (const name of entries) {
      if (!this.#isMatch(name)) continue;
      const file = path.join(dir, name);
      present.add(file);
      if (this.#o.signal.aborted) return;
      await this.#look(file);
    }
    for (const known of this.#tracker.paths()) if (!present.has(known)) this.#vanished(known);
  }

  async #look(file: string): Promise<void> {
    const result = await this.#probe.stat(file);
    if (result.kind === "gone" || result.kind === "other") {
      this.#vanished(file);
      return;
    }
    if (result.kind === "error") {
      this.#cannotRead(file, result.message);
      return;
    }
    const verdict = this.#tracker.observe(file, result.stat, this.#now());
    if (verdict.kind === "waiting") {
      if (verdict.changedAfterSettled) {
        this.#log.info(
          `${file} changed after it was found complete; it is judged afresh once it is ` +
            "complete again",
        );
      } else if (verdict.shrunkFrom !== undefined) {
        this.#log.info(
          `${file} got smaller (${verdict.shrunkFrom} → ${result.stat.size} bytes) while it ` +
            "was being written; skipped until it is complete again",
        );
      }
    } else if (verdict.kind === "stable") {
      await this.#finished(file, result.stat);
    }
  }

  #vanished(file: string): void {
    this.#unreadable.delete(file);
    const { wasWatching } = this.#tracker.forget(file);
    if (wasWatching) this.#log.info(`${file} disappeared before it was complete; skipped`);
  }

  #cannotRead(file: string, message: string): void {
    this.#tracker.postpone(file, this.#now() + this.#o.pollMs);
    if (this.#unreadable.get(file) === message) return;
    this.#unreadable.set(file, message);
    this.#log.warn(
      `cannot read ${file}: ${message}; the other files go on, this one is tried again at ` +
        "each scan",
    );
  }

  /** A stable file: check it is readable, hash it and record it as pending. */
  async #finished(file: string, stat: FileStat): Promise<void> {
    try {
      await this.#probe.checkReadable(file);
    } catch (error) {
      this.#cannotRead(file, describeFsError(error));
      return;
    }
    if (this.#unreadable.delete(file)) this.#log.info(`${file} can be read now`);
    const store = this.#o.store;
    const known = store.latest(file);
    if (known && sameStat(known, stat)) {
      this.#tracker.settle(file, stat); // recorded earlier: whatever its status, not new
      return;
    }
    let sha256: string;
    try {
      sha256 = await this.#probe.sha256(file, this.#o.signal);
    } catch (error) {
      if (this.#o.signal.aborted) return;
      this.#cannotRead(file, describeFsError(error));
      return;
    }
    const after = await this.#probe.stat(file);
    if (after.kind !== "file" || !sameStat(after.stat, stat)) {
      await this.#look(file); // changed while we read it: back to waiting (or gone)
      return;
    }
    this.#tracker.settle(file, stat);
    if (known && known.sha256 === sha256) {
      store.restat(known.id, stat);
      this.#log.debug(`${file}: new time stamp, same content as recorded; not a new scan`);
      return;
    }
    if (known?.status === "pending") {
      store.markSkipped(
        known.id,
        "replaced by a different file of the same name before it was sent",
      );
    }
    const groupId = this.#grouper.join(this.#now());
    store.addPending({ path: file, ...stat, sha256 }, groupId);
    this.#log.info(
      `${file} is complete (${stat.size} bytes, sha256 ${sha256.slice(0, 16)}…)` +
        `${known ? ", a new scan under a name seen before" : ""}; to be sent`,
    );
    this.#wake();
  }

  #startSubmission(): void {
    if (this.#o.signal.aborted || this.#uploader !== undefined) return;
    if (this.#inFlight.size >= MAX_JOBS_IN_FLIGHT) return;
    const now = this.#now();
    if (now < this.#notBefore) return;
    for (const { groupId, files } of this.#o.store.pendingGroups()) {
      if (this.#inFlight.has(groupId) || this.#grouper.isOpen(groupId, now)) continue;
      if ((this.#deferred.get(groupId) ?? 0) > now) continue;
      this.#deferred.delete(groupId);
      this.#uploader = groupId;
      const submission: Submission = { done: Promise.resolve() };
      submission.done = this.#submit(groupId, files, submission).catch((error) => {
        // Only a broken state file gets here; the next start finds the files pending.
        this.#log.error(`unexpected error while sending ${names(files)}: ${errorMessage(error)}`);
      });
      this.#inFlight.set(groupId, submission);
      return;
    }
  }

  /** Check each pending file again just before sending; returns what can go. */
  async #sendable(groupId: string, rows: FileRecord[]): Promise<FileRecord[] | undefined> {
    const store = this.#o.store;
    const good: FileRecord[] = [];
    for (const row of rows) {
      const result = await this.#probe.stat(row.path);
      if (result.kind === "gone" || result.kind === "other") {
        store.markSkipped(row.id, "deleted before it was sent");
        this.#log.warn(`${row.path} was deleted before it was sent; skipped`);
        this.#tracker.forget(row.path);
        continue;
      }
      if (result.kind === "file" && !sameStat(result.stat, row)) {
        // Touched, or rewritten: wait until it is stable again. Then the same content
        // keeps this record (restat) and different content becomes a new scan, this
        // record being skipped (see #finished).
        // Only the tracker is told (synchronously): the loop itself hashes and records.
        const verdict = this.#tracker.observe(row.path, result.stat, this.#now());
        if (verdict.kind === "waiting" && verdict.changedAfterSettled) {
          this.#log.info(
            `${row.path} changed after it was found complete; not sent until it is complete again`,
          );
        }
        this.#deferred.set(groupId, this.#now() + this.#o.stabilityMs + this.#o.pollMs);
        return undefined;
      }
      try {
        if (result.kind === "error") throw new Error(result.message);
        await this.#probe.checkReadable(row.path);
      } catch (error) {
        this.#cannotRead(row.path, describeFsError(error));
        this.#deferred.set(groupId, this.#now() + this.#o.pollMs);
        return undefined;
      }
      good.push(row);
    }
    return good;
  }

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
    // Let the caller register the submission before anything can finish.
    await Promise.resolve();
    const { store, log } = { store: this.#o.store, log: this.#log };
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
        this.#serverDown(error);
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
        signal: this.#o.signal,
        onEvent: (event) => {
          if (event.kind === "queued") {
            jobId = event.jobId;
            store.markSubmitted(ids, event.jobId, this.#o.runId);
            log.info(`job ${event.jobId}: queued on the server (${names(rows)})`);
            if (this.#uploader === groupId) this.#uploader = undefined;
            this.#wake();
          } else if (event.kind === "started") {
            log.debug(`job ${event.jobId}: running`);
          }
        },
        onHostile: (message) => log.error(`hostile server behaviour: ${message}`),
      });
      await channel.close().catch(() => {});
      store.markDone(ids, result.jobId, result.resultDir);
      log.info(
        `job ${result.jobId}: done, ${result.files.length} result file(s) in ${result.resultDir}`,
      );
      if (this.#o.onComplete) this.#runHook(result.jobId, result.resultDir);
    } catch (error) {
      await this.#failed(error, groupId, rows, jobId);
    } finally {
      submission.channel?.abort();
      if (this.#uploader === groupId) this.#uploader = undefined;
      this.#inFlight.delete(groupId);
      this.#wake();
    }
  }

  async #failed(
    error: unknown,
    groupId: string,
    rows: FileRecord[],
    jobId: string | undefined,
  ): Promise<void> {
    const { store } = this.#o;
    const log = this.#log;
    const ids = rows.map((row) => row.id);
    const message = errorMessage(error);
    if (jobId === undefined) {
      // Nothing of this job is queued on the server: the files stay pending.
      if (this.#o.signal.aborted || error instanceof InterruptedError) {
        store.notePending(ids, "upload abandoned when the watcher stopped");
        log.info(
          `stopped while sending ${names(rows)}; the server drops the partial upload; ` +
            "sent again at the next start",
        );
      } else if (transientRefusal(error)) {
        this.#serverDown(error);
      } else if (error instanceof JobError) {
        store.markFailed(ids, message, null);
        log.error(
          `${message} (${names(rows)}); not sent again automatically; after fixing the cause: ` +
            `recon-client watch --retry ${rows[0]?.path ?? "FILE"}`,
        );
      } else if (error instanceof TransferError) {
        log.warn(`sending ${names(rows)} failed: ${message}`);
        await this.#sendable(groupId, rows); // skips what changed or vanished
        this.#notBefore = this.#now() + this.#backoff.fail();
      } else {
        this.#serverDown(error);
      }
      return;
    }
    if (error instanceof JobCancelledError) {
      const changed = store.markPendingAgain(
        ids,
        jobId,
        `job ${jobId} was cancelled when the watcher stopped; sent again at the next start`,
      );
      if (changed > 0) {
        log.info(
          `job ${jobId}: cancelled on the server because the watcher is stopping; ` +
            `${names(rows)} will be sent again at the next start`,
        );
      }
      return;
    }
    if (error instanceof JobError) {
      let reason = message;
      if (error instanceof JobFailedError && error.stderrTail.length > 0) {
        reason += ` (script stderr: ${error.stderrTail.at(-1)})`;
      }
      store.markFailed(ids, reason, jobId);
      log.error(
        `${reason}; not sent again automatically; after fixing the cause: ` +
          `recon-client watch --retry ${jobId}`,
      );
      return;
    }
    if (
      !(error instanceof ProtocolError) &&
      (error instanceof InterruptedError || error instanceof ConnectionError)
    ) {
      const note = this.#o.signal.aborted
        ? `the watcher stopped before job ${jobId} finished and its cancellation was not confirmed`
        : `the connection was lost while job ${jobId} ran (${message})`;
      store.noteSubmitted(
        ids,
        jobId,
        `${note}; the server may still run it and keeps its results; not sent again ` +
          "automatically",
      );
      log.warn(
        `${note}; the server may still run it and keeps its results there; not sent again ` +
          `automatically ('recon-client watch --retry ${jobId}' sends it again)`,
      );
      return;
    }
    const reason = `results not received: ${message}`;
    store.markFailed(ids, reason, jobId);
    log.error(
      `job ${jobId}: ${reason}; not sent again automatically ` +
        `('recon-client watch --retry ${jobId}' sends it again)`,
    );
  }

  #serverDown(error: unknown): void {
    const delay = this.#backoff.fail();
    this.#notBefore = this.#now() + delay;
    const message = errorMessage(error);
    if (this.#serverProblem === message) {
      this.#log.debug(`still failing (${message}); next attempt in ${seconds(delay)}`);
      return;
    }
    this.#serverProblem = message;
    const hint = error instanceof ReconError && error.hint ? ` (hint: ${error.hint})` : "";
    this.#log.warn(
      `${message}${hint}; files wait and are retried with backoff ` +
        `(${seconds(this.#backoff.baseMs)} doubling up to ${seconds(this.#backoff.capMs)})`,
    );
  }

  #serverUp(): void {
    if (this.#serverProblem !== undefined) {
      this.#log.info(
        `${this.#o.serverName ?? "the server"} answers again after ${this.#backoff.failures} ` +
          "failed attempt(s)",
      );
      this.#serverProblem = undefined;
    }
    this.#backoff.succeed();
    this.#notBefore = 0;
  }

  #runHook(jobId: string, resultDir: string): void {
    const running = runCompletionHook({
      program: this.#o.onComplete,
      jobId,
      resultDir,
      log: this.#log,
      signal: this.#hookStop.signal,
    });
    this.#hooks.add(running);
    running.finally(() => this.#hooks.delete(running));
  }

  async #stop(): Promise<void> {
    const active = [...this.#inFlight.values()];
    const busy = [...active.map((submission) => submission.done), ...this.#hooks];
    if (busy.length > 0) {
      this.#log.info(
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
    this.#log.info("stopped");
  }
}

/**
 * Watch until `options.signal` is aborted, then stop cleanly.
 * @throws {UsageError} when the watch directory cannot be listed at start.
 */
export async function runWatchDaemon(options: WatchDaemonOptions): Promise<void> {
  await new WatchDaemon(options).run();
}
