/**
 * Strict urlsafe base64 with `=` padding, as Python's `base64.urlsafe_b64encode` makes
 * it: the text form of Fernet tokens (lib/crypto/fernet_token.ts, docs/PROTOCOL.md
 * "Tokens") and of keys (lib/crypto/keys.ts). Decoding accepts exactly one text per
 * byte string, so tokens and keys can be compared as text.
 *
 * @module
 */

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
