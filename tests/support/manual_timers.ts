/**
 * Test support: a clock that only moves when the test says so, for the deadlines and
 * keepalives of lib/wire (`timers` in ChannelOptions). Timers that fall due run inside
 * {@link ManualTimers.advance}, in order, so a test states "299 ms: still open; 300 ms:
 * timed out" without sleeping or racing the machine's speed.
 *
 * @module
 */
import type { TimerOptions, Timers } from "../../lib/wire/deadline.ts";

interface Timer {
  due: number;
  every: number | undefined;
  callback: () => void;
}

/** A pending timer as a test sees it. */
export interface PendingTimer {
  /** Milliseconds from now until it fires. */
  in: number;
  /** Its period, for a repeating timer. */
  every: number | undefined;
}

/** Manually driven {@link Timers}; the clock starts at 0. */
export class ManualTimers implements Timers {
  #now = 0;
  #timers = new Set<Timer>();
  #waiters = new Set<() => void>();

  now(): number {
    return this.#now;
  }

  start(ms: number, callback: () => void, options: TimerOptions = {}): () => void {
    const timer = { due: this.#now + ms, every: options.repeat ? ms : undefined, callback };
    this.#timers.add(timer);
    this.#changed();
    return () => {
      if (this.#timers.delete(timer)) this.#changed();
    };
  }

  /** Move the clock forward by `ms`, running every timer that falls due on the way. */
  advance(ms: number): void {
    const end = this.#now + ms;
    while (true) {
      let next: Timer | undefined;
      for (const timer of this.#timers) {
        if (timer.due <= end && (!next || timer.due < next.due)) next = timer;
      }
      if (!next) break;
      this.#now = next.due;
      if (next.every === undefined) this.#timers.delete(next);
      else next.due += next.every;
      next.callback();
      this.#changed();
    }
    this.#now = end;
  }

  /** The timers now pending, soonest first. */
  get pending(): PendingTimer[] {
    return [...this.#timers]
      .sort((a, b) => a.due - b.due)
      .map((timer) => ({ in: timer.due - this.#now, every: timer.every }));
  }

  /**
   * Resolves once `condition()` holds; it is checked now and whenever a timer is
   * started, cancelled or run, so a test waits on an event, never a fixed delay.
   */
  until(condition: () => boolean): Promise<void> {
    if (condition()) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (!condition()) return;
        this.#waiters.delete(check);
        resolve();
      };
      this.#waiters.add(check);
    });
  }

  #changed(): void {
    for (const check of [...this.#waiters]) check();
  }
}
