/**
 * The watch loop (docs/WATCH.md §2–§3): notice files in CLIENT_WATCH_DIRECTORY through
 * `Deno.watchFs` events and a scan every poll interval, wait until each is finished
 * (stable by {@link StabilityTracker}, readable), hash it and record it `pending` in
 * the state file in a group from {@link Grouper}, then let {@link Sender} send each
 * closed group as one job. A file is recorded before anything is sent, so a stop or a
 * crash never forgets it.
 *
 * The first start (no first-start note in the state file yet) records the files
 * already in the directory as `baseline` instead of sending them, unless told to send
 * them all (`--submit-existing`) or those modified since a time (`--since`). While it
 * runs, the files it waits on are mirrored into the state file for `--status`. When
 * the server refuses our key the watcher stops (records why) instead of retrying.
 * A heartbeat in the state file (the last complete scan, and why the directory cannot
 * be listed while it cannot) lets `--status` tell a watcher that hangs from one that
 * watches.
 *
 * Which job goes next, and what a stop does, is in sender.ts; how one job is seen
 * through, also one an earlier run left with the server (taken up again instead of
 * sent again), in job_run.ts; the rules for failures in outcome.ts.
 *
 * @module
 */
import * as path from "node:path";
// @ts-types="npm:@types/picomatch@4.0.3"
import picomatch from "picomatch";
import type { Channel } from "../wire/channel.ts";
import { errorMessage, type KeyRejectedError, UsageError } from "../errors.ts";
import type { ReconOptions } from "../wire/protocol.ts";
import { Backoff } from "./backoff.ts";
import { denoProbe, describeFsError, type FileProbe, type WatchLog } from "./probe.ts";
import { type FileStat, Grouper, sameStat, StabilityTracker } from "./scanner.ts";
import { Sender, type SenderOptions } from "./sender.ts";
import {
  type FirstStart,
  type Heartbeat,
  HEARTBEAT_KEY,
  SERVER_TROUBLE_KEY,
  type StateStore,
  type StopNote,
  STOPPED_KEY,
} from "./state.ts";
import { names, seconds } from "./words.ts";

export { MAX_JOBS_IN_FLIGHT, RECONNECT_TIMEOUT_MS, STOP_GRACE_MS } from "./sender.ts";

/** The loop never spins faster than this, however many file events arrive (ms). */
const MIN_TICK_MS = 100;
/**
 * The files being written are copied to the state file at most this often (ms): a
 * growing file changes at every look, and each write is a synchronous commit.
 */
export const WATCHING_WRITE_MS = 1_000;
/** The heartbeat is written at most this often (ms); `--status` allows far longer. */
export const HEARTBEAT_WRITE_MS = 60_000;

/** What the first start does with the matching files already in the directory. */
export type ExistingFiles =
  /** Record them as baseline, never sent by themselves (the default). */
  | { mode: "baseline" }
  /** Send them all, as files that appear later. */
  | { mode: "submit-existing" }
  /** Send those modified at or after `since`; record the others as baseline. */
  | { mode: "since"; since: Date };

/** How {@link runWatchDaemon} ended. */
export type WatchEnd =
  /** The stop signal. */
  | { kind: "stopped" }
  /** The server refused our key: nothing can be sent until a person fixes it. */
  | { kind: "key-rejected"; note: StopNote };

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
  /** CLIENT_MAX_RESULT_BYTES (0: no cap). */
  maxResultBytes?: number;
  /** VERIFY_AFTER_WRITE: read each result back once written and check it. */
  verifyAfterWrite?: boolean;
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
  /**
   * What a first start does with the files already there. Undefined: baseline, and no
   * warning on a later start (only an explicit choice is reported as ignored then).
   */
  existing?: ExistingFiles;
  probe?: FileProbe;
  /** Use Deno.watchFs besides the scan (default true). */
  fileEvents?: boolean;
  stopGraceMs?: number;
  /** CLIENT_RECONNECT_TIMEOUT (ms) for one job's reconnections (see sender.ts). */
  reconnectTimeoutMs?: number;
  /** Test hooks for a job's reconnections. */
  reconnect?: SenderOptions["reconnect"];
  backoff?: Backoff;
  now?: () => number;
  /**
   * Called after each pass of the loop that scanned the whole directory, so a test
   * can wait for "N more scans" as an event instead of sleeping.
   */
  onScanned?: () => void;
}

class WatchDaemon {
  readonly #o: WatchDaemonOptions;
  readonly #log: WatchLog;
  readonly #probe: FileProbe;
  readonly #now: () => number;
  readonly #isMatch: (name: string) => boolean;
  readonly #tracker: StabilityTracker;
  readonly #grouper: Grouper;
  readonly #sender: Sender;
  readonly #dirty = new Set<string>();
  readonly #unreadable = new Map<string, string>();
  /** Aborted by the caller's signal, or when the watcher must stop by itself. */
  readonly #stopping = new AbortController();
  readonly #signal = this.#stopping.signal;
  #end: WatchEnd = { kind: "stopped" };
  #firstStartLine?: string;
  #watchingKey = "";
  #watchingWrittenAt = -Infinity;
  #watchingDue?: number;
  #nextScanAt = 0;
  #listProblem?: string;
  /** The last complete scan (at first: the start). */
  #scannedAt = 0;
  #beatWrittenAt = -Infinity;
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
    if (options.signal.aborted) this.#stopping.abort();
    else options.signal.addEventListener("abort", () => this.#stopping.abort(), { once: true });
    this.#sender = new Sender({
      ...options,
      signal: this.#signal,
      keyRejected: (error) => this.#keyRejected(error),
      probe: this.#probe,
      backoff: options.backoff ?? new Backoff(),
      tracker: this.#tracker,
      now: this.#now,
      cannotRead: (file, message) => this.#cannotRead(file, message),
      wake: () => this.#wake(),
    });
  }

  async run(): Promise<WatchEnd> {
    await this.#checkWatchDir();
    const { store } = this.#o;
    store.deleteMeta(STOPPED_KEY);
    store.deleteMeta(SERVER_TROUBLE_KEY);
    store.setWatching([]);
    this.#scannedAt = this.#now();
    this.#beat(true);
    await this.#firstStart();
    this.#beat(true);
    this.#announce();
    const events = this.#o.fileEvents === false ? undefined : this.#watchEvents();
    // Ask the server once at start, so a wrong key shows now and not at the next scan.
    const checked = this.#sender.checkServer();
    try {
      while (!this.#signal.aborted) {
        await this.#tick();
        await this.#sleep(this.#nextWake() - this.#now());
      }
    } finally {
      events?.watcher.close();
      await events?.done;
      await checked;
      await this.#stop();
      try {
        store.setWatching([]);
        // Judged only while a watcher runs; gone, they cannot be mistaken for the next run's.
        store.deleteMeta(HEARTBEAT_KEY);
        store.deleteMeta(SERVER_TROUBLE_KEY);
      } catch { /* --status shows these only while a watcher runs */ }
    }
    return this.#end;
  }

  /**
   * The first start: record the matching files already there as baseline (or leave
   * them to be sent, as the options say), with a note that makes later starts skip
   * this. One transaction, before the "watching" line: a file written after that line
   * is always sent.
   */
  async #firstStart(): Promise<void> {
    const { store, watchDir } = this.#o;
    const existing = this.#o.existing ?? { mode: "baseline" };
    const done = store.firstStart();
    if (done) {
      if (existing.mode !== "baseline") {
        const flag = existing.mode === "since" ? "--since" : "--submit-existing";
        this.#log.warn(
          `${flag} is ignored: it applies to the first start only, and this state file's ` +
            `first start was ${done.at}; 'recon-client watch --retry FILE' sends a recorded file`,
        );
      }
      return;
    }
    const files: (FileStat & { path: string })[] = [];
    for (const name of await this.#probe.list(watchDir)) {
      if (!this.#isMatch(name)) continue;
      const file = path.join(watchDir, name);
      const result = await this.#probe.stat(file);
      if (result.kind === "file") files.push({ path: file, ...result.stat });
    }
    files.sort((a, b) => a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
    const since = existing.mode === "since" ? existing.since.getTime() : undefined;
    const baseline = existing.mode === "submit-existing"
      ? []
      : files.filter((file) => since === undefined || file.mtimeMs < since);
    const note: FirstStart = {
      at: new Date(this.#now()).toISOString(),
      mode: existing.mode,
      ...(existing.mode === "since" ? { since: existing.since.toISOString() } : {}),
      baseline: baseline.length,
      sent: files.length - baseline.length,
    };
    store.addBaseline(baseline, note);
    for (const file of baseline) this.#tracker.settle(file.path, file);
    this.#firstStartLine = firstStartLine(note);
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
    if (this.#firstStartLine) this.#log.info(this.#firstStartLine);
    const rows = o.store.list();
    const pending = rows.filter((row) => row.status === "pending");
    if (pending.length > 0) {
      this.#log.info(
        `${pending.length} file(s) from an earlier run are still to be sent: ${names(pending)}`,
      );
    }
    const jobs = o.store.submittedJobs();
    if (jobs.length > 0) {
      const list = jobs.slice(0, 4).map((job) =>
        `${job.jobId} (${job.phase}: ${names(job.files)})`
      );
      if (jobs.length > 4) list.push(`${jobs.length - 4} more`);
      this.#log.info(
        `${jobs.length} job(s) of an earlier run are on the server; taking them up again, ` +
          `not sending their files again: ${list.join(", ")}`,
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
        if (!this.#signal.aborted) {
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
    const signal = this.#signal;
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
    const sender = this.#sender.nextWake(now);
    if (sender !== undefined) times.push(sender);
    if (this.#watchingDue !== undefined) times.push(this.#watchingDue);
    return Math.min(...times);
  }

  async #tick(): Promise<void> {
    this.#woken = false;
    const now = this.#now();
    const scanning = now >= this.#nextScanAt;
    if (scanning) {
      this.#nextScanAt = now + this.#o.pollMs;
      await this.#scan();
    } else if (this.#dirty.size > 0) {
      const dirty = [...this.#dirty];
      this.#dirty.clear();
      for (const file of dirty) await this.#look(file);
    }
    for (const file of this.#tracker.due(this.#now())) {
      if (this.#signal.aborted) return;
      await this.#look(file);
    }
    this.#sender.startNext((groupId) => this.#grouper.isOpen(groupId, this.#now()));
    this.#writeWatching();
    if (scanning) {
      this.#beat();
      this.#o.onScanned?.();
    }
  }

  /**
   * Write the heartbeat for `--status`: when forced (start, the directory's listing
   * failing or working again), else at most every {@link HEARTBEAT_WRITE_MS}.
   */
  #beat(force = false): void {
    const now = this.#now();
    if (!force && now < this.#beatWrittenAt + HEARTBEAT_WRITE_MS) return;
    this.#beatWrittenAt = now;
    const beat: Heartbeat = {
      runId: this.#o.runId,
      at: new Date(this.#scannedAt).toISOString(),
      pollMs: this.#o.pollMs,
      ...(this.#listProblem === undefined ? {} : { listError: this.#listProblem }),
    };
    try {
      this.#o.store.setMeta(HEARTBEAT_KEY, JSON.stringify(beat));
    } catch (error) {
      this.#log.debug(`cannot write the heartbeat: ${errorMessage(error)}`);
    }
  }

  /**
   * Copy the files being written to the state file for `--status` (another process),
   * when they changed and at most every {@link WATCHING_WRITE_MS}; a change held back
   * is written at the tick {@link #nextWake} schedules for it.
   */
  #writeWatching(): void {
    const now = this.#now();
    const entries = this.#tracker.watching();
    const key = entries.map((e) => `${e.path}\0${e.stat.size}\0${e.stat.mtimeMs}\0${e.since}`)
      .join("\n");
    if (key === this.#watchingKey) {
      this.#watchingDue = undefined;
      return;
    }
    if (now < this.#watchingWrittenAt + WATCHING_WRITE_MS) {
      this.#watchingDue = this.#watchingWrittenAt + WATCHING_WRITE_MS;
      return;
    }
    this.#watchingKey = key;
    this.#watchingWrittenAt = now;
    this.#watchingDue = undefined;
    try {
      this.#o.store.setWatching(entries.map((entry) => ({
        path: entry.path,
        size: entry.stat.size,
        mtimeMs: entry.stat.mtimeMs,
        seenAt: new Date(entry.since).toISOString(),
        stableAt: new Date(entry.since + this.#o.stabilityMs).toISOString(),
      })));
    } catch (error) {
      // Only --status reads it; the watch goes on.
      this.#log.debug(`cannot note the files being written: ${errorMessage(error)}`);
    }
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
        this.#beat(true);
      }
      return;
    }
    let listedAgain = false;
    if (this.#listProblem !== undefined) {
      this.#log.info(`${dir} can be listed again`);
      this.#listProblem = undefined;
      listedAgain = true;
    }
    this.#dirty.clear();
    const present = new Set<string>();
    for (const name of entries) {
      if (!this.#isMatch(name)) continue;
      const file = path.join(dir, name);
      present.add(file);
      if (this.#signal.aborted) return;
      await this.#look(file);
    }
    for (const known of this.#tracker.paths()) if (!present.has(known)) this.#vanished(known);
    this.#scannedAt = this.#now();
    if (listedAgain) this.#beat(true);
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
    if (!this.#tracker.knows(file)) {
      // First sight in this run of a file recorded with this very stat (at an earlier
      // run, or as baseline): nothing is new, no need to wait for it to be stable.
      const known = this.#o.store.latest(file);
      if (known && sameStat(known, result.stat)) {
        this.#tracker.settle(file, result.stat);
        return;
      }
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
      sha256 = await this.#probe.sha256(file, this.#signal);
    } catch (error) {
      if (this.#signal.aborted) return;
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

  /**
   * The server does not accept our key: every attempt would fail the same way until
   * a person changes SHARED_KEY (or the server's keys), and a service manager that
   * restarted us would only hammer the server. Record why, log it once, and stop.
   */
  #keyRejected(error: KeyRejectedError): void {
    if (this.#end.kind === "key-rejected") return;
    const note: StopNote = {
      at: new Date(this.#now()).toISOString(),
      reason: `${error.message}; the watcher stopped instead of retrying`,
      hint: "set SHARED_KEY in recon.opts to a key the server accepts, then start the " +
        "watcher again; scans found meanwhile are sent then",
    };
    this.#end = { kind: "key-rejected", note };
    try {
      this.#o.store.setMeta(STOPPED_KEY, JSON.stringify(note));
    } catch (stateError) {
      this.#log.warn(`cannot note the stop in the state file: ${errorMessage(stateError)}`);
    }
    this.#log.error(`${note.reason} (hint: ${note.hint})`);
    this.#stopping.abort();
  }

  /** Stop: finish or abandon what is in flight (see Sender.stop). */
  async #stop(): Promise<void> {
    await this.#sender.stop();
    this.#log.info("stopped");
  }
}

/** The start-up line for what the first start did. */
function firstStartLine(note: FirstStart): string {
  const count = (n: number) => `${n.toLocaleString("en-US")} existing file(s)`;
  switch (note.mode) {
    case "submit-existing":
      return `first start: --submit-existing: ${count(note.sent)} are sent`;
    case "since":
      return `first start: ${count(note.sent)} modified since ${note.since} are sent; ` +
        `${note.baseline.toLocaleString("en-US")} older recorded as baseline, not sent`;
    default:
      return `first start: ${count(note.baseline)} recorded as baseline, not sent (use ` +
        "--submit-existing or --since TIME to send them; 'recon-client watch --retry FILE' " +
        "sends one later)";
  }
}

/**
 * Watch until `options.signal` is aborted (or the server refuses our key), then stop
 * cleanly; says which of the two ended it.
 * @throws {UsageError} when the watch directory cannot be listed at start.
 */
export async function runWatchDaemon(options: WatchDaemonOptions): Promise<WatchEnd> {
  return await new WatchDaemon(options).run();
}
