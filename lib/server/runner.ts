/**
 * Runs the site's RECON_SCRIPT for one job (docs/PROTOCOL.md §6.4): argv arrays only,
 * never a shell string built from client input; its own process group so a timeout
 * or a cancel ends the script and everything it started, and when the script ends,
 * every process that still carries its RECON_JOB_ID is stopped too
 * (lib/server/job_processes.ts); output streamed line by line to a per-job log and to
 * the client, with memory flat whatever it prints, and read for a bounded time after
 * the script ended, so no leftover holding the pipes can keep a worker busy.
 *
 * @module
 */
import * as path from "node:path";
import { writeFileNoFollow } from "../fs_safety.ts";
import { JobError } from "../errors.ts";
import type { ReconOptions } from "../wire/protocol.ts";
import { findJobProcesses, stopJobProcesses } from "./job_processes.ts";
import { type LineSplitter, openJobLog, type RunResult, ScriptOutput } from "./script_output.ts";

export {
  MAX_JOB_LOG_BYTES,
  MAX_LINE_LENGTH,
  type RunResult,
  STDERR_TAIL_LINES,
} from "./script_output.ts";
/** How long the output pipes are still read after the script and its processes ended. */
export const DRAIN_MS = 2000;

/** What to run: program, argv and working directory. */
export interface ScriptCommand {
  program: string;
  args: string[];
  cwd?: string;
}

function matlabQuote(text: string): string {
  return `'${text.replaceAll("'", "''")}'`;
}

/**
 * The command for RECON_SCRIPT: `.py` through python3, `.sh` through sh, `.m` through
 * MATLAB_COMMAND as `name('input_dir','key','value',…)`, anything else directly.
 * Options become `--key value` in the order of the options object.
 */
export function buildScriptCommand(
  script: string,
  inputDir: string,
  options: ReconOptions,
  matlabCommand: readonly string[],
): ScriptCommand {
  const extension = path.extname(script).toLowerCase();
  if (extension === ".m") {
    const name = path.basename(script, path.extname(script));
    if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(name)) {
      throw new JobError(`Matlab script name "${name}" is not a valid Matlab function name`);
    }
    const values = [inputDir];
    for (const [key, value] of Object.entries(options)) values.push(key, String(value));
    const call = `${name}(${values.map(matlabQuote).join(",")})`;
    const [program, ...rest] = matlabCommand;
    return { program, args: [...rest, call], cwd: path.dirname(script) };
  }
  const args = [inputDir];
  for (const [key, value] of Object.entries(options)) args.push(`--${key}`, String(value));
  if (extension === ".py") return { program: "python3", args: [script, ...args] };
  if (extension === ".sh") return { program: "sh", args: [script, ...args] };
  return { program: script, args };
}

/** Inputs of {@link runScript}. */
export interface RunOptions {
  command: ScriptCommand;
  env: Record<string, string>;
  /** Per-job log file (appended). */
  logPath: string;
  /**
   * Written with the script's process group id while it runs, removed when it ends:
   * after a crash of the server, the next start finds and stops the group
   * (lib/server/recovery.ts).
   */
  pidPath?: string;
  /** 0 = no limit. */
  timeoutMs: number;
  /** Between SIGTERM and SIGKILL. */
  graceMs?: number;
  /**
   * The job whose processes are stopped when the script ends: every process whose
   * environment holds `RECON_JOB_ID=<jobId>`. Default: `env.RECON_JOB_ID`.
   */
  jobId?: string;
  /** Reading the output after the script ended stops after this long (default DRAIN_MS). */
  drainMs?: number;
  onLine?: (line: string, stream: "stdout" | "stderr") => void;
  onProgress?: (percent: number) => void;
  signal?: AbortSignal;
}

/** Splits a byte stream into capped lines, until it ends or `stop` is aborted. */
async function readLines(
  stream: ReadableStream<Uint8Array>,
  lines: LineSplitter,
  stop: AbortSignal,
): Promise<void> {
  const reader = stream.getReader();
  const cancel = () => void reader.cancel().catch(() => {});
  stop.addEventListener("abort", cancel, { once: true });
  while (true) {
    const { value: chunk, done } = await reader.read().catch(() => ({
      value: undefined,
      done: true,
    }));
    if (done || !chunk) break;
    lines.push(chunk);
  }
  stop.removeEventListener("abort", cancel);
  lines.end();
}

function killGroup(pid: number, signal: Deno.Signal): void {
  try {
    Deno.kill(-pid, signal);
  } catch {
    // the group is already gone
  }
}

/** SIGTERM to every process of the job outside its group as well (best effort). */
async function terminateJobProcesses(jobId: string | undefined): Promise<void> {
  if (!jobId) return;
  for (const pid of await findJobProcesses(jobId)) {
    try {
      Deno.kill(pid, "SIGTERM");
    } catch { /* gone already */ }
  }
}

/**
 * Run the command to completion in its own process group (via `setsid`). On timeout or
 * cancel the group and the job's other processes get SIGTERM, then SIGKILL after the
 * grace period; whatever the script left running, in its group or carrying its
 * RECON_JOB_ID, is killed when it exits. The output is read for at most `drainMs`
 * after that.
 */
export async function runScript(options: RunOptions): Promise<RunResult> {
  const { command } = options;
  // Never through a symbolic link someone planted at the log's name.
  const log = openJobLog(options.logPath);
  const writeLog = log.write;
  writeLog(`# ${new Date().toISOString()} run: ${[command.program, ...command.args].join(" ")}\n`);

  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("setsid", {
      args: [command.program, ...command.args],
      cwd: command.cwd,
      env: options.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    log.close();
    throw new JobError(`cannot start the reconstruction script: ${(error as Error).message}`, {
      cause: error,
    });
  }

  if (options.pidPath) {
    await writeFileNoFollow(options.pidPath, `${child.pid}\n`, 0o640).catch(() => {});
  }
  const output = new ScriptOutput(log, options);
  let timedOut = false;
  let cancelled = false;
  const jobId = options.jobId ?? options.env.RECON_JOB_ID;
  let killTimer: ReturnType<typeof setTimeout> | undefined;
  const stop = () => {
    killGroup(child.pid, "SIGTERM");
    void terminateJobProcesses(jobId);
    killTimer = setTimeout(() => killGroup(child.pid, "SIGKILL"), options.graceMs ?? 5000);
  };
  const timeout = options.timeoutMs > 0
    ? setTimeout(() => {
      timedOut = true;
      writeLog(`# timeout after ${options.timeoutMs / 1000} s: terminating the process group\n`);
      stop();
    }, options.timeoutMs)
    : undefined;
  const onAbort = () => {
    cancelled = true;
    writeLog("# cancelled: terminating the process group\n");
    stop();
  };
  options.signal?.addEventListener("abort", onAbort, { once: true });
  if (options.signal?.aborted) onAbort();

  const stopReading = new AbortController();
  try {
    const readers = Promise.all([
      readLines(child.stdout, output.splitter("stdout"), stopReading.signal),
      readLines(child.stderr, output.splitter("stderr"), stopReading.signal),
    ]);
    const status = await child.status;
    // Nothing the script started outlives it (and nothing keeps its pipes open).
    killGroup(child.pid, "SIGKILL");
    if (jobId) {
      const leftovers = await stopJobProcesses(jobId);
      if (leftovers.length > 0) {
        writeLog(
          `# stopped ${leftovers.length} process(es) the script left running outside its group (pid ${
            leftovers.join(", ")
          })\n`,
        );
      }
    }
    let drainTimer: ReturnType<typeof setTimeout> | undefined;
    const drained = await Promise.race([
      readers.then(() => true),
      new Promise<false>((resolve) => {
        drainTimer = setTimeout(() => resolve(false), options.drainMs ?? DRAIN_MS);
      }),
    ]);
    clearTimeout(drainTimer);
    if (!drained) {
      writeLog(
        "# the output pipes stayed open after the script ended (a process that left its group and environment holds them); stopped reading\n",
      );
      stopReading.abort();
    }
    await readers;
    writeLog(`# exit code ${status.code}${status.signal ? ` (signal ${status.signal})` : ""}\n`);
    return {
      exitCode: status.signal ? null : status.code,
      signal: status.signal,
      timedOut,
      cancelled,
      stderrTail: output.stderrTail,
    };
  } finally {
    stopReading.abort();
    killGroup(child.pid, "SIGKILL");
    if (options.pidPath) await Deno.remove(options.pidPath).catch(() => {});
    clearTimeout(timeout);
    clearTimeout(killTimer);
    options.signal?.removeEventListener("abort", onAbort);
    log.close();
  }
}
