import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError } from "../../lib/errors.ts";
import { generateKey } from "../../lib/crypto/keys.ts";
import {
  DEFAULT_OPTS_TEXT,
  DEFAULTS,
  loadOpts,
  MAX_OPTS_BYTES,
  OPTION_DOCS,
  OPTION_NAMES,
  parseOpts,
  PLACEHOLDER_SHARED_KEY,
  redactedConfig,
  requireSharedKey,
} from "../../lib/opts/mod.ts";

const makeKey = generateKey;

/** A temporary directory removed when the test ends. */
async function tempDir(): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix: "recon_opts_test_" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

async function rejectsWithConfigError(
  promise: Promise<unknown>,
  message: RegExp,
): Promise<ConfigError> {
  let caught: unknown;
  try {
    await promise;
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError, got ${caught}`);
  assert.match(caught.message, message);
  return caught;
}

const repoFile = (path: string) => new URL(`../../${path}`, import.meta.url);

Deno.test("loadOpts() on a missing path creates the file with mode 0600 and a real key for the server", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "recon.opts");
  const key = makeKey();
  const loaded = await loadOpts(path, { role: "server", generateKey: () => key });
  assert.equal(loaded.created, true);
  assert.equal(loaded.path, path);
  assert.equal(loaded.config.SHARED_KEY, key);
  assert.equal(requireSharedKey(loaded.config, path), key);
  assert.deepEqual(loaded.warnings, []);
  const text = await Deno.readTextFile(path);
  assert.equal(
    text,
    DEFAULT_OPTS_TEXT.replace(`SHARED_KEY = ${PLACEHOLDER_SHARED_KEY}`, `SHARED_KEY = ${key}`),
  );
  if (Deno.build.os !== "windows") assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  const again = await loadOpts(path, { role: "server", generateKey: () => "unused" });
  assert.equal(again.created, false);
  assert.equal(again.config.SHARED_KEY, key);
  assert.deepEqual(again.warnings, []);
});

Deno.test("loadOpts() for a client creates the placeholder file and throws a ConfigError", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "recon.opts");
  const error = await rejectsWithConfigError(
    loadOpts(path, { role: "client", generateKey: () => assert.fail("a client makes no key") }),
    /^created a default recon.opts at .*recon\.opts; put the server's SHARED_KEY in it and run again$/,
  );
  assert.ok(error.message.includes(path));
  assert.equal(await Deno.readTextFile(path), DEFAULT_OPTS_TEXT);
  if (Deno.build.os !== "windows") assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  const again = await loadOpts(path, { role: "client", generateKey: () => "" });
  assert.equal(again.created, false);
  assert.equal(again.config.SHARED_KEY, PLACEHOLDER_SHARED_KEY);
  assert.throws(() => requireSharedKey(again.config, path), ConfigError);
});

Deno.test("loadOpts() with createIfMissing false creates nothing and names the path", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "recon.opts");
  await rejectsWithConfigError(
    loadOpts(path, { role: "server", createIfMissing: false, generateKey: makeKey }),
    new RegExp(`^recon\\.opts ${path} does not exist$`),
  );
  await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
  const error = await loadOpts(path, {
    role: "client",
    createIfMissing: false,
    generateKey: makeKey,
  }).then(() => undefined, (e) => e);
  assert.equal(
    error.hint,
    `run recon-client --opts ${path} once to create it, or copy recon.opts.example; either ` +
      "way it needs the server's SHARED_KEY",
  );
  await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
});

Deno.test("loadOpts() with createIfMissing false leaves a client's state directory uncreated", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "recon.opts");
  await Deno.writeTextFile(path, `SHARED_KEY = ${makeKey()}\n`, { mode: 0o600 });
  const state = join(dir.path, "state");
  const user = { uid: 4242, gid: 4242, env: { XDG_STATE_HOME: state } };
  const loaded = await loadOpts(path, {
    role: "client",
    createIfMissing: false,
    generateKey: makeKey,
    user,
  });
  assert.equal(loaded.config.LOG_FILEPATH, join(state, "recon", "recon-client.log"));
  await assert.rejects(Deno.lstat(state), Deno.errors.NotFound);
  await loadOpts(path, { role: "client", generateKey: makeKey, user });
  await Deno.lstat(join(state, "recon")); // a normal load makes it
});

Deno.test("loadOpts() of an unreadable path throws a ConfigError naming it", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "a-directory");
  await Deno.mkdir(path);
  await rejectsWithConfigError(
    loadOpts(path, { role: "server", generateKey: makeKey }),
    new RegExp(`^cannot read ${path}: `),
  );
});

Deno.test("loadOpts() in a missing directory throws a ConfigError naming it", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "no", "such", "recon.opts");
  await rejectsWithConfigError(
    loadOpts(path, { role: "server", generateKey: makeKey }),
    new RegExp(`cannot create ${path}: directory ${join(dir.path, "no", "such")} does not exist`),
  );
});

Deno.test("loadOpts() rejects a file that is not UTF-8 or is too big", async () => {
  await using dir = await tempDir();
  const binary = join(dir.path, "binary.opts");
  await Deno.writeFile(binary, new Uint8Array([0x6c, 0x6f, 0xff, 0xfe, 0x0a]));
  await rejectsWithConfigError(
    loadOpts(binary, { role: "server", generateKey: makeKey }),
    new RegExp(`^cannot read ${binary}: it is not UTF-8 text$`),
  );
  const big = join(dir.path, "big.opts");
  await Deno.writeTextFile(big, "#".repeat(MAX_OPTS_BYTES + 1));
  await rejectsWithConfigError(
    loadOpts(big, { role: "server", generateKey: makeKey }),
    /too big for recon.opts$/,
  );
});

Deno.test("loadOpts() names the file and line of a bad value", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "recon.opts");
  const lines = DEFAULT_OPTS_TEXT.split("\n");
  const port = lines.indexOf("60000");
  lines[port] = "60k";
  await Deno.writeTextFile(path, lines.join("\n"), { mode: 0o600 });
  await rejectsWithConfigError(
    loadOpts(path, { role: "server", generateKey: makeKey }),
    new RegExp(
      `^${path} line ${port + 1}: SERVER_PORT must be an integer from 1 to 65535, got "60k"$`,
    ),
  );
});

Deno.test("loadOpts() refuses an unknown option unless allowUnknownOptions", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "recon.opts");
  const text = DEFAULT_OPTS_TEXT.replace(PLACEHOLDER_SHARED_KEY, makeKey()) + "JOB_TIMOUT = 5\n";
  await Deno.writeTextFile(path, text, { mode: 0o600 });
  const line = DEFAULT_OPTS_TEXT.split("\n").length;
  await rejectsWithConfigError(
    loadOpts(path, { role: "server", generateKey: makeKey }),
    new RegExp(
      `^${path} line ${line}: unknown option "JOB_TIMOUT" \\(did you mean JOB_TIMEOUT\\?\\); ` +
        "fix the name or start with --allow-unknown-options$",
    ),
  );
  const loaded = await loadOpts(path, {
    role: "server",
    generateKey: makeKey,
    allowUnknownOptions: true,
  });
  assert.equal(loaded.config.JOB_TIMEOUT, DEFAULTS.JOB_TIMEOUT);
  assert.deepEqual(loaded.unknownOptions, [{
    line,
    name: "JOB_TIMOUT",
    suggestion: "JOB_TIMEOUT",
  }]);
  assert.deepEqual(loaded.warnings, [
    `${path} line ${line}: unknown option "JOB_TIMOUT" (did you mean JOB_TIMEOUT?) is kept but ` +
    "not used",
  ]);
});

Deno.test("loadOpts() resolves relative paths against the file's directory and returns warnings", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "recon.opts");
  const key = makeKey();
  await Deno.writeTextFile(
    path,
    DEFAULT_OPTS_TEXT.replace(PLACEHOLDER_SHARED_KEY, key) + "SITE_NAME = lab\n",
    { mode: 0o600 },
  );
  const loaded = await loadOpts(path, {
    role: "client",
    generateKey: makeKey,
    allowUnknownOptions: true,
  });
  assert.equal(loaded.created, false);
  assert.equal(loaded.config.CLIENT_DOWNLOAD_DIR, join(dir.path, "client_downloads"));
  assert.equal(loaded.config.RECON_SCRIPT, join(dir.path, "default_recon_script.sh"));
  assert.equal(loaded.config.CLIENT_DAEMON_STATE_FILE, join(dir.path, "recon-watch.sqlite"));
  assert.equal(loaded.config.RECON_FILEPATH, "/var/lib/recon/jobs");
  assert.equal(loaded.config.LOG_FILEPATH, "/var/log/recon/recon.log", "root: the default");
  assert.deepEqual(loaded.warnings, [
    `${path} line ${DEFAULT_OPTS_TEXT.split("\n").length}: unknown option "SITE_NAME" is kept ` +
    "but not used",
  ]);
  assert.equal(redactedConfig(loaded.config).SHARED_KEY, "<redacted>");
});

Deno.test("loadOpts() warns when other users can read a file holding a key", {
  ignore: Deno.build.os === "windows",
}, async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "recon.opts");
  await Deno.writeTextFile(path, `SHARED_KEY = ${makeKey()}\n`);
  await Deno.chmod(path, 0o644);
  const user = { uid: 0, gid: 0, env: {} };
  const loaded = await loadOpts(path, { role: "server", generateKey: makeKey, user });
  assert.deepEqual(loaded.warnings, [
    `${path} holds SHARED_KEY but other users can access it (mode 0644, group 0); run ` +
    `chmod 600 ${path}, or chmod 640 with the group of the user recon runs as`,
  ]);
  // 0640 with another group than the program's: that group's members hold the key.
  await Deno.chmod(path, 0o640);
  const otherGroup = await loadOpts(path, {
    role: "server",
    generateKey: makeKey,
    user: { ...user, gid: 999 },
  });
  assert.match(otherGroup.warnings.join("\n"), /mode 0640, group 0\); run chmod 600/);
});

Deno.test("loadOpts() is quiet about 0600, and about 0640 with the program's own group", {
  ignore: Deno.build.os === "windows",
}, async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "recon.opts");
  await Deno.writeTextFile(path, `SHARED_KEY = ${makeKey()}\n`);
  await Deno.chown(path, 0, 4242);
  const user = { uid: 4242, gid: 4242, env: {} };
  for (const mode of [0o600, 0o400, 0o640, 0o440]) {
    await Deno.chmod(path, mode);
    const loaded = await loadOpts(path, { role: "server", generateKey: makeKey, user });
    assert.deepEqual(loaded.warnings, [], mode.toString(8));
  }
  // Group-writable: a group member could change RECON_SCRIPT.
  await Deno.chmod(path, 0o660);
  const writable = await loadOpts(path, { role: "server", generateKey: makeKey, user });
  assert.equal(writable.warnings.length, 1);
});

Deno.test("loadOpts() for a client not run as root keeps its default files in its state directory", async () => {
  await using dir = await tempDir();
  const path = join(dir.path, "recon.opts");
  await Deno.writeTextFile(path, DEFAULT_OPTS_TEXT.replace(PLACEHOLDER_SHARED_KEY, makeKey()), {
    mode: 0o600,
  });
  const state = join(dir.path, "xdg-state");
  const user = { uid: 1000, gid: 1000, env: { XDG_STATE_HOME: state, HOME: "/home/u" } };
  const loaded = await loadOpts(path, { role: "client", generateKey: makeKey, user });
  assert.equal(loaded.config.LOG_FILEPATH, join(state, "recon", "recon-client.log"));
  assert.equal(loaded.config.CLIENT_DOWNLOAD_DIR, join(state, "recon", "downloads"));
  assert.equal(
    loaded.config.CLIENT_DAEMON_STATE_FILE,
    join(state, "recon", "recon-watch.sqlite"),
  );
  assert.equal((await Deno.stat(join(state, "recon"))).mode! & 0o777, 0o700, "created private");
  // The server keeps its defaults whoever runs it.
  const server = await loadOpts(path, { role: "server", generateKey: makeKey, user });
  assert.equal(server.config.LOG_FILEPATH, "/var/log/recon/recon.log");
  assert.equal(server.config.RECON_FILEPATH, "/var/lib/recon/jobs");
  assert.equal(server.config.RECON_DICOM_DIR, "/var/lib/recon/results");
  // Paths the file sets are kept.
  await Deno.writeTextFile(
    path,
    `SHARED_KEY = ${makeKey()}\nLOG_FILEPATH = my.log\nCLIENT_DOWNLOAD_DIR = /data/in\n`,
  );
  const own = await loadOpts(path, { role: "client", generateKey: makeKey, user });
  assert.equal(own.config.LOG_FILEPATH, join(dir.path, "my.log"));
  assert.equal(own.config.CLIENT_DOWNLOAD_DIR, "/data/in");
  assert.equal(own.config.CLIENT_DAEMON_STATE_FILE, join(state, "recon", "recon-watch.sqlite"));
});

Deno.test("recon.opts.example is DEFAULT_OPTS_TEXT, the file written when none exists", async () => {
  const example = await Deno.readTextFile(repoFile("recon.opts.example"));
  assert.equal(
    example,
    DEFAULT_OPTS_TEXT,
    "recon.opts.example drifted from lib/opts/default_text.ts; regenerate it with: deno eval " +
      `'import { DEFAULT_OPTS_TEXT } from "./lib/opts/mod.ts"; ` +
      `Deno.writeTextFileSync("recon.opts.example", DEFAULT_OPTS_TEXT)'`,
  );
});

Deno.test("DEFAULT_OPTS_TEXT names this project's commands and says what SERVER_HOST is", () => {
  assert.match(DEFAULT_OPTS_TEXT, /^# Generate one with: recon-server keygen$/m);
  for (
    const old of [/python/i, /reconlibs/, /server_app/, /client_daemon\b/, /client_app/, /\.py\b/]
  ) {
    assert.doesNotMatch(DEFAULT_OPTS_TEXT, old);
  }
  assert.match(
    DEFAULT_OPTS_TEXT,
    /^# SERVER_HOST is where the server listens and where the client connects\./m,
  );
  assert.match(DEFAULT_OPTS_TEXT, /one file for each side/);
  const { warnings, unknownOptions, document } = parseOpts(DEFAULT_OPTS_TEXT);
  assert.deepEqual(warnings, []);
  assert.deepEqual(unknownOptions, []);
  assert.equal(document.lines.filter((line) => line.kind === "positional").length, 11);
});

Deno.test("recon.opts.example reads as the defaults and mentions every option", async () => {
  const text = await Deno.readTextFile(repoFile("recon.opts.example"));
  const { config, warnings } = parseOpts(text);
  assert.deepEqual(warnings, []);
  assert.deepEqual({ ...config, SHARED_KEY: "" }, DEFAULTS);
  assert.equal(config.SHARED_KEY, PLACEHOLDER_SHARED_KEY);
  for (const name of OPTION_NAMES) {
    assert.match(text, new RegExp(`^#? ?(\\d+ )?${name}[ :=]`, "m"), name);
  }
});

Deno.test("README.md configuration reference has a row for every option matching OPTION_DOCS", async () => {
  const text = await Deno.readTextFile(repoFile("README.md"));
  const rows = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const cells = line.split("|").slice(1, -1).map((cell) => cell.trim());
    const name = /^`([A-Z0-9_]+)`$/.exec(cells[0] ?? "")?.[1];
    if (name && cells.length === 4) rows.set(name, cells);
  }
  assert.deepEqual([...rows.keys()], [...OPTION_NAMES]);
  for (const name of OPTION_NAMES) {
    const { default: value, readBy } = OPTION_DOCS[name];
    const shown = value.startsWith("(") ? value : `\`${value}\``;
    assert.deepEqual(rows.get(name)!.slice(1, 3), [shown, readBy], name);
  }
});
