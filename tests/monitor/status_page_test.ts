/**
 * Tests for lib/monitor/status_view.ts, status_page.ts, status_chart.ts,
 * status_format.ts and JobStore.finishedSince (issue 16): the page is one document
 * with no script and no asset from elsewhere, escapes every text from outside (client
 * names, reasons, the host), shows running jobs with their progress, uploads, the
 * queue in order and the finished jobs; statusView() of a real in-process server shows
 * no file name or directory anywhere, blanks them out of reasons; the chart counts
 * each job in its UTC hour; and the helpers escape, format sizes, durations and axes.
 * The deliveries to DICOM destinations are tested in status_deliveries_test.ts.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import type { Channel } from "../../lib/wire/channel.ts";
import { JobLeases } from "../../lib/server/job_leases.ts";
import { type JobRecord, JobStore, type NewJob } from "../../lib/server/job_store.ts";
import type { ReconServer } from "../../lib/server/server.ts";
import { renderStatusPage } from "../../lib/monitor/status_page.ts";
import { niceScale, renderChart } from "../../lib/monitor/status_chart.ts";
import { escapeHtml, formatBytes, formatDuration } from "../../lib/monitor/status_format.ts";
import {
  CHART_HOURS,
  redact,
  type StatusSettings,
  type StatusView,
  statusView,
} from "../../lib/monitor/status_view.ts";
import { sendStream } from "../../lib/wire/transfer.ts";
import { tempDir, waitFor } from "../support/e2e.ts";
import { BytesReader } from "../support/memory_duplex.ts";
import { announce, nextMessage, startTestServer, upload } from "../support/test_server.ts";
import { clockedStore } from "../support/clocked_store.ts";

const HOUR = 3_600_000;
const GIB = 1024 ** 3;
const NOW = Date.UTC(2026, 4, 12, 14, 37, 12);
const SHA = "c".repeat(64);

/** A view with one of everything, each text field set by `overrides`. */
function sampleView(overrides: Partial<StatusView> = {}): StatusView {
  const first = Math.floor(NOW / HOUR) * HOUR - (CHART_HOURS - 1) * HOUR;
  return {
    now: NOW,
    version: "0.1.0",
    host: "recon-box",
    startedAt: NOW - 3 * HOUR,
    uptimeMs: 3 * HOUR,
    executor: "local",
    disk: { freeBytes: 400 * GIB, marginBytes: GIB, keptInputBytes: 3 * GIB, keptResultBytes: GIB },
    workers: { busy: 1, max: 2 },
    sinceStart: { succeeded: 7, failed: 1, cancelled: 1 },
    queuedByPriority: { high: 1, normal: 1, low: 0 },
    problems: [],
    running: [{
      id: "11111111-1111-4111-8111-111111111111",
      client: "mr1",
      priority: "normal",
      startedAt: NOW - 754_000,
      elapsedMs: 754_000,
      percent: 62,
      executor: "local",
      attempt: 1,
      fileCount: 1,
      inputBytes: 2 * GIB,
    }],
    uploads: [{
      id: "22222222-2222-4222-8222-222222222222",
      client: "mr2",
      priority: "low",
      submittedAt: NOW - 60_000,
      receivedBytes: GIB / 2,
      totalBytes: GIB,
      fileCount: 2,
      active: true,
    }],
    queue: [
      {
        position: 1,
        id: "33333333-3333-4333-8333-333333333333",
        client: "mr1",
        priority: "high",
        waitingSince: NOW - 120_000,
        waitingMs: 120_000,
        fileCount: 1,
        inputBytes: GIB,
        attempts: 0,
      },
      {
        position: 2,
        id: "44444444-4444-4444-8444-444444444444",
        client: "mr2",
        priority: "normal",
        waitingSince: NOW - 600_000,
        waitingMs: 600_000,
        fileCount: 1,
        inputBytes: GIB,
        attempts: 1,
      },
    ],
    finished: [{
      id: "55555555-5555-4555-8555-555555555555",
      client: "mr1",
      priority: "normal",
      state: "failed",
      finishedAt: NOW - 2 * HOUR,
      durationMs: 600_000,
      inputBytes: GIB,
      reason: "the script exited with code 3",
    }, {
      id: "66666666-6666-4666-8666-666666666666",
      client: "mr1",
      priority: "normal",
      state: "succeeded",
      finishedAt: NOW - 3 * HOUR,
      durationMs: 500_000,
      inputBytes: GIB,
      resultCount: 240,
      resultBytes: 80 * 1024 ** 2,
    }],
    hours: Array.from({ length: CHART_HOURS }, (_, i) => ({
      start: first + i * HOUR,
      succeeded: i % 4,
      failed: i === 20 ? 1 : 0,
      cancelled: 0,
      inputBytes: (i % 5) * GIB,
    })),
    chartTruncated: false,
    refreshSeconds: 15,
    ...overrides,
  };
}

/** The text of `html`: tags removed, the five entities read back, spaces collapsed. */
function textOf(html: string): string {
  return html.replace(/<[^>]*>/g, " ").replace(/&lt;/g, "<").replace(/&gt;/g, ">")
    .replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, "&").replace(/\s+/g, " ");
}

/** The `<section id="ID">` of the page. */
function sectionOf(html: string, id: string): string {
  const match = new RegExp(`<section id="${id}">([\\s\\S]*?)</section>`).exec(html);
  assert.ok(match, `the page has a section ${id}`);
  return match[1];
}

Deno.test("renderStatusPage() is one document that needs no script and loads nothing from elsewhere", () => {
  const html = renderStatusPage(sampleView());
  assert.match(html, /^<!DOCTYPE html>\n<html lang="en">/);
  assert.match(html, /<\/html>\n$/);
  assert.match(html, /<meta charset="utf-8">/);
  assert.match(html, /<meta http-equiv="refresh" content="15">/);
  assert.match(
    html,
    /<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">/,
  );
  assert.doesNotMatch(html, /<script/i, "no script");
  assert.doesNotMatch(html, /\son[a-z]+=/i, "no event handler attribute");
  assert.doesNotMatch(
    html,
    /<(link|img|iframe|object|embed)\b/i,
    "no element that loads something",
  );
  assert.doesNotMatch(html, /url\(|@import|src=/i, "no asset referenced by CSS or src");
  // The only URL is the SVG namespace, which loads nothing.
  assert.deepEqual(html.match(/https?:\/\/[^\s"']+/g), ["http://www.w3.org/2000/svg"]);
  assert.match(html, /<style>[\s\S]*font:14px\/1.45 system-ui/);
});

Deno.test("renderStatusPage() shows the header, running jobs with progress, uploads, the queue in order and finished jobs", () => {
  const view = sampleView();
  const html = renderStatusPage(view);
  const header = textOf(/<header>[\s\S]*<\/header>/.exec(html)![0]);
  assert.match(header, /recon server · recon-box/);
  assert.match(header, /version 0\.1\.0/);
  assert.match(header, /up 3 h/);
  assert.match(header, /updated 14:37:12 UTC/);
  const cards = textOf(/<div class="cards">[\s\S]*?\n<\/div>/.exec(html)![0]);
  for (
    const text of [
      "Workers busy 1 of 2",
      "1 high · 1 normal",
      "Disk free 400 GiB",
      "margin 1.0 GiB",
      "inputs 3.0 GiB results 1.0 GiB",
      "7 succeeded",
      "1 failed · 1 cancelled",
      "Executor local",
      "taking jobs",
    ]
  ) assert.ok(cards.replace(/\s+/g, " ").includes(text), `the cards say "${text}":\n${cards}`);
  assert.match(html, /All is well/);

  const running = sectionOf(html, "running");
  assert.match(running, /11111111-1111-4111-8111-111111111111/);
  assert.match(running, /aria-valuenow="62"><span style="width:62\.0%"><\/span><b>62%<\/b>/);
  assert.match(textOf(running), /14:24:38\s+12 min 34 s/);

  const uploads = sectionOf(html, "uploads");
  assert.match(textOf(uploads), /512 MiB of 1\.0 GiB/);
  assert.match(textOf(uploads), /receiving/);

  const queue = textOf(sectionOf(html, "queue"));
  assert.ok(
    queue.indexOf("33333333-") < queue.indexOf("44444444-"),
    "the queue is listed in its order",
  );
  assert.match(queue, /1\s+33333333-3333-4333-8333-333333333333\s+mr1\s+high/);
  assert.match(queue, /queued again after 1 run\(s\)/);

  const finished = textOf(sectionOf(html, "finished"));
  assert.match(finished, /55555555-\S+\s+mr1\s+failed\s+12:37:12\s+10 min\s+1\.0 GiB\s+the script/);
  assert.match(
    finished,
    /66666666-\S+\s+mr1\s+succeeded\s+11:37:12\s+8 min 20 s\s+1\.0 GiB\s+80 MiB \(240\)/,
  );
});

Deno.test("renderStatusPage() says what is empty, and lists problems in the banner", () => {
  const html = renderStatusPage(sampleView({
    running: [],
    uploads: [],
    queue: [],
    finished: [],
    executorProblem: { reason: "Slurm does not answer", since: NOW - 60_000 },
    problems: ["executor: Slurm does not answer; jobs wait queued"],
    disk: { freeBytes: 10, marginBytes: GIB, keptInputBytes: 0, keptResultBytes: 0 },
    hours: sampleView().hours.map((hour) => ({ ...hour, succeeded: 0, failed: 0, inputBytes: 0 })),
  }));
  assert.match(sectionOf(html, "running"), /No job is running\./);
  assert.match(sectionOf(html, "uploads"), /No upload in progress\./);
  assert.match(sectionOf(html, "queue"), /The queue is empty\./);
  assert.match(sectionOf(html, "finished"), /No job has finished yet\./);
  assert.match(sectionOf(html, "chart"), /No job finished or queued in the last 24 hours/);
  assert.match(
    html,
    /<div class="banner bad"><strong>Needs attention<\/strong><ul><li>executor: Slurm/,
  );
  assert.doesNotMatch(html, /All is well/);
  assert.match(html, /card tone-bad"><div class="label">Disk free/);
  assert.match(html, /card tone-bad"><div class="label">Executor[\s\S]*?unavailable since/);
});

Deno.test("renderStatusPage() escapes every text from outside: client names, reasons, the host, ids", () => {
  const hostile = `<script>alert(1)</script>"'&`;
  const base = sampleView();
  const html = renderStatusPage(sampleView({
    host: hostile,
    version: hostile,
    problems: [hostile],
    running: [{ ...base.running[0], client: hostile, executor: hostile, executorRef: hostile }],
    uploads: [{ ...base.uploads[0], client: hostile }],
    queue: [{ ...base.queue[0], client: hostile, id: hostile }],
    finished: [{
      ...base.finished[0],
      client: hostile,
      reason: `"><img src=x onerror=alert(1)> \u202eevil\u001b[31m`,
    }],
  }));
  assert.doesNotMatch(html, /<script|<img|onerror=alert\(1\)>/i);
  assert.ok(!html.includes(`"'&`), "quotes and ampersands are entities");
  assert.ok(html.includes("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
  assert.ok(html.includes("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
  assert.ok(!html.includes("\u202e") && !html.includes("\u001b"), "control characters are shown");
  assert.ok(html.includes("\\u202eevil\\x1b[31m"));
  // Each client name is escaped once (no double escaping of the entities).
  assert.ok(!html.includes("&amp;lt;"));
});

Deno.test("renderChart() draws stacked bars, a line and labelled axes in SVG text", () => {
  const hours = sampleView().hours;
  const svg = renderChart(hours);
  assert.match(svg, /^<svg class="chart" viewBox="0 0 1000 270" role="img" aria-label="[^"]+"/);
  for (const label of ["hour (UTC)", "jobs finished", "input queued", "succeeded", "failed"]) {
    assert.ok(svg.includes(`>${label}</text>`), `the chart is labelled "${label}"`);
  }
  assert.ok(svg.includes(">now</text>"), "the last hour is labelled now");
  assert.ok(svg.includes(">15:00</text>"), "hours are labelled");
  assert.ok(svg.includes(">4 GiB</text>"), "the bytes axis has its unit");
  assert.ok(svg.includes(">3</text>"), "the jobs axis has whole numbers");
  assert.match(svg, /<polyline points="[\d., ]+"/);
  // One rect per non-zero count, each with its tooltip.
  const bars = hours.reduce((sum, h) => sum + [h.succeeded, h.failed].filter(Boolean).length, 0);
  assert.equal(svg.match(/<rect [^>]*><title>/g)?.length, bars);
  assert.match(svg, /<title>11:00–12:00 UTC: 1 failed<\/title>/);
});

Deno.test("escapeHtml() escapes the five HTML characters and shows control characters", () => {
  assert.equal(
    escapeHtml(`<a href="x">'&'</a>`),
    "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;",
  );
  assert.equal(escapeHtml("a\nb\u202ec\u0000"), "a\\nb\\u202ec\\x00");
  assert.equal(escapeHtml("Zoë · ünïcode"), "Zoë · ünïcode");
});

Deno.test("formatBytes(), formatDuration() and niceScale() read well", () => {
  assert.equal(formatBytes(0), "0 B");
  assert.equal(formatBytes(1023), "1023 B");
  assert.equal(formatBytes(1536), "1.5 KiB");
  assert.equal(formatBytes(12.3 * 1024 ** 2), "12 MiB");
  assert.equal(formatBytes(400 * GIB), "400 GiB");
  assert.equal(formatBytes(3 * 1024 ** 4), "3.0 TiB");
  assert.equal(formatDuration(0), "0 s");
  assert.equal(formatDuration(59_999), "59 s");
  assert.equal(formatDuration(60_000), "1 min");
  assert.equal(formatDuration(754_000), "12 min 34 s");
  assert.equal(formatDuration(3 * HOUR), "3 h");
  assert.equal(formatDuration(3 * HOUR + 12 * 60_000), "3 h 12 min");
  assert.equal(formatDuration(53 * HOUR), "2 d 5 h");
  assert.deepEqual(niceScale(0), { top: 4, step: 1 });
  assert.deepEqual(niceScale(8), { top: 8, step: 2 });
  assert.deepEqual(niceScale(9), { top: 10, step: 2.5 });
  assert.deepEqual(niceScale(170), { top: 200, step: 50 });
});

Deno.test("redact() blanks paths and names, longest first, and leaves names under 3 characters", () => {
  assert.equal(
    redact("cannot read /srv/in/job_x_input/P123.7: P123.7 is short by 7 bytes (a)", {
      paths: ["/srv/in/job_x_input", "/srv/in"],
      names: ["P123.7", "a", "7"],
    }),
    "cannot read <path>/<file>: <file> is short by 7 bytes (a)",
  );
  assert.equal(redact("nothing to hide", { paths: ["/"], names: [""] }), "nothing to hide");
});

// ---------------------------------------------------------------------------
// The job store's query and the view from a store.

let counter = 0;

function newJob(overrides: Partial<NewJob> = {}): NewJob {
  const id = overrides.id ?? crypto.randomUUID();
  counter++;
  return {
    id,
    priority: "normal",
    client: "mr1",
    peer: "127.0.0.1:40000",
    keyId: "k1d",
    options: {},
    inputDir: `/srv/recon/job_${id}_input`,
    outputDir: `/srv/results/job_${id}_output`,
    logPath: `/srv/recon/job_${id}.log`,
    files: [{ name: `PATIENT_${counter}.7`, size: 1000 }],
    uploadExpiresAt: NOW + HOUR,
    ...overrides,
  };
}

/** Submit a job at `submitted`, queue it then, run it `run` ms later and end it `took` after. */
function finishJob(
  s: { store: JobStore; at: (ms: number) => void },
  end: "succeeded" | "failed" | "cancelled",
  times: { queued: number; started?: number; finished: number },
  overrides: Partial<NewJob> = {},
): JobRecord {
  const { store } = s;
  s.at(times.queued);
  const job = store.createReceiving(newJob(overrides));
  store.inputVerified(job.id, 0, SHA);
  store.markQueued(job.id);
  if (times.started !== undefined) {
    s.at(times.started);
    store.markRunning(job.id);
  }
  s.at(times.finished);
  if (end === "succeeded") {
    return store.markSucceeded(job.id, {
      exitCode: 0,
      stderrTail: [],
      outputs: [{ name: "image_0001.dcm", size: 4096, sha256: SHA }],
      skipped: 0,
      resultsExpireAt: times.finished + HOUR,
    });
  }
  if (end === "failed") {
    return store.markFailed(job.id, {
      reason: "the script exited with code 3",
      exitCode: 3,
      stderrTail: [],
    });
  }
  return store.markCancelled(job.id, { reason: "wrong protocol", by: "mr1 at 127.0.0.1:1" });
}

/** A ReconServer's parts that statusView() reads, with no running job. */
function storeOnlyServer(store: JobStore): ReconServer {
  const scheduler = {
    running: () => [],
    executorProblem: undefined,
    activeWorkers: 0,
    maxWorkers: 1,
    counts: { succeeded: 0, failed: 0, cancelled: 0 },
  };
  return { store, scheduler, leases: new JobLeases() } as unknown as ReconServer;
}

const SETTINGS: StatusSettings = {
  config: {
    EXECUTOR: "local",
    RECON_FILEPATH: "/srv/recon",
    RECON_DICOM_DIR: "/srv/results",
    DISK_FREE_MARGIN: GIB,
    DESTINATIONS: {},
  },
  startedAt: NOW - HOUR,
  diskFree: () => Promise.resolve(100 * GIB),
};

Deno.test("JobStore.finishedSince() lists finished jobs newest first from sinceMs, at most limit, expired ones too", async () => {
  await using s = await clockedStore(NOW);
  const a = finishJob(s, "succeeded", { queued: NOW, started: NOW + 1, finished: NOW + 10 });
  const b = finishJob(s, "failed", { queued: NOW, started: NOW + 1, finished: NOW + 30 });
  const c = finishJob(s, "cancelled", { queued: NOW, finished: NOW + 20 });
  const d = finishJob(s, "succeeded", { queued: NOW, started: NOW + 1, finished: NOW + 30 });
  s.at(NOW + 40);
  s.store.markExpired(a.id);
  s.store.createReceiving(newJob());
  const queued = s.store.createReceiving(newJob());
  s.store.inputVerified(queued.id, 0, SHA);
  s.store.markQueued(queued.id);

  const ids = (jobs: JobRecord[]) => jobs.map((job) => job.id);
  // Same finish time: the later submission first.
  assert.deepEqual(ids(s.store.finishedSince(0, 10)), [d.id, b.id, c.id, a.id]);
  assert.equal(s.store.finishedSince(0, 10)[3].state, "expired");
  assert.deepEqual(ids(s.store.finishedSince(NOW + 20, 10)), [d.id, b.id, c.id]);
  assert.deepEqual(ids(s.store.finishedSince(0, 2)), [d.id, b.id]);
  assert.deepEqual(s.store.finishedSince(NOW + 31, 10), []);
  for (const limit of [0, -1, 1.5, Number.NaN]) {
    assert.throws(() => s.store.finishedSince(0, limit), TypeError);
  }
});

Deno.test("statusView() counts each job in its UTC hour: finished by state, input bytes by when it was queued", async () => {
  await using s = await clockedStore(NOW);
  const hourStart = Math.floor(NOW / HOUR) * HOUR;
  const files = (size: number) => ({ files: [{ name: "P1.7", size }] });
  // The current hour: one succeeded (queued 2 h ago), one failed.
  finishJob(s, "succeeded", {
    queued: hourStart - 2 * HOUR + 5,
    started: hourStart + 1,
    finished: hourStart + 60_000,
  }, files(100));
  finishJob(s, "failed", {
    queued: hourStart + 10,
    started: hourStart + 20,
    finished: hourStart + 30,
  }, files(7));
  // 23 hours before the current one (the chart's first hour): cancelled while queued.
  finishJob(
    s,
    "cancelled",
    { queued: hourStart - 23 * HOUR, finished: hourStart - 23 * HOUR + 5 },
    files(1000),
  );
  // 24 hours before: outside the chart.
  finishJob(s, "succeeded", {
    queued: hourStart - 24 * HOUR,
    started: hourStart - 24 * HOUR,
    finished: hourStart - 23 * HOUR - 1,
  }, files(5000));
  // Still queued, queued an hour ago.
  s.at(hourStart - HOUR + 3);
  const waiting = s.store.createReceiving(newJob(files(40)));
  s.store.inputVerified(waiting.id, 0, SHA);
  s.store.markQueued(waiting.id);

  const view = await statusView(storeOnlyServer(s.store), NOW, SETTINGS);
  assert.equal(view.hours.length, CHART_HOURS);
  assert.equal(view.hours[0].start, hourStart - 23 * HOUR);
  assert.equal(view.hours[23].start, hourStart);
  const last = view.hours[23];
  assert.deepEqual([last.succeeded, last.failed, last.cancelled, last.inputBytes], [1, 1, 0, 7]);
  const first = view.hours[0];
  assert.deepEqual([first.succeeded, first.failed, first.cancelled, first.inputBytes], [
    0,
    0,
    1,
    1000,
  ]);
  assert.equal(
    view.hours[21].inputBytes,
    100,
    "the succeeded job's input counts when it was queued",
  );
  assert.equal(view.hours[22].inputBytes, 40, "a queued job's input counts too");
  const total = view.hours.reduce((sum, h) => sum + h.succeeded + h.failed + h.cancelled, 0);
  assert.equal(total, 3, "the job finished 24 h ago is not counted");
  assert.equal(view.chartTruncated, false);

  assert.deepEqual(view.finished.map((job) => job.state), [
    "succeeded",
    "failed",
    "cancelled",
    "succeeded",
  ]);
  assert.equal(view.finished[0].durationMs, 60_000 - 1);
  assert.equal(view.finished[0].resultBytes, 4096);
  assert.equal(view.finished[2].durationMs, undefined, "a job cancelled while queued never ran");
  assert.deepEqual(view.queue.map((job) => [job.position, job.id]), [[1, waiting.id]]);
  assert.equal(view.queue[0].waitingMs, NOW - (hourStart - HOUR + 3));
  assert.deepEqual(view.problems, []);
  assert.equal(view.uptimeMs, HOUR);
  assert.equal(view.disk.freeBytes, 100 * GIB);
});

Deno.test("statusView() lists the disk and the executor as problems, or the lines it is given", async () => {
  await using s = await clockedStore(NOW);
  const server = storeOnlyServer(s.store);
  const low = await statusView(server, NOW, { ...SETTINGS, diskFree: () => Promise.resolve(5) });
  assert.deepEqual(low.problems, [
    "The disk of RECON_FILEPATH has less free space than DISK_FREE_MARGIN: new jobs are refused.",
  ]);
  const unreadable = await statusView(server, NOW, {
    ...SETTINGS,
    diskFree: () => Promise.reject(new Error("EACCES")),
  });
  assert.equal(unreadable.disk.freeBytes, undefined);
  assert.deepEqual(unreadable.problems, ["The free space on RECON_FILEPATH cannot be read."]);
  const given = await statusView(server, NOW, { ...SETTINGS, problems: ["slurm: down"] });
  assert.deepEqual(given.problems, ["slurm: down"]);
});

// ---------------------------------------------------------------------------
// A real in-process server.

const encoder = new TextEncoder();
const SECRET_NAME = "PATIENT_ROE_JANE_1961.7";

Deno.test("the page of a real server shows a running job's progress, an upload, the queue and finished jobs, and no file name or directory", async () => {
  await using files = await tempDir("recon_status_page_");
  const release = path.join(files.path, "release");
  await using s = await startTestServer({
    config: { MAX_CONCURRENT_JOBS: 1, UPLOAD_RESUME_WINDOW: 3600 },
    script: `echo "PROGRESS 37"
while [ ! -e '${release}' ]; do sleep 0.05; done
printf 'image' >"$RECON_OUTPUT_DIR/image_0001.dcm"
`,
  });
  const settings: StatusSettings = { config: s.config, diskFree: () => Promise.resolve(50 * GIB) };
  const submit = async (name: string, extra: Record<string, unknown> = {}) => {
    const channel = await s.connect();
    try {
      return await upload(channel, { [name]: encoder.encode(`raw data of ${name}`) }, extra);
    } finally {
      channel.abort();
    }
  };
  const running = await submit(SECRET_NAME);
  await waitFor("the script's PROGRESS 37", () => s.server.scheduler.live(running)?.percent === 37);
  const queued = await submit(SECRET_NAME, { priority: "low" });
  const cancelled = await submit(SECRET_NAME);
  const inputDir = s.inputDir(cancelled);
  await s.server.scheduler.cancel(
    cancelled,
    `not needed: ${SECRET_NAME} in ${inputDir} is a duplicate`,
    "a test",
  );
  // An upload: two files announced, the first sent, then the connection lost.
  const channel: Channel = await s.connect();
  await announce((message) => channel.send(message), [
    { name: SECRET_NAME, size: 1000 },
    { name: "PATIENT_ROE_JANE_cal.dat", size: 3000 },
  ]);
  const request = await nextMessage(channel);
  assert.equal(request.type, "request_file");
  await sendStream(channel, new BytesReader(new Uint8Array(1000)), 1000);
  assert.equal((await nextMessage(channel)).type, "request_file");
  const receiving = s.server.store.inState("receiving")[0].id;
  await waitFor("the first file verified", () => s.server.leases.heldBytes.get(receiving) === 1000);

  let view = await statusView(s.server, Date.now(), settings);
  assert.deepEqual(view.running.map((job) => [job.id, job.percent]), [[running, 37]]);
  assert.deepEqual(view.uploads.map((u) => [u.id, u.receivedBytes, u.totalBytes, u.active]), [[
    receiving,
    1000,
    4000,
    true,
  ]]);
  assert.deepEqual(view.queue.map((job) => [job.position, job.id, job.priority]), [[
    1,
    queued,
    "low",
  ]]);
  assert.deepEqual(view.finished.map((job) => [job.id, job.state]), [[cancelled, "cancelled"]]);
  // A cancel reason is free text (it may name a patient): the page says only who.
  assert.equal(view.finished[0].reason, "cancelled by a test");
  assert.deepEqual(view.workers, { busy: 1, max: 1 });
  assert.equal(view.executor, "local");
  let html = renderStatusPage(view);
  assert.match(sectionOf(html, "running"), new RegExp(`${running}[\\s\\S]*<b>37%</b>`));
  assert.match(textOf(sectionOf(html, "uploads")), /1000 B of 3\.9 KiB/);
  assert.match(textOf(sectionOf(html, "finished")), /cancelled by a test/);
  assert.ok(!html.includes("is a duplicate"), "the typed cancel reason is not shown");
  assertNothingNamed(html, s.dir);

  channel.abort();
  await waitFor("the upload cut off", () => !s.server.leases.uploading(receiving));
  view = await statusView(s.server, Date.now(), settings);
  assert.equal(view.uploads[0].active, false);
  assert.ok(view.uploads[0].resumableUntil! > Date.now() + 3000_000, "resumable for the window");
  assert.match(textOf(renderStatusPage(view)), /cut off; may resume until/);

  await Deno.writeTextFile(release, "");
  await waitFor(
    "both jobs done",
    // The store says succeeded a moment before the scheduler lets go of the job.
    () =>
      [running, queued].every((id) => s.server.store.get(id)?.state === "succeeded") &&
      s.server.scheduler.running().length === 0,
  );
  view = await statusView(s.server, Date.now(), settings);
  assert.deepEqual(view.running, []);
  assert.deepEqual(view.queue, []);
  assert.deepEqual(view.finished.map((job) => job.id).sort(), [running, queued, cancelled].sort());
  const done = view.finished.find((job) => job.id === running)!;
  assert.ok(done.resultBytes! > 5, "the image and provenance.json");
  assert.ok(done.durationMs !== undefined && done.durationMs >= 0);
  const total = view.hours.reduce((sum, h) => sum + h.succeeded + h.failed + h.cancelled, 0);
  assert.equal(total, 3);
  html = renderStatusPage(view);
  assertNothingNamed(html, s.dir);
  await s.server.scheduler.cancel(receiving, "the test is over", "a test");
});

/** No input file name, no part of one, and no directory of the server in `html`. */
function assertNothingNamed(html: string, dir: string): void {
  for (const secret of [SECRET_NAME, "PATIENT", "ROE_JANE", dir, "job_", "_input"]) {
    assert.ok(!html.includes(secret), `the page does not contain "${secret}"`);
  }
}
