/**
 * Tests for lib/cli/entry.ts, the plumbing server.ts and client.ts share: writers that
 * write everything (or, for stderr, never fail), the strict command-line parser,
 * `--port`, `--version`, `keygen`, `--show-config`, and the top-level catch.
 */
import assert from "node:assert/strict";
import {
  keygenText,
  nearestFlag,
  parseCommandLine,
  parsePort,
  runMain,
  type RunMainOptions,
  showConfigText,
  splitCommand,
  textWriter,
  versionText,
  warningText,
} from "../../lib/cli/entry.ts";
import { describeError } from "../../lib/cli/support.ts";
import { decodeKey, keyId } from "../../lib/crypto/keys.ts";
import { ConfigError, ExitCode, TransferError, UsageError } from "../../lib/errors.ts";
import { defaultConfig } from "../../lib/opts/mod.ts";
import { VERSION } from "../../lib/version.ts";
import { testKey } from "../support/channel_pair.ts";

const decoder = new TextDecoder();

/** A stream that takes at most `chunk` bytes per write, like a full pipe. */
function slowStream(chunk: number) {
  const taken: Uint8Array[] = [];
  return {
    taken,
    text: () => taken.map((bytes) => decoder.decode(bytes, { stream: true })).join(""),
    writeSync(bytes: Uint8Array): number {
      const part = bytes.slice(0, chunk);
      taken.push(part);
      return part.length;
    },
  };
}

const closedStream = {
  writeSync(): number {
    throw new Deno.errors.BrokenPipe("Broken pipe (os error 32)");
  },
};

Deno.test("textWriter() writes all of the text when the stream takes a few bytes at a time", () => {
  const stream = slowStream(3);
  const write = textWriter(stream);
  write("recon-client: ünïcode and more than three bytes\n");
  assert.equal(stream.text(), "recon-client: ünïcode and more than three bytes\n");
  assert.ok(stream.taken.length > 10);
  write("");
  assert.equal(stream.text(), "recon-client: ünïcode and more than three bytes\n");
});

Deno.test("textWriter() passes a closed stdout's error on, and ignores it for stderr", () => {
  assert.throws(() => textWriter(closedStream)("x\n"), Deno.errors.BrokenPipe);
  textWriter(closedStream, { ignoreErrors: true })("x\n");
});

Deno.test("parseCommandLine() returns typed values and positionals", () => {
  const { values, positionals } = parseCommandLine("recon-server", ["--port", "9", "keygen"], {
    port: { type: "string" },
    debug: { type: "boolean" },
  });
  assert.equal(values.port, "9");
  assert.equal(values.debug, undefined);
  assert.deepEqual(positionals, ["keygen"]);
});

Deno.test("parseCommandLine() turns an unknown flag or a missing value into a UsageError pointing at --help", () => {
  for (const argv of [["--bogus"], ["--port"], ["--debug=yes"]]) {
    assert.throws(
      () =>
        parseCommandLine("recon-server", argv, {
          port: { type: "string" },
          debug: { type: "boolean" },
        }),
      (error: unknown) => error instanceof UsageError && error.hint === "see 'recon-server --help'",
      argv.join(" "),
    );
  }
});

const CLIENT_FLAGS = {
  files: { type: "string", multiple: true },
  "download-dir": { type: "string" },
  opts: { type: "string" },
  json: { type: "boolean" },
  status: { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

/** The UsageError message parseCommandLine() throws for `argv`. */
function usageMessage(argv: string[], settings = {}): string {
  try {
    parseCommandLine("recon-client", argv, CLIENT_FLAGS, settings);
  } catch (error) {
    assert.ok(error instanceof UsageError, String(error));
    assert.equal(error.hint, "see 'recon-client --help'");
    return error.message;
  }
  assert.fail(`${argv.join(" ")} was accepted`);
}

Deno.test("parseCommandLine() says what was wrong in our words, naming the nearest option", () => {
  const cases: [string[], string][] = [
    [["--file", "x"], "unknown option --file (did you mean --files?)"],
    [["--filess", "x"], "unknown option --filess (did you mean --files?)"],
    [["-files", "x"], "unknown option -files (did you mean --files?)"],
    [["--download_dir", "d"], "unknown option --download_dir (did you mean --download-dir?)"],
    [["--downl", "d"], "unknown option --downl (did you mean --download-dir?)"],
    [["--stauts"], "unknown option --stauts (did you mean --status?)"],
    [["--frobnicate"], "unknown option --frobnicate"],
    [["-x"], "unknown option -x"],
    [["--opts"], "--opts needs a value"],
    [["--json=1"], "--json takes no value"],
    [["--help=yes"], "--help takes no value"],
    [
      ["--opts", "--json"],
      '--opts needs a value, but the next argument "--json" is an option; ' +
      "if it is the value, write --opts=--json",
    ],
  ];
  for (const [argv, message] of cases) {
    const got = usageMessage(argv);
    assert.equal(got, message, argv.join(" "));
    assert.doesNotMatch(got, /positional|'--'/, "none of parseArgs' own advice");
  }
});

Deno.test("parseCommandLine() refuses positionals when told to, naming the help of the command", () => {
  assert.throws(
    () =>
      parseCommandLine("recon-client", ["--status", "extra"], CLIENT_FLAGS, {
        command: "recon-client watch",
        allowPositionals: false,
      }),
    (error: unknown) =>
      error instanceof UsageError && error.message === 'unexpected argument "extra"' &&
      error.hint === "see 'recon-client watch --help'",
  );
  const { positionals } = parseCommandLine("recon-client", ["keygen"], CLIENT_FLAGS);
  assert.deepEqual(positionals, ["keygen"]);
});

Deno.test("nearestFlag() suggests only close names", () => {
  const names = ["files", "directory", "download-dir", "opts", "port", "json"];
  assert.equal(nearestFlag("--fiels", names), "files");
  assert.equal(nearestFlag("--direcotry", names), "directory");
  assert.equal(nearestFlag("--PORT", names), "port");
  assert.equal(nearestFlag("--dir", names), "directory");
  assert.equal(nearestFlag("--d", names), undefined, "too short to be a prefix");
  assert.equal(nearestFlag("--do", names), undefined);
  assert.equal(nearestFlag("--xyzzy", names), undefined);
  assert.equal(nearestFlag("--", names), undefined);
  assert.equal(nearestFlag("--__proto__", names), undefined);
});

const GLOBALS = { opts: true, port: true, debug: false, json: false };

Deno.test("splitCommand() accepts global options before the command, in both spellings", () => {
  assert.deepEqual(splitCommand(["watch", "--status"], ["watch"], GLOBALS), {
    command: "watch",
    argv: ["--status"],
  });
  assert.deepEqual(
    splitCommand(
      ["--opts", "a.opts", "--debug", "--port=9", "watch", "--status"],
      ["watch"],
      GLOBALS,
    ),
    { command: "watch", argv: ["--opts", "a.opts", "--debug", "--port=9", "--status"] },
  );
  // The globals come first, so the same flag after the command wins.
  assert.deepEqual(splitCommand(["--opts=a", "watch", "--opts", "b"], ["watch"], GLOBALS), {
    command: "watch",
    argv: ["--opts=a", "--opts", "b"],
  });
});

Deno.test("splitCommand() finds no command after other options, or as an option's value", () => {
  for (
    const argv of [
      [],
      ["--files", "watch"],
      ["--quiet", "watch"],
      ["--opts", "watch"],
      ["--opts", "watch", "--debug"],
      ["--__proto__", "watch"],
      ["--constructor", "watch"],
      ["x", "watch"],
    ]
  ) {
    assert.deepEqual(splitCommand(argv, ["watch"], GLOBALS), { argv }, argv.join(" "));
  }
  assert.deepEqual(splitCommand(["--opts", "watch", "watch"], ["watch"], GLOBALS), {
    command: "watch",
    argv: ["--opts", "watch"],
  });
});

Deno.test("describeError() puts Deno's sandbox advice (--allow-all) in our words with a hint", () => {
  const deno = 'Requires all access to "/sys/kernel/x", run again with the --allow-all flag';
  const plain = describeError(
    "recon-client",
    new ConfigError(`cannot read /sys/kernel/x: ${deno}`),
  );
  assert.deepEqual(plain.lines, [
    "recon-client: error: cannot read /sys/kernel/x: recon-client may not use paths under /dev, /proc or /sys",
    "hint: choose a path outside /dev, /proc and /sys",
  ]);
  const hinted = describeError(
    "recon-server",
    new ConfigError(`x: ${deno}`, { hint: "set LOG_FILEPATH" }),
  );
  assert.deepEqual(hinted.lines, [
    "recon-server: error: x: recon-server may not use paths under /dev, /proc or /sys",
    "hint: set LOG_FILEPATH",
  ]);
  const unexpected = describeError("recon-client", new Error(deno));
  assert.doesNotMatch(unexpected.lines.join("\n"), /allow-all/);
  assert.equal(unexpected.exitCode, ExitCode.USAGE);
});

Deno.test("parsePort() takes 1 to 65535, and 0 only when allowed", () => {
  assert.equal(parsePort("1"), 1);
  assert.equal(parsePort("65535"), 65535);
  assert.equal(parsePort("0", 0), 0);
  assert.equal(parsePort("5000", 0), 5000);
  assert.throws(() => parsePort("0"), /--port must be a number from 1 to 65535, got "0"/);
  for (const bad of ["65536", "-1", "", " 80", "80 ", "1e3", "0x50", "8.0", "port", "99999999"]) {
    assert.throws(() => parsePort(bad), UsageError, JSON.stringify(bad));
    assert.throws(
      () => parsePort(bad, 0),
      (error: unknown) =>
        (error as Error).message === `--port must be a number from 0 to 65535, got "${bad}"`,
    );
  }
});

Deno.test("versionText() and keygenText() print one line", async () => {
  assert.equal(versionText("recon-client"), `recon-client ${VERSION}\n`);
  const key = keygenText();
  assert.match(key, /^[A-Za-z0-9_-]{43}=\n$/);
  assert.equal(decodeKey(key.trim()).length, 32);
  assert.notEqual(keygenText(), key);
  assert.ok((await keyId(decodeKey(key.trim()))).length > 0);
});

Deno.test("showConfigText() shows the key id but never the key; an unusable key is shown without an id", async () => {
  const key = await testKey();
  const shown = JSON.parse(await showConfigText({ ...defaultConfig(), SHARED_KEY: key.text }));
  const text = JSON.stringify(shown);
  assert.ok(!text.includes(key.text), "the key itself is not shown");
  assert.ok(text.includes(key.id), "the key id is shown");
  const unusable = await showConfigText({ ...defaultConfig(), SHARED_KEY: "not a key" });
  assert.ok(!unusable.includes("not a key"));
  assert.ok(!unusable.includes(key.id));
  assert.ok(unusable.endsWith("}\n"));
});

Deno.test("showConfigText() shows an empty SHARED_KEY as <not set>, not as an empty key", async () => {
  const shown = JSON.parse(await showConfigText({ ...defaultConfig(), SHARED_KEY: "" }));
  assert.equal(shown.SHARED_KEY, "<not set>");
  assert.equal(Object.hasOwn(shown, "SHARED_KEY_ID"), false);
});

Deno.test("warningText() prints one defused warning line each, and nothing for none", () => {
  assert.equal(warningText("recon-server", []), "");
  assert.equal(
    warningText("recon-server", ["a", "b\x1b[2J"]),
    "recon-server: warning: a\nrecon-server: warning: b?\n",
  );
});

/** runMain() with a stderr that keeps what it is given. */
async function run(main: () => Promise<number>, extra: Partial<RunMainOptions> = {}) {
  let stderr = "";
  const failures: [unknown, number][] = [];
  const code = await runMain(main, {
    program: "recon-test",
    writeStderr: (text) => (stderr += text),
    onFailure: (error, exitCode) => failures.push([error, exitCode]),
    ...extra,
  });
  return { code, stderr, failures };
}

Deno.test("runMain() returns main's exit code and prints nothing when main succeeds", async () => {
  assert.deepEqual(await run(() => Promise.resolve(ExitCode.OK)), {
    code: 0,
    stderr: "",
    failures: [],
  });
  assert.equal((await run(() => Promise.resolve(ExitCode.CONNECTION))).code, 3);
});

Deno.test("runMain() prints error and hint lines and exits with the error's code", async () => {
  const error = new TransferError("disk full", { hint: "free some space" });
  const result = await run(() => Promise.reject(error));
  assert.equal(result.code, ExitCode.TRANSFER);
  assert.equal(result.stderr, "recon-test: error: disk full\nhint: free some space\n");
  assert.deepEqual(result.failures, [[error, ExitCode.TRANSFER]]);
  const config = await run(() => Promise.reject(new ConfigError("bad recon.opts line 3")));
  assert.equal(config.code, ExitCode.USAGE);
  assert.equal(config.stderr, "recon-test: error: bad recon.opts line 3\n");
});

Deno.test("runMain() puts details under the error line, before the hint", async () => {
  const result = await run(
    () => Promise.reject(new TransferError("failed", { hint: "look" })),
    { details: () => ["  script exit code: 7"] },
  );
  assert.equal(result.stderr, "recon-test: error: failed\n  script exit code: 7\nhint: look\n");
});

Deno.test("runMain() reports an unexpected throw as exit 2 with a hint to rerun with --debug", async () => {
  const result = await run(() => Promise.reject(new Error("boom\u001b[2J")));
  assert.equal(result.code, ExitCode.USAGE);
  assert.match(result.stderr, /^recon-test: error: boom\?\nhint: .*--debug/);
  const thrown = await run(() => Promise.reject("a string"));
  assert.match(thrown.stderr, /^recon-test: error: a string\n/);
});
