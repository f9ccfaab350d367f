/**
 * bench/run.ts's `floor` case and printout (issue 18): the CPU both ends of a transfer
 * must spend on the chosen primitives for the bytes each one processes, each primitive
 * timed alone in the same run (bench/primitives.ts, a process of its own), plus raw TCP
 * file→file (bench/raw_tcp.ts: read a file, send, receive, write a file, no protocol),
 * and recon's ratio to it.
 *
 * - sender = AES-128-CBC encrypt + HMAC sign + SHA-256 of the file + raw TCP's sender;
 * - receiver = HMAC verify + AES-128-CBC decrypt (+ SHA-256 when the receiver hashes a
 *   fresh transfer; see {@link receiverHashes}) + raw TCP's receiver.
 *
 * Each part is the least CPU it needed over the run's repeats (a lower bound; other work
 * only adds). Floor MB/s: both ends sharing the machine's cores, cores ÷ (sender + receiver) CPU-s
 * per byte; each end pinned to its own core, 1 ÷ max(sender, receiver). It is a CPU
 * bound: no waiting, no protocol, no start-up beyond raw TCP's own deno processes.
 *
 * @module
 */
import * as path from "node:path";
import { type CoresTag, findTagged } from "./cores_case.ts";
import { BENCH_DIR, type BenchRow, ROOT, runMeasured } from "./measure.ts";
import type { PrimitivesReport, PrimitiveTiming } from "./primitives.ts";

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

/** The primitives in the order the report lists them. */
const PRIMITIVES = [
  ["aes_cbc_encrypt", "AES-128-CBC encrypt"],
  ["hmac_sign", "HMAC-SHA256 sign"],
  ["hmac_verify", "HMAC-SHA256 verify"],
  ["aes_cbc_decrypt", "AES-128-CBC decrypt"],
  ["sha256", "SHA-256 (node:crypto, the file's hash)"],
  ["sha256_webcrypto", "SHA-256 (WebCrypto digest)"],
] as const;

type PrimitiveKey = (typeof PRIMITIVES)[number][0];

/**
 * Whether recon's receiver hashes a fresh (offset 0) transfer. Issue 18's lever 1 makes
 * it rely on the authenticated, sequenced records and FILE_END's hash instead, with
 * VERIFY_AFTER_WRITE to re-read the file on request; the option's presence in the
 * schema marks that code. `--floor-receiver-hash yes|no` overrides this.
 */
export async function receiverHashes(override?: string): Promise<boolean> {
  if (override === "yes" || override === "no") return override === "yes";
  const schema = await Deno.readTextFile(path.join(ROOT, "lib", "opts", "schema.ts"));
  return !schema.includes("VERIFY_AFTER_WRITE");
}

/**
 * Run bench/primitives.ts `repeat` times per backend, alternating. Each primitive's
 * least CPU and best MB/s over the runs: a floor is a lower bound, and other work on the
 * machine only ever adds to a run's figures.
 */
export async function measurePrimitives(
  work: string,
  repeat: number,
  mib: number,
  log: (line: string) => void,
): Promise<{ code: PrimitivesReport; webcrypto: PrimitivesReport }> {
  const runs: Record<"code" | "webcrypto", PrimitivesReport[]> = { code: [], webcrypto: [] };
  for (let rep = 1; rep <= repeat; rep++) {
    for (const backend of ["code", "webcrypto"] as const) {
      log(`floor: primitives, ${backend} backend (run ${rep}/${repeat})`);
      const usage = await runMeasured(work, Deno.execPath(), [
        "run",
        "-A",
        path.join(BENCH_DIR, "primitives.ts"),
        "--mib",
        String(mib),
        "--backend",
        backend,
      ], { label: `primitives ${backend}`, timeoutMs: 600_000 });
      runs[backend].push(JSON.parse(usage.stdout.trim().split("\n").at(-1)!));
    }
  }
  const combine = (reports: PrimitivesReport[]): PrimitivesReport => {
    const out = { ...reports[0] };
    for (const [key] of PRIMITIVES) {
      out[key] = {
        cpu_s_per_gib: Math.min(...reports.map((r) => r[key].cpu_s_per_gib)),
        mb_per_s: Math.max(...reports.map((r) => r[key].mb_per_s)),
      };
    }
    return out;
  };
  return { code: combine(runs.code), webcrypto: combine(runs.webcrypto) };
}

/** Table rows for the primitives (case "floor: primitives alone"). */
export function primitiveRows(
  reports: { code: PrimitivesReport; webcrypto: PrimitivesReport },
  repeat: number,
): BenchRow[] {
  const rows: BenchRow[] = [];
  const same = reports.code.backend === reports.webcrypto.backend;
  for (const [which, report] of Object.entries(reports)) {
    if (which === "webcrypto" && same) continue;
    for (const [key, name] of PRIMITIVES) {
      if (which === "webcrypto" && key.startsWith("sha256")) continue;
      const t: PrimitiveTiming = report[key];
      rows.push({
        case: "floor: primitives alone, 1 MiB chunks",
        tool: key.startsWith("sha256")
          ? name
          : `${name} (${report.backend}${which === "code" ? ", the code's backend" : ""})`,
        reps: repeat,
        bytes: report.bytes,
        mbPerS: t.mb_per_s,
        cpuSPerGiB: t.cpu_s_per_gib,
        note: "one call at a time, own process; CPU = all its threads; least over the runs",
        extra: { primitive: key, backend: report.backend, code_backend: which === "code" },
      });
    }
  }
  return rows;
}

/** CPU-s/GiB of each end of the floor, and the parts. */
export interface Floor {
  backend: string;
  receiverHashes: boolean;
  mode: "pinned" | "shared";
  sender: number;
  receiver: number;
  senderCrypto: number;
  receiverCrypto: number;
  senderIo: number;
  receiverIo: number;
  /** Floor MB/s in this mode. */
  mbPerS: number;
  cores: number;
}

/** The floor of `mode` from the code backend's primitives and that mode's raw TCP row. */
export function computeFloor(
  report: PrimitivesReport,
  raw: BenchRow,
  mode: "pinned" | "shared",
  hashes: boolean,
  cores = navigator.hardwareConcurrency,
): Floor {
  const c = (key: PrimitiveKey) => report[key].cpu_s_per_gib;
  const gib = raw.bytes! / GIB;
  // The least each end of raw TCP needed over the runs (the floor is a lower bound).
  const least = (runs: unknown, median: number) =>
    Array.isArray(runs) && runs.length > 0 ? Math.min(...runs.map(Number)) : median;
  const senderCrypto = c("aes_cbc_encrypt") + c("hmac_sign") + c("sha256");
  const receiverCrypto = c("hmac_verify") + c("aes_cbc_decrypt") + (hashes ? c("sha256") : 0);
  const senderIo = least(raw.extra?.client_cpu_s_runs, raw.clientCpuS!) / gib;
  const receiverIo = least(raw.extra?.server_cpu_s_runs, raw.serverCpuS!) / gib;
  const sender = senderCrypto + senderIo;
  const receiver = receiverCrypto + receiverIo;
  const mbPerS = mode === "pinned"
    ? GIB / 1e6 / Math.max(sender, receiver)
    : (cores * GIB) / 1e6 / (sender + receiver);
  return {
    backend: report.backend,
    receiverHashes: hashes,
    mode,
    sender,
    receiver,
    senderCrypto,
    receiverCrypto,
    senderIo,
    receiverIo,
    mbPerS,
    cores,
  };
}

/** Raw TCP file→file of `mode` (the cores case), or the upload case's for "shared". */
export function rawRow(rows: BenchRow[], mode: "pinned" | "shared"): BenchRow | undefined {
  return findTagged(rows, { mode, kind: "raw", direction: "up" }) ??
    (mode === "shared"
      ? rows.find((r) => r.reps > 0 && r.tool.startsWith("raw TCP file→file"))
      : undefined);
}

/** recon's row of `mode` and direction (the cores case; for "shared" else upload/download). */
export function reconRow(
  rows: BenchRow[],
  mode: "pinned" | "shared",
  direction: "up" | "down",
): BenchRow | undefined {
  const tag: CoresTag = { mode, kind: "recon", direction };
  return findTagged(rows, tag) ??
    (mode === "shared"
      ? rows.find((r) =>
        r.reps > 0 && !r.extra?.cores_mode &&
        (direction === "up"
          ? r.case.startsWith("upload") && r.tool === "recon upload"
          : r.case.startsWith("download") && r.tool === "recon result download")
      )
      : undefined);
}

/** The floor printout: per mode, per end and total, MB/s, and recon's ratio to it. */
export function floorLines(floors: Floor[], rows: BenchRow[]): string[] {
  const f = (x: number) => x.toFixed(2);
  const lines: string[] = [];
  for (const floor of floors) {
    lines.push(
      `  ${
        floor.mode === "pinned"
          ? "each end on its own core"
          : `both ends on ${floor.cores} shared cores`
      }` +
        ` (${floor.backend}; receiver ${floor.receiverHashes ? "hashes" : "trusts the MACs"}):` +
        ` sender ${f(floor.sender)} CPU-s/GiB (crypto+hash ${f(floor.senderCrypto)}, raw TCP ${
          f(floor.senderIo)
        }), receiver ${f(floor.receiver)} (crypto${floor.receiverHashes ? "+hash" : ""} ${
          f(floor.receiverCrypto)
        }, raw TCP ${f(floor.receiverIo)}), total ${f(floor.sender + floor.receiver)}; floor ${
          floor.mbPerS.toFixed(0)
        } MB/s`,
    );
    for (const direction of ["up", "down"] as const) {
      const recon = reconRow(rows, floor.mode, direction);
      if (!recon) continue;
      const gib = recon.bytes! / GIB;
      const [senderCpu, receiverCpu] = direction === "up"
        ? [recon.clientCpuS! / gib, recon.serverCpuS! / gib]
        : [recon.serverCpuS! / gib, recon.clientCpuS! / gib];
      lines.push(
        `    recon ${direction === "up" ? "upload" : "download"}: ${
          recon.mbPerS!.toFixed(0)
        } MB/s = ${(recon.mbPerS! / floor.mbPerS).toFixed(2)} of the floor; sender ${
          f(senderCpu)
        } CPU-s/GiB (${(senderCpu / floor.sender).toFixed(2)}× floor), receiver ${
          f(receiverCpu)
        } (${(receiverCpu / floor.receiver).toFixed(2)}×), both ${f(recon.cpuSPerGiB!)} (${
          (recon.cpuSPerGiB! / (floor.sender + floor.receiver)).toFixed(2)
        }×)`,
      );
    }
  }
  return lines;
}

/** JSON rows of the floor (case "floor"), so each printout can be traced to its numbers. */
export function floorRow(floor: Floor): BenchRow {
  return {
    case: "floor: CPU both ends must spend",
    tool: `floor, ${floor.mode === "pinned" ? "each end on its own core" : "shared cores"}`,
    reps: 1,
    mbPerS: floor.mbPerS,
    cpuSPerGiB: floor.sender + floor.receiver,
    note: `sender ${floor.sender.toFixed(2)}, receiver ${
      floor.receiver.toFixed(2)
    } CPU-s/GiB; ${floor.backend}; receiver ${floor.receiverHashes ? "hashes" : "trusts the MACs"}`,
    extra: {
      floor_mode: floor.mode,
      backend: floor.backend,
      receiver_hashes: floor.receiverHashes,
      sender_cpu_s_per_gib: floor.sender,
      receiver_cpu_s_per_gib: floor.receiver,
      sender_crypto_cpu_s_per_gib: floor.senderCrypto,
      receiver_crypto_cpu_s_per_gib: floor.receiverCrypto,
      sender_io_cpu_s_per_gib: floor.senderIo,
      receiver_io_cpu_s_per_gib: floor.receiverIo,
    },
  };
}
