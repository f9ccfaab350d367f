/**
 * A result that changed on the server after its job ended, fetched through
 * bin/recon-client and bin/recon-server (issue 18's recorded SHA-256, PROTOCOL §5 and
 * §6.5): the server refuses it before any of its bytes go, says so with
 * `error {kind: "transfer"}`, and the client stops at once with that reason (exit 4)
 * instead of taking the closed connection for a network fault and asking again. A
 * result only touched (same bytes, new times) is hashed again and sent.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { E2EServer, tempDir, UUID } from "./support/e2e.ts";

const SCRIPT = `#!/bin/sh
set -eu
printf 'image one\\n' >"$RECON_OUTPUT_DIR/one.dcm"
printf 'image two\\n' >"$RECON_OUTPUT_DIR/two.dcm"
`;

/** A recon-server whose script writes one.dcm and two.dcm, from files in `dir`. */
async function serverFor(dir: string): Promise<E2EServer> {
  const script = path.join(dir, "recon.sh");
  await Deno.writeTextFile(script, SCRIPT, { mode: 0o755 });
  return await E2EServer.start({ script });
}

/** A job submitted with --detach and waited for: succeeded, its results on the server. */
async function finishedJob(server: E2EServer, dir: string): Promise<string> {
  const input = path.join(dir, "P00001.7");
  await Deno.writeTextFile(input, "a scan\n");
  const detached = await server.client(["--files", input, "--detach"]);
  assert.equal(detached.code, 0, detached.stderr);
  const id = detached.stdout.trim();
  assert.match(id, new RegExp(`^${UUID.source}$`));
  const waited = await server.client(["wait", id], { timeoutMs: 20_000 });
  assert.equal(waited.code, 0, waited.stderr);
  return id;
}

Deno.test("fetch of a result rewritten on the server after its job ended stops at once with the reason, exit 4", async () => {
  await using files = await tempDir();
  await using server = await serverFor(files.path);
  const id = await finishedJob(server, files.path);
  const result = path.join(server.dicomDir, `job_${id}_output`, "two.dcm");
  // Same size, other bytes: only the times and the SHA-256 tell.
  await Deno.writeTextFile(result, "image 2!!\n");

  const started = performance.now();
  const fetched = await server.client(["fetch", id, "--download-dir", files.path], {
    timeoutMs: 30_000,
  });
  const seconds = (performance.now() - started) / 1000;
  assert.equal(fetched.code, 4, fetched.stderr);
  assert.match(
    fetched.stderr,
    /result "two\.dcm" was changed on the server after its job ended; the results stay on the server, whose log says more/,
  );
  assert.doesNotMatch(fetched.stderr, /reconnect/i, "no retry of a file that cannot change");
  assert.ok(seconds < 20, `fetch took ${seconds.toFixed(1)} s`);
  const dir = path.join(files.path, id);
  const names = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  assert.ok(!names.includes("two.dcm"), `two.dcm was downloaded: ${names.join(", ")}`);
  const log = server.log;
  assert.match(log, /is not the file recorded when its job ended/);
  assert.equal(log.match(/delivery failed/g)?.length, 1, "one attempt, not a retry loop");
});

Deno.test("fetch of a result only touched after its job ended hashes it again and downloads it", async () => {
  await using files = await tempDir();
  await using server = await serverFor(files.path);
  const id = await finishedJob(server, files.path);
  const result = path.join(server.dicomDir, `job_${id}_output`, "two.dcm");
  const later = new Date(Date.now() + 5_000);
  await Deno.utime(result, later, later);

  const fetched = await server.client(["fetch", id, "--download-dir", files.path]);
  assert.equal(fetched.code, 0, fetched.stderr);
  assert.equal(await Deno.readTextFile(path.join(files.path, id, "two.dcm")), "image two\n");
});
