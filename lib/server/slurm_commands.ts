/**
 * Slurm's commands for EXECUTOR = slurm (issue 15; used through lib/server/slurm.ts):
 * running them, the startup check, a job's state in `scontrol`, `scancel`, the exit
 * file the wrapper leaves (lib/server/slurm_submit.ts), and what a state means for a
 * job that left none.
 *
 * Client data never reaches a shell: the command (program, input directory, the
 * client's `--key value` options) and its environment are written NUL-separated into
 * the job's directory and read as data by {@link WRAPPER_SCRIPT}, whose text is fixed;
 * every Slurm command runs as an argv array with a bounded time, and its failure is
 * one line ({@link SlurmError}). The job's directory must be on storage the compute
 * nodes share, and they need bash.
 *
 * @module
 */
import * as path from "node:path";

/** How recon uses Slurm (recon.opts SLURM_SBATCH_ARGS, SLURM_POLL_INTERVAL). */
export interface SlurmSettings {
  /** Added to every sbatch, e.g. `--partition=gpu --gres=gpu:1`. */
  sbatchArgs: string[];
  /** How often a followed job's state is asked of Slurm (at least 100 ms). */
  pollIntervalMs: number;
  /** Added to the environment of the Slurm commands (e.g. SLURM_CONF). */
  env?: Record<string, string>;
  /** Longest a Slurm command may take; default {@link SLURM_COMMAND_TIMEOUT_MS}. */
  commandTimeoutMs?: number;
}

/** Slurm is unreachable or one of its commands failed; the message is one line. */
export class SlurmError extends Error {
  override name = "SlurmError";
}

/**
 * A Slurm command's time limit. With slurmctld down, scontrol gives up after 18 s and
 * sbatch after 9 s (Slurm 22.05); an unreadable SLURM_CONF makes them retry for 60 s.
 */
export const SLURM_COMMAND_TIMEOUT_MS = 30_000;
// ---------------------------------------------------------------------------------
// Running Slurm's commands

/** What a Slurm command printed, and its exit code. */
export interface CommandOutput {
  code: number;
  stdout: string;
  stderr: string;
}

function firstLine(text: string, program: string): string {
  const line = text.split("\n").map((l) => l.trim()).find((l) => l !== "") ?? "";
  // "sbatch: error: Batch job submission failed: …" → "Batch job submission failed: …"
  return line.replace(new RegExp(`^${program}: (?:error: |fatal: )?`), "");
}

/** A command's failure in one line: its label and the first line it printed. */
export function commandFailed(label: string, program: string, output: CommandOutput): SlurmError {
  const line = firstLine(output.stderr, program) || firstLine(output.stdout, program);
  return new SlurmError(`${label} failed: ${line || `exit code ${output.code}`}`);
}

/** Runs one Slurm command: argv only, within the time limit; a failure to run throws. */
export async function runSlurm(
  s: SlurmSettings,
  label: string,
  program: string,
  args: string[],
): Promise<CommandOutput> {
  const timeoutMs = s.commandTimeoutMs ?? SLURM_COMMAND_TIMEOUT_MS;
  const timeout = new AbortController();
  const timer = setTimeout(() => timeout.abort(), timeoutMs);
  try {
    const output = await new Deno.Command(program, {
      args,
      env: s.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: timeout.signal,
    }).output();
    if (timeout.signal.aborted) {
      throw new SlurmError(`${label} did not finish within ${timeoutMs / 1000} s`);
    }
    const decoder = new TextDecoder();
    return {
      code: output.code,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
    };
  } catch (error) {
    if (error instanceof SlurmError) throw error;
    if (error instanceof Deno.errors.NotFound) {
      throw new SlurmError(`${program} not found on PATH (Slurm's client commands)`, {
        cause: error,
      });
    }
    const message = (error as Error).message.split("\n")[0];
    throw new SlurmError(`${label} could not be run: ${message}`, { cause: error });
  } finally {
    clearTimeout(timer);
  }
}

const SLURM_JOB_ID = /^[0-9]+$/;

/** Whether `text` is a Slurm job id as sbatch --parsable prints one (digits only). */
export function isSlurmJobId(text: string): boolean {
  return SLURM_JOB_ID.test(text);
}

function checkSlurmId(slurmId: string): void {
  if (!isSlurmJobId(slurmId)) throw new TypeError(`not a Slurm job id: "${slurmId}"`);
}

// ---------------------------------------------------------------------------------
// The startup check

/** The partitions sbatch would use by the arguments (the last one given wins). */
function requestedPartitions(sbatchArgs: readonly string[]): string | undefined {
  let partition: string | undefined;
  for (let i = 0; i < sbatchArgs.length; i++) {
    const arg = sbatchArgs[i];
    if (arg === "--partition" || arg === "-p") partition = sbatchArgs[++i];
    else if (arg.startsWith("--partition=")) partition = arg.slice("--partition=".length);
    else if (/^-p./.test(arg)) partition = arg.slice(2);
  }
  return partition;
}

/**
 * What keeps recon from using Slurm, in one line, or undefined: sbatch runs, and the
 * partition SLURM_SBATCH_ARGS names (`--partition=X`, `--partition X`, `-p X`, a list
 * `a,b`) exists, else (also not in SBATCH_PARTITION) there is a default partition.
 */
export async function checkSlurm(s: SlurmSettings): Promise<string | undefined> {
  const environment = { ...Deno.env.toObject(), ...s.env };
  const conf = environment.SLURM_CONF;
  if (conf) {
    // Slurm's commands retry an unreadable configuration for a minute before failing.
    try {
      await Deno.stat(conf);
    } catch (error) {
      return `SLURM_CONF ${conf} cannot be read: ${(error as Error).message.split("\n")[0]}`;
    }
  }
  try {
    const version = await runSlurm(s, "sbatch --version", "sbatch", ["--version"]);
    if (version.code !== 0) {
      const hint = conf ? "" : " (SLURM_CONF is not set: is this host configured for Slurm?)";
      return `${commandFailed("sbatch --version", "sbatch", version).message}${hint}`;
    }
    const listing = await runSlurm(s, "scontrol show partition", "scontrol", [
      "--all",
      "--oneliner",
      "show",
      "partition",
    ]);
    if (listing.code !== 0) {
      return commandFailed("scontrol show partition", "scontrol", listing).message;
    }
    const partitions = listing.stdout.split("\n").filter((line) =>
      line.startsWith("PartitionName=")
    );
    const names = partitions.map((line) => /^PartitionName=(\S+)/.exec(line)![1]);
    const fromArgs = requestedPartitions(s.sbatchArgs);
    const requested = fromArgs ?? environment.SBATCH_PARTITION;
    if (requested) {
      const where = fromArgs !== undefined ? "SLURM_SBATCH_ARGS" : "SBATCH_PARTITION";
      for (const name of requested.split(",")) {
        if (!names.includes(name)) {
          return `Slurm partition "${name}" (${where}) does not exist; the cluster has ${
            names.join(", ") || "none"
          }`;
        }
      }
      return undefined;
    }
    if (!partitions.some((line) => / Default=YES /.test(` ${line} `))) {
      return "Slurm has no default partition: name one in SLURM_SBATCH_ARGS (--partition=NAME)";
    }
    return undefined;
  } catch (error) {
    if (error instanceof SlurmError) return error.message;
    throw error;
  }
}

// ---------------------------------------------------------------------------------
// State, cancel, exit file

/** Slurm's job states recon tells apart; UNKNOWN for others, GONE once Slurm forgot it. */
export type SlurmState =
  | "PENDING"
  | "RUNNING"
  | "COMPLETING"
  | "COMPLETED"
  | "FAILED"
  | "TIMEOUT"
  | "OUT_OF_MEMORY"
  | "NODE_FAIL"
  | "CANCELLED"
  | "PREEMPTED"
  | "BOOT_FAIL"
  | "DEADLINE"
  | "UNKNOWN"
  | "GONE";

const KNOWN_STATES = new Set<string>([
  "PENDING",
  "RUNNING",
  "COMPLETING",
  "COMPLETED",
  "FAILED",
  "TIMEOUT",
  "OUT_OF_MEMORY",
  "NODE_FAIL",
  "CANCELLED",
  "PREEMPTED",
  "BOOT_FAIL",
  "DEADLINE",
]);

const ACTIVE_STATES = new Set<SlurmState>(["PENDING", "RUNNING", "COMPLETING", "UNKNOWN"]);

/**
 * Whether a job in `state` is still Slurm's: queued, running, completing, or in a state
 * recon does not know (UNKNOWN: e.g. SUSPENDED, REQUEUED).
 */
export function slurmJobActive(state: SlurmState): boolean {
  return ACTIVE_STATES.has(state);
}

/** A Slurm job's state as `scontrol show job` reports it. */
export interface SlurmJobStatus {
  state: SlurmState;
  /** Slurm's Reason (None left out); for UNKNOWN, Slurm's own state name. */
  reason?: string;
  /** The batch script's exit code (the wrapper exits with the script's). */
  exitCode?: number;
  /** How long it has run (RunTime), in seconds. */
  runSeconds?: number;
}

function runTimeSeconds(text: string): number | undefined {
  const match = /^(?:(\d+)-)?(\d+):(\d+):(\d+)$/.exec(text);
  if (!match) return undefined;
  const [, days, hours, minutes, seconds] = match.map((part) => Number(part ?? 0));
  return ((days * 24 + hours) * 60 + minutes) * 60 + seconds;
}

/** Reads one job from `scontrol show job -o` output; undefined when it is not there. */
export function parseScontrolJob(text: string, slurmId: string): SlurmJobStatus | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`JobId=${slurmId} `));
  if (!line) return undefined;
  const field = (name: string) => new RegExp(`(?:^| )${name}=(\\S*)`).exec(line)?.[1];
  const raw = field("JobState");
  if (raw === undefined) return undefined;
  // Reason may hold spaces ("(ReqNodeNotAvail, UnavailableNodes:n1)"); Dependency follows it.
  const reason = (/ Reason=(.*?) Dependency=/.exec(line)?.[1] ?? field("Reason"))?.trim();
  const exit = /^(\d+):(\d+)$/.exec(field("ExitCode") ?? "");
  const runSeconds = runTimeSeconds(field("RunTime") ?? "");
  const known = KNOWN_STATES.has(raw);
  const status: SlurmJobStatus = { state: known ? raw as SlurmState : "UNKNOWN" };
  if (!known) status.reason = raw;
  else if (reason && reason !== "None") status.reason = reason;
  if (exit) status.exitCode = Number(exit[1]);
  if (runSeconds !== undefined) status.runSeconds = runSeconds;
  return status;
}

/**
 * The job's state from `scontrol show job -o` (no accounting needed): GONE once Slurm
 * no longer knows it (MinJobAge after it ended). Throws SlurmError when Slurm cannot
 * be asked.
 */
export async function slurmJobState(s: SlurmSettings, slurmId: string): Promise<SlurmJobStatus> {
  checkSlurmId(slurmId);
  const label = `scontrol show job ${slurmId}`;
  const output = await runSlurm(s, label, "scontrol", ["show", "job", "--oneliner", slurmId]);
  if (output.code !== 0) {
    if (/Invalid job id specified/i.test(output.stderr)) return { state: "GONE" };
    throw commandFailed(label, "scontrol", output);
  }
  const status = parseScontrolJob(output.stdout, slurmId);
  if (!status) throw new SlurmError(`${label} printed no state for the job`);
  return status;
}

/** `scancel`s the job; one that has ended or that Slurm no longer knows is no error. */
export async function cancelSlurmJob(s: SlurmSettings, slurmId: string): Promise<void> {
  checkSlurmId(slurmId);
  const output = await runSlurm(s, `scancel ${slurmId}`, "scancel", [slurmId]);
  if (output.code === 0) return;
  if (/Invalid job id specified|already completing or completed/i.test(output.stderr)) return;
  throw commandFailed(`scancel ${slurmId}`, "scancel", output);
}

/** How the script ended, by the wrapper's exit file. */
export interface ExitStatus {
  exitCode: number | null;
  signal: string | null;
}

/**
 * The wrapper's record of how the script ended, or undefined while there is none.
 * Throws SyntaxError when the file holds anything else than the wrapper writes.
 */
export async function readExitFile(workDir: string): Promise<ExitStatus | undefined> {
  const file = path.join(workDir, "exit");
  let text: string;
  try {
    using handle = await Deno.open(file);
    const buffer = new Uint8Array(64);
    const length = await handle.read(buffer) ?? 0;
    text = new TextDecoder().decode(buffer.subarray(0, length));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  const code = /^(\d{1,3})\n$/.exec(text);
  if (code && Number(code[1]) <= 255) return { exitCode: Number(code[1]), signal: null };
  const signal = /^signal (SIG[A-Z0-9+-]{1,16})\n$/.exec(text);
  if (signal) return { exitCode: null, signal: signal[1] };
  throw new SyntaxError(
    `${file} holds ${JSON.stringify(text.slice(0, 32))}, not "<code>" or "signal <NAME>"`,
  );
}

/** Why a Slurm job ended without the script's exit status, or why it failed, in one line. */
export function slurmFailureReason(state: SlurmState, reason?: string): string {
  const why = (name: string) => (reason ? `${name}: ${reason}` : name);
  switch (state) {
    case "PENDING":
      return `the job was still waiting in Slurm (${why(state)})`;
    case "RUNNING":
    case "COMPLETING":
      return `the job was still running in Slurm (${why(state)})`;
    case "COMPLETED":
      return `Slurm reports the job completed, but it left no exit status in its directory (${
        why(state)
      }); is RECON_FILEPATH on storage the compute nodes share?`;
    case "FAILED":
      return `the job failed in Slurm before the script reported an exit status (${
        why(state)
      }); are RECON_FILEPATH and RECON_SCRIPT on storage the compute nodes share?`;
    case "TIMEOUT":
      return `Slurm stopped the job at its time limit (${why(state)})`;
    case "OUT_OF_MEMORY":
      return `the job ran out of memory (${why(state)})`;
    case "NODE_FAIL":
      return `the node running the job failed (${why(state)})`;
    case "CANCELLED":
      return `the job was cancelled in Slurm, not by recon (${why(state)})`;
    case "PREEMPTED":
      return `Slurm preempted the job for another (${why(state)})`;
    case "BOOT_FAIL":
      return `the node given to the job failed to boot (${why(state)})`;
    case "DEADLINE":
      return `Slurm ended the job at its deadline (${why(state)})`;
    case "UNKNOWN":
      return `Slurm reports the job in a state recon does not know (${reason ?? state})`;
    case "GONE":
      return "Slurm no longer knows the job, and it left no exit status in its directory";
  }
}
