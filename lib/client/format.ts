/**
 * What recon-client prints on stdout (README "Client output"): `--server-status` and
 * `--view-queue` as text or `--json`, a finished job's result paths or its JSON
 * document, a detached job's id, the JSON document of a failure; the job store's
 * views (`jobs`, one line per job for `wait` and `cancel`, the notice for a job's
 * state while it is followed); where the server sends a job's DICOM results (its
 * deliveries: the DELIVERY column, `--no-download` and `redeliver`); and the warning
 * about result files the server did not send, which client.ts prints on stderr and
 * watch mode logs.
 * Pure functions from data to text; the command handlers write them.
 *
 * @module
 */
import { ExitCode, LostContactError } from "../errors.ts";
import { printable } from "../printable.ts";
import type { DeliverySummary, JobInfo } from "../wire/protocol.ts";
import { formatBytes } from "./progress.ts";
import type { QueueDetails, ServerStatus } from "./query.ts";
import { JobFailedError, type QueuedJob, type SubmitResult } from "./job.ts";

/** Human-readable duration like `2d 3h 4m 5s`. */
export function formatUptime(seconds: number): string {
  const parts: string[] = [];
  const units: [string, number][] = [["d", 86400], ["h", 3600], ["m", 60]];
  let rest = seconds;
  for (const [unit, size] of units) {
    if (rest >= size) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  parts.push(`${rest}s`);
  return parts.join(" ");
}

function json(document: unknown): string {
  return `${JSON.stringify(document, null, 2)}\n`;
}

/**
 * `--server-status`: one aligned line per figure; `server` is the HOST:PORT asked.
 * A version 3 server's figures (queued by priority, cancelled jobs, the disk space
 * kept inputs and results take, free space against DISK_FREE_MARGIN) when it sent them,
 * which client the server took this one for (and whether it is an admin), and where
 * its jobs run (`executor: slurm`) with what keeps that from taking jobs (`executor
 * problem: …`: queued jobs wait), what computes its encryption (`crypto: OpenSSL 3.0.x
 * libcrypto …`), and its DICOM destinations (`--deliver` names one; an admin also hears
 * which every job goes to), when it said.
 */
export function statusText(status: ServerStatus, server: string): string {
  const { queued_high: high, queued_normal: normal, queued_low: low } = status;
  const lines = [`server:              ${server} (recon ${status.version})`];
  if (status.client !== undefined) {
    lines.push(`client:              ${printable(status.client)}${status.admin ? " (admin)" : ""}`);
  }
  lines.push(
    `uptime:              ${formatUptime(status.uptime_seconds)}`,
    `max concurrent jobs: ${status.max_concurrent_jobs}`,
  );
  if (status.executor !== undefined) {
    lines.push(`executor:            ${oneLine(status.executor)}`);
  }
  if (status.executor_problem !== undefined) {
    lines.push(`executor problem:    ${oneLine(status.executor_problem)}`);
  }
  if (status.crypto !== undefined) {
    lines.push(`crypto:              ${oneLine(status.crypto)}`);
  }
  if (status.destinations !== undefined) {
    const every = status.default_destinations?.length
      ? ` (every job: ${oneLine(status.default_destinations.join(", "))})`
      : "";
    const names = status.destinations.length > 0 ? status.destinations.join(", ") : "none";
    lines.push(`destinations:        ${oneLine(names)}${every}`);
  }
  lines.push(
    `active workers:      ${status.active_workers}`,
    `queued jobs:         ${status.queue_length}`,
  );
  if (high !== undefined || normal !== undefined || low !== undefined) {
    lines.push(`queued by priority:  high ${high ?? 0}, normal ${normal ?? 0}, low ${low ?? 0}`);
  }
  lines.push(
    `jobs completed:      ${status.jobs_completed}`,
    `jobs failed:         ${status.jobs_failed}`,
  );
  if (status.jobs_cancelled !== undefined) {
    lines.push(`jobs cancelled:      ${status.jobs_cancelled}`);
  }
  if (status.kept_input_bytes !== undefined) {
    lines.push(`kept inputs:         ${formatBytes(status.kept_input_bytes)}`);
  }
  if (status.kept_result_bytes !== undefined) {
    lines.push(`kept results:        ${formatBytes(status.kept_result_bytes)}`);
  }
  if (status.disk_free_bytes !== undefined) {
    const margin = status.disk_free_margin;
    const low = margin !== undefined && status.disk_free_bytes < margin
      ? "; below it, new jobs are refused"
      : "";
    lines.push(
      `disk free:           ${formatBytes(status.disk_free_bytes)}` +
        (margin !== undefined ? ` (DISK_FREE_MARGIN ${formatBytes(margin)}${low})` : ""),
    );
  }
  return lines.join("\n") + "\n";
}

/** Text from the server as one line of a table or a status: printable, no line breaks. */
function oneLine(text: string): string {
  return printable(text).replace(/[\n\t]/g, " ");
}

/** What {@link executorColumn} reads of a job: where it ran, and that executor's name for it. */
interface ExecutorRef {
  executor?: string;
  executor_ref?: string;
}

/**
 * The column naming each job's run on the executor, when any listed job has one
 * (`executor_ref`): `SLURM` with the Slurm job id; a job that ran here shows "-". Jobs
 * of more than one executor (a server switched from one to another) get an `EXECUTOR`
 * column whose cells name both, e.g. `slurm 4711`.
 */
function executorColumn(
  jobs: readonly ExecutorRef[],
): { header: string; cell: (job: ExecutorRef) => string } | undefined {
  const refs = jobs.filter((job) => job.executor_ref !== undefined);
  if (refs.length === 0) return undefined;
  const executors = new Set(refs.map((job) => job.executor ?? "slurm"));
  if (executors.size === 1 && executors.has("slurm")) {
    return { header: "SLURM", cell: (job) => oneLine(job.executor_ref ?? "-") };
  }
  return {
    header: "EXECUTOR",
    cell: (job) =>
      job.executor_ref === undefined ? "-" : oneLine(`${job.executor ?? "?"} ${job.executor_ref}`),
  };
}

/** `--server-status --json`: the server's figures without the message type. */
export function statusJson(status: ServerStatus): string {
  const { type: _type, ...fields } = status;
  return json(fields);
}

/** Rows of cells as a table whose columns line up, with no trailing spaces. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [header, ...rows]
    .map((row) => row.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd() + "\n")
    .join("");
}

const QUEUE_HEADER = ["JOB ID", "STATUS", "PRIMARY FILE", "FILES", "SUBMITTED (UTC)", "INPUT DIR"];

/**
 * `--view-queue`: a table with one row per job (running first), or a line saying it is
 * empty. A version 3 server names each job's priority and queue position: two more
 * columns after the status. Another client's job comes without its file names (the
 * server keeps them from a client that is not an admin): `(client mr2)` stands in the
 * primary file's place, and "-" in the input directory's. A job run on Slurm names its
 * Slurm job id in a SLURM column after the status, shown when any job has one.
 */
export function queueText(jobs: QueueDetails["jobs"]): string {
  if (jobs.length === 0) return "the queue is empty\n";
  const v3 = jobs.some((job) => job.priority !== undefined || job.queue_position !== undefined);
  const executor = executorColumn(jobs);
  const rows = jobs.map((job) => {
    const row = [
      job.job_id,
      job.status + (job.percent !== undefined ? ` ${job.percent.toFixed(0)}%` : ""),
      job.primary_file === "" && job.client !== undefined
        ? `(client ${job.client})`
        : job.primary_file || "-",
      String(job.file_count),
      job.submitted_at,
      job.input_dir || "-",
    ].map(printable);
    if (v3) row.splice(2, 0, job.priority ?? "-", job.queue_position?.toString() ?? "-");
    if (executor) row.splice(2, 0, executor.cell(job));
    return row;
  });
  const header = [...QUEUE_HEADER];
  if (v3) header.splice(2, 0, "PRIORITY", "POS");
  if (executor) header.splice(2, 0, executor.header);
  return table(header, rows);
}

/** `--view-queue --json`. */
export function queueJson(jobs: QueueDetails["jobs"]): string {
  return json({ jobs });
}

/** `--detach`: the job id alone (so `id=$(recon-client --detach …)` works), or JSON. */
export function queuedText(job: QueuedJob, asJson: boolean): string {
  if (!asJson) return `${job.jobId}\n`;
  return json({ job_id: job.jobId, status: "queued", uploaded: job.uploaded });
}

/** A finished job: its result paths, one a line, so the output can go to `xargs`. */
export function resultText(result: SubmitResult): string {
  return result.files.map((file) => `${file.path}\n`).join("");
}

/**
 * A finished job with `--json`; `skipped` counts result files the server did not send;
 * `deliveries` (when asked for: `--deliver`) where else its results go.
 */
export function resultJson(
  result: SubmitResult,
  deliveries?: readonly DeliverySummary[],
): string {
  return json({
    job_id: result.jobId,
    status: "completed",
    uploaded: result.uploaded,
    result_dir: result.resultDir,
    files: result.files,
    skipped: result.skipped,
    ...(deliveries ? { deliveries } : {}),
  });
}

/**
 * The warning for a finished job whose script wrote files the server did not send
 * (PROTOCOL.md §6.5), or undefined when it sent everything. Only the count reaches
 * the client; the names, untrusted and perhaps patient data, stay in the server log.
 */
export function skippedWarning(skipped: number): string | undefined {
  if (skipped === 0) return undefined;
  return `${skipped} result file(s) the script wrote were not sent (names a client refuses, ` +
    "links or special files); the server log says which";
}

/**
 * Lines printed under the error line: a failed job's script exit code, unless the
 * reason already says it ("… exited with code 3").
 */
export function failureDetails(error: unknown): string[] {
  if (
    error instanceof JobFailedError && error.scriptExitCode !== null &&
    !error.message.includes(`code ${error.scriptExitCode}`)
  ) {
    return [`  script exit code: ${error.scriptExitCode}`];
  }
  return [];
}

/** Any failure with `--json`: status, message and exit code, and a failed job's details. */
export function failureJson(error: unknown, exitCode: number): string {
  const document: Record<string, unknown> = {
    status: exitCode === ExitCode.JOB_FAILED ? "failed" : "error",
    error: (error as Error).message,
    exit_code: exitCode,
  };
  if (error instanceof JobFailedError) {
    document.job_id = error.jobId;
    document.script_exit_code = error.scriptExitCode;
    document.stderr_tail = error.stderrTail;
  }
  if (error instanceof LostContactError) {
    document.job_id = error.jobId;
    document.fetch_command = error.fetchCommand;
  }
  return json(document);
}

/** An ISO-8601 time from the server as `2026-12-01 10:00:00` (UTC), "-" when absent. */
export function formatUtc(iso: string | undefined): string {
  if (iso === undefined) return "-";
  const time = new Date(iso);
  if (Number.isNaN(time.getTime())) return printable(iso);
  return time.toISOString().slice(0, 19).replace("T", " ");
}

/** "3 / 1.20 MB", or "-" when the count is unknown. */
function filesAndBytes(count: number | undefined, bytes: number | undefined): string {
  if (count === undefined) return "-";
  return bytes === undefined ? String(count) : `${count} / ${formatBytes(bytes)}`;
}

/** The job's state, with a running job's percent. */
function stateOf(job: JobInfo): string {
  return job.state +
    (job.state === "running" && job.percent !== undefined ? ` ${job.percent.toFixed(0)}%` : "");
}

/** Why the job ended as it did, with who cancelled it; one line, "" when nothing to say. */
function reasonOf(job: JobInfo): string {
  const by = job.cancelled_by ? ` (by ${job.cancelled_by})` : "";
  const again = job.rerun_of ? `rerun of ${job.rerun_of}` : "";
  const reason = job.reason ? oneLine(job.reason) + by : "";
  return [reason, again].filter(Boolean).join("; ");
}

/**
 * When what the job keeps goes: a succeeded (or expired) job's results, a failed job's
 * inputs (the time until which it can be rerun, marked "inputs").
 */
function expiryOf(job: JobInfo): string {
  if (job.results_expire_at) return formatUtc(job.results_expire_at);
  if (job.state === "failed" && job.inputs_expire_at) {
    return `${formatUtc(job.inputs_expire_at)} inputs`;
  }
  return "-";
}

/** A delivery's files as `12/32`: DICOM files the destination stored, of those to send. */
function storedOf(delivery: DeliverySummary): string {
  return `${delivery.files_sent}/${delivery.files_total}`;
}

/**
 * One destination of a job in a table cell: `PACS 32/32` (delivered), `PACS sending
 * 12/32`, `PACS pending` (not tried yet), `PACS retrying 12/32` (an attempt failed, another
 * follows), `PACS failed 12/32` (given up).
 */
export function deliveryCell(delivery: DeliverySummary): string {
  const name = oneLine(delivery.destination);
  switch (delivery.state) {
    case "delivered":
      return `${name} ${storedOf(delivery)}`;
    case "sending":
      return `${name} sending ${storedOf(delivery)}`;
    case "failed":
      return `${name} failed ${storedOf(delivery)}`;
    case "pending":
      return delivery.attempts > 0 ? `${name} retrying ${storedOf(delivery)}` : `${name} pending`;
  }
}

/** Every destination of a job, for the DELIVERY column and a job's line; "-" for none. */
export function deliveriesCell(deliveries: readonly DeliverySummary[] | undefined): string {
  return deliveries?.length ? deliveries.map(deliveryCell).join(", ") : "-";
}

/**
 * One destination of a job in words, e.g. `PACS: delivered 32 of 32 DICOM file(s) at
 * 2026-12-01 10:00:12 UTC` or `PACS: 12 of 32 DICOM file(s) stored; attempt 3 failed:
 * …; next attempt at 2026-12-01 10:05:00 UTC`.
 */
export function deliveryLine(delivery: DeliverySummary): string {
  const stored = `${delivery.files_sent} of ${delivery.files_total} DICOM file(s)`;
  const refused = delivery.files_failed > 0 ? `, ${delivery.files_failed} refused` : "";
  const skipped = delivery.files_skipped > 0
    ? `; ${delivery.files_skipped} result file(s) not DICOM, not sent`
    : "";
  const error = delivery.last_error !== undefined ? `: ${oneLine(delivery.last_error)}` : "";
  const at = (iso: string | undefined) => iso === undefined ? "" : ` at ${formatUtc(iso)} UTC`;
  let words: string;
  switch (delivery.state) {
    case "delivered":
      words = `delivered ${stored}${at(delivery.finished_at)}`;
      break;
    case "sending":
      words = `sending, ${stored} stored so far${refused} (attempt ${delivery.attempts})`;
      break;
    case "failed":
      words = `failed${at(delivery.finished_at)} after ${delivery.attempts} attempt(s)${error}; ` +
        `${stored} stored${refused}`;
      break;
    case "pending":
      words = delivery.attempts === 0
        ? `pending, not tried yet`
        : `${stored} stored${refused}; attempt ${delivery.attempts} failed${error}` +
          (delivery.next_attempt_at ? `; next attempt${at(delivery.next_attempt_at)}` : "");
      break;
  }
  return `${oneLine(delivery.destination)}: ${words}${skipped}`;
}

/**
 * `--no-download` and `redeliver`: the job's line, then one indented line per
 * destination its results go to.
 */
export function deliveryReport(job: JobInfo): string {
  const lines = [jobLine(job), ...(job.deliveries ?? []).map((d) => `  ${deliveryLine(d)}`)];
  return lines.map((line) => `${printable(line)}\n`).join("");
}

/** `--no-download --json`: how the job ended, what was uploaded, where its results go. */
export function noDownloadJson(job: JobInfo, uploaded: readonly unknown[]): string {
  return json({
    job_id: job.job_id,
    status: job.state,
    uploaded,
    deliveries: job.deliveries ?? [],
    job,
  });
}

/** `redeliver --json`: the job's deliveries as they are now, and the job. */
export function redeliverJson(job: JobInfo): string {
  return json({ job_id: job.job_id, deliveries: job.deliveries ?? [], job });
}

const JOBS_HEADER = [
  "JOB ID",
  "FILE",
  "STATE",
  "PRIORITY",
  "POS",
  "SUBMITTED (UTC)",
  "STARTED (UTC)",
  "FINISHED (UTC)",
  "INPUTS",
  "EXIT",
  "RESULTS",
  "EXPIRES (UTC)",
  "REASON",
];
/** Where RESULTS is in {@link JOBS_HEADER}: DELIVERY follows it. */
const RESULTS_COLUMN = JOBS_HEADER.indexOf("RESULTS");

/**
 * `jobs`: one row per job in submission order: state, priority, queue position, times
 * (UTC), input files and bytes, the script's exit code, result files and bytes, when
 * the results (a failed job: its inputs) expire, and the reason. A CLIENT column (who
 * submitted each job) after the id when the jobs are more than one client's, or when
 * every client's were asked for (`allClients`, `jobs --all-clients`); a SLURM column
 * (the Slurm job id) after the state when any job ran on Slurm; a DELIVERY column
 * after the results when any job's results go to a destination ({@link deliveryCell}).
 */
export function jobsText(
  jobs: readonly JobInfo[],
  state?: string,
  options: { allClients?: boolean } = {},
): string {
  if (jobs.length === 0) {
    const whose = options.allClients ? "" : " of this client";
    return state
      ? `no job${whose} on the server is ${state}\n`
      : `the server holds no jobs${whose}\n`;
  }
  const clients = new Set(jobs.map((job) => job.client));
  const withClient = options.allClients === true || clients.size > 1;
  const executor = executorColumn(jobs);
  const delivering = jobs.some((job) => (job.deliveries?.length ?? 0) > 0);
  const [id, file, jobState, ...rest] = JOBS_HEADER;
  // After RESULTS (rest starts at PRIORITY, the fourth column).
  const afterResults = RESULTS_COLUMN - 2;
  const withDelivery = <T>(cells: T[], cell: T): T[] =>
    delivering ? [...cells.slice(0, afterResults), cell, ...cells.slice(afterResults)] : cells;
  return table(
    [
      id,
      ...(withClient ? ["CLIENT"] : []),
      file,
      jobState,
      ...(executor ? [executor.header] : []),
      ...withDelivery(rest, "DELIVERY"),
    ],
    jobs.map((job) => [
      job.job_id,
      ...(withClient ? [job.client !== undefined ? printable(job.client) : "-"] : []),
      // The primary file: which scan this is, as --view-queue shows it.
      job.primary_file ? printable(job.primary_file) : "-",
      stateOf(job),
      ...(executor ? [executor.cell(job)] : []),
      ...withDelivery([
        job.priority,
        job.queue_position?.toString() ?? "-",
        formatUtc(job.submitted_at),
        formatUtc(job.started_at),
        formatUtc(job.finished_at),
        filesAndBytes(job.file_count, job.input_bytes),
        job.exit_code?.toString() ?? "-",
        filesAndBytes(job.result_count, job.result_bytes),
        expiryOf(job),
        reasonOf(job),
      ], deliveriesCell(job.deliveries)),
    ]),
  );
}

/** `jobs --json`: the jobs as the server described them. */
export function jobsJson(jobs: readonly JobInfo[]): string {
  return json({ jobs });
}

/**
 * One line for a job that reached its end (`wait`, `cancel`): id, final state, when,
 * and what came of it, e.g.
 * `0b7f… succeeded at 2026-12-01 10:00:00 UTC: 12 result file(s), 30.0 MB, until 2026-12-08 10:00:00 UTC`,
 * and where its results go (`; delivery: PACS 12/12`).
 */
export function jobLine(job: JobInfo): string {
  const at = job.finished_at ? ` at ${formatUtc(job.finished_at)} UTC` : "";
  const head = `${job.job_id} ${job.state}${at}`;
  switch (job.state) {
    case "succeeded": {
      const results = job.result_count === undefined
        ? ""
        : `: ${job.result_count} result file(s), ${formatBytes(job.result_bytes ?? 0)}`;
      const until = job.results_expire_at
        ? `, kept until ${formatUtc(job.results_expire_at)} UTC`
        : "";
      const delivery = job.deliveries?.length
        ? `; delivery: ${deliveriesCell(job.deliveries)}`
        : "";
      return `${head}${results}${until}${delivery}`;
    }
    case "expired":
      return `${head}; its results were removed`;
    default: {
      const reason = reasonOf(job);
      return reason ? `${head}: ${reason}` : head;
    }
  }
}

/** `wait --json`, `cancel --json`: the jobs as the server last described them. */
export function jobLinesJson(jobs: readonly JobInfo[]): string {
  return json({ jobs });
}

/** The notice for a followed job's state (`job_status`), e.g. "job … queued (position 2)". */
export function statusNotice(job: JobInfo): string {
  const id = `job ${job.job_id}`;
  switch (job.state) {
    case "queued": {
      const position = job.queue_position !== undefined
        ? `position ${job.queue_position} in the queue, `
        : "";
      return `${id} queued (${position}priority ${job.priority})`;
    }
    case "running":
      return `${id} running` + (job.attempts > 1 ? ` (attempt ${job.attempts})` : "");
    case "receiving":
      return `${id} is still being uploaded`;
    default:
      return jobLine(job).replace(job.job_id, id);
  }
}
