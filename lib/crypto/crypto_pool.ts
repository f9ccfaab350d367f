/**
 * An optional pool of Fernet workers (docs/PERFORMANCE.md "Crypto workers"), enabled
 * with RECON_CRYPTO_WORKERS=N. It moves the whole Fernet work of large records (AES,
 * HMAC, buffer assembly) to worker threads, so the main thread only reads, hashes and
 * writes. Buffers are transferred to and from the workers, not copied.
 *
 * @module
 */
import { InvalidTokenError } from "./fernet.ts";
import type { CryptoRequest, CryptoResponse } from "./fernet_worker.ts";

/** Records smaller than this are cheaper to handle inline than to post to a worker. */
export const POOL_THRESHOLD = 64 * 1024;

/** Options for {@link CryptoPool}. */
export interface CryptoPoolOptions {
  /** Number of worker threads (default: cores, at most 4). */
  size?: number;
}

interface Pending {
  resolve: (response: CryptoResponse) => void;
  reject: (error: Error) => void;
}

/**
 * The pool size for this process: RECON_CRYPTO_WORKERS when set, else 0 (no pool).
 *
 * Off by default because it did not pay on the reference machine (2 cores, client and
 * server on one host): Deno already runs WebCrypto's AES on background threads, and
 * the pool cost 20-30 MB of RSS per end with no measurable gain in MB/s
 * (docs/PERFORMANCE.md "Crypto workers"). It stays as a knob for hosts with more cores.
 */
export function cryptoWorkersFromEnv(): number {
  const text = Deno.env.get("RECON_CRYPTO_WORKERS");
  if (text === undefined || text === "") return 0;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 0 || value > 64) {
    throw new RangeError(`RECON_CRYPTO_WORKERS must be a whole number from 0 to 64, got "${text}"`);
  }
  return value;
}

/** A pool sized by {@link cryptoWorkersFromEnv}, or undefined when that is 0. */
export function createCryptoPool(): CryptoPool | undefined {
  const size = cryptoWorkersFromEnv();
  return size > 0 ? new CryptoPool({ size }) : undefined;
}

/** Encrypts and decrypts Fernet tokens on worker threads. */
export class CryptoPool {
  #workers: Worker[] = [];
  #inFlight: number[] = [];
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #closed = false;

  #size: number;

  /** Workers start on first use, so a process that only sends small messages starts none. */
  constructor(options: CryptoPoolOptions = {}) {
    this.#size = options.size ?? Math.min(4, Math.max(1, navigator.hardwareConcurrency || 2));
    if (!Number.isSafeInteger(this.#size) || this.#size < 1) {
      throw new RangeError(`crypto pool size must be at least 1, got ${options.size}`);
    }
  }

  #start(): void {
    for (let i = 0; i < this.#size; i++) {
      const worker = new Worker(new URL("./fernet_worker.ts", import.meta.url), {
        type: "module",
      });
      worker.onmessage = (event: MessageEvent<CryptoResponse>) => {
        this.#inFlight[i]--;
        const pending = this.#pending.get(event.data.id);
        this.#pending.delete(event.data.id);
        pending?.resolve(event.data);
      };
      worker.onerror = (event) => {
        event.preventDefault();
        this.#failAll(new Error(`crypto worker failed: ${event.message}`));
      };
      this.#workers.push(worker);
      this.#inFlight.push(0);
    }
  }

  get size(): number {
    return this.#size;
  }

  #failAll(error: Error): void {
    for (const pending of this.#pending.values()) pending.reject(error);
    this.#pending.clear();
  }

  #post(request: Omit<CryptoRequest, "id">): Promise<CryptoResponse> {
    if (this.#closed) return Promise.reject(new Error("the crypto pool is closed"));
    if (this.#workers.length === 0) this.#start();
    // The least busy worker; ties go to the first.
    let index = 0;
    for (let i = 1; i < this.#workers.length; i++) {
      if (this.#inFlight[i] < this.#inFlight[index]) index = i;
    }
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.#inFlight[index]++;
      this.#workers[index].postMessage({ ...request, id }, [request.data.buffer as ArrayBuffer]);
    });
  }

  /**
   * Encrypt `plaintext` under the 32-byte `key` (see Fernet.encrypt for `prefix`).
   * `plaintext`'s buffer is transferred: it is unusable afterwards.
   */
  async encrypt(
    key: Uint8Array,
    plaintext: Uint8Array,
    options: { prefix?: number; now?: number } = {},
  ): Promise<Uint8Array<ArrayBuffer>> {
    const response = await this.#post({ op: "encrypt", key, data: plaintext, ...options });
    if ("error" in response) throw new Error(response.error.message);
    return response.data;
  }

  /**
   * Verify and decrypt `token` (its buffer is transferred). Resolves with the plaintext
   * and the token's timestamp; rejects with InvalidTokenError like Fernet.decrypt.
   */
  async decrypt(
    key: Uint8Array,
    token: Uint8Array,
  ): Promise<{ plaintext: Uint8Array<ArrayBuffer>; timestamp: number }> {
    const response = await this.#post({ op: "decrypt", key, data: token });
    if ("error" in response) {
      throw response.error.invalidToken
        ? new InvalidTokenError(response.error.message)
        : new Error(response.error.message);
    }
    return { plaintext: response.data, timestamp: response.timestamp ?? 0 };
  }

  /** Drop `key` from every worker's cache (its session ended). */
  forget(key: Uint8Array): void {
    if (this.#closed) return;
    for (const worker of this.#workers) {
      worker.postMessage({ id: 0, op: "forget", key, data: new Uint8Array(0) });
    }
  }

  /** Stop the workers; pending operations fail. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const worker of this.#workers) worker.terminate();
    this.#failAll(new Error("the crypto pool is closed"));
  }
}
