/**
 * `make bench` / `make bench-quick`: recon against the tools a site would otherwise
 * use, side by side, in one run, on 127.0.0.1 (issue 6, docs/PERFORMANCE.md).
 *
 *     deno run -A bench/run.ts --size-mib 1024     # make bench
 *     deno run -A bench/run.ts --size-mib 64       # make bench-quick
 *
 * Options:
 *   --size-mib N        the big transfer (default 1024)
 *   --concurrent-mib N  each of the 4 concurrent uploads (default size/4: 256, or 16 quick)
 *   --repeat N          runs per case, median reported (default 3)
 *   --tiny-repeat N     tiny-job round trips per tool (default 20)
 *   --status-clients N  concurrent --server-status clients (default 50)
 *   --knob-mib N        bytes per channel-knob run (default min(size, 512))
 *   --cases LIST        comma list of: upload,download,tiny,concurrent,status,startup,knobs,
 *                       store,slurm,metrics,pacs,floor,cores,backend (default all)
 *   --floor-mib N       bytes per primitive per run in the floor case (default min(size, 256))
 *   --floor-receiver-hash yes|no  whether the floor's receiver hashes (default: as the code)
 *   --store-jobs N      jobs queued behind a blocked one in the store case (default 1000)
 *   --slurm-repeat N    tiny-job round trips per executor in the slurm case (default 20)
 *   --no-record         do not append to bench/results/
 *
 * Every case runs recon and its peers interleaved (recon, scp, …, recon, scp, …) so
 * drift on a shared 2-core machine hits them alike. CPU is user+sys of both ends;
 * RSS is the peak (VmHWM) of each end: see bench/measure.ts for how each is read.
 * MB = 10^6 bytes. Results: a table on stdout, one JSON line per row appended to
 * bench/results/<date>.jsonl.
 */
import * as path from "node:path";
import { createHash } from "node:crypto";
import { parseArgs } from "node:util";
import { connectToServer } from "../lib/client/connect.ts";
import { getServerStatus } from "../lib/client/query.ts";
import { PROVENANCE_FILE } from "../lib/server/provenance.ts";
import { decodeKey, generateKey, keyId } from "../lib/crypto/keys.ts";
import type { Channel } from "../lib/wire/channel.ts";
import { type JobInfo, parseServerMessage, type ServerMessage } from "../lib/wire/protocol.ts";
import { sendFileFrom } from "../lib/wire/file_send.ts";
import {
  BENCH_DIR,
  type BenchRow,
  type CommandUsage,
  DaemonMeter,
  type DaemonUsage,
  ensureProcAccess,
  liveProcesses,
  MainThreadSampler,
  makeFile,
  max,
  median,
  otherCpu,
  peakRssKiB,
  percentile,
  ROOT,
  rssKiB,
  runMeasured,
  sleep,
  snapshotProcesses,
  spawnMeasured,
  stopAll,
  track,
} from "./measure.ts";
import { CLIENT_BIN, ReconServerProcess, runClient } from "./recon_server.ts";
import {
  AMPLIFIED_INTERVAL_MS,
  idleCpuRate,
  MONITOR_PATHS,
  monitorPort,
  probe,
  PROBE_COUNT,
  probeSummary,
  SCRAPE_INTERVAL_MS,
  scrapedRun,
  scrapedSummary,
  type ScrapeResult,
} from "./metrics_case.ts";
import { type Sshd, startSshd } from "./sshd.ts";
import { casePacs } from "./pacs_case.ts";
import {
  type CoreMode,
  coreModes,
  type CoresTag,
  findTagged,
  scalingLines,
  tagExtra,
} from "./cores_case.ts";
import {
  computeFloor,
  type Floor,
  floorLines,
  floorRow,
  measurePrimitives,
  primitiveRows,
  rawRow,
  receiverHashes,
  reconRow,
} from "./floor_case.ts";

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
const ALL_CASES = [
  "upload",
  "download",
  "tiny",
  "concurrent",
  "status",
  "startup",
  "knobs",
  "store",
  "slurm",
  "metrics",
  "pacs",
  "floor",
  "cores",
  "backend",
];

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "size-mib": { type: "string", default: "1024" },
    "concurrent-mib": { type: "string" },
    repeat: { type: "string", default: "3" },
    "tiny-repeat": { type: "string", default: "20" },
    "status-clients": { type: "string", default: "50" },
    "knob-mib": { type: "string" },
    "store-jobs": { type: "string", default: "1000" },
    "slurm-repeat": { type: "string", default: "20" },
    "floor-mib": { type: "string" },
    "floor-receiver-hash": { type: "string" },
    cases: { type: "string", default: ALL_CASES.join(",") },
    "no-record": { type: "boolean", default: false },
  },
});
const sizeMiB = Number(values["size-mib"]);
const SIZE = sizeMiB * MIB;
const CONCURRENT_SIZE = Number(values["concurrent-mib"] ?? Math.max(1, sizeMiB / 4)) * MIB;
const REPEAT = Number(values.repeat);
const TINY_REPEAT = Number(values["tiny-repeat"]);
const STATUS_CLIENTS = Number(values["status-clients"]);
const KNOB_SIZE = Number(values["knob-mib"] ?? Math.min(sizeMiB, 512)) * MIB;
const STORE_JOBS = Number(values["store-jobs"]);
const SLURM_REPEAT = Number(values["slurm-repeat"]);
const FLOOR_MIB = Number(values["floor-mib"] ?? Math.min(sizeMiB, 256));
await ensureProcAccess();
const CASES = new Set(values.cases.split(",").map((c) => c.trim()));
for (const c of CASES) if (!ALL_CASES.includes(c)) throw new Error(`unknown case ${c}`);
if (!(SIZE >= MIB && REPEAT >= 1 && TINY_REPEAT >= 1)) throw new Error("bad sizes or repeats");
/** Per-command time limit: generous even at 20 MB/s. */
const TIMEOUT_MS = Math.max(60_000, (SIZE / 20e6) * 1000);
const DENO = Deno.execPath();

// ---------------------------------------------------------------------------
// Rows.

type Row = BenchRow;

const rows: Row[] = [];
/** A run during which other processes used >10% of the CPUs is run again, this often. */
const RETRIES_WHEN_DISTURBED = 3;
/** Time the whole bench may spend re-running disturbed runs and waiting for quiet. */
let retryBudgetMs = 300_000;
let machineBusyAtStart: number | undefined;
const runId = new Date().toISOString();
const log = (line: string) => console.error(`[bench] ${line}`);

/** One measured run of a transfer: both ends. */
interface Sample {
  wallS: number;
  clientCpuS: number;
  serverCpuS: number;
  clientRssKiB: number;
  serverRssKiB: number;
  extra?: Record<string, number>;
}

const mb = (kib: number) => (kib * 1024) / 1e6;

function transferRow(
  caseName: string,
  tool: string,
  bytes: number,
  samples: Sample[],
  note?: string,
): Row {
  const wall = median(samples.map((s) => s.wallS));
  const cpu = median(samples.map((s) => s.clientCpuS + s.serverCpuS));
  const extra: Record<string, unknown> = {
    wall_s_runs: samples.map((s) => round(s.wallS, 3)),
    mb_per_s_runs: samples.map((s) => round(bytes / 1e6 / s.wallS, 1)),
  };
  for (const key of Object.keys(samples[0]?.extra ?? {})) {
    extra[key] = median(samples.map((s) => s.extra![key]));
  }
  extra.foreign_cpu_s_runs = samples.map((s) => s.extra?.foreign_cpu_s ?? 0);
  extra.client_cpu_s_runs = samples.map((s) => round(s.clientCpuS, 3));
  extra.server_cpu_s_runs = samples.map((s) => round(s.serverCpuS, 3));
  extra.kernel_thread_cpu_s_runs = samples.map((s) => s.extra?.kernel_thread_cpu_s ?? 0);
  const disturbedRuns = samples.filter(disturbed).length;
  if (disturbedRuns > 0) {
    note = `${note ?? ""}; DISTURBED: ${disturbedRuns} run(s) shared the CPUs with other work`;
  }
  return {
    case: caseName,
    tool,
    reps: samples.length,
    bytes,
    wallS: wall,
    mbPerS: bytes / 1e6 / wall,
    cpuSPerGiB: cpu / (bytes / GIB),
    clientCpuS: median(samples.map((s) => s.clientCpuS)),
    serverCpuS: median(samples.map((s) => s.serverCpuS)),
    clientRssMB: mb(max(samples.map((s) => s.clientRssKiB))),
    serverRssMB: mb(max(samples.map((s) => s.serverRssKiB))),
    note,
    extra,
  };
}

function failedRow(caseName: string, tool: string, reason: string): Row {
  return { case: caseName, tool, reps: 0, note: `NOT RUN: ${reason}` };
}

/** Busy CPU seconds of the whole machine since boot (all CPUs), from /proc/stat. */
function systemCpuSeconds(): number {
  const line = Deno.readTextFileSync("/proc/stat").split("\n")[0];
  const [user, nice, system, _idle, _iowait, irq, softirq, steal] = line.split(/\s+/).slice(1)
    .map(Number);
  return (user + nice + system + irq + softirq + steal) / 100;
}

/** Wait (at most `maxMs`) until the machine is quiet: under 15% busy over 2 s. */
async function waitForQuiet(maxMs: number): Promise<number> {
  const deadline = Date.now() + maxMs;
  while (true) {
    const before = systemCpuSeconds();
    await sleep(2000);
    const busy = (systemCpuSeconds() - before) / 2 / navigator.hardwareConcurrency;
    if (busy < 0.15 || Date.now() > deadline) return busy;
    log(`the machine is ${(busy * 100).toFixed(0)}% busy with other work; waiting for quiet`);
  }
}

function round(value: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

function sample(client: CommandUsage, server: DaemonUsage | CommandUsage, wallS?: number): Sample {
  return {
    wallS: wallS ?? client.wallSeconds,
    clientCpuS: client.cpuSeconds,
    serverCpuS: server.cpuSeconds,
    clientRssKiB: client.peakRssKiB,
    serverRssKiB: server.peakRssKiB,
  };
}

// ---------------------------------------------------------------------------
// Setup shared by the cases.

const work = await Deno.makeTempDir({ prefix: "recon-bench-" });
const SRC = path.join(work, "source.bin");
const TINY = path.join(work, "tiny.bin");
let sshd: Sshd | string | undefined;
/** The cores case's sshd on the server's core. */
let pinnedSshd: Sshd | string | undefined;
const servers: ReconServerProcess[] = [];

async function cleanup(): Promise<void> {
  for (const server of servers) await server.stop().catch(() => {});
  if (sshd && typeof sshd !== "string") await sshd.stop().catch(() => {});
  if (pinnedSshd && typeof pinnedSshd !== "string") await pinnedSshd.stop().catch(() => {});
  await stopAll();
  await Deno.remove(work, { recursive: true }).catch(() => {});
}

let interrupted = false;
const onSignal = () => {
  if (interrupted) return;
  interrupted = true;
  log("interrupted: stopping every process and removing the work directory");
  cleanup().finally(() => Deno.exit(130));
};
Deno.addSignalListener("SIGINT", onSignal);
Deno.addSignalListener("SIGTERM", onSignal);

async function startServer(
  name: string,
  script: string,
  extra?: Record<string, string | number>,
  env?: Record<string, string>,
  cpus?: string,
) {
  const server = await ReconServerProcess.start({
    dir: path.join(work, name),
    script,
    extra,
    env,
    cpus,
  });
  servers.push(server);
  return server;
}

async function stopServer(server: ReconServerProcess): Promise<void> {
  await server.stop();
  servers.splice(servers.indexOf(server), 1);
}

async function freshDir(...parts: string[]): Promise<string> {
  const dir = path.join(work, ...parts);
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await Deno.mkdir(dir, { recursive: true });
  return dir;
}

async function fileSize(file: string): Promise<number> {
  return (await Deno.stat(file)).size;
}

/** Sum of the sizes of every regular file under `dir`. */
async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  for await (const entry of Deno.readDir(dir)) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory) total += await treeBytes(full);
    else if (entry.isFile) total += (await Deno.stat(full)).size;
  }
  return total;
}

// ---------------------------------------------------------------------------
// Runners for one transfer with each tool.

/** How a recon transfer's client runs. */
interface ClientRun {
  env?: Record<string, string>;
  /** Called as soon as the client has exited, before the server settles. */
  clientDone?: () => Promise<void>;
  /** taskset CPU list of the client (the cores case). */
  cpus?: string;
  /** Also read each end's main-thread CPU (extra client_main_cpu_s, server_main_cpu_s). */
  mainThread?: boolean;
}

/** runClient with `how`'s CPUs and, if asked, a main-thread sampler of the client. */
async function measuredClient(
  server: ReconServerProcess,
  args: string[],
  how: ClientRun,
): Promise<{ client: CommandUsage; clientMainS?: number }> {
  let sampler: MainThreadSampler | undefined;
  try {
    const client = await runClient(work, server, args, {
      timeoutMs: TIMEOUT_MS,
      env: how.env,
      cpus: how.cpus,
      onSpawn: how.mainThread ? (pid) => (sampler = new MainThreadSampler(pid)) : undefined,
    });
    return { client, clientMainS: sampler?.stop() };
  } finally {
    sampler?.stop();
  }
}

function withMainThread(s: Sample, clientMainS: number | undefined, usage: DaemonUsage): Sample {
  if (clientMainS === undefined) return s;
  s.extra = {
    ...s.extra,
    client_main_cpu_s: clientMainS,
    server_main_cpu_s: usage.mainThreadCpuSeconds,
  };
  return s;
}

async function reconUpload(
  server: ReconServerProcess,
  file: string,
  bytes: number,
  how: ClientRun = {},
) {
  const dl = await freshDir("dl");
  const meter = new DaemonMeter(server.pid);
  meter.start();
  const { client, clientMainS } = await measuredClient(
    server,
    ["--files", file, "--download-dir", dl, "--quiet"],
    how,
  );
  await how.clientDone?.();
  await meter.settle();
  const usage = meter.stop();
  await Deno.remove(dl, { recursive: true });
  void bytes;
  return withMainThread(sample(client, usage), clientMainS, usage);
}

async function reconDownload(server: ReconServerProcess, bytes: number, how: ClientRun = {}) {
  const dl = await freshDir("dl");
  const timing = path.join(work, "script-timing.txt");
  const meter = new DaemonMeter(server.pid);
  meter.start();
  const { client, clientMainS } = await measuredClient(server, [
    "--files",
    TINY,
    "--download-dir",
    dl,
    "--quiet",
    "--recon-options",
    JSON.stringify({ source: SRC, timing }),
  ], how);
  await meter.settle();
  const usage = meter.stop();
  const got = await resultBytes(dl);
  await Deno.remove(dl, { recursive: true });
  if (got !== bytes) throw new Error(`recon download delivered ${got} bytes, expected ${bytes}`);
  const [start, end] = (await Deno.readTextFile(timing)).trim().split(" ").map(Number);
  const scriptS = (end - start) / 1e9;
  const s = sample(client, usage, client.wallSeconds - scriptS);
  s.extra = { script_s: scriptS };
  return withMainThread(s, clientMainS, usage);
}

function sshTarget(server: Sshd, remotePath: string): string {
  return `${server.user}@127.0.0.1:${remotePath}`;
}

async function scpTransfer(
  server: Sshd,
  from: string,
  to: string,
  received: string,
  cpus?: string,
) {
  const meter = new DaemonMeter(server.pid);
  meter.start();
  const client = await runMeasured(work, "scp", [...server.scpArgs, from, to], {
    label: "scp",
    timeoutMs: TIMEOUT_MS,
    cpus,
  });
  await meter.settle(5000, true);
  const usage = meter.stop();
  const size = await fileSize(received);
  await Deno.remove(received);
  return { sample: sample(client, usage), size };
}

/** Start a receiver that prints "PORT n", then run the sender; both measured. */
/** What a peer that reports its transfer phase printed: [seconds, cpu seconds]. */
interface Transfer {
  receiver?: number[];
  sender?: number[];
}

/** One end of {@link pairTransfer}: its command, environment and CPUs (taskset). */
interface PeerCommand {
  program: string;
  args: string[];
  env?: Record<string, string>;
  cpus?: string;
}

async function pairTransfer(
  receiver: PeerCommand,
  sender: (port: number) => PeerCommand,
  label: string,
): Promise<{ sample: Sample; received: number; transfer: Transfer }> {
  const { promise: portLine, resolve: resolvePort } = Promise.withResolvers<number>();
  let received = -1;
  const transfer: Transfer = {};
  const recv = spawnMeasured(work, receiver.program, receiver.args, {
    env: receiver.env,
    cpus: receiver.cpus,
    label: `${label} receiver`,
    timeoutMs: TIMEOUT_MS,
    onLine: (line) => {
      const port = /^PORT (\d+)/.exec(line);
      if (port) resolvePort(Number(port[1]));
      const bytes = /^BYTES (\d+)/.exec(line);
      if (bytes) received = Number(bytes[1]);
      const timing = /^TRANSFER (\S+) (\S+)/.exec(line);
      if (timing) transfer.receiver = [Number(timing[1]), Number(timing[2])];
    },
  });
  const timer = setTimeout(() => resolvePort(-1), 30_000);
  const port = await Promise.race([portLine, recv.done.then(() => -1)]);
  clearTimeout(timer);
  if (port < 0) {
    await recv.stop();
    const usage = await recv.done.catch((e) => ({ stderr: String(e) }));
    throw new Error(`${label} receiver did not start: ${usage.stderr.slice(-1000)}`);
  }
  const start = performance.now();
  const s = sender(port);
  let send: CommandUsage;
  try {
    send = await runMeasured(work, s.program, s.args, {
      env: s.env,
      cpus: s.cpus,
      label: `${label} sender`,
      timeoutMs: TIMEOUT_MS,
    });
  } catch (error) {
    await recv.stop();
    throw error;
  }
  const got = await recv.done;
  const wall = (performance.now() - start) / 1000;
  if (got.exitCode !== 0) throw new Error(`${label} receiver failed: ${got.stderr.slice(-1000)}`);
  const timing = /^TRANSFER (\S+) (\S+)/m.exec(send.stdout);
  if (timing) transfer.sender = [Number(timing[1]), Number(timing[2])];
  return {
    transfer,
    // Wall: sender start to receiver end, as seen by the bench (includes the sender's
    // process start, like every other row).
    sample: {
      wallS: Math.max(wall, send.wallSeconds),
      clientCpuS: send.cpuSeconds,
      serverCpuS: got.cpuSeconds,
      clientRssKiB: send.peakRssKiB,
      serverRssKiB: got.peakRssKiB,
    },
    received,
  };
}

const RAW_TCP = path.join(BENCH_DIR, "raw_tcp.ts");
const PY_FERNET = path.join(BENCH_DIR, "python_fernet_stream.py");

async function rawTcp(fileToFile: boolean, bytes: number, cores?: CoreMode) {
  const out = path.join(work, "raw_received.bin");
  const { sample: s, received } = await pairTransfer(
    {
      program: DENO,
      args: ["run", "-A", RAW_TCP, "recv", "--out", fileToFile ? out : "-"],
      cpus: cores?.server,
    },
    (port) => ({
      program: DENO,
      cpus: cores?.client,
      args: [
        "run",
        "-A",
        RAW_TCP,
        "send",
        "--port",
        String(port),
        ...(fileToFile ? ["--file", SRC] : ["--bytes", String(bytes)]),
      ],
    }),
    "raw TCP",
  );
  if (fileToFile) await Deno.remove(out);
  if (received !== bytes) throw new Error(`raw TCP moved ${received} bytes, expected ${bytes}`);
  return s;
}

const FERNET_KEY = generateKey();

async function pythonFernet(bytes: number) {
  const out = path.join(work, "py_received.bin");
  const env = { BENCH_FERNET_KEY: FERNET_KEY };
  const { sample: s, received } = await pairTransfer(
    { program: "python3", args: [PY_FERNET, "recv", out], env },
    (port) => ({ program: "python3", args: [PY_FERNET, "send", String(port), SRC], env }),
    "python fernet",
  );
  await Deno.remove(out);
  if (received !== bytes) throw new Error(`python fernet moved ${received} bytes, not ${bytes}`);
  return s;
}

/** Runs `run` REPEAT times interleaved with the others; collects samples or the failure. */
/** Other processes used more than 10% of the machine during the run. */
function disturbed(sample: Sample): boolean {
  return (sample.extra?.foreign_cpu_s ?? 0) > 0.1 * sample.wallS * navigator.hardwareConcurrency;
}

class Series {
  samples: Sample[] = [];
  discarded = 0;
  error: string | undefined;
  constructor(
    readonly tool: string,
    readonly run: () => Promise<Sample>,
    readonly note?: string,
  ) {}
  async once(): Promise<void> {
    if (this.error) return;
    try {
      for (let attempt = 0;; attempt++) {
        const before = snapshotProcesses();
        const sample = await this.run();
        // CPU that other people's processes used meanwhile (a disturbed run), and kernel
        // threads (writeback, softirq: part of the run's own cost, reported apart).
        const other = otherCpu(before, snapshotProcesses());
        sample.extra = {
          ...sample.extra,
          foreign_cpu_s: round(other.foreign, 2),
          kernel_thread_cpu_s: round(other.kernel, 2),
        };
        if (disturbed(sample) && attempt < RETRIES_WHEN_DISTURBED && retryBudgetMs > 0) {
          log(
            `${this.tool}: other processes used ${
              other.foreign.toFixed(1)
            } CPU-s during the run; ` +
              `discarding it and running again when the machine is quiet`,
          );
          this.discarded++;
          const waitStart = Date.now();
          await waitForQuiet(Math.min(60_000, retryBudgetMs));
          retryBudgetMs -= Date.now() - waitStart + sample.wallS * 1000;
          continue;
        }
        this.samples.push(sample);
        return;
      }
    } catch (error) {
      this.error = (error as Error).message.split("\n").slice(0, 4).join(" | ");
      log(`${this.tool}: ${this.error}`);
    }
  }
}

async function runSeries(caseName: string, bytes: number, series: Series[], repeat = REPEAT) {
  for (let rep = 1; rep <= repeat; rep++) {
    for (const s of series) {
      log(`${caseName}: ${s.tool} (run ${rep}/${repeat})`);
      await s.once();
    }
  }
  for (const s of series) {
    const row = s.samples.length > 0 && !s.error
      ? transferRow(caseName, s.tool, bytes, s.samples, s.note)
      : failedRow(caseName, s.tool, s.error ?? "no runs");
    row.extra = { ...row.extra, discarded_disturbed_runs: s.discarded };
    rows.push(row);
  }
}

// ---------------------------------------------------------------------------
// Cases.

const label = (bytes: number) => bytes >= GIB ? `${bytes / GIB} GiB` : `${bytes / MIB} MiB`;

async function ensureSshd(): Promise<Sshd | string> {
  if (sshd === undefined) {
    log("starting a private sshd on 127.0.0.1");
    sshd = await startSshd(path.join(work, "sshd"), log);
    if (typeof sshd === "string") log(`scp/ssh rows will say why: ${sshd}`);
  }
  return sshd;
}

function scpSeries(
  direction: "up" | "down",
  bytes: number,
  /** The cores case: its own sshd (pinned or not), the client's CPUs, a tool name suffix. */
  cores?: { ssh: Sshd | string | undefined; mode: CoreMode; suffix: string },
): Series {
  const tool = `scp ${direction === "up" ? "upload" : "download"} aes128-gcm${cores?.suffix ?? ""}`;
  const ssh = cores ? cores.ssh : sshd;
  const cpus = cores?.mode.client;
  if (typeof ssh !== "object") {
    const s = new Series(tool, () => Promise.reject(new Error(String(ssh))));
    s.error = String(ssh);
    return s;
  }
  const remoteDir = path.join(work, "scp");
  return new Series(
    tool,
    async () => {
      await Deno.mkdir(remoteDir, { recursive: true });
      const target = path.join(remoteDir, "copy.bin");
      const { sample: s, size } = direction === "up"
        ? await scpTransfer(ssh, SRC, sshTarget(ssh, target), target, cpus)
        : await scpTransfer(ssh, sshTarget(ssh, SRC), target, target, cpus);
      if (size !== bytes) throw new Error(`scp moved ${size} bytes, expected ${bytes}`);
      return s;
    },
    `${ssh.version.split(",")[0]}, ${direction === "up" ? "sshd side = server" : "sshd sends"}`,
  );
}

async function caseUpload(): Promise<void> {
  const caseName = `upload ${label(SIZE)}`;
  await ensureSshd();
  const server = await startServer("upload", path.join(ROOT, "examples", "noop_recon.sh"));
  const series = [
    new Series("recon upload", () => reconUpload(server, SRC, SIZE), "no-op script"),
    scpSeries("up", SIZE),
    new Series("raw TCP file→file (Deno)", () => rawTcp(true, SIZE), "ceiling for recon's I/O"),
    new Series("raw TCP mem→/dev/null (Deno)", () => rawTcp(false, SIZE), "socket alone"),
    new Series("Python Fernet 1 MiB tokens", () => pythonFernet(SIZE), "2 processes, file→file"),
  ];
  // One untimed round first: page cache, deno's module cache and Python's imports.
  log("warm-up round (not recorded)");
  for (const s of series) {
    const keep = s.samples.length;
    await s.once();
    s.samples.length = keep;
  }
  await runSeries(caseName, SIZE, series);
  await stopServer(server);
}

/**
 * Issue 16: what the monitoring endpoint costs a transfer. One server with HTTP_LISTEN;
 * the big upload without scraping and with a scraper process GETting /metrics (and, in
 * runs of their own, /healthz and /) every 100 ms, interleaved; then each page probed
 * alone against the idle server (bench/metrics_case.ts).
 */
async function caseMetrics(): Promise<void> {
  const caseName = `HTTP monitoring, upload ${label(SIZE)}`;
  const server = await startServer("metrics", path.join(ROOT, "examples", "noop_recon.sh"), {
    HTTP_LISTEN: "127.0.0.1:0",
  });
  const port = monitorPort(server);
  // The scrapes of each kept run, by its sample (a discarded, disturbed run drops out).
  const scrapes = new Map<Sample, ScrapeResult>();
  const plain = new Series(
    "recon upload, no scraping",
    () => reconUpload(server, SRC, SIZE),
    "same server, HTTP_LISTEN on, not asked",
  );
  const scrapedSeries = (page: string, intervalMs: number) =>
    new Series(`recon upload, GET ${page} every ${intervalMs} ms`, async () => {
      const { sample, scrape } = await scrapedRun(
        work,
        port,
        page,
        (clientDone) => reconUpload(server, SRC, SIZE, { clientDone }),
        intervalMs,
      );
      scrapes.set(sample, scrape);
      return sample;
    });
  const scraped = MONITOR_PATHS.map((page) => scrapedSeries(page, SCRAPE_INTERVAL_MS));
  const amplified = scrapedSeries("/metrics", AMPLIFIED_INTERVAL_MS);
  const series = [plain, ...scraped, amplified];
  log("warm-up round (not recorded)");
  for (const s of series) {
    const keep = s.samples.length;
    await s.once();
    s.samples.length = keep;
  }
  // Rotated each round, so that no series always runs after the same one.
  for (let rep = 0; rep < REPEAT; rep++) {
    for (let i = 0; i < series.length; i++) {
      const s = series[(rep + i) % series.length];
      log(`${caseName}: ${s.tool} (run ${rep + 1}/${REPEAT})`);
      const kept = s.samples.length;
      await s.once();
      const got = s.samples[kept];
      const scrape = got && scrapes.get(got);
      if (got) {
        log(
          `  ${(SIZE / 1e6 / got.wallS).toFixed(0)} MB/s, server CPU ${
            got.serverCpuS.toFixed(2)
          } s${
            scrape
              ? `, ${scrape.report.ok} scrapes, scraper CPU ${scrape.scraperCpuS.toFixed(2)} s`
              : ""
          }`,
        );
      }
    }
  }
  const rowOf = (s: Series) => {
    const row = s.samples.length > 0 && !s.error
      ? transferRow(caseName, s.tool, SIZE, s.samples, s.note)
      : failedRow(caseName, s.tool, s.error ?? "no runs");
    row.extra = { ...row.extra, discarded_disturbed_runs: s.discarded };
    rows.push(row);
    return row;
  };
  const base = rowOf(plain);
  for (const s of [...scraped, amplified]) {
    const intervalMs = s === amplified ? AMPLIFIED_INTERVAL_MS : SCRAPE_INTERVAL_MS;
    const row = rowOf(s);
    if (row.reps === 0 || base.reps === 0) continue;
    // Round k's scraped run against the same round's unscraped one.
    const paired = s.samples.flatMap((x, k) =>
      plain.samples[k] ? [plain.samples[k].wallS / x.wallS] : []
    );
    const summary = scrapedSummary({
      scrapes: s.samples.map((x) => scrapes.get(x)!),
      intervalMs,
      mbPerS: row.mbPerS!,
      wallS: row.wallS!,
      serverCpuS: row.serverCpuS!,
      baselineMbPerS: base.mbPerS!,
      baselineServerCpuS: base.serverCpuS!,
      pairedRatios: paired,
    });
    row.note = summary.note + (row.note ?? "");
    row.extra = { ...row.extra, ...summary.extra };
  }
  // Each page alone, after the uploads (the store then holds their jobs).
  const idleRate = await idleCpuRate(server.pid);
  for (const [i, page] of MONITOR_PATHS.entries()) {
    const tool = `${PROBE_COUNT} × GET ${page} alone, idle server`;
    log(`${caseName}: ${tool}`);
    try {
      const result = await probe(work, server, port, page, idleRate);
      const summary = probeSummary(result, scraped[i].samples.map((x) => scrapes.get(x)!));
      rows.push({
        case: caseName,
        tool,
        reps: result.report.ok,
        serverCpuS: result.serverCpuS,
        note: summary.note,
        extra: { ...summary.extra, server_idle_cpu_s_per_s: round(idleRate, 4) },
      });
    } catch (error) {
      rows.push(failedRow(caseName, tool, (error as Error).message.split("\n")[0]));
    }
  }
  await stopServer(server);
}

async function caseDownload(): Promise<void> {
  const caseName = `download ${label(SIZE)}`;
  await ensureSshd();
  const server = await startServer(
    "download",
    path.join(BENCH_DIR, "big_result_recon.sh"),
  );
  await runSeries(caseName, SIZE, [
    new Series(
      "recon result download",
      () => reconDownload(server, SIZE),
      "1 KB job in; script time subtracted",
    ),
    scpSeries("down", SIZE),
  ]);
  await stopServer(server);
}

/**
 * Issue 18: the big upload and download with each end pinned to its own core and with
 * both ends on every core, recon, scp and raw TCP file→file, interleaved
 * (bench/cores_case.ts). Rows are tagged (extra cores_mode, cores_kind, direction) for
 * the floor and the scaling printout.
 */
async function caseCores(): Promise<void> {
  const caseName = `upload and download ${label(SIZE)}, cores`;
  const modes = coreModes();
  if (modes.length < 2) rows.push(failedRow(caseName, "pinned", "one CPU: nothing to pin to"));
  await ensureSshd();
  const made: ReconServerProcess[] = [];
  const tagged: [Series, CoresTag][] = [];
  const byKind: Series[][] = [[], [], [], [], []];
  for (const mode of modes) {
    let ssh: Sshd | string | undefined = sshd;
    if (mode.server) {
      log(`starting a private sshd on core ${mode.server}`);
      ssh = pinnedSshd = await startSshd(path.join(work, "sshd_pinned"), log, mode.server);
    }
    const up = await startServer(
      `cores_up_${mode.mode}`,
      path.join(ROOT, "examples", "noop_recon.sh"),
      undefined,
      undefined,
      mode.server,
    );
    const down = await startServer(
      `cores_down_${mode.mode}`,
      path.join(BENCH_DIR, "big_result_recon.sh"),
      undefined,
      undefined,
      mode.server,
    );
    made.push(up, down);
    const how: ClientRun = { cpus: mode.client, mainThread: true };
    const add = (i: number, series: Series, tag: Omit<CoresTag, "mode">) => {
      byKind[i].push(series);
      tagged.push([series, { ...tag, mode: mode.mode }]);
    };
    const suffix = `, ${mode.label}`;
    add(
      0,
      new Series(`recon upload${suffix}`, () => reconUpload(up, SRC, SIZE, how), "no-op script"),
      { kind: "recon", direction: "up" },
    );
    add(1, scpSeries("up", SIZE, { ssh, mode, suffix }), {
      kind: "scp",
      direction: "up",
    });
    add(
      2,
      new Series(
        `recon result download${suffix}`,
        () => reconDownload(down, SIZE, how),
        "1 KB job in; script time subtracted",
      ),
      { kind: "recon", direction: "down" },
    );
    add(3, scpSeries("down", SIZE, { ssh, mode, suffix }), {
      kind: "scp",
      direction: "down",
    });
    add(
      4,
      new Series(
        `raw TCP file→file (Deno)${suffix}`,
        () => rawTcp(true, SIZE, mode),
        "the floor's I/O: sender = client, receiver = server",
      ),
      { kind: "raw", direction: "up" },
    );
  }
  // Each kind's modes side by side: recon pinned, recon shared, scp pinned, …
  const series = byKind.flat();
  log("warm-up round (not recorded)");
  for (const s of series) {
    const keep = s.samples.length;
    await s.once();
    s.samples.length = keep;
  }
  const first = rows.length;
  await runSeries(caseName, SIZE, series);
  for (const row of rows.slice(first)) {
    const tag = tagged.find(([s]) => s.tool === row.tool)?.[1];
    if (tag) row.extra = { ...row.extra, ...tagExtra(tag) };
  }
  for (const server of made) await stopServer(server);
  if (pinnedSshd && typeof pinnedSshd !== "string") await pinnedSshd.stop();
  pinnedSshd = undefined;
}

/** The floor's primitives (bench/primitives.ts via floor_case.ts), for the printout. */
let primitives: Awaited<ReturnType<typeof measurePrimitives>> | undefined;

async function caseFloor(): Promise<void> {
  primitives = await measurePrimitives(work, REPEAT, FLOOR_MIB, log);
  rows.push(...primitiveRows(primitives, REPEAT));
}

/**
 * Issue 18: recon with CRYPTO_BACKEND = webcrypto against the default (auto) backend,
 * upload and download, both ends on every core, interleaved (client and server read the
 * same recon.opts, so both ends use the backend named).
 */
async function caseBackend(): Promise<void> {
  const caseName = `crypto backend, ${label(SIZE)}`;
  const schema = await Deno.readTextFile(path.join(ROOT, "lib", "opts", "schema.ts"));
  if (!schema.includes("CRYPTO_BACKEND")) {
    rows.push(
      failedRow(caseName, "(case)", "CRYPTO_BACKEND is not an option of this tree (issue 18)"),
    );
    return;
  }
  const series: Series[] = [];
  const made: ReconServerProcess[] = [];
  for (const backend of [undefined, "webcrypto"]) {
    const extra = backend ? { CRYPTO_BACKEND: backend } : undefined;
    const name = backend ?? "default";
    const up = await startServer(
      `backend_up_${name}`,
      path.join(ROOT, "examples", "noop_recon.sh"),
      extra,
    );
    const down = await startServer(
      `backend_down_${name}`,
      path.join(BENCH_DIR, "big_result_recon.sh"),
      extra,
    );
    made.push(up, down);
    const said = /crypto: (.*)$/m.exec(up.log)?.[1] ?? "not in the server's log";
    const what = backend ? `CRYPTO_BACKEND = ${backend}` : "default (auto)";
    series.push(
      new Series(`recon upload, ${what}`, () => reconUpload(up, SRC, SIZE), `crypto: ${said}`),
      new Series(
        `recon result download, ${what}`,
        () => reconDownload(down, SIZE),
        `crypto: ${said}`,
      ),
    );
  }
  // Upload default, upload webcrypto, download default, download webcrypto.
  await runSeries(caseName, SIZE, [series[0], series[2], series[1], series[3]]);
  for (const server of made) await stopServer(server);
}

async function caseTiny(): Promise<void> {
  const caseName = "tiny job round trip";
  const ssh = await ensureSshd();
  const server = await startServer("tiny", path.join(BENCH_DIR, "tiny_recon.sh"));
  const recon = new Series("recon 1 KB in, 1 KB out", async () => {
    const dl = await freshDir("dl");
    const meter = new DaemonMeter(server.pid);
    meter.start();
    const client = await runClient(work, server, [
      "--files",
      TINY,
      "--download-dir",
      dl,
      "--quiet",
    ]);
    await meter.settle(2000);
    const usage = meter.stop();
    if (await resultBytes(dl) !== 1000) throw new Error("tiny job did not return 1 KB");
    return sample(client, usage);
  }, "cold client start + handshake + job + result");
  const series = [recon];
  if (typeof ssh === "object") {
    series.push(
      new Series("scp up + ssh run + scp down", async () => {
        const base = await freshDir("tiny_ssh");
        const input = await freshDir("tiny_ssh", "in");
        const output = await freshDir("tiny_ssh", "out");
        const local = await freshDir("tiny_ssh", "local");
        const scp = ["scp", ...ssh.scpArgs].map((a) => `'${a}'`).join(" ");
        const sshCmd = ["ssh", ...ssh.sshArgs].map((a) => `'${a}'`).join(" ");
        const host = `${ssh.user}@127.0.0.1`;
        const script = path.join(BENCH_DIR, "tiny_recon.sh");
        const command = [
          `${scp} '${TINY}' '${host}:${input}/'`,
          `${sshCmd} '${host}' "RECON_OUTPUT_DIR='${output}' sh '${script}' '${input}'" >/dev/null`,
          `${scp} '${host}:${output}/result_tiny.bin' '${local}/'`,
        ].join(" && ");
        const meter = new DaemonMeter(ssh.pid);
        meter.start();
        const client = await runMeasured(work, "sh", ["-c", command], { label: "scp+ssh+scp" });
        await meter.settle(3000, true);
        const usage = meter.stop();
        if (await fileSize(path.join(local, "result_tiny.bin")) !== 1000) {
          throw new Error("scp+ssh+scp did not return 1 KB");
        }
        await Deno.remove(base, { recursive: true });
        return sample(client, usage);
      }, "3 connections, as a script would do it"),
    );
  } else {
    const s = new Series("scp up + ssh run + scp down", () => Promise.reject());
    s.error = ssh;
    series.push(s);
  }
  // One untimed round each.
  for (const s of series) {
    await s.once();
    s.samples.length = 0;
  }
  await runSeries(caseName, 1000, series, TINY_REPEAT);
  // The table shows latency, not MB/s, for this case.
  for (const row of rows.filter((r) => r.case === caseName && r.reps > 0)) {
    const walls = row.extra!.wall_s_runs as number[];
    row.note = `${row.note ?? ""}; p50 ${(median(walls) * 1000).toFixed(0)} ms, p90 ${
      (percentile(walls, 90) * 1000).toFixed(0)
    } ms`;
    row.mbPerS = undefined;
    row.cpuSPerGiB = undefined;
  }
  await stopServer(server);
}

async function caseConcurrent(): Promise<void> {
  const caseName = `4 concurrent uploads of ${label(CONCURRENT_SIZE)}`;
  const ssh = await ensureSshd();
  const files: string[] = [];
  for (let i = 0; i < 4; i++) {
    const file = path.join(work, `concurrent_${i}.bin`);
    await makeFile(file, CONCURRENT_SIZE);
    files.push(file);
  }
  const server = await startServer("concurrent", path.join(ROOT, "examples", "noop_recon.sh"));
  const total = 4 * CONCURRENT_SIZE;
  const recon = new Series("recon ×4", async () => {
    const meter = new DaemonMeter(server.pid);
    meter.start();
    const start = performance.now();
    const clients = await Promise.all(files.map(async (file, i) => {
      const dl = await freshDir(`dl${i}`);
      const usage = await runClient(
        work,
        server,
        ["--files", file, "--download-dir", dl, "--quiet"],
        { timeoutMs: TIMEOUT_MS },
      );
      await Deno.remove(dl, { recursive: true });
      return usage;
    }));
    const wall = (performance.now() - start) / 1000;
    await meter.settle();
    const usage = meter.stop();
    return {
      wallS: wall,
      clientCpuS: clients.reduce((sum, c) => sum + c.cpuSeconds, 0),
      serverCpuS: usage.cpuSeconds,
      clientRssKiB: max(clients.map((c) => c.peakRssKiB)),
      serverRssKiB: usage.peakRssKiB,
    };
  }, "aggregate MB/s; client RSS = largest of the 4; MAX_CONCURRENT_JOBS 1");
  const series = [recon];
  if (typeof ssh === "object") {
    series.push(
      new Series("scp ×4 aes128-gcm", async () => {
        const dir = await freshDir("scp4");
        const meter = new DaemonMeter(ssh.pid);
        meter.start();
        const start = performance.now();
        const clients = await Promise.all(files.map((file, i) =>
          runMeasured(work, "scp", [
            ...ssh.scpArgs,
            file,
            sshTarget(ssh, path.join(dir, `copy${i}.bin`)),
          ], { label: "scp", timeoutMs: TIMEOUT_MS })
        ));
        const wall = (performance.now() - start) / 1000;
        await meter.settle(5000, true);
        const usage = meter.stop();
        if (await treeBytes(dir) !== total) throw new Error("scp ×4 did not copy everything");
        await Deno.remove(dir, { recursive: true });
        return {
          wallS: wall,
          clientCpuS: clients.reduce((sum, c) => sum + c.cpuSeconds, 0),
          serverCpuS: usage.cpuSeconds,
          clientRssKiB: max(clients.map((c) => c.peakRssKiB)),
          serverRssKiB: usage.peakRssKiB,
        };
      }, "sshd RSS = largest per-connection process"),
    );
  }
  await runSeries(caseName, total, series);
  await stopServer(server);
  for (const file of files) await Deno.remove(file);
}

interface StatusRound {
  latencies: number[];
  answered: number;
  failed: number;
  reasons: Map<string, number>;
}

/** n `recon-client --server-status` processes at once, as n people or scripts would. */
async function statusProcesses(server: ReconServerProcess, n: number, stats: StatusRound) {
  await Promise.all(Array.from({ length: n }, async () => {
    const start = performance.now();
    const child = new Deno.Command(CLIENT_BIN, {
      args: [
        "--opts",
        server.opts,
        "--host",
        "127.0.0.1",
        "--port",
        String(server.port),
        "--server-status",
        "--json",
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    track(child, "recon-client --server-status");
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    const out = await child.output();
    clearTimeout(timer);
    stats.latencies.push((performance.now() - start) / 1000);
    let ok = false;
    try {
      ok = out.code === 0 &&
        typeof JSON.parse(new TextDecoder().decode(out.stdout)).uptime_seconds === "number";
    } catch { /* not JSON */ }
    if (ok) stats.answered++;
    else {
      stats.failed++;
      const reason = new TextDecoder().decode(out.stderr).split("\n")[0]
        .replace(/127\.0\.0\.1:\d+/g, "127.0.0.1:PORT").slice(0, 140);
      stats.reasons.set(reason, (stats.reasons.get(reason) ?? 0) + 1);
    }
  }));
}

/** n connections from this process at once: the server side without n cold starts. */
async function statusInProcess(server: ReconServerProcess, n: number, stats: StatusRound) {
  const opts = await Deno.readTextFile(server.opts);
  const raw = decodeKey(/^SHARED_KEY = (\S+)$/m.exec(opts)![1]);
  const id = await keyId(raw);
  await Promise.all(Array.from({ length: n }, async () => {
    const start = performance.now();
    try {
      const channel = await connectToServer({
        host: "127.0.0.1",
        port: server.port,
        sharedKey: raw,
        keyId: id,
      });
      await getServerStatus(channel);
      await channel.close();
      stats.answered++;
    } catch (error) {
      stats.failed++;
      const reason = (error as Error).message.replace(/127\.0\.0\.1:\d+/g, "127.0.0.1:PORT")
        .slice(0, 140);
      stats.reasons.set(reason, (stats.reasons.get(reason) ?? 0) + 1);
    }
    stats.latencies.push((performance.now() - start) / 1000);
  }));
}

async function caseStatus(): Promise<void> {
  const n = STATUS_CLIENTS;
  const caseName = `${n} concurrent --server-status`;
  const cap = n + 14;
  const configs: [string, Record<string, number> | undefined][] = [
    ["shipped limits (MAX_UNAUTHENTICATED_PER_IP 8)", undefined],
    [`MAX_UNAUTHENTICATED(_PER_IP) ${cap}`, {
      MAX_UNAUTHENTICATED_PER_IP: cap,
      MAX_UNAUTHENTICATED: cap,
    }],
  ];
  for (const [configName, extra] of configs) {
    const server = await startServer(
      `status${extra ? "_roomy" : ""}`,
      path.join(ROOT, "examples", "noop_recon.sh"),
      extra,
    );
    for (
      const [how, run] of [
        [`${n} recon-client processes`, statusProcesses],
        [`${n} in-process connections`, statusInProcess],
      ] as const
    ) {
      const stats: StatusRound = { latencies: [], answered: 0, failed: 0, reasons: new Map() };
      const serverRss: number[] = [];
      const serverCpu: number[] = [];
      for (let rep = 1; rep <= REPEAT; rep++) {
        log(`${caseName}: ${how}, ${configName} (run ${rep}/${REPEAT})`);
        const meter = new DaemonMeter(server.pid);
        meter.start();
        await run(server, n, stats);
        await meter.settle(2000);
        const usage = meter.stop();
        serverRss.push(usage.peakRssKiB);
        serverCpu.push(usage.cpuSeconds);
        await sleep(300);
      }
      const total = stats.answered + stats.failed;
      rows.push({
        case: caseName,
        tool: `${how}, ${extra ? `per-IP cap ${cap}` : "shipped limits"}`,
        reps: REPEAT,
        serverCpuS: median(serverCpu),
        serverRssMB: mb(max(serverRss)),
        note: `answered ${stats.answered}/${total}${
          stats.failed ? " (REFUSED: see JSON)" : ""
        }; p50 ${(percentile(stats.latencies, 50) * 1000).toFixed(0)} ms, p99 ${
          (percentile(stats.latencies, 99) * 1000).toFixed(0)
        } ms${how.includes("processes") ? " (incl. deno cold start)" : ""}`,
        extra: {
          config: configName,
          answered: stats.answered,
          failed: stats.failed,
          failure_reasons: Object.fromEntries(stats.reasons),
          p50_ms: round(percentile(stats.latencies, 50) * 1000, 1),
          p99_ms: round(percentile(stats.latencies, 99) * 1000, 1),
          max_ms: round(max(stats.latencies) * 1000, 1),
        },
      });
    }
    await stopServer(server);
  }
}

async function caseStartup(): Promise<void> {
  const caseName = "start-up";
  const runs: CommandUsage[] = [];
  log(`${caseName}: recon-client --version ×${TINY_REPEAT}`);
  await runMeasured(work, CLIENT_BIN, ["--version"]);
  for (let i = 0; i < TINY_REPEAT; i++) {
    runs.push(await runMeasured(work, CLIENT_BIN, ["--version"]));
  }
  const compiled = await Deno.stat(path.join(ROOT, "dist", "recon-client")).then(
    () => true,
    () => false,
  );
  const walls = runs.map((r) => r.wallSeconds);
  rows.push({
    case: caseName,
    tool: "recon-client --version",
    reps: runs.length,
    wallS: median(walls),
    clientCpuS: median(runs.map((r) => r.cpuSeconds)),
    clientRssMB: mb(max(runs.map((r) => r.peakRssKiB))),
    note: `p50 ${(median(walls) * 1000).toFixed(0)} ms, p90 ${
      (percentile(walls, 90) * 1000).toFixed(0)
    } ms; ${compiled ? "dist/ binary" : "deno run (no make build)"}`,
    extra: { wall_s_runs: walls.map((w) => round(w, 4)) },
  });
  const starts: number[] = [];
  const rss: number[] = [];
  const n = Math.min(TINY_REPEAT, 10);
  log(`${caseName}: recon-server start to listening ×${n}`);
  const opts = await ReconServerProcess.writeOpts({
    dir: path.join(work, "startup"),
    script: path.join(ROOT, "examples", "noop_recon.sh"),
  });
  for (let i = 0; i <= n; i++) {
    const server = await ReconServerProcess.start(
      { dir: path.join(work, "startup"), script: "" },
      opts,
    );
    servers.push(server);
    const hwm = peakRssKiB(server.pid) ?? NaN;
    await stopServer(server);
    if (i === 0) continue; // warm-up
    starts.push(server.startMs / 1000);
    rss.push(hwm);
  }
  rows.push({
    case: caseName,
    tool: "recon-server start → listening",
    reps: starts.length,
    wallS: median(starts),
    serverRssMB: mb(max(rss)),
    note: `p50 ${(median(starts) * 1000).toFixed(0)} ms, max ${
      (max(starts) * 1000).toFixed(0)
    } ms (spawn to the "listening on" log line)`,
    extra: { wall_s_runs: starts.map((w) => round(w, 4)) },
  });
}

async function caseKnobs(): Promise<void> {
  const caseName = `channel knobs, ${label(KNOB_SIZE)} mem→mem`;
  const peer = path.join(BENCH_DIR, "channel_peer.ts");
  const key = generateKey();
  const series: Series[] = [];
  const combos: [number, number][] = [];
  for (const chunk of [256 * 1024, MIB, 4 * MIB]) {
    for (const depth of [1, 2, 4]) combos.push([chunk, depth]);
  }
  for (const [chunk, depth] of combos) {
    {
      const env: Record<string, string> = { BENCH_KEY: key };
      const knobs = ["--chunk", String(chunk), "--depth", String(depth)];
      series.push(
        new Series(
          `chunk ${chunk >= MIB ? `${chunk / MIB} MiB` : `${chunk / 1024} KiB`}, depth ${depth}`,
          async () => {
            const { sample: s, received, transfer } = await pairTransfer(
              {
                program: DENO,
                args: ["run", "-A", peer, "recv", "--bytes", String(KNOB_SIZE), ...knobs],
                env,
              },
              (port) => ({
                program: DENO,
                args: [
                  "run",
                  "-A",
                  peer,
                  "send",
                  "--port",
                  String(port),
                  "--bytes",
                  String(KNOB_SIZE),
                  ...knobs,
                ],
                env,
              }),
              "channel",
            );
            if (received !== KNOB_SIZE) throw new Error(`channel moved ${received} bytes`);
            if (!transfer.receiver || !transfer.sender) throw new Error("a peer did not report");
            // Transfer phase only (end of handshake → file verified), CPU of that phase.
            return {
              ...s,
              wallS: transfer.receiver[0],
              clientCpuS: transfer.sender[1],
              serverCpuS: transfer.receiver[1],
            };
          },
          "transfer phase only; 2 processes, no disk",
        ),
      );
    }
  }
  await runSeries(caseName, KNOB_SIZE, series);
}

// ---------------------------------------------------------------------------
// The durable job store (issue 13): what it adds to a tiny job, and a long queue.

/** The shared key and key id of a bench server's recon.opts, for in-process sessions. */
async function serverKey(server: ReconServerProcess) {
  const opts = await Deno.readTextFile(server.opts);
  const raw = decodeKey(/^SHARED_KEY = (\S+)$/m.exec(opts)![1]);
  return { sharedKey: raw, keyId: await keyId(raw) };
}

/** The next message of a session, validated; `error` from the server is thrown. */
async function nextMessage(channel: Channel): Promise<ServerMessage> {
  const incoming = await channel.receive();
  if (incoming.type !== "message") throw new Error(`the server sent ${incoming.type}`);
  const message = parseServerMessage(incoming.message);
  if (message.type === "error") throw new Error(`the server refused: ${message.reason}`);
  return message;
}

/**
 * Submit `file` as a job and leave it queued, as `recon-client --detach` does, over one
 * in-process session (no deno start per job): submit, answer request_file, read
 * job_queued, end the session. Returns the job id.
 */
async function submitDetached(
  server: ReconServerProcess,
  key: { sharedKey: Uint8Array<ArrayBuffer>; keyId: string },
  file: string,
  size: number,
): Promise<string> {
  const channel = await connectToServer({ host: "127.0.0.1", port: server.port, ...key });
  try {
    await channel.send({
      type: "submit_recon_job",
      file_count: 1,
      client_recon_options_json: "{}",
      priority: "normal",
    });
    await channel.send({ type: "input_file", name: path.basename(file), size });
    while (true) {
      const message = await nextMessage(channel);
      if (message.type === "request_file") {
        await sendFileFrom(channel, file, size, { offset: message.offset ?? 0 });
      } else if (message.type === "job_queued") {
        return message.job_id;
      } else throw new Error(`unexpected ${message.type} before job_queued`);
    }
  } finally {
    await channel.close().catch(() => {});
  }
}

/** Every job the server holds, page by page (list_jobs), over one in-process session. */
async function listAllJobs(
  server: ReconServerProcess,
  key: { sharedKey: Uint8Array<ArrayBuffer>; keyId: string },
): Promise<{ jobs: JobInfo[]; pages: number; answerMs: number }> {
  const channel = await connectToServer({ host: "127.0.0.1", port: server.port, ...key });
  try {
    const jobs: JobInfo[] = [];
    let cursor: string | undefined;
    let pages = 0;
    const start = performance.now();
    do {
      await channel.send({ type: "list_jobs", ...(cursor ? { cursor } : {}) });
      const message = await nextMessage(channel);
      if (message.type !== "job_list") throw new Error(`expected job_list, got ${message.type}`);
      jobs.push(...message.jobs);
      cursor = message.cursor;
      pages++;
    } while (cursor);
    return { jobs, pages, answerMs: performance.now() - start };
  } finally {
    await channel.close().catch(() => {});
  }
}

/**
 * Bytes of the script's results recon-client put in `dl`: the files of its job
 * directories (`dl/<job_id>/`), not the download journals it keeps beside them
 * (`.recon-<job_id>.journal`, lib/client/download.ts), nor the provenance.json the
 * server adds to every job's results (lib/server/provenance.ts; under 1 KB, it is part
 * of each job's cost, not of what the script sent back).
 */
async function resultBytes(dl: string): Promise<number> {
  let total = 0;
  for await (const entry of Deno.readDir(dl)) {
    if (!entry.isDirectory) continue;
    const job = path.join(dl, entry.name);
    total += await treeBytes(job);
    const provenance = await Deno.lstat(path.join(job, PROVENANCE_FILE)).catch(() => undefined);
    if (!provenance?.isFile) throw new Error(`${job} has no ${PROVENANCE_FILE}`);
    total -= provenance.size;
  }
  return total;
}

/** RECON_SCRIPT of the queue part: waits (at most 10 min) until $BENCH_RELEASE exists. */
const BLOCKING_SCRIPT = `#!/bin/sh
i=0
while [ ! -e "$BENCH_RELEASE" ] && [ "$i" -lt 12000 ]; do
	i=$((i + 1))
	sleep 0.05
done
echo "PROGRESS 100"
`;

async function caseStore(): Promise<void> {
  // The tiny job's cost of the store is the `tiny` case itself (it runs the code with the
  // store; compare it with an older tree's run back to back, docs/PERFORMANCE.md).
  // STORE_JOBS jobs queued behind one that blocks: how long `jobs --json` takes and
  // how much memory the server holds for them.
  const queueCase = `${STORE_JOBS} queued jobs`;
  const release = path.join(work, "store_release");
  const script = path.join(work, "blocking_recon.sh");
  await Deno.writeTextFile(script, BLOCKING_SCRIPT, { mode: 0o755 });
  const server = await startServer(
    "store_queue",
    script,
    {
      MAX_CONCURRENT_JOBS: 1,
      SHUTDOWN_GRACE: 1,
      MAX_UNAUTHENTICATED_PER_IP: 32,
      MAX_UNAUTHENTICATED: 32,
    },
    { ...Deno.env.toObject(), BENCH_RELEASE: release },
  );
  try {
    const key = await serverKey(server);
    const blocker = await submitDetached(server, key, TINY, 1000);
    log(`${queueCase}: job ${blocker} holds the only worker; submitting ${STORE_JOBS} more`);
    const submitMeter = new DaemonMeter(server.pid);
    submitMeter.start();
    const submitStart = performance.now();
    let next = 0;
    const lanes = 8;
    await Promise.all(Array.from({ length: lanes }, async () => {
      while (next < STORE_JOBS) {
        next++;
        await submitDetached(server, key, TINY, 1000);
      }
    }));
    const submitS = (performance.now() - submitStart) / 1000;
    await submitMeter.settle(3000);
    const submitUsage = submitMeter.stop();
    const settledRss = rssKiB(server.pid) ?? NaN;
    log(`${queueCase}: submitted in ${submitS.toFixed(1)} s; timing jobs --json`);
    const listMeter = new DaemonMeter(server.pid);
    listMeter.start();

    // Server side: the list_jobs round trips alone, on a session already open.
    const inProcess: number[] = [];
    let listed: JobInfo[] = [];
    let pages = 0;
    for (let i = 0; i < 5; i++) {
      const answer = await listAllJobs(server, key);
      inProcess.push(answer.answerMs / 1000);
      listed = answer.jobs;
      pages = answer.pages;
    }
    const queued = listed.filter((job) => job.state === "queued").length;
    if (listed.length !== STORE_JOBS + 1 || queued !== STORE_JOBS) {
      throw new Error(
        `the server lists ${listed.length} jobs, ${queued} queued; expected ${
          STORE_JOBS + 1
        }, ${STORE_JOBS} queued`,
      );
    }
    // The whole command, as a person runs it (deno start, handshake, every page, JSON out).
    const processes: CommandUsage[] = [];
    await runClient(work, server, ["jobs", "--json"]); // warm-up
    for (let i = 0; i < 5; i++) {
      processes.push(await runClient(work, server, ["jobs", "--json"], { label: "jobs --json" }));
    }
    const listUsage = listMeter.stop();
    // VmHWM since the server started: its largest footprint over the whole case.
    const hwm = Math.max(peakRssKiB(server.pid) ?? NaN, submitUsage.rootPeakRssKiB);
    const walls = processes.map((p) => p.wallSeconds);
    rows.push({
      case: queueCase,
      tool: "recon-client jobs --json",
      reps: processes.length,
      wallS: median(walls),
      clientCpuS: median(processes.map((p) => p.cpuSeconds)),
      clientRssMB: mb(max(processes.map((p) => p.peakRssKiB))),
      serverRssMB: mb(hwm),
      note:
        `whole process p50 ${(median(walls) * 1000).toFixed(0)} ms, max ${
          (max(walls) * 1000).toFixed(0)
        } ms; list_jobs answered in ${(median(inProcess) * 1000).toFixed(0)} ms (${pages} pages, ` +
        `in process); server peak RSS ${mb(submitUsage.rootPeakRssKiB).toFixed(0)} MB while ` +
        `8 sessions submitted, ${mb(settledRss).toFixed(0)} MB after, ` +
        `${mb(listUsage.rootPeakRssKiB).toFixed(0)} MB peak while listing`,
      extra: {
        wall_s_runs: walls.map((w) => round(w, 4)),
        list_jobs_s_runs: inProcess.map((w) => round(w, 4)),
        list_jobs_pages: pages,
        jobs_listed: listed.length,
        submit_s: round(submitS, 2),
        submit_jobs_per_s: round(STORE_JOBS / submitS, 1),
        server_peak_rss_mb: round(mb(hwm), 1),
        server_peak_rss_submitting_mb: round(mb(submitUsage.rootPeakRssKiB), 1),
        server_rss_queued_mb: round(mb(settledRss), 1),
        server_peak_rss_listing_mb: round(mb(listUsage.rootPeakRssKiB), 1),
        server_cpu_s_submitting: round(submitUsage.cpuSeconds, 2),
      },
    });
  } finally {
    // Stop the server first (the queue stays in its store, nothing runs); the release
    // file ends a blocking script that outlived it; cleanup() removes the directories.
    await stopServer(server).catch(() => {});
    await Deno.writeTextFile(release, "");
  }
}

// ---------------------------------------------------------------------------
// EXECUTOR = slurm (issue 15): the tiny job through a one-node Slurm cluster on this
// machine (scripts/slurm-local, a cluster of the bench's own in its work directory),
// next to the local executor, interleaved.

/**
 * RECON_SCRIPT of the slurm case: the tiny job (1 KB in, the same 1 KB out, as
 * tiny_recon.sh), which also appends "<job id> <start ns> <end ns>" of its own run to
 * the file given as --timing, so its start and end can be set against the server's log.
 */
const TIMED_TINY_SCRIPT = `#!/bin/sh
set -eu
start=$(date +%s%N)
indir=$1
shift
timing=
while [ "$#" -ge 2 ]; do
	[ "$1" != --timing ] || timing=$2
	shift 2
done
for f in "$indir"/*; do
	[ -f "$f" ] && cp "$f" "$RECON_OUTPUT_DIR/result_\${f##*/}"
done
echo "PROGRESS 100"
[ -z "$timing" ] || echo "$RECON_JOB_ID $start $(date +%s%N)" >>"$timing"
`;

/**
 * When the server logged `job ID: WHAT…` (ms since the epoch) and the line's text, from
 * its LOG_FILEPATH (recon.opts beside it).
 */
async function loggedAt(
  server: ReconServerProcess,
  id: string,
  what: RegExp,
): Promise<{ at: number; text: string }> {
  const file = path.join(path.dirname(server.opts), "recon.log");
  for (const line of (await Deno.readTextFile(file)).split("\n")) {
    const match = /^(\S+) +\S+ +recon-server: (.*)$/.exec(line);
    const prefix = `job ${id}: `;
    if (match && match[2].startsWith(prefix) && what.test(match[2].slice(prefix.length))) {
      return { at: Date.parse(match[1]), text: match[2] };
    }
  }
  throw new Error(`the server did not log ${what} for job ${id} in ${file}`);
}

/** Run `program` with the Slurm cluster's environment; its stdout, or an error. */
async function slurmCommand(
  env: Record<string, string>,
  program: string,
  args: string[],
): Promise<string> {
  const output = await new Deno.Command(program, { args, env, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder();
  if (!output.success) {
    throw new Error(`${program} ${args.join(" ")}: ${text.decode(output.stderr).trim()}`);
  }
  return text.decode(output.stdout);
}

/**
 * One tiny job through `server`, timed: the client's wall time, and from the server's
 * log (ms), the script's own timestamps (ns) and, for a Slurm job, `scontrol` (whole
 * seconds): when the worker started it, when sbatch had taken it, when the script
 * started and ended, when the job succeeded.
 */
async function timedTiny(
  server: ReconServerProcess,
  timing: string,
  slurmEnv?: Record<string, string>,
): Promise<Sample> {
  if (slurmEnv) {
    // The node as a site's next job finds it: idle, the last job's cleanup done (a job
    // submitted while the node still completes one waits for Slurm's next scheduling
    // pass, which would bill one series for the other's job).
    const deadline = Date.now() + 10_000;
    const idle = async () =>
      (await slurmCommand(slurmEnv, "sinfo", ["-h", "-N", "-o", "%t"])).trim().split("\n")
        .every((state) => state === "idle");
    while (!await idle()) {
      if (Date.now() > deadline) throw new Error("the Slurm node did not become idle in 10 s");
      await sleep(50);
    }
    // Slurm starts jobs on its scheduler's tick (bf_interval, 1 s on the test cluster):
    // a submission at a random phase of it, as a site's jobs arrive, so that neither
    // series gets a fixed phase from the order the runs take.
    await sleep(Math.random() * 1000);
  }
  const dl = await freshDir("dl");
  const meter = new DaemonMeter(server.pid);
  meter.start();
  const client = await runClient(work, server, [
    "--files",
    TINY,
    "--download-dir",
    dl,
    "--quiet",
    "--recon-options",
    JSON.stringify({ timing }),
  ]);
  await meter.settle(2000);
  const usage = meter.stop();
  if (await resultBytes(dl) !== 1000) throw new Error("the tiny job did not return 1 KB");
  const id = path.basename(path.dirname(client.stdout.trim().split("\n")[0]));
  const line = (await Deno.readTextFile(timing)).split("\n").find((l) => l.startsWith(`${id} `));
  if (!line) throw new Error(`the script recorded no timing for job ${id}`);
  const [startNs, endNs] = line.split(" ").slice(1).map(BigInt);
  const scriptStart = Number(startNs / 1000n) / 1000;
  const scriptEnd = Number(endNs / 1000n) / 1000;
  const running = (await loggedAt(server, id, /^running /)).at;
  const succeeded = (await loggedAt(server, id, /^succeeded with /)).at;
  const s = sample(client, usage);
  s.extra = {
    // From the worker's start of the job to the script's first line, and from its last
    // line to the job's success (the outcome read, the results listed and hashed).
    to_script_s: (scriptStart - running) / 1000,
    script_s: (scriptEnd - scriptStart) / 1000,
    after_script_s: (succeeded - scriptEnd) / 1000,
  };
  if (slurmEnv) {
    const line = await loggedAt(server, id, /^submitted as Slurm job \d+/);
    const submitted = line.at;
    const slurmId = /submitted as Slurm job (\d+)/.exec(line.text)![1];
    const fields = Object.fromEntries(
      [...(await slurmCommand(slurmEnv, "scontrol", ["show", "job", "-o", slurmId]))
        .matchAll(/(\S+?)=(\S*)/g)].map((m) => [m[1], m[2]]),
    );
    // scontrol prints local times to the second, without a zone.
    const queuedS = (Date.parse(fields.StartTime) - Date.parse(fields.SubmitTime)) / 1000;
    if (fields.JobName !== `recon-${id}` || !Number.isFinite(queuedS)) {
      throw new Error(`scontrol show job ${slurmId}: ${JSON.stringify(fields)}`);
    }
    s.extra.sbatch_s = (submitted - running) / 1000;
    s.extra.submit_to_script_s = (scriptStart - submitted) / 1000;
    s.extra.scontrol_submit_to_running_s = queuedS;
  }
  await Deno.remove(dl, { recursive: true });
  return s;
}

async function caseSlurm(): Promise<void> {
  const caseName = "Slurm: tiny job round trip";
  // Not inside the work directory: munged wants every directory above its socket
  // searchable by all, and the work directory is 0700.
  const clusterDir = await Deno.makeTempDir({ prefix: "recon-bench-slurm-" });
  const slurmLocal = path.join(ROOT, "scripts", "slurm-local");
  log(`${caseName}: scripts/slurm-local up ${clusterDir}`);
  const up = await new Deno.Command(slurmLocal, {
    args: ["up", clusterDir],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!up.success) {
    const why = new TextDecoder().decode(up.stderr).trim() || "scripts/slurm-local up failed";
    rows.push(failedRow(caseName, "(case)", why));
    await Deno.remove(clusterDir, { recursive: true }).catch(() => {});
    return;
  }
  const slurmEnv = { ...Deno.env.toObject(), SLURM_CONF: path.join(clusterDir, "slurm.conf") };
  const script = path.join(work, "timed_tiny_recon.sh");
  await Deno.writeTextFile(script, TIMED_TINY_SCRIPT, { mode: 0o755 });
  const timing = path.join(work, "slurm_timing.txt");
  try {
    const localServer = await startServer("slurm_local", script);
    const series = [
      new Series(
        "recon, EXECUTOR = local",
        () => timedTiny(localServer, timing),
        "the same script as the Slurm rows, same run",
      ),
    ];
    for (const [poll, label] of [["1s", " (the default)"], ["0.25s", ""]]) {
      const server = await startServer(
        `slurm_${poll}`,
        script,
        { EXECUTOR: "slurm", SLURM_POLL_INTERVAL: poll },
        slurmEnv,
      );
      series.push(
        new Series(
          `recon, EXECUTOR = slurm, SLURM_POLL_INTERVAL ${poll}${label}`,
          () => timedTiny(server, timing, slurmEnv),
        ),
      );
    }
    // One untimed round each (deno's first start, Slurm's first job).
    for (const s of series) {
      await s.once();
      s.samples.length = 0;
    }
    await runSeries(caseName, 1000, series, SLURM_REPEAT);
    // Each run split by its own timestamps, so that Slurm's scheduling, which varies
    // from run to run by up to its scheduler's tick, is taken out run by run.
    const local = series[0].samples;
    const medianOf = (samples: Sample[], value: (x: Sample) => number) =>
      median(samples.map(value));
    const e = (x: Sample, key: string) => x.extra![key];
    // The local executor: all but the script and what follows it (client, upload,
    // queue, process start, delivery); the end: from its last line to the job's success.
    const localRest = medianOf(local, (x) => x.wallS - e(x, "script_s") - e(x, "after_script_s"));
    const localEnd = medianOf(local, (x) => e(x, "after_script_s"));
    const ms = (seconds: number) => `${(seconds * 1000).toFixed(0)} ms`;
    for (const [i, s] of series.entries()) {
      const row = rows.find((r) => r.case === caseName && r.tool === s.tool);
      if (!row || row.reps === 0) continue;
      const walls = row.extra!.wall_s_runs as number[];
      row.mbPerS = undefined;
      row.cpuSPerGiB = undefined;
      if (i === 0) {
        row.note = `${row.note}; p50 ${ms(median(walls))}, p90 ${ms(percentile(walls, 90))}`;
        continue;
      }
      const samples = s.samples;
      // Slurm's own time: from sbatch's answer to the script's first line (slurmctld
      // scheduling it, slurmd launching it); and scontrol's submit → RUNNING, in whole
      // seconds each, whose mean over the runs estimates the same without the launch.
      const slurmOwn = medianOf(samples, (x) => e(x, "submit_to_script_s"));
      const scontrol = samples.reduce((sum, x) => sum + e(x, "scontrol_submit_to_running_s"), 0) /
        samples.length;
      // Polling: from the script's last line to the job's success, beyond what the same
      // step takes with the local executor (the exit file is looked for every 0.1 s,
      // then scontrol asked until Slurm no longer reports the job active).
      const polling = medianOf(samples, (x) => e(x, "after_script_s")) -
        (local.length ? localEnd : NaN);
      // recon's own overhead: the rest of each run (sbatch, the job's Slurm files, the
      // wrapper) against the local run's rest (its process start).
      const overhead = medianOf(
        samples,
        (x) => x.wallS - e(x, "submit_to_script_s") - e(x, "script_s") - e(x, "after_script_s"),
      ) - (local.length ? localRest : NaN);
      const sbatch = medianOf(samples, (x) => e(x, "sbatch_s"));
      Object.assign(row.extra!, {
        slurm_submit_to_script_s: round(slurmOwn, 4),
        scontrol_submit_to_running_mean_s: round(scontrol, 3),
        polling_share_s: round(polling, 4),
        recon_overhead_s: round(overhead, 4),
        sbatch_s: round(sbatch, 4),
      });
      row.note = `p50 ${ms(median(walls))}, p90 ${ms(percentile(walls, 90))}; ` +
        `Slurm: submit → script ${ms(slurmOwn)} (scontrol submit → RUNNING: mean ` +
        `${scontrol.toFixed(2)} s); polling ${ms(polling)}; recon's overhead ${ms(overhead)} ` +
        `(sbatch ${ms(sbatch)})`;
    }
  } finally {
    for (const server of [...servers]) await stopServer(server).catch(() => {});
    await new Deno.Command(slurmLocal, {
      args: ["down", clusterDir],
      stdout: "null",
      stderr: "null",
    }).output();
    await Deno.remove(clusterDir, { recursive: true }).catch(() => {});
  }
}

// ---------------------------------------------------------------------------
// Output.

function fmt(value: number | undefined, digits = 0): string {
  return value === undefined || Number.isNaN(value) ? "" : value.toFixed(digits);
}

function printTable(): void {
  const header = [
    "case",
    "tool",
    "n",
    "MB/s",
    "wall s",
    "CPU s/GiB",
    "client RSS MB",
    "server RSS MB",
    "notes",
  ];
  const lines = rows.map((r) => [
    r.case,
    r.tool,
    String(r.reps),
    fmt(r.mbPerS),
    fmt(r.wallS, r.wallS !== undefined && r.wallS < 1 ? 3 : 2),
    fmt(r.cpuSPerGiB, 2),
    fmt(r.clientRssMB),
    fmt(r.serverRssMB),
    r.note ?? "",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const numeric = new Set([2, 3, 4, 5, 6, 7]);
  const format = (cells: string[]) =>
    cells.map((c, i) => numeric.has(i) ? c.padStart(widths[i]) : c.padEnd(widths[i])).join("  ")
      .trimEnd();
  console.log(format(header));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  let lastCase = "";
  for (const [i, line] of lines.entries()) {
    if (rows[i].case === lastCase) line[0] = "";
    lastCase = rows[i].case;
    console.log(format(line));
  }
}

/** Compare with the issue's targets, using rows of this run. */
function printTargets(): void {
  const find = (caseStart: string, tool: string) =>
    rows.find((r) =>
      r.case.startsWith(caseStart) && r.tool.startsWith(tool) && r.reps > 0 &&
      !r.extra?.cores_mode
    );
  const lines: string[] = [];
  const check = (ok: boolean | undefined, text: string) =>
    lines.push(`${ok === undefined ? "  n/a" : ok ? "  MET" : "  NOT MET"}  ${text}`);
  for (
    const [dir, reconTool, scpTool] of [
      ["upload", "recon upload", "scp upload"],
      ["download", "recon result download", "scp download"],
    ]
  ) {
    const recon = find(dir, reconTool);
    const scp = find(dir, scpTool);
    const py = find("upload", "Python Fernet");
    if (!recon) continue;
    check(
      scp ? recon.mbPerS! >= scp.mbPerS! : undefined,
      `${dir}: ${fmt(recon.mbPerS)} MB/s ≥ scp's ${fmt(scp?.mbPerS)} MB/s`,
    );
    check(recon.mbPerS! >= 450, `${dir}: ${fmt(recon.mbPerS)} MB/s ≥ 450 MB/s`);
    check(
      py ? recon.mbPerS! >= 5 * py.mbPerS! : undefined,
      `${dir}: ${fmt(recon.mbPerS)} MB/s ≥ 5 × Python Fernet (${fmt(py?.mbPerS)} → ${
        fmt(py ? 5 * py.mbPerS! : undefined)
      })`,
    );
    check(
      scp ? recon.cpuSPerGiB! <= scp.cpuSPerGiB! : undefined,
      `${dir}: ${fmt(recon.cpuSPerGiB, 2)} CPU s/GiB ≤ scp's ${fmt(scp?.cpuSPerGiB, 2)}`,
    );
    check(
      recon.clientRssMB! < 150 && recon.serverRssMB! < 150,
      `${dir}: peak RSS client ${fmt(recon.clientRssMB)} MB, server ${
        fmt(recon.serverRssMB)
      } MB < 150 MB`,
    );
  }
  const conc = find("4 concurrent", "recon");
  if (conc) {
    check(
      conc.clientRssMB! < 150 && conc.serverRssMB! < 150,
      `4 concurrent uploads: peak RSS client ${fmt(conc.clientRssMB)} MB, server ${
        fmt(conc.serverRssMB)
      } MB < 150 MB`,
    );
  }
  const tiny = find("tiny", "recon");
  const tinyScp = find("tiny", "scp");
  if (tiny) {
    check(tiny.wallS! <= 0.150, `tiny job: ${fmt(tiny.wallS! * 1000)} ms ≤ 150 ms`);
    check(
      tinyScp ? tinyScp.wallS! >= 5 * tiny.wallS! : undefined,
      `tiny job: ≥ 5× faster than scp+ssh+scp (${
        fmt(tinyScp?.wallS && tinyScp.wallS * 1000)
      } ms → ${tinyScp ? (tinyScp.wallS! / tiny.wallS!).toFixed(1) : "?"}×)`,
    );
  }
  for (const row of rows.filter((r) => r.case.includes("Slurm") && r.extra?.recon_overhead_s)) {
    const overhead = row.extra!.recon_overhead_s as number;
    check(
      overhead < 0.1,
      `${row.tool}: recon's own overhead ${fmt(overhead * 1000)} ms < 100 ms (issue 15)`,
    );
  }
  const queue = rows.find((r) => / queued jobs$/.test(r.case) && r.reps > 0);
  if (queue) {
    const listMs = median(queue.extra!.list_jobs_s_runs as number[]) * 1000;
    check(
      queue.wallS! < 0.2,
      `${queue.case}: jobs --json ${fmt(queue.wallS! * 1000)} ms (whole process; list_jobs ${
        fmt(listMs)
      } ms of it) < 200 ms (issue 13)`,
    );
    check(
      queue.serverRssMB! < 150,
      `${queue.case}: server peak RSS ${fmt(queue.serverRssMB)} MB < 150 MB (issue 13)`,
    );
  }
  const unscraped = find("HTTP monitoring", "recon upload, no scraping");
  const scraped = find(
    "HTTP monitoring",
    `recon upload, GET /metrics every ${SCRAPE_INTERVAL_MS} ms`,
  );
  if (unscraped && scraped) {
    const ratio = scraped.mbPerS! / unscraped.mbPerS!;
    check(
      ratio >= 0.97,
      `upload while /metrics is scraped every ${SCRAPE_INTERVAL_MS} ms: ${
        fmt(scraped.mbPerS)
      } MB/s, ${ratio.toFixed(3)} × ${fmt(unscraped.mbPerS)} MB/s without ≥ 0.97 (issue 16)`,
    );
  }
  const amplified = find(
    "HTTP monitoring",
    `recon upload, GET /metrics every ${AMPLIFIED_INTERVAL_MS} ms`,
  );
  const scaled = amplified?.extra?.ratio_scaled_to_10_per_s as number | undefined;
  if (amplified && scaled !== undefined) {
    check(
      scaled >= 0.97,
      `the same at ${amplified.extra!.scrapes_per_s} scrapes/s: ${
        (amplified.extra!.ratio_to_unscraped as number).toFixed(3)
      } ×, scaled to 10/s: ${scaled.toFixed(3)} × ≥ 0.97 (issue 16, amplified)`,
    );
  }
  const monitorRows = rows.filter((r) => r.case.startsWith("HTTP monitoring") && r.reps > 0);
  if (monitorRows.length > 0) {
    const failed = monitorRows.reduce(
      (sum, r) => sum + Number(r.extra?.scrape_errors ?? r.extra?.failed ?? 0),
      0,
    );
    check(failed === 0, `HTTP monitoring: ${failed} requests failed (scraped and probed)`);
  }
  for (const row of rows.filter((r) => r.case.includes("--server-status"))) {
    const extra = row.extra as { answered: number; failed: number };
    check(
      extra.failed === 0,
      `${row.tool}: ${extra.answered} answered, ${extra.failed} refused or failed; server RSS ${
        fmt(row.serverRssMB)
      } MB`,
    );
  }
  if (lines.length === 0) return;
  console.log(
    `\nTargets (issue 6)${
      sizeMiB < 1024
        ? ` — a ${sizeMiB} MiB quick run: fixed start-up costs weigh more; the targets are for 1 GiB`
        : ""
    }:`,
  );
  for (const line of lines) console.log(line);
}

/** The floor of each core mode this run has a raw TCP row for (issue 18), as rows too. */
async function computeFloors(): Promise<Floor[]> {
  if (!primitives) return [];
  const hashes = await receiverHashes(values["floor-receiver-hash"]);
  const floors: Floor[] = [];
  for (const mode of ["pinned", "shared"] as const) {
    const raw = rawRow(rows, mode);
    if (raw) floors.push(computeFloor(primitives.code, raw, mode, hashes));
  }
  rows.push(...floors.map(floorRow));
  return floors;
}

/** The floor, recon's ratio to it, and how recon would scale with cores (issue 18). */
function printFloor(floors: Floor[]): void {
  if (floors.length > 0) {
    console.log(
      `\nFloor (issue 18): the primitives timed alone (1 MiB chunks, own process) + raw TCP ` +
        `file→file per end; sender = encrypt + MAC + hash, receiver = verify + decrypt ` +
        `(+ hash when it hashes); floor MB/s = cores ÷ total CPU-s per byte (shared) or ` +
        `1 ÷ the larger end's (pinned):`,
    );
    for (const line of floorLines(floors, rows)) console.log(line);
  } else if (primitives) {
    console.log(
      "\nFloor (issue 18): no raw TCP file→file row in this run (cases cores or upload)",
    );
  }
  const scaling = scalingLines(rows);
  if (scaling.length > 0) {
    console.log(
      `\nScaling (issue 18): CPU-s/GiB per end from the pinned run; an end with k cores ` +
        `moves at most k ÷ its CPU-s per byte and never faster than its main thread; ` +
        `× the pinned run's measured/bound ratio:`,
    );
    for (const line of scaling) console.log(line);
  }
}

/** The commit before issue 18's changes, for back-to-back comparisons (the tiny job). */
const BASELINE_18 = "cb54946";

/** Issue 18's targets, from rows of this run. */
function printTargets18(floors: Floor[]): void {
  const lines: string[] = [];
  const check = (ok: boolean | undefined, text: string) =>
    lines.push(`${ok === undefined ? "  n/a" : ok ? "  MET" : "  NOT MET"}  ${text}`);
  const scpRow = (mode: "pinned" | "shared", direction: "up" | "down") =>
    findTagged(rows, { mode, kind: "scp", direction }) ??
      (mode === "shared"
        ? rows.find((r) =>
          r.reps > 0 && !r.extra?.cores_mode &&
          r.case.startsWith(direction === "up" ? "upload" : "download") &&
          r.tool.startsWith(direction === "up" ? "scp upload" : "scp download")
        )
        : undefined);
  const reconRows: BenchRow[] = [];
  for (const mode of ["shared", "pinned"] as const) {
    const where = mode === "shared"
      ? "both ends on 2 shared cores"
      : "each end on its own core (not an issue target)";
    for (const direction of ["up", "down"] as const) {
      const recon = reconRow(rows, mode, direction);
      const scp = scpRow(mode, direction);
      if (!recon) continue;
      reconRows.push(recon);
      const dir = direction === "up" ? "upload" : "download";
      const say = mode === "shared"
        ? check
        : (ok: boolean | undefined, text: string) =>
          lines.push(`  ${ok === undefined ? "n/a" : ok ? "(met)" : "(not met)"}  ${text}`);
      say(
        scp ? recon.mbPerS! >= 0.8 * scp.mbPerS! : undefined,
        `${dir}, ${where}: ${fmt(recon.mbPerS)} MB/s ≥ 0.8 × scp's ${fmt(scp?.mbPerS)} MB/s (${
          scp ? (recon.mbPerS! / scp.mbPerS!).toFixed(2) : "?"
        }×)`,
      );
      say(
        scp ? recon.cpuSPerGiB! <= 1.6 * scp.cpuSPerGiB! : undefined,
        `${dir}, ${where}: ${fmt(recon.cpuSPerGiB, 2)} CPU-s/GiB ≤ 1.6 × scp's ${
          fmt(scp?.cpuSPerGiB, 2)
        } (${scp ? (recon.cpuSPerGiB! / scp.cpuSPerGiB!).toFixed(2) : "?"}×)`,
      );
    }
    const up = reconRow(rows, mode, "up");
    const down = reconRow(rows, mode, "down");
    if (mode === "shared" && up && down) {
      check(
        down.mbPerS! >= up.mbPerS!,
        `download ${fmt(down.mbPerS)} MB/s no slower than upload ${fmt(up.mbPerS)} MB/s`,
      );
    }
  }
  for (const floor of floors) {
    for (const direction of ["up", "down"] as const) {
      const recon = reconRow(rows, floor.mode, direction);
      if (!recon) continue;
      check(
        recon.mbPerS! >= 0.85 * floor.mbPerS,
        `${direction === "up" ? "upload" : "download"}, ${
          floor.mode === "pinned" ? "pinned" : "shared cores"
        }: ${fmt(recon.mbPerS)} MB/s ≥ 0.85 of the floor's ${fmt(floor.mbPerS)} MB/s (${
          (recon.mbPerS! / floor.mbPerS).toFixed(2)
        })`,
      );
    }
  }
  for (const recon of reconRows) {
    check(
      recon.clientRssMB! < 150 && recon.serverRssMB! < 150,
      `${recon.tool}: peak RSS client ${fmt(recon.clientRssMB)} MB, server ${
        fmt(recon.serverRssMB)
      } MB < 150 MB`,
    );
  }
  const tiny = rows.find((r) => r.case.startsWith("tiny") && r.tool.startsWith("recon"));
  const tinyScp = rows.find((r) => r.case.startsWith("tiny") && r.tool.startsWith("scp"));
  if (tiny?.reps) {
    // "Not slower" compares two trees, which one run cannot: issue 18's 63 ms (735 ms for
    // scp + ssh + scp) came from another run on a faster day; the tiny job has measured
    // 115–168 ms on this machine type since. Judge it back to back (bench/README.md).
    check(
      undefined,
      `tiny job: ${fmt(tiny.wallS! * 1000)} ms p50${
        tinyScp?.reps
          ? `, ${(tinyScp.wallS! / tiny.wallS!).toFixed(1)}× faster than scp + ssh + scp`
          : ""
      }; "not slower" needs the tree before issue 18 (${BASELINE_18}) run back to back`,
    );
  }
  if (lines.length === 0) return;
  console.log(
    `\nTargets (issue 18)${
      sizeMiB < 1024 ? ` — a ${sizeMiB} MiB run; the targets are for 1 GiB` : ""
    }:`,
  );
  for (const line of lines) console.log(line);
}

/**
 * Which code was measured: the commit, the files changed since it, and a hash of the
 * data-path sources as they were on disk (lib/, client.ts, server.ts), so a number can
 * be tied to the code that produced it while the data path is being tuned.
 */
async function codeVersion(): Promise<Record<string, unknown>> {
  const git = async (...args: string[]) => {
    try {
      const out = await new Deno.Command("git", {
        args,
        cwd: ROOT,
        stdout: "piped",
        stderr: "null",
      })
        .output();
      return out.code === 0 ? new TextDecoder().decode(out.stdout).trimEnd() : "";
    } catch {
      return "";
    }
  };
  const hash = createHash("sha256");
  const files: string[] = [path.join(ROOT, "client.ts"), path.join(ROOT, "server.ts")];
  const walk = async (dir: string) => {
    for await (const entry of Deno.readDir(dir)) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory) await walk(full);
      else if (entry.name.endsWith(".ts")) files.push(full);
    }
  };
  await walk(path.join(ROOT, "lib"));
  for (const file of files.sort()) {
    hash.update(path.relative(ROOT, file));
    hash.update(await Deno.readFile(file));
  }
  const dirty = (await git("status", "--porcelain", "--", "lib", "client.ts", "server.ts"))
    .split("\n").filter(Boolean).map((line) => line.slice(3));
  return {
    commit: (await git("rev-parse", "--short=12", "HEAD")) || undefined,
    changed_since_commit: dirty,
    source_sha256: hash.digest("hex").slice(0, 16),
  };
}

async function record(): Promise<void> {
  if (values["no-record"]) return;
  const dir = path.join(BENCH_DIR, "results");
  await Deno.mkdir(dir, { recursive: true });
  const file = path.join(dir, `${runId.slice(0, 10)}.jsonl`);
  const host = {
    cpus: navigator.hardwareConcurrency,
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
    ssh: sshd && typeof sshd === "object" ? sshd.version : undefined,
  };
  const code = await codeVersion();
  const lines = rows.map((r) =>
    JSON.stringify({
      bench: "recon",
      run_id: runId,
      size_mib: sizeMiB,
      repeat: REPEAT,
      host,
      code,
      machine_busy_at_start: machineBusyAtStart,
      case: r.case,
      tool: r.tool,
      reps: r.reps,
      bytes: r.bytes,
      mb_per_s: r.mbPerS && round(r.mbPerS, 1),
      wall_s: r.wallS && round(r.wallS, 4),
      cpu_s_per_gib: r.cpuSPerGiB && round(r.cpuSPerGiB, 3),
      client_cpu_s: r.clientCpuS && round(r.clientCpuS, 3),
      server_cpu_s: r.serverCpuS && round(r.serverCpuS, 3),
      client_peak_rss_mb: r.clientRssMB && round(r.clientRssMB, 1),
      server_peak_rss_mb: r.serverRssMB && round(r.serverRssMB, 1),
      note: r.note,
      ...r.extra,
    }) + "\n"
  ).join("");
  await Deno.writeTextFile(file, lines, { append: true });
  console.log(`\nappended ${rows.length} rows to ${path.relative(ROOT, file)}`);
}

// ---------------------------------------------------------------------------

const started = performance.now();
try {
  log(`work directory ${work}; big transfer ${label(SIZE)}, ${REPEAT} runs per case`);
  await makeFile(SRC, SIZE);
  const busy = await waitForQuiet(180_000);
  machineBusyAtStart = round(busy, 2);
  if (busy >= 0.15) {
    log(
      `WARNING: other work keeps ${
        (busy * 100).toFixed(0)
      }% of the CPUs busy: numbers will be noisy`,
    );
  }
  await Deno.writeFile(TINY, crypto.getRandomValues(new Uint8Array(1000)));
  const cases: [string, () => Promise<void>][] = [
    ["startup", caseStartup],
    ["upload", caseUpload],
    ["download", caseDownload],
    ["floor", caseFloor],
    ["cores", caseCores],
    ["backend", caseBackend],
    ["tiny", caseTiny],
    ["concurrent", caseConcurrent],
    ["status", caseStatus],
    ["knobs", caseKnobs],
    ["store", caseStore],
    ["slurm", caseSlurm],
    ["metrics", caseMetrics],
    ["pacs", () => casePacs({ work, repeat: REPEAT, rows, log })],
  ];
  for (const [name, run] of cases) {
    if (!CASES.has(name) || interrupted) continue;
    try {
      await run();
    } catch (error) {
      log(`case ${name} failed: ${(error as Error).stack}`);
      rows.push(failedRow(name, "(case)", (error as Error).message.split("\n")[0]));
    }
  }
} finally {
  await cleanup();
}
const code = await codeVersion();
const changed = (code.changed_since_commit as string[]).length;
console.log(
  `\nrecon benchmark of ${code.commit ?? "?"}${
    changed ? ` + ${changed} changed files` : ""
  } (source ${code.source_sha256}), ${
    label(SIZE)
  }, median of ${REPEAT} (tiny job and start-up: ${TINY_REPEAT}); ` +
    `MB = 10^6 bytes; CPU = user+sys of both ends; RSS = peak (VmHWM) of each end; ` +
    `deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} CPUs, ${
      ((performance.now() - started) / 1000).toFixed(0)
    } s\n`,
);
const floors = await computeFloors();
printTable();
printTargets();
printFloor(floors);
printTargets18(floors);
await record();
const left = liveProcesses();
if (left.length > 0) log(`processes still running after cleanup: ${left.join(", ")}`);
