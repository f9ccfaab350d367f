/**
 * The live set of client keys (lib/server/client_registry.ts): what a start accepts or
 * refuses, what a change of the client file does to the keys accepted and which audit
 * events it reports, and the file's owner and mode (issue 14). Real files in a
 * temporary directory; the registry is polled by hand.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { ConfigError } from "../../lib/errors.ts";
import { decodeKey, generateKey, keyId } from "../../lib/crypto/keys.ts";
import type { Logger } from "../../lib/log.ts";
import { addClient, revokeClient, rotateClient } from "../../lib/server/client_file.ts";
import { type ClientEvent, ClientRegistry, diffClients } from "../../lib/server/client_registry.ts";
import type { KnownKey } from "../../lib/server/client_activity.ts";

const NOBODY = 65534;

function recordingLog(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const put = (level: string) => (message: string) => lines.push(`${level} ${message}`);
  return {
    lines,
    debug: () => {},
    info: put("INFO"),
    warn: put("WARN"),
    error: put("ERROR"),
  } as unknown as Logger & { lines: string[] };
}

async function site() {
  const dir = await Deno.makeTempDir({ prefix: "recon_registry_" });
  const log = recordingLog();
  const events: ClientEvent[] = [];
  let clock = Date.parse("2026-12-01T10:00:00Z");
  const file = path.join(dir, "recon-clients");
  const sharedText = generateKey();
  const raw = decodeKey(sharedText);
  const shared = { raw, id: await keyId(raw) };
  return {
    dir,
    file,
    log,
    events,
    shared,
    now: () => clock,
    advance: (ms: number) => (clock += ms),
    open: (known: ReadonlyMap<string, KnownKey> = new Map()) =>
      ClientRegistry.open({
        sharedKey: shared,
        file,
        log,
        known,
        onChange: (changes) => events.push(...changes),
        now: () => clock,
        pollMs: 60_000,
      }),
    async [Symbol.asyncDispose]() {
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("SHARED_KEY is the admin client default; a client's key is accepted only from its from= addresses", async () => {
  await using s = await site();
  const mr1 = await addClient(s.file, { name: "mr1", from: ["10.0.0.0/24"], now: new Date() });
  using registry = disposable(await s.open());
  assert.deepEqual(registry.identify(s.shared.id, "192.0.2.1"), {
    name: "default",
    keyId: s.shared.id,
    admin: true,
    highPriority: true,
  });
  assert.equal(registry.identify(mr1.keyId, "10.0.0.7")?.name, "mr1");
  const keys = registry.keysFor("192.0.2.1");
  assert.equal(keys.get(mr1.keyId), undefined);
  assert.match(keys.refusal!, /^client mr1's key \w+ is not accepted from 192\.0\.2\.1 \(from=\)$/);
  assert.equal(keys.refusedClient, "mr1");
  const unknown = registry.keysFor("10.0.0.7");
  assert.equal(unknown.get("0011223344556677"), undefined);
  assert.equal(unknown.refusal, undefined, "an unknown key id says nothing more");
});

Deno.test("a revoked key is refused at the next poll and named; a file that vanishes keeps the last good set, an empty one revokes", async () => {
  await using s = await site();
  const mr1 = await addClient(s.file, { name: "mr1", now: new Date() });
  const mr2 = await addClient(s.file, { name: "mr2", now: new Date() });
  using registry = disposable(await s.open());
  await revokeClient(s.file, "mr1");
  await registry.poll();
  assert.equal(registry.identify(mr1.keyId, "127.0.0.1"), undefined);
  const keys = registry.keysFor("127.0.0.1");
  assert.equal(keys.get(mr1.keyId), undefined);
  assert.match(keys.refusal!, /^client mr1's key \w+ was revoked$/);
  assert.equal(registry.clientOf(mr1.keyId), "mr1");
  assert.deepEqual(s.events.at(-1), {
    event: "client_revoked",
    fields: { client: "mr1", key_ids: [mr1.keyId] },
  });

  await Deno.rename(s.file, `${s.file}.moved`);
  await registry.poll();
  assert.equal(registry.identify(mr2.keyId, "127.0.0.1")?.name, "mr2", "nobody revoked");
  assert.match(
    s.log.lines.at(-1)!,
    /^ERROR CLIENT_KEYS_FILE .* is gone; keeping the 2 client\(s\)/,
  );
  await Deno.rename(`${s.file}.moved`, s.file);
  await Deno.writeTextFile(s.file, "");
  await registry.poll();
  assert.equal(registry.identify(mr2.keyId, "127.0.0.1"), undefined);
  assert.equal(registry.identify(s.shared.id, "127.0.0.1")?.name, "default");
});

Deno.test("a client file others can write is refused at start, and kept out at a reload; one others can read is warned", async () => {
  await using s = await site();
  const mr1 = await addClient(s.file, { name: "mr1", now: new Date() });
  await Deno.chmod(s.file, 0o662);
  await assert.rejects(
    () => s.open(),
    (error: Error) =>
      error instanceof ConfigError &&
      /^CLIENT_KEYS_FILE \S+ can be written by other users \(mode 0662\): anyone who can write it can give themselves an admin key; run chmod go-w /
        .test(error.message),
  );
  await Deno.chmod(s.file, 0o600);
  using registry = disposable(await s.open());
  const mr2 = await addClient(s.file, { name: "mr2", now: new Date() });
  await Deno.chmod(s.file, 0o620);
  await registry.poll();
  assert.equal(registry.identify(mr2.keyId, "127.0.0.1"), undefined, "not from a 0620 file");
  assert.equal(registry.identify(mr1.keyId, "127.0.0.1")?.name, "mr1", "the last good set");
  assert.match(s.log.lines.at(-1)!, /^ERROR .*mode 0620.*keeping the 2 client\(s\) read before/);
  await Deno.chmod(s.file, 0o604);
  await registry.poll();
  assert.equal(registry.identify(mr2.keyId, "127.0.0.1")?.name, "mr2");
  assert.ok(
    s.log.lines.some((line) =>
      /^WARN CLIENT_KEYS_FILE .* holds every client's key but other users can read it \(mode 0604/
        .test(line)
    ),
    s.log.lines.join("\n"),
  );
  // Another user's file (not root's, not ours): they could add a key of their own.
  await Deno.chmod(s.file, 0o600);
  await Deno.chown(s.file, NOBODY, null);
  await registry.poll();
  assert.match(s.log.lines.at(-1)!, /^ERROR CLIENT_KEYS_FILE .* belongs to uid 65534/);
});

Deno.test("a rotation's old key works until its expires, then retires once; dropping it afterwards is no revocation", async () => {
  await using s = await site();
  const first = await addClient(s.file, { name: "mr1", now: new Date(s.now()) });
  using registry = disposable(await s.open());
  const { current } = await rotateClient(s.file, "mr1", {
    graceSeconds: 60,
    now: new Date(s.now()),
  });
  await registry.poll();
  assert.equal(s.events.at(-1)!.event, "client_rotated");
  assert.equal(registry.identify(first.keyId, "127.0.0.1")?.name, "mr1");
  assert.equal(registry.identify(current.keyId, "127.0.0.1")?.name, "mr1");
  s.advance(61_000);
  await registry.poll();
  assert.equal(registry.identify(first.keyId, "127.0.0.1"), undefined);
  assert.deepEqual(s.events.at(-1)!.event, "client_key_retired");
  const before = s.events.length;
  await registry.poll();
  assert.equal(s.events.length, before, "retired once");
  // The next edit drops the retired line: no client_revoked for it.
  const text = await Deno.readTextFile(s.file);
  await Deno.writeTextFile(
    s.file,
    text.split("\n").filter((l) => !l.includes(first.keyId)).join("\n"),
  );
  await registry.poll();
  assert.deepEqual(s.events.slice(before), []);
});

Deno.test("diffClients: added, rotated, changed, revoked, and a retiring key removed early is revoked", () => {
  const key = (keyId: string, client: string, flags = "", expires?: string): KnownKey => ({
    keyId,
    client,
    flags,
    ...(expires ? { expires } : {}),
  });
  const now = Date.parse("2026-12-01T10:00:00Z");
  const before = new Map([
    ["a1", key("a1", "mr1")],
    ["a0", key("a0", "mr1", "", "2026-12-05T00:00:00Z")],
    ["b1", key("b1", "mr2")],
    ["c1", key("c1", "mr3")],
  ]);
  const after = [
    key("a2", "mr1"),
    key("a1", "mr1", "", "2026-12-08T00:00:00Z"),
    key("b1", "mr2", "admin"),
    key("d1", "mr4"),
  ];
  assert.deepEqual(diffClients(before, after, now).map((e) => [e.event, e.fields.client]), [
    ["client_rotated", "mr1"],
    ["client_revoked", "mr1"],
    ["client_changed", "mr2"],
    ["client_added", "mr4"],
    ["client_revoked", "mr3"],
  ]);
});

function disposable(registry: ClientRegistry): ClientRegistry & Disposable {
  return Object.assign(registry, { [Symbol.dispose]: () => registry.close() });
}
