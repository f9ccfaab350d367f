/**
 * scripts/slurm-local (issue 15), on private clusters in temporary directories so that
 * the shared test cluster other test files use keeps running:
 *
 * - `up` starts a one-node cluster whose sbatch jobs run and leave their output, shows
 *   them in `scontrol`, lowers the priority of a `--nice` job and cancels with `scancel`;
 *   a second `up` starts nothing; `env` names its slurm.conf;
 * - `down` stops every process that cluster started (daemons by their recorded PIDs, and
 *   its running job), and nothing of another cluster; `up` starts it again.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { run, waitFor } from "./support/e2e.ts";
import { processAlive } from "./support/durable.ts";
import { LocalSlurm, SLURM_LOCAL, slurmCommand } from "./support/slurm.ts";

async function readOrEmpty(file: string): Promise<string> {
  try {
    return await Deno.readTextFile(file);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return "";
    throw error;
  }
}

async function sbatch(slurm: LocalSlurm, args: string[]): Promise<string> {
  const id = (await slurmCommand(slurm, "sbatch", ["--parsable", ...args])).trim();
  assert.match(id, /^\d+$/, "sbatch --parsable prints the job id");
  return id;
}

async function jobState(slurm: LocalSlurm, id: string): Promise<string | undefined> {
  const line = await slurmCommand(slurm, "scontrol", ["show", "job", "-o", id]);
  assert.match(line, new RegExp(`^JobId=${id} `));
  return /\bJobState=([A-Z_]+)/.exec(line)?.[1];
}

/** Runs `echo hi` through sbatch and waits (at most 20 s) for its output and COMPLETED. */
async function runHi(slurm: LocalSlurm, name: string): Promise<void> {
  const out = path.join(slurm.dir, name);
  const id = await sbatch(slurm, [`--output=${out}`, "--wrap", 'echo "hi from job $SLURM_JOB_ID"']);
  await waitFor(`job ${id}'s output in ${out}`, async () => {
    return (await readOrEmpty(out)) === `hi from job ${id}\n`;
  }, { timeoutMs: 20_000 });
  await waitFor(`job ${id} COMPLETED`, async () => {
    return (await jobState(slurm, id)) === "COMPLETED";
  }, { timeoutMs: 20_000 });
}

Deno.test("slurm-local up starts a cluster that runs sbatch jobs, and a second up starts nothing", async () => {
  await using slurm = await LocalSlurm.start();
  const pids = await slurm.pids();
  for (const [name, pid] of Object.entries(pids)) {
    assert.ok(pid && await processAlive(pid), `${name} runs (PID file ${pid})`);
  }

  const started = performance.now();
  assert.equal(await slurm.up(), `slurm-local: up (SLURM_CONF=${slurm.conf})`);
  assert.ok(performance.now() - started < 5_000, "up of a healthy cluster returns at once");
  assert.deepEqual(await slurm.pids(), pids, "up of a healthy cluster starts nothing");

  const env = await run(SLURM_LOCAL, ["env", slurm.dir]);
  assert.deepEqual([env.code, env.stdout, env.stderr], [0, `SLURM_CONF=${slurm.conf}\n`, ""]);

  await runHi(slurm, "hi.out");

  // Held back an hour, so that both stay pending: the priority --nice lowers, then scancel.
  const later = ["--begin=now+1hour", "--output=/dev/null", "--wrap", "true"];
  const normal = await sbatch(slurm, later);
  const nice = await sbatch(slurm, ["--nice=100", ...later]);
  const queue = await slurmCommand(slurm, "squeue", [
    "-h",
    "-o",
    "%i %Q",
    "-j",
    `${normal},${nice}`,
  ]);
  const priority = Object.fromEntries(queue.trim().split("\n").map((line) => line.split(" ")));
  assert.equal(Number(priority[normal]) - Number(priority[nice]), 100, `squeue -o %Q:\n${queue}`);
  await slurmCommand(slurm, "scancel", [normal, nice]);
  for (const id of [normal, nice]) {
    await waitFor(`job ${id} CANCELLED`, async () => (await jobState(slurm, id)) === "CANCELLED");
  }
});

Deno.test("slurm-local down stops every process its cluster started and no other's; up starts it again", async () => {
  await using other = await LocalSlurm.start();
  await using slurm = await LocalSlurm.start();
  const pids = await slurm.pids();
  const otherPids = await other.pids();

  const jobPidFile = path.join(slurm.dir, "job.pid");
  const running = await sbatch(slurm, [
    "--output=/dev/null",
    "--wrap",
    `echo $$ >${jobPidFile}.tmp && mv ${jobPidFile}.tmp ${jobPidFile} && exec sleep 300`,
  ]);
  const jobPid = Number(
    await waitFor("the job's PID", () => readOrEmpty(jobPidFile), { timeoutMs: 20_000 }),
  );
  assert.ok(await processAlive(jobPid), "the job runs");

  assert.equal(
    await slurm.down(),
    `slurm-local: down (slurmd ${pids.slurmd}, slurmctld ${pids.slurmctld}, munged ${pids.munged}; ended 1 running job)`,
  );
  for (const [name, pid] of [...Object.entries(pids), ["the job", jobPid] as const]) {
    assert.ok(!await processAlive(pid!), `${name} (${pid}) is gone`);
  }
  const left = await run("pgrep", ["-f", "--", slurm.dir]);
  assert.equal(left.stdout, "", `no process names ${slurm.dir}`);
  for (const [name, pid] of Object.entries(otherPids)) {
    assert.ok(await processAlive(pid!), `the other cluster's ${name} (${pid}) still runs`);
  }
  assert.equal(await slurm.down(), "slurm-local: down (nothing was running)");

  assert.equal(await slurm.up(), `slurm-local: up (SLURM_CONF=${slurm.conf})`);
  const again = await slurm.pids();
  for (const [name, pid] of Object.entries(again)) {
    assert.ok(pid && await processAlive(pid), `${name} runs again (PID file ${pid})`);
  }
  // Slurm kept its state: the job that down ended is over, not still RUNNING.
  assert.ok(
    !["RUNNING", "PENDING", undefined].includes(await jobState(slurm, running)),
    `job ${running} ended by down`,
  );
  await runHi(slurm, "hi_again.out");
});
