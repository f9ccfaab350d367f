/**
 * Tests for lib/server/scheduler.ts over a real job store in a temporary directory,
 * with an executor that stands in for scripts: jobs start in priority order (high,
 * normal, low; submission order within one) on MAX_CONCURRENT_JOBS workers, every
 * start is in the store before the job runs, cancelling works in each state, several
 * followers hear one job and a slow one loses only text lines, and a shutdown puts
 * running jobs back in the queue with their attempt given back. How a run ends is
 * tests/server/worker_test.ts.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { JobStore } from "../../lib/server/job_store.ts";
import { JobLeases } from "../../lib/server/job_leases.ts";
import { MAX_PENDING_EVENTS } from "../../lib/server/job_events.ts";
import {
  type Executor,
  ExecutorUnavailable,
  type JobOutcome,
  type RunningJob,
  Scheduler,
} from "../../lib/server/scheduler.ts";
import { Refusal } from "../../lib/server/refusal.ts";
import type { Priority } from "../../lib/wire/protocol.ts";
import { memoryLog } from "../support/memory_log.ts";

function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** A store in a temporary directory, jobs made in it, and an executor run by hand. */
async function harness(maxWorkers = 1) {
  const dir = await Deno.makeTempDir({ prefix: "recon-scheduler-test-" });
  const store = JobStore.open(path.join(dir, "state"));
  const leases = new JobLeases();
  const { lines, log } = memoryLog();
  const started: string[] = [];
  const gates = new Map<string, ReturnType<typeof deferred<JobOutcome>>>();
  const discarded: string[] = [];
  const executor: Executor = {
    execute(job: RunningJob) {
      started.push(job.id);
      const gate = deferred<JobOutcome>();
      gates.set(job.id, gate);
      job.abort.signal.addEventListener("abort", () =>
        gate.resolve({
          ok: false,
          reason: String(job.abort.signal.reason),
          exitCode: null,
          stderrTail: [],
        }));
      return gate.promise;
    },
    finish(job, outcome) {
      if (outcome.ok) {
        return Promise.resolve(store.markSucceeded(job.id, {
          exitCode: 0,
          stderrTail: [],
          outputs: [],
          skipped: 0,
          resultsExpireAt: Date.now() + 60_000,
        }));
      }
      if (job.stop?.kind === "cancel") {
        return Promise.resolve(store.markCancelled(job.id, job.stop));
      }
      return Promise.resolve(store.markFailed(job.id, { ...outcome }));
    },
    discard(job) {
      discarded.push(job.id);
      return Promise.resolve();
    },
  };
  const scheduler = new Scheduler({ store, maxWorkers, executor, leases, log });
  let counter = 0;
  /** A queued job (its input directory exists) named by its index, e.g. "a". */
  const queue = async (name: string, priority: Priority = "normal") => {
    const id = `00000000-0000-4000-8000-${String(++counter).padStart(12, "0")}`;
    const inputDir = path.join(dir, `job_${id}_input`);
    await Deno.mkdir(inputDir);
    await Deno.writeTextFile(path.join(inputDir, `${name}.7`), "raw");
    store.createReceiving({
      id,
      priority,
      client: "k",
      peer: "127.0.0.1:1",
      keyId: "k",
      options: { name },
      inputDir,
      outputDir: path.join(dir, `job_${id}_output`),
      logPath: path.join(dir, `job_${id}.log`),
      files: [{ name: `${name}.7`, size: 3 }],
      uploadExpiresAt: Date.now() + 60_000,
    });
    store.inputVerified(id, 0, "0".repeat(64));
    store.markQueued(id);
    names.set(id, name);
    return id;
  };
  const names = new Map<string, string>();
  const succeed = (id: string) =>
    gates.get(id)!.resolve({ ok: true, results: [], skipped: 0, stderrTail: [] });
  return {
    dir,
    store,
    scheduler,
    lines,
    queue,
    succeed,
    discarded,
    /** The names of the jobs started so far, in order. */
    started: () => started.map((id) => names.get(id)),
    async [Symbol.asyncDispose]() {
      await scheduler.stopRunning("test over");
      store.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

Deno.test("Scheduler starts jobs high, normal, low, each priority in submission order", async () => {
  await using h = await harness(1);
  const first = await h.queue("first");
  h.scheduler.start();
  assert.deepEqual(h.started(), ["first"]);
  for (
    const [name, priority] of [
      ["low1", "low"],
      ["normal1", "normal"],
      ["high1", "high"],
      [
        "low2",
        "low",
      ],
      ["high2", "high"],
      ["normal2", "normal"],
    ] as const
  ) {
    await h.queue(name, priority);
  }
  assert.deepEqual(h.store.queued().map((job) => job.options.name), [
    "high1",
    "high2",
    "normal1",
    "normal2",
    "low1",
    "low2",
  ]);
  h.succeed(first);
  for (let i = 0; i < 6; i++) {
    await tick();
    const running = h.scheduler.running();
    assert.equal(running.length, 1);
    h.succeed(running[0].id);
    await running[0].finished;
  }
  assert.deepEqual(h.started(), [
    "first",
    "high1",
    "high2",
    "normal1",
    "normal2",
    "low1",
    "low2",
  ]);
  assert.equal(h.scheduler.counts.succeeded, 7);
});

Deno.test("Scheduler runs at most MAX_CONCURRENT_JOBS at once and records each start before it runs", async () => {
  await using h = await harness(2);
  const ids = [];
  for (const name of ["a", "b", "c"]) ids.push(await h.queue(name));
  h.scheduler.start();
  assert.deepEqual(h.started(), ["a", "b"]);
  assert.equal(h.scheduler.activeWorkers, 2);
  assert.deepEqual(ids.map((id) => h.store.get(id)!.state), ["running", "running", "queued"]);
  assert.equal(h.store.get(ids[0])!.attempts, 1);
  h.succeed(ids[1]);
  await h.scheduler.live(ids[1])!.finished;
  assert.deepEqual(h.started(), ["a", "b", "c"]);
  assert.equal(h.store.get(ids[1])!.state, "succeeded");
});

Deno.test("Scheduler does not start jobs before start(), nor after close()", async () => {
  await using h = await harness(1);
  const a = await h.queue("a");
  h.scheduler.wake();
  assert.deepEqual(h.started(), []);
  h.scheduler.start();
  h.scheduler.close();
  const b = await h.queue("b");
  h.succeed(a);
  await h.scheduler.idle();
  assert.equal(h.store.get(b)!.state, "queued", "a closed scheduler leaves the queue as it is");
});

Deno.test("Scheduler.cancel() of a queued job records it cancelled by whom, removes its input and tells its followers", async () => {
  await using h = await harness(1);
  const a = await h.queue("a");
  const b = await h.queue("b");
  h.scheduler.start();
  const follower = h.scheduler.subscribe(b);
  const record = await h.scheduler.cancel(b, "not needed", "127.0.0.1:5 (key id k)");
  assert.equal(record.state, "cancelled");
  assert.equal(record.reason, "not needed");
  assert.equal(record.cancelledBy, "127.0.0.1:5 (key id k)");
  assert.equal(record.inputsRemoved, true);
  await assert.rejects(Deno.stat(record.inputDir), Deno.errors.NotFound);
  const event = await follower.next();
  assert.equal(event?.kind, "finished");
  assert.equal(await follower.next(), undefined, "then the subscription ends");
  h.succeed(a);
  await h.scheduler.idle();
  assert.deepEqual(h.started(), ["a"], "the cancelled job never runs");
  assert.equal(h.scheduler.counts.cancelled, 1);
  assert.equal(h.scheduler.counts.failed, 0, "cancelled while queued is not failed");
});

Deno.test("Scheduler.cancel() of a running job stops it and resolves once it is cancelled", async () => {
  await using h = await harness(1);
  const a = await h.queue("a");
  h.scheduler.start();
  const job = h.scheduler.live(a)!;
  const record = await h.scheduler.cancel(a, "wrong patient", "me");
  assert.equal(job.abort.signal.reason, "wrong patient");
  assert.equal(record.state, "cancelled");
  assert.equal(record.cancelledBy, "me");
  assert.equal(h.scheduler.activeWorkers, 0);
  assert.equal(h.scheduler.counts.failed, 1, "a job cancelled while running counts as failed");
  assert.equal(h.scheduler.counts.cancelled, 1);
});

Deno.test("Scheduler.cancel() refuses a final job, saying when it finished, and an unknown one", async () => {
  await using h = await harness(1);
  const a = await h.queue("a");
  h.scheduler.start();
  h.succeed(a);
  await h.scheduler.idle();
  const finished = new Date(h.store.get(a)!.finishedAt!).toISOString();
  await assert.rejects(
    h.scheduler.cancel(a, "x", "me"),
    (error: Refusal) =>
      error.kind === "refused" &&
      error.message ===
        `job ${a} already succeeded (finished ${finished}); there is nothing to cancel`,
  );
  const unknown = crypto.randomUUID();
  await assert.rejects(
    h.scheduler.cancel(unknown, "x", "me"),
    (error: Refusal) =>
      error.kind === "not_found" && error.message === `no job ${unknown} on this server`,
  );
});

Deno.test("Scheduler gives every follower of a job its events; a slow one loses text lines only", async () => {
  await using h = await harness(1);
  const a = await h.queue("a");
  const fast = h.scheduler.subscribe(a);
  const slow = h.scheduler.subscribe(a);
  h.scheduler.start();
  const job = h.scheduler.live(a)!;
  assert.deepEqual(await fast.next(), { kind: "started" });
  for (let i = 0; i < MAX_PENDING_EVENTS + 50; i++) {
    job.progress({ text: `line ${i}` });
    assert.deepEqual(await fast.next(), { kind: "progress", text: `line ${i}` });
  }
  job.progress({ percent: 50 });
  assert.equal(job.percent, 50);
  assert.ok(slow.events.length <= MAX_PENDING_EVENTS);
  assert.ok(slow.droppedLines >= 50, `dropped ${slow.droppedLines}`);
  h.succeed(a);
  await job.finished;
  const events = [];
  for (let event = await slow.next(); event; event = await slow.next()) events.push(event.kind);
  assert.equal(events[0], "started", "started is never dropped");
  assert.equal(events.at(-1), "finished", "nor the outcome");
});

Deno.test("Scheduler.subscribe() to a final job holds its outcome at once", async () => {
  await using h = await harness(1);
  const a = await h.queue("a");
  h.scheduler.start();
  h.succeed(a);
  await h.scheduler.idle();
  const late = h.scheduler.subscribe(a);
  const event = await late.next();
  assert.equal(event?.kind, "finished");
  assert.equal(event?.kind === "finished" && event.record.state, "succeeded");
  assert.equal(await late.next(), undefined);
});

Deno.test("Scheduler.stopRunning() puts running jobs back in the queue with the attempt given back; queued ones stay", async () => {
  await using h = await harness(1);
  const a = await h.queue("a");
  const b = await h.queue("b");
  h.scheduler.start();
  const follower = h.scheduler.subscribe(a);
  assert.equal(h.store.get(a)!.attempts, 1);
  h.scheduler.close();
  await h.scheduler.stopRunning("the server is shutting down (SIGTERM)");
  const record = h.store.get(a)!;
  assert.equal(record.state, "queued");
  assert.equal(record.attempts, 0, "a shutdown does not use up an attempt");
  assert.deepEqual(h.discarded, [a], "its partial output is discarded");
  assert.equal(h.store.get(b)!.state, "queued");
  assert.deepEqual(h.store.queued().map((job) => job.id), [a, b], "a keeps its place");
  const events = [];
  for (let event = await follower.next(); event; event = await follower.next()) events.push(event);
  assert.deepEqual(events.at(-1), {
    kind: "stopped",
    reason:
      "the server is shutting down (SIGTERM); the job is queued again for the server's next start",
  });
  assert.equal(h.scheduler.counts.failed, 0);
  assert.ok(h.lines.some((line) => line.includes(`job ${a}: stopped by the shutdown`)));
});

Deno.test("Scheduler refuses MAX_CONCURRENT_JOBS below 1", async () => {
  await using h = await harness(1);
  assert.throws(
    () =>
      new Scheduler({
        store: h.store,
        maxWorkers: 0,
        executor: {} as Executor,
        leases: new JobLeases(),
        log: memoryLog().log,
      }),
    RangeError,
  );
});

Deno.test("an executor that cannot take a job: it goes back to its place without an attempt, the queue pauses with backoff and starts again", async () => {
  const dir = await Deno.makeTempDir({ prefix: "recon-scheduler-test-" });
  const store = JobStore.open(path.join(dir, "state"));
  const { lines, log } = memoryLog();
  let refuse = 2;
  const tries: number[] = [];
  const executor: Executor = {
    execute(_job: RunningJob) {
      tries.push(Date.now());
      if (refuse-- > 0) throw new ExecutorUnavailable("Slurm does not answer: sbatch timed out");
      return Promise.resolve({ ok: true, results: [], skipped: 0, stderrTail: [] });
    },
    finish(job) {
      return Promise.resolve(store.markSucceeded(job.id, {
        exitCode: 0,
        stderrTail: [],
        outputs: [],
        skipped: 0,
        resultsExpireAt: Date.now() + 60_000,
      }));
    },
    discard: () => Promise.resolve(),
  };
  const scheduler = new Scheduler({ store, maxWorkers: 1, executor, leases: new JobLeases(), log });
  try {
    const id = "00000000-0000-4000-8000-000000000001";
    const inputDir = path.join(dir, `job_${id}_input`);
    await Deno.mkdir(inputDir);
    store.createReceiving({
      id,
      priority: "normal",
      client: "k",
      peer: "127.0.0.1:1",
      keyId: "k",
      options: {},
      inputDir,
      outputDir: path.join(dir, `job_${id}_output`),
      logPath: path.join(dir, `job_${id}.log`),
      files: [{ name: "a.7", size: 3 }],
      uploadExpiresAt: Date.now() + 60_000,
    });
    store.inputVerified(id, 0, "0".repeat(64));
    store.markQueued(id);
    const followed = scheduler.subscribe(id);
    scheduler.start();
    await tick();
    assert.equal(store.get(id)!.state, "queued", "back in the queue");
    assert.equal(store.get(id)!.attempts, 0, "no attempt used");
    assert.match(scheduler.executorProblem!.reason, /^Slurm does not answer: sbatch timed out$/);
    assert.ok(
      lines.some((line) => /queued again and no job starts for 1 s/.test(line)),
      lines.join("\n"),
    );
    assert.deepEqual(await followed.events.next(), { kind: "started" });
    assert.deepEqual(await followed.events.next(), {
      kind: "progress",
      text:
        "waiting in the queue: Slurm does not answer: sbatch timed out; it starts when the executor answers again",
    });
    const deadline = Date.now() + 10_000;
    while (store.get(id)!.state !== "succeeded" && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(store.get(id)!.state, "succeeded");
    assert.equal(tries.length, 3);
    // The waits double: about 1 s, then 2 s.
    assert.ok(tries[1] - tries[0] >= 900, `${tries[1] - tries[0]} ms`);
    assert.ok(tries[2] - tries[1] >= 1900, `${tries[2] - tries[1]} ms`);
    assert.equal(scheduler.executorProblem, undefined, "it answers again");
  } finally {
    scheduler.close();
    await scheduler.stopRunning("test over");
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
