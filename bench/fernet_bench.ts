/**
 * Fernet codec throughput: lib/fernet.ts against Python's `cryptography` Fernet (the
 * seed's technology), same chunk sizes, same run, same machine.
 *
 *     deno run -A bench/fernet_bench.ts [--total-mib 256]
 *
 * Prints a table and appends one JSON line per row to bench/results/fernet.jsonl.
 * MB/s counts plaintext bytes, 10^6 bytes per MB; each case runs `--repeat` times
 * (default 3) and the median is reported, since other work on a 2-core machine
 * easily moves a single run by 20%. Python's API takes and returns
 * base64 text, so its figures include base64; the "recon text" rows do the same for
 * a like-for-like comparison. The "reference: copy into new buffer" row assembles a
 * token the obvious way (fresh output buffer, copy the ciphertext in) to show what
 * growing WebCrypto's ciphertext buffer in place (lib/fernet.ts) saves.
 */
import { parseArgs } from "node:util";
import { encodeBase64Url, Fernet, TOKEN_OVERHEAD } from "../lib/fernet.ts";

const MIB = 1024 * 1024;
const CHUNK_SIZES = [1 * MIB, 4 * MIB];
const RESULTS_FILE = new URL("./results/fernet.jsonl", import.meta.url);

interface Row {
  impl: string;
  op: "encrypt" | "decrypt";
  chunkBytes: number;
  inFlight: number;
  totalBytes: number;
  seconds: number;
}

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "total-mib": { type: "string", default: "256" },
    repeat: { type: "string", default: "3" },
  },
});
const repeat = Number(values.repeat);
if (!(Number.isInteger(repeat) && repeat >= 1)) throw new RangeError("--repeat must be >= 1");
const totalBytes = Number(values["total-mib"]) * MIB;
if (!(totalBytes >= 4 * MIB)) throw new RangeError("--total-mib must be at least 4");

function randomBytes(length: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(length);
  for (let offset = 0; offset < length; offset += 65536) {
    crypto.getRandomValues(bytes.subarray(offset, Math.min(length, offset + 65536)));
  }
  return bytes;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/**
 * Runs `op` `count` times with at most `inFlight` running at once, `repeat` times
 * over; returns the median seconds per run.
 */
async function timed(count: number, inFlight: number, op: () => Promise<unknown>) {
  const warmup = Math.min(count, 4);
  for (let i = 0; i < warmup; i++) await op();
  const runs: number[] = [];
  for (let run = 0; run < repeat; run++) {
    let next = 0;
    const start = performance.now();
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        while (next++ < count) await op();
      }),
    );
    runs.push((performance.now() - start) / 1000);
  }
  return median(runs);
}

/** The straightforward assembly lib/fernet.ts avoids: allocate the token, copy ciphertext in. */
async function copyLayoutEncryptor(rawKey: Uint8Array<ArrayBuffer>) {
  const hmacKey = await crypto.subtle.importKey(
    "raw",
    rawKey.slice(0, 16),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const aesKey = await crypto.subtle.importKey("raw", rawKey.slice(16), "AES-CBC", false, [
    "encrypt",
  ]);
  return async (plaintext: Uint8Array<ArrayBuffer>) => {
    const iv = crypto.getRandomValues(new Uint8Array(16));
    const ciphertext = await crypto.subtle.encrypt({ name: "AES-CBC", iv }, aesKey, plaintext);
    const token = new Uint8Array(ciphertext.byteLength + TOKEN_OVERHEAD);
    token[0] = 0x80;
    token.set(iv, 9);
    token.set(new Uint8Array(ciphertext), 25);
    const macOffset = token.length - 32;
    const mac = await crypto.subtle.sign("HMAC", hmacKey, token.subarray(0, macOffset));
    token.set(new Uint8Array(mac), macOffset);
    return token;
  };
}

async function benchRecon(): Promise<Row[]> {
  const rawKey = randomBytes(32);
  const fernet = await Fernet.fromKey(rawKey);
  const copyLayout = await copyLayoutEncryptor(rawKey);
  const rows: Row[] = [];
  const add = async (
    impl: string,
    op: Row["op"],
    chunkBytes: number,
    inFlight: number,
    run: () => Promise<unknown>,
  ) => {
    const count = Math.round(totalBytes / chunkBytes);
    const seconds = await timed(count, inFlight, run);
    rows.push({ impl, op, chunkBytes, inFlight, totalBytes: count * chunkBytes, seconds });
  };
  for (const chunkBytes of CHUNK_SIZES) {
    const plaintext = randomBytes(chunkBytes);
    const token = await fernet.encrypt(plaintext);
    const text = encodeBase64Url(token);
    for (const inFlight of [1, 2]) {
      await add("recon", "encrypt", chunkBytes, inFlight, () => fernet.encrypt(plaintext));
      await add("recon", "decrypt", chunkBytes, inFlight, () => fernet.decrypt(token));
    }
    await add("recon text", "encrypt", chunkBytes, 1, () => fernet.encryptText(plaintext));
    await add("recon text", "decrypt", chunkBytes, 1, () => fernet.decryptText(text));
    await add(
      "reference: copy into new buffer",
      "encrypt",
      chunkBytes,
      1,
      () => copyLayout(plaintext),
    );
  }
  return rows;
}

const PYTHON_BENCH = `
import json, os, statistics, sys, time
import cryptography
from cryptography.fernet import Fernet
job = json.load(sys.stdin)
f = Fernet(Fernet.generate_key())
rows = []
for chunk in job["chunks"]:
    count = max(1, round(job["total"] / chunk))
    data = os.urandom(chunk)
    for _ in range(2):
        token = f.encrypt(data)
        f.decrypt(token)
    runs = {"encrypt": [], "decrypt": []}
    for _ in range(job["repeat"]):
        start = time.perf_counter()
        for _ in range(count):
            token = f.encrypt(data)
        runs["encrypt"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(count):
            f.decrypt(token)
        runs["decrypt"].append(time.perf_counter() - start)
    for op, seconds in runs.items():
        rows.append({"op": op, "chunkBytes": chunk, "count": count,
                     "seconds": statistics.median(seconds)})
version = sys.version.split()[0]
print(json.dumps({"version": f"python {version}, cryptography {cryptography.__version__}",
                  "rows": rows}))
`;

async function benchPython(): Promise<{ version: string; rows: Row[] }> {
  const child = new Deno.Command("python3", {
    args: ["-c", PYTHON_BENCH],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(
    new TextEncoder().encode(JSON.stringify({ chunks: CHUNK_SIZES, total: totalBytes, repeat })),
  );
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  if (code !== 0) {
    throw new Error(
      `python3 benchmark failed (exit ${code}):\n${new TextDecoder().decode(stderr)}`,
    );
  }
  const result = JSON.parse(new TextDecoder().decode(stdout)) as {
    version: string;
    rows: { op: Row["op"]; chunkBytes: number; count: number; seconds: number }[];
  };
  return {
    version: result.version,
    rows: result.rows.map((row) => ({
      impl: "python cryptography",
      op: row.op,
      chunkBytes: row.chunkBytes,
      inFlight: 1,
      totalBytes: row.count * row.chunkBytes,
      seconds: row.seconds,
    })),
  };
}

function mbPerSecond(row: Row): number {
  return row.totalBytes / 1e6 / row.seconds;
}

const recon = await benchRecon();
const python = await benchPython();
const denoVersion = `deno ${Deno.version.deno}`;
const all = [
  ...recon.map((row) => ({ row, runtime: denoVersion })),
  ...python.rows.map((row) => ({ row, runtime: python.version })),
];

const header = ["implementation", "op", "chunk", "in flight", "MiB moved", "seconds", "MB/s"];
const lines = all.map(({ row }) => [
  row.impl,
  row.op,
  `${row.chunkBytes / MIB} MiB`,
  String(row.inFlight),
  String(row.totalBytes / MIB),
  row.seconds.toFixed(2),
  mbPerSecond(row).toFixed(0),
]);
const widths = header.map((title, i) => Math.max(title.length, ...lines.map((l) => l[i].length)));
const format = (cells: string[]) =>
  cells.map((cell, i) => i < 2 ? cell.padEnd(widths[i]) : cell.padStart(widths[i])).join("  ");
console.log(`Fernet codec, ${denoVersion} vs ${python.version}, MB = 10^6 bytes of plaintext`);
console.log(format(header));
console.log(widths.map((w) => "-".repeat(w)).join("  "));
for (const line of lines) console.log(format(line));

const date = new Date().toISOString();
const cpus = navigator.hardwareConcurrency;
const json = all.map(({ row, runtime }) =>
  JSON.stringify({
    bench: "fernet",
    date,
    runtime,
    cpus,
    impl: row.impl,
    op: row.op,
    chunk_bytes: row.chunkBytes,
    in_flight: row.inFlight,
    total_bytes: row.totalBytes,
    repeat,
    seconds: Number(row.seconds.toFixed(4)),
    mb_per_s: Number(mbPerSecond(row).toFixed(1)),
  }) + "\n"
).join("");
await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
await Deno.writeTextFile(RESULTS_FILE, json, { append: true });
console.log(`\nappended ${all.length} rows to bench/results/fernet.jsonl`);
