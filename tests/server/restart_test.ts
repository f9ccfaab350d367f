/**
 * Jobs outlive the server process (docs/PROTOCOL.md §6.6, §7.5), with in-process
 * servers restarted on the same directories, store and key: a graceful shutdown keeps
 * queued jobs queued and puts a running job back without using up an attempt; a
 * server that stopped without a shutdown (its store says `running`) runs the job again
 * or fails it after JOB_MAX_ATTEMPTS; the queue resumes in priority order; a version
 * 2 client following a job at shutdown hears why; a store that cannot be used stops
 * the start before any directory is touched.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as path from "node:path";
import { StoreError } from "../../lib/errors.ts";
import { defaultConfig } from "../../lib/opts/mod.ts";
import { JobStore, STORE_FILE } from "../../lib/server/job_store.ts";
import { ReconServer } from "../../lib/server/server.ts";
import type { Channel } from "../../lib/wire/channel.ts";
import { RecordType } from "../../lib/wire/record.ts";
import { sendStream } from "../../lib/wire/transfer.ts";
import { BytesReader } from "../support/memory_duplex.ts";
import { testKey } from "../support/channel_pair.ts";
import { listDir, waitFor } from "../support/e2e.ts";
import { memoryLog } from "../support/memory_log.ts";
import {
  expectMessage,
  fetchResults,
  nextMessage,
  startTestServer,
  upload,
} from "../support/test_server.ts";

const SCAN = new TextEncoder().encode("raw k-space of one scan");

/**
 * Appends the job's `--name` to `order.txt` beside the script, sleeps its `--sleep`
 * seconds, writes one result.
 */
const ORDER_SCRIPT = `name=""; seconds=0
input=$1; shift
while [ $# -gt 0 ]; do
  case "$1" in --name) name=$2; shift ;; --sleep) seconds=$2; shift ;; esac
  shift
done
echo "$name" >>"$(dirname "$0")/order.txt"
sleep "$seconds"
printf '%s' "$name" >"$RECON_OUTPUT_DIR/result.dcm"
`;

async function submit(
  s: { connect(): Promise<Channel> },
  options: Record<string, unknown>,
  priority?: string,
): Promise<string> {
  const channel = await s.connect();
  try {
    return await upload(channel, { "P00001.7": SCAN }, {
      client_recon_options_json: JSON.stringify(options),
      ...(priority ? { priority } : {}),
    });
  } finally {
    channel.abort();
  }
}

async function order(dir: string): Promise<string[]> {
  const text = await Deno.readTextFile(path.join(dir, "order.txt")).catch(() => "");
  return text.split("\n").filter(Boolean);
}

Deno.test("with MAX_CONCURRENT_JOBS 1, low, normal and high jobs submitted while one runs start high, normal, low", async () => {
  await using s = await startTestServer({ script: ORDER_SCRIPT });
  const first = await submit(s, { name: "first", sleep: 1 });
  await waitFor("the first job to run", () => s.server.store.get(first)?.state === "running");
  const ids = [
    await submit(s, { name: "low" }, "low"),
    await submit(s, { name: "normal" }),
    await submit(s, { name: "high" }, "high"),
  ];
  await waitFor(
    "every job to finish",
    () => ids.every((id) => s.server.store.get(id)?.state === "succeeded"),
    { timeoutMs: 15_000 },
  );
  assert.deepEqual(await order(s.dir), ["first", "high", "normal", "low"]);
});

Deno.test("a graceful shutdown keeps queued jobs queued and puts the running one back without using an attempt; the next start runs them in order", async () => {
  await using s = await startTestServer({ script: ORDER_SCRIPT, config: { SHUTDOWN_GRACE: 0.5 } });
  const long = await submit(s, { name: "long", sleep: 1.5 });
  await waitFor("the long job to run", () => s.server.store.get(long)?.state === "running");
  const low = await submit(s, { name: "low" }, "low");
  const high = await submit(s, { name: "high" }, "high");
  await s.server.shutdown("the server is shutting down (SIGTERM)");
  await s.logLine(/shutdown: 2 queued job\(s\) stay queued for the next start/);
  await s.logLine(/stopping 1 running job\(s\) after the grace period; they are queued again/);
  // The store, as the next start finds it.
  const store = JobStore.open(s.config.RECON_STATE_DIR);
  try {
    const record = store.get(long)!;
    assert.equal(record.state, "queued");
    assert.equal(record.attempts, 0, "the stopped run does not count");
    assert.deepEqual(store.queued().map((job) => job.id), [high, long, low]);
  } finally {
    store.close();
  }
  assert.deepEqual(await listDir(s.config.RECON_DICOM_DIR), [], "no partial output is kept");
  await s.restart({ SHUTDOWN_GRACE: 5 });
  await waitFor(
    "every job to finish after the restart",
    () => [long, low, high].every((id) => s.server.store.get(id)?.state === "succeeded"),
    { timeoutMs: 15_000 },
  );
  assert.deepEqual(await order(s.dir), ["long", "high", "long", "low"]);
  assert.equal(s.server.store.get(long)!.attempts, 1);
  // And a client fetches the results of a job submitted before the restart.
  const channel = await s.connect();
  try {
    await channel.send({ type: "follow_job", job_id: long, deliver: true });
    await nextMessage(channel);
    const { files } = await fetchResults(channel, long);
    assert.equal(new TextDecoder().decode(files.get("result.dcm")), "long");
    await channel.close();
  } finally {
    channel.abort();
  }
});

Deno.test("a version 2 client following a job that a shutdown leaves queued hears why", async () => {
  await using s = await startTestServer({ script: ORDER_SCRIPT, config: { SHUTDOWN_GRACE: 0.3 } });
  const blocker = await submit(s, { name: "blocker", sleep: 3 });
  await waitFor("the first job to run", () => s.server.store.get(blocker)?.state === "running");
  const channel = await s.connect(2);
  try {
    const jobId = await upload(channel, { "P00001.7": SCAN });
    const shutdown = s.server.shutdown("the server is shutting down (SIGTERM)");
    assert.equal((await nextMessage(channel)).type, "server_shutting_down");
    const failed = await expectMessage(channel, "job_failed");
    assert.equal(failed.job_id, jobId);
    assert.equal(
      failed.reason,
      "the server is shutting down (SIGTERM); the job stays queued for the next start",
    );
    assert.equal(failed.exit_code, null);
    await shutdown;
  } finally {
    channel.abort();
  }
});

/** A config for a server on `dir` as startTestServer lays it out. */
async function siteConfig(dir: string) {
  const key = await testKey();
  const script = path.join(dir, "recon.sh");
  await Deno.writeTextFile(script, `#!/bin/sh\nset -eu\n${ORDER_SCRIPT}`);
  return {
    key,
    config: {
      ...defaultConfig(),
      SERVER_HOST: "127.0.0.1",
      SERVER_PORT: 0,
      SHARED_KEY: key.text,
      RECON_FILEPATH: path.join(dir, "pfiles"),
      RECON_DICOM_DIR: path.join(dir, "dicoms"),
      RECON_STATE_DIR: path.join(dir, "state"),
      RECON_SCRIPT: script,
      SHUTDOWN_GRACE: 1,
      JOB_MAX_ATTEMPTS: 2,
    },
  };
}

/**
 * What a server killed while jobs ran leaves: the store says `running` (`runs` starts
 * each), the inputs are in place, the script had written part of its output.
 */
async function killedWhileRunning(dir: string, runs: number[]): Promise<string[]> {
  const { config } = await siteConfig(dir);
  const store = JobStore.open(config.RECON_STATE_DIR);
  const ids: string[] = [];
  try {
    for (const [index, starts] of runs.entries()) {
      const id = crypto.randomUUID();
      const inputDir = path.join(config.RECON_FILEPATH, `job_${id}_input`);
      const outputDir = path.join(config.RECON_DICOM_DIR, `job_${id}_output`);
      await Deno.mkdir(inputDir, { recursive: true });
      await Deno.writeFile(path.join(inputDir, "P00001.7"), SCAN);
      store.createReceiving({
        id,
        priority: "normal",
        client: "k",
        peer: "127.0.0.1:1",
        keyId: "k",
        options: { name: `job${index}` },
        inputDir,
        outputDir,
        logPath: path.join(config.RECON_FILEPATH, `job_${id}.log`),
        files: [{ name: "P00001.7", size: SCAN.length }],
        uploadExpiresAt: Date.now() + 60_000,
      });
      store.inputVerified(id, 0, "0".repeat(64));
      store.markQueued(id);
      for (let start = 1; start <= starts; start++) {
        store.markRunning(id);
        if (start < starts) store.requeue(id, { refundAttempt: false });
      }
      await Deno.mkdir(outputDir, { recursive: true });
      await Deno.writeTextFile(path.join(outputDir, "half.dcm"), "half an image");
      ids.push(id);
    }
  } finally {
    store.close();
  }
  return ids;
}

Deno.test("after a server stopped without a shutdown, a running job runs again; at JOB_MAX_ATTEMPTS it fails with its inputs kept for a re-run", async () => {
  const dir = await Deno.makeTempDir({ prefix: "recon-restart-test-" });
  try {
    const [again, exhausted] = await killedWhileRunning(dir, [1, 2]);
    const { key, config } = await siteConfig(dir);
    const { lines, log } = memoryLog();
    const server = await ReconServer.start({ config, sharedKey: key, log });
    try {
      await waitFor("the job to run again", () => server.store.get(again)?.state === "succeeded");
      assert.equal(server.store.get(again)!.attempts, 2);
      const { outputDir } = server.store.get(again)!;
      assert.deepEqual(
        await listDir(outputDir),
        ["provenance.json", "result.dcm"],
        "the partial output of the first run is gone",
      );
      const provenance = JSON.parse(
        await Deno.readTextFile(path.join(outputDir, "provenance.json")),
      );
      assert.equal(provenance.attempts, 2, "the provenance counts the run the server lost");
      const failed = server.store.get(exhausted)!;
      assert.equal(failed.state, "failed");
      assert.equal(failed.reason, "the server stopped while it was running");
      assert.deepEqual(await listDir(failed.inputDir), ["P00001.7"], "kept for a re-run");
      assert.ok(
        lines.some((line) =>
          line.includes(
            `job ${again}: was running when the server stopped; queued again (attempt 1 of 2 used)`,
          )
        ),
      );
      assert.ok(
        lines.some((line) =>
          line.includes(
            `job ${exhausted}: failed: the server stopped while it was running (attempt 2 of 2`,
          )
        ),
      );
    } finally {
      await server.shutdown();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a job store that cannot be opened stops the start, naming the file, before any directory is touched", async () => {
  const dir = await Deno.makeTempDir({ prefix: "recon-restart-test-" });
  try {
    const [id] = await killedWhileRunning(dir, [1]);
    const { key, config } = await siteConfig(dir);
    const file = path.join(config.RECON_STATE_DIR, STORE_FILE);
    // Damage it: the header survives, the first pages do not.
    const bytes = await Deno.readFile(file);
    bytes.fill(0x5a, 100, Math.min(bytes.length, 8192));
    await Deno.writeFile(file, bytes);
    // A leftover pid file and a directory nobody accounts for, untouched afterwards.
    const pidFile = path.join(config.RECON_FILEPATH, `job_${id}.pid`);
    await Deno.writeTextFile(pidFile, "1\n");
    const { lines, log } = memoryLog();
    const error = await ReconServer.start({ config, sharedKey: key, log })
      .then((server) => server.shutdown().then(() => undefined), (e) => e);
    assert.ok(error instanceof StoreError, String(error));
    assert.ok(error.message.includes(file), error.message);
    assert.equal(error.message.split("\n").length, 1, "one line");
    assert.deepEqual(await listDir(path.join(config.RECON_DICOM_DIR, `job_${id}_output`)), [
      "half.dcm",
    ]);
    assert.deepEqual(
      (await listDir(config.RECON_FILEPATH)).sort(),
      [`job_${id}.pid`, `job_${id}_input`].sort(),
    );
    assert.deepEqual(lines.filter((line) => !line.startsWith("debug")), [], "nothing was done");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a cut-off upload survives a restart and is resumed by its client", async () => {
  await using s = await startTestServer();
  await using client = await s.raw();
  await client.sendMessage({
    type: "submit_recon_job",
    file_count: 1,
    client_recon_options_json: "{}",
  });
  await client.sendMessage({ type: "input_file", name: "P00001.7", size: SCAN.length });
  const request = await client.nextMessage();
  const jobId = request?.job_id as string;
  await client.send(RecordType.DATA, SCAN.subarray(0, 10));
  await waitFor("the bytes to land", async () => {
    try {
      return (await Deno.stat(path.join(s.inputDir(jobId), "-partial-0"))).size === 10;
    } catch {
      return false;
    }
  });
  await s.restart();
  await s.logLine(/1 cut-off upload\(s\) may be resumed by their clients until /);
  const channel = await s.connect();
  try {
    await channel.send({ type: "resume_upload", job_id: jobId });
    const again = await nextMessage(channel);
    assert.equal(again.offset, 10);
    await sendStream(channel, new BytesReader(SCAN.subarray(10)), SCAN.length, undefined, {
      offset: 10,
      hash: createHash("sha256").update(SCAN.subarray(0, 10)),
    });
    assert.equal((await nextMessage(channel)).type, "job_queued");
    const { files } = await fetchResults(channel, jobId);
    assert.ok(files.has("result.dcm"));
    await channel.close();
  } finally {
    channel.abort();
  }
});
