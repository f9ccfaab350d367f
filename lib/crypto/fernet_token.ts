/**
 * The Fernet token format (https://github.com/fernet/spec, version 0x80), binary-safe,
 * for docs/PROTOCOL.md "Tokens": every frame on the wire is one token.
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
 * This module holds the layout, the one error ({@link InvalidTokenError}), the options
 * and the checks that every backend (lib/crypto/fernet_codec.ts) makes, in the same
 * order, so a token is accepted or refused for the same reason whichever backend reads
 * it: WebCrypto (lib/crypto/fernet.ts) or OpenSSL's libcrypto (lib/crypto/openssl.ts).
 * It does no I/O: the clock and the IV source are injectable so the spec's
 * fixed-`now`/fixed-`iv` vectors can be reproduced exactly.
 *
 * @module
 */
import { decodeBase64Url } from "./base64url.ts";

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

/**
 * The timestamp recorded in a raw token, in seconds since the epoch, read without
 * any verification: only for diagnostics such as a clock-difference warning.
 *
 * @throws {InvalidTokenError} when the token is too short to hold a timestamp.
 */
export function tokenTimestamp(token: Uint8Array): number {
  if (token.length < CIPHERTEXT_OFFSET) {
    invalid("too-short", `token too short (${token.length} bytes) to hold a timestamp`);
  }
  return readTimestamp(token);
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
