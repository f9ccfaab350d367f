/**
 * Retry delays for a server that cannot be reached (docs/WATCH.md "Server down"):
 * exponential backoff with jitter, capped. The n-th consecutive failure waits a
 * random time between half and all of `min(cap, base · 2^(n-1))`, so many scanners
 * that lost the same server do not all come back at the same instant, and none
 * waits longer than the cap.
 *
 * @module
 */

/** First retry after about this long (ms). */
export const BACKOFF_BASE_MS = 2_000;
/** Longest wait between two attempts (ms). */
export const BACKOFF_CAP_MS = 5 * 60_000;

/** Options of {@link Backoff}; the defaults are the documented numbers. */
export interface BackoffOptions {
  baseMs?: number;
  capMs?: number;
  /** A number in [0, 1); injectable so tests are deterministic. */
  random?: () => number;
}

/** Consecutive failures and the delay each one earns. */
export class Backoff {
  readonly baseMs: number;
  readonly capMs: number;
  #random: () => number;
  #failures = 0;

  constructor(options: BackoffOptions = {}) {
    this.baseMs = options.baseMs ?? BACKOFF_BASE_MS;
    this.capMs = options.capMs ?? BACKOFF_CAP_MS;
    if (!(this.baseMs > 0) || !(this.capMs >= this.baseMs)) {
      throw new RangeError(`backoff needs 0 < base <= cap, got ${this.baseMs} and ${this.capMs}`);
    }
    this.#random = options.random ?? Math.random;
  }

  /** Failures since the last success. */
  get failures(): number {
    return this.#failures;
  }

  /** Count one more failure; returns how long to wait (ms) before the next attempt. */
  fail(): number {
    this.#failures++;
    // 2^40 · base is far above any cap; stop doubling there so the number stays finite.
    const ceiling = Math.min(this.capMs, this.baseMs * 2 ** Math.min(this.#failures - 1, 40));
    return Math.round(ceiling / 2 + this.#random() * (ceiling / 2));
  }

  /** The server answered: the next failure starts again from the base delay. */
  succeed(): void {
    this.#failures = 0;
  }
}
