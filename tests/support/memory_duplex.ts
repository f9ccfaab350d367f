/**
 * Test support: in-memory byte streams, so channel and handshake logic can be tested
 * without sockets, plus a scripted reader for the framing tests.
 *
 * - {@link duplexPair}: two connected {@link Duplex} ends. Closing one end makes its
 *   own pending read fail (as closing a `Deno.Conn` does) and the other end read EOF
 *   once it has drained what was written.
 * - {@link ScriptedReader}: hands out fixed chunks, one per `read()`, and records
 *   every read so a test can prove nothing more was asked for.
 *
 * @module
 */
import type { Duplex } from "../../lib/wire/channel.ts";
import type { ByteReader } from "../../lib/wire/frame.ts";

class Pipe {
  chunks: Uint8Array[] = [];
  /** The writer closed: reads drain and then see EOF. */
  ended = false;
  waiter: (() => void) | undefined;

  wake(): void {
    this.waiter?.();
    this.waiter = undefined;
  }
}

class MemoryEnd implements Duplex {
  #incoming: Pipe;
  #outgoing: Pipe;
  #closed = false;
  #rejectRead: ((error: Error) => void) | undefined;
  /** Every byte this end wrote, in order (for recording a session). */
  readonly written: Uint8Array[] = [];

  constructor(incoming: Pipe, outgoing: Pipe) {
    this.#incoming = incoming;
    this.#outgoing = outgoing;
  }

  read(buffer: Uint8Array<ArrayBuffer>): Promise<number | null> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("read on a closed end"));
    return new Promise<number | null>((resolve, reject) => {
      this.#rejectRead = reject;
      const attempt = () => {
        if (this.#closed) return;
        const pipe = this.#incoming;
        const chunk = pipe.chunks[0];
        if (chunk) {
          const n = Math.min(chunk.length, buffer.length);
          buffer.set(chunk.subarray(0, n));
          if (n === chunk.length) pipe.chunks.shift();
          else pipe.chunks[0] = chunk.subarray(n);
          this.#rejectRead = undefined;
          resolve(n);
        } else if (pipe.ended) {
          this.#rejectRead = undefined;
          resolve(null);
        } else {
          pipe.waiter = attempt;
        }
      };
      attempt();
    });
  }

  write(bytes: Uint8Array<ArrayBuffer>): Promise<number> {
    if (this.#closed) return Promise.reject(new Deno.errors.BadResource("write on a closed end"));
    if (this.#outgoing.ended) {
      return Promise.reject(new Deno.errors.BrokenPipe("the other end is closed"));
    }
    const copy = bytes.slice();
    this.written.push(copy);
    this.#outgoing.chunks.push(copy);
    this.#outgoing.wake();
    return Promise.resolve(bytes.length);
  }

  close(): void {
    if (this.#closed) throw new Deno.errors.BadResource("already closed");
    this.#closed = true;
    this.#outgoing.ended = true;
    this.#outgoing.wake();
    // The peer can no longer write to us either.
    this.#incoming.ended = true;
    this.#incoming.chunks = [];
    this.#incoming.waiter = undefined;
    this.#rejectRead?.(new Deno.errors.BadResource("closed while reading"));
    this.#rejectRead = undefined;
  }

  get isClosed(): boolean {
    return this.#closed;
  }
}

/** An in-memory duplex end; `written` holds everything it sent. */
export type MemoryDuplex = MemoryEnd;

/** Two connected in-memory ends, like the two sides of a socket. */
export function duplexPair(): [MemoryDuplex, MemoryDuplex] {
  const ab = new Pipe();
  const ba = new Pipe();
  return [new MemoryEnd(ba, ab), new MemoryEnd(ab, ba)];
}

/**
 * A reader that returns the given chunks, one per read (split further when the
 * caller's buffer is smaller), then EOF. `reads` counts calls; `requested` holds the
 * size of every buffer it was handed.
 */
export class ScriptedReader implements ByteReader {
  #chunks: Uint8Array[];
  #next = 0;
  reads = 0;
  readonly requested: number[] = [];
  /** When set, a read after the script ran out throws instead of returning EOF. */
  failAfterScript: boolean;

  constructor(chunks: Uint8Array[], options: { failAfterScript?: boolean } = {}) {
    this.#chunks = chunks.map((chunk) => chunk.slice());
    this.failAfterScript = options.failAfterScript ?? false;
  }

  read(buffer: Uint8Array<ArrayBuffer>): Promise<number | null> {
    this.reads++;
    this.requested.push(buffer.length);
    const chunk = this.#chunks[this.#next];
    if (!chunk) {
      if (this.failAfterScript) {
        return Promise.reject(new Error("read past the end of the script"));
      }
      return Promise.resolve(null);
    }
    const n = Math.min(chunk.length, buffer.length);
    buffer.set(chunk.subarray(0, n));
    if (n === chunk.length) this.#next++;
    else this.#chunks[this.#next] = chunk.subarray(n);
    return Promise.resolve(n);
  }

  /** Chunks not handed out yet. */
  get remaining(): number {
    return this.#chunks.length - this.#next;
  }
}

/** A reader over one buffer, handing out at most `step` bytes per read (a file source). */
export class BytesReader implements ByteReader {
  #bytes: Uint8Array;
  #offset = 0;
  #step: number;

  constructor(bytes: Uint8Array, step = Infinity) {
    this.#bytes = bytes;
    this.#step = step;
  }

  read(buffer: Uint8Array<ArrayBuffer>): Promise<number | null> {
    if (this.#offset >= this.#bytes.length) return Promise.resolve(null);
    const n = Math.min(buffer.length, this.#step, this.#bytes.length - this.#offset);
    buffer.set(this.#bytes.subarray(this.#offset, this.#offset + n));
    this.#offset += n;
    return Promise.resolve(n);
  }
}

/** Concatenate byte arrays. */
export function concatBytes(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** `n` random bytes (crypto.getRandomValues fills at most 64 KiB per call). */
export function randomBytes(n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  for (let offset = 0; offset < n; offset += 65536) {
    crypto.getRandomValues(out.subarray(offset, Math.min(n, offset + 65536)));
  }
  return out;
}

/** A small deterministic PRNG (xorshift32) for reproducible property loops. */
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 2 ** 32;
  };
}
