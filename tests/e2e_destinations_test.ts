/**
 * End-to-end tests of naming DICOM destinations (issue 17, docs/PROTOCOL.md §6.11) with
 * the real bin/recon-server and bin/recon-client and a real client file: what
 * `--server-status` lists, `--deliver` accepted or refused in one line before any
 * upload (a name the server lacks, one the client may not name, a bad name, a server
 * without destinations), `--no-download` (the final state and the deliveries, nothing
 * fetched, exit 1 for a failed job), the DELIVERY column of `jobs`, and `redeliver`
 * with its refusals. The destinations point at a closed port and the script writes no
 * DICOM file, so nothing is sent: sending to a real PACS is tests/e2e_pacs_test.ts's.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import {
  E2EServer,
  freePort,
  listDir,
  type RunResult,
  tempDir,
  UUID,
  waitFor,
  writeRandomFile,
} from "./support/e2e.ts";
import { parseJobs } from "./support/durable.ts";
import { addClient, type TestClient } from "./support/identity.ts";

/** One result (not a DICOM file); fails when asked to (`--recon-options '{"fail": 1}'`). */
const SCRIPT = `#!/bin/sh
case " $* " in *" --fail "*) echo "asked to fail" >&2; exit 3 ;; esac
printf 'image' >"$RECON_OUTPUT_DIR/result.dcm"
`;

async function writeScript(dir: string): Promise<string> {
  const file = path.join(dir, "recon.sh");
  await Deno.writeTextFile(file, SCRIPT, { mode: 0o755 });
  return file;
}

/** `recon-client ARGS` as `client` (its own recon.opts). */
function as(server: E2EServer, client: TestClient, args: string[]): Promise<RunResult> {
  return server.client(args, { optsPath: client.optsPath });
}

/** The one error line of a failed run, without the program's prefix. */
function errorLine(result: RunResult): string {
  const lines = result.stderr.split("\n").filter((line) =>
    line.startsWith("recon-client: error: ")
  );
  assert.equal(lines.length, 1, result.stderr);
  return lines[0].slice("recon-client: error: ".length);
}

Deno.test("--deliver, --no-download, jobs and redeliver against a server with two destinations", async () => {
  await using files = await tempDir();
  const scan = path.join(files.path, "P00001.7");
  await writeRandomFile(scan, 4096);
  const port = freePort();
  await using server = await E2EServer.start({
    script: await writeScript(files.path),
    options: {
      DESTINATION_PACS: `dicom://ORTHANC@127.0.0.1:${port}?timeout=2`,
      DESTINATION_RESEARCH: `dicom://ARCHIVE@127.0.0.1:${port}?timeout=2`,
      DEFAULT_DESTINATIONS: "RESEARCH",
    },
  });
  const mr1 = await addClient(server, "mr1", ["--deliver", "PACS"]);
  const mr2 = await addClient(server, "mr2");
  await waitFor(
    "the server to accept mr1",
    async () => (await as(server, mr1, ["jobs"])).code === 0,
  );

  // The status names them, and for an admin those every job goes to.
  const status = await server.client(["--server-status"]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /^destinations: {8}PACS, RESEARCH \(every job: RESEARCH\)$/m);
  const mine = await as(server, mr1, ["--server-status", "--json"]);
  assert.deepEqual(JSON.parse(mine.stdout).destinations, ["PACS", "RESEARCH"]);
  assert.deepEqual(JSON.parse(mine.stdout).default_destinations, ["RESEARCH"]);
  const theirs = await as(server, mr2, ["--server-status", "--json"]);
  assert.deepEqual(
    JSON.parse(theirs.stdout).destinations,
    ["RESEARCH"],
    "mr2 may name none but the default",
  );

  // Refused before any upload, in one line.
  const unknown = await server.client(["--files", scan, "--deliver", "pacs,archive"]);
  assert.equal(unknown.code, 1, unknown.stderr);
  assert.equal(
    errorLine(unknown),
    'the server refused the job: no destination "ARCHIVE" on this server; the destinations are PACS, RESEARCH',
  );
  const denied = await as(server, mr2, ["--files", scan, "--deliver", "PACS"]);
  assert.equal(denied.code, 1, denied.stderr);
  assert.equal(
    errorLine(denied),
    "the server refused the job: client mr2 may not deliver to PACS (its line in the server's " +
      "client file has no deliver= list); ask the server's administrator",
  );
  const bad = await server.client(["--files", scan, "--deliver", "PACS-1"]);
  assert.equal(bad.code, 2, bad.stderr);
  assert.equal(
    errorLine(bad),
    '--deliver: "PACS-1" is not a destination name (1 to 32 letters and digits)',
  );
  assert.doesNotMatch(server.log, /receiving 1 file/, "nothing was uploaded");

  // --no-download: the job's end and where its results go; nothing fetched.
  const ended = await as(server, mr1, ["--files", scan, "--deliver", "pacs", "--no-download"]);
  assert.equal(ended.code, 0, ended.stderr);
  const [line, ...deliveries] = ended.stdout.trimEnd().split("\n");
  const id = new RegExp(`^(${UUID.source}) succeeded at `).exec(line)?.[1];
  assert.ok(id, ended.stdout);
  assert.match(line, /; delivery: PACS .*, RESEARCH /);
  assert.deepEqual(deliveries.map((d) => d.split(":")[0]), ["  PACS", "  RESEARCH"]);
  assert.deepEqual(await listDir(server.downloadDir), [], "nothing downloaded");
  await server.waitForLog(
    new RegExp(
      `job ${id}: receiving 1 file\\(s\\), 4096 bytes \\(priority normal\\), for RESEARCH, PACS`,
    ),
  );

  // jobs: a DELIVERY column; with no DICOM result, each delivery is done with 0 of 0.
  const listed = await waitFor("both deliveries done", async () => {
    const jobs = parseJobs(await as(server, mr1, ["jobs", "--json"]));
    const job = jobs.find((j) => j.job_id === id);
    return job?.deliveries?.every((d) => d.state === "delivered") ? job : undefined;
  });
  assert.deepEqual(listed.deliveries!.map((d) => [d.destination, d.files_total, d.files_skipped]), [
    ["PACS", 0, 2],
    ["RESEARCH", 0, 2],
  ]);
  const table = await as(server, mr1, ["jobs"]);
  const [header, row] = table.stdout.split("\n");
  const at = header.split(/ {2,}/).indexOf("DELIVERY");
  assert.ok(at > 0, table.stdout);
  assert.equal(row.split(/ {2,}/)[at], "PACS 0/0, RESEARCH 0/0");

  // redeliver: again to PACS; refusals in the server's words, exit 1.
  const again = await as(server, mr1, ["redeliver", id, "--to", "pacs"]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stdout, new RegExp(`^${id} succeeded at .*\n  PACS: .*\n  RESEARCH: `));
  await server.waitForLog(new RegExp(`job ${id}: delivery again to PACS asked by mr1 at `));
  const json = await as(server, mr1, ["redeliver", id, "--json"]);
  assert.equal(json.code, 0, json.stderr);
  assert.deepEqual(
    JSON.parse(json.stdout).deliveries.map((d: { destination: string }) => d.destination),
    [
      "PACS",
      "RESEARCH",
    ],
  );
  const elsewhere = await as(server, mr1, ["redeliver", id, "--to", "ARCHIVE"]);
  assert.equal(elsewhere.code, 1, elsewhere.stderr);
  assert.equal(
    errorLine(elsewhere),
    'no destination "ARCHIVE" on this server; the destinations are PACS, RESEARCH',
  );
  const others = await as(server, mr2, ["redeliver", id]);
  assert.equal(others.code, 1, others.stderr);
  assert.equal(errorLine(others), `no job ${id} on this server`);

  // A failed job: --no-download says so (exit 1), and it cannot be delivered again.
  const failed = await as(server, mr1, [
    "--files",
    scan,
    "--no-download",
    "--recon-options",
    '{"fail": 1}',
  ]);
  assert.equal(failed.code, 1, failed.stderr);
  const failedId = new RegExp(`job (${UUID.source}) failed: `).exec(errorLine(failed))?.[1];
  assert.ok(failedId, failed.stderr);
  const refused = await as(server, mr1, ["redeliver", failedId]);
  assert.equal(refused.code, 1, refused.stderr);
  assert.equal(
    errorLine(refused),
    `job ${failedId} is failed; only a succeeded job's results can be delivered again`,
  );
});

Deno.test("a server without destinations says so: --server-status, --deliver and redeliver", async () => {
  await using files = await tempDir();
  const scan = path.join(files.path, "P00001.7");
  await writeRandomFile(scan, 1024);
  await using server = await E2EServer.start({ script: await writeScript(files.path) });
  const status = await server.client(["--server-status"]);
  assert.match(status.stdout, /^destinations: {8}none$/m);
  const submitted = await server.client(["--files", scan, "--deliver", "PACS"]);
  assert.equal(submitted.code, 1, submitted.stderr);
  assert.equal(
    errorLine(submitted),
    "the server refused the job: this server has no DICOM destinations (no DESTINATION_<NAME> " +
      "in its recon.opts); submit without --deliver",
  );
  const detached = await server.client(["--files", scan, "--detach"]);
  assert.equal(detached.code, 0, detached.stderr);
  const id = detached.stdout.trim();
  const waited = await server.client(["wait", id]);
  assert.equal(waited.code, 0, waited.stderr);
  assert.doesNotMatch(waited.stdout, /delivery/, "a job without destinations has none");
  const again = await server.client(["redeliver", id]);
  assert.equal(again.code, 1, again.stderr);
  assert.equal(
    errorLine(again),
    "this server has no DICOM destinations (no DESTINATION_<NAME> in its recon.opts); " +
      "there is nothing to deliver to",
  );
});
