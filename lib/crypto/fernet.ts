/**
 * Fernet tokens (https://github.com/fernet/spec, version 0x80) on WebCrypto,
 * binary-safe, for docs/PROTOCOL.md "Tokens": every frame on the wire is one token.
 *
 * Layout of a raw token (all integers big-endian):
 *
 * | offset  | length | field                                   |
 * | ------- | ------ | --------------------------------------- |
 * | 0       | 1      | version, {@link TOKEN_VERSION}          |
 * | 1       | 8      | timestamp, seconds since the Unix epoch |
 * | 9       | 16     | IV for AES-128-CBC                      |
 * | 25      | 16·k   | ciphertext, PKCS#7 padded (k ≥ 1)       |
 * | 25+16·k | 32     | HMAC-SHA256 over every byte before it   |
 *
 * The key is 32 bytes: the first 16 sign (HMAC-SHA256), the last 16 encrypt
 * (AES-128-CBC). Text tokens are the raw token in urlsafe base64 with `=` padding,
 * byte for byte what Python's `cryptography.fernet.Fernet` produces and accepts.
 *
 * This module does no I/O: the clock and the IV source are injectable so the spec's
 * fixed-`now`/fixed-`iv` vectors can be reproduced exactly.
 *
 * {@link FernetCodec} is what every backend implements (lib/crypto/backend.ts): this
 * module's WebCrypto {@link Fernet}, and OpenSSL's libcrypto through FFI
 * (lib/crypto/openssl.ts). They share the checks below, in the same order, so a
 * token is accepted or refused for the same reason whichever backend reads it.
 *
 * @module
 */

/** The only token version defined by the spec; the first byte of every token. */
export const TOKEN_VERSION = 0x80;

const TIMESTAMP_OFFSET = 1;
/** Offset of the IV in a raw token. */
export const IV_OFFSET = 9;
/** Length of the IV: one AES block. */
export const IV_LENGTH = 16;
/** Offset of the ciphertext in a raw token. */
export const CIPHERTEXT_OFFSET = IV_OFFSET + IV_LENGTH;
/** The AES block length, which PKCS#7 pads to. */
export const BLOCK_LENGTH = 16;
/** Length of the HMAC-SHA256 at a token's end. */
export const HMAC_LENGTH = 32;
const KEY_LENGTH = 32;

/** Bytes a token adds beyond the padded ciphertext: version, timestamp, IV and HMAC (57). */
export const TOKEN_OVERHEAD = CIPHERTEXT_OFFSET + HMAC_LENGTH;

/** The shortest valid token: an empty plaintext still pads to one block (73 bytes). */
export const MIN_TOKEN_LENGTH = TOKEN_OVERHEAD + BLOCK_LENGTH;

/** Clock skew tolerated for a future timestamp when a TTL is checked, as in the spec. */
export const DEFAULT_MAX_CLOCK_SKEW = 60;

/**
 * The exact length of the raw token for a plaintext of `plaintextLength` bytes.
 * PKCS#7 always adds 1..16 bytes, so a whole number of blocks always grows by one block.
 */
export function tokenLength(plaintextLength: number): number {
  if (!Number.isSafeInteger(plaintextLength) || plaintextLength < 0) {
    throw new RangeError(`plaintext length must be a non-negative integer, got ${plaintextLength}`);
  }
  const padded = (Math.floor(plaintextLength / BLOCK_LENGTH) + 1) * BLOCK_LENGTH;
  return TOKEN_OVERHEAD + padded;
}

/** Which check an invalid token failed; {@link InvalidTokenError.reason}. */
export type InvalidTokenReason =
  | "base64"
  | "too-short"
  | "length"
  | "version"
  | "hmac"
  | "expired"
  | "future"
  | "padding";

/** Options for {@link InvalidTokenError}. */
export interface InvalidTokenErrorOptions extends ErrorOptions {
  /** Which check failed. */
  reason?: InvalidTokenReason;
}

/**
 * The single error for every token that must not be trusted, whatever the check
 * that caught it. Callers catch this one class; the message (and {@link reason})
 * say which check failed, for logs and for a "wrong key?" hint.
 */
export class InvalidTokenError extends Error {
  /** Which check failed, when thrown by this module. */
  readonly reason?: InvalidTokenReason;

  constructor(message: string, options: InvalidTokenErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "InvalidTokenError";
    this.reason = options.reason;
  }
}

/** An injectable clock, in whole seconds since the Unix epoch. */
export interface FernetClock {
  /** Seconds since the epoch; default `Math.floor(Date.now() / 1000)`. */
  now?: () => number;
}

/** Options for {@link Fernet.encrypt}. */
export interface EncryptOptions extends FernetClock {
  /** The 16-byte IV; default fresh random bytes. Only tests should set this: reusing an IV leaks. */
  iv?: Uint8Array;
  /**
   * Reserve this many zero bytes before the token in the returned buffer, so a
   * frame header can be written in place instead of copying the token. Default 0.
   */
  prefix?: number;
  /**
   * A buffer the codec may build the token in (prefix included) instead of allocating
   * one, when it is at least `prefix + tokenLength(plaintext.length)` bytes long: the
   * result is then a view of its start. A codec that cannot write into a given buffer
   * (WebCrypto) ignores it, so compare `result.buffer` to see which happened. It must
   * not overlap `plaintext` and must not be touched until the promise settles.
   */
  output?: Uint8Array<ArrayBuffer>;
}

/** Options for {@link Fernet.decrypt}. */
export interface DecryptOptions extends FernetClock {
  /** Maximum token age in seconds; `undefined` accepts any age. */
  ttl?: number;
  /**
   * Seconds a token's timestamp may lie in the future. Default 60 when `ttl` is set
   * and unlimited otherwise, as in the spec and in Python's `cryptography`: with neither
   * option the timestamp is not checked at all, so hosts with wrong clocks still work.
   */
  maxClockSkew?: number;
  /**
   * Let the codec decrypt over the token's own ciphertext and return a view of the
   * token's buffer (sharing its memory) instead of allocating a new one. The token's
   * ciphertext is then overwritten, also when a check after the HMAC fails. A codec that
   * cannot (WebCrypto) returns a buffer of its own, so compare `result.buffer`.
   */
  inPlace?: boolean;
}

function defaultNow(): number {
  return Math.floor(Date.now() / 1000);
}

function invalid(reason: InvalidTokenReason, message: string, cause?: unknown): never {
  throw new InvalidTokenError(message, { reason, cause });
}

/**
 * WebCrypto takes `BufferSource`, which excludes views on a SharedArrayBuffer; the
 * runtime rejects those itself, so this cast only narrows the static type.
 */
function source(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return bytes as Uint8Array<ArrayBuffer>;
}

function writeTimestamp(token: Uint8Array, seconds: number): void {
  // Two 32-bit halves: bit operations in JS are 32-bit, and any safe integer fits in 53 bits.
  const high = Math.floor(seconds / 0x1_0000_0000);
  const low = seconds % 0x1_0000_0000;
  for (let i = 0; i < 4; i++) {
    token[TIMESTAMP_OFFSET + 3 - i] = (high >>> (8 * i)) & 0xff;
    token[TIMESTAMP_OFFSET + 7 - i] = (low >>> (8 * i)) & 0xff;
  }
}

function readTimestamp(token: Uint8Array): number {
  let high = 0;
  let low = 0;
  for (let i = 0; i < 4; i++) {
    high = high * 256 + token[TIMESTAMP_OFFSET + i];
    low = low * 256 + token[TIMESTAMP_OFFSET + 4 + i];
  }
  // Above 2^53 this rounds, which only matters for absurd far-future timestamps
  // that the skew check rejects anyway.
  return high * 0x1_0000_0000 + low;
}

/** What {@link prepareEncrypt} checked and chose for one token. */
export interface EncryptPlan {
  /** Zero bytes reserved before the token. */
  prefix: number;
  /** The token's length without the prefix. */
  length: number;
  /** The timestamp, whole seconds. */
  now: number;
  /** The IV: a fresh random one unless the caller fixed it. */
  iv: Uint8Array<ArrayBuffer>;
}

/**
 * The checks every backend's `encrypt` makes before any work, in this order: prefix,
 * clock, IV length. Throws RangeError/TypeError as {@link Fernet.encrypt} documents.
 */
export function prepareEncrypt(plaintext: Uint8Array, options: EncryptOptions): EncryptPlan {
  const prefix = options.prefix ?? 0;
  if (!Number.isSafeInteger(prefix) || prefix < 0) {
    throw new RangeError(`prefix must be a non-negative integer, got ${prefix}`);
  }
  const now = (options.now ?? defaultNow)();
  if (!Number.isSafeInteger(now) || now < 0) {
    throw new RangeError(`clock must return whole seconds since the epoch, got ${now}`);
  }
  if (options.iv !== undefined && options.iv.length !== IV_LENGTH) {
    throw new TypeError(`iv must be ${IV_LENGTH} bytes, got ${options.iv.length}`);
  }
  const length = tokenLength(plaintext.length);
  const iv = new Uint8Array(IV_LENGTH);
  if (options.iv === undefined) crypto.getRandomValues(iv);
  else iv.set(options.iv);
  return { prefix, length, now, iv };
}

/** Version, timestamp and IV into the first {@link CIPHERTEXT_OFFSET} bytes of `token`. */
export function writeTokenHeader(token: Uint8Array, plan: EncryptPlan): void {
  token[0] = TOKEN_VERSION;
  writeTimestamp(token, plan.now);
  token.set(plan.iv, IV_OFFSET);
}

/**
 * The checks every backend's `decrypt` makes before the HMAC, in this order: the
 * options (RangeError), the length, the version. Returns where the HMAC starts.
 */
export function checkTokenShape(token: Uint8Array, options: DecryptOptions): number {
  const { ttl, maxClockSkew } = options;
  if (ttl !== undefined && !(ttl >= 0)) {
    throw new RangeError(`ttl must be a non-negative number of seconds, got ${ttl}`);
  }
  if (maxClockSkew !== undefined && !(maxClockSkew >= 0)) {
    throw new RangeError(`maxClockSkew must be a non-negative number, got ${maxClockSkew}`);
  }
  const length = token.length;
  if (length < MIN_TOKEN_LENGTH) {
    invalid("too-short", `token too short (${length} bytes, minimum ${MIN_TOKEN_LENGTH})`);
  }
  if ((length - TOKEN_OVERHEAD) % BLOCK_LENGTH !== 0) {
    invalid(
      "length",
      `bad token length (${length} bytes: ciphertext is not a whole number of 16-byte blocks)`,
    );
  }
  if (token[0] !== TOKEN_VERSION) {
    invalid(
      "version",
      `bad version (0x${token[0].toString(16).padStart(2, "0")}, expected 0x80)`,
    );
  }
  return length - HMAC_LENGTH;
}

/** The InvalidTokenError of a failed HMAC check, the same from every backend. */
export function badHmac(): never {
  invalid("hmac", "bad HMAC (wrong key or corrupted token)");
}

/** The InvalidTokenError of bad PKCS#7 padding behind a valid HMAC. */
export function badPadding(cause?: unknown): never {
  invalid("padding", "bad padding", cause);
}

/**
 * The timestamp checks after the HMAC verified: expired (with `ttl`), then too far
 * in the future (with `ttl` or `maxClockSkew`); with neither nothing is checked.
 */
export function checkTokenTime(token: Uint8Array, options: DecryptOptions): void {
  const { ttl, maxClockSkew } = options;
  if (ttl === undefined && maxClockSkew === undefined) return;
  const now = (options.now ?? defaultNow)();
  const timestamp = readTimestamp(token);
  if (ttl !== undefined && timestamp + ttl < now) {
    invalid("expired", `token expired (${now - timestamp} s old, TTL ${ttl} s)`);
  }
  const skew = maxClockSkew ?? DEFAULT_MAX_CLOCK_SKEW;
  if (timestamp > now + skew) {
    invalid(
      "future",
      `token timestamp too far in the future (${timestamp - now} s ahead, ` +
        `maximum clock skew ${skew} s)`,
    );
  }
}

/**
 * The 32 raw bytes of a Fernet key given as urlsafe base64 text (44 characters, as
 * made by `Fernet.generate_key()`) or as bytes.
 *
 * @throws {TypeError} when the key is not exactly 32 bytes or not canonical base64.
 * The message never contains the key itself.
 */
export function fernetKeyBytes(key: string | Uint8Array): Uint8Array {
  let raw: Uint8Array;
  if (typeof key === "string") {
    try {
      raw = decodeBase64Url(key);
    } catch (error) {
      throw new TypeError(
        `Fernet key must be 32 bytes of urlsafe base64 (44 characters); ${
          (error as Error).message
        }`,
        { cause: error },
      );
    }
  } else if (key instanceof Uint8Array) {
    raw = key;
  } else {
    throw new TypeError("Fernet key must be a string or a Uint8Array");
  }
  if (raw.length !== KEY_LENGTH) {
    throw new TypeError(
      `Fernet key must be 32 bytes (44 characters of urlsafe base64); got ${raw.length} bytes`,
    );
  }
  return raw;
}

/**
 * A Fernet key ready to use, whatever computes it. Every implementation makes the
 * same tokens for the same key, time and IV, and refuses a token for the same
 * {@link InvalidTokenReason}, checking in the same order (see {@link Fernet.decrypt}).
 */
export interface FernetCodec {
  /**
   * Encrypt and sign `plaintext` into a raw token: one buffer of
   * `prefix + tokenLength(plaintext.length)` bytes, the token at `prefix`, the prefix
   * zeroed. `plaintext` must not be modified until the promise settles.
   */
  encrypt(plaintext: Uint8Array, options?: EncryptOptions): Promise<Uint8Array<ArrayBuffer>>;
  /**
   * Verify and decrypt a raw token. `token` must not be modified until the promise settles.
   *
   * @throws {InvalidTokenError} for any failed check.
   */
  decrypt(token: Uint8Array, options?: DecryptOptions): Promise<Uint8Array<ArrayBuffer>>;
  /** Encrypt into a text token (urlsafe base64 with `=` padding); a string is UTF-8. */
  encryptText(
    plaintext: Uint8Array | string,
    options?: Omit<EncryptOptions, "prefix">,
  ): Promise<string>;
  /** Verify and decrypt a text token; strict base64. */
  decryptText(token: string, options?: DecryptOptions): Promise<Uint8Array<ArrayBuffer>>;
  /** The timestamp of a raw token, unverified: only for diagnostics. */
  timestampOf(token: Uint8Array): number;
}

/** The text-token and timestamp parts of {@link FernetCodec}, the same for every backend. */
export abstract class FernetTextCodec implements FernetCodec {
  abstract encrypt(
    plaintext: Uint8Array,
    options?: EncryptOptions,
  ): Promise<Uint8Array<ArrayBuffer>>;

  abstract decrypt(token: Uint8Array, options?: DecryptOptions): Promise<Uint8Array<ArrayBuffer>>;

  /**
   * Encrypt into a text token: urlsafe base64 with `=` padding, as Python produces.
   * A string plaintext is encoded as UTF-8. There is no `prefix` for text tokens.
   */
  async encryptText(
    plaintext: Uint8Array | string,
    options: Omit<EncryptOptions, "prefix"> = {},
  ): Promise<string> {
    const bytes = typeof plaintext === "string" ? new TextEncoder().encode(plaintext) : plaintext;
    const token = await this.encrypt(bytes, { now: options.now, iv: options.iv });
    return encodeBase64Url(token);
  }

  /**
   * Verify and decrypt a text token. The base64 must be strict: urlsafe alphabet
   * only, `=` padding present, unused bits zero, no whitespace. Leniency here would
   * let many strings map to one token, which breaks anyone comparing tokens as text.
   *
   * @throws {InvalidTokenError} for bad base64 or any check of {@link decrypt}.
   */
  decryptText(token: string, options: DecryptOptions = {}): Promise<Uint8Array<ArrayBuffer>> {
    let raw: Uint8Array;
    try {
      raw = decodeBase64Url(token);
    } catch (error) {
      return Promise.reject(
        new InvalidTokenError(`bad base64 (${(error as Error).message})`, {
          reason: "base64",
          cause: error,
        }),
      );
    }
    return this.decrypt(raw, options);
  }

  /**
   * The timestamp recorded in a raw token, in seconds since the epoch, read without
   * any verification: only for diagnostics such as a clock-difference warning.
   *
   * @throws {InvalidTokenError} when the token is too short to hold a timestamp.
   */
  timestampOf(token: Uint8Array): number {
    if (token.length < CIPHERTEXT_OFFSET) {
      invalid("too-short", `token too short (${token.length} bytes) to hold a timestamp`);
    }
    return readTimestamp(token);
  }
}

/**
 * A Fernet key ready to use on WebCrypto: both halves imported once as non-extractable
 * CryptoKeys, so encrypting many chunks costs no key setup per chunk.
 */
export class Fernet extends FernetTextCodec {
  readonly #signingKey: CryptoKey;
  readonly #encryptionKey: CryptoKey;

  private constructor(signingKey: CryptoKey, encryptionKey: CryptoKey) {
    super();
    this.#signingKey = signingKey;
    this.#encryptionKey = encryptionKey;
  }

  /**
   * Import a key: urlsafe base64 text with padding (44 characters, as made by
   * `Fernet.generate_key()`), or the 32 raw bytes.
   *
   * @throws {TypeError} when the key is not exactly 32 bytes or not canonical base64.
   * The message never contains the key itself.
   */
  static async fromKey(key: string | Uint8Array): Promise<Fernet> {
    const raw = fernetKeyBytes(key);
    const [signingKey, encryptionKey] = await Promise.all([
      crypto.subtle.importKey(
        "raw",
        source(raw.subarray(0, 16)),
        { name: "HMAC", hash: "SHA-256" },
        false,
        ["sign", "verify"],
      ),
      crypto.subtle.importKey("raw", source(raw.subarray(16, 32)), "AES-CBC", false, [
        "encrypt",
        "decrypt",
      ]),
    ]);
    return new Fernet(signingKey, encryptionKey);
  }

  /**
   * Encrypt and sign `plaintext` into a raw token.
   *
   * The result is one buffer of `prefix + tokenLength(plaintext.length)` bytes with
   * the token starting at `prefix` and the prefix zeroed. The HMAC is computed over a
   * subarray of that buffer and written into its reserved tail, so the token is
   * assembled without concatenating pieces.
   */
  async encrypt(
    plaintext: Uint8Array,
    options: EncryptOptions = {},
  ): Promise<Uint8Array<ArrayBuffer>> {
    const plan = prepareEncrypt(plaintext, options);
    const { prefix, length } = plan;
    const ciphertext = await crypto.subtle.encrypt(
      { name: "AES-CBC", iv: plan.iv },
      this.#encryptionKey,
      source(plaintext),
    );
    const ciphertextLength = length - TOKEN_OVERHEAD;
    if (ciphertext.byteLength !== ciphertextLength) {
      throw new Error(
        `AES-CBC returned ${ciphertext.byteLength} bytes, expected ${ciphertextLength}`,
      );
    }
    // Grow WebCrypto's own ciphertext buffer into the token buffer and slide the
    // ciphertext up, rather than allocating a second buffer and copying into it. This
    // saves 5-10% of time and CPU on 1-4 MiB chunks (the "reference" row of
    // bench/fernet_bench.ts): the old buffer is freed at once, not by GC, and nothing
    // is zero-filled. The slid-over bytes are all overwritten below.
    const out = new Uint8Array(ciphertext.transfer(prefix + length));
    const token = out.subarray(prefix);
    out.copyWithin(prefix + CIPHERTEXT_OFFSET, 0, ciphertextLength);
    out.fill(0, 0, prefix);
    writeTokenHeader(token, plan);
    const macOffset = length - HMAC_LENGTH;
    const mac = await crypto.subtle.sign("HMAC", this.#signingKey, token.subarray(0, macOffset));
    token.set(new Uint8Array(mac), macOffset);
    return out;
  }

  /**
   * Verify and decrypt a raw token.
   *
   * Checks, in this order: length, version, HMAC (constant-time, by
   * `crypto.subtle.verify`), then the timestamp, and only then decrypts. The HMAC
   * comes before AES so that no unauthenticated ciphertext reaches the padding check
   * (no padding oracle). Unlike the spec's suggested order it also comes before the
   * timestamp, so "token expired" is only ever said of a token made with this key and
   * a wrong key always reads as "bad HMAC". The result is the same set of accepted tokens.
   *
   * `token` is read again after the HMAC check, so it must not be modified until the
   * returned promise settles.
   *
   * @throws {InvalidTokenError} for any failed check.
   * @throws {RangeError} for a negative `ttl` or `maxClockSkew`.
   */
  async decrypt(token: Uint8Array, options: DecryptOptions = {}): Promise<Uint8Array<ArrayBuffer>> {
    const macOffset = checkTokenShape(token, options);
    const authentic = await crypto.subtle.verify(
      "HMAC",
      this.#signingKey,
      source(token.subarray(macOffset)),
      source(token.subarray(0, macOffset)),
    );
    if (!authentic) badHmac();
    checkTokenTime(token, options);

    let plaintext: ArrayBuffer;
    try {
      plaintext = await crypto.subtle.decrypt(
        { name: "AES-CBC", iv: source(token.subarray(IV_OFFSET, CIPHERTEXT_OFFSET)) },
        this.#encryptionKey,
        source(token.subarray(CIPHERTEXT_OFFSET, macOffset)),
      );
    } catch (error) {
      // With a valid HMAC this means a token signed with our key but badly padded.
      badPadding(error);
    }
    return new Uint8Array(plaintext);
  }
}

/** What the native decoder skips even in strict mode (the spec's ASCII whitespace). */
const ASCII_WHITESPACE = /[\t\n\f\r ]/;

/** Encode bytes as urlsafe base64 with `=` padding (Python's `base64.urlsafe_b64encode`). */
export function encodeBase64Url(bytes: Uint8Array): string {
  return bytes.toBase64({ alphabet: "base64url" });
}

/**
 * Decode urlsafe base64 strictly: only `A-Z a-z 0-9 - _`, padding to a multiple of
 * four characters, and zero unused bits in the last character, so each byte string
 * has exactly one accepted text form.
 *
 * @throws {TypeError} naming what is wrong (never echoing the input, which may be a key).
 */
export function decodeBase64Url(text: string): Uint8Array<ArrayBuffer> {
  if (typeof text !== "string") throw new TypeError("base64url input must be a string");
  if (text.length % 4 !== 0) {
    throw new TypeError(`base64url length ${text.length} is not a multiple of 4`);
  }
  // The native decoder rejects "+", "/", misplaced "=" and non-zero padding bits in
  // strict mode, but skips whitespace; a whole-shape regex would be ~15x slower.
  if (ASCII_WHITESPACE.test(text)) {
    throw new TypeError("base64url input contains whitespace");
  }
  try {
    return Uint8Array.fromBase64(text, { alphabet: "base64url", lastChunkHandling: "strict" });
  } catch (error) {
    throw new TypeError(
      `not canonical urlsafe base64 (${(error as Error).message.replace(/\.$/, "")})`,
      { cause: error },
    );
  }
}
