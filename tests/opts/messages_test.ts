/**
 * What reading recon.opts says about a file: unknown options refused with a
 * suggestion (or warned about with allowUnknownOptions), legacy names accepted,
 * and no message, warning or --show-config output that echoes SHARED_KEY from a
 * malformed line.
 */
import assert from "node:assert/strict";
import { ConfigError } from "../../lib/errors.ts";
import {
  DEFAULTS,
  LEGACY_OPTION_NAMES,
  MAX_QUOTED_LENGTH,
  nearestOptionName,
  OPTION_NAMES,
  parseOpts,
  parseOptsDocument,
  type ParseOptsOptions,
  quoteFromOpts,
  redactedConfig,
  setOption,
  showConfigJson,
  showConfigText,
} from "../../lib/opts/mod.ts";
import { generateKey } from "../../lib/crypto/keys.ts";
import { SEED_OPTS_TEXT } from "./seed_text.ts";

const SEED_LINES = SEED_OPTS_TEXT.split("\n").length - 1;

/** The seed with `lines` appended. */
function seedWith(...lines: string[]): string {
  return SEED_OPTS_TEXT + lines.map((line) => `${line}\n`).join("");
}

function configErrorOf(text: string, options: ParseOptsOptions = {}): ConfigError {
  try {
    parseOpts(text, options);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${error}`);
    return error;
  }
  assert.fail(`expected a ConfigError for ${JSON.stringify(text)}`);
}

Deno.test("parseOpts() refuses a misspelt option, naming the line and the option it meant", () => {
  const error = configErrorOf(seedWith("JOB_TIMOUT = 5"), { source: "/etc/recon/recon.opts" });
  assert.equal(
    error.message,
    `/etc/recon/recon.opts line ${SEED_LINES + 1}: unknown option "JOB_TIMOUT" ` +
      "(did you mean JOB_TIMEOUT?); fix the name or start with --allow-unknown-options",
  );
  assert.match(error.hint ?? "", /either of them reads are accepted/);
});

Deno.test("parseOpts() refuses an unknown option with no near name, without a guess", () => {
  const error = configErrorOf(seedWith("SITE_NAME = north wing"));
  assert.equal(
    error.message,
    `recon.opts line ${SEED_LINES + 1}: unknown option "SITE_NAME"; ` +
      "fix the name or start with --allow-unknown-options",
  );
});

Deno.test("parseOpts() names the first unknown option and counts the others", () => {
  const text = seedWith("MAX_JOB_BYTES = 1G", "SITE = a", "SITE = b", "TRUSTED_IPS = ::1", "X = 1");
  const error = configErrorOf(text);
  assert.match(
    error.message,
    new RegExp(
      `^recon.opts line ${SEED_LINES + 2}: unknown option "SITE" \\(2 more unknown options ` +
        "after it\\); fix the name",
    ),
  );
  assert.match(
    configErrorOf(seedWith("SITE = a", "X = 1")).message,
    /\(1 more unknown option after/,
  );
});

Deno.test("parseOpts() checks names before values", () => {
  const error = configErrorOf(seedWith("JOB_TIMEOUT = soon", "SHUTDOWN_GRASE = 5"));
  assert.match(error.message, /unknown option "SHUTDOWN_GRASE" \(did you mean SHUTDOWN_GRACE\?\)/);
});

Deno.test("with allowUnknownOptions a misspelt option is a warning and its default stays", () => {
  const { config, warnings, unknownOptions } = parseOpts(seedWith("JOB_TIMOUT = 5"), {
    allowUnknownOptions: true,
  });
  assert.equal(config.JOB_TIMEOUT, DEFAULTS.JOB_TIMEOUT);
  assert.deepEqual(warnings, [
    `recon.opts line ${SEED_LINES + 1}: unknown option "JOB_TIMOUT" (did you mean JOB_TIMEOUT?) ` +
    "is kept but not used",
  ]);
  assert.deepEqual(unknownOptions, [
    { line: SEED_LINES + 1, name: "JOB_TIMOUT", suggestion: "JOB_TIMEOUT" },
  ]);
});

Deno.test("the options of both programs are accepted in one file", () => {
  const text = OPTION_NAMES.map((name) => `${name} =`).join("\n") + "\n";
  const { config, warnings, unknownOptions } = parseOpts(text);
  assert.deepEqual(config, DEFAULTS);
  assert.deepEqual(warnings, []);
  assert.deepEqual(unknownOptions, []);
});

Deno.test("the seed's legacy name SSHPORT is accepted without a word, and not used", () => {
  assert.equal(LEGACY_OPTION_NAMES.get("SSHPORT"), "SSH_PORT");
  for (const text of [seedWith("SSHPORT = 2222"), "SSHPORT = 2222\n", "SSHPORT: 22\nSSHPORT =\n"]) {
    const { config, warnings, unknownOptions } = parseOpts(text);
    assert.deepEqual(warnings, [], text);
    assert.deepEqual(unknownOptions, [], text);
    assert.equal(config.SSH_PORT, DEFAULTS.SSH_PORT, text);
  }
});

Deno.test("the seed's example file parses with no error, warning or unknown option", () => {
  for (const text of [SEED_OPTS_TEXT, SEED_OPTS_TEXT.replaceAll("\n", "\r\n")]) {
    const { warnings, unknownOptions } = parseOpts(text);
    assert.deepEqual(warnings, []);
    assert.deepEqual(unknownOptions, []);
  }
});

Deno.test("a misspelt KEY = VALUE where a positional value is due is refused, not taken as one", () => {
  const error = configErrorOf("SERVR_HOST = recon.example\nSERVER_PORT = 7000\n");
  assert.match(
    error.message,
    /^recon.opts line 1: unknown option "SERVR_HOST" \(did you mean SERVER_HOST\?\)/,
  );
  const { config, warnings } = parseOpts("SERVR_HOST = recon.example\nSERVER_PORT = 7000\n", {
    allowUnknownOptions: true,
  });
  assert.equal(config.SERVER_HOST, DEFAULTS.SERVER_HOST);
  assert.equal(config.SERVER_PORT, 7000);
  assert.equal(warnings.length, 1);
  // A value with "=" that is no near miss of an option stays a positional value.
  assert.equal(parseOpts("PW=secret\n").config.SERVER_HOST, "PW=secret");
});

Deno.test("setOption() refuses a positional value that would read back as an option", () => {
  const document = parseOptsDocument(SEED_OPTS_TEXT);
  for (const value of ["SERVR_HOST = x", "SHARED_KEY abc", "JOB_TIMOUT 5"]) {
    assert.throws(() => setOption(document, "SERVER_HOST", value), TypeError, value);
  }
  assert.throws(() => setOption(parseOptsDocument("h\n"), "SITE_NAME", "x"), TypeError);
});

Deno.test("nearestOptionName() suggests the closest known name, or none", () => {
  const cases: [string, string | undefined][] = [
    ["JOB_TIMOUT", "JOB_TIMEOUT"],
    ["JOB_TIMEUOT", "JOB_TIMEOUT"],
    ["TRUSTED_IPS", "TRUSTEDIPS"],
    ["TRUSTEDIP", "TRUSTEDIPS"],
    ["MAX_CONCURENT_JOBS", "MAX_CONCURRENT_JOBS"],
    ["SERVERPORT", "SERVER_PORT"],
    ["SSHPORT", "SSH_PORT"],
    ["job_timeout", "JOB_TIMEOUT"],
    ["CLIENT_DAEMON_POLL_INTERVALL", "CLIENT_DAEMON_POLL_INTERVAL"],
    ["JOB_TIMEOUT", undefined],
    ["SITE_NAME", undefined],
    ["X", undefined],
    ["KEY", undefined],
    ["CONSTRUCTOR", undefined],
    ["__PROTO__", undefined],
  ];
  for (const [name, expected] of cases) assert.equal(nearestOptionName(name), expected, name);
});

Deno.test("quoteFromOpts() quotes short text and only counts longer text", () => {
  assert.equal(quoteFromOpts("60k"), '"60k"');
  assert.equal(quoteFromOpts("a\u0000b"), '"a\\u0000b"');
  assert.equal(quoteFromOpts("x".repeat(MAX_QUOTED_LENGTH)), `"${"x".repeat(MAX_QUOTED_LENGTH)}"`);
  assert.equal(quoteFromOpts(generateKey()), "a value of 44 characters (not shown)");
  assert.equal(quoteFromOpts("y".repeat(43), "name"), "a name of 43 characters (not shown)");
});

/** Every piece of the key long enough to matter (8 characters = 48 bits). */
function assertNoKeyIn(text: string, key: string, where: string): void {
  for (let start = 0; start + 8 <= key.length; start++) {
    const piece = key.slice(start, start + 8);
    assert.ok(!text.includes(piece), `${where} shows ${piece} of the key: ${text}`);
  }
}

/** Files where SHARED_KEY sits on a line recon cannot read as `SHARED_KEY = key`. */
function hostileFiles(key: string): [string, string][] {
  const body = key.slice(0, -1);
  return [
    ["SHARED_KEY without = first", `SHARED_KEY ${key}\n`],
    ["SHARED_KEY without = among positional lines", `h\n60000\nSHARED_KEY ${key}\n`],
    ["SHARED_KEY without = after the positional lines", seedWith(`SHARED_KEY ${key}`)],
    ["shared_key without = in lower case", seedWith(`shared_key ${key}`)],
    ["SHARED_KY without =", seedWith(`SHARED_KY\t${key}`)],
    ["SHARED_KEY glued to the key", seedWith(`SHARED_KEY${key}`)],
    ["the key alone after the positional lines", seedWith(key)],
    ["the key alone on the SERVER_PORT line", `localhost\n${key}\n`],
    ["the key alone on the SSH_PORT line", `h\n1\nu\np\n${key}\n`],
    ["the key as an option name", seedWith(`${body}: 1`)],
    ["the key in TRUSTEDIPS", seedWith(`TRUSTEDIPS = 10.0.0.1,${key}`)],
    ["the key in JOB_TIMEOUT", seedWith(`JOB_TIMEOUT = ${key}`)],
    ["the key in MAX_JOB_BYTES", seedWith(`MAX_JOB_BYTES = ${key}`)],
    ["the key in MAX_CONCURRENT_JOBS", seedWith(`MAX_CONCURRENT_JOBS = ${key}`)],
    ["the key as JSON", seedWith(`CLIENT_DAEMON_RECON_OPTIONS_JSON = ${key}`)],
    ["the key inside JSON", seedWith(`CLIENT_DAEMON_RECON_OPTIONS_JSON = {"k": ${key}}`)],
    ["the key after an unknown name", seedWith(`SITE_KEY = ${key}`)],
  ];
}

Deno.test("no error, warning or hint shows SHARED_KEY from a malformed line", () => {
  for (let round = 0; round < 20; round++) {
    const key = generateKey();
    for (const [what, text] of hostileFiles(key)) {
      for (const allowUnknownOptions of [false, true]) {
        let shown: string;
        try {
          const { warnings } = parseOpts(text, { allowUnknownOptions });
          shown = warnings.join("\n");
        } catch (error) {
          assert.ok(error instanceof ConfigError, `${what}: ${error}`);
          assert.ok(!error.message.includes("\n"), what);
          shown = `${error.message}\n${error.hint ?? ""}`;
        }
        assertNoKeyIn(shown, key, what);
      }
    }
  }
});

Deno.test("a SHARED_KEY line without = is refused, not read as a positional value", () => {
  const key = generateKey();
  for (const text of [`SHARED_KEY ${key}\n`, `h\n60000\nSHARED_KEY ${key}\n`]) {
    const error = configErrorOf(text, { source: "r.opts" });
    assert.match(
      error.message,
      /^r.opts line \d: expected SHARED_KEY = VALUE: there is no "=" \(the line is not shown/,
    );
    assert.equal(error.hint, "write SHARED_KEY = VALUE");
  }
});

Deno.test("--show-config output never shows a key that landed in another option", () => {
  const key = generateKey();
  const { config } = parseOpts(`localhost\n60000\n${key}\nadw2.0\n`);
  assert.equal(config.USERNAME, key);
  assert.equal(redactedConfig(config).USERNAME, "<redacted>");
  assertNoKeyIn(showConfigJson(config), key, "showConfigJson");
  assertNoKeyIn(showConfigText(config), key, "showConfigText");
  assert.equal(redactedConfig(parseOpts("host.example\n").config).SERVER_HOST, "host.example");
});

Deno.test("showConfigJson() lists unknown options when given them", () => {
  const { config, unknownOptions } = parseOpts(
    seedWith("JOB_TIMOUT = 5", "SITE_NAME = x", "JOB_TIMOUT = 6"),
    { allowUnknownOptions: true },
  );
  const shown = JSON.parse(showConfigJson(config, "id", unknownOptions));
  assert.deepEqual(shown.unknown_options, [
    { line: SEED_LINES + 1, name: "JOB_TIMOUT", suggestion: "JOB_TIMEOUT" },
    { line: SEED_LINES + 2, name: "SITE_NAME", suggestion: null },
  ]);
  assert.equal(shown.JOB_TIMEOUT, DEFAULTS.JOB_TIMEOUT);
  assert.deepEqual(JSON.parse(showConfigJson(config, "id", [])).unknown_options, []);
  assert.equal(Object.hasOwn(JSON.parse(showConfigJson(config)), "unknown_options"), false);
});

Deno.test("showConfigText() lists unknown options as comments and still reads back", () => {
  const { config, unknownOptions } = parseOpts(seedWith("JOB_TIMOUT = 5"), {
    allowUnknownOptions: true,
  });
  const text = showConfigText(config, undefined, unknownOptions);
  assert.match(
    text,
    new RegExp(
      `\n# unknown options \\(kept in recon.opts, not used\\):\n#   line ${SEED_LINES + 1}: ` +
        `unknown option "JOB_TIMOUT" \\(did you mean JOB_TIMEOUT\\?\\)\n$`,
    ),
  );
  const again = parseOpts(text);
  assert.deepEqual(again.warnings, []);
  assert.deepEqual(again.unknownOptions, []);
  assert.ok(!showConfigText(config).includes("unknown"));
});
