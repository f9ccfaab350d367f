/**
 * Tests for lib/wire/handshake.ts (and the handshake deadline in lib/wire/channel.ts): success
 * and key agreement, wrong keys, key rotation, version mismatch, garbage, replay,
 * tampering in the middle, and silent or slow peers. Over in-memory streams.
 */
import assert from "node:assert/strict";
import { Channel, type Duplex } from "../../lib/wire/channel.ts";
import { ConnectionError, HandshakeError, ProtocolError, TimeoutError } from "../../lib/errors.ts";
import { encodeFrame, FrameReader, writeAll } from "../../lib/wire/frame.ts";
import {
  clientHandshake,
  encodeRefusal,
  type HandshakeIo,
  HandshakeRefused,
  HelloType,
  MAGIC,
  MAX_HANDSHAKE_FRAME_SIZE,
  PROTOCOL_VERSION,
  RefusalCode,
  serverHandshake,
  type SessionKeys,
  SUPPORTED_VERSIONS,
} from "../../lib/wire/handshake.ts";
import {
  concatBytes,
  duplexPair,
  type MemoryDuplex,
  randomBytes,
  seededRandom,
} from "../support/memory_duplex.ts";
import { testKey } from "../support/channel_pair.ts";
import { ManualTimers } from "../support/manual_timers.ts";

type Key = Awaited<ReturnType<typeof testKey>>;

const CLIENT_HELLO_SIZE = 78;
const SERVER_HELLO_SIZE = 110;

/** Frame-level handshake I/O over one end of an in-memory duplex. */
function framedIo(end: MemoryDuplex): HandshakeIo & { sent: Uint8Array[] } {
  const reader = new FrameReader(end, { maxFrameSize: MAX_HANDSHAKE_FRAME_SIZE });
  const sent: Uint8Array[] = [];
  return {
    sent,
    readFrame: () => reader.read(),
    writeFrame: (payload) => {
      sent.push(payload.slice());
      return writeAll(end, encodeFrame(payload));
    },
  };
}

function keyMap(...keys: Key[]): Map<string, Uint8Array<ArrayBuffer>> {
  return new Map(keys.map((key) => [key.id, key.raw]));
}

function closeQuietly(...ends: MemoryDuplex[]): void {
  for (const end of ends) {
    if (!end.isClosed) end.close();
  }
}

/** Settle a promise into its value or its error. */
function settle<T>(promise: Promise<T>): Promise<{ value?: T; error?: unknown }> {
  return promise.then((value) => ({ value }), (error) => ({ error }));
}

/**
 * Run the client against the server over fresh in-memory ends. The client closes its
 * end as soon as it is done (as connectToServer does), so a server waiting for a
 * confirmation that will never come sees EOF instead of hanging.
 */
async function runPair(
  client: (io: HandshakeIo) => Promise<unknown>,
  server: (io: HandshakeIo) => Promise<unknown>,
  wrapClientIo: (io: HandshakeIo) => HandshakeIo = (io) => io,
) {
  const [clientEnd, serverEnd] = duplexPair();
  const clientIo = framedIo(clientEnd);
  const serverIo = framedIo(serverEnd);
  const clientRun = settle(client(wrapClientIo(clientIo))).finally(() => {
    if (!clientEnd.isClosed) clientEnd.close();
  });
  const [clientResult, serverResult] = await Promise.all([clientRun, settle(server(serverIo))]);
  closeQuietly(clientEnd, serverEnd);
  return { client: clientResult, server: serverResult, clientIo, serverIo };
}

Deno.test("handshake succeeds and each side's send key is the other's receive key", async () => {
  const key = await testKey();
  const { client, server } = await runPair(
    (io) => clientHandshake(io, key.raw, key.id),
    (io) => serverHandshake(io, keyMap(key)),
  );
  const c = client.value as Awaited<ReturnType<typeof clientHandshake>>;
  const s = server.value as Awaited<ReturnType<typeof serverHandshake>>;
  assert.ok(c && s, `client ${client.error}, server ${server.error}`);
  assert.deepEqual(c.sendKey, s.receiveKey);
  assert.deepEqual(c.receiveKey, s.sendKey);
  assert.notDeepEqual(c.sendKey, c.receiveKey, "each direction has its own key");
  assert.equal(c.sendKey.length, 32);
  assert.equal(c.keyId, key.id);
  assert.equal(s.keyId, key.id);
  assert.notDeepEqual(c.sendKey, key.raw, "SHARED_KEY itself never encrypts traffic");
});

Deno.test("handshake gives fresh session keys each time with the same SHARED_KEY", async () => {
  const key = await testKey();
  const run = () =>
    runPair(
      (io) => clientHandshake(io, key.raw, key.id),
      (io) => serverHandshake(io, keyMap(key)),
    );
  const first = await run();
  const second = await run();
  const a = first.client.value as { sendKey: Uint8Array };
  const b = second.client.value as { sendKey: Uint8Array };
  assert.notDeepEqual(a.sendKey, b.sendKey);
});

Deno.test("handshake messages have the documented sizes and never carry the key", async () => {
  const key = await testKey();
  const { clientIo, serverIo } = await runPair(
    (io) => clientHandshake(io, key.raw, key.id),
    (io) => serverHandshake(io, keyMap(key)),
  );
  assert.deepEqual(clientIo.sent.map((f) => f.length), [CLIENT_HELLO_SIZE, 38]);
  assert.deepEqual(serverIo.sent.map((f) => f.length), [SERVER_HELLO_SIZE]);
  const everything = concatBytes(...clientIo.sent, ...serverIo.sent);
  for (let i = 0; i + 8 <= everything.length; i++) {
    assert.notDeepEqual(everything.subarray(i, i + 8), key.raw.subarray(0, 8));
  }
});

Deno.test("handshake with a key the server does not hold names the key id and SHARED_KEY", async () => {
  const serverKey = await testKey();
  const clientKey = await testKey();
  const { client, server, serverIo } = await runPair(
    (io) => clientHandshake(io, clientKey.raw, clientKey.id),
    (io) => serverHandshake(io, keyMap(serverKey)),
  );
  const error = client.error as HandshakeError;
  assert.ok(error instanceof HandshakeError, String(error));
  assert.match(error.message, new RegExp(`key id ${clientKey.id}`));
  assert.match(error.hint ?? "", /SHARED_KEY/);
  const refused = server.error as HandshakeRefused;
  assert.ok(refused instanceof HandshakeRefused);
  assert.equal(refused.stage, "hello");
  assert.equal(refused.keyId, clientKey.id);
  // The server answered with a refusal only: no hello, nothing derived from its key.
  assert.equal(serverIo.sent.length, 1);
  assert.equal(serverIo.sent[0][5], HelloType.REFUSAL);
  assert.equal(serverIo.sent[0][6], RefusalCode.KEY_NOT_ACCEPTED);
});

Deno.test("handshake where the key ids match but the keys differ fails on both sides", async () => {
  const serverKey = await testKey();
  const wrong = await testKey();
  const { client, server } = await runPair(
    // A client whose SHARED_KEY was corrupted but still claims the server's key id.
    (io) => clientHandshake(io, wrong.raw, serverKey.id),
    (io) => serverHandshake(io, keyMap(serverKey)),
  );
  const error = client.error as HandshakeError;
  assert.ok(error instanceof HandshakeError, String(error));
  assert.match(error.message, /could not prove it holds SHARED_KEY/);
  assert.match(error.message, new RegExp(`key id ${serverKey.id}`));
  const refused = server.error as HandshakeRefused;
  assert.ok(refused instanceof HandshakeRefused);
  assert.equal(refused.stage, "confirm");
});

Deno.test("handshake accepts either key while the server holds two during a rotation", async () => {
  const oldKey = await testKey();
  const newKey = await testKey();
  for (const key of [oldKey, newKey]) {
    const { client, server } = await runPair(
      (io) => clientHandshake(io, key.raw, key.id),
      (io) => serverHandshake(io, keyMap(oldKey, newKey)),
    );
    assert.equal((client.value as { keyId: string }).keyId, key.id);
    assert.equal((server.value as { keyId: string }).keyId, key.id);
  }
});

for (const version of [0, PROTOCOL_VERSION + 1, 255]) {
  Deno.test(`handshake offering version ${version} is refused with both versions named`, async () => {
    const key = await testKey();
    const { client, server } = await runPair(
      (io) => clientHandshake(io, key.raw, key.id, { version }),
      (io) => serverHandshake(io, keyMap(key)),
    );
    const error = client.error as HandshakeError;
    assert.ok(error instanceof HandshakeError, String(error));
    assert.equal(
      error.message,
      `version mismatch: the server speaks protocol version ${PROTOCOL_VERSION}, this client speaks ${version}`,
    );
    assert.match(
      error.hint ?? "",
      version > PROTOCOL_VERSION
        ? /upgrade recon-server/
        : /same recon version.*speaks versions 1, 2/,
    );
    const refused = server.error as HandshakeRefused;
    assert.ok(refused instanceof HandshakeRefused);
    assert.equal(refused.stage, "hello");
    assert.match(refused.message, new RegExp(`unsupported protocol version ${version}`));
  });
}

for (const version of SUPPORTED_VERSIONS) {
  Deno.test(`a client offering version ${version} gets a session of version ${version}`, async () => {
    const key = await testKey();
    const { client, server } = await runPair(
      (io) => clientHandshake(io, key.raw, key.id, { version }),
      (io) => serverHandshake(io, keyMap(key)),
    );
    assert.equal((client.value as SessionKeys).version, version, String(client.error));
    assert.equal((server.value as SessionKeys).version, version, String(server.error));
    assert.deepEqual(
      (client.value as SessionKeys).sendKey,
      (server.value as SessionKeys).receiveKey,
    );
  });
}

Deno.test("a current client talking to a version 1 server gets a one-line version mismatch", async () => {
  const key = await testKey();
  const { client, server } = await runPair(
    (io) => clientHandshake(io, key.raw, key.id),
    // A version 1 server accepts [1] only.
    (io) => serverHandshake(io, keyMap(key), { versions: [1] }),
  );
  const error = client.error as HandshakeError;
  assert.ok(error instanceof HandshakeError, String(error));
  assert.equal(
    error.message,
    `version mismatch: the server speaks protocol version 1, this client speaks ${PROTOCOL_VERSION}`,
  );
  assert.match(error.hint ?? "", /upgrade recon-server/);
  assert.match(
    String(server.error),
    new RegExp(`unsupported protocol version ${PROTOCOL_VERSION}`),
  );
});

Deno.test("a server limited to version 1 refuses version 2 with the bytes the version 1 code sent", async () => {
  const key = await testKey();
  const [clientEnd, serverEnd] = duplexPair();
  const serverIo = framedIo(serverEnd);
  const hello = concatBytes(MAGIC, new Uint8Array([2, 1]), Uint8Array.fromHex(key.id));
  await writeAll(clientEnd, encodeFrame(concatBytes(hello, randomBytes(64))));
  await settle(serverHandshake(serverIo, keyMap(key), { versions: [1] }));
  closeQuietly(clientEnd, serverEnd);
  const text = "unsupported protocol version 2; this server speaks version 1";
  assert.deepEqual(
    serverIo.sent,
    [concatBytes(MAGIC, new Uint8Array([1, 0x7f, 1]), new TextEncoder().encode(text))],
  );
});

/** Feed raw bytes to a server handshake, then close, and return what it did. */
async function serverFacing(bytes: Uint8Array) {
  const key = await testKey();
  const [peer, serverEnd] = duplexPair();
  const serverIo = framedIo(serverEnd);
  const running = settle(serverHandshake(serverIo, keyMap(key)));
  await writeAll(peer, bytes.slice());
  peer.close();
  const result = await running;
  closeQuietly(serverEnd);
  return { error: result.error, sent: serverIo.sent, key };
}

const GARBAGE: [string, Uint8Array][] = [
  ["an HTTP request", new TextEncoder().encode("GET / HTTP/1.1\r\nHost: recon\r\n\r\n")],
  [
    "a TLS ClientHello",
    new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 0, 0]),
  ],
  ["an SSH banner", new TextEncoder().encode("SSH-2.0-OpenSSH_9.6\r\n")],
];

for (const [what, bytes] of GARBAGE) {
  Deno.test(`serverHandshake refuses ${what} as a bad frame and says nothing back`, async () => {
    const { error, sent } = await serverFacing(bytes);
    assert.ok(error instanceof ProtocolError, String(error));
    assert.match((error as Error).message, /frame length \d+ is outside the allowed range/);
    assert.equal(sent.length, 0);
  });
}

Deno.test("serverHandshake refuses 200 random byte strings without crashing", async () => {
  const random = seededRandom(1234);
  for (let i = 0; i < 200; i++) {
    const length = 1 + Math.floor(random() * 300);
    // Half of them start with a plausible length so the body gets parsed too.
    const bytes = randomBytes(length);
    if (i % 2 === 0 && length > 4) new DataView(bytes.buffer).setUint32(0, length - 4);
    const { error } = await serverFacing(bytes);
    assert.ok(error instanceof ConnectionError, `case ${i}: ${error}`);
  }
});

Deno.test("serverHandshake refuses a well-framed hello without the magic, silently", async () => {
  const { error, sent } = await serverFacing(encodeFrame(randomBytes(CLIENT_HELLO_SIZE)));
  assert.ok(error instanceof HandshakeRefused);
  assert.equal(error.stage, "hello");
  assert.match(error.message, /bad magic/);
  assert.equal(sent.length, 0);
});

function hello(type: number, keyIdHex: string, length = CLIENT_HELLO_SIZE, publicKey?: Uint8Array) {
  const body = new Uint8Array(Math.max(length, CLIENT_HELLO_SIZE));
  body.set(MAGIC);
  body[4] = PROTOCOL_VERSION;
  body[5] = type;
  body.set(Uint8Array.from(keyIdHex.match(/../g)!, (pair) => parseInt(pair, 16)), 6);
  body.set(randomBytes(32), 14);
  body.set(publicKey ?? randomBytes(32), 46);
  return body.subarray(0, length);
}

Deno.test("serverHandshake refuses a hello of the wrong type or length with a refusal", async () => {
  const key = await testKey();
  const cases = [
    hello(HelloType.SERVER_HELLO, key.id),
    hello(HelloType.CLIENT_FINISH, key.id),
    hello(HelloType.CLIENT_HELLO, key.id, CLIENT_HELLO_SIZE - 1),
    concatBytes(hello(HelloType.CLIENT_HELLO, key.id), new Uint8Array([0])),
  ];
  for (const [i, body] of cases.entries()) {
    const { error, sent } = await serverFacing(encodeFrame(body));
    assert.ok(error instanceof HandshakeRefused, `case ${i}: ${error}`);
    assert.match(error.message, /malformed client hello/);
    assert.equal(sent.length, 1);
    assert.equal(sent[0][5], HelloType.REFUSAL);
    assert.equal(sent[0][6], RefusalCode.REFUSED);
  }
});

Deno.test("serverHandshake refuses a low-order X25519 public key", async () => {
  const key = await testKey();
  const [peer, serverEnd] = duplexPair();
  const serverIo = framedIo(serverEnd);
  const running = settle(serverHandshake(serverIo, keyMap(key)));
  await writeAll(peer, encodeFrame(hello(HelloType.CLIENT_HELLO, key.id, 78, new Uint8Array(32))));
  const { error } = await running;
  closeQuietly(peer, serverEnd);
  assert.ok(error instanceof HandshakeRefused, String(error));
  assert.match(error.message, /unusable X25519 public key/);
  assert.equal(serverIo.sent.length, 1, "only a refusal, no server hello");
  assert.equal(serverIo.sent[0][5], HelloType.REFUSAL);
});

Deno.test("serverHandshake refuses a peer that closes before its hello", async () => {
  const { error, sent } = await serverFacing(new Uint8Array(0));
  assert.ok(error instanceof HandshakeRefused);
  assert.match(error.message, /closed before sending a hello/);
  assert.equal(sent.length, 0);
});

Deno.test("a recorded client side replayed to a new server fails at confirmation", async () => {
  const key = await testKey();
  const recorded = await runPair(
    (io) => clientHandshake(io, key.raw, key.id),
    (io) => serverHandshake(io, keyMap(key)),
  );
  assert.ok(recorded.server.value, "the recorded session itself succeeded");
  const frames = [...recorded.clientIo.sent];
  assert.equal(frames.length, 2);

  const written: Uint8Array[] = [];
  const replay: HandshakeIo = {
    readFrame: () => Promise.resolve((frames.shift() as Uint8Array<ArrayBuffer>) ?? null),
    writeFrame: (payload) => {
      written.push(payload);
      return Promise.resolve();
    },
  };
  const error = await serverHandshake(replay, keyMap(key)).catch((e) => e);
  assert.ok(error instanceof HandshakeRefused, String(error));
  assert.equal(error.stage, "confirm");
  assert.equal(error.keyId, key.id);
  // A fresh server hello (new nonce and ephemeral key), then a refusal.
  assert.equal(written.length, 2);
  assert.notDeepEqual(written[0], recorded.serverIo.sent[0]);
  assert.equal(written[1][5], HelloType.REFUSAL);
});

Deno.test("a tampered server hello makes the client say the server could not prove the key", async () => {
  const key = await testKey();
  for (let offset = 0; offset < SERVER_HELLO_SIZE; offset++) {
    const { client, server } = await runPair(
      (io) => clientHandshake(io, key.raw, key.id),
      (io) => serverHandshake(io, keyMap(key)),
      (io) => ({
        writeFrame: io.writeFrame,
        readFrame: async () => {
          const frame = await io.readFrame();
          if (frame) frame[offset] ^= 0x01;
          return frame;
        },
      }),
    );
    const error = client.error as Error;
    assert.ok(error instanceof ConnectionError, `offset ${offset}: ${error}`);
    if (offset < 4) assert.match(error.message, /bad magic/, `offset ${offset}`);
    else if (offset === 5) assert.match(error.message, /malformed/, `offset ${offset}`);
    else if (offset < 46 || offset >= 78) {
      assert.ok(error instanceof HandshakeError, `offset ${offset}: ${error}`);
      assert.match(error.message, /could not prove it holds SHARED_KEY/, `offset ${offset}`);
    } else {
      // A changed X25519 key is either unusable or yields a different secret.
      assert.match(error.message, /could not prove|unusable X25519/, `offset ${offset}`);
    }
    assert.ok(server.error instanceof HandshakeRefused, `offset ${offset}: ${server.error}`);
    assert.equal(server.error.stage, "confirm");
  }
});

Deno.test("a tampered client hello is caught by the client when checking the server's proof", async () => {
  const key = await testKey();
  const { client, server } = await runPair(
    (io) => clientHandshake(io, key.raw, key.id),
    (io) => serverHandshake(io, keyMap(key)),
    (io) => {
      let first = true;
      return {
        readFrame: io.readFrame,
        writeFrame: (payload) => {
          if (first) payload = payload.slice(), payload[20] ^= 0x80; // inside the nonce
          first = false;
          return io.writeFrame(payload);
        },
      };
    },
  );
  assert.ok(client.error instanceof HandshakeError);
  assert.match(client.error.message, /could not prove/);
  assert.ok(server.error instanceof HandshakeRefused);
});

Deno.test("serverHandshake refuses a confirmation with any header byte changed", async () => {
  const key = await testKey();
  for (let offset = 0; offset < 6; offset++) {
    const { client, server } = await runPair(
      (io) => clientHandshake(io, key.raw, key.id),
      (io) => serverHandshake(io, keyMap(key)),
      (io) => {
        let frames = 0;
        return {
          readFrame: io.readFrame,
          writeFrame: (payload) => {
            if (frames++ === 1) {
              payload = payload.slice();
              payload[offset] ^= 0x01;
            }
            return io.writeFrame(payload);
          },
        };
      },
    );
    assert.ok(client.value, "the client finished its part");
    assert.ok(server.error instanceof HandshakeRefused, `offset ${offset}: ${server.error}`);
    assert.equal(server.error.stage, "confirm");
  }
});

Deno.test("clientHandshake rejects a reply that is not a recon handshake message", async () => {
  const key = await testKey();
  const replies: [string, Uint8Array, RegExp][] = [
    ["bad magic", encodeFrame(new TextEncoder().encode("HTTP/1.1 400 Bad Request")), /magic/],
    ["an HTTP response", new TextEncoder().encode("HTTP/1.1 400 Bad Request\r\n\r\n"), /frame/],
    ["a short server hello", encodeFrame(hello(HelloType.SERVER_HELLO, key.id)), /malformed/],
    [
      "a refusal with an unknown code",
      encodeFrame(encodeRefusal(99, "go away")),
      /refused the handshake: go away/,
    ],
    ["a busy refusal", encodeFrame(encodeRefusal(RefusalCode.BUSY, "later")), /busy/],
  ];
  for (const [what, bytes, pattern] of replies) {
    const [clientEnd, peer] = duplexPair();
    const running = settle(clientHandshake(framedIo(clientEnd), key.raw, key.id));
    assert.equal((await framedIo(peer).readFrame())?.length, CLIENT_HELLO_SIZE);
    await writeAll(peer, bytes.slice());
    peer.close();
    const { error } = await running;
    closeQuietly(clientEnd);
    assert.ok(error instanceof ConnectionError, `${what}: ${error}`);
    assert.match((error as Error).message, pattern, what);
  }
});

Deno.test("clientHandshake reports a server that closes before its hello", async () => {
  const key = await testKey();
  const [clientEnd, peer] = duplexPair();
  const running = settle(clientHandshake(framedIo(clientEnd), key.raw, key.id));
  assert.equal((await framedIo(peer).readFrame())?.length, CLIENT_HELLO_SIZE);
  peer.close();
  const { error } = await running;
  closeQuietly(clientEnd);
  assert.ok(error instanceof HandshakeError, String(error));
  assert.match((error as Error).message, /the server closed the connection without answering/);
  assert.match((error as HandshakeError).hint ?? "", /TRUSTEDIPS/);
});

Deno.test("encodeRefusal() never exceeds the handshake frame limit", () => {
  const refusal = encodeRefusal(RefusalCode.REFUSED, "x".repeat(10_000));
  assert.equal(refusal.length, MAX_HANDSHAKE_FRAME_SIZE);
  assert.deepEqual(refusal.subarray(0, 4), MAGIC);
});

const HANDSHAKE_TIMEOUT_MS = 300;

Deno.test("Channel.accept gives up with TimeoutError on a peer that sends nothing", async () => {
  const key = await testKey();
  const [peer, serverEnd] = duplexPair();
  const timers = new ManualTimers();
  const accepting = settle(Channel.accept(serverEnd, {
    keys: keyMap(key),
    handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
    timers,
  }));
  timers.advance(HANDSHAKE_TIMEOUT_MS - 1);
  assert.ok(!serverEnd.isClosed, "not before the deadline");
  timers.advance(1);
  assert.ok(serverEnd.isClosed, "the deadline closed the connection");
  const { error } = await accepting;
  closeQuietly(peer);
  assert.ok(error instanceof TimeoutError, String(error));
  assert.match(error.message, /the handshake did not finish in time/);
});

Deno.test("Channel.connect gives up with TimeoutError on a server that never answers", async () => {
  const key = await testKey();
  const [clientEnd, peer] = duplexPair();
  const timers = new ManualTimers();
  const connecting = settle(Channel.connect(clientEnd, {
    sharedKey: key.raw,
    keyId: key.id,
    handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
    timers,
  }));
  // The hello went out; the server reads it and says nothing.
  assert.equal((await framedIo(peer).readFrame())?.length, CLIENT_HELLO_SIZE);
  timers.advance(HANDSHAKE_TIMEOUT_MS - 1);
  assert.ok(!clientEnd.isClosed, "not before the deadline");
  timers.advance(1);
  const { error } = await connecting;
  closeQuietly(peer, clientEnd);
  assert.ok(error instanceof TimeoutError, String(error));
});

Deno.test("the handshake deadline is total: a peer trickling a byte at a time still times out", async () => {
  const key = await testKey();
  const [peer, serverEnd] = duplexPair();
  const timers = new ManualTimers();
  // The server's end, counting what the handshake read through it.
  let read = 0;
  let onRead: (() => void) | undefined;
  const counted: Duplex = {
    read: async (buffer) => {
      const n = await serverEnd.read(buffer);
      read += n ?? 0;
      onRead?.();
      return n;
    },
    write: (bytes) => serverEnd.write(bytes),
    close: () => serverEnd.close(),
  };
  const accepting = settle(Channel.accept(counted, {
    keys: keyMap(key),
    handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
    timers,
  }));
  // A valid-looking length prefix, then one byte every 50 ms: every read makes progress.
  const trickle = concatBytes(new Uint8Array([0, 0, 0, CLIENT_HELLO_SIZE]), randomBytes(100));
  let sent = 0;
  while (!serverEnd.isClosed && sent < trickle.length) {
    const arrived = new Promise<void>((resolve) => (onRead = resolve));
    await peer.write(trickle.slice(sent, sent + 1));
    sent++;
    await arrived;
    assert.equal(read, sent);
    timers.advance(50);
  }
  const { error } = await accepting;
  closeQuietly(peer);
  assert.ok(error instanceof TimeoutError, String(error));
  assert.equal(sent, HANDSHAKE_TIMEOUT_MS / 50, "each byte was read, and none reset the clock");
});

Deno.test("Channel.connect and Channel.accept agree over an in-memory duplex", async () => {
  const key = await testKey();
  const [clientEnd, serverEnd] = duplexPair();
  const [client, server] = await Promise.all([
    Channel.connect(clientEnd, { sharedKey: key.raw, keyId: key.id, idleTimeoutMs: 0 }),
    Channel.accept(serverEnd, { keys: keyMap(key), idleTimeoutMs: 0 }),
  ]);
  await client.send({ hello: "over memory" });
  assert.deepEqual(await server.receive(), { type: "message", message: { hello: "over memory" } });
  await client.close("bye");
  assert.deepEqual(await server.receive(), { type: "goodbye", reason: "bye" });
  server.abort();
});
