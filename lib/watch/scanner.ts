/**
 * When a watched file counts as finished, and which finished files go together
 * (docs/WATCH.md "Finished files only"). Pure logic: the caller stats the files
 * and passes the time in, so tests drive it with a fake clock.
 *
 * - {@link StabilityTracker}: a file is *stable* once its size, mtime and inode have
 *   stayed the same for the stability delay, measured between two of our own
 *   observations (never against the file's mtime, whose clock may be another
 *   machine's on a network filesystem).
 * - {@link Grouper}: files that become stable within the grouping timeout of each
 *   other form one group (one job), up to {@link MAX_GROUP_FILES} files.
 *
 * @module
 */

/** Most files in one job formed by the watch mode; a longer burst starts a new group. */
export const MAX_GROUP_FILES = 100;

/** What a stat of a watched file says about its content. */
export interface FileStat {
  size: number;
  /** Modification time, ms since the epoch. */
  mtimeMs: number;
  /** Inode number where the platform has one: a replaced file gets a new one. */
  ino: number | null;
}

/** Whether two stats describe the same, unchanged file. */
export function sameStat(a: FileStat, b: FileStat): boolean {
  return a.size === b.size && a.mtimeMs === b.mtimeMs && a.ino === b.ino;
}

/** The result of {@link StabilityTracker.observe}. */
export type Verdict =
  /** Changed, new or not yet old enough: look again at `checkAt`. */
  | {
    kind: "waiting";
    checkAt: number;
    /** Set when the file got smaller since the last look (truncated or replaced). */
    shrunkFrom?: number;
    /** Set when a file handed out earlier changed afterwards. */
    changedAfterSettled?: FileStat;
  }
  /** Unchanged for the stability delay: ready to be read, hashed and recorded. */
  | { kind: "stable" }
  /** Already handed out with this very stat; nothing to do. */
  | { kind: "settled" };

interface Watching {
  stat: FileStat;
  /** When we first saw this stat. */
  since: number;
  /** When to look again (since + delay, or later after a postponement). */
  checkAt: number;
}

/** Follows each file from first sight until it is stable, then remembers it as settled. */
export class StabilityTracker {
  readonly stabilityMs: number;
  #watching = new Map<string, Watching>();
  #settled = new Map<string, FileStat>();

  constructor(options: { stabilityMs: number }) {
    if (!(options.stabilityMs >= 0)) throw new RangeError("stabilityMs must be >= 0");
    this.stabilityMs = options.stabilityMs;
  }

  /** Record what a stat of `path` showed at time `now` (ms). */
  observe(path: string, stat: FileStat, now: number): Verdict {
    const settled = this.#settled.get(path);
    if (settled) {
      if (sameStat(settled, stat)) return { kind: "settled" };
      this.#settled.delete(path);
      this.#watching.set(path, { stat, since: now, checkAt: now + this.stabilityMs });
      return {
        kind: "waiting",
        checkAt: now + this.stabilityMs,
        changedAfterSettled: settled,
        ...(stat.size < settled.size ? { shrunkFrom: settled.size } : {}),
      };
    }
    const seen = this.#watching.get(path);
    if (!seen || !sameStat(seen.stat, stat)) {
      this.#watching.set(path, { stat, since: now, checkAt: now + this.stabilityMs });
      if (this.stabilityMs === 0) return { kind: "stable" };
      return {
        kind: "waiting",
        checkAt: now + this.stabilityMs,
        ...(seen && stat.size < seen.stat.size ? { shrunkFrom: seen.stat.size } : {}),
      };
    }
    if (now - seen.since >= this.stabilityMs) return { kind: "stable" };
    return { kind: "waiting", checkAt: seen.checkAt };
  }

  /** The file was handed out (recorded); report it again only once it changes. */
  settle(path: string, stat: FileStat): void {
    this.#watching.delete(path);
    this.#settled.set(path, stat);
  }

  /** A stable file could not be used yet (e.g. unreadable): look again no earlier than `at`. */
  postpone(path: string, at: number): void {
    const seen = this.#watching.get(path);
    if (seen) seen.checkAt = Math.max(seen.checkAt, at);
  }

  /**
   * Forget everything about `path` (it is gone, or must be judged afresh).
   * Returns whether it was still being watched (not yet stable or not yet recorded).
   */
  forget(path: string): { wasWatching: boolean; wasSettled: boolean } {
    const wasWatching = this.#watching.delete(path);
    const wasSettled = this.#settled.delete(path);
    return { wasWatching, wasSettled };
  }

  /** Whether `path` is known at all. */
  knows(path: string): boolean {
    return this.#watching.has(path) || this.#settled.has(path);
  }

  /** Every path known, watched or settled (to notice deletions). */
  paths(): string[] {
    return [...this.#watching.keys(), ...this.#settled.keys()];
  }

  /** The files not yet stable: each with its stat and when that stat was first seen. */
  watching(): { path: string; stat: FileStat; since: number }[] {
    return [...this.#watching].map(([path, seen]) => ({
      path,
      stat: seen.stat,
      since: seen.since,
    }));
  }

  /** Paths being watched whose next look is due at `now`. */
  due(now: number): string[] {
    return [...this.#watching].filter(([, seen]) => seen.checkAt <= now).map(([path]) => path);
  }

  /** The earliest time a watched file needs another look, if any. */
  nextCheck(): number | undefined {
    let next: number | undefined;
    for (const seen of this.#watching.values()) {
      if (next === undefined || seen.checkAt < next) next = seen.checkAt;
    }
    return next;
  }
}

/** Options of {@link Grouper}. */
export interface GrouperOptions {
  /** CLIENT_DAEMON_GROUPING_TIMEOUT in ms. */
  windowMs: number;
  maxFiles?: number;
  /** Makes a group id (default: a random UUID). */
  newId?: () => string;
}

/**
 * Puts files that become stable close together into one group. A group stays open
 * while each new file arrives within `windowMs` of the previous one (and it has
 * fewer than `maxFiles`); once `windowMs` passes without a new file it is closed and
 * can be submitted.
 */
export class Grouper {
  readonly windowMs: number;
  readonly maxFiles: number;
  #newId: () => string;
  #current?: { id: string; lastJoin: number; count: number };

  constructor(options: GrouperOptions) {
    if (!(options.windowMs >= 0)) throw new RangeError("windowMs must be >= 0");
    this.windowMs = options.windowMs;
    this.maxFiles = options.maxFiles ?? MAX_GROUP_FILES;
    this.#newId = options.newId ?? (() => crypto.randomUUID());
  }

  /** A file became stable at `now`; returns the id of the group it joins. */
  join(now: number): string {
    const current = this.#current;
    if (current && this.isOpen(current.id, now)) {
      current.lastJoin = now;
      current.count++;
      return current.id;
    }
    this.#current = { id: this.#newId(), lastJoin: now, count: 1 };
    return this.#current.id;
  }

  /** Whether group `id` may still get more files at `now` (so it must not be sent yet). */
  isOpen(id: string, now: number): boolean {
    const current = this.#current;
    return current !== undefined && current.id === id && current.count < this.maxFiles &&
      now - current.lastJoin < this.windowMs;
  }

  /** When the open group closes, if one is open at `now`. */
  closesAt(now: number): number | undefined {
    const current = this.#current;
    if (!current || !this.isOpen(current.id, now)) return undefined;
    return current.lastJoin + this.windowMs;
  }
}
