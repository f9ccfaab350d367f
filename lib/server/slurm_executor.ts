/**
 * EXECUTOR = slurm (issue 15): each job's RECON_SCRIPT runs as a Slurm job instead of
 * a process group here. recon-server stays the front door, the queue of record and the
 * delivery path; Slurm decides where and when the script runs (lib/server/slurm.ts
 * talks to it). The worker (lib/server/worker.ts) prepares the output directory and
 * collects the results exactly as for a local run; this launcher only submits and
 * follows:
 *
 * - submit with `sbatch` (the job's argv and environment in files of its work directory
 *   `RECON_FILEPATH/job_<id>.slurm`, read by one fixed wrapper), with the job's priority
 *   as a `--nice` value (high 0, normal 100, low 200: lower levels yield, no privilege
 *   needed) and `--time` a whole minute after JOB_TIMEOUT as a backstop (recon's own
 *   timeout, which scancels, comes first and gives its own reason), then record the
 *   Slurm job id in the job store before anything else;
 * - follow it every SLURM_POLL_INTERVAL, its output streamed as the local run's;
 *   JOB_TIMEOUT is recon's own (scancel when it runs out), a cancel is scancel;
 * - a shutdown does not cancel it: the job goes back to the queue with its Slurm job id,
 *   and the next server follows the same Slurm job ({@link SlurmLauncher.canReattach}):
 *   no job is submitted twice, none is forgotten. Only a Slurm job that Slurm forgot and
 *   that left no exit status is submitted again;
 * - Slurm not answering at a submission is {@link ExecutorUnavailable}: the job waits
 *   in the queue and the scheduler retries with backoff.
 *
 * @module
 */
import * as path from "node:path";
import type { Logger } from "../log.ts";
import { errorMessage } from "../errors.ts";
import type { Priority } from "../wire/protocol.ts";
import type { JobRecord, JobStore } from "./job_store.ts";
import type { RunOptions } from "./runner.ts";
import { ExecutorUnavailable, type RunningJob } from "./scheduler.ts";
import {
  followSlurmJob,
  readExitFile,
  SlurmError,
  slurmJobState,
  type SlurmSettings,
  submitToSlurm,
} from "./slurm.ts";
import type { Launcher, LaunchResult } from "./worker.ts";

/** `--nice` of each priority: Slurm's nice only lowers a job's priority without privilege. */
export const SLURM_NICE: Readonly<Record<Priority, number>> = { high: 0, normal: 100, low: 200 };

/** Inputs of {@link SlurmLauncher}. */
export interface SlurmLauncherOptions extends SlurmSettings {
  store: JobStore;
  reconFilePath: string;
  /** JOB_TIMEOUT in seconds; 0 = none. */
  jobTimeout: number;
  log: Logger;
}

/** The work directory of job `id`'s Slurm run: argv, env, output and exit files. */
export function slurmWorkDir(reconFilePath: string, id: string): string {
  return path.join(reconFilePath, `job_${id}.slurm`);
}

/** Submits and follows jobs on Slurm. */
export class SlurmLauncher implements Launcher {
  #options: SlurmLauncherOptions;
  /** Jobs whose next run follows the Slurm job already recorded. */
  #reattach = new Set<string>();

  constructor(options: SlurmLauncherOptions) {
    this.#options = options;
  }

  /**
   * Whether the Slurm job recorded for `record` can be followed on: its exit file is
   * there, or Slurm still knows it. A Slurm job that Slurm forgot (MinJobAge passed
   * while no server ran) without an exit file is lost: the job is submitted again.
   * @throws {ExecutorUnavailable} when Slurm does not answer.
   */
  async canReattach(record: JobRecord): Promise<boolean> {
    this.#reattach.delete(record.id);
    if (record.executor !== "slurm" || record.executorRef === undefined) return false;
    const { log, reconFilePath } = this.#options;
    const workDir = slurmWorkDir(reconFilePath, record.id);
    const exit = await readExitFile(workDir).catch(() => undefined);
    let known = exit !== undefined;
    if (!known) {
      try {
        known = (await slurmJobState(this.#options, record.executorRef)).state !== "GONE";
      } catch (error) {
        throw unavailable(error);
      }
    }
    if (!known) {
      log.warn(
        `job ${record.id}: Slurm no longer knows job ${record.executorRef} and it left no exit status; submitting the job again`,
      );
      return false;
    }
    log.info(`job ${record.id}: following Slurm job ${record.executorRef} again`);
    this.#reattach.add(record.id);
    return true;
  }

  async run(job: RunningJob, request: RunOptions): Promise<LaunchResult> {
    const { store, log, reconFilePath, jobTimeout } = this.#options;
    const { id } = job.record;
    const workDir = slurmWorkDir(reconFilePath, id);
    let slurmId: string;
    if (this.#reattach.delete(id) && job.record.executorRef !== undefined) {
      slurmId = job.record.executorRef;
    } else {
      await Deno.remove(workDir, { recursive: true }).catch(() => {});
      await Deno.mkdir(workDir, { mode: 0o700 });
      try {
        slurmId = await submitToSlurm(this.#options, {
          jobId: id,
          workDir,
          argv: [request.command.program, ...request.command.args],
          env: request.env,
          cwd: request.command.cwd,
          // A backstop at least a minute past recon's own JOB_TIMEOUT, which wins.
          timeLimitMinutes: jobTimeout > 0 ? Math.ceil(jobTimeout / 60) + 1 : undefined,
          nice: SLURM_NICE[job.record.priority],
        });
      } catch (error) {
        await Deno.remove(workDir, { recursive: true }).catch(() => {});
        throw unavailable(error);
      }
      // Recorded before it is followed: a restart finds it instead of submitting again.
      store.setExecutorRef(id, slurmId, "slurm");
      log.info(`job ${id}: submitted as Slurm job ${slurmId}`);
    }
    // A shutdown leaves the Slurm job running (the next server follows it); anything
    // else that stops the job (a cancel) cancels the Slurm job too.
    const detach = new AbortController();
    const cancel = new AbortController();
    const onStop = () => {
      if (job.stop?.kind === "shutdown") detach.abort();
      else cancel.abort();
    };
    if (request.signal?.aborted) onStop();
    else request.signal?.addEventListener("abort", onStop, { once: true });
    try {
      const result = await followSlurmJob(this.#options, slurmId, workDir, {
        onLine: request.onLine,
        onProgress: request.onProgress,
        logPath: request.logPath,
        signal: cancel.signal,
        detach: detach.signal,
        timeoutMs: request.timeoutMs,
      });
      if (!detach.signal.aborted) {
        await Deno.remove(workDir, { recursive: true }).catch((error) =>
          log.warn(`job ${id}: cannot remove ${workDir}: ${errorMessage(error)}`)
        );
      }
      return result;
    } finally {
      request.signal?.removeEventListener("abort", onStop);
    }
  }

  /** Whether a shutdown left `job`'s Slurm job running (its output must stay). */
  detached(job: RunningJob): boolean {
    return job.stop?.kind === "shutdown";
  }
}

/** A Slurm command that failed: the job waits in the queue (the scheduler backs off). */
function unavailable(error: unknown): Error {
  if (error instanceof SlurmError) {
    return new ExecutorUnavailable(`Slurm does not answer: ${error.message}`);
  }
  return error as Error;
}
