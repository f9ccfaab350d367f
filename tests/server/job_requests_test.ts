/**
 * The version 3 requests about jobs (docs/PROTOCOL.md §6.9) and the extended status
 * and queue answers, at the session level against an in-process server and its real
 * job store: `list_jobs` in pages, `cancel_job` at top level in each state (a running
 * job's processes are all stopped), `get_job_log` in pieces, `rerun_job` from kept
 * inputs, `server_status_response` and `queue_details_response` for version 3, and
 * the words versions 1 and 2 always saw.
 */
import assert from "node:assert/strict";
import type { Channel } from "../../lib/wire/channel.ts";
import { RecordType } from "../../lib/wire/record.ts";
import { findJobProcesses } from "../../lib/server/job_processes.ts";
import { listDir, waitFor } from "../support/e2e.ts";
import {
  expectMessage,
  fetchResults,
  nextMessage,
  startTestServer,
  TestClock,
  upload,
} from "../support/test_server.ts";

const encoder = new TextEncoder();
const SCAN = encoder.encode("raw k-space of one scan");

/** Sleeps for the seconds of its `--sleep` option (default 0), then writes one result. */
const SLEEP_SCRIPT = `seconds=0
while [ $# -gt 0 ]; do
  case "$1" in --sleep) seconds=$2; shift ;; esac
  shift
done
sleep "$seconds"
printf 'image' >"$RECON_OUTPUT_DIR/result.dcm"
`;

/** Submit SCAN (with `extra` in submit_recon_job) and leave once it is queued. */
async function submit(s: { connect(): Promise<Channel> }, extra: Record<string, unknown> = {}) {
  const channel = await s.connect();
  try {
    return await upload(channel, { "P00001.7": SCAN }, extra);
  } finally {
    channel.abort();
  }
}

/** One request, one answer, in a session of its own. */
async function ask(
  s: { connect(): Promise<Channel> },
  message: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const channel = await s.connect();
  try {
    await channel.send(message);
    const answer = await nextMessage(channel);
    await channel.close();
    return answer;
  } finally {
    channel.abort();
  }
}

Deno.test("list_jobs pages through every job in submission order, with a state filter and queue positions", async () => {
  await using s = await startTestServer({ script: SLEEP_SCRIPT });
  const running = await submit(s, { client_recon_options_json: '{"sleep": 30}' });
  await waitFor("the first job to run", () => s.server.store.get(running)?.state === "running");
  const low = await submit(s, { priority: "low" });
  const normal = await submit(s);
  const high = await submit(s, { priority: "high" });
  const page1 = await ask(s, { type: "list_jobs", limit: 3 });
  assert.equal(page1.type, "job_list");
  const jobs1 = page1.jobs as Record<string, unknown>[];
  assert.deepEqual(jobs1.map((job) => job.job_id), [running, low, normal]);
  assert.equal(jobs1[0].state, "running");
  assert.equal(jobs1[1].queue_position, 3, "low waits behind high and normal");
  assert.equal(jobs1[2].queue_position, 2);
  assert.equal(jobs1[1].priority, "low");
  assert.equal(typeof page1.cursor, "string");
  const page2 = await ask(s, { type: "list_jobs", limit: 3, cursor: page1.cursor });
  const jobs2 = page2.jobs as Record<string, unknown>[];
  assert.deepEqual(jobs2.map((job) => job.job_id), [high]);
  assert.equal(jobs2[0].queue_position, 1);
  assert.equal(page2.cursor, undefined, "no more pages");
  const queued = await ask(s, { type: "list_jobs", state: "queued" });
  assert.deepEqual((queued.jobs as { job_id: string }[]).map((job) => job.job_id), [
    low,
    normal,
    high,
  ]);
  const bad = await ask(s, { type: "list_jobs", cursor: "not ours" });
  assert.equal(bad.type, "error");
  assert.equal(bad.kind, "refused");
});

Deno.test("cancel_job at top level cancels a queued job: its input goes, the reason and who asked are recorded", async () => {
  await using s = await startTestServer({ script: SLEEP_SCRIPT });
  const running = await submit(s, { client_recon_options_json: '{"sleep": 30}' });
  const queued = await submit(s);
  const answer = await ask(s, { type: "cancel_job", job_id: queued, reason: "wrong protocol" });
  assert.equal(answer.type, "job_status");
  const job = answer.job as Record<string, unknown>;
  assert.equal(job.state, "cancelled");
  assert.equal(job.reason, "wrong protocol");
  assert.match(
    job.cancelled_by as string,
    /^default at 127\.0\.0\.1:\d+$/,
  );
  assert.equal(await listDir(s.inputDir(queued)).then((names) => names.length), 0);
  assert.deepEqual(
    (await listDir(s.config.RECON_FILEPATH)).filter((name) => name.endsWith("_input")),
    [`job_${running}_input`],
  );
  // Cancelling it again, or a job that does not exist, is refused.
  const again = await ask(s, { type: "cancel_job", job_id: queued });
  assert.equal(again.kind, "refused");
  assert.match(
    again.reason as string,
    new RegExp(`^job ${queued} already cancelled \\(finished .*Z\\); there is nothing to cancel$`),
  );
  const unknown = crypto.randomUUID();
  assert.deepEqual(await ask(s, { type: "cancel_job", job_id: unknown }), {
    type: "error",
    kind: "not_found",
    reason: `no job ${unknown} on this server`,
  });
});

Deno.test("cancel_job at top level of a running job stops every process of its script before it answers", async () => {
  await using s = await startTestServer({
    // A helper that leaves the script's process group carries RECON_JOB_ID all the same.
    script: "setsid sleep 60 &\nsleep 60\n",
  });
  const jobId = await submit(s);
  await waitFor(
    "the script and its helper",
    async () => (await findJobProcesses(jobId)).length >= 2,
  );
  const answer = await ask(s, { type: "cancel_job", job_id: jobId });
  const job = answer.job as Record<string, unknown>;
  assert.equal(job.state, "cancelled");
  assert.equal(job.reason, "the job was cancelled");
  assert.deepEqual(await findJobProcesses(jobId), [], "no process of the job survives");
  assert.deepEqual(await listDir(s.config.RECON_DICOM_DIR), []);
  assert.deepEqual(
    (await listDir(s.config.RECON_FILEPATH)).filter((name) => name.startsWith(`job_${jobId}_`)),
    [],
  );
});

Deno.test("cancel_job of a finished job is refused, and cancel_job at top level of a version 2 session closes it", async () => {
  await using s = await startTestServer();
  const jobId = await submit(s);
  await waitFor("the job to succeed", () => s.server.store.get(jobId)?.state === "succeeded");
  const answer = await ask(s, { type: "cancel_job", job_id: jobId });
  assert.equal(answer.kind, "refused");
  assert.match(
    answer.reason as string,
    /already succeeded \(finished .*\); there is nothing to cancel$/,
  );
  const v2 = await s.connect(2);
  try {
    await v2.send({ type: "cancel_job", job_id: jobId });
    await assert.rejects(v2.receive());
    await s.logLine(/client sent cancel_job outside a job/);
  } finally {
    v2.abort();
  }
  assert.equal(s.server.store.get(jobId)!.state, "succeeded");
});

Deno.test("get_job_log returns the script's output in pieces that end at a line end, final once the job is", async () => {
  const line = "x".repeat(99); // 100 bytes with its newline
  await using s = await startTestServer({
    script:
      `i=0\nwhile [ $i -lt 1000 ]; do echo ${line}; i=$((i + 1)); done\nprintf 'r' >"$RECON_OUTPUT_DIR/r.dcm"\n`,
  });
  const jobId = await submit(s);
  await waitFor("the job to succeed", () => s.server.store.get(jobId)?.state === "succeeded");
  const logSize = (await Deno.stat(s.server.store.get(jobId)!.logPath)).size;
  let offset = 0;
  let text = "";
  let pieces = 0;
  while (true) {
    const piece = await ask(s, { type: "get_job_log", job_id: jobId, offset });
    assert.equal(piece.type, "job_log");
    assert.equal(piece.offset, offset);
    const bytes = encoder.encode(piece.text as string).length;
    assert.ok(bytes <= 65536, `${bytes} bytes`);
    assert.equal(piece.next_offset, offset + bytes);
    text += piece.text;
    offset = piece.next_offset as number;
    pieces++;
    if (piece.final) break;
    assert.ok((piece.text as string).endsWith("\n"), "a piece ends at a line end");
  }
  assert.equal(offset, logSize);
  assert.ok(pieces >= 2, `${pieces} pieces`);
  assert.equal(text.split("\n").filter((l) => l === line).length, 1000);
  const beyond = await ask(s, { type: "get_job_log", job_id: jobId, offset: logSize + 1 });
  assert.equal(beyond.kind, "refused");
  const unknown = await ask(s, { type: "get_job_log", job_id: crypto.randomUUID() });
  assert.equal(unknown.kind, "not_found");
});

Deno.test("get_job_log of a job that has not started yet is an empty piece, not final", async () => {
  await using s = await startTestServer({ script: SLEEP_SCRIPT });
  await submit(s, { client_recon_options_json: '{"sleep": 30}' });
  const queued = await submit(s);
  assert.deepEqual(await ask(s, { type: "get_job_log", job_id: queued }), {
    type: "job_log",
    job_id: queued,
    offset: 0,
    next_offset: 0,
    text: "",
  });
});

Deno.test("rerun_job runs a failed job again from its kept inputs, with new options, as a new job", async () => {
  await using s = await startTestServer({
    script: `case "$*" in *--fixed*) ;; *) echo "needs --fixed" >&2; exit 2 ;; esac
cp -- "$1"/P00001.7 "$RECON_OUTPUT_DIR/copy.dcm"
`,
  });
  const failed = await submit(s);
  await waitFor("the job to fail", () => s.server.store.get(failed)?.state === "failed");
  const kept = s.server.store.get(failed)!;
  assert.deepEqual(await listDir(kept.inputDir), ["P00001.7"], "the inputs are kept");
  const channel = await s.connect();
  try {
    await channel.send({
      type: "rerun_job",
      job_id: failed,
      client_recon_options_json: '{"fixed": true}',
      priority: "high",
    });
    const queued = await nextMessage(channel);
    assert.equal(queued.type, "job_queued");
    const rerun = queued.job_id as string;
    assert.notEqual(rerun, failed);
    assert.equal(queued.files_received, 1);
    const { files } = await fetchResults(channel, rerun);
    assert.deepEqual(files.get("copy.dcm"), SCAN, "the same bytes, not uploaded again");
    const record = s.server.store.get(rerun)!;
    assert.equal(record.rerunOf, failed);
    assert.equal(record.priority, "high");
    assert.deepEqual(record.options, { fixed: true });
    assert.equal(s.server.store.get(failed)!.inputsRemoved, true, "the inputs moved");
    // The old job cannot be re-run again: its inputs went to the new one.
    await channel.send({ type: "rerun_job", job_id: failed });
    const refusal = await nextMessage(channel);
    assert.equal(refusal.kind, "refused");
    assert.equal(
      refusal.reason,
      `the inputs of job ${failed} went to its re-run ${rerun} (succeeded); re-run that job if it failed`,
    );
    // Nor can a job that did not fail.
    await channel.send({ type: "rerun_job", job_id: rerun });
    const notFailed = await nextMessage(channel);
    assert.equal(notFailed.kind, "refused");
    assert.equal(notFailed.reason, `job ${rerun} has succeeded; only a failed job can be re-run`);
    await channel.close();
  } finally {
    channel.abort();
  }
});

Deno.test("rerun_job after FAILED_INPUT_RETENTION is answered expired, and the sweeper removes the inputs", async () => {
  const clock = new TestClock();
  await using s = await startTestServer({
    clock,
    script: "exit 1\n",
    config: { FAILED_INPUT_RETENTION: 600 },
  });
  const failed = await submit(s);
  await waitFor("the job to fail", () => s.server.store.get(failed)?.state === "failed");
  clock.advance(601);
  const answer = await ask(s, { type: "rerun_job", job_id: failed });
  assert.equal(answer.kind, "expired");
  assert.match(answer.reason as string, /FAILED_INPUT_RETENTION\); submit its files again$/);
  await s.server.sweeper.sweep();
  assert.equal(s.server.store.get(failed)!.inputsRemoved, true);
  assert.equal(s.server.store.get(failed)!.state, "failed", "a failed job stays failed");
  await s.logLine(
    new RegExp(`job ${failed}: the failed job's inputs expired \\(FAILED_INPUT_RETENTION 600 s\\)`),
  );
  assert.deepEqual(
    (await listDir(s.config.RECON_FILEPATH)).filter((name) => name.endsWith("_input")),
    [],
  );
});

Deno.test("server_status_response in version 3 counts queued jobs by priority and the bytes kept", async () => {
  await using s = await startTestServer({
    script: SLEEP_SCRIPT,
    diskFree: () => Promise.resolve(123_456_789),
    config: { DISK_FREE_MARGIN: 1000 },
  });
  const first = await submit(s, { client_recon_options_json: '{"sleep": 30}' });
  await waitFor("the first job to run", () => s.server.store.get(first)?.state === "running");
  await submit(s, { priority: "high" });
  await submit(s, { priority: "low" });
  await submit(s, { priority: "low" });
  const status = await ask(s, { type: "get_server_status" });
  assert.equal(status.active_workers, 1);
  assert.equal(status.queue_length, 3);
  assert.equal(status.queued_high, 1);
  assert.equal(status.queued_normal, 0);
  assert.equal(status.queued_low, 2);
  assert.equal(status.kept_input_bytes, 4 * SCAN.length);
  assert.equal(status.kept_result_bytes, 0);
  assert.equal(status.disk_free_bytes, 123_456_789);
  assert.equal(status.disk_free_margin, 1000);
  assert.equal(status.jobs_cancelled, 0);
  // Version 2 gets the members it always got, and nothing more.
  const v2 = await s.connect(2);
  try {
    await v2.send({ type: "get_server_status" });
    assert.deepEqual(Object.keys(await nextMessage(v2)).sort(), [
      "active_workers",
      "jobs_completed",
      "jobs_failed",
      "max_concurrent_jobs",
      "queue_length",
      "type",
      "uptime_seconds",
      "version",
    ]);
    await v2.close();
  } finally {
    v2.abort();
  }
});

Deno.test("queue_details_response: version 3 sees states, priorities and queue positions; versions 1 and 2 the old words", async () => {
  await using s = await startTestServer({ script: SLEEP_SCRIPT });
  const running = await submit(s, { client_recon_options_json: '{"sleep": 30}' });
  await waitFor("the first job to run", () => s.server.store.get(running)?.state === "running");
  const low = await submit(s, { priority: "low" });
  const high = await submit(s, { priority: "high" });
  const v3 = await ask(s, { type: "get_queue_details" });
  const jobs = v3.jobs as Record<string, unknown>[];
  assert.deepEqual(jobs.map((job) => [job.job_id, job.status, job.priority, job.queue_position]), [
    [running, "running", "normal", undefined],
    [high, "queued", "high", 1],
    [low, "queued", "low", 2],
  ]);
  for (const version of [1, 2]) {
    const channel = await s.connect(version);
    try {
      await channel.send({ type: "get_queue_details" });
      const old = (await expectMessage(channel, "queue_details_response")).jobs as Record<
        string,
        unknown
      >[];
      assert.deepEqual(old.map((job) => [job.job_id, job.status]), [
        [running, "processing"],
        [high, "queued"],
        [low, "queued"],
      ]);
      assert.ok(old.every((job) => !("priority" in job) && !("queue_position" in job)));
      assert.equal(old[0].input_dir, `job_${running}_input`);
      await channel.close();
    } finally {
      channel.abort();
    }
  }
});

Deno.test("cancel_job of a job being uploaded stops the upload session and removes the partial input", async () => {
  await using s = await startTestServer();
  await using uploader = await s.raw();
  await uploader.sendMessage({
    type: "submit_recon_job",
    file_count: 1,
    client_recon_options_json: "{}",
  });
  await uploader.sendMessage({ type: "input_file", name: "P00001.7", size: 1000 });
  const request = await uploader.nextMessage();
  const jobId = request?.job_id as string;
  await uploader.send(RecordType.DATA, new Uint8Array(100)); // part of the file
  await waitFor(
    "the partial input",
    async () => (await listDir(s.inputDir(jobId))).includes("-partial-0"),
  );
  const answer = await ask(s, { type: "cancel_job", job_id: jobId, reason: "wrong scan" });
  assert.equal((answer.job as { state: string }).state, "cancelled");
  assert.equal(await uploader.next(), null, "the upload session was closed");
  assert.deepEqual(await listDir(s.config.RECON_FILEPATH), []);
  assert.equal(s.server.store.get(jobId)!.inputsRemoved, true);
});

Deno.test("get_job_log of a job whose log was removed (LOG_RETENTION) is answered expired", async () => {
  await using s = await startTestServer();
  const jobId = await submit(s);
  await waitFor("the job to succeed", () => s.server.store.get(jobId)?.state === "succeeded");
  await Deno.remove(s.server.store.get(jobId)!.logPath);
  const answer = await ask(s, { type: "get_job_log", job_id: jobId });
  assert.deepEqual(answer, {
    type: "error",
    kind: "expired",
    reason: `the log of job ${jobId} was removed (LOG_RETENTION) or never written`,
  });
});
