/**
 * Tests for lib/server/session.ts through an in-process ReconServer on 127.0.0.1 and
 * clients that misbehave on purpose (built on Channel.connect, or on raw records):
 *
 * - a client that breaks the protocol while its job runs (GOODBYE, an invalid message,
 *   a valid message that does not belong there, file data) is cut off without taking
 *   the server down; its job runs to completion and the results stay in
 *   RECON_DICOM_DIR/job_<id>_output with a log line saying where;
 * - a delivery counts only with the client's `results_received`, which the job store
 *   records; version 3 keeps the results until RESULT_RETENTION, versions 1 and 2
 *   remove them then, as before;
 * - an upload that does not match its announcement is answered with `error` of kind
 *   "transfer"; in version 2 it fails the job and leaves no input directory, in
 *   version 3 the job stays resumable (tests/server/upload_resume_test.ts);
 * - concurrent uploads book disk space, so together they cannot overbook it, even when
 *   their free-space checks overlap; a cut-off version 3 upload keeps its booking;
 * - result names the client would refuse are skipped with a reason, the rest delivered,
 *   and the client is told how many were skipped (never which); a job whose every
 *   result was skipped fails with a reason that counts them;
 * - a result swapped for a symbolic link after collection is not followed.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as path from "node:path";
import { Channel } from "../../lib/wire/channel.ts";
import { RecordType } from "../../lib/wire/record.ts";
import type { LocalFile } from "../../lib/client/files.ts";
import { connectToServer } from "../../lib/client/connect.ts";
import { getServerStatus } from "../../lib/client/query.ts";
import { submitJob } from "../../lib/client/submit.ts";
import { defaultConfig, type ReconConfig } from "../../lib/opts/mod.ts";
import { ReconServer } from "../../lib/server/server.ts";
import { testKey } from "../support/channel_pair.ts";
import { delay, listDir, waitFor } from "../support/e2e.ts";
import { BytesReader } from "../support/memory_duplex.ts";
import { type RawClient, rawClient, type RawRecord } from "../support/raw_peer.ts";
import { receiveStream, sendStream } from "../../lib/wire/transfer.ts";
import { TransferError } from "../../lib/errors.ts";
import { MAX_FILES_PER_JOB } from "../../lib/wire/protocol.ts";
import { MAX_MESSAGE_SIZE } from "../../lib/wire/record.ts";
import { memoryLog } from "../support/memory_log.ts";

const encoder = new TextEncoder();
const OTHER_JOB = "0b7f0f2e-3c1a-4b5e-9d2f-6a7b8c9d0e1f";

/** The default RECON_SCRIPT: sleeps 0.5 s, then writes one result. */
const SLEEPY_SCRIPT = `sleep 0.5
printf 'image of %s\\n' "$RECON_JOB_ID" >"$RECON_OUTPUT_DIR/result.dcm"
`;

async function startServer(
  options: {
    script?: string;
    config?: Partial<ReconConfig>;
    diskFree?: (dir: string) => Promise<number>;
  } = {},
) {
  const dir = await Deno.makeTempDir({ prefix: "recon-session-test-" });
  const key = await testKey();
  const script = path.join(dir, "recon.sh");
  await Deno.writeTextFile(script, `#!/bin/sh\nset -eu\n${options.script ?? SLEEPY_SCRIPT}`);
  const config: ReconConfig = {
    ...defaultConfig(),
    SERVER_HOST: "127.0.0.1",
    SERVER_PORT: 0,
    SHARED_KEY: key.text,
    RECON_FILEPATH: path.join(dir, "pfiles"),
    RECON_DICOM_DIR: path.join(dir, "dicoms"),
    RECON_SCRIPT: script,
    JOB_TIMEOUT: 30,
    SHUTDOWN_GRACE: 1,
    ...options.config,
  };
  const { lines, log } = memoryLog();
  const server = await ReconServer.start({
    config,
    sharedKey: key,
    log,
    diskFree: options.diskFree,
  });
  const port = server.addr.port;
  return {
    server,
    key,
    dir,
    config,
    lines,
    port,
    outputDir: (jobId: string) => path.join(config.RECON_DICOM_DIR, `job_${jobId}_output`),
    inputDir: (jobId: string) => path.join(config.RECON_FILEPATH, `job_${jobId}_input`),
    /** A session built on Channel.connect, to drive by hand (`version`: an older client). */
    async connect(version?: number): Promise<Channel> {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.setNoDelay(true); // as connectToServer does: no Nagle delay per small record
      return await Channel.connect(conn, { sharedKey: key.raw, keyId: key.id, version });
    },
    /** A session of hand-written records. */
    async raw(version?: number) {
      return await rawClient(await Deno.connect({ hostname: "127.0.0.1", port }), key, {
        version,
      });
    },
    /** What a normal client sees: the status, in a session of its own. */
    async status() {
      const channel = await connectToServer({
        host: "127.0.0.1",
        port,
        sharedKey: key.raw,
        keyId: key.id,
        handshakeTimeoutMs: 3000,
      });
      try {
        return await getServerStatus(channel);
      } finally {
        await channel.close();
      }
    },
    /** Wait for a log line matching `pattern`; returns it. */
    logLine(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
      return waitFor(`a log line ${pattern}`, () => lines.find((line) => pattern.test(line)), {
        timeoutMs,
      }).catch((error) => {
        throw new Error(`${error.message}; log:\n${lines.join("\n")}`);
      });
    },
    [Symbol.asyncDispose]: async () => {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** The next control message on `channel`, skipping nothing. */
async function nextMessage(channel: Channel): Promise<Record<string, unknown>> {
  const incoming = await channel.receive();
  assert.equal(incoming.type, "message", `expected a message, got ${JSON.stringify(incoming)}`);
  return (incoming as { message: Record<string, unknown> }).message;
}

/** Wait for a message of `type`, skipping job_started and job_progress. */
async function expectMessage(channel: Channel, type: string): Promise<Record<string, unknown>> {
  while (true) {
    const message = await nextMessage(channel);
    if (message.type === "job_started" || message.type === "job_progress") continue;
    assert.equal(message.type, type, `expected ${type}, got ${JSON.stringify(message)}`);
    return message;
  }
}

const SCAN = encoder.encode("raw k-space of one scan");

/** Announce a job as a version 2 client does: `submit_recon_job`, then one `input_file` each. */
async function announce(
  send: (message: Record<string, unknown>) => Promise<void>,
  files: { name: string; size: number }[],
): Promise<void> {
  await send({
    type: "submit_recon_job",
    file_count: files.length,
    client_recon_options_json: "{}",
  });
  for (const file of files) await send({ type: "input_file", ...file });
}

/** Announce one file, send it when asked, and return the job id from job_queued. */
async function uploadJob(channel: Channel, content = SCAN): Promise<string> {
  await announce((message) => channel.send(message), [{ name: "P00001.7", size: content.length }]);
  const request = await nextMessage(channel);
  assert.equal(request.type, "request_file");
  await sendStream(channel, new BytesReader(content), content.length);
  const queued = await nextMessage(channel);
  assert.equal(queued.type, "job_queued");
  return queued.job_id as string;
}

async function exists(file: string): Promise<boolean> {
  try {
    await Deno.lstat(file);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

// ---------------------------------------------------------------------------
// A client that breaks the protocol while its job runs

const MISBEHAVIOURS: [string, (channel: Channel, jobId: string) => Promise<void>, RegExp][] = [
  [
    "says GOODBYE",
    (channel) => channel.close(),
    /client ended the session; the job continues/,
  ],
  [
    "sends get_server_status",
    (channel) => channel.send({ type: "get_server_status" }),
    /client sent get_server_status while its job runs; closing the session/,
  ],
  [
    "sends results_received before any result",
    (channel, jobId) => channel.send({ type: "results_received", job_id: jobId }),
    /client sent results_received while its job runs/,
  ],
  [
    "sends a message of an unknown type",
    (channel) => channel.send({ type: "launch_missiles" }),
    /client sent an invalid message: .*launch_missiles/,
  ],
  [
    "sends cancel_job with a job id that is not a UUID",
    (channel) => channel.send({ type: "cancel_job", job_id: "../x" }),
    /client sent an invalid message: .*job_id/,
  ],
  [
    "sends cancel_job for another job",
    (channel) => channel.send({ type: "cancel_job", job_id: OTHER_JOB }),
    /client sent cancel_job while its job runs/,
  ],
  [
    "sends file data",
    async (channel) => {
      // The server hangs up at the first DATA record; the FILE_END may not get out.
      await sendStream(channel, new BytesReader(encoder.encode("junk")), 4).catch(() => {});
    },
    /client sent data data while its job runs/,
  ],
];

for (const [what, misbehave, logged] of MISBEHAVIOURS) {
  Deno.test(`a client that ${what} while its job runs does not stop the server or the job, and the results are kept`, async () => {
    await using s = await startServer();
    const channel = await s.connect();
    let jobId: string;
    try {
      jobId = await uploadJob(channel);
      await misbehave(channel, jobId);
      await s.logLine(logged);
      // The server goes on answering other clients while the job runs.
      assert.equal((await s.status()).type, "server_status_response");
      if (!channel.closed) {
        // The server hung up on this client.
        await assert.rejects(
          (async () => {
            while (true) await channel.receive();
          })(),
        );
      }
    } finally {
      channel.abort();
    }
    const outputDir = s.outputDir(jobId);
    const line = await s.logLine(/succeeded with \d+ result file\(s\), \d+ bytes, kept in /);
    assert.ok(line.includes(`job ${jobId}: `), line);
    assert.ok(line.includes(`kept in ${outputDir} until `), line);
    assert.deepEqual(await listDir(outputDir), ["provenance.json", "result.dcm"]);
    assert.equal(
      await Deno.readTextFile(path.join(outputDir, "result.dcm")),
      `image of ${jobId}\n`,
      "the job ran to completion",
    );
    assert.equal(s.server.scheduler.counts.succeeded, 1);
    assert.equal(s.server.scheduler.counts.failed, 0, "the job was not cancelled");
    assert.equal(await exists(s.inputDir(jobId)), false, "the input directory is removed");
    const status = await s.status();
    assert.equal(status.jobs_completed, 1);
    assert.ok(!s.lines.some((l) => /internal error/.test(l)), s.lines.join("\n"));
  });
}

Deno.test("a client that sends cancel_job for its own job still cancels it", async () => {
  await using s = await startServer({ script: "sleep 5\n" });
  const channel = await s.connect();
  try {
    const jobId = await uploadJob(channel);
    await channel.send({ type: "cancel_job", job_id: jobId, reason: "test" });
    // Version 3: the cancelled job's status (who cancelled it) comes right before job_failed.
    const status = await expectMessage(channel, "job_status");
    assert.equal((status.job as { state: string }).state, "cancelled");
    const failed = await expectMessage(channel, "job_failed");
    assert.equal(failed.reason, "the job was cancelled by its client");
    await channel.close();
    await waitFor(
      "the job to be counted",
      () => s.server.scheduler.activeWorkers === 0 && s.server.store.queued().length === 0,
    );
    assert.equal(await exists(s.outputDir(jobId)), false);
  } finally {
    channel.abort();
  }
});

// ---------------------------------------------------------------------------
// results_received

/** Run a job by hand up to recon_complete, taking every result; returns the job id. */
async function takeResults(channel: Channel): Promise<{ jobId: string; received: string[] }> {
  const jobId = await uploadJob(channel);
  const start = await expectMessage(channel, "dicom_transfer_start");
  assert.equal(start.job_id, jobId);
  await channel.send({ type: "dicom_transfer_ack", job_id: jobId, status: "ready" });
  const received: string[] = [];
  for (let i = 0; i < (start.count as number); i++) {
    const result = await expectMessage(channel, "result_file");
    let text = "";
    const decoder = new TextDecoder();
    await receiveStream(channel, {
      write: (chunk: Uint8Array) => {
        text += decoder.decode(chunk, { stream: true });
        return Promise.resolve(chunk.length);
      },
    }, result.size as number);
    received.push(text + decoder.decode());
  }
  const complete = await expectMessage(channel, "recon_complete");
  assert.equal(complete.job_id, jobId);
  return { jobId, received };
}

const UNCONFIRMED: [string, (channel: Channel, jobId: string) => Promise<void>][] = [
  ["disconnects", (channel) => Promise.resolve(channel.abort())],
  ["says GOODBYE", (channel) => channel.close()],
  [
    "confirms another job",
    async (channel) => {
      await channel.send({ type: "results_received", job_id: OTHER_JOB });
    },
  ],
  [
    "answers with an error",
    async (channel) => {
      await channel.send({ type: "error", reason: "disk full" });
    },
  ],
];

for (const [what, instead] of UNCONFIRMED) {
  Deno.test(`a client that takes every result but ${what} instead of results_received leaves the results on the server`, async () => {
    await using s = await startServer({ script: SLEEPY_SCRIPT.replace("sleep 0.5", "") });
    const channel = await s.connect();
    let jobId: string;
    try {
      const taken = await takeResults(channel);
      jobId = taken.jobId;
      // provenance.json (sorted first), then the script's image.
      assert.equal(taken.received.length, 2);
      assert.equal(JSON.parse(taken.received[0]).job_id, jobId);
      assert.equal(taken.received[1], `image of ${jobId}\n`);
      await instead(channel, jobId);
      const line = await s.logLine(/delivery failed/);
      assert.ok(line.includes(`job ${jobId}: `), line);
      assert.ok(line.endsWith(`results kept in ${s.outputDir(jobId)}`), line);
    } finally {
      channel.abort();
    }
    assert.deepEqual(await listDir(s.outputDir(jobId)), ["provenance.json", "result.dcm"]);
    assert.ok(!s.lines.some((l) => /delivered \d+ result/.test(l)), s.lines.join("\n"));
    assert.equal((await s.status()).type, "server_status_response");
  });
}

Deno.test("submitJob() confirms the results; the server records the delivery and keeps them until RESULT_RETENTION", async () => {
  await using s = await startServer({ script: SLEEPY_SCRIPT.replace("sleep 0.5", "") });
  const file = path.join(s.dir, "P00001.7");
  await Deno.writeFile(file, SCAN);
  const files: LocalFile[] = [{ path: file, name: "P00001.7", size: SCAN.length }];
  const channel = await s.connect();
  try {
    const result = await submitJob({
      channel,
      files,
      options: {},
      downloadDir: path.join(s.dir, "downloads"),
    });
    await channel.close();
    assert.equal(
      await Deno.readTextFile(path.join(result.resultDir, "result.dcm")),
      `image of ${result.jobId}\n`,
    );
    await s.logLine(new RegExp(`job ${result.jobId}: delivered 2 result file\\(s\\)`));
    const record = s.server.store.get(result.jobId)!;
    assert.equal(record.state, "succeeded");
    assert.ok(record.deliveredAt !== undefined, "the delivery is recorded");
    // RESULT_RETENTION after it finished (the two times are taken a moment apart).
    const kept = record.resultsExpireAt! - record.finishedAt!;
    assert.ok(Math.abs(kept - s.config.RESULT_RETENTION * 1000) < 1000, `${kept} ms`);
    assert.deepEqual(
      await listDir(s.outputDir(result.jobId)),
      ["provenance.json", "result.dcm"],
      "kept to fetch again",
    );
    assert.deepEqual(await listDir(s.config.RECON_FILEPATH), [`job_${result.jobId}.log`]);
  } finally {
    channel.abort();
  }
});

Deno.test("a version 2 client's results_received removes the results, as before version 3", async () => {
  await using s = await startServer({ script: SLEEPY_SCRIPT.replace("sleep 0.5", "") });
  const channel = await s.connect(2);
  try {
    const { jobId } = await takeResults(channel);
    await channel.send({ type: "results_received", job_id: jobId });
    await s.logLine(new RegExp(`job ${jobId}: delivered 2 result file\\(s\\)`));
    await waitFor("the results to be removed", async () => !await exists(s.outputDir(jobId)));
    const record = s.server.store.get(jobId)!;
    assert.equal(record.state, "expired");
    assert.ok(record.deliveredAt !== undefined);
    await waitFor(
      "the store to hear they are gone",
      () => s.server.store.get(jobId)!.resultsRemoved,
    );
    assert.deepEqual(await listDir(s.config.RECON_DICOM_DIR), []);
    await channel.close();
  } finally {
    channel.abort();
  }
});

// ---------------------------------------------------------------------------
// Uploads that do not match their announcement

function sha256(bytes: Uint8Array): Uint8Array {
  return createHash("sha256").update(bytes).digest();
}

function fileEnd(size: number, digest: Uint8Array): Uint8Array {
  const payload = new Uint8Array(40);
  new DataView(payload.buffer).setBigUint64(0, BigInt(size));
  payload.set(digest, 8);
  return payload;
}

/**
 * What the client sends for the file: DATA, then FILE_END unless it is undefined; and
 * the server's settings that catch it.
 */
const BAD_UPLOADS: [string, Uint8Array, Uint8Array | undefined, RegExp, Partial<ReconConfig>?][] = [
  [
    "fewer bytes than announced",
    SCAN.subarray(1),
    fileEnd(SCAN.length - 1, sha256(SCAN.subarray(1))),
    /size mismatch/,
  ],
  // The server stops at the DATA record; a FILE_END after it could arrive after the
  // server closed and make its answer be lost to a reset.
  [
    "more bytes than announced",
    new Uint8Array([...SCAN, 0x21]),
    undefined,
    /sent more than the announced/,
  ],
  [
    "the announced size with a FILE_END that claims fewer",
    SCAN,
    fileEnd(SCAN.length - 1, sha256(SCAN)),
    /size mismatch/,
  ],
  // A fresh upload is not hashed on arrival (its records are authenticated): only
  // VERIFY_AFTER_WRITE reads it back and compares.
  [
    "the announced bytes with a wrong SHA-256 (VERIFY_AFTER_WRITE = yes)",
    SCAN,
    fileEnd(SCAN.length, sha256(encoder.encode("something else"))),
    /SHA-256 mismatch/,
    { VERIFY_AFTER_WRITE: "yes" },
  ],
];

for (const [what, data, end, reason, config] of BAD_UPLOADS) {
  Deno.test(`a version 2 upload of ${what} is answered with a transfer error, fails the job and leaves no input directory`, async () => {
    await using s = await startServer({ config });
    await using client = await s.raw(2);
    await announce((message) => client.sendMessage(message), [{
      name: "P00001.7",
      size: SCAN.length,
    }]);
    const request = await client.nextMessage();
    assert.equal(request?.type, "request_file");
    const jobId = request.job_id as string;
    assert.ok(await exists(s.inputDir(jobId)), "the server made the input directory");
    assert.equal(s.server.store.get(jobId)?.state, "receiving", "recorded before request_file");
    await client.send(RecordType.DATA, data);
    if (end) await client.send(RecordType.FILE_END, end);
    const answer = await client.nextMessage();
    assert.equal(answer?.type, "error", JSON.stringify(answer));
    assert.equal(answer.kind, "transfer");
    assert.match(answer.reason as string, reason);
    assert.equal(await client.next(), null, "then the server hangs up");
    assert.equal(await exists(s.inputDir(jobId)), false, "the input directory is removed");
    await s.logLine(new RegExp(`job ${jobId}: upload failed, removed `));
    assert.deepEqual(await listDir(s.config.RECON_FILEPATH), []);
    const record = s.server.store.get(jobId)!;
    assert.equal(record.state, "failed");
    assert.match(record.reason!, /^the upload failed: /);
    assert.equal(record.inputsRemoved, true);
    assert.equal(s.server.store.queued().length, 0, "nothing was queued");
    assert.equal((await s.status()).type, "server_status_response");
  });

  Deno.test(`a version 3 upload of ${what} is answered with a transfer error and stays resumable`, async () => {
    await using s = await startServer({ config });
    await using client = await s.raw();
    await announce((message) => client.sendMessage(message), [{
      name: "P00001.7",
      size: SCAN.length,
    }]);
    const request = await client.nextMessage();
    const jobId = request?.job_id as string;
    await client.send(RecordType.DATA, data);
    if (end) await client.send(RecordType.FILE_END, end);
    const answer = await client.nextMessage();
    assert.equal(answer?.type, "error", JSON.stringify(answer));
    assert.equal(answer.kind, "transfer");
    assert.match(answer.reason as string, reason);
    assert.equal(await client.next(), null, "then the server hangs up");
    await s.logLine(new RegExp(`job ${jobId}: upload cut off with \\d+ of ${SCAN.length} bytes`));
    assert.equal(s.server.store.get(jobId)?.state, "receiving");
    assert.ok(await exists(s.inputDir(jobId)), "the verified bytes are kept");
    const names = await listDir(s.inputDir(jobId));
    assert.ok(names.every((name) => name === "-partial-0"), names.join(", "));
  });
}

Deno.test("a fresh upload's SHA-256 is the client's FILE_END: without VERIFY_AFTER_WRITE the server does not hash it again", async () => {
  await using s = await startServer();
  await using client = await s.raw(2);
  await announce((message) => client.sendMessage(message), [{
    name: "P00001.7",
    size: SCAN.length,
  }]);
  const request = await client.nextMessage();
  const jobId = request?.job_id as string;
  const claimed = sha256(encoder.encode("something else"));
  await client.send(RecordType.DATA, SCAN);
  await client.send(RecordType.FILE_END, fileEnd(SCAN.length, claimed));
  const answer = await client.nextMessage();
  assert.equal(answer?.type, "job_queued", JSON.stringify(answer));
  const [input] = s.server.store.inputs(jobId);
  assert.equal(input.sha256, new Uint8Array(claimed).toHex(), "recorded as the client sent it");
  assert.deepEqual(await Deno.readFile(path.join(s.inputDir(jobId), "P00001.7")), SCAN);
});

Deno.test("an upload the client abandons with an error message is answered with a transfer error", async () => {
  await using s = await startServer();
  await using client = await s.raw(2);
  await announce((message) => client.sendMessage(message), [{
    name: "P00001.7",
    size: SCAN.length,
  }]);
  const request = await client.nextMessage();
  const jobId = request?.job_id as string;
  await client.send(RecordType.DATA, SCAN.subarray(0, 5));
  await client.sendMessage({ type: "error", reason: "P00001.7 changed size" });
  const answer = await client.nextMessage();
  assert.equal(answer?.type, "error");
  assert.equal(answer.kind, "transfer");
  assert.match(answer.reason as string, /abandoned the transfer after 5 bytes: P00001.7 changed/);
  assert.equal(await exists(s.inputDir(jobId)), false);
});

Deno.test("a refused job is answered with an error of kind refused, and the session goes on", async () => {
  await using s = await startServer({ config: { MAX_JOB_BYTES: 10 } });
  const channel = await s.connect();
  try {
    await announce((message) => channel.send(message), [{ name: "P00001.7", size: SCAN.length }]);
    const answer = await nextMessage(channel);
    assert.equal(answer.type, "error");
    assert.equal(answer.kind, "refused");
    assert.match(answer.reason as string, /MAX_JOB_BYTES/);
    assert.equal((await getServerStatus(channel)).type, "server_status_response");
    await channel.close();
  } finally {
    channel.abort();
  }
});

// ---------------------------------------------------------------------------
// Disk space booking

/** A job of `size` bytes in one file, as a client announces it. */
function submitOf(size: number) {
  return (channel: Channel) =>
    announce((message) => channel.send(message), [{ name: "P00001.7", size }]);
}

Deno.test("concurrent uploads book disk space: the second is refused while the first is in progress", async () => {
  // A pretend file system with 15 units free and 5 kept spare: one 6-unit job fits,
  // two would need 2 more than there is. Nothing that large is ever written.
  const unit = 1024 ** 3;
  await using s = await startServer({
    config: { DISK_FREE_MARGIN: 5 * unit, MAX_JOB_BYTES: 20 * unit },
    diskFree: () => Promise.resolve(15 * unit),
  });
  // Version 2: an upload cut off is gone at once (version 3 keeps it, see below).
  const first = await s.connect(2);
  const second = await s.connect(2);
  const third = await s.connect(2);
  try {
    await submitOf(6 * unit)(first);
    assert.equal((await nextMessage(first)).type, "request_file", "the first upload may start");
    await submitOf(6 * unit)(second);
    const refusal = await nextMessage(second);
    assert.equal(refusal.type, "error");
    assert.equal(refusal.kind, "refused");
    assert.match(refusal.reason as string, /not enough disk space on the server/);
    // The first upload ends (the client goes away): its booking is released.
    first.abort();
    await s.logLine(/upload failed, removed/);
    await submitOf(6 * unit)(third);
    assert.equal((await nextMessage(third)).type, "request_file", "the space is free again");
  } finally {
    for (const channel of [first, second, third]) channel.abort();
  }
});

Deno.test("a cut-off version 3 upload keeps its disk booking until it is cancelled", async () => {
  const unit = 1024 ** 3;
  await using s = await startServer({
    config: { DISK_FREE_MARGIN: 5 * unit, MAX_JOB_BYTES: 20 * unit },
    diskFree: () => Promise.resolve(15 * unit),
  });
  const first = await s.connect();
  const second = await s.connect();
  const third = await s.connect();
  try {
    await submitOf(6 * unit)(first);
    const request = await nextMessage(first);
    assert.equal(request.type, "request_file");
    first.abort();
    await s.logLine(/upload cut off with 0 of 6442450944 bytes verified/);
    // Its resume may still bring 6 units: a second job of 6 does not fit.
    await submitOf(6 * unit)(second);
    const refusal = await nextMessage(second);
    assert.equal(refusal.kind, "refused", JSON.stringify(refusal));
    assert.match(
      refusal.reason as string,
      /not enough disk space on the server for 12884901888 bytes/,
    );
    await second.send({ type: "cancel_job", job_id: request.job_id, reason: "not needed" });
    const cancelled = await nextMessage(second);
    assert.equal(cancelled.type, "job_status");
    assert.equal((cancelled.job as { state: string }).state, "cancelled");
    await submitOf(6 * unit)(third);
    assert.equal((await nextMessage(third)).type, "request_file", "the space is free again");
  } finally {
    for (const channel of [first, second, third]) channel.abort();
  }
});

Deno.test("two submissions checked at the same moment cannot both book the last free space", async () => {
  // The free-space probe answers only once both sessions have asked (or after 2 s), so
  // both checks see the same free space; one job fits, the two together do not.
  const asked: (() => void)[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  const answerAll = () => {
    clearTimeout(timer);
    for (const answer of asked) answer();
  };
  const diskFree = (dir: string) =>
    new Promise<number>((resolve) => {
      assert.ok(dir.endsWith("pfiles"), `probed ${dir}`);
      asked.push(() => resolve(1000));
      if (asked.length === 2) answerAll();
      else timer = setTimeout(answerAll, 2000);
    });
  await using s = await startServer({
    config: { DISK_FREE_MARGIN: 100, MAX_JOB_BYTES: 1000 },
    diskFree,
  });
  const channels = [await s.connect(), await s.connect()];
  try {
    await Promise.all(channels.map(submitOf(600)));
    const answers = await Promise.all(channels.map((channel) => nextMessage(channel)));
    assert.equal(asked.length, 2, "both submissions asked for the free space");
    assert.deepEqual(answers.map((answer) => answer.type).sort(), ["error", "request_file"]);
    const refusal = answers.find((answer) => answer.type === "error")!;
    assert.equal(refusal.kind, "refused");
    assert.match(
      refusal.reason as string,
      /not enough disk space on the server for 1200 bytes \(1000 free in .*pfiles, keeping 100 spare\)/,
    );
  } finally {
    for (const channel of channels) channel.abort();
  }
});

// ---------------------------------------------------------------------------
// Result collection and delivery

Deno.test("results with names the client would refuse are skipped with a reason; the rest are delivered", async () => {
  await using s = await startServer({
    script: `printf 'good' >"$RECON_OUTPUT_DIR/good.dcm"
printf 'bad' >"$RECON_OUTPUT_DIR/back\\\\slash.dcm"
printf 'bad' >"$RECON_OUTPUT_DIR/$(printf 'bell\\007.dcm')"
mkdir "$RECON_OUTPUT_DIR/$(printf 'esc\\033dir')"
printf 'bad' >"$RECON_OUTPUT_DIR/$(printf 'esc\\033dir')/inner.dcm"
`,
  });
  const file = path.join(s.dir, "P00001.7");
  await Deno.writeFile(file, SCAN);
  const channel = await s.connect();
  try {
    const result = await submitJob({
      channel,
      files: [{ path: file, name: "P00001.7", size: SCAN.length }],
      options: {},
      downloadDir: path.join(s.dir, "downloads"),
    });
    await channel.close();
    assert.deepEqual(result.files.map((f) => f.name), ["good.dcm", "provenance.json"]);
    assert.deepEqual(await listDir(result.resultDir), ["good.dcm", "provenance.json"]);
    assert.equal(result.skipped, 3, "the client hears how many were not sent");
    const skipped = s.lines.filter((line) => line.includes(`job ${result.jobId}: not sending`));
    assert.equal(skipped.length, 3, skipped.join("\n"));
    assert.ok(skipped.some((l) => l.includes(`"back\\\\slash.dcm" (the path is not relative)`)));
    assert.ok(skipped.some((l) => l.includes(`"bell\\u0007.dcm"`) && /control character/.test(l)));
    assert.ok(skipped.some((l) => l.includes(`"esc\\u001bdir/inner.dcm"`)));
    // deno-lint-ignore no-control-regex
    assert.ok(skipped.every((l) => !/[\u0000-\u001f]/.test(l)), "the log line is printable");
    await s.logLine(new RegExp(`job ${result.jobId}: delivered 2 result file`));
  } finally {
    channel.abort();
  }
});

/** Writes ok.dcm and -rf.dcm, which are sent, and a name with a newline, one with an
 * escape sequence and a link to /etc/passwd, which are not. */
const MIXED_RESULTS_SCRIPT = `printf 'ok' >"$RECON_OUTPUT_DIR/ok.dcm"
printf 'dash' >"$RECON_OUTPUT_DIR/-rf.dcm"
printf 'bad' >"$RECON_OUTPUT_DIR/$(printf 'a\\nb.dcm')"
printf 'bad' >"$RECON_OUTPUT_DIR/$(printf 'e\\033[31mred.dcm')"
ln -s /etc/passwd "$RECON_OUTPUT_DIR/passwd"
`;

Deno.test("dicom_transfer_start says how many results were skipped, and names none of them", async () => {
  await using s = await startServer({ script: MIXED_RESULTS_SCRIPT });
  const channel = await s.connect();
  try {
    const jobId = await uploadJob(channel);
    const start = await expectMessage(channel, "dicom_transfer_start");
    assert.equal(start.count, 3, "ok.dcm, -rf.dcm and the server's provenance.json");
    assert.equal(start.skipped, 3);
    assert.deepEqual(Object.keys(start).sort(), [
      "count",
      "job_id",
      "skipped",
      "total_size",
      "type",
    ]);
    const skipped = s.lines.filter((line) => line.includes(`job ${jobId}: not sending`));
    assert.equal(skipped.length, 3, skipped.join("\n"));
    assert.ok(skipped.some((l) => l.includes("passwd (symbolic link)")));
  } finally {
    channel.abort();
  }
});

Deno.test("dicom_transfer_start has no skipped member when nothing was skipped", async () => {
  await using s = await startServer({ script: SLEEPY_SCRIPT.replace("sleep 0.5", "") });
  const channel = await s.connect();
  try {
    await uploadJob(channel);
    const start = await expectMessage(channel, "dicom_transfer_start");
    assert.equal(start.count, 2, "result.dcm and the server's provenance.json");
    assert.equal("skipped" in start, false, JSON.stringify(start));
  } finally {
    channel.abort();
  }
});

Deno.test("submitJob() returns the skipped count with the results that did arrive", async () => {
  await using s = await startServer({ script: MIXED_RESULTS_SCRIPT });
  const file = path.join(s.dir, "P00001.7");
  await Deno.writeFile(file, SCAN);
  const channel = await s.connect();
  try {
    const result = await submitJob({
      channel,
      files: [{ path: file, name: "P00001.7", size: SCAN.length }],
      options: {},
      downloadDir: path.join(s.dir, "downloads"),
    });
    await channel.close();
    assert.deepEqual(result.files.map((f) => f.name), ["-rf.dcm", "ok.dcm", "provenance.json"]);
    assert.equal(result.skipped, 3);
  } finally {
    channel.abort();
  }
});

Deno.test("a job whose every result was skipped fails with a reason that counts them", async () => {
  await using s = await startServer({
    script: `printf 'bad' >"$RECON_OUTPUT_DIR/$(printf 'a\\nb.dcm')"
ln -s /etc "$RECON_OUTPUT_DIR/etc"
`,
  });
  const channel = await s.connect();
  try {
    const jobId = await uploadJob(channel);
    const failed = await expectMessage(channel, "job_failed");
    assert.equal(failed.exit_code, 0);
    assert.equal(
      failed.reason,
      "the script finished but wrote no result the client can receive into RECON_OUTPUT_DIR " +
        "(2 entries were not sent: names a client refuses, links, special files or directories " +
        "too deep; the server log names them)",
    );
    assert.ok(!String(failed.reason).includes("a\nb"), "no skipped name reaches the client");
    await s.logLine(new RegExp(`job ${jobId}: not sending etc \\(symbolic link\\)`));
  } finally {
    channel.abort();
  }
});

/**
 * Say "ready" for `jobId`'s results and read the server's records until it hangs up:
 * provenance.json (sorted first) whole, then result.dcm's result_file and, in place of
 * its bytes, the server's error (returned): no DATA and no FILE_END of result.dcm.
 */
async function refusedAfterProvenance(client: RawClient, jobId: string): Promise<RawRecord> {
  await client.sendMessage({ type: "dicom_transfer_ack", job_id: jobId, status: "ready" });
  const records: RawRecord[] = [];
  for (let record = await client.next(); record; record = await client.next()) {
    records.push(record);
  }
  assert.deepEqual(
    records.map((record) => record.type),
    [
      RecordType.MESSAGE,
      RecordType.DATA,
      RecordType.FILE_END,
      RecordType.MESSAGE,
      RecordType.MESSAGE,
    ],
    "no file data of result.dcm is sent",
  );
  return records.at(-1)!;
}

/** The JSON of `record`, a MESSAGE (record header stripped by the raw client). */
function lastMessage(record: RawRecord): unknown {
  assert.equal(record.type, RecordType.MESSAGE);
  return JSON.parse(new TextDecoder().decode(record.payload));
}

/**
 * Submit one scan over `client`, upload it, and read on until the server offers the
 * results (dicom_transfer_start): the job has ended and its results are collected.
 */
async function uploadUntilResults(client: RawClient): Promise<string> {
  await announce((message) => client.sendMessage(message), [{
    name: "P00001.7",
    size: SCAN.length,
  }]);
  const request = await client.nextMessage();
  const jobId = request?.job_id as string;
  await client.send(RecordType.DATA, SCAN);
  await client.send(RecordType.FILE_END, fileEnd(SCAN.length, sha256(SCAN)));
  let message = await client.nextMessage();
  while (message && message.type !== "dicom_transfer_start") message = await client.nextMessage();
  assert.equal(message?.type, "dicom_transfer_start");
  return jobId;
}

Deno.test("a result replaced by a symbolic link after collection is not sent", async () => {
  await using s = await startServer({ script: SLEEPY_SCRIPT.replace("sleep 0.5", "") });
  const secret = path.join(s.dir, "secret.txt");
  await Deno.writeTextFile(secret, "the server's private data");
  await using client = await s.raw();
  const jobId = await uploadUntilResults(client);
  // Collected and announced; now something swaps the result for a link to a secret.
  const result = path.join(s.outputDir(jobId), "result.dcm");
  await Deno.remove(result);
  await Deno.symlink(secret, result);
  const last = await refusedAfterProvenance(client, jobId);
  // No byte of the secret.
  assert.deepEqual(lastMessage(last), {
    type: "error",
    kind: "transfer",
    reason: 'result "result.dcm" is no longer a regular file on the server; ' +
      "the results stay on the server, whose log says more",
  });
  const line = await s.logLine(/delivery failed/);
  assert.match(line, /is not a regular file \(it is or became a symbolic link\)/);
  assert.ok(line.endsWith(`results kept in ${s.outputDir(jobId)}`), line);
  assert.equal((await Deno.lstat(result)).isSymlink, true, "the results are kept as they are");
});

Deno.test("a result written to after the job ended is hashed before it is sent and refused with error {kind: transfer}: none of its bytes go", async () => {
  await using s = await startServer({ script: SLEEPY_SCRIPT.replace("sleep 0.5", "") });
  await using client = await s.raw();
  const jobId = await uploadUntilResults(client);
  // The job end recorded each result's SHA-256 with the file's times.
  const outputs = s.server.store.outputs(jobId);
  assert.ok(
    outputs.every((output) => output.mtimeMs !== undefined && output.ctimeMs !== undefined),
  );
  // Now the result is rewritten in place: same size, other bytes, a new mtime.
  const result = path.join(s.outputDir(jobId), "result.dcm");
  const before = await Deno.readTextFile(result);
  await delay(5);
  await Deno.writeTextFile(result, before.toUpperCase());
  const last = await refusedAfterProvenance(client, jobId);
  // Hashed, found not to be the job's, and refused: no DATA, no FILE_END.
  assert.deepEqual(lastMessage(last), {
    type: "error",
    kind: "transfer",
    reason: 'result "result.dcm" was changed on the server after its job ended; ' +
      "the results stay on the server, whose log says more",
  });
  const line = await s.logLine(/delivery failed/);
  assert.match(
    line,
    /result "result\.dcm": .*result\.dcm is not the file recorded when its job ended \(now \d+ bytes, SHA-256 [0-9a-f]{64}; recorded \d+ bytes, [0-9a-f]{64}\); not sending it/,
  );
});

Deno.test("a job whose input and result names are 254 bytes of UTF-8 goes through both ways", async () => {
  await using s = await startServer({
    script: `for f in "$1"/*; do cp -- "$f" "$RECON_OUTPUT_DIR/"; done\n`,
  });
  const name = `${"日".repeat(84)}.7`;
  assert.equal(encoder.encode(name).length, 254);
  const file = path.join(s.dir, name);
  await Deno.writeFile(file, SCAN);
  const channel = await s.connect();
  try {
    const result = await submitJob({
      channel,
      files: [{ path: file, name, size: SCAN.length }],
      options: {},
      downloadDir: path.join(s.dir, "downloads"),
    });
    await channel.close();
    assert.deepEqual(result.files.map((f) => f.name), ["provenance.json", name]);
    assert.deepEqual(await Deno.readFile(path.join(result.resultDir, name)), SCAN);
    assert.deepEqual(
      await listDir(result.resultDir),
      ["provenance.json", name],
      "no temporary file is left",
    );
  } finally {
    channel.abort();
  }
});

// ---------------------------------------------------------------------------
// Protocol versions: a version 1 client (the seed workflow) and large jobs in version 2

/** A script writing `count` empty results with 30-character names (one per slice). */
function sliceScript(count: number): string {
  return `i=0
while [ $i -lt ${count} ]; do
  : >"$RECON_OUTPUT_DIR/$(printf 'IM_%08d_slice_of_series.dcm' $i)"
  i=$((i + 1))
done
`;
}

/** Files of one byte with 30-character names, as a client lists them. */
async function sliceFiles(dir: string, count: number): Promise<LocalFile[]> {
  const files: LocalFile[] = [];
  for (let i = 0; i < count; i++) {
    const name = `P${String(i).padStart(8, "0")}_calibration.dat`;
    const file = path.join(dir, name);
    await Deno.writeFile(file, encoder.encode("x"));
    files.push({ path: file, name, size: 1 });
  }
  return files;
}

Deno.test("a version 1 client still submits, follows, receives and queries as before", async () => {
  await using s = await startServer({ script: SLEEPY_SCRIPT.replace("sleep 0.5", "") });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: s.port });
  const channel = await Channel.connect(conn, {
    sharedKey: s.key.raw,
    keyId: s.key.id,
    version: 1,
  });
  try {
    assert.equal(channel.version, 1);
    await channel.send({ type: "get_server_status" });
    assert.equal((await nextMessage(channel)).type, "server_status_response");
    await channel.send({ type: "get_queue_details" });
    assert.deepEqual(await nextMessage(channel), { type: "queue_details_response", jobs: [] });
    await channel.send({
      type: "submit_recon_job",
      files: [{ name: "P00001.7", size: SCAN.length, original_path_on_client: "/x/P00001.7" }],
      client_recon_options_json: "{}",
    });
    const request = await nextMessage(channel);
    assert.equal(request.type, "request_file");
    await sendStream(channel, new BytesReader(SCAN), SCAN.length);
    const queued = await nextMessage(channel);
    const jobId = queued.job_id as string;
    const digest = createHash("sha256").update(SCAN).digest("hex");
    assert.deepEqual(queued, {
      type: "job_queued",
      job_id: jobId,
      files_received: 1,
      files: [{
        name: "P00001.7",
        size: SCAN.length,
        original_path_on_client: "/x/P00001.7",
        sha256: digest,
      }],
    });
    const start = await expectMessage(channel, "dicom_transfer_start");
    const content = encoder.encode(`image of ${jobId}\n`);
    const provenance = await Deno.readFile(path.join(s.outputDir(jobId), "provenance.json"));
    // The server's provenance.json comes first (sorted by name), a result like any other.
    assert.deepEqual(start, {
      type: "dicom_transfer_start",
      job_id: jobId,
      count: 2,
      files: [
        { name: "provenance.json", size: provenance.length },
        { name: "result.dcm", size: content.length },
      ],
    });
    await channel.send({ type: "dicom_transfer_ack", job_id: jobId, status: "ready" });
    for (const size of [provenance.length, content.length]) {
      assert.equal((await nextMessage(channel)).type, "result_file");
      await receiveStream(channel, { write: (chunk) => Promise.resolve(chunk.length) }, size);
    }
    assert.deepEqual(await nextMessage(channel), {
      type: "recon_complete",
      job_id: jobId,
      files: [
        {
          name: "provenance.json",
          size: provenance.length,
          sha256: createHash("sha256").update(provenance).digest("hex"),
        },
        {
          name: "result.dcm",
          size: content.length,
          sha256: createHash("sha256").update(content).digest("hex"),
        },
      ],
    });
    await channel.send({ type: "results_received", job_id: jobId });
    await s.logLine(new RegExp(`job ${jobId}: delivered 2 result file`));
    await channel.close();
  } finally {
    channel.abort();
  }
});

Deno.test("results a version 1 client cannot receive fail with a reason and stay on the server", async () => {
  // 9,000 results with 30-character names: recon_complete would be 1.1 MB, over 1 MiB.
  await using s = await startServer({ script: sliceScript(9000) });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: s.port });
  const channel = await Channel.connect(conn, {
    sharedKey: s.key.raw,
    keyId: s.key.id,
    version: 1,
  });
  try {
    await channel.send({
      type: "submit_recon_job",
      files: [{ name: "P00001.7", size: SCAN.length }],
      client_recon_options_json: "{}",
    });
    await nextMessage(channel);
    await sendStream(channel, new BytesReader(SCAN), SCAN.length);
    const jobId = (await nextMessage(channel)).job_id as string;
    const failed = await expectMessage(channel, "job_failed");
    assert.equal(
      failed.reason,
      // 9,000 slices and the server's provenance.json.
      "the job has 9001 result files, more than a protocol version 1 client can receive; " +
        `upgrade recon-client; they are kept on the server in RECON_DICOM_DIR/job_${jobId}_output`,
    );
    assert.equal(failed.exit_code, 0);
    // The session goes on at top level.
    assert.equal((await getServerStatus(channel)).type, "server_status_response");
    await channel.close();
    assert.equal((await listDir(s.outputDir(jobId))).length, 9001, "the results are kept");
    await s.logLine(new RegExp(`job ${jobId}: the job has 9001 .*results kept in `));
  } finally {
    channel.abort();
  }
});

Deno.test("a submission of MAX_FILES_PER_JOB files gets past job_queued (version 2 announces one file per message)", async () => {
  await using s = await startServer({ script: 'printf done >"$RECON_OUTPUT_DIR/out.dcm"\n' });
  const files = await sliceFiles(path.join(s.dir), MAX_FILES_PER_JOB);
  const asV1 = JSON.stringify({
    type: "submit_recon_job",
    files: files.map((f) => ({ name: f.name, size: f.size, original_path_on_client: f.path })),
    client_recon_options_json: "{}",
  });
  assert.ok(encoder.encode(asV1).length > MAX_MESSAGE_SIZE, "version 1 could not announce it");
  const channel = await s.connect();
  try {
    const started = performance.now();
    const result = await submitJob({
      channel,
      files,
      options: {},
      downloadDir: path.join(s.dir, "downloads"),
    });
    console.log(`${MAX_FILES_PER_JOB} inputs: ${Math.round(performance.now() - started)} ms`);
    await channel.close();
    assert.equal(result.uploaded.length, MAX_FILES_PER_JOB);
    assert.equal(result.uploaded[9999].sha256, createHash("sha256").update("x").digest("hex"));
    assert.deepEqual(result.files.map((f) => f.name), ["out.dcm", "provenance.json"]);
  } finally {
    channel.abort();
  }
});

// ---------------------------------------------------------------------------
// Results the client cannot take: they stay on the server, and the client says where

const CANNOT_TAKE: [string, Partial<Parameters<typeof submitJob>[0]>, RegExp][] = [
  [
    "more than CLIENT_MAX_RESULT_BYTES",
    { maxResultBytes: 5 },
    /^the 2 result file\(s\) of job \S+ \(\d+ bytes\) exceed CLIENT_MAX_RESULT_BYTES \(5\); they stay on the server in RECON_DICOM_DIR\/job_\S+_output$/,
  ],
  [
    "more than the free space of the download directory",
    { diskFree: () => Promise.resolve(10) },
    /^the 2 result file\(s\) of job \S+ \(\d+ bytes\) do not fit in \S+ \(10 bytes free\); they stay on the server in RECON_DICOM_DIR\/job_\S+_output$/,
  ],
];

for (const [what, limits, message] of CANNOT_TAKE) {
  Deno.test(`results of ${what} are refused before any byte, and the server keeps them`, async () => {
    await using s = await startServer({ script: SLEEPY_SCRIPT.replace("sleep 0.5", "") });
    const file = path.join(s.dir, "P00001.7");
    await Deno.writeFile(file, SCAN);
    const downloadDir = path.join(s.dir, "downloads");
    const channel = await s.connect();
    try {
      const error = await submitJob({
        channel,
        files: [{ path: file, name: "P00001.7", size: SCAN.length }],
        options: {},
        downloadDir,
        ...limits,
      }).catch((e) => e);
      assert.ok(error instanceof TransferError, String(error));
      assert.match(error.message, message);
      const jobId = /job (\S+) \(/.exec(error.message)![1];
      assert.ok(error.message.endsWith(`RECON_DICOM_DIR/job_${jobId}_output`));
      const line = await s.logLine(/delivery failed/);
      assert.match(line, /the client refused the results \(status "refused"\)/);
      assert.deepEqual(
        await listDir(s.outputDir(jobId)),
        ["provenance.json", "result.dcm"],
        "kept on the server",
      );
      assert.deepEqual(await listDir(downloadDir), [], "nothing was written");
    } finally {
      channel.abort();
    }
  });
}
