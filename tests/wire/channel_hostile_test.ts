/**
 * Hostile-network tests for lib/wire/channel.ts: a man in the middle (tests/support/proxy.ts)
 * that duplicates, drops, swaps, reflects, splices and truncates records or flips one
 * byte at every offset of a session; forged-but-authentic records of every bad kind
 * (tests/support/raw_peer.ts), so each failure class is seen on its own; and hostile
 * length prefixes before and after authentication, with memory kept in check.
 */
import { receiveStream, sendStream } from "../../lib/wire/transfer.ts";
import assert from "node:assert/strict";
import { Channel, type ChannelOptions } from "../../lib/wire/channel.ts";
import { MAX_FRAME_SIZE, MAX_MESSAGE_SIZE, RecordType } from "../../lib/wire/record.ts";
import { ConnectionError, HandshakeError, ProtocolError } from "../../lib/errors.ts";
import { writeAll } from "../../lib/wire/frame.ts";
import { HandshakeRefused, MAX_HANDSHAKE_FRAME_SIZE } from "../../lib/wire/handshake.ts";
import { socketPair, testKey } from "../support/channel_pair.ts";
import { BytesReader, concatBytes, randomBytes } from "../support/memory_duplex.ts";
import { forward, type FrameRule, type Proxy, reflect, startProxy } from "../support/proxy.ts";
import { rawSession, recordBytes } from "../support/raw_peer.ts";
import { ManualTimers } from "../support/manual_timers.ts";

const encoder = new TextEncoder();

type Key = Awaited<ReturnType<typeof testKey>>;

/** Client and server channels talking through a proxy. */
async function proxiedPair(proxy: Proxy, options: ChannelOptions = {}, key?: Key) {
  key ??= await testKey();
  const [client, server] = await Promise.all([
    Channel.connect(proxy.client, { ...options, sharedKey: key.raw, keyId: key.id }),
    Channel.accept(proxy.server, { ...options, keys: new Map([[key.id, key.raw]]) }),
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

// Frames toServer: 0 ClientHello, 1 ClientFinish, 2.. records seq 0..
// Frames toClient: 0 ServerHello, 1.. records seq 0..
const FIRST_CLIENT_RECORD = 2;
const FIRST_SERVER_RECORD = 1;

function onlyToServer(
  rule: (index: number, bytes: Uint8Array<ArrayBuffer>) => ReturnType<FrameRule>,
): FrameRule {
  return (frame) => frame.direction === "toServer" ? rule(frame.index, frame.bytes) : undefined;
}

async function expectProtocolError(promise: Promise<unknown>, pattern: RegExp): Promise<void> {
  const error = await promise.then(
    (value) => assert.fail(`expected a ProtocolError, got ${JSON.stringify(value)}`),
    (e) => e,
  );
  assert.ok(error instanceof ProtocolError, String(error));
  assert.match(error.message, pattern);
}

Deno.test("a duplicated record ends the session with a ProtocolError after the original", async () => {
  await using proxy = await startProxy({
    onFrame: onlyToServer((index, bytes) =>
      index === FIRST_CLIENT_RECORD ? [forward(bytes), forward(bytes)] : undefined
    ),
  });
  await using pair = await proxiedPair(proxy);
  await pair.client.send({ n: 1 });
  await pair.client.send({ n: 2 });
  assert.deepEqual(await pair.server.receive(), { type: "message", message: { n: 1 } });
  await expectProtocolError(pair.server.receive(), /out-of-sequence record: expected 1, got 0/);
  await assert.rejects(pair.server.receive(), ProtocolError, "and the session stays failed");
});

Deno.test("a dropped record ends the session with a ProtocolError", async () => {
  await using proxy = await startProxy({
    onFrame: onlyToServer((index) => index === FIRST_CLIENT_RECORD ? [] : undefined),
  });
  await using pair = await proxiedPair(proxy);
  await pair.client.send({ n: 1 });
  await pair.client.send({ n: 2 });
  await expectProtocolError(pair.server.receive(), /expected 0, got 1/);
});

Deno.test("two swapped records end the session with a ProtocolError", async () => {
  let held: Uint8Array<ArrayBuffer> | undefined;
  await using proxy = await startProxy({
    onFrame: onlyToServer((index, bytes) => {
      if (index === FIRST_CLIENT_RECORD) {
        held = bytes;
        return [];
      }
      if (index === FIRST_CLIENT_RECORD + 1) return [forward(bytes), forward(held!)];
      return undefined;
    }),
  });
  await using pair = await proxiedPair(proxy);
  await pair.client.send({ n: 1 });
  await pair.client.send({ n: 2 });
  await expectProtocolError(pair.server.receive(), /expected 0, got 1/);
});

Deno.test("a client record reflected back to the client fails authentication there", async () => {
  await using proxy = await startProxy({
    onFrame: onlyToServer((index, bytes) =>
      index === FIRST_CLIENT_RECORD ? [reflect(bytes)] : undefined
    ),
  });
  await using pair = await proxiedPair(proxy);
  await pair.client.send({ n: 1 });
  await expectProtocolError(pair.client.receive(), /record 0 failed authentication/);
});

Deno.test("a server record reflected back to the server fails authentication there", async () => {
  await using proxy = await startProxy({
    onFrame: (frame) =>
      frame.direction === "toClient" && frame.index === FIRST_SERVER_RECORD
        ? [reflect(frame.bytes)]
        : undefined,
  });
  await using pair = await proxiedPair(proxy);
  await pair.server.send({ n: 1 });
  await expectProtocolError(pair.server.receive(), /record 0 failed authentication/);
});

Deno.test("a client hello reflected back to the client is refused", async () => {
  await using proxy = await startProxy({
    onFrame: onlyToServer((index, bytes) => index === 0 ? [reflect(bytes)] : undefined),
  });
  const key = await testKey();
  const error = await Channel.connect(proxy.client, {
    sharedKey: key.raw,
    keyId: key.id,
    handshakeTimeoutMs: 2000,
  }).catch((e) => e);
  assert.ok(error instanceof ProtocolError, String(error));
  assert.match(error.message, /malformed/);
});

Deno.test("a record spliced in from another session with the same key fails authentication", async () => {
  const key = await testKey();
  // Session A: record its first client record.
  let stolen: Uint8Array<ArrayBuffer> | undefined;
  {
    await using proxy = await startProxy({
      onFrame: onlyToServer((index, bytes) => {
        if (index === FIRST_CLIENT_RECORD) stolen = bytes;
        return undefined;
      }),
    });
    await using pair = await proxiedPair(proxy, {}, key);
    await pair.client.send({ command: "the original" });
    assert.deepEqual(await pair.server.receive(), {
      type: "message",
      message: { command: "the original" },
    });
  }
  assert.ok(stolen);
  // Session B, same SHARED_KEY, same sequence number: the record is put in its place.
  await using proxy = await startProxy({
    onFrame: onlyToServer((index) =>
      index === FIRST_CLIENT_RECORD ? [forward(stolen!)] : undefined
    ),
  });
  await using pair = await proxiedPair(proxy, {}, key);
  await pair.client.send({ command: "the real one" });
  await expectProtocolError(pair.server.receive(), /record 0 failed authentication/);
});

Deno.test("a record cut short by the connection closing is a ProtocolError", async () => {
  await using proxy = await startProxy({
    onFrame: onlyToServer((index, bytes) =>
      index === FIRST_CLIENT_RECORD ? [forward(bytes.slice(0, 30))] : undefined
    ),
  });
  await using pair = await proxiedPair(proxy);
  await pair.client.send({ n: 1 });
  pair.client.abort();
  await expectProtocolError(pair.server.receive(), /in the middle of a frame \(26 of \d+ bytes\)/);
});

Deno.test("a frame injected between records fails authentication", async () => {
  await using proxy = await startProxy({
    onFrame: onlyToServer((index, bytes) =>
      index === FIRST_CLIENT_RECORD
        ? [forward(concatBytes(new Uint8Array([0, 0, 0, 89]), randomBytes(89))), forward(bytes)]
        : undefined
    ),
  });
  await using pair = await proxiedPair(proxy);
  await pair.client.send({ n: 1 });
  await expectProtocolError(pair.server.receive(), /failed authentication/);
});

Deno.test("a flipped byte at the start, middle or end of a large file record is a ProtocolError", async () => {
  for (const where of ["start", "middle", "end"] as const) {
    await using proxy = await startProxy({
      onFrame: onlyToServer((index, bytes) => {
        if (index !== FIRST_CLIENT_RECORD) return undefined;
        const changed = bytes.slice();
        const at = where === "start"
          ? 4
          : where === "middle"
          ? changed.length >> 1
          : changed.length - 1;
        changed[at] ^= 0x40;
        return [forward(changed)];
      }),
    });
    await using pair = await proxiedPair(proxy, { chunkSize: 128 * 1024 });
    const data = randomBytes(300 * 1024);
    const sending = sendStream(pair.client, new BytesReader(data), data.length).catch((e) => e);
    const error = await receiveStream(pair.server, {
      write: (b: Uint8Array) => Promise.resolve(b.length),
    }, data.length).catch((e) => e);
    assert.ok(error instanceof ProtocolError, `${where}: ${error}`);
    assert.match(error.message, /record 0 failed authentication/);
    pair.client.abort();
    await sending;
  }
});

// ---------------------------------------------------------------------------
// One byte flipped at every offset of a short session.

/**
 * A flipped length prefix can leave both ends waiting for bytes that never come; the
 * deadlines end such a session (a TimeoutError is one of the accepted outcomes, and
 * nothing here is timed). The clean run's clock never moves, so however slow the
 * machine, its deadlines cannot fire.
 */
function flipOptions(flip: unknown): ChannelOptions {
  const options = { handshakeTimeoutMs: 500, idleTimeoutMs: 500 };
  return flip ? options : { ...options, timers: new ManualTimers() };
}
const REQUEST = { type: "get_server_status", note: "flip me" };
const REPLY = { type: "server_status_response", version: "1.0.0", uptime_seconds: 5 };

interface RunOutcome {
  serverGotRequest: boolean;
  serverGotGoodbye: boolean;
  clientGotReply: boolean;
  errors: unknown[];
}

/**
 * Client: send REQUEST, read REPLY, send GOODBYE. Server: read REQUEST, send REPLY,
 * read GOODBYE. Every byte on the wire is read and checked by someone.
 */
async function flipRun(key: Key, flip?: { direction: string; offset: number }) {
  const outcome: RunOutcome = {
    serverGotRequest: false,
    serverGotGoodbye: false,
    clientGotReply: false,
    errors: [],
  };
  const options = flipOptions(flip);
  await using proxy = await startProxy({
    onBytes: (direction, offset, chunk) => {
      if (flip && direction === flip.direction) {
        const at = flip.offset - offset;
        if (at >= 0 && at < chunk.length) chunk[at] ^= 0x01;
      }
    },
  });
  const clientRun = (async () => {
    const client = await Channel.connect(proxy.client, {
      ...options,
      sharedKey: key.raw,
      keyId: key.id,
    });
    try {
      await client.send(REQUEST);
      const reply = await client.receive();
      assert.deepEqual(reply, { type: "message", message: REPLY }, "a wrong reply was accepted");
      outcome.clientGotReply = true;
      await client.close();
    } finally {
      client.abort();
    }
  })().catch((error) => {
    outcome.errors.push(error);
    try {
      proxy.client.close();
    } catch { /* closed */ }
  });
  const serverRun = (async () => {
    const server = await Channel.accept(proxy.server, {
      ...options,
      keys: new Map([[key.id, key.raw]]),
    });
    try {
      const request = await server.receive();
      assert.deepEqual(
        request,
        { type: "message", message: REQUEST },
        "a wrong request was accepted",
      );
      outcome.serverGotRequest = true;
      await server.send(REPLY);
      const goodbye = await server.receive();
      assert.equal(goodbye.type, "goodbye", "something other than GOODBYE was accepted");
      outcome.serverGotGoodbye = true;
    } finally {
      server.abort();
    }
  })().catch((error) => {
    outcome.errors.push(error);
    try {
      proxy.server.close();
    } catch { /* closed */ }
  });
  await Promise.all([clientRun, serverRun]);
  return { outcome, bytes: { ...proxy.bytes } };
}

Deno.test("one byte flipped at any offset of a session is always caught, never accepted", async () => {
  const key = await testKey();
  const clean = await flipRun(key);
  assert.deepEqual(clean.outcome.errors, []);
  assert.ok(clean.outcome.serverGotGoodbye && clean.outcome.clientGotReply);
  const runs: { direction: string; offset: number }[] = [];
  for (const direction of ["toServer", "toClient"] as const) {
    for (let offset = 0; offset < clean.bytes[direction]; offset++) {
      runs.push({ direction, offset });
    }
  }
  assert.ok(runs.length > 300, `${runs.length} offsets`);
  const kinds = new Map<string, number>();
  const BATCH = 24;
  for (let i = 0; i < runs.length; i += BATCH) {
    const batch = runs.slice(i, i + BATCH);
    const results = await Promise.all(batch.map((flip) => flipRun(key, flip)));
    for (const [j, { outcome }] of results.entries()) {
      const where = `${batch[j].direction} offset ${batch[j].offset}`;
      const complete = outcome.serverGotRequest && outcome.serverGotGoodbye &&
        outcome.clientGotReply;
      assert.ok(!complete, `${where}: the flipped session went through as if nothing happened`);
      assert.ok(outcome.errors.length > 0, where);
      for (const error of outcome.errors) {
        // Assertion failures mean a wrong message was accepted: never allowed.
        assert.ok(!(error instanceof assert.AssertionError), `${where}: ${error}`);
        assert.ok(error instanceof Error, `${where}: ${error}`);
        const kind = error instanceof ConnectionError ? error.constructor.name : `other ${error}`;
        kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
      }
    }
  }
  // Every failure is one of the documented kinds.
  for (const kind of kinds.keys()) {
    assert.ok(
      [
        "ProtocolError",
        "TruncatedFrameError",
        "HandshakeError",
        "KeyRejectedError",
        "HandshakeRefused",
        "TimeoutError",
        "ConnectionError",
      ]
        .includes(kind),
      `unexpected failure kind ${kind} (${[...kinds].join(", ")})`,
    );
  }
});

// ---------------------------------------------------------------------------
// Forged but authentic records: one failure class each.

const BAD_RECORDS: [string, () => Uint8Array, RegExp][] = [
  ["a record shorter than its header", () => new Uint8Array(5), /shorter than its header/],
  [
    "a record with seq 1 first",
    () => recordBytes(1, RecordType.MESSAGE, encoder.encode("{}")),
    /expected 0, got 1/,
  ],
  [
    "a record with seq 2^64-1",
    () => {
      const record = recordBytes(0, RecordType.MESSAGE, encoder.encode("{}"));
      record.fill(0xff, 0, 8);
      return record;
    },
    /expected 0, got 18446744073709551615/,
  ],
  ["an unknown record type", () => recordBytes(0, 0x09), /unknown record type 9/],
  ["record type 0", () => recordBytes(0, 0), /unknown record type 0/],
  [
    "a MESSAGE that is not JSON",
    () => recordBytes(0, RecordType.MESSAGE, encoder.encode("{nope")),
    /not valid UTF-8 JSON/,
  ],
  [
    "a MESSAGE that is not UTF-8",
    () => recordBytes(0, RecordType.MESSAGE, new Uint8Array([0x22, 0xff, 0x22])),
    /not valid UTF-8 JSON/,
  ],
  [
    "a MESSAGE above MAX_MESSAGE_SIZE",
    () =>
      recordBytes(
        0,
        RecordType.MESSAGE,
        encoder.encode(JSON.stringify("x".repeat(MAX_MESSAGE_SIZE))),
      ),
    /control message of \d+ bytes/,
  ],
  [
    "a PING with a payload",
    () => recordBytes(0, RecordType.PING, new Uint8Array([1])),
    /PING record with a payload/,
  ],
  [
    "a FILE_END of the wrong length",
    () => recordBytes(0, RecordType.FILE_END, new Uint8Array(39)),
    /FILE_END record has the wrong length/,
  ],
];

for (const [what, make, pattern] of BAD_RECORDS) {
  Deno.test(`Channel.receive refuses ${what}, even when properly encrypted`, async () => {
    await using session = await rawSession();
    await session.sendRecord(0, make());
    await expectProtocolError(session.server.receive(), pattern);
    await assert.rejects(session.server.receive(), ProtocolError);
  });
}

Deno.test("Channel.receive consumes an empty PING and delivers what follows", async () => {
  await using session = await rawSession();
  await session.sendRecord(0, recordBytes(0, RecordType.PING));
  await session.sendRecord(1, recordBytes(1, RecordType.MESSAGE, encoder.encode('{"a":1}')));
  assert.deepEqual(await session.server.receive(), { type: "message", message: { a: 1 } });
});

Deno.test("Channel.receive accepts a GOODBYE whose reason is not UTF-8 and refuses what follows", async () => {
  await using session = await rawSession();
  await session.sendRecord(0, recordBytes(0, RecordType.GOODBYE, new Uint8Array([0xff, 0xfe])));
  await session.sendRecord(1, recordBytes(1, RecordType.MESSAGE, encoder.encode("{}")));
  assert.deepEqual(await session.server.receive(), { type: "goodbye", reason: "" });
  await assert.rejects(session.server.receive(), /already ended the session/);
});

Deno.test("Channel.receive refuses a record encrypted under the next epoch's key", async () => {
  await using session = await rawSession({ recordsPerKey: 4 });
  // Encrypt seq 0 with the epoch-1 key (as if the sender ratcheted early).
  const { fernet: early } = await session.sendKeys.keyFor(4);
  const token = await early.encrypt(recordBytes(0, RecordType.MESSAGE, encoder.encode("{}")));
  const frame = new Uint8Array(4 + token.length);
  new DataView(frame.buffer).setUint32(0, token.length);
  frame.set(token, 4);
  await writeAll(session.conn, frame);
  await expectProtocolError(session.server.receive(), /record 0 failed authentication/);
});

Deno.test("a server channel reads a FILE_END size beyond 2^53 without trusting it", async () => {
  await using session = await rawSession();
  const end = new Uint8Array(40);
  end.fill(0xff, 0, 8);
  await session.sendRecord(0, recordBytes(0, RecordType.FILE_END, end));
  const error = await receiveStream(session.server, { write: (b) => Promise.resolve(b.length) }, 10)
    .catch((e) => e);
  assert.ok(error instanceof Error && /size mismatch/.test(error.message), String(error));
});

// ---------------------------------------------------------------------------
// Hostile length prefixes.

function header(length: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setUint32(0, length);
  return bytes;
}

/** The prefix, plus a body when the length is small enough to send one. */
function hostileFrame(length: number): Uint8Array<ArrayBuffer> {
  return length <= 1024 ? concatBytes(header(length), randomBytes(length)) : header(length);
}

function lengthsFor(limit: number): number[] {
  return [0, 1, 72, limit + 1, 2 ** 31, 2 ** 32 - 1];
}

Deno.test("hostile length prefixes before authentication are refused and cost no memory", async () => {
  const key = await testKey();
  const keys = new Map([[key.id, key.raw]]);
  const limit = MAX_HANDSHAKE_FRAME_SIZE;
  const before = Deno.memoryUsage().rss;
  for (let round = 0; round < 10; round++) {
    for (const length of lengthsFor(limit)) {
      await using sockets = await socketPair();
      const accepting = Channel.accept(sockets.server, { keys, handshakeTimeoutMs: 2000 })
        .catch((e) => e);
      await writeAll(sockets.client, hostileFrame(length));
      const error = await accepting;
      if (length === 0 || length > limit) {
        assert.ok(error instanceof ProtocolError, `${length}: ${error}`);
        assert.match(error.message, /outside the allowed range/);
      } else {
        // In range: the frame is read, and its content is not a hello.
        assert.ok(error instanceof HandshakeRefused, `${length}: ${error}`);
        assert.match(error.message, /bad magic/);
      }
    }
  }
  // A reader that trusted the prefix would allocate 2 GiB and 4 GiB here; what the
  // sessions themselves leave for the garbage collector varies with the load of the
  // machine (up to ~100 MB seen under the full parallel suite), so the bound sits between.
  const growth = Deno.memoryUsage().rss - before;
  assert.ok(growth < 512 * 1024 * 1024, `rss grew by ${growth} bytes`);
});

Deno.test("hostile length prefixes after authentication are ProtocolErrors and cost no memory", async () => {
  const before = Deno.memoryUsage().rss;
  for (let round = 0; round < 5; round++) {
    for (const length of lengthsFor(MAX_FRAME_SIZE)) {
      await using session = await rawSession();
      await writeAll(session.conn, hostileFrame(length));
      const error = await session.server.receive().catch((e) => e);
      assert.ok(error instanceof ProtocolError, `${length}: ${error}`);
      if (length === 0 || length > MAX_FRAME_SIZE) {
        assert.match(error.message, /outside the allowed range/);
      } else {
        assert.match(error.message, /record 0 failed authentication \(.*too short/);
      }
    }
  }
  // A reader that trusted the prefix would allocate 2 GiB and 4 GiB here; what the
  // sessions themselves leave for the garbage collector varies with the load of the
  // machine (up to ~100 MB seen under the full parallel suite), so the bound sits between.
  const growth = Deno.memoryUsage().rss - before;
  assert.ok(growth < 512 * 1024 * 1024, `rss grew by ${growth} bytes`);
});

Deno.test("a wrong-key client through the proxy never sees a single record", async () => {
  await using proxy = await startProxy();
  const serverKey = await testKey();
  const clientKey = await testKey();
  const [client, server] = await Promise.all([
    Channel.connect(proxy.client, { sharedKey: clientKey.raw, keyId: clientKey.id })
      .catch((e) => e),
    Channel.accept(proxy.server, { keys: new Map([[serverKey.id, serverKey.raw]]) })
      .catch((e) => e),
  ]);
  assert.ok(client instanceof HandshakeError);
  assert.ok(server instanceof HandshakeRefused);
  proxy.client.close();
  proxy.server.close();
  await proxy.done;
  assert.equal(proxy.frames.toClient.length, 1, "only the refusal");
  assert.equal(proxy.frames.toServer.length, 1, "only the hello");
});
