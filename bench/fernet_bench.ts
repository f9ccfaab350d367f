/**
 * Fernet codec throughput: lib/crypto/fernet.ts against Python's `cryptography` Fernet (the
 * seed's technology), same chunk sizes, same run, same machine.
 *
 *     deno run -A bench/fernet_bench.ts [--total-mib 256] [--repeat 3]
 *
 * Prints a table and appends one JSON line per row to bench/results/fernet.jsonl.
 * MB/s counts plaintext bytes, 10^6 bytes per MB. Each case moves --total-mib per
 * run; runs are repeated and the median kept, because other work on a 2-core machine
 * easily moves a single run by 20%. "CPU s/GiB" is process CPU time (all threads),
 * steadier than wall time under such load.
 *
 * Python's API takes and returns base64 text, so its figures include base64; the
 * "recon text" rows do the same for a like-for-like comparison. The "reference: copy
 * into new buffer" row assembles a token the obvious way (fresh output buffer, copy
 * the ciphertext in) to show what growing WebCrypto's ciphertext buffer in place
 * (lib/crypto/fernet.ts) saves.
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { encodeBase64Url } from "../lib/crypto/base64url.ts";
import { Fernet } from "../lib/crypto/fernet.ts";
import { TOKEN_OVERHEAD } from "../lib/crypto/fernet_token.ts";

const MIB = 1024 * 1024;
const CHUNK_SIZES = [1 * MIB, 4 * MIB];
const RESULTS_FILE = new URL("./results/fernet.jsonl", import.meta.url);

interface Row {
  impl: string;
  op: "encrypt" | "decrypt";
  chunkBytes: number;
  inFlight: number;
  totalBytes: number;
  /** Median wall-clock seconds for totalBytes. */
  seconds: number;
  /** Median CPU seconds (user + system, all threads) for totalBytes. */
  cpuSeconds: number;
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
const totalMib = Number(values["total-mib"]);
if (!(Number.isInteger(totalMib) && totalMib > 0 && totalMib % 4 === 0)) {
  throw new RangeError("--total-mib must be a positive multiple of 4 (the largest chunk)");
}
const totalBytes = totalMib * MIB;

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
 * Runs `op` `count` times with at most `inFlight` running at once; returns wall-clock
 * and CPU seconds. CPU time covers WebCrypto's worker threads too and is less
 * disturbed by other load on the machine than wall time.
 */
async function timeOnce(count: number, inFlight: number, op: () => Promise<unknown>) {
  let next = 0;
  const start = performance.now();
  const startCpu = process.cpuUsage();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next++ < count) await op();
    }),
  );
  const used = process.cpuUsage(startCpu);
  return {
    seconds: (performance.now() - start) / 1000,
    cpuSeconds: (used.user + used.system) / 1e6,
  };
}

/** The straightforward assembly lib/crypto/fernet.ts avoids: allocate the token, copy ciphertext in. */
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

interface Case {
  impl: string;
  op: Row["op"];
  chunkBytes: number;
  inFlight: number;
  run: () => Promise<unknown>;
}

/**
 * Every case once per round, `repeat` rounds, median per case: interleaving spreads
 * drift (heap growth, other load) over all cases instead of favouring later ones.
 */
async function benchRecon(): Promise<Row[]> {
  const rawKey = randomBytes(32);
  const fernet = await Fernet.fromKey(rawKey);
  const copyLayout = await copyLayoutEncryptor(rawKey);
  const cases: Case[] = [];
  for (const chunkBytes of CHUNK_SIZES) {
    const plaintext = randomBytes(chunkBytes);
    const token = await fernet.encrypt(plaintext);
    const text = encodeBase64Url(token);
    const add = (impl: string, op: Row["op"], inFlight: number, run: Case["run"]) =>
      cases.push({ impl, op, chunkBytes, inFlight, run });
    for (const inFlight of [1, 2]) {
      add("recon", "encrypt", inFlight, () => fernet.encrypt(plaintext));
      add("recon", "decrypt", inFlight, () => fernet.decrypt(token));
    }
    add("recon text", "encrypt", 1, () => fernet.encryptText(plaintext));
    add("recon text", "decrypt", 1, () => fernet.decryptText(text));
    add("reference: copy into new buffer", "encrypt", 1, () => copyLayout(plaintext));
  }
  for (const { run } of cases) for (let i = 0; i < 4; i++) await run();
  const wall = cases.map((): number[] => []);
  const cpu = cases.map((): number[] => []);
  for (let round = 0; round < repeat; round++) {
    for (const [index, { chunkBytes, inFlight, run }] of cases.entries()) {
      const { seconds, cpuSeconds } = await timeOnce(totalBytes / chunkBytes, inFlight, run);
      wall[index].push(seconds);
      cpu[index].push(cpuSeconds);
    }
  }
  return cases.map(({ impl, op, chunkBytes, inFlight }, index) => ({
    impl,
    op,
    chunkBytes,
    inFlight,
    totalBytes: totalBytes - (totalBytes % chunkBytes),
    seconds: median(wall[index]),
    cpuSeconds: median(cpu[index]),
  }));
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
    wall = {"encrypt": [], "decrypt": []}
    cpu = {"encrypt": [], "decrypt": []}
    for _ in range(job["repeat"]):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            token = f.encrypt(data)
        wall["encrypt"].append(time.perf_counter() - start)
        cpu["encrypt"].append(time.process_time() - start_cpu)
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(count):
            f.decrypt(token)
        wall["decrypt"].append(time.perf_counter() - start)
        cpu["decrypt"].append(time.process_time() - start_cpu)
    for op in ("encrypt", "decrypt"):
        rows.append({"op": op, "chunkBytes": chunk, "count": count,
                     "seconds": statistics.median(wall[op]),
                     "cpuSeconds": statistics.median(cpu[op])})
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
    rows: {
      op: Row["op"];
      chunkBytes: number;
      count: number;
      seconds: number;
      cpuSeconds: number;
    }[];
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
      cpuSeconds: row.cpuSeconds,
    })),
  };
}

function mbPerSecond(row: Row): number {
  return row.totalBytes / 1e6 / row.seconds;
}

function cpuSecondsPerGiB(row: Row): number {
  return row.cpuSeconds / (row.totalBytes / (1024 * MIB));
}

const recon = await benchRecon();
const python = await benchPython();
const denoVersion = `deno ${Deno.version.deno}`;
const all = [
  ...recon.map((row) => ({ row, runtime: denoVersion })),
  ...python.rows.map((row) => ({ row, runtime: python.version })),
];

const header = [
  "implementation",
  "op",
  "chunk",
  "in flight",
  "MiB moved",
  "seconds",
  "MB/s",
  "CPU s/GiB",
];
const lines = all.map(({ row }) => [
  row.impl,
  row.op,
  `${row.chunkBytes / MIB} MiB`,
  String(row.inFlight),
  String(row.totalBytes / MIB),
  row.seconds.toFixed(2),
  mbPerSecond(row).toFixed(0),
  cpuSecondsPerGiB(row).toFixed(2),
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
    cpu_seconds: Number(row.cpuSeconds.toFixed(4)),
    cpu_s_per_gib: Number(cpuSecondsPerGiB(row).toFixed(3)),
  }) + "\n"
).join("");
await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
await Deno.writeTextFile(RESULTS_FILE, json, { append: true });
console.log(`\nappended ${all.length} rows to bench/results/fernet.jsonl`);
