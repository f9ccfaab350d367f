/**
 * A reconstruction script's output, the same wherever it runs (lib/server/runner.ts on
 * this box, lib/server/slurm.ts on a cluster; docs/PROTOCOL.md §6.4): bytes split into
 * capped lines, `PROGRESS n` lines on stdout read as progress, a tail of stderr kept
 * for the failure report, and every line appended to the per-job log up to its limit.
 *
 * @module
 */
import { openAppendNoFollowSync } from "../fs_safety.ts";

/** Longest output line kept; the rest of a longer line is dropped. */
export const MAX_LINE_LENGTH = 4096;
/** Lines of stderr kept for the failure report. */
export const STDERR_TAIL_LINES = 20;
/** The per-job log stops growing here (a flooding script cannot fill the disk). */
export const MAX_JOB_LOG_BYTES = 16 * 1024 * 1024;

/** How the script ended. */
export interface RunResult {
  exitCode: number | null;
  signal: string | null;
  timedOut: boolean;
  cancelled: boolean;
  stderrTail: string[];
  /**
   * Why it ended, when the exit status does not say (an executor's own account, e.g.
   * Slurm stopping it at its time limit); never set for a success.
   */
  reason?: string;
}

export type OutputStream = "stdout" | "stderr";

const PROGRESS_LINE = /^PROGRESS\s+(\d{1,3}(?:\.\d+)?)\s*%?\s*$/;

/**
 * Splits bytes into lines of at most MAX_LINE_LENGTH characters (a trailing `\r` is
 * dropped, so is the rest of a longer line), holding no more than one line in memory.
 */
export class LineSplitter {
  #decoder = new TextDecoder();
  #pending = "";
  #overflow = false;
  #onLine: (line: string) => void;

  constructor(onLine: (line: string) => void) {
    this.#onLine = onLine;
  }

  push(chunk: Uint8Array): void {
    let text = this.#pending + this.#decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = text.indexOf("\n")) >= 0) {
      const line = text.slice(0, newline).replace(/\r$/, "");
      if (!this.#overflow) this.#onLine(line.slice(0, MAX_LINE_LENGTH));
      this.#overflow = false;
      text = text.slice(newline + 1);
    }
    if (text.length > MAX_LINE_LENGTH) {
      if (!this.#overflow) this.#onLine(text.slice(0, MAX_LINE_LENGTH));
      this.#overflow = true;
      text = "";
    }
    this.#pending = text;
  }

  /** The stream ended: an unterminated last line is a line too. */
  end(): void {
    const rest = this.#pending + this.#decoder.decode();
    this.#pending = "";
    if (rest && !this.#overflow) this.#onLine(rest.slice(0, MAX_LINE_LENGTH));
    this.#overflow = false;
  }
}

/** The per-job log, appended to; writing is best effort and stops at MAX_JOB_LOG_BYTES. */
export interface JobLog {
  write(text: string): void;
  close(): void;
}

/** Opens `logPath` for appending, never through a symbolic link planted at its name. */
export function openJobLog(logPath: string): JobLog {
  const file = openAppendNoFollowSync(logPath);
  const encoder = new TextEncoder();
  let bytes = 0;
  return {
    write(text) {
      if (bytes > MAX_JOB_LOG_BYTES) return;
      const encoded = encoder.encode(text);
      bytes += encoded.length;
      try {
        file.writeSync(
          bytes > MAX_JOB_LOG_BYTES
            ? encoder.encode("[log truncated: output limit reached]\n")
            : encoded,
        );
      } catch { /* the log is best effort; the job goes on */ }
    },
    close: () => file.close(),
  };
}

/** Where a script's lines go besides the log. */
export interface OutputCallbacks {
  onLine?: (line: string, stream: OutputStream) => void;
  onProgress?: (percent: number) => void;
}

/**
 * Takes the script's lines: each is logged (stderr with a `! ` prefix), a PROGRESS line
 * on stdout becomes progress and nothing else, stderr lines are kept in
 * {@link stderrTail}, every other line goes to `onLine`.
 */
export class ScriptOutput {
  readonly stderrTail: string[] = [];
  #log: JobLog;
  #callbacks: OutputCallbacks;

  constructor(log: JobLog, callbacks: OutputCallbacks) {
    this.#log = log;
    this.#callbacks = callbacks;
  }

  line(stream: OutputStream, line: string): void {
    this.#log.write(`${stream === "stderr" ? "! " : ""}${line}\n`);
    const progress = PROGRESS_LINE.exec(line);
    if (progress && stream === "stdout") {
      this.#callbacks.onProgress?.(Math.min(100, Number(progress[1])));
      return;
    }
    if (stream === "stderr") {
      this.stderrTail.push(line);
      if (this.stderrTail.length > STDERR_TAIL_LINES) this.stderrTail.shift();
    }
    this.#callbacks.onLine?.(line, stream);
  }

  /** A splitter whose lines are this stream's. */
  splitter(stream: OutputStream): LineSplitter {
    return new LineSplitter((line) => this.line(stream, line));
  }
}
