/**
 * Tests for one SHA-256 per file (lib/wire/transfer.ts, file_send.ts, file_receive.ts;
 * docs/PROTOCOL.md §5, issue 18): a receiver of a fresh transfer takes FILE_END's
 * SHA-256 without hashing, a resumed one still hashes, and `verifyAfterWrite` reads the
 * written file back and catches a file changed on disk after it was written; a partial
 * file already as long as the offset is not truncated; a sender with a recorded SHA-256
 * sends it for an unchanged file and hashes (and refuses, before FILE_END) a file that
 * changed since, or while it was sent.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as path from "node:path";
import { TransferError } from "../../lib/errors.ts";
import { fileTimes, type RecordedDigest, sendFileFrom } from "../../lib/wire/file_send.ts";
import { partialLength, receiveFileResumable } from "../../lib/wire/file_receive.ts";
import { sendStream } from "../../lib/wire/transfer.ts";
import { channelPair } from "../support/channel_pair.ts";
import { tempDir } from "../support/e2e.ts";
import { BytesReader, randomBytes } from "../support/memory_duplex.ts";

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** A SHA-256 that is not the content's: what a faulty sender would put in FILE_END. */
const OTHER = sha256(new TextEncoder().encode("not these bytes"));

/** Send `content` with FILE_END carrying `claimed` instead of its SHA-256. */
function sendClaiming(
  channel: Parameters<typeof sendStream>[0],
  content: Uint8Array,
  claimed: string,
  offset = 0,
) {
  return sendStream(
    channel,
    new BytesReader(content.subarray(offset)),
    content.length,
    undefined,
    undefined,
    { known: { sha256: claimed, offset, check: () => Promise.resolve() } },
  );
}

Deno.test("a fresh receive takes FILE_END's SHA-256 as the file's: the records are authenticated, nothing is hashed again", async () => {
  await using dir = await tempDir();
  const content = randomBytes(3 * 1024 * 1024 + 7);
  const partial = path.join(dir.path, ".scan.partial");
  await using pair = await channelPair();
  const [, received] = await Promise.all([
    sendClaiming(pair.client, content, OTHER),
    receiveFileResumable(pair.server, partial, content.length, 0),
  ]);
  // A receiver that hashed would have refused this FILE_END.
  assert.deepEqual(received, { size: content.length, sha256: OTHER });
  assert.deepEqual(await Deno.readFile(partial), content);
});

Deno.test("a resumed receive still hashes the whole file and refuses a FILE_END that does not match it", async () => {
  await using dir = await tempDir();
  const content = randomBytes(200_000);
  const partial = path.join(dir.path, ".scan.partial");
  await Deno.writeFile(partial, content.subarray(0, 50_000));
  await using pair = await channelPair();
  const [, received] = await Promise.allSettled([
    sendClaiming(pair.client, content, OTHER, 50_000),
    receiveFileResumable(pair.server, partial, content.length, 50_000),
  ]);
  assert.equal(received.status, "rejected");
  assert.match((received as PromiseRejectedResult).reason.message, /SHA-256 mismatch/);
  assert.equal(await partialLength(partial), 0, "the kept bytes are not resumed from again");
});

Deno.test("verifyAfterWrite reads the file back: a FILE_END that does not match the bytes fails and empties the file", async () => {
  await using dir = await tempDir();
  const content = randomBytes(1024 * 1024 + 1);
  const partial = path.join(dir.path, ".scan.partial");
  await using pair = await channelPair();
  const [, received] = await Promise.allSettled([
    sendClaiming(pair.client, content, OTHER),
    receiveFileResumable(pair.server, partial, content.length, 0, { verifyAfterWrite: true }),
  ]);
  assert.equal(received.status, "rejected");
  const error = (received as PromiseRejectedResult).reason;
  assert.ok(error instanceof TransferError, String(error));
  assert.match(
    error.message,
    new RegExp(
      `^SHA-256 mismatch after writing .*: it reads back as ${content.length} bytes with SHA-256 ${
        sha256(content)
      }, the sender sent ${content.length} bytes with ${OTHER}$`,
    ),
  );
  assert.equal(await partialLength(partial), 0, "the file is discarded");
});

for (const verifyAfterWrite of [false, true]) {
  Deno.test(`a file changed on disk after its last byte was written is ${verifyAfterWrite ? "caught by verifyAfterWrite" : "not noticed without verifyAfterWrite"}`, async () => {
    await using dir = await tempDir();
    const content = randomBytes(2 * 1024 * 1024 + 3);
    const partial = path.join(dir.path, ".scan.partial");
    await using pair = await channelPair();
    // Another writer flips the first byte as soon as the last byte is in the file (the
    // progress callback runs after each write): what a faulty disk or a stray process
    // could do between the write and the check.
    const corrupt = (held: number) => {
      if (held !== content.length) return;
      const other = Deno.openSync(partial, { write: true });
      try {
        other.writeSync(new Uint8Array([content[0] ^ 0xff]));
      } finally {
        other.close();
      }
    };
    const [, received] = await Promise.allSettled([
      sendStream(pair.client, new BytesReader(content), content.length),
      receiveFileResumable(pair.server, partial, content.length, 0, {
        onProgress: corrupt,
        verifyAfterWrite,
      }),
    ]);
    if (verifyAfterWrite) {
      assert.equal(received.status, "rejected");
      assert.match(
        (received as PromiseRejectedResult).reason.message,
        /^SHA-256 mismatch after writing /,
      );
      assert.equal(await partialLength(partial), 0, "the file is discarded");
    } else {
      assert.equal(received.status, "fulfilled");
      assert.equal(
        (received as PromiseFulfilledResult<{ sha256: string }>).value.sha256,
        sha256(content),
      );
      assert.notDeepEqual(await Deno.readFile(partial), content);
    }
  });
}

Deno.test("verifyAfterWrite accepts a file written whole, fresh or resumed", async () => {
  await using dir = await tempDir();
  const content = randomBytes(3 * 1024 * 1024 + 11);
  const source = path.join(dir.path, "scan");
  await Deno.writeFile(source, content);
  for (const offset of [0, 1024 * 1024 + 5]) {
    const partial = path.join(dir.path, `.scan.${offset}.partial`);
    await Deno.writeFile(partial, content.subarray(0, offset));
    await using pair = await channelPair();
    const [, received] = await Promise.all([
      sendFileFrom(pair.client, source, content.length, { offset }),
      receiveFileResumable(pair.server, partial, content.length, offset, {
        verifyAfterWrite: true,
      }),
    ]);
    assert.deepEqual(received, { size: content.length, sha256: sha256(content) });
    assert.deepEqual(await Deno.readFile(partial), content);
  }
});

Deno.test("receiveFileResumable() leaves a partial file that is exactly the offset long untruncated", async () => {
  // Truncating (even to its own length) updates the file's mtime, and on ext4 makes
  // close() write the whole file out: a partial file that holds exactly the verified
  // bytes is appended to, never truncated.
  await using dir = await tempDir();
  const content = randomBytes(300_000);
  const partial = path.join(dir.path, ".scan.partial");
  await Deno.writeFile(partial, content);
  const old = new Date("2020-01-01T00:00:00Z");
  await Deno.utime(partial, old, old);
  const source = path.join(dir.path, "scan");
  await Deno.writeFile(source, content);
  await using pair = await channelPair();
  const [, received] = await Promise.all([
    sendFileFrom(pair.client, source, content.length, { offset: content.length }),
    receiveFileResumable(pair.server, partial, content.length, content.length),
  ]);
  assert.equal(received.sha256, sha256(content));
  assert.equal((await Deno.stat(partial)).mtime?.getTime(), old.getTime(), "not truncated");
  // Longer than the offset: the bytes past it are cut, as before.
  await Deno.writeFile(partial, new Uint8Array([...content.subarray(0, 1000), 1, 2, 3]));
  await using again = await channelPair();
  const [, whole] = await Promise.all([
    sendFileFrom(again.client, source, content.length, { offset: 1000 }),
    receiveFileResumable(again.server, partial, content.length, 1000),
  ]);
  assert.equal(whole.sha256, sha256(content));
  assert.deepEqual(await Deno.readFile(partial), content);
});

/** The recorded SHA-256 of `file` as hashing it now gives, with its times now. */
async function recordNow(file: string, sha = ""): Promise<RecordedDigest> {
  const bytes = await Deno.readFile(file);
  return { sha256: sha || sha256(bytes), ...fileTimes(await Deno.stat(file)) };
}

Deno.test("sendFileFrom() sends the recorded SHA-256 of an unchanged file without hashing it", async () => {
  await using dir = await tempDir();
  const content = randomBytes(2 * 1024 * 1024 + 9);
  const source = path.join(dir.path, "result.dcm");
  await Deno.writeFile(source, content);
  // A recorded value that is not the content's shows that it is sent as recorded.
  const recorded = await recordNow(source, OTHER);
  for (const offset of [0, 1024 * 1024 + 1]) {
    await using pair = await channelPair();
    const partial = path.join(dir.path, `.r.${offset}.partial`);
    await Deno.writeFile(partial, content.subarray(0, offset));
    const [sent, received] = await Promise.allSettled([
      sendFileFrom(pair.client, source, content.length, { offset, recorded }),
      receiveFileResumable(pair.server, partial, content.length, offset),
    ]);
    assert.equal(sent.status, "fulfilled");
    assert.equal((sent as PromiseFulfilledResult<{ sha256: string }>).value.sha256, OTHER);
    if (offset === 0) {
      assert.equal(received.status, "fulfilled");
      assert.deepEqual(await Deno.readFile(partial), content);
    } else {
      // A resumed receiver hashes: the recorded value does not match its bytes.
      assert.equal(received.status, "rejected");
    }
  }
});

Deno.test("sendFileFrom() hashes a file written since its SHA-256 was recorded, and refuses it before any byte when it differs", async () => {
  await using dir = await tempDir();
  const content = randomBytes(500_000);
  const source = path.join(dir.path, "result.dcm");
  await Deno.writeFile(source, content);
  const recorded = await recordNow(source);
  // Same size, other bytes, a later mtime.
  await new Promise((resolve) => setTimeout(resolve, 5));
  const changed = content.slice();
  changed[100] ^= 0xff;
  await Deno.writeFile(source, changed);
  await using pair = await channelPair();
  const partial = path.join(dir.path, ".r.partial");
  const receiving = receiveFileResumable(pair.server, partial, content.length, 0).then(
    () => "accepted",
    (error) => error,
  );
  await assert.rejects(
    sendFileFrom(pair.client, source, content.length, { recorded }),
    (error: unknown) =>
      error instanceof TransferError &&
      error.message ===
        `${source} is not the file recorded when its job ended (now ${content.length} bytes, SHA-256 ${
          sha256(changed)
        }; recorded ${content.length} bytes, ${recorded.sha256}); not sending it`,
  );
  pair.client.abort();
  assert.notEqual(await receiving, "accepted", "no FILE_END was sent for other bytes");
  assert.equal(await partialLength(partial), 0, "not one byte of it was sent");
  // Written to but the same bytes: hashed, and it matches.
  await Deno.writeFile(source, content);
  await using again = await channelPair();
  const [sent, received] = await Promise.all([
    sendFileFrom(again.client, source, content.length, { recorded }),
    receiveFileResumable(again.server, path.join(dir.path, ".r2.partial"), content.length, 0),
  ]);
  assert.equal(sent.sha256, sha256(content));
  assert.equal(received.sha256, sha256(content));
});

Deno.test("sendFileFrom() with a recorded SHA-256 fails before FILE_END when the file is written to while it is sent", async () => {
  await using dir = await tempDir();
  const content = randomBytes(3 * 1024 * 1024);
  const source = path.join(dir.path, "result.dcm");
  await Deno.writeFile(source, content);
  const recorded = await recordNow(source);
  await new Promise((resolve) => setTimeout(resolve, 5));
  await using pair = await channelPair();
  let touched = false;
  const receiving = receiveFileResumable(
    pair.server,
    path.join(dir.path, ".r.partial"),
    content.length,
    0,
  ).then(() => "accepted", (error) => error);
  await assert.rejects(
    sendFileFrom(pair.client, source, content.length, {
      recorded,
      onProgress: () => {
        if (touched) return;
        touched = true;
        // Another process rewrites the last megabyte after the first was sent.
        const other = Deno.openSync(source, { write: true });
        try {
          other.seekSync(content.length - 1, Deno.SeekMode.Start);
          other.writeSync(new Uint8Array([content.at(-1)! ^ 0xff]));
        } finally {
          other.close();
        }
      },
    }),
    (error: unknown) =>
      error instanceof TransferError && /changed while it was being sent$/.test(error.message),
  );
  pair.client.abort();
  assert.notEqual(await receiving, "accepted", "no FILE_END was sent for the changed file");
});
