/**
 * recon-server's start and stop through bin/recon-server: --allow-unknown-options and
 * --show-config, the refusal of directories another user could tamper with (issue 11
 * item 2), the pid file written without following a link and removed at a clean
 * shutdown, and the LOG_RETENTION sweep of old per-job logs (issue 12 item 8).
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { keygen, run, SERVER_BIN, Spawned, tempDir, testdata } from "./support/e2e.ts";
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
