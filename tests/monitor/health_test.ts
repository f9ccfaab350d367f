/**
 * What /healthz reports, with a real job store: nothing when all is well, one line per
 * problem otherwise (disk under DISK_FREE_MARGIN, a store that no longer answers, a
 * RECON_SCRIPT that cannot run, an executor that does not take jobs), and a Slurm
 * check that is asked at most every 15 s and never holds a scrape for long.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { JobStore } from "../../lib/server/job_store.ts";
import type { Scheduler } from "../../lib/server/scheduler.ts";
import {
  healthProblems,
  type HealthSources,
  SLURM_CHECK_WAIT_MS,
  SlurmProbe,
} from "../../lib/monitor/health.ts";

async function withSources(
  body: (sources: HealthSources, dir: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir();
  const store = JobStore.open(path.join(dir, "state"));
  const script = path.join(dir, "recon.sh");
  await Deno.writeTextFile(script, "#!/bin/sh\n", { mode: 0o755 });
  const scheduler = { executorProblem: undefined } as unknown as Scheduler;
  try {
    await body({
      store,
      scheduler,
      reconFilePath: dir,
      reconScript: script,
      diskFreeMargin: 1024,
      diskFree: () => Promise.resolve(10 * 1024 * 1024),
    }, dir);
  } finally {
    try {
      store.close();
    } catch { /* closed by the test */ }
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("healthy: no problem", async () => {
  await withSources(async (sources) => {
    assert.deepEqual(await healthProblems(sources), []);
  });
});

Deno.test("the disk under DISK_FREE_MARGIN is one line with both figures", async () => {
  await withSources(async (sources, dir) => {
    const problems = await healthProblems({
      ...sources,
      diskFree: () => Promise.resolve(512 * 1024 * 1024),
      diskFreeMargin: 2 * 1024 ** 3,
    });
    assert.deepEqual(problems, [
      `disk: 512 MiB free under RECON_FILEPATH ${dir}, less than DISK_FREE_MARGIN 2.0 GiB: new jobs are refused`,
    ]);
    const unknown = await healthProblems({
      ...sources,
      diskFree: () => Promise.reject(new Error("statfs failed")),
    });
    assert.match(unknown[0], /^disk: cannot tell the free space of RECON_FILEPATH .*statfs failed/);
  });
});

Deno.test("a closed job store, a missing script and a waiting executor are each reported", async () => {
  await withSources(async (sources, dir) => {
    sources.store.close();
    const scheduler = {
      executorProblem: { reason: "sbatch failed: slurmctld is down", since: Date.UTC(2026, 0, 2) },
    } as unknown as Scheduler;
    const problems = await healthProblems({
      ...sources,
      scheduler,
      reconScript: path.join(dir, "gone.sh"),
    });
    assert.equal(problems.length, 3, problems.join("\n"));
    assert.match(problems[0], /^job store: unavailable: /);
    assert.match(problems[1], /^RECON_SCRIPT .*gone\.sh.*: every job is refused$/);
    assert.equal(
      problems[2],
      "executor: sbatch failed: slurmctld is down (since 2026-01-02T00:00:00.000Z); jobs wait queued",
    );
  });
});

Deno.test("Slurm is asked once per 15 s however often the page is scraped", async () => {
  let asked = 0;
  const probe = new SlurmProbe({ sbatchArgs: [], pollIntervalMs: 1000 }, () => {
    asked++;
    return Promise.resolve(asked === 1 ? "scontrol show partition failed: down" : undefined);
  });
  await withSources(async (sources) => {
    for (let i = 0; i < 5; i++) {
      assert.deepEqual(await healthProblems({ ...sources, slurm: probe }), [
        "slurm: scontrol show partition failed: down",
      ]);
    }
  });
  assert.equal(asked, 1);
});

Deno.test("a Slurm check that hangs answers within the wait, and once", async () => {
  let release: (value: string | undefined) => void = () => {};
  let asked = 0;
  const probe = new SlurmProbe({ sbatchArgs: [], pollIntervalMs: 1000 }, () => {
    asked++;
    return new Promise((resolve) => (release = resolve));
  });
  const started = Date.now();
  const [first, second] = await Promise.all([probe.problem(), probe.problem()]);
  const waited = Date.now() - started;
  assert.match(first ?? "", /no answer from Slurm \(scontrol\) within 2 s/);
  assert.equal(second, first);
  assert.ok(
    waited >= SLURM_CHECK_WAIT_MS - 50 && waited < SLURM_CHECK_WAIT_MS + 5_000,
    `${waited}`,
  );
  assert.equal(asked, 1);
  release(undefined);
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(await probe.problem(), undefined);
  assert.equal(asked, 1);
});
