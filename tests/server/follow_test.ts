/**
 * Following and fetching jobs by id (docs/PROTOCOL.md §6.7), at the session level
 * against an in-process server and its real job store: `follow_job` with and without
 * `deliver`, several sessions following one job, a fetch repeated, a delivery resumed
 * from the client's `resume_index` / `resume_offset`, and the refusals (unknown id,
 * an upload still in progress, results expired, checked on the spot).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { Channel } from "../../lib/wire/channel.ts";
import { RecordType } from "../../lib/wire/record.ts";
import {
  expectMessage,
  fetchResults,
  nextMessage,
  startTestServer,
  TestClock,
  upload,
} from "../support/test_server.ts";
import { waitFor } from "../support/e2e.ts";

const encoder = new TextEncoder();
const SCAN = encoder.encode("raw k-space of one scan");

/** Writes three results of 300 kB, 5 bytes and 1 MB + 1 from the job id (sorted a, b, c). */
const THREE_RESULTS = `head -c 300000 /dev/zero | tr '\\0' a >"$RECON_OUTPUT_DIR/a.dcm"
printf 'bbbbb' >"$RECON_OUTPUT_DIR/b.dcm"
head -c 1048577 /dev/zero | tr '\\0' c >"$RECON_OUTPUT_DIR/c.dcm"
`;

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** The size of the provenance.json the server added to `jobId`'s results. */
function provenanceSize(
  s: { server: { store: { outputs(id: string): { name: string; size: number }[] } } },
  jobId: string,
): number {
  const output = s.server.store.outputs(jobId).find((file) => file.name === "provenance.json");
  assert.ok(output, `job ${jobId} has a provenance.json among its results`);
  return output.size;
}

/** Submit SCAN and leave: returns the job id once it is queued. */
async function submitAndLeave(s: { connect(): Promise<Channel> }): Promise<string> {
  const channel = await s.connect();
  try {
    return await upload(channel, { "P00001.7": SCAN });
  } finally {
    channel.abort();
  }
}

Deno.test("follow_job of an unknown job is answered not_found and the session goes on", async () => {
  await using s = await startTestServer();
  const channel = await s.connect();
  try {
    const id = crypto.randomUUID();
    await channel.send({ type: "follow_job", job_id: id, deliver: true });
    assert.deepEqual(await nextMessage(channel), {
      type: "error",
      kind: "not_found",
      reason: `no job ${id} on this server`,
    });
    await channel.send({ type: "get_server_status" });
    assert.equal((await nextMessage(channel)).type, "server_status_response");
    await channel.close();
  } finally {
    channel.abort();
  }
});

Deno.test("follow_job of a job still being uploaded is refused: its client resumes it", async () => {
  await using s = await startTestServer();
  await using uploader = await s.raw();
  await uploader.sendMessage({
    type: "submit_recon_job",
    file_count: 1,
    client_recon_options_json: "{}",
  });
  await uploader.sendMessage({ type: "input_file", name: "P00001.7", size: SCAN.length });
  const request = await uploader.nextMessage();
  const jobId = request?.job_id as string;
  await uploader.send(RecordType.DATA, SCAN.subarray(0, 5));
  const channel = await s.connect();
  try {
    await channel.send({ type: "follow_job", job_id: jobId });
    assert.deepEqual(await nextMessage(channel), {
      type: "error",
      kind: "refused",
      reason: `job ${jobId} is still being uploaded; its client resumes it`,
    });
  } finally {
    channel.abort();
  }
});

Deno.test("follow_job without deliver sends the job's status, its events, then its final status", async () => {
  await using s = await startTestServer({
    script: `echo PROGRESS 50\necho working\nsleep 0.5\nprintf x >"$RECON_OUTPUT_DIR/r.dcm"\n`,
  });
  const jobId = await submitAndLeave(s);
  const channel = await s.connect();
  try {
    await channel.send({ type: "follow_job", job_id: jobId });
    const first = await nextMessage(channel);
    assert.equal(first.type, "job_status");
    const job = first.job as Record<string, unknown>;
    assert.equal(job.job_id, jobId);
    assert.ok(["queued", "running"].includes(job.state as string), JSON.stringify(job));
    const seen: string[] = [];
    let message = await nextMessage(channel);
    while (message.type !== "job_status") {
      seen.push(message.type as string);
      message = await nextMessage(channel);
    }
    const final = message.job as Record<string, unknown>;
    assert.equal(final.state, "succeeded");
    // r.dcm and the server's provenance.json.
    assert.equal(final.result_count, 2);
    assert.equal(final.result_bytes, 1 + provenanceSize(s, jobId));
    assert.ok(typeof final.results_expire_at === "string");
    if (job.state === "queued") assert.equal(seen[0], "job_started");
    // Back at top level: nothing was delivered, the results stay.
    await channel.send({ type: "get_server_status" });
    assert.equal((await nextMessage(channel)).type, "server_status_response");
    assert.equal(s.server.store.get(jobId)!.deliveredAt, undefined);
    await channel.close();
  } finally {
    channel.abort();
  }
});

Deno.test("two sessions follow one job and both receive its results; a fetch can be repeated", async () => {
  await using s = await startTestServer({
    script: `sleep 0.5\nprintf 'image' >"$RECON_OUTPUT_DIR/result.dcm"\n`,
  });
  const jobId = await submitAndLeave(s);
  const followers = [await s.connect(), await s.connect()];
  try {
    for (const channel of followers) {
      await channel.send({ type: "follow_job", job_id: jobId, deliver: true });
      assert.equal((await nextMessage(channel)).type, "job_status");
    }
    const fetched = await Promise.all(followers.map((channel) => fetchResults(channel, jobId)));
    for (const { files } of fetched) {
      assert.deepEqual([...files.keys()].sort(), ["provenance.json", "result.dcm"]);
      assert.equal(new TextDecoder().decode(files.get("result.dcm")), "image");
    }
    await s.logLine(new RegExp(`job ${jobId}: delivered 2 result file`));
    const delivered = s.server.store.get(jobId)!.deliveredAt;
    assert.ok(delivered !== undefined);
    // And once more, after the job finished: the results are still there.
    const again = await s.connect();
    try {
      await again.send({ type: "follow_job", job_id: jobId, deliver: true });
      const status = await nextMessage(again);
      assert.equal((status.job as { state: string }).state, "succeeded");
      const { files } = await fetchResults(again, jobId);
      assert.equal(new TextDecoder().decode(files.get("result.dcm")), "image");
      await again.close();
    } finally {
      again.abort();
    }
    await waitFor(
      "the third delivery to be logged",
      () =>
        s.lines.filter((line) => line.includes(`job ${jobId}: delivered 2 result file`))
          .length === 3,
    );
    assert.equal(s.server.store.get(jobId)!.deliveredAt, delivered, "the first delivery counts");
  } finally {
    for (const channel of followers) channel.abort();
  }
});

Deno.test("a resumed delivery skips the results the client holds and sends the next from its offset", async () => {
  await using s = await startTestServer({ script: THREE_RESULTS });
  const jobId = await submitAndLeave(s);
  await waitFor("the job to succeed", () => s.server.store.get(jobId)?.state === "succeeded");
  const channel = await s.connect();
  try {
    await channel.send({ type: "follow_job", job_id: jobId, deliver: true });
    assert.equal((await nextMessage(channel)).type, "job_status");
    const start = await expectMessage(channel, "dicom_transfer_start");
    const provenance = provenanceSize(s, jobId);
    assert.equal(start.count, 4, "a.dcm, b.dcm, c.dcm and the server's provenance.json");
    assert.equal(start.total_size, 300000 + 5 + 1048577 + provenance);
    // Holds a.dcm whole and 2 bytes of b.dcm.
    await channel.send({
      type: "dicom_transfer_ack",
      job_id: jobId,
      status: "ready",
      resume_index: 1,
      resume_offset: 2,
    });
    const b = await nextMessage(channel);
    assert.deepEqual(b, { type: "result_file", job_id: jobId, name: "b.dcm", size: 5, offset: 2 });
    const bData = await channel.receive();
    assert.equal(bData.type, "data");
    assert.equal(new TextDecoder().decode((bData as { bytes: Uint8Array }).bytes), "bbb");
    const bEnd = await channel.receive();
    assert.deepEqual(bEnd, { type: "file_end", size: 5, sha256: sha256(encoder.encode("bbbbb")) });
    const c = await nextMessage(channel);
    assert.deepEqual(c, { type: "result_file", job_id: jobId, name: "c.dcm", size: 1048577 });
    let received = 0;
    for (
      let record = await channel.receive();
      record.type === "data";
      record = await channel.receive()
    ) {
      received += record.bytes.length;
    }
    assert.equal(received, 1048577);
    assert.deepEqual(await nextMessage(channel), {
      type: "result_file",
      job_id: jobId,
      name: "provenance.json",
      size: provenance,
    });
    received = 0;
    for (
      let record = await channel.receive();
      record.type === "data";
      record = await channel.receive()
    ) {
      received += record.bytes.length;
    }
    assert.equal(received, provenance);
    assert.deepEqual(await nextMessage(channel), {
      type: "recon_complete",
      job_id: jobId,
      count: 4,
    });
    await channel.send({ type: "results_received", job_id: jobId });
    await s.logLine(/the client holds 1 result\(s\) and 2 bytes of the next; sending the rest/);
    await s.logLine(new RegExp(`job ${jobId}: delivered 4 result file`));
    await channel.close();
  } finally {
    channel.abort();
  }
});

Deno.test("a resume_index beyond the results ends the session; the results stay", async () => {
  await using s = await startTestServer();
  const jobId = await submitAndLeave(s);
  await waitFor("the job to succeed", () => s.server.store.get(jobId)?.state === "succeeded");
  const channel = await s.connect();
  try {
    await channel.send({ type: "follow_job", job_id: jobId, deliver: true });
    await nextMessage(channel);
    await expectMessage(channel, "dicom_transfer_start");
    await channel.send({
      type: "dicom_transfer_ack",
      job_id: jobId,
      status: "ready",
      resume_index: 3,
    });
    await assert.rejects(channel.receive());
    // The script's one result and the server's provenance.json.
    await s.logLine(/says it holds 3 results of 2 \(resume_index\)/);
    assert.equal(s.server.store.get(jobId)!.state, "succeeded");
  } finally {
    channel.abort();
  }
});

Deno.test("a follow of a job past RESULT_RETENTION expires it on the spot: error expired, results removed", async () => {
  const clock = new TestClock();
  await using s = await startTestServer({ clock, config: { RESULT_RETENTION: 3600 } });
  const jobId = await submitAndLeave(s);
  await waitFor("the job to succeed", () => s.server.store.get(jobId)?.state === "succeeded");
  // Long before the next periodic sweep (every 60 s): the answer must not wait for it.
  clock.advance(3601);
  const channel = await s.connect();
  try {
    await channel.send({ type: "follow_job", job_id: jobId, deliver: true });
    const answer = await nextMessage(channel);
    const record = s.server.store.get(jobId)!;
    assert.equal(record.state, "expired");
    assert.deepEqual(answer, {
      type: "error",
      kind: "expired",
      reason: `job ${jobId} expired on ${
        new Date(record.resultsExpireAt!).toISOString()
      }, its results were removed`,
    });
    await s.logLine(
      new RegExp(`job ${jobId}: results expired \\(RESULT_RETENTION 3600 s\\); removed `),
    );
    await waitFor("the output to be removed", async () => {
      try {
        await Deno.lstat(s.outputDir(jobId));
        return false;
      } catch {
        return true;
      }
    });
    // Without deliver too: an expired job is answered the same way.
    await channel.send({ type: "follow_job", job_id: jobId });
    assert.equal((await nextMessage(channel)).kind, "expired");
    await channel.close();
  } finally {
    channel.abort();
  }
});

Deno.test("follow_job with deliver of a failed job answers job_failed with its reason and exit code", async () => {
  await using s = await startTestServer({ script: "echo broken >&2\nexit 4\n" });
  const jobId = await submitAndLeave(s);
  await waitFor("the job to fail", () => s.server.store.get(jobId)?.state === "failed");
  const channel = await s.connect();
  try {
    await channel.send({ type: "follow_job", job_id: jobId, deliver: true });
    const status = await nextMessage(channel);
    assert.equal((status.job as { state: string }).state, "failed");
    assert.deepEqual(await nextMessage(channel), {
      type: "job_failed",
      job_id: jobId,
      reason: "the reconstruction script exited with code 4",
      exit_code: 4,
      stderr_tail: ["broken"],
    });
    await channel.close();
  } finally {
    channel.abort();
  }
});
