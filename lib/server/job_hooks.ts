/**
 * The site's notification programs (issue 17): ON_JOB_END runs when a job succeeds,
 * fails or is cancelled, as soon as the store records it (never waiting for PACS
 * deliveries), as `PROGRAM JOB_ID STATE CLIENT RESULT_DIR`; ON_DELIVERY_FAILED runs
 * when a delivery is given up, as `PROGRAM JOB_ID DESTINATION REASON`. Both get the
 * same facts in RECON_* environment variables.
 *
 * A hook is a side effect, never part of the job: argv only (no shell), stdin closed,
 * stdout discarded, its own process group so that HOOK_TIMEOUT kills it with
 * everything it started (lib/server/hook_process.ts). At most
 * {@link MAX_RUNNING_HOOKS} run at once and a bounded queue waits; a failure is one
 * log line (with the last line of its stderr), a program that cannot run at all is
 * logged once per cause every 10 minutes. Hooks are logged, not audited.
 *
 * @module
 */
import { errorMessage } from "../errors.ts";
import { type Logger, LogThrottle } from "../log.ts";
import { FINAL_STATES } from "../wire/protocol.ts";
import { cannotRun, HookProcess } from "./hook_process.ts";
import type { JobRecord, JobStore } from "./job_store.ts";

/** Hooks running at once; the rest wait in the queue. */
export const MAX_RUNNING_HOOKS = 4;
/** Hooks waiting at most; one more is dropped and logged. */
export const MAX_QUEUED_HOOKS = 100;
/** Lines about programs that cannot run or a full queue: one per cause per window. */
const THROTTLE_MS = 10 * 60_000;

/** Options of {@link JobHooks}. */
export interface JobHooksOptions {
  /** ON_JOB_END (absolute path), or none. */
  onJobEnd?: string;
  /** ON_DELIVERY_FAILED (absolute path), or none. */
  onDeliveryFailed?: string;
  /** HOOK_TIMEOUT in ms: then the hook's process group gets SIGTERM, later SIGKILL. */
  timeoutMs: number;
  log: Logger;
  /**
   * Queue hooks but start none until {@link JobHooks.release}: the server's recovery
   * stops every process carrying a job's RECON_JOB_ID, a hook's included.
   */
  held?: boolean;
  /** Between SIGTERM and SIGKILL (default 2000 ms). */
  killGraceMs?: number;
}

type HookOption = "ON_JOB_END" | "ON_DELIVERY_FAILED";

interface HookRun {
  option: HookOption;
  args: string[];
  env: Record<string, string>;
  /** `job ID` or `job ID (destination NAME)`, for log lines. */
  subject: string;
}

interface Running {
  /** Ends the hook: `why` completes "ON_JOB_END PROGRAM … for job ID". */
  stop(why: string): void;
  /** Set when stopped before its process started. */
  stopped?: string;
  done: Promise<void>;
}

/** Runs ON_JOB_END and ON_DELIVERY_FAILED; see the module comment. */
export class JobHooks {
  #options: JobHooksOptions;
  #programs: Record<HookOption, string | undefined>;
  #queue: HookRun[] = [];
  #running = new Set<Running>();
  #held: boolean;
  #closed = false;
  #throttle = new LogThrottle({ windowMs: THROTTLE_MS, maxLines: 20 });

  constructor(options: JobHooksOptions) {
    this.#options = options;
    this.#held = options.held ?? false;
    this.#programs = { ON_JOB_END: options.onJobEnd, ON_DELIVERY_FAILED: options.onDeliveryFailed };
  }

  /** Run ON_JOB_END for each job of `store` that reaches a final state; returns the unsubscribe. */
  follow(store: Pick<JobStore, "onChange">): () => void {
    return store.onChange(({ job, from, what }) => {
      if (what === "state" && from !== job.state && FINAL_STATES.includes(job.state)) {
        this.jobEnded(job);
      }
    });
  }

  /** Run ON_JOB_END for `job`, which has just succeeded, failed or been cancelled. */
  jobEnded(job: JobRecord): void {
    // A failed or cancelled job's output directory is removed: no RESULT_DIR then.
    const resultDir = job.state === "succeeded" && !job.resultsRemoved ? job.outputDir : "";
    this.#enqueue({
      option: "ON_JOB_END",
      args: [job.id, job.state, job.client, resultDir],
      env: jobEnv(job, resultDir, job.reason ?? ""),
      subject: `job ${job.id}`,
    });
  }

  /** Run ON_DELIVERY_FAILED for `job`'s delivery to `destination` (a name), given up for `reason`. */
  deliveryFailed(job: JobRecord, destination: string, reason: string): void {
    const resultDir = job.resultsRemoved ? "" : job.outputDir;
    this.#enqueue({
      option: "ON_DELIVERY_FAILED",
      args: [job.id, destination, reason],
      env: { ...jobEnv(job, resultDir, reason), RECON_DESTINATION: destination },
      subject: `job ${job.id} (destination ${destination})`,
    });
  }

  /** One line per configured hook that cannot run now, for the server's start. */
  async problems(): Promise<string[]> {
    const found: string[] = [];
    for (const [option, program] of Object.entries(this.#programs)) {
      const problem = program && await cannotRun(program);
      if (problem) found.push(`${option} ${program} ${problem}; fix ${option} in recon.opts`);
    }
    return found;
  }

  /** Start the hooks queued while held. */
  release(): void {
    this.#held = false;
    this.#pump();
  }

  /**
   * Run no more hooks: the queued ones are dropped (logged), the running ones get
   * `waitMs`, then their process groups are killed. Resolves when all have ended.
   */
  async close(waitMs = 5000): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const { log } = this.#options;
    if (this.#queue.length > 0) {
      log.warn(`${this.#queue.length} queued hook run(s) dropped: the server is stopping`);
      this.#queue = [];
    }
    if (this.#running.size === 0) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const all = () => Promise.all([...this.#running].map((run) => run.done));
    await Promise.race([all(), new Promise((resolve) => (timer = setTimeout(resolve, waitMs)))]);
    clearTimeout(timer);
    for (const run of this.#running) run.stop("was stopped: the server is shutting down");
    await all();
  }

  #enqueue(hook: HookRun): void {
    if (this.#closed || !this.#programs[hook.option]) return;
    if (this.#queue.length >= MAX_QUEUED_HOOKS) {
      this.#logOnce(
        `queue full ${hook.option}`,
        `${hook.option} not run for ${hook.subject}: ${MAX_QUEUED_HOOKS} hook runs are waiting already (${MAX_RUNNING_HOOKS} run at once); are the hooks slow or hanging?`,
      );
      return;
    }
    this.#queue.push(hook);
    this.#pump();
  }

  #pump(): void {
    while (!this.#held && !this.#closed && this.#running.size < MAX_RUNNING_HOOKS) {
      const hook = this.#queue.shift();
      if (!hook) return;
      const running: Running = {
        stop: (why) => (running.stopped = why),
        done: Promise.resolve(),
      };
      running.done = this.#run(hook, running)
        .catch((error) => this.#options.log.error(`${hook.option}: ${errorMessage(error)}`))
        .finally(() => {
          this.#running.delete(running);
          this.#pump();
        });
      this.#running.add(running);
    }
  }

  async #run(hook: HookRun, running: Running): Promise<void> {
    const { log, timeoutMs, killGraceMs } = this.#options;
    const program = this.#programs[hook.option]!;
    const what = `${hook.option} ${program}`;
    const problem = await cannotRun(program);
    if (problem) {
      this.#logOnce(
        `${what} ${problem}`,
        `${what} ${problem} (${hook.subject}); fix ${hook.option} in recon.opts`,
      );
      return;
    }
    if (running.stopped) return;
    let child: HookProcess;
    try {
      const { args, env } = hook;
      child = new HookProcess({ program, args, env, timeoutMs, graceMs: killGraceMs });
    } catch (error) {
      const why = `cannot start setsid: ${errorMessage(error)}`;
      this.#logOnce(`${what} ${why}`, `${what} ${why} (${hook.subject}); is util-linux installed?`);
      return;
    }
    running.stop = (why) => child.stop(why);
    const { failure, lastLine } = await child.done;
    if (failure === undefined) log.debug(`${what} finished for ${hook.subject}`);
    else log.warn(`${what} ${failure} for ${hook.subject}${lastLine ? `: ${lastLine}` : ""}`);
  }

  /** A warning at most once per `key` per 10 minutes, counting the ones held back. */
  #logOnce(key: string, message: string): void {
    const verdict = this.#throttle.pass(key);
    if (verdict === undefined) return;
    if (verdict === "cap") {
      this.#options.log.warn("hooks: too many problems this time; not logging more for 10 minutes");
      return;
    }
    const held = verdict.held > 0 ? ` (${verdict.held} more like it since its last line)` : "";
    this.#options.log.warn(`${message}${held}; logged once per 10 minutes`);
  }
}

/** The RECON_* variables of a hook, beside the server's own environment. */
function jobEnv(job: JobRecord, resultDir: string, reason: string): Record<string, string> {
  return {
    RECON_JOB_ID: job.id,
    RECON_JOB_STATE: job.state,
    RECON_CLIENT: job.client,
    RECON_RESULT_DIR: resultDir,
    RECON_RESULT_COUNT: job.state === "succeeded" ? String(job.resultCount ?? 0) : "",
    RECON_EXIT_CODE: String(job.exitCode ?? ""),
    RECON_REASON: reason,
  };
}
