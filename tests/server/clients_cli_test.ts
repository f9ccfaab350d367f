/**
 * `recon-server clients add|list|revoke|rotate` through bin/recon-server (issue 14),
 * against a site in a temporary directory: what each command prints and writes, the
 * retiring line a rotation leaves (until now + KEY_ROTATION_GRACE), the refusals (an
 * existing or reserved name, a malformed client file named by file and line, a
 * symbolic link), concurrent edits that all land, and a file that keeps its mode,
 * owner and group through root's edits (a new one: recon.opts's owner and group, its
 * mode masked with 0640). No output but add's and rotate's SHARED_KEY line ever shows a
 * key. Also: a name given again after a revocation (the warning, LAST SEEN's former
 * key), `rotate --grace` capping every older key, a client file the server would refuse
 * (others can write it, another owner than root or recon.opts'), the SERVER_HOST
 * suggested and DEPLOY.md's sample of it, and a missing recon.opts for clients, audit
 * and backup.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { decodeKey, generateKey, keyId } from "../../lib/crypto/keys.ts";
import { type ClientKey, parseClientFile } from "../../lib/server/client_keys.ts";
import { JobStore } from "../../lib/server/job_store.ts";
import { keygen, ROOT, run, type RunResult, SERVER_BIN, tempDir } from "../support/e2e.ts";

const NOBODY = 65534;
const NOGROUP = 65533;

/** A server's site: recon.opts (with SHARED_KEY) in a temporary directory. */
async function site(extra: string[] = []) {
  const dir = await tempDir("recon_clients_");
  const optsPath = path.join(dir.path, "recon.opts");
  const stateDir = path.join(dir.path, "state");
  const sharedKey = await keygen();
  await Deno.writeTextFile(
    optsPath,
    [
      `SHARED_KEY = ${sharedKey}`,
      `RECON_FILEPATH = ${path.join(dir.path, "jobs")}`,
      `RECON_DICOM_DIR = ${path.join(dir.path, "results")}`,
      `RECON_STATE_DIR = ${stateDir}`,
      "SERVER_HOST = 0.0.0.0",
      "SERVER_PORT = 8765",
      ...extra,
    ].join("\n") + "\n",
    { mode: 0o600 },
  );
  return {
    dir: dir.path,
    optsPath,
    stateDir,
    sharedKey,
    sharedKeyId: await keyId(decodeKey(sharedKey)),
    file: path.join(dir.path, "recon-clients"),
    clients: (...args: string[]) => run(SERVER_BIN, ["clients", ...args, "--opts", optsPath]),
    [Symbol.asyncDispose]: dir[Symbol.asyncDispose],
  };
}

/** What `add` or `rotate` printed: the key and its id, checked against each other. */
async function printedKey(result: RunResult, name: string): Promise<{ key: string; id: string }> {
  assert.equal(result.code, 0, result.stderr);
  const lines = result.stdout.split("\n");
  const header = new RegExp(
    `^# recon\\.opts lines for client ${name} \\(key id ([0-9a-f]{16})\\), made ` +
      `(\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ) on ${Deno.hostname()}$`,
  ).exec(lines[0]);
  assert.ok(header, result.stdout);
  const key = /^SHARED_KEY = ([A-Za-z0-9_-]{43}=)$/.exec(lines[1])?.[1];
  assert.ok(key, result.stdout);
  assert.equal(await keyId(decodeKey(key)), header[1], "the key id printed is the key's");
  assert.deepEqual(lines.slice(2, 5), [
    "# and, unless its recon.opts has them already, where this server listens:",
    `# SERVER_HOST = ${Deno.hostname()}`,
    "# SERVER_PORT = 8765",
  ]);
  return { key, id: header[1] };
}

async function readKeys(file: string): Promise<ClientKey[]> {
  return await parseClientFile(await Deno.readTextFile(file), file);
}

/** Whether `text` holds 8 or more consecutive characters of any of `keys`. */
function showsKey(text: string, keys: readonly string[]): boolean {
  return keys.some((key) => {
    for (let i = 0; i + 8 <= key.length; i++) if (text.includes(key.slice(i, i + 8))) return true;
    return false;
  });
}

Deno.test("a new client file of a 0640 root:recon recon.opts is 0640 root:recon too, so the server reads it through its group", async () => {
  await using s = await site();
  await Deno.chown(s.optsPath, 0, NOGROUP);
  await Deno.chmod(s.optsPath, 0o644);
  await printedKey(await s.clients("add", "mr1"), "mr1");
  const stat = await Deno.stat(s.file);
  // Group read like recon.opts; others never, whatever recon.opts grants them.
  assert.equal(stat.mode! & 0o777, 0o640);
  assert.equal(stat.uid, 0);
  assert.equal(stat.gid, NOGROUP);
  // An edit keeps what it found.
  await printedKey(await s.clients("rotate", "mr1"), "mr1");
  assert.equal((await Deno.stat(s.file)).mode! & 0o777, 0o640);
  assert.equal((await Deno.stat(s.file)).gid, NOGROUP);
});

Deno.test("clients add prints the client's recon.opts lines and writes a 0600 file owned like recon.opts", async () => {
  await using s = await site();
  await Deno.chown(s.optsPath, NOBODY, NOGROUP);
  const before = Date.now();
  const result = await s.clients("add", "mr1", "--admin", "--high-priority");
  const { key, id } = await printedKey(result, "mr1");
  assert.equal(result.stdout.split("\n").length, 6, "five lines and the final newline");
  assert.equal(
    result.stderr,
    `recon-server: wrote ${s.file} (client mr1 added); a running recon-server picks it up within a second\n`,
  );

  const stat = await Deno.stat(s.file);
  assert.equal(stat.mode! & 0o777, 0o600);
  assert.equal(stat.uid, NOBODY);
  assert.equal(stat.gid, NOGROUP);
  const text = await Deno.readTextFile(s.file);
  assert.match(text, /^# recon-clients: the client keys recon-server accepts/);
  const [added, ...rest] = await readKeys(s.file);
  assert.deepEqual(rest, []);
  assert.equal(added.name, "mr1");
  assert.equal(added.key, key);
  assert.equal(added.keyId, id);
  assert.equal(added.admin, true);
  assert.equal(added.highPriority, true);
  assert.equal(added.expires, undefined);
  const created = Date.parse(added.created);
  assert.ok(created >= Math.floor(before / 1000) * 1000 && created <= Date.now(), added.created);
  assert.match(result.stdout, new RegExp(`made ${added.created} on`));
});

Deno.test("clients list shows default and each client with last seen and jobs; --json the same, never a key", async () => {
  await using s = await site();
  const mr1 = await printedKey(await s.clients("add", "mr1", "--admin"), "mr1");
  const mr2 = await printedKey(
    await s.clients("add", "mr2", "--from", "10.0.0.5, 10.0.1.0/24", "--deliver", "pacs,Research"),
    "mr2",
  );
  const [key1, key2] = await readKeys(s.file);
  const seenAt = Date.parse("2026-12-02T08:00:01Z");
  const store = JobStore.open(s.stateDir, { now: () => seenAt });
  try {
    for (const client of ["mr1", "mr1", "default"]) {
      const id = crypto.randomUUID();
      store.createReceiving({
        id,
        priority: "normal",
        client,
        peer: "10.0.0.5:4000",
        keyId: mr1.id,
        options: {},
        inputDir: `/i/${id}`,
        outputDir: `/o/${id}`,
        logPath: `/l/${id}`,
        files: [{ name: "P1.7", size: 100 }],
        uploadExpiresAt: seenAt + 3600_000,
      });
    }
    store.clientSeen("mr1", mr1.id, "10.0.0.5");
  } finally {
    store.close();
  }

  const text = await s.clients("list");
  assert.equal(text.code, 0, text.stderr);
  assert.equal(text.stderr, "");
  const lines = text.stdout.trimEnd().split("\n");
  assert.equal(lines.length, 4, text.stdout);
  assert.match(lines[0], /^NAME +KEY ID +CREATED +LAST SEEN +JOBS +FLAGS$/);
  assert.match(
    lines[1],
    new RegExp(`^default +${s.sharedKeyId} +- +never +1 +admin,high-priority$`),
  );
  assert.match(
    lines[2],
    new RegExp(
      `^mr1 +${mr1.id} +${key1.created} +2026-12-02T08:00:01Z from 10\\.0\\.0\\.5 +2 +admin$`,
    ),
  );
  assert.match(
    lines[3],
    new RegExp(
      `^mr2 +${mr2.id} +${key2.created} +never +0 +` +
        `from="10\\.0\\.0\\.5,10\\.0\\.1\\.0/24",deliver="PACS,RESEARCH"$`,
    ),
  );
  // The columns line up.
  for (const column of ["KEY ID", "CREATED", "LAST SEEN", "JOBS", "FLAGS"]) {
    const at = lines[0].indexOf(column);
    for (const row of lines.slice(1)) assert.notEqual(row[at - 1], undefined);
    for (const row of lines.slice(1)) assert.match(row.slice(at - 2, at), /^ {2}$/, column);
  }

  const json = await s.clients("list", "--json");
  assert.equal(json.code, 0, json.stderr);
  assert.deepEqual(JSON.parse(json.stdout), [
    {
      name: "default",
      key_id: s.sharedKeyId,
      created: null,
      jobs: 1,
      admin: true,
      high_priority: true,
      from: [],
      deliver: [],
      retiring: [],
    },
    {
      name: "mr1",
      key_id: mr1.id,
      created: key1.created,
      last_seen: "2026-12-02T08:00:01Z",
      last_address: "10.0.0.5",
      last_key_id: mr1.id,
      jobs: 2,
      admin: true,
      high_priority: false,
      from: [],
      deliver: [],
      retiring: [],
    },
    {
      name: "mr2",
      key_id: mr2.id,
      created: key2.created,
      jobs: 0,
      admin: false,
      high_priority: false,
      from: ["10.0.0.5", "10.0.1.0/24"],
      deliver: ["PACS", "RESEARCH"],
      retiring: [],
    },
  ]);
  const keys = [s.sharedKey, mr1.key, mr2.key];
  for (const output of [text.stdout, json.stdout]) assert.equal(showsKey(output, keys), false);
});

Deno.test("clients list without SHARED_KEY and without clients says so; without a store shows no activity", async () => {
  await using s = await site();
  const opts = await Deno.readTextFile(s.optsPath);
  await Deno.writeTextFile(s.optsPath, opts.replace(/^SHARED_KEY = .*$/m, "SHARED_KEY ="));
  const none = await s.clients("list");
  assert.equal(none.code, 0, none.stderr);
  assert.equal(
    none.stdout,
    "no clients: SHARED_KEY is not set and the client file has none " +
      "(add one with 'recon-server clients add NAME')\n",
  );
  assert.equal((await s.clients("list", "--json")).stdout, "[]\n");
  await assert.rejects(Deno.lstat(s.file), Deno.errors.NotFound, "list creates nothing");
  await assert.rejects(Deno.lstat(s.stateDir), Deno.errors.NotFound, "nor a job store");
});

Deno.test("clients rotate keeps the flags, and the old key as a retiring line until now + KEY_ROTATION_GRACE", async () => {
  await using s = await site(["KEY_ROTATION_GRACE = 2h"]);
  const old = await printedKey(
    await s.clients("add", "mr1", "--high-priority", "--from", "10.0.0.5"),
    "mr1",
  );
  await printedKey(await s.clients("add", "mr2"), "mr2");
  const rotated = await s.clients("rotate", "mr1");
  const fresh = await printedKey(rotated, "mr1");
  assert.notEqual(fresh.key, old.key);
  assert.equal(
    rotated.stderr,
    `recon-server: wrote ${s.file} (client mr1: new key id ${fresh.id}); a running recon-server ` +
      "picks it up within a second\n",
  );

  const [current, retiring, mr2] = await readKeys(s.file);
  assert.equal(mr2.name, "mr2");
  assert.deepEqual(
    [current.name, current.keyId, current.key, current.expires],
    ["mr1", fresh.id, fresh.key, undefined],
  );
  assert.deepEqual(
    [retiring.name, retiring.keyId, retiring.key],
    ["mr1", old.id, old.key],
  );
  for (const key of [current, retiring]) {
    assert.equal(key.highPriority, true);
    assert.equal(key.admin, false);
    assert.deepEqual(key.from, ["10.0.0.5"]);
  }
  assert.equal(Date.parse(retiring.expires!) - Date.parse(current.created), 2 * 3600_000);
  assert.match(
    rotated.stdout,
    new RegExp(
      `\n# the old key \\(key id ${old.id}\\) works until ${retiring.expires} ` +
        `\\(KEY_ROTATION_GRACE 2h\\)\n$`,
    ),
  );

  const list = await s.clients("list");
  assert.match(list.stdout, new RegExp(`\n {9}${old.id} +expires ${retiring.expires}\nmr2 `));
  const json = JSON.parse((await s.clients("list", "--json")).stdout);
  assert.deepEqual(json[1].retiring, [{ key_id: old.id, expires: retiring.expires }]);
  assert.equal(json[1].key_id, fresh.id);

  // A second rotation: the older key keeps its own time.
  const again = await printedKey(await s.clients("rotate", "mr1"), "mr1");
  const after = await readKeys(s.file);
  assert.deepEqual(after.map((key) => key.keyId), [again.id, fresh.id, old.id, mr2.keyId]);
  assert.equal(after[2].expires, retiring.expires);
});

Deno.test("clients rotate with KEY_ROTATION_GRACE 0 drops the old key, and every edit drops expired ones", async () => {
  await using s = await site(["KEY_ROTATION_GRACE = 0"]);
  const old = await printedKey(await s.clients("add", "mr1"), "mr1");
  const rotated = await s.clients("rotate", "mr1");
  const fresh = await printedKey(rotated, "mr1");
  assert.match(
    rotated.stdout,
    new RegExp(
      `\n# the old key \\(key id ${old.id}\\) no longer works \\(KEY_ROTATION_GRACE 0s\\)\n$`,
    ),
  );
  assert.deepEqual((await readKeys(s.file)).map((key) => key.keyId), [fresh.id]);

  // A retiring line whose time is up, written by an older edit: the next edit drops it.
  const otherText = generateKey();
  const otherId = await keyId(decodeKey(otherText));
  const text = await Deno.readTextFile(s.file);
  await Deno.writeTextFile(
    s.file,
    `${text}mr1 ${otherId} ${otherText} 2020-01-01T00:00:00Z expires=2020-01-08T00:00:00Z\n`,
  );
  assert.equal((await readKeys(s.file)).length, 2);
  const list = JSON.parse((await s.clients("list", "--json")).stdout);
  assert.deepEqual(list[1].retiring, [], "an expired key is not listed as working");
  await printedKey(await s.clients("add", "mr2"), "mr2");
  assert.deepEqual((await readKeys(s.file)).map((key) => key.name), ["mr1", "mr2"]);
  assert.ok(!(await Deno.readTextFile(s.file)).includes(otherId));
});

Deno.test("clients revoke removes every key of the client and says which; then it is unknown", async () => {
  await using s = await site();
  const old = await printedKey(await s.clients("add", "mr1"), "mr1");
  const fresh = await printedKey(await s.clients("rotate", "mr1"), "mr1");
  const mr2 = await printedKey(await s.clients("add", "mr2"), "mr2");
  const expires = (await readKeys(s.file))[1].expires;

  const revoked = await s.clients("revoke", "mr1");
  assert.equal(revoked.code, 0, revoked.stderr);
  assert.equal(
    revoked.stdout,
    `revoked client mr1: removed key id ${fresh.id} (current), key id ${old.id} (retiring, until ${expires})\n`,
  );
  assert.equal(
    revoked.stderr,
    `recon-server: wrote ${s.file}; a running recon-server refuses mr1 and closes its sessions ` +
      "within a second (its queued jobs stay)\n",
  );
  assert.deepEqual((await readKeys(s.file)).map((key) => key.keyId), [mr2.id]);
  assert.equal(showsKey(revoked.stdout + revoked.stderr, [old.key, fresh.key, mr2.key]), false);

  for (const args of [["revoke", "mr1"], ["rotate", "mr1"]]) {
    const again = await s.clients(...args);
    assert.equal(again.code, 2);
    assert.equal(
      again.stderr,
      `recon-server: error: there is no client mr1 in ${s.file}\n` +
        "hint: 'recon-server clients list' shows the clients\n",
    );
  }
  const shared = await s.clients("revoke", "default");
  assert.equal(shared.code, 2);
  assert.equal(
    shared.stderr,
    `recon-server: error: default is the SHARED_KEY in recon.opts, not a client in ${s.file}\n` +
      "hint: to retire it, give every client its own key, then remove SHARED_KEY from recon.opts\n",
  );
});

Deno.test("clients add refuses an existing, reserved or bad name and bad --from/--deliver, changing nothing", async () => {
  await using s = await site();
  await printedKey(await s.clients("add", "mr1"), "mr1");
  const before = await Deno.readTextFile(s.file);
  const refusals: [string[], string[]][] = [
    [["add", "mr1", "--admin"], [
      `recon-server: error: client mr1 already exists (${s.file}:3)`,
      "hint: give it a new key with 'recon-server clients rotate mr1', or pick another name",
    ]],
    [["add", "default"], [
      "recon-server: error: the name default is reserved for SHARED_KEY in recon.opts",
      "hint: pick another name",
    ]],
    [["add", "MR2"], [
      `recon-server: error: client name "MR2" is not valid: 1 to 63 characters of a-z, 0-9, ` +
      `'.', '_' and '-', starting with a letter or digit`,
      "hint: see 'recon-server clients --help'",
    ]],
    [["add", "m".repeat(64)], [
      "recon-server: error: a client name of 64 characters (not shown) is not valid: 1 to 63 " +
      "characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
      "hint: see 'recon-server clients --help'",
    ]],
    [["add", "mr2", "--from", "10.0.0.5,scanner.local"], [
      'recon-server: error: --from entry "scanner.local" is not an IP address',
    ]],
    [["add", "mr2", "--from", "10.0.0.300"], [
      'recon-server: error: --from entry "10.0.0.300" is not an IP address',
    ]],
    [["add", "mr2", "--from", ""], ["recon-server: error: --from needs at least one address"]],
    [["add", "mr2", "--deliver", "PACS-1"], [
      'recon-server: error: --deliver destination "PACS-1" is not valid: 1 to 32 letters and digits',
    ]],
    [["add", "mr2", "--grace", "0"], [
      "recon-server: error: --grace only goes with 'clients rotate'",
      "hint: see 'recon-server clients --help'",
    ]],
    [["rotate", "mr1", "--grace", "soon"], [
      'recon-server: error: --grace needs a duration like 90s, 30m, 12h, 7d or 0, got "soon"',
      "hint: 0 stops the old keys at once",
    ]],
    [["add"], [
      "recon-server: error: clients add takes one NAME",
      "hint: recon-server clients add NAME [--opts PATH]",
    ]],
    [["list", "--admin"], [
      "recon-server: error: --admin only goes with 'clients add'",
      "hint: see 'recon-server clients --help'",
    ]],
    [["rotate", "mr1", "--json"], [
      "recon-server: error: --json only goes with 'clients list'",
      "hint: see 'recon-server clients --help'",
    ]],
    [["remove", "mr1"], [
      'recon-server: error: unknown clients command "remove" (known: add, list, revoke, rotate)',
      "hint: see 'recon-server clients --help'",
    ]],
    [["add", "mr2", "--admn"], [
      "recon-server: error: unknown option --admn (did you mean --admin?)",
      "hint: see 'recon-server clients --help'",
    ]],
  ];
  for (const [args, expected] of refusals) {
    const result = await s.clients(...args);
    assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
    assert.deepEqual(result.stderr.trimEnd().split("\n"), expected, args.join(" "));
    assert.equal(result.stdout, "");
  }
  assert.equal(await Deno.readTextFile(s.file), before);
});

Deno.test("every clients command refuses a malformed client file, naming file and line, and changes nothing", async () => {
  await using s = await site();
  const mr1 = await printedKey(await s.clients("add", "mr1"), "mr1");
  const text = await Deno.readTextFile(s.file);
  const badFiles: [string, string][] = [
    // The key of mr1 under another key's id.
    [
      `${text}mr2 0123456789abcdef ${mr1.key} 2026-12-01T19:42:00Z\n`,
      `${s.file}:4: key id 0123456789abcdef does not match the key on this line`,
    ],
    [
      `${text}mr2 ${mr1.id} ${mr1.key} 2026-12-01T19:42:00Z\n`,
      `${s.file}:4: key id ${mr1.id} is already on line 3`,
    ],
    [
      `${text}mr2 ${mr1.id} ${mr1.key} 2026-12-01T19:42:00Z admin,${mr1.key}\n`,
      `${s.file}:4: an unknown flag of 43 characters (not shown) (known: admin, high-priority, ` +
      'from="…", deliver="…", expires=…)',
    ],
  ];
  // SHARED_KEY's own key in the client file.
  const sharedLine = `mr3 ${s.sharedKeyId} ${s.sharedKey} 2026-12-01T19:42:00Z\n`;
  badFiles.push([
    `${text}${sharedLine}`,
    `${s.file}:4: key id ${s.sharedKeyId} is SHARED_KEY's in recon.opts (the client default); ` +
    "give each client its own key",
  ]);
  for (const [bad, message] of badFiles) {
    await Deno.writeTextFile(s.file, bad);
    for (const args of [["list"], ["add", "mr9"], ["rotate", "mr1"], ["revoke", "mr1"]]) {
      const result = await s.clients(...args);
      assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
      assert.deepEqual(result.stderr.split("\n"), [
        `recon-server: error: ${message}`,
        "hint: fix or remove line 4 by hand, then run this again; until then a running " +
        "recon-server keeps the keys it last read",
        "",
      ], args.join(" "));
      assert.equal(result.stdout, "");
      assert.equal(showsKey(result.stderr, [mr1.key, s.sharedKey]), false, result.stderr);
      assert.equal(await Deno.readTextFile(s.file), bad, `${args.join(" ")} changed nothing`);
    }
  }
});

Deno.test("clients edits keep the file's mode, owner and group, and leave no temporary file", async () => {
  await using s = await site();
  await printedKey(await s.clients("add", "mr1"), "mr1");
  // A server that runs as nobody:nogroup, as recon.opts' owner says.
  await Deno.chown(s.optsPath, NOBODY, NOGROUP);
  await Deno.chmod(s.file, 0o640);
  await Deno.chown(s.file, NOBODY, NOGROUP);
  for (const args of [["rotate", "mr1"], ["add", "mr2", "--admin"], ["revoke", "mr2"]]) {
    const result = await s.clients(...args);
    assert.equal(result.code, 0, `${args.join(" ")}: ${result.stderr}`);
    const stat = await Deno.stat(s.file);
    assert.equal(stat.mode! & 0o7777, 0o640, args.join(" "));
    assert.equal(stat.uid, NOBODY, args.join(" "));
    assert.equal(stat.gid, NOGROUP, args.join(" "));
  }
  const names = [];
  for await (const entry of Deno.readDir(s.dir)) names.push(entry.name);
  assert.deepEqual(names.sort(), ["recon-clients", "recon.opts"]);
});

Deno.test("clients add run eight times at once: the lock keeps every client", async () => {
  await using s = await site();
  const names = Array.from({ length: 8 }, (_, i) => `mr${i + 1}`);
  const results = await Promise.all(names.map((name) => s.clients("add", name)));
  for (const result of results) assert.equal(result.code, 0, result.stderr);
  const keys = await readKeys(s.file);
  assert.deepEqual(keys.map((key) => key.name).sort(), names);
  for (const [i, result] of results.entries()) {
    const printed = await printedKey(result, names[i]);
    assert.equal(keys.find((key) => key.name === names[i])!.key, printed.key);
  }
});

Deno.test("clients edits refuse a client file that is a symbolic link, and a missing recon.opts", async () => {
  await using s = await site();
  const target = path.join(s.dir, "elsewhere");
  await Deno.writeTextFile(target, "", { mode: 0o600 });
  await Deno.symlink(target, s.file);
  const result = await s.clients("add", "mr1");
  assert.equal(result.code, 2);
  assert.equal(
    result.stderr,
    `recon-server: error: ${s.file} is a symbolic link; an edit would replace the link\n` +
      "hint: set CLIENT_KEYS_FILE in recon.opts to the file it points to\n",
  );
  assert.equal(await Deno.readTextFile(target), "");

  const missing = path.join(s.dir, "other", "recon.opts");
  const noOpts = await run(SERVER_BIN, ["clients", "add", "mr1", "--opts", missing]);
  assert.equal(noOpts.code, 2);
  assert.match(noOpts.stderr, /^recon-server: error: recon\.opts .* does not exist$/m);
  await assert.rejects(Deno.lstat(path.join(s.dir, "other")), Deno.errors.NotFound);
});

Deno.test("CLIENT_KEYS_FILE names the client file, and the options may come before 'clients'", async () => {
  await using s = await site();
  const file = path.join(s.dir, "keys", "scanners");
  await Deno.mkdir(path.dirname(file), { mode: 0o700 });
  await Deno.writeTextFile(s.optsPath, `CLIENT_KEYS_FILE = keys/scanners\n`, { append: true });
  const result = await run(SERVER_BIN, ["--opts", s.optsPath, "clients", "add", "mr1"]);
  const printed = await printedKey(result, "mr1");
  assert.match(result.stderr, new RegExp(`wrote ${file} \\(client mr1 added\\)`));
  assert.equal((await readKeys(file))[0].keyId, printed.id);
  await assert.rejects(Deno.lstat(s.file), Deno.errors.NotFound);
});

Deno.test("recon-server clients --help describes every command; recon-server --help names it", async () => {
  const help = await run(SERVER_BIN, ["clients", "--help"]);
  assert.equal(help.code, 0, help.stderr);
  for (
    const usage of [
      /^ {2}recon-server clients add NAME \[--admin\] \[--high-priority\] \[--from LIST\]$/m,
      /^ {2}recon-server clients list \[--json\] \[--opts PATH\]$/m,
      /^ {2}recon-server clients revoke NAME \[--opts PATH\]$/m,
      /^ {2}recon-server clients rotate NAME \[--grace DURATION\] \[--opts PATH\]$/m,
      /^ {2}--grace DURATION how long the old keys keep working instead of KEY_ROTATION_GRACE:$/m,
      /KEY_ROTATION_GRACE \(default 7d\)/,
      /CLIENT_KEYS_FILE/,
    ]
  ) {
    assert.match(help.stdout, usage);
  }
  const main = await run(SERVER_BIN, ["--help"]);
  assert.match(
    main.stdout,
    /^ {2}recon-server clients add\|list\|revoke\|rotate \.\.\. \[--opts PATH\]$/m,
  );
  assert.match(main.stdout, /See 'recon-server clients --help'/);
  const bare = await run(SERVER_BIN, ["clients"]);
  assert.equal(bare.code, 2);
  assert.equal(
    bare.stderr,
    "recon-server: error: clients needs a command: add, list, revoke, rotate\n" +
      "hint: see 'recon-server clients --help'\n",
  );
});

/** Jobs of `client` submitted with `keyId`, and its last handshake, in the site's job store. */
function recordActivity(
  stateDir: string,
  at: number,
  activity: { client: string; keyId: string; jobs?: number; address?: string },
): void {
  const store = JobStore.open(stateDir, { now: () => at });
  try {
    for (let i = 0; i < (activity.jobs ?? 0); i++) {
      const id = crypto.randomUUID();
      store.createReceiving({
        id,
        priority: "normal",
        client: activity.client,
        peer: "10.0.0.5:4000",
        keyId: activity.keyId,
        options: {},
        inputDir: `/i/${id}`,
        outputDir: `/o/${id}`,
        logPath: `/l/${id}`,
        files: [{ name: "P1.7", size: 100 }],
        uploadExpiresAt: at + 3600_000,
      });
    }
    if (activity.address) store.clientSeen(activity.client, activity.keyId, activity.address);
  } finally {
    store.close();
  }
}

Deno.test("clients add of a revoked name warns that the new key owns the old jobs; list names the key LAST SEEN was with", async () => {
  await using s = await site();
  const stolen = await printedKey(await s.clients("add", "mr1"), "mr1");
  const seenAt = Date.parse("2026-12-02T08:00:01Z");
  recordActivity(s.stateDir, seenAt, {
    client: "mr1",
    keyId: stolen.id,
    jobs: 3,
    address: "10.0.0.5",
  });
  assert.equal((await s.clients("revoke", "mr1")).code, 0);

  const again = await s.clients("add", "mr1");
  const fresh = await printedKey(again, "mr1");
  assert.equal(
    again.stderr,
    `recon-server: wrote ${s.file} (client mr1 added); a running recon-server picks it up within a second\n` +
      "recon-server: warning: mr1 had 3 jobs in the job store (last seen 2026-12-02T08:00:01Z " +
      `from 10.0.0.5 with key id ${stolen.id}); the new key owns them and can list, fetch and ` +
      "cancel them: for a new machine, revoke mr1 and pick another name\n",
  );
  const [current] = await readKeys(s.file);
  const list = await s.clients("list");
  assert.equal(list.code, 0, list.stderr);
  assert.match(
    list.stdout,
    new RegExp(
      `\nmr1 +${fresh.id} +${current.created} +2026-12-02T08:00:01Z from 10\\.0\\.0\\.5 ` +
        `\\(former key ${stolen.id}\\) +3 +-\n`,
    ),
  );
  const json = JSON.parse((await s.clients("list", "--json")).stdout);
  assert.equal(json[1].key_id, fresh.id);
  assert.equal(json[1].last_key_id, stolen.id);

  // A name nobody had: no warning. Seen with its old key during a rotation: says so.
  const mr2 = await s.clients("add", "mr2");
  const old = await printedKey(mr2, "mr2");
  assert.doesNotMatch(mr2.stderr, /warning/);
  const rotated = await printedKey(await s.clients("rotate", "mr2"), "mr2");
  recordActivity(s.stateDir, seenAt, { client: "mr2", keyId: old.id, address: "10.0.1.7" });
  assert.match(
    (await s.clients("list")).stdout,
    new RegExp(
      `\nmr2 +${rotated.id} +\\S+ +2026-12-02T08:00:01Z from 10\\.0\\.1\\.7 ` +
        `\\(retiring key ${old.id}\\) +0 +-\n`,
    ),
  );
});

Deno.test("clients rotate --grace cuts every retiring key of the client to the new grace; --grace 0 stops them at once", async () => {
  await using s = await site(); // KEY_ROTATION_GRACE: the default 7d
  const first = await printedKey(await s.clients("add", "mr1"), "mr1");
  await printedKey(await s.clients("add", "mr2"), "mr2");
  const mr2Old = (await readKeys(s.file))[1].keyId;
  await printedKey(await s.clients("rotate", "mr2"), "mr2");
  const second = await printedKey(await s.clients("rotate", "mr1"), "mr1");
  const weekLater = (await readKeys(s.file)).find((key) => key.keyId === first.id)!.expires!;

  const short = await s.clients("rotate", "mr1", "--grace", "10s");
  const third = await printedKey(short, "mr1");
  const keys = await readKeys(s.file);
  const byId = (id: string) => keys.find((key) => key.keyId === id)!;
  const soon = byId(second.id).expires!;
  assert.equal(Date.parse(soon) - Date.parse(byId(third.id).created), 10_000);
  assert.equal(byId(first.id).expires, soon, "the older key no longer works until +7d");
  assert.equal(byId(mr2Old).expires, weekLater.replace(/.*/, byId(mr2Old).expires!));
  assert.ok(Date.parse(byId(mr2Old).expires!) > Date.now() + 6 * 86400_000, "mr2 is untouched");
  assert.deepEqual(short.stdout.split("\n").slice(5), [
    `# the old key (key id ${second.id}) works until ${soon} (--grace 10s)`,
    `# the older key (key id ${first.id}) works until ${soon} (--grace 10s; it had until ${weekLater})`,
    "",
  ]);

  const now = await s.clients("rotate", "mr1", "--grace", "0");
  const fourth = await printedKey(now, "mr1");
  assert.deepEqual(now.stdout.split("\n").slice(5), [
    `# the old key (key id ${third.id}) no longer works (--grace 0s)`,
    `# the older key (key id ${second.id}) no longer works (--grace 0s; it had until ${soon})`,
    `# the older key (key id ${first.id}) no longer works (--grace 0s; it had until ${soon})`,
    "",
  ]);
  assert.deepEqual(
    (await readKeys(s.file)).filter((key) => key.name === "mr1").map((key) => key.keyId),
    [fourth.id],
  );
  assert.deepEqual(JSON.parse((await s.clients("list", "--json")).stdout)[1].retiring, []);
});

Deno.test("clients refuses a client file the server would refuse, the fix as hint, and warns of one others can read", async () => {
  await using s = await site();
  await printedKey(await s.clients("add", "mr1"), "mr1");
  const before = await Deno.readTextFile(s.file);
  const refused = async (expected: string[]) => {
    for (const args of [["list"], ["add", "mr2"], ["rotate", "mr1"], ["revoke", "mr1"]]) {
      const result = await s.clients(...args);
      assert.equal(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
      assert.deepEqual(result.stderr.trimEnd().split("\n"), expected, args.join(" "));
      assert.equal(result.stdout, "");
      assert.equal(await Deno.readTextFile(s.file), before, `${args.join(" ")} changed nothing`);
    }
  };
  const until =
    " (until then a running recon-server ignores the file and keeps the keys it read before)";
  await Deno.chmod(s.file, 0o620);
  await refused([
    `recon-server: error: ${s.file} can be written by other users (mode 0620): anyone who can ` +
    "write it can give themselves an admin key",
    `hint: run chmod go-w ${s.file}${until}`,
  ]);
  // Owned by neither root nor the owner of recon.opts (the server's user).
  await Deno.chmod(s.file, 0o600);
  await Deno.chown(s.file, NOBODY, NOGROUP);
  await refused([
    `recon-server: error: ${s.file} belongs to uid ${NOBODY}, neither root nor the owner of ` +
    "recon.opts (uid 0), who could give themselves an admin key",
    `hint: run chown root ${s.file}${until}`,
  ]);
  // The owner of recon.opts: the server's user, accepted.
  await Deno.chown(s.optsPath, NOBODY, NOGROUP);
  const quiet = await s.clients("list");
  assert.deepEqual([quiet.code, quiet.stderr], [0, ""]);

  await Deno.chmod(s.file, 0o604);
  const warning = `recon-server: warning: ${s.file} holds every client's key but other users ` +
    `can read it (mode 0604, group ${NOGROUP}); run chmod 600 ${s.file}, or chmod 640 with ` +
    "the group of the user recon-server runs as\n";
  const list = await s.clients("list");
  assert.equal(list.code, 0, list.stderr);
  assert.equal(list.stderr, warning);
  const rotate = await s.clients("rotate", "mr1");
  assert.equal(rotate.code, 0, rotate.stderr);
  assert.ok(rotate.stderr.startsWith(warning), rotate.stderr);
});

Deno.test("clients add suggests SERVER_HOST as the server listens: as configured, the host name for every address", async () => {
  await using s = await site();
  const opts = await Deno.readTextFile(s.optsPath);
  for (
    const [listen, suggested] of [
      ["127.0.0.1", "127.0.0.1"],
      ["10.0.0.2", "10.0.0.2"],
      ["::", Deno.hostname()],
      ["0.0.0.0", Deno.hostname()],
    ]
  ) {
    await Deno.writeTextFile(
      s.optsPath,
      opts.replace("SERVER_HOST = 0.0.0.0", `SERVER_HOST = ${listen}`),
    );
    const name = `mr-${listen.replace(/[:.]/g, "x")}`;
    const result = await s.clients("add", name);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.split("\n")[3], `# SERVER_HOST = ${suggested}`, listen);
  }
});

Deno.test("docs/DEPLOY.md §9 shows what clients add really prints", async () => {
  const doc = await Deno.readTextFile(path.join(ROOT, "docs", "DEPLOY.md"));
  const start = doc.indexOf("   # recon.opts lines for client mr1");
  assert.ok(start > 0, "the sample is in DEPLOY.md");
  const sample = doc.slice(start, doc.indexOf("   ```", start)).replace(/^ {3}/gm, "");
  await using s = await site();
  const result = await s.clients("add", "mr1", "--high-priority");
  await printedKey(result, "mr1");
  const general = (text: string) =>
    text
      .replace(/\(key id [0-9a-f]{16}\)/, "(key id ID)")
      .replace(/made \S+ on \S+/, "made TIME on HOST")
      .replace(/^SHARED_KEY = .*$/m, "SHARED_KEY = KEY")
      .replace(/^# SERVER_HOST = .*$/m, "# SERVER_HOST = HOST");
  assert.equal(general(sample), general(result.stdout));
});

Deno.test("clients, audit and backup without the server's recon.opts ask for --opts, and create nothing", async () => {
  await using dir = await tempDir("recon_no_opts_");
  const missing = path.join(dir.path, "recon.opts");
  for (
    const args of [
      ["clients", "list"],
      ["clients", "add", "mr1"],
      ["audit"],
      ["audit", "--verify"],
      [
        "backup",
        "copy.sqlite",
      ],
    ]
  ) {
    const result = await run(SERVER_BIN, args, { cwd: dir.path });
    assert.equal(result.code, 2, args.join(" "));
    assert.equal(
      result.stderr,
      `recon-server: error: recon.opts ${missing} does not exist\n` +
        "hint: pass --opts with the server's recon.opts, e.g. --opts /etc/recon/recon.opts\n",
      args.join(" "),
    );
    assert.deepEqual([...Deno.readDirSync(dir.path)], [], `${args.join(" ")} created nothing`);
  }
});
