/**
 * Logging for both programs: levels, ISO timestamps, to stderr and to the
 * LOG_FILEPATH from recon.opts, built on `@logtape/logtape`.
 *
 * Sinks write synchronously so that a line logged just before exit is not lost
 * and lines from concurrent sessions never interleave mid-line.
 *
 * @module
 */
import {
  configure,
  getLogger,
  type Logger,
  type LogLevel,
  type LogRecord,
  reset,
  type Sink,
} from "@logtape/logtape";

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

/** One line: `2026-11-23T15:22:28.123Z INFO  recon-server: message`. */
export function formatRecord(record: LogRecord): string {
  const message = record.message.map((part) => typeof part === "string" ? part : String(part))
    .join("");
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
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { append: true, create: true, mode: 0o640 });
  } catch (error) {
    Deno.stderr.writeSync(
      encoder.encode(
        `warning: cannot open log file ${path} (${
          (error as Error).message
        }); logging to stderr only\n`,
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
