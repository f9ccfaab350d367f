/**
 * A hostile server, in process: a fake server built on the real Channel.accept over a
 * real 127.0.0.1 socket talks to the real submitJob(). It asks for files the job did
 * not offer, or announces results whose names leave the download directory; the
 * client refuses with ProtocolError, reports it through onHostile, sends nothing it
 * should not and writes nothing outside CLIENT_DOWNLOAD_DIR/<job_id>/. A job id that is
 * not a lower-case UUID, or messages about another job, end the session the same way;
 * so do results beyond the announced count or total size, or a name sent twice; an
 * `error` of kind "transfer" becomes a TransferError, any other a JobError.
 */
import { receiveStream, sendStream } from "../lib/wire/transfer.ts";
import assert from "node:assert/strict";
import * as path from "node:path";
import { Channel } from "../lib/wire/channel.ts";
import { type Incoming } from "../lib/wire/record.ts";
import { ExitCode, JobError, ProtocolError, TransferError } from "../lib/errors.ts";
import { submitJob } from "../lib/client/submit.ts";
import type { LocalFile } from "../lib/client/files.ts";
import { testKey } from "./support/channel_pair.ts";
import { listDir, tempDir } from "./support/e2e.ts";

const JOB_ID = "0b6f3c8e-5d2a-4c61-9a7e-3f1d2b4c5a69";
const CONTENT = new TextEncoder().encode("raw k-space");

/** Collects what a file transfer writes (the fake server keeps uploads in memory). */
class MemorySink {
  bytes = 0;
  write(chunk: Uint8Array): Promise<number> {
    this.bytes += chunk.length;
    return Promise.resolve(chunk.length);
  }
}

/** Serves bytes from memory as a file for Channel.sendFile. */
class MemorySource {
  #data: Uint8Array;
  #offset = 0;
  constructor(data: Uint8Array) {
    this.#data = data;
  }
  read(buffer: Uint8Array): Promise<number | null> {
    if (this.#offset >= this.#data.length) return Promise.resolve(null);
    const n = Math.min(buffer.length, this.#data.length - this.#offset);
    buffer.set(this.#data.subarray(this.#offset, this.#offset + n));
    this.#offset += n;
    return Promise.resolve(n);
  }
}

/** What the fake server did: the submit message, its `input_file` announcements. */
interface Session {
  submit: Record<string, unknown>;
  announced: Record<string, unknown>[];
  channel: Channel;
}

/**
 * Run submitJob() for one file against a fake server whose side of the session is
 * `behave`. Returns the error submitJob() threw and the hostile messages it reported.
 */
async function againstFakeServer(
  dir: string,
  behave: (session: Session) => Promise<void>,
): Promise<{ error: unknown; hostile: string[]; downloadDir: string }> {
  const key = await testKey();
  const file = path.join(dir, "P00001.7");
  await Deno.writeFile(file, CONTENT);
  const files: LocalFile[] = [{ path: file, name: "P00001.7", size: CONTENT.length }];
  const downloadDir = path.join(dir, "downloads");
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serverSide = (async () => {
    const conn = await listener.accept();
    const channel = await Channel.accept(conn, { keys: new Map([[key.id, key.raw]]) });
    try {
      const first = await channel.receive();
      assert.equal(first.type, "message");
      const submit = (first as { message: Record<string, unknown> }).message;
      assert.equal(submit.type, "submit_recon_job");
      const announced: Record<string, unknown>[] = [];
      for (let i = 0; i < (submit.file_count as number); i++) {
        const entry = await channel.receive();
        assert.equal(entry.type, "message");
        announced.push((entry as { message: Record<string, unknown> }).message);
      }
      await behave({ submit, announced, channel });
    } finally {
      channel.abort();
    }
  })();
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const channel = await Channel.connect(conn, { sharedKey: key.raw, keyId: key.id });
  const hostile: string[] = [];
  let error: unknown;
  try {
    await submitJob({
      channel,
      files,
      options: {},
      downloadDir,
      onHostile: (message) => hostile.push(message),
    });
  } catch (caught) {
    error = caught;
  } finally {
    channel.abort();
  }
  await serverSide;
  return { error, hostile, downloadDir };
}

/** The next record, or the error that ended the session. */
function next(channel: Channel): Promise<Incoming | Error> {
  return channel.receive().catch((error: Error) => error);
}

/**
 * The next record, the error that ended the session, or after `ms` a "timeout" (then
 * the fake server gives up, so a client that waits instead of refusing fails the test
 * rather than hanging it).
 */
async function nextWithin(channel: Channel, ms = 3000): Promise<Incoming | Error | "timeout"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const result = await Promise.race([
    next(channel),
    new Promise<"timeout">((resolve) => (timer = setTimeout(resolve, ms, "timeout"))),
  ]);
  clearTimeout(timer);
  return result;
}

/** Ask for the announced file and take it, as a real server does. */
async function takeUpload(channel: Channel, name = "P00001.7"): Promise<void> {
  await channel.send({ type: "request_file", job_id: JOB_ID, name });
  const sink = new MemorySink();
  await receiveStream(channel, sink, CONTENT.length);
  assert.equal(sink.bytes, CONTENT.length);
}

for (
  const name of ["other.7", "../P00001.7", "/etc/passwd", "p00001.7", "P00001.7/../../x"]
) {
  Deno.test(`submitJob() refuses a request_file for ${JSON.stringify(name)}, which it never offered`, async () => {
    await using dir = await tempDir();
    let after: Incoming | Error | undefined;
    const { error, hostile } = await againstFakeServer(dir.path, async ({ channel }) => {
      await channel.send({ type: "request_file", job_id: JOB_ID, name });
      after = await next(channel);
    });
    assert.ok(error instanceof ProtocolError, `ProtocolError, got ${error}`);
    assert.match(error.message, /which this job did not offer/);
    assert.equal(hostile.length, 1, "onHostile was told once");
    assert.match(
      hostile[0],
      new RegExp(JSON.stringify(name).replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")),
    );
    assert.ok(
      after instanceof Error,
      `the client sent no data but closed: ${JSON.stringify(after)}`,
    );
  });
}

Deno.test("submitJob() refuses a second request_file for a file it already sent", async () => {
  await using dir = await tempDir();
  let after: Incoming | Error | undefined;
  const { error, hostile } = await againstFakeServer(dir.path, async ({ channel }) => {
    await takeUpload(channel);
    await channel.send({ type: "request_file", job_id: JOB_ID, name: "P00001.7" });
    after = await next(channel);
  });
  assert.ok(error instanceof ProtocolError, `ProtocolError, got ${error}`);
  assert.match(error.message, /already sent/);
  assert.equal(hostile.length, 1);
  assert.ok(after instanceof Error, "nothing was sent a second time");
});

/** Queue the job and announce `count` results of `totalSize` bytes; the client's answer. */
async function announceResults(
  channel: Channel,
  count: number,
  totalSize: number,
): Promise<Incoming | Error> {
  await takeUpload(channel);
  await channel.send({ type: "job_queued", job_id: JOB_ID, files_received: 1 });
  await channel.send({ type: "job_started", job_id: JOB_ID });
  await channel.send({
    type: "dicom_transfer_start",
    job_id: JOB_ID,
    count,
    total_size: totalSize,
  });
  return await next(channel);
}

/** Send one result as a real server does (the bytes follow at once). */
async function sendResult(channel: Channel, name: string, text = "evil"): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  await channel.send({ type: "result_file", job_id: JOB_ID, name, size: bytes.length });
  await sendStream(channel, new MemorySource(bytes), bytes.length).catch(() => {});
}

for (const unsafe of ["../evil", "/ABSOLUTE/evil", "sub/../../evil", "..", "a\\..\\evil"]) {
  Deno.test(`submitJob() refuses a result named ${JSON.stringify(unsafe)} and writes nothing`, async () => {
    await using dir = await tempDir();
    const name = unsafe.replace("/ABSOLUTE", path.join(dir.path, "outside"));
    let ack: Incoming | Error | undefined;
    const { error, hostile, downloadDir } = await againstFakeServer(
      dir.path,
      async ({ channel }) => {
        ack = await announceResults(channel, 1, 4);
        await sendResult(channel, name);
      },
    );
    assert.ok(error instanceof ProtocolError, `ProtocolError, got ${error}`);
    assert.match(error.message, /unsafe result name/);
    assert.equal(hostile.length, 1);
    assert.ok(ack && !(ack instanceof Error) && ack.type === "message", "the client answered");
    assert.deepEqual(ack.message, { type: "dicom_transfer_ack", job_id: JOB_ID, status: "ready" });
    assert.deepEqual(await listDir(dir.path), ["P00001.7", "downloads"]);
    assert.deepEqual(await listDir(downloadDir), [JOB_ID]);
    assert.deepEqual(await listDir(path.join(downloadDir, JOB_ID)), [], "nothing was written");
  });
}

const BEYOND_ANNOUNCEMENT: [string, number, number, (channel: Channel) => Promise<void>, RegExp][] =
  [
    [
      "more results than it announced",
      1,
      8,
      async (channel) => {
        await sendResult(channel, "a.dcm");
        await sendResult(channel, "b.dcm");
      },
      /more than the 1 result\(s\) it announced/,
    ],
    [
      "more bytes than it announced",
      2,
      6,
      async (channel) => {
        await sendResult(channel, "a.dcm");
        await sendResult(channel, "b.dcm");
      },
      /more than the 6 bytes it announced/,
    ],
    [
      "the same result twice",
      2,
      8,
      async (channel) => {
        await sendResult(channel, "a.dcm");
        await sendResult(channel, "a.dcm");
      },
      /result "a.dcm" twice/,
    ],
  ];

for (const [what, count, totalSize, send, pattern] of BEYOND_ANNOUNCEMENT) {
  Deno.test(`submitJob() refuses a server that sends ${what}`, async () => {
    await using dir = await tempDir();
    let after: Incoming | Error | "timeout" | undefined;
    const { error, hostile, downloadDir } = await againstFakeServer(
      dir.path,
      async ({ channel }) => {
        await announceResults(channel, count, totalSize);
        await send(channel);
        after = await nextWithin(channel);
      },
    );
    assert.ok(error instanceof ProtocolError, `ProtocolError, got ${error}`);
    assert.match(hostile[0] ?? "", pattern);
    assert.match((error as ProtocolError).hint ?? "", /RECON_DICOM_DIR\/job_.*_output/);
    assert.ok(after instanceof Error, `no results_received: ${JSON.stringify(after)}`);
    assert.deepEqual(await listDir(path.join(downloadDir, JOB_ID)), ["a.dcm"]);
  });
}

Deno.test("submitJob() does not confirm results when recon_complete comes before all of them", async () => {
  await using dir = await tempDir();
  let after: Incoming | Error | "timeout" | undefined;
  const { error } = await againstFakeServer(dir.path, async ({ channel }) => {
    await announceResults(channel, 2, 8);
    await sendResult(channel, "a.dcm");
    await channel.send({ type: "recon_complete", job_id: JOB_ID, count: 2 });
    after = await nextWithin(channel);
  });
  assert.ok(error instanceof TransferError, `TransferError, got ${error}`);
  assert.match(error.message, /with 1 of 2 result file\(s\) \(4 of 8 bytes\)/);
  assert.match(error.hint ?? "", /RECON_DICOM_DIR\/job_.*_output; the 1 that arrived are in /);
  assert.ok(after instanceof Error, `no results_received: ${JSON.stringify(after)}`);
});

// ---------------------------------------------------------------------------
// Job ids: the client uses the server's job id as a directory name.

for (const jobId of ["../x", "..", "x", "0B6F3C8E-5D2A-4C61-9A7E-3F1D2B4C5A69", `${JOB_ID}/..`]) {
  Deno.test(`submitJob() refuses job_queued with the job id ${JSON.stringify(jobId)} and creates nothing`, async () => {
    await using dir = await tempDir();
    let after: Incoming | Error | "timeout" | undefined;
    const { error, downloadDir } = await againstFakeServer(dir.path, async ({ channel }) => {
      await takeUpload(channel);
      await channel.send({ type: "job_queued", job_id: jobId, files_received: 1 });
      // What would follow if the client took that id as its own.
      await channel.send({ type: "dicom_transfer_start", job_id: jobId, count: 1, total_size: 4 })
        .catch(() => {});
      after = await nextWithin(channel);
    });
    assert.ok(error instanceof ProtocolError, `ProtocolError, got ${error}`);
    assert.match(error.message, /job_queued\.job_id must be a job id/);
    assert.ok(after instanceof Error, `the client answered nothing: ${JSON.stringify(after)}`);
    assert.deepEqual(await listDir(dir.path), ["P00001.7"], "nothing was created anywhere");
    assert.deepEqual(await listDir(downloadDir), []);
  });
}

Deno.test("submitJob() treats job_progress about another job as hostile", async () => {
  await using dir = await tempDir();
  const other = "7d6f2c1e-4b1a-4f57-9c39-0f1d2b8e6a11";
  let after: Incoming | Error | "timeout" | undefined;
  const { error, hostile } = await againstFakeServer(dir.path, async ({ channel }) => {
    await takeUpload(channel);
    await channel.send({ type: "job_queued", job_id: JOB_ID, files_received: 1 });
    await channel.send({ type: "job_progress", job_id: other, text: "someone else's scan" });
    after = await nextWithin(channel);
  });
  assert.ok(error instanceof ProtocolError, `ProtocolError, got ${error}`);
  assert.equal(hostile.length, 1);
  assert.equal(
    hostile[0],
    `server sent job_progress for job ${other}, not ours (${JOB_ID})`,
  );
  assert.ok(after instanceof Error, "the client closed the session");
});

Deno.test("submitJob() treats job_failed about another job as hostile", async () => {
  await using dir = await tempDir();
  const other = "7d6f2c1e-4b1a-4f57-9c39-0f1d2b8e6a11";
  const { error, hostile } = await againstFakeServer(dir.path, async ({ channel }) => {
    await takeUpload(channel);
    await channel.send({ type: "job_queued", job_id: JOB_ID, files_received: 1 });
    await channel.send({
      type: "job_failed",
      job_id: other,
      reason: "not yours",
      exit_code: 1,
      stderr_tail: [],
    });
    await nextWithin(channel);
  });
  assert.ok(error instanceof ProtocolError, `ProtocolError, got ${error}`);
  assert.match(hostile[0] ?? "", /job_failed for job 7d6f2c1e/);
});

// ---------------------------------------------------------------------------
// The kind of an `error` from the server decides the client's error (and exit code).

const SERVER_ERRORS: [string, Record<string, unknown>, string, number][] = [
  [
    "kind transfer",
    { type: "error", kind: "transfer", reason: "SHA-256 mismatch" },
    "TransferError",
    ExitCode.TRANSFER,
  ],
  [
    "kind refused",
    { type: "error", kind: "refused", reason: "MAX_JOB_BYTES" },
    "JobError",
    ExitCode.JOB_FAILED,
  ],
  ["no kind (an older server)", { type: "error", reason: "no" }, "JobError", ExitCode.JOB_FAILED],
];

for (const [what, message, expected, exitCode] of SERVER_ERRORS) {
  Deno.test(`submitJob() maps an error of ${what} from the server to ${expected} (exit ${exitCode})`, async () => {
    await using dir = await tempDir();
    const { error } = await againstFakeServer(dir.path, async ({ channel }) => {
      if (message.kind === "transfer") {
        // As the real server does: the upload failed while the file was coming in.
        await channel.send({ type: "request_file", job_id: JOB_ID, name: "P00001.7" });
        await receiveStream(channel, new MemorySink(), CONTENT.length);
      }
      await channel.send(message);
      await nextWithin(channel);
    });
    assert.ok(error instanceof Error, String(error));
    assert.equal(error.constructor.name, expected, String(error));
    assert.ok(error instanceof TransferError === (expected === "TransferError"));
    assert.ok(error instanceof JobError === (expected === "JobError"));
    assert.equal((error as TransferError | JobError).exitCode, exitCode);
    assert.ok(error.message.includes(message.reason as string), error.message);
  });
}

Deno.test("submitJob() reports a hostile server's words without terminal controls", async () => {
  await using dir = await tempDir();
  const { error, hostile } = await againstFakeServer(dir.path, async ({ channel }) => {
    // JSON.stringify escapes C0 controls, not DEL or the C1 CSI (U+009B).
    await channel.send({ type: "request_file", job_id: JOB_ID, name: "\u009b2J\u007fx.7" });
    await nextWithin(channel);
  });
  assert.ok(error instanceof ProtocolError, `ProtocolError, got ${error}`);
  assert.equal(hostile.length, 1);
  assert.ok(hostile[0].includes(`"?2J?x.7"`), hostile[0]);
  // deno-lint-ignore no-control-regex
  assert.doesNotMatch(error.message + hostile[0], /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
});
