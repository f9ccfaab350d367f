/**
 * Tests for lib/client/query.ts's version 3 requests against a scripted server end of
 * a real channel pair: every page of list_jobs (every client's for an admin, a refusal
 * for anyone else; and a cursor that repeats), cancel_job
 * with its final job_status or a refusal in the server's words, get_job_log's offsets,
 * follow_job without deliver (the first job_status, events, the final one), and
 * redeliver_job.
 */
import assert from "node:assert/strict";
import { JobUnavailableError, type SubmitEvent } from "../../lib/client/job.ts";
import {
  cancelJob,
  getJobLog,
  listJobs,
  redeliverJob,
  waitForJob,
} from "../../lib/client/query.ts";
import { ProtocolError } from "../../lib/errors.ts";
import type { JobInfo } from "../../lib/wire/protocol.ts";
import { channelPair } from "../support/channel_pair.ts";
import { Peer } from "./scripted_server.ts";

const JOB = "0b6f3c8e-5d2a-4c61-9a7e-3f1d2b4c5a69";

function job(id: string, state: JobInfo["state"], extra: Partial<JobInfo> = {}): JobInfo {
  return {
    job_id: id,
    state,
    priority: "normal",
    submitted_at: "2026-12-01T10:00:00.000Z",
    file_count: 1,
    input_bytes: 10,
    attempts: 0,
    ...extra,
  };
}

function idOf(n: number): string {
  return `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`;
}

Deno.test("listJobs() reads every page, sending each cursor back, with the state asked for", async () => {
  await using pair = await channelPair();
  const peer = new Peer(pair.server);
  const server = (async () => {
    assert.deepEqual(await peer.message(), { type: "list_jobs", state: "failed" });
    await peer.send({ type: "job_list", jobs: [job(idOf(1), "failed")], cursor: "p2" });
    assert.deepEqual(await peer.message(), { type: "list_jobs", state: "failed", cursor: "p2" });
    await peer.send({
      type: "job_list",
      jobs: [job(idOf(2), "failed"), job(idOf(3), "failed")],
      cursor: "p3",
    });
    assert.deepEqual(await peer.message(), { type: "list_jobs", state: "failed", cursor: "p3" });
    await peer.send({ type: "job_list", jobs: [] });
  })();
  const jobs = await listJobs(pair.client, { state: "failed" });
  await server;
  assert.deepEqual(jobs.map((entry) => entry.job_id), [idOf(1), idOf(2), idOf(3)]);
});

Deno.test("listJobs() with allClients asks for every client's jobs on each page; a non-admin's refusal is one line in the server's words", async () => {
  await using pair = await channelPair();
  const peer = new Peer(pair.server);
  const refusal = "listing every client's jobs needs an admin client; mr2 is not one";
  const server = (async () => {
    assert.deepEqual(await peer.message(), { type: "list_jobs", all_clients: true });
    await peer.send({
      type: "job_list",
      jobs: [job(idOf(1), "queued", { client: "mr1" })],
      cursor: "p2",
    });
    assert.deepEqual(await peer.message(), { type: "list_jobs", cursor: "p2", all_clients: true });
    await peer.send({ type: "job_list", jobs: [job(idOf(2), "running", { client: "mr2" })] });
    // Without it, nothing is asked beyond the client's own jobs.
    assert.deepEqual(await peer.message(), { type: "list_jobs" });
    await peer.send({ type: "job_list", jobs: [] });
    assert.deepEqual(await peer.message(), { type: "list_jobs", all_clients: true });
    await peer.send({ type: "error", kind: "refused", reason: refusal });
  })();
  const jobs = await listJobs(pair.client, { allClients: true });
  assert.deepEqual(jobs.map((entry) => [entry.job_id, entry.client]), [
    [idOf(1), "mr1"],
    [idOf(2), "mr2"],
  ]);
  assert.deepEqual(await listJobs(pair.client, { allClients: false }), []);
  const error = await listJobs(pair.client, { allClients: true }).catch((caught) => caught);
  await server;
  assert.ok(error instanceof JobUnavailableError, String(error));
  assert.equal(error.kind, "refused");
  assert.equal(error.message, refusal);
});

Deno.test("listJobs() refuses a server whose cursor repeats (it would never end)", async () => {
  await using pair = await channelPair();
  const peer = new Peer(pair.server);
  const server = (async () => {
    await peer.expect("list_jobs");
    await peer.send({ type: "job_list", jobs: [job(idOf(1), "queued")], cursor: "same" });
    await peer.expect("list_jobs");
    await peer.send({ type: "job_list", jobs: [job(idOf(1), "queued")], cursor: "same" });
  })();
  await assert.rejects(listJobs(pair.client), ProtocolError);
  await server;
});

Deno.test("cancelJob() returns the job's final state, and a refusal as one line in the server's words", async () => {
  await using pair = await channelPair();
  const peer = new Peer(pair.server);
  const refusal = `job ${JOB} already succeeded (finished 2026-12-01T10:20:11.512Z); ` +
    "there is nothing to cancel";
  const server = (async () => {
    assert.deepEqual(await peer.message(), {
      type: "cancel_job",
      job_id: JOB,
      reason: "not needed",
    });
    await peer.send({
      type: "job_status",
      job: job(JOB, "cancelled", { reason: "not needed", cancelled_by: "127.0.0.1 key ab" }),
    });
    await peer.expect("cancel_job");
    await peer.send({ type: "error", kind: "refused", reason: refusal });
  })();
  const cancelled = await cancelJob(pair.client, JOB, "not needed");
  assert.equal(cancelled.state, "cancelled");
  assert.equal(cancelled.cancelled_by, "127.0.0.1 key ab");
  const error = await cancelJob(pair.client, JOB).catch((caught) => caught);
  await server;
  assert.ok(error instanceof JobUnavailableError);
  assert.equal(error.kind, "refused");
  assert.equal(error.message, refusal);
});

Deno.test("getJobLog() asks from an offset and checks the answer is that piece", async () => {
  await using pair = await channelPair();
  const peer = new Peer(pair.server);
  const server = (async () => {
    assert.deepEqual(await peer.message(), { type: "get_job_log", job_id: JOB });
    await peer.send({ type: "job_log", job_id: JOB, offset: 0, next_offset: 6, text: "line1\n" });
    assert.deepEqual(await peer.message(), { type: "get_job_log", job_id: JOB, offset: 6 });
    await peer.send({
      type: "job_log",
      job_id: JOB,
      offset: 6,
      next_offset: 6,
      text: "",
      final: true,
    });
    await peer.expect("get_job_log");
    await peer.send({ type: "job_log", job_id: JOB, offset: 3, next_offset: 9, text: "xx" });
  })();
  assert.equal((await getJobLog(pair.client, JOB)).text, "line1\n");
  assert.equal((await getJobLog(pair.client, JOB, 6)).final, true);
  await assert.rejects(getJobLog(pair.client, JOB, 6), /from byte 3 to 9, asked from 6/);
  await server;
});

Deno.test("waitForJob() follows without deliver: job_status, the job's events, the final job_status", async () => {
  await using pair = await channelPair();
  const peer = new Peer(pair.server);
  const server = (async () => {
    assert.deepEqual(await peer.message(), { type: "follow_job", job_id: JOB });
    await peer.send({ type: "job_status", job: job(JOB, "queued", { queue_position: 2 }) });
    await peer.send({ type: "job_started", job_id: JOB });
    await peer.send({ type: "job_progress", job_id: JOB, text: "slice 1" });
    await peer.send({ type: "job_status", job: job(JOB, "succeeded", { result_count: 3 }) });
    // Already final: the server still sends job_status twice.
    await peer.expect("follow_job");
    await peer.send({ type: "job_status", job: job(JOB, "failed") });
    await peer.send({ type: "job_status", job: job(JOB, "failed") });
  })();
  const events: SubmitEvent[] = [];
  let heard = 0;
  const ended = await waitForJob(pair.client, JOB, {
    onHeard: () => heard++,
    onEvent: (event) => events.push(event),
  });
  assert.equal(ended.state, "succeeded");
  assert.equal(ended.result_count, 3);
  assert.deepEqual(events.map((event) => event.kind), ["status", "started", "progress"]);
  assert.equal(heard, 1);
  assert.equal((await waitForJob(pair.client, JOB)).state, "failed");
  await server;
});

Deno.test("waitForJob() refuses news of another job, and reports an unknown job in the server's words", async () => {
  await using pair = await channelPair();
  const peer = new Peer(pair.server);
  const server = (async () => {
    await peer.expect("follow_job");
    await peer.send({ type: "error", kind: "not_found", reason: `no job ${JOB} on this server` });
    await peer.expect("follow_job");
    await peer.send({ type: "job_status", job: job(idOf(7), "queued") });
  })();
  const unknown = await waitForJob(pair.client, JOB).catch((caught) => caught);
  assert.ok(unknown instanceof JobUnavailableError && unknown.kind === "not_found");
  await assert.rejects(waitForJob(pair.client, JOB), ProtocolError);
  await server;
});

Deno.test("redeliverJob() names the destinations asked for and returns the job with its deliveries", async () => {
  await using pair = await channelPair();
  const peer = new Peer(pair.server);
  const deliveries = [{
    destination: "PACS",
    state: "pending" as const,
    files_total: 32,
    files_sent: 0,
    files_skipped: 0,
    files_failed: 0,
    attempts: 0,
  }];
  const refusal = "client mr1 may not deliver to RESEARCH (its deliver= list is PACS)";
  const server = (async () => {
    assert.deepEqual(await peer.message(), { type: "redeliver_job", job_id: JOB });
    await peer.send({ type: "job_status", job: job(JOB, "succeeded", { deliveries }) });
    assert.deepEqual(await peer.message(), {
      type: "redeliver_job",
      job_id: JOB,
      to: ["RESEARCH"],
    });
    await peer.send({ type: "error", kind: "refused", reason: refusal });
    await peer.expect("redeliver_job");
    await peer.send({ type: "job_status", job: job(idOf(2), "succeeded") });
  })();
  const again = await redeliverJob(pair.client, JOB);
  assert.deepEqual(again.deliveries, deliveries);
  const error = await redeliverJob(pair.client, JOB, ["RESEARCH"]).catch((caught) => caught);
  assert.ok(error instanceof JobUnavailableError);
  assert.equal(error.kind, "refused");
  assert.equal(error.message, refusal);
  await assert.rejects(redeliverJob(pair.client, JOB, []), ProtocolError, "another job's status");
  await server;
});
