/**
 * Tests for resumed transfers (lib/wire/transfer.ts, file_send.ts, file_receive.ts;
 * docs/PROTOCOL.md §5.2): a sender told an offset sends only the bytes after it, and
 * FILE_END still proves the whole file; a receiver appends to the verified bytes it
 * kept, checks the whole file's size and SHA-256, keeps what it verified when the
 * session breaks, and empties a partial file whose whole does not match.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as path from "node:path";
import { TransferError } from "../../lib/errors.ts";
import { partialLength, receiveFileResumable } from "../../lib/wire/file_receive.ts";
import { sendFileFrom } from "../../lib/wire/file_send.ts";
import { sendStream } from "../../lib/wire/transfer.ts";
import { channelPair } from "../support/channel_pair.ts";
import { tempDir } from "../support/e2e.ts";
import { BytesReader, randomBytes } from "../support/memory_duplex.ts";

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Count the DATA bytes the receiving channel sees, passing every record on. */
function countingReceive(channel: { receive: () => Promise<unknown> }) {
  const counter = { data: 0 };
  const original = channel.receive.bind(channel);
  channel.receive = async () => {
    const incoming = await original() as { type: string; bytes?: Uint8Array };
    if (incoming.type === "data") counter.data += incoming.bytes!.length;
    return incoming;
  };
  return counter;
}

for (const offset of [0, 1, 1024 * 1024 - 1, 1024 * 1024, 3 * 1024 * 1024 + 17, 5_000_000]) {
  Deno.test(`sendFileFrom() at offset ${offset} and receiveFileResumable() rebuild the whole file`, async () => {
    await using dir = await tempDir();
    const content = randomBytes(5_000_000);
    const source = path.join(dir.path, "P00001.7");
    await Deno.writeFile(source, content);
    const partial = path.join(dir.path, ".P00001.7.partial");
    await Deno.writeFile(partial, content.subarray(0, offset));
    await using pair = await channelPair();
    const counter = countingReceive(pair.server);
    const progress: number[] = [];
    const [sent, received] = await Promise.all([
      sendFileFrom(pair.client, source, content.length, { offset }),
      receiveFileResumable(pair.server, partial, content.length, offset, {
        onProgress: (bytes) => progress.push(bytes),
      }),
    ]);
    assert.equal(counter.data, content.length - offset, "only the missing bytes travel");
    assert.equal(sent.sha256, sha256(content));
    assert.deepEqual(received, { size: content.length, sha256: sha256(content) });
    assert.deepEqual(await Deno.readFile(partial), content);
    if (offset < content.length) {
      assert.ok(progress[0] > offset, "progress counts the bytes already held");
      assert.equal(progress.at(-1), content.length);
    }
  });
}

Deno.test("receiveFileResumable() keeps the verified bytes when the session breaks, and a later session finishes from there", async () => {
  await using dir = await tempDir();
  const content = randomBytes(3 * 1024 * 1024 + 5);
  const partial = path.join(dir.path, ".scan.partial");
  {
    await using pair = await channelPair();
    // The sender stops after two of its four records: the connection is lost.
    const source = new BytesReader(content.subarray(0, 2 * 1024 * 1024));
    const receiving = receiveFileResumable(pair.server, partial, content.length, 0).catch((e) => e);
    await sendStream(pair.client, source, content.length).catch(() => {});
    pair.client.abort();
    const error = await receiving;
    assert.ok(!(error instanceof TransferError && /SHA-256/.test(error.message)), String(error));
  }
  const held = await partialLength(partial);
  assert.ok(held > 0 && held <= 2 * 1024 * 1024, `held ${held}`);
  assert.deepEqual(await Deno.readFile(partial), content.subarray(0, held));
  const source = path.join(dir.path, "scan");
  await Deno.writeFile(source, content);
  await using pair = await channelPair();
  const [, received] = await Promise.all([
    sendFileFrom(pair.client, source, content.length, { offset: held }),
    receiveFileResumable(pair.server, partial, content.length, held),
  ]);
  assert.equal(received.sha256, sha256(content));
  assert.deepEqual(await Deno.readFile(partial), content);
});

Deno.test("receiveFileResumable() empties a partial file whose whole does not match the sender's SHA-256", async () => {
  await using dir = await tempDir();
  const content = randomBytes(100_000);
  const partial = path.join(dir.path, ".scan.partial");
  // The kept prefix is not the sender's: the file on the client changed since.
  await Deno.writeFile(partial, randomBytes(40_000));
  const source = path.join(dir.path, "scan");
  await Deno.writeFile(source, content);
  await using pair = await channelPair();
  const [, received] = await Promise.allSettled([
    sendFileFrom(pair.client, source, content.length, { offset: 40_000 }),
    receiveFileResumable(pair.server, partial, content.length, 40_000),
  ]);
  assert.equal(received.status, "rejected");
  assert.ok(
    (received as PromiseRejectedResult).reason instanceof TransferError &&
      /SHA-256 mismatch/.test((received as PromiseRejectedResult).reason.message),
  );
  assert.equal(await partialLength(partial), 0, "nothing unverified is kept to resume from");
});

Deno.test("receiveFileResumable() refuses an offset beyond what it holds, and a link in place of the partial file", async () => {
  await using dir = await tempDir();
  const partial = path.join(dir.path, ".scan.partial");
  await Deno.writeFile(partial, new Uint8Array(10));
  await using pair = await channelPair();
  await assert.rejects(
    receiveFileResumable(pair.server, partial, 100, 11),
    /cannot resume .* at byte 11: 10 bytes are held of 100/,
  );
  const secret = path.join(dir.path, "secret");
  await Deno.writeTextFile(secret, "not yours");
  const link = path.join(dir.path, ".link.partial");
  await Deno.symlink(secret, link);
  await assert.rejects(
    receiveFileResumable(pair.server, link, 100, 0),
    /is not a regular file; not writing to it/,
  );
  assert.equal(await Deno.readTextFile(secret), "not yours");
});

Deno.test("sendFileFrom() refuses an offset beyond the file and sends nothing", async () => {
  await using dir = await tempDir();
  const source = path.join(dir.path, "scan");
  await Deno.writeFile(source, new Uint8Array(10));
  await using pair = await channelPair();
  await assert.rejects(
    sendFileFrom(pair.client, source, 10, { offset: 11 }),
    /cannot resume .* at byte 11: the file has 10 bytes/,
  );
  await pair.client.send({ type: "after" });
  assert.deepEqual(await pair.server.receive(), { type: "message", message: { type: "after" } });
});

Deno.test("partialLength() is 0 for a missing file", async () => {
  await using dir = await tempDir();
  assert.equal(await partialLength(path.join(dir.path, "none")), 0);
});
