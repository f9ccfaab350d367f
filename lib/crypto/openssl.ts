/**
 * Fernet on OpenSSL's libcrypto through `Deno.dlopen` (lib/crypto/backend.ts picks it):
 * the same tokens and the same refusals as the WebCrypto {@link Fernet}, with the bulk
 * AES-128-CBC and HMAC-SHA256 work in *nonblocking* FFI calls, which run on the
 * runtime's blocking-thread pool beside the main thread, as WebCrypto's do.
 *
 * Per token, encrypt is one nonblocking `EVP_EncryptUpdate` over the whole blocks of
 * the plaintext, straight into the token buffer, one synchronous update for the last
 * (PKCS#7-padded) block, and one nonblocking one-shot `HMAC()` written into the
 * token's tail: no copy of the plaintext. Decrypt is one nonblocking `HMAC()`, a
 * constant-time compare (`CRYPTO_memcmp`), the timestamp checks, then the last block
 * alone (CBC decrypts any block from its predecessor), whose padding gives the exact
 * plaintext length, then one nonblocking `EVP_DecryptUpdate` of the other blocks into a
 * buffer of exactly that length. Padding is off in EVP: PKCS#7 is ours, checked only
 * after the HMAC verified, as in lib/crypto/fernet.ts (checks: lib/crypto/fernet_token.ts).
 *
 * Cipher contexts are pooled (not per key, so a session's keys leave nothing behind);
 * each use sets its key and IV. Every typed array a nonblocking call reads or writes
 * is referenced by the awaiting function until the call settles.
 *
 * Works with OpenSSL 3.x and 1.1.1: every symbol used exists in both.
 *
 * @module
 */
import {
  badHmac,
  badPadding,
  BLOCK_LENGTH,
  checkTokenShape,
  checkTokenTime,
  CIPHERTEXT_OFFSET,
  type DecryptOptions,
  type EncryptOptions,
  fernetKeyBytes,
  HMAC_LENGTH,
  IV_OFFSET,
  prepareEncrypt,
  writeTokenHeader,
} from "./fernet_token.ts";
import { FernetTextCodec } from "./fernet_codec.ts";

const SYMBOLS = {
  OpenSSL_version: { parameters: ["i32"], result: "pointer" },
  EVP_CIPHER_CTX_new: { parameters: [], result: "pointer" },
  EVP_CIPHER_CTX_free: { parameters: ["pointer"], result: "void" },
  EVP_CIPHER_CTX_set_padding: { parameters: ["pointer", "i32"], result: "i32" },
  EVP_aes_128_cbc: { parameters: [], result: "pointer" },
  EVP_sha256: { parameters: [], result: "pointer" },
  // ctx, cipher, engine (NULL), key, iv
  EVP_EncryptInit_ex: {
    parameters: ["pointer", "pointer", "pointer", "buffer", "buffer"],
    result: "i32",
  },
  EVP_DecryptInit_ex: {
    parameters: ["pointer", "pointer", "pointer", "buffer", "buffer"],
    result: "i32",
  },
  // ctx, out, &outl, in, inl
  EVP_EncryptUpdate: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "i32"],
    result: "i32",
  },
  EVP_DecryptUpdate: {
    parameters: ["pointer", "buffer", "buffer", "buffer", "i32"],
    result: "i32",
  },
  EVP_EncryptUpdate_async: {
    name: "EVP_EncryptUpdate",
    parameters: ["pointer", "buffer", "buffer", "buffer", "i32"],
    result: "i32",
    nonblocking: true,
  },
  EVP_DecryptUpdate_async: {
    name: "EVP_DecryptUpdate",
    parameters: ["pointer", "buffer", "buffer", "buffer", "i32"],
    result: "i32",
    nonblocking: true,
  },
  // md, key, key_len, data, data_len, out, &out_len; returns out or NULL
  HMAC: {
    parameters: ["pointer", "buffer", "i32", "buffer", "usize", "buffer", "buffer"],
    result: "pointer",
  },
  HMAC_async: {
    name: "HMAC",
    parameters: ["pointer", "buffer", "i32", "buffer", "usize", "buffer", "buffer"],
    result: "pointer",
    nonblocking: true,
  },
  CRYPTO_memcmp: { parameters: ["buffer", "buffer", "usize"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

type Symbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** Cipher contexts kept for reuse beyond this many are freed. */
const MAX_POOLED_CONTEXTS = 64;

/** One EVP_CIPHER_CTX and the `int` its updates report their output length in. */
interface CipherContext {
  ctx: Deno.PointerObject;
  outLength: Uint8Array<ArrayBuffer>;
}

/** The Fernet spec's generate vector: checked at load, so a wrong ABI never reaches a token. */
const SELF_TEST = {
  key: "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=",
  now: 499162800,
  plaintext: "hello",
  token:
    "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==",
};

/** libcrypto, opened: makes {@link OpenSslFernet} codecs. */
export class LibCrypto {
  /** "OpenSSL 3.0.19" (the library's own name for its version, without the date). */
  readonly version: string;
  /** The file name that was opened, e.g. libcrypto.so.3. */
  readonly file: string;
  readonly #symbols: Symbols;
  readonly #cipher: Deno.PointerValue;
  readonly #md: Deno.PointerValue;
  readonly #pool: CipherContext[] = [];

  private constructor(file: string, library: Deno.DynamicLibrary<typeof SYMBOLS>) {
    this.file = file;
    this.#symbols = library.symbols;
    const text = Deno.UnsafePointerView.getCString(
      nonNull(this.#symbols.OpenSSL_version(0), "OpenSSL_version"),
    );
    this.version = text.split(" ").slice(0, 2).join(" ");
    this.#cipher = nonNull(this.#symbols.EVP_aes_128_cbc(), "EVP_aes_128_cbc");
    this.#md = nonNull(this.#symbols.EVP_sha256(), "EVP_sha256");
  }

  /**
   * Open `file` (a name the dynamic loader searches for, or a path) and check it
   * against the spec's vector.
   *
   * @throws {Error} when it cannot be opened (Deno.errors.NotCapable without
   * --allow-ffi), lacks a symbol, or computes a wrong token.
   */
  static open(file: string): LibCrypto {
    const library = Deno.dlopen(file, SYMBOLS);
    try {
      const lib = new LibCrypto(file, library);
      lib.#selfTest();
      return lib;
    } catch (error) {
      library.close();
      throw error;
    }
  }

  /** A codec for one 32-byte Fernet key (text or raw), as {@link Fernet.fromKey} takes it. */
  fernet(key: string | Uint8Array): OpenSslFernet {
    return new OpenSslFernet(this, fernetKeyBytes(key));
  }

  #acquire(): CipherContext {
    const pooled = this.#pool.pop();
    if (pooled) return pooled;
    const ctx = nonNull(this.#symbols.EVP_CIPHER_CTX_new(), "EVP_CIPHER_CTX_new");
    return { ctx, outLength: new Uint8Array(4) };
  }

  #release(context: CipherContext): void {
    if (this.#pool.length < MAX_POOLED_CONTEXTS) this.#pool.push(context);
    else this.#symbols.EVP_CIPHER_CTX_free(context.ctx);
  }

  /** Set the context up for AES-128-CBC under `key` from `iv`, padding off. */
  #init(context: CipherContext, encrypt: boolean, key: Uint8Array, iv: Uint8Array): void {
    const init = encrypt ? this.#symbols.EVP_EncryptInit_ex : this.#symbols.EVP_DecryptInit_ex;
    check(init(context.ctx, this.#cipher, null, key, iv), "EVP_CipherInit_ex");
    check(this.#symbols.EVP_CIPHER_CTX_set_padding(context.ctx, 0), "EVP_CIPHER_CTX_set_padding");
  }

  /**
   * AES-128-CBC of `plaintext` with PKCS#7 padding into `out` (room for the padded
   * length). The whole blocks go in one nonblocking call, the last block in a
   * synchronous one.
   */
  async encryptCbc(
    key: Uint8Array,
    iv: Uint8Array,
    plaintext: Uint8Array,
    out: Uint8Array,
  ): Promise<void> {
    const whole = plaintext.length - (plaintext.length % BLOCK_LENGTH);
    const last = new Uint8Array(BLOCK_LENGTH);
    last.set(plaintext.subarray(whole));
    last.fill(BLOCK_LENGTH - (plaintext.length - whole), plaintext.length - whole);
    const context = this.#acquire();
    try {
      this.#init(context, true, key, iv);
      if (whole > 0) {
        check(
          await this.#symbols.EVP_EncryptUpdate_async(
            context.ctx,
            out,
            context.outLength,
            plaintext,
            whole,
          ),
          "EVP_EncryptUpdate",
        );
      }
      check(
        this.#symbols.EVP_EncryptUpdate(
          context.ctx,
          out.subarray(whole),
          context.outLength,
          last,
          BLOCK_LENGTH,
        ),
        "EVP_EncryptUpdate",
      );
    } finally {
      this.#release(context);
    }
  }

  /**
   * AES-128-CBC decryption of `ciphertext` (whole blocks, at least one) with our
   * PKCS#7 check; the caller has verified the HMAC. The last block first: its padding
   * says how long the plaintext is, so the other blocks go straight into a buffer of
   * exactly that length.
   */
  async decryptCbc(
    key: Uint8Array,
    iv: Uint8Array,
    ciphertext: Uint8Array,
    inPlace = false,
  ): Promise<Uint8Array<ArrayBuffer>> {
    const length = ciphertext.length;
    const lastOffset = length - BLOCK_LENGTH;
    const last = new Uint8Array(BLOCK_LENGTH);
    const context = this.#acquire();
    try {
      const previous = lastOffset === 0 ? iv : ciphertext.subarray(lastOffset - BLOCK_LENGTH);
      this.#init(context, false, key, previous);
      check(
        this.#symbols.EVP_DecryptUpdate(
          context.ctx,
          last,
          context.outLength,
          ciphertext.subarray(lastOffset),
          BLOCK_LENGTH,
        ),
        "EVP_DecryptUpdate",
      );
      const pad = last[BLOCK_LENGTH - 1];
      if (pad < 1 || pad > BLOCK_LENGTH) badPadding();
      for (let i = BLOCK_LENGTH - pad; i < BLOCK_LENGTH; i++) {
        if (last[i] !== pad) badPadding();
      }
      // In place, the other blocks are decrypted over themselves: EVP allows in == out,
      // and the last block's ciphertext, read above, is not among them.
      const plaintext = inPlace
        ? (ciphertext as Uint8Array<ArrayBuffer>).subarray(0, length - pad)
        : new Uint8Array(length - pad);
      if (lastOffset > 0) {
        this.#init(context, false, key, iv);
        check(
          await this.#symbols.EVP_DecryptUpdate_async(
            context.ctx,
            plaintext,
            context.outLength,
            ciphertext,
            lastOffset,
          ),
          "EVP_DecryptUpdate",
        );
      }
      plaintext.set(last.subarray(0, BLOCK_LENGTH - pad), lastOffset);
      return plaintext;
    } finally {
      this.#release(context);
    }
  }

  /** HMAC-SHA256 of `data` under `key` into `out` (32 bytes), in a nonblocking call. */
  async hmac(key: Uint8Array, data: Uint8Array, out: Uint8Array): Promise<void> {
    const outLength = new Uint8Array(4);
    const result = await this.#symbols.HMAC_async(
      this.#md,
      key,
      key.length,
      data,
      BigInt(data.length),
      out,
      outLength,
    );
    nonNull(result, "HMAC");
  }

  /** Whether two equally long byte strings are equal, in time independent of their content. */
  equal(a: Uint8Array, b: Uint8Array): boolean {
    return a.length === b.length && this.#symbols.CRYPTO_memcmp(a, b, BigInt(a.length)) === 0;
  }

  /** The spec vector with the synchronous symbols: the same calls the codecs make. */
  #selfTest(): void {
    const raw = fernetKeyBytes(SELF_TEST.key);
    const expected = Uint8Array.fromBase64(SELF_TEST.token, { alphabet: "base64url" });
    const plaintext = new TextEncoder().encode(SELF_TEST.plaintext);
    const token = new Uint8Array(expected.length);
    token.set(expected.subarray(0, CIPHERTEXT_OFFSET));
    const last = new Uint8Array(BLOCK_LENGTH).fill(BLOCK_LENGTH - plaintext.length);
    last.set(plaintext);
    const context = this.#acquire();
    try {
      this.#init(context, true, raw.subarray(16), token.subarray(IV_OFFSET, CIPHERTEXT_OFFSET));
      check(
        this.#symbols.EVP_EncryptUpdate(
          context.ctx,
          token.subarray(CIPHERTEXT_OFFSET),
          context.outLength,
          last,
          BLOCK_LENGTH,
        ),
        "EVP_EncryptUpdate",
      );
    } finally {
      this.#release(context);
    }
    const macOffset = token.length - HMAC_LENGTH;
    nonNull(
      this.#symbols.HMAC(
        this.#md,
        raw.subarray(0, 16),
        16,
        token,
        BigInt(macOffset),
        token.subarray(macOffset),
        new Uint8Array(4),
      ),
      "HMAC",
    );
    if (!this.equal(token, expected)) {
      throw new Error("its AES-128-CBC/HMAC-SHA256 fail the Fernet spec's test vector");
    }
  }
}

function nonNull<T>(pointer: T | null, what: string): T {
  if (pointer === null) throw new Error(`libcrypto ${what} failed`);
  return pointer;
}

function check(result: number, what: string): void {
  if (result !== 1) throw new Error(`libcrypto ${what} failed`);
}

/**
 * A Fernet key on libcrypto: the same semantics as the WebCrypto {@link Fernet}
 * (lib/crypto/fernet.ts documents them); made by {@link LibCrypto.fernet}.
 */
export class OpenSslFernet extends FernetTextCodec {
  readonly #lib: LibCrypto;
  readonly #signingKey: Uint8Array<ArrayBuffer>;
  readonly #encryptionKey: Uint8Array<ArrayBuffer>;

  constructor(lib: LibCrypto, raw: Uint8Array) {
    super();
    this.#lib = lib;
    this.#signingKey = raw.slice(0, 16);
    this.#encryptionKey = raw.slice(16, 32);
  }

  async encrypt(
    plaintext: Uint8Array,
    options: EncryptOptions = {},
  ): Promise<Uint8Array<ArrayBuffer>> {
    const plan = prepareEncrypt(plaintext, options);
    const size = plan.prefix + plan.length;
    const given = options.output;
    let out: Uint8Array<ArrayBuffer>;
    if (given !== undefined && given.length >= size) {
      out = given.subarray(0, size);
      out.fill(0, 0, plan.prefix);
    } else out = new Uint8Array(size);
    const token = out.subarray(plan.prefix);
    writeTokenHeader(token, plan);
    const macOffset = plan.length - HMAC_LENGTH;
    await this.#lib.encryptCbc(
      this.#encryptionKey,
      plan.iv,
      plaintext,
      token.subarray(CIPHERTEXT_OFFSET, macOffset),
    );
    await this.#lib.hmac(
      this.#signingKey,
      token.subarray(0, macOffset),
      token.subarray(macOffset),
    );
    return out;
  }

  async decrypt(token: Uint8Array, options: DecryptOptions = {}): Promise<Uint8Array<ArrayBuffer>> {
    const macOffset = checkTokenShape(token, options);
    const mac = new Uint8Array(HMAC_LENGTH);
    await this.#lib.hmac(this.#signingKey, token.subarray(0, macOffset), mac);
    if (!this.#lib.equal(mac, token.subarray(macOffset))) badHmac();
    checkTokenTime(token, options);
    return await this.#lib.decryptCbc(
      this.#encryptionKey,
      token.subarray(IV_OFFSET, CIPHERTEXT_OFFSET),
      token.subarray(CIPHERTEXT_OFFSET, macOffset),
      options.inPlace ?? false,
    );
  }
}
