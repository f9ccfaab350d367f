/**
 * Tests for lib/server/sweeper.ts over a real job store with a clock moved by hand:
 * results expire RESULT_RETENTION after the job finished (not while a session is
 * delivering them), a failed job's inputs FAILED_INPUT_RETENTION after it failed, a
 * cut-off upload UPLOAD_RESUME_WINDOW after it was cut off (never while it uploads);
 * each removal is one log line; the interval suits short retentions.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { JobStore } from "../../lib/server/job_store.ts";
import { JobLeases } from "../../lib/server/job_leases.ts";
import { Sweeper, sweepInterval } from "../../lib/server/sweeper.ts";
import { memoryLog } from "../support/memory_log.ts";
import { TestClock } from "../support/test_server.ts";

async function harness() {
  const dir = await Deno.makeTempDir({ prefix: "recon-sweeper-test-" });
  const clock = new TestClock();
  const store = JobStore.open(path.join(dir, "state"), { now: clock.now });
  const leases = new JobLeases();
  const { lines, log } = memoryLog();
  const sweeper = new Sweeper({
    store,
    leases,
    log,
    resultRetention: 100,
    failedInputRetention: 200,
    uploadResumeWindow: 300,
    now: clock.now,
  });
  /** A job taken to `state` with the directories that state has. */
  const job = async (state: "receiving" | "succeeded" | "failed") => {
    const id = crypto.randomUUID();
    const inputDir = path.join(dir, `job_${id}_input`);
    const outputDir = path.join(dir, `job_${id}_output`);
    await Deno.mkdir(inputDir);
    store.createReceiving({
      id,
      priority: "normal",
      client: "k",
      peer: "127.0.0.1:1",
      keyId: "k",
      options: {},
      inputDir,
      outputDir,
      logPath: path.join(dir, `job_${id}.log`),
      files: [{ name: "P1.7", size: 3 }],
      uploadExpiresAt: clock.ms + 300_000,
    });
    if (state === "receiving") return store.get(id)!;
    store.inputVerified(id, 0, "0".repeat(64));
    store.markQueued(id);
    store.markRunning(id);
    if (state === "failed") {
      return store.markFailed(id, {
        reason: "exit 1",
        exitCode: 1,
        stderrTail: [],
        inputsExpireAt: clock.ms + 200_000,
      });
    }
    await Deno.mkdir(outputDir);
    await Deno.writeTextFile(path.join(outputDir, "r.dcm"), "image");
    return store.markSucceeded(id, {
      exitCode: 0,
      stderrTail: [],
      outputs: [{ name: "r.dcm", size: 5, sha256: "0".repeat(64) }],
      skipped: 0,
      resultsExpireAt: clock.ms + 100_000,
    });
  };
  return {
    clock,
    store,
    leases,
    lines,
    sweeper,
    job,
    async [Symbol.asyncDispose]() {
      await sweeper.stop();
      store.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

async function exists(file: string): Promise<boolean> {
  return await Deno.lstat(file).then(() => true, () => false);
}

Deno.test("sweepInterval() is half the shortest retention, at most a minute and at least 0.5 s", () => {
  assert.equal(sweepInterval([7 * 86400, 3 * 86400, 3600]), 60_000);
  assert.equal(sweepInterval([10, 3600, 3600]), 5_000);
  assert.equal(sweepInterval([2, 3600, 3600]), 1_000);
  assert.equal(sweepInterval([0, 3600, 3600]), 500);
});

Deno.test("Sweeper expires results RESULT_RETENTION after the job finished: expired, removed, one log line", async () => {
  await using h = await harness();
  const job = await h.job("succeeded");
  h.clock.advance(99);
  await h.sweeper.sweep();
  assert.equal(h.store.get(job.id)!.state, "succeeded");
  h.clock.advance(1);
  await h.sweeper.sweep();
  const record = h.store.get(job.id)!;
  assert.equal(record.state, "expired");
  assert.equal(record.resultsRemoved, true);
  assert.equal(record.expiredAt, h.clock.ms);
  assert.equal(await exists(job.outputDir), false);
  assert.deepEqual(h.lines, [
    `info job ${job.id}: results expired (RESULT_RETENTION 100 s); removed ${job.outputDir}`,
  ]);
});

Deno.test("Sweeper leaves results a session is delivering until it is done", async () => {
  await using h = await harness();
  const job = await h.job("succeeded");
  const release = h.leases.holdResults(job.id);
  h.clock.advance(1000);
  await h.sweeper.sweep();
  assert.equal(h.store.get(job.id)!.state, "succeeded");
  assert.equal(await exists(job.outputDir), true);
  release();
  await h.sweeper.sweep();
  assert.equal(h.store.get(job.id)!.state, "expired");
});

Deno.test("Sweeper removes a failed job's inputs after FAILED_INPUT_RETENTION; the job stays failed", async () => {
  await using h = await harness();
  const job = await h.job("failed");
  h.clock.advance(199);
  await h.sweeper.sweep();
  assert.equal(await exists(job.inputDir), true);
  h.clock.advance(1);
  await h.sweeper.sweep();
  const record = h.store.get(job.id)!;
  assert.equal(record.state, "failed");
  assert.equal(record.inputsRemoved, true);
  assert.equal(await exists(job.inputDir), false);
  assert.deepEqual(h.lines, [
    `info job ${job.id}: the failed job's inputs expired (FAILED_INPUT_RETENTION 200 s); removed ${job.inputDir}`,
  ]);
});

Deno.test("Sweeper fails an upload UPLOAD_RESUME_WINDOW after its cut-off, never while it uploads", async () => {
  await using h = await harness();
  const job = await h.job("receiving");
  const end = h.leases.beginUpload(job.id, () => {});
  h.clock.advance(301);
  await h.sweeper.sweep();
  assert.equal(h.store.get(job.id)!.state, "receiving", "an upload in progress is left alone");
  end();
  h.leases.cutOff(job.id, h.clock.ms + 300_000);
  h.clock.advance(299);
  await h.sweeper.sweep();
  assert.equal(h.store.get(job.id)!.state, "receiving", "the window counts from the cut-off");
  h.clock.advance(1);
  await h.sweeper.sweep();
  const record = h.store.get(job.id)!;
  assert.equal(record.state, "failed");
  assert.equal(record.reason, "the upload was not completed within UPLOAD_RESUME_WINDOW (300 s)");
  assert.equal(record.inputsRemoved, true);
  assert.equal(await exists(job.inputDir), false);
  assert.equal(h.leases.resumeUntil.has(job.id), false);
  assert.deepEqual(h.lines, [
    `warn job ${job.id}: failed: the upload was not completed within UPLOAD_RESUME_WINDOW (300 s); removed ${job.inputDir}`,
  ]);
});

Deno.test("Sweeper.settle() records a job past its time at once, whatever the last sweep", async () => {
  await using h = await harness();
  const job = await h.job("succeeded");
  assert.equal(h.sweeper.settle(job).state, "succeeded", "not due yet");
  h.clock.advance(100);
  const settled = h.sweeper.settle(h.store.get(job.id)!);
  assert.equal(settled.state, "expired");
  assert.equal(h.store.get(job.id)!.state, "expired", "committed before it returns");
  await h.sweeper.stop(); // the removal it started
  assert.equal(await exists(job.outputDir), false);
  assert.equal(h.store.get(job.id)!.resultsRemoved, true);
});

Deno.test("Sweeper.start() sweeps at once and then periodically", async () => {
  await using h = await harness();
  const job = await h.job("succeeded");
  h.clock.advance(100);
  const sweeper = new Sweeper({
    store: h.store,
    leases: h.leases,
    log: memoryLog().log,
    resultRetention: 100,
    failedInputRetention: 200,
    uploadResumeWindow: 300,
    now: h.clock.now,
    intervalMs: 50,
  });
  sweeper.start();
  try {
    const later = await h.job("succeeded");
    h.clock.advance(100);
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(h.store.get(job.id)!.state, "expired");
    assert.equal(h.store.get(later.id)!.state, "expired");
  } finally {
    await sweeper.stop();
  }
});
