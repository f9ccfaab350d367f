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
  config.LOG_FILEPATH = "/tmp/recon_project.log";
  await assert.rejects(
    prepareServerPaths(config),
    /^ConfigError: the directory of LOG_FILEPATH \/tmp is writable by other users \(mode 1777\)/,
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
