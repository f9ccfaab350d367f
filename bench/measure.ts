/**
 * Measuring processes for the benchmark: wall time, CPU seconds (user + sys) and peak
 * RSS of each end, and keeping track of every process the benchmark starts so that
 * each one is stopped by its PID, whatever happens.
 *
 * Two methods, chosen per kind of process:
 *
 * - **Short-lived commands** (recon-client, scp, the raw-TCP and Python peers) run
 *   under bench/rusage.py, which forks them, reaps them with wait4() and reports the
 *   kernel's exact figures: CPU of the command and every descendant it reaped, the
 *   largest VmHWM in that tree, and the wall time from fork to reaping (the wrapper's
 *   own start-up is not counted).
 * - **Long-lived daemons** (recon-server, sshd) are read from /proc around each run:
 *   CPU = Δ(utime + stime + cutime + cstime) of the daemon, which includes the
 *   children it reaped in the meantime (the job script; sshd's per-connection
 *   processes); peak RSS = the daemon's VmHWM after resetting it at the start of the
 *   run (`echo 5 > /proc/PID/clear_refs`), and the largest VmHWM of any descendant,
 *   sampled every 20 ms (a high-water mark only grows, so sampling loses at most the
 *   growth of a child's last 20 ms).
 *
 * @module
 */
import * as path from "node:path";
import { fileURLToPath } from "node:url";

export const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.dirname(BENCH_DIR);
const RUSAGE = path.join(BENCH_DIR, "rusage.py");
const CLOCK_TICKS = 100; // sysconf(_SC_CLK_TCK) on Linux x86-64 and arm64

const decoder = new TextDecoder();

// ---------------------------------------------------------------------------
// Deno 2 lets a program read /proc/<pid>/* and write clear_refs only with
// --allow-all, whatever --allow-read says; `make bench` passes the test permissions
// (which include --allow-run, so nothing is gained by refusing). Without that access
// every daemon would read as 0 CPU and 0 MB, so the bench re-runs itself with -A.

/** Re-run the main module with `deno run -A` when /proc is not readable; never returns then. */
export async function ensureProcAccess(): Promise<void> {
  try {
    Deno.readTextFileSync(`/proc/${Deno.pid}/stat`);
    return;
  } catch (error) {
    if (
      !(error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied)
    ) {
      throw new Error(`cannot read /proc (Linux only): ${(error as Error).message}`);
    }
  }
  console.error("[bench] /proc needs --allow-all in Deno 2: running again with deno run -A");
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", Deno.mainModule, ...Deno.args],
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  const forward = (signal: Deno.Signal) => () => {
    try {
      child.kill(signal);
    } catch { /* gone */ }
  };
  Deno.addSignalListener("SIGINT", forward("SIGINT"));
  Deno.addSignalListener("SIGTERM", forward("SIGTERM"));
  const status = await child.status;
  Deno.exit(status.signal ? 128 + (status.signal === "SIGINT" ? 2 : 15) : status.code);
}

// ---------------------------------------------------------------------------
// Every process we start, so that cleanup can stop each one by PID.

const live = new Map<number, { child: Deno.ChildProcess; label: string }>();

/** Remember a child until it exits. */
export function track(child: Deno.ChildProcess, label: string): void {
  live.set(child.pid, { child, label });
  child.status.finally(() => live.delete(child.pid)).catch(() => {});
}

/** SIGTERM `child`, then SIGKILL after `graceMs`; resolves when it has exited. */
export async function stopProcess(child: Deno.ChildProcess, graceMs = 5000): Promise<void> {
  let exited = false;
  const status = child.status.then(() => (exited = true)).catch(() => (exited = true));
  try {
    child.kill("SIGTERM");
  } catch { /* already gone */ }
  const timer = setTimeout(() => {
    if (!exited) {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
    }
  }, graceMs);
  await status;
  clearTimeout(timer);
}

/** Stop every process still running (used on errors and on Ctrl-C). */
export async function stopAll(): Promise<void> {
  await Promise.all([...live.values()].map(({ child }) => stopProcess(child, 3000)));
}

/** Labels of processes still running (should be none at the end). */
export function liveProcesses(): string[] {
  return [...live.entries()].map(([pid, { label }]) => `${label} (pid ${pid})`);
}

// ---------------------------------------------------------------------------
// /proc readers.

/** utime + stime (+ cutime + cstime) in seconds; null when the process is gone. */
export function cpuSeconds(pid: number, withChildren = true): number | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return null;
  }
  // comm is in parentheses and may contain spaces; fields resume after the last ")".
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state); utime is field 14 → index 11.
  const [utime, stime, cutime, cstime] = fields.slice(11, 15).map(Number);
  return (utime + stime + (withChildren ? cutime + cstime : 0)) / CLOCK_TICKS;
}

/**
 * CPU seconds (user + sys) of one thread of `pid`: its main thread by default (the one
 * that runs a Deno program's JavaScript and its event loop); null when it is gone.
 */
export function threadCpuSeconds(pid: number, tid = pid): number | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/task/${tid}/stat`);
  } catch {
    return null;
  }
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/**
 * The main-thread CPU of a command run under bench/rusage.py (the wrapper's PID, from
 * {@link MeasuredOptions.onSpawn}): sampled every 20 ms while it runs, since a thread's
 * counters vanish with the process; the last sample is at most 20 ms old.
 */
export class MainThreadSampler {
  #wrapper: number;
  #last = new Map<number, number>();
  #timer: ReturnType<typeof setInterval>;

  constructor(wrapperPid: number) {
    this.#wrapper = wrapperPid;
    this.#timer = setInterval(() => this.sample(), 20);
  }

  sample(): void {
    for (const pid of descendants(this.#wrapper)) {
      const cpu = threadCpuSeconds(pid);
      if (cpu !== null) this.#last.set(pid, cpu);
    }
  }

  /** Stop sampling; the main-thread CPU seconds of the command (summed over its processes). */
  stop(): number {
    clearInterval(this.#timer);
    let sum = 0;
    for (const cpu of this.#last.values()) sum += cpu;
    return sum;
  }
}

function statusField(pid: number, field: string): number | null {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/status`);
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

/** Peak RSS (VmHWM) in KiB. */
export function peakRssKiB(pid: number): number | null {
  return statusField(pid, "VmHWM");
}

/** Current RSS in KiB. */
export function rssKiB(pid: number): number | null {
  return statusField(pid, "VmRSS");
}

/** Reset the VmHWM of `pid` to its current RSS (Linux ≥ 4.0); false when refused. */
export function resetPeakRss(pid: number): boolean {
  try {
    Deno.writeTextFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

/** PIDs of every descendant of `pid` (children of any of its threads, recursively). */
export function descendants(pid: number): number[] {
  const found: number[] = [];
  const visit = (parent: number) => {
    let tasks: string[];
    try {
      tasks = [...Deno.readDirSync(`/proc/${parent}/task`)].map((entry) => entry.name);
    } catch {
      return;
    }
    for (const task of tasks) {
      let text = "";
      try {
        text = Deno.readTextFileSync(`/proc/${parent}/task/${task}/children`);
      } catch {
        continue;
      }
      for (const word of text.split(" ")) {
        const child = Number(word);
        if (word && Number.isInteger(child) && !found.includes(child)) {
          found.push(child);
          visit(child);
        }
      }
    }
  };
  visit(pid);
  return found;
}

/** CPU seconds (with reaped children) of every process now, and whether it is a kernel thread. */
export type ProcessSnapshot = Map<number, { cpu: number; kernel: boolean }>;

const PF_KTHREAD = 0x00200000;

/** Snapshot every process's CPU counters (about 5 ms for a few hundred processes). */
export function snapshotProcesses(): ProcessSnapshot {
  const snapshot: ProcessSnapshot = new Map();
  for (const entry of Deno.readDirSync("/proc")) {
    const pid = Number(entry.name);
    if (!Number.isInteger(pid)) continue;
    try {
      const text = Deno.readTextFileSync(`/proc/${pid}/stat`);
      const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
      const [utime, stime, cutime, cstime] = fields.slice(11, 15).map(Number);
      snapshot.set(pid, {
        cpu: (utime + stime + cutime + cstime) / CLOCK_TICKS,
        kernel: (Number(fields[6]) & PF_KTHREAD) !== 0,
      });
    } catch { /* gone */ }
  }
  return snapshot;
}

function ancestors(pid: number): number[] {
  const found: number[] = [];
  let current = pid;
  while (current > 1) {
    try {
      const text = Deno.readTextFileSync(`/proc/${current}/stat`);
      current = Number(text.slice(text.lastIndexOf(")") + 2).split(" ")[1]);
      if (current > 1) found.push(current);
    } catch {
      break;
    }
  }
  return found;
}

/**
 * CPU that processes other than the benchmark's own used between two snapshots:
 * `foreign` for user processes (other people's tests, say: a disturbed run), `kernel`
 * for kernel threads (page-cache writeback, softirq: side effects of the run itself).
 */
export function otherCpu(
  before: ProcessSnapshot,
  after: ProcessSnapshot,
): { foreign: number; kernel: number } {
  const ours = new Set([Deno.pid, ...descendants(Deno.pid), ...ancestors(Deno.pid)]);
  let foreign = 0;
  let kernel = 0;
  for (const [pid, now] of after) {
    if (ours.has(pid)) continue;
    const delta = now.cpu - (before.get(pid)?.cpu ?? 0);
    if (delta <= 0) continue;
    if (now.kernel) kernel += delta;
    else foreign += delta;
  }
  return { foreign, kernel };
}

/** What a {@link DaemonMeter} measured over one run. */
export interface DaemonUsage {
  cpuSeconds: number;
  /** max(VmHWM of the daemon since the run started, VmHWM of any descendant seen). */
  peakRssKiB: number;
  /** VmHWM of the daemon process itself since the run started. */
  rootPeakRssKiB: number;
  /** Largest sum of current RSS over the daemon and its descendants, as sampled. */
  treeRssKiB: number;
  /** CPU seconds of the daemon's main thread alone (JavaScript and the event loop for deno). */
  mainThreadCpuSeconds: number;
}

/**
 * CPU and peak RSS of a long-lived daemon (and whatever it starts) over one run:
 * `start()` before the run, `stop()` after it.
 */
export class DaemonMeter {
  #pid: number;
  #startCpu = 0;
  #startMain = 0;
  #peakChild = 0;
  #treeRss = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #resetOk = false;

  constructor(pid: number) {
    this.#pid = pid;
  }

  start(): void {
    this.#resetOk = resetPeakRss(this.#pid);
    this.#startCpu = cpuSeconds(this.#pid) ?? 0;
    this.#startMain = threadCpuSeconds(this.#pid) ?? 0;
    this.#peakChild = 0;
    this.#treeRss = 0;
    this.#timer = setInterval(() => this.#sample(), 20);
  }

  #sample(): void {
    let tree = rssKiB(this.#pid) ?? 0;
    for (const child of descendants(this.#pid)) {
      this.#peakChild = Math.max(this.#peakChild, peakRssKiB(child) ?? 0);
      tree += rssKiB(child) ?? 0;
    }
    this.#treeRss = Math.max(this.#treeRss, tree);
  }

  /**
   * Wait until the daemon has no children left (per-connection processes gone) and
   * its CPU counter stopped moving for 200 ms (it finished deleting files, logging…),
   * at most `maxMs`.
   */
  async settle(maxMs = 5000, waitForChildren = false): Promise<void> {
    const deadline = Date.now() + maxMs;
    let last = cpuSeconds(this.#pid);
    let stableSince = Date.now();
    while (Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      this.#sample();
      const now = cpuSeconds(this.#pid);
      if (now !== last) {
        last = now;
        stableSince = Date.now();
        continue;
      }
      if (waitForChildren && descendants(this.#pid).length > 0) continue;
      if (Date.now() - stableSince >= 200) return;
    }
  }

  stop(): DaemonUsage {
    this.#sample();
    clearInterval(this.#timer);
    this.#timer = undefined;
    const cpu = (cpuSeconds(this.#pid) ?? this.#startCpu) - this.#startCpu;
    const root = peakRssKiB(this.#pid) ?? 0;
    return {
      cpuSeconds: cpu,
      peakRssKiB: Math.max(root, this.#peakChild),
      rootPeakRssKiB: this.#resetOk ? root : NaN,
      treeRssKiB: this.#treeRss,
      mainThreadCpuSeconds: (threadCpuSeconds(this.#pid) ?? this.#startMain) - this.#startMain,
    };
  }
}

// ---------------------------------------------------------------------------
// Commands run under bench/rusage.py.

/** What bench/rusage.py reports. */
export interface CommandUsage {
  wallSeconds: number;
  cpuSeconds: number;
  userSeconds: number;
  sysSeconds: number;
  peakRssKiB: number;
  exitCode: number | null;
  signal: number | null;
  stdout: string;
  stderr: string;
}

/** Options of {@link spawnMeasured}. */
export interface MeasuredOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Kill the command after this long. Default 10 min. */
  timeoutMs?: number;
  /** Called with each stdout line as it arrives (e.g. a receiver printing its port). */
  onLine?: (line: string) => void;
  label?: string;
  /** Run the command on these CPUs only (`taskset -c CPUS`, e.g. "1"); its children inherit. */
  cpus?: string;
  /** Called with the wrapper's PID once it is spawned (the command is its only child). */
  onSpawn?: (pid: number) => void;
}

/** A measured command that is running. */
export interface MeasuredProcess {
  /** The wrapper's PID (signals are forwarded to the command). */
  pid: number;
  /** Resolves when the command has ended; rejects on timeout or a failed report. */
  done: Promise<CommandUsage>;
  stop(): Promise<void>;
}

const STREAM_CAP = 64 * 1024;

async function drain(
  stream: ReadableStream<Uint8Array>,
  onLine?: (line: string) => void,
): Promise<string> {
  let kept = "";
  let pending = "";
  for await (const chunk of stream) {
    const text = decoder.decode(chunk, { stream: true });
    kept = (kept + text).slice(-STREAM_CAP);
    if (onLine) {
      pending += text;
      let newline: number;
      while ((newline = pending.indexOf("\n")) >= 0) {
        onLine(pending.slice(0, newline));
        pending = pending.slice(newline + 1);
      }
    }
  }
  if (onLine && pending) onLine(pending);
  return kept;
}

let reportCounter = 0;

/** Start `program args` under bench/rusage.py; `workDir` holds the report file. */
export function spawnMeasured(
  workDir: string,
  program: string,
  args: string[],
  options: MeasuredOptions = {},
): MeasuredProcess {
  const report = path.join(workDir, `.rusage-${Deno.pid}-${++reportCounter}.json`);
  const command = options.cpus ? ["taskset", "-c", options.cpus, program] : [program];
  const child = new Deno.Command("python3", {
    args: [RUSAGE, report, "--", ...command, ...args],
    env: options.env,
    cwd: options.cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const label = options.label ?? path.basename(program);
  track(child, label);
  options.onSpawn?.(child.pid);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    stopProcess(child);
  }, options.timeoutMs ?? 600_000);
  const done = (async () => {
    const [stdout, stderr, status] = await Promise.all([
      drain(child.stdout, options.onLine),
      drain(child.stderr),
      child.status,
    ]);
    clearTimeout(timer);
    if (timedOut) {
      throw new Error(`${label} timed out after ${(options.timeoutMs ?? 600_000) / 1000} s`);
    }
    let raw: Record<string, number | null>;
    try {
      raw = JSON.parse(await Deno.readTextFile(report));
      await Deno.remove(report);
    } catch {
      throw new Error(
        `${label} ended (status ${status.code}) without a usage report:\n${stderr.slice(-2000)}`,
      );
    }
    return {
      wallSeconds: raw.wall_s as number,
      userSeconds: raw.user_s as number,
      sysSeconds: raw.sys_s as number,
      cpuSeconds: (raw.user_s as number) + (raw.sys_s as number),
      peakRssKiB: raw.maxrss_kib as number,
      exitCode: raw.exit_code,
      signal: raw.signal,
      stdout,
      stderr,
    };
  })();
  done.catch(() => {});
  return { pid: child.pid, done, stop: () => stopProcess(child) };
}

/** Run a measured command to its end; throws when it exits non-zero. */
export async function runMeasured(
  workDir: string,
  program: string,
  args: string[],
  options: MeasuredOptions = {},
): Promise<CommandUsage> {
  const usage = await spawnMeasured(workDir, program, args, options).done;
  if (usage.exitCode !== 0) {
    throw new Error(
      `${
        options.label ?? path.basename(program)
      } failed (exit ${usage.exitCode}, signal ${usage.signal}):\n` +
        usage.stderr.slice(-2000),
    );
  }
  return usage;
}

// ---------------------------------------------------------------------------
// Statistics.

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

/** Nearest-rank percentile (p in 0..100). */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(sorted.length, rank) - 1];
}

export function max(values: number[]): number {
  return values.length === 0 ? NaN : Math.max(...values);
}

/** Wait `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A free TCP port on 127.0.0.1 (closed again at once; the caller binds it soon after). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Wait until something accepts connections on 127.0.0.1:`port`. */
export async function waitForPort(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      return;
    } catch (error) {
      if (Date.now() > deadline) {
        throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms (${error})`);
      }
      await sleep(50);
    }
  }
}

/** Write `bytes` of pseudo-random data to `file` (incompressible; 8 MiB pattern blocks). */
export async function makeFile(file: string, bytes: number): Promise<void> {
  const block = new Uint8Array(8 * 1024 * 1024);
  for (let offset = 0; offset < block.length; offset += 65536) {
    crypto.getRandomValues(block.subarray(offset, offset + 65536));
  }
  using out = await Deno.open(file, { write: true, create: true, truncate: true });
  let written = 0;
  while (written < bytes) {
    const n = Math.min(block.length, bytes - written);
    // Vary each block a little so no two blocks are identical.
    new DataView(block.buffer).setFloat64(0, written);
    let done = 0;
    while (done < n) done += await out.write(block.subarray(done, n));
    written += n;
  }
}

/** One row of the benchmark's table (bench/run.ts prints and records them; the cases add them). */
export interface BenchRow {
  case: string;
  tool: string;
  reps: number;
  bytes?: number;
  /** Median wall seconds. */
  wallS?: number;
  mbPerS?: number;
  /** Median CPU seconds (user+sys) of both ends, per GiB moved. */
  cpuSPerGiB?: number;
  clientCpuS?: number;
  serverCpuS?: number;
  /** Largest peak RSS over the runs, MB. */
  clientRssMB?: number;
  serverRssMB?: number;
  note?: string;
  extra?: Record<string, unknown>;
}
