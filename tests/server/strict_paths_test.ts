/**
 * Tests for lib/server/strict_paths.ts: the server makes its missing directories
 * private, and refuses directories (or a log file) another user could tamper with,
 * naming the option, the path and the fix.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { ConfigError } from "../../lib/errors.ts";
import { defaultConfig, type ReconConfig } from "../../lib/opts/mod.ts";
import { prepareServerPaths } from "../../lib/server/strict_paths.ts";

async function tempDir(): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "recon-strict-paths-" });
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

function configIn(dir: string): ReconConfig {
  return {
    ...defaultConfig(),
    RECON_FILEPATH: path.join(dir, "state", "jobs"),
    RECON_DICOM_DIR: path.join(dir, "state", "results"),
    LOG_FILEPATH: path.join(dir, "log", "recon.log"),
  };
}

async function mode(file: string): Promise<number> {
  return (await Deno.lstat(file)).mode! & 0o7777;
}

Deno.test("prepareServerPaths() creates missing directories 0700 and the log directory 0750", async () => {
  await using tmp = await tempDir();
  const config = configIn(tmp.dir);
  const umask = Deno.umask(0o000);
  try {
    await prepareServerPaths(config);
  } finally {
    Deno.umask(umask);
  }
  assert.equal(await mode(config.RECON_FILEPATH), 0o700);
  assert.equal(await mode(config.RECON_DICOM_DIR), 0o700);
  assert.equal(await mode(path.dirname(config.LOG_FILEPATH)), 0o750);
  await prepareServerPaths(config); // again: all there and private
});

Deno.test("prepareServerPaths() refuses a world-writable RECON_FILEPATH with the path and the fix", async () => {
  await using tmp = await tempDir();
  const config = configIn(tmp.dir);
  await Deno.mkdir(config.RECON_FILEPATH, { recursive: true });
  await Deno.chmod(config.RECON_FILEPATH, 0o777);
  const error = await prepareServerPaths(config).then(() => undefined, (e) => e);
  assert.ok(error instanceof ConfigError);
  assert.equal(error.exitCode, 2);
  assert.equal(
    error.message,
    `RECON_FILEPATH ${config.RECON_FILEPATH} is writable by other users (mode 0777); ` +
      "refusing to use it: another user could replace the files the server writes or reads there",
  );
  assert.equal(
    error.hint,
    `run chmod go-w ${config.RECON_FILEPATH} (0700 or 0750); or set RECON_FILEPATH in ` +
      "recon.opts to a path only the server's user can write (default /var/lib/recon/jobs)",
  );
});

Deno.test("prepareServerPaths() refuses a RECON_DICOM_DIR owned by another user, and a parent they own", async () => {
  await using tmp = await tempDir();
  const config = configIn(tmp.dir);
  await Deno.mkdir(config.RECON_DICOM_DIR, { recursive: true, mode: 0o700 });
  await Deno.chown(config.RECON_DICOM_DIR, 65534, 65534);
  await assert.rejects(
    prepareServerPaths(config),
    new RegExp(`^ConfigError: RECON_DICOM_DIR ${config.RECON_DICOM_DIR} is owned by uid 65534`),
  );
  await Deno.chown(config.RECON_DICOM_DIR, 0, 0);
  const parent = path.dirname(config.RECON_DICOM_DIR);
  await Deno.chown(parent, 65534, 65534);
  await assert.rejects(
    prepareServerPaths(config),
    new RegExp(
      `${parent}, a parent of RECON_FILEPATH ${config.RECON_FILEPATH}, is owned by uid 65534`,
    ),
  );
});

Deno.test("prepareServerPaths() refuses a log directory in /tmp itself and a linked log file", async () => {
  await using tmp = await tempDir();
  const config = configIn(tmp.dir);
  config.LOG_FILEPATH = "/tmp/recon-strict-paths.log";
  const error = await prepareServerPaths(config).then(() => undefined, (e) => e);
  assert.ok(error instanceof ConfigError);
  assert.match(
    error.message,
    /^the directory of LOG_FILEPATH \/tmp is a shared directory \(mode 1777\) in which every user can create files; refusing to use it/,
  );
  // Never "chmod go-w /tmp": that would break every other program on the machine.
  assert.equal(
    error.hint,
    "set LOG_FILEPATH in recon.opts to a file in a directory of its own, e.g. " +
      "/var/log/recon/recon.log",
  );
  config.LOG_FILEPATH = path.join(tmp.dir, "log", "recon.log");
  await Deno.mkdir(path.dirname(config.LOG_FILEPATH), { mode: 0o750 });
  await Deno.symlink("/etc/passwd", config.LOG_FILEPATH);
  await assert.rejects(
    prepareServerPaths(config),
    new RegExp(`LOG_FILEPATH ${config.LOG_FILEPATH} is a symbolic link; refusing to append`),
  );
});

Deno.test("prepareServerPaths() names a directory it cannot create", async () => {
  await using tmp = await tempDir();
  const config = configIn(tmp.dir);
  await Deno.writeTextFile(path.join(tmp.dir, "state"), "a file where a directory goes");
  await assert.rejects(
    prepareServerPaths(config),
    new RegExp(`cannot create RECON_FILEPATH ${config.RECON_FILEPATH}: `),
  );
});

Deno.test("prepareServerPaths() refuses the old /tmp defaults by name, with each new default, creating nothing", async () => {
  await using tmp = await tempDir();
  const old = {
    RECON_FILEPATH: "/tmp/recon_server_pfiles",
    RECON_DICOM_DIR: "/tmp/recon_server_dicoms",
    LOG_FILEPATH: "/tmp/recon_project.log",
  };
  const existed = async (dir: string) => await Deno.lstat(dir).then(() => true, () => false);
  const before = [await existed(old.RECON_FILEPATH), await existed(old.RECON_DICOM_DIR)];
  const error = await prepareServerPaths({ ...defaultConfig(), ...old }).then(
    () => undefined,
    (e) => e,
  );
  assert.ok(error instanceof ConfigError);
  assert.equal(error.exitCode, 2);
  assert.equal(
    error.message,
    "recon.opts still has the old default RECON_FILEPATH /tmp/recon_server_pfiles, " +
      "RECON_DICOM_DIR /tmp/recon_server_dicoms, LOG_FILEPATH /tmp/recon_project.log, from an " +
      "older version; refusing them: any user can create or replace files in /tmp",
  );
  assert.equal(
    error.hint,
    "set the new defaults in recon.opts: RECON_FILEPATH = /var/lib/recon/jobs, " +
      "RECON_DICOM_DIR = /var/lib/recon/results, LOG_FILEPATH = /var/log/recon/recon.log " +
      "(docs/DEPLOY.md §7)",
  );
  assert.deepEqual(
    [await existed(old.RECON_FILEPATH), await existed(old.RECON_DICOM_DIR)],
    before,
    "nothing created",
  );

  // The two directories alone, with the log elsewhere: still refused, trailing slash or not.
  const config = { ...configIn(tmp.dir), RECON_DICOM_DIR: "/tmp/recon_server_dicoms/" };
  await assert.rejects(
    prepareServerPaths(config),
    /^ConfigError: recon\.opts still has the old default RECON_DICOM_DIR \/tmp\/recon_server_dicoms\/, from an older version; refusing it/,
  );
  await assert.rejects(Deno.lstat(config.RECON_FILEPATH), Deno.errors.NotFound);
});

Deno.test("prepareServerPaths() checks every directory before it creates any", async () => {
  await using tmp = await tempDir();
  const config = configIn(tmp.dir);
  const open = path.join(tmp.dir, "open");
  await Deno.mkdir(open, { mode: 0o777 });
  await Deno.chmod(open, 0o777);
  config.LOG_FILEPATH = path.join(open, "log", "recon.log");
  const error = await prepareServerPaths(config).then(() => undefined, (e) => e);
  assert.ok(error instanceof ConfigError);
  assert.match(
    error.message,
    new RegExp(`^${open}, a parent of the directory of LOG_FILEPATH ${open}/log, is writable`),
  );
  assert.equal(
    error.hint,
    "set LOG_FILEPATH in recon.opts to a file in a directory of its own, e.g. " +
      "/var/log/recon/recon.log",
  );
  await assert.rejects(Deno.lstat(config.RECON_FILEPATH), Deno.errors.NotFound);
  await assert.rejects(Deno.lstat(path.join(open, "log")), Deno.errors.NotFound);
});

Deno.test("prepareServerPaths() suggests chmod only for a log directory that holds nothing but its log", async () => {
  await using tmp = await tempDir();
  const config = configIn(tmp.dir);
  const logDir = path.dirname(config.LOG_FILEPATH);
  await Deno.mkdir(logDir);
  await Deno.chmod(logDir, 0o770);
  await Deno.writeTextFile(config.LOG_FILEPATH + ".1", "");
  const own = await prepareServerPaths(config).then(() => undefined, (e) => e);
  assert.match(
    own.hint,
    new RegExp(`^run chmod go-w ${logDir} \\(0700 or 0750\\); or set LOG_FILEPATH`),
  );
  // A directory other programs log into too (like /var/log) is not recon's to change.
  await Deno.writeTextFile(path.join(logDir, "syslog"), "");
  const shared = await prepareServerPaths(config).then(() => undefined, (e) => e);
  assert.equal(
    shared.hint,
    "set LOG_FILEPATH in recon.opts to a file in a directory of its own, e.g. " +
      "/var/log/recon/recon.log",
  );
});
