/**
 * Cut-off uploads and `resume_upload` (docs/PROTOCOL.md §6.1 step 3, §6.8) at the
 * session level against an in-process server and its real job store: the job is
 * recorded before the first `request_file`; a version 3 upload cut off keeps its
 * verified bytes, and a new session sends only the rest (whole-file SHA-256 checked);
 * a session still attached to the upload is taken over; a wrong SHA-256 discards
 * the partial bytes; the refusals (unknown, already queued, window over), and the
 * window counted from the cut-off and ended by the sweeper.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { RecordType } from "../../lib/wire/record.ts";
import { sendStream } from "../../lib/wire/transfer.ts";
import type { RawClient } from "../support/raw_peer.ts";
import { BytesReader } from "../support/memory_duplex.ts";
import { listDir, randomBytes, waitFor } from "../support/e2e.ts";
import {
  fetchResults,
  nextMessage,
  startTestServer,
  TestClock,
  type TestServer,
  upload,
} from "../support/test_server.ts";

const encoder = new TextEncoder();
const FIRST = encoder.encode("the first scan, whole");
const SECOND = randomBytes(200_000);

/** Copies the inputs into the results, so a test can check what arrived. */
const COPY_SCRIPT = `for f in "$1"/*; do cp -- "$f" "$RECON_OUTPUT_DIR/"; done\n`;

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
 * A raw version 3 client that announces FIRST and SECOND, sends FIRST whole and
 * `cut` bytes of SECOND; returns it (still connected) and the job id.
 */
async function cutUpload(
  s: TestServer,
  cut: number,
): Promise<{ client: RawClient; jobId: string }> {
  const client = await s.raw();
  await client.sendMessage({
    type: "submit_recon_job",
    file_count: 2,
    client_recon_options_json: "{}",
  });
  await client.sendMessage({ type: "input_file", name: "P1.7", size: FIRST.length });
  await client.sendMessage({ type: "input_file", name: "P2.7", size: SECOND.length });
  const first = await client.nextMessage();
  assert.equal(first?.name, "P1.7");
  const jobId = first?.job_id as string;
  assert.equal(s.server.store.get(jobId)?.state, "receiving", "recorded before request_file");
  await client.send(RecordType.DATA, FIRST);
  await client.send(RecordType.FILE_END, fileEnd(FIRST.length, sha256(FIRST)));
  const second = await client.nextMessage();
  assert.equal(second?.name, "P2.7");
  assert.equal(second?.offset, undefined, "a first request starts at 0");
  if (cut > 0) await client.send(RecordType.DATA, SECOND.subarray(0, cut));
  return { client, jobId };
}

Deno.test("a cut-off version 3 upload resumes from the bytes the server verified, and the job runs on the whole files", async () => {
  await using s = await startTestServer({ script: COPY_SCRIPT });
  const { client, jobId } = await cutUpload(s, 120_000);
  await s.logLine(new RegExp(`job ${jobId}: received|job ${jobId}: receiving`));
  await waitFor("the partial bytes to land", async () => {
    try {
      return (await Deno.stat(`${s.inputDir(jobId)}/-partial-1`)).size === 120_000;
    } catch {
      return false;
    }
  });
  client.conn.close();
  await s.logLine(
    new RegExp(
      `job ${jobId}: upload cut off with ${FIRST.length + 120_000} of ${
        FIRST.length + SECOND.length
      } bytes verified .*may resume it until `,
    ),
  );
  assert.equal(s.server.store.get(jobId)!.state, "receiving");

  const channel = await s.connect();
  try {
    await channel.send({ type: "resume_upload", job_id: jobId });
    const request = await nextMessage(channel);
    assert.deepEqual(request, {
      type: "request_file",
      job_id: jobId,
      name: "P2.7",
      offset: 120_000,
    }, "only the file not yet whole, from its verified length");
    // The rest, with the whole file's size and SHA-256 at FILE_END.
    const hash = createHash("sha256").update(SECOND.subarray(0, 120_000));
    await sendStream(channel, new BytesReader(SECOND.subarray(120_000)), SECOND.length, undefined, {
      offset: 120_000,
      hash,
    });
    assert.deepEqual(await nextMessage(channel), {
      type: "job_queued",
      job_id: jobId,
      files_received: 2,
    });
    const { files } = await fetchResults(channel, jobId);
    assert.deepEqual(files.get("P1.7"), FIRST);
    assert.deepEqual(files.get("P2.7"), SECOND);
    await s.logLine(/resuming its upload: 1 of 2 file\(s\) to go, \d+ of \d+ bytes held/);
    await channel.close();
  } finally {
    channel.abort();
  }
});

Deno.test("resume_upload takes over from a session still attached to the upload", async () => {
  await using s = await startTestServer({ script: COPY_SCRIPT });
  // The old connection is alive as far as the server knows (a laptop lid closed).
  const { client, jobId } = await cutUpload(s, 50_000);
  await waitFor("the partial bytes to land", async () => {
    try {
      return (await Deno.stat(`${s.inputDir(jobId)}/-partial-1`)).size === 50_000;
    } catch {
      return false;
    }
  });
  const channel = await s.connect();
  try {
    await channel.send({ type: "resume_upload", job_id: jobId });
    const request = await nextMessage(channel);
    assert.equal(request.offset, 50_000);
    assert.equal(await client.next(), null, "the old session was closed");
    const hash = createHash("sha256").update(SECOND.subarray(0, 50_000));
    await sendStream(channel, new BytesReader(SECOND.subarray(50_000)), SECOND.length, undefined, {
      offset: 50_000,
      hash,
    });
    assert.equal((await nextMessage(channel)).type, "job_queued");
    const { files } = await fetchResults(channel, jobId);
    assert.deepEqual(files.get("P2.7"), SECOND);
    await channel.close();
  } finally {
    channel.abort();
    client.conn.close();
  }
});

Deno.test("a resumed file whose whole SHA-256 does not match is discarded; the next resume starts it from 0", async () => {
  await using s = await startTestServer({ script: COPY_SCRIPT });
  const { client, jobId } = await cutUpload(s, 50_000);
  client.conn.close();
  await s.logLine(new RegExp(`job ${jobId}: upload cut off`));
  await using second = await s.raw();
  await second.sendMessage({ type: "resume_upload", job_id: jobId });
  const request = await second.nextMessage();
  assert.equal(request?.offset, 50_000);
  // The client's file changed since: the rest is not what the first part belongs to.
  const changed = SECOND.slice();
  changed[0] ^= 0xff;
  await second.send(RecordType.DATA, changed.subarray(50_000));
  await second.send(RecordType.FILE_END, fileEnd(changed.length, sha256(changed)));
  const answer = await second.nextMessage();
  assert.equal(answer?.kind, "transfer");
  assert.match(answer?.reason as string, /SHA-256 mismatch/);
  assert.equal(s.server.store.get(jobId)!.state, "receiving");
  await waitFor(
    "the partial to be emptied",
    async () => (await Deno.stat(`${s.inputDir(jobId)}/-partial-1`)).size === 0,
  );
  const channel = await s.connect();
  try {
    await channel.send({ type: "resume_upload", job_id: jobId });
    const again = await nextMessage(channel);
    assert.equal(again.name, "P2.7");
    assert.equal(again.offset, undefined, "from the start");
    await sendStream(channel, new BytesReader(changed), changed.length);
    assert.equal((await nextMessage(channel)).type, "job_queued");
    const { files } = await fetchResults(channel, jobId);
    assert.deepEqual(files.get("P2.7"), changed);
    await channel.close();
  } finally {
    channel.abort();
  }
});

Deno.test("resume_upload is refused for an unknown job and for one already queued; the session goes on", async () => {
  await using s = await startTestServer({ script: "sleep 5\n" });
  const channel = await s.connect();
  try {
    const unknown = crypto.randomUUID();
    await channel.send({ type: "resume_upload", job_id: unknown });
    assert.deepEqual(await nextMessage(channel), {
      type: "error",
      kind: "not_found",
      reason: `no job ${unknown} on this server`,
    });
    const other = await s.connect();
    const jobId = await upload(other, { "P1.7": FIRST });
    other.abort();
    await channel.send({ type: "resume_upload", job_id: jobId });
    const refusal = await nextMessage(channel);
    assert.equal(refusal.kind, "refused");
    assert.match(
      refusal.reason as string,
      new RegExp(
        `^job ${jobId} is already (queued|running): its upload is complete; follow it instead$`,
      ),
    );
    await channel.send({ type: "get_server_status" });
    assert.equal((await nextMessage(channel)).type, "server_status_response");
    await channel.close();
  } finally {
    channel.abort();
  }
});

Deno.test("an upload not resumed within UPLOAD_RESUME_WINDOW of its cut-off fails, and its partial input is removed", async () => {
  const clock = new TestClock();
  await using s = await startTestServer({ clock, config: { UPLOAD_RESUME_WINDOW: 600 } });
  // Cut off 500 s after it began: the window counts from the cut-off, not the start.
  const { client, jobId } = await cutUpload(s, 1000);
  clock.advance(500);
  client.conn.close();
  await s.logLine(new RegExp(`job ${jobId}: upload cut off`));
  clock.advance(400);
  await s.server.sweeper.sweep();
  assert.equal(
    s.server.store.get(jobId)!.state,
    "receiving",
    "900 s after it began, 400 after the cut",
  );
  clock.advance(201);
  const channel = await s.connect();
  try {
    await channel.send({ type: "resume_upload", job_id: jobId });
    const answer = await nextMessage(channel);
    assert.equal(answer.kind, "expired");
    assert.match(
      answer.reason as string,
      new RegExp(
        `^the upload of job ${jobId} was not resumed in time and was removed on .*: the upload was not completed within UPLOAD_RESUME_WINDOW \\(600 s\\)$`,
      ),
    );
    const record = s.server.store.get(jobId)!;
    assert.equal(record.state, "failed");
    assert.equal(record.reason, "the upload was not completed within UPLOAD_RESUME_WINDOW (600 s)");
    await waitFor(
      "the partial input to be removed",
      async () => (await listDir(s.config.RECON_FILEPATH)).length === 0,
    );
    await s.logLine(new RegExp(`job ${jobId}: failed: the upload was not completed .*; removed `));
    await channel.close();
  } finally {
    channel.abort();
  }
});

Deno.test("a version 2 upload cut off fails its job at once and removes its input", async () => {
  await using s = await startTestServer();
  await using client = await s.raw(2);
  await client.sendMessage({
    type: "submit_recon_job",
    file_count: 1,
    client_recon_options_json: "{}",
  });
  await client.sendMessage({ type: "input_file", name: "P1.7", size: SECOND.length });
  const request = await client.nextMessage();
  const jobId = request?.job_id as string;
  await client.send(RecordType.DATA, SECOND.subarray(0, 1000));
  client.conn.close();
  await s.logLine(new RegExp(`job ${jobId}: upload failed, removed `));
  const record = s.server.store.get(jobId)!;
  assert.equal(record.state, "failed");
  assert.match(record.reason!, /^the upload failed: /);
  assert.deepEqual(await listDir(s.config.RECON_FILEPATH), []);
});

Deno.test("the job id of a submission is in every request_file, and the job is listed while it uploads", async () => {
  await using s = await startTestServer();
  const channel = await s.connect();
  try {
    const jobId = await upload(channel, { "P1.7": FIRST }, { priority: "high" });
    const record = s.server.store.get(jobId)!;
    assert.equal(record.priority, "high");
    assert.equal(record.fileCount, 1);
    assert.equal(record.inputBytes, FIRST.length);
    assert.equal(
      s.server.store.inputs(jobId)[0].sha256,
      createHash("sha256").update(FIRST).digest("hex"),
    );
  } finally {
    channel.abort();
  }
});
