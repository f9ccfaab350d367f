/**
 * End to end, bad input: an address not in TRUSTEDIPS, a wrong or placeholder
 * SHARED_KEY, bad flags, bad recon options and bad or missing files. Each gets a plain
 * reason and the documented exit code, and leaves nothing on the server.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { CLIENT_BIN, E2EServer, run, testdata } from "./support/e2e.ts";

/** The `recon-client: error: …` line of a failed run (there must be exactly one). */
function errorLine(stderr: string): string {
  const lines = stderr.split("\n").filter((line) => line.startsWith("recon-client: error: "));
  assert.equal(lines.length, 1, `one error line in:\n${stderr}`);
  return lines[0];
}

Deno.test("a client whose address is not in TRUSTEDIPS is refused: exit 3", async () => {
  await using server = await E2EServer.start({
    script: testdata("e2e_recon.sh"),
    options: { TRUSTEDIPS: "10.9.9.9" },
  });
  const file = path.join(server.dir, "P00001.7");
  await Deno.writeTextFile(file, "raw");
  const result = await server.client(["--files", file]);
  assert.equal(result.code, 3, result.stderr);
  assert.equal(result.stdout, "");
  assert.match(
    errorLine(result.stderr),
    /handshake with 127\.0\.0\.1:\d+ failed: the server closed the connection without answering/,
  );
  assert.match(result.stderr, /hint: .*TRUSTEDIPS/);
  await server.waitForLog(/refused: 127\.0\.0\.1 is not in TRUSTEDIPS/);
  assert.deepEqual(await server.jobDirs(), []);
});

Deno.test("bad keys, flags, options and files get a one-line reason and their exit code", async (t) => {
  await using server = await E2EServer.start({ script: testdata("e2e_recon.sh") });
  const good = path.join(server.dir, "P00001.7");
  await Deno.writeTextFile(good, "raw");

  await t.step("a wrong SHARED_KEY: exit 3, the message names SHARED_KEY", async () => {
    const other = (await run(CLIENT_BIN, ["keygen"])).stdout.trim();
    assert.notEqual(other, server.key);
    const optsPath = await server.writeClientOpts("wrong_key.opts", { SHARED_KEY: other });
    const result = await server.client(["--files", good], { optsPath });
    assert.equal(result.code, 3, result.stderr);
    assert.equal(result.stdout, "");
    assert.match(errorLine(result.stderr), /handshake .* failed: .*key id/);
    assert.match(result.stderr, /^hint: .*SHARED_KEY/m);
    await server.waitForLog(/handshake failed/);
    // LOCKOUT_FAILURES = 0 (set by the helper) means a failure never locks the address out.
    const after = await server.client(["--server-status"]);
    assert.equal(after.code, 0, `a good client still gets in:\n${after.stderr}`);
    assert.doesNotMatch(server.log, /locked out/);
  });

  await t.step(
    "the placeholder SHARED_KEY: exit 2, a line naming SHARED_KEY and keygen",
    async () => {
      const optsPath = await server.writeClientOpts("placeholder.opts", {
        SHARED_KEY: "SET_YOUR_SHARED_KEY_HERE",
      });
      const result = await server.client(["--files", good], { optsPath });
      assert.equal(result.code, 2, result.stderr);
      assert.match(
        errorLine(result.stderr),
        /SHARED_KEY is still the placeholder .*; generate one with 'recon-server keygen'$/,
      );
      // The hint adds where the key goes rather than repeating the keygen advice.
      assert.match(
        result.stderr,
        /^hint: put it in .* as the line "SHARED_KEY = <key>"; the server/m,
      );
    },
  );

  await t.step("--recon-options '[1]' is refused: exit 2", async () => {
    const result = await server.client(["--files", good, "--recon-options", "[1]"]);
    assert.equal(result.code, 2, result.stderr);
    assert.match(errorLine(result.stderr), /--recon-options: .*JSON object/);
  });

  await t.step("--recon-options that is not JSON is refused: exit 2", async () => {
    const result = await server.client(["--files", good, "--recon-options", "{slices: 3}"]);
    assert.equal(result.code, 2, result.stderr);
    assert.match(errorLine(result.stderr), /--recon-options: .*not valid JSON/);
  });

  await t.step('a file named "-x.7" is refused before sending: exit 2', async () => {
    const dashed = path.join(server.dir, "-x.7");
    await Deno.writeTextFile(dashed, "raw");
    for (const args of [["--files", dashed], [`--files=${dashed}`], ["--files", "./-x.7"]]) {
      const result = await server.client(args, { cwd: server.dir });
      assert.equal(result.code, 2, result.stderr);
      assert.match(errorLine(result.stderr), /"-x\.7" refused: the name starts with '-'/);
    }
  });

  await t.step("a missing file: exit 2, naming it", async () => {
    const missing = path.join(server.dir, "no_such_scan.7");
    const result = await server.client(["--files", good, missing]);
    assert.equal(result.code, 2, result.stderr);
    assert.match(errorLine(result.stderr), /no_such_scan\.7: no such file/);
  });

  await t.step("a directory given as a file: exit 2", async () => {
    const result = await server.client(["--files", server.dir]);
    assert.equal(result.code, 2, result.stderr);
    assert.match(errorLine(result.stderr), /not a regular file/);
  });

  await t.step("--directory with no matching file: exit 2", async () => {
    const result = await server.client(["--directory", server.dir, "--pattern", "*.nothing"]);
    assert.equal(result.code, 2, result.stderr);
    assert.match(errorLine(result.stderr), /no files in .* match the pattern "\*\.nothing"/);
  });

  await t.step("--help and --version exit 0", async () => {
    const help = await run(CLIENT_BIN, ["--help"]);
    assert.equal(help.code, 0, help.stderr);
    assert.match(help.stdout, /^recon-client \S+: /);
    assert.match(help.stdout, /Exit codes:/);
    const version = await run(CLIENT_BIN, ["--version"]);
    assert.equal(version.code, 0, version.stderr);
    assert.match(version.stdout, /^recon-client \d+\.\d+\.\d+\n$/);
  });

  await t.step("an unknown flag: exit 2 with a hint", async () => {
    const result = await server.client(["--no-such-flag"]);
    assert.equal(result.code, 2, result.stderr);
    assert.match(errorLine(result.stderr), /--no-such-flag/);
    assert.match(result.stderr, /^hint: see 'recon-client --help'$/m);
  });

  await t.step("none of it reached the server as a job", async () => {
    const status = await server.client(["--server-status", "--json"]);
    assert.equal(status.code, 0, status.stderr);
    const fields = JSON.parse(status.stdout);
    assert.equal(fields.jobs_completed + fields.jobs_failed, 0);
    assert.deepEqual(await server.jobDirs(), []);
    assert.doesNotMatch(server.log, /receiving \d+ file/);
  });
});

Deno.test("an unwritable download dir is refused before anything is sent: exit 2", async () => {
  await using server = await E2EServer.start({ script: testdata("e2e_recon.sh") });
  const file = path.join(server.dir, "P00001.7");
  await Deno.writeTextFile(file, "raw");
  // A directory below a regular file cannot be created, even by root.
  const result = await server.client(["--files", file, "--download-dir", path.join(file, "out")]);
  assert.equal(result.code, 2, result.stderr);
  assert.match(
    errorLine(result.stderr),
    /cannot write results to --download-dir .*P00001\.7\/out: part of the path is not a directory$/,
  );
  assert.match(result.stderr, /^hint: choose a directory you can write$/m);
  assert.doesNotMatch(server.log, /receiving/, "no upload was started");
  assert.deepEqual(await server.jobDirs(), []);
});

Deno.test("a missing RECON_SCRIPT refuses the job before the upload and is logged at start", async () => {
  await using server = await E2EServer.start({
    script: path.join(Deno.cwd(), "tests", "testdata", "no_such_recon_script.sh"),
  });
  assert.match(server.log, /RECON_SCRIPT .* does not exist: every job will be refused/);
  const file = path.join(server.dir, "P00001.7");
  await Deno.writeTextFile(file, "raw");
  const result = await server.client(["--files", file]);
  assert.equal(result.code, 1, result.stderr);
  assert.match(
    errorLine(result.stderr),
    /the server refused the job: RECON_SCRIPT .* does not exist/,
  );
  assert.doesNotMatch(server.log, /receiving/, "no byte was uploaded");
  assert.deepEqual(await server.jobDirs(), []);
});

Deno.test("a misspelt recon.opts option stops the client unless --allow-unknown-options; --show-config lists it", async () => {
  await using server = await E2EServer.start({ script: testdata("e2e_recon.sh") });
  const file = path.join(server.dir, "P00001.7");
  await Deno.writeTextFile(file, "raw");
  const optsPath = await server.writeClientOpts("misspelt.opts", { CLIENT_DOWNLOAD_DIRR: "/x" });

  const refused = await server.client(["--files", file], { optsPath });
  assert.equal(refused.code, 2, refused.stderr);
  assert.match(
    errorLine(refused.stderr),
    /misspelt\.opts line \d+: .*CLIENT_DOWNLOAD_DIRR.*CLIENT_DOWNLOAD_DIR.*--allow-unknown-options/,
  );

  const allowed = await server.client(["--files", file, "--allow-unknown-options"], { optsPath });
  assert.equal(allowed.code, 0, allowed.stderr);
  assert.match(allowed.stderr, /CLIENT_DOWNLOAD_DIRR.* is kept but not used/);
  assert.match(allowed.stdout, /manifest\.txt$/m, "the result files are listed");

  // Without the flag too: --show-config is where one looks for the mistake.
  const shown = await server.client(["--show-config"], { optsPath });
  assert.equal(shown.code, 0, shown.stderr);
  const [unknown] = JSON.parse(shown.stdout).unknown_options;
  assert.equal(unknown.name, "CLIENT_DOWNLOAD_DIRR");
  assert.equal(unknown.suggestion, "CLIENT_DOWNLOAD_DIR");

  const state = path.join(server.dir, "watch.sqlite");
  const watchRefused = await run(CLIENT_BIN, [
    "watch",
    "--opts",
    optsPath,
    "--status",
    "--state",
    state,
  ]);
  assert.equal(watchRefused.code, 2, watchRefused.stderr);
  assert.match(errorLine(watchRefused.stderr), /CLIENT_DOWNLOAD_DIRR/);
  const watchAllowed = await run(CLIENT_BIN, [
    "watch",
    "--opts",
    optsPath,
    "--allow-unknown-options",
    "--status",
    "--state",
    state,
  ]);
  // 10: read fine; the health check finds no watcher running (docs/WATCH.md §12).
  assert.equal(watchAllowed.code, 10, watchAllowed.stderr);
});
