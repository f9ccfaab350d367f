/**
 * A small unbounded FIFO with an awaitable `next()`, used to hand job events from a
 * worker to the session that submitted the job.
 *
 * @module
 */

/** FIFO of values; `next()` waits for one. `close()` makes waiting readers get `undefined`. */
export class AsyncQueue<T> {
  #items: T[] = [];
  #waiters: ((value: T | undefined) => void)[] = [];
  #closed = false;

  push(item: T): void {
    if (this.#closed) return;
    const waiter = this.#waiters.shift();
    if (waiter) waiter(item);
    else this.#items.push(item);
  }

  /** The next value, or `undefined` once closed and drained. */
  next(): Promise<T | undefined> {
    if (this.#items.length > 0) return Promise.resolve(this.#items.shift());
    if (this.#closed) return Promise.resolve(undefined);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /** Items waiting to be read. */
  get length(): number {
    return this.#items.length;
  }

  /** Remove waiting items that match (e.g. stale progress lines). */
  dropWhere(predicate: (item: T) => boolean): number {
    const before = this.#items.length;
    this.#items = this.#items.filter((item) => !predicate(item));
    return before - this.#items.length;
  }

  close(): void {
    this.#closed = true;
    for (const waiter of this.#waiters.splice(0)) waiter(undefined);
  }
}
