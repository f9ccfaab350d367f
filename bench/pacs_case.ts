/**
 * bench/run.ts's `pacs` case (issue 17; DESIGN: every new capability states its cost in
 * the bench): what delivering a job's DICOM results to a PACS costs, against dcmtk's
 * `storescu`, the reference C-STORE SCU, and a real Orthanc (tests/support/orthanc.ts,
 * TCP_NODELAY=1) on 127.0.0.1.
 *
 * Three series: 32 and 120 files of 512 × 512 16-bit pixels (~513 KiB each, made with
 * dcmtk's dump2dcm, explicit VR little endian, tests/support/dicom_series.ts), and a real
 * BART series of small files (examples/make_phantom.sh --3d --size 64 --coils 1, then
 * examples/bart_recon.sh: 64 slices of 64 × 64, ~9 KB each). For each, interleaved and
 * rotated each round:
 *
 * - **sendInstances**: lib/server/dicom_send.ts in this process (dcmjs-dimse; at most 50
 *   files per association): wall time of the call, this process's CPU over it;
 * - **storescu** `-R`, the same files on one association, `TCP_NODELAY=1` in its
 *   environment, under bench/rusage.py (its process start is in its wall time);
 * - **end to end**: a recon-server with `DESTINATION_PACS` and `DEFAULT_DESTINATIONS =
 *   PACS` runs a script that copies the series into RECON_OUTPUT_DIR (`recon-client
 *   --no-download`); the time is the job's `finished_at` to its PACS delivery's
 *   `finished_at` (state `delivered`), both read from one `recon-client jobs --json` after
 *   the delivered line appeared in the server's log (polling `jobs --json` meanwhile would
 *   add a client session's CPU to the server's). The server's CPU and peak RSS are read
 *   over the delivery alone: its CPU counter and VmHWM are taken (VmHWM reset) when the
 *   log, polled every 10 ms, says the job succeeded, and read again once it says
 *   delivered and the CPU counter has stopped moving.
 *
 * Orthanc's instances are deleted before every run (it would otherwise ignore a re-sent
 * instance, which is cheaper than storing it), every run is checked (every file stored:
 * the C-STORE statuses, storescu's exit status, Orthanc's instance count, the delivery's
 * files_sent), and Orthanc's own CPU and VmHWM are read around each run.
 *
 * @module
 */
import * as path from "node:path";
import { parseDestination } from "../lib/opts/destination.ts";
import { isNotDicom, readDicomHeader } from "../lib/server/dicom_file.ts";
import type { Instance } from "../lib/server/dicom_send.ts";
import type { JobInfo } from "../lib/wire/protocol.ts";
import { makeSeries } from "../tests/support/dicom_series.ts";
import { Orthanc } from "../tests/support/orthanc.ts";
import {
  type BenchRow,
  cpuSeconds,
  max,
  median,
  otherCpu,
  peakRssKiB,
  resetPeakRss,
  ROOT,
  rssKiB,
  runMeasured,
  sleep,
  snapshotProcesses,
} from "./measure.ts";
import { ReconServerProcess, runClient } from "./recon_server.ts";

/** A row of bench/run.ts's table. */
export type PacsRow = BenchRow;

/** What bench/run.ts gives the case. */
export interface PacsCaseContext {
  /** The bench's work directory (removed by run.ts at the end). */
  work: string;
  /** Runs per tool and series (--repeat). */
  repeat: number;
  /** run.ts's rows: the case appends its own. */
  rows: PacsRow[];
  log: (line: string) => void;
}

/** The recon-server's peak RSS during the delivery of the biggest series must stay under this. */
export const RSS_LIMIT_MB = 150;
/** The BART series: make_phantom.sh --3d --size N (N slices of N × N). */
const BART_SIZE = 64;
const LARGE_PIXELS = 512;
const RUN_TIMEOUT_MS = 180_000;
/** A run during which other processes used more than this share of the CPUs is run once more. */
const DISTURBED_SHARE = 0.1;
/** Seconds the case may spend waiting for quiet before re-running disturbed runs. */
const QUIET_BUDGET_MS = 120_000;
const GIB = 1024 ** 3;
const CALLING_AET = "RECONBENCH";

type ToolId = "send" | "storescu" | "server";

const TOOLS: Record<ToolId, string> = {
  send: "recon sendInstances, in process",
  storescu: "dcmtk storescu, 1 association",
  server: "recon-server: job end → delivered",
};

interface BenchSeries {
  /** Its case name in the table. */
  label: string;
  dir: string;
  files: Instance[];
  bytes: number;
  /** How it was made. */
  made: string;
}

/** One measured run: the sender (client) and Orthanc (server). */
interface RunSample {
  wallS: number;
  senderCpuS: number;
  /** NaN when not measured (the in-process sender). */
  senderRssKiB: number;
  pacsCpuS: number;
  pacsRssKiB: number;
  foreignCpuS: number;
  extra: Record<string, number>;
}

// ---------------------------------------------------------------------------
// Small helpers.

const round = (value: number, digits: number) => Math.round(value * 10 ** digits) / 10 ** digits;
const mb = (kib: number) => (kib * 1024) / 1e6;
const ms = (seconds: number) => `${(seconds * 1000).toFixed(seconds < 0.1 ? 1 : 0)} ms`;

/** CPU seconds (user + sys) of this process, all threads, without children. */
const ownCpu = () => cpuSeconds(Deno.pid, false) ?? NaN;

/** Busy CPU seconds of the whole machine since boot, from /proc/stat. */
function machineCpuSeconds(): number {
  const line = Deno.readTextFileSync("/proc/stat").split("\n")[0];
  const [user, nice, system, _idle, _iowait, irq, softirq, steal] = line.split(/\s+/).slice(1)
    .map(Number);
  return (user + nice + system + irq + softirq + steal) / 100;
}

/** The machine's busy share over 2 s. */
async function busyShare(): Promise<number> {
  const before = machineCpuSeconds();
  await sleep(2000);
  return (machineCpuSeconds() - before) / 2 / navigator.hardwareConcurrency;
}

/** Wait until `pid`'s CPU counter has not moved for 200 ms (at most `maxMs`). */
async function settle(pid: number, maxMs = 3000): Promise<void> {
  const deadline = Date.now() + maxMs;
  let last = cpuSeconds(pid);
  let stableSince = Date.now();
  while (Date.now() < deadline) {
    await sleep(50);
    const now = cpuSeconds(pid);
    if (now !== last) {
      last = now;
      stableSince = Date.now();
    } else if (Date.now() - stableSince >= 200) return;
  }
}

/**
 * A daemon's CPU and VmHWM over a run, without sampling while it runs (the in-process
 * sender's CPU must not include the bench's /proc reads): `start()`, then `settle()`.
 */
class Window {
  #pid: number;
  #cpu = 0;
  constructor(pid: number) {
    this.#pid = pid;
  }
  start(): void {
    resetPeakRss(this.#pid);
    this.#cpu = cpuSeconds(this.#pid) ?? NaN;
  }
  /** Its CPU and VmHWM since start, once its CPU counter has stopped moving. */
  async settle(maxMs = 3000): Promise<{ cpuS: number; rssKiB: number }> {
    await settle(this.#pid, maxMs);
    return {
      cpuS: (cpuSeconds(this.#pid) ?? NaN) - this.#cpu,
      rssKiB: peakRssKiB(this.#pid) ?? NaN,
    };
  }
}

// ---------------------------------------------------------------------------
// The series.

async function instancesOf(paths: string[]): Promise<Instance[]> {
  const instances: Instance[] = [];
  for (const file of paths.sort()) {
    const header = await readDicomHeader(file);
    if (isNotDicom(header)) throw new Error(`${file} is not DICOM: ${header.notDicom}`);
    instances.push({
      path: file,
      sopClassUid: header.sopClassUid,
      sopInstanceUid: header.sopInstanceUid,
    });
  }
  return instances;
}

async function bytesOf(files: Instance[]): Promise<number> {
  let total = 0;
  for (const file of files) total += (await Deno.stat(file.path)).size;
  return total;
}

async function sizedSeries(dir: string, count: number): Promise<BenchSeries> {
  const made = await makeSeries(dir, count, {
    syntax: "explicit",
    size: LARGE_PIXELS,
    prefix: `s${count}`,
  });
  const files = made.map((f) => ({
    path: f.path,
    sopClassUid: f.sopClassUid,
    sopInstanceUid: f.sopInstanceUid,
  }));
  const bytes = await bytesOf(files);
  return {
    label: `${count} × ${Math.round(bytes / count / 1024)} KiB`,
    dir,
    files,
    bytes,
    made: `dump2dcm +te, ${LARGE_PIXELS} × ${LARGE_PIXELS} × 16 bit`,
  };
}

/** BART's phantom reconstructed by examples/bart_recon.sh; dump2dcm's when bart is missing. */
async function bartSeries(dir: string, scratch: string): Promise<BenchSeries> {
  const run = async (program: string, args: string[], env?: Record<string, string>) => {
    const out = await new Deno.Command(program, { args, env, stdout: "piped", stderr: "piped" })
      .output();
    if (!out.success) throw new Error(new TextDecoder().decode(out.stderr).trim().slice(-500));
  };
  let made: string;
  let files: Instance[];
  try {
    const kspace = path.join(scratch, "kspace");
    await run(path.join(ROOT, "examples", "make_phantom.sh"), [
      kspace,
      "--3d",
      "--size",
      String(BART_SIZE),
      "--coils",
      "1",
    ]);
    await Deno.mkdir(dir, { recursive: true });
    await run(path.join(ROOT, "examples", "bart_recon.sh"), [kspace, "--name", "bart"], {
      RECON_OUTPUT_DIR: dir,
    });
    const paths = [...Deno.readDirSync(dir)].filter((e) => e.name.endsWith(".dcm"))
      .map((e) => path.join(dir, e.name));
    files = await instancesOf(paths);
    made = `BART phantom ${BART_SIZE}³, 1 coil, examples/bart_recon.sh`;
  } catch (error) {
    // Without bart: as many dcmtk-made files of the same matrix.
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    const dcmtk = await makeSeries(dir, BART_SIZE, {
      syntax: "explicit",
      size: BART_SIZE,
      prefix: "bart",
    });
    files = dcmtk.map((f) => ({
      path: f.path,
      sopClassUid: f.sopClassUid,
      sopInstanceUid: f.sopInstanceUid,
    }));
    made = `dump2dcm ${BART_SIZE} × ${BART_SIZE} (BART failed: ${
      (error as Error).message.split("\n")[0]
    })`;
  }
  const bytes = await bytesOf(files);
  return {
    label: `BART ${files.length} × ${(bytes / files.length / 1000).toFixed(1)} KB`,
    dir,
    files,
    bytes,
    made,
  };
}

// ---------------------------------------------------------------------------
// Orthanc.

async function clearOrthanc(orthanc: Orthanc): Promise<void> {
  for (const id of await orthanc.get<string[]>("/patients")) {
    const response = await fetch(`${orthanc.url}/patients/${id}`, { method: "DELETE" });
    await response.body?.cancel();
    if (!response.ok) throw new Error(`Orthanc DELETE /patients/${id}: HTTP ${response.status}`);
  }
  const left = await orthanc.count();
  if (left !== 0) throw new Error(`Orthanc still holds ${left} instances after deleting them`);
}

async function expectStored(orthanc: Orthanc, series: BenchSeries, tool: string): Promise<void> {
  const stored = await orthanc.count();
  if (stored !== series.files.length) {
    throw new Error(`${tool}: Orthanc stores ${stored} instances, expected ${series.files.length}`);
  }
}

// ---------------------------------------------------------------------------
// The recon-server's script and its log.

/** RECON_SCRIPT: copies the series named by `--series DIR` into RECON_OUTPUT_DIR. */
const COPY_SCRIPT = `#!/bin/sh
set -eu
shift
series=
while [ "$#" -ge 2 ]; do
	[ "$1" != --series ] || series=$2
	shift 2
done
cp "$series"/*.dcm "$RECON_OUTPUT_DIR/"
echo "PROGRESS 100"
`;

/** Reads the lines a file gains. */
class LogTail {
  #file: string;
  #offset: number;
  #pending = "";
  constructor(file: string) {
    this.#file = file;
    this.#offset = Deno.statSync(file).size;
  }
  async lines(): Promise<string[]> {
    using file = await Deno.open(this.#file);
    await file.seek(this.#offset, Deno.SeekMode.Start);
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(65536);
    while (true) {
      const n = await file.read(buffer);
      if (n === null || n === 0) break;
      this.#pending += decoder.decode(buffer.subarray(0, n), { stream: true });
      this.#offset += n;
    }
    const lines = this.#pending.split("\n");
    this.#pending = lines.pop() ?? "";
    return lines;
  }
}

const LOG_LINE = /^(\S+) +(\S+) +recon-server: job (\S+): (.*)$/;

// ---------------------------------------------------------------------------
// The case.

/** The `pacs` case; appends its rows to `context.rows`. */
export async function casePacs(context: PacsCaseContext): Promise<void> {
  const { work, repeat, rows, log } = context;
  const base = path.join(work, "pacs");
  await Deno.mkdir(base, { recursive: true });
  const failed = (caseName: string, tool: string, why: string) =>
    rows.push({ case: caseName, tool, reps: 0, note: `NOT RUN: ${why}` });

  log("pacs: making the series (dcmtk dump2dcm; BART)");
  const series = [
    await bartSeries(path.join(base, "bart"), path.join(base, "bart_scratch")),
    await sizedSeries(path.join(base, "s32"), 32),
    await sizedSeries(path.join(base, "s120"), 120),
  ];
  const caseOf = (s: BenchSeries) => `PACS C-STORE, ${s.label}`;

  let orthanc: Orthanc;
  try {
    orthanc = await Orthanc.start();
  } catch (error) {
    failed("PACS C-STORE", "(case)", (error as Error).message.split("\n")[0]);
    return;
  }
  // run.ts's Ctrl-C handler stops what measure.ts tracks; Orthanc is not among them.
  const onSignal = () =>
    void orthanc.stop("SIGKILL").finally(() => Deno.remove(orthanc.dir, { recursive: true }))
      .catch(() => {});
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  let server: ReconServerProcess | undefined;
  try {
    const orthancPid = orthanc.pid!;
    const { sendInstances } = await import("../lib/server/dicom_send.ts");
    const destinationUrl =
      `dicom://${orthanc.aet}@127.0.0.1:${orthanc.dicomPort}?calling=${CALLING_AET}&timeout=30`;
    const destination = parseDestination("PACS", destinationUrl);
    const scuVersion = await runMeasured(work, "storescu", ["--version"]).then(
      (u) => /storescu (v\S+)/.exec(u.stdout)?.[1] ?? "?",
      () => undefined,
    );
    const script = path.join(base, "copy_series.sh");
    await Deno.writeTextFile(script, COPY_SCRIPT, { mode: 0o755 });
    const input = path.join(base, "input.bin");
    await Deno.writeFile(input, crypto.getRandomValues(new Uint8Array(1000)));
    server = await ReconServerProcess.start({
      dir: path.join(base, "server"),
      script,
      extra: { DESTINATION_PACS: destinationUrl, DEFAULT_DESTINATIONS: "PACS" },
    });
    const reconServer = server;
    const rssAfterStartMB = mb(rssKiB(server.pid) ?? NaN);
    log(`pacs: recon-server RSS after its start: ${rssAfterStartMB.toFixed(0)} MB`);
    const serverLog = path.join(path.dirname(server.opts), "recon.log");

    const inProcess = async (s: BenchSeries): Promise<RunSample> => {
      const pacs = new Window(orthancPid);
      pacs.start();
      // This process's memory growth: what the library holds while it sends.
      resetPeakRss(Deno.pid);
      const rssBefore = rssKiB(Deno.pid) ?? NaN;
      const cpu0 = ownCpu();
      const start = performance.now();
      const report = await sendInstances(destination, s.files);
      const wallS = (performance.now() - start) / 1000;
      const senderCpuS = ownCpu() - cpu0;
      const rssGrowth = (peakRssKiB(Deno.pid) ?? NaN) - rssBefore;
      const used = await pacs.settle();
      const bad = report.results.find((r) => !r.arrived);
      if (report.error || bad || report.stores !== s.files.length) {
        throw new Error(
          `sendInstances: ${report.error ?? bad?.reason ?? `${report.stores} C-STORE requests`}`,
        );
      }
      await expectStored(orthanc, s, "sendInstances");
      return {
        wallS,
        senderCpuS,
        senderRssKiB: NaN,
        pacsCpuS: used.cpuS,
        pacsRssKiB: used.rssKiB,
        foreignCpuS: 0,
        extra: { rss_growth_mb: mb(rssGrowth) },
      };
    };

    const storescu = async (s: BenchSeries): Promise<RunSample> => {
      if (scuVersion === undefined) throw new Error("storescu not found: apt-get install dcmtk");
      const pacs = new Window(orthancPid);
      pacs.start();
      const usage = await runMeasured(work, "storescu", [
        "-R",
        "-aet",
        CALLING_AET,
        "-aec",
        orthanc.aet,
        "127.0.0.1",
        String(orthanc.dicomPort),
        ...s.files.map((f) => f.path),
      ], { label: "storescu", env: { TCP_NODELAY: "1" }, timeoutMs: RUN_TIMEOUT_MS });
      const used = await pacs.settle();
      await expectStored(orthanc, s, "storescu");
      return {
        wallS: usage.wallSeconds,
        senderCpuS: usage.cpuSeconds,
        senderRssKiB: usage.peakRssKiB,
        pacsCpuS: used.cpuS,
        pacsRssKiB: used.rssKiB,
        foreignCpuS: 0,
        extra: {},
      };
    };

    const endToEnd = async (s: BenchSeries): Promise<RunSample> => {
      const tail = new LogTail(serverLog);
      const rssBeforeJob = rssKiB(reconServer.pid) ?? NaN;
      const pacs = new Window(orthancPid);
      pacs.start();
      const client = runClient(work, reconServer, [
        "--files",
        input,
        "--no-download",
        "--json",
        "--recon-options",
        JSON.stringify({ series: s.dir }),
      ], { timeoutMs: RUN_TIMEOUT_MS });
      client.catch(() => {});
      let ended:
        | { id: string; at: number; cpuS: number; rssKiB: number; seenAt: number }
        | undefined;
      let delivered: { at: number; attemptS: number; sameRead: boolean } | undefined;
      const deadline = Date.now() + RUN_TIMEOUT_MS;
      while (delivered === undefined) {
        if (Date.now() > deadline) throw new Error(`no delivery within ${RUN_TIMEOUT_MS} ms`);
        const lines = await tail.lines();
        const endedBefore = ended !== undefined;
        for (const line of lines) {
          const match = LOG_LINE.exec(line);
          if (!match) continue;
          const [, time, level, id, message] = match;
          if (ended === undefined && message.startsWith("succeeded with ")) {
            // Taken at once: the delivery starts right after this line.
            const cpuS = cpuSeconds(reconServer.pid) ?? NaN;
            resetPeakRss(reconServer.pid);
            const rss = rssKiB(reconServer.pid) ?? NaN;
            ended = { id, at: Date.parse(time), cpuS, rssKiB: rss, seenAt: Date.now() };
          } else if (ended && id === ended.id) {
            const done = /^delivered (\d+) DICOM file\(s\) to PACS .* in (\S+) s/.exec(message);
            if (done) {
              if (Number(done[1]) !== s.files.length) throw new Error(line);
              delivered = {
                at: Date.parse(time),
                attemptS: Number(done[2]),
                sameRead: !endedBefore,
              };
            } else if (level !== "INFO") throw new Error(`recon-server: ${line}`);
          } else if (/^(failed|cancelled|timed out)/.test(message)) {
            throw new Error(`recon-server: ${line}`);
          }
        }
        if (delivered === undefined) await sleep(10);
      }
      await settle(reconServer.pid); // the audit line, the metrics: until its counter stops
      const serverCpuS = (cpuSeconds(reconServer.pid) ?? NaN) - ended!.cpuS;
      const serverRssKiB = peakRssKiB(reconServer.pid) ?? NaN;
      const pacsUsed = await pacs.settle();
      const submitted = await client;
      const jobId = JSON.parse(submitted.stdout).job_id as string;
      if (jobId !== ended!.id) throw new Error(`the log's job ${ended!.id} is not ${jobId}`);
      const listed = await runClient(work, reconServer, ["jobs", "--json"]);
      const job = (JSON.parse(listed.stdout).jobs as JobInfo[]).find((j) => j.job_id === jobId);
      const delivery = job?.deliveries?.find((d) => d.destination === "PACS");
      if (
        !job?.finished_at || delivery?.state !== "delivered" || !delivery.finished_at ||
        delivery.files_sent !== s.files.length || delivery.files_failed !== 0
      ) {
        throw new Error(`jobs --json: ${JSON.stringify(job)}`);
      }
      await expectStored(orthanc, s, "recon-server");
      const wallS = (Date.parse(delivery.finished_at) - Date.parse(job.finished_at)) / 1000;
      return {
        wallS,
        // A read that found both lines took the CPU counter after part of the delivery.
        senderCpuS: delivered.sameRead ? NaN : serverCpuS,
        senderRssKiB: serverRssKiB,
        pacsCpuS: pacsUsed.cpuS,
        pacsRssKiB: pacsUsed.rssKiB,
        foreignCpuS: 0,
        extra: {
          log_latency_s: (delivered.at - ended!.at) / 1000,
          attempt_s: delivered.attemptS,
          // How late the bench saw the job's end (the server's CPU before it is not counted).
          seen_after_end_ms: ended!.seenAt - ended!.at,
          // Its RSS when the delivery started (the peak's starting point).
          rss_at_job_end_mb: mb(ended!.rssKiB),
          rss_before_job_mb: mb(rssBeforeJob),
        },
      };
    };

    const runners: Record<ToolId, (s: BenchSeries) => Promise<RunSample>> = {
      send: inProcess,
      storescu,
      server: endToEnd,
    };
    const order: ToolId[] = ["send", "storescu", "server"];
    const samples = new Map<string, RunSample[]>();
    const errors = new Map<string, string>();
    const disturbedRuns = new Map<string, number>();
    let quietBudget = QUIET_BUDGET_MS;
    const key = (s: BenchSeries, tool: ToolId) => `${s.label}|${tool}`;

    /** One run, checked; once more if other work used the CPUs meanwhile. */
    const once = async (s: BenchSeries, tool: ToolId, keep: boolean) => {
      const k = key(s, tool);
      if (errors.has(k)) return;
      try {
        for (let attempt = 0;; attempt++) {
          await clearOrthanc(orthanc);
          const before = snapshotProcesses();
          const start = performance.now();
          const sample = await runners[tool](s);
          const spanS = (performance.now() - start) / 1000;
          sample.foreignCpuS = otherCpu(before, snapshotProcesses()).foreign;
          const disturbed = sample.foreignCpuS >
            DISTURBED_SHARE * spanS * navigator.hardwareConcurrency;
          if (disturbed && attempt === 0 && quietBudget > 0) {
            log(
              `pacs: ${s.label}, ${TOOLS[tool]}: other processes used ${
                sample.foreignCpuS.toFixed(2)
              } CPU-s in ${spanS.toFixed(1)} s; once more when the machine is quieter`,
            );
            const waitStart = Date.now();
            while (Date.now() - waitStart < Math.min(20_000, quietBudget)) {
              if (await busyShare() < 0.15) break;
            }
            quietBudget -= Date.now() - waitStart;
            continue;
          }
          if (disturbed) disturbedRuns.set(k, (disturbedRuns.get(k) ?? 0) + 1);
          if (keep) samples.set(k, [...(samples.get(k) ?? []), sample]);
          return;
        }
      } catch (error) {
        const why = (error as Error).message.split("\n").slice(0, 3).join(" | ");
        errors.set(k, why);
        log(`pacs: ${s.label}, ${TOOLS[tool]}: ${why}`);
      }
    };

    log("pacs: warm-up round (not recorded)");
    for (const tool of order) await once(series[1], tool, false);
    for (let rep = 0; rep < repeat; rep++) {
      for (const s of series) {
        for (let i = 0; i < order.length; i++) {
          const tool = order[(rep + i) % order.length];
          log(`pacs: ${s.label}, ${TOOLS[tool]} (run ${rep + 1}/${repeat})`);
          await once(s, tool, true);
          const got = samples.get(key(s, tool))?.at(-1);
          if (got) {
            const rss = tool === "server"
              ? `; recon-server RSS ${got.extra.rss_before_job_mb.toFixed(0)} MB before the job, ${
                got.extra.rss_at_job_end_mb.toFixed(0)
              } at its end, peak ${mb(got.senderRssKiB).toFixed(0)} MB`
              : "";
            log(`  ${ms(got.wallS)}, sender CPU ${ms(got.senderCpuS)}${rss}`);
          }
        }
      }
    }

    // Rows.
    for (const s of series) {
      const n = s.files.length;
      const reference = samples.get(key(s, "storescu"));
      const referenceWall = reference ? median(reference.map((x) => x.wallS)) : NaN;
      for (const tool of order) {
        const k = key(s, tool);
        const got = samples.get(k) ?? [];
        if (errors.has(k) || got.length === 0) {
          failed(caseOf(s), TOOLS[tool], errors.get(k) ?? "no runs");
          continue;
        }
        const wallS = median(got.map((x) => x.wallS));
        const senderCpu = median(got.map((x) => x.senderCpuS).filter((x) => !Number.isNaN(x)));
        const pacsCpu = median(got.map((x) => x.pacsCpuS));
        const senderRss = max(got.map((x) => x.senderRssKiB));
        const extra: Record<string, unknown> = {
          files: n,
          wall_s_runs: got.map((x) => round(x.wallS, 4)),
          sender_cpu_s_runs: got.map((x) => round(x.senderCpuS, 3)),
          pacs_cpu_s_runs: got.map((x) => round(x.pacsCpuS, 3)),
          foreign_cpu_s_runs: got.map((x) => round(x.foreignCpuS, 2)),
          ms_per_file: round((wallS * 1000) / n, 2),
          sender_cpu_ms_per_file: round((senderCpu * 1000) / n, 3),
          series_made_with: s.made,
          ...(tool === "server" ? { server_rss_after_start_mb: round(rssAfterStartMB, 1) } : {}),
        };
        for (const name of Object.keys(got[0].extra)) {
          extra[name] = round(median(got.map((x) => x.extra[name])), 4);
          extra[`${name}_runs`] = got.map((x) => round(x.extra[name], 4));
        }
        const parts = [
          `${(wallS * 1000 / n).toFixed(2)} ms/file`,
          tool === "storescu" ? "" : `${(wallS / referenceWall).toFixed(2)} × storescu's time`,
          `sender CPU ${(senderCpu * 1000 / n).toFixed(2)} ms/file`,
        ];
        if (tool === "send") {
          const associations = Math.ceil(n / 50);
          parts.push(
            `${associations} association(s); wall of the call, this process's CPU; +${
              (extra.rss_growth_mb as number).toFixed(0)
            } MB RSS`,
          );
          extra.associations = associations;
        } else if (tool === "storescu") {
          parts.push(`${scuVersion} -R, TCP_NODELAY=1; process start included`);
        } else {
          parts.push(
            `job finished_at → delivery finished_at (jobs --json); log: ${
              ms(extra.log_latency_s as number)
            }; server CPU/RSS from the log's job end`,
          );
          const rssMB = mb(senderRss);
          parts.push(
            `recon-server peak RSS ${rssMB.toFixed(0)} MB (${
              (extra.rss_at_job_end_mb as number).toFixed(0)
            } MB at the job's end, ${rssAfterStartMB.toFixed(0)} MB after its start)${
              s === series[2]
                ? ` < ${RSS_LIMIT_MB} MB: ${rssMB < RSS_LIMIT_MB ? "MET" : "NOT MET"}`
                : ""
            }`,
          );
          const unmeasured = got.filter((x) => Number.isNaN(x.senderCpuS)).length;
          if (unmeasured > 0) parts.push(`${unmeasured} run(s) too quick for the CPU window`);
        }
        const disturbed = disturbedRuns.get(k) ?? 0;
        if (disturbed > 0) {
          parts.push(`DISTURBED: ${disturbed} run(s) shared the CPUs with other work`);
        }
        rows.push({
          case: caseOf(s),
          tool: TOOLS[tool],
          reps: got.length,
          bytes: s.bytes,
          wallS,
          mbPerS: s.bytes / 1e6 / wallS,
          cpuSPerGiB: (senderCpu + pacsCpu) / (s.bytes / GIB),
          clientCpuS: senderCpu,
          serverCpuS: pacsCpu,
          clientRssMB: Number.isNaN(senderRss) ? undefined : mb(senderRss),
          serverRssMB: mb(max(got.map((x) => x.pacsRssKiB))),
          note: `client = sender, server = Orthanc; ${parts.filter(Boolean).join("; ")}`,
          extra,
        });
      }
    }
  } finally {
    if (server) await server.stop().catch(() => {});
    await orthanc[Symbol.asyncDispose]();
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
}
