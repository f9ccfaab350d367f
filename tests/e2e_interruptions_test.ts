/**
 * End to end, processes going away: a client killed in the middle of a large upload
 * (the server keeps the verified part for a resume, `cancel` drops it, and the server
 * carries on), a server killed during a job (the client gives up after
 * CLIENT_RECONNECT_TIMEOUT in one line with the job id, exit 5; the next server start
 * stops the orphaned script and settles the job from the job store), and the server's
 * graceful SIGTERM, idle and with a job running.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { E2EServer, listDir, pgrep, testdata, UUID, waitFor } from "./support/e2e.ts";

Deno.test("a client killed during a 300 MB upload leaves a resumable partial job, which cancel removes; the server goes on", async () => {
  await using server = await E2EServer.start({ script: testdata("e2e_recon.sh") });
  const big = path.join(server.dir, "P99999.7");
  // Sparse: the content does not matter here, only that the upload takes a while.
  await Deno.writeFile(big, new Uint8Array());
  await Deno.truncate(big, 300 * 1024 * 1024);
  await using client = server.spawnClient(["--files", big]);
  const partial = await waitFor("the upload to start writing on the server", async () => {
    for (const name of await listDir(server.reconFilePath)) {
      if (!/^job_.*_input$/.test(name)) continue;
      const dir = path.join(server.reconFilePath, name);
      for (const part of await listDir(dir)) {
        const info = await Deno.stat(path.join(dir, part)).catch(() => undefined);
        if (info && info.size > 0) return { dir, part, size: info.size };
      }
    }
    return undefined;
  }, { timeoutMs: 20_000, intervalMs: 5 });
  client.kill("SIGKILL");
  const killed = await client.result();
  assert.equal(killed.signal, "SIGKILL");
  assert.doesNotMatch(killed.stderr, /queued/, "the client was killed before the upload ended");
  assert.ok(partial.size < 300 * 1024 * 1024, `the upload was partial (${partial.size} bytes)`);

  const cut = await server.waitForLog(
    new RegExp(`job (${UUID.source}): upload cut off with \\d+ of 314572800 bytes verified`),
  );
  const jobId = cut[1];
  assert.deepEqual(await server.jobDirs(), [path.join(server.reconFilePath, `job_${jobId}_input`)]);
  await server.waitForNoJobDirs(10_000); // what is left is the job's, kept for a resume
  const status = await server.client(["--server-status", "--json"]);
  assert.equal(status.code, 0, status.stderr);
  const fields = JSON.parse(status.stdout);
  assert.equal(fields.queue_length, 0);
  assert.equal(fields.active_workers, 0);
  const queue = await server.client(["--view-queue"]);
  assert.equal(queue.stdout, "the queue is empty\n", "no stuck queue entry");
  const cancel = await server.client(["cancel", jobId]);
  assert.equal(cancel.code, 0, cancel.stderr);
  assert.deepEqual(await server.jobDirs(), [], "the partial input is gone");
  assert.ok(server.running);
});

Deno.test("a server killed during a job: the client gives up after CLIENT_RECONNECT_TIMEOUT with the job id (exit 5); the next start stops the orphaned script", async () => {
  await using server = await E2EServer.start({
    script: testdata("e2e_recon.sh"),
    options: { CLIENT_RECONNECT_TIMEOUT: 2, JOB_MAX_ATTEMPTS: 1 },
    expectCleanJobDirs: false,
  });
  const file = path.join(server.dir, "P00001.7");
  await Deno.writeTextFile(file, "raw");
  const marker = `1000.${crypto.getRandomValues(new Uint32Array(1))[0]}`;
  try {
    await using client = server.spawnClient([
      "--files",
      file,
      "--recon-options",
      JSON.stringify({ hang: marker }),
    ]);
    const jobId = (await client.waitForStderr(new RegExp(`job (${UUID.source}) running`)))[1];
    // The script has started once its pid file exists (written right after the spawn).
    await waitFor(
      "the script's pid file",
      async () => (await listDir(server.reconFilePath)).some((name) => name.endsWith(".pid")),
    );
    const { status } = await server.stop("SIGKILL");
    assert.equal(status.signal, "SIGKILL");
    const result = await client.result(30_000);
    assert.equal(result.code, 5, result.stderr);
    assert.equal(result.stdout, "");
    const errors = result.stderr.split("\n").filter((line) => line.includes("error"));
    assert.equal(errors.length, 1, `one error line:\n${result.stderr}`);
    assert.match(
      errors[0],
      new RegExp(`^recon-client: error: lost the connection while following job ${jobId}`),
      "the line says the connection to the server was lost, and which job",
    );
    assert.ok((await pgrep(marker)).length > 0, "the script outlived the killed server");

    // The next start stops the orphaned script; its one attempt used, the job fails
    // and keeps its inputs for a re-run.
    await server.restart();
    assert.match(server.log, /stopped its script \(process group \d+\)/);
    assert.match(
      server.log,
      new RegExp(`job ${jobId}: failed: the server stopped while it was running \\(attempt 1 of 1`),
    );
    await waitFor(
      "the orphaned script to be stopped",
      async () => (await pgrep(marker)).length === 0,
      { timeoutMs: 5_000 },
    );
    assert.deepEqual(await server.jobDirs(), [
      path.join(server.reconFilePath, `job_${jobId}_input`),
    ]);
  } finally {
    // A SIGKILLed server cannot stop its script; end the orphaned test processes.
    for (const pid of await pgrep(marker)) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
  }
});

Deno.test("SIGTERM stops an idle server at once with exit code 0", async () => {
  await using server = await E2EServer.start({ script: testdata("e2e_recon.sh") });
  const { status, ms, killed } = await server.stop("SIGTERM");
  assert.equal(killed, false);
  assert.equal(status.code, 0, server.log);
  assert.ok(ms < 3000, `exited within 3 s (${ms} ms)`);
  assert.match(server.log, /SIGTERM: shutting down/);
  assert.match(server.log, /shutdown complete/);
});

Deno.test("SIGTERM during a short job lets it finish and deliver, then exits 0", async () => {
  await using server = await E2EServer.start({
    script: testdata("e2e_recon.sh"),
    options: { SHUTDOWN_GRACE: 20 },
  });
  const file = path.join(server.dir, "P00002.7");
  await Deno.writeTextFile(file, "raw");
  await using client = server.spawnClient([
    "--files",
    file,
    "--recon-options",
    JSON.stringify({ sleep: "1.5" }),
  ]);
  await client.waitForStderr(/job \S+ running/);
  Deno.kill(server.pid, "SIGTERM");
  await server.waitForLog(/SIGTERM: shutting down/);

  // New connections are refused while it shuts down.
  const late = await server.client(["--server-status"]);
  assert.equal(late.code, 3, late.stderr);

  const result = await client.result(30_000);
  assert.equal(result.code, 0, `${result.stderr}\n--- server ---\n${server.log}`);
  assert.match(result.stderr, /server: the server is shutting down \(SIGTERM\)/);
  const [manifest] = result.stdout.trimEnd().split("\n").filter((p) => p.endsWith("manifest.txt"));
  assert.match(await Deno.readTextFile(manifest), /^arg --sleep$/m);
  const status = await server.exited();
  assert.equal(status.code, 0, server.log);
  assert.match(server.log, /delivered 3 result file\(s\)/, "manifest, copy and provenance");
  assert.match(server.log, /shutdown complete/);
});

Deno.test("Ctrl-C while the results download: exit 130, the server keeps the results, and fetch resumes the download", async () => {
  await using server = await E2EServer.start({
    script: testdata("e2e_recon.sh"),
    expectCleanJobDirs: false,
  });
  const big = path.join(server.dir, "P00002.7");
  // Sparse 400 MB: the script copies it into the results, so the download takes a while.
  await Deno.writeFile(big, new Uint8Array());
  await Deno.truncate(big, 400 * 1024 * 1024);
  await using client = server.spawnClient(["--files", big]);
  const partFiles = async (dir: string): Promise<string[]> => {
    const found: string[] = [];
    for await (const entry of Deno.readDir(dir)) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory) found.push(...await partFiles(full));
      else if (entry.name.endsWith(".part")) found.push(full);
    }
    return found;
  };
  const partBytes = async () => {
    let bytes = 0;
    const parts = await partFiles(server.downloadDir).catch(() => []);
    for (const part of parts) bytes += (await Deno.stat(part).catch(() => ({ size: 0 }))).size;
    return bytes;
  };
  await waitFor("a result to start arriving", async () => await partBytes() > 0, {
    timeoutMs: 60_000,
    intervalMs: 10,
  });
  client.kill("SIGINT");
  const result = await client.result(30_000);
  assert.equal(result.code, 130, result.stderr);
  assert.match(result.stderr, /interrupted while downloading the results of job/);
  assert.match(
    result.stderr,
    /hint: the server keeps them in RECON_DICOM_DIR\/job_\S+_output; recon-client .*fetch (\S+) resumes the download/,
  );
  const jobId = /fetch ([0-9a-f-]{36}) resumes/.exec(result.stderr)![1];
  // The verified part stays beside the results (never inside them) for the resumed fetch.
  const parts = await partFiles(server.downloadDir);
  assert.deepEqual(parts, [path.join(server.downloadDir, `.recon-${jobId}.part`)]);
  const held = (await Deno.stat(parts[0])).size;
  await server.waitForLog(/delivery failed .*results kept in \S+job_\S+_output/);
  assert.ok(
    (await server.jobDirs()).some((name) => name.endsWith("_output")),
    "the results are still on the server",
  );
  const fetched = await server.client(["fetch", jobId]);
  assert.equal(fetched.code, 0, fetched.stderr);
  assert.deepEqual(await partFiles(server.downloadDir), [], "the part file became a result");
  await server.waitForLog(
    new RegExp(`job ${jobId}: the client holds \\d+ result\\(s\\) and ${held} bytes of the next`),
  );
  const copy = path.join(server.downloadDir, jobId, "derived", "P00002.7.copy");
  assert.equal((await Deno.stat(copy)).size, 400 * 1024 * 1024);
});
