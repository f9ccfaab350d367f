/**
 * End to end, VERIFY_AFTER_WRITE (issue 18): bin/recon-server and bin/recon-client with
 * `VERIFY_AFTER_WRITE = yes` move a multi-record file up and its copy back, each end
 * reading what it wrote back and checking it (the server says so at start); the
 * SHA-256 recorded for the input (provenance.json) is the client's. A value other than
 * yes or no is a one-line configuration error. What the check catches (a file changed
 * on disk between the write and the read-back) is in tests/wire/transfer_verify_test.ts.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { E2EServer, run, sha256File, testdata, UUID, writeRandomFile } from "./support/e2e.ts";
import { CLIENT_BIN } from "./support/e2e.ts";

for (const verify of ["yes", "no"]) {
  Deno.test(`VERIFY_AFTER_WRITE = ${verify}: a 5 MiB input goes up and its copy comes back intact`, async () => {
    await using server = await E2EServer.start({
      script: testdata("e2e_recon.sh"),
      options: { VERIFY_AFTER_WRITE: verify },
    });
    const announced =
      /VERIFY_AFTER_WRITE: each uploaded file is read back and checked once written/;
    assert.equal(announced.test(server.log), verify === "yes", server.log);
    const input = path.join(server.dir, "P12345.7");
    const sha = await writeRandomFile(input, 5 * 1024 * 1024 + 123);
    const result = await server.client(["--files", input]);
    assert.equal(result.code, 0, result.stderr);
    const jobId = new RegExp(`job (${UUID.source}) queued`).exec(result.stderr)![1];
    const copy = path.join(server.downloadDir, jobId, "derived", "P12345.7.copy");
    assert.equal(await sha256File(copy), sha);
    const provenance = JSON.parse(
      await Deno.readTextFile(path.join(server.downloadDir, jobId, "provenance.json")),
    );
    assert.equal(provenance.inputs[0].sha256, sha);
  });
}

Deno.test("VERIFY_AFTER_WRITE other than yes or no is a one-line configuration error", async () => {
  await using server = await E2EServer.start({ script: testdata("e2e_recon.sh") });
  const opts = path.join(server.dir, "bad.opts");
  await Deno.writeTextFile(
    opts,
    `SHARED_KEY = ${server.key}\nVERIFY_AFTER_WRITE = maybe\n`,
    { mode: 0o600 },
  );
  const result = await run(CLIENT_BIN, ["--opts", opts, "--show-config"]);
  assert.equal(result.code, 2);
  assert.equal(
    result.stderr,
    `recon-client: error: ${opts} line 2: VERIFY_AFTER_WRITE must be one of no, yes, got "maybe"\n`,
  );
});
