/**
 * recon-server's start and stop through bin/recon-server: --allow-unknown-options and
 * --show-config, the refusal of directories another user could tamper with (issue 11
 * item 2), the pid file written without following a link and removed at a clean
 * shutdown, and the LOG_RETENTION sweep of old per-job logs (issue 12 item 8).
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { CLIENT_BIN, keygen, run, SERVER_BIN, Spawned, tempDir, testdata } from "./support/e2e.ts";
import { OWNER_FILE } from "../lib/server/recovery.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

/** A site in `dir`: recon.opts naming its own directories, plus `more` lines. */
async function writeOpts(dir: string, more: string[] = []): Promise<string> {
  const optsPath = path.join(dir, "recon.opts");
  const lines = [
    `SHARED_KEY = ${await keygen()}`,
    "SERVER_HOST = 127.0.0.1",
    `RECON_FILEPATH = ${path.join(dir, "jobs")}`,
    `RECON_DICOM_DIR = ${path.join(dir, "results")}`,
    `RECON_SCRIPT = ${testdata("e2e_recon.sh")}`,
    `LOG_FILEPATH = ${path.join(dir, "log", "recon.log")}`,
    "SHUTDOWN_GRACE = 2",
    ...more,
  ];
  await Deno.writeTextFile(optsPath, lines.join("\n") + "\n", { mode: 0o600 });
  return optsPath;
}

function startServer(optsPath: string, extra: string[] = []): Spawned {
  return new Spawned(
    SERVER_BIN,
    ["--opts", optsPath, "--port", "0", "--host", "127.0.0.1", ...extra],
    { disposeSignal: "SIGTERM" },
  );
}

function errorLine(stderr: string): string {
  return stderr.split("\n").find((line) => line.startsWith("recon-server: error:")) ?? stderr;
}

Deno.test("recon-server refuses an unknown option unless --allow-unknown-options; --show-config lists it", async () => {
  await using site = await tempDir("recon_startup_");
  const optsPath = await writeOpts(site.path, ["MAX_CONCURENT_JOBS = 2"]);

  const refused = await run(SERVER_BIN, ["--opts", optsPath, "--port", "0"]);
  assert.equal(refused.code, 2, refused.stderr);
  assert.match(
    errorLine(refused.stderr),
    /recon\.opts line 8: unknown option "MAX_CONCURENT_JOBS" \(did you mean MAX_CONCURRENT_JOBS\?\).*--allow-unknown-options/,
  );

  const shown = await run(SERVER_BIN, ["--opts", optsPath, "--show-config"]);
  assert.equal(shown.code, 0, shown.stderr);
  const config = JSON.parse(shown.stdout);
  assert.deepEqual(config.unknown_options, [
    { line: 8, name: "MAX_CONCURENT_JOBS", suggestion: "MAX_CONCURRENT_JOBS" },
  ]);
  assert.equal(config.SHARED_KEY, "<redacted>");
  assert.equal(config.LOG_RETENTION, 30);

  await using server = startServer(optsPath, ["--allow-unknown-options"]);
  await server.waitForStderr(/listening on 127\.0\.0\.1:\d+/);
  assert.match(
    server.stderr,
    /WARN.*line 8: unknown option "MAX_CONCURENT_JOBS".* is kept but not used/,
  );

  const help = await run(SERVER_BIN, ["--help"]);
  assert.match(
    help.stdout,
    /--allow-unknown-options\n\s+accept recon\.opts options neither program knows, with a warning/,
  );
});

Deno.test("recon-server refuses a world-writable RECON_FILEPATH and one owned by another user, naming the fix", async () => {
  await using site = await tempDir("recon_startup_");
  const optsPath = await writeOpts(site.path);
  const jobs = path.join(site.path, "jobs");
  await Deno.mkdir(jobs);
  await Deno.chmod(jobs, 0o777);
  const open = await run(SERVER_BIN, ["--opts", optsPath, "--port", "0"]);
  assert.equal(open.code, 2, open.stderr);
  assert.equal(
    errorLine(open.stderr),
    `recon-server: error: RECON_FILEPATH ${jobs} is writable by other users (mode 0777); ` +
      "refusing to use it: another user could replace the files the server writes or reads there",
  );
  assert.match(open.stderr, new RegExp(`^hint: run chmod go-w ${jobs} \\(0700 or 0750\\)`, "m"));
  assert.doesNotMatch(open.stderr, /listening/);
  await assert.rejects(Deno.lstat(path.join(jobs, OWNER_FILE)), Deno.errors.NotFound);

  await Deno.chmod(jobs, 0o700);
  await Deno.chown(jobs, 65534, 65534);
  const theirs = await run(SERVER_BIN, ["--opts", optsPath, "--port", "0"]);
  assert.equal(theirs.code, 2, theirs.stderr);
  assert.match(
    errorLine(theirs.stderr),
    new RegExp(`RECON_FILEPATH ${jobs} is owned by uid 65534`),
  );
  assert.match(theirs.stderr, /^hint: run chown 0 /m);
});

Deno.test("recon-server creates missing directories private, writes its pid file through no link, and removes it on SIGTERM", async () => {
  await using site = await tempDir("recon_startup_");
  const optsPath = await writeOpts(site.path);
  const jobs = path.join(site.path, "jobs");
  await Deno.mkdir(jobs, { mode: 0o700 });
  const victim = path.join(site.path, "victim");
  await Deno.writeTextFile(victim, "precious\n");
  await Deno.symlink(victim, path.join(jobs, OWNER_FILE));

  const server = startServer(optsPath);
  await server.waitForStderr(/listening on 127\.0\.0\.1:\d+/);
  assert.equal(await Deno.readTextFile(victim), "precious\n", "the link was not followed");
  const pidFile = path.join(jobs, OWNER_FILE);
  const info = await Deno.lstat(pidFile);
  assert.ok(info.isFile, "a regular file replaced the link");
  assert.equal((await Deno.readTextFile(pidFile)).trim(), String(server.pid));
  assert.equal((await Deno.stat(path.join(site.path, "results"))).mode! & 0o777, 0o700);
  assert.equal((await Deno.stat(path.join(site.path, "log"))).mode! & 0o777, 0o750);

  const { status } = await server.stop("SIGTERM");
  assert.equal(status.code, 0, server.stderr);
  await assert.rejects(Deno.lstat(pidFile), Deno.errors.NotFound, "removed on a clean shutdown");
  assert.match(server.stderr, /shutdown complete/);
});

Deno.test("recon-server removes per-job logs older than LOG_RETENTION days at start", async () => {
  await using site = await tempDir("recon_startup_");
  const optsPath = await writeOpts(site.path, ["LOG_RETENTION = 7"]);
  const jobs = path.join(site.path, "jobs");
  await Deno.mkdir(jobs, { mode: 0o700 });
  const old = path.join(jobs, `job_${crypto.randomUUID()}.log`);
  const recent = path.join(jobs, `job_${crypto.randomUUID()}.log`);
  for (const [file, days] of [[old, 8], [recent, 6]] as const) {
    await Deno.writeTextFile(file, "script output\n");
    const when = new Date(Date.now() - days * DAY_MS);
    await Deno.utime(file, when, when);
  }
  await using server = startServer(optsPath);
  await server.waitForStderr(
    new RegExp(`removed 1 job log older than 7 days \\(LOG_RETENTION\\) from ${jobs}`),
  );
  await assert.rejects(Deno.lstat(old), Deno.errors.NotFound);
  await Deno.lstat(recent);
});

Deno.test("recon-server refuses the old /tmp RECON_FILEPATH and RECON_DICOM_DIR by name before creating them", async () => {
  await using site = await tempDir("recon_startup_");
  const optsPath = await writeOpts(site.path, [
    "RECON_FILEPATH = /tmp/recon_server_pfiles",
    "RECON_DICOM_DIR = /tmp/recon_server_dicoms",
  ]);
  const dirs = ["/tmp/recon_server_pfiles", "/tmp/recon_server_dicoms"];
  const exists = async (dir: string) => await Deno.lstat(dir).then(() => true, () => false);
  const before = await Promise.all(dirs.map(exists));
  // Before the fix this one started serving from /tmp: the timeout ends it.
  const refused = await run(SERVER_BIN, ["--opts", optsPath, "--port", "0"], { timeoutMs: 20_000 })
    .catch((error) => ({ code: -1, stderr: String(error) }));
  try {
    assert.equal(refused.code, 2, refused.stderr);
    assert.equal(
      errorLine(refused.stderr),
      "recon-server: error: recon.opts still has the old default RECON_FILEPATH " +
        "/tmp/recon_server_pfiles, RECON_DICOM_DIR /tmp/recon_server_dicoms, from an older " +
        "version; refusing them: any user can create or replace files in /tmp",
    );
    assert.match(
      refused.stderr,
      /^hint: set the new defaults in recon\.opts: RECON_FILEPATH = \/var\/lib\/recon\/jobs, RECON_DICOM_DIR = \/var\/lib\/recon\/results \(docs\/DEPLOY\.md §7\)$/m,
    );
    assert.deepEqual(await Promise.all(dirs.map(exists)), before, "nothing created in /tmp");
    await assert.rejects(Deno.lstat(path.join(site.path, "log")), Deno.errors.NotFound);
  } finally {
    // Whatever a failing run left in /tmp goes, but never what was there before.
    for (const [i, dir] of dirs.entries()) {
      if (!before[i]) await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }
});

Deno.test("--show-config only reads: a missing recon.opts is an error and is not created", async () => {
  await using site = await tempDir("recon_startup_");
  const missing = path.join(site.path, "recon.opts");
  for (const [bin, program] of [[SERVER_BIN, "recon-server"], [CLIENT_BIN, "recon-client"]]) {
    const shown = await run(bin, ["--opts", missing, "--show-config"]);
    assert.equal(shown.code, 2, shown.stderr);
    assert.equal(shown.stdout, "");
    assert.match(
      shown.stderr,
      new RegExp(`^${program}: error: recon\\.opts ${missing} does not exist$`, "m"),
    );
    assert.match(
      shown.stderr,
      new RegExp(
        `^hint: run ${program} --opts ${missing} once to create it, or copy recon\\.opts\\.example`,
        "m",
      ),
    );
    await assert.rejects(Deno.lstat(missing), Deno.errors.NotFound, program);
  }
});

Deno.test("--show-config says an empty SHARED_KEY is not set, and a start's hint says where the key goes (or that clients can have their own); beside a client file it is no warning", async () => {
  await using site = await tempDir("recon_startup_");
  const optsPath = await writeOpts(site.path, ["SHARED_KEY ="]);
  // writeOpts put a key first; the later empty line wins, with a warning about the repeat.
  for (const [bin, program] of [[SERVER_BIN, "recon-server"], [CLIENT_BIN, "recon-client"]]) {
    const shown = await run(bin, ["--opts", optsPath, "--show-config"]);
    assert.equal(shown.code, 0, shown.stderr);
    assert.equal(JSON.parse(shown.stdout).SHARED_KEY, "<not set>");
    assert.match(
      shown.stderr,
      new RegExp(
        `^${program}: warning: ${optsPath}: SHARED_KEY is not set; generate one with 'recon-server keygen' \\(a real start refuses it\\)$`,
        "m",
      ),
    );
  }
  const refused = await run(SERVER_BIN, ["--opts", optsPath, "--port", "0"]);
  assert.equal(refused.code, 2, refused.stderr);
  assert.match(
    errorLine(refused.stderr),
    /SHARED_KEY is not set; generate one with 'recon-server keygen'$/,
  );
  const hint = refused.stderr.split("\n").find((line) => line.startsWith("hint: "));
  assert.equal(
    hint,
    `hint: put it in ${optsPath} as the line "SHARED_KEY = <key>"; the server and every client ` +
      "need the same key in their recon.opts; or give each client its own key with " +
      "'recon-server clients add NAME'",
  );

  // With a client file beside it, an empty SHARED_KEY is a site of per-client keys.
  const added = await run(SERVER_BIN, ["clients", "add", "mr1", "--opts", optsPath]);
  assert.equal(added.code, 0, added.stderr);
  const shown = await run(SERVER_BIN, ["--opts", optsPath, "--show-config"]);
  assert.equal(shown.code, 0, shown.stderr);
  assert.doesNotMatch(shown.stderr, /not set/, "no warning: the clients have their keys");
});
