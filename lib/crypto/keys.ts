/**
 * SHARED_KEY helpers: make a key, decode one from recon.opts, and name one by a
 * public fingerprint (docs/PROTOCOL.md "Handshake": both sides compare key ids so a
 * wrong key is reported as such instead of as a vague decryption failure).
 *
 * Keys use the Fernet key format (32 bytes as urlsafe base64 with padding), so a key
 * made by Python's `Fernet.generate_key()` works here and the other way round.
 * No I/O; no error message ever includes key material.
 *
 * @module
 */
import { decodeBase64Url, encodeBase64Url } from "./base64url.ts";

/** Raw length of a SHARED_KEY in bytes. */
export const KEY_LENGTH = 32;

/** Length of a SHARED_KEY as text: 32 bytes in base64 with padding. */
export const KEY_TEXT_LENGTH = 44;

/** The value recon.opts.example ships with; it must never be used as a real key. */
export const PLACEHOLDER_KEY = "SET_YOUR_SHARED_KEY_HERE";

/** Domain-separation label so a key id can never equal a MAC made for another purpose. */
const KEY_ID_LABEL = new TextEncoder().encode("recon key id v1");

/** Bytes of the HMAC kept in a key id: 64 bits tell keys apart and reveal nothing usable. */
const KEY_ID_BYTES = 8;

/** A fresh random key as 44 characters of urlsafe base64, like Python's `Fernet.generate_key()`. */
export function generateKey(): string {
  return encodeBase64Url(crypto.getRandomValues(new Uint8Array(KEY_LENGTH)));
}

/**
 * Decode a SHARED_KEY from its text form into its 32 raw bytes.
 *
 * @throws {TypeError} with a message fit to show the user; it gives the length seen
 * but never the key's characters, which could end up in a log.
 */
export function decodeKey(text: string): Uint8Array<ArrayBuffer> {
  if (typeof text !== "string") throw new TypeError("SHARED_KEY must be a string");
  if (isPlaceholderKey(text)) {
    throw new TypeError(
      "SHARED_KEY is not set: replace the placeholder with 32 bytes of urlsafe base64 " +
        "(44 characters), the same on client and server",
    );
  }
  const expected = `SHARED_KEY must be 32 bytes of urlsafe base64 (${KEY_TEXT_LENGTH} characters ` +
    `ending in "=", as made by Fernet.generate_key())`;
  if (text.length !== KEY_TEXT_LENGTH) {
    throw new TypeError(`${expected}; got ${text.length} characters`);
  }
  let raw: Uint8Array<ArrayBuffer>;
  try {
    raw = decodeBase64Url(text);
  } catch (error) {
    throw new TypeError(`${expected}; ${(error as Error).message}`, { cause: error });
  }
  if (raw.length !== KEY_LENGTH) {
    // Only reachable for 44 characters with "==" padding, i.e. 31 bytes.
    throw new TypeError(`${expected}; got ${raw.length} bytes`);
  }
  return raw;
}

/**
 * A short public fingerprint of a raw key: the first 8 bytes of
 * HMAC-SHA256(key = rawKey, data = "recon key id v1") as 16 lowercase hex digits.
 * Safe to log and to send: without the key it cannot be computed, and it does not
 * help to guess the key (it is a PRF output, not a plain hash of the key).
 */
export async function keyId(rawKey: Uint8Array): Promise<string> {
  if (!(rawKey instanceof Uint8Array) || rawKey.length !== KEY_LENGTH) {
    throw new TypeError(`key id needs the ${KEY_LENGTH} raw key bytes`);
  }
  const key = await crypto.subtle.importKey(
    "raw",
    rawKey as Uint8Array<ArrayBuffer>,
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, KEY_ID_LABEL));
  return mac.subarray(0, KEY_ID_BYTES).toHex();
}

/** Whether a SHARED_KEY value is still unset: empty, blank or the shipped placeholder. */
export function isPlaceholderKey(text: string): boolean {
  const value = text.trim();
  return value === "" || value === PLACEHOLDER_KEY;
}
