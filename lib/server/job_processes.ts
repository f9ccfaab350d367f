/**
 * Finding and stopping every process of one job. A script may leave helpers behind
 * that escape its process group (`setsid sleep 1000 &`, Python's
 * `start_new_session=True`); they still carry the job's `RECON_JOB_ID` in their
 * environment, which the server sets for every script. Killing the group alone left
 * such a helper holding the output pipes, and the worker waited for it for good.
 *
 * /proc is read through `grep` because Deno grants /proc reads only to
 * --allow-all, which the shipped programs do not have. Only processes of the server's
 * own user are readable, which are the only ones it could signal anyway. A helper that
 * clears its environment and leaves the group is not found; the bounded pipe drain in
 * lib/server/runner.ts keeps even that one from holding a worker.
 *
 * @module
 */

/** How many find-and-kill rounds {@link stopJobProcesses} makes at most. */
const STOP_ROUNDS = 20;
/** Pause between rounds, for processes forked while the previous round ran. */
const ROUND_PAUSE_MS = 50;

async function output(program: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await new Deno.Command(program, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).output();
    return new TextDecoder().decode(stdout);
  } catch {
    return "";
  }
}

/**
 * Pids of the live processes whose environment holds exactly `RECON_JOB_ID=<jobId>`,
 * never this process itself. One `grep` over every /proc/<pid>/environ: the shell
 * only expands the constant glob and execs grep; the job id is an argument, never
 * part of the shell text. (One spawn, ~3 ms here; `ps` then `grep` cost ~10 ms on
 * the path of every job's end.)
 */
export async function findJobProcesses(jobId: string): Promise<number[]> {
  // -z: entries are NUL-separated; -x -F: the whole entry, literally; -l: file names.
  const matches = await output("sh", [
    "-c",
    'exec grep -l -s -a -z -x -F -- "$1" /proc/[0-9]*/environ',
    "sh",
    `RECON_JOB_ID=${jobId}`,
  ]);
  return matches
    .split("\n")
    .map((line) => /^\/proc\/(\d+)\/environ$/.exec(line)?.[1])
    .filter((pid): pid is string => pid !== undefined)
    .map(Number)
    .filter((pid) => pid > 1 && pid !== Deno.pid);
}

/**
 * SIGKILL every process of the job until none is left (a helper may fork while it is
 * being stopped), in a bounded number of rounds. Returns the pids signalled.
 */
export async function stopJobProcesses(jobId: string): Promise<number[]> {
  const stopped = new Set<number>();
  for (let round = 0; round < STOP_ROUNDS; round++) {
    const pids = await findJobProcesses(jobId);
    if (pids.length === 0) break;
    for (const pid of pids) {
      try {
        Deno.kill(pid, "SIGKILL");
        stopped.add(pid);
      } catch { /* gone already */ }
    }
    await new Promise((resolve) => setTimeout(resolve, ROUND_PAUSE_MS));
  }
  return [...stopped];
}
