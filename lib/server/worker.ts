/**
 * One worker's job run (docs/PROTOCOL.md §6.4): prepare the job's output directory,
 * run RECON_SCRIPT with the job's options, turn how it ended into an outcome with a
 * plain reason, collect the result files, and remove the input directory whatever
 * happened.
 *
 * While a job's output is not final, a marker file `RECON_FILEPATH/job_<id>.running`
 * (holding the output directory's path) says so: it is written before the output
 * directory is created and removed once the job has its outcome and a failed job's
 * output is gone. A server that dies in between leaves it behind, and the next start
 * removes that partial output instead of keeping it as results
 * (lib/server/recovery.ts).
 *
 * @module
 */
import * as path from "node:path";
import type { Logger } from "../log.ts";
import { JobError } from "../errors.ts";
import {
  adoptLegacyResults,
  collectResults,
  type DirectoryIdentity,
  directoryIdentity,
  type ResultScan,
  snapshotDirectory,
} from "./results.ts";
import type { Job, JobOutcome } from "./jobs.ts";
import { buildScriptCommand, runScript } from "./runner.ts";
import { runningMarkerPath } from "./recovery.ts";

/** What the worker needs from the server's configuration. */
export interface WorkerSettings {
  reconScript: string;
  reconDicomDir: string;
  matlabCommand: string[];
  /** Seconds; 0 = no limit. */
  jobTimeout: number;
  /**
   * LEGACY_SHARED_OUTPUT: files the script writes into RECON_DICOM_DIR itself become
   * its results too. Only safe with one job at a time, which the server then enforces.
   */
  legacySharedOutput: boolean;
  /** SIGTERM → SIGKILL grace in ms. */
  killGraceMs?: number;
}

function failure(reason: string, exitCode: number | null = null, stderrTail: string[] = []) {
  return { ok: false as const, reason, exitCode, stderrTail };
}

/**
 * The results of a script that exited 0: in the LEGACY_SHARED_OUTPUT mode the files
 * new in RECON_DICOM_DIR are moved into the output directory first (runScript has
 * stopped every process carrying the job's RECON_JOB_ID by now, so none of them adds
 * a file after this snapshot); then the output directory is walked.
 */
async function gatherResults(
  job: Job,
  settings: WorkerSettings,
  before: Set<string> | undefined,
  identity: DirectoryIdentity,
  log: Logger,
): Promise<ResultScan> {
  if (before) {
    const adopted = await adoptLegacyResults(
      settings.reconDicomDir,
      before,
      job.outputDir,
      identity,
    );
    if (adopted.length > 0) {
      log.info(
        `job ${job.id}: took ${adopted.length} new file(s) from RECON_DICOM_DIR ${settings.reconDicomDir} as its results (LEGACY_SHARED_OUTPUT)`,
      );
    }
  }
  return await collectResults(job.outputDir, identity);
}

/**
 * The reason of a job that exited 0 but left nothing to send (PROTOCOL.md §6.4 case
 * 9): when it did write entries that were all skipped, the reason counts them, so the
 * user does not look for a script that wrote nothing.
 */
export function noResultsReason(scan: ResultScan): string {
  const skipped = scan.skipped.length;
  if (skipped === 0) return "the script finished but wrote no result files into RECON_OUTPUT_DIR";
  const entries = skipped === 1 ? "1 entry was" : `${skipped} entries were`;
  return "the script finished but wrote no result the client can receive into " +
    `RECON_OUTPUT_DIR (${entries} not sent: names a client refuses, links, special files ` +
    "or directories too deep; the server log names them)";
}

/** Why RECON_SCRIPT cannot run, or undefined when it looks runnable. */
export async function checkScript(script: string): Promise<string | undefined> {
  try {
    const info = await Deno.stat(script);
    if (!info.isFile) return `RECON_SCRIPT ${script} is not a file`;
    const ext = path.extname(script).toLowerCase();
    if (![".sh", ".py", ".m"].includes(ext) && info.mode !== null && (info.mode & 0o111) === 0) {
      return `RECON_SCRIPT ${script} is not executable (chmod +x it, or name it .sh or .py)`;
    }
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return `RECON_SCRIPT ${script} does not exist`;
    return `RECON_SCRIPT ${script} cannot be read: ${(error as Error).message}`;
  }
  return undefined;
}

/**
 * Run `job` to an outcome. Never throws for script problems; they become the reason.
 * The input directory is removed either way, the output directory on failure.
 */
export async function executeJob(
  job: Job,
  settings: WorkerSettings,
  log: Logger,
): Promise<JobOutcome> {
  const marker = runningMarkerPath(job.logPath);
  const outcome = await runJob(job, settings, log, marker);
  // A failed job's output goes too, whether or not a session still follows the job.
  if (!outcome.ok) {
    const removed = await Deno.remove(job.outputDir, { recursive: true }).then(
      () => true,
      (error) => {
        if (error instanceof Deno.errors.NotFound) return true;
        log.warn(`job ${job.id}: could not remove ${job.outputDir}: ${error.message}`);
        return false;
      },
    );
    // Kept when the output is still there: the next start removes it.
    if (!removed) return outcome;
  }
  await Deno.remove(marker).catch(() => {});
  return outcome;
}

async function runJob(
  job: Job,
  settings: WorkerSettings,
  log: Logger,
  marker: string,
): Promise<JobOutcome> {
  try {
    const problem = await checkScript(settings.reconScript);
    if (problem) return failure(problem);
    await Deno.writeTextFile(marker, `${job.outputDir}\n`, { createNew: true, mode: 0o640 });
    await Deno.mkdir(path.dirname(job.outputDir), { recursive: true });
    // Created here, not found: its device and inode are what results are collected from.
    await Deno.mkdir(job.outputDir, { mode: 0o750 });
    const identity = await directoryIdentity(job.outputDir);
    const before = settings.legacySharedOutput
      ? await snapshotDirectory(settings.reconDicomDir)
      : undefined;
    const command = buildScriptCommand(
      settings.reconScript,
      job.inputDir,
      job.options,
      settings.matlabCommand,
    );
    log.info(`job ${job.id}: running ${command.program} ${command.args.join(" ")}`);
    const run = await runScript({
      command,
      env: {
        RECON_JOB_ID: job.id,
        RECON_INPUT_DIR: job.inputDir,
        RECON_OUTPUT_DIR: job.outputDir,
      },
      logPath: job.logPath,
      pidPath: job.logPath.replace(/\.log$/, ".pid"),
      timeoutMs: settings.jobTimeout * 1000,
      graceMs: settings.killGraceMs,
      signal: job.abort.signal,
      onLine: (text) => job.progress({ text }),
      onProgress: (percent) => job.progress({ percent }),
    });
    if (run.cancelled) {
      const reason = job.abort.signal.reason;
      return failure(
        typeof reason === "string" ? reason : "the job was cancelled",
        run.exitCode,
        run.stderrTail,
      );
    }
    if (run.timedOut) {
      return failure(
        `the script did not finish within JOB_TIMEOUT (${settings.jobTimeout} s) and was stopped`,
        run.exitCode,
        run.stderrTail,
      );
    }
    if (run.exitCode !== 0) {
      const how = run.signal ? `was killed by ${run.signal}` : `exited with code ${run.exitCode}`;
      return failure(`the reconstruction script ${how}`, run.exitCode, run.stderrTail);
    }
    let scan: ResultScan;
    try {
      scan = await gatherResults(job, settings, before, identity, log);
    } catch (error) {
      // The script exited 0 but swapped its output directory: its exit code and stderr
      // go with the reason, as for a script that wrote no results.
      if (error instanceof JobError) return failure(error.message, 0, run.stderrTail);
      throw error;
    }
    // Which entries and why stays here: their names come from the script and may hold
    // patient data. The client hears only how many (PROTOCOL.md §6.5).
    for (const skipped of scan.skipped) log.warn(`job ${job.id}: not sending ${skipped}`);
    if (scan.files.length === 0) return failure(noResultsReason(scan), 0, run.stderrTail);
    return { ok: true, results: scan.files, skipped: scan.skipped.length };
  } catch (error) {
    return failure((error as Error).message);
  } finally {
    await Deno.remove(job.inputDir, { recursive: true }).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) {
        log.warn(`job ${job.id}: could not remove ${job.inputDir}: ${error.message}`);
      }
    });
  }
}
