/**
 * The floor's primitives, each timed alone (issue 18): what one end must spend on the
 * cryptography and hashing of a transfer before any I/O, in a process of its own.
 *
 *     deno run -A bench/primitives.ts [--mib 256] [--chunk-kib 1024] [--backend code|webcrypto]
 *
 * Prints one JSON object: for each primitive, CPU seconds per GiB (user + sys of every
 * thread of this process, so WebCrypto's worker threads count) and MB/s with one call
 * at a time, over `--mib` of 1 MiB chunks (recon's default CHUNK_SIZE), after one
 * untimed warm-up chunk:
 *
 * - `aes_cbc_encrypt`: AES-128-CBC with PKCS#7 of a chunk (a Fernet token's ciphertext);
 * - `hmac_sign`: HMAC-SHA256 over a token (version, time, IV, ciphertext);
 * - `hmac_verify`: the same MAC checked;
 * - `aes_cbc_decrypt`: the ciphertext back to the chunk;
 * - `sha256`: the file's SHA-256, `node:crypto` createHash fed chunk by chunk, as
 *   lib/wire/transfer.ts does (`sha256_webcrypto`: WebCrypto's one-shot digest of each
 *   chunk, for comparison).
 *
 * `--backend code` times AES and HMAC with the backend recon's code uses (see
 * {@link codeBackend}: libcrypto through FFI where it loads); `--backend webcrypto` with
 * WebCrypto, for comparison.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { loadCryptoBackend } from "../lib/crypto/backend.ts";
import { LibCrypto } from "../lib/crypto/openssl.ts";
import process from "node:process";
import { parseArgs } from "node:util";

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

/** AES-128-CBC and HMAC-SHA256 of one backend, on whole chunks. */
export interface CipherPrimitives {
  /** What the report calls it, e.g. "WebCrypto" or "OpenSSL 3.0.x libcrypto". */
  name: string;
  /** AES-128-CBC + PKCS#7 of `plaintext` under `iv`; the ciphertext. */
  encrypt(plaintext: Uint8Array<ArrayBuffer>, iv: Uint8Array<ArrayBuffer>): Promise<Uint8Array>;
  decrypt(ciphertext: Uint8Array<ArrayBuffer>, iv: Uint8Array<ArrayBuffer>): Promise<Uint8Array>;
  /** HMAC-SHA256 of `data`. */
  sign(data: Uint8Array<ArrayBuffer>): Promise<Uint8Array>;
  verify(mac: Uint8Array<ArrayBuffer>, data: Uint8Array<ArrayBuffer>): Promise<boolean>;
}

/** WebCrypto (`crypto.subtle`), what lib/crypto/fernet.ts uses. */
export async function webCrypto(
  key: Uint8Array<ArrayBuffer>,
): Promise<CipherPrimitives> {
  const signKey = await crypto.subtle.importKey(
    "raw",
    key.slice(0, 16),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign", "verify"],
  );
  const aesKey = await crypto.subtle.importKey("raw", key.slice(16), "AES-CBC", false, [
    "encrypt",
    "decrypt",
  ]);
  return {
    name: "WebCrypto",
    encrypt: async (plaintext, iv) =>
      new Uint8Array(await crypto.subtle.encrypt({ name: "AES-CBC", iv }, aesKey, plaintext)),
    decrypt: async (ciphertext, iv) =>
      new Uint8Array(await crypto.subtle.decrypt({ name: "AES-CBC", iv }, aesKey, ciphertext)),
    sign: async (data) => new Uint8Array(await crypto.subtle.sign("HMAC", signKey, data)),
    verify: (mac, data) => crypto.subtle.verify("HMAC", signKey, mac, data),
  };
}

/** libcrypto's calls as lib/crypto/openssl.ts makes them for a Fernet token. */
export function libCrypto(lib: LibCrypto, key: Uint8Array<ArrayBuffer>): CipherPrimitives {
  const signKey = key.slice(0, 16);
  const aesKey = key.slice(16);
  const padded = (length: number) => (Math.floor(length / 16) + 1) * 16;
  return {
    name: `${lib.version} libcrypto (nonblocking FFI)`,
    encrypt: async (plaintext, iv) => {
      const out = new Uint8Array(padded(plaintext.length));
      await lib.encryptCbc(aesKey, iv, plaintext, out);
      return out;
    },
    decrypt: (ciphertext, iv) => lib.decryptCbc(aesKey, iv, ciphertext),
    sign: async (data) => {
      const mac = new Uint8Array(32);
      await lib.hmac(signKey, data, mac);
      return mac;
    },
    verify: async (mac, data) => {
      const computed = new Uint8Array(32);
      await lib.hmac(signKey, data, computed);
      return lib.equal(computed, mac);
    },
  };
}

/**
 * The backend recon's data path uses for AES and HMAC: what `CRYPTO_BACKEND = auto`
 * (the default, lib/crypto/backend.ts) picks in this process, libcrypto or WebCrypto.
 */
export function codeBackend(key: Uint8Array<ArrayBuffer>): Promise<CipherPrimitives> {
  const backend = loadCryptoBackend("auto");
  if (backend.name === "webcrypto") return webCrypto(key);
  // backend.ts opens the first of these that loads; the same order here.
  for (const file of ["libcrypto.so.3", "libcrypto.so.1.1"]) {
    try {
      return Promise.resolve(libCrypto(LibCrypto.open(file), key));
    } catch { /* the next one */ }
  }
  return webCrypto(key);
}

/** One primitive's cost. */
export interface PrimitiveTiming {
  /** CPU seconds (all threads) per GiB processed. */
  cpu_s_per_gib: number;
  /** MB/s (10^6 bytes) with one call at a time. */
  mb_per_s: number;
}

/** What the program prints. */
export interface PrimitivesReport {
  backend: string;
  chunk_bytes: number;
  bytes: number;
  aes_cbc_encrypt: PrimitiveTiming;
  hmac_sign: PrimitiveTiming;
  hmac_verify: PrimitiveTiming;
  aes_cbc_decrypt: PrimitiveTiming;
  sha256: PrimitiveTiming;
  sha256_webcrypto: PrimitiveTiming;
}

function cpuNow(): number {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

/** Run `op` `count` times, one at a time, after one untimed call. */
async function time(
  count: number,
  chunk: number,
  op: () => Promise<unknown> | unknown,
): Promise<PrimitiveTiming> {
  await op();
  const cpu = cpuNow();
  const start = performance.now();
  for (let i = 0; i < count; i++) await op();
  const wall = (performance.now() - start) / 1000;
  const bytes = count * chunk;
  return { cpu_s_per_gib: (cpuNow() - cpu) / (bytes / GIB), mb_per_s: bytes / 1e6 / wall };
}

function randomBytes(length: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(length);
  for (let offset = 0; offset < length; offset += 65536) {
    crypto.getRandomValues(bytes.subarray(offset, Math.min(length, offset + 65536)));
  }
  return bytes;
}

/** Time every primitive with `backend`'s AES and HMAC. */
export async function measurePrimitives(
  primitives: CipherPrimitives,
  totalBytes: number,
  chunkBytes: number,
): Promise<PrimitivesReport> {
  const count = Math.max(1, Math.round(totalBytes / chunkBytes));
  const plaintext = randomBytes(chunkBytes);
  const iv = randomBytes(16);
  const ciphertext = new Uint8Array(await primitives.encrypt(plaintext, iv));
  // What the MAC covers in a token: version (1), time (8), IV (16), ciphertext.
  const signed = new Uint8Array(25 + ciphertext.length);
  signed.set(iv, 9);
  signed.set(ciphertext, 25);
  const mac = new Uint8Array(await primitives.sign(signed));
  if (!(await primitives.verify(mac, signed))) throw new Error("HMAC did not verify");
  const back = await primitives.decrypt(ciphertext, iv);
  if (back.length !== plaintext.length) throw new Error("AES-CBC did not round-trip");
  const hash = createHash("sha256");
  const report: PrimitivesReport = {
    backend: primitives.name,
    chunk_bytes: chunkBytes,
    bytes: count * chunkBytes,
    aes_cbc_encrypt: await time(count, chunkBytes, () => primitives.encrypt(plaintext, iv)),
    hmac_sign: await time(count, chunkBytes, () => primitives.sign(signed)),
    hmac_verify: await time(count, chunkBytes, () => primitives.verify(mac, signed)),
    aes_cbc_decrypt: await time(count, chunkBytes, () => primitives.decrypt(ciphertext, iv)),
    sha256: await time(count, chunkBytes, () => hash.update(plaintext)),
    sha256_webcrypto: await time(
      count,
      chunkBytes,
      () => crypto.subtle.digest("SHA-256", plaintext),
    ),
  };
  hash.digest();
  return report;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      mib: { type: "string", default: "256" },
      "chunk-kib": { type: "string", default: "1024" },
      backend: { type: "string", default: "code" },
    },
  });
  const key = randomBytes(32);
  const backend = values.backend === "webcrypto"
    ? await webCrypto(key)
    : values.backend === "code"
    ? await codeBackend(key)
    : undefined;
  if (!backend) {
    console.error(`primitives.ts: --backend must be code or webcrypto, not ${values.backend}`);
    Deno.exit(2);
  }
  const report = await measurePrimitives(
    backend,
    Number(values.mib) * MIB,
    Number(values["chunk-kib"]) * 1024,
  );
  console.log(JSON.stringify(report));
}
