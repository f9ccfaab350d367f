/**
 * Tests for lib/client/format.ts: what recon-client prints on stdout for
 * `--server-status`, `--view-queue`, a finished job and a failure, as text and JSON.
 */
import assert from "node:assert/strict";
import {
  failureDetails,
  failureJson,
  formatUptime,
  queueJson,
  queueText,
  resultJson,
  resultText,
  skippedWarning,
  statusJson,
  statusText,
} from "../../lib/client/format.ts";
import type { QueueDetails, ServerStatus } from "../../lib/client/query.ts";
import { JobCancelledError, JobFailedError, type SubmitResult } from "../../lib/client/submit.ts";
import { ConnectionError, ExitCode, JobError } from "../../lib/errors.ts";

const JOB_A = "0b7f0f2e-3c1a-4b5e-9d2f-6a7b8c9d0e1f";
const JOB_B = "5d0c7e8f-1a2b-4c3d-8e9f-0a1b2c3d4e5f";

const STATUS: ServerStatus = {
  type: "server_status_response",
  version: "1.2.3",
  uptime_seconds: 93784,
  max_concurrent_jobs: 2,
  active_workers: 1,
  queue_length: 3,
  jobs_completed: 40,
  jobs_failed: 2,
};

Deno.test("formatUptime() names days, hours, minutes and seconds, leaving out larger zero units", () => {
  assert.equal(formatUptime(0), "0s");
  assert.equal(formatUptime(59), "59s");
  assert.equal(formatUptime(60), "1m 0s");
  assert.equal(formatUptime(3600), "1h 0s");
  assert.equal(formatUptime(86400 + 5), "1d 5s");
  assert.equal(formatUptime(93784), "1d 2h 3m 4s");
});

Deno.test("statusText() lists every figure in aligned lines", () => {
  assert.equal(
    statusText(STATUS, "recon.example:9000"),
    [
      "server:              recon.example:9000 (recon 1.2.3)",
      "uptime:              1d 2h 3m 4s",
      "max concurrent jobs: 2",
      "active workers:      1",
      "queued jobs:         3",
      "jobs completed:      40",
      "jobs failed:         2",
      "",
    ].join("\n"),
  );
});

Deno.test("statusJson() is the server's figures without the message type", () => {
  const text = statusJson(STATUS);
  assert.ok(text.endsWith("}\n"));
  const { type: _type, ...fields } = STATUS;
  assert.deepEqual(JSON.parse(text), fields);
});

const JOBS: QueueDetails["jobs"] = [
  {
    job_id: JOB_A,
    status: "processing",
    primary_file: "P00001.7",
    file_count: 2,
    submitted_at: "2024-05-01T10:00:00.000Z",
    started_at: "2024-05-01T10:00:01.000Z",
    input_dir: `job_${JOB_A}_input`,
    percent: 42.4,
  },
  {
    job_id: JOB_B,
    status: "queued",
    primary_file: "a_much_longer_primary_file_name.7",
    file_count: 12,
    submitted_at: "2024-05-01T10:00:02.000Z",
    input_dir: `job_${JOB_B}_input`,
  },
];

Deno.test("queueText() prints a table whose columns line up, with a running job's percent", () => {
  const lines = queueText(JOBS).split("\n");
  assert.equal(lines.pop(), "", "ends with a newline");
  assert.equal(lines.length, 3);
  assert.match(lines[0], /^JOB ID {32}STATUS {10}PRIMARY FILE {23}FILES {2}SUBMITTED \(UTC\)/);
  assert.ok(lines[1].startsWith(`${JOB_A}  processing 42%  P00001.7 `));
  assert.ok(
    lines[2].startsWith(`${JOB_B}  queued          a_much_longer_primary_file_name.7  12 `),
  );
  for (const column of ["STATUS", "PRIMARY FILE", "FILES", "SUBMITTED (UTC)", "INPUT DIR"]) {
    const at = lines[0].indexOf(column);
    assert.ok(lines.every((line) => line[at - 1] === " " && line[at] !== " "), column);
  }
  assert.ok(lines[2].endsWith(`job_${JOB_B}_input`), "no trailing spaces");
});

Deno.test("queueText() of an empty queue says so; queueJson() lists the jobs as sent", () => {
  assert.equal(queueText([]), "the queue is empty\n");
  assert.deepEqual(JSON.parse(queueJson(JOBS)), { jobs: JOBS });
  assert.deepEqual(JSON.parse(queueJson([])), { jobs: [] });
});

const RESULT: SubmitResult = {
  jobId: JOB_A,
  uploaded: [{ name: "P00001.7", size: 3, sha256: "a".repeat(64) }],
  resultDir: `/downloads/${JOB_A}`,
  files: [
    { name: "img1.dcm", path: `/downloads/${JOB_A}/img1.dcm`, size: 5, sha256: "b".repeat(64) },
    {
      name: "sub/img2.dcm",
      path: `/downloads/${JOB_A}/sub/img2.dcm`,
      size: 6,
      sha256: "c".repeat(64),
    },
  ],
  skipped: 0,
};

Deno.test("resultText() prints one result path a line; resultJson() the whole job", () => {
  assert.equal(
    resultText(RESULT),
    `/downloads/${JOB_A}/img1.dcm\n/downloads/${JOB_A}/sub/img2.dcm\n`,
  );
  assert.equal(resultText({ ...RESULT, files: [] }), "");
  assert.deepEqual(JSON.parse(resultJson(RESULT)), {
    job_id: JOB_A,
    status: "completed",
    uploaded: RESULT.uploaded,
    result_dir: RESULT.resultDir,
    files: RESULT.files,
    skipped: 0,
  });
  assert.equal(JSON.parse(resultJson({ ...RESULT, skipped: 3 })).skipped, 3);
});

Deno.test("skippedWarning() counts the files the server did not send, and says nothing for none", () => {
  assert.equal(skippedWarning(0), undefined);
  assert.equal(
    skippedWarning(2),
    "2 result file(s) the script wrote were not sent (names a client refuses, links or " +
      "special files); the server log says which",
  );
});

Deno.test("failureDetails() names a failed script's exit code once, and nothing else", () => {
  assert.deepEqual(failureDetails(new JobFailedError(JOB_A, "script failed", 3, [])), [
    "  script exit code: 3",
  ]);
  // The reason says it already: no second line repeating it.
  const said = new JobFailedError(JOB_A, "the reconstruction script exited with code 3", 3, []);
  assert.deepEqual(failureDetails(said), []);
  assert.deepEqual(failureDetails(new JobFailedError(JOB_A, "timed out", null, [])), []);
  assert.deepEqual(failureDetails(new JobError("refused")), []);
  assert.deepEqual(failureDetails("not an error"), []);
});

Deno.test("failureJson() reports a failed job with its script's exit code and stderr tail", () => {
  const error = new JobFailedError(JOB_A, "script exited with 3", 3, ["line 1", "line 2"]);
  assert.deepEqual(JSON.parse(failureJson(error, ExitCode.JOB_FAILED)), {
    status: "failed",
    error: `job ${JOB_A} failed: script exited with 3`,
    exit_code: 1,
    job_id: JOB_A,
    script_exit_code: 3,
    stderr_tail: ["line 1", "line 2"],
  });
});

Deno.test("failureJson() reports any other failure as an error with its exit code", () => {
  assert.deepEqual(
    JSON.parse(failureJson(new ConnectionError("cannot connect"), ExitCode.CONNECTION)),
    { status: "error", error: "cannot connect", exit_code: 3 },
  );
  assert.deepEqual(
    JSON.parse(failureJson(new JobCancelledError(JOB_A), ExitCode.INTERRUPTED)),
    { status: "error", error: `job ${JOB_A} cancelled`, exit_code: 130 },
  );
  assert.equal(
    JSON.parse(failureJson(new JobError("refused"), ExitCode.JOB_FAILED)).status,
    "failed",
  );
});
