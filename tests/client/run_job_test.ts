/**
 * Tests for lib/client/run_job.ts and lib/client/job_session.ts against scripted
 * servers (real Channels over 127.0.0.1, one script per connection): a connection
 * lost during the upload, while the job runs and in the middle of the download is
 * made again and the job goes on where it stopped, sending and receiving only what
 * the other side lacks; reconnecting gives up after CLIENT_RECONNECT_TIMEOUT with
 * exit code 5 (3 for an upload); a connection lost before the server named the job is
 * not made again; fetch, rerun, detach, Ctrl-C, and `--no-download` (the job followed
 * to its end in a session of its own, without its results).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as path from "node:path";
import {
  ConnectionError,
  ExitCode,
  InterruptedError,
  LostContactError,
  ProtocolError,
} from "../../lib/errors.ts";
import {
  followAndFetch,
  JobCancelledError,
  JobFailedError,
  JobUnavailableError,
  queueJob,
  rerunJob,
  resumeUpload,
  type SubmitEvent,
  submitJob,
  submitWithoutResults,
} from "../../lib/client/submit.ts";
import { journalPath, partPath } from "../../lib/client/download.ts";
import type { LocalFile } from "../../lib/client/files.ts";
import { RECORD_HEADER_SIZE } from "../../lib/wire/record.ts";
import { instantReconnect, type Peer, ScriptedServer } from "./scripted_server.ts";
import { listDir, tempDir } from "../support/e2e.ts";

const JOB = "0b6f3c8e-5d2a-4c61-9a7e-3f1d2b4c5a69";
const NEW_JOB = "7d6f2c1e-1111-4a2b-8c3d-4e5f60718293";
const MiB = 1024 * 1024;

function bytesOf(size: number, seed: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + seed * 7 + (i >> 10)) & 0xff;
  return bytes;
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

const RESULT_A = bytesOf(2 * MiB + 5, 1);
const RESULT_B = new TextEncoder().encode("second image");

/** A scratch directory with one input file of `size` bytes. */
async function setUp(size = 3 * MiB + 10) {
  const dir = await tempDir();
  const input = bytesOf(size, 9);
  const file = path.join(dir.path, "P00001.7");
  await Deno.writeFile(file, input);
  const files: LocalFile[] = [{ path: file, name: "P00001.7", size }];
  return { dir, input, files, downloadDir: path.join(dir.path, "downloads") };
}

/** The announcement and input_file of a submission. */
async function takeSubmission(peer: Peer): Promise<Record<string, unknown>> {
  const submit = await peer.expect("submit_recon_job");
  await peer.expect("input_file");
  return submit;
}

/** Deliver both results from `index` (and `offset` into it), then recon_complete. */
async function deliver(peer: Peer, expectIndex = 0, expectOffset = 0): Promise<void> {
  const results = [["a/image1.dcm", RESULT_A], ["image2.dcm", RESULT_B]] as const;
  await peer.send({
    type: "dicom_transfer_start",
    job_id: JOB,
    count: 2,
    total_size: RESULT_A.length + RESULT_B.length,
  });
  const ack = await peer.expect("dicom_transfer_ack");
  assert.equal(ack.status, "ready");
  assert.equal(ack.resume_index ?? 0, expectIndex, JSON.stringify(ack));
  assert.equal(ack.resume_offset ?? 0, expectOffset, JSON.stringify(ack));
  for (let i = expectIndex; i < results.length; i++) {
    const [name, bytes] = results[i];
    const offset = i === expectIndex ? expectOffset : 0;
    await peer.send({
      type: "result_file",
      job_id: JOB,
      name,
      size: bytes.length,
      ...(offset > 0 ? { offset } : {}),
    });
    await peer.sendFile(bytes, offset);
  }
  await peer.send({ type: "recon_complete", job_id: JOB, count: 2 });
  assert.deepEqual(await peer.expect("results_received"), {
    type: "results_received",
    job_id: JOB,
  });
}

async function assertResults(downloadDir: string): Promise<void> {
  const dir = path.join(downloadDir, JOB);
  assert.equal(sha256(await Deno.readFile(path.join(dir, "a/image1.dcm"))), sha256(RESULT_A));
  assert.equal(sha256(await Deno.readFile(path.join(dir, "image2.dcm"))), sha256(RESULT_B));
  assert.equal(await Deno.stat(partPath(downloadDir, JOB)).catch(() => null), null);
}

function recorder() {
  const events: SubmitEvent[] = [];
  return {
    events,
    onEvent: (event: SubmitEvent) => events.push(event),
    notices: () =>
      events.flatMap((event) =>
        event.kind === "notice" || event.kind === "reconnect" ? [event.text] : []
      ),
  };
}

Deno.test("an upload cut in the middle resumes from the server's offset: only the rest is sent, and the job's results arrive", async () => {
  const { dir, input, files, downloadDir } = await setUp();
  await using _dir = dir;
  let held: Uint8Array = new Uint8Array(0);
  let resumedBytes = -1;
  await using server = await ScriptedServer.start([
    async (peer) => {
      await takeSubmission(peer);
      await peer.send({ type: "request_file", job_id: JOB, name: "P00001.7" });
      held = (await peer.receiveFile(undefined, 1)).bytes; // then the connection breaks
    },
    async (peer) => {
      assert.deepEqual(await peer.message(), { type: "resume_upload", job_id: JOB });
      await peer.send({
        type: "request_file",
        job_id: JOB,
        name: "P00001.7",
        offset: held.length,
      });
      const rest = await peer.receiveFile(held);
      resumedBytes = rest.bytes.length;
      assert.equal(sha256(new Uint8Array([...held, ...rest.bytes])), sha256(input));
      await peer.send({ type: "job_queued", job_id: JOB, files_received: 1 });
      await peer.send({ type: "job_started", job_id: JOB });
      await deliver(peer);
    },
  ]);
  const ids: string[] = [];
  const record = recorder();
  const hooks = instantReconnect();
  const result = await submitJob({
    connect: server.connect,
    reconnectTimeoutMs: 60_000,
    reconnect: hooks,
    files,
    options: {},
    downloadDir,
    onJobId: (id) => ids.push(id),
    onEvent: record.onEvent,
  });
  await server.done;
  assert.equal(held.length, MiB, "the server held one record");
  assert.equal(resumedBytes, input.length - MiB, "only the missing bytes were sent again");
  assert.deepEqual(ids, [JOB], "the id was reported once, as soon as it was known");
  assert.equal(result.jobId, JOB);
  assert.equal(result.uploaded[0].sha256, sha256(input));
  assert.deepEqual(result.files.map((file) => file.name), ["a/image1.dcm", "image2.dcm"]);
  await assertResults(downloadDir);
  const notices = record.notices();
  assert.match(notices[0], /^connection lost: .+; reconnecting in 0\.8 s…$/);
  assert.equal(notices[1], `reconnected; resuming the upload of job ${JOB}`);
  assert.deepEqual(hooks.slept, [750]);
});

Deno.test("a connection lost while the job runs is followed again (follow_job deliver) and the results arrive", async () => {
  const { dir, files, downloadDir } = await setUp(10);
  await using _dir = dir;
  await using server = await ScriptedServer.start([
    async (peer) => {
      await takeSubmission(peer);
      await peer.send({ type: "request_file", job_id: JOB, name: "P00001.7" });
      await peer.receiveFile();
      await peer.send({ type: "job_queued", job_id: JOB, files_received: 1 });
      // The server restarts: the connection goes without a word.
    },
    async (peer) => {
      assert.deepEqual(await peer.message(), { type: "follow_job", job_id: JOB, deliver: true });
      await peer.send({
        type: "job_status",
        job: {
          job_id: JOB,
          state: "running",
          priority: "normal",
          submitted_at: "2026-12-01T10:00:00.000Z",
          started_at: "2026-12-01T10:00:01.000Z",
          file_count: 1,
          input_bytes: 10,
          attempts: 2,
        },
      });
      await peer.send({ type: "job_progress", job_id: JOB, percent: 50 });
      await deliver(peer);
    },
  ]);
  const record = recorder();
  const result = await submitJob({
    connect: server.connect,
    reconnectTimeoutMs: 60_000,
    reconnect: instantReconnect(),
    files,
    options: { num_slices: 4 },
    priority: "high",
    downloadDir,
    onEvent: record.onEvent,
  });
  await server.done;
  assert.equal(result.jobId, JOB);
  await assertResults(downloadDir);
  const kinds = record.events.map((event) => event.kind);
  assert.deepEqual(kinds.filter((kind) => kind !== "upload" && kind !== "download"), [
    "queued",
    "reconnect",
    "reconnect",
    "status",
    "progress",
  ]);
  assert.ok(kinds.includes("download"));
  assert.equal(record.notices()[1], `reconnected; following job ${JOB} again`);
});

Deno.test("a download cut in the middle resumes after the verified results, from the verified bytes of the next", async () => {
  const { dir, files, downloadDir } = await setUp(10);
  await using _dir = dir;
  await using server = await ScriptedServer.start([
    async (peer) => {
      await takeSubmission(peer);
      await peer.send({ type: "request_file", job_id: JOB, name: "P00001.7" });
      await peer.receiveFile();
      await peer.send({ type: "job_queued", job_id: JOB, files_received: 1 });
      await peer.send({
        type: "dicom_transfer_start",
        job_id: JOB,
        count: 2,
        total_size: RESULT_A.length + RESULT_B.length,
      });
      await peer.expect("dicom_transfer_ack");
      await peer.send({
        type: "result_file",
        job_id: JOB,
        name: "a/image1.dcm",
        size: RESULT_A.length,
      });
      // One MiB of it, then the connection breaks.
      const first = RESULT_A.subarray(0, MiB);
      const record = new Uint8Array(RECORD_HEADER_SIZE + first.length);
      record.set(first, RECORD_HEADER_SIZE);
      await peer.channel.sendData(record);
      await new Promise((resolve) => setTimeout(resolve, 100));
    },
    async (peer) => {
      await peer.expect("follow_job");
      await deliver(peer, 0, MiB);
    },
  ]);
  const result = await submitJob({
    connect: server.connect,
    reconnectTimeoutMs: 60_000,
    reconnect: instantReconnect(),
    files,
    options: {},
    downloadDir,
  });
  await server.done;
  assert.equal(result.files.length, 2);
  await assertResults(downloadDir);
  const journal = (await Deno.readTextFile(journalPath(downloadDir, JOB))).trim().split("\n")
    .map((line) => JSON.parse(line));
  assert.deepEqual(journal[0], {
    job_id: JOB,
    count: 2,
    total_size: RESULT_A.length + RESULT_B.length,
  });
  assert.deepEqual(
    journal.filter((line) => "sha256" in line).map((line) => [line.index, line.name, line.sha256]),
    [[0, "a/image1.dcm", sha256(RESULT_A)], [1, "image2.dcm", sha256(RESULT_B)]],
  );
});

Deno.test("fetch again: the verified results are found in place and nothing is sent twice", async () => {
  await using dir = await tempDir();
  const downloadDir = path.join(dir.path, "downloads");
  const status = (state: string) => ({
    type: "job_status",
    job: {
      job_id: JOB,
      state,
      priority: "normal",
      submitted_at: "2026-12-01T10:00:00.000Z",
      file_count: 1,
      input_bytes: 10,
      attempts: 1,
    },
  });
  await using server = await ScriptedServer.start([
    async (peer) => {
      assert.deepEqual(await peer.message(), { type: "follow_job", job_id: JOB, deliver: true });
      await peer.send(status("succeeded"));
      await deliver(peer);
    },
    async (peer) => {
      await peer.expect("follow_job");
      await peer.send(status("succeeded"));
      await peer.send({
        type: "dicom_transfer_start",
        job_id: JOB,
        count: 2,
        total_size: RESULT_A.length + RESULT_B.length,
      });
      const ack = await peer.expect("dicom_transfer_ack");
      assert.deepEqual(ack, {
        type: "dicom_transfer_ack",
        job_id: JOB,
        status: "ready",
        resume_index: 2,
      });
      await peer.send({ type: "recon_complete", job_id: JOB, count: 2 });
      await peer.expect("results_received");
    },
  ]);
  const first = await followAndFetch({ connect: server.connect, jobId: JOB, downloadDir });
  const record = recorder();
  const second = await followAndFetch({
    connect: server.connect,
    jobId: JOB,
    downloadDir,
    onEvent: record.onEvent,
  });
  await server.done;
  assert.deepEqual(second.files, first.files);
  assert.deepEqual(second.uploaded, []);
  assert.ok(
    record.notices().some((text) =>
      /the 2 result file\(s\) .* are already in .*verified/.test(text)
    ),
  );
  await assertResults(downloadDir);
});

Deno.test("reconnecting gives up after CLIENT_RECONNECT_TIMEOUT: exit 5 with the job id and the fetch command", async () => {
  const { dir, files, downloadDir } = await setUp(10);
  await using _dir = dir;
  await using server = await ScriptedServer.start([
    async (peer) => {
      await takeSubmission(peer);
      await peer.send({ type: "request_file", job_id: JOB, name: "P00001.7" });
      await peer.receiveFile();
      await peer.send({ type: "job_queued", job_id: JOB, files_received: 1 });
    },
  ]);
  const hooks = instantReconnect();
  const record = recorder();
  const error = await submitJob({
    connect: server.connect,
    reconnectTimeoutMs: 60_000,
    reconnect: hooks,
    files,
    options: {},
    downloadDir,
    onEvent: record.onEvent,
    command: (subcommand, id) => `recon-client --opts /etc/recon.opts ${subcommand} ${id}`,
  }).catch((caught) => caught);
  await server.done;
  assert.ok(error instanceof LostContactError, String(error));
  assert.equal(error.exitCode, ExitCode.LOST_CONTACT);
  assert.equal(error.jobId, JOB);
  assert.match(
    error.message,
    new RegExp(
      `^lost the connection while following job ${JOB} and could not reconnect within ` +
        `CLIENT_RECONNECT_TIMEOUT \\(60 s\\): cannot connect to 127\\.0\\.0\\.1:\\d+: connection refused$`,
    ),
  );
  assert.equal(
    error.hint,
    `job ${JOB} stays on the server; fetch its results later: ` +
      `recon-client --opts /etc/recon.opts fetch ${JOB}`,
  );
  assert.equal(error.fetchCommand, `recon-client --opts /etc/recon.opts fetch ${JOB}`);
  // 1 s doubling to 30 s (jitter 0.5 → three quarters), the last wait cut to what was left.
  assert.deepEqual(hooks.slept, [750, 1500, 3000, 6000, 12000, 22500, 14250]);
  assert.equal(record.notices().length, 7);
});

Deno.test("an upload that cannot be resumed in time is a connection error (exit 3), not exit 5", async () => {
  const { dir, files, downloadDir } = await setUp();
  await using _dir = dir;
  await using server = await ScriptedServer.start([
    async (peer) => {
      await takeSubmission(peer);
      await peer.send({ type: "request_file", job_id: JOB, name: "P00001.7" });
      await peer.receiveFile(undefined, 1);
    },
  ]);
  const error = await submitJob({
    connect: server.connect,
    reconnectTimeoutMs: 0,
    files,
    options: {},
    downloadDir,
  }).catch((caught) => caught);
  await server.done;
  assert.ok(error instanceof ConnectionError && !(error instanceof ProtocolError), String(error));
  assert.equal(error.exitCode, ExitCode.CONNECTION);
  assert.match(error.message, new RegExp(`^lost the connection during the upload of job ${JOB}`));
  assert.match(error.hint ?? "", /send the files again .*recon-client cancel/);
});

Deno.test("a connection lost before the server named the job is not made again: exit 3 as before", async () => {
  const { dir, files, downloadDir } = await setUp(10);
  await using _dir = dir;
  await using server = await ScriptedServer.start([
    async (peer) => {
      await takeSubmission(peer);
    },
  ]);
  const error = await submitJob({
    connect: server.connect,
    reconnectTimeoutMs: 60_000,
    reconnect: instantReconnect(),
    files,
    options: {},
    downloadDir,
  }).catch((caught) => caught);
  await server.done;
  assert.ok(error instanceof ConnectionError, String(error));
  assert.equal(error.exitCode, ExitCode.CONNECTION);
  assert.equal(server.accepted, 1, "no second connection");
});

Deno.test("a refused resume_upload (the job was queued after all) follows the job instead of sending anything", async () => {
  const { dir, files, downloadDir } = await setUp(10);
  await using _dir = dir;
  await using server = await ScriptedServer.start([
    async (peer) => {
      await takeSubmission(peer);
      await peer.send({ type: "request_file", job_id: JOB, name: "P00001.7" });
      await peer.receiveFile();
      // job_queued is lost with the connection.
    },
    async (peer) => {
      await peer.expect("resume_upload");
      await peer.send({ type: "error", kind: "refused", reason: `job ${JOB} is queued` });
      assert.deepEqual(await peer.message(), { type: "follow_job", job_id: JOB, deliver: true });
      await peer.send({
        type: "job_status",
        job: {
          job_id: JOB,
          state: "failed",
          priority: "normal",
          submitted_at: "2026-12-01T10:00:00.000Z",
          finished_at: "2026-12-01T10:00:09.000Z",
          file_count: 1,
          input_bytes: 10,
          attempts: 1,
          exit_code: 3,
          reason: "the reconstruction script exited with code 3",
        },
      });
      await peer.send({
        type: "job_failed",
        job_id: JOB,
        reason: "the reconstruction script exited with code 3",
        exit_code: 3,
        stderr_tail: ["bad slice"],
      });
    },
  ]);
  const error = await submitJob({
    connect: server.connect,
    reconnectTimeoutMs: 60_000,
    reconnect: instantReconnect(),
    files,
    options: {},
    downloadDir,
  }).catch((caught) => caught);
  await server.done;
  assert.ok(error instanceof JobFailedError, String(error));
  assert.equal(error.scriptExitCode, 3);
  assert.deepEqual(error.stderrTail, ["bad slice"]);
});

Deno.test("a server that stops asking for files while it shuts down is reconnected to, and the upload resumes", async () => {
  const size = 10;
  await using work = await tempDir();
  const a = path.join(work.path, "a.7");
  const b = path.join(work.path, "b.dat");
  await Deno.writeFile(a, bytesOf(size, 1));
  await Deno.writeFile(b, bytesOf(size, 2));
  const files: LocalFile[] = [
    { path: a, name: "a.7", size },
    { path: b, name: "b.dat", size },
  ];
  await using server = await ScriptedServer.start([
    async (peer) => {
      await peer.expect("submit_recon_job");
      await peer.expect("input_file");
      await peer.expect("input_file");
      await peer.send({ type: "request_file", job_id: JOB, name: "a.7" });
      await peer.receiveFile();
      await peer.send({
        type: "error",
        kind: "refused",
        reason: "the server is shutting down; try again later",
      });
    },
    async (peer) => {
      await peer.expect("resume_upload");
      await peer.send({ type: "request_file", job_id: JOB, name: "b.dat" });
      await peer.receiveFile();
      await peer.send({ type: "job_queued", job_id: JOB, files_received: 2 });
    },
  ]);
  const queued = await queueJob({
    connect: server.connect,
    reconnectTimeoutMs: 60_000,
    reconnect: instantReconnect(),
    files,
    options: {},
    downloadDir: path.join(work.path, "downloads"),
  });
  await server.done;
  assert.equal(queued.jobId, JOB);
  assert.deepEqual(queued.uploaded.map((file) => file.name), ["a.7", "b.dat"]);
});

Deno.test("--detach (queueJob) returns once the job is queued and leaves it running", async () => {
  const { dir, files, downloadDir } = await setUp(10);
  await using _dir = dir;
  let after = "";
  await using server = await ScriptedServer.start([
    async (peer) => {
      const submit = await takeSubmission(peer);
      assert.equal(submit.priority, "low");
      await peer.send({ type: "request_file", job_id: JOB, name: "P00001.7" });
      await peer.receiveFile();
      await peer.send({ type: "job_queued", job_id: JOB, files_received: 1 });
      after = await peer.next();
    },
  ]);
  const queued = await queueJob({
    connect: server.connect,
    files,
    options: {},
    priority: "low",
    downloadDir,
  });
  await server.done;
  assert.equal(queued.jobId, JOB);
  assert.equal(after, "goodbye", "the client said goodbye; it did not cancel");
  assert.deepEqual(await listDir(dir.path), ["P00001.7"], "nothing downloaded");
});

Deno.test("Ctrl-C during an upload cuts it and cancels the job in a session of its own", async () => {
  const { dir, files, downloadDir } = await setUp(8 * MiB);
  await using _dir = dir;
  const controller = new AbortController();
  await using server = await ScriptedServer.start([
    async (peer) => {
      await takeSubmission(peer);
      await peer.send({ type: "request_file", job_id: JOB, name: "P00001.7" });
      const incoming = await peer.channel.receive();
      assert.equal(incoming.type, "data");
      controller.abort();
      while (!(await peer.next()).startsWith("error")) { /* until the cut */ }
    },
    async (peer) => {
      assert.deepEqual(await peer.message(), {
        type: "cancel_job",
        job_id: JOB,
        reason: "interrupted",
      });
      await peer.send({
        type: "job_status",
        job: {
          job_id: JOB,
          state: "cancelled",
          priority: "normal",
          submitted_at: "2026-12-01T10:00:00.000Z",
          file_count: 1,
          input_bytes: 8 * MiB,
          attempts: 0,
          reason: "interrupted",
        },
      });
    },
  ]);
  const error = await submitJob({
    connect: server.connect,
    reconnectTimeoutMs: 60_000,
    reconnect: instantReconnect(),
    files,
    options: {},
    downloadDir,
    signal: controller.signal,
  }).catch((caught) => caught);
  await server.done;
  assert.ok(error instanceof JobCancelledError, String(error));
  assert.equal(error.exitCode, ExitCode.INTERRUPTED);
});

Deno.test("followAndFetch() turns the server's refusals into one line: unknown and expired jobs", async () => {
  await using dir = await tempDir();
  const reasons = {
    not_found: `no job ${JOB} on this server`,
    expired: `job ${JOB} expired on 2026-12-08T10:00:00.000Z, its results were removed`,
  };
  for (const [kind, reason] of Object.entries(reasons)) {
    await using server = await ScriptedServer.start([
      async (peer) => {
        await peer.expect("follow_job");
        await peer.send({ type: "error", kind, reason });
        assert.equal(await peer.next(), "goodbye", "a refusal ends the session politely");
      },
    ]);
    const error = await followAndFetch({
      connect: server.connect,
      jobId: JOB,
      downloadDir: dir.path,
      reconnectTimeoutMs: 60_000,
    }).catch((caught) => caught);
    await server.done;
    assert.ok(error instanceof JobUnavailableError, String(error));
    assert.equal(error.kind, kind);
    assert.equal(error.message, reason);
    assert.equal(error.exitCode, ExitCode.JOB_FAILED);
  }
});

Deno.test("an interrupted fetch stops following and cancels nothing", async () => {
  await using dir = await tempDir();
  const controller = new AbortController();
  let after = "";
  await using server = await ScriptedServer.start([
    async (peer) => {
      await peer.expect("follow_job");
      await peer.send({
        type: "job_status",
        job: {
          job_id: JOB,
          state: "queued",
          queue_position: 3,
          priority: "low",
          submitted_at: "2026-12-01T10:00:00.000Z",
          file_count: 1,
          input_bytes: 10,
          attempts: 0,
        },
      });
      controller.abort();
      after = await peer.next();
    },
  ]);
  const error = await followAndFetch({
    connect: server.connect,
    jobId: JOB,
    downloadDir: dir.path,
    signal: controller.signal,
    command: (subcommand, id) => `recon-client ${subcommand} ${id} --download-dir /x`,
  }).catch((caught) => caught);
  await server.done;
  assert.ok(error instanceof InterruptedError, String(error));
  assert.equal(error.message, `stopped following job ${JOB}; it goes on on the server`);
  assert.equal(error.hint, `fetch its results later: recon-client fetch ${JOB} --download-dir /x`);
  assert.match(after, /^error/, "no cancel_job was sent");
});

Deno.test("rerunJob() follows the new job the server names in job_queued", async () => {
  await using dir = await tempDir();
  const downloadDir = path.join(dir.path, "downloads");
  const ids: string[] = [];
  await using server = await ScriptedServer.start([
    async (peer) => {
      assert.deepEqual(await peer.message(), {
        type: "rerun_job",
        job_id: JOB,
        client_recon_options_json: '{"slices":2}',
        priority: "high",
      });
      await peer.send({ type: "job_queued", job_id: NEW_JOB, files_received: 1 });
      await peer.send({ type: "job_started", job_id: NEW_JOB });
      await peer.send({
        type: "dicom_transfer_start",
        job_id: NEW_JOB,
        count: 1,
        total_size: RESULT_B.length,
      });
      await peer.expect("dicom_transfer_ack");
      await peer.send({
        type: "result_file",
        job_id: NEW_JOB,
        name: "image.dcm",
        size: RESULT_B.length,
      });
      await peer.sendFile(RESULT_B);
      await peer.send({ type: "recon_complete", job_id: NEW_JOB, count: 1 });
      await peer.expect("results_received");
    },
  ]);
  const outcome = await rerunJob({
    connect: server.connect,
    jobId: JOB,
    options: { slices: 2 },
    priority: "high",
    downloadDir,
    onJobId: (id) => ids.push(id),
  });
  await server.done;
  assert.equal(outcome.kind, "results");
  assert.equal(outcome.kind === "results" && outcome.result.jobId, NEW_JOB);
  assert.deepEqual(ids, [NEW_JOB]);
  assert.deepEqual(await listDir(path.join(downloadDir, NEW_JOB)), ["image.dcm"]);
});

Deno.test("resumeUpload() continues a job by id with the files it announced (a restarted watcher)", async () => {
  const { dir, input, files, downloadDir } = await setUp(2 * MiB);
  await using _dir = dir;
  await using server = await ScriptedServer.start([
    async (peer) => {
      assert.deepEqual(await peer.message(), { type: "resume_upload", job_id: JOB });
      await peer.send({ type: "request_file", job_id: JOB, name: "P00001.7", offset: MiB });
      const rest = await peer.receiveFile(input.subarray(0, MiB));
      assert.equal(rest.bytes.length, MiB);
      await peer.send({ type: "job_queued", job_id: JOB, files_received: 1 });
    },
  ]);
  const outcome = await resumeUpload({
    connect: server.connect,
    jobId: JOB,
    files,
    downloadDir,
    until: "queued",
  });
  await server.done;
  assert.deepEqual(outcome, {
    kind: "queued",
    jobId: JOB,
    uploaded: [{
      name: "P00001.7",
      size: input.length,
      original_path_on_client: files[0].path,
      sha256: sha256(input),
    }],
  });
});

for (
  const [what, message] of [
    ["a result resumed at an offset the client did not ask for", { offset: 4 }],
    ["an offset on a result other than the first of the session", { offset: 0 }],
  ] as const
) {
  Deno.test(`the client refuses ${what}`, async () => {
    await using dir = await tempDir();
    await using server = await ScriptedServer.start([
      async (peer) => {
        await peer.expect("follow_job");
        await peer.send({
          type: "job_status",
          job: {
            job_id: JOB,
            state: "succeeded",
            priority: "normal",
            submitted_at: "2026-12-01T10:00:00.000Z",
            file_count: 1,
            input_bytes: 10,
            attempts: 1,
          },
        });
        await peer.send({
          type: "dicom_transfer_start",
          job_id: JOB,
          count: 2,
          total_size: 2 * RESULT_B.length,
        });
        await peer.expect("dicom_transfer_ack");
        if (message.offset === 0) {
          await peer.send({
            type: "result_file",
            job_id: JOB,
            name: "x.dcm",
            size: RESULT_B.length,
          });
          await peer.sendFile(RESULT_B);
        }
        await peer.send({
          type: "result_file",
          job_id: JOB,
          name: "y.dcm",
          size: RESULT_B.length,
          offset: 4,
        });
        await peer.next();
      },
    ]);
    const hostile: string[] = [];
    const error = await followAndFetch({
      connect: server.connect,
      jobId: JOB,
      downloadDir: dir.path,
      onHostile: (text) => hostile.push(text),
    }).catch((caught) => caught);
    await server.done;
    assert.ok(error instanceof ProtocolError, String(error));
    assert.match(hostile[0], /resumed "y\.dcm" at byte 4, which is not what this client holds/);
  });
}

Deno.test("fetching a job someone cancelled says so, with who and why (exit 1)", async () => {
  await using dir = await tempDir();
  const record = recorder();
  await using server = await ScriptedServer.start([
    async (peer) => {
      await peer.expect("follow_job");
      await peer.send({
        type: "job_status",
        job: {
          job_id: JOB,
          state: "cancelled",
          priority: "normal",
          submitted_at: "2026-12-01T10:00:00.000Z",
          finished_at: "2026-12-01T10:00:05.000Z",
          file_count: 1,
          input_bytes: 10,
          attempts: 1,
          reason: "wrong protocol",
          cancelled_by: "10.0.0.9 (key id ab)",
        },
      });
      await peer.send({
        type: "job_failed",
        job_id: JOB,
        reason: "wrong protocol",
        exit_code: null,
        stderr_tail: [],
      });
    },
  ]);
  const error = await followAndFetch({
    connect: server.connect,
    jobId: JOB,
    downloadDir: dir.path,
    onEvent: record.onEvent,
  }).catch((caught) => caught);
  await server.done;
  assert.ok(error instanceof JobFailedError, String(error));
  assert.equal(error.message, `job ${JOB} was cancelled by 10.0.0.9 (key id ab): wrong protocol`);
  assert.equal(error.cancelledBy, "10.0.0.9 (key id ab)");
  assert.equal(error.exitCode, ExitCode.JOB_FAILED);
  assert.deepEqual(record.events, [], "the failure says it once");
});

/** The job as a version 3 server describes it. */
function jobInfo(state: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    job_id: JOB,
    state,
    priority: "normal",
    submitted_at: "2026-12-01T10:00:00.000Z",
    file_count: 1,
    input_bytes: 10,
    attempts: state === "queued" ? 0 : 1,
    ...extra,
  };
}

const PACS_PENDING = {
  destination: "PACS",
  state: "pending",
  files_total: 0,
  files_sent: 0,
  files_skipped: 0,
  files_failed: 0,
  attempts: 0,
};

Deno.test("--no-download: the job is queued, then followed without deliver to its end; nothing is fetched", async () => {
  const { dir, files, downloadDir } = await setUp(10);
  await using _dir = dir;
  let after = "";
  await using server = await ScriptedServer.start([
    async (peer) => {
      const submit = await takeSubmission(peer);
      assert.deepEqual(submit.deliver, ["PACS"]);
      await peer.send({ type: "request_file", job_id: JOB, name: "P00001.7" });
      await peer.receiveFile();
      await peer.send({ type: "job_queued", job_id: JOB, files_received: 1 });
      after = await peer.next();
    },
    async (peer) => {
      assert.deepEqual(await peer.message(), { type: "follow_job", job_id: JOB, deliver: false });
      await peer.send({ type: "job_status", job: jobInfo("running") });
      await peer.send({ type: "job_progress", job_id: JOB, percent: 50 });
      await peer.send({
        type: "job_status",
        job: jobInfo("succeeded", { result_count: 2, deliveries: [PACS_PENDING] }),
      });
      assert.equal(await peer.next(), "goodbye");
    },
  ]);
  const events = recorder();
  const ended = await submitWithoutResults({
    connect: server.connect,
    reconnectTimeoutMs: 60_000,
    reconnect: instantReconnect(),
    files,
    options: {},
    deliver: ["PACS"],
    downloadDir,
    onEvent: events.onEvent,
  });
  await server.done;
  assert.equal(after, "goodbye", "the submission's session ends once the job is queued");
  assert.equal(ended.job.state, "succeeded");
  assert.deepEqual(ended.job.deliveries, [PACS_PENDING]);
  assert.deepEqual(ended.uploaded.map((file) => file.name), ["P00001.7"]);
  assert.ok(events.events.some((event) => event.kind === "progress" && event.percent === 50));
  assert.deepEqual(await listDir(dir.path), ["P00001.7"], "nothing downloaded");
});

Deno.test("--no-download: a lost connection while waiting follows again without deliver; a failed job is its outcome", async () => {
  const { dir, files, downloadDir } = await setUp(10);
  await using _dir = dir;
  await using server = await ScriptedServer.start([
    async (peer) => {
      await takeSubmission(peer);
      await peer.send({ type: "request_file", job_id: JOB, name: "P00001.7" });
      await peer.receiveFile();
      await peer.send({ type: "job_queued", job_id: JOB, files_received: 1 });
    },
    async (peer) => {
      await peer.expect("follow_job");
      await peer.send({ type: "job_status", job: jobInfo("running") });
      peer.channel.abort(); // cut while the job runs
    },
    async (peer) => {
      assert.deepEqual(await peer.message(), { type: "follow_job", job_id: JOB, deliver: false });
      await peer.send({ type: "job_status", job: jobInfo("failed", { reason: "exit 3" }) });
      await peer.send({ type: "job_status", job: jobInfo("failed", { reason: "exit 3" }) });
    },
  ]);
  const ended = await submitWithoutResults({
    connect: server.connect,
    reconnectTimeoutMs: 60_000,
    reconnect: instantReconnect(),
    files,
    options: {},
    downloadDir,
  });
  await server.done;
  assert.equal(ended.job.state, "failed");
  assert.equal(ended.job.reason, "exit 3");
});

Deno.test("--no-download: Ctrl-C while waiting cancels the job (JobCancelledError)", async () => {
  const { dir, files, downloadDir } = await setUp(10);
  await using _dir = dir;
  const controller = new AbortController();
  await using server = await ScriptedServer.start([
    async (peer) => {
      await takeSubmission(peer);
      await peer.send({ type: "request_file", job_id: JOB, name: "P00001.7" });
      await peer.receiveFile();
      await peer.send({ type: "job_queued", job_id: JOB, files_received: 1 });
    },
    async (peer) => {
      await peer.expect("follow_job");
      await peer.send({ type: "job_status", job: jobInfo("running") });
      controller.abort();
      assert.deepEqual(await peer.message(), {
        type: "cancel_job",
        job_id: JOB,
        reason: "interrupted",
      });
      await peer.send({ type: "job_status", job: jobInfo("cancelled", { reason: "interrupted" }) });
    },
  ]);
  const error = await submitWithoutResults({
    connect: server.connect,
    reconnectTimeoutMs: 60_000,
    reconnect: instantReconnect(),
    files,
    options: {},
    downloadDir,
    signal: controller.signal,
  }).catch((caught) => caught);
  await server.done;
  assert.ok(error instanceof JobCancelledError, String(error));
});
