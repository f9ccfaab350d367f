/**
 * What bin/recon-client (a real process) prints of a server that runs its jobs on Slurm
 * (EXECUTOR = slurm, issue 15), against a scripted server
 * (tests/client/scripted_server.ts): `jobs` and `--view-queue` add a SLURM column with
 * each job's Slurm job id (`executor_ref`) when any listed job has one, `--server-status`
 * prints `executor: slurm` and, while Slurm cannot take jobs, `executor problem: …`,
 * and `--json` passes all of it through as the server sent it.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { CLIENT_BIN, run, type RunResult, tempDir } from "../support/e2e.ts";
import { type Script, ScriptedServer } from "./scripted_server.ts";

const ON_SLURM = "0b7f0f2e-3c1a-4b5e-9d2f-6a7b8c9d0e1f";
const LOCAL = "5d0c7e8f-1a2b-4c3d-8e9f-0a1b2c3d4e5f";

/** Run recon-client with `args` against a scripted server that plays `script`. */
async function client(script: Script, args: string[]): Promise<RunResult> {
  await using server = await ScriptedServer.start([script]);
  await using dir = await tempDir("recon_slurm_cli_");
  const opts = path.join(dir.path, "recon.opts");
  await Deno.writeTextFile(
    opts,
    `SHARED_KEY = ${server.key.text}\nSERVER_HOST = 127.0.0.1\nSERVER_PORT = ${server.port}\n` +
      `CLIENT_DOWNLOAD_DIR = ${path.join(dir.path, "downloads")}\n` +
      `LOG_FILEPATH = ${path.join(dir.path, "recon.log")}\n`,
    { mode: 0o600 },
  );
  const result = await run(CLIENT_BIN, ["--opts", opts, ...args]);
  await server.finish();
  return result;
}

/** Cells of a table line (columns are two or more spaces apart). */
function cells(line: string): string[] {
  return line.split(/ {2,}/);
}

const JOBS = [
  {
    job_id: ON_SLURM,
    state: "running",
    priority: "normal",
    submitted_at: "2026-12-01T10:00:00.000Z",
    started_at: "2026-12-01T10:00:01.000Z",
    file_count: 1,
    input_bytes: 10,
    primary_file: "P00001.7",
    attempts: 1,
    client: "mr1",
    executor: "slurm",
    executor_ref: "4711",
  },
  {
    job_id: LOCAL,
    state: "succeeded",
    priority: "normal",
    submitted_at: "2026-11-30T10:00:00.000Z",
    started_at: "2026-11-30T10:00:01.000Z",
    finished_at: "2026-11-30T10:00:05.000Z",
    file_count: 1,
    input_bytes: 10,
    primary_file: "P00002.7",
    attempts: 1,
    exit_code: 0,
    client: "mr1",
  },
];

/** The server's side of `jobs`: one list_jobs answered with `jobs`. */
function listing(jobs: Record<string, unknown>[]): Script {
  return async (peer) => {
    await peer.expect("list_jobs");
    await peer.send({ type: "job_list", jobs });
  };
}

Deno.test("recon-client jobs shows a SLURM column with the Slurm job id when a job ran on Slurm; --json passes it through", async () => {
  const result = await client(listing(JOBS), ["jobs"]);
  assert.equal(result.code, 0, result.stderr);
  const lines = result.stdout.trimEnd().split("\n");
  assert.deepEqual(cells(lines[0]).slice(0, 5), ["JOB ID", "FILE", "STATE", "SLURM", "PRIORITY"]);
  assert.deepEqual(cells(lines[1]).slice(0, 5), [
    ON_SLURM,
    "P00001.7",
    "running",
    "4711",
    "normal",
  ]);
  assert.deepEqual(cells(lines[2]).slice(0, 5), [LOCAL, "P00002.7", "succeeded", "-", "normal"]);

  const local = await client(listing([JOBS[1]]), ["jobs"]);
  assert.equal(local.code, 0, local.stderr);
  assert.doesNotMatch(local.stdout, /SLURM/, "no job on Slurm: no column");

  const json = await client(listing(JOBS), ["jobs", "--json"]);
  assert.equal(json.code, 0, json.stderr);
  assert.deepEqual(JSON.parse(json.stdout), { jobs: JOBS });
});

Deno.test("recon-client --view-queue shows a SLURM column with the Slurm job id; --json passes it through", async () => {
  const queue = [
    {
      job_id: ON_SLURM,
      status: "running",
      primary_file: "P00001.7",
      file_count: 1,
      submitted_at: "2026-12-01T10:00:00.000Z",
      started_at: "2026-12-01T10:00:01.000Z",
      input_dir: `job_${ON_SLURM}_input`,
      priority: "normal",
      client: "mr1",
      executor: "slurm",
      executor_ref: "4711",
    },
    {
      job_id: LOCAL,
      status: "queued",
      primary_file: "P00002.7",
      file_count: 1,
      submitted_at: "2026-12-01T10:00:02.000Z",
      input_dir: `job_${LOCAL}_input`,
      priority: "low",
      queue_position: 1,
      client: "mr1",
    },
  ];
  const answer: Script = async (peer) => {
    await peer.expect("get_queue_details");
    await peer.send({ type: "queue_details_response", jobs: queue });
  };
  const result = await client(answer, ["--view-queue"]);
  assert.equal(result.code, 0, result.stderr);
  const lines = result.stdout.trimEnd().split("\n");
  assert.deepEqual(cells(lines[0]).slice(0, 6), [
    "JOB ID",
    "STATUS",
    "SLURM",
    "PRIORITY",
    "POS",
    "PRIMARY FILE",
  ]);
  assert.deepEqual(cells(lines[1]).slice(0, 6), [
    ON_SLURM,
    "running",
    "4711",
    "normal",
    "-",
    "P00001.7",
  ]);
  assert.deepEqual(cells(lines[2]).slice(0, 6), [LOCAL, "queued", "-", "low", "1", "P00002.7"]);

  const json = await client(answer, ["--view-queue", "--json"]);
  assert.equal(json.code, 0, json.stderr);
  assert.deepEqual(JSON.parse(json.stdout), { jobs: queue });
});

Deno.test("recon-client --server-status prints the executor and, while Slurm cannot take jobs, the executor problem", async () => {
  const status = {
    type: "server_status_response",
    version: "9.9.9",
    uptime_seconds: 5,
    max_concurrent_jobs: 2,
    active_workers: 0,
    queue_length: 1,
    jobs_completed: 0,
    jobs_failed: 0,
    client: "mr1",
    admin: false,
    executor: "slurm",
  };
  const problem = "Slurm does not answer: sbatch: error: Batch job submission failed: " +
    "Unable to contact slurm controller (connect failure) (since 2026-12-01T10:00:00.000Z)";
  const answer = (extra: Record<string, unknown>): Script => async (peer) => {
    await peer.expect("get_server_status");
    await peer.send({ ...status, ...extra });
  };

  const healthy = await client(answer({}), ["--server-status"]);
  assert.equal(healthy.code, 0, healthy.stderr);
  assert.match(healthy.stdout, /^executor: +slurm$/m);
  assert.doesNotMatch(healthy.stdout, /executor problem/);

  const down = await client(answer({ executor_problem: problem }), ["--server-status"]);
  assert.equal(down.code, 0, down.stderr);
  const lines = down.stdout.split("\n");
  const at = lines.findIndex((line) => /^executor: +slurm$/.test(line));
  assert.ok(at > 0, down.stdout);
  assert.equal(lines[at + 1], `executor problem:    ${problem}`);

  const json = await client(answer({ executor_problem: problem }), ["--server-status", "--json"]);
  assert.equal(json.code, 0, json.stderr);
  const { type: _type, ...fields } = status;
  assert.deepEqual(JSON.parse(json.stdout), { ...fields, executor_problem: problem });
});
