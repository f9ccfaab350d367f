/**
 * One watcher per state file (docs/WATCH.md "State file"): the watcher holds an
 * exclusive advisory lock on `<state file>.lock` while it runs, so a second watcher
 * on the same state cannot send the same files again, and `--status`/`--retry` can
 * tell whether a watcher is running. The lock dies with the process, also on a crash.
 *
 * @module
 */

/** The lock file next to a state file. */
export function lockPathFor(statePath: string): string {
  return `${statePath}.lock`;
}

/** A held watcher lock. */
export class WatcherLock {
  #file: Deno.FsFile;

  private constructor(file: Deno.FsFile) {
    this.#file = file;
  }

  /**
   * Take the lock, trying a few times for about a second (a `--status` may hold it
   * for an instant). Returns undefined when another process holds it.
   */
  static async acquire(statePath: string): Promise<WatcherLock | undefined> {
    const file = await Deno.open(lockPathFor(statePath), {
      read: true,
      write: true,
      create: true,
      mode: 0o644,
    });
    for (let attempt = 0; attempt < 5; attempt++) {
      if (await file.tryLock(true)) return new WatcherLock(file);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    file.close();
    return undefined;
  }

  release(): void {
    try {
      this.#file.unlock();
    } catch { /* closing releases it anyway */ }
    this.#file.close();
  }
}

/** Whether a watcher currently holds the lock of `statePath`. */
export async function watcherRunning(statePath: string): Promise<boolean> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(lockPathFor(statePath), { read: true });
  } catch {
    return false; // no lock file: no watcher ever ran here
  }
  try {
    // A shared lock is refused only while a watcher holds the exclusive one.
    const free = await file.tryLock(false);
    if (free) await file.unlock();
    return !free;
  } finally {
    file.close();
  }
}
