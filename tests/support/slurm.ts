/**
 * Test support for the tests that need Slurm (issue 15): the one-node cluster of
 * `scripts/slurm-local` on this machine (munged, slurmctld and slurmd with their own key,
 * ports, state and logs in one directory). No mocks: a test that cannot get a cluster
 * fails with the script's own line saying what failed and which log to read.
 *
 * - {@link ensureSlurm}: the shared test cluster (`scripts/slurm-local up`, its default
 *   directory), which `make test` starts before the tests and stops after them. Started
 *   here when it is not up (a test file run by hand), never stopped here: other test
 *   files use it at the same time.
 * - {@link LocalSlurm}: a private cluster in a temporary directory, for a test that stops
 *   and starts Slurm; `await using` stops it (by the PIDs it recorded) and removes it.
 * - {@link slurmCommand}: a Slurm command (`sbatch`, `squeue`, `scontrol` …) against a
 *   cluster, its stdout.
 *
 * ```ts
 * const slurm = await ensureSlurm();
 * const id = (await slurmCommand(slurm, "sbatch", ["--parsable", "--wrap", "true"])).trim();
 * ```
 *
 * @module
 */
import * as path from "node:path";
import { ROOT, run, type RunResult } from "./e2e.ts";

/** The script that starts and stops the test cluster. */
export const SLURM_LOCAL = path.join(ROOT, "scripts", "slurm-local");

/** A running test cluster: its slurm.conf, and the environment Slurm commands need. */
export interface SlurmCluster {
  /** DIR/slurm.conf. */
  conf: string;
  /** `{ SLURM_CONF: conf }`, for `Deno.Command` (added to the inherited environment). */
  env: Record<string, string>;
}

/**
 * `scripts/slurm-local up|down [DIR]`: its one line; throws with what the script said
 * when it fails. `up` may install Slurm with apt-get on a fresh machine, hence the long
 * bound; the script bounds its own waits (30 s to start, 10 s + 5 s to stop).
 */
export async function slurmLocal(action: "up" | "down", dir?: string): Promise<string> {
  const result = await run(SLURM_LOCAL, dir === undefined ? [action] : [action, dir], {
    timeoutMs: action === "up" ? 600_000 : 120_000,
  });
  if (result.code !== 0) {
    throw new Error(
      `scripts/slurm-local ${action} failed (exit ${result.code}): ${
        (result.stderr || result.stdout).trim()
      }`,
    );
  }
  return result.stdout.trim();
}

function cluster(conf: string): SlurmCluster {
  return { conf, env: { SLURM_CONF: conf } };
}

/**
 * The shared test cluster, started when it is not up (`scripts/slurm-local up` returns at
 * once when it is). Asked anew on each call, so that a cluster stopped in between is
 * started again rather than remembered.
 */
export async function ensureSlurm(): Promise<SlurmCluster> {
  const line = await slurmLocal("up");
  const conf = /^slurm-local: up \(SLURM_CONF=(.+)\)$/.exec(line)?.[1];
  if (conf === undefined) throw new Error(`scripts/slurm-local up printed ${JSON.stringify(line)}`);
  return cluster(conf);
}

/**
 * A private test cluster in its own temporary directory (own key, ports, state), for a
 * test that stops Slurm, which the shared one must not be. Disposing stops it and
 * removes the directory.
 */
export class LocalSlurm implements SlurmCluster, AsyncDisposable {
  readonly conf: string;
  readonly env: Record<string, string>;

  private constructor(readonly dir: string) {
    ({ conf: this.conf, env: this.env } = cluster(path.join(dir, "slurm.conf")));
  }

  /** A new cluster, up. */
  static async start(): Promise<LocalSlurm> {
    const slurm = new LocalSlurm(await Deno.makeTempDir({ prefix: "recon_slurm_" }));
    try {
      await slurm.up();
    } catch (error) {
      await slurm[Symbol.asyncDispose]();
      throw error;
    }
    return slurm;
  }

  /** `scripts/slurm-local up DIR`: its line. */
  up(): Promise<string> {
    return slurmLocal("up", this.dir);
  }

  /** `scripts/slurm-local down DIR`: its line. */
  down(): Promise<string> {
    return slurmLocal("down", this.dir);
  }

  /** The PIDs the daemons recorded in DIR (undefined: no PID file). */
  async pids(): Promise<Record<"munged" | "slurmctld" | "slurmd", number | undefined>> {
    const read = async (name: string) => {
      try {
        return Number((await Deno.readTextFile(path.join(this.dir, `${name}.pid`))).trim());
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) return undefined;
        throw error;
      }
    };
    return {
      munged: await read("munged"),
      slurmctld: await read("slurmctld"),
      slurmd: await read("slurmd"),
    };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      await this.down();
    } finally {
      await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    }
  }
}

/** Runs a Slurm command against `slurm` (at most 30 s); its stdout, or throws. */
export async function slurmCommand(
  slurm: SlurmCluster,
  program: string,
  args: string[],
): Promise<string> {
  const result: RunResult = await run(program, args, { env: slurm.env, timeoutMs: 30_000 });
  if (result.code !== 0) {
    throw new Error(
      `${program} ${args.join(" ")} failed (exit ${result.code}): ${result.stderr.trim()}`,
    );
  }
  return result.stdout;
}
