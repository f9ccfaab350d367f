/**
 * Tests for lib/server/results.ts: which files a job returns. Only regular files under
 * the output directory the server created; a script that replaces that directory, or
 * a directory below it, with a link or another directory gets nothing sent. Files in
 * RECON_DICOM_DIR itself are adopted only in the LEGACY_SHARED_OUTPUT mode.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { JobError } from "../../lib/errors.ts";
import {
  adoptLegacyResults,
  collectResults,
  directoryIdentity,
  snapshotDirectory,
} from "../../lib/server/results.ts";

async function tempDir(): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "recon-results-" });
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/** An output directory as the worker makes it, and a secret directory beside it. */
async function outputFixture(root: string) {
  const output = path.join(root, "job_x_output");
  await Deno.mkdir(output);
  const secret = path.join(root, "secret");
  await Deno.mkdir(secret);
  await Deno.writeTextFile(path.join(secret, "shadow"), "root:$6$hash");
  return { output, secret, identity: await directoryIdentity(output) };
}

function refusal(pattern: RegExp) {
  return (error: unknown) =>
    error instanceof JobError && pattern.test(error.message) &&
    /no results are sent$/.test(error.message) && !error.message.includes("\n");
}

Deno.test("collectResults() returns regular files recursively and skips symlinks", async () => {
  await using tmp = await tempDir();
  const dir = tmp.dir;
  await Deno.mkdir(path.join(dir, "series1"));
  await Deno.writeTextFile(path.join(dir, "series1", "img1.dcm"), "a");
  await Deno.writeTextFile(path.join(dir, "b.dcm"), "bb");
  await Deno.symlink("/etc/passwd", path.join(dir, "evil.dcm"));
  await Deno.symlink(path.join(dir, "series1"), path.join(dir, "loop"));
  const scan = await collectResults(dir, await directoryIdentity(dir));
  assert.deepEqual(scan.files.map((f) => [f.name, f.size]), [["b.dcm", 2], [
    "series1/img1.dcm",
    1,
  ]]);
  assert.equal(scan.skipped.length, 2);
  assert.ok(scan.skipped.every((s) => s.includes("symbolic link")));
});

Deno.test("collectResults() skips, with the reason, names the client would refuse", async () => {
  await using tmp = await tempDir();
  const dir = tmp.dir;
  await Deno.writeTextFile(path.join(dir, "good.dcm"), "a");
  await Deno.writeTextFile(path.join(dir, "back\\slash.dcm"), "b");
  await Deno.writeTextFile(path.join(dir, "tab\tname.dcm"), "c");
  await Deno.writeTextFile(path.join(dir, "esc\u001b[31m.dcm"), "d");
  await Deno.mkdir(path.join(dir, "series\u0007"));
  await Deno.writeTextFile(path.join(dir, "series\u0007", "img.dcm"), "e");
  await Deno.mkdir(path.join(dir, "series2"));
  await Deno.writeTextFile(path.join(dir, "series2", "-dash.dcm"), "f");
  const scan = await collectResults(dir, await directoryIdentity(dir));
  assert.deepEqual(scan.files.map((f) => f.name), ["good.dcm", "series2/-dash.dcm"]);
  assert.deepEqual(scan.skipped.sort(), [
    '"back\\\\slash.dcm" (the path is not relative)',
    '"esc\\u001b[31m.dcm" (segment "esc\\u001b[31m.dcm": the name contains NUL or a control character)',
    '"series\\u0007/img.dcm" (segment "series\\u0007": the name contains NUL or a control character)',
    '"tab\\tname.dcm" (segment "tab\\tname.dcm": the name contains NUL or a control character)',
  ]);
});

Deno.test("collectResults() sends nothing from an output directory replaced by a symbolic link", async () => {
  await using tmp = await tempDir();
  const { output, secret, identity } = await outputFixture(tmp.dir);
  // What the script does: rmdir "$RECON_OUTPUT_DIR"; ln -s /etc "$RECON_OUTPUT_DIR"
  await Deno.remove(output);
  await Deno.symlink(secret, output);
  await assert.rejects(
    collectResults(output, identity),
    refusal(
      /^RECON_OUTPUT_DIR is not the directory the server created \(it is now a symbolic link to ".*secret"\)/,
    ),
  );
});

Deno.test("collectResults() sends nothing from an output directory replaced by another directory", async () => {
  await using tmp = await tempDir();
  const { output, identity } = await outputFixture(tmp.dir);
  // Another directory moved into its place (a fresh mkdir may reuse the inode number).
  const other = path.join(tmp.dir, "other");
  await Deno.mkdir(other);
  await Deno.writeTextFile(path.join(other, "img.dcm"), "x");
  await Deno.remove(output);
  await Deno.rename(other, output);
  await assert.rejects(collectResults(output, identity), refusal(/it is now another directory/));
  await Deno.remove(output, { recursive: true });
  await assert.rejects(collectResults(output, identity), refusal(/it no longer exists/));
  await Deno.writeTextFile(output, "a file");
  await assert.rejects(
    collectResults(output, identity),
    refusal(/it is now something other than a directory/),
  );
});

Deno.test("collectResults() never reads a subdirectory swapped for a link while it walks", async () => {
  await using tmp = await tempDir();
  const { output, secret, identity } = await outputFixture(tmp.dir);
  const series = path.join(output, "series1");
  await Deno.mkdir(series);
  await Deno.writeTextFile(path.join(series, "img.dcm"), "x");
  // Between the walk's lstat() of series1 (a directory) and its readDir(): a link.
  const real = Deno.readDir;
  Deno.readDir = (dir: string | URL) => {
    if (dir === series) {
      Deno.removeSync(series, { recursive: true });
      Deno.symlinkSync(secret, series);
    }
    return real(dir);
  };
  try {
    await assert.rejects(
      collectResults(output, identity),
      refusal(/^the directory "series1" in RECON_OUTPUT_DIR changed while results were collected/),
    );
  } finally {
    Deno.readDir = real;
  }
});

Deno.test("adoptLegacyResults() moves only files new in RECON_DICOM_DIR into the job's output", async () => {
  await using tmp = await tempDir();
  const dicomDir = tmp.dir;
  await Deno.writeTextFile(path.join(dicomDir, "old.dcm"), "old");
  const output = path.join(dicomDir, "job_x_output");
  await Deno.mkdir(output);
  const identity = await directoryIdentity(output);
  const before = await snapshotDirectory(dicomDir);
  await Deno.writeTextFile(path.join(dicomDir, "new.dcm"), "new");
  await Deno.mkdir(path.join(dicomDir, "job_y_output"));
  assert.deepEqual(await adoptLegacyResults(dicomDir, before, output, identity), ["new.dcm"]);
  assert.equal(await Deno.readTextFile(path.join(output, "new.dcm")), "new");
  assert.equal(await Deno.readTextFile(path.join(dicomDir, "old.dcm")), "old");
});

Deno.test("adoptLegacyResults() moves nothing into an output directory replaced by a link", async () => {
  await using tmp = await tempDir();
  const dicomDir = path.join(tmp.dir, "dicoms");
  await Deno.mkdir(dicomDir);
  const { output, secret, identity } = await outputFixture(dicomDir);
  const before = await snapshotDirectory(dicomDir);
  await Deno.writeTextFile(path.join(dicomDir, "new.dcm"), "new");
  await Deno.remove(output);
  await Deno.symlink(secret, output);
  await assert.rejects(
    adoptLegacyResults(dicomDir, before, output, identity),
    refusal(/symbolic link/),
  );
  assert.deepEqual((await Array.fromAsync(Deno.readDir(secret))).map((e) => e.name), ["shadow"]);
  assert.equal(await Deno.readTextFile(path.join(dicomDir, "new.dcm")), "new");
});
