/**
 * What a failed job means for its files: the tables of lib/watch/outcome.ts, one row per
 * case. Once the server named a job, its files go to no other job unless the server
 * says it does not hold the upload and never ran it: the reattach decisions.
 */
import assert from "node:assert/strict";
import {
  ConnectionError,
  HandshakeError,
  InterruptedError,
  JobError,
  KeyRejectedError,
  LostContactError,
  ProtocolError,
  TimeoutError,
  TransferError,
  TruncatedFrameError,
} from "../../lib/errors.ts";
import { JobCancelledError, JobFailedError, JobUnavailableError } from "../../lib/client/job.ts";
import {
  classifyFailure,
  isTransientRefusal,
  keyRejected,
  neverRan,
} from "../../lib/watch/outcome.ts";
import type { JobPhase } from "../../lib/watch/state.ts";
import type { JobInfo } from "../../lib/wire/protocol.ts";

const unnamed = { phase: null, stopping: false };
const JOB = "7d6f2c1e-0000-4000-8000-000000000001";

function at(phase: JobPhase, stopping = false) {
  return { phase, stopping };
}

Deno.test("classifyFailure() before the server named a job: nothing is on the server, files stay pending", () => {
  const cases: [unknown, string][] = [
    [new ConnectionError("cannot connect to h:1: connection refused"), "unreachable"],
    [new HandshakeError("handshake failed: wrong key"), "unreachable"],
    [new TimeoutError("timed out"), "unreachable"],
    [new ProtocolError("bad frame"), "unreachable"],
    [new Error("something odd"), "unreachable"],
    [
      new JobError("the server refused the job: the server is shutting down; try again later"),
      "unreachable",
    ],
    [
      new JobError("the server refused the job: not enough disk space on the server"),
      "unreachable",
    ],
    [new JobError("the server refused the job: the job's 9 bytes exceed MAX_JOB_BYTES"), "refused"],
    [new TransferError("the file changed while it was being sent"), "upload-failed"],
    [new InterruptedError("interrupted during upload"), "abandoned"],
  ];
  for (const [error, expected] of cases) {
    assert.equal(classifyFailure(error, unnamed), expected, (error as Error).message);
  }
});

Deno.test("classifyFailure() while stopping, before the server named a job, is always abandoned", () => {
  for (const error of [new ConnectionError("x"), new JobError("x"), new TransferError("x")]) {
    assert.equal(classifyFailure(error, { phase: null, stopping: true }), "abandoned");
  }
});

Deno.test("classifyFailure() of a named job: a stop or an interrupt leaves it on the server, in every phase", () => {
  for (const phase of ["uploading", "queued", "running", "downloading"] as const) {
    assert.equal(classifyFailure(new InterruptedError("interrupted"), at(phase)), "left");
    for (
      const error of [
        new ConnectionError("x"),
        new TransferError("x"),
        new ProtocolError("x"),
        new Error("x"),
      ]
    ) {
      assert.equal(classifyFailure(error, at(phase, true)), "left", `${phase}: ${error.message}`);
    }
    // What the server said about the job still counts while stopping.
    assert.equal(
      classifyFailure(new JobFailedError(JOB, "exited with code 3", 3, []), at(phase, true)),
      "job-failed",
    );
  }
});

Deno.test("classifyFailure() during an upload: only a server without the upload sends the files again", () => {
  const uploading = at("uploading");
  const cases: [unknown, string][] = [
    [new JobUnavailableError("not_found", `no job ${JOB} on this server`), "gone"],
    [
      new JobUnavailableError(
        "expired",
        `the upload of job ${JOB} was not resumed in time and was removed on 2026-12-01T10:00:00Z`,
      ),
      "upload-expired",
    ],
    [
      new JobUnavailableError("refused", `job ${JOB} is cancelled; it is not being uploaded`),
      "unavailable",
    ],
    [new TransferError("the file changed while it was being sent"), "upload-failed"],
    [
      new ConnectionError(
        `lost the connection during the upload of job ${JOB} and could not reconnect`,
      ),
      "lost-contact",
    ],
    [
      new JobFailedError(JOB, "the upload was not completed within UPLOAD_RESUME_WINDOW", null, []),
      "job-failed",
    ],
    [new ProtocolError("server asked for a file this job did not offer"), "results-lost"],
  ];
  for (const [error, expected] of cases) {
    assert.equal(classifyFailure(error, uploading), expected, (error as Error).message);
  }
});

Deno.test("classifyFailure() after the upload never sends the files again by itself", () => {
  const cases: [unknown, string][] = [
    [new JobUnavailableError("not_found", `no job ${JOB} on this server`), "unavailable"],
    [
      new JobUnavailableError(
        "expired",
        `job ${JOB} expired on 2026-12-08T10:00:00Z, its results were removed`,
      ),
      "unavailable",
    ],
    [
      new JobFailedError(JOB, "the reconstruction script exited with code 3", 3, []),
      "job-failed",
    ],
    [new JobFailedError(JOB, "cancelled by 10.0.0.7 (key 0123abcd)", null, []), "job-failed"],
    [new JobCancelledError(JOB), "left"],
    [new JobError("the server refused the job: odd"), "job-failed"],
    [
      new LostContactError(JOB, `lost the connection while following job ${JOB}`),
      "lost-contact",
    ],
    [new ConnectionError("the server ended the session"), "lost-contact"],
    [new TimeoutError("idle timeout"), "lost-contact"],
    [new ConnectionError("version mismatch: server speaks 4, client speaks 3"), "results-lost"],
    [new ProtocolError("server offered an unsafe result name"), "results-lost"],
    [
      new TruncatedFrameError("connection closed in the middle of a frame (12 of 40 bytes)"),
      "lost-contact",
    ],
    [new TransferError("result x: SHA-256 does not match"), "results-lost"],
    [new Error("disk full"), "results-lost"],
  ];
  for (const phase of ["queued", "running", "downloading"] as const) {
    for (const [error, expected] of cases) {
      assert.equal(
        classifyFailure(error, at(phase)),
        expected,
        `${phase}: ${(error as Error).message}`,
      );
    }
  }
});

Deno.test("classifyFailure() of a named job: a key the server refuses stops the watcher, also when reconnecting gave up on it", () => {
  const refused = new KeyRejectedError("handshake failed: the server does not accept key id ab");
  const gaveUp = new LostContactError(JOB, "lost the connection and could not reconnect", {
    cause: refused,
  });
  for (const error of [refused, gaveUp]) {
    assert.equal(classifyFailure(error, at("running")), "key-rejected");
    assert.equal(keyRejected(error), refused);
  }
  assert.equal(keyRejected(new ConnectionError("connection refused")), undefined);
});

Deno.test("isTransientRefusal() only for refusals of a new job, never for a failed or unavailable job", () => {
  assert.ok(isTransientRefusal(new JobError("the server is shutting down; try again later")));
  assert.ok(!isTransientRefusal(new JobFailedError("j", "the server is shutting down", null, [])));
  assert.ok(!isTransientRefusal(new JobUnavailableError("refused", "the server is shutting down")));
  assert.ok(!isTransientRefusal(new ConnectionError("shutting down")));
});

function info(extra: Partial<JobInfo>): JobInfo {
  return {
    job_id: JOB,
    state: "failed",
    priority: "normal",
    submitted_at: "2026-12-01T09:00:00.000Z",
    file_count: 1,
    input_bytes: 100,
    attempts: 0,
    ...extra,
  };
}

Deno.test("neverRan(): an upload the server gave up is sent again; a job that started, or that the server will not show, is not", () => {
  assert.equal(
    neverRan(info({ reason: "the upload was not completed within UPLOAD_RESUME_WINDOW (3600 s)" })),
    true,
  );
  assert.equal(neverRan(info({ attempts: 1, started_at: "2026-12-01T09:01:00.000Z" })), false);
  assert.equal(neverRan(info({ started_at: "2026-12-01T09:01:00.000Z" })), false);
  assert.equal(neverRan(info({ state: "expired", attempts: 1 })), false);
  assert.equal(neverRan(info({ state: "cancelled" })), false, "someone cancelled it");
  assert.equal(neverRan(info({ state: "succeeded", attempts: 1 })), false);
  assert.equal(neverRan(undefined), false);
});
