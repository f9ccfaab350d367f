/**
 * What bin/recon-client (a real process) prints of per-client identities, against a
 * scripted server (tests/client/scripted_server.ts): `jobs --all-clients` sends
 * `all_clients` and adds a CLIENT column, a client that is not an admin gets the
 * server's refusal as one line (exit 1), `--view-queue` shows another client's job as
 * `(client NAME)` without its file names, `--server-status` names the client and
 * whether it is an admin, and `--json` passes `client` through.
 *
 * A key the server no longer accepts (PROTOCOL.md §2.9, §6.10): a refused key's hint
 * names every reason without saying which; a session the server ends because it
 * revoked the key, and a key refused when reconnecting, end `wait` and a submission at
 * once in one line, exit 3, with no hint to wait again, fetch or cancel (none can work
 * with this key); every other lost connection is still made again. A refused `fetch`
 * or submission creates no download directory.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { CLIENT_BIN, run, type RunResult, tempDir } from "../support/e2e.ts";
import { type Peer, REFUSE_KEY, type Script, ScriptedServer } from "./scripted_server.ts";

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

/** What {@link client} saw besides the output: the connections and the scratch directory. */
interface ClientRun extends RunResult {
  /** Connections the scripted server accepted. */
  connections: number;
  port: number;
  keyId: string;
  /** What the scratch directory holds after the run (it is removed then). */
  entries: string[];
}

/**
 * Run recon-client with `args` against a scripted server that plays `scripts` (one
 * per connection); `args` may name files in the scratch directory as `{dir}`. A client
 * that reconnects gives up after 3 s (CLIENT_RECONNECT_TIMEOUT), not the default hour.
 */
async function client(
  scripts: Script | (Script | typeof REFUSE_KEY)[],
  args: string[],
  setUp: (dir: string) => Promise<void> = async () => {},
): Promise<ClientRun> {
  await using server = await ScriptedServer.start(Array.isArray(scripts) ? scripts : [scripts]);
  await using dir = await tempDir("recon_identity_cli_");
  const opts = path.join(dir.path, "recon.opts");
  await Deno.writeTextFile(
    opts,
    `SHARED_KEY = ${server.key.text}\nSERVER_HOST = 127.0.0.1\nSERVER_PORT = ${server.port}\n` +
      `CLIENT_DOWNLOAD_DIR = ${path.join(dir.path, "downloads")}\n` +
      `LOG_FILEPATH = ${path.join(dir.path, "recon.log")}\n` +
      "CLIENT_RECONNECT_TIMEOUT = 3\n",
    { mode: 0o600 },
  );
  await setUp(dir.path);
  const result = await run(CLIENT_BIN, [
    "--opts",
    opts,
    ...args.map((arg) => arg.replaceAll("{dir}", dir.path)),
  ]);
  await server.finish();
  const entries = [];
  for await (const entry of Deno.readDir(dir.path)) entries.push(entry.name);
  return {
    ...result,
    connections: server.accepted,
    port: server.port,
    keyId: server.key.id,
    entries: entries.sort(),
  };
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

/** PROTOCOL.md §6.10: the GOODBYE reason of a session whose client's key was revoked. */
const REVOKED = "this client's key was revoked";
/** What to do once the key is no longer accepted: only a new key helps. */
const NEW_KEY_HINT = "hint: the server no longer accepts this key: ask the recon box's " +
  "administrator for a new one (recon-server clients add or rotate) and put it in recon.opts; " +
  "the server's log says why";

/** True when `line` holds a parenthesis inside another. */
function nestedParentheses(line: string): boolean {
  let depth = 0;
  for (const char of line) {
    if (char === "(" && ++depth > 1) return true;
    if (char === ")") depth = Math.max(0, depth - 1);
  }
  return false;
}

/** The error and hint lines of a run, and no line that suggests what cannot work. */
function assertKeyEnding(result: ClientRun, error: string): void {
  assert.equal(result.code, 3, result.stderr);
  assert.equal(result.stdout, "");
  const lines = result.stderr.trimEnd().split("\n");
  assert.deepEqual(lines.slice(-2), [`recon-client: error: ${error}`, NEW_KEY_HINT]);
  assert.equal(lines.filter((line) => line.startsWith("recon-client: error:")).length, 1);
  assert.doesNotMatch(
    result.stderr,
    /wait again|fetch|cancel|send the files again|later/,
    "no retry, fetch or cancel can work with this key",
  );
  for (const line of lines) assert.ok(!nestedParentheses(line), `nested parentheses: ${line}`);
}

/** A job waiting in the queue, as job_status carries it. */
function queued(id: string) {
  return { type: "job_status", job: { ...jobInfo(id, "mr1", "P00001.7"), client: undefined } };
}

/** The server's side of `wait`: follow_job of MINE answered, then `end` ends the session. */
function following(end: (peer: Peer) => Promise<void>): Script {
  return async (peer: Peer) => {
    assert.deepEqual(await peer.message(), { type: "follow_job", job_id: MINE });
    await peer.send(queued(MINE));
    await end(peer);
  };
}

/** The first part of a submission of {dir}/P00001.7: announced, asked for, queued as MINE. */
async function submission(peer: Peer, size: number): Promise<void> {
  await peer.expect("submit_recon_job");
  const file = await peer.expect("input_file");
  assert.equal(file.size, size);
  await peer.send({ type: "request_file", job_id: MINE, name: "P00001.7" });
}

/** Writes {dir}/P00001.7 of `size` bytes. */
function inputOf(size: number): (dir: string) => Promise<void> {
  return (dir) => Deno.writeFile(path.join(dir, "P00001.7"), new Uint8Array(size).fill(7));
}

Deno.test("a refused key's hint names every reason the server may have and says the server's log tells which", async () => {
  const result = await client([REFUSE_KEY], ["--server-status"]);
  assert.equal(result.code, 3, result.stderr);
  assert.equal(
    result.stderr,
    `recon-client: error: handshake with 127.0.0.1:${result.port} failed: the server does not ` +
      `accept key id ${result.keyId}\n` +
      "hint: check SHARED_KEY in recon.opts: the server does not know this key, or it was " +
      "revoked or replaced, or it may not be used from this address; the server's log says which\n",
  );
});

Deno.test("wait: a session the server ends because it revoked the key ends at once in one line, exit 3, no hint to wait again", async () => {
  const result = await client(following((peer) => peer.channel.close(REVOKED)), ["wait", MINE]);
  assertKeyEnding(
    result,
    `the server ended the session while waiting for job ${MINE}: this client's key was revoked`,
  );
  assert.doesNotMatch(result.stderr, /reconnecting/, "a revoked key is not tried again");
  assert.equal(result.connections, 1);
});

Deno.test("wait: a key refused when reconnecting ends there, exit 3, no hint to wait again", async () => {
  const result = await client(
    [following((peer) => Promise.resolve(peer.channel.abort())), REFUSE_KEY],
    ["wait", MINE],
  );
  assertKeyEnding(
    result,
    `lost the connection while waiting for job ${MINE} and could not reconnect: handshake with ` +
      `127.0.0.1:${result.port} failed: the server does not accept key id ${result.keyId}`,
  );
  assert.match(
    result.stderr,
    /^connection lost: the server closed the connection without ending the session; reconnecting in [\d.]+ s…$/m,
  );
  assert.equal(result.connections, 2, "one attempt: the refusal ends the reconnecting");
});

Deno.test("wait: a session the server ends for another reason is made again, and the notice has no nested parentheses", async () => {
  const done = { ...queued(MINE).job, state: "succeeded", finished_at: "2026-12-01T10:05:00.000Z" };
  const result = await client([
    following((peer) => peer.channel.close("the server restarts (maintenance)")),
    async (peer) => {
      assert.deepEqual(await peer.message(), { type: "follow_job", job_id: MINE });
      await peer.send({ type: "job_status", job: done });
      await peer.send({ type: "job_status", job: done });
      await peer.expect("goodbye").catch(() => {});
    },
  ], ["wait", MINE]);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, new RegExp(`^${MINE} succeeded`));
  const notice = result.stderr.split("\n").find((line) => line.startsWith("connection lost"));
  assert.match(
    notice ?? "",
    new RegExp(
      `^connection lost: the server ended the session while waiting for job ${MINE}: ` +
        "the server restarts \\(maintenance\\); reconnecting in [\\d.]+ s…$",
    ),
  );
  assert.equal(result.connections, 2);
});

Deno.test("submit: a job revoked while it waits ends at once in one line, exit 3, no hint to fetch or cancel", async () => {
  const size = 1000;
  const result = await client(
    async (peer) => {
      await submission(peer, size);
      await peer.receiveFile();
      await peer.send({ type: "job_queued", job_id: MINE, files_received: 1 });
      await peer.channel.close(REVOKED);
    },
    ["--files", "{dir}/P00001.7"],
    inputOf(size),
  );
  assertKeyEnding(
    result,
    `the server ended the session before job ${MINE} finished: this client's key was revoked`,
  );
  assert.equal(result.connections, 1);
});

Deno.test("submit: an upload the server cuts off because it revoked the key reports the revocation, not a broken pipe: exit 3, no hint to send again or cancel", async () => {
  const size = 64 * 1024 * 1024;
  const result = await client(
    [
      async (peer) => {
        await submission(peer, size);
        await peer.channel.receive(); // the first DATA record: the upload is under way
        await peer.channel.close(REVOKED);
      },
      REFUSE_KEY,
    ],
    ["--files", "{dir}/P00001.7"],
    inputOf(size),
  );
  // The GOODBYE is read when the client's channel read it before the failed send closed
  // the connection (about half the time here); otherwise the resume's handshake meets
  // the refused key. Either way the key is what ends it, and the broken pipe is at most
  // in the reconnect notice.
  const revoked =
    `the server ended the session before job ${MINE} finished: this client's key was revoked`;
  const refused = `lost the connection during the upload of job ${MINE} and could not ` +
    `reconnect: handshake with 127.0.0.1:${result.port} failed: the server does not accept ` +
    `key id ${result.keyId}`;
  const error = result.stderr.includes(revoked) ? revoked : refused;
  assertKeyEnding(result, error);
  assert.equal(result.connections, error === revoked ? 1 : 2);
});

Deno.test("submit: an upload whose resume meets a refused key ends there, exit 3, no hint to send again or cancel", async () => {
  const size = 4 * 1024 * 1024;
  const result = await client(
    [
      async (peer) => {
        await submission(peer, size);
        await peer.channel.receive();
        peer.channel.abort();
      },
      REFUSE_KEY,
    ],
    ["--files", "{dir}/P00001.7"],
    inputOf(size),
  );
  assertKeyEnding(
    result,
    `lost the connection during the upload of job ${MINE} and could not reconnect: handshake ` +
      `with 127.0.0.1:${result.port} failed: the server does not accept key id ${result.keyId}`,
  );
  assert.equal(result.connections, 2);
});

Deno.test("fetch of a job the server does not show, and a refused submission, create no download directory", async () => {
  const notFound = `no job ${THEIRS} on this server`;
  const fetched = await client(async (peer) => {
    assert.deepEqual(await peer.message(), { type: "follow_job", job_id: THEIRS, deliver: true });
    await peer.send({ type: "error", kind: "not_found", reason: notFound });
  }, ["fetch", THEIRS, "--download-dir", "{dir}/new/results"]);
  assert.equal(fetched.code, 1, fetched.stderr);
  assert.equal(fetched.stderr, `recon-client: error: ${notFound}\n`);
  assert.ok(!fetched.entries.includes("new"), `--download-dir was created: ${fetched.entries}`);

  const refusal = "priority high needs the high-priority flag; mr2 does not have it";
  const submitted = await client(
    async (peer) => {
      await peer.expect("submit_recon_job");
      await peer.expect("input_file");
      await peer.send({ type: "error", kind: "refused", reason: refusal });
      await peer.expect("goodbye").catch(() => {});
    },
    ["--files", "{dir}/P00001.7", "--priority", "high"],
    inputOf(10),
  );
  assert.equal(submitted.code, 1, submitted.stderr);
  assert.match(submitted.stderr, new RegExp(refusal));
  assert.ok(
    !submitted.entries.includes("downloads"),
    `CLIENT_DOWNLOAD_DIR was created: ${submitted.entries}`,
  );
});
