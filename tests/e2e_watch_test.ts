/**
 * `recon-client watch` end to end: a real recon-server and a real watcher as child
 * processes on 127.0.0.1, a temporary watch directory, and short delays from the
 * site's recon.opts (scan 0.3 s, stable after 0.8 s, grouping 0.5 s). Each file must
 * reach the server exactly once, whatever stops and restarts in between.
 *
 * The first start records the files already there as baseline (not sent) unless told
 * otherwise; a server that refuses the watcher's key stops it (exit 2) instead of
 * being retried.
 *
 * "Nothing more was sent" is checked with a marker scan written afterwards: once the
 * watcher has found it finished and sent it as a job of its own, it has scanned the
 * directory several times (the stability delay spans more than two scans) without
 * sending anything else.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import {
  delay,
  freePort,
  randomBytes,
  type Run,
  run,
  type RunResult,
  sha256File,
  sha256Hex,
  SlowRelay,
  type StatusDocument,
  waitFor,
  WatcherProcess,
  WatchServer,
  WatchSite,
} from "./support/e2e.ts";
import { generateKey } from "../lib/crypto/keys.ts";
import { lockPathFor } from "../lib/watch/lock.ts";

/**
 * Write the marker scan `name` and wait until the watcher has sent it and has its
 * results; returns the runs before it. The marker must be a job of its own.
 */
async function sendMarker(site: WatchSite, name = "marker.7"): Promise<Run[]> {
  const before = (await site.runs()).length;
  await Deno.writeFile(site.watched(name), randomBytes(1000));
  await site.waitForStatus(site.watched(name), "done");
  const runs = await site.runs();
  assert.deepEqual(runs.slice(before).map((run) => run.names), [[name]], "only the marker");
  return runs.slice(0, -1);
}

/** The `health` object of `--status --json` (docs/WATCH.md §12). */
interface HealthDocument {
  ok: boolean;
  exit_code: number;
  limits: { max_waiting_s: number | null; max_backoff_s: number | null };
  watcher: {
    running: boolean;
    pid: number | null;
    started_at: string | null;
    last_scan_at: string | null;
    list_error: string | null;
  };
  server: {
    unreachable_since: string;
    unreachable_s: number;
    failures: number;
    last_error: string;
  } | null;
  waiting: { count: number; over_limit: number; oldest: { path: string; age_s: number } | null };
  problems: { check: string; exit_code: number; message: string }[];
}

/**
 * `watch --status --json ARGS` with its exit code; the document's health agrees with
 * the exit code.
 */
async function health(
  site: WatchSite,
  args: string[] = [],
): Promise<{ code: number; document: StatusDocument & { health: HealthDocument } }> {
  const result = await site.client(["--status", "--json", ...args]);
  assert.ok([0, 10, 11, 12, 13].includes(result.code), `exit ${result.code}: ${result.stderr}`);
  const document = JSON.parse(result.stdout);
  assert.equal(document.health.exit_code, result.code, result.stdout);
  return { code: result.code, document };
}

/** `--status --json` while no watcher runs: exit 10, the first problem says so. */
async function statusStopped(
  site: WatchSite,
): Promise<StatusDocument & { health: HealthDocument }> {
  const { code, document } = await health(site);
  assert.equal(code, 10, JSON.stringify(document.health));
  assert.equal(document.health.problems[0].check, "not_running");
  assert.equal(document.watcher_running, false);
  return document;
}

/** The job phase of a file in `--status --json` (null unless submitted). */
function phaseOf(entry: StatusDocument["files"][number]): string | null {
  return (entry as { phase?: string | null }).phase ?? null;
}

/** A CLIENT_DAEMON_ON_COMPLETE that appends `JOB_ID RESULT_DIR` to hook.log in the site. */
async function writeHook(site: WatchSite): Promise<string> {
  const hook = path.join(site.dir, "on_complete.sh");
  await Deno.writeTextFile(
    hook,
    `#!/bin/sh\nprintf '%s %s\\n' "$1" "$2" >> "$(dirname "$0")/hook.log"\n`,
    { mode: 0o755 },
  );
  await Deno.writeTextFile(site.optsPath, `CLIENT_DAEMON_ON_COMPLETE = ${hook}\n`, {
    append: true,
  });
  return hook;
}

/** The lines hook.log holds so far. */
async function hookLines(site: WatchSite): Promise<string[]> {
  try {
    return (await Deno.readTextFile(path.join(site.dir, "hook.log"))).split("\n").filter(Boolean);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
}

Deno.test("watch sends a slowly written file once, only after it is stable, complete", async () => {
  await using site = await WatchSite.create();
  await using server = await WatchServer.start(site);
  await using watcher = await WatcherProcess.start(site, server.port);
  const file = site.watched("P00001.7");
  const chunks = Array.from({ length: 10 }, () => randomBytes(64 * 1024));
  using handle = await Deno.open(file, { write: true, create: true });
  for (const chunk of chunks) {
    await handle.write(chunk);
    await delay(100); // 1 s of writing; the stability delay is 0.8 s
  }
  const finishedAt = Date.now();
  handle.close();
  const whole = new Uint8Array(chunks.length * 64 * 1024);
  chunks.forEach((chunk, i) => whole.set(chunk, i * 64 * 1024));
  const expected = sha256Hex(whole);

  const [run] = await site.waitForRuns(1);
  await site.waitForStatus(file, "done");
  assert.equal((await sendMarker(site)).length, 1, "sent more than once");
  assert.deepEqual(run.names, ["P00001.7"]);
  assert.match(
    run.args,
    /--mode watch_test/,
    "CLIENT_DAEMON_RECON_OPTIONS_JSON reaches the script",
  );
  assert.equal((await site.resultSums(run.jobId)).get("P00001.7"), expected);
  const complete = /^(\S+) INFO .*P00001\.7 is complete/m.exec(watcher.stderr);
  assert.ok(complete, watcher.stderr);
  assert.ok(
    Date.parse(complete[1]) >= finishedAt,
    "the file was taken before the writer had finished",
  );
  assert.equal(watcher.count(/P00001\.7 is complete/), 1);
});

Deno.test("watch sends files written close together as one job and ignores other names", async () => {
  await using site = await WatchSite.create();
  await using server = await WatchServer.start(site);
  await using watcher = await WatcherProcess.start(site, server.port);
  await Deno.writeFile(site.watched("P00002.7"), randomBytes(100_000));
  await delay(150);
  await Deno.writeFile(site.watched("P00002_cal.7"), randomBytes(5_000));
  await Deno.writeTextFile(site.watched("notes.txt"), "not a scan\n");
  await Deno.writeTextFile(site.watched(".hidden.7"), "hidden\n");

  const [run] = await site.waitForRuns(1);
  assert.deepEqual(run.names, ["P00002.7", "P00002_cal.7"]);
  await site.waitForStatus(site.watched("P00002_cal.7"), "done");
  assert.equal((await sendMarker(site)).length, 1);
  const status = await site.status();
  const scans = status.files.filter((entry) => path.basename(entry.path) !== "marker.7");
  assert.deepEqual(
    scans.map((entry) => path.basename(entry.path)).sort(),
    ["P00002.7", "P00002_cal.7"],
  );
  assert.equal(new Set(scans.map((entry) => entry.job_id)).size, 1);
  assert.equal(status.watcher_running, true);
  const sums = await site.resultSums(run.jobId);
  assert.equal(sums.get("P00002.7"), await sha256File(site.watched("P00002.7")));
  assert.doesNotMatch(watcher.stderr, /notes\.txt|hidden/);
});

Deno.test("watch after a restart: nothing done is sent again, pending and new files are sent once", async () => {
  await using site = await WatchSite.create();
  let server = await WatchServer.start(site);
  const port = server.port;
  try {
    // 1. A file goes through.
    let watcher = await WatcherProcess.start(site, port);
    await Deno.writeFile(site.watched("A.7"), randomBytes(20_000));
    await site.waitForStatus(site.watched("A.7"), "done");

    // 2. The server goes away; a new file is recorded as pending; the watcher stops.
    await server.stop();
    await Deno.writeFile(site.watched("B.7"), randomBytes(20_000));
    await site.waitForStatus(site.watched("B.7"), "pending");
    await watcher.waitForStderr(/retried with backoff/);
    const stopped = await watcher.stop();
    assert.equal(stopped.status.code, 0, watcher.stderr);

    // 3. A file arrives while no watcher runs; the server comes back on the same port.
    await Deno.writeFile(site.watched("C.7"), randomBytes(20_000));
    server = await WatchServer.start(site, port);
    watcher = await WatcherProcess.start(site, port);
    try {
      await site.waitForStatus(site.watched("B.7"), "done");
      await site.waitForStatus(site.watched("C.7"), "done");
      const runs = await sendMarker(site);
      const sent = runs.flatMap((run) => run.names).sort();
      assert.deepEqual(sent, ["A.7", "B.7", "C.7"], "each file exactly once");
      assert.match(watcher.stderr, /1 file\(s\) from an earlier run are still to be sent: B\.7/);
    } finally {
      await watcher.stop();
    }
  } finally {
    await server.stop();
  }
});

Deno.test("watch waits for a server that is down at first and sends the job once it is up", async () => {
  await using site = await WatchSite.create();
  const port = freePort();
  await Deno.writeFile(site.watched("P00003.7"), randomBytes(30_000));
  await using watcher = await WatcherProcess.start(site, port, ["--submit-existing"]);
  await watcher.waitForStderr(
    /connection refused.*retried with backoff \(2 s doubling up to 300 s\)/,
  );
  await waitFor(
    "a second failed attempt",
    async () => (await site.status()).files[0].attempts >= 2,
    {
      timeoutMs: 20_000,
      intervalMs: 100,
    },
  );
  await using server = await WatchServer.start(site, port);
  await site.waitForStatus(site.watched("P00003.7"), "done");
  assert.equal((await sendMarker(site)).length, 1);
  // One line when the server went away and one when it came back, not one per attempt.
  assert.equal(watcher.count(/retried with backoff/), 1, watcher.stderr);
  assert.equal(watcher.count(/answers again after \d+ failed attempt/), 1, watcher.stderr);
  const status = await site.status();
  assert.ok(status.files[0].attempts >= 3, "it did retry");
  assert.equal(server.count(/job .*: queued/), 2, "the scan and the marker, once each");
});

Deno.test("watch records a job that fails on the server as failed, does not resend it, --retry does", async () => {
  await using site = await WatchSite.create();
  await using server = await WatchServer.start(site);
  await using watcher = await WatcherProcess.start(site, server.port);
  const file = site.watched("bad_scan.7");
  await Deno.writeFile(file, randomBytes(10_000));

  const failed = await site.waitForStatus(file, "failed");
  assert.match(failed.reason ?? "", /exited with code 3/);
  assert.match(failed.reason ?? "", /refusing a bad scan/);
  assert.ok(failed.job_id);
  assert.equal(
    (await sendMarker(site)).length,
    1,
    "a failed job must not be sent again by itself",
  );
  assert.match(watcher.stderr, new RegExp(`--retry ${failed.job_id}`));

  const text = await site.client(["--status"]);
  assert.equal(text.code, 0);
  assert.match(text.stdout, /^failed .*bad_scan\.7.*exited with code 3/m);

  // The site fixes the cause and resends by hand.
  await Deno.writeTextFile(path.join(site.dir, "allow_bad"), "");
  const retried = await site.client(["--retry", file]);
  assert.equal(retried.code, 0, retried.stderr);
  assert.match(retried.stdout, /bad_scan\.7: failed \(job .*\) -> pending/);
  assert.match(retried.stdout, /the running watcher sends them/);
  await site.waitForStatus(file, "done");
  const runs = (await site.runs()).filter((run) => run.names.includes("bad_scan.7"));
  assert.equal(runs.length, 2);
  assert.notEqual(runs[0].jobId, runs[1].jobId);
  assert.equal((await site.status()).counts.failed, 0);

  // Retrying something unknown is a usage error.
  const unknown = await site.client(["--retry", "no_such_scan.7"]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /no recorded file or job matches "no_such_scan\.7"/);
});

Deno.test("watch stopped (SIGTERM) during an upload resumes it at the next start: the rest goes, one job", async () => {
  await using site = await WatchSite.create();
  await using server = await WatchServer.start(site);
  await using relay = new SlowRelay(server.port, 1024 * 1024); // ~1 MiB/s up
  const file = site.watched("P00004.7");
  const bytes = randomBytes(6 * 1024 * 1024);
  await Deno.writeFile(file, bytes);
  const expected = sha256Hex(bytes);

  await using watcher = await WatcherProcess.start(site, relay.port, ["--submit-existing"]);
  await waitFor("the upload to be under way", () => relay.uploaded > 1024 * 1024, {
    timeoutMs: 60_000,
  });
  const named = await site.waitForStatus(file, "submitted");
  const id = named.job_id!;
  assert.equal(phaseOf(named), "uploading");
  const { status, ms } = await watcher.stop();
  assert.equal(status.code, 0, watcher.stderr);
  assert.ok(ms < 5000, `the watcher took ${ms} ms to stop`);
  assert.match(
    watcher.stderr,
    new RegExp(`the watcher stopped during the upload of job ${id}; the server keeps what arrived`),
  );
  // The server keeps the job and what arrived, for the watcher to come back.
  await server.waitForStderr(new RegExp(`job ${id}: upload cut off with \\d+ of 6291456 bytes`));
  const left = (await statusStopped(site)).files[0];
  assert.deepEqual([left.status, left.job_id, phaseOf(left)], ["submitted", id, "uploading"]);
  assert.equal((await site.runs()).length, 0);

  await using again = await WatcherProcess.start(site, server.port);
  const done = await site.waitForStatus(file, "done");
  assert.equal(done.job_id, id, "the same job, not a new one");
  const resumed = await server.waitForStderr(
    new RegExp(
      `job ${id}: resuming its upload: 1 of 1 file\\(s\\) to go, (\\d+) of 6291456 bytes held`,
    ),
  );
  assert.ok(Number(resumed[1]) > 0, "only the rest was sent");
  assert.equal(server.count(/: receiving 1 file\(s\)/), 1, "one submission");
  const runs = await sendMarker(site);
  assert.deepEqual(runs.map((run) => run.jobId), [id]);
  assert.equal((await site.resultSums(id)).get("P00004.7"), expected);
  assert.match(again.stderr, new RegExp(`job ${id}: resuming its upload \\(P00004\\.7\\)`));
});

Deno.test("watch: a file truncated and deleted during its upload: its job is cancelled on the server, the file skipped", async () => {
  await using site = await WatchSite.create();
  await using server = await WatchServer.start(site);
  // Socket buffers hold several MiB: the file must be much bigger than that for the
  // truncation to reach the reader before it is done.
  await using relay = new SlowRelay(server.port, 4 * 1024 * 1024);
  const file = site.watched("P00007.7");
  await Deno.writeFile(file, randomBytes(40 * 1024 * 1024));
  await using watcher = await WatcherProcess.start(site, relay.port, ["--submit-existing"]);
  await waitFor("the upload to be under way", () => relay.uploaded > 1024 * 1024, {
    timeoutMs: 60_000,
  });
  const id = (await site.waitForStatus(file, "submitted")).job_id!;
  await Deno.truncate(file, 1000);
  await Deno.remove(file);
  await watcher.waitForStderr(/sending P00007\.7 failed: .*changed while it was being sent/);
  await server.waitForStderr(new RegExp(`job ${id}: cancelled while receiving by `));
  const skipped = await site.waitForStatus(file, "skipped");
  assert.equal(skipped.job_id, null);
  await waitFor(
    "no job input directory on the server",
    async () => (await site.serverInputDirs()).length === 0,
  );
  assert.equal((await site.runs()).length, 0);
  assert.match(watcher.stderr, /P00007\.7 was deleted before it was sent; skipped/);
});

Deno.test("watch leaves a running job on the server at SIGTERM; the next start fetches its results, not running it again", async () => {
  await using site = await WatchSite.create();
  await using server = await WatchServer.start(site);
  await Deno.writeTextFile(path.join(site.dir, "slow_job"), "3");
  const file = site.watched("P00005.7");
  await Deno.writeFile(file, randomBytes(10_000));
  await using watcher = await WatcherProcess.start(site, server.port, ["--submit-existing"]);
  const [run] = await site.waitForRuns(1); // the script runs (and sleeps)
  await waitFor(
    "the running phase",
    async () => phaseOf((await site.status()).files[0]) === "running",
  );
  const { status, ms } = await watcher.stop();
  assert.equal(status.code, 0, watcher.stderr);
  assert.ok(ms < 5000, `the watcher took ${ms} ms to stop`);
  assert.match(
    watcher.stderr,
    new RegExp(`the watcher stopped while job ${run.jobId} was running; it goes on on the server`),
  );
  const left = (await statusStopped(site)).files[0];
  assert.deepEqual([left.status, left.job_id], ["submitted", run.jobId]);
  assert.equal(server.count(/cancel/), 0, server.stderr);

  await using again = await WatcherProcess.start(site, server.port);
  const done = await site.waitForStatus(file, "done");
  assert.equal(done.job_id, run.jobId);
  assert.deepEqual((await sendMarker(site)).map((entry) => entry.jobId), [run.jobId], "run once");
  assert.match(
    again.stderr,
    new RegExp(`job ${run.jobId}: following it again \\(P00005\\.7; it was running\\)`),
  );
});

Deno.test("watch SIGKILLed while the script runs: the restarted watcher fetches the job, never resubmits; results and hook once", async () => {
  await using site = await WatchSite.create();
  const hook = await writeHook(site);
  await using server = await WatchServer.start(site);
  await Deno.writeTextFile(path.join(site.dir, "slow_job"), "3");
  const file = site.watched("P00010.7");
  const bytes = randomBytes(50_000);
  await Deno.writeFile(file, bytes);
  let watcher = await WatcherProcess.start(site, server.port, ["--submit-existing"]);
  try {
    const [run] = await site.waitForRuns(1);
    await watcher.waitForStderr(new RegExp(`job ${run.jobId}: queued on the server`));
    const killed = await watcher.stop("SIGKILL");
    assert.equal(killed.status.signal, "SIGKILL");
    const left = (await statusStopped(site)).files[0];
    assert.equal(left.status, "submitted");
    assert.equal(left.job_id, run.jobId);

    watcher = await WatcherProcess.start(site, server.port);
    const done = await site.waitForStatus(file, "done");
    assert.equal(done.job_id, run.jobId);
    assert.equal((await site.resultSums(run.jobId)).get("P00010.7"), sha256Hex(bytes));
    assert.match(
      watcher.stderr,
      /1 job\(s\) of an earlier run are on the server; taking them up again/,
    );
    await waitFor("the hook to run", async () => (await hookLines(site)).length > 0);
    await Deno.remove(path.join(site.dir, "slow_job"));
    const runs = await sendMarker(site);
    assert.deepEqual(runs.map((entry) => entry.jobId), [run.jobId], "the script ran once");
    assert.equal(server.count(/: receiving 1 file\(s\)/), 2, "the scan and the marker, once each");
    const marker = (await site.status()).files.find((entry) => entry.path.endsWith("marker.7"));
    await waitFor("the marker's hook", async () => (await hookLines(site)).length === 2);
    assert.deepEqual(await hookLines(site), [
      `${run.jobId} ${path.join(site.downloadDir, run.jobId)}`,
      `${marker!.job_id} ${path.join(site.downloadDir, marker!.job_id!)}`,
    ], `${hook} ran once per job`);
  } finally {
    await watcher.stop();
  }
});

Deno.test("watch waits through a server restart (SIGKILL, started again on the same port): it reconnects and gets the results", async () => {
  await using site = await WatchSite.create();
  let server = await WatchServer.start(site);
  const port = server.port;
  await Deno.writeTextFile(path.join(site.dir, "slow_job"), "3");
  const file = site.watched("P00011.7");
  const bytes = randomBytes(50_000);
  await Deno.writeFile(file, bytes);
  await using watcher = await WatcherProcess.start(site, port, ["--submit-existing"]);
  try {
    const [run] = await site.waitForRuns(1);
    await waitFor(
      "the running phase",
      async () => phaseOf((await site.status()).files[0]) === "running",
    );
    const killed = await server.stop("SIGKILL");
    assert.equal(killed.status.signal, "SIGKILL");
    await Deno.remove(path.join(site.dir, "slow_job"));
    server = await WatchServer.start(site, port);
    const done = await site.waitForStatus(file, "done");
    assert.equal(done.job_id, run.jobId, "the same job");
    assert.equal((await site.resultSums(run.jobId)).get("P00011.7"), sha256Hex(bytes));
    assert.match(watcher.stderr, new RegExp(`job ${run.jobId}: connection lost`));
    assert.match(
      server.stderr,
      new RegExp(`job ${run.jobId}: was running when the server stopped; queued again`),
    );
    assert.equal(server.count(/: receiving \d+ file\(s\)/), 0, "not submitted again");
    // The server ran the script again after its restart (the job's second attempt).
    assert.deepEqual((await site.runs()).map((entry) => entry.jobId), [run.jobId, run.jobId]);
    assert.equal(watcher.count(/sending P00011\.7/), 1);
  } finally {
    await server.stop();
  }
});

Deno.test("watch runs CLIENT_DAEMON_ON_COMPLETE with the job id and result directory", async () => {
  const hookLog = "hook.log";
  await using site = await WatchSite.create();
  const hook = path.join(site.dir, "on_complete.sh");
  await Deno.writeTextFile(
    hook,
    `#!/bin/sh\nprintf '%s %s\\n' "$1" "$2" >> "$(dirname "$0")/${hookLog}"\n`,
    { mode: 0o755 },
  );
  await Deno.writeTextFile(site.optsPath, `CLIENT_DAEMON_ON_COMPLETE = ${hook}\n`, {
    append: true,
  });
  await using server = await WatchServer.start(site);
  await using watcher = await WatcherProcess.start(site, server.port);
  await Deno.writeFile(site.watched("P00006.7"), randomBytes(1000));
  const done = await site.waitForStatus(site.watched("P00006.7"), "done");
  const line = await waitFor("the hook to run", async () => {
    try {
      return (await Deno.readTextFile(path.join(site.dir, hookLog))).trim();
    } catch {
      return undefined;
    }
  });
  assert.equal(line, `${done.job_id} ${path.join(site.downloadDir, done.job_id!)}`);
  await watcher.waitForStderr(/CLIENT_DAEMON_ON_COMPLETE .* finished/);
});

Deno.test("watch: the first start records the files already there as baseline; --retry sends one; a later start takes none", async () => {
  await using site = await WatchSite.create();
  const old = [site.watched("old1.7"), site.watched("old2.7"), site.watched("old3.7")];
  for (const file of old) await Deno.writeFile(file, randomBytes(2_000));
  await using server = await WatchServer.start(site);
  let watcher = await WatcherProcess.start(site, server.port);
  try {
    await watcher.waitForStderr(
      /first start: 3 existing file\(s\) recorded as baseline, not sent \(use --submit-existing or --since TIME to send them/,
    );
    // New scans go; the old ones stay.
    assert.equal((await sendMarker(site)).length, 0, "nothing old was sent");
    const status = await site.status();
    assert.equal(status.counts.baseline, 3);
    assert.equal(
      status.files.filter((entry) => entry.status === "baseline").every((entry) =>
        entry.sha256 === null
      ),
      true,
    );
    const text = await site.client(["--status"]);
    assert.match(text.stdout, /^baseline: +3 file\(s\) already there at the first start/m);
    assert.doesNotMatch(text.stdout, /old1\.7/);

    // One old scan is wanted after all.
    const retried = await site.client(["--retry", "old2.7"]);
    assert.equal(retried.code, 0, retried.stderr);
    assert.match(retried.stdout, /old2\.7: baseline -> pending/);
    const done = await site.waitForStatus(old[1], "done");
    assert.equal(
      (await site.resultSums(done.job_id!)).get("old2.7"),
      await sha256File(old[1]),
    );
    await watcher.stop();

    // A later start, even with --since, takes no new baseline: a file written while
    // no watcher ran is sent.
    await Deno.writeFile(site.watched("between.7"), randomBytes(2_000));
    watcher = await WatcherProcess.start(site, server.port, ["--since", "30d"]);
    await site.waitForStatus(site.watched("between.7"), "done");
    assert.match(watcher.stderr, /--since is ignored: it applies to the first start only/);
    const runs = await sendMarker(site, "marker2.7");
    assert.deepEqual(
      runs.flatMap((run) => run.names).sort(),
      ["between.7", "marker.7", "old2.7"],
    );
  } finally {
    await watcher.stop();
  }
});

Deno.test("watch --since on the first start sends only the files modified since", async () => {
  await using site = await WatchSite.create();
  const recent = site.watched("recent.7");
  const ancient = site.watched("ancient.7");
  await Deno.writeFile(recent, randomBytes(1_000));
  await Deno.writeFile(ancient, randomBytes(1_000));
  const longAgo = new Date("2026-01-05T10:00:00Z");
  await Deno.utime(ancient, longAgo, longAgo);
  await using server = await WatchServer.start(site);
  await using watcher = await WatcherProcess.start(site, server.port, [
    "--since",
    "2026-02-01",
  ]);
  await site.waitForStatus(recent, "done");
  await watcher.waitForStderr(
    /first start: 1 existing file\(s\) modified since \S+ are sent; 1 older recorded as baseline/,
  );
  assert.deepEqual((await sendMarker(site)).flatMap((run) => run.names), ["recent.7"]);
  const status = await site.status();
  assert.equal(status.files.find((entry) => entry.path === ancient)?.status, "baseline");
});

Deno.test("watch --status shows a file still being written, and when it will count as complete", async () => {
  await using site = await WatchSite.create({ opts: { CLIENT_DAEMON_STABILITY_DELAY: "60" } });
  await using watcher = await WatcherProcess.start(site, freePort());
  await Deno.writeFile(site.watched("P00008.7"), randomBytes(5_000));
  const text = await waitFor("the file in --status", async () => {
    const result = await site.client(["--status"]);
    return /^writing .*P00008\.7 +being written, stable in \d+ s/m.test(result.stdout)
      ? result.stdout
      : undefined;
  });
  assert.doesNotMatch(text, /no files recorded yet$/m);
  assert.match(text, /no files recorded yet; 1 being written/);
  const document = JSON.parse((await site.client(["--status", "--json"])).stdout);
  assert.equal(document.being_written[0].path, site.watched("P00008.7"));
  assert.ok(document.being_written[0].stable_in_s > 30);
  assert.ok(watcher.running);
});

Deno.test("watch stops on a key the server refuses, says why in --status, and sends once the key is fixed", async () => {
  await using site = await WatchSite.create();
  await using server = await WatchServer.start(site);
  const opts = await Deno.readTextFile(site.optsPath);
  const rightKey = /^SHARED_KEY = (.*)$/m.exec(opts)![1];
  await Deno.writeTextFile(
    site.optsPath,
    opts.replace(/^SHARED_KEY = .*$/m, `SHARED_KEY = ${generateKey()}`),
  );
  await using watcher = WatcherProcess.spawn(site, server.port);
  const result = await watcher.result(30_000);
  assert.equal(result.code, 2, result.stderr);
  assert.equal(
    watcher.count(/does not accept key id [0-9a-f]{16}; the watcher stopped instead of retrying/),
    1,
    result.stderr,
  );
  assert.match(result.stderr, /SHARED_KEY in recon\.opts/);
  assert.doesNotMatch(result.stderr, /retried with backoff/);
  assert.ok(server.count(/unknown key id|key not accepted/) <= 1, server.stderr);

  const text = await site.client(["--status"]);
  assert.equal(text.code, 10, text.stderr);
  assert.match(
    text.stdout,
    /^watcher: +not running: stopped .* UTC: .*does not accept key id [0-9a-f]{16}/m,
  );
  assert.match(
    text.stdout,
    /^problem: +the watcher stopped by itself at .* UTC: .*does not accept key id/m,
  );
  const document = await statusStopped(site);
  assert.match(document.watcher_stopped?.reason ?? "", /does not accept key id/);

  // Fixed: a scan written meanwhile is sent at the next start, and the note is gone.
  await Deno.writeFile(site.watched("P00009.7"), randomBytes(3_000));
  await Deno.writeTextFile(
    site.optsPath,
    opts.replace(/^SHARED_KEY = .*$/m, `SHARED_KEY = ${rightKey}`),
  );
  await using again = await WatcherProcess.start(site, server.port);
  await site.waitForStatus(site.watched("P00009.7"), "done");
  assert.equal((await site.status()).watcher_stopped, null);
  assert.ok(again.running);
});

/** `promtool check metrics` on `text`: it must be valid exposition format, lint-clean. */
async function promtoolCheck(text: string): Promise<void> {
  let result: RunResult;
  try {
    result = await run("promtool", ["check", "metrics"], { stdin: text });
  } catch (error) {
    throw new Error(
      `promtool is needed (Debian package prometheus; scripts/ensure-test-deps): ${error}`,
    );
  }
  assert.equal(result.code, 0, `promtool check metrics:\n${result.stdout}${result.stderr}`);
}

Deno.test("watch --status exits 0 while a watcher runs and 10 once none does, also after a SIGKILL left its lock file", async () => {
  await using site = await WatchSite.create();
  await using server = await WatchServer.start(site);
  const statePath = path.join(site.dir, "recon-watch.sqlite");
  let watcher = await WatcherProcess.start(site, server.port);
  try {
    const running = await health(site);
    assert.equal(running.code, 0, JSON.stringify(running.document.health));
    assert.deepEqual(running.document.health.problems, []);
    assert.equal(running.document.health.watcher.running, true);
    assert.equal(running.document.health.watcher.pid, watcher.pid);
    assert.equal(running.document.health.server, null);
    const text = await site.client(["--status"]);
    assert.equal(text.code, 0, text.stdout);
    assert.match(text.stdout, /^health: +ok$/m);
    assert.doesNotMatch(text.stdout, /^problem:/m);
    const metrics = await site.client(["--status", "--prometheus"]);
    assert.equal(metrics.code, 0, metrics.stderr);
    assert.match(metrics.stdout, /^recon_watch_up\{state_file="[^"]+"\} 1$/m);
    assert.match(metrics.stdout, /^recon_watch_healthy\{state_file="[^"]+"\} 1$/m);
    await promtoolCheck(metrics.stdout);

    // A crash: the process is gone, its lock file and its pid in the state file stay.
    const killed = await watcher.stop("SIGKILL");
    assert.equal(killed.status.signal, "SIGKILL");
    await Deno.stat(lockPathFor(statePath));
    const document = await statusStopped(site);
    assert.match(
      document.health.problems[0].message,
      new RegExp(
        `^no watcher is running \\(the last one started at .* UTC as pid ${watcher.pid}\\)$`,
      ),
    );
    const stopped = await site.client(["--status"]);
    assert.equal(stopped.code, 10);
    assert.match(stopped.stdout, /^watcher: +not running \(last started .* UTC\)$/m);
    assert.match(stopped.stdout, /^health: +1 problem\(s\), exit 10$/m);
    assert.match(stopped.stdout, /^problem: +no watcher is running \(the last one started/m);
    const down = await site.client(["--status", "--prometheus"]);
    assert.equal(down.code, 10);
    assert.match(down.stdout, /^recon_watch_up\{state_file="[^"]+"\} 0$/m);
    assert.match(down.stdout, /^recon_watch_problem\{state_file="[^"]+",check="not_running"\} 1$/m);
    await promtoolCheck(down.stdout);
    assert.equal((await site.client(["--status", "--exit-zero"])).code, 0);

    // A SIGTERM is a stop too; a new start is healthy again.
    watcher = await WatcherProcess.start(site, server.port);
    assert.equal((await health(site)).code, 0);
    assert.equal((await watcher.stop()).status.code, 0);
    await statusStopped(site);
  } finally {
    await watcher.stop();
  }
});

Deno.test("watch --status exits 12 when the watcher has failed to reach the server for longer than --max-backoff, 13 for a file waiting too long, 10 first once it stops", async () => {
  await using site = await WatchSite.create();
  const port = freePort();
  const file = site.watched("P00010.7");
  await Deno.writeFile(file, randomBytes(10_000));
  let watcher = await WatcherProcess.start(site, port, ["--submit-existing"]);
  try {
    // Two failed attempts, the first of them two seconds ago or more.
    const backingOff = await waitFor("two failed attempts, 2 s apart or more", async () => {
      const { document } = await health(site);
      const server = document.health.server;
      return server && server.failures >= 2 && server.unreachable_s >= 2 ? document : undefined;
    }, { timeoutMs: 30_000, intervalMs: 200 });
    assert.match(backingOff.health.server!.last_error, /connection refused/);
    assert.equal(backingOff.health.waiting.count, 1);
    assert.equal(backingOff.health.waiting.oldest?.path, file);

    // Under the default limits (15 min, 60 min) that is no problem yet.
    const calm = await site.client(["--status"]);
    assert.equal(calm.code, 0, calm.stdout);
    assert.match(
      calm.stdout,
      /^server: +not reached since .* UTC \(\d+ s, \d+ failed attempt\(s\)\): .*connection refused; next attempt .* UTC$/m,
    );
    assert.match(calm.stdout, /^health: +ok$/m);

    const stuck = await health(site, ["--max-backoff", "1s"]);
    assert.equal(stuck.code, 12);
    assert.deepEqual(stuck.document.health.problems.map((p) => p.check), ["backoff"]);
    assert.match(
      stuck.document.health.problems[0].message,
      /^the watcher has not reached the server for \d+ s \(limit 1 s, \d+ failed attempt\(s\)\): .*connection refused/,
    );
    const both = await health(site, ["--max-backoff", "1s", "--max-waiting", "1"]);
    assert.equal(both.code, 12, "the lower code wins");
    assert.deepEqual(both.document.health.problems.map((p) => [p.check, p.exit_code]), [
      ["backoff", 12],
      ["waiting", 13],
    ]);
    const text = await site.client(["--status", "--max-backoff=1s", "--max-waiting=1"]);
    assert.equal(text.code, 12);
    assert.match(text.stdout, /^health: +2 problem\(s\), exit 12$/m);
    assert.match(text.stdout, /^problem: +the watcher has not reached the server for/m);
    assert.match(
      text.stdout,
      /^problem: +1 file\(s\) waiting longer than 1 s to reach the server; the oldest, .*P00010\.7, for \d+ s \(not sent yet\)$/m,
    );
    const waiting = await health(site, ["--max-backoff", "0", "--max-waiting", "1s"]);
    assert.equal(waiting.code, 13, "--max-backoff 0 turns that check off");
    assert.equal(waiting.document.health.limits.max_backoff_s, null);
    const metrics = await site.client(["--status", "--prometheus", "--max-waiting", "1s"]);
    assert.equal(metrics.code, 13);
    assert.match(metrics.stdout, /^recon_watch_server_unreachable_seconds\{[^}]+\} [1-9]\d*$/m);
    assert.match(metrics.stdout, /^recon_watch_oldest_waiting_seconds\{[^}]+\} [1-9]\d*$/m);
    assert.match(metrics.stdout, /^recon_watch_problem\{[^}]+,check="waiting"\} 1$/m);
    await promtoolCheck(metrics.stdout);

    // Stopped with the file still waiting: not running comes first, the file is listed too.
    assert.equal((await watcher.stop()).status.code, 0);
    const stopped = await health(site, ["--max-waiting", "1s"]);
    assert.deepEqual(stopped.document.health.problems.map((p) => p.check), [
      "not_running",
      "waiting",
    ]);
    assert.equal(stopped.code, 10);
    assert.equal(stopped.document.health.server, null, "only a running watcher's backoff counts");

    // The server comes up: the file goes, and nothing is wrong even with tight limits.
    await using server = await WatchServer.start(site, port);
    watcher = await WatcherProcess.start(site, port);
    await site.waitForStatus(file, "done");
    const healthy = await waitFor("the server note to be cleared", async () => {
      const result = await health(site, ["--max-backoff", "1s", "--max-waiting", "1s"]);
      return result.code === 0 ? result : undefined;
    }, { timeoutMs: 10_000, intervalMs: 100 });
    assert.equal(healthy.document.health.server, null);
    assert.equal(healthy.document.health.waiting.count, 0);
    assert.equal(server.count(/job .*: queued/), 1);
  } finally {
    await watcher.stop();
  }
});

Deno.test("watch --status shows a watch directory the running watcher cannot list, and that it can again", async () => {
  await using site = await WatchSite.create();
  await using watcher = await WatcherProcess.start(site, freePort());
  const moved = `${site.watchDir}.away`;
  await Deno.rename(site.watchDir, moved);
  const gone = await waitFor("the listing problem in --status", async () => {
    const { code, document } = await health(site);
    const listError = document.health.watcher.list_error;
    return listError ? { code, listError } : undefined;
  }, { timeoutMs: 10_000, intervalMs: 100 });
  assert.match(gone.listError, /no such file or directory/);
  assert.equal(gone.code, 0, "a problem only after 10 minutes without a complete scan");
  const text = await site.client(["--status"]);
  assert.match(text.stdout, /^directory: +cannot be listed: no such file or directory$/m);
  await watcher.waitForStderr(/cannot list .*: no such file or directory/);

  await Deno.rename(moved, site.watchDir);
  await waitFor("the listing problem to be cleared", async () => {
    const { document } = await health(site);
    return document.health.watcher.list_error === null;
  }, { timeoutMs: 10_000, intervalMs: 100 });
  await watcher.waitForStderr(/can be listed again/);
});
