/**
 * The status page at `/` (issue 16): one complete HTML document rendered from a
 * {@link StatusView}, for site IT to read at a glance. Inline CSS and an inline SVG
 * chart with text labels; no script, no external asset (a Content-Security-Policy
 * forbids both), reloaded by `<meta http-equiv="refresh">`, so it works with
 * JavaScript off and in a text browser. Every text from the view is escaped for HTML
 * after its control characters are made visible (lib/printable.ts): a client name or a
 * failure reason cannot add markup or reorder the text (bidi controls).
 *
 * With DICOM destinations (issue 17) the page also has a Deliveries card, a section of
 * the deliveries that need attention and a delivery column among the finished jobs
 * (lib/monitor/status_delivery_page.ts).
 *
 * Times are UTC. The view holds no file names, so the page cannot show one.
 *
 * @module
 */
import { chartFigures, renderChart } from "./status_chart.ts";
import {
  deliveriesCard,
  deliveriesSection,
  DELIVERY_CSS,
  deliveryCells,
} from "./status_delivery_page.ts";
import {
  card,
  escapeHtml,
  formatBytes,
  formatDuration,
  htmlTable,
  jobId,
  priority,
  section,
  state,
  utcTime,
} from "./status_format.ts";
import type {
  FinishedJobView,
  QueuedJobView,
  RunningJobView,
  StatusView,
  UploadView,
} from "./status_view.ts";

/** A bar filled to `percent` (0–100) with its label centred on it. */
function bar(percent: number, label: string): string {
  const width = Math.max(0, Math.min(100, percent));
  return `<div class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" ` +
    `aria-valuenow="${width.toFixed(0)}"><span style="width:${width.toFixed(1)}%"></span>` +
    `<b>${escapeHtml(label)}</b></div>`;
}

function percentText(percent: number): string {
  return `${Number.isInteger(percent) ? percent : percent.toFixed(1)}%`;
}

function runningRows(jobs: RunningJobView[], now: number): string[][] {
  return jobs.map((job) => [
    jobId(job.id),
    escapeHtml(job.client),
    priority(job.priority),
    utcTime(job.startedAt, now),
    escapeHtml(formatDuration(job.elapsedMs)),
    job.percent === undefined
      ? `<span class="muted">no progress reported</span>`
      : bar(job.percent, percentText(job.percent)),
    escapeHtml(job.executor) +
    (job.executorRef === undefined
      ? ""
      : ` <span class="id">${escapeHtml(job.executorRef)}</span>`) +
    (job.attempt > 1 ? ` <span class="muted">(attempt ${job.attempt})</span>` : ""),
  ]);
}

function uploadRows(uploads: UploadView[], now: number): string[][] {
  return uploads.map((upload) => {
    const percent = upload.totalBytes > 0 ? (upload.receivedBytes / upload.totalBytes) * 100 : 0;
    const status = upload.active
      ? "receiving"
      : upload.resumableUntil === undefined
      ? "cut off"
      : `cut off; may resume until ${utcTime(upload.resumableUntil, now)}`;
    return [
      jobId(upload.id),
      escapeHtml(upload.client),
      priority(upload.priority),
      utcTime(upload.submittedAt, now),
      bar(
        percent,
        `${formatBytes(upload.receivedBytes)} of ${formatBytes(upload.totalBytes)}`,
      ),
      String(upload.fileCount),
      upload.active ? status : `<span class="warn">${status}</span>`,
    ];
  });
}

function queueRows(queue: QueuedJobView[], now: number): string[][] {
  return queue.map((job) => [
    String(job.position),
    jobId(job.id),
    escapeHtml(job.client),
    priority(job.priority),
    utcTime(job.waitingSince, now),
    escapeHtml(formatDuration(job.waitingMs)),
    escapeHtml(formatBytes(job.inputBytes)),
    job.attempts > 0 ? `queued again after ${job.attempts} run(s)` : "",
  ]);
}

/** With `deliveries`, a column of each job's deliveries before the reason. */
function finishedRows(jobs: FinishedJobView[], now: number, deliveries: boolean): string[][] {
  return jobs.map((job) => [
    jobId(job.id),
    escapeHtml(job.client),
    state(job.state),
    utcTime(job.finishedAt, now),
    job.durationMs === undefined ? `<span class="muted">did not run</span>` : escapeHtml(
      formatDuration(job.durationMs),
    ),
    escapeHtml(formatBytes(job.inputBytes)),
    job.resultBytes === undefined
      ? ""
      : escapeHtml(`${formatBytes(job.resultBytes)} (${job.resultCount ?? 0})`),
    ...(deliveries ? [deliveryCells(job.deliveries)] : []),
    job.reason === undefined ? "" : `<span class="reason">${escapeHtml(job.reason)}</span>`,
  ]);
}

function cards(view: StatusView): string {
  const { disk, workers, sinceStart, queuedByPriority: q } = view;
  const low = disk.freeBytes === undefined || disk.freeBytes < disk.marginBytes;
  const queued = q.high + q.normal + q.low;
  return `<div class="cards">\n${
    [
      card(
        "Workers busy",
        `${workers.busy} <small>of ${workers.max}</small>`,
        workers.busy === 0 ? "idle" : `${workers.busy} job(s) running`,
      ),
      card(
        "Queue",
        String(queued),
        queued === 0
          ? "empty"
          : (["high", "normal", "low"] as const).filter((level) => q[level] > 0)
            .map((level) => `${q[level]} ${level}`).join(" · "),
      ),
      card(
        "Uploads",
        String(view.uploads.length),
        view.uploads.length === 1 ? "job receiving" : "jobs receiving",
      ),
      card(
        "Disk free",
        disk.freeBytes === undefined ? "unknown" : escapeHtml(formatBytes(disk.freeBytes)),
        `margin ${escapeHtml(formatBytes(disk.marginBytes))}`,
        low ? "bad" : "",
      ),
      card(
        "Kept on disk",
        escapeHtml(formatBytes(disk.keptInputBytes + disk.keptResultBytes)),
        `inputs ${escapeHtml(formatBytes(disk.keptInputBytes))}<br>results ${
          escapeHtml(formatBytes(disk.keptResultBytes))
        }`,
      ),
      card(
        "Since start",
        `${sinceStart.succeeded} <small>succeeded</small>`,
        `${sinceStart.failed} failed · ${sinceStart.cancelled} cancelled`,
        sinceStart.failed > 0 ? "warn" : "",
      ),
      card(
        "Executor",
        escapeHtml(view.executor),
        view.executorProblem
          ? `unavailable since ${utcTime(view.executorProblem.since, view.now)}`
          : "taking jobs",
        view.executorProblem ? "bad" : "",
      ),
      ...(view.deliveries ? [deliveriesCard(view.deliveries)] : []),
    ].join("\n")
  }\n</div>`;
}

function banner(view: StatusView): string {
  if (view.problems.length === 0) {
    return `<div class="banner ok">All is well: the server takes and runs jobs.</div>`;
  }
  const items = view.problems.map((problem) => `<li>${escapeHtml(problem)}</li>`).join("");
  return `<div class="banner bad"><strong>Needs attention</strong><ul>${items}</ul></div>`;
}

// ---------------------------------------------------------------------------

const CSS = `
:root{--fg:#1f2933;--muted:#66768a;--line:#e4e7eb;--bg:#f4f6f8;--card:#fff;--accent:#1971c2}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);background:var(--bg)}
header{background:#1f2933;color:#fff;padding:12px 24px}
header .in{max-width:1240px;margin:0 auto;display:flex;flex-wrap:wrap;align-items:baseline;gap:6px 18px}
header h1{font-size:18px;margin:0;font-weight:600}
header .meta{color:#cbd2d9;font-size:13px}
main{max-width:1240px;margin:0 auto;padding:16px 24px 24px}
.banner{padding:10px 14px;border-radius:6px;margin-bottom:14px}
.banner ul{margin:4px 0 0;padding-left:20px}
.banner.ok{background:#ebfbee;color:#2b8a3e;border:1px solid #b2f2bb}
.banner.bad{background:#fff5f5;color:#c92a2a;border:1px solid #ffc9c9}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(132px,1fr));gap:10px;margin-bottom:14px}
.card{background:var(--card);border:1px solid var(--line);border-top:3px solid #ced4da;border-radius:6px;padding:8px 12px}
.card.tone-bad{border-top-color:#e03131}.card.tone-warn{border-top-color:#f08c00}
.card.tone-bad .value{color:#c92a2a}
.card .label{font-size:11px;color:var(--muted);text-transform:uppercase;letter-spacing:.05em}
.card .value{font-size:22px;font-weight:600;font-variant-numeric:tabular-nums;white-space:nowrap}
.card .value small{font-size:13px;font-weight:400;color:var(--muted)}
.card .sub{font-size:12px;color:var(--muted)}
section{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:10px 16px 12px;margin-bottom:14px}
h2{font-size:15px;margin:0 0 6px}
h2 .count{color:var(--muted);font-weight:400;font-size:13px;margin-left:6px}
table{width:100%;border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:middle;white-space:nowrap}
th{font-size:11px;color:var(--muted);font-weight:600;text-transform:uppercase;letter-spacing:.04em}
.num{text-align:right}
tbody tr:last-child td{border-bottom:0}
tbody tr:hover{background:#f8f9fa}
.id{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
.empty,.muted{color:var(--muted)}
.empty{margin:2px 0}
.warn{color:#e8590c}
.bar{position:relative;height:18px;min-width:180px;background:#e9ecef;border-radius:9px;overflow:hidden}
.bar span{display:block;height:100%;background:#74c0fc}
.bar b{position:absolute;inset:0;text-align:center;font-size:12px;line-height:18px;font-weight:600;color:#0b3a63}
.state{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;font-weight:600;background:#f1f3f5;color:#495057}
.state.succeeded{background:#ebfbee;color:#2b8a3e}
.state.failed{background:#fff5f5;color:#c92a2a}
.state.expired{background:#f1f3f5;color:#2b8a3e}
.prio.high{color:#c92a2a;font-weight:600}.prio.low{color:var(--muted)}
td.wrap{white-space:normal;width:100%}
.reason{color:#495057;overflow-wrap:anywhere}
svg.chart{display:block;width:100%;max-width:1000px;height:auto;margin:0 auto;font:12px system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;fill:#495057}
svg.chart .grid{stroke:#edf0f2}svg.chart .axis{stroke:#adb5bd}
svg.chart .title{fill:var(--muted);font-size:11px}svg.chart .none{fill:var(--muted);font-size:14px}
details{margin-top:6px;font-size:13px}summary{cursor:pointer;color:var(--muted)}
footer{max-width:1240px;margin:0 auto;padding:0 24px 20px;color:var(--muted);font-size:12px}
${DELIVERY_CSS}`;

/**
 * The status page of `view`: a complete HTML document (UTF-8) with inline CSS and an
 * inline SVG chart, refreshing itself every `view.refreshSeconds` without script.
 */
export function renderStatusPage(view: StatusView): string {
  const host = escapeHtml(view.host);
  const deliveryColumn = view.deliveries !== undefined ||
    view.finished.some((job) => job.deliveries !== undefined);
  const chartNote = view.chartTruncated
    ? `<p class="muted">Only the newest jobs are counted: too many finished in these hours.</p>`
    : "";
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta http-equiv="refresh" content="${Math.max(1, Math.floor(view.refreshSeconds))}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>recon · ${host}</title>
<style>${CSS}</style>
</head>
<body>
<header><div class="in">
<h1>recon server · ${host}</h1>
<span class="meta">version ${escapeHtml(view.version)}</span>
<span class="meta">up ${escapeHtml(formatDuration(view.uptimeMs))}</span>
<span class="meta">updated ${utcTime(view.now, view.now)} UTC</span>
</div></header>
<main>
${banner(view)}
${cards(view)}
${
    section(
      "running",
      "Running",
      `${view.running.length} of ${view.workers.max} workers`,
      htmlTable(
        ["Job", "Client", "Priority", "Started", "Elapsed", "Progress", ["Executor", "wrap"]],
        runningRows(view.running, view.now),
        "No job is running.",
      ),
    )
  }
${
    section(
      "uploads",
      "Uploads in progress",
      String(view.uploads.length),
      htmlTable(
        ["Job", "Client", "Priority", "Submitted", "Received", ["Files", "num"], [
          "Status",
          "wrap",
        ]],
        uploadRows(view.uploads, view.now),
        "No upload in progress.",
      ),
    )
  }
${
    section(
      "queue",
      "Queue",
      `${view.queue.length} waiting`,
      htmlTable(
        [
          ["#", "num"],
          "Job",
          "Client",
          "Priority",
          "Waiting since",
          "Waiting",
          ["Input", "num"],
          ["", "wrap"],
        ],
        queueRows(view.queue, view.now),
        "The queue is empty.",
      ),
    )
  }
${view.deliveries ? `${deliveriesSection(view.deliveries, view.now)}\n` : ""}${
    section(
      "chart",
      "Last 24 hours",
      "hourly, UTC",
      `${renderChart(view.hours)}\n${chartNote}${chartFigures(view.hours)}`,
    )
  }
${
    section(
      "finished",
      "Recently finished",
      `last ${view.finished.length}`,
      htmlTable(
        [
          "Job",
          "Client",
          "State",
          "Finished",
          "Duration",
          ["Input", "num"],
          ["Results", "num"],
          ...(deliveryColumn ? ["Delivery"] : []),
          ["Reason", "wrap"],
        ],
        finishedRows(view.finished, view.now, deliveryColumn),
        "No job has finished yet.",
      ),
    )
  }
</main>
<footer>Times are UTC. This page reloads every ${
    Math.max(1, Math.floor(view.refreshSeconds))
  } s. It shows job ids, clients, destinations, states, sizes, times and failure reasons only: file names are never shown.</footer>
</body>
</html>
`;
}
