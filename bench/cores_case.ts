/**
 * bench/run.ts's `cores` case (issue 18): the big upload and download, recon against scp
 * aes128-gcm (and raw TCP file→file, the floor's I/O), each end pinned to its own core as
 * two single-core hosts would be, and both ends on every core (the other cases' setup),
 * interleaved in one run; and from those, how recon's throughput would scale with the
 * cores of each end.
 *
 * Pinning is `taskset -c`: the daemon (recon-server, sshd) is started under it on core
 * 0, so its threads, per-connection processes and job scripts inherit the set; the
 * client (recon-client, scp and the ssh it starts, the raw TCP sender) runs under it on
 * core 1. "shared" runs everything unpinned on every core, as the upload and download
 * cases do.
 *
 * @module
 */
import type { BenchRow } from "./measure.ts";

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

/** Where each end runs. */
export interface CoreMode {
  mode: "pinned" | "shared";
  /** taskset CPU list of the daemon / receiver of raw TCP (undefined: every CPU). */
  server?: string;
  /** taskset CPU list of the client command. */
  client?: string;
  /** For tool names: "pinned (server core 0, client core 1)". */
  label: string;
}

/** The two modes on this machine, or why the pinned one cannot run. */
export function coreModes(cpus = navigator.hardwareConcurrency): CoreMode[] {
  const shared: CoreMode = {
    mode: "shared",
    label: `shared (both ends on cores 0-${cpus - 1})`,
  };
  if (cpus < 2) return [shared];
  return [{
    mode: "pinned",
    server: "0",
    client: "1",
    label: "pinned (server core 0, client core 1)",
  }, shared];
}

/** What a row of this case is, kept in its `extra` (and the JSON). */
export interface CoresTag {
  mode: "pinned" | "shared";
  kind: "recon" | "scp" | "raw";
  direction: "up" | "down";
}

/** The row of this run tagged `tag` that has runs, if any. */
export function findTagged(rows: BenchRow[], tag: CoresTag): BenchRow | undefined {
  return rows.find((r) =>
    r.reps > 0 && r.extra?.cores_mode === tag.mode && r.extra?.cores_kind === tag.kind &&
    r.extra?.direction === tag.direction
  );
}

/** `extra` fields that tag a row. */
export function tagExtra(tag: CoresTag): Record<string, string> {
  return { cores_mode: tag.mode, cores_kind: tag.kind, direction: tag.direction };
}

/** CPU seconds per GiB of one end of a recon row: all threads and the main thread alone. */
export interface EndCost {
  total: number;
  main: number;
}

/** The sender's and receiver's costs of a recon transfer row (medians of its runs). */
export function endCosts(row: BenchRow): { sender: EndCost; receiver: EndCost } | undefined {
  const e = row.extra ?? {};
  const gib = (row.bytes ?? NaN) / GIB;
  const client = { total: row.clientCpuS! / gib, main: Number(e.client_main_cpu_s) / gib };
  const server = { total: row.serverCpuS! / gib, main: Number(e.server_main_cpu_s) / gib };
  if (![client.total, client.main, server.total, server.main].every(Number.isFinite)) {
    return undefined;
  }
  return e.direction === "down"
    ? { sender: server, receiver: client }
    : { sender: client, receiver: server };
}

/** Records in flight per direction (lib/wire/channel.ts DEFAULT_CRYPTO_DEPTH). */
export const CRYPTO_DEPTH = 4;

/**
 * Throughput (MB/s) of a transfer whose ends each have `cores` cores of their own, from
 * the CPU each end spends per GiB: an end moves at most `cores / total` GiB per second,
 * never faster than its main thread (one core, whatever the count) allows, `1 / main`,
 * and the rest (crypto and file I/O off the main thread) spreads over at most
 * {@link CRYPTO_DEPTH} threads; the slower end sets the pace. `efficiency` (measured ÷
 * this bound at one core per end, from the pinned run) carries what the bound leaves
 * out: waiting on the other end, the socket and the disk.
 */
export function scaledMbPerS(
  sender: EndCost,
  receiver: EndCost,
  cores: number,
  efficiency = 1,
): number {
  const end = (cost: EndCost) =>
    Math.max(cost.total / cores, cost.main, (cost.total - cost.main) / CRYPTO_DEPTH);
  const seconds = Math.max(end(sender), end(receiver));
  return (GIB / 1e6 / seconds) * efficiency;
}

/** What limits an end with unlimited cores: its main thread or the records in flight. */
function capBy(costs: { sender: EndCost; receiver: EndCost }): string {
  const [name, cost] =
    Object.entries(costs).map(([name, c]) =>
      [name, c, Math.max(c.main, (c.total - c.main) / CRYPTO_DEPTH)] as const
    ).sort((a, b) => b[2] - a[2])[0];
  return cost.main >= (cost.total - cost.main) / CRYPTO_DEPTH
    ? `the ${name}'s main thread`
    : `the ${name}'s ${CRYPTO_DEPTH} records in flight`;
}

/** Payload MB/s of the links the scaling is compared with. */
export const LINKS: [string, number][] = [["1 GbE", 117], ["10 GbE", 1170]];

/**
 * The scaling printout: per direction, the pinned run's per-end costs, the bound at 1,
 * 2 and 4 cores per end scaled by the pinned run's efficiency, and which links that
 * fills. Lines for the report.
 */
export function scalingLines(rows: BenchRow[]): string[] {
  const lines: string[] = [];
  for (const direction of ["up", "down"] as const) {
    const name = direction === "up" ? "upload" : "download";
    const pinned = findTagged(rows, { mode: "pinned", kind: "recon", direction });
    const shared = findTagged(rows, { mode: "shared", kind: "recon", direction });
    const costs = pinned && endCosts(pinned);
    if (!pinned || !costs) continue;
    const bound1 = scaledMbPerS(costs.sender, costs.receiver, 1);
    const efficiency = pinned.mbPerS! / bound1;
    const f = (x: number) => x.toFixed(2);
    lines.push(
      `  recon ${name}, pinned: sender ${f(costs.sender.total)} CPU-s/GiB (main thread ${
        f(costs.sender.main)
      }), receiver ${f(costs.receiver.total)} (main thread ${f(costs.receiver.main)}); ` +
        `${pinned.mbPerS!.toFixed(0)} MB/s measured = ${
          (efficiency * 100).toFixed(0)
        }% of the 1-core bound ${bound1.toFixed(0)} MB/s`,
    );
    const projected = [1, 2, 4].map((cores) =>
      scaledMbPerS(costs.sender, costs.receiver, cores, efficiency)
    );
    const limit = scaledMbPerS(costs.sender, costs.receiver, Infinity, efficiency);
    lines.push(
      `    cores per end 1 / 2 / 4 / ∞ (main thread and ${CRYPTO_DEPTH} records in flight): ${
        projected.map((x) => x.toFixed(0)).join(" / ")
      } / ${limit.toFixed(0)} MB/s${
        shared ? `; both ends on 2 shared cores measured ${shared.mbPerS!.toFixed(0)} MB/s` : ""
      }`,
    );
    for (const [link, payload] of LINKS) {
      const k = [1, 2, 4, 8].find((cores) =>
        scaledMbPerS(costs.sender, costs.receiver, cores, efficiency) >= payload
      );
      lines.push(
        `    ${link} (${payload} MB/s payload): ${
          k === undefined
            ? limit >= payload
              ? "needs more than 8 cores per end"
              : `not reached: ${capBy(costs)} caps it at ${limit.toFixed(0)} MB/s`
            : `saturated with ${k} core${k > 1 ? "s" : ""} per end`
        }`,
      );
    }
  }
  return lines;
}
