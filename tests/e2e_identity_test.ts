/**
 * End to end, per-client identities (issue 14; docs/PROTOCOL.md handshake and jobs,
 * docs/DEPLOY.md "Per-scanner keys"). Real `bin/recon-server` and `bin/recon-client`
 * processes on 127.0.0.1, client keys made with the real `recon-server clients`:
 *
 * - two clients see only their own jobs; the other's job is `no job ID on this server`
 *   to fetch, cancel, logs, wait and rerun, word for word as an id that never existed;
 *   an admin client sees every job with `jobs --all-clients`, a non-admin is refused;
 *   `--view-queue` shows another client's job without its file name;
 * - a revoked client is refused within a second without a restart, its open sessions
 *   (an idle one, a `wait`, a foreground submission waiting for its job, an upload) are
 *   closed, each client ends in one line that names the revocation or the refused key,
 *   exit 3, with no hint to wait again, fetch or cancel; its running job stays, the
 *   other client goes on working;
 * - rotation: the old and the new key both work within KEY_ROTATION_GRACE, only the
 *   new one after it;
 * - a key used from an address its `from=` does not allow reads like a wrong key;
 *   `--priority high` needs the `high-priority` flag;
 * - SHARED_KEY stays the admin client `default` beside the client file, until it is
 *   removed from the server's recon.opts;
 * - a malformed client file is refused by `clients add` and leaves the server with the
 *   last good set.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import {
  CLIENT_BIN,
  delay,
  E2EServer,
  run,
  type RunResult,
  SlowRelay,
  Spawned,
  tempDir,
  UUID,
  waitFor,
  writeRandomFile,
} from "./support/e2e.ts";
import { parseJobs, writeDurableScript } from "./support/durable.ts";
import {
  addClient,
  clientsCommand,
  listClients,
  openSession,
  probe,
  refusalText,
  revokeClient,
  rotateClient,
  type TestClient,
  waitForAudit,
  waitForProbe,
} from "./support/identity.ts";

/** The hint of a client whose key the server stopped accepting mid-run. */
const NEW_KEY_HINT = "hint: the server no longer accepts this key: ask the recon box's " +
  "administrator for a new one (recon-server clients add or rotate) and put it in recon.opts; " +
  "the server's log says why";

/**
 * A revoked client's ending: exit 3, one error line (the last but one) matching
 * `error`, the new-key hint, and nothing suggesting to wait again, fetch or cancel.
 */
function assertRevokedEnding(what: string, result: RunResult, error: RegExp): void {
  assert.equal(result.code, 3, `${what}:\n${result.stderr}`);
  const lines = result.stderr.trimEnd().split("\n");
  assert.match(lines.at(-2) ?? "", error, `${what}:\n${result.stderr}`);
  assert.equal(lines.at(-1), NEW_KEY_HINT, what);
  assert.equal(lines.filter((line) => line.includes(": error: ")).length, 1, result.stderr);
  assert.doesNotMatch(result.stderr, /wait again|fetch|cancel|send the files again/, what);
}

/** A job id nobody submitted, for comparing refusals. */
const NO_SUCH_JOB = "00000000-0000-4000-8000-000000000000";
/** How soon a running server must act on a change of the client file (issue 14). */
const NOTICE_MS = 1000;

/** Wait until the server accepts each client's key (it reads the file within a second). */
async function untilAccepted(server: E2EServer, ...clients: TestClient[]): Promise<void> {
  for (const client of clients) {
    const { result } = await waitForProbe(server.port, client.key, true, NOTICE_MS + 1500);
    assert.ok(result.accepted);
    assert.equal(result.client, client.name, `the server names the session's client`);
  }
}

/** `recon-client ARGS` as `client` (its own recon.opts). */
function as(server: E2EServer, client: TestClient, args: string[]): Promise<RunResult> {
  return server.client(args, { optsPath: client.optsPath });
}

/** Submit `file` as `client` with --detach; returns the job id. */
async function submitDetached(
  server: E2EServer,
  client: TestClient | undefined,
  file: string,
  extra: string[] = [],
): Promise<string> {
  const args = ["--files", file, "--detach", ...extra];
  const result = client ? await as(server, client, args) : await server.client(args);
  assert.equal(result.code, 0, `--detach as ${client?.name ?? "default"}:\n${result.stderr}`);
  assert.match(result.stdout, new RegExp(`^${UUID.source}\n$`));
  return result.stdout.trim();
}

/** A client's refusal to a wrong SHARED_KEY, blanked by {@link refusalText}. */
async function wrongKeyRefusal(server: E2EServer): Promise<string> {
  const other = (await run(CLIENT_BIN, ["keygen"])).stdout.trim();
  const optsPath = await server.writeClientOpts("wrong_key.opts", { SHARED_KEY: other });
  const result = await server.client(["--server-status"], { optsPath });
  assert.equal(result.code, 3, result.stderr);
  return refusalText(result.stderr);
}

Deno.test("two clients each see only their own jobs; the other's job is 'no job ID on this server' to fetch, cancel, logs, wait and rerun; an admin sees all with jobs --all-clients, a non-admin is refused", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({ script, options: { MAX_CONCURRENT_JOBS: 2 } });
  const mr1 = await addClient(server, "mr1");
  const mr2 = await addClient(server, "mr2");
  const ops = await addClient(server, "ops", ["--admin"]);

  // The file as `clients add` leaves it: beside recon.opts, 0600, no key on stdout twice.
  const clientFile = path.join(server.dir, "recon-clients");
  assert.equal((await Deno.stat(clientFile)).mode! & 0o777, 0o600, "the client file is 0600");
  assert.match(mr1.stderr, new RegExp(clientFile.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
  const fileText = await Deno.readTextFile(clientFile);
  for (const client of [mr1, mr2, ops]) {
    assert.match(fileText, new RegExp(`^${client.name} ${client.keyId} \\S{44} \\S+Z`, "m"));
  }
  await untilAccepted(server, mr1, mr2, ops);

  const input1 = path.join(files.path, "P_mr1.7");
  const input2 = path.join(files.path, "P_mr2.7");
  await writeRandomFile(input1, 1000);
  await writeRandomFile(input2, 1000);
  const id1 = await submitDetached(server, mr1, input1);
  const id2 = await submitDetached(server, mr2, input2);
  for (const [client, id] of [[mr1, id1], [mr2, id2]] as const) {
    const waited = await as(server, client, ["wait", id]);
    assert.equal(waited.code, 0, waited.stderr);
  }

  // Each client lists its own job only, as its own; with one client, no CLIENT column.
  for (const [client, id] of [[mr1, id1], [mr2, id2]] as const) {
    const jobs = parseJobs(await as(server, client, ["jobs", "--json"]));
    assert.deepEqual(jobs.map((job) => [job.job_id, job.client]), [[id, client.name]]);
    const text = await as(server, client, ["jobs"]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, new RegExp(id));
    assert.doesNotMatch(text.stdout, new RegExp(client === mr1 ? id2 : id1));
    assert.doesNotMatch(text.stdout, /CLIENT/, "one client's jobs need no CLIENT column");
  }

  // mr2 acting on mr1's job hears exactly what it hears for a job that never existed.
  const commands: string[][] = [
    ["fetch", "--download-dir", path.join(files.path, "mr2")],
    [
      "cancel",
    ],
    ["logs"],
    ["rerun"],
  ];
  for (const [command, ...rest] of commands) {
    const theirs = await as(server, mr2, [command, id1, ...rest]);
    const none = await as(server, mr2, [command, NO_SUCH_JOB, ...rest]);
    assert.equal(theirs.code, 1, `${command} of another client's job:\n${theirs.stderr}`);
    assert.equal(theirs.stderr, `recon-client: error: no job ${id1} on this server\n`);
    assert.equal(theirs.stdout, "");
    assert.equal(none.code, theirs.code);
    assert.equal(none.stderr.replaceAll(NO_SUCH_JOB, id1), theirs.stderr, "no hint it exists");
  }
  const waited = await as(server, mr2, ["wait", id1]);
  assert.equal(waited.code, 1, waited.stderr);
  assert.equal(waited.stdout, `${id1} no job ${id1} on this server\n`);
  // Refused every time: the download directory was never created.
  await assert.rejects(Deno.stat(path.join(files.path, "mr2")), Deno.errors.NotFound);

  // mr1's job is untouched by mr2's attempts.
  const own = parseJobs(await as(server, mr1, ["jobs", "--json"]));
  assert.equal(own[0].state, "succeeded");

  // --all-clients: refused to a non-admin, every job (and its client) for an admin.
  for (const client of [mr1, mr2]) {
    const refused = await as(server, client, ["jobs", "--all-clients"]);
    assert.notEqual(refused.code, 0, refused.stderr);
    assert.equal(refused.stdout, "");
    assert.match(refused.stderr, /^recon-client: error: .*admin/m);
  }
  for (const admin of [ops, undefined]) {
    const args = ["jobs", "--all-clients", "--json"];
    const listed = parseJobs(admin ? await as(server, admin, args) : await server.client(args));
    assert.deepEqual(
      listed.map((job) => [job.job_id, job.client]).sort(),
      [[id1, "mr1"], [id2, "mr2"]].sort(),
      `jobs --all-clients as ${admin?.name ?? "default"}`,
    );
  }
  const table = await as(server, ops, ["jobs", "--all-clients"]);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /CLIENT/, "jobs of two clients show the CLIENT column");
  assert.match(table.stdout, new RegExp(`${id1}.*\\bmr1\\b`));
  assert.match(table.stdout, new RegExp(`${id2}.*\\bmr2\\b`));
  // Without --all-clients an admin lists its own jobs, like anyone.
  assert.deepEqual(parseJobs(await as(server, ops, ["jobs", "--json"])), []);

  // An admin may act on another client's job.
  const fetched = await as(server, ops, [
    "fetch",
    id1,
    "--download-dir",
    path.join(files.path, "ops"),
  ]);
  assert.equal(fetched.code, 0, fetched.stderr);
  const fetchedDir = path.join(files.path, "ops", id1);
  assert.ok(
    fetched.stdout.split("\n").includes(path.join(fetchedDir, "sums.txt")),
    `an admin fetches another client's results:\n${fetched.stdout}`,
  );
  assert.match(await Deno.readTextFile(path.join(fetchedDir, "sums.txt")), / {2}P_mr1\.7\n$/);

  // --server-status names the session's client.
  const status1 = await as(server, mr1, ["--server-status"]);
  assert.equal(status1.code, 0, status1.stderr);
  assert.match(status1.stdout, /^client:\s+mr1$/m);
  const statusOps = await as(server, ops, ["--server-status"]);
  assert.match(statusOps.stdout, /^client:\s+ops \(admin\)$/m);
  const statusDefault = await server.client(["--server-status", "--json"]);
  assert.equal(JSON.parse(statusDefault.stdout).client, "default");
  assert.equal(JSON.parse(statusDefault.stdout).admin, true);

  // clients list: each client's jobs and when it was last seen; never a key.
  const listed = await waitFor("clients list to show mr1 and mr2 as seen", async () => {
    const clients = await listClients(server);
    const byName = new Map(clients.map((client) => [client.name, client]));
    return byName.get("mr1")?.last_seen && byName.get("mr2")?.last_seen ? byName : undefined;
  });
  assert.equal(listed.get("mr1")!.jobs, 1);
  assert.equal(listed.get("mr2")!.jobs, 1);
  assert.equal(listed.get("ops")!.jobs, 0);
  assert.equal(listed.get("ops")!.admin, true);
  assert.equal(listed.get("mr1")!.admin, false);
  assert.equal(listed.get("mr1")!.key_id, mr1.keyId);
  assert.equal(listed.get("mr1")!.last_address, "127.0.0.1");
  assert.equal(listed.get("default")?.admin, true, "SHARED_KEY is listed as default, admin");
  const text = await clientsCommand(server, ["list"]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /NAME\s+KEY ID\s+CREATED\s+LAST SEEN\s+JOBS\s+FLAGS/);
  for (const key of [mr1.key, mr2.key, ops.key, server.key]) {
    assert.ok(!text.stdout.includes(key), "clients list never prints a key");
    assert.ok(!JSON.stringify([...listed.values()]).includes(key));
  }
});

Deno.test("--view-queue shows another client's queued and running jobs without their file names; an admin may cancel them, their owner sees by whom", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({ script, options: { MAX_CONCURRENT_JOBS: 1 } });
  const mr1 = await addClient(server, "mr1");
  const mr2 = await addClient(server, "mr2");
  const ops = await addClient(server, "ops", ["--admin"]);
  await untilAccepted(server, mr1, mr2, ops);
  const secret = path.join(files.path, "P_secret_patient.7");
  await Deno.writeTextFile(secret, "raw");
  const go = path.join(files.path, "go");
  const held = ["--recon-options", JSON.stringify({ wait_for: go })];
  const running = await submitDetached(server, mr1, secret, held);
  const queued = await submitDetached(server, mr1, secret, held);
  await waitFor("mr1's first job to run", async () => {
    const jobs = parseJobs(await as(server, mr1, ["jobs", "--json"]));
    return jobs.find((job) => job.job_id === running)?.state === "running";
  });

  const view = await as(server, mr2, ["--view-queue"]);
  assert.equal(view.code, 0, view.stderr);
  assert.doesNotMatch(view.stdout, /secret_patient/, "another client's file names stay hidden");
  assert.equal(view.stdout.match(/\(client mr1\)/g)?.length, 2, view.stdout);
  const viewJson = await as(server, mr2, ["--view-queue", "--json"]);
  assert.equal(viewJson.code, 0, viewJson.stderr);
  assert.doesNotMatch(viewJson.stdout, /secret_patient/);
  const entries = JSON.parse(viewJson.stdout);
  const jobs: Record<string, unknown>[] = Array.isArray(entries) ? entries : entries.jobs;
  assert.deepEqual(
    jobs.map((job) => [job.job_id, job.client, job.primary_file, job.input_dir]).sort(),
    [[running, "mr1", "", ""], [queued, "mr1", "", ""]].sort(),
  );
  const mine = await as(server, mr1, ["--view-queue"]);
  assert.equal(mine.stdout.match(/P_secret_patient\.7/g)?.length, 2, "its owner sees its files");

  // The other client cannot cancel them; an admin can, and the owner learns by whom.
  const refused = await as(server, mr2, ["cancel", queued]);
  assert.equal(refused.stderr, `recon-client: error: no job ${queued} on this server\n`);
  const cancelled = await as(server, ops, ["cancel", queued, running, "--reason", "wrong patient"]);
  assert.equal(cancelled.code, 0, cancelled.stderr);
  const after = parseJobs(await as(server, mr1, ["jobs", "--json"]));
  assert.deepEqual(after.map((job) => job.state), ["cancelled", "cancelled"]);
  for (const job of after) {
    assert.match(
      job.cancelled_by ?? "",
      /^ops at 127\.0\.0\.1:\d+$/,
      "the owner sees which client cancelled",
    );
    assert.equal(job.reason, "wrong patient");
  }
  const waited = await as(server, mr1, ["wait", queued]);
  assert.match(
    waited.stdout,
    new RegExp(
      `^${queued} cancelled.*wrong patient.*by ops at 127\\.0\\.0\\.1:\\d+\\)`,
      "m",
    ),
  );
});

Deno.test("a revoked client is refused within a second without a restart; its idle session, its wait, its foreground submission and its upload are closed, each client ending in one line, exit 3; its running job stays; the other client keeps working", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({
    script,
    options: { MAX_CONCURRENT_JOBS: 3, CLIENT_RECONNECT_TIMEOUT: 30 },
  });
  const mr1 = await addClient(server, "mr1");
  const mr2 = await addClient(server, "mr2");
  await untilAccepted(server, mr1, mr2);
  const wrongKey = await wrongKeyRefusal(server);

  // mr1: a job that runs until told, a `wait` on it, a foreground submission waiting for
  // its job, an idle session, a slow upload.
  const go = path.join(files.path, "go");
  const small = path.join(files.path, "P_small.7");
  await Deno.writeTextFile(small, "raw");
  const held = ["--recon-options", JSON.stringify({ wait_for: go })];
  const job = await submitDetached(server, mr1, small, held);
  await using waiting = server.spawnClient(["wait", job], { optsPath: mr1.optsPath });
  await waiting.waitForStderr(new RegExp(`job ${job} running`));
  await using foreground = server.spawnClient([
    "--files",
    small,
    "--download-dir",
    path.join(files.path, "mr1"),
    ...held,
  ], { optsPath: mr1.optsPath });
  await foreground.waitForStderr(new RegExp(`job ${UUID.source} queued`));
  const idle = await openSession(server.port, mr1.key);
  const big = path.join(files.path, "P_big.7");
  await writeRandomFile(big, 8 * 1024 * 1024);
  await using relay = new SlowRelay(server.port, 512 * 1024);
  await using uploading = new Spawned(CLIENT_BIN, [
    "--opts",
    mr1.optsPath,
    "--port",
    String(relay.port),
    "--files",
    big,
  ]);
  await waitFor("the upload to be under way", () => relay.uploaded > 1024 * 1024, {
    timeoutMs: 20_000,
  });

  try {
    const revoked = await revokeClient(server, "mr1");
    const revokedAt = Date.now();
    assert.match(revoked.stdout + revoked.stderr, new RegExp(mr1.keyId));
    const { at } = await waitForProbe(server.port, mr1.key, false, 5000);
    assert.ok(
      at - revokedAt <= NOTICE_MS,
      `the revoked key was still accepted ${
        at - revokedAt
      } ms after the revoke (at most ${NOTICE_MS})`,
    );

    // Its open sessions end: GOODBYE naming the revocation.
    const ending = await Promise.race([
      idle.receive(),
      delay(NOTICE_MS + 2000).then(() => "still open" as const),
    ]);
    assert.notEqual(ending, "still open", "the idle session of a revoked client is closed");
    assert.deepEqual(ending, { type: "goodbye", reason: "this client's key was revoked" });
    // wait and the foreground submission read the GOODBYE and end there, not trying again.
    const waitResult = await waiting.result(10_000);
    assertRevokedEnding(
      "wait",
      waitResult,
      new RegExp(
        `^recon-client: error: the server ended the session while waiting for job ${job}: ` +
          "this client's key was revoked$",
      ),
    );
    assert.doesNotMatch(waitResult.stderr, /reconnecting/);
    const foregroundResult = await foreground.result(10_000);
    assertRevokedEnding(
      "a foreground submission",
      foregroundResult,
      new RegExp(
        `^recon-client: error: the server ended the session before job ${UUID.source} ` +
          "finished: this client's key was revoked$",
      ),
    );
    assert.doesNotMatch(foregroundResult.stderr, /reconnecting/);
    // The upload's send fails on the closed connection: the GOODBYE read ahead says why,
    // or else the resume meets the refused key.
    const uploadResult = await uploading.result(10_000);
    assertRevokedEnding(
      "the upload",
      uploadResult,
      new RegExp(
        `^recon-client: error: (the server ended the session before job ${UUID.source} ` +
          "finished: this client's key was revoked|lost the connection during the upload of " +
          `job ${UUID.source} and could not reconnect: handshake with 127\\.0\\.0\\.1:` +
          `${relay.port} failed: the server does not accept key id ${mr1.keyId})$`,
      ),
    );
    assert.ok(relay.uploaded < 8 * 1024 * 1024, "the upload did not finish");

    // A new connection reads exactly like a wrong key.
    const refused = await as(server, mr1, ["--server-status"]);
    assert.equal(refused.code, 3, refused.stderr);
    assert.equal(refusalText(refused.stderr), wrongKey);

    // mr2 goes on: a job from upload to results.
    const other = path.join(files.path, "P_mr2.7");
    await Deno.writeTextFile(other, "mr2 raw");
    const result = await as(server, mr2, [
      "--files",
      other,
      "--download-dir",
      path.join(files.path, "mr2"),
    ]);
    assert.equal(result.code, 0, `mr2 after mr1's revocation:\n${result.stderr}`);

    // mr1's running job stays; an admin (SHARED_KEY's default) sees and cancels it.
    const all = parseJobs(await server.client(["jobs", "--all-clients", "--json"]));
    assert.equal(all.find((entry) => entry.job_id === job)?.state, "running");
    assert.equal(all.find((entry) => entry.job_id === job)?.client, "mr1");
    const cancelled = await server.client(["cancel", job]);
    assert.equal(cancelled.code, 0, cancelled.stderr);
    assert.deepEqual((await listClients(server)).map((client) => client.name).sort(), [
      "default",
      "mr2",
    ]);
  } finally {
    idle.abort();
    await Deno.writeTextFile(go, "");
  }
});

Deno.test("rotation: the old and the new key both work within KEY_ROTATION_GRACE, only the new one after it", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  const grace = 4;
  await using server = await E2EServer.start({ script, options: { KEY_ROTATION_GRACE: grace } });
  const old = await addClient(server, "mr1", ["--high-priority"]);
  await untilAccepted(server, old);
  const wrongKey = await wrongKeyRefusal(server);

  const rotatedAt = Date.now();
  const fresh = await rotateClient(server, "mr1");
  assert.notEqual(fresh.key, old.key);
  assert.notEqual(fresh.keyId, old.keyId);
  assert.match(
    fresh.stdout + fresh.stderr,
    /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ|UTC/,
    "says until when",
  );
  const [listed] = (await listClients(server)).filter((client) => client.name === "mr1");
  assert.equal(listed.key_id, fresh.keyId);
  assert.equal(listed.high_priority, true, "the flags go with the new key");
  assert.equal(listed.retiring.length, 1);
  assert.equal(listed.retiring[0].key_id, old.keyId);
  const expires = Date.parse(listed.retiring[0].expires);
  assert.ok(
    expires > rotatedAt + (grace - 2) * 1000 && expires <= Date.now() + grace * 1000 + 1000,
    `the old key expires about KEY_ROTATION_GRACE (${grace} s) after the rotation: ${
      listed.retiring[0].expires
    }`,
  );

  // Inside the grace period: both keys, as the same client.
  await untilAccepted(server, fresh);
  const oldSession = await openSession(server.port, old.key);
  const oldProbe = await probe(server.port, old.key);
  assert.ok(Date.now() < expires, "still inside the grace period (a slow machine?)");
  assert.deepEqual(oldProbe, { accepted: true, client: "mr1", admin: false });
  const input = path.join(files.path, "P_rot.7");
  await Deno.writeTextFile(input, "raw");
  const [byOld, byNew] = await Promise.all([
    submitDetached(server, old, input),
    submitDetached(server, fresh, input),
  ]);
  const jobs = parseJobs(await as(server, fresh, ["jobs", "--json"]));
  assert.deepEqual(jobs.map((job) => job.job_id).sort(), [byOld, byNew].sort(), "one client");

  // After it: the old key is refused like a wrong key, the new one goes on.
  const { at } = await waitForProbe(server.port, old.key, false, grace * 1000 + 3000);
  // A session still open under the old key ends with it; the audit log says the key retired.
  const ending = await Promise.race([
    oldSession.receive(),
    delay(NOTICE_MS + 2000).then(() => "still open" as const),
  ]);
  oldSession.abort();
  assert.equal((ending as { type?: string }).type, "goodbye", JSON.stringify(ending));
  const retired = await waitForAudit(
    server,
    "client_key_retired",
    (e) => e.event === "client_key_retired" && e.key_id === old.keyId,
  );
  assert.equal(retired.client, "mr1");
  assert.ok(at >= expires - 50, `the old key was refused before it expired`);
  assert.ok(at <= expires + NOTICE_MS + 500, `the old key still worked ${at - expires} ms after`);
  const refused = await as(server, old, ["--server-status"]);
  assert.equal(refused.code, 3, refused.stderr);
  assert.equal(refusalText(refused.stderr), wrongKey);
  const still = await as(server, fresh, ["wait", byOld, byNew]);
  assert.equal(still.code, 0, still.stderr);
});

Deno.test("a key used from an address its from= does not allow reads like a wrong key; --priority high needs high-priority", async (t) => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({ script });
  const far = await addClient(server, "far", ["--from", "10.1.2.0/24,192.0.2.7"]);
  const near = await addClient(server, "near", ["--from", "10.1.2.0/24,127.0.0.1"]);
  const urgent = await addClient(server, "urgent", ["--high-priority"]);
  await untilAccepted(server, near, urgent);
  const input = path.join(files.path, "P_from.7");
  await Deno.writeTextFile(input, "raw");

  await t.step("from= that does not match 127.0.0.1: exit 3, the wrong key's words", async () => {
    const wrongKey = await wrongKeyRefusal(server);
    const result = await as(server, far, ["--files", input]);
    assert.equal(result.code, 3, result.stderr);
    assert.equal(refusalText(result.stderr), wrongKey);
    const probed = await probe(server.port, far.key);
    assert.equal(probed.accepted, false);
  });

  await t.step("--priority high without the flag: refused naming it, nothing queued", async () => {
    const result = await as(server, near, ["--files", input, "--priority", "high", "--detach"]);
    assert.notEqual(result.code, 0, result.stderr);
    assert.equal(result.stdout, "");
    assert.match(result.stderr, /^recon-client: error: .*high-priority/m);
    assert.deepEqual(parseJobs(await as(server, near, ["jobs", "--json"])), []);
    const normal = await submitDetached(server, near, input);
    assert.equal(parseJobs(await as(server, near, ["jobs", "--json"]))[0].job_id, normal);
  });

  await t.step("--priority high with it, and for SHARED_KEY's default", async () => {
    const id = await submitDetached(server, urgent, input, ["--priority", "high"]);
    const jobs = parseJobs(await as(server, urgent, ["jobs", "--json"]));
    assert.equal(jobs.find((job) => job.job_id === id)?.priority, "high");
    const byDefault = await submitDetached(server, undefined, input, ["--priority", "high"]);
    const own = parseJobs(await server.client(["jobs", "--json"]));
    assert.deepEqual(own.map((job) => [job.job_id, job.client, job.priority]), [
      [byDefault, "default", "high"],
    ]);
    const waited = await server.client(["wait", byDefault]);
    assert.equal(waited.code, 0, waited.stderr);
  });
});

Deno.test("SHARED_KEY stays the admin client default beside the client file, until it is removed from the server's recon.opts", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({ script });
  const input = path.join(files.path, "P_default.7");
  await Deno.writeTextFile(input, "raw");
  const before = await submitDetached(server, undefined, input);

  const mr1 = await addClient(server, "mr1");
  await untilAccepted(server, mr1);
  const status = await server.client(["--server-status"]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /^client:\s+default \(admin\)$/m);
  const mine = await submitDetached(server, mr1, input);
  const byDefault = parseJobs(await server.client(["jobs", "--json"]));
  assert.deepEqual(byDefault.map((job) => [job.job_id, job.client]), [[before, "default"]]);
  const all = parseJobs(await server.client(["jobs", "--all-clients", "--json"]));
  assert.deepEqual(all.map((job) => job.job_id).sort(), [before, mine].sort());
  const waited = await server.client(["wait", before, mine]);
  assert.equal(waited.code, 0, `default, an admin, waits for mr1's job too:\n${waited.stderr}`);

  // The last step of the move to per-scanner keys: SHARED_KEY leaves recon.opts.
  const wrongKey = await wrongKeyRefusal(server);
  const shared = await server.writeClientOpts("shared_key.opts", {});
  await server.stop("SIGTERM");
  const opts = await Deno.readTextFile(server.optsPath);
  assert.match(opts, /^SHARED_KEY = /m);
  await Deno.writeTextFile(server.optsPath, opts.replace(/^SHARED_KEY = .*\n/m, ""));
  await server.restart();
  const refused = await server.client(["--server-status"], { optsPath: shared });
  assert.equal(refused.code, 3, refused.stderr);
  assert.equal(refusalText(refused.stderr), wrongKey);
  const jobs = parseJobs(await as(server, mr1, ["jobs", "--json"]));
  assert.deepEqual(jobs.map((job) => [job.job_id, job.client]), [[mine, "mr1"]]);
  assert.deepEqual((await listClients(server)).map((client) => client.name), ["mr1"]);
});

Deno.test("a malformed client file: the server logs file:line and keeps the last good set; clients add refuses to edit it", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({ script });
  const mr1 = await addClient(server, "mr1");
  await untilAccepted(server, mr1);
  const clientFile = path.join(server.dir, "recon-clients");
  const good = await Deno.readTextFile(clientFile);
  const lines = good.split("\n");
  const badLine = lines.length; // the line appended below (the file ends with "\n")
  await Deno.writeTextFile(
    clientFile,
    `${good}mr2 0123456789abcdef not-a-key 2026-12-01T19:42:00Z\n`,
  );
  await server.waitForLog(new RegExp(`recon-clients:${badLine}: `), NOTICE_MS + 2000);
  assert.doesNotMatch(server.log, /not-a-key/, "the log never repeats a key field");
  await delay(NOTICE_MS);
  assert.deepEqual(await probe(server.port, mr1.key), {
    accepted: true,
    client: "mr1",
    admin: false,
  });
  assert.ok(server.running, "a bad client file does not stop the server");

  const refused = await clientsCommand(server, ["add", "mr3"]);
  assert.notEqual(refused.code, 0, refused.stderr);
  assert.match(refused.stderr, new RegExp(`recon-clients:${badLine}: `));
  assert.equal(await Deno.readTextFile(clientFile).then((text) => text.includes("mr3")), false);

  // Fixed by hand, the file is read again and edits work.
  await Deno.writeTextFile(clientFile, good);
  const mr3 = await addClient(server, "mr3");
  await untilAccepted(server, mr1, mr3);
  const duplicate = await clientsCommand(server, ["add", "mr3"]);
  assert.notEqual(duplicate.code, 0, "a name is taken once");
  assert.match(duplicate.stderr, /mr3/);
  const reserved = await clientsCommand(server, ["add", "default"]);
  assert.notEqual(reserved.code, 0, "default is SHARED_KEY's name");
});
