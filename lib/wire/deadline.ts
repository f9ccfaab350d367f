/**
 * Deadlines on reads: the handshake deadline and the channel's idle timeout
 * (docs/PROTOCOL.md §2, §3). The owner closes the connection when one fires, which
 * makes the pending read fail.
 *
 * @module
 */
import { TimeoutError } from "../errors.ts";

/**
 * A one-shot deadline: `arm(ms)` (re)starts it, `disarm()` stops it. When it fires it
 * calls `onExpire` with a TimeoutError (the owner closes the connection, which makes
 * the pending read fail).
 */
export class Deadline {
  #timer: ReturnType<typeof setTimeout> | undefined;
  #onExpire: (error: TimeoutError) => void;
  #message: string;

  constructor(message: string, onExpire: (error: TimeoutError) => void) {
    this.#message = message;
    this.#onExpire = onExpire;
  }

  arm(ms: number): void {
    this.disarm();
    if (ms <= 0 || !Number.isFinite(ms)) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#onExpire(new TimeoutError(this.#message));
    }, ms);
  }

  disarm(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
