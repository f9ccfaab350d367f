/**
 * Deadlines on reads: the handshake deadline and the channel's idle timeout
 * (docs/PROTOCOL.md §2, §3), and the timers they and the keepalive run on. The owner
 * closes the connection when a deadline fires, which makes the pending read fail.
 *
 * @module
 */
import { TimeoutError } from "../errors.ts";

/**
 * The clock and timers a channel's deadlines and keepalives run on: {@link realTimers}
 * in production, a clock the test moves by hand in tests (no test races a sleep).
 */
export interface Timers {
  /** Milliseconds on a clock that only moves forward. */
  now(): number;
  /**
   * Call `callback` after `ms` (every `ms` with `repeat`); returns the cancel function.
   * `unref`: the timer does not keep the process alive.
   */
  start(ms: number, callback: () => void, options?: TimerOptions): () => void;
}

/** Options for {@link Timers.start}. */
export interface TimerOptions {
  repeat?: boolean;
  unref?: boolean;
}

/** The runtime's own clock and timers. */
export const realTimers: Timers = {
  now: () => performance.now(),
  start(ms, callback, { repeat = false, unref = false } = {}) {
    const id = repeat ? setInterval(callback, ms) : setTimeout(callback, ms);
    if (unref) Deno.unrefTimer(id);
    return () => repeat ? clearInterval(id) : clearTimeout(id);
  },
};

/**
 * A one-shot deadline: `arm(ms)` (re)starts it, `disarm()` stops it. When it fires it
 * calls `onExpire` with a TimeoutError (the owner closes the connection, which makes
 * the pending read fail).
 */
export class Deadline {
  #cancel: (() => void) | undefined;
  #onExpire: (error: TimeoutError) => void;
  #message: string;
  #timers: Timers;

  constructor(
    message: string,
    onExpire: (error: TimeoutError) => void,
    timers: Timers = realTimers,
  ) {
    this.#message = message;
    this.#onExpire = onExpire;
    this.#timers = timers;
  }

  arm(ms: number): void {
    this.disarm();
    if (ms <= 0 || !Number.isFinite(ms)) return;
    this.#cancel = this.#timers.start(ms, () => {
      this.#cancel = undefined;
      this.#onExpire(new TimeoutError(this.#message));
    });
  }

  disarm(): void {
    this.#cancel?.();
    this.#cancel = undefined;
  }
}
