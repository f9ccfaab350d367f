/**
 * `recon-client watch --status` and `--retry` (docs/WATCH.md "Status and retry"):
 * the state file shown as a table or JSON, and choosing which recorded files a
 * `--retry FILE|JOB_ID` makes pending again. Returns text; prints nothing.
 *
 * Besides the recorded files (a submitted one with its job id and the job's phase:
 * uploading, queued, running, downloading) it shows what the first start did (how
 * many files it recorded as baseline), the files the running watcher waits on
 * ("being written, stable in N s"), and why the watcher stopped by itself (a key the
 * server refused). Its health (lib/watch/health.ts) comes first: whether a watcher
 * runs, since when it cannot reach the server, and one `problem:` line per check that
 * fails.
 *
 * @module
 */
import { formatBytes } from "../client/progress.ts";
import * as path from "node:path";
import { UsageError } from "../errors.ts";
import { formatDuration, type Health } from "./health.ts";
import { denoProbe, type FileProbe } from "./probe.ts";
import { sameStat } from "./scanner.ts";
import {
  FILE_STATUSES,
  type FileRecord,
  type FileStatus,
  type FirstStart,
  type JobPhase,
  type StateStore,
  type StopNote,
  type WatchingRecord,
} from "./state.ts";

/** What `--status` shows. */
export interface StatusReport {
  stateFile: string;
  /** False also when the state file does not exist yet. */
  stateFileExists: boolean;
  watcherRunning: boolean;
  files: FileRecord[];
  /** Files the running watcher waits on (give none when no watcher runs). */
  writing?: WatchingRecord[];
  /** What the first start did, once it happened. */
  firstStart?: FirstStart;
  /** Why the watcher stopped by itself, if it did. */
  stopped?: StopNote;
  /** The time "stable in N s" counts from (default: now). */
  now?: Date;
  /** The watcher's health, judged by {@link assessHealth}. */
  health?: Health;
}

/** Whole seconds from `now` until `stableAt`, never negative. */
function stableIn(file: WatchingRecord, now: Date): number {
  return Math.max(0, Math.ceil((Date.parse(file.stableAt) - now.getTime()) / 1000));
}

function writingNote(file: WatchingRecord, now: Date): string {
  const left = stableIn(file, now);
  return left > 0
    ? `being written, stable in ${left} s if it stays unchanged`
    : "being written, stable now: about to be recorded";
}

/** An ISO 8601 UTC time as `2026-11-23 15:37:11`. */
function shortTime(iso: string): string {
  return iso.replace("T", " ").replace(/\.\d+Z$/, "").replace(/Z$/, "");
}

function countByStatus(files: readonly FileRecord[]): Record<FileStatus, number> {
  const counts = Object.fromEntries(FILE_STATUSES.map((status) => [status, 0])) as Record<
    FileStatus,
    number
  >;
  for (const file of files) counts[file.status]++;
  return counts;
}

/** Seconds for JSON: whole seconds for ages, as given for limits (null: off). */
function secondsOf(ms: number | null): number | null {
  return ms === null ? null : ms / 1000;
}

/** The `health` object of `--status --json` (docs/WATCH.md §12). */
function healthJson(health: Health) {
  const { watcher, server, waiting, limits } = health;
  return {
    ok: health.ok,
    exit_code: health.exitCode,
    checked_at: health.checkedAt,
    limits: {
      max_waiting_s: secondsOf(limits.maxWaitingMs),
      max_backoff_s: secondsOf(limits.maxBackoffMs),
      not_scanning_s: secondsOf(limits.notScanningMs),
    },
    watcher: {
      running: watcher.running,
      pid: watcher.pid,
      started_at: watcher.startedAt,
      last_scan_at: watcher.lastScanAt,
      list_error: watcher.listError,
    },
    server: server && {
      unreachable_since: server.unreachableSince,
      unreachable_s: Math.floor(server.unreachableMs / 1000),
      failures: server.failures,
      last_error: server.lastError,
      last_attempt_at: server.lastAttemptAt,
      next_attempt_at: server.nextAttemptAt,
    },
    waiting: {
      count: waiting.count,
      over_limit: waiting.overLimit,
      oldest: waiting.oldest && {
        path: waiting.oldest.path,
        status: waiting.oldest.status,
        since: waiting.oldest.since,
        age_s: Math.floor(waiting.oldest.ageMs / 1000),
      },
    },
    problems: health.problems.map((problem) => ({
      check: problem.check,
      exit_code: problem.exitCode,
      message: problem.message,
    })),
  };
}

/** The `--status --json` document. */
export function statusJson(report: StatusReport): string {
  return JSON.stringify(
    {
      state_file: report.stateFile,
      state_file_exists: report.stateFileExists,
      watcher_running: report.watcherRunning,
      watcher_stopped: report.stopped ?? null,
      health: report.health ? healthJson(report.health) : null,
      first_start: report.firstStart ?? null,
      counts: countByStatus(report.files),
      being_written: (report.writing ?? []).map((file) => ({
        path: file.path,
        size: file.size,
        mtime: new Date(file.mtimeMs).toISOString(),
        seen_at: file.seenAt,
        stable_at: file.stableAt,
        stable_in_s: stableIn(file, report.now ?? new Date()),
      })),
      files: report.files.map((file) => ({
        path: file.path,
        size: file.size,
        mtime: new Date(file.mtimeMs).toISOString(),
        sha256: file.sha256,
        status: file.status,
        job_id: file.jobId,
        phase: file.phase,
        group_id: file.groupId,
        reason: file.reason,
        result_dir: file.resultDir,
        attempts: file.attempts,
        first_seen: file.firstSeen,
        updated_at: file.updatedAt,
        waiting_since: file.waitingSince,
      })),
    },
    null,
    2,
  );
}

/** What a submitted job's phase means, for the NOTE column. */
const PHASE_NOTES: Record<JobPhase, string> = {
  uploading: "being uploaded (the server named the job)",
  queued: "queued on the server",
  running: "running on the server",
  downloading: "results being downloaded",
};

function note(file: FileRecord): string {
  if (file.status === "done") return file.resultDir ? `results in ${file.resultDir}` : "";
  if (file.status === "submitted" && !file.reason) {
    return file.phase ? PHASE_NOTES[file.phase] : "job on the server";
  }
  return file.reason ?? "";
}

/** ` (pid 1234, started …; last scan …)` after `running`, or when the last one started. */
function watcherDetail(report: StatusReport): string {
  const watcher = report.health?.watcher;
  if (!watcher?.startedAt) return "";
  if (!watcher.running) {
    return report.stopped ? "" : ` (last started ${shortTime(watcher.startedAt)} UTC)`;
  }
  const scan = watcher.lastScanAt ? `; last scan ${shortTime(watcher.lastScanAt)} UTC` : "";
  return ` (pid ${watcher.pid ?? "?"}, started ${shortTime(watcher.startedAt)} UTC${scan})`;
}

/** The `server:`, `health:` and `problem:` lines. */
function healthLines(health: Health): string[] {
  const lines: string[] = [];
  if (health.watcher.listError) {
    lines.push(`directory:  cannot be listed: ${health.watcher.listError}`);
  }
  if (health.server) {
    const { server } = health;
    lines.push(
      `server:     not reached since ${shortTime(server.unreachableSince)} UTC (${
        formatDuration(server.unreachableMs)
      }, ${server.failures} failed attempt(s)): ${server.lastError}; next attempt ${
        shortTime(server.nextAttemptAt)
      } UTC`,
    );
  }
  const n = health.problems.length;
  lines.push(`health:     ${n === 0 ? "ok" : `${n} problem(s), exit ${health.exitCode}`}`);
  for (const problem of health.problems) lines.push(`problem:    ${problem.message}`);
  return lines;
}

/** The `--status` table, ending with a summary line. */
export function statusText(report: StatusReport): string {
  const now = report.now ?? new Date();
  const writing = report.writing ?? [];
  const counts = countByStatus(report.files);
  let watcher = report.watcherRunning ? "running" : "not running";
  if (!report.watcherRunning && report.stopped) {
    watcher += `: stopped ${shortTime(report.stopped.at)} UTC: ${report.stopped.reason}\n` +
      `            ${report.stopped.hint}`;
  }
  const lines = [
    `state file: ${report.stateFile}${report.stateFileExists ? "" : " (not created yet)"}`,
    `watcher:    ${watcher}${watcherDetail(report)}`,
  ];
  if (report.health) lines.push(...healthLines(report.health));
  if (counts.baseline > 0) {
    // Months of old scans would drown the table: counted here, listed by --json.
    const when = report.firstStart ? ` (${shortTime(report.firstStart.at)} UTC)` : "";
    lines.push(
      `baseline:   ${counts.baseline.toLocaleString("en-US")} file(s) already there at the ` +
        `first start${when}, recorded and not sent; --status --json lists them, ` +
        "--retry FILE sends one",
    );
  }
  if (report.files.length === 0 && writing.length === 0) {
    lines.push("no files recorded yet");
    return `${lines.join("\n")}\n`;
  }
  const header = ["STATUS", "PHASE", "UPDATED (UTC)", "JOB ID", "SIZE", "FILE", "NOTE"];
  const rows = [
    ...report.files.filter((file) => file.status !== "baseline").map((file) => [
      file.status,
      file.phase ?? "-",
      shortTime(file.updatedAt),
      file.jobId ?? "-",
      formatBytes(file.size),
      file.path,
      note(file),
    ]),
    ...writing.map((file) => [
      "writing",
      "-",
      shortTime(file.seenAt),
      "-",
      formatBytes(file.size),
      file.path,
      writingNote(file, now),
    ]),
  ];
  if (rows.length > 0) {
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
    lines.push("");
    for (const row of [header, ...rows]) {
      lines.push(row.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd());
    }
  }
  const parts = FILE_STATUSES.filter((status) => counts[status] > 0).map((status) =>
    `${counts[status]} ${status}`
  );
  const summary = report.files.length > 0
    ? [`${report.files.length} file(s): ${parts.join(", ")}`]
    : ["no files recorded yet"];
  if (writing.length > 0) summary.push(`${writing.length} being written`);
  lines.push("", summary.join("; "));
  return `${lines.join("\n")}\n`;
}

/** Options of {@link planRetry}. */
export interface RetryOptions {
  /** Whether a watcher holds the state file's lock. */
  watcherRunning: boolean;
  /** Relative FILE arguments are resolved against this. */
  cwd: string;
  probe?: FileProbe;
}

const JOB_ID_PATTERN = /^[0-9a-f-]{8,36}$/i;

function findByFile(store: StateStore, selector: string, cwd: string): FileRecord | undefined {
  const byPath = store.latest(path.resolve(cwd, selector));
  if (byPath || selector.includes("/")) return byPath;
  // A bare name: the newest recorded file of that name, wherever it was watched.
  const named = store.list().filter((row) => path.basename(row.path) === selector);
  return named.at(-1);
}

function findRows(store: StateStore, selector: string, cwd: string): FileRecord[] {
  const file = findByFile(store, selector, cwd);
  if (file) {
    // The whole job (or refused group) the file went with: retrying a P-file without
    // its companions would not reconstruct the same scan.
    return store.byGroup(file.groupId).filter((row) =>
      row.status === file.status && row.jobId === file.jobId
    );
  }
  if (JOB_ID_PATTERN.test(selector)) {
    const rows = store.byJobId(selector.toLowerCase());
    const jobs = new Set(rows.map((row) => row.jobId));
    if (jobs.size > 1) {
      throw new UsageError(`job id prefix ${selector} matches ${jobs.size} jobs`, {
        hint: "give more characters of the job id",
      });
    }
    return rows;
  }
  return [];
}

/**
 * The rows that `--retry SELECTOR…` makes pending again: for a FILE, every file of
 * its job; for a JOB_ID (or a unique prefix of 8+ characters), the job's files.
 * @throws {UsageError} when nothing matches, a file changed since it was recorded, or
 *   the job is still followed by the running watcher.
 */
export async function planRetry(
  store: StateStore,
  selectors: readonly string[],
  options: RetryOptions,
): Promise<{ retry: FileRecord[]; alreadyPending: FileRecord[] }> {
  const probe = options.probe ?? denoProbe;
  const chosen = new Map<number, FileRecord>();
  for (const selector of selectors) {
    const rows = findRows(store, selector, options.cwd);
    if (rows.length === 0) {
      throw new UsageError(`no recorded file or job matches "${selector}"`, {
        hint: "see 'recon-client watch --status' for the files and job ids the watcher knows",
      });
    }
    for (const row of rows) chosen.set(row.id, row);
  }
  const rows = [...chosen.values()].sort((a, b) => a.id - b.id);
  for (const row of rows) {
    if (row.status === "submitted" && options.watcherRunning) {
      // The running watcher takes up every job the server named, also one an earlier
      // run submitted: retrying it now would send the files twice.
      throw new UsageError(
        `job ${row.jobId} (${row.path}) is ${row.phase ?? "submitted"} and followed by ` +
          "the running watcher",
        {
          hint: "wait for it to finish or fail; to send the files as a new job anyway, " +
            "stop the watcher first",
        },
      );
    }
    if (row.status === "pending") continue;
    const now = await probe.stat(row.path);
    if (now.kind !== "file" || !sameStat(now.stat, row)) {
      throw new UsageError(
        `${row.path} is gone or changed since it was recorded; not retried`,
        {
          hint: "a changed file is picked up as a new scan by itself once it is complete",
        },
      );
    }
  }
  return {
    retry: rows.filter((row) => row.status !== "pending"),
    alreadyPending: rows.filter((row) => row.status === "pending"),
  };
}
