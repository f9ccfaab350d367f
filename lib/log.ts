/**
 * Logging for both programs: levels, ISO timestamps, to stderr and to the
 * LOG_FILEPATH from recon.opts, built on `@logtape/logtape`.
 *
 * Sinks write synchronously so that a line logged just before exit is not lost
 * and lines from concurrent sessions never interleave mid-line. Every message is
 * written as one line with its control characters escaped (safe by construction:
 * callers need not remember which of their strings came from outside).
 *
 * @module
 */
import { type AppendFile, openAppendNoFollowSync } from "./fs_safety.ts";
import {
  configure,
  getLogger,
  type Logger,
  type LogLevel,
  type LogRecord,
  reset,
  type Sink,
} from "@logtape/logtape";
import { escapeControls } from "./printable.ts";

export type { Logger };

/** Options for {@link setupLogging}. */
export interface LoggingOptions {
  /** `"recon-server"` or `"recon-client"`: the root category. */
  program: string;
  /** Lowest level written; `--debug` sets `"debug"`. */
  level?: LogLevel;
  /** Append log lines to this file too (LOG_FILEPATH); created if missing. */
  filePath?: string;
  /** Write to stderr (default true); `--quiet` on the client turns it off below warnings. */
  stderrLevel?: LogLevel;
}

const encoder = new TextEncoder();
const LEVEL_ORDER: LogLevel[] = ["trace", "debug", "info", "warning", "error", "fatal"];
const LEVEL_LABEL: Record<LogLevel, string> = {
  trace: "TRACE",
  debug: "DEBUG",
  info: "INFO",
  warning: "WARN",
  error: "ERROR",
  fatal: "FATAL",
};

/**
 * One line: `2026-11-23T15:22:28.123Z INFO  recon-server: message`. The message is
 * passed through escapeControls(), so no caller can write a second line or an escape
 * sequence, whatever untrusted text (file names, option values, peer text) it holds.
 */
export function formatRecord(record: LogRecord): string {
  const message = escapeControls(
    record.message.map((part) => typeof part === "string" ? part : String(part)).join(""),
  );
  const label = LEVEL_LABEL[record.level].padEnd(5);
  return `${new Date(record.timestamp).toISOString()} ${label} ${
    record.category.join(".")
  }: ${message}\n`;
}

function atLeast(level: LogLevel, threshold: LogLevel): boolean {
  return LEVEL_ORDER.indexOf(level) >= LEVEL_ORDER.indexOf(threshold);
}

function stderrSink(threshold: LogLevel): Sink {
  return (record) => {
    if (!atLeast(record.level, threshold)) return;
    try {
      Deno.stderr.writeSync(encoder.encode(formatRecord(record)));
    } catch {
      // stderr closed (e.g. the parent went away): logging must never crash the program.
    }
  };
}

function fileSink(path: string): { sink: Sink; close: () => void } | undefined {
  let file: AppendFile;
  try {
    // O_NOFOLLOW: a symbolic link planted at LOG_FILEPATH is refused, never written through.
    file = openAppendNoFollowSync(path);
  } catch (error) {
    Deno.stderr.writeSync(
      encoder.encode(
        `warning: cannot open log file ${
          escapeControls(`${path} (${(error as Error).message})`)
        }; logging to stderr only\n`,
      ),
    );
    return undefined;
  }
  return {
    sink: (record) => {
      try {
        const bytes = encoder.encode(formatRecord(record));
        let written = 0;
        while (written < bytes.length) written += file.writeSync(bytes.subarray(written));
      } catch {
        // a full disk must not stop a reconstruction; stderr still has the line
      }
    },
    close: () => file.close(),
  };
}

let closeFile: (() => void) | undefined;

/** Configure logging once per process. Safe to call again (e.g. after reading recon.opts). */
export async function setupLogging(options: LoggingOptions): Promise<void> {
  await reset();
  closeFile?.();
  closeFile = undefined;
  const level = options.level ?? "info";
  const sinks: Record<string, Sink> = { stderr: stderrSink(options.stderrLevel ?? level) };
  if (options.filePath) {
    const file = fileSink(options.filePath);
    if (file) {
      sinks.file = file.sink;
      closeFile = file.close;
    }
  }
  await configure({
    reset: true,
    sinks,
    loggers: [
      { category: [options.program], lowestLevel: level, sinks: Object.keys(sinks) },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}

/** Flush and close the log file. */
export async function shutdownLogging(): Promise<void> {
  await reset();
  closeFile?.();
  closeFile = undefined;
}

/** A logger under the program's category, e.g. `log("recon-server", "jobs")`. */
export function log(...category: string[]): Logger {
  return getLogger(category);
}

/** What {@link LogThrottle.pass} decided. */
export type ThrottleVerdict =
  /** Write the line; `held` lines for this key were held back since its last one. */
  | { held: number }
  /** The overall cap was just reached: write one line saying so, then nothing until the window ends. */
  | "cap"
  /** Hold this line back. */
  | undefined;

/** Options of {@link LogThrottle}. */
export interface LogThrottleOptions {
  /** One line per key per window (ms). */
  windowMs: number;
  /** Lines per window over all keys (bounds a flood from many addresses). */
  maxLines: number;
  now?: () => number;
}

/**
 * Lets through one log line per key (say, per peer address) per window and at most
 * `maxLines` per window overall, and counts what it holds back, so that a flood of bad
 * connections costs a few log lines a minute, not one per attempt.
 */
export class LogThrottle {
  #options: Required<LogThrottleOptions>;
  #keys = new Map<string, { since: number; held: number }>();
  #windowStart = Number.NEGATIVE_INFINITY;
  #lines = 0;

  constructor(options: LogThrottleOptions) {
    this.#options = { now: () => Date.now(), ...options };
  }

  /** Keys it remembers (at most 10,000 after a flood of distinct keys). */
  get tracked(): number {
    return this.#keys.size;
  }

  /** Whether to write a line for `key` now. */
  pass(key: string): ThrottleVerdict {
    const { windowMs, maxLines, now: clock } = this.#options;
    const now = clock();
    if (now - this.#windowStart >= windowMs) {
      this.#windowStart = now;
      this.#lines = 0;
    }
    let entry = this.#keys.get(key);
    if (entry && now - entry.since < windowMs) {
      entry.held++;
      return undefined;
    }
    if (this.#lines >= maxLines) {
      if (this.#lines++ === maxLines) return "cap";
      if (!entry) {
        // Remembered as due for a line, so that its next line counts this one.
        entry = { since: Number.NEGATIVE_INFINITY, held: 0 };
        this.#remember(key, entry, now);
      }
      entry.held++;
      return undefined;
    }
    this.#lines++;
    const held = entry?.held ?? 0;
    this.#remember(key, { since: now, held: 0 }, now);
    return { held };
  }

  #remember(key: string, entry: { since: number; held: number }, now: number): void {
    this.#keys.set(key, entry);
    if (this.#keys.size <= 10_000) return;
    for (const [old, value] of this.#keys) {
      if (now - value.since >= this.#options.windowMs) this.#keys.delete(old);
    }
    // Still full (a flood within one window): forget the oldest half.
    if (this.#keys.size > 10_000) {
      let drop = this.#keys.size / 2;
      for (const old of this.#keys.keys()) {
        if (drop-- <= 0) break;
        this.#keys.delete(old);
      }
    }
  }
}
