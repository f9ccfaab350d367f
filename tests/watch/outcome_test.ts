/**
 * What a failed submission means for its files: the table of lib/watch/outcome.ts,
 * one row per case. Once the server has queued a job, only a confirmed cancellation
 * makes its files pending again.
 */
import assert from "node:assert/strict";
import {
  ConnectionError,
  HandshakeError,
  InterruptedError,
  JobError,
  ProtocolError,
  TimeoutError,
  TransferError,
} from "../../lib/errors.ts";
import { JobCancelledError, JobFailedError } from "../../lib/client/submit.ts";
import { classifyFailure, isTransientRefusal } from "../../lib/watch/outcome.ts";

const before = { queued: false, stopping: false };
const after = { queued: true, stopping: false };

Deno.test("classifyFailure() before job_queued: nothing is on the server, files stay pending", () => {
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
    assert.equal(classifyFailure(error, before), expected, (error as Error).message);
  }
});

Deno.test("classifyFailure() while stopping, before job_queued, is always abandoned", () => {
  for (const error of [new ConnectionError("x"), new JobError("x"), new TransferError("x")]) {
    assert.equal(classifyFailure(error, { queued: false, stopping: true }), "abandoned");
  }
});

Deno.test("classifyFailure() after job_queued never sends the files again by itself", () => {
  const cases: [unknown, string][] = [
    [new JobCancelledError("job-1"), "cancelled"],
    [
      new JobFailedError("job-1", "the reconstruction script exited with code 3", 3, []),
      "job-failed",
    ],
    [new JobError("the server refused the job: odd"), "job-failed"],
    [new ConnectionError("the server ended the session"), "orphaned"],
    [new TimeoutError("idle timeout"), "orphaned"],
    [new InterruptedError("interrupted"), "orphaned"],
    [new ProtocolError("server offered an unsafe result name"), "results-lost"],
    [new TransferError("result x: SHA-256 does not match"), "results-lost"],
    [new Error("disk full"), "results-lost"],
  ];
  for (const [error, expected] of cases) {
    assert.equal(classifyFailure(error, after), expected, (error as Error).message);
    assert.equal(classifyFailure(error, { queued: true, stopping: true }), expected);
  }
});

Deno.test("isTransientRefusal() only for refusals, never for a failed job", () => {
  assert.ok(isTransientRefusal(new JobError("the server is shutting down; try again later")));
  assert.ok(!isTransientRefusal(new JobFailedError("j", "the server is shutting down", null, [])));
  assert.ok(!isTransientRefusal(new ConnectionError("shutting down")));
});
