/**
 * Tests for lib/wire/channel.ts over real 127.0.0.1 sockets: control messages, files at
 * the chunk boundaries and a large one, ending (with and without GOODBYE), the key
 * ratchet, idle timeout and keepalives, clock-skew reporting.
 */
import { receiveStream, sendStream } from "../../lib/wire/transfer.ts";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  Channel,
  type ChannelOptions,
  DEFAULT_CHUNK_SIZE,
  MAX_KEEPALIVE_MS,
} from "../../lib/wire/channel.ts";
import { MAX_MESSAGE_SIZE } from "../../lib/wire/record.ts";
import { ConnectionError, ProtocolError, TimeoutError, TransferError } from "../../lib/errors.ts";
import type { ByteReader, ByteWriter } from "../../lib/wire/frame.ts";
import { channelPair, socketPair, testKey } from "../support/channel_pair.ts";
import { BytesReader, duplexPair, randomBytes } from "../support/memory_duplex.ts";
import { ManualTimers } from "../support/manual_timers.ts";

/** A sink that hashes and counts, and keeps the bytes when asked to. */
class HashingSink implements ByteWriter {
  #hash = createHash("sha256");
  #waiter: { size: number; resolve: () => void } | undefined;
  size = 0;
  chunks: Uint8Array<ArrayBuffer>[] | undefined;

  constructor(keep = false) {
    if (keep) this.chunks = [];
  }

  write(bytes: Uint8Array): Promise<number> {
    this.#hash.update(bytes);
    this.size += bytes.length;
    this.chunks?.push(bytes.slice());
    if (this.#waiter && this.size >= this.#waiter.size) this.#waiter.resolve();
    return Promise.resolve(bytes.length);
  }

  /** Resolves once at least `size` bytes were written. */
  holds(size: number): Promise<void> {
    if (this.size >= size) return Promise.resolve();
    return new Promise((resolve) => (this.#waiter = { size, resolve }));
  }

  digest(): string {
    return this.#hash.digest("hex");
  }
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

Deno.test("Channel round-trips control messages in both directions, in order", async () => {
  await using pair = await channelPair();
  const messages = [
    { type: "get_server_status" },
    { type: "job_progress", job_id: "j1", text: "Grüße, 世界 🚀", percent: 42.5 },
    { nested: { list: [1, "two", null, true], empty: {} } },
    { big: "x".repeat(100_000) },
  ];
  for (const message of messages) {
    await pair.client.send(message);
    assert.deepEqual(await pair.server.receive(), { type: "message", message });
    await pair.server.send(message);
    assert.deepEqual(await pair.client.receive(), { type: "message", message });
  }
});

Deno.test("Channel keeps 200 pipelined messages in order while both sides send at once", async () => {
  await using pair = await channelPair();
  const count = 200;
  const sendAll = (channel: Channel, from: string) =>
    Promise.all(Array.from({ length: count }, (_, i) => channel.send({ from, i })));
  const receiveAll = async (channel: Channel) => {
    const got: unknown[] = [];
    for (let i = 0; i < count; i++) {
      got.push((await channel.receive() as { message: unknown }).message);
    }
    return got;
  };
  const [, , atServer, atClient] = await Promise.all([
    sendAll(pair.client, "client"),
    sendAll(pair.server, "server"),
    receiveAll(pair.server),
    receiveAll(pair.client),
  ]);
  assert.deepEqual(atServer, Array.from({ length: count }, (_, i) => ({ from: "client", i })));
  assert.deepEqual(atClient, Array.from({ length: count }, (_, i) => ({ from: "server", i })));
});

Deno.test("Channel.send refuses a message above MAX_MESSAGE_SIZE and the session goes on", async () => {
  await using pair = await channelPair();
  await assert.rejects(
    pair.client.send({ blob: "x".repeat(MAX_MESSAGE_SIZE) }),
    RangeError,
  );
  await pair.client.send({ still: "fine" });
  assert.deepEqual(await pair.server.receive(), { type: "message", message: { still: "fine" } });
});

const CHUNK = DEFAULT_CHUNK_SIZE;
for (const size of [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5]) {
  Deno.test(`Channel transfers a file of ${size} bytes intact`, async () => {
    await using pair = await channelPair();
    const data = randomBytes(size);
    const sink = new HashingSink(true);
    const progress: number[] = [];
    const [sent, received] = await Promise.all([
      sendStream(pair.client, new BytesReader(data, 300_000), size, (n) => progress.push(n)),
      receiveStream(pair.server, sink, size),
    ]);
    const expected = sha256(data);
    assert.deepEqual(sent, { size, sha256: expected });
    assert.deepEqual(received, { size, sha256: expected });
    assert.equal(sink.size, size);
    assert.deepEqual(new Uint8Array(await new Blob(sink.chunks!).arrayBuffer()), data);
    if (size > 0) assert.equal(progress.at(-1), size);
    // The session is still usable after the file.
    await pair.server.send({ after: "file" });
    assert.deepEqual(await pair.client.receive(), { type: "message", message: { after: "file" } });
  });
}

Deno.test("Channel transfers 64 MiB of random bytes with matching SHA-256 on both sides", async () => {
  await using pair = await channelPair();
  const size = 64 * 1024 * 1024;
  const data = randomBytes(size);
  const sink = new HashingSink();
  const [sent, received] = await Promise.all([
    sendStream(pair.server, new BytesReader(data), size),
    receiveStream(pair.client, sink, size),
  ]);
  const expected = sha256(data);
  assert.equal(sent.sha256, expected);
  assert.equal(received.sha256, expected);
  assert.equal(sink.digest(), expected);
  assert.equal(received.size, size);
});

Deno.test("Channel transfers files across several key ratchets, messages interleaved", async () => {
  await using pair = await channelPair({ recordsPerKey: 3, chunkSize: 256 * 1024 });
  for (const size of [100, 256 * 1024, 5 * 1024 * 1024 + 3]) {
    const data = randomBytes(size);
    const [sent, received] = await Promise.all([
      sendStream(pair.client, new BytesReader(data), size),
      receiveStream(pair.server, new HashingSink(), size),
    ]);
    assert.equal(sent.sha256, sha256(data), `${size}`);
    assert.deepEqual(received, sent);
  }
  await pair.client.send({ small: "after the files" });
  assert.deepEqual(await pair.server.receive(), {
    type: "message",
    message: { small: "after the files" },
  });
});

Deno.test("Channel.receiveFile refuses more bytes than announced", async () => {
  await using pair = await channelPair({ chunkSize: 64 });
  const sending = sendStream(pair.client, new BytesReader(randomBytes(1000)), 1000).catch((e) => e);
  await assert.rejects(
    receiveStream(pair.server, new HashingSink(), 500),
    (error: unknown) =>
      error instanceof TransferError && /more than the announced 500 bytes/.test(error.message),
  );
  pair.server.abort();
  await sending;
});

Deno.test("Channel.receiveFile refuses a file shorter than announced", async () => {
  await using pair = await channelPair();
  const sending = sendStream(pair.client, new BytesReader(randomBytes(100)), 100);
  await assert.rejects(
    receiveStream(pair.server, new HashingSink(), 200),
    (error: unknown) => error instanceof TransferError && /size mismatch/.test(error.message),
  );
  await sending;
});

Deno.test("Channel.sendFile refuses a source that grew or shrank since it was announced", async () => {
  await using pair = await channelPair({ chunkSize: 1000 });
  await assert.rejects(
    sendStream(pair.client, new BytesReader(randomBytes(5000)), 3000),
    (error: unknown) => error instanceof TransferError && /grew/.test(error.message),
  );
  await using second = await channelPair();
  await assert.rejects(
    sendStream(second.client, new BytesReader(randomBytes(10)), 20),
    (error: unknown) =>
      error instanceof TransferError && /announced 20 bytes, read 10/.test(error.message),
  );
});

Deno.test("Channel.receiveFile reports a peer that abandons a file with a message", async () => {
  await using pair = await channelPair();
  await pair.client.send({ type: "error", reason: "disk on fire" });
  await assert.rejects(
    receiveStream(pair.server, new HashingSink(), 10),
    (error: unknown) =>
      error instanceof TransferError &&
      /abandoned the transfer after 0 bytes: disk on fire/.test(error.message),
  );
});

Deno.test("Channel ends cleanly with GOODBYE and its reason", async () => {
  await using pair = await channelPair();
  await pair.client.send({ last: true });
  await pair.client.close("all done");
  assert.ok(pair.client.closed);
  await pair.client.close("again"); // safe to call twice
  assert.deepEqual(await pair.server.receive(), { type: "message", message: { last: true } });
  assert.deepEqual(await pair.server.receive(), { type: "goodbye", reason: "all done" });
  await assert.rejects(pair.server.receive(), /already ended the session/);
  await assert.rejects(pair.client.send({ late: true }), ConnectionError);
});

Deno.test("Channel treats a connection closed at a record boundary without GOODBYE as an error", async () => {
  await using pair = await channelPair();
  await pair.client.send({ first: 1 });
  pair.client.abort();
  assert.deepEqual(await pair.server.receive(), { type: "message", message: { first: 1 } });
  const error = await pair.server.receive().catch((e) => e);
  assert.ok(error instanceof ConnectionError, String(error));
  assert.match(error.message, /closed the connection without ending the session/);
  // And it stays that way.
  await assert.rejects(pair.server.receive(), ConnectionError);
});

Deno.test("Channel never takes a file cut off mid-transfer as complete", async () => {
  await using pair = await channelPair({ chunkSize: 64 * 1024 });
  let reached!: () => void;
  const reachedPromise = new Promise<void>((resolve) => (reached = resolve));
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const data = randomBytes(1024 * 1024);
  let offset = 0;
  // Serves 256 KiB, then stalls until released, then says EOF.
  const source: ByteReader = {
    read: async (buffer) => {
      if (offset >= 256 * 1024) {
        reached();
        await released;
        return null;
      }
      const n = Math.min(buffer.length, 256 * 1024 - offset);
      buffer.set(data.subarray(offset, offset + n));
      offset += n;
      return n;
    },
  };
  const sink = new HashingSink();
  const sending = sendStream(pair.client, source, data.length).catch((e) => e);
  const receiving = receiveStream(pair.server, sink, data.length).catch((e) => e);
  await reachedPromise;
  await sink.holds(256 * 1024);
  pair.client.abort();
  release();
  const error = await receiving;
  assert.ok(error instanceof ConnectionError, String(error));
  assert.ok(!(error instanceof TransferError));
  assert.ok(await sending instanceof Error);
});

Deno.test("Channel with recordsPerKey 2 ratchets through many records and a file", async () => {
  await using pair = await channelPair({ recordsPerKey: 2, chunkSize: 4096 });
  for (let i = 0; i < 50; i++) {
    await pair.client.send({ i });
    await pair.server.send({ echo: i });
  }
  for (let i = 0; i < 50; i++) {
    assert.deepEqual(await pair.server.receive(), { type: "message", message: { i } });
    assert.deepEqual(await pair.client.receive(), { type: "message", message: { echo: i } });
  }
  const data = randomBytes(100_000 + 7);
  const [sent, received] = await Promise.all([
    sendStream(pair.client, new BytesReader(data), data.length),
    receiveStream(pair.server, new HashingSink(), data.length),
  ]);
  assert.equal(received.sha256, sha256(data));
  assert.deepEqual(sent, received);
  await pair.client.close("done");
  assert.deepEqual(await pair.server.receive(), { type: "goodbye", reason: "done" });
});

Deno.test("Channel pipelines correctly with cryptoDepth 1", async () => {
  await using pair = await channelPair({ cryptoDepth: 1, chunkSize: 1000 });
  const data = randomBytes(25_000);
  const [, received] = await Promise.all([
    sendStream(pair.server, new BytesReader(data), data.length),
    receiveStream(pair.client, new HashingSink(), data.length),
  ]);
  assert.equal(received.sha256, sha256(data));
});

const IDLE_MS = 300;

/** Handshaken channels over an in-memory duplex, closed with `await using`. */
async function memoryPair(options: ChannelOptions) {
  const key = await testKey();
  const [clientEnd, serverEnd] = duplexPair();
  const [client, server] = await Promise.all([
    Channel.connect(clientEnd, { ...options, sharedKey: key.raw, keyId: key.id }),
    Channel.accept(serverEnd, { ...options, keys: new Map([[key.id, key.raw]]) }),
  ]);
  return {
    client,
    server,
    [Symbol.asyncDispose]: () => {
      client.abort();
      server.abort();
      return Promise.resolve();
    },
  };
}

Deno.test("Channel idle timeout ends a session when the peer sends nothing", async () => {
  const timers = new ManualTimers();
  // The client has no idle timer and hence sends no keepalives.
  await using pair = await channelPair(
    { idleTimeoutMs: 0, timers },
    { idleTimeoutMs: IDLE_MS, timers },
  );
  const receiving = pair.server.receive().catch((e) => e);
  timers.advance(IDLE_MS - 1);
  assert.ok(!pair.server.closed, "not before the timeout");
  timers.advance(1);
  assert.ok(pair.server.closed);
  const error = await receiving;
  assert.ok(error instanceof TimeoutError, String(error));
  assert.match(error.message, /no data from the peer/);
  // The client sees the connection end without a GOODBYE.
  await assert.rejects(pair.client.receive(), ConnectionError);
});

Deno.test("Channel keepalives hold an idle but live session open past the idle timeout", async () => {
  const timers = new ManualTimers();
  const keepaliveMs = 60;
  // In memory, so that if no PING came the test would end at once (nothing left to run)
  // instead of waiting on a socket for ever.
  await using pair = await memoryPair({ idleTimeoutMs: IDLE_MS, keepaliveMs, timers });
  const atServer = pair.server.receive();
  const atClient = pair.client.receive();
  /** Both ends' idle deadlines run their full length again: each just heard a PING. */
  const bothHeardFromThePeer = () =>
    timers.pending.filter((timer) => timer.every === undefined && timer.in === IDLE_MS)
      .length === 2;
  const eitherClosed = () => pair.server.closed || pair.client.closed;
  for (let elapsed = 0; elapsed < 4 * IDLE_MS; elapsed += keepaliveMs) {
    timers.advance(keepaliveMs);
    await timers.until(() => bothHeardFromThePeer() || eitherClosed());
    assert.ok(!eitherClosed(), `closed after ${timers.now()} ms`);
  }
  await pair.client.send({ still: "here" });
  await pair.server.send({ me: "too" });
  assert.deepEqual(await atServer, { type: "message", message: { still: "here" } });
  assert.deepEqual(await atClient, { type: "message", message: { me: "too" } });
});

/**
 * The keepalive interval each end of a pair made with `options` chose: the periods of
 * the repeating timers it started (a channel starts no other), read right after the
 * handshake.
 */
async function keepaliveIntervals(options: ChannelOptions): Promise<number[]> {
  const timers = new ManualTimers();
  await using _pair = await channelPair({ ...options, timers });
  return timers.pending.flatMap((timer) => timer.every === undefined ? [] : [timer.every]);
}

const KEEPALIVES: [ChannelOptions, number][] = [
  [{ idleTimeoutMs: 300_000 }, MAX_KEEPALIVE_MS],
  [{}, MAX_KEEPALIVE_MS],
  [{ idleTimeoutMs: 3_600_000 }, MAX_KEEPALIVE_MS],
  [{ idleTimeoutMs: 60_000 }, 20_000],
  [{ idleTimeoutMs: 30_000 }, 10_000],
  [{ idleTimeoutMs: 1_500 }, 1_000],
  [{ idleTimeoutMs: 300_000, keepaliveMs: 50_000 }, 50_000],
];

for (const [options, expected] of KEEPALIVES) {
  Deno.test(`Channel with ${JSON.stringify(options)} checks for silence and sends a PING every ${expected} ms`, async () => {
    assert.equal(MAX_KEEPALIVE_MS, 20_000);
    assert.deepEqual(await keepaliveIntervals(options), [expected, expected], "both ends");
  });
}

Deno.test("Channel with IDLE_TIMEOUT 0 sends no keepalives", async () => {
  assert.deepEqual(await keepaliveIntervals({ idleTimeoutMs: 0 }), []);
});

Deno.test("Channel reports a large clock difference once", async () => {
  const skews: number[] = [];
  await using pair = await channelPair(
    { now: () => Math.floor(Date.now() / 1000) + 1000 },
    { onClockSkew: (seconds) => skews.push(seconds) },
  );
  await pair.client.send({ a: 1 });
  await pair.client.send({ b: 2 });
  await pair.server.receive();
  await pair.server.receive();
  assert.equal(skews.length, 1);
  assert.ok(Math.abs(skews[0] - 1000) <= 2, String(skews[0]));
});

Deno.test("Channel does not report a small clock difference", async () => {
  const skews: number[] = [];
  await using pair = await channelPair(
    { now: () => Math.floor(Date.now() / 1000) + 30 },
    { onClockSkew: (seconds) => skews.push(seconds) },
  );
  await pair.client.send({ a: 1 });
  await pair.server.receive();
  assert.deepEqual(skews, []);
});

Deno.test("Channel.receive on a session the peer broke keeps failing with ProtocolError", async () => {
  await using sockets = await socketPair();
  const key = await testKey();
  const accepting = Channel.accept(sockets.server, { keys: new Map([[key.id, key.raw]]) });
  const client = await Channel.connect(sockets.client, { sharedKey: key.raw, keyId: key.id });
  const server = await accepting;
  // A well-framed record that is not a token, written straight onto the client's socket.
  await sockets.client.write(new Uint8Array([0, 0, 0, 100, ...new Uint8Array(100)]));
  const first = await server.receive().catch((e) => e);
  assert.ok(first instanceof ProtocolError, String(first));
  await assert.rejects(server.receive(), ProtocolError);
  client.abort();
  server.abort();
});
