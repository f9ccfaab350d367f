/**
 * Per-direction key schedule (docs/PROTOCOL.md §3.3): the session key for one
 * direction is used for `recordsPerKey` records, then both sides ratchet to the next
 * key with HKDF-SHA256, so no key ever encrypts more than 32 GiB.
 *
 * The epoch of a record is `floor(seq / recordsPerKey)`; both sides know every
 * sequence number, so the ratchet needs no message.
 *
 * @module
 */
import type { FernetCodec } from "./fernet_codec.ts";
import { type CryptoBackend, defaultCryptoBackend } from "./backend.ts";

const RATCHET_INFO = new TextEncoder().encode("recon v1 ratchet");

/** The next key in the chain: HKDF-SHA256(current, info "recon v1 ratchet"). */
export async function ratchetKey(
  current: Uint8Array<ArrayBuffer>,
): Promise<Uint8Array<ArrayBuffer>> {
  const ikm = await crypto.subtle.importKey("raw", current, "HKDF", false, ["deriveBits"]);
  return new Uint8Array(
    await crypto.subtle.deriveBits(
      { name: "HKDF", hash: "SHA-256", salt: new Uint8Array(32), info: RATCHET_INFO },
      ikm,
      256,
    ),
  );
}

/** One epoch's key: raw bytes and its codec on the schedule's crypto backend. */
export interface EpochKey {
  raw: Uint8Array<ArrayBuffer>;
  fernet: FernetCodec;
}

/** Hands out the key for a record's sequence number, ratcheting forward. */
export class KeySchedule {
  #recordsPerKey: number;
  #epoch = 0;
  #raw: Promise<Uint8Array<ArrayBuffer>>;
  #key: Promise<EpochKey>;
  #backend: CryptoBackend;

  /** `backend` computes the tokens; default {@link defaultCryptoBackend}. */
  constructor(
    initialKey: Uint8Array<ArrayBuffer>,
    recordsPerKey: number,
    backend: CryptoBackend = defaultCryptoBackend(),
  ) {
    if (!Number.isSafeInteger(recordsPerKey) || recordsPerKey < 1) {
      throw new RangeError(`recordsPerKey must be a positive integer, got ${recordsPerKey}`);
    }
    this.#recordsPerKey = recordsPerKey;
    this.#backend = backend;
    this.#raw = Promise.resolve(initialKey);
    this.#key = this.#epochKey(initialKey);
    this.#key.catch(() => {});
  }

  /**
   * The key for `seq`. Sequence numbers must be asked for in non-decreasing order
   * (records are encrypted and decrypted in order), so old keys can be forgotten.
   */
  keyFor(seq: number): Promise<EpochKey> {
    const epoch = Math.floor(seq / this.#recordsPerKey);
    if (epoch < this.#epoch) throw new RangeError(`key for epoch ${epoch} was already discarded`);
    while (this.#epoch < epoch) {
      this.#raw = this.#raw.then(ratchetKey);
      this.#key = this.#raw.then((raw) => this.#epochKey(raw));
      this.#key.catch(() => {});
      this.#epoch++;
    }
    return this.#key;
  }

  async #epochKey(raw: Uint8Array<ArrayBuffer>): Promise<EpochKey> {
    return { raw, fernet: await this.#backend.fernet(raw) };
  }
}
