/**
 * Tests for lib/client/format.ts: what recon-client prints on stdout for
 * `--server-status`, `--view-queue`, a finished job and a failure, as text and JSON;
 * which client the server names (a CLIENT column, another client's job without its
 * file names, the client line of the status); a job run on Slurm (a SLURM column with
 * its Slurm job id) and the executor lines of the status; where a job's results go
 * (the DELIVERY column, a delivery in words, the `--no-download` and `redeliver`
 * reports, the destinations of the status).
 */
import assert from "node:assert/strict";
import {
  deliveryCell,
  deliveryLine,
  deliveryReport,
  failureDetails,
  failureJson,
  formatUptime,
  formatUtc,
  jobLine,
  jobsJson,
  jobsText,
  noDownloadJson,
  queuedText,
  queueJson,
  queueText,
  redeliverJson,
  resultJson,
  resultText,
  skippedWarning,
  statusJson,
  statusNotice,
  statusText,
} from "../../lib/client/format.ts";
import type { DeliverySummary, JobInfo } from "../../lib/wire/protocol.ts";
import type { QueueDetails, ServerStatus } from "../../lib/client/query.ts";
import { JobCancelledError, JobFailedError, type SubmitResult } from "../../lib/client/submit.ts";
import { ConnectionError, ExitCode, JobError, LostContactError } from "../../lib/errors.ts";

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

Deno.test("statusText() adds a version 3 server's figures: queue by priority, kept bytes, free disk", () => {
  const text = statusText(
    {
      ...STATUS,
      jobs_cancelled: 1,
      queued_high: 1,
      queued_normal: 2,
      queued_low: 0,
      kept_input_bytes: 1_200_000_000,
      kept_result_bytes: 340_000_000,
      disk_free_bytes: 9_000_000_000,
      disk_free_margin: 10_000_000_000,
    },
    "recon.example:9000",
  );
  assert.equal(
    text.split("\n").slice(4).join("\n"),
    [
      "queued jobs:         3",
      "queued by priority:  high 1, normal 2, low 0",
      "jobs completed:      40",
      "jobs failed:         2",
      "jobs cancelled:      1",
      "kept inputs:         1.20 GB",
      "kept results:        340 MB",
      "disk free:           9.00 GB (DISK_FREE_MARGIN 10.0 GB; below it, new jobs are refused)",
      "",
    ].join("\n"),
  );
});

Deno.test("queueText() shows a version 3 server's priority and queue position columns", () => {
  const lines = queueText([
    { ...JOBS[0], priority: "normal" },
    { ...JOBS[1], priority: "high", queue_position: 1 },
  ]).split("\n");
  assert.match(lines[0], /^JOB ID {32}STATUS {10}PRIORITY {2}POS {2}PRIMARY FILE/);
  assert.ok(lines[1].startsWith(`${JOB_A}  processing 42%  normal    -    P00001.7 `));
  assert.ok(lines[2].startsWith(`${JOB_B}  queued          high      1    a_much`));
});

const INFO: JobInfo[] = [
  {
    job_id: JOB_A,
    primary_file: "P00001.7",
    state: "succeeded",
    priority: "normal",
    submitted_at: "2026-12-01T10:00:00.000Z",
    started_at: "2026-12-01T10:00:01.000Z",
    finished_at: "2026-12-01T10:05:00.500Z",
    file_count: 2,
    input_bytes: 300_000_000,
    attempts: 1,
    exit_code: 0,
    result_count: 12,
    result_bytes: 30_000_000,
    results_expire_at: "2026-12-08T10:05:00.500Z",
  },
  {
    job_id: JOB_B,
    state: "failed",
    priority: "low",
    submitted_at: "2026-12-01T11:00:00.000Z",
    finished_at: "2026-12-01T11:00:03.000Z",
    file_count: 1,
    input_bytes: 512,
    attempts: 1,
    exit_code: 3,
    reason: "the reconstruction script exited with code 3\u001b[2J",
    inputs_expire_at: "2026-12-04T11:00:03.000Z",
  },
];

Deno.test("jobsText() lists every figure of each job, times in UTC, text from the server made printable", () => {
  const lines = jobsText(INFO).split("\n");
  assert.equal(lines.pop(), "");
  assert.match(
    lines[0],
    /^JOB ID +FILE +STATE +PRIORITY +POS +SUBMITTED \(UTC\) +STARTED \(UTC\) +FINISHED \(UTC\) +INPUTS +EXIT +RESULTS +EXPIRES \(UTC\) +REASON$/,
  );
  assert.deepEqual(lines[1].split(/ {2,}/), [
    JOB_A,
    "P00001.7",
    "succeeded",
    "normal",
    "-",
    "2026-12-01 10:00:00",
    "2026-12-01 10:00:01",
    "2026-12-01 10:05:00",
    "2 / 300 MB",
    "0",
    "12 / 30.0 MB",
    "2026-12-08 10:05:00",
  ]);
  assert.deepEqual(lines[2].split(/ {2,}/), [
    JOB_B,
    "-",
    "failed",
    "low",
    "-",
    "2026-12-01 11:00:00",
    "-",
    "2026-12-01 11:00:03",
    "1 / 512 B",
    "3",
    "-",
    "2026-12-04 11:00:03 inputs",
    "the reconstruction script exited with code 3?",
  ]);
  assert.equal(jobsText([]), "the server holds no jobs of this client\n");
  assert.equal(jobsText([], "queued"), "no job of this client on the server is queued\n");
  assert.equal(jobsText([], undefined, { allClients: true }), "the server holds no jobs\n");
  assert.equal(
    jobsText([], "queued", { allClients: true }),
    "no job on the server is queued\n",
  );
  assert.deepEqual(JSON.parse(jobsJson(INFO)), { jobs: INFO });
});

Deno.test("jobLine() says how a job ended in one line; statusNotice() where a followed job is", () => {
  assert.equal(
    jobLine(INFO[0]),
    `${JOB_A} succeeded at 2026-12-01 10:05:00 UTC: 12 result file(s), 30.0 MB, ` +
      "kept until 2026-12-08 10:05:00 UTC",
  );
  assert.equal(
    jobLine({
      ...INFO[1],
      state: "cancelled",
      reason: "not needed",
      cancelled_by: "10.0.0.9 key ab",
    }),
    `${JOB_B} cancelled at 2026-12-01 11:00:03 UTC: not needed (by 10.0.0.9 key ab)`,
  );
  assert.equal(
    jobLine({ ...INFO[0], state: "expired" }),
    `${JOB_A} expired at 2026-12-01 10:05:00 UTC; its results were removed`,
  );
  assert.equal(
    statusNotice({ ...INFO[1], state: "queued", queue_position: 2 }),
    `job ${JOB_B} queued (position 2 in the queue, priority low)`,
  );
  assert.equal(
    statusNotice({ ...INFO[0], state: "running", attempts: 2 }),
    `job ${JOB_A} running (attempt 2)`,
  );
  assert.match(statusNotice(INFO[0]), new RegExp(`^job ${JOB_A} succeeded at `));
});

Deno.test("formatUtc() shows an ISO time as UTC to the second; queuedText() is the id alone", () => {
  assert.equal(formatUtc("2026-12-01T10:05:00.999Z"), "2026-12-01 10:05:00");
  assert.equal(formatUtc("2026-12-01T11:05:00+01:00"), "2026-12-01 10:05:00");
  assert.equal(formatUtc(undefined), "-");
  assert.equal(formatUtc("soon\u001b"), "soon?");
  assert.equal(queuedText({ jobId: JOB_A, uploaded: [] }, false), `${JOB_A}\n`);
  assert.deepEqual(JSON.parse(queuedText({ jobId: JOB_A, uploaded: [] }, true)), {
    job_id: JOB_A,
    status: "queued",
    uploaded: [],
  });
});

Deno.test("failureJson() of a lost contact names the job and the command that fetches it", () => {
  const error = new LostContactError(JOB_A, "lost the connection", {
    fetchCommand: `recon-client fetch ${JOB_A}`,
  });
  assert.deepEqual(JSON.parse(failureJson(error, ExitCode.LOST_CONTACT)), {
    status: "error",
    error: "lost the connection",
    exit_code: 5,
    job_id: JOB_A,
    fetch_command: `recon-client fetch ${JOB_A}`,
  });
});

Deno.test("jobsText() adds a CLIENT column when the jobs are more than one client's, or every client's were asked for", () => {
  const header = (text: string) => text.split("\n")[0].split(/ {2,}/);
  const mine = INFO.map((job) => ({ ...job, client: "mr1" }));
  assert.ok(!header(jobsText(mine)).includes("CLIENT"), "one client's jobs: no column");
  assert.ok(!header(jobsText(INFO)).includes("CLIENT"), "a server that names no client");

  const mixed = [mine[0], { ...INFO[1], client: "mr2\u001b[2J" }];
  const lines = jobsText(mixed).split("\n");
  assert.deepEqual(header(lines.join("\n")).slice(0, 3), ["JOB ID", "CLIENT", "FILE"]);
  assert.deepEqual(lines[1].split(/ {2,}/).slice(0, 4), [JOB_A, "mr1", "P00001.7", "succeeded"]);
  assert.deepEqual(lines[2].split(/ {2,}/).slice(0, 4), [JOB_B, "mr2?", "-", "failed"]);

  const all = jobsText(mine.slice(0, 1), undefined, { allClients: true }).split("\n");
  assert.deepEqual(all[0].split(/ {2,}/).slice(0, 2), ["JOB ID", "CLIENT"]);
  assert.deepEqual(all[1].split(/ {2,}/).slice(0, 3), [JOB_A, "mr1", "P00001.7"]);
  const unnamed = jobsText(INFO.slice(1), undefined, { allClients: true }).split("\n");
  assert.deepEqual(unnamed[1].split(/ {2,}/).slice(0, 3), [JOB_B, "-", "-"]);
  assert.deepEqual(JSON.parse(jobsJson(mixed)), { jobs: mixed }, "--json passes client through");
});

Deno.test("queueText() shows another client's job as (client NAME) without file names", () => {
  const lines = queueText([
    { ...JOBS[0], priority: "normal", client: "mr1" },
    {
      ...JOBS[1],
      priority: "high",
      queue_position: 1,
      client: "mr2",
      primary_file: "",
      input_dir: "",
    },
  ]).split("\n");
  assert.deepEqual(lines[1].split(/ {2,}/), [
    JOB_A,
    "processing 42%",
    "normal",
    "-",
    "P00001.7",
    "2",
    "2024-05-01T10:00:00.000Z",
    `job_${JOB_A}_input`,
  ]);
  assert.deepEqual(lines[2].split(/ {2,}/), [
    JOB_B,
    "queued",
    "high",
    "1",
    "(client mr2)",
    "12",
    "2024-05-01T10:00:02.000Z",
    "-",
  ]);
  const other = { ...JOBS[1], client: "mr2", primary_file: "", input_dir: "" };
  assert.deepEqual(JSON.parse(queueJson([other])), { jobs: [other] }, "--json as sent");
});

Deno.test("statusText() names the client the server took this one for, and whether it is an admin", () => {
  const second = (status: ServerStatus) => statusText(status, "recon.example:9000").split("\n")[1];
  assert.equal(
    second({ ...STATUS, client: "mr1", admin: true }),
    "client:              mr1 (admin)",
  );
  assert.equal(second({ ...STATUS, client: "mr2", admin: false }), "client:              mr2");
  assert.equal(second({ ...STATUS, client: "mr2" }), "client:              mr2");
  assert.equal(second(STATUS), "uptime:              1d 2h 3m 4s", "an older server says nothing");
  const text = statusText({ ...STATUS, client: "mr1", admin: true, queued_high: 1 }, "h:1");
  assert.equal(text.split("\n").length, 10, "each figure once, the client line among them");
  assert.deepEqual(JSON.parse(statusJson({ ...STATUS, client: "mr1", admin: true })), {
    ...Object.fromEntries(Object.entries(STATUS).filter(([key]) => key !== "type")),
    client: "mr1",
    admin: true,
  });
});

Deno.test("statusText() names the executor after the workers' limit, and what keeps it from taking jobs", () => {
  const text = statusText(
    {
      ...STATUS,
      client: "mr1",
      queued_normal: 3,
      executor: "slurm",
      executor_problem:
        "Slurm does not answer: sbatch: error: \u001b[31mtimeout\nagain\t(since 2026-12-01T10:00:00.000Z)",
    },
    "h:1",
  );
  assert.deepEqual(text.split("\n").slice(3, 8), [
    "max concurrent jobs: 2",
    "executor:            slurm",
    "executor problem:    Slurm does not answer: sbatch: error: ?timeout again (since 2026-12-01T10:00:00.000Z)",
    "active workers:      1",
    "queued jobs:         3",
  ]);
  const healthy = statusText({ ...STATUS, executor: "local" }, "h:1").split("\n");
  assert.equal(healthy[3], "executor:            local");
  assert.ok(!healthy.some((line) => line.startsWith("executor problem")), "no problem, no line");
  assert.ok(
    !statusText(STATUS, "h:1").includes("executor"),
    "a server that names no executor: no line",
  );
  const status = { ...STATUS, executor: "slurm", executor_problem: "Slurm does not answer" };
  assert.deepEqual(JSON.parse(statusJson(status)), {
    ...Object.fromEntries(Object.entries(status).filter(([key]) => key !== "type")),
  }, "--json passes executor and executor_problem through");
});

Deno.test("jobsText() adds a SLURM column after the state when any job ran on Slurm, '-' for one that did not", () => {
  const slurm: JobInfo[] = [
    { ...INFO[0], executor: "slurm", executor_ref: "4711" },
    INFO[1],
    { ...INFO[1], job_id: JOB_A, state: "running", executor: "slurm", executor_ref: "48\u001b" },
  ];
  const lines = jobsText(slurm).split("\n");
  assert.deepEqual(lines[0].split(/ {2,}/).slice(0, 5), [
    "JOB ID",
    "FILE",
    "STATE",
    "SLURM",
    "PRIORITY",
  ]);
  assert.deepEqual(lines[1].split(/ {2,}/).slice(0, 5), [
    JOB_A,
    "P00001.7",
    "succeeded",
    "4711",
    "normal",
  ]);
  assert.deepEqual(lines[2].split(/ {2,}/).slice(0, 5), [JOB_B, "-", "failed", "-", "low"]);
  assert.deepEqual(lines[3].split(/ {2,}/).slice(0, 5), [JOB_A, "-", "running", "48?", "low"]);
  assert.ok(!jobsText(INFO).includes("SLURM"), "no job ran on Slurm: no column");
  assert.ok(
    !jobsText([{ ...INFO[0], executor: "slurm" }]).includes("SLURM"),
    "a job not yet submitted to Slurm (no id): no column",
  );
  const both = jobsText([slurm[0], INFO[1]].map((job) => ({ ...job, client: job.job_id })));
  assert.deepEqual(both.split("\n")[0].split(/ {2,}/).slice(0, 5), [
    "JOB ID",
    "CLIENT",
    "FILE",
    "STATE",
    "SLURM",
  ]);
  const other = jobsText([{ ...slurm[0], executor: "pbs" }, slurm[0]]).split("\n");
  assert.equal(other[0].split(/ {2,}/)[3], "EXECUTOR", "more than one executor: each named");
  assert.deepEqual(other.slice(1, 3).map((line) => line.split(/ {2,}/)[3]), [
    "pbs 4711",
    "slurm 4711",
  ]);
  assert.deepEqual(JSON.parse(jobsJson(slurm)), { jobs: slurm }, "--json passes them through");
});

Deno.test("queueText() adds a SLURM column after the status when any job ran on Slurm", () => {
  const jobs: QueueDetails["jobs"] = [
    { ...JOBS[0], status: "running", priority: "normal", executor: "slurm", executor_ref: "4711" },
    { ...JOBS[1], priority: "high", queue_position: 1 },
  ];
  const lines = queueText(jobs).split("\n");
  assert.deepEqual(lines[0].split(/ {2,}/).slice(0, 5), [
    "JOB ID",
    "STATUS",
    "SLURM",
    "PRIORITY",
    "POS",
  ]);
  assert.deepEqual(lines[1].split(/ {2,}/).slice(0, 5), [
    JOB_A,
    "running 42%",
    "4711",
    "normal",
    "-",
  ]);
  assert.deepEqual(lines[2].split(/ {2,}/).slice(0, 5), [JOB_B, "queued", "-", "high", "1"]);
  const v2 = queueText([{ ...JOBS[0], executor_ref: "12" }]).split("\n");
  assert.deepEqual(v2[0].split(/ {2,}/).slice(0, 4), ["JOB ID", "STATUS", "SLURM", "PRIMARY FILE"]);
  assert.ok(!queueText(JOBS).includes("SLURM"), "no job on Slurm: no column");
  assert.deepEqual(JSON.parse(queueJson(jobs)), { jobs }, "--json passes them through");
});

const DELIVERED: DeliverySummary = {
  destination: "PACS",
  state: "delivered",
  files_total: 32,
  files_sent: 32,
  files_skipped: 1,
  files_failed: 0,
  attempts: 1,
  finished_at: "2026-12-01T10:05:12.000Z",
};
const RETRYING: DeliverySummary = {
  destination: "RESEARCH",
  state: "pending",
  files_total: 32,
  files_sent: 12,
  files_skipped: 1,
  files_failed: 2,
  attempts: 3,
  last_error: "association rejected (permanent): called AE title not recognized\u001b[2J",
  next_attempt_at: "2026-12-01T10:09:00.000Z",
};

Deno.test("deliveryCell() says where each destination stands in a few words", () => {
  assert.equal(deliveryCell(DELIVERED), "PACS 32/32");
  assert.equal(deliveryCell(RETRYING), "RESEARCH retrying 12/32");
  assert.equal(deliveryCell({ ...RETRYING, attempts: 0 }), "RESEARCH pending");
  assert.equal(deliveryCell({ ...RETRYING, state: "sending" }), "RESEARCH sending 12/32");
  assert.equal(deliveryCell({ ...RETRYING, state: "failed" }), "RESEARCH failed 12/32");
  assert.equal(deliveryCell({ ...DELIVERED, destination: "P\u001bACS" }), "P?ACS 32/32");
});

Deno.test("deliveryLine() says it in words: counts, times in UTC, the last error made printable", () => {
  assert.equal(
    deliveryLine(DELIVERED),
    "PACS: delivered 32 of 32 DICOM file(s) at 2026-12-01 10:05:12 UTC; " +
      "1 result file(s) not DICOM, not sent",
  );
  assert.equal(
    deliveryLine(RETRYING),
    "RESEARCH: 12 of 32 DICOM file(s) stored, 2 refused; attempt 3 failed: association " +
      "rejected (permanent): called AE title not recognized?; next attempt at " +
      "2026-12-01 10:09:00 UTC; 1 result file(s) not DICOM, not sent",
  );
  assert.equal(
    deliveryLine({ ...RETRYING, attempts: 0, files_skipped: 0, last_error: undefined }),
    "RESEARCH: pending, not tried yet",
  );
  assert.equal(
    deliveryLine({
      ...RETRYING,
      state: "failed",
      files_failed: 0,
      files_skipped: 0,
      attempts: 9,
      finished_at: "2026-12-02T10:05:00.000Z",
    }),
    "RESEARCH: failed at 2026-12-02 10:05:00 UTC after 9 attempt(s): association rejected " +
      "(permanent): called AE title not recognized?; 12 of 32 DICOM file(s) stored",
  );
  assert.equal(
    deliveryLine({ ...DELIVERED, state: "sending", files_sent: 5, files_skipped: 0 }),
    "PACS: sending, 5 of 32 DICOM file(s) stored so far (attempt 1)",
  );
});

Deno.test("jobsText() adds a DELIVERY column after RESULTS when any job's results go to a destination", () => {
  const jobs: JobInfo[] = [{ ...INFO[0], deliveries: [DELIVERED, RETRYING] }, INFO[1]];
  const lines = jobsText(jobs).split("\n");
  const header = lines[0].split(/ {2,}/);
  assert.deepEqual(header.slice(header.indexOf("RESULTS"), header.indexOf("RESULTS") + 3), [
    "RESULTS",
    "DELIVERY",
    "EXPIRES (UTC)",
  ]);
  const at = header.indexOf("DELIVERY");
  assert.equal(lines[1].split(/ {2,}/)[at], "PACS 32/32, RESEARCH retrying 12/32");
  assert.equal(lines[2].split(/ {2,}/)[at], "-");
  assert.ok(!jobsText(INFO).includes("DELIVERY"), "no destinations: no column");
  assert.ok(!jobsText([{ ...INFO[0], deliveries: [] }]).includes("DELIVERY"));
  assert.deepEqual(JSON.parse(jobsJson(jobs)), { jobs }, "--json passes them through");
});

Deno.test("jobLine() adds where a succeeded job's results go; the --no-download and redeliver reports list them", () => {
  const job: JobInfo = { ...INFO[0], deliveries: [DELIVERED, RETRYING] };
  assert.equal(
    jobLine(job),
    `${JOB_A} succeeded at 2026-12-01 10:05:00 UTC: 12 result file(s), 30.0 MB, ` +
      "kept until 2026-12-08 10:05:00 UTC; delivery: PACS 32/32, RESEARCH retrying 12/32",
  );
  const report = deliveryReport(job).split("\n");
  assert.deepEqual(report.slice(1), [
    `  ${deliveryLine(DELIVERED)}`,
    `  ${deliveryLine(RETRYING).replace("\u001b", "?")}`,
    "",
  ]);
  assert.equal(report[0], jobLine(job));
  assert.equal(deliveryReport(INFO[0]), `${jobLine(INFO[0])}\n`);
  const uploaded = [{ name: "P00001.7", size: 10 }];
  assert.deepEqual(JSON.parse(noDownloadJson(job, uploaded)), {
    job_id: JOB_A,
    status: "succeeded",
    uploaded,
    deliveries: [DELIVERED, RETRYING],
    job,
  });
  assert.deepEqual(JSON.parse(redeliverJson(INFO[0])), {
    job_id: JOB_A,
    deliveries: [],
    job: INFO[0],
  });
});

Deno.test("statusText() names the destinations, those every job goes to for an admin, none for none", () => {
  const line = (status: ServerStatus) =>
    statusText(status, "h:1").split("\n").find((l) => l.startsWith("destinations:"));
  assert.equal(
    line({ ...STATUS, destinations: ["PACS", "RESEARCH"], default_destinations: ["PACS"] }),
    "destinations:        PACS, RESEARCH (every job: PACS)",
  );
  assert.equal(
    line({ ...STATUS, destinations: ["PACS", "RESEARCH"] }),
    "destinations:        PACS, RESEARCH",
  );
  assert.equal(line({ ...STATUS, destinations: [] }), "destinations:        none");
  assert.equal(line(STATUS), undefined, "an older server says nothing");
});

Deno.test("resultJson() adds the deliveries when asked for them", () => {
  const result: SubmitResult = {
    jobId: JOB_A,
    uploaded: [],
    resultDir: "/d",
    files: [],
    skipped: 0,
  };
  assert.equal(JSON.parse(resultJson(result)).deliveries, undefined);
  assert.deepEqual(JSON.parse(resultJson(result, [DELIVERED])).deliveries, [DELIVERED]);
});
