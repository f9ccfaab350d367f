/**
 * What recon-client prints on stdout (README "Client output"): `--server-status` and
 * `--view-queue` as text or `--json`, a finished job's result paths or its JSON
 * document, and the JSON document of a failure; and the warning about result files
 * the server did not send, which client.ts prints on stderr and watch mode logs.
 * Pure functions from data to text; client.ts writes them.
 *
 * @module
 */
import { ExitCode } from "../errors.ts";
import type { QueueDetails, ServerStatus } from "./query.ts";
import { JobFailedError, type SubmitResult } from "./submit.ts";

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

/** `--server-status`: one aligned line per figure; `server` is the HOST:PORT asked. */
export function statusText(status: ServerStatus, server: string): string {
  return [
    `server:              ${server} (recon ${status.version})`,
    `uptime:              ${formatUptime(status.uptime_seconds)}`,
    `max concurrent jobs: ${status.max_concurrent_jobs}`,
    `active workers:      ${status.active_workers}`,
    `queued jobs:         ${status.queue_length}`,
    `jobs completed:      ${status.jobs_completed}`,
    `jobs failed:         ${status.jobs_failed}`,
  ].join("\n") + "\n";
}

/** `--server-status --json`: the server's figures without the message type. */
export function statusJson(status: ServerStatus): string {
  const { type: _type, ...fields } = status;
  return json(fields);
}

const QUEUE_HEADER = ["JOB ID", "STATUS", "PRIMARY FILE", "FILES", "SUBMITTED (UTC)", "INPUT DIR"];

/** `--view-queue`: a table with one row per job (running first), or a line saying it is empty. */
export function queueText(jobs: QueueDetails["jobs"]): string {
  if (jobs.length === 0) return "the queue is empty\n";
  const rows = jobs.map((job) => [
    job.job_id,
    job.status + (job.percent !== undefined ? ` ${job.percent.toFixed(0)}%` : ""),
    job.primary_file,
    String(job.file_count),
    job.submitted_at,
    job.input_dir,
  ]);
  const widths = QUEUE_HEADER.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [QUEUE_HEADER, ...rows]
    .map((row) => row.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd() + "\n")
    .join("");
}

/** `--view-queue --json`. */
export function queueJson(jobs: QueueDetails["jobs"]): string {
  return json({ jobs });
}

/** A finished job: its result paths, one a line, so the output can go to `xargs`. */
export function resultText(result: SubmitResult): string {
  return result.files.map((file) => `${file.path}\n`).join("");
}

/** A finished job with `--json`; `skipped` counts result files the server did not send. */
export function resultJson(result: SubmitResult): string {
  return json({
    job_id: result.jobId,
    status: "completed",
    uploaded: result.uploaded,
    result_dir: result.resultDir,
    files: result.files,
    skipped: result.skipped,
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
  return json(document);
}
