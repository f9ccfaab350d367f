/**
 * recon-client's command line end to end (bin/recon-client against a real server):
 * which options a one-off submission uses, global options before `watch`, and the
 * messages for common slips, each in our words with what to do next.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { CLIENT_BIN, E2EServer, run, testdata } from "../support/e2e.ts";

/** The `recon-client: error: …` line of a failed run (there must be exactly one). */
function errorLine(stderr: string): string {
  const lines = stderr.split("\n").filter((line) => line.startsWith("recon-client: error: "));
  assert.equal(lines.length, 1, `one error line in:\n${stderr}`);
  return lines[0];
}

/** The `arg …` lines e2e_recon.sh recorded in the job's manifest.txt (the script's argv). */
async function scriptArgs(stdout: string): Promise<string[]> {
  const manifest = stdout.split("\n").find((line) => line.endsWith("/manifest.txt"));
  assert.ok(manifest, `manifest.txt among the results:\n${stdout}`);
  const text = await Deno.readTextFile(manifest);
  return text.split("\n").filter((line) => line.startsWith("arg ")).slice(1);
}

Deno.test("a one-off submission ignores CLIENT_DAEMON_RECON_OPTIONS_JSON (watch mode's option)", async () => {
  await using server = await E2EServer.start({
    script: testdata("e2e_recon.sh"),
    options: { CLIENT_DAEMON_RECON_OPTIONS_JSON: '{"name": "watched"}' },
  });
  const file = path.join(server.dir, "P00001.7");
  await Deno.writeTextFile(file, "raw");

  const plain = await server.client(["--files", file]);
  assert.equal(plain.code, 0, plain.stderr);
  assert.deepEqual(await scriptArgs(plain.stdout), []);

  const given = await server.client(["--files", file, "--recon-options", '{"name": "given"}']);
  assert.equal(given.code, 0, given.stderr);
  assert.deepEqual(await scriptArgs(given.stdout), ["arg --name", "arg given"]);
});
