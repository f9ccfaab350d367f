/**
 * Tests for lib/client/download.ts: results received over a real channel pair into
 * DIR/<job_id>/ with a journal beside it; what a new process takes over (every
 * recorded result checked again: present, same size and SHA-256), a journal cut short,
 * a part file to resume, an identical file accepted and a different one never
 * overwritten, and a link in place of the result directory refused.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as path from "node:path";
import { TransferError } from "../../lib/errors.ts";
import { fileSha256, journalPath, partPath, ResultDownload } from "../../lib/client/download.ts";
import { channelPair } from "../support/channel_pair.ts";
import { listDir, tempDir } from "../support/e2e.ts";
import { Peer } from "./scripted_server.ts";

const JOB = "0b6f3c8e-5d2a-4c61-9a7e-3f1d2b4c5a69";
const encoder = new TextEncoder();
const A = encoder.encode("first result, some bytes");
const B = encoder.encode("second");
const ANNOUNCED = { count: 2, totalSize: A.length + B.length };

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Send `bytes` from `offset` on the server end while the download receives it. */
async function transfer(
  download: ResultDownload,
  name: string,
  bytes: Uint8Array,
  offset = 0,
) {
  await using pair = await channelPair();
  const [file] = await Promise.all([
    download.receive(pair.client, { name, size: bytes.length, offset }),
    new Peer(pair.server).sendFile(bytes, offset),
  ]);
  return file;
}

async function journal(downloadDir: string): Promise<unknown[]> {
  const text = await Deno.readTextFile(journalPath(downloadDir, JOB));
  return text.trim().split("\n").map((line) => JSON.parse(line));
}

Deno.test("ResultDownload receives into DIR/<job_id>/ and records each verified result in the journal", async () => {
  await using dir = await tempDir();
  const download = await ResultDownload.open(dir.path, JOB, ANNOUNCED);
  assert.deepEqual(await listDir(dir.path), [], "opening only reads");
  await download.prepare();
  assert.deepEqual(await download.resumePoint(), { index: 0, offset: 0 });
  const first = await transfer(download, "sub/a.dcm", A);
  assert.deepEqual(first, {
    name: "sub/a.dcm",
    path: path.join(dir.path, JOB, "sub/a.dcm"),
    size: A.length,
    sha256: sha256(A),
  });
  await transfer(download, "b.dcm", B);
  assert.equal(download.complete, true);
  assert.equal(download.verifiedBytes, ANNOUNCED.totalSize);
  assert.deepEqual(await download.resumePoint(), { index: 2, offset: 0 });
  assert.deepEqual(await journal(dir.path), [
    { job_id: JOB, count: 2, total_size: ANNOUNCED.totalSize },
    { partial: 0, name: "sub/a.dcm" },
    { index: 0, name: "sub/a.dcm", size: A.length, sha256: sha256(A) },
    { partial: 1, name: "b.dcm" },
    { index: 1, name: "b.dcm", size: B.length, sha256: sha256(B) },
  ]);
  assert.deepEqual(await listDir(dir.path), [`.recon-${JOB}.journal`, JOB]);
  assert.equal((await Deno.stat(journalPath(dir.path, JOB))).mode! & 0o777, 0o600);
});

Deno.test("a new process takes over the verified results and resumes the part file", async () => {
  await using dir = await tempDir();
  const first = await ResultDownload.open(dir.path, JOB, ANNOUNCED);
  await first.prepare();
  await transfer(first, "sub/a.dcm", A);
  // Half of B arrived before the connection broke: the part file holds it.
  await Deno.writeTextFile(
    journalPath(dir.path, JOB),
    `${JSON.stringify({ partial: 1, name: "b.dcm" })}\n`,
    { append: true },
  );
  await Deno.writeFile(partPath(dir.path, JOB), B.subarray(0, 3));

  const again = await ResultDownload.open(dir.path, JOB, ANNOUNCED);
  assert.deepEqual(again.files.map((file) => file.name), ["sub/a.dcm"]);
  assert.equal(again.has("sub/a.dcm"), true);
  assert.deepEqual(again.partial, { index: 1, name: "b.dcm" });
  assert.deepEqual(await again.resumePoint(), { index: 1, offset: 3 });
  await again.prepare();
  await transfer(again, "b.dcm", B, 3);
  assert.equal(again.complete, true);
  assert.equal(await fileSha256(path.join(dir.path, JOB, "b.dcm")), sha256(B));
  assert.deepEqual(await listDir(dir.path), [`.recon-${JOB}.journal`, JOB], "no part file left");
});

Deno.test("a recorded result that is gone or changed counts as missing, and so does everything after it", async () => {
  for (const spoil of ["remove", "change", "grow"] as const) {
    await using dir = await tempDir();
    const first = await ResultDownload.open(dir.path, JOB, ANNOUNCED);
    await first.prepare();
    await transfer(first, "sub/a.dcm", A);
    await transfer(first, "b.dcm", B);
    const target = path.join(dir.path, JOB, "sub/a.dcm");
    if (spoil === "remove") await Deno.remove(target);
    if (spoil === "change") await Deno.writeFile(target, A.map((byte) => byte ^ 1));
    if (spoil === "grow") await Deno.writeTextFile(target, "x", { append: true });
    const again = await ResultDownload.open(dir.path, JOB, ANNOUNCED);
    assert.deepEqual(await again.resumePoint(), { index: 0, offset: 0 }, spoil);
    await again.prepare();
    if (spoil === "remove") {
      // Received again, and b.dcm, still there and identical, is as good as new.
      await transfer(again, "sub/a.dcm", A);
      await transfer(again, "b.dcm", B);
      assert.equal(again.complete, true);
    } else {
      // A file that differs from the server's is never overwritten.
      const error = await transfer(again, "sub/a.dcm", A).catch((e) => e);
      assert.ok(error instanceof TransferError, String(error));
      assert.match(
        error.message,
        /sub\/a\.dcm already exists and differs from the server's result; not overwriting it$/,
      );
      assert.notEqual(await fileSha256(target), sha256(A), "left as it was");
    }
  }
});

Deno.test("a journal of another announcement, or cut in the middle of a line, is started afresh", async () => {
  await using dir = await tempDir();
  const first = await ResultDownload.open(dir.path, JOB, ANNOUNCED);
  await first.prepare();
  await transfer(first, "sub/a.dcm", A);
  const file = journalPath(dir.path, JOB);
  const whole = await Deno.readTextFile(file);

  await Deno.writeTextFile(file, whole + '{"index":1,"na');
  const cut = await ResultDownload.open(dir.path, JOB, ANNOUNCED);
  assert.deepEqual(await cut.resumePoint(), { index: 1, offset: 0 }, "the whole lines count");
  await cut.prepare();
  await transfer(cut, "b.dcm", B);
  assert.deepEqual(await journal(dir.path), [
    { job_id: JOB, count: 2, total_size: ANNOUNCED.totalSize },
    { index: 0, name: "sub/a.dcm", size: A.length, sha256: sha256(A) },
    { partial: 1, name: "b.dcm" },
    { index: 1, name: "b.dcm", size: B.length, sha256: sha256(B) },
  ], "written afresh with the first result that arrived: every line parses");

  const other = await ResultDownload.open(dir.path, JOB, { count: 3, totalSize: 99 });
  assert.deepEqual(await other.resumePoint(), { index: 0, offset: 0 });
});

Deno.test("a link or a file in place of the result directory is refused", async () => {
  await using dir = await tempDir();
  const elsewhere = path.join(dir.path, "elsewhere");
  await Deno.mkdir(elsewhere);
  const downloads = path.join(dir.path, "downloads");
  await Deno.mkdir(downloads);
  await Deno.symlink(elsewhere, path.join(downloads, JOB));
  const download = await ResultDownload.open(downloads, JOB, ANNOUNCED);
  await assert.rejects(download.prepare(), (error: unknown) => {
    assert.ok(error instanceof TransferError);
    assert.match(error.message, /exists and is not a directory$/);
    return true;
  });
  assert.deepEqual(await listDir(elsewhere), []);
});

Deno.test("ResultDownload refuses a journal that is not a regular file", async () => {
  await using dir = await tempDir();
  await Deno.mkdir(journalPath(dir.path, JOB));
  await assert.rejects(
    ResultDownload.open(dir.path, JOB, ANNOUNCED),
    /is not a regular file/,
  );
});
