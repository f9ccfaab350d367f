/**
 * One worker's job run (docs/PROTOCOL.md §6.4): prepare the job's output directory,
 * run RECON_SCRIPT with the job's options, turn how it ended into an outcome with a
 * plain reason, write the job's provenance.json (lib/server/provenance.ts) and collect
 * the result files with their SHA-256; then record the job's final state in the job
 * store and only then keep or remove its files (§6.6):
 *
 * - succeeded: the results stay until RESULT_RETENTION after it finished (the sweeper,
 *   lib/server/sweeper.ts, removes them then); the inputs are removed;
 * - failed: the partial output is removed; the inputs stay FAILED_INPUT_RETENTION, for
 *   a re-run without another upload;
 * - cancelled: inputs and output are removed.
 *
 * This module owns `running → succeeded | failed | cancelled`.
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
import { openAppendNoFollow, writeFileNoFollow } from "../fs_safety.ts";
import { VERSION } from "../version.ts";
import {
  adoptLegacyResults,
  collectResults,
  type DirectoryIdentity,
  directoryIdentity,
  hashResult,
  type ResultScan,
  snapshotDirectory,
} from "./results.ts";
import type { JobRecord, JobStore } from "./job_store.ts";
import {
  type Executor,
  ExecutorUnavailable,
  type JobOutcome,
  type RunningJob,
  type RunResult,
} from "./scheduler.ts";
import {
  buildScriptCommand,
  type RunOptions,
  type RunResult as ScriptRun,
  runScript,
} from "./runner.ts";
import { removeQuietly, runningMarkerPath } from "./job_files.ts";
import {
  buildProvenance,
  hashScript,
  type Provenance,
  PROVENANCE_FILE,
  writeProvenance,
} from "./provenance.ts";
import { utc } from "./refusal.ts";

/**
 * What runs a job's command to its end: a process group on this box (the default,
 * {@link localLauncher}) or a Slurm job (lib/server/slurm_executor.ts). The worker
 * prepares the output directory before and collects the results after, the same for
 * both.
 */
export interface Launcher {
  /**
   * Whether the job's run outlived the server that started it and can be followed on
   * (a Slurm job still queued, running or finished with its exit file): then its
   * output directory is kept and {@link run} follows it instead of starting another.
   */
  canReattach?(record: JobRecord): Promise<boolean>;
  /** Run (or follow) the command to its end; `reason` explains an end the exit code does not. */
  run(job: RunningJob, request: RunOptions): Promise<LaunchResult>;
}

/** How a launched command ended. */
export type LaunchResult = ScriptRun & { reason?: string };

/** Runs the command as a process group here (lib/server/runner.ts). */
export const localLauncher: Launcher = { run: (_job, request) => runScript(request) };

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
  /** What runs the command; default {@link localLauncher}. */
  launcher?: Launcher;
  /** RESULT_RETENTION and FAILED_INPUT_RETENTION, in seconds. */
  resultRetention: number;
  failedInputRetention: number;
  /** The clock (ms since the epoch); default Date.now. */
  now?: () => number;
}

function failure(
  reason: string,
  exitCode: number | null = null,
  stderrTail: string[] = [],
): JobOutcome {
  return { ok: false, reason, exitCode, stderrTail };
}

/** Append a note (`# …`) to the job's log, as runScript writes its own; best effort. */
async function noteInJobLog(logPath: string, text: string): Promise<void> {
  try {
    const handle = await openAppendNoFollow(logPath);
    try {
      await handle.writeFile(`# ${new Date().toISOString()} ${text}\n`);
    } finally {
      await handle.close();
    }
  } catch { /* the log is best effort; the job goes on */ }
}

/**
 * The results of a script that exited 0: in the LEGACY_SHARED_OUTPUT mode the files
 * new in RECON_DICOM_DIR are moved into the output directory first (runScript has
 * stopped every process carrying the job's RECON_JOB_ID by now, so none of them adds
 * a file after this snapshot); then the job's provenance.json is written (a script's
 * own is renamed, and the job's log says so); then the output directory is walked.
 */
async function gatherResults(
  job: RunningJob,
  settings: WorkerSettings,
  before: Set<string> | undefined,
  identity: DirectoryIdentity,
  provenance: Provenance,
  log: Logger,
): Promise<ResultScan> {
  if (before) {
    const adopted = await adoptLegacyResults(
      settings.reconDicomDir,
      before,
      job.record.outputDir,
      identity,
    );
    if (adopted.length > 0) {
      log.info(
        `job ${job.id}: took ${adopted.length} new file(s) from RECON_DICOM_DIR ${settings.reconDicomDir} as its results (LEGACY_SHARED_OUTPUT)`,
      );
    }
  }
  const moved = await writeProvenance(job.record.outputDir, identity, provenance);
  if (moved) {
    const note =
      `the script's own ${PROVENANCE_FILE} was renamed to ${moved}: ${PROVENANCE_FILE} is the server's`;
    await noteInJobLog(job.record.logPath, note);
    log.info(`job ${job.id}: ${note}`);
  }
  return await collectResults(job.record.outputDir, identity);
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
 * Run `job`'s script to an outcome. Never throws for script problems; they become the
 * reason. Commits nothing and removes nothing but a leftover output directory of the
 * job (partial output of an earlier attempt): {@link finishJob} does the rest. Reads
 * the job's verified inputs from `store` for its provenance.
 */
export async function executeJob(
  store: JobStore,
  job: RunningJob,
  settings: WorkerSettings,
  log: Logger,
): Promise<JobOutcome> {
  const { id, options, inputDir, outputDir, logPath } = job.record;
  const marker = runningMarkerPath(logPath);
  const now = settings.now ?? Date.now;
  try {
    const problem = await checkScript(settings.reconScript);
    if (problem) return failure(problem);
    // What runs is what the provenance names: hashed now, not when the job ends.
    const scriptPath = path.resolve(settings.reconScript);
    let scriptSha256: string;
    try {
      scriptSha256 = await hashScript(scriptPath);
    } catch (error) {
      return failure(
        `RECON_SCRIPT ${settings.reconScript} cannot be read: ${(error as Error).message}`,
      );
    }
    const launcher = settings.launcher ?? localLauncher;
    // A Slurm job that outlived the last server writes on into its output directory.
    const reattach = await launcher.canReattach?.(job.record) ?? false;
    if (!reattach) {
      // Never through a link planted at its name (an earlier attempt's marker is replaced).
      await writeFileNoFollow(marker, `${outputDir}\n`, 0o640);
      await Deno.mkdir(path.dirname(outputDir), { recursive: true });
      // What an earlier attempt of this job wrote is partial output, never results.
      await Deno.remove(outputDir, { recursive: true }).catch((error) => {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      });
      // Created here, not found: its device and inode are what results are collected from.
      await Deno.mkdir(outputDir, { mode: 0o750 });
    }
    const identity = await directoryIdentity(outputDir);
    const before = settings.legacySharedOutput
      ? await snapshotDirectory(settings.reconDicomDir)
      : undefined;
    const command = buildScriptCommand(
      settings.reconScript,
      inputDir,
      options,
      settings.matlabCommand,
    );
    if (!reattach) log.info(`job ${id}: running ${command.program} ${command.args.join(" ")}`);
    const run = await launcher.run(job, {
      command,
      env: {
        RECON_JOB_ID: id,
        RECON_INPUT_DIR: inputDir,
        RECON_OUTPUT_DIR: outputDir,
      },
      logPath,
      pidPath: logPath.replace(/\.log$/, ".pid"),
      timeoutMs: settings.jobTimeout * 1000,
      graceMs: settings.killGraceMs,
      signal: job.abort.signal,
      onLine: (text) => job.progress({ text }),
      onProgress: (percent) => job.progress({ percent }),
    });
    if (run.cancelled) {
      return failure(job.stop?.reason ?? "the job was cancelled", run.exitCode, run.stderrTail);
    }
    if (run.reason !== undefined) return failure(run.reason, run.exitCode, run.stderrTail);
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
    const provenance = buildProvenance({
      job: job.record,
      inputs: store.inputs(id),
      script: { path: scriptPath, sha256: scriptSha256 },
      server: { version: VERSION, host: Deno.hostname() },
      finishedAt: now(),
    });
    let scan: ResultScan;
    let results: RunResult[];
    try {
      scan = await gatherResults(job, settings, before, identity, provenance, log);
      results = [];
      for (const file of scan.files) results.push({ ...file, ...(await hashResult(file)) });
    } catch (error) {
      // The script exited 0 but swapped its output directory or a result: its exit
      // code and stderr go with the reason, as for a script that wrote no results.
      if (error instanceof JobError) return failure(error.message, 0, run.stderrTail);
      throw error;
    }
    // Which entries and why stays here: their names come from the script and may hold
    // patient data. The client hears only how many (PROTOCOL.md §6.5).
    for (const skipped of scan.skipped) log.warn(`job ${id}: not sending ${skipped}`);
    // provenance.json alone is no result: it describes images the script did not write.
    if (!results.some((result) => result.name !== PROVENANCE_FILE)) {
      return failure(noResultsReason(scan), 0, run.stderrTail);
    }
    return { ok: true, results, skipped: scan.skipped.length, stderrTail: run.stderrTail };
  } catch (error) {
    // The executor cannot take the job now (Slurm does not answer): the scheduler
    // queues it again; it has not failed.
    if (error instanceof ExecutorUnavailable) throw error;
    return failure((error as Error).message);
  }
}

/**
 * Record how `job`'s run ended (committed before any file is touched), then keep or
 * remove its files by the rules of its final state. Returns the final record.
 */
export async function finishJob(
  store: JobStore,
  job: RunningJob,
  outcome: JobOutcome,
  settings: WorkerSettings,
  log: Logger,
): Promise<JobRecord> {
  const { id, inputDir, outputDir, logPath } = job.record;
  const now = (settings.now ?? Date.now)();
  const marker = runningMarkerPath(logPath);
  if (outcome.ok) {
    const resultsExpireAt = now + settings.resultRetention * 1000;
    store.markSucceeded(id, {
      exitCode: 0,
      stderrTail: outcome.stderrTail,
      outputs: outcome.results.map((result) => ({
        name: result.name,
        size: result.size,
        sha256: result.sha256,
        dev: result.identity?.dev,
        ino: result.identity?.ino,
        mtimeMs: result.mtimeMs,
        ctimeMs: result.ctimeMs,
      })),
      skipped: outcome.skipped,
      resultsExpireAt,
    });
    await Deno.remove(marker).catch(() => {});
    if (await removeQuietly(inputDir, log)) store.setInputsRemoved(id);
    const bytes = outcome.results.reduce((sum, result) => sum + result.size, 0);
    log.info(
      `job ${id}: succeeded with ${outcome.results.length} result file(s), ${bytes} bytes, kept in ${outputDir} until ${
        utc(resultsExpireAt)
      } (RESULT_RETENTION)`,
    );
    return store.get(id)!;
  }
  if (job.stop?.kind === "cancel") {
    const { reason, by } = job.stop;
    const ended = outcome.ok ? { exitCode: 0, stderrTail: [] } : outcome;
    store.markCancelled(id, { reason, by, exitCode: ended.exitCode, stderrTail: ended.stderrTail });
    if (await removeQuietly(inputDir, log)) store.setInputsRemoved(id);
    if (await removeQuietly(outputDir, log)) await Deno.remove(marker).catch(() => {});
    log.info(`job ${id}: cancelled while running by ${by}: ${reason}`);
    return store.get(id)!;
  }
  const inputsExpireAt = now + settings.failedInputRetention * 1000;
  store.markFailed(id, {
    reason: outcome.reason,
    exitCode: outcome.exitCode,
    stderrTail: outcome.stderrTail,
    inputsExpireAt,
  });
  // The marker stays while the output is still there: the next start removes it.
  if (await removeQuietly(outputDir, log)) await Deno.remove(marker).catch(() => {});
  log.warn(`job ${id}: failed: ${outcome.reason} (log: ${logPath})`);
  return store.get(id)!;
}

/** Remove the partial output of a run a shutdown stopped (the job is queued again). */
export async function discardRun(job: RunningJob, log: Logger): Promise<void> {
  const { outputDir, logPath } = job.record;
  if (await removeQuietly(outputDir, log)) {
    await Deno.remove(runningMarkerPath(logPath)).catch(() => {});
  }
}

/** The executor that runs scripts on this machine, for the {@link Scheduler}. */
export function localExecutor(store: JobStore, settings: WorkerSettings, log: Logger): Executor {
  return {
    execute: (job) => executeJob(store, job, settings, log),
    finish: (job, outcome) => finishJob(store, job, outcome, settings, log),
    discard: (job) => discardRun(job, log),
  };
}
