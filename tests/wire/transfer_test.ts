/**
 * Tests for lib/wire/file_send.ts opening files to send: with `noFollow` (the server's
 * results) a symbolic link is refused, also one that replaces the file between the check
 * and the open; without it (the client's inputs) links are followed. A refused file
 * sends nothing and leaves the session usable. Receiving into a file
 * (lib/wire/file_receive.ts): names up to 255 bytes of UTF-8 work, and a local write
 * failure is a TransferError.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { ConnectionError, TransferError } from "../../lib/errors.ts";
import { Channel, type Duplex } from "../../lib/wire/channel.ts";
import { openForSending, sendFileFrom } from "../../lib/wire/file_send.ts";
import { receiveFileTo } from "../../lib/wire/file_receive.ts";
import { sendStream } from "../../lib/wire/transfer.ts";
import { channelPair, testKey } from "../support/channel_pair.ts";
import { listDir, tempDir } from "../support/e2e.ts";
import { BytesReader, duplexPair, randomBytes } from "../support/memory_duplex.ts";

async function fixture(dir: string) {
  const file = path.join(dir, "result.dcm");
  const secret = path.join(dir, "secret.txt");
  const link = path.join(dir, "link.dcm");
  await Deno.writeTextFile(file, "image");
  await Deno.writeTextFile(secret, "the server's private data");
  await Deno.symlink(secret, link);
  return { file, secret, link };
}

function isLinkRefusal(error: unknown): boolean {
  return error instanceof TransferError &&
    /is not a regular file \(it is or became a symbolic link\)/.test(error.message);
}

Deno.test("openForSending() with noFollow accepts a regular file", async () => {
  await using dir = await tempDir();
  const { file } = await fixture(dir.path);
  const opened = await openForSending(file, { noFollow: true });
  try {
    assert.equal(opened.size, 5);
  } finally {
    opened.file.close();
  }
});

Deno.test("openForSending() with noFollow refuses a symbolic link to a regular file", async () => {
  await using dir = await tempDir();
  const { link } = await fixture(dir.path);
  await assert.rejects(openForSending(link, { noFollow: true }), isLinkRefusal);
});

Deno.test("openForSending() with noFollow refuses a dangling symbolic link", async () => {
  await using dir = await tempDir();
  const dangling = path.join(dir.path, "dangling.dcm");
  await Deno.symlink(path.join(dir.path, "nowhere"), dangling);
  await assert.rejects(openForSending(dangling, { noFollow: true }), isLinkRefusal);
});

Deno.test("openForSending() without noFollow follows a symbolic link (the client's inputs)", async () => {
  await using dir = await tempDir();
  const { link } = await fixture(dir.path);
  const opened = await openForSending(link);
  try {
    assert.equal(opened.size, "the server's private data".length);
  } finally {
    opened.file.close();
  }
});

Deno.test("openForSending() refuses a directory either way", async () => {
  await using dir = await tempDir();
  for (const noFollow of [false, true]) {
    await assert.rejects(
      openForSending(dir.path, { noFollow }),
      (error: unknown) =>
        error instanceof TransferError && /is not a regular file/.test(error.message),
      `noFollow ${noFollow}`,
    );
  }
});

/** Run `body` with Deno.lstat patched to call `after` once it has looked at a path. */
async function withLstatHook(after: () => Promise<void>, body: () => Promise<void>) {
  const real = Deno.lstat;
  Deno.lstat = async (target: string | URL) => {
    const info = await real(target);
    await after();
    return info;
  };
  try {
    await body();
  } finally {
    Deno.lstat = real;
  }
}

Deno.test("openForSending() with noFollow refuses a file swapped for a symbolic link after its check", async () => {
  await using dir = await tempDir();
  const { file, secret } = await fixture(dir.path);
  // Between lstat() (a regular file) and open(): the file becomes a link to a secret.
  await withLstatHook(async () => {
    await Deno.remove(file);
    await Deno.symlink(secret, file);
  }, async () => {
    await assert.rejects(openForSending(file, { noFollow: true }), isLinkRefusal);
  });
});

Deno.test("openForSending() with noFollow refuses a file replaced by another file after its check", async () => {
  await using dir = await tempDir();
  const { file, secret } = await fixture(dir.path);
  const copy = path.join(dir.path, "copy.txt");
  await Deno.copyFile(secret, copy);
  await withLstatHook(() => Deno.rename(copy, file), async () => {
    await assert.rejects(openForSending(file, { noFollow: true }), isLinkRefusal);
  });
});

Deno.test("openForSending() with expect refuses another file reached through a swapped directory", async () => {
  await using dir = await tempDir();
  const output = path.join(dir.path, "output");
  const elsewhere = path.join(dir.path, "elsewhere");
  await Deno.mkdir(path.join(output, "series"), { recursive: true });
  await Deno.mkdir(elsewhere);
  const result = path.join(output, "series", "image.dcm");
  await Deno.writeTextFile(result, "image");
  await Deno.writeTextFile(path.join(elsewhere, "image.dcm"), "the server's private data");
  const seen = await Deno.lstat(result);
  const identity = { dev: seen.dev!, ino: seen.ino! };
  const opened = await openForSending(result, { noFollow: true, expect: identity });
  opened.file.close();
  // The directory on the path, not the file itself, becomes a link: noFollow alone
  // checks only the last component and would send the other file.
  await Deno.rename(path.join(output, "series"), path.join(dir.path, "moved"));
  await Deno.symlink(elsewhere, path.join(output, "series"));
  const plain = await openForSending(result, { noFollow: true });
  plain.file.close();
  await assert.rejects(openForSending(result, { noFollow: true, expect: identity }), isLinkRefusal);
});

Deno.test("sendFileFrom() with noFollow sends nothing for a symbolic link and the session goes on", async () => {
  await using dir = await tempDir();
  const { link } = await fixture(dir.path);
  await using pair = await channelPair();
  await assert.rejects(
    sendFileFrom(pair.server, link, "the server's private data".length, { noFollow: true }),
    isLinkRefusal,
  );
  await pair.server.send({ type: "after" });
  // The first record the client sees is the message: no DATA went out.
  assert.deepEqual(await pair.client.receive(), { type: "message", message: { type: "after" } });
});

Deno.test("receiveFileTo() takes a file whose name is 255 bytes of UTF-8", async () => {
  await using dir = await tempDir();
  // 84 three-byte characters and ".7": 254 bytes, a legal name on every common filesystem.
  const name = `${"日".repeat(84)}.7`;
  assert.equal(new TextEncoder().encode(name).length, 254);
  const content = new TextEncoder().encode("k-space");
  await using pair = await channelPair();
  const [received, sent] = await Promise.allSettled([
    receiveFileTo(pair.server, path.join(dir.path, name), content.length),
    sendStream(pair.client, new BytesReader(content), content.length),
  ]);
  assert.equal(sent.status, "fulfilled");
  assert.equal(received.status, "fulfilled", String((received as { reason?: unknown }).reason));
  assert.equal(received.value.size, content.length);
  assert.deepEqual(await Deno.readFile(path.join(dir.path, name)), content);
  assert.deepEqual(await listDir(dir.path), [name], "no temporary file is left");
});

Deno.test("receiveFileTo() reports a local write failure as a TransferError and keeps nothing", async () => {
  await using dir = await tempDir();
  // The "directory" is a regular file: creating the temporary file fails (ENOTDIR),
  // as a full disk (ENOSPC) fails a write: errors Deno does not give a class of its own.
  const notADir = path.join(dir.path, "file");
  await Deno.writeTextFile(notADir, "x");
  const content = new TextEncoder().encode("k-space");
  await using pair = await channelPair();
  const sent = sendStream(pair.client, new BytesReader(content), content.length).catch((e) => e);
  await assert.rejects(
    receiveFileTo(pair.server, path.join(notADir, "P00001.7"), content.length),
    (error: unknown) =>
      error instanceof TransferError &&
      error.message.startsWith(`cannot write ${path.join(notADir, "P00001.7")}: `),
  );
  pair.server.abort();
  await sent;
  assert.deepEqual(await listDir(dir.path), ["file"]);
});

for (const how of ["a FIFO", "a symbolic link to a FIFO"]) {
  Deno.test(`openForSending() with noFollow refuses ${how} without opening it`, async () => {
    await using dir = await tempDir();
    const fifo = path.join(dir.path, "fifo");
    const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.ok(made.success, "mkfifo");
    const target = how === "a FIFO" ? fifo : path.join(dir.path, "link.dcm");
    if (target !== fifo) await Deno.symlink(fifo, target);
    // Opening a FIFO to read waits for a writer: a refusal must come without an open.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const opening = openForSending(target, { noFollow: true });
    const outcome = await Promise.race([
      opening.then(() => "opened", (error) => error),
      new Promise<string>((resolve) => (timer = setTimeout(resolve, 2000, "blocked"))),
    ]);
    clearTimeout(timer);
    if (outcome === "blocked") {
      // Let the pending open finish (a writer appears), then fail.
      const writer = await Deno.open(fifo, { write: true });
      writer.close();
      await opening.catch(() => {});
    }
    assert.ok(
      outcome instanceof TransferError && /is not a regular file/.test(outcome.message),
      `refused at once, got ${outcome}`,
    );
  });
}

/** A connection that writes at most 4 KiB per call and returns a timer tick later: a slow link. */
function slowWriter(end: Duplex): Duplex {
  return {
    read: (buffer) => end.read(buffer),
    write: async (bytes) => {
      const written = await end.write(bytes.subarray(0, 4096));
      await new Promise((resolve) => setTimeout(resolve, 0));
      return written;
    },
    close: () => end.close(),
  };
}

for (const change of ["grew", "became unreadable"]) {
  Deno.test(`sendStream() of a file that ${change} while it was sent ends at a record boundary`, async () => {
    const key = await testKey();
    const [clientEnd, serverEnd] = duplexPair();
    const chunkSize = 64 * 1024;
    const [client, server] = await Promise.all([
      Channel.connect(clientEnd, { sharedKey: key.raw, keyId: key.id, idleTimeoutMs: 0 }),
      Channel.accept(slowWriter(serverEnd), {
        keys: new Map([[key.id, key.raw]]),
        idleTimeoutMs: 0,
        chunkSize,
      }),
    ]);
    try {
      const announced = 8 * chunkSize;
      const bytes = randomBytes(announced + 1);
      const reader = new BytesReader(bytes);
      // Unreadable: four whole chunks, then the disk fails.
      let reads = 0;
      const source = change === "grew" ? reader : {
        read: (buffer: Uint8Array<ArrayBuffer>) =>
          ++reads > 4 ? Promise.reject(new Error("Input/output error")) : reader.read(buffer),
      };
      await assert.rejects(
        sendStream(server, source, announced),
        (error: unknown) =>
          error instanceof TransferError &&
          (change === "grew" ? /grew/ : /cannot read the file being sent: Input\/output error/)
            .test(error.message),
      );
      // The server hangs up at once, as a session does after a failed delivery.
      server.abort();
      // The client gets whole DATA records, then a close at a frame boundary: never a
      // frame cut short (a ProtocolError).
      let received = 0;
      const failure = await (async () => {
        while (true) {
          const incoming = await client.receive();
          assert.equal(incoming.type, "data");
          received += (incoming as { bytes: Uint8Array }).bytes.length;
        }
      })().catch((error) => error);
      assert.ok(
        failure instanceof ConnectionError &&
          /closed the connection without ending the session/.test(failure.message),
        `a clean close, got ${failure}`,
      );
      assert.equal(received % chunkSize, 0, "only whole records arrived");
      assert.ok(received <= announced, "never more than announced");
    } finally {
      client.abort();
      server.abort();
    }
  });
}
