/**
 * What `/healthz` checks: the disk under RECON_FILEPATH keeps DISK_FREE_MARGIN free,
 * the job store answers, RECON_SCRIPT can run, and with EXECUTOR = slurm that Slurm
 * takes jobs. Each problem is one line a person on call can act on; none names a file
 * of a job. Slurm is asked at most every {@link SLURM_CHECK_EVERY_MS} however often the
 * endpoint is scraped, and a slow answer never holds a scrape longer than
 * {@link SLURM_CHECK_WAIT_MS}.
 *
 * @module
 */
import { errorMessage } from "../errors.ts";
import type { JobStore } from "../server/job_store.ts";
import type { Scheduler } from "../server/scheduler.ts";
import { checkSlurm, type SlurmSettings } from "../server/slurm.ts";
import { checkScript } from "../server/worker.ts";
import { formatBytes } from "./status_format.ts";

/** How long one answer from Slurm stands. */
export const SLURM_CHECK_EVERY_MS = 15_000;
/** How long a scrape waits for a Slurm check under way before it reports the last answer. */
export const SLURM_CHECK_WAIT_MS = 2_000;

/** What the checks look at. */
export interface HealthSources {
  store: JobStore;
  scheduler: Scheduler;
  reconFilePath: string;
  reconScript: string;
  diskFreeMargin: number;
  diskFree: (dir: string) => Promise<number>;
  /** Set with EXECUTOR = slurm. */
  slurm?: SlurmProbe;
}

/** The problems now; an empty list means healthy. */
export async function healthProblems(sources: HealthSources): Promise<string[]> {
  const checks = await Promise.all([
    diskProblem(sources),
    storeProblem(sources.store),
    checkScript(sources.reconScript).then((problem) =>
      problem ? `${problem}: every job is refused` : undefined
    ),
    executorProblem(sources),
  ]);
  return checks.filter((problem): problem is string => problem !== undefined);
}

async function diskProblem(sources: HealthSources): Promise<string | undefined> {
  const { reconFilePath, diskFreeMargin } = sources;
  let free: number;
  try {
    free = await sources.diskFree(reconFilePath);
  } catch (error) {
    return `disk: cannot tell the free space of RECON_FILEPATH ${reconFilePath}: ${
      errorMessage(error)
    }`;
  }
  if (free >= diskFreeMargin) return undefined;
  return `disk: ${formatBytes(free)} free under RECON_FILEPATH ${reconFilePath}, less than ` +
    `DISK_FREE_MARGIN ${formatBytes(diskFreeMargin)}: new jobs are refused`;
}

function storeProblem(store: JobStore): string | undefined {
  try {
    store.counts();
    return undefined;
  } catch (error) {
    return `job store: unavailable: ${errorMessage(error)}`;
  }
}

async function executorProblem(sources: HealthSources): Promise<string | undefined> {
  const waiting = sources.scheduler.executorProblem;
  if (waiting) {
    return `executor: ${waiting.reason} (since ${
      new Date(waiting.since).toISOString()
    }); jobs wait queued`;
  }
  const problem = await sources.slurm?.problem();
  return problem ? `slurm: ${problem}` : undefined;
}

/** Asks Slurm whether it takes jobs, at most once per {@link SLURM_CHECK_EVERY_MS}. */
export class SlurmProbe {
  #settings: SlurmSettings;
  #check: (settings: SlurmSettings) => Promise<string | undefined>;
  #last: { at: number; problem: string | undefined } | undefined;
  #running: Promise<string | undefined> | undefined;

  constructor(
    settings: SlurmSettings,
    check: (settings: SlurmSettings) => Promise<string | undefined> = checkSlurm,
  ) {
    this.#settings = settings;
    this.#check = check;
  }

  /** The last answer when fresh; else a new one, or the last if it takes too long. */
  async problem(): Promise<string | undefined> {
    if (this.#last && Date.now() - this.#last.at < SLURM_CHECK_EVERY_MS) return this.#last.problem;
    this.#running ??= this.#check(this.#settings)
      .catch((error) => `cannot ask Slurm: ${errorMessage(error)}`)
      .then((problem) => {
        this.#last = { at: Date.now(), problem };
        this.#running = undefined;
        return problem;
      });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const slow = new Promise<"slow">((resolve) => {
      timer = setTimeout(resolve, SLURM_CHECK_WAIT_MS, "slow");
    });
    const answer = await Promise.race([this.#running, slow]);
    clearTimeout(timer);
    if (answer !== "slow") return answer;
    return this.#last?.problem ??
      `no answer from Slurm (scontrol) within ${SLURM_CHECK_WAIT_MS / 1000} s`;
  }
}
