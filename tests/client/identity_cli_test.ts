/**
 * What bin/recon-client (a real process) prints of per-client identities, against a
 * scripted server (tests/client/scripted_server.ts): `jobs --all-clients` sends
 * `all_clients` and adds a CLIENT column, a client that is not an admin gets the
 * server's refusal as one line (exit 1), `--view-queue` shows another client's job as
 * `(client NAME)` without its file names, `--server-status` names the client and
 * whether it is an admin, and `--json` passes `client` through.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { CLIENT_BIN, run, type RunResult, tempDir } from "../support/e2e.ts";
import { type Peer, type Script, ScriptedServer } from "./scripted_server.ts";

const MINE = "0b7f0f2e-3c1a-4b5e-9d2f-6a7b8c9d0e1f";
const THEIRS = "5d0c7e8f-1a2b-4c3d-8e9f-0a1b2c3d4e5f";

function jobInfo(id: string, client: string, primary: string) {
  return {
    job_id: id,
    state: "queued",
    priority: "normal",
    queue_position: id === MINE ? 1 : 2,
    submitted_at: "2026-12-01T10:00:00.000Z",
    file_count: 1,
    input_bytes: 10,
    primary_file: primary,
    attempts: 0,
    client,
  };
}

/** Run recon-client with `args` against a scripted server that plays `script` once. */
async function client(script: Script, args: string[]): Promise<RunResult> {
  await using server = await ScriptedServer.start([script]);
  await using dir = await tempDir("recon_identity_cli_");
  const opts = path.join(dir.path, "recon.opts");
  await Deno.writeTextFile(
    opts,
    `SHARED_KEY = ${server.key.text}\nSERVER_HOST = 127.0.0.1\nSERVER_PORT = ${server.port}\n` +
      `CLIENT_DOWNLOAD_DIR = ${path.join(dir.path, "downloads")}\n` +
      `LOG_FILEPATH = ${path.join(dir.path, "recon.log")}\n`,
    { mode: 0o600 },
  );
  const result = await run(CLIENT_BIN, ["--opts", opts, ...args]);
  await server.done;
  return result;
}

/** The server's side of `jobs`: one list_jobs, which must be `expected`, answered. */
function listing(expected: Record<string, unknown>, answer: Record<string, unknown>): Script {
  return async (peer: Peer) => {
    assert.deepEqual(await peer.message(), { type: "list_jobs", ...expected });
    await peer.send(answer);
  };
}

Deno.test("recon-client jobs --all-clients asks for every client's jobs and names each job's client", async () => {
  const jobs = [jobInfo(MINE, "mr1", "P00001.7"), jobInfo(THEIRS, "mr2", "P00002.7")];
  const result = await client(
    listing({ all_clients: true }, { type: "job_list", jobs }),
    ["jobs", "--all-clients"],
  );
  assert.equal(result.code, 0, result.stderr);
  const lines = result.stdout.trimEnd().split("\n");
  assert.deepEqual(lines[0].split(/ {2,}/).slice(0, 4), ["JOB ID", "CLIENT", "FILE", "STATE"]);
  assert.deepEqual(lines[1].split(/ {2,}/).slice(0, 4), [MINE, "mr1", "P00001.7", "queued"]);
  assert.deepEqual(lines[2].split(/ {2,}/).slice(0, 4), [THEIRS, "mr2", "P00002.7", "queued"]);

  const json = await client(
    listing({ all_clients: true }, { type: "job_list", jobs }),
    ["jobs", "--all-clients", "--json"],
  );
  assert.equal(json.code, 0, json.stderr);
  assert.deepEqual(JSON.parse(json.stdout), { jobs });
});

Deno.test("recon-client jobs lists one client's jobs without a CLIENT column, and asks for no more", async () => {
  const result = await client(
    listing({}, { type: "job_list", jobs: [jobInfo(MINE, "mr2", "P00001.7")] }),
    ["jobs"],
  );
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /^JOB ID +FILE +STATE /);
  assert.doesNotMatch(result.stdout, /CLIENT/);
});

Deno.test("recon-client jobs --all-clients by a client that is not an admin: the server's refusal in one line, exit 1", async () => {
  const refusal = "listing every client's jobs needs an admin client; mr2 is not one";
  const result = await client(
    listing({ all_clients: true }, { type: "error", kind: "refused", reason: refusal }),
    ["jobs", "--all-clients"],
  );
  assert.equal(result.code, 1, result.stderr);
  assert.equal(result.stdout, "");
  assert.equal(result.stderr, `recon-client: error: ${refusal}\n`);
});

Deno.test("recon-client --view-queue shows another client's job as (client NAME), without its file names", async () => {
  const result = await client(async (peer) => {
    await peer.expect("get_queue_details");
    await peer.send({
      type: "queue_details_response",
      jobs: [
        {
          job_id: MINE,
          status: "queued",
          primary_file: "P00001.7",
          file_count: 2,
          submitted_at: "2026-12-01T10:00:00.000Z",
          input_dir: `job_${MINE}_input`,
          priority: "normal",
          queue_position: 1,
          client: "mr1",
        },
        {
          job_id: THEIRS,
          status: "queued",
          primary_file: "",
          file_count: 1,
          submitted_at: "2026-12-01T10:00:01.000Z",
          input_dir: "",
          priority: "normal",
          queue_position: 2,
          client: "mr2",
        },
      ],
    });
  }, ["--view-queue"]);
  assert.equal(result.code, 0, result.stderr);
  const lines = result.stdout.trimEnd().split("\n");
  assert.deepEqual(lines[1].split(/ {2,}/).slice(4), [
    "P00001.7",
    "2",
    "2026-12-01T10:00:00.000Z",
    `job_${MINE}_input`,
  ]);
  assert.deepEqual(lines[2].split(/ {2,}/).slice(4), [
    "(client mr2)",
    "1",
    "2026-12-01T10:00:01.000Z",
    "-",
  ]);
});

Deno.test("recon-client --server-status names the client the server took it for, and whether it is an admin", async () => {
  const status = {
    type: "server_status_response",
    version: "9.9.9",
    uptime_seconds: 5,
    max_concurrent_jobs: 2,
    active_workers: 0,
    queue_length: 0,
    jobs_completed: 0,
    jobs_failed: 0,
  };
  for (
    const [extra, line] of [
      [{ client: "mr1", admin: true }, "client:              mr1 (admin)"],
      [{ client: "mr2", admin: false }, "client:              mr2"],
    ] as const
  ) {
    const result = await client(async (peer) => {
      await peer.expect("get_server_status");
      await peer.send({ ...status, ...extra });
    }, ["--server-status"]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.split("\n")[1], line);
  }
  const json = await client(async (peer) => {
    await peer.expect("get_server_status");
    await peer.send({ ...status, client: "mr1", admin: true });
  }, ["--server-status", "--json"]);
  assert.equal(json.code, 0, json.stderr);
  const { type: _type, ...fields } = status;
  assert.deepEqual(JSON.parse(json.stdout), { ...fields, client: "mr1", admin: true });
});
