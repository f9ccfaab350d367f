/**
 * Submitting a recon job to Slurm (issue 15; used through lib/server/slurm.ts): its
 * command and environment written NUL-separated into the job's directory, and sbatch
 * run on one fixed wrapper script that reads them as data, so nothing a client sent is
 * ever parsed by a shell.
 *
 * @module
 */
import * as path from "node:path";
import { writeFileNoFollow } from "../fs_safety.ts";
import {
  commandFailed,
  isSlurmJobId,
  runSlurm,
  SlurmError,
  type SlurmSettings,
} from "./slurm_commands.ts";

/** The wrapper's file name, beside the jobs' directories. */
export const WRAPPER_NAME = "recon-slurm-wrapper.sh";

/**
 * The batch script of every recon job; sbatch copies it when the job is submitted.
 * `$1` is the job's directory. Its argv and environment come from that directory as
 * data, so nothing a client sent is ever parsed by a shell. The script's exit status
 * goes to `exit` ("<code>" or "signal <NAME>") by a rename, so it is whole whenever it
 * is there. SIGTERM (scancel, the time limit) reaches the script as well, as Slurm
 * signals every process of the job; the trap only lets this shell outlive it to record
 * how it ended. A status above 128 is read as a signal, as shells report one.
 */
export const WRAPPER_SCRIPT = `#!/bin/bash
# recon's Slurm wrapper (lib/server/slurm.ts): fixed text, no job's data in it.
# Runs the argv in DIR/argv with the variables in DIR/env added (both NUL-separated)
# and writes the exit status to DIR/exit, atomically.
dir=$1
rm -f -- "$dir/exit" "$dir/exit.tmp"
argv=()
while IFS= read -r -d '' arg; do argv+=("$arg"); done < "$dir/argv" || exit 120
if [ \${#argv[@]} -eq 0 ]; then echo "recon-slurm-wrapper: $dir/argv is empty" >&2; exit 120; fi
while IFS= read -r -d '' var; do
  case \${var%%=*} in
    '' | [0-9]* | *[!A-Za-z0-9_]*) echo "recon-slurm-wrapper: bad entry in $dir/env" >&2; exit 120 ;;
  esac
  export -- "$var"
done < "$dir/env" || exit 120
trap : TERM
# The script's stderr is the job's; this shell's own notes ("Terminated") go nowhere.
exec 3>&2 2>/dev/null
# exec, in a subshell: a program from PATH or a path, never a shell builtin or function.
(exec -- "\${argv[@]}") 2>&3 3>&-
status=$?
exec 2>&3 3>&-
if [ "$status" -gt 128 ] && name=$(kill -l "$status" 2>/dev/null); then
  echo "signal SIG$name" > "$dir/exit.tmp"
else
  echo "$status" > "$dir/exit.tmp"
fi
mv -f -- "$dir/exit.tmp" "$dir/exit"
exit "$status"
`;

/** One recon job for sbatch. */
export interface SlurmSubmission {
  /** The recon job id (the Slurm job is named `recon-<id>`). */
  jobId: string;
  /** RECON_FILEPATH/job_<id>.slurm, made by the caller (0700). */
  workDir: string;
  /** Program and arguments, exactly as a local run's (buildScriptCommand). */
  argv: string[];
  /** RECON_JOB_ID, RECON_INPUT_DIR, RECON_OUTPUT_DIR. */
  env: Record<string, string>;
  /** The script's working directory; default the server's, as for a local run. */
  cwd?: string;
  /** `--time` as a backstop to JOB_TIMEOUT; none when undefined. */
  timeLimitMinutes?: number;
  /** `--nice` (recon: high 0, normal 100, low 200). */
  nice: number;
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const JOB_FILES = ["exit", "exit.tmp", "stdout", "stderr"];

async function removeIfThere(file: string): Promise<void> {
  await Deno.remove(file).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  });
}

/** Writes {@link WRAPPER_SCRIPT} into `dir` unless it is there as it should be. */
async function installWrapper(dir: string): Promise<string> {
  const file = path.join(dir, WRAPPER_NAME);
  const info = await Deno.lstat(file).catch(() => undefined);
  if (info?.isFile && await Deno.readTextFile(file).catch(() => "") === WRAPPER_SCRIPT) return file;
  // A rename, so a concurrent submission never reads half of it.
  const temporary = `${file}.${crypto.randomUUID()}.tmp`;
  await writeFileNoFollow(temporary, WRAPPER_SCRIPT, 0o755);
  await Deno.rename(temporary, file);
  return file;
}

/** sbatch takes `%` in --output and --error as the start of a pattern. */
function slurmFileName(file: string): string {
  return file.replaceAll("%", "%%");
}

/**
 * Submits the job with sbatch and returns the Slurm job id. What an earlier attempt
 * left in the job's directory (its exit file, its output) is removed first.
 * `--nice`, `--no-requeue` (recon decides about attempts, not Slurm) and `--time` come
 * before SLURM_SBATCH_ARGS, which may override them; the job's name, output files and
 * working directory come after, so nothing overrides those.
 */
export async function submitToSlurm(s: SlurmSettings, job: SlurmSubmission): Promise<string> {
  if (!/^[A-Za-z0-9_.-]+$/.test(job.jobId)) throw new TypeError(`bad recon job id "${job.jobId}"`);
  if (job.argv.length === 0) throw new TypeError("the command is empty");
  for (const text of [...job.argv, ...Object.entries(job.env).flat()]) {
    if (text.includes("\0")) throw new TypeError("a command or environment string holds NUL");
  }
  for (const name of Object.keys(job.env)) {
    if (!ENV_NAME.test(name)) throw new TypeError(`bad environment variable name "${name}"`);
  }
  if (!Number.isInteger(job.nice)) throw new TypeError(`bad nice value ${job.nice}`);
  const minutes = job.timeLimitMinutes;
  if (minutes !== undefined && !(Number.isInteger(minutes) && minutes > 0)) {
    throw new TypeError(`bad time limit ${minutes} min`);
  }
  const workDir = path.resolve(job.workDir);
  for (const name of JOB_FILES) await removeIfThere(path.join(workDir, name));
  await writeFileNoFollow(path.join(workDir, "argv"), job.argv.map((a) => `${a}\0`).join(""));
  await writeFileNoFollow(
    path.join(workDir, "env"),
    Object.entries(job.env).map(([name, value]) => `${name}=${value}\0`).join(""),
  );
  const wrapper = await installWrapper(path.dirname(workDir));
  const args = [
    `--nice=${job.nice}`,
    "--no-requeue",
    ...(minutes !== undefined ? [`--time=${minutes}`] : []),
    ...s.sbatchArgs,
    "--parsable",
    `--job-name=recon-${job.jobId}`,
    `--output=${slurmFileName(path.join(workDir, "stdout"))}`,
    `--error=${slurmFileName(path.join(workDir, "stderr"))}`,
    `--chdir=${path.resolve(job.cwd ?? Deno.cwd())}`,
    wrapper,
    workDir,
  ];
  const output = await runSlurm(s, "sbatch", "sbatch", args);
  if (output.code !== 0) throw commandFailed("sbatch", "sbatch", output);
  // --parsable: "<id>" or "<id>;<cluster>"
  const slurmId = output.stdout.trim().split(";")[0];
  if (!isSlurmJobId(slurmId)) {
    throw new SlurmError(`sbatch printed no job id: "${output.stdout.trim().slice(0, 80)}"`);
  }
  return slurmId;
}
