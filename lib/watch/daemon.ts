/**
 * The watch loop (docs/WATCH.md §2–§3): notice files in CLIENT_WATCH_DIRECTORY through
 * `Deno.watchFs` events and a scan every poll interval, wait until each is finished
 * (stable by {@link StabilityTracker}, readable), hash it and record it `pending` in
 * the state file in a group from {@link Grouper}, then let {@link Sender} send each
 * closed group as one job. A file is recorded before anything is sent, so a stop or a
 * crash never forgets it.
 *
 * What happens to a job, and on stop, is in sender.ts; the rules for failures in
 * outcome.ts.
 *
 * @module
 */
import * as path from "node:path";
// @ts-types="npm:@types/picomatch@4.0.3"
import picomatch from "picomatch";
import type { Channel } from "../wire/channel.ts";
import { errorMessage, UsageError } from "../errors.ts";
import type { ReconOptions } from "../wire/protocol.ts";
import { Backoff } from "./backoff.ts";
import { denoProbe, describeFsError, type FileProbe, type WatchLog } from "./probe.ts";
import { type FileStat, Grouper, sameStat, StabilityTracker } from "./scanner.ts";
import { Sender } from "./sender.ts";
import type { StateStore } from "./state.ts";
import { names, seconds } from "./words.ts";

export { MAX_JOBS_IN_FLIGHT, STOP_GRACE_MS } from "./sender.ts";

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
  #nextScanAt = 0;
  #listProblem?: string;
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
    this.#sender = new Sender({
      ...options,
      probe: this.#probe,
      backoff: options.backoff ?? new Backoff(),
      tracker: this.#tracker,
      now: this.#now,
      cannotRead: (file, message) => this.#cannotRead(file, message),
      wake: () => this.#wake(),
    });
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
    const sender = this.#sender.nextWake(now);
    if (sender !== undefined) times.push(sender);
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
      if (this.#o.signal.aborted) return;
      await this.#look(file);
    }
    this.#sender.startNext((groupId) => this.#grouper.isOpen(groupId, this.#now()));
    if (scanning) this.#o.onScanned?.();
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

  /** Stop: finish or abandon what is in flight (see Sender.stop). */
  async #stop(): Promise<void> {
    await this.#sender.stop();
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
