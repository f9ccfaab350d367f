/**
 * A scraper of recon-server's monitoring endpoint (HTTP_LISTEN) for the `metrics` bench
 * case, as a process of its own: its CPU is then neither the bench's nor the server's,
 * and its timer is not held up by the bench's own work (the /proc sampling every 20 ms).
 *
 *     deno run --allow-net=127.0.0.1 bench/http_scraper.ts scrape --port N --path /metrics --interval-ms 100
 *     deno run --allow-net=127.0.0.1 bench/http_scraper.ts probe --port N --path /metrics --count 200
 *
 * `scrape` GETs the path on a fixed 100 ms tick, as Prometheus does (a tick that comes
 * while the previous request is still out is skipped and counted), prints `READY` after
 * the first answer, and on SIGTERM prints one JSON line of what it saw and exits 0.
 * `probe` sends `--count` requests one after the other and prints the same JSON line.
 *
 * Each request is plain HTTP/1.1 on a new connection with `Connection: close`, read to
 * the end (the server answers one request per connection and half-closes), like curl
 * or a Prometheus whose keep-alive the server declines. Latency runs from connect() to
 * the last byte. Every answer is checked: status 200 and a body as long as its
 * Content-Length.
 */
import { parseArgs } from "node:util";

const { positionals, values } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    port: { type: "string" },
    path: { type: "string", default: "/metrics" },
    "interval-ms": { type: "string", default: "100" },
    count: { type: "string", default: "200" },
  },
});
const port = Number(values.port);
const target = values.path;
const request = new TextEncoder().encode(
  `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUser-Agent: recon-bench\r\n` +
    `Accept: text/plain\r\nConnection: close\r\n\r\n`,
);
const decoder = new TextDecoder();

/** What the scraper prints at the end (bench/metrics_case.ts reads it). */
interface ScrapeReport {
  path: string;
  /** Answered with 200 and a whole body. */
  ok: number;
  errors: number;
  /** Ticks that came while the previous request was still out (scrape mode). */
  skipped: number;
  /** First error messages, at most 5. */
  error_samples: string[];
  /** Each answered request, connect to last byte. */
  latencies_ms: number[];
  /** Body bytes of the last answer, and the largest. */
  body_bytes: number;
  max_body_bytes: number;
  /** First request's start to the last one's end. */
  span_ms: number;
}

const report: ScrapeReport = {
  path: target,
  ok: 0,
  errors: 0,
  skipped: 0,
  error_samples: [],
  latencies_ms: [],
  body_bytes: 0,
  max_body_bytes: 0,
  span_ms: 0,
};
let firstStart = NaN;
let lastEnd = NaN;

/** One GET; records its latency and size, or the error. */
async function get(): Promise<void> {
  const start = performance.now();
  if (Number.isNaN(firstStart)) firstStart = start;
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    const chunks: Uint8Array[] = [];
    let total = 0;
    try {
      for (let done = 0; done < request.length;) {
        done += await conn.write(request.subarray(done));
      }
      const buffer = new Uint8Array(64 * 1024);
      while (true) {
        const n = await conn.read(buffer);
        if (n === null) break;
        chunks.push(buffer.slice(0, n));
        total += n;
      }
    } finally {
      conn.close();
    }
    const end = performance.now();
    const whole = new Uint8Array(total);
    let offset = 0;
    for (const chunk of chunks) {
      whole.set(chunk, offset);
      offset += chunk.length;
    }
    const headEnd = findHeadEnd(whole);
    if (headEnd < 0) throw new Error(`no response head in ${total} bytes`);
    const head = decoder.decode(whole.subarray(0, headEnd));
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1];
    const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? NaN);
    const body = total - headEnd - 4;
    if (status !== "200") throw new Error(`status ${status}: ${head.split("\r\n")[0]}`);
    if (body !== length) throw new Error(`body ${body} bytes, Content-Length ${length}`);
    report.ok++;
    report.latencies_ms.push(Math.round((end - start) * 1000) / 1000);
    report.body_bytes = body;
    report.max_body_bytes = Math.max(report.max_body_bytes, body);
    lastEnd = end;
  } catch (error) {
    report.errors++;
    lastEnd = performance.now();
    if (report.error_samples.length < 5) report.error_samples.push((error as Error).message);
  }
}

function findHeadEnd(bytes: Uint8Array): number {
  for (let i = 0; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
      return i;
    }
  }
  return -1;
}

function printReport(): void {
  report.span_ms = Math.round((lastEnd - firstStart) * 1000) / 1000 || 0;
  console.log(JSON.stringify(report));
}

if (!(port > 0)) throw new Error("--port N is needed");

if (positionals[0] === "probe") {
  const count = Number(values.count);
  for (let i = 0; i < count; i++) await get();
  printReport();
} else if (positionals[0] === "scrape") {
  const interval = Number(values["interval-ms"]);
  let inFlight: Promise<void> | undefined;
  let stopping = false;
  Deno.addSignalListener("SIGTERM", () => {
    if (stopping) return;
    stopping = true;
    // A request still out when the upload ended is not counted.
    printReport();
    Deno.exit(0);
  });
  await get();
  if (report.ok === 0) {
    printReport();
    Deno.exit(1);
  }
  console.log("READY");
  // Only what comes after READY counts (the bench starts the upload then).
  Object.assign(report, { ok: 0, latencies_ms: [], max_body_bytes: 0 });
  firstStart = NaN;
  // Fixed ticks from here on, like Prometheus' scrape loop: a slow answer does not
  // move the next tick, it makes the scraper skip one.
  const origin = performance.now();
  for (let tick = 1; !stopping; tick++) {
    const wait = origin + tick * interval - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    if (inFlight) {
      report.skipped++;
      continue;
    }
    inFlight = get().finally(() => (inFlight = undefined));
  }
} else {
  console.error(
    "usage: http_scraper.ts scrape|probe --port N --path P [--interval-ms N] [--count N]",
  );
  Deno.exit(2);
}
