/**
 * End to end, the audit log and provenance (issue 14). Real `bin/recon-server` and
 * `bin/recon-client` processes on 127.0.0.1:
 *
 * - every event of a job's life and of a client's key has its line, with the fields
 *   the contract names (inputs and outputs with their SHA-256, who cancelled, to whom
 *   results went), and no key ever appears in the log;
 * - a burst of wrong-key connections is one aggregated `handshake_failed` line with a
 *   count (and an address outside TRUSTEDIPS one `connection_refused` line), not one
 *   fsync per connection;
 * - `recon-server audit --verify` passes on a live server's log and fails, naming the
 *   file and line, after one line is edited, one deleted, or the tail cut; a server
 *   started on a cut log records `audit_mismatch`, which `--verify` reports from then on;
 * - rotation at AUDIT_ROTATE_BYTES carries the chain into the next file;
 * - `audit --job/--client/--since/--json` filter the log;
 * - `provenance.json` comes back with the results, its hashes those of the inputs and
 *   RECON_SCRIPT; a script's own provenance.json is kept as provenance.script.json;
 * - results past RESULT_RETENTION have their `job_expired` line.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import {
  delay,
  E2EServer,
  sha256File,
  tempDir,
  UUID,
  waitFor,
  writeRandomFile,
} from "./support/e2e.ts";
import { parseJobs, writeDurableScript } from "./support/durable.ts";
import {
  addClient,
  auditCommand,
  type AuditEvent,
  auditFiles,
  auditPath,
  keyIdOf,
  probe,
  readAudit,
  revokeClient,
  rotateClient,
  type TestClient,
  waitForAudit,
  waitForProbe,
} from "./support/identity.ts";
import { generateKey } from "../lib/crypto/keys.ts";
import { formatClientLine, formatTime, makeClientKey } from "../lib/server/client_keys.ts";

/** Wait until the server accepts each client's key (it reads the file within a second). */
async function untilAccepted(server: E2EServer, ...clients: TestClient[]): Promise<void> {
  for (const client of clients) {
    const { result } = await waitForProbe(server.port, client.key, true, 2500);
    assert.equal(result.accepted && result.client, client.name);
  }
}

/** Submit `files` as `client` with --detach; returns the job id. */
async function submitDetached(
  server: E2EServer,
  client: TestClient,
  files: string[],
  extra: string[] = [],
): Promise<string> {
  const result = await server.client(["--files", ...files, "--detach", ...extra], {
    optsPath: client.optsPath,
  });
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, new RegExp(`^${UUID.source}\n$`));
  return result.stdout.trim();
}

/** The events of one kind (and job, when given). */
function events(log: AuditEvent[], event: string, job?: string): AuditEvent[] {
  return log.filter((entry) => entry.event === event && (job === undefined || entry.job === job));
}

/** `{name, size, sha256}` of each file, sorted by name. */
async function described(
  files: string[],
): Promise<{ name: string; size: number; sha256: string }[]> {
  const entries = await Promise.all(files.map(async (file) => ({
    name: path.basename(file),
    size: (await Deno.stat(file)).size,
    sha256: await sha256File(file),
  })));
  return entries.sort((a, b) => a.name.localeCompare(b.name));
}

function byName<T extends { name: string }>(list: T[]): T[] {
  return [...list].sort((a, b) => a.name.localeCompare(b.name));
}

Deno.test("every event of a job's life and of a client's key has its audit line; bursts of wrong-key and untrusted connections are counted, not one line each; no key appears", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({ script, options: { MAX_CONCURRENT_JOBS: 1 } });
  const started = await waitForAudit(server, "server_started", (e) => e.event === "server_started");
  const [first] = await readAudit(server);
  assert.equal(first.seq, 1);
  assert.equal(first.prev, "0".repeat(64), "the first line chains from 64 zeros");
  assert.equal(started.pid, server.pid);
  assert.equal(typeof started.version, "string");

  const mr1 = await addClient(server, "mr1", ["--from", "127.0.0.1"]);
  const ops = await addClient(server, "ops", ["--admin"]);
  await untilAccepted(server, mr1, ops);
  const added = await waitForAudit(
    server,
    "client_added mr1",
    (e) => e.event === "client_added" && e.client === "mr1",
  );
  assert.equal(added.key_id, mr1.keyId);
  assert.match(String(added.flags), /from/);
  const hello = await waitForAudit(
    server,
    "handshake_ok mr1",
    (e) => e.event === "handshake_ok" && e.client === "mr1",
  );
  assert.equal(hello.key_id, mr1.keyId);
  assert.equal(hello.address, "127.0.0.1");

  // A job from submission to delivery, as mr1 in the foreground.
  const inputs = [path.join(files.path, "P_audit_a.7"), path.join(files.path, "P_audit_b.7")];
  await writeRandomFile(inputs[0], 300_000);
  await writeRandomFile(inputs[1], 1000);
  const download = path.join(files.path, "down");
  const run = await server.client(
    ["--files", ...inputs, "--download-dir", download, "--recon-options", '{"copy": 1}'],
    { optsPath: mr1.optsPath },
  );
  assert.equal(run.code, 0, run.stderr);
  const id = new RegExp(`(${UUID.source})`).exec(run.stdout)![1];
  const outputs = (await Array.fromAsync(Deno.readDir(path.join(download, id))))
    .map((entry) => path.join(download, id, entry.name));

  const submitted = await waitForAudit(
    server,
    "job_submitted",
    (e) => e.event === "job_submitted" && e.job === id,
  );
  assert.equal(submitted.client, "mr1");
  assert.equal(submitted.address, "127.0.0.1");
  assert.equal(submitted.priority, "normal");
  assert.deepEqual(submitted.options, { copy: 1 });
  assert.deepEqual(byName(submitted.inputs as { name: string }[]), await described(inputs));
  const start = await waitForAudit(
    server,
    "job_started",
    (e) => e.event === "job_started" && e.job === id,
  );
  assert.equal(start.client, "mr1");
  assert.equal(start.attempt, 1);
  assert.equal(typeof start.executor, "string");
  const finished = await waitForAudit(
    server,
    "job_finished",
    (e) => e.event === "job_finished" && e.job === id,
  );
  assert.equal(finished.client, "mr1");
  assert.equal(finished.state, "succeeded");
  assert.equal(finished.exit_code, 0);
  assert.equal(typeof finished.duration_seconds, "number");
  assert.deepEqual(
    byName(finished.outputs as { name: string }[]),
    await described(outputs),
    "the outputs' sizes and hashes are those of the files the client received",
  );
  const delivered = await waitForAudit(
    server,
    "job_delivered",
    (e) => e.event === "job_delivered" && e.job === id,
  );
  assert.equal(delivered.client, "mr1");
  assert.equal(delivered.to, "mr1");
  assert.equal(delivered.address, "127.0.0.1");
  assert.equal(delivered.files, outputs.length);
  const bytes = (await described(outputs)).reduce((sum, file) => sum + file.size, 0);
  assert.equal(delivered.bytes, bytes);

  // Fetched later by its owner and by an admin.
  for (const client of [mr1, ops]) {
    const fetched = await server.client(
      ["fetch", id, "--download-dir", path.join(files.path, client.name)],
      { optsPath: client.optsPath },
    );
    assert.equal(fetched.code, 0, fetched.stderr);
    const line = await waitForAudit(
      server,
      `job_fetched to ${client.name}`,
      (e) => e.event === "job_fetched" && e.job === id && e.to === client.name,
    );
    assert.equal(line.client, "mr1");
    assert.equal(line.files, outputs.length);
    assert.equal(line.bytes, bytes);
  }

  // Cancelled by an admin, with a reason.
  const go = path.join(files.path, "go");
  const held = await submitDetached(server, mr1, [inputs[1]], [
    "--recon-options",
    JSON.stringify({ wait_for: go }),
  ]);
  await waitForAudit(
    server,
    "job_started (held)",
    (e) => e.event === "job_started" && e.job === held,
  );
  const cancel = await server.client(["cancel", held, "--reason", "wrong patient"], {
    optsPath: ops.optsPath,
  });
  assert.equal(cancel.code, 0, cancel.stderr);
  const cancelled = await waitForAudit(
    server,
    "job_cancelled",
    (e) => e.event === "job_cancelled" && e.job === held,
  );
  assert.equal(cancelled.client, "mr1");
  assert.match(String(cancelled.by), /^ops at 127\.0\.0\.1:\d+$/, "by which client");
  assert.equal(cancelled.reason, "wrong patient");

  // A burst of connections under a key nobody has: counted, not one line each.
  const wrong = generateKey();
  const burst = 10;
  for (let i = 0; i < burst; i++) assert.equal((await probe(server.port, wrong)).accepted, false);

  // The client's key rotated, then revoked.
  const rotated = await rotateClient(server, "mr1");
  const rotation = await waitForAudit(
    server,
    "client_rotated",
    (e) => e.event === "client_rotated" && e.client === "mr1",
  );
  assert.equal(rotation.key_id, rotated.keyId);
  assert.deepEqual(
    (rotation.retiring as { key_id: string }[]).map((entry) => entry.key_id),
    [mr1.keyId],
  );
  await revokeClient(server, "mr1");
  const revocation = await waitForAudit(
    server,
    "client_revoked",
    (e) => e.event === "client_revoked" && e.client === "mr1",
  );
  assert.deepEqual([...(revocation.key_ids as string[])].sort(), [mr1.keyId, rotated.keyId].sort());

  // Addresses outside TRUSTEDIPS: closed before any handshake, counted likewise.
  await server.stop("SIGTERM");
  await Deno.writeTextFile(
    server.optsPath,
    `${await Deno.readTextFile(server.optsPath)}TRUSTEDIPS = 10.9.9.9\n`,
  );
  await server.restart();
  const outside = 5;
  for (let i = 0; i < outside; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
    assert.equal(await conn.read(new Uint8Array(16)), null, "closed without a word");
    conn.close();
  }
  await server.stop("SIGTERM");

  const log = await readAudit(server);
  const stops = events(log, "server_stopped");
  assert.equal(stops.length, 2, "each stop has its line");
  assert.match(String(stops[0].reason), /SIGTERM/);
  assert.equal(events(log, "server_started").length, 2, "each start has its line");
  const wrongId = await keyIdOf(wrong);
  const failed = events(log, "handshake_failed").filter((e) => e.key_id === wrongId);
  assert.equal(
    failed.reduce((sum, e) => sum + Number(e.count), 0),
    burst,
    `the burst is counted: ${JSON.stringify(failed)}`,
  );
  assert.ok(failed.length <= 2, `aggregated per address and minute: ${failed.length} lines`);
  const refused = events(log, "connection_refused");
  assert.equal(
    refused.reduce((sum, e) => sum + Number(e.count), 0),
    outside,
    `refusals are counted: ${JSON.stringify(refused)}`,
  );
  assert.ok(refused.length <= 2, `aggregated per address and minute: ${refused.length} lines`);
  for (const line of [...failed, ...refused]) {
    assert.equal(line.address, "127.0.0.1");
    assert.ok(line.first && line.last && String(line.first) <= String(line.last), "first, last");
  }
  assert.match(String(refused[0].reason), /TRUSTEDIPS/);

  // The lines form one chain: seq 1, 2, …; keys never appear; times are ISO UTC.
  log.forEach((entry, index) => assert.equal(entry.seq, index + 1));
  for (const entry of log) assert.match(entry.time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  const text = (await Promise.all((await auditFiles(server)).map((f) => Deno.readTextFile(f))))
    .join("");
  for (const key of [server.key, mr1.key, ops.key, rotated.key, wrong]) {
    assert.ok(!text.includes(key), "no key material in the audit log");
    assert.ok(!text.includes(key.slice(0, 43)), "not even without its padding");
  }
  assert.equal((await Deno.stat(auditPath(server))).mode! & 0o777, 0o600);
  const verified = await auditCommand(server, ["--verify"]);
  assert.equal(verified.code, 0, verified.stdout + verified.stderr);
});

Deno.test("client changes made by hand and while the server was down have their audit lines; a hand-given admin flag holds at once", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({ script });
  const mr1 = await addClient(server, "mr1");
  const mr2 = await addClient(server, "mr2");
  await untilAccepted(server, mr1, mr2);
  const refused = await server.client(["jobs", "--all-clients"], { optsPath: mr1.optsPath });
  assert.notEqual(refused.code, 0, "not an admin yet");

  // A flag added by hand: client_changed, and the flag holds without a restart.
  const clientFile = path.join(server.dir, "recon-clients");
  const text = await Deno.readTextFile(clientFile);
  const line = new RegExp(`^(mr1 ${mr1.keyId} \\S+ \\S+)$`, "m");
  assert.match(text, line);
  await Deno.writeTextFile(clientFile, text.replace(line, "$1 admin"));
  const changed = await waitForAudit(
    server,
    "client_changed",
    (e) => e.event === "client_changed" && e.client === "mr1",
  );
  assert.equal(changed.key_id, mr1.keyId);
  assert.equal(changed.flags, "admin");
  const all = await server.client(["jobs", "--all-clients", "--json"], {
    optsPath: mr1.optsPath,
  });
  assert.equal(all.code, 0, all.stderr);

  // Added and revoked while the server was down: recorded at its next start.
  await server.stop("SIGTERM");
  const mr9 = await addClient(server, "mr9", ["--high-priority"]);
  await revokeClient(server, "mr2");
  await server.restart();
  const added = await waitForAudit(
    server,
    "client_added mr9",
    (e) => e.event === "client_added" && e.client === "mr9",
  );
  assert.equal(added.key_id, mr9.keyId);
  assert.equal(added.flags, "high-priority");
  const revoked = await waitForAudit(
    server,
    "client_revoked mr2",
    (e) => e.event === "client_revoked" && e.client === "mr2",
  );
  assert.deepEqual(revoked.key_ids, [mr2.keyId]);
  await untilAccepted(server, mr9);
  assert.equal((await probe(server.port, mr2.key)).accepted, false);
  const log = await readAudit(server);
  assert.equal(events(log, "client_added").filter((e) => e.client === "mr9").length, 1);
  assert.equal(events(log, "client_added").filter((e) => e.client === "mr1").length, 1, "once");
});

/** A line of `audit --verify` saying where the chain breaks. */
const BROKEN = /audit log broken at (\S+):(\d+)(?: \(seq (\d+)\))?: (.+)/;

Deno.test("audit --verify passes on a live server's log and names the file and line after an edited line, a deleted line or a cut tail; a server started on a cut log records audit_mismatch", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({ script });
  const mr1 = await addClient(server, "mr1");
  await untilAccepted(server, mr1);
  const input = path.join(files.path, "P_verify.7");
  await Deno.writeTextFile(input, "raw");
  const id = await submitDetached(server, mr1, [input]);
  const waited = await server.client(["wait", id], { optsPath: mr1.optsPath });
  assert.equal(waited.code, 0, waited.stderr);
  await waitForAudit(server, "job_finished", (e) => e.event === "job_finished" && e.job === id);

  // Live: the server holds the log open and its head in the job store.
  const live = await auditCommand(server, ["--verify"]);
  assert.equal(live.code, 0, live.stdout + live.stderr);
  const intact = /^audit log intact: (\d+) lines in 1 files?, last \S+/m.exec(live.stdout);
  assert.ok(intact, `audit --verify on the live log:\n${live.stdout}${live.stderr}`);
  assert.ok(Number(intact[1]) >= 6, live.stdout);

  await server.stop("SIGTERM");
  const file = auditPath(server);
  const original = await Deno.readTextFile(file);
  const lines = original.split("\n").slice(0, -1);
  assert.ok(lines.length >= 6, original);
  const whole = await auditCommand(server, ["--verify"]);
  assert.equal(whole.code, 0, whole.stdout + whole.stderr);
  assert.match(whole.stdout, new RegExp(`^audit log intact: ${lines.length} lines in 1 file`, "m"));

  /** Verify with `text` as the log; returns where it says the chain breaks. */
  const brokenAt = async (text: string, what: string) => {
    await Deno.writeTextFile(file, text);
    const result = await auditCommand(server, ["--verify"]);
    const output = result.stdout + result.stderr;
    assert.equal(result.code, 1, `${what}: audit --verify exits 1:\n${output}`);
    const match = BROKEN.exec(output);
    assert.ok(match, `${what}: a line naming the place:\n${output}`);
    assert.equal(path.basename(match[1]), "audit.jsonl", output);
    return { line: Number(match[2]), seq: Number(match[3]), what: match[4], output };
  };

  // One line edited: the third line's job or time changed, nothing else.
  const edited = [...lines];
  edited[2] = edited[2].replace(/"time":"[^"]*"/, '"time":"2020-01-01T00:00:00.000Z"');
  assert.notEqual(edited[2], lines[2]);
  const edit = await brokenAt(edited.join("\n") + "\n", "an edited line");
  assert.ok([3, 4].includes(edit.line), `the edited line 3 or the next: ${edit.output}`);

  // One line deleted.
  const deleted = lines.filter((_, index) => index !== 2);
  const deletion = await brokenAt(deleted.join("\n") + "\n", "a deleted line");
  assert.equal(deletion.line, 3, `where the deleted line was: ${deletion.output}`);

  // The tail cut: the chain is whole, but shorter than the job store's head.
  const cut = lines.slice(0, -2);
  const tail = await brokenAt(cut.join("\n") + "\n", "a cut tail");
  assert.ok(
    [cut.length, cut.length + 1].includes(tail.line),
    `at the end of what is left: ${tail.output}`,
  );
  // A line cut in the middle (no final newline) is found too.
  const torn = await brokenAt(original.slice(0, original.length - 10), "a torn last line");
  assert.ok(torn.line >= lines.length - 1, torn.output);

  await Deno.writeTextFile(file, original);
  const restored = await auditCommand(server, ["--verify"]);
  assert.equal(restored.code, 0, restored.stdout + restored.stderr);

  // A server started on a cut log says so and records it in the chain for good.
  await Deno.writeTextFile(file, cut.join("\n") + "\n");
  await server.restart();
  const mismatch = await waitForAudit(
    server,
    "audit_mismatch",
    (e) => e.event === "audit_mismatch",
  );
  assert.equal(mismatch.seq, cut.length + 1, "chained from the file's actual last line");
  assert.match(server.log, /audit/i);
  await server.stop("SIGTERM");
  const after = await auditCommand(server, ["--verify"]);
  assert.equal(after.code, 1, after.stdout + after.stderr);
  assert.match(after.stdout + after.stderr, BROKEN);
  assert.match(after.stdout + after.stderr, /mismatch|missing|shorter|cut/i);
});

Deno.test("the audit log rotates at AUDIT_ROTATE_BYTES with the chain carried on; audit prints and verifies every file; audit filters by job, client and time", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({ script, options: { AUDIT_ROTATE_BYTES: 2048 } });
  const mr1 = await addClient(server, "mr1");
  const mr2 = await addClient(server, "mr2");
  await untilAccepted(server, mr1, mr2);
  const input = path.join(files.path, "P_rot.7");
  await Deno.writeTextFile(input, "raw");
  const id1 = await submitDetached(server, mr1, [input]);
  const id2 = await submitDetached(server, mr2, [input]);
  for (const [client, id] of [[mr1, id1], [mr2, id2]] as const) {
    const waited = await server.client(["wait", id], { optsPath: client.optsPath });
    assert.equal(waited.code, 0, waited.stderr);
  }
  // More handshakes, until the log has rotated at least twice.
  await waitFor("the audit log to rotate twice", async () => {
    await probe(server.port, mr1.key);
    return (await auditFiles(server)).length >= 3;
  }, { timeoutMs: 20_000 });
  await server.stop("SIGTERM");

  const paths = await auditFiles(server);
  for (const file of paths.slice(0, -1)) {
    assert.match(path.basename(file), /^audit\.jsonl\.\d{8}T\d{6}Z(\.\d+)?$/);
  }
  const log = await readAudit(server);
  log.forEach((entry, index) => assert.equal(entry.seq, index + 1, "seq continues across files"));
  const rotations = events(log, "audit_rotated");
  assert.equal(rotations.length, paths.length - 1);
  for (const [index, file] of paths.slice(1).entries()) {
    const first = (await Deno.readTextFile(file)).split("\n")[0];
    const line = JSON.parse(first);
    assert.equal(line.event, "audit_rotated", `${file} starts with audit_rotated`);
    assert.equal(line.previous_file, path.basename(paths[index]));
    assert.equal(line.previous_seq, line.seq - 1);
  }
  const verified = await auditCommand(server, ["--verify"]);
  assert.equal(verified.code, 0, verified.stdout + verified.stderr);
  assert.match(
    verified.stdout,
    new RegExp(`^audit log intact: ${log.length} lines in ${paths.length} files, last `, "m"),
  );

  // Printing: all of it, oldest first, or filtered.
  const all = await auditCommand(server, ["--json"]);
  assert.equal(all.code, 0, all.stderr);
  const printed: AuditEvent[] = JSON.parse(all.stdout);
  assert.deepEqual(printed.map((entry) => entry.seq), log.map((entry) => entry.seq));
  const job = await auditCommand(server, ["--job", id1, "--json"]);
  const jobLines: AuditEvent[] = JSON.parse(job.stdout);
  assert.deepEqual(
    jobLines.map((entry) => entry.event),
    log.filter((entry) => entry.job === id1).map((entry) => entry.event),
  );
  assert.ok(jobLines.some((entry) => entry.event === "job_submitted"));
  const client = await auditCommand(server, ["--client", "mr2"]);
  assert.equal(client.code, 0, client.stderr);
  const clientLines = client.stdout.split("\n").filter(Boolean);
  assert.ok(clientLines.length >= 4, client.stdout);
  for (const line of clientLines) {
    assert.match(line, /^\d{4}-\d\d-\d\dT\S+ [a-z_]+ .*client=mr2\b/);
    assert.doesNotMatch(line, new RegExp(id1));
  }
  assert.match(client.stdout, new RegExp(`job_submitted .*job=${id2}.*inputs=1 \\(3 B\\)`));
  const recent = await auditCommand(server, ["--since", "1h", "--json"]);
  assert.equal(JSON.parse(recent.stdout).length, log.length);
  const future = await auditCommand(server, ["--since", "2099-01-01T00:00:00Z", "--json"]);
  assert.equal(future.code, 0, future.stderr);
  assert.deepEqual(JSON.parse(future.stdout), []);
});

/** A RECON_SCRIPT that writes one image and, with `--own_provenance 1`, its own provenance.json. */
const PROVENANCE_SCRIPT = `#!/bin/sh
set -eu
indir=$1
shift
cat "$indir"/* >"$RECON_OUTPUT_DIR/image.dcm"
if [ "\${1:-}" = "--own_provenance" ]; then
	echo '{"written_by": "the script"}' >"$RECON_OUTPUT_DIR/provenance.json"
fi
`;

Deno.test("provenance.json comes back with the results: the hashes of the inputs and of RECON_SCRIPT, options, times, attempts; a script's own is kept as provenance.script.json", async () => {
  await using files = await tempDir();
  const script = path.join(files.path, "recon.sh");
  await Deno.writeTextFile(script, PROVENANCE_SCRIPT, { mode: 0o755 });
  await using server = await E2EServer.start({ script });
  const mr1 = await addClient(server, "mr1");
  await untilAccepted(server, mr1);
  const inputs = [path.join(files.path, "P_prov_1.7"), path.join(files.path, "cal.dat")];
  await writeRandomFile(inputs[0], 2 * 1024 * 1024);
  await writeRandomFile(inputs[1], 4096);
  const download = path.join(files.path, "down");
  const before = Date.now();
  const run = await server.client(
    ["--files", ...inputs, "--download-dir", download, "--recon-options", '{"slices": 3}'],
    { optsPath: mr1.optsPath },
  );
  assert.equal(run.code, 0, run.stderr);
  const id = new RegExp(`(${UUID.source})`).exec(run.stdout)![1];
  const dir = path.join(download, id);
  assert.match(run.stdout, new RegExp(`${dir}/provenance\\.json`), "listed with the results");
  const provenance = JSON.parse(await Deno.readTextFile(path.join(dir, "provenance.json")));
  assert.equal(provenance.recon_provenance, 1);
  assert.equal(provenance.job_id, id);
  assert.equal(provenance.client, "mr1");
  assert.equal(provenance.exit_code, 0);
  assert.equal(provenance.attempts, 1);
  assert.equal(provenance.priority, "normal");
  assert.deepEqual(provenance.options, { slices: 3 });
  assert.deepEqual(byName(provenance.inputs), await described(inputs));
  assert.deepEqual(provenance.script, { path: script, sha256: await sha256File(script) });
  assert.equal(typeof provenance.server.version, "string");
  assert.equal(typeof provenance.server.host, "string");
  const times = [provenance.submitted_at, provenance.started_at, provenance.finished_at]
    .map((time: string) => Date.parse(time));
  assert.ok(times.every((time) => time >= before - 1000 && time <= Date.now()), "times");
  assert.ok(times[0] <= times[1] && times[1] <= times[2], "submitted ≤ started ≤ finished");
  assert.equal(provenance.rerun_of, undefined);
  // The image the script made from the inputs came back whole.
  const image = await Deno.readFile(path.join(dir, "image.dcm"));
  assert.equal(image.length, 2 * 1024 * 1024 + 4096);
  // The audit's outputs include provenance.json with its hash.
  const finished = await waitForAudit(
    server,
    "job_finished",
    (e) => e.event === "job_finished" && e.job === id,
  );
  const listed = (finished.outputs as { name: string; sha256: string }[])
    .find((output) => output.name === "provenance.json");
  assert.equal(listed?.sha256, await sha256File(path.join(dir, "provenance.json")));

  // A script that writes its own provenance.json keeps it, renamed.
  const own = await server.client(
    ["--files", inputs[1], "--download-dir", download, "--recon-options", '{"own_provenance": 1}'],
    { optsPath: mr1.optsPath },
  );
  assert.equal(own.code, 0, own.stderr);
  const ownId = new RegExp(`(${UUID.source})`).exec(own.stdout)![1];
  const ownDir = path.join(download, ownId);
  assert.deepEqual(
    JSON.parse(await Deno.readTextFile(path.join(ownDir, "provenance.script.json"))),
    { written_by: "the script" },
  );
  assert.equal(
    JSON.parse(await Deno.readTextFile(path.join(ownDir, "provenance.json"))).job_id,
    ownId,
  );
  const jobLog = await server.client(["logs", ownId], { optsPath: mr1.optsPath });
  assert.match(jobLog.stdout + jobLog.stderr, /provenance\.script\.json/);
});

Deno.test("results past RESULT_RETENTION have their job_expired line", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({ script, options: { RESULT_RETENTION: 2 } });
  const mr1 = await addClient(server, "mr1");
  await untilAccepted(server, mr1);
  const input = path.join(files.path, "P_exp.7");
  await Deno.writeTextFile(input, "raw");
  const id = await submitDetached(server, mr1, [input]);
  const waited = await server.client(["wait", id], { optsPath: mr1.optsPath });
  assert.equal(waited.code, 0, waited.stderr);
  await delay(2500);
  // A request about a job past its time settles it on the spot.
  const fetched = await server.client(["fetch", id, "--download-dir", files.path], {
    optsPath: mr1.optsPath,
  });
  assert.notEqual(fetched.code, 0, fetched.stderr);
  assert.match(fetched.stderr, /expired/);
  const expired = await waitForAudit(
    server,
    "job_expired",
    (e) => e.event === "job_expired" && e.job === id,
  );
  assert.equal(expired.client, "mr1");
  assert.equal(expired.what, "results");
  const jobs = parseJobs(await server.client(["jobs", "--json"], { optsPath: mr1.optsPath }));
  assert.equal(jobs[0].state, "expired");
});

Deno.test("refused requests have their request_refused line; a revoked key that tries again is named; a client file others can write, or that vanishes, keeps the last good set", async () => {
  await using files = await tempDir();
  const script = await writeDurableScript(files.path);
  await using server = await E2EServer.start({ script });
  const mr1 = await addClient(server, "mr1");
  const ops = await addClient(server, "ops", ["--admin"]);
  await untilAccepted(server, mr1, ops);
  const input = path.join(files.path, "P00001.7");
  await writeRandomFile(input, 3);
  const job = await submitDetached(server, ops, [input]);

  // Another client's job, every client's jobs, priority high: refused and audited.
  const fetch = await server.client(["fetch", job], { optsPath: mr1.optsPath });
  assert.notEqual(fetch.code, 0);
  const all = await server.client(["jobs", "--all-clients"], { optsPath: mr1.optsPath });
  assert.notEqual(all.code, 0);
  const high = await server.client(["--files", input, "--priority", "high", "--detach"], {
    optsPath: mr1.optsPath,
  });
  assert.notEqual(high.code, 0);
  const refusals = await waitFor("three request_refused lines", async () => {
    const found = events(await readAudit(server), "request_refused");
    return found.length >= 3 ? found : undefined;
  }, { timeoutMs: 5000 });
  assert.deepEqual(
    refusals.map((e) => [e.client, e.request, e.kind, e.job ?? null]),
    [
      ["mr1", "follow_job", "not_found", job],
      ["mr1", "list_jobs", "refused", null],
      ["mr1", "submit_recon_job", "refused", null],
    ],
  );
  assert.match(String(refusals[2].reason), /high-priority/);
  assert.ok(refusals.every((e) => e.address === "127.0.0.1"));

  // A revoked key that comes back is named in its handshake_failed line.
  await revokeClient(server, "mr1");
  await waitForProbe(server.port, mr1.key, false, 2500);
  assert.equal((await probe(server.port, mr1.key)).accepted, false);
  await server.stop("SIGTERM"); // writes the counted lines
  // (Before the server read mr1's line, its key was unknown: those attempts name nobody.)
  const failed = events(await readAudit(server), "handshake_failed")
    .filter((e) => e.key_id === mr1.keyId && !/unknown key id/.test(String(e.reason)));
  assert.ok(failed.length >= 1, "the revoked key's attempts are counted");
  assert.ok(failed.every((e) => e.client === "mr1"), JSON.stringify(failed));
  assert.ok(
    failed.some((e) => /client mr1's key \w+ was revoked/.test(String(e.reason))),
    JSON.stringify(failed),
  );
  await server.restart();

  // A client file other users can write: the server keeps what it had and says why.
  const clientFile = path.join(server.dir, "recon-clients");
  const mr2 = await addClient(server, "mr2");
  await untilAccepted(server, mr2);
  await Deno.chmod(clientFile, 0o666);
  // What another user can then do (recon-server clients refuses to edit such a file).
  const evil = await makeClientKey(generateKey(), {
    name: "evil",
    created: formatTime(new Date()),
    admin: true,
    highPriority: false,
    from: [],
    deliver: [],
  });
  await Deno.writeTextFile(clientFile, `${formatClientLine(evil)}\n`, { append: true });
  await server.waitForLog(/can be written by other users \(mode 0666\)/, 5000);
  await delay(1200);
  assert.equal((await probe(server.port, evil.key)).accepted, false, "no key from a 0666 file");
  assert.equal((await probe(server.port, mr2.key)).accepted, true, "the last good set stays");
  await Deno.chmod(clientFile, 0o600);
  await waitForProbe(server.port, evil.key, true, 2500);

  // A file that vanishes revokes nobody; emptying it revokes everyone but SHARED_KEY's default.
  await Deno.rename(clientFile, `${clientFile}.moved`);
  await server.waitForLog(/recon-clients is gone; keeping the \d+ client\(s\)/, 5000);
  assert.equal((await probe(server.port, mr2.key)).accepted, true);
  await Deno.rename(`${clientFile}.moved`, clientFile);
  await Deno.writeTextFile(clientFile, "");
  await waitForProbe(server.port, mr2.key, false, 2500);
  assert.equal((await probe(server.port, server.key)).accepted, true);
});
