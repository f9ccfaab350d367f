/**
 * LOG_RETENTION: the per-job logs `RECON_FILEPATH/job_<id>.log` (lib/server/runner.ts)
 * are removed once they are older than that many days, at the server's start and then
 * every hour, with one log line giving the count. A log whose job still has its
 * `job_<id>.pid` (the script is running) is kept whatever its age.
 *
 * @module
 */
import { join } from "node:path";
import { errorMessage } from "../errors.ts";
import type { Logger } from "../log.ts";

const JOB_LOG = /^job_([0-9a-f-]{36})\.log$/;
const DAY_MS = 24 * 60 * 60 * 1000;

/** How often a running server sweeps: hourly. */
export const SWEEP_INTERVAL_MS = 60 * 60 * 1000;

/** Inputs of {@link sweepJobLogs} and {@link startLogSweeper}. */
export interface LogRetentionOptions {
  /** RECON_FILEPATH. */
  dir: string;
  /** LOG_RETENTION in days; 0 keeps every log. */
  days: number;
  log: Logger;
  /** The clock (ms since the epoch); default Date.now. */
  now?: () => number;
}

/**
 * Remove the job logs in `dir` last written more than `days` days ago (regular files
 * only: a link in their place is left alone) and return how many went; logs one line
 * when any did. A missing `dir` removes nothing.
 */
export async function sweepJobLogs(options: LogRetentionOptions): Promise<number> {
  const { dir, days, log } = options;
  if (days <= 0) return 0;
  const cutoff = (options.now ?? Date.now)() - days * DAY_MS;
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return 0;
    throw error;
  }
  const present = new Set(names);
  let removed = 0;
  for (const name of names) {
    const job = JOB_LOG.exec(name);
    if (!job || present.has(`job_${job[1]}.pid`)) continue;
    const file = join(dir, name);
    try {
      const info = await Deno.lstat(file);
      if (!info.isFile || info.mtime === null || info.mtime.getTime() >= cutoff) continue;
      await Deno.remove(file);
      removed++;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) {
        log.warn(`cannot remove old job log ${file}: ${errorMessage(error)}`);
      }
    }
  }
  if (removed > 0) {
    log.info(
      `removed ${removed} job log${removed === 1 ? "" : "s"} older than ${days} day${
        days === 1 ? "" : "s"
      } (LOG_RETENTION) from ${dir}`,
    );
  }
  return removed;
}

/** A running sweeper; {@link LogSweeper.stop} ends it and waits for a sweep in progress. */
export interface LogSweeper {
  /** The sweep at start (resolves with its count). */
  readonly first: Promise<number>;
  stop(): Promise<void>;
}

/**
 * Sweep now and then every `intervalMs` (default hourly) until stopped. A sweep that
 * fails is logged and the next one runs as planned.
 */
export function startLogSweeper(
  options: LogRetentionOptions & { intervalMs?: number },
): LogSweeper {
  let running: Promise<number> = Promise.resolve(0);
  const sweep = () => {
    running = running.then(() => sweepJobLogs(options)).catch((error) => {
      options.log.warn(`job log sweep of ${options.dir} failed: ${errorMessage(error)}`);
      return 0;
    });
    return running;
  };
  const first = sweep();
  const timer = options.days > 0
    ? setInterval(sweep, options.intervalMs ?? SWEEP_INTERVAL_MS)
    : undefined;
  return {
    first,
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
