/**
 * Tests for lib/server/access.ts (address canonicalisation, TRUSTEDIPS with link-local
 * zones, connection caps and the slowing down of addresses that waste key derivations,
 * with an injected clock), and for the screening that lib/server/server.ts does with
 * them: an in-process ReconServer on 127.0.0.1 under half-open floods, garbage, wrong
 * keys and truncated frames keeps answering normal clients, serves a client holding the
 * key after any number of failures from its address, logs a flood once, and refuses
 * untrusted addresses.
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
import { defaultConfig, parseOpts, type ReconConfig } from "../../lib/opts/mod.ts";
import { SEED_OPTS_TEXT } from "../opts/seed_text.ts";
import {
  AdmissionControl,
  arrivalZone,
  canonicalAddress,
  type InterfaceAddress,
  SLOW_HANDSHAKE_INTERVAL_MS,
  TrustedAddresses,
} from "../../lib/server/access.ts";
import { ReconServer } from "../../lib/server/server.ts";
import { testKey } from "../support/channel_pair.ts";
import { randomBytes } from "../support/memory_duplex.ts";
import { memoryLog } from "../support/memory_log.ts";

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
  ["fe80::1%eth0", "fe80:0:0:0:0:0:0:1%eth0"],
  ["FE80::1%Eth0", "fe80:0:0:0:0:0:0:1%Eth0"],
  ["[fe80::1%4]", "fe80:0:0:0:0:0:0:1%4"],
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
// Link-local addresses and their zones

const ETH0: InterfaceAddress[] = [
  // Deno.networkInterfaces() on the machine where this was written (IPv6 part).
  { name: "lo", address: "::1", scopeid: 0 },
  { name: "eth0", address: "fd00::2", scopeid: 0 },
  { name: "eth0", address: "fe80::fc:ff:fe00:1", scopeid: 4 },
];

Deno.test("TrustedAddresses with a zoned link-local entry allows it only on that interface", () => {
  const trusted = new TrustedAddresses(["fe80::1%eth0"]);
  assert.ok(trusted.restricted);
  assert.ok(trusted.needsZone("fe80::1"));
  assert.ok(trusted.allows("fe80::1", { name: "eth0", index: 4 }));
  assert.ok(trusted.allows("FE80:0::1", { name: "eth0", index: 4 }));
  assert.ok(!trusted.allows("fe80::1", { name: "eth1", index: 5 }), "another interface");
  assert.ok(!trusted.allows("fe80::1", { name: "ETH0", index: 5 }), "names are case-sensitive");
  assert.ok(!trusted.allows("fe80::1"), "the interface is unknown");
  assert.ok(!trusted.allows("fe80::2", { name: "eth0", index: 4 }), "another address");
  assert.ok(trusted.allows("fe80::1%eth0"), "a zone written in the address itself");
  assert.ok(!trusted.allows("fe80::1%eth1"));
});

Deno.test("TrustedAddresses matches a numeric zone against the interface index", () => {
  const trusted = new TrustedAddresses(["fe80::1%4", "fe80::1%wlan0"]);
  assert.ok(trusted.allows("fe80::1", { name: "eth0", index: 4 }));
  assert.ok(trusted.allows("fe80::1", { name: "wlan0", index: 7 }));
  assert.ok(!trusted.allows("fe80::1", { name: "eth1", index: 5 }));
});

Deno.test("TrustedAddresses with a link-local entry without a zone allows it on every interface", () => {
  const trusted = new TrustedAddresses(["fe80::1", "10.0.0.1"]);
  assert.deepEqual(trusted.unzonedLinkLocal, ["fe80:0:0:0:0:0:0:1"]);
  assert.ok(!trusted.needsZone("fe80::1"));
  assert.ok(trusted.allows("fe80::1"));
  assert.ok(trusted.allows("fe80::1", { name: "eth1", index: 5 }));
  assert.deepEqual(new TrustedAddresses(["fe80::1%eth0", "10.0.0.1"]).unzonedLinkLocal, []);
});

Deno.test("TrustedAddresses refuses a zone on an address that is not link-local, or a bad zone", () => {
  for (const entry of ["10.0.0.1%eth0", "2001:db8::1%eth0", "::1%lo", "fe80::1%", "fe80::1%a b"]) {
    assert.throws(
      () => new TrustedAddresses([entry]),
      (error: unknown) => error instanceof TypeError && /zone|IP address/.test(error.message),
      entry,
    );
  }
});

Deno.test("arrivalZone() names the interface that holds our link-local address", () => {
  assert.deepEqual(arrivalZone("fe80::fc:ff:fe00:1", ETH0), { name: "eth0", index: 4 });
  assert.deepEqual(arrivalZone("FE80:0:0:0:fc:ff:fe00:1", ETH0), { name: "eth0", index: 4 });
  assert.deepEqual(arrivalZone("fe80::fc:ff:fe00:1%eth0", ETH0), { name: "eth0", index: 4 });
});

Deno.test("arrivalZone() knows no zone for an address that is not link-local, unknown or shared", () => {
  assert.equal(arrivalZone("fd00::2", ETH0), undefined);
  assert.equal(arrivalZone("::1", ETH0), undefined);
  assert.equal(arrivalZone("127.0.0.1", ETH0), undefined);
  assert.equal(arrivalZone("fe80::99", ETH0), undefined);
  const shared = [...ETH0, { name: "br0", address: "fe80::fc:ff:fe00:1", scopeid: 9 }];
  assert.equal(arrivalZone("fe80::fc:ff:fe00:1", shared), undefined);
});

Deno.test("TrustedAddresses and arrivalZone together: a peer is trusted only on its interface", () => {
  const trusted = new TrustedAddresses(["fe80::abcd%eth0"]);
  const onEth0 = arrivalZone("fe80::fc:ff:fe00:1", ETH0);
  const viaGlobal = arrivalZone("fd00::2", ETH0);
  assert.ok(trusted.allows("fe80::abcd", onEth0));
  assert.ok(!trusted.allows("fe80::abcd", viaGlobal));
  const other = new TrustedAddresses(["fe80::abcd%eth1"]);
  assert.ok(!other.allows("fe80::abcd", onEth0));
});

Deno.test("recon.opts TRUSTEDIPS takes a zoned link-local address and the server keeps its zone", () => {
  const { config } = parseOpts(`${SEED_OPTS_TEXT}TRUSTEDIPS = 10.0.0.1, fe80::1%eth0, FE80::2%4\n`);
  assert.deepEqual(config.TRUSTEDIPS, ["10.0.0.1", "fe80::1%eth0", "FE80::2%4"]);
  const trusted = new TrustedAddresses(config.TRUSTEDIPS);
  assert.ok(trusted.allows("fe80::1", { name: "eth0", index: 4 }));
  assert.ok(!trusted.allows("fe80::1", { name: "eth1", index: 5 }));
  assert.ok(trusted.allows("fe80::2", { name: "eth0", index: 4 }));
});

Deno.test("recon.opts TRUSTEDIPS refuses a zone on an address that is not link-local", () => {
  for (const entry of ["10.0.0.1%eth0", "2001:db8::1%eth0", "fe80::1%", "fe80::1%eth0%1"]) {
    assert.throws(
      () => parseOpts(`${SEED_OPTS_TEXT}TRUSTEDIPS = ${entry}\n`),
      /TRUSTEDIPS must be a comma-separated list of IP addresses/,
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

const STEP = SLOW_HANDSHAKE_INTERVAL_MS;

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

Deno.test("AdmissionControl never refuses an address for its failures", () => {
  const { control } = admission({ maxUnauthenticated: 1000, maxUnauthenticatedPerAddress: 1000 });
  for (let i = 0; i < 500; i++) control.recordKeyFailure("10.0.0.1");
  for (let i = 0; i < 100; i++) assert.equal(control.admit("10.0.0.1"), undefined, `attempt ${i}`);
});

Deno.test("AdmissionControl does not delay an address below LOCKOUT_FAILURES", () => {
  const { control } = admission();
  assert.equal(control.delay("10.0.0.1"), 0);
  assert.equal(control.recordKeyFailure("10.0.0.1"), false);
  assert.equal(control.recordKeyFailure("10.0.0.1"), false);
  for (let i = 0; i < 10; i++) assert.equal(control.delay("10.0.0.1"), 0);
});

Deno.test("AdmissionControl spaces a slowed address's handshakes, saying so once", () => {
  const { control, clock } = admission();
  control.recordKeyFailure("10.0.0.1");
  control.recordKeyFailure("10.0.0.1");
  assert.equal(control.recordKeyFailure("10.0.0.1"), true, "the third failure slows it down");
  assert.equal(control.recordKeyFailure("10.0.0.1"), false, "reported once");
  // Each connection books the next turn: 0, 1, 2, 3 intervals from now.
  assert.deepEqual([0, 1, 2, 3].map(() => control.delay("10.0.0.1")), [
    0,
    STEP,
    2 * STEP,
    3 * STEP,
  ]);
  assert.equal(control.delay("::ffff:10.0.0.1"), 4 * STEP, "the mapped spelling shares the queue");
  clock.now += 10 * STEP;
  assert.equal(control.delay("10.0.0.1"), 0, "turns not taken are not saved up");
  assert.equal(control.delay("10.0.0.1"), STEP);
  assert.equal(control.delay("10.0.0.2"), 0, "other addresses are not affected");
});

Deno.test("AdmissionControl stops slowing an address LOCKOUT_SECONDS after its last failure", () => {
  const { control, clock } = admission();
  for (let i = 0; i < 3; i++) control.recordKeyFailure("10.0.0.1");
  clock.now += 59_000;
  control.recordKeyFailure("10.0.0.1");
  clock.now += 59_000;
  control.delay("10.0.0.1");
  assert.equal(control.delay("10.0.0.1"), STEP, "still slowed 59 s after the last failure");
  clock.now += 1_001;
  assert.equal(control.delay("10.0.0.1"), 0);
  assert.equal(control.delay("10.0.0.1"), 0);
  assert.equal(control.recordKeyFailure("10.0.0.1"), false, "the count started again");
  assert.equal(control.recordKeyFailure("10.0.0.1"), false);
  assert.equal(control.recordKeyFailure("10.0.0.1"), true, "slowed again after N more");
});

Deno.test("AdmissionControl with LOCKOUT_FAILURES 0 never slows an address", () => {
  const { control } = admission({ lockoutFailures: 0 });
  for (let i = 0; i < 50; i++) assert.equal(control.recordKeyFailure("10.0.0.1"), false);
  assert.equal(control.delay("10.0.0.1"), 0);
  assert.equal(control.delay("10.0.0.1"), 0);
});

Deno.test("AdmissionControl does not add up failures more than LOCKOUT_SECONDS apart", () => {
  const { control, clock } = admission();
  for (let i = 0; i < 10; i++) {
    assert.equal(control.recordKeyFailure("10.0.0.1"), false, `failure ${i}`);
    clock.now += 60_001;
  }
  assert.equal(control.delay("10.0.0.1"), 0, "one failure a minute never slows anything");
  assert.equal(control.delay("10.0.0.1"), 0);
});

Deno.test("AdmissionControl keeps working when many addresses fail", () => {
  const { control, clock } = admission({ lockoutFailures: 1, lockoutSeconds: 1 });
  for (let i = 0; i < 12_000; i++) {
    control.recordKeyFailure(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`);
  }
  control.delay("10.0.0.5");
  assert.equal(control.delay("10.0.0.5"), STEP);
  clock.now += 1001;
  assert.equal(control.delay("10.0.0.5"), 0);
});

Deno.test("AdmissionControl keeps a recent failure count while thousands of other addresses fail", () => {
  const { control } = admission();
  control.recordKeyFailure("10.0.0.1");
  control.recordKeyFailure("10.0.0.1");
  // Enough other addresses to make it prune its table (more than 10,000 entries).
  for (let i = 0; i < 10_050; i++) {
    control.recordKeyFailure(`10.1.${(i >> 8) & 255}.${i & 255}`);
  }
  assert.equal(control.recordKeyFailure("10.0.0.1"), true, "the two recent failures still count");
});

// ---------------------------------------------------------------------------
// The server's screening, in process, on 127.0.0.1.

async function startServer(overrides: Partial<ReconConfig> = {}) {
  const logged = memoryLog();
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
    sharedKey: key,
    log: logged.log,
  });
  const port = server.addr.port;
  return {
    server,
    key,
    dir,
    port,
    config,
    /** Every line the server logged, as "LEVEL message". */
    lines: logged.lines,
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
  assert.equal(s.server.store.list({ limit: 10 }).length, 0);
  assert.ok(await isEmptyDir(s.config.RECON_FILEPATH));
  assert.ok(await isEmptyDir(s.config.RECON_DICOM_DIR));
});

Deno.test("ReconServer with TRUSTEDIPS listing 127.0.0.1 (any spelling) serves it", async () => {
  await using s = await startServer({ TRUSTEDIPS: ["10.9.9.9", "::ffff:127.0.0.1"] });
  assert.equal((await s.status()).type, "server_status_response");
});

Deno.test("ReconServer serves a client holding the key at once after many wrong-key connections from its address", async () => {
  await using s = await startServer({ LOCKOUT_FAILURES: 5, LOCKOUT_SECONDS: 60 });
  const wrong = await testKey();
  // A misconfigured watcher on the scanner: far more than LOCKOUT_FAILURES attempts.
  for (let i = 0; i < 25; i++) {
    const error = await s.status(wrong).catch((e) => e);
    assert.ok(error instanceof HandshakeError, `attempt ${i}: ${error}`);
    // Always the true reason, never "busy": the client can stop retrying and say why.
    assert.match(error.message, new RegExp(`does not accept key id ${wrong.id}`), `attempt ${i}`);
  }
  const started = performance.now();
  const status = await s.status();
  const elapsed = performance.now() - started;
  assert.equal(status.type, "server_status_response");
  // No slowing down either: an unknown key id costs the server nothing, so it is not counted.
  assert.ok(elapsed < SLOW_HANDSHAKE_INTERVAL_MS * 5, `took ${elapsed} ms`);
  assert.ok(!s.lines.some((line) => /slowing/.test(line)), s.lines.join("\n"));
});

Deno.test("ReconServer logs a flood of failed handshakes from one address once a minute, not per attempt", async () => {
  await using s = await startServer({ LOCKOUT_FAILURES: 5 });
  const wrong = await testKey();
  for (let i = 0; i < 20; i++) await assert.rejects(s.status(wrong), HandshakeError);
  for (let i = 0; i < 5; i++) {
    const conn = await s.connectRaw();
    await writeAll(conn, randomBytes(100));
    await readUntilClosed(conn, 3000);
  }
  const failures = s.lines.filter((line) => /127\.0\.0\.1/.test(line));
  assert.equal(failures.length, 1, failures.join("\n"));
  assert.match(failures[0], new RegExp(`handshake failed at hello: .*key id ${wrong.id}`));
  // The key id is named once, not "key id X unknown key id X".
  assert.equal(failures[0].split(wrong.id).length - 1, 1, failures[0]);
});

Deno.test("ReconServer slows down, but still serves, an address whose handshakes name its key id and fail", async () => {
  const failures = 3;
  await using s = await startServer({ LOCKOUT_FAILURES: failures });
  // The server's key id with another key: someone who saw a handshake on the wire.
  // The server derives session keys for each one, then the proof fails.
  const other = await testKey();
  const impostor = { ...other, id: s.key.id };
  for (let i = 0; i < failures; i++) {
    const error = await s.status(impostor).catch((e) => e);
    assert.ok(error instanceof HandshakeError, String(error));
    assert.match(error.message, /could not prove it holds SHARED_KEY/);
  }
  // The server hears of a failed proof only when the client hangs up.
  for (let i = 0; i < 50 && !s.lines.some((line) => /slowing/.test(line)); i++) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  const slowing = s.lines.filter((line) => /slowing/.test(line));
  assert.equal(slowing.length, 1, s.lines.join("\n"));
  assert.match(slowing[0], new RegExp(`127\\.0\\.0\\.1: ${failures} handshakes named our key id`));
  // Still served: five clients holding the key at once all get in, one turn apart.
  const started = performance.now();
  const statuses = await Promise.all(Array.from({ length: 5 }, () => s.status()));
  const elapsed = performance.now() - started;
  for (const status of statuses) assert.equal(status.type, "server_status_response");
  assert.ok(
    elapsed >= 4 * SLOW_HANDSHAKE_INTERVAL_MS - 20,
    `five handshakes took ${elapsed} ms: not spaced ${SLOW_HANDSHAKE_INTERVAL_MS} ms apart`,
  );
  // A wrong key from the slowed address still hears the true reason.
  const wrong = await testKey();
  await assert.rejects(
    s.status(wrong),
    (error: unknown) =>
      error instanceof HandshakeError && /does not accept key id/.test(error.message),
  );
});

Deno.test("ReconServer never slows an address down for silent, garbage or malformed connections", async () => {
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
        Channel.connect(conn, { sharedKey: s.key.raw, keyId: s.key.id, version: 99 }),
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
  assert.ok(!s.lines.some((line) => /slowing/.test(line)), s.lines.join("\n"));
});
