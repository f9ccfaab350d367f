/**
 * The pieces of bench/run.ts's `metrics` case (issue 16: the monitoring endpoint must
 * not slow transfers): finding the server's HTTP_LISTEN port, a scraper process GETting
 * one page every 100 ms while an upload runs, a probe of each page against the idle
 * server with the server's CPU per request, and the notes of their rows.
 *
 * The scraper (bench/http_scraper.ts) is a process of its own rather than a fetch loop
 * in the bench: a real scraper is one (Prometheus, on this host or another), its CPU is
 * then measured apart (rusage) instead of hiding in the bench process, and its 100 ms
 * tick is not delayed by the bench's own work (the /proc sampling of DaemonMeter). It
 * still shares this machine's CPUs with the client and the server, as a Prometheus on
 * the recon box itself would.
 *
 * @module
 */
import * as path from "node:path";
import {
  BENCH_DIR,
  cpuSeconds,
  DaemonMeter,
  type MeasuredProcess,
  median,
  percentile,
  runMeasured,
  sleep,
  spawnMeasured,
} from "./measure.ts";
import type { ReconServerProcess } from "./recon_server.ts";

/** The issue's scrape interval. */
export const SCRAPE_INTERVAL_MS = 100;
/**
 * A tenth of it, for /metrics in runs of their own: a cost of a percent or two is lost in
 * the upload's run-to-run spread on a shared machine, so it is also measured several
 * times over and scaled down to 10 scrapes/s (linearly: each scrape costs the same CPU).
 */
export const AMPLIFIED_INTERVAL_MS = 10;
/** Requests per page against the idle server. */
export const PROBE_COUNT = 200;
/** The endpoint's pages, each scraped during uploads of its own and probed alone. */
export const MONITOR_PATHS = ["/metrics", "/healthz", "/"] as const;

const SCRAPER = path.join(BENCH_DIR, "http_scraper.ts");

/** The JSON line bench/http_scraper.ts prints at the end. */
export interface ScrapeReport {
  path: string;
  ok: number;
  errors: number;
  skipped: number;
  error_samples: string[];
  latencies_ms: number[];
  body_bytes: number;
  max_body_bytes: number;
  span_ms: number;
}

/** One scraper's report and the CPU the scraper process used (its deno start-up included). */
export interface ScrapeResult {
  report: ScrapeReport;
  scraperCpuS: number;
}

/** The port of the server's monitoring endpoint, from its log line (HTTP_LISTEN port 0). */
export function monitorPort(server: ReconServerProcess): number {
  const match = /http: serving \/metrics.* on http:\/\/127\.0\.0\.1:(\d+)\//.exec(server.log);
  if (!match) throw new Error(`recon-server did not log its HTTP_LISTEN address:\n${server.log}`);
  return Number(match[1]);
}

function scraperArgs(mode: "scrape" | "probe", port: number, page: string, more: string[]) {
  return [
    "run",
    "--quiet",
    "--allow-net=127.0.0.1",
    SCRAPER,
    mode,
    "--port",
    String(port),
    "--path",
    page,
    ...more,
  ];
}

function parseReport(stdout: string, label: string): ScrapeReport {
  const line = stdout.trim().split("\n").filter((l) => l.startsWith("{")).pop();
  if (!line) throw new Error(`${label} printed no report: ${stdout.slice(-500)}`);
  return JSON.parse(line) as ScrapeReport;
}

/** A running scraper: GET `page` every `intervalMs`. */
export class Scraper {
  #process: MeasuredProcess;
  #label: string;

  private constructor(process: MeasuredProcess, label: string) {
    this.#process = process;
    this.#label = label;
  }

  /** Start one and wait until it has had its first answer (max 30 s). */
  static async start(
    work: string,
    port: number,
    page: string,
    intervalMs = SCRAPE_INTERVAL_MS,
  ): Promise<Scraper> {
    const label = `scraper ${page}`;
    const { promise: ready, resolve } = Promise.withResolvers<boolean>();
    const process = spawnMeasured(
      work,
      Deno.execPath(),
      scraperArgs("scrape", port, page, ["--interval-ms", String(intervalMs)]),
      { label, onLine: (line) => line === "READY" && resolve(true) },
    );
    const timer = setTimeout(() => resolve(false), 30_000);
    const ok = await Promise.race([ready, process.done.then(() => false, () => false)]);
    clearTimeout(timer);
    if (!ok) {
      await process.stop();
      const usage = await process.done.catch((e) => ({ stdout: "", stderr: String(e) }));
      throw new Error(`${label} did not start: ${usage.stdout.slice(-300)} ${usage.stderr}`);
    }
    return new Scraper(process, label);
  }

  /** SIGTERM (forwarded by rusage.py); the scraper prints its report and exits. */
  async stop(): Promise<ScrapeResult> {
    await this.#process.stop();
    const usage = await this.#process.done;
    if (usage.exitCode !== 0) {
      throw new Error(`${this.#label} exited ${usage.exitCode}: ${usage.stderr.slice(-500)}`);
    }
    return { report: parseReport(usage.stdout, this.#label), scraperCpuS: usage.cpuSeconds };
  }
}

/**
 * Run `upload` with a scraper of `page` going from just before the client starts until
 * it ends; `upload` calls its argument as soon as its client has exited (before it waits
 * for the server to settle), so the server's CPU counts the scrapes of the upload only.
 */
export async function scrapedRun<S>(
  work: string,
  port: number,
  page: string,
  upload: (clientDone: () => Promise<void>) => Promise<S>,
  intervalMs = SCRAPE_INTERVAL_MS,
): Promise<{ sample: S; scrape: ScrapeResult }> {
  const scraper = await Scraper.start(work, port, page, intervalMs);
  let scrape: ScrapeResult | undefined;
  const stop = async () => {
    scrape ??= await scraper.stop();
  };
  try {
    const sample = await upload(stop);
    await stop();
    return { sample, scrape: scrape! };
  } finally {
    await stop().catch(() => {});
  }
}

/** Server CPU seconds per second while nothing is asked of it (timers, housekeeping). */
export async function idleCpuRate(pid: number, ms = 3000): Promise<number> {
  const before = cpuSeconds(pid) ?? 0;
  const start = performance.now();
  await sleep(ms);
  return ((cpuSeconds(pid) ?? before) - before) / ((performance.now() - start) / 1000);
}

/** What {@link probe} measured. */
export interface ProbeResult {
  report: ScrapeReport;
  /** Server CPU for all the requests, minus its idle rate over the same time. */
  serverCpuS: number;
  probeCpuS: number;
}

/** {@link PROBE_COUNT} GETs of `page`, one after the other, and the server's CPU for them. */
export async function probe(
  work: string,
  server: ReconServerProcess,
  port: number,
  page: string,
  idleRate: number,
): Promise<ProbeResult> {
  const meter = new DaemonMeter(server.pid);
  const start = performance.now();
  meter.start();
  const usage = await runMeasured(
    work,
    Deno.execPath(),
    scraperArgs("probe", port, page, ["--count", String(PROBE_COUNT)]),
    { label: `probe ${page}`, timeoutMs: 120_000 },
  );
  await meter.settle(2000);
  const cpu = meter.stop().cpuSeconds;
  const seconds = (performance.now() - start) / 1000;
  return {
    report: parseReport(usage.stdout, `probe ${page}`),
    serverCpuS: Math.max(0, cpu - idleRate * seconds),
    probeCpuS: usage.cpuSeconds,
  };
}

const ms = (value: number) => value < 10 ? value.toFixed(2) : value.toFixed(0);

/** Latency figures of a set of requests (pooled over runs). */
export function latencyStats(latenciesMs: number[]) {
  return {
    n: latenciesMs.length,
    p50_ms: percentile(latenciesMs, 50),
    p99_ms: percentile(latenciesMs, 99),
    max_ms: latenciesMs.length ? Math.max(...latenciesMs) : NaN,
  };
}

/** `p50 0.61 ms, p99 1.9 ms` */
export function latencyText(latenciesMs: number[]): string {
  const s = latencyStats(latenciesMs);
  return `p50 ${ms(s.p50_ms)} ms, p99 ${ms(s.p99_ms)} ms`;
}

/** A scraped upload series against the unscraped one, for {@link scrapedSummary}. */
export interface ScrapedSeries {
  scrapes: ScrapeResult[];
  intervalMs: number;
  /** Median MB/s, wall seconds and server CPU seconds of the scraped runs. */
  mbPerS: number;
  wallS: number;
  serverCpuS: number;
  /** The same of the unscraped runs. */
  baselineMbPerS: number;
  baselineServerCpuS: number;
  /** Each round's scraped MB/s over the same round's unscraped MB/s. */
  pairedRatios: number[];
}

/**
 * The note and JSON fields of a scraped upload series: its speed against the unscraped
 * one's, the scrapes pooled over its runs and, for the amplified series, the slowdown
 * scaled down linearly to 10 scrapes/s. The server's CPU per scrape, estimated as
 * (median server CPU scraped − unscraped) / median scrapes per run, is in the JSON only:
 * a few ms a run against the upload's own spread of tenths of a second, it is noise
 * (the idle probe measures it).
 */
export function scrapedSummary(series: ScrapedSeries) {
  const { scrapes, intervalMs, pairedRatios } = series;
  const latencies = scrapes.flatMap((s) => s.report.latencies_ms);
  const perRun = median(scrapes.map((s) => s.report.ok));
  const perSecond = perRun / series.wallS;
  const errors = scrapes.reduce((sum, s) => sum + s.report.errors, 0);
  const skipped = scrapes.reduce((sum, s) => sum + s.report.skipped, 0);
  const cpuPerScrapeMs = perRun > 0
    ? (series.serverCpuS - series.baselineServerCpuS) / perRun * 1000
    : NaN;
  const ratio = series.mbPerS / series.baselineMbPerS;
  // 1 − ratio is the cost of perSecond scrapes a second; 10 a second cost 10/perSecond of it.
  const scaled = intervalMs < SCRAPE_INTERVAL_MS && perSecond > 10
    ? 1 - (1 - ratio) * (10 / perSecond)
    : undefined;
  const body = Math.max(...scrapes.map((s) => s.report.max_body_bytes));
  const note = `${ratio.toFixed(3)} × unscraped (rounds: ${
    pairedRatios.map((r) => r.toFixed(2)).join(" ")
  }); ${perRun} scrapes/run (${perSecond.toFixed(0)}/s)${
    scaled === undefined ? "" : `, scaled to 10/s: ${scaled.toFixed(3)} ×`
  }; ${latencyText(latencies)}, ${body} B${errors ? `; ${errors} FAILED: see JSON` : ""}${
    skipped ? `; ${skipped} ticks skipped (answer > ${intervalMs} ms)` : ""
  }`;
  return {
    note,
    extra: {
      ratio_to_unscraped: Math.round(ratio * 10_000) / 10_000,
      paired_ratios: pairedRatios.map((r) => Math.round(r * 10_000) / 10_000),
      scrape_interval_ms: intervalMs,
      scrapes_per_run: scrapes.map((s) => s.report.ok),
      scrapes_per_s: Math.round(perSecond * 10) / 10,
      ratio_scaled_to_10_per_s: scaled === undefined
        ? undefined
        : Math.round(scaled * 10_000) / 10_000,
      scrape_errors: errors,
      scrape_error_samples: scrapes.flatMap((s) => s.report.error_samples).slice(0, 5),
      scrape_ticks_skipped: skipped,
      scrape_latency: latencyStats(latencies),
      scrape_body_bytes: body,
      server_cpu_ms_per_scrape_delta_of_medians: Math.round(cpuPerScrapeMs * 100) / 100,
      scraper_cpu_s_runs: scrapes.map((s) => Math.round(s.scraperCpuS * 1000) / 1000),
    },
  };
}

/** The note and JSON fields of one page probed against the idle server. */
export function probeSummary(result: ProbeResult, during: ScrapeResult[]) {
  const { report } = result;
  const cpuMs = report.ok > 0 ? result.serverCpuS / report.ok * 1000 : NaN;
  const busy = during.flatMap((s) => s.report.latencies_ms);
  const note = `${report.ok}/${PROBE_COUNT} answered, ${
    latencyText(report.latencies_ms)
  }, ${report.body_bytes} B; server ${cpuMs.toFixed(2)} ms CPU/request${
    busy.length ? `; during the uploads: ${latencyText(busy)} (${busy.length})` : ""
  }${report.errors ? `; ${report.errors} FAILED: see JSON` : ""}`;
  return {
    note,
    extra: {
      requests: PROBE_COUNT,
      answered: report.ok,
      failed: report.errors,
      error_samples: report.error_samples,
      idle_latency: latencyStats(report.latencies_ms),
      during_upload_latency: latencyStats(busy),
      body_bytes: report.body_bytes,
      server_cpu_ms_per_request: Math.round(cpuMs * 1000) / 1000,
      server_cpu_s: Math.round(result.serverCpuS * 1000) / 1000,
      probe_span_s: Math.round(report.span_ms) / 1000,
      probe_process_cpu_s: Math.round(result.probeCpuS * 1000) / 1000,
    },
  };
}
