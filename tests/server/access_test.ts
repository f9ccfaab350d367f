/**
 * Tests for lib/server/access.ts (address canonicalisation, TRUSTEDIPS, connection
 * caps and lockout, with an injected clock), and for the screening that
 * lib/server/server.ts does with them: an in-process ReconServer on 127.0.0.1 under
 * half-open floods, garbage, wrong keys and truncated frames keeps answering normal
 * clients, and refuses untrusted and locked-out ones.
 */
import assert from "node:assert/strict";
import { OWNER_FILE } from "../../lib/server/recovery.ts";
import * as path from "node:path";
import { Channel } from "../../lib/wire/channel.ts";
import { connectToServer } from "../../lib/client/connect.ts";
import { getServerStatus } from "../../lib/client/query.ts";
import { ConnectionError, HandshakeError } from "../../lib/errors.ts";
import { FrameReader, writeAll } from "../../lib/wire/frame.ts";
import { HelloType, MAX_HANDSHAKE_FRAME_SIZE, RefusalCode } from "../../lib/wire/handshake.ts";
import { log } from "../../lib/log.ts";
import { defaultConfig, type ReconConfig } from "../../lib/opts/mod.ts";
import { AdmissionControl, canonicalAddress, TrustedAddresses } from "../../lib/server/access.ts";
import { ReconServer } from "../../lib/server/server.ts";
import { testKey } from "../support/channel_pair.ts";
import { randomBytes } from "../support/memory_duplex.ts";

// ---------------------------------------------------------------------------
// canonicalAddress and TrustedAddresses

const CANONICAL: [string, string][] = [
  ["127.0.0.1", "127.0.0.1"],
  [" 10.0.0.1 ", "10.0.0.1"],
  ["::1", "0:0:0:0:0:0:0:1"],
  ["[::1]", "0:0:0:0:0:0:0:1"],
  ["0:0:0:0:0:0:0:1", "0:0:0:0:0:0:0:1"],
  ["2001:DB8::1", "2001:db8:0:0:0:0:0:1"],
  ["2001:db8:0:0:0:0:0:1", "2001:db8:0:0:0:0:0:1"],
  ["2001:0db8:0000::0001", "2001:db8:0:0:0:0:0:1"],
  ["fe80::1%eth0", "fe80:0:0:0:0:0:0:1"],
  ["::", "0:0:0:0:0:0:0:0"],
  ["1::", "1:0:0:0:0:0:0:0"],
  ["::ffff:127.0.0.1", "127.0.0.1"],
  ["::FFFF:127.0.0.1", "127.0.0.1"],
  ["::ffff:7f00:1", "127.0.0.1"],
  ["0:0:0:0:0:ffff:c0a8:0101", "192.168.1.1"],
  ["[::ffff:10.1.2.3]", "10.1.2.3"],
];

for (const [input, expected] of CANONICAL) {
  Deno.test(`canonicalAddress(${JSON.stringify(input)}) is ${expected}`, () => {
    assert.equal(canonicalAddress(input), expected);
  });
}

Deno.test("canonicalAddress() does not turn other IPv6 addresses into IPv4", () => {
  assert.equal(canonicalAddress("::127.0.0.1"), "0:0:0:0:0:0:7f00:1");
  assert.equal(canonicalAddress("64:ff9b::7f00:1"), "64:ff9b:0:0:0:0:7f00:1");
  assert.equal(canonicalAddress("::fffe:7f00:1"), "0:0:0:0:0:fffe:7f00:1");
});

Deno.test("TrustedAddresses allows a listed address in any of its spellings", () => {
  const trusted = new TrustedAddresses(["127.0.0.1", "2001:db8::1"]);
  assert.ok(trusted.restricted);
  for (
    const address of [
      "127.0.0.1",
      "::ffff:127.0.0.1",
      "::ffff:7f00:1",
      "2001:DB8:0::1",
      "[2001:db8::1]",
    ]
  ) {
    assert.ok(trusted.allows(address), address);
  }
});

Deno.test("TrustedAddresses refuses an address that is not listed", () => {
  const trusted = new TrustedAddresses(["127.0.0.1"]);
  for (
    const address of [
      "127.0.0.2",
      "::1",
      "10.9.9.9",
      "",
      "localhost",
      "127.0.0.1.evil",
      "::ffff:127.0.0.2",
    ]
  ) {
    assert.ok(!trusted.allows(address), address);
  }
});

Deno.test("TrustedAddresses given an IPv4-mapped entry allows the plain IPv4 address", () => {
  assert.ok(new TrustedAddresses(["::ffff:10.9.9.9"]).allows("10.9.9.9"));
});

Deno.test("TrustedAddresses that is empty allows every address", () => {
  const trusted = new TrustedAddresses([]);
  assert.ok(!trusted.restricted);
  for (const address of ["127.0.0.1", "::1", "8.8.8.8"]) assert.ok(trusted.allows(address));
});

Deno.test("TrustedAddresses refuses an entry that is not an IP address", () => {
  for (const entry of ["localhost", "10.0.0.0/8", "300.1.1.1", "", "*", "10.0.0.*"]) {
    assert.throws(
      () => new TrustedAddresses([entry]),
      (error: unknown) => error instanceof TypeError && /is not an IP address/.test(error.message),
      entry,
    );
  }
});

// ---------------------------------------------------------------------------
// AdmissionControl

function admission(limits: Partial<ConstructorParameters<typeof AdmissionControl>[0]> = {}) {
  const clock = { now: 1_000_000 };
  const control = new AdmissionControl({
    maxUnauthenticated: 3,
    maxUnauthenticatedPerAddress: 2,
    lockoutFailures: 3,
    lockoutSeconds: 60,
    now: () => clock.now,
    ...limits,
  });
  return { control, clock };
}

Deno.test("AdmissionControl caps unauthenticated connections per address", () => {
  const { control } = admission();
  assert.equal(control.admit("10.0.0.1"), undefined);
  assert.equal(control.admit("10.0.0.1"), undefined);
  assert.equal(control.admit("10.0.0.1"), "too many from this address");
  // The IPv4-mapped spelling is the same address.
  assert.equal(control.admit("::ffff:10.0.0.1"), "too many from this address");
  control.release("10.0.0.1");
  assert.equal(control.admit("::ffff:10.0.0.1"), undefined);
});

Deno.test("AdmissionControl caps unauthenticated connections overall", () => {
  const { control } = admission();
  assert.equal(control.admit("10.0.0.1"), undefined);
  assert.equal(control.admit("10.0.0.2"), undefined);
  assert.equal(control.admit("10.0.0.3"), undefined);
  assert.equal(control.admit("10.0.0.4"), "busy");
  control.release("10.0.0.2");
  assert.equal(control.admit("10.0.0.4"), undefined);
  assert.equal(control.admit("10.0.0.5"), "busy");
});

Deno.test("AdmissionControl frees every slot once all are released", () => {
  const { control } = admission({ maxUnauthenticated: 2, maxUnauthenticatedPerAddress: 2 });
  for (let round = 0; round < 100; round++) {
    assert.equal(control.admit("10.0.0.1"), undefined, `round ${round}`);
    assert.equal(control.admit("10.0.0.1"), undefined, `round ${round}`);
    control.release("10.0.0.1");
    control.release("10.0.0.1");
  }
});

Deno.test("AdmissionControl locks an address out after N failures, saying so once", () => {
  const { control, clock } = admission();
  assert.equal(control.recordFailure("10.0.0.1"), false);
  assert.equal(control.recordFailure("10.0.0.1"), false);
  assert.equal(control.admit("10.0.0.1"), undefined, "not yet locked out");
  control.release("10.0.0.1");
  assert.equal(control.recordFailure("10.0.0.1"), true, "the third failure starts the lockout");
  assert.equal(control.admit("10.0.0.1"), "locked out");
  assert.equal(control.admit("::ffff:10.0.0.1"), "locked out");
  assert.equal(control.recordFailure("10.0.0.1"), false, "a lockout is reported once");
  // Other addresses are not affected.
  assert.equal(control.admit("10.0.0.2"), undefined);
  clock.now += 59_999;
  assert.equal(control.admit("10.0.0.1"), "locked out", "and the lockout was not extended");
});

Deno.test("AdmissionControl lockout expires after LOCKOUT_SECONDS and counting starts afresh", () => {
  const { control, clock } = admission();
  for (let i = 0; i < 3; i++) control.recordFailure("10.0.0.1");
  assert.equal(control.admit("10.0.0.1"), "locked out");
  clock.now += 60_000;
  assert.equal(control.admit("10.0.0.1"), undefined);
  assert.equal(control.recordFailure("10.0.0.1"), false, "the count restarted");
  assert.equal(control.recordFailure("10.0.0.1"), false);
  assert.equal(control.recordFailure("10.0.0.1"), true, "a new lockout after N more");
});

Deno.test("AdmissionControl forgets failures after a successful handshake", () => {
  const { control } = admission();
  control.recordFailure("10.0.0.1");
  control.recordFailure("10.0.0.1");
  control.recordSuccess("::ffff:10.0.0.1");
  assert.equal(control.recordFailure("10.0.0.1"), false);
  assert.equal(control.recordFailure("10.0.0.1"), false);
  assert.equal(control.admit("10.0.0.1"), undefined);
});

Deno.test("AdmissionControl with LOCKOUT_FAILURES 0 never locks out", () => {
  const { control } = admission({ lockoutFailures: 0 });
  for (let i = 0; i < 50; i++) assert.equal(control.recordFailure("10.0.0.1"), false);
  assert.equal(control.admit("10.0.0.1"), undefined);
});

Deno.test("AdmissionControl keeps working when many addresses fail", () => {
  const { control, clock } = admission({ lockoutFailures: 1, lockoutSeconds: 1 });
  for (let i = 0; i < 12_000; i++) {
    control.recordFailure(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
  }
  assert.equal(control.admit("10.0.0.5"), "locked out");
  clock.now += 1001;
  assert.equal(control.admit("10.0.0.5"), undefined);
});

Deno.test("AdmissionControl does not add up failures more than LOCKOUT_SECONDS apart", () => {
  const { control, clock } = admission();
  for (let i = 0; i < 10; i++) {
    assert.equal(control.recordFailure("10.0.0.1"), false, `failure ${i}`);
    clock.now += 60_001;
  }
  assert.equal(control.admit("10.0.0.1"), undefined, "one failure a minute never locks out");
});

Deno.test("AdmissionControl adds up failures each within LOCKOUT_SECONDS of the last one", () => {
  const { control, clock } = admission();
  assert.equal(control.recordFailure("10.0.0.1"), false);
  clock.now += 59_000;
  assert.equal(control.recordFailure("10.0.0.1"), false);
  clock.now += 59_000;
  // 118 s after the first, but each within 60 s of the one before.
  assert.equal(control.recordFailure("10.0.0.1"), true);
  assert.equal(control.admit("10.0.0.1"), "locked out");
});

Deno.test("AdmissionControl keeps a recent failure count while thousands of other addresses fail", () => {
  const { control } = admission();
  control.recordFailure("10.0.0.1");
  control.recordFailure("10.0.0.1");
  // Enough other addresses to make it prune its table (more than 10,000 entries).
  for (let i = 0; i < 10_050; i++) {
    control.recordFailure(`10.1.${(i >> 8) & 255}.${i & 255}`);
  }
  assert.equal(control.recordFailure("10.0.0.1"), true, "the two recent failures still count");
  assert.equal(control.admit("10.0.0.1"), "locked out");
});

// ---------------------------------------------------------------------------
// The server's screening, in process, on 127.0.0.1.

async function startServer(overrides: Partial<ReconConfig> = {}) {
  const dir = await Deno.makeTempDir({ prefix: "recon-access-test-" });
  const key = await testKey();
  const config: ReconConfig = {
    ...defaultConfig(),
    SERVER_HOST: "127.0.0.1",
    SERVER_PORT: 0,
    SHARED_KEY: key.text,
    RECON_FILEPATH: path.join(dir, "pfiles"),
    RECON_DICOM_DIR: path.join(dir, "dicoms"),
    HANDSHAKE_TIMEOUT: 1,
    LOCKOUT_FAILURES: 100,
    LOCKOUT_SECONDS: 60,
    SHUTDOWN_GRACE: 1,
    ...overrides,
  };
  const server = await ReconServer.start({
    config,
    keys: new Map([[key.id, key.raw]]),
    log: log("test"),
  });
  const port = server.addr.port;
  return {
    server,
    key,
    dir,
    port,
    config,
    /** A normal client: connect, ask for the status, say goodbye. */
    async status(clientKey = key) {
      const channel = await connectToServer({
        host: "127.0.0.1",
        port,
        sharedKey: clientKey.raw,
        keyId: clientKey.id,
        handshakeTimeoutMs: 3000,
      });
      try {
        return await getServerStatus(channel);
      } finally {
        await channel.close();
      }
    },
    connectRaw: () => Deno.connect({ hostname: "127.0.0.1", port }),
    [Symbol.asyncDispose]: async () => {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Read from a raw connection until EOF, an error, or `ms`; says which. */
async function readUntilClosed(conn: Deno.Conn, ms: number): Promise<"closed" | "timeout"> {
  const buffer = new Uint8Array(1024);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => (timer = setTimeout(resolve, ms, "timeout")));
  const closed = (async () => {
    try {
      while ((await conn.read(buffer)) !== null) { /* discard */ }
    } catch { /* reset counts as closed */ }
    return "closed" as const;
  })();
  const result = await Promise.race([closed, timeout]);
  clearTimeout(timer);
  if (result === "timeout") {
    conn.close();
    await closed;
  }
  return result;
}

function closeAll(conns: Deno.Conn[]): void {
  for (const conn of conns) {
    try {
      conn.close();
    } catch { /* closed */ }
  }
}

async function isEmptyDir(dir: string): Promise<boolean> {
  // The server's marker in RECON_FILEPATH (lib/server/recovery.ts) is not a leftover.
  for await (const entry of Deno.readDir(dir)) if (entry.name !== OWNER_FILE) return false;
  return true;
}

Deno.test("ReconServer answers a normal client while 50 half-open connections send nothing", async () => {
  await using s = await startServer({
    HANDSHAKE_TIMEOUT: 3,
    MAX_UNAUTHENTICATED: 64,
    MAX_UNAUTHENTICATED_PER_IP: 64,
  });
  const flood = await Promise.all(Array.from({ length: 50 }, () => s.connectRaw()));
  try {
    const started = performance.now();
    const status = await s.status();
    const elapsed = performance.now() - started;
    assert.equal(status.type, "server_status_response");
    assert.ok(elapsed < 2000, `the normal client took ${elapsed} ms`);
  } finally {
    closeAll(flood);
  }
});

Deno.test("ReconServer refuses a flood beyond MAX_UNAUTHENTICATED_PER_IP as busy at once", async () => {
  await using s = await startServer({ MAX_UNAUTHENTICATED_PER_IP: 8 });
  const flood = await Promise.all(Array.from({ length: 50 }, () => s.connectRaw()));
  try {
    // The refused ones get a BUSY refusal straight away; the admitted ones hear nothing.
    const outcomes = await Promise.all(flood.map(async (conn) => {
      const reader = new FrameReader(conn, { maxFrameSize: MAX_HANDSHAKE_FRAME_SIZE });
      let timer: ReturnType<typeof setTimeout> | undefined;
      const frame = await Promise.race([
        reader.read().catch(() => null),
        new Promise<"silent">((resolve) => (timer = setTimeout(resolve, 400, "silent"))),
      ]);
      clearTimeout(timer);
      if (frame === "silent") return "silent";
      return frame && frame[5] === HelloType.REFUSAL && frame[6] === RefusalCode.BUSY
        ? "busy"
        : "other";
    }));
    assert.equal(outcomes.filter((o) => o === "silent").length, 8, outcomes.join(","));
    assert.equal(outcomes.filter((o) => o === "busy").length, 42, outcomes.join(","));
    // Meanwhile this address is at its cap: a normal client is told the server is busy.
    await assert.rejects(
      s.status(),
      (error: unknown) => error instanceof HandshakeError && /busy/.test(error.message),
    );
  } finally {
    closeAll(flood);
  }
  // Once the half-open connections are gone, the address is served again.
  let status: unknown;
  for (let attempt = 0; attempt < 20 && !status; attempt++) {
    status = await s.status().catch(async () => {
      await new Promise((resolve) => setTimeout(resolve, 100));
      return undefined;
    });
  }
  assert.ok(status, "served after the flood");
});

Deno.test("ReconServer stays up and answers after each kind of hostile connection", async () => {
  await using s = await startServer();
  const hostile: [string, () => Promise<void>][] = [
    ["an HTTP request", async () => {
      const conn = await s.connectRaw();
      await writeAll(conn, new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
      assert.equal(await readUntilClosed(conn, 3000), "closed");
    }],
    ["TLS ClientHello bytes", async () => {
      const conn = await s.connectRaw();
      await writeAll(
        conn,
        new Uint8Array([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03]),
      );
      assert.equal(await readUntilClosed(conn, 3000), "closed");
    }],
    ["random bytes", async () => {
      const conn = await s.connectRaw();
      await writeAll(conn, randomBytes(500));
      assert.equal(await readUntilClosed(conn, 3000), "closed");
    }],
    ["a wrong key", async () => {
      const other = await testKey();
      const error = await s.status(other).catch((e) => e);
      assert.ok(error instanceof HandshakeError, String(error));
      assert.match(error.message, new RegExp(`does not accept key id ${other.id}`));
    }],
    ["a truncated frame, then close", async () => {
      const conn = await s.connectRaw();
      await writeAll(conn, new Uint8Array([0, 0, 0, 78, 0x52, 0x45, 0x43]));
      conn.close();
    }],
    ["a silent connection until the handshake deadline", async () => {
      const conn = await s.connectRaw();
      assert.equal(await readUntilClosed(conn, 3000), "closed");
    }],
    ["garbage after a good handshake", async () => {
      const conn = await s.connectRaw();
      const channel = await Channel.connect(conn, { sharedKey: s.key.raw, keyId: s.key.id });
      await writeAll(conn, new Uint8Array([0, 0, 0, 100, ...randomBytes(100)]));
      await assert.rejects(channel.receive(), ConnectionError);
      channel.abort();
    }],
    ["an unknown message type after a good handshake", async () => {
      const conn = await s.connectRaw();
      const channel = await Channel.connect(conn, { sharedKey: s.key.raw, keyId: s.key.id });
      await channel.send({ type: "launch_missiles" });
      await assert.rejects(channel.receive(), ConnectionError);
      channel.abort();
    }],
  ];
  for (const [what, attack] of hostile) {
    await attack();
    const status = await s.status().catch((error) => assert.fail(`after ${what}: ${error}`));
    assert.equal(status.type, "server_status_response", `after ${what}`);
  }
  assert.ok(await isEmptyDir(s.config.RECON_FILEPATH), "nothing left behind");
});

Deno.test("ReconServer refuses a client not in TRUSTEDIPS before any handshake", async () => {
  await using s = await startServer({ TRUSTEDIPS: ["10.9.9.9"] });
  const error = await s.status().catch((e) => e);
  assert.ok(error instanceof ConnectionError, String(error));
  assert.match(error.message, /handshake with 127\.0\.0\.1:\d+ failed/);
  // The server said nothing at all, not even a refusal: the connection just closes.
  const conn = await s.connectRaw();
  assert.equal(await readUntilClosed(conn, 3000), "closed");
  assert.equal(s.server.queue.jobs().length, 0);
  assert.ok(await isEmptyDir(s.config.RECON_FILEPATH));
  assert.ok(await isEmptyDir(s.config.RECON_DICOM_DIR));
});

Deno.test("ReconServer with TRUSTEDIPS listing 127.0.0.1 (any spelling) serves it", async () => {
  await using s = await startServer({ TRUSTEDIPS: ["10.9.9.9", "::ffff:127.0.0.1"] });
  assert.equal((await s.status()).type, "server_status_response");
});

Deno.test("ReconServer locks out an address after repeated wrong keys, even with the right key", async () => {
  await using s = await startServer({ LOCKOUT_FAILURES: 3, LOCKOUT_SECONDS: 60 });
  const wrong = await testKey();
  for (let i = 0; i < 3; i++) {
    const error = await s.status(wrong).catch((e) => e);
    assert.ok(error instanceof HandshakeError, `attempt ${i}: ${error}`);
    assert.match(error.message, /does not accept key id/);
  }
  const error = await s.status().catch((e) => e);
  assert.ok(error instanceof HandshakeError, String(error));
  assert.match(error.message, /locked out/);
  assert.match(error.hint ?? "", /wait/);
});

Deno.test("ReconServer forgets earlier failures after a good handshake", async () => {
  await using s = await startServer({ LOCKOUT_FAILURES: 3 });
  const wrong = await testKey();
  for (let round = 0; round < 3; round++) {
    await assert.rejects(s.status(wrong), HandshakeError);
    await assert.rejects(s.status(wrong), HandshakeError);
    assert.equal((await s.status()).type, "server_status_response", `round ${round}`);
  }
});

Deno.test("ReconServer never locks out an address for silent, garbage or malformed connections", async () => {
  await using s = await startServer({ LOCKOUT_FAILURES: 2, HANDSHAKE_TIMEOUT: 0.5 });
  const attempts: [string, () => Promise<void>][] = [
    ["a silent connection until the handshake deadline", async () => {
      const conn = await s.connectRaw();
      assert.equal(await readUntilClosed(conn, 3000), "closed");
    }],
    ["a connection closed at once", async () => {
      (await s.connectRaw()).close();
    }],
    ["an HTTP request", async () => {
      const conn = await s.connectRaw();
      await writeAll(conn, new TextEncoder().encode("GET / HTTP/1.1\r\n\r\n"));
      assert.equal(await readUntilClosed(conn, 3000), "closed");
    }],
    ["random bytes", async () => {
      const conn = await s.connectRaw();
      await writeAll(conn, randomBytes(300));
      assert.equal(await readUntilClosed(conn, 3000), "closed");
    }],
    ["a hello of the wrong length", async () => {
      const conn = await s.connectRaw();
      await writeAll(conn, new Uint8Array([0, 0, 0, 7, 0x52, 0x45, 0x43, 0x4e, 1, 1, 0]));
      assert.equal(await readUntilClosed(conn, 3000), "closed");
    }],
    ["a hello of another protocol version", async () => {
      const conn = await s.connectRaw();
      await assert.rejects(
        Channel.connect(conn, { sharedKey: s.key.raw, keyId: s.key.id, version: 2 }),
        /version/,
      );
      try {
        conn.close();
      } catch { /* closed */ }
    }],
  ];
  for (const [what, attempt] of attempts) {
    // Each kind three times: more than LOCKOUT_FAILURES if any of them counted.
    for (let i = 0; i < 3; i++) await attempt();
    const status = await s.status().catch((error) => assert.fail(`after ${what}: ${error}`));
    assert.equal(status.type, "server_status_response", `after ${what}`);
  }
});

Deno.test("ReconServer locks out an address whose clients keep failing the server's proof", async () => {
  await using s = await startServer({ LOCKOUT_FAILURES: 2 });
  // The server's key id with another key: the client cannot verify the server's proof.
  const other = await testKey();
  const impostor = { ...other, id: s.key.id };
  for (let i = 0; i < 2; i++) {
    const error = await s.status(impostor).catch((e) => e);
    assert.ok(error instanceof HandshakeError, String(error));
    assert.match(error.message, /could not prove it holds SHARED_KEY/);
  }
  // The server hears of a failed proof only when the client hangs up; give it a moment.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const error = await s.status().catch((e) => e);
  assert.ok(error instanceof HandshakeError, String(error));
  assert.match(error.message, /locked out/);
});
