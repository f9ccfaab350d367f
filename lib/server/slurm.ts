/**
 * Running reconstructions on Slurm (EXECUTOR = slurm, issue 15): what the worker and
 * the server use, with no job store of their own. Slurm's commands are in
 * lib/server/slurm_commands.ts, submitting with its wrapper script in
 * lib/server/slurm_submit.ts; here a submitted job is followed to its end, its
 * output read as a local run's is (lib/server/script_output.ts, docs/PROTOCOL.md §6.4).
 *
 * A job's directory (RECON_FILEPATH/job_<id>.slurm) holds its argv and env files, the
 * output files Slurm writes (stdout, stderr) and the wrapper's exit file; it must be on
 * storage the compute nodes share.
 *
 * @module
 */
import * as path from "node:path";
import {
  type LineSplitter,
  openJobLog,
  type OutputCallbacks,
  type RunResult,
  ScriptOutput,
} from "./script_output.ts";
import {
  cancelSlurmJob,
  type ExitStatus,
  isSlurmJobId,
  readExitFile,
  SlurmError,
  slurmFailureReason,
  slurmJobActive,
  slurmJobState,
  type SlurmJobStatus,
  type SlurmSettings,
  type SlurmState,
} from "./slurm_commands.ts";

export {
  cancelSlurmJob,
  checkSlurm,
  type ExitStatus,
  isSlurmJobId,
  parseScontrolJob,
  readExitFile,
  SLURM_COMMAND_TIMEOUT_MS,
  SlurmError,
  slurmFailureReason,
  slurmJobActive,
  slurmJobState,
  type SlurmJobStatus,
  type SlurmSettings,
  type SlurmState,
} from "./slurm_commands.ts";
export {
  type SlurmSubmission,
  submitToSlurm,
  WRAPPER_NAME,
  WRAPPER_SCRIPT,
} from "./slurm_submit.ts";
export type { RunResult } from "./script_output.ts";

/** Inputs of {@link followSlurmJob}. */
export interface FollowOptions extends OutputCallbacks {
  /** Per-job log file (appended), in runner.ts's format. */
  logPath: string;
  /** Aborting it cancels the job (scancel). */
  signal: AbortSignal;
  /**
   * Aborting it stops following at once and leaves the Slurm job alone (a server
   * shutdown: the next server follows it on); the result then says `cancelled`.
   */
  detach?: AbortSignal;
  /** 0 = no limit; counted from the job's start in Slurm (its RunTime), not its queueing. */
  timeoutMs: number;
  /** Each change of the job's Slurm state (also logged). */
  onState?: (state: SlurmState, reason?: string) => void;
}

/** How often the output and exit files are read while a job is followed. */
const TICK_MS = 100;
/** Bytes read from each output file per tick, so a flood cannot hold the loop. */
const CHUNK_BYTES = 1024 * 1024;
/** How long a job may stay in Slurm's queue after it was scancel'led (KillWait is 30 s). */
const CANCEL_WAIT_MS = 60_000;
/** How long Slurm may report the job active after its exit file appeared. */
const SETTLE_MS = 10_000;
/** How long an exit file may take to appear after Slurm reports the job ended. */
const EXIT_FILE_GRACE_MS = 2_000;
/** The output files are read for at most this long after the job ended. */
const DRAIN_MS = 2_000;

/** Reads a file as it grows, from where it last stopped, opening it anew each time. */
class FileTail {
  #offset = 0;
  #buffer = new Uint8Array(64 * 1024);
  constructor(readonly file: string, readonly lines: LineSplitter) {}

  /** Reads up to `limit` new bytes; true when more are waiting. */
  async read(limit: number, onRestart: () => void): Promise<boolean> {
    let handle: Deno.FsFile;
    try {
      // Opened anew each time: on shared storage, an open sees what other hosts wrote.
      handle = await Deno.open(this.file);
    } catch {
      return false;
    }
    try {
      const { size } = await handle.stat();
      if (size < this.#offset) {
        this.#offset = 0;
        onRestart();
      }
      await handle.seek(this.#offset, Deno.SeekMode.Start);
      let read = 0;
      while (read < limit && this.#offset < size) {
        const n = await handle.read(this.#buffer);
        if (n === null || n === 0) break;
        this.lines.push(this.#buffer.subarray(0, n));
        this.#offset += n;
        read += n;
      }
      return this.#offset < size;
    } finally {
      handle.close();
    }
  }
}

function sleep(ms: number, wake: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      wake.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    wake.addEventListener("abort", done, { once: true });
  });
}

/**
 * Follows a submitted job to its end: its stdout and stderr files are read as they grow
 * into the job log and the callbacks (as a local run's output), its exit file checked,
 * and its state asked of Slurm every `pollIntervalMs`. An abort or the timeout
 * `scancel`s it, then waits (bounded) for it to leave Slurm's queue. The exit code
 * comes from the exit file; without one, the job failed for the `reason` its Slurm state
 * gives. A script that failed while Slurm reports why (TIMEOUT, OUT_OF_MEMORY, …) gets
 * that reason too. Slurm unreachable for a while is logged and waited out.
 */
export async function followSlurmJob(
  s: SlurmSettings,
  slurmId: string,
  workDir: string,
  o: FollowOptions,
): Promise<RunResult> {
  if (!isSlurmJobId(slurmId)) throw new TypeError(`not a Slurm job id: "${slurmId}"`);
  const pollMs = Math.max(100, s.pollIntervalMs);
  const wake = o.detach ? AbortSignal.any([o.signal, o.detach]) : o.signal;
  const tickMs = Math.min(TICK_MS, pollMs);
  const log = openJobLog(o.logPath);
  const output = new ScriptOutput(log, o);
  const tails = [
    new FileTail(path.join(workDir, "stdout"), output.splitter("stdout")),
    new FileTail(path.join(workDir, "stderr"), output.splitter("stderr")),
  ];
  const restarted = () => log.write("# the output files started anew: Slurm ran the job again\n");
  const readOutput = async () => {
    let more = false;
    for (const tail of tails) more = await tail.read(CHUNK_BYTES, restarted) || more;
    return more;
  };
  const stamp = () => new Date().toISOString();
  log.write(`# ${stamp()} Slurm job ${slurmId}: output from ${workDir}\n`);

  let status: SlurmJobStatus | undefined;
  let unreachable: string | undefined;
  let exit: ExitStatus | undefined;
  let exitProblem: string | undefined;
  let startedAt: number | undefined;
  let stopping: "cancel" | "timeout" | undefined;
  let stopDeadline = 0;
  let cancelSent = false;
  let exitSeenAt: number | undefined;
  let endedAt: number | undefined;
  let nextPoll = 0;

  const reportSlurmError = (error: unknown) => {
    if (!(error instanceof SlurmError)) throw error;
    if (unreachable !== error.message) {
      log.write(`# ${stamp()} ${error.message}; still following\n`);
    }
    unreachable = error.message;
  };

  try {
    while (true) {
      if (o.detach?.aborted) {
        log.write(`# ${stamp()} no longer followed here; Slurm job ${slurmId} runs on\n`);
        const { stderrTail } = output;
        return { exitCode: null, signal: null, timedOut: false, cancelled: true, stderrTail };
      }
      await readOutput();
      if (!exit && !exitProblem) {
        try {
          exit = await readExitFile(workDir);
          if (exit) exitSeenAt = Date.now();
        } catch (error) {
          exitProblem = (error as Error).message;
        }
      }
      if (!stopping && !exit) {
        if (o.signal.aborted) {
          stopping = "cancel";
          log.write(`# cancelled: scancel of Slurm job ${slurmId}\n`);
        } else if (
          o.timeoutMs > 0 && startedAt !== undefined && Date.now() - startedAt >= o.timeoutMs
        ) {
          stopping = "timeout";
          log.write(`# timeout after ${o.timeoutMs / 1000} s: scancel of Slurm job ${slurmId}\n`);
        }
        if (stopping) stopDeadline = Date.now() + CANCEL_WAIT_MS;
      }
      if (stopping && !cancelSent) {
        try {
          await cancelSlurmJob(s, slurmId);
          cancelSent = true;
        } catch (error) {
          reportSlurmError(error);
        }
      }
      // Once the end is near (an exit file, a scancel), Slurm is asked every tick.
      const now = Date.now();
      if (now >= nextPoll || exit || stopping) {
        nextPoll = now + pollMs;
        try {
          const next = await slurmJobState(s, slurmId);
          if (unreachable) log.write(`# ${stamp()} Slurm answers again\n`);
          unreachable = undefined;
          if (next.state !== status?.state || next.reason !== status?.reason) {
            log.write(
              `# ${stamp()} Slurm job ${slurmId}: ${next.state}${
                next.reason ? ` (${next.reason})` : ""
              }\n`,
            );
            o.onState?.(next.state, next.reason);
          }
          status = next;
          if (startedAt === undefined && status.state !== "PENDING" && status.state !== "UNKNOWN") {
            startedAt = Date.now() - (status.runSeconds ?? 0) * 1000;
          }
        } catch (error) {
          reportSlurmError(error);
        }
      }
      const active = status === undefined || slurmJobActive(status.state);
      const at = Date.now();
      if (!active) {
        endedAt ??= at;
        // Without an exit file: it may take a moment to show on shared storage.
        if (exit || stopping || exitProblem || at - endedAt >= EXIT_FILE_GRACE_MS) break;
      }
      if (exitSeenAt !== undefined && at - exitSeenAt >= SETTLE_MS) {
        log.write(`# Slurm still reports the job ${status?.state ?? "unanswered"}; not waiting\n`);
        break;
      }
      if (stopping && at >= stopDeadline) {
        log.write(
          `# Slurm job ${slurmId} did not leave the queue after the scancel; not waiting\n`,
        );
        break;
      }
      await sleep(tickMs, wake);
    }
    // The rest of the output, for a bounded time.
    const drainUntil = Date.now() + DRAIN_MS;
    while (await readOutput()) {
      if (Date.now() >= drainUntil) {
        log.write("# the output files were still growing after the job ended; stopped reading\n");
        break;
      }
    }
    for (const tail of tails) tail.lines.end();

    const result: RunResult = {
      exitCode: exit?.exitCode ?? null,
      signal: exit?.signal ?? null,
      timedOut: stopping === "timeout",
      cancelled: stopping === "cancel",
      stderrTail: output.stderrTail,
    };
    if (exit) {
      log.write(
        `# exit code ${exit.exitCode ?? "none"}${exit.signal ? ` (signal ${exit.signal})` : ""}\n`,
      );
      // The script failed while Slurm knows why (its time limit, memory, a node).
      const explains = status && !slurmJobActive(status.state) &&
        !["COMPLETED", "FAILED", "GONE"].includes(status.state);
      if (!stopping && exit.exitCode !== 0 && explains) {
        result.reason = slurmFailureReason(status!.state, status!.reason);
      }
    } else if (!stopping) {
      result.reason = exitProblem ?? slurmFailureReason(status?.state ?? "UNKNOWN", status?.reason);
      log.write(`# no exit status: ${result.reason}\n`);
    }
    return result;
  } finally {
    log.close();
  }
}
