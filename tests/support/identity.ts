/**
 * Test support for the identity and audit end-to-end tests (tests/e2e_identity_test.ts,
 * tests/e2e_audit_test.ts, issue 14): client keys made with the real `recon-server
 * clients add|rotate|revoke` against an {@link E2EServer}'s recon.opts, a recon.opts per
 * client holding its key, an in-process session under a given key (to time a refusal to
 * the millisecond, or to hold a session open), and the audit log as JSON objects.
 *
 * ```ts
 * await using server = await E2EServer.start({ script });
 * const mr1 = await addClient(server, "mr1", ["--admin"]);
 * const jobs = await server.client(["jobs", "--json"], { optsPath: mr1.optsPath });
 * ```
 *
 * @module
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { decodeKey, keyId } from "../../lib/crypto/keys.ts";
import { Channel } from "../../lib/wire/channel.ts";
import { type E2EServer, run, type RunResult, SERVER_BIN, waitFor } from "./e2e.ts";

/** A client key made by `recon-server clients add` (or `rotate`), with its recon.opts. */
export interface TestClient {
  name: string;
  /** The key's text (44 characters), as printed for the client's recon.opts. */
  key: string;
  /** Its key id. */
  keyId: string;
  /** A recon.opts for recon-client: the server's, with this SHARED_KEY. */
  optsPath: string;
  /** What the command printed. */
  stdout: string;
  stderr: string;
}

/** Run `bin/recon-server clients ARGS --opts SERVER_OPTS` to completion. */
export function clientsCommand(server: E2EServer, args: string[]): Promise<RunResult> {
  return run(SERVER_BIN, ["clients", ...args, "--opts", server.optsPath]);
}

/** Run `bin/recon-server audit ARGS --opts SERVER_OPTS` to completion. */
export function auditCommand(server: E2EServer, args: string[]): Promise<RunResult> {
  return run(SERVER_BIN, ["audit", ...args, "--opts", server.optsPath]);
}

/** The one `SHARED_KEY = …` line a `clients add|rotate` printed for the client. */
function printedKey(result: RunResult): string {
  const keys = [...result.stdout.matchAll(/^SHARED_KEY\s*=\s*(\S+)\s*$/gm)].map((m) => m[1]);
  assert.equal(keys.length, 1, `one SHARED_KEY line in:\n${result.stdout}\n${result.stderr}`);
  assert.match(keys[0], /^[A-Za-z0-9_-]{43}=$/, "a 44-character key");
  return keys[0];
}

/** The key id of a key's text. */
export function keyIdOf(text: string): Promise<string> {
  return keyId(decodeKey(text));
}

async function clientFrom(
  server: E2EServer,
  name: string,
  optsName: string,
  result: RunResult,
): Promise<TestClient> {
  const key = printedKey(result);
  const optsPath = await server.writeClientOpts(optsName, { SHARED_KEY: key });
  return {
    name,
    key,
    keyId: await keyIdOf(key),
    optsPath,
    stdout: result.stdout,
    stderr: result.stderr,
  };
}

/**
 * `recon-server clients add NAME FLAGS…` against the server's recon.opts; fails the test
 * unless it exits 0 and prints one SHARED_KEY line. Writes `NAME.opts` for the client.
 */
export async function addClient(
  server: E2EServer,
  name: string,
  flags: string[] = [],
): Promise<TestClient> {
  const result = await clientsCommand(server, ["add", name, ...flags]);
  assert.equal(result.code, 0, `clients add ${name} failed:\n${result.stderr}`);
  return await clientFrom(server, name, `${name}.opts`, result);
}

/** `recon-server clients rotate NAME`: the new key, with `NAME.rotated-N.opts`. */
export async function rotateClient(server: E2EServer, name: string, n = 1): Promise<TestClient> {
  const result = await clientsCommand(server, ["rotate", name]);
  assert.equal(result.code, 0, `clients rotate ${name} failed:\n${result.stderr}`);
  return await clientFrom(server, name, `${name}.rotated-${n}.opts`, result);
}

/** `recon-server clients revoke NAME`; fails the test unless it exits 0. */
export async function revokeClient(server: E2EServer, name: string): Promise<RunResult> {
  const result = await clientsCommand(server, ["revoke", name]);
  assert.equal(result.code, 0, `clients revoke ${name} failed:\n${result.stderr}`);
  return result;
}

/** One entry of `recon-server clients list --json`. */
export interface ListedClient {
  name: string;
  key_id: string;
  created: string;
  last_seen?: string | number;
  last_address?: string;
  jobs: number;
  admin: boolean;
  high_priority: boolean;
  from: string[];
  deliver: string[];
  retiring: { key_id: string; expires: string }[];
}

/** `recon-server clients list --json`, parsed. */
export async function listClients(server: E2EServer): Promise<ListedClient[]> {
  const result = await clientsCommand(server, ["list", "--json"]);
  assert.equal(result.code, 0, `clients list --json failed:\n${result.stderr}`);
  const clients = JSON.parse(result.stdout);
  assert.ok(Array.isArray(clients), `clients list --json is an array:\n${result.stdout}`);
  return clients;
}

/** What the server said to a session under some key ({@link probe}). */
export type ProbeResult =
  | { accepted: true; client?: string; admin?: boolean }
  | { accepted: false; error: string };

/**
 * Connect to `port` in this process with `keyText`, run the handshake and ask for the
 * server status: whether the server accepted the key, and as which client. Takes a few
 * milliseconds (no process start), so a refusal can be timed closely.
 */
export async function probe(port: number, keyText: string): Promise<ProbeResult> {
  let channel: Channel;
  try {
    channel = await openSession(port, keyText);
  } catch (error) {
    return { accepted: false, error: (error as Error).message };
  }
  try {
    await channel.send({ type: "get_server_status" });
    const incoming = await channel.receive();
    if (incoming?.type !== "message") {
      return { accepted: false, error: `the session ended: ${JSON.stringify(incoming)}` };
    }
    const message = (incoming as { message: Record<string, unknown> }).message;
    assert.equal(message.type, "server_status_response", JSON.stringify(message));
    return {
      accepted: true,
      client: message.client as string | undefined,
      admin: message.admin as boolean | undefined,
    };
  } catch (error) {
    return { accepted: false, error: (error as Error).message };
  } finally {
    await channel.close();
  }
}

/** A session on `port` under `keyText`, handshaken in this process (close it yourself). */
export async function openSession(port: number, keyText: string): Promise<Channel> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  conn.setNoDelay(true);
  const raw = decodeKey(keyText);
  try {
    return await Channel.connect(conn, { sharedKey: raw, keyId: await keyId(raw) });
  } catch (error) {
    try {
      conn.close();
    } catch { /* closed by the channel */ }
    throw error;
  }
}

/**
 * Probe every 20 ms until `accepted` is what the server says about `keyText`; returns
 * the result and the time (Date.now()) of the first probe that saw it. Fails after
 * `timeoutMs`.
 */
export async function waitForProbe(
  port: number,
  keyText: string,
  accepted: boolean,
  timeoutMs: number,
): Promise<{ result: ProbeResult; at: number }> {
  let last: ProbeResult | undefined;
  return await waitFor(`the key to be ${accepted ? "accepted" : "refused"}`, async () => {
    const at = Date.now();
    last = await probe(port, keyText);
    return last.accepted === accepted ? { result: last, at } : undefined;
  }, { timeoutMs, intervalMs: 20 }).catch((error) => {
    throw new Error(`${error.message}; last probe: ${JSON.stringify(last)}`);
  });
}

/** One audit log line, parsed. */
export interface AuditEvent {
  seq: number;
  time: string;
  event: string;
  prev: string;
  [field: string]: unknown;
}

/** The server's audit log (AUDIT_LOG's default: audit.jsonl in the state directory). */
export function auditPath(server: E2EServer): string {
  return path.join(server.stateDir, "audit.jsonl");
}

/**
 * The audit files in the state directory, oldest first: the rotated `audit.jsonl.<time>`
 * ones by time and number, then `audit.jsonl`.
 */
export async function auditFiles(server: E2EServer): Promise<string[]> {
  const rotated: string[] = [];
  let current = false;
  try {
    for await (const entry of Deno.readDir(server.stateDir)) {
      if (entry.name === "audit.jsonl") current = true;
      else if (entry.name.startsWith("audit.jsonl.")) rotated.push(entry.name);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  // audit.jsonl.<time> then .<time>.1, .2, … (numbered when renamed within one second).
  const order = (name: string): [string, number] => {
    const match = /^(audit\.jsonl\.[^.]+)(?:\.(\d+))?$/.exec(name);
    return match ? [match[1], Number(match[2] ?? 0)] : [name, 0];
  };
  const names = rotated.sort((a, b) => {
    const [timeA, nA] = order(a);
    const [timeB, nB] = order(b);
    return timeA < timeB ? -1 : timeA > timeB ? 1 : nA - nB;
  });
  if (current) names.push("audit.jsonl");
  return names.map((name) => path.join(server.stateDir, name));
}

/** Every event in the server's audit files, oldest first. */
export async function readAudit(server: E2EServer): Promise<AuditEvent[]> {
  const events: AuditEvent[] = [];
  for (const file of await auditFiles(server)) {
    const text = await Deno.readTextFile(file);
    // A line being appended right now may be incomplete: only whole lines count.
    const whole = text.slice(0, text.lastIndexOf("\n") + 1);
    for (const line of whole.split("\n")) {
      if (line) events.push(JSON.parse(line));
    }
  }
  return events;
}

/** Wait until the audit log holds an event for which `match` is true; returns it. */
export async function waitForAudit(
  server: E2EServer,
  what: string,
  match: (event: AuditEvent) => boolean,
  timeoutMs = 10_000,
): Promise<AuditEvent> {
  let seen: AuditEvent[] = [];
  return await waitFor(`the audit line ${what}`, async () => {
    seen = await readAudit(server);
    return seen.find(match);
  }, { timeoutMs, intervalMs: 50 }).catch((error) => {
    const tail = seen.slice(-30).map((event) => JSON.stringify(event)).join("\n");
    throw new Error(`${error.message}\naudit log (end):\n${tail}`);
  });
}

/**
 * A client's one-line refusal with the key id and port blanked: a revoked key, a key
 * from an address its `from=` does not allow and a wrong key must read the same.
 */
export function refusalText(stderr: string): string {
  return stderr.replace(/\b[0-9a-f]{16}\b/g, "KEYID").replace(/127\.0\.0\.1:\d+/g, "ADDR");
}
