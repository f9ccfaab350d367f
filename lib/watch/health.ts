/**
 * The watcher's health for monitoring (docs/WATCH.md §12): what `watch --status`
 * finds wrong, each problem with its own exit code, so that Nagios, a systemd timer or
 * a node_exporter textfile script can alert on it. Pure: the caller reads the state
 * file and the lock, and passes the clock in.
 *
 * | check          | exit | problem when                                                        |
 * | -------------- | ---- | ------------------------------------------------------------------- |
 * | `not_running`  | 10   | no process holds the state file's lock                              |
 * | `not_scanning` | 11   | the running watcher finished no scan for max(10 min, 5 × poll)      |
 * | `backoff`      | 12   | the running watcher has failed to reach the server for max_backoff  |
 * | `waiting`      | 13   | a file has waited longer than max_waiting to be delivered           |
 *
 * Several problems: the lowest code wins (the table's order); all are listed. The
 * codes stay clear of the client's own (0–5, 130) and of 2, which `--status` still
 * uses when it cannot tell (bad recon.opts, unreadable state file).
 *
 * @module
 */
import { UsageError } from "../errors.ts";
import type { FileRecord, Heartbeat, ServerTrouble, StopNote } from "./state.ts";

/** `watch --status` exit codes, one per check (0: healthy). */
export const HealthExit = {
  OK: 0,
  NOT_RUNNING: 10,
  NOT_SCANNING: 11,
  BACKOFF: 12,
  WAITING: 13,
} as const;

/** What `--status` checks, in the order of their exit codes. */
export type HealthCheck = "not_running" | "not_scanning" | "backoff" | "waiting";

/** Every check with its exit code, most severe first. */
export const HEALTH_CHECKS: readonly { check: HealthCheck; exitCode: number }[] = [
  { check: "not_running", exitCode: HealthExit.NOT_RUNNING },
  { check: "not_scanning", exitCode: HealthExit.NOT_SCANNING },
  { check: "backoff", exitCode: HealthExit.BACKOFF },
  { check: "waiting", exitCode: HealthExit.WAITING },
];

/** `--max-waiting` default: a scan not on the server an hour after it was finished. */
export const DEFAULT_MAX_WAITING_MS = 60 * 60_000;
/** `--max-backoff` default: longer than a server restart or upgrade takes. */
export const DEFAULT_MAX_BACKOFF_MS = 15 * 60_000;
/**
 * A running watcher that finished no scan for this long, or {@link NOT_SCANNING_POLLS}
 * poll intervals if that is longer, is stuck (e.g. on a network filesystem that does
 * not answer). Generous: a scan hashes each newly finished file, several GB each.
 */
export const NOT_SCANNING_MIN_MS = 10 * 60_000;
export const NOT_SCANNING_POLLS = 5;

/** The thresholds; null turns a check off. */
export interface HealthLimits {
  maxWaitingMs: number | null;
  maxBackoffMs: number | null;
}

/** What the health is judged from (the state file, the lock and the clock). */
export interface HealthInput {
  /** Whether a process holds the state file's lock. */
  watcherRunning: boolean;
  stateFileExists: boolean;
  /** Meta of the last watcher that started: its run id, pid and start time. */
  runId?: string;
  pid?: number;
  startedAt?: string;
  heartbeat?: Heartbeat;
  serverTrouble?: ServerTrouble;
  stopped?: StopNote;
  files: readonly FileRecord[];
  now: Date;
  limits: HealthLimits;
}

/** One thing wrong. */
export interface HealthProblem {
  check: HealthCheck;
  exitCode: number;
  /** One line for a person (and Nagios). */
  message: string;
}

/** A file waiting to be delivered. */
export interface WaitingFile {
  path: string;
  status: "pending" | "submitted";
  since: string;
  ageMs: number;
}

/** What `--status` reports about the watcher's health. */
export interface Health {
  ok: boolean;
  exitCode: number;
  checkedAt: string;
  limits: HealthLimits & { notScanningMs: number };
  watcher: {
    running: boolean;
    /** The running watcher's process id (null when none runs). */
    pid: number | null;
    /** When the running watcher, or else the last one, started. */
    startedAt: string | null;
    /** The running watcher's last complete scan (null when unknown). */
    lastScanAt: string | null;
    /** Why the running watcher cannot list its directory, while it cannot. */
    listError: string | null;
  };
  /** While the running watcher fails to reach the server (null otherwise). */
  server: {
    unreachableSince: string;
    unreachableMs: number;
    failures: number;
    lastError: string;
    lastAttemptAt: string;
    nextAttemptAt: string;
  } | null;
  /** Files recorded complete and not yet on the server (pending, or uploading). */
  waiting: { count: number; overLimit: number; oldest: WaitingFile | null };
  problems: HealthProblem[];
}

/** Milliseconds for people: `45 s`, `18 min`, `2 h 05 min`, `3 d 4 h`. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s} s`;
  const min = Math.floor(s / 60);
  if (min < 120) return `${min} min`;
  const h = Math.floor(min / 60);
  if (h < 48) return `${h} h ${String(min % 60).padStart(2, "0")} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

const DURATION = /^(\d{1,9}(?:\.\d{1,3})?)(s|m|h|d)?$/;
const UNIT_MS = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
/** No threshold is longer than this. */
const MAX_LIMIT_MS = 365 * 86_400_000;

/**
 * A threshold such as `90s`, `30m`, `2h`, `1d` or `600` (seconds); `0` turns the
 * check off (null).
 * @throws {UsageError} for anything else.
 */
export function parseLimit(text: string, flag: string): number | null {
  const match = DURATION.exec(text.trim());
  const ms = match
    ? Math.round(Number(match[1]) * UNIT_MS[(match[2] ?? "s") as keyof typeof UNIT_MS])
    : NaN;
  if (!(ms >= 0 && ms <= MAX_LIMIT_MS)) {
    throw new UsageError(`${flag} "${text}" is not a duration of up to a year`, {
      hint: `for example ${flag} 30m, 2h, 1d or 600 (seconds); 0 turns the check off`,
    });
  }
  return ms === 0 ? null : ms;
}

function utc(iso: string): string {
  return `${iso.replace("T", " ").replace(/\.\d+Z$|Z$/, "")} UTC`;
}

/** A file the watcher still has to deliver: not yet named by the server, or uploading. */
function isWaiting(file: FileRecord): boolean {
  return file.status === "pending" || (file.status === "submitted" && file.phase === "uploading");
}

/** Judge the watcher's health; see the module documentation for the checks. */
export function assessHealth(input: HealthInput): Health {
  const now = input.now.getTime();
  const { limits } = input;
  const problems: HealthProblem[] = [];
  const problem = (check: HealthCheck, message: string) => {
    const { exitCode } = HEALTH_CHECKS.find((c) => c.check === check)!;
    problems.push({ check, exitCode, message });
  };
  // Notes left by another run (an older watcher writes none) say nothing of this one.
  const thisRun = <T extends { runId: string }>(note: T | undefined) =>
    input.watcherRunning && note && note.runId === input.runId ? note : undefined;
  const heartbeat = thisRun(input.heartbeat);
  const trouble = thisRun(input.serverTrouble);
  const notScanningMs = Math.max(
    NOT_SCANNING_MIN_MS,
    NOT_SCANNING_POLLS * (heartbeat?.pollMs ?? 0),
  );

  if (!input.watcherRunning) {
    if (input.stopped) {
      problem(
        "not_running",
        `the watcher stopped by itself at ${utc(input.stopped.at)}: ${input.stopped.reason}`,
      );
    } else if (!input.stateFileExists || !input.startedAt) {
      problem("not_running", "no watcher is running, and none has run with this state file yet");
    } else {
      const pid = input.pid === undefined ? "" : ` as pid ${input.pid}`;
      problem(
        "not_running",
        `no watcher is running (the last one started at ${utc(input.startedAt)}${pid})`,
      );
    }
  }

  if (heartbeat) {
    const idleMs = now - Date.parse(heartbeat.at);
    if (idleMs > notScanningMs) {
      const limit = `no complete scan for ${formatDuration(idleMs)} (limit ${
        formatDuration(notScanningMs)
      })`;
      problem(
        "not_scanning",
        heartbeat.listError
          ? `the watcher cannot list its directory: ${heartbeat.listError}; ${limit}`
          : `the watcher runs but has made ${limit}: it may hang (a network filesystem ` +
            "that does not answer?)",
      );
    }
  }

  let server: Health["server"] = null;
  if (trouble) {
    const unreachableMs = now - Date.parse(trouble.since);
    server = {
      unreachableSince: trouble.since,
      unreachableMs,
      failures: trouble.failures,
      lastError: trouble.lastError,
      lastAttemptAt: trouble.lastAttemptAt,
      nextAttemptAt: trouble.nextAttemptAt,
    };
    if (limits.maxBackoffMs !== null && unreachableMs > limits.maxBackoffMs) {
      problem(
        "backoff",
        `the watcher has not reached the server for ${formatDuration(unreachableMs)} (limit ${
          formatDuration(limits.maxBackoffMs)
        }, ${trouble.failures} failed attempt(s)): ${trouble.lastError}`,
      );
    }
  }

  const waiting: WaitingFile[] = input.files.filter(isWaiting).map((file) => {
    const since = file.waitingSince ?? file.firstSeen;
    return {
      path: file.path,
      status: file.status as WaitingFile["status"],
      since,
      ageMs: now - Date.parse(since),
    };
  }).sort((a, b) => b.ageMs - a.ageMs);
  const overLimit = limits.maxWaitingMs === null
    ? 0
    : waiting.filter((file) => file.ageMs > limits.maxWaitingMs!).length;
  if (overLimit > 0) {
    const oldest = waiting[0];
    problem(
      "waiting",
      `${overLimit} file(s) waiting longer than ${
        formatDuration(limits.maxWaitingMs!)
      } to reach the server; the oldest, ${oldest.path}, for ${formatDuration(oldest.ageMs)} (${
        oldest.status === "pending" ? "not sent yet" : "upload not finished"
      })`,
    );
  }

  const exitCode = problems.length === 0
    ? HealthExit.OK
    : Math.min(...problems.map((p) => p.exitCode));
  return {
    ok: problems.length === 0,
    exitCode,
    checkedAt: input.now.toISOString(),
    limits: { ...limits, notScanningMs },
    watcher: {
      running: input.watcherRunning,
      pid: input.watcherRunning ? input.pid ?? null : null,
      startedAt: input.startedAt ?? null,
      lastScanAt: heartbeat?.at ?? null,
      listError: heartbeat?.listError ?? null,
    },
    server,
    waiting: { count: waiting.length, overLimit, oldest: waiting[0] ?? null },
    problems,
  };
}
