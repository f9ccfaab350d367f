/**
 * End to end with CRYPTO_BACKEND: bin/recon-server and bin/recon-client on different
 * backends (WebCrypto on one end, OpenSSL's libcrypto on the other, both ways) run a
 * job whose files and results cross intact; the server's start log, `--server-status`
 * (text and --json) and the client's --debug name each end's backend; a server run
 * without --allow-ffi falls back to WebCrypto and says why, or with
 * CRYPTO_BACKEND = openssl refuses to start in one line; a bad value is a config error.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import {
  E2EServer,
  ROOT,
  run,
  sha256File,
  testdata,
  UUID,
  writeRandomFile,
} from "../support/e2e.ts";

const OPENSSL = /OpenSSL \d+\.\d+\.\d+\S* libcrypto \(nonblocking FFI\)/;
const WEBCRYPTO = "WebCrypto (CRYPTO_BACKEND = webcrypto)";

for (
  const [serverChoice, clientChoice] of [["webcrypto", "openssl"], ["openssl", "webcrypto"]]
) {
  Deno.test(`a job runs with CRYPTO_BACKEND = ${serverChoice} on the server and ${clientChoice} on the client`, async () => {
    await using server = await E2EServer.start({
      script: testdata("e2e_recon.sh"),
      options: { CRYPTO_BACKEND: serverChoice },
    });
    const serverSays = serverChoice === "openssl" ? OPENSSL : WEBCRYPTO;
    const clientSays = clientChoice === "openssl" ? OPENSSL : WEBCRYPTO;
    assert.ok(
      typeof serverSays === "string"
        ? server.log.includes(`crypto: ${serverSays}`)
        : new RegExp(`crypto: ${serverSays.source}`).test(server.log),
      server.log,
    );
    const clientOpts = await server.writeClientOpts("client.opts", {
      CRYPTO_BACKEND: clientChoice,
    });
    const input = path.join(server.dir, "P00001.7");
    const sha = await writeRandomFile(input, 24 * 1024 * 1024 + 7);
    const result = await server.client(["--debug", "--files", input], { optsPath: clientOpts });
    assert.equal(result.code, 0, result.stderr);
    const copy = result.stdout.trim().split("\n").find((line) => line.endsWith("P00001.7.copy"));
    assert.ok(copy, result.stdout);
    assert.equal(await sha256File(copy), sha);
    assert.match(result.stderr, new RegExp(`job ${UUID.source} queued`));
    const debugLine = result.stderr.split("\n").find((line) => line.includes("crypto: "));
    assert.ok(debugLine, `the client's --debug names its backend:\n${result.stderr}`);
    if (typeof clientSays === "string") assert.ok(debugLine.includes(clientSays), debugLine);
    else assert.match(debugLine, clientSays);

    const text = await server.client(["--server-status"], { optsPath: clientOpts });
    assert.equal(text.code, 0, text.stderr);
    const line = text.stdout.split("\n").find((l) => l.startsWith("crypto:"));
    assert.ok(line, text.stdout);
    if (typeof serverSays === "string") assert.equal(line, `crypto:              ${serverSays}`);
    else assert.match(line, new RegExp(`^crypto: {14}${serverSays.source}$`));
    const json = await server.client(["--server-status", "--json"], { optsPath: clientOpts });
    assert.equal(json.code, 0, json.stderr);
    const crypto = JSON.parse(json.stdout).crypto;
    if (typeof serverSays === "string") assert.equal(crypto, serverSays);
    else assert.match(crypto, new RegExp(`^${serverSays.source}$`));
  });
}

/** bin/permissions without --allow-ffi: what a runtime that was never granted FFI has. */
async function permissionsWithoutFfi(): Promise<string[]> {
  const flags = (await Deno.readTextFile(path.join(ROOT, "bin", "permissions"))).trim().split(
    /\s+/,
  );
  assert.ok(flags.includes("--allow-ffi"), "bin/permissions grants FFI");
  return flags.filter((flag) => flag !== "--allow-ffi");
}

async function optsFile(dir: string, lines: string[]): Promise<string> {
  const file = path.join(dir, "recon.opts");
  await Deno.writeTextFile(
    file,
    [
      "127.0.0.1",
      "60000",
      "sdc",
      "adw2.0",
      "22",
      "/usr/g/mrraw/",
      path.join(dir, "jobs"),
      testdata("e2e_recon.sh"),
      path.join(dir, "results"),
      path.join(dir, "scanner_dicoms"),
      path.join(dir, "recon.log"),
      `SHARED_KEY = ${"A".repeat(43)}=`,
      ...lines,
    ].join("\n") + "\n",
    { mode: 0o600 },
  );
  return file;
}

/** server.ts run with `flags` (bin/permissions without --allow-ffi) on `opts`, port 0. */
function serverWithout(flags: string[], opts: string): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--config",
      path.join(ROOT, "deno.json"),
      ...flags,
      path.join(ROOT, "server.ts"),
      "--opts",
      opts,
      "--port",
      "0",
    ],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  });
}

Deno.test("a server without --allow-ffi uses WebCrypto and says why; with CRYPTO_BACKEND = openssl it refuses to start", async () => {
  const dir = await Deno.makeTempDir({ prefix: "recon_crypto_" });
  try {
    const flags = await permissionsWithoutFfi();
    const auto = await optsFile(dir, ["SHUTDOWN_GRACE = 1"]);
    const child = serverWithout(flags, auto).spawn();
    const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
    let log = "";
    try {
      while (!/listening on/.test(log)) {
        const { value, done } = await reader.read();
        if (done) break;
        log += value;
      }
    } finally {
      child.kill("SIGTERM");
      reader.releaseLock();
      await child.stderr.cancel().catch(() => {});
      await child.stdout.cancel().catch(() => {});
      await child.status;
    }
    assert.match(log, /crypto: WebCrypto \(libcrypto not loaded: no --allow-ffi permission\)/);
    assert.match(log, /listening on/);

    await Deno.remove(path.join(dir, "recon.opts"));
    const forced = await optsFile(dir, ["CRYPTO_BACKEND = openssl"]);
    const refused = await serverWithout(flags, forced).output();
    const stderr = new TextDecoder().decode(refused.stderr);
    assert.notEqual(refused.code, 0);
    assert.match(
      stderr,
      /error: CRYPTO_BACKEND = openssl, but libcrypto cannot be loaded: no --allow-ffi permission\n/,
    );
    assert.match(stderr, /hint: .*--allow-ffi/);
    assert.doesNotMatch(stderr, /listening on/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a bad CRYPTO_BACKEND value stops the server and the client with a one-line config error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "recon_crypto_" });
  try {
    const opts = await optsFile(dir, ["CRYPTO_BACKEND = fastest"]);
    const cases: [string, string[]][] = [
      ["recon-server", ["--opts", opts]],
      ["recon-client", ["--opts", opts, "--server-status"]],
    ];
    for (const [bin, args] of cases) {
      const result = await run(path.join(ROOT, "bin", bin), args);
      assert.notEqual(result.code, 0, `${bin}: ${result.stderr}`);
      const errors = result.stderr.split("\n").filter((line) => / error: /.test(line));
      assert.equal(errors.length, 1, `${bin}: ${result.stderr}`);
      assert.match(errors[0], /CRYPTO_BACKEND/);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
