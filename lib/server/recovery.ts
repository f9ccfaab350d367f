/**
 * What a crashed server left behind, cleaned up at the next start
 * (docs/PROTOCOL.md §6.5): job input directories of jobs that never finished (their
 * clients were told the connection failed, and still hold the files), the process
 * groups of reconstruction scripts that outlived the server (each runs in its own
 * session, so it does not die with it), and the output directories of jobs that had
 * no outcome yet: a script killed halfway leaves partial files that must never pass
 * for results. Such a job still has its `job_<id>.running` marker (lib/server/worker.ts).
 * Result directories of jobs that finished are kept: the log said where they are.
 *
 * Jobs live in memory only, so nothing else can be resumed.
 *
 * @module
 */
import * as path from "node:path";
import { writeFileNoFollow } from "../fs_safety.ts";
import type { Logger } from "../log.ts";
import { stopJobProcesses } from "./job_processes.ts";

/** What {@link recoverAfterCrash} did. */
export interface RecoveryReport {
  removedInputDirs: string[];
  stoppedScripts: number[];
  /** Output directories of jobs that never got an outcome (partial results). */
  removedOutputDirs: string[];
}

const INPUT_DIR = /^job_([0-9a-f-]{36})_input$/;
const PID_FILE = /^job_([0-9a-f-]{36})\.pid$/;
const RUNNING_MARKER = /^job_([0-9a-f-]{36})\.running$/;

/**
 * The marker that says job output is not final, next to the job's log
 * (`RECON_FILEPATH/job_<id>.running`); it holds the output directory's path.
 */
export function runningMarkerPath(logPath: string): string {
  return logPath.replace(/\.log$/, "") + ".running";
}

/**
 * True when process `pid` is a reconstruction script of job `jobId`: its environment
 * holds RECON_JOB_ID=<jobId>. A recorded pid may have been reused by an unrelated
 * process since the crash; that one must never be signalled.
 */
export async function isScriptOfJob(pid: number, jobId: string): Promise<boolean> {
  const environ = await readProcFile(pid, "environ");
  return environ?.split("\0").includes(`RECON_JOB_ID=${jobId}`) ?? false;
}

/**
 * `/proc/<pid>/<name>` as text, or undefined. Read through `cat` because Deno grants
 * /proc/<pid> reads only to --allow-all, which the shipped programs do not have.
 */
async function readProcFile(pid: number, name: string): Promise<string | undefined> {
  try {
    const { success, stdout } = await new Deno.Command("cat", {
      args: [`/proc/${pid}/${name}`],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).output();
    return success ? new TextDecoder().decode(stdout) : undefined;
  } catch {
    return undefined;
  }
}

/** The file in RECON_FILEPATH naming the server that uses it. */
export const OWNER_FILE = ".recon-server.pid";

/**
 * Remove this process's {@link OWNER_FILE} at a clean shutdown; one naming another
 * process (a second server that took the directory over) is left alone.
 */
export async function releaseOwnerFile(reconFilePath: string): Promise<void> {
  const file = path.join(reconFilePath, OWNER_FILE);
  const info = await Deno.lstat(file).catch(() => undefined);
  if (!info?.isFile) return;
  const text = await Deno.readTextFile(file).catch(() => "");
  if (text.trim() === String(Deno.pid)) await Deno.remove(file).catch(() => {});
}

async function liveOwner(reconFilePath: string): Promise<number | undefined> {
  const text = await Deno.readTextFile(path.join(reconFilePath, OWNER_FILE)).catch(() => "");
  const pid = Number(text.trim());
  if (!Number.isSafeInteger(pid) || pid <= 1 || pid === Deno.pid) return undefined;
  const cmdline = await readProcFile(pid, "cmdline");
  return cmdline !== undefined && /recon-server|server\.ts/.test(cmdline) ? pid : undefined;
}

/**
 * Stop leftover script groups and remove leftover job input directories under
 * `reconFilePath`, then record this process as its user. When another live
 * recon-server already uses the directory (two servers sharing RECON_FILEPATH),
 * nothing is touched and a warning says so.
 */
export async function recoverAfterCrash(
  reconFilePath: string,
  log: Logger,
): Promise<RecoveryReport> {
  const report: RecoveryReport = {
    removedInputDirs: [],
    stoppedScripts: [],
    removedOutputDirs: [],
  };
  const other = await liveOwner(reconFilePath);
  if (other !== undefined) {
    log.warn(
      `another recon-server (pid ${other}) uses RECON_FILEPATH ${reconFilePath}; give each server its own directory`,
    );
    return report;
  }
  // Never through a link someone planted there: a root server would truncate its target.
  await writeFileNoFollow(path.join(reconFilePath, OWNER_FILE), `${Deno.pid}\n`, 0o644)
    .catch(() => {});
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(reconFilePath));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return report;
    throw error;
  }
  for (const entry of entries) {
    const pidFile = PID_FILE.exec(entry.name);
    if (!pidFile || !entry.isFile) continue;
    const file = path.join(reconFilePath, entry.name);
    const pid = Number((await Deno.readTextFile(file).catch(() => "")).trim());
    if (Number.isSafeInteger(pid) && pid > 1 && await isScriptOfJob(pid, pidFile[1])) {
      try {
        Deno.kill(-pid, "SIGKILL");
        report.stoppedScripts.push(pid);
        log.warn(
          `job ${
            pidFile[1]
          }: stopped its script (process group ${pid}), left running by a server that did not shut down`,
        );
      } catch { /* already gone */ }
    }
    // Helpers the script started outside its group carry its RECON_JOB_ID too.
    const helpers = await stopJobProcesses(pidFile[1]);
    if (helpers.length > 0) {
      log.warn(`job ${pidFile[1]}: stopped ${helpers.length} process(es) its script left running`);
    }
    await Deno.remove(file).catch(() => {});
  }
  for (const entry of entries) {
    const marker = RUNNING_MARKER.exec(entry.name);
    if (marker && entry.isFile) {
      await removePartialOutput(reconFilePath, entry.name, marker[1], log, report);
    }
  }
  for (const entry of entries) {
    const inputDir = INPUT_DIR.exec(entry.name);
    if (!inputDir || !entry.isDirectory) continue;
    const dir = path.join(reconFilePath, entry.name);
    await Deno.remove(dir, { recursive: true });
    report.removedInputDirs.push(dir);
    log.warn(
      `job ${
        inputDir[1]
      }: removed ${dir}, left by a server that did not shut down (the job never finished; its client was told)`,
    );
  }
  return report;
}

/**
 * The output directory named by a `job_<id>.running` marker holds what a script wrote
 * before the server died, not results: remove it (a symbolic link put in its place is
 * removed, never followed), then the marker. Only a path ending in the job's own
 * `job_<id>_output` is touched.
 */
async function removePartialOutput(
  reconFilePath: string,
  name: string,
  jobId: string,
  log: Logger,
  report: RecoveryReport,
): Promise<void> {
  const marker = path.join(reconFilePath, name);
  const outputDir = (await Deno.readTextFile(marker).catch(() => "")).trim();
  if (!path.isAbsolute(outputDir) || path.basename(outputDir) !== `job_${jobId}_output`) {
    log.warn(`job ${jobId}: ${marker} does not name the job's output directory; removed it`);
    await Deno.remove(marker).catch(() => {});
    return;
  }
  // A helper that outlived a script started just before the crash still writes there.
  await stopJobProcesses(jobId);
  try {
    await Deno.remove(outputDir, { recursive: true });
    report.removedOutputDirs.push(outputDir);
    log.warn(
      `job ${jobId}: removed ${outputDir}, partial output of a job that never finished (the server stopped during it)`,
    );
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      log.warn(
        `job ${jobId}: could not remove partial output ${outputDir}: ${(error as Error).message}`,
      );
      return;
    }
  }
  await Deno.remove(marker).catch(() => {});
}
