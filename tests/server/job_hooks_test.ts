/**
 * Tests for lib/server/job_hooks.ts with real processes: the argv and environment of
 * ON_JOB_END and ON_DELIVERY_FAILED, failures logged with the last stderr line,
 * HOOK_TIMEOUT killing the whole process group, a program that cannot run logged once
 * per cause, at most 4 at once with a bounded queue, and close() bounded.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { JobHooks, MAX_QUEUED_HOOKS, MAX_RUNNING_HOOKS } from "../../lib/server/job_hooks.ts";
import type { JobRecord, StoreChange } from "../../lib/server/job_store.ts";
import { memoryLog } from "../support/memory_log.ts";
import { pgrep, waitFor } from "../support/e2e.ts";

async function tempDir(): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "recon-hooks-" });
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

async function hookScript(dir: string, name: string, body: string): Promise<string> {
  const file = path.join(dir, name);
  await Deno.writeTextFile(file, `#!/bin/sh\n${body}`, { mode: 0o755 });
  return file;
}

/** A hook that writes its argv ("arg X" lines) and RECON_* variables to DIR/<job id>.txt. */
function recorder(dir: string): string {
  return `{ printf 'arg %s\\n' "$@"; env | grep '^RECON_' | sort; } > '${dir}/'"$RECON_JOB_ID.txt"\n`;
}

function job(fields: Partial<JobRecord> = {}): JobRecord {
  return {
    seq: 1,
    id: crypto.randomUUID(),
    state: "succeeded",
    priority: "normal",
    client: "mr1",
    peer: "127.0.0.1:5000",
    keyId: "k1",
    options: {},
    submittedAt: 0,
    attempts: 1,
    stderrTail: [],
    inputDir: "/srv/recon/job_input",
    outputDir: "/srv/dicom/job_output",
    logPath: "/srv/recon/job.log",
    fileCount: 1,
    inputBytes: 10,
    primaryFile: "P00042.7",
    inputsRemoved: true,
    resultsRemoved: false,
    executor: "local",
    deliverTo: [],
    ...fields,
  };
}

/** A marker no other process has on its command line: `sleep <marker>` finds it with pgrep. */
function marker(): string {
  return `1000.${crypto.getRandomValues(new Uint32Array(1))[0]}`;
}

Deno.test("ON_JOB_END gets JOB_ID STATE CLIENT RESULT_DIR and the RECON_* variables", async () => {
  await using temp = await tempDir();
  const { lines, log } = memoryLog();
  const program = await hookScript(temp.dir, "hook", recorder(temp.dir));
  const hooks = new JobHooks({ onJobEnd: program, timeoutMs: 10_000, log });
  const succeeded = job({ exitCode: 0, resultCount: 32 });
  const failed = job({ state: "failed", exitCode: 3, reason: "the script exited with code 3" });
  hooks.jobEnded(succeeded);
  hooks.jobEnded(failed);
  await hooks.close(10_000);
  assert.equal(
    await Deno.readTextFile(path.join(temp.dir, `${succeeded.id}.txt`)),
    [
      `arg ${succeeded.id}`,
      "arg succeeded",
      "arg mr1",
      "arg /srv/dicom/job_output",
      "RECON_CLIENT=mr1",
      "RECON_EXIT_CODE=0",
      `RECON_JOB_ID=${succeeded.id}`,
      "RECON_JOB_STATE=succeeded",
      "RECON_REASON=",
      "RECON_RESULT_COUNT=32",
      "RECON_RESULT_DIR=/srv/dicom/job_output",
      "",
    ].join("\n"),
  );
  assert.equal(
    await Deno.readTextFile(path.join(temp.dir, `${failed.id}.txt`)),
    [
      `arg ${failed.id}`,
      "arg failed",
      "arg mr1",
      "arg ", // a failed job's output directory is gone: RESULT_DIR is empty
      "RECON_CLIENT=mr1",
      "RECON_EXIT_CODE=3",
      `RECON_JOB_ID=${failed.id}`,
      "RECON_JOB_STATE=failed",
      "RECON_REASON=the script exited with code 3",
      "RECON_RESULT_COUNT=",
      "RECON_RESULT_DIR=",
      "",
    ].join("\n"),
  );
  assert.deepEqual(lines.filter((line) => !line.startsWith("debug")), [], "nothing to warn about");
});

Deno.test("ON_DELIVERY_FAILED gets JOB_ID DESTINATION REASON and RECON_DESTINATION", async () => {
  await using temp = await tempDir();
  const { log } = memoryLog();
  const program = await hookScript(temp.dir, "hook", recorder(temp.dir));
  const hooks = new JobHooks({ onDeliveryFailed: program, timeoutMs: 10_000, log });
  const record = job({ exitCode: 0, resultCount: 2 });
  hooks.jobEnded(record); // no ON_JOB_END: nothing runs
  hooks.deliveryFailed(record, "PACS", "association rejected: called AE title not recognized");
  await hooks.close(10_000);
  const text = await Deno.readTextFile(path.join(temp.dir, `${record.id}.txt`));
  assert.deepEqual(text.split("\n").slice(0, 3), [
    `arg ${record.id}`,
    "arg PACS",
    "arg association rejected: called AE title not recognized",
  ]);
  assert.match(text, /^RECON_DESTINATION=PACS$/m);
  assert.match(text, /^RECON_REASON=association rejected: called AE title not recognized$/m);
  assert.match(text, /^RECON_RESULT_DIR=\/srv\/dicom\/job_output$/m);
});

Deno.test("follow() runs ON_JOB_END once for each job that reaches succeeded, failed or cancelled", async () => {
  await using temp = await tempDir();
  const { log } = memoryLog();
  const program = await hookScript(
    temp.dir,
    "hook",
    `echo "$1 $2" >> '${temp.dir}/runs'\n`,
  );
  const hooks = new JobHooks({ onJobEnd: program, timeoutMs: 10_000, log });
  let listener: ((change: StoreChange) => void) | undefined;
  const unsubscribe = hooks.follow({
    onChange: (l) => {
      listener = l;
      return () => (listener = undefined);
    },
  });
  const changes: [Partial<JobRecord>, StoreChange["from"], StoreChange["what"]][] = [
    [{ id: "a", state: "queued" }, "receiving", "state"],
    [{ id: "a", state: "running" }, "queued", "state"],
    [{ id: "a", state: "succeeded" }, "running", "state"],
    [{ id: "a", state: "succeeded" }, "succeeded", "delivered"],
    [{ id: "a", state: "expired" }, "succeeded", "state"],
    [{ id: "b", state: "failed" }, "receiving", "state"],
    [{ id: "b", state: "failed" }, "failed", "inputs_removed"],
    [{ id: "c", state: "cancelled" }, "queued", "state"],
    [{ id: "d", state: "queued" }, "running", "state"], // a restart queues it again
  ];
  for (const [fields, from, what] of changes) listener!({ job: job(fields), from, what });
  unsubscribe();
  assert.equal(listener, undefined);
  await hooks.close(10_000);
  const runs = (await Deno.readTextFile(path.join(temp.dir, "runs"))).trim().split("\n");
  assert.deepEqual(runs.sort(), ["a succeeded", "b failed", "c cancelled"]);
});

Deno.test("a hook exiting non-zero is logged with the last line of its stderr", async () => {
  await using temp = await tempDir();
  const { lines, log } = memoryLog();
  const program = await hookScript(
    temp.dir,
    "hook",
    "echo 'first line' >&2\necho 'sendmail: cannot reach the relay' >&2\necho '' >&2\nexit 3\n",
  );
  const signalled = await hookScript(temp.dir, "signalled", "kill -SEGV $$\n");
  const hooks = new JobHooks({
    onJobEnd: program,
    onDeliveryFailed: signalled,
    timeoutMs: 10_000,
    log,
  });
  const record = job();
  hooks.jobEnded(record);
  hooks.deliveryFailed(record, "PACS", "timeout");
  await hooks.close(10_000);
  assert.deepEqual(lines.filter((line) => !line.startsWith("debug")).sort(), [
    `warn ON_DELIVERY_FAILED ${signalled} was killed by SIGSEGV for job ${record.id} (destination PACS)`,
    `warn ON_JOB_END ${program} exited 3 for job ${record.id}: sendmail: cannot reach the relay`,
  ]);
});

Deno.test("HOOK_TIMEOUT kills the hook's whole process group, a child it started too", async () => {
  await using temp = await tempDir();
  const { lines, log } = memoryLog();
  const sleep = marker();
  const program = await hookScript(
    temp.dir,
    "hook",
    `echo 'waiting for the relay' >&2\nsleep ${sleep} &\nsleep ${sleep}\n`,
  );
  const hooks = new JobHooks({ onJobEnd: program, timeoutMs: 500, log });
  const record = job();
  const started = Date.now();
  hooks.jobEnded(record);
  await waitFor("the hook's two sleeps", async () => (await pgrep(sleep)).length === 2);
  await hooks.close(30_000); // returns once the hook ended: at HOOK_TIMEOUT
  const elapsed = Date.now() - started;
  assert.ok(elapsed >= 500 && elapsed < 5000, `ended soon after HOOK_TIMEOUT (${elapsed} ms)`);
  assert.deepEqual(await pgrep(sleep), [], "nothing of the hook is left");
  assert.deepEqual(lines, [
    `warn ON_JOB_END ${program} ran longer than HOOK_TIMEOUT (0.5 s) and was killed for job ${record.id}: waiting for the relay`,
  ]);
});

Deno.test("a hook that ignores SIGTERM is killed with SIGKILL after the grace period", async () => {
  await using temp = await tempDir();
  const { lines, log } = memoryLog();
  const sleep = marker();
  const program = await hookScript(temp.dir, "hook", `trap '' TERM\nsleep ${sleep}\n`);
  const hooks = new JobHooks({ onJobEnd: program, timeoutMs: 300, killGraceMs: 300, log });
  hooks.jobEnded(job());
  await waitFor("the hook's sleep", async () => (await pgrep(sleep)).length === 1);
  await hooks.close(30_000);
  assert.deepEqual(await pgrep(sleep), []);
  assert.equal(lines.length, 1);
  assert.match(lines[0], /ran longer than HOOK_TIMEOUT \(0\.3 s\) and was killed for job/);
});

Deno.test("a missing or non-executable program is logged once per cause, never thrown", async () => {
  await using temp = await tempDir();
  const { lines, log } = memoryLog();
  const missing = path.join(temp.dir, "no-such-hook");
  const plain = path.join(temp.dir, "not-executable.sh");
  await Deno.writeTextFile(plain, "#!/bin/sh\nexit 0\n", { mode: 0o644 });
  const hooks = new JobHooks({
    onJobEnd: missing,
    onDeliveryFailed: plain,
    timeoutMs: 10_000,
    log,
  });
  assert.deepEqual(await hooks.problems(), [
    `ON_JOB_END ${missing} does not exist; fix ON_JOB_END in recon.opts`,
    `ON_DELIVERY_FAILED ${plain} is not executable (chmod +x it); fix ON_DELIVERY_FAILED in recon.opts`,
  ]);
  const first = job();
  for (let i = 0; i < 5; i++) {
    hooks.jobEnded(i === 0 ? first : job());
    hooks.deliveryFailed(i === 0 ? first : job(), "PACS", "timeout");
    await delay(20);
  }
  await hooks.close(10_000);
  assert.deepEqual(lines.sort(), [
    `warn ON_DELIVERY_FAILED ${plain} is not executable (chmod +x it) (job ${first.id} (destination PACS)); fix ON_DELIVERY_FAILED in recon.opts; logged once per 10 minutes`,
    `warn ON_JOB_END ${missing} does not exist (job ${first.id}); fix ON_JOB_END in recon.opts; logged once per 10 minutes`,
  ]);
});

Deno.test(`at most ${MAX_RUNNING_HOOKS} hooks run at once; the others wait their turn`, async () => {
  await using temp = await tempDir();
  const { lines, log } = memoryLog();
  const go = path.join(temp.dir, "go");
  const runs = path.join(temp.dir, "runs");
  const program = await hookScript(
    temp.dir,
    "hook",
    `echo "start $1" >> '${runs}'\n` +
      `i=0; while [ ! -e '${go}' ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done\n` +
      `echo "end $1" >> '${runs}'\n`,
  );
  const hooks = new JobHooks({ onJobEnd: program, timeoutMs: 30_000, log });
  const jobs = Array.from({ length: MAX_RUNNING_HOOKS + 3 }, () => job());
  for (const record of jobs) hooks.jobEnded(record);
  const read = async () => (await Deno.readTextFile(runs).catch(() => "")).trim().split("\n");
  await waitFor("4 hooks to start", async () => (await read()).length === MAX_RUNNING_HOOKS);
  await delay(300);
  assert.equal((await read()).length, MAX_RUNNING_HOOKS, "the others wait");
  await Deno.writeTextFile(go, "");
  await waitFor("every hook to end", async () => (await read()).length === 2 * jobs.length);
  const ran = await read();
  for (const record of jobs) {
    assert.ok(ran.includes(`start ${record.id}`) && ran.includes(`end ${record.id}`));
  }
  await hooks.close(10_000);
  assert.deepEqual(lines.filter((line) => !line.startsWith("debug")), []);
});

Deno.test("a full queue drops the run with one line; close() drops what is queued", async () => {
  const { lines, log } = memoryLog();
  // Held: nothing starts, every run queues.
  const hooks = new JobHooks({ onJobEnd: "/bin/true", timeoutMs: 10_000, log, held: true });
  for (let i = 0; i < MAX_QUEUED_HOOKS; i++) hooks.jobEnded(job());
  assert.deepEqual(lines, []);
  const dropped = [job(), job(), job()];
  for (const record of dropped) hooks.jobEnded(record);
  assert.deepEqual(lines, [
    `warn ON_JOB_END not run for job ${
      dropped[0].id
    }: ${MAX_QUEUED_HOOKS} hook runs are waiting already (${MAX_RUNNING_HOOKS} run at once); are the hooks slow or hanging?; logged once per 10 minutes`,
  ]);
  await hooks.close(0);
  assert.equal(
    lines.at(-1),
    `warn ${MAX_QUEUED_HOOKS} queued hook run(s) dropped: the server is stopping`,
  );
  hooks.jobEnded(job()); // closed: ignored
  hooks.release();
  assert.equal(lines.length, 2);
});

Deno.test("held hooks start on release()", async () => {
  await using temp = await tempDir();
  const { log } = memoryLog();
  const program = await hookScript(temp.dir, "hook", recorder(temp.dir));
  const hooks = new JobHooks({ onJobEnd: program, timeoutMs: 10_000, log, held: true });
  const record = job();
  hooks.jobEnded(record);
  await delay(200);
  await assert.rejects(Deno.stat(path.join(temp.dir, `${record.id}.txt`)), Deno.errors.NotFound);
  hooks.release();
  await hooks.close(10_000);
  await Deno.stat(path.join(temp.dir, `${record.id}.txt`));
});

Deno.test("close() waits for running hooks up to its bound, then kills their groups", async () => {
  await using temp = await tempDir();
  const { lines, log } = memoryLog();
  const sleep = marker();
  const quick = path.join(temp.dir, "quick-done");
  const program = await hookScript(
    temp.dir,
    "hook",
    `if [ "$2" = succeeded ]; then sleep 0.3; touch '${quick}'; else sleep ${sleep} & sleep ${sleep}; fi\n`,
  );
  const hooks = new JobHooks({ onJobEnd: program, timeoutMs: 60_000, log });
  const hanging = job({ state: "failed" });
  hooks.jobEnded(job());
  hooks.jobEnded(hanging);
  await waitFor("the hanging hook's sleeps", async () => (await pgrep(sleep)).length === 2);
  const started = Date.now();
  await hooks.close(1000);
  const elapsed = Date.now() - started;
  assert.ok(elapsed >= 900 && elapsed < 4000, `close() took ${elapsed} ms`);
  await Deno.stat(quick); // the quick one finished within the bound
  assert.deepEqual(await pgrep(sleep), [], "the hanging one was killed with its child");
  assert.deepEqual(lines.filter((line) => !line.startsWith("debug")), [
    `warn ON_JOB_END ${program} was stopped: the server is shutting down for job ${hanging.id}`,
  ]);
});

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
