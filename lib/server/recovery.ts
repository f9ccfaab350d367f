/**
 * What a server that stopped (a crash, a power cut, SIGKILL, or a clean shutdown) left
 * behind, put right at the next start, from the job store (docs/PROTOCOL.md §6.6):
 *
 * - scripts that outlived the server (each runs in its own session, so it does not
 *   die with it) are stopped, with every process carrying their RECON_JOB_ID;
 * - a job that was `running` is queued again at its place, or fails with "the server
 *   stopped while it was running" once it was started JOB_MAX_ATTEMPTS times (its
 *   inputs are kept for a re-run); what its script wrote is partial output, never
 *   results, and is removed (also for a job whose `job_<id>.running` marker,
 *   lib/server/worker.ts, is left from before the store);
 * - queued jobs stay queued; cut-off uploads stay `receiving`, resumable for a full
 *   UPLOAD_RESUME_WINDOW from this start;
 * - job directories are checked against the store: a directory the store says is
 *   gone (a removal cut short) is removed; one the store does not know is left in
 *   place with a warning: nothing is deleted that cannot be accounted for;
 * - a delivery to a DICOM destination that was being sent is pending again, due now:
 *   the files the PACS had not confirmed are sent again (lib/server/pacs_delivery.ts).
 *
 * This module owns `running → queued | failed` and a delivery's `sending → pending` at
 * a restart.
 *
 * @module
 */
import * as path from "node:path";
import { errorMessage } from "../errors.ts";
import { writeFileNoFollow } from "../fs_safety.ts";
import type { Logger } from "../log.ts";
import type { JobRecord, JobStore } from "./job_store.ts";
import type { JobLeases } from "./job_leases.ts";
import { stopJobProcesses } from "./job_processes.ts";
import { heldBytes, removeQuietly, runningMarkerPath } from "./job_files.ts";
import { utc } from "./refusal.ts";

/** What {@link recoverAfterCrash} did. */
export interface RecoveryReport {
  /** Input directories the store says are gone, removed. */
  removedInputDirs: string[];
  stoppedScripts: number[];
  /** Partial output (of jobs that never got an outcome) and output the store says is gone. */
  removedOutputDirs: string[];
  /** Jobs that were running: queued again, or failed after their last attempt. */
  requeued: string[];
  failed: string[];
  /** Job directories the store does not know, left in place. */
  unknownDirs: string[];
  /** Deliveries cut off while sending, pending again: `<job id> <destination>`. */
  resumedDeliveries: string[];
}

/** Inputs of {@link recoverAfterCrash}. */
export interface RecoveryOptions {
  reconFilePath: string;
  reconDicomDir: string;
  store: JobStore;
  leases: JobLeases;
  /** JOB_MAX_ATTEMPTS. */
  jobMaxAttempts: number;
  /** FAILED_INPUT_RETENTION and UPLOAD_RESUME_WINDOW in seconds. */
  failedInputRetention: number;
  uploadResumeWindow: number;
  log: Logger;
  /** The clock (ms since the epoch); default Date.now. */
  now?: () => number;
}

/** Why a job that was running when the server stopped fails after its last attempt. */
export const STOPPED_WHILE_RUNNING = "the server stopped while it was running";

const INPUT_DIR = /^job_([0-9a-f-]{36})_input$/;
const OUTPUT_DIR = /^job_([0-9a-f-]{36})_output$/;
const PID_FILE = /^job_([0-9a-f-]{36})\.pid$/;
const RUNNING_MARKER = /^job_([0-9a-f-]{36})\.running$/;

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
 * Put right what the last server left: stop leftover scripts, queue again (or fail)
 * the jobs that were running, remove partial output, keep cut-off uploads resumable,
 * and check the job directories against the store. When another live recon-server
 * uses RECON_FILEPATH (two servers sharing it), no file is touched and a warning says so.
 */
export async function recoverAfterCrash(options: RecoveryOptions): Promise<RecoveryReport> {
  const { reconFilePath, log } = options;
  const report: RecoveryReport = {
    removedInputDirs: [],
    stoppedScripts: [],
    removedOutputDirs: [],
    requeued: [],
    failed: [],
    unknownDirs: [],
    resumedDeliveries: [],
  };
  // The store is this server's alone (its lock), whoever else uses RECON_FILEPATH.
  resumeDeliveries(options, report);
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
  const entries = await readDir(reconFilePath);
  await stopLeftoverScripts(reconFilePath, entries, log, report);
  for (const entry of entries) {
    const marker = RUNNING_MARKER.exec(entry.name);
    if (!marker || !entry.isFile) continue;
    const job = options.store.get(marker[1]);
    if (job && followedElsewhere(job)) {
      // A Slurm job may run on without us: its output is kept for the reattach.
      continue;
    }
    if (job?.state === "succeeded" || job?.state === "expired") {
      // It finished after all: its output is its results (or already expired).
      await Deno.remove(path.join(reconFilePath, entry.name)).catch(() => {});
    } else {
      await removePartialOutput(reconFilePath, entry.name, marker[1], log, report);
    }
  }
  await settleRunningJobs(options, report);
  await keepUploadsResumable(options);
  const queued = options.store.queued().length;
  if (queued > 0) log.info(`${queued} queued job(s) resume in their order`);
  await checkJobDirs(options, entries, report);
  return report;
}

async function readDir(dir: string): Promise<Deno.DirEntry[]> {
  try {
    return await Array.fromAsync(Deno.readDir(dir));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}

/** Stop the process group named by each leftover `job_<id>.pid`, and the job's helpers. */
async function stopLeftoverScripts(
  reconFilePath: string,
  entries: Deno.DirEntry[],
  log: Logger,
  report: RecoveryReport,
): Promise<void> {
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
}

/**
 * Each job the store has `running` was cut off by the stop: queue it again, at its
 * place, or fail it once it used up JOB_MAX_ATTEMPTS (recorded first); then remove
 * what its script wrote.
 */
async function settleRunningJobs(options: RecoveryOptions, report: RecoveryReport): Promise<void> {
  const { store, log, jobMaxAttempts } = options;
  const now = (options.now ?? Date.now)();
  for (const job of store.inState("running")) {
    let settled: JobRecord;
    try {
      if (followedElsewhere(job)) {
        // Not a new attempt: the worker that takes it follows the same Slurm job.
        store.requeue(job.id, { refundAttempt: true });
        report.requeued.push(job.id);
        log.info(
          `job ${job.id}: was running as Slurm job ${job.executorRef} when the server stopped; the next free worker follows it again`,
        );
        continue;
      }
      if (job.attempts >= jobMaxAttempts) {
        settled = store.markFailed(job.id, {
          reason: STOPPED_WHILE_RUNNING,
          exitCode: null,
          stderrTail: [],
          inputsExpireAt: now + options.failedInputRetention * 1000,
        });
        report.failed.push(job.id);
        log.warn(
          `job ${job.id}: failed: ${STOPPED_WHILE_RUNNING} (attempt ${job.attempts} of ${jobMaxAttempts}, JOB_MAX_ATTEMPTS); its inputs are kept until ${
            utc(settled.inputsExpireAt!)
          }`,
        );
      } else {
        settled = store.requeue(job.id, { refundAttempt: false });
        report.requeued.push(job.id);
        log.warn(
          `job ${job.id}: was running when the server stopped; queued again (attempt ${job.attempts} of ${jobMaxAttempts} used)`,
        );
      }
    } catch (error) {
      log.error(`job ${job.id}: cannot settle it after the stop: ${errorMessage(error)}`);
      continue;
    }
    if (await exists(settled.outputDir)) {
      await stopJobProcesses(job.id);
      if (await removeQuietly(settled.outputDir, log)) {
        report.removedOutputDirs.push(settled.outputDir);
        log.warn(
          `job ${job.id}: removed ${settled.outputDir}, partial output of a run the server stopped`,
        );
      }
    }
    await Deno.remove(runningMarkerPath(settled.logPath)).catch(() => {});
  }
}

/**
 * Whether `job` was handed to an executor that runs it outside this server (a Slurm job
 * with its id recorded): its run may go on, or have finished, while no server ran, so
 * its output stays and the worker that takes it follows it again
 * (lib/server/slurm_executor.ts decides whether it can).
 */
function followedElsewhere(job: JobRecord): boolean {
  return job.executor === "slurm" && job.executorRef !== undefined &&
    (job.state === "running" || job.state === "queued");
}

/** Deliveries a stop cut off while sending are pending again, due now. */
function resumeDeliveries({ store, log }: RecoveryOptions, report: RecoveryReport): void {
  for (const delivery of store.deliveries.resumeInterrupted()) {
    report.resumedDeliveries.push(`${delivery.jobId} ${delivery.destination}`);
    log.warn(
      `job ${delivery.jobId}: its delivery to ${delivery.destination} was cut off by the stop; the files not confirmed are sent again`,
    );
  }
}

/** Cut-off uploads wait for their clients a whole UPLOAD_RESUME_WINDOW from this start. */
async function keepUploadsResumable(options: RecoveryOptions): Promise<void> {
  const { store, leases, log } = options;
  const now = (options.now ?? Date.now)();
  const receiving = store.inState("receiving");
  if (receiving.length === 0) return;
  const until = now + options.uploadResumeWindow * 1000;
  for (const job of receiving) {
    leases.cutOff(job.id, until);
    leases.heldBytes.set(job.id, await heldBytes(job.inputDir, store.inputs(job.id)));
  }
  log.info(
    `${receiving.length} cut-off upload(s) may be resumed by their clients until ${utc(until)}`,
  );
}

async function exists(file: string): Promise<boolean> {
  try {
    await Deno.lstat(file);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/**
 * Every `job_<id>_input` in RECON_FILEPATH and `job_<id>_output` in RECON_DICOM_DIR,
 * against the store: kept while the job needs it, removed when the store says it is
 * gone, left with a warning when the store does not know the job.
 */
async function checkJobDirs(
  options: RecoveryOptions,
  entries: Deno.DirEntry[],
  report: RecoveryReport,
): Promise<void> {
  const { store, log, reconFilePath, reconDicomDir } = options;
  const outputs = await readDir(reconDicomDir);
  const dirs = [
    ...entries.map((entry) => ({ entry, parent: reconFilePath, pattern: INPUT_DIR })),
    ...outputs.map((entry) => ({ entry, parent: reconDicomDir, pattern: OUTPUT_DIR })),
  ];
  for (const { entry, parent, pattern } of dirs) {
    const match = pattern.exec(entry.name);
    if (!match) continue;
    const dir = path.join(parent, entry.name);
    const input = pattern === INPUT_DIR;
    const job = store.get(match[1]);
    if (!job) {
      report.unknownDirs.push(dir);
      log.warn(
        `${dir}: left in place: the job store has no job ${
          match[1]
        } (from an older recon-server, or another store); remove it once nobody needs it`,
      );
      continue;
    }
    const needed = input
      ? ["receiving", "queued", "running"].includes(job.state) ||
        (job.state === "failed" && !job.inputsRemoved)
      : (job.state === "succeeded" && !job.resultsRemoved) || followedElsewhere(job);
    if (needed || (input && dir !== job.inputDir) || (!input && dir !== job.outputDir)) continue;
    if (!await removeQuietly(dir, log)) continue;
    const final = !["receiving", "queued", "running"].includes(job.state);
    if (input) {
      report.removedInputDirs.push(dir);
      if (final && !job.inputsRemoved) store.setInputsRemoved(job.id);
    } else {
      report.removedOutputDirs.push(dir);
      if (job.state === "expired" && !job.resultsRemoved) store.setResultsRemoved(job.id);
    }
    log.warn(
      `job ${job.id}: removed ${dir}: the job is ${job.state} and needs no ${
        input ? "inputs" : "output"
      } (a removal the last server did not finish)`,
    );
  }
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
