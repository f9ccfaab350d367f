/**
 * Which code computes Fernet (docs/PROTOCOL.md §9.7): OpenSSL's libcrypto through FFI
 * (lib/crypto/openssl.ts) or WebCrypto (lib/crypto/fernet.ts). Both make and accept
 * exactly the same tokens, so each end chooses on its own; the option is
 * `CRYPTO_BACKEND` in recon.opts:
 *
 * - `auto` (default): libcrypto.so.3, else libcrypto.so.1.1, else WebCrypto, saying why.
 *   libcrypto is opened when first needed: a token for fewer than
 *   {@link LIBCRYPTO_MIN_BYTES} bytes is made and opened by WebCrypto, which costs a
 *   process that only ever sends small records (a tiny job's client) nothing, where
 *   opening libcrypto costs ~9 ms (docs/PERFORMANCE.md). Asking for the backend's name
 *   or description opens it (the server does at start, to log it).
 * - `openssl`: libcrypto or a one-line {@link ConfigError} at start.
 * - `webcrypto`: WebCrypto.
 *
 * libcrypto needs `--allow-ffi` (bin/permissions has it); a process without it uses
 * WebCrypto and says so, without prompting.
 *
 * @module
 */
import { ConfigError, errorMessage } from "../errors.ts";
import { Fernet } from "./fernet.ts";
import { type FernetCodec, FernetTextCodec } from "./fernet_codec.ts";
import { type DecryptOptions, type EncryptOptions, fernetKeyBytes } from "./fernet_token.ts";
import { LibCrypto } from "./openssl.ts";

/** The values of `CRYPTO_BACKEND`. */
export const CRYPTO_BACKEND_CHOICES = ["auto", "openssl", "webcrypto"] as const;

/** A value of `CRYPTO_BACKEND`. */
export type CryptoBackendChoice = typeof CRYPTO_BACKEND_CHOICES[number];

/** A loaded backend: makes one {@link FernetCodec} per key. */
export interface CryptoBackend {
  /** Which one it is. */
  readonly name: "openssl" | "webcrypto";
  /**
   * For the start log, `server_status_response.crypto` and `--debug`, e.g.
   * "OpenSSL 3.0.19 libcrypto (nonblocking FFI)" or
   * "WebCrypto (libcrypto not loaded: no --allow-ffi permission)".
   */
  readonly description: string;
  /**
   * Whether its codecs build tokens in a given buffer (`EncryptOptions.output`) and
   * decrypt in place (`DecryptOptions.inPlace`), so a caller may pool buffers.
   */
  readonly reusesBuffers: boolean;
  /** A codec for a 32-byte Fernet key (raw or urlsafe base64 text). */
  fernet(key: string | Uint8Array): Promise<FernetCodec>;
}

/** The libcrypto file names tried, in order, by operating system. */
const LIBCRYPTO_FILES: Partial<Record<typeof Deno.build.os, string[]>> = {
  linux: ["libcrypto.so.3", "libcrypto.so.1.1"],
  darwin: ["libcrypto.3.dylib", "libcrypto.1.1.dylib"],
  windows: ["libcrypto-3-x64.dll", "libcrypto-1_1-x64.dll"],
};

/** The WebCrypto backend; `why` goes into its description. */
function webCrypto(why: string): CryptoBackend {
  return {
    name: "webcrypto",
    description: `WebCrypto (${why})`,
    reusesBuffers: false,
    fernet: (key) => Fernet.fromKey(key),
  };
}

function openSsl(lib: LibCrypto): CryptoBackend {
  return {
    name: "openssl",
    description: `${lib.version} libcrypto (nonblocking FFI)`,
    reusesBuffers: true,
    fernet: (key) => {
      try {
        return Promise.resolve(lib.fernet(key));
      } catch (error) {
        return Promise.reject(error);
      }
    },
  };
}

/**
 * Under `auto`, plaintexts (and tokens) shorter than this go to WebCrypto: bulk DATA
 * records (1 MiB) go to libcrypto, control messages and small files need not open it.
 */
export const LIBCRYPTO_MIN_BYTES = 64 * 1024;

/**
 * An `auto` codec: WebCrypto below {@link LIBCRYPTO_MIN_BYTES}, libcrypto (opened at the
 * first large token, or WebCrypto when it cannot be) from there on. Both make the same
 * tokens, so which one handles a token is invisible to the peer.
 */
class AutoFernet extends FernetTextCodec {
  readonly #small: Fernet;
  readonly #raw: Uint8Array;
  #large: FernetCodec | undefined;

  constructor(small: Fernet, raw: Uint8Array) {
    super();
    this.#small = small;
    this.#raw = raw;
  }

  #forLarge(): FernetCodec {
    if (this.#large === undefined) {
      const lib = openLibCrypto();
      this.#large = typeof lib === "string" ? this.#small : lib.fernet(this.#raw);
    }
    return this.#large;
  }

  encrypt(plaintext: Uint8Array, options?: EncryptOptions): Promise<Uint8Array<ArrayBuffer>> {
    return plaintext.length < LIBCRYPTO_MIN_BYTES
      ? this.#small.encrypt(plaintext, options)
      : this.#forLarge().encrypt(plaintext, options);
  }

  decrypt(token: Uint8Array, options?: DecryptOptions): Promise<Uint8Array<ArrayBuffer>> {
    return token.length < LIBCRYPTO_MIN_BYTES
      ? this.#small.decrypt(token, options)
      : this.#forLarge().decrypt(token, options);
  }
}

/** `auto`: libcrypto opened when a large token or the backend's name first needs it. */
function automatic(): CryptoBackend {
  let resolved: CryptoBackend | undefined;
  const resolve = () => {
    if (resolved === undefined) {
      const lib = openLibCrypto();
      resolved = typeof lib === "string" ? webCrypto(`libcrypto not loaded: ${lib}`) : openSsl(lib);
    }
    return resolved;
  };
  return {
    get name() {
      return resolve().name;
    },
    get description() {
      return resolve().description;
    },
    // WebCrypto ignores the output buffer and in-place decryption it is offered, so
    // callers may pool buffers whichever code ends up making a token.
    reusesBuffers: true,
    fernet: async (key) => {
      const raw = fernetKeyBytes(key).slice();
      return new AutoFernet(await Fernet.fromKey(raw), raw);
    },
  };
}

/** Whether this process has opened libcrypto (tests: `auto` opens it only when needed). */
export function libCryptoOpened(): boolean {
  return opened !== undefined && typeof opened !== "string";
}

let opened: LibCrypto | string | undefined;

/** Why libcrypto was not opened when the process may not load native code. */
const NO_FFI = "no --allow-ffi permission";

/** libcrypto opened once per process, or why it could not be. */
function openLibCrypto(): LibCrypto | string {
  if (opened !== undefined) return opened;
  opened = tryOpen();
  return opened;
}

function tryOpen(): LibCrypto | string {
  const files = LIBCRYPTO_FILES[Deno.build.os] ?? LIBCRYPTO_FILES.linux!;
  // Asking first keeps a process without --allow-ffi from prompting on a terminal.
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    return NO_FFI;
  }
  const missing: string[] = [];
  for (const file of files) {
    try {
      return LibCrypto.open(file);
    } catch (error) {
      const message = errorMessage(error);
      if (/could not open library/i.test(message)) missing.push(file);
      else return `${file}: ${message}`;
    }
  }
  return `${missing.join(" and ")} not found`;
}

const loaded = new Map<string, CryptoBackend>();

/**
 * The backend for a `CRYPTO_BACKEND` value, loaded once per process.
 *
 * @throws {ConfigError} for `openssl` when libcrypto cannot be loaded, and for an
 * unknown value.
 */
export function loadCryptoBackend(choice: CryptoBackendChoice | string = "auto"): CryptoBackend {
  const known = loaded.get(choice);
  if (known) return known;
  let backend: CryptoBackend;
  if (choice === "webcrypto") backend = webCrypto("CRYPTO_BACKEND = webcrypto");
  else if (choice === "auto") backend = automatic();
  else if (choice === "openssl") {
    const lib = openLibCrypto();
    if (typeof lib !== "string") backend = openSsl(lib);
    else {
      throw new ConfigError(`CRYPTO_BACKEND = openssl, but libcrypto cannot be loaded: ${lib}`, {
        hint: lib === NO_FFI
          ? "run it with --allow-ffi (bin/recon-server and bin/recon-client have it), " +
            "or set CRYPTO_BACKEND = auto"
          : "install OpenSSL's libcrypto (e.g. apt-get install libssl3), " +
            "or set CRYPTO_BACKEND = auto",
      });
    }
  } else {
    throw new ConfigError(
      `CRYPTO_BACKEND must be one of ${CRYPTO_BACKEND_CHOICES.join(", ")}, got "${choice}"`,
    );
  }
  loaded.set(choice, backend);
  return backend;
}

let processDefault: CryptoBackend | undefined;

/**
 * The backend sessions use unless told otherwise (lib/wire/channel.ts): the one set
 * with {@link setDefaultCryptoBackend}, else `auto`.
 */
export function defaultCryptoBackend(): CryptoBackend {
  processDefault ??= loadCryptoBackend("auto");
  return processDefault;
}

/** Make `backend` this process's default (the server does at start, from recon.opts). */
export function setDefaultCryptoBackend(backend: CryptoBackend): void {
  processDefault = backend;
}
