/**
 * Summarise a V8 .cpuprofile (what `deno run --cpu-prof` writes): self time per
 * function, largest first, as a share of the profile and of the busy (non-idle) time.
 *
 *     deno run -A bench/cpuprofile_top.ts FILE.cpuprofile [--top 20]
 *
 * The profile covers the JavaScript main thread only: work Deno runs on other threads
 * (WebCrypto's encrypt/decrypt/sign/verify, some file I/O) shows up here as "(idle)"
 * or as the short op call that hands it over. bench/profile.ts adds per-thread CPU
 * from /proc and, when perf is available, a native profile of every thread.
 *
 * @module
 */
import * as path from "node:path";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

/** One function's self time. */
export interface FunctionTime {
  name: string;
  where: string;
  selfMs: number;
  /** Share of the whole profile. */
  share: number;
  /** Share of busy time (everything but "(idle)"). */
  busyShare: number;
}

/** Self time per function of a .cpuprofile, largest first, and the totals. */
export async function summarise(file: string): Promise<
  { totalMs: number; busyMs: number; functions: FunctionTime[] }
> {
  const profile = JSON.parse(await Deno.readTextFile(file)) as CpuProfile;
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const self = new Map<string, { name: string; where: string; us: number }>();
  let total = 0;
  // timeDeltas[i] is the time before sample i; attribute it to sample i's node.
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byId.get(profile.samples[i]);
    const delta = Math.max(0, profile.timeDeltas[i] ?? 0);
    total += delta;
    if (!node) continue;
    const { functionName, url, lineNumber } = node.callFrame;
    const name = functionName || "(anonymous)";
    const where = url ? `${shortUrl(url)}:${lineNumber + 1}` : "";
    const key = `${name}@${where}`;
    const entry = self.get(key) ?? { name, where, us: 0 };
    entry.us += delta;
    self.set(key, entry);
  }
  const idle = self.get("(idle)@")?.us ?? 0;
  const busy = total - idle;
  const functions = [...self.values()]
    .sort((a, b) => b.us - a.us)
    .map((entry) => ({
      name: entry.name,
      where: entry.where,
      selfMs: entry.us / 1000,
      share: entry.us / total,
      busyShare: entry.name === "(idle)" ? NaN : entry.us / busy,
    }));
  return { totalMs: total / 1000, busyMs: busy / 1000, functions };
}

function shortUrl(url: string): string {
  const file = url.replace(/^file:\/\//, "");
  const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
  if (file.startsWith(root)) return path.relative(root, file);
  if (url.startsWith("ext:")) return url;
  return url.replace(/^.*\/node_modules\//, "npm:");
}

/** The summary as text lines. */
export function formatSummary(
  title: string,
  summary: Awaited<ReturnType<typeof summarise>>,
  top = 20,
): string {
  const lines = [
    `${title}: ${summary.totalMs.toFixed(0)} ms profiled, ${
      summary.busyMs.toFixed(0)
    } ms busy on the JS main thread`,
    `  ${"self ms".padStart(8)}  ${"total".padStart(6)}  ${
      "busy".padStart(6)
    }  function (file:line)`,
  ];
  for (const f of summary.functions.slice(0, top)) {
    lines.push(
      `  ${f.selfMs.toFixed(0).padStart(8)}  ${(f.share * 100).toFixed(1).padStart(5)}%  ${
        Number.isNaN(f.busyShare)
          ? "".padStart(6)
          : `${(f.busyShare * 100).toFixed(1).padStart(5)}%`
      }  ${f.name}${f.where ? `  (${f.where})` : ""}`,
    );
  }
  return lines.join("\n");
}

if (import.meta.main) {
  const args = [...Deno.args];
  const topIndex = args.indexOf("--top");
  const top = topIndex >= 0 ? Number(args.splice(topIndex, 2)[1]) : 20;
  if (args.length === 0) {
    console.error("usage: cpuprofile_top.ts FILE.cpuprofile... [--top N]");
    Deno.exit(2);
  }
  for (const file of args) {
    console.log(formatSummary(path.basename(file), await summarise(file), top) + "\n");
  }
}
