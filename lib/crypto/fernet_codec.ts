/**
 * {@link FernetCodec}: what every Fernet backend implements (lib/crypto/backend.ts picks
 * one): the WebCrypto {@link Fernet} (lib/crypto/fernet.ts) and OpenSSL's libcrypto
 * through FFI (lib/crypto/openssl.ts). {@link FernetTextCodec} adds the parts that are
 * the same for every backend: text tokens and reading a token's timestamp.
 *
 * @module
 */
import { decodeBase64Url, encodeBase64Url } from "./base64url.ts";
import {
  type DecryptOptions,
  type EncryptOptions,
  InvalidTokenError,
  tokenTimestamp,
} from "./fernet_token.ts";

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
    return tokenTimestamp(token);
  }
}
