/**
 * End to end, durable jobs (issue 13; docs/PROTOCOL.md §5.1, §6.6–§6.9): a job outlives
 * its connection and the server process. Real `bin/recon-server` and `bin/recon-client`
 * processes on 127.0.0.1:
 *
 * - the server SIGKILLed while a job's script runs: started again on the same port, it
 *   runs the job again and the client that was waiting all along gets the results;
 * - `--detach`, a restart, `fetch` (twice, and into the same directory again), and the
 *   expiry of the results after RESULT_RETENTION;
 * - a 200 MB upload cut at 100 MB by a relay: the client resumes it by itself and the
 *   bytes sent stay under 1.2 × the file;
 * - `cancel` of a queued and of a running job (no process of its script survives);
 * - priorities with MAX_CONCURRENT_JOBS = 1, `jobs --json` with queue positions;
 * - `logs`, `rerun` of a failed job without another upload, and a corrupt job store
 *   that keeps the server from starting and touches no input.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import {
  CLIENT_BIN,
  E2EServer,
  listDir,
  randomBytes,
  run,
  SERVER_BIN,
  sha256File,
  tempDir,
  UUID,
  waitFor,
  writeRandomFile,
} from "./support/e2e.ts";
import {
  CuttingRelay,
  jobInfo,
  killAll,
  listJobs,
  processAlive,
  startedJobs,
  sumsLine,
  writeDurableScript,
} from "./support/durable.ts";

const QUEUED = new RegExp(`job (${UUID.source}) queued`);
const MIB = 1024 * 1024;

/** The job id a `--detach` run printed: its whole stdout, one line. */
function detachedId(result: { code: number; stdout: string; stderr: string }): string {
  assert.equal(result.code, 0, `--detach failed:\n${result.stderr}`);
  assert.match(result.stdout, new RegExp(`^${UUID.source}\n$`), "--detach prints only the job id");
  return result.stdout.trim();
}

/** Whether `file` exists (without following a last link). */
async function exists(file: string): Promise<boolean> {
  try {
    await Deno.lstat(file);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

Deno.test("a server SIGKILLed while a job runs runs it again at its next start; the waiting client gets the results, exit 0", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({
    script,
    options: { CLIENT_RECONNECT_TIMEOUT: 60, JOB_MAX_ATTEMPTS: 2 },
  });
  const input = path.join(files.path, "P00001.7");
  const inputSum = await writeRandomFile(input, 4 * MIB);
  const download = path.join(files.path, "downloads");
  await using client = server.spawnClient([
    "--files",
    input,
    "--download-dir",
    download,
    "--recon-options",
    JSON.stringify({ sleep: 3, copy: 1 }),
  ]);
  const id = (await client.waitForStderr(QUEUED))[1];
  await waitFor("the script to start", async () => (await startedJobs(files.path)).length === 1);
  const { status } = await server.stop("SIGKILL");
  assert.equal(status.signal, "SIGKILL");

  await server.restart();
  const result = await client.result(30_000);
  assert.equal(result.code, 0, `the client that waited through the restart:\n${result.stderr}`);
  assert.match(server.log, new RegExp(`job ${id}: stopped its script \\(process group \\d+\\)`));
  assert.match(
    server.log,
    new RegExp(`job ${id}: was running when the server stopped; queued again \\(attempt 1 of 2`),
  );
  const jobDir = path.join(download, id);
  assert.equal(
    await Deno.readTextFile(path.join(jobDir, "sums.txt")),
    sumsLine(inputSum, "P00001.7"),
  );
  assert.equal(await sha256File(path.join(jobDir, "copy_P00001.7")), inputSum);
  assert.deepEqual(
    result.stdout.trim().split("\n").sort(),
    [
      path.join(jobDir, "copy_P00001.7"),
      path.join(jobDir, "provenance.json"),
      path.join(jobDir, "sums.txt"),
    ],
    "stdout lists the downloaded files",
  );
  assert.deepEqual(await startedJobs(files.path), [id, id], "the script ran twice, no more");
  const job = await jobInfo(server, id);
  assert.equal(job.state, "succeeded");
  assert.equal(job.attempts, 2);
});

Deno.test("a job cut off by a SIGKILL at each of its JOB_MAX_ATTEMPTS runs fails: 'the server stopped while it was running', exit 1", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({
    script,
    options: { CLIENT_RECONNECT_TIMEOUT: 60, JOB_MAX_ATTEMPTS: 2 },
  });
  const input = path.join(files.path, "P00008.7");
  await Deno.writeTextFile(input, "raw");
  await using client = server.spawnClient([
    "--files",
    input,
    "--recon-options",
    JSON.stringify({ sleep: 30 }),
  ]);
  const id = (await client.waitForStderr(QUEUED))[1];
  await waitFor("the first run", async () => (await startedJobs(files.path)).length === 1);
  await server.stop("SIGKILL");
  await server.restart();
  await waitFor("the second run", async () => (await startedJobs(files.path)).length === 2);
  await server.stop("SIGKILL");
  await server.restart();
  assert.match(
    server.log,
    new RegExp(
      `job ${id}: failed: the server stopped while it was running \\(attempt 2 of 2, JOB_MAX_ATTEMPTS\\)`,
    ),
  );
  const result = await client.result(30_000);
  assert.equal(result.code, 1, result.stderr);
  assert.match(result.stderr, /the server stopped while it was running/);
  assert.equal(result.stdout, "");
  assert.deepEqual(await startedJobs(files.path), [id, id], "no third run");
  const job = await jobInfo(server, id);
  assert.equal(job.state, "failed");
  assert.equal(job.attempts, 2);
  assert.equal(job.reason, "the server stopped while it was running");
  assert.ok(job.inputs_expire_at, "its inputs are kept for a re-run");
});

Deno.test("--detach prints the job id; after a restart fetch gets the results, again, until RESULT_RETENTION removes them", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  const retention = 10;
  await using server = await E2EServer.start({
    script,
    options: { RESULT_RETENTION: retention },
  });
  const input = path.join(files.path, "P00002.7");
  const inputSum = await writeRandomFile(input, 1 * MIB);
  const id = detachedId(await server.client(["--files", input, "--detach"]));

  const waited = await server.client(["wait", id], { timeoutMs: 20_000 });
  assert.equal(waited.code, 0, waited.stderr);
  const outputDir = path.join(server.dicomDir, `job_${id}_output`);
  assert.ok(await exists(outputDir), "the server keeps the results");

  const { status } = await server.stop("SIGTERM");
  assert.equal(status.code, 0);
  await server.restart();

  const expected = sumsLine(inputSum, "P00002.7");
  for (const name of ["first", "second"]) {
    const dir = path.join(files.path, name);
    const fetched = await server.client(["fetch", id, "--download-dir", dir]);
    assert.equal(fetched.code, 0, `fetch into ${name}:\n${fetched.stderr}`);
    assert.equal(await Deno.readTextFile(path.join(dir, id, "sums.txt")), expected);
    assert.equal(
      fetched.stdout,
      `${path.join(dir, id, "provenance.json")}\n${path.join(dir, id, "sums.txt")}\n`,
    );
  }
  // Into a directory that already holds the results: checked in place, not sent again.
  const firstDir = path.join(files.path, "first");
  const first = path.join(firstDir, id, "sums.txt");
  const again = await server.client(["fetch", id, "--download-dir", firstDir]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, new RegExp(`already in .*${id}, verified`));
  assert.equal(again.stdout, `${path.join(firstDir, id, "provenance.json")}\n${first}\n`);
  assert.equal(await Deno.readTextFile(first), expected);
  assert.deepEqual(await listDir(path.join(firstDir, id)), ["provenance.json", "sums.txt"]);
  // A file there that differs from the server's result is never overwritten.
  await Deno.writeTextFile(first, "edited by hand\n");
  const differs = await server.client(["fetch", id, "--download-dir", firstDir]);
  assert.notEqual(differs.code, 0, differs.stderr);
  assert.match(differs.stderr, /differs/);
  assert.equal(await Deno.readTextFile(first), "edited by hand\n");

  await waitFor("the sweeper to remove the expired results", async () => !await exists(outputDir), {
    timeoutMs: (retention + 15) * 1000,
    intervalMs: 200,
  });
  const expired = await server.client([
    "fetch",
    id,
    "--download-dir",
    path.join(files.path, "late"),
  ]);
  assert.equal(expired.code, 1, expired.stderr);
  assert.match(
    expired.stderr,
    new RegExp(
      `job ${id} expired on \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d(\\.\\d+)?Z, its results were removed`,
    ),
  );
  assert.equal(expired.stdout, "");
  assert.equal(await exists(path.join(files.path, "late", id, "sums.txt")), false);
  assert.equal((await jobInfo(server, id)).state, "expired");
});

Deno.test("a 200 MB upload cut at 100 MB resumes by itself; the bytes sent stay under 1.2 × the file", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({
    script,
    options: { CLIENT_RECONNECT_TIMEOUT: 60 },
  });
  const size = 200 * MIB;
  const input = path.join(files.path, "P00003.7");
  const inputSum = await writeRandomFile(input, size);
  await using relay = new CuttingRelay(server.port, { cutAfter: size / 2 });
  const download = path.join(files.path, "downloads");
  const result = await run(CLIENT_BIN, [
    "--opts",
    server.optsPath,
    "--port",
    String(relay.port),
    "--files",
    input,
    "--download-dir",
    download,
  ], { timeoutMs: 60_000 });
  assert.equal(result.code, 0, result.stderr);
  assert.ok(relay.cut, "the relay cut the upload");
  assert.ok(relay.connections >= 2, "the client connected again");
  const id = QUEUED.exec(result.stderr)?.[1];
  assert.ok(id, result.stderr);
  assert.equal(
    await Deno.readTextFile(path.join(download, id, "sums.txt")),
    sumsLine(inputSum, "P00003.7"),
    "the script saw the whole file",
  );
  assert.ok(
    relay.toServer < 1.2 * size,
    `${relay.toServer} bytes went to the server for a ${size}-byte file`,
  );
  const jobs = await listJobs(server);
  assert.deepEqual(
    jobs.map((job) => [job.job_id, job.state]),
    [[id, "succeeded"]],
    "one job, never submitted twice",
  );
  await Deno.remove(input);
});

Deno.test("a 60 MB result download cut at 30 MB resumes by itself from the verified bytes; the server keeps serving", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({
    script,
    options: { CLIENT_RECONNECT_TIMEOUT: 60 },
  });
  const size = 60 * MIB;
  const input = path.join(files.path, "P00009.7");
  const inputSum = await writeRandomFile(input, size);
  const id = detachedId(
    await server.client([
      "--files",
      input,
      "--detach",
      "--recon-options",
      JSON.stringify({ copy: 1 }),
    ]),
  );
  const waited = await server.client(["wait", id]);
  assert.equal(waited.code, 0, waited.stderr);
  await using relay = new CuttingRelay(server.port, { cutDownloadAfter: size / 2 });
  const download = path.join(files.path, "downloads");
  const result = await run(CLIENT_BIN, [
    "--opts",
    server.optsPath,
    "--port",
    String(relay.port),
    "fetch",
    id,
    "--download-dir",
    download,
  ], { timeoutMs: 60_000 });
  assert.equal(result.code, 0, result.stderr);
  assert.ok(relay.cut, "the relay cut the download");
  assert.ok(relay.connections >= 2, "the client connected again");
  assert.equal(await sha256File(path.join(download, id, "copy_P00009.7")), inputSum);
  assert.equal(
    await Deno.readTextFile(path.join(download, id, "sums.txt")),
    sumsLine(inputSum, "P00009.7"),
  );
  assert.ok(
    relay.toClient < 1.2 * size,
    `${relay.toClient} bytes came from the server for ${size} bytes of results`,
  );
  assert.deepEqual(
    server.log.split("\n").filter((line) => /internal error/.test(line)),
    [],
    "the cut caused no error inside the server",
  );
});

Deno.test("cancel of a queued and of a running job: no process of the script survives; a second cancel says it is already cancelled", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({ script, options: { MAX_CONCURRENT_JOBS: 1 } });
  const input = path.join(files.path, "P00004.7");
  await Deno.writeTextFile(input, "raw");
  const pidFile = path.join(files.path, "pids");
  let pids: number[] = [];
  try {
    const running = detachedId(
      await server.client([
        "--files",
        input,
        "--detach",
        "--recon-options",
        JSON.stringify({ spawn: pidFile }),
      ]),
    );
    pids = await waitFor("the script's pid file", async () => {
      const text = await Deno.readTextFile(pidFile).catch(() => "");
      return text.endsWith("\n") ? text.trim().split(" ").map(Number) : undefined;
    });
    assert.equal(pids.length, 2);
    const queued = detachedId(await server.client(["--files", input, "--detach"]));
    const before = await jobInfo(server, queued);
    assert.equal(before.state, "queued");
    assert.equal(before.queue_position, 1);

    const cancelQueued = await server.client(["cancel", queued]);
    assert.equal(cancelQueued.code, 0, cancelQueued.stderr);
    const afterQueued = await jobInfo(server, queued);
    assert.equal(afterQueued.state, "cancelled");
    assert.ok(afterQueued.cancelled_by, "who cancelled it is recorded");
    assert.equal(await exists(path.join(server.reconFilePath, `job_${queued}_input`)), false);

    assert.equal((await jobInfo(server, running)).state, "running");
    const cancelRunning = await server.client(["cancel", running]);
    assert.equal(cancelRunning.code, 0, cancelRunning.stderr);
    for (const pid of pids) {
      assert.equal(await processAlive(pid), false, `process ${pid} of the script was stopped`);
    }
    const afterRunning = await jobInfo(server, running);
    assert.equal(afterRunning.state, "cancelled");
    assert.ok(afterRunning.cancelled_by);
    assert.deepEqual(await startedJobs(files.path), [running], "the queued job never ran");

    for (const id of [queued, running]) {
      const twice = await server.client(["cancel", id]);
      assert.equal(twice.code, 1, twice.stderr);
      assert.match(twice.stderr, new RegExp(`job ${id} .*already cancelled`));
      assert.equal(twice.stderr.trim().split("\n").filter((l) => /error/.test(l)).length, 1);
    }
    await server.waitForNoJobDirs();
  } finally {
    killAll(pids);
  }
});

Deno.test("with MAX_CONCURRENT_JOBS = 1, jobs submitted low, normal, high while one runs start high, normal, low; jobs --json shows their queue positions", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({
    script,
    options: { MAX_CONCURRENT_JOBS: 1 },
  });
  const input = path.join(files.path, "P00005.7");
  await Deno.writeTextFile(input, "raw");
  const release = path.join(files.path, "release");
  const blocker = detachedId(
    await server.client([
      "--files",
      input,
      "--detach",
      "--recon-options",
      JSON.stringify({ wait_for: release }),
    ]),
  );
  await waitFor("the first job to start", async () => (await startedJobs(files.path)).length === 1);
  const low = detachedId(await server.client(["--files", input, "--detach", "--priority", "low"]));
  const normal = detachedId(await server.client(["--files", input, "--detach"]));
  const high = detachedId(
    await server.client(["--files", input, "--detach", "--priority", "high"]),
  );

  const listed = await listJobs(server);
  assert.deepEqual(
    listed.map((job) => [job.job_id, job.state, job.priority, job.queue_position]),
    [
      [blocker, "running", "normal", undefined],
      [low, "queued", "low", 3],
      [normal, "queued", "normal", 2],
      [high, "queued", "high", 1],
    ],
    "jobs --json lists every job in submission order with state, priority and queue position",
  );
  for (const job of listed) {
    assert.equal(job.file_count, 1);
    assert.equal(job.input_bytes, 3);
    assert.match(job.submitted_at, /Z$/);
  }
  const text = await server.client(["jobs"]);
  assert.equal(text.code, 0, text.stderr);
  for (const id of [blocker, low, normal, high]) assert.ok(text.stdout.includes(id), text.stdout);

  await Deno.writeTextFile(release, "");
  const waited = await server.client(["wait", blocker, low, normal, high], { timeoutMs: 25_000 });
  assert.equal(waited.code, 0, waited.stderr);
  assert.deepEqual(await startedJobs(files.path), [blocker, high, normal, low]);
  for (const job of await listJobs(server)) assert.equal(job.state, "succeeded");
});

Deno.test("logs prints a job's output; rerun of a failed job runs it again with new options and no upload", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({ script });
  const input = path.join(files.path, "P00006.7");
  const inputSum = await writeRandomFile(input, 4 * MIB);
  const download = path.join(files.path, "downloads");
  const failed = await server.client([
    "--files",
    input,
    "--download-dir",
    download,
    "--recon-options",
    JSON.stringify({ require: "calibration" }),
  ]);
  assert.equal(failed.code, 1, failed.stderr);
  assert.match(failed.stderr, /no --calibration given/);
  const id = QUEUED.exec(failed.stderr)?.[1];
  assert.ok(id, failed.stderr);

  const logs = await server.client(["logs", id]);
  assert.equal(logs.code, 0, logs.stderr);
  assert.match(logs.stdout, new RegExp(`durable script started job ${id}`));
  assert.match(logs.stdout, /no --calibration given/);
  const failedJob = await jobInfo(server, id);
  assert.equal(failedJob.state, "failed");
  assert.equal(failedJob.exit_code, 3);
  assert.ok(failedJob.inputs_expire_at, "a failed job's inputs are kept for a re-run");

  // Through a counting relay: the re-run sends no input bytes.
  await using relay = new CuttingRelay(server.port);
  const rerun = await run(CLIENT_BIN, [
    "--opts",
    server.optsPath,
    "--port",
    String(relay.port),
    "rerun",
    id,
    "--download-dir",
    download,
    "--recon-options",
    JSON.stringify({ require: "calibration", calibration: "cal.dat" }),
  ]);
  assert.equal(rerun.code, 0, rerun.stderr);
  assert.ok(relay.toServer < 64 * 1024, `the re-run sent ${relay.toServer} bytes`);
  const newId = QUEUED.exec(rerun.stderr)?.[1];
  assert.ok(newId && newId !== id, rerun.stderr);
  assert.equal(
    await Deno.readTextFile(path.join(download, newId, "sums.txt")),
    sumsLine(inputSum, "P00006.7"),
  );
  assert.deepEqual(await startedJobs(files.path), [id, newId]);
  const newJob = await jobInfo(server, newId);
  assert.equal(newJob.state, "succeeded");
  assert.equal(newJob.rerun_of, id);
  assert.equal((await jobInfo(server, id)).state, "failed");
  assert.equal(
    await exists(path.join(server.reconFilePath, `job_${id}_input`)),
    false,
    "the inputs moved to the new job and went with it",
  );
});

Deno.test("a corrupt jobs.sqlite keeps recon-server from starting: one line naming the file; inputs untouched", async (t) => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  // The input directory below belongs to no job the (corrupt) store knows.
  await using server = await E2EServer.start({ script, expectCleanJobDirs: false });
  assert.equal((await server.stop("SIGTERM")).status.code, 0);
  const store = path.join(server.dir, "state", "jobs.sqlite");
  const original = await Deno.readFile(store);
  const inputDir = path.join(server.reconFilePath, `job_${crypto.randomUUID()}_input`);
  await Deno.mkdir(inputDir);
  const inputFile = path.join(inputDir, "P00007.7");
  await Deno.writeTextFile(inputFile, "a scan the store cannot account for");

  const corruptions: [string, Uint8Array][] = [
    ["garbage bytes", randomBytes(64 * 1024)],
    [
      "a valid header, then garbage",
      (() => {
        const bytes = randomBytes(Math.max(original.length, 8192));
        bytes.set(original.subarray(0, 100));
        return bytes;
      })(),
    ],
  ];
  for (const [what, bytes] of corruptions) {
    await t.step(what, async () => {
      for (const suffix of ["-wal", "-shm"]) await Deno.remove(store + suffix).catch(() => {});
      await Deno.writeFile(store, bytes);
      const result = await run(
        SERVER_BIN,
        ["--opts", server.optsPath, "--port", "0", "--host", "127.0.0.1"],
        { timeoutMs: 20_000 },
      );
      assert.notEqual(result.code, 0, result.stderr);
      assert.doesNotMatch(result.stderr, /listening on/);
      const errors = result.stderr.split("\n").filter((line) =>
        line.startsWith("recon-server: error:")
      );
      assert.equal(errors.length, 1, `one error line:\n${result.stderr}`);
      assert.ok(errors[0].includes(store), `the line names ${store}:\n${result.stderr}`);
      assert.equal(
        await Deno.readTextFile(inputFile),
        "a scan the store cannot account for",
        "the input directory is untouched",
      );
      assert.deepEqual(await Deno.readFile(store), bytes, "the store file is left as it was");
    });
  }
});
