/**
 * Fernet tokens (lib/crypto/fernet_token.ts, docs/PROTOCOL.md "Tokens") on WebCrypto:
 * the default {@link FernetCodec} (lib/crypto/backend.ts), and what lib/crypto/openssl.ts
 * must match token for token and refusal for refusal.
 *
 * @module
 */
import { FernetTextCodec } from "./fernet_codec.ts";
import {
  badHmac,
  badPadding,
  checkTokenShape,
  checkTokenTime,
  CIPHERTEXT_OFFSET,
  type DecryptOptions,
  type EncryptOptions,
  fernetKeyBytes,
  HMAC_LENGTH,
  IV_OFFSET,
  prepareEncrypt,
  TOKEN_OVERHEAD,
  writeTokenHeader,
} from "./fernet_token.ts";

/**
 * WebCrypto takes `BufferSource`, which excludes views on a SharedArrayBuffer; the
 * runtime rejects those itself, so this cast only narrows the static type.
 */
function source(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return bytes as Uint8Array<ArrayBuffer>;
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
