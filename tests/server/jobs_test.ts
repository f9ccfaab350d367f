/**
 * Tests for lib/server/jobs.ts (the FIFO queue and its workers). Which files a job
 * returns: tests/server/results_test.ts.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { Job, type JobOutcome, JobQueue, MAX_PENDING_EVENTS } from "../../lib/server/jobs.ts";

function job(name: string): Job {
  return new Job({
    id: name,
    files: [{ name: `${name}.7`, size: 1 }],
    options: {},
    inputDir: `/tmp/job_${name}_input`,
    outputDir: `/tmp/job_${name}_output`,
    logPath: `/tmp/job_${name}.log`,
  });
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

Deno.test("JobQueue runs at most MAX_CONCURRENT_JOBS jobs at once, in FIFO order", async () => {
  const gates = new Map<string, ReturnType<typeof deferred>>();
  const started: string[] = [];
  let running = 0;
  let maxRunning = 0;
  const queue = new JobQueue(2, async (j): Promise<JobOutcome> => {
    started.push(j.id);
    running++;
    maxRunning = Math.max(maxRunning, running);
    const gate = deferred();
    gates.set(j.id, gate);
    await gate.promise;
    running--;
    return { ok: true, results: [], skipped: 0 };
  });
  const jobs = ["a", "b", "c", "d"].map(job);
  jobs.forEach((j) => queue.enqueue(j));
  assert.deepEqual(started, ["a", "b"]);
  assert.equal(queue.activeWorkers, 2);
  assert.equal(queue.queueLength, 2);
  assert.deepEqual(queue.jobs().map((j) => j.status), [
    "processing",
    "processing",
    "queued",
    "queued",
  ]);
  gates.get("b")!.resolve();
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(started, ["a", "b", "c"]);
  for (const id of ["a", "c"]) gates.get(id)!.resolve();
  await new Promise((resolve) => setTimeout(resolve, 0));
  gates.get("d")!.resolve();
  await queue.idle();
  assert.equal(maxRunning, 2);
  assert.equal(queue.completed, 4);
  assert.deepEqual(jobs.map((j) => j.status), ["completed", "completed", "completed", "completed"]);
});

Deno.test("JobQueue counts a job whose executor throws as failed with the reason", async () => {
  const queue = new JobQueue(1, () => Promise.reject(new Error("boom")));
  const j = job("x");
  queue.enqueue(j);
  await queue.idle();
  assert.equal(queue.failed, 1);
  assert.equal(j.status, "failed");
  const events = [];
  for (let e = await j.events.next(); e; e = j.events.length ? await j.events.next() : undefined) {
    events.push(e);
  }
  assert.deepEqual(events.map((e) => e.kind), ["started", "finished"]);
  const finished = events[1] as { outcome: JobOutcome };
  assert.equal(finished.outcome.ok, false);
  assert.equal((finished.outcome as { reason: string }).reason, "boom");
});

Deno.test("JobQueue.close() cancels and returns the jobs that never started and refuses new ones", async () => {
  const gate = deferred();
  const queue = new JobQueue(1, async () => {
    await gate.promise;
    return { ok: true, results: [], skipped: 0 };
  });
  const [a, b] = [job("a"), job("b")];
  queue.enqueue(a);
  queue.enqueue(b);
  assert.deepEqual(await queue.close("shutting down (SIGTERM)"), [b]);
  assert.equal(b.status, "cancelled");
  assert.deepEqual(await b.events.next(), {
    kind: "finished",
    outcome: { ok: false, reason: "shutting down (SIGTERM)", exitCode: null, stderrTail: [] },
  });
  assert.equal(a.status, "processing", "a running job is left to finish");
  assert.equal(a.abort.signal.aborted, false);
  assert.throws(() => queue.enqueue(job("c")), /shutting down/);
  gate.resolve();
  await queue.idle();
  assert.equal(a.status, "completed");
});

/** A job whose input directory exists, in a fresh temporary directory. */
async function jobWithInput(name: string): Promise<{ job: Job; dir: string }> {
  const dir = await Deno.makeTempDir({ prefix: "recon-jobs-test-" });
  const inputDir = path.join(dir, `job_${name}_input`);
  await Deno.mkdir(inputDir);
  await Deno.writeTextFile(path.join(inputDir, `${name}.7`), "raw");
  const j = new Job({
    id: name,
    files: [{ name: `${name}.7`, size: 3 }],
    options: {},
    inputDir,
    outputDir: path.join(dir, `job_${name}_output`),
    logPath: path.join(dir, `job_${name}.log`),
  });
  return { job: j, dir };
}

Deno.test("JobQueue.cancel() takes a waiting job out of the queue, finishes it as cancelled and removes its input", async () => {
  const gate = deferred();
  const ran: string[] = [];
  const queue = new JobQueue(1, async (j) => {
    ran.push(j.id);
    await gate.promise;
    return { ok: true, results: [], skipped: 0 };
  });
  const a = job("a");
  const { job: b, dir } = await jobWithInput("b");
  try {
    queue.enqueue(a);
    queue.enqueue(b);
    assert.equal(queue.queueLength, 1);
    await queue.cancel(b, "the job was cancelled by its client");
    assert.equal(queue.queueLength, 0);
    assert.equal(b.status, "cancelled");
    assert.equal(b.abort.signal.aborted, false, "a job that never ran has nothing to stop");
    assert.deepEqual(await b.events.next(), {
      kind: "finished",
      outcome: {
        ok: false,
        reason: "the job was cancelled by its client",
        exitCode: null,
        stderrTail: [],
      },
    });
    await assert.rejects(Deno.stat(b.inputDir), Deno.errors.NotFound);
    gate.resolve();
    await queue.idle();
    assert.deepEqual(ran, ["a"], "the cancelled job never runs");
    assert.equal(queue.failed, 0, "a job cancelled while waiting is not counted as failed");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("JobQueue.cancel() of a waiting job whose input directory is already gone still cancels it", async () => {
  const gate = deferred();
  const queue = new JobQueue(1, async () => {
    await gate.promise;
    return { ok: true, results: [], skipped: 0 };
  });
  const [a, b] = [job("a"), job("b-missing-input")];
  queue.enqueue(a);
  queue.enqueue(b);
  await queue.cancel(b, "gone");
  assert.equal(b.status, "cancelled");
  gate.resolve();
  await queue.idle();
});

Deno.test("JobQueue.cancel() tells a running job to stop with the reason; its worker reports the outcome", async () => {
  const queue = new JobQueue(1, (j) =>
    new Promise<JobOutcome>((resolve) => {
      j.abort.signal.addEventListener("abort", () =>
        resolve({
          ok: false,
          reason: `stopped: ${j.abort.signal.reason}`,
          exitCode: null,
          stderrTail: [],
        }));
    }));
  const { job: a, dir } = await jobWithInput("a");
  try {
    queue.enqueue(a);
    assert.equal(a.status, "processing");
    await queue.cancel(a, "the job was cancelled by its client");
    assert.equal(a.abort.signal.reason, "the job was cancelled by its client");
    await queue.idle();
    assert.equal(a.status, "cancelled");
    assert.equal(queue.failed, 1);
    const events = [await a.events.next(), await a.events.next()];
    assert.deepEqual(events[1], {
      kind: "finished",
      outcome: {
        ok: false,
        reason: "stopped: the job was cancelled by its client",
        exitCode: null,
        stderrTail: [],
      },
    });
    assert.ok((await Deno.stat(a.inputDir)).isDirectory, "the worker, not cancel(), cleans up");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("JobQueue refuses MAX_CONCURRENT_JOBS below 1", () => {
  assert.throws(() => new JobQueue(0, () => Promise.reject(new Error())), RangeError);
});

Deno.test("Job.progress() drops text lines, not percentages, when the session falls behind", () => {
  const j = job("p");
  for (let i = 0; i < MAX_PENDING_EVENTS + 50; i++) j.progress({ text: `line ${i}` });
  assert.equal(j.events.length, MAX_PENDING_EVENTS);
  assert.equal(j.droppedLines, 50);
  j.progress({ percent: 50 });
  assert.equal(j.percent, 50);
  assert.ok(j.events.length <= MAX_PENDING_EVENTS);
});

Deno.test("Job.summary() gives the queue view the seed describes", () => {
  const summary = job("s").summary();
  assert.equal(summary.job_id, "s");
  assert.equal(summary.status, "queued");
  assert.equal(summary.primary_file, "s.7");
  assert.equal(summary.file_count, 1);
  assert.equal(summary.input_dir, "job_s_input");
  assert.match(summary.submitted_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
});
