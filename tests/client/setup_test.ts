/**
 * Tests for lib/client/setup.ts checkDownloadDir(): a download directory is checked
 * before anything is sent, and nothing is created for it (a refused job or fetch
 * leaves no directory behind); one that cannot be made is refused in one line.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { UsageError } from "../../lib/errors.ts";
import { checkDownloadDir } from "../../lib/client/setup.ts";
import { tempDir } from "../support/e2e.ts";

async function entries(dir: string): Promise<string[]> {
  const names = [];
  for await (const entry of Deno.readDir(dir)) names.push(entry.name);
  return names.sort();
}

Deno.test("checkDownloadDir() accepts a missing directory below a writable one and creates nothing", async () => {
  await using dir = await tempDir("recon_setup_");
  await checkDownloadDir(path.join(dir.path, "a", "b", "results"), "a/b/results", "recon.opts");
  assert.deepEqual(await entries(dir.path), [], "no directory and no probe file left");
  await Deno.mkdir(path.join(dir.path, "results"));
  await checkDownloadDir(path.join(dir.path, "results"), undefined, "recon.opts");
  assert.deepEqual(await entries(path.join(dir.path, "results")), []);
});

Deno.test("checkDownloadDir() refuses a regular file, and a directory below one, in one line", async () => {
  await using dir = await tempDir("recon_setup_");
  const file = path.join(dir.path, "P00001.7");
  await Deno.writeTextFile(file, "raw");
  for (
    const [target, reason] of [
      [file, "not a directory"],
      [path.join(file, "out", "x"), "part of the path is not a directory"],
    ]
  ) {
    const error = await checkDownloadDir(target, target, "recon.opts").catch((e) => e);
    assert.ok(error instanceof UsageError, String(error));
    assert.equal(error.message, `cannot write results to --download-dir ${target}: ${reason}`);
    assert.equal(error.hint, "choose a directory you can write");
  }
  const error = await checkDownloadDir(file, undefined, "/etc/recon/recon.opts").catch((e) => e);
  assert.equal(
    error.message,
    `cannot write results to CLIENT_DOWNLOAD_DIR ${file} (from /etc/recon/recon.opts): ` +
      "not a directory",
  );
  assert.deepEqual(await entries(dir.path), ["P00001.7"]);
});
