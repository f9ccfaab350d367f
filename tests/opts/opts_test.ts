import assert from "node:assert/strict";
import { ConfigError } from "../../lib/errors.ts";
import {
  configFromDocument,
  DEFAULTS,
  findOptionLine,
  formatByteSize,
  formatOptionValue,
  formatOpts,
  isIpAddress,
  isOptionName,
  OPTION_DOCS,
  OPTION_NAMES,
  parseByteSize,
  parseOptionValue,
  parseOpts,
  parseOptsDocument,
  type ParseOptsOptions,
  PLACEHOLDER_SHARED_KEY,
  POSITIONAL_KEYS,
  type ReconConfig,
  redactedConfig,
  requireSharedKey,
  resolveConfigPaths,
  setOption,
  showConfigJson,
  showConfigText,
  type ValueLine,
} from "../../lib/opts/mod.ts";
import { SEED_OPTS_TEXT } from "./seed_text.ts";

/** A fresh random key in the Fernet key format. */
function makeKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_");
}

const SEED = SEED_OPTS_TEXT;
const SEED_CRLF = SEED.replaceAll("\n", "\r\n");

/** The seed with `KEY = VALUE` lines added at the end. */
function seedWith(...lines: string[]): string {
  return SEED + lines.map((line) => `${line}\n`).join("");
}

/** The seed with 1-based line `number` replaced. */
function seedReplacing(number: number, line: string): string {
  const lines = SEED.split("\n");
  lines[number - 1] = line;
  return lines.join("\n");
}

const SEED_LINE_COUNT = SEED.split("\n").length - 1;

function configOf(text: string): ReconConfig {
  return parseOpts(text).config;
}

function assertConfigError(
  text: string,
  message: string | RegExp,
  options: ParseOptsOptions = {},
): ConfigError {
  let caught: unknown;
  try {
    parseOpts(text, options);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError, got ${caught}`);
  if (typeof message === "string") assert.equal(caught.message, message);
  else assert.match(caught.message, message);
  return caught;
}

Deno.test("SEED_OPTS_TEXT is the seed's example file byte for byte", async () => {
  // SHA-256 of fixtures/recon.opts.seed, the example in seeds/000.
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(SEED));
  assert.equal(
    new Uint8Array(digest).toHex(),
    "f08afe862101d4aa9cbb7bf77305d07202c445e394709693a369115fbe8f4306",
  );
});

Deno.test("parseOpts() reads the seed file with its values", () => {
  const { config, warnings } = parseOpts(SEED);
  assert.deepEqual(warnings, []);
  assert.equal(config.SERVER_HOST, "localhost");
  assert.equal(config.SERVER_PORT, 60000);
  assert.equal(config.USERNAME, "sdc");
  assert.equal(config.PASSWORD, "adw2.0");
  assert.equal(config.SSH_PORT, 22);
  assert.equal(config.MRRAW_PATH, "/usr/g/mrraw/");
  assert.equal(config.RECON_FILEPATH, "/tmp/recon_server_pfiles");
  assert.equal(config.RECON_SCRIPT, "default_recon_script.sh");
  assert.equal(config.RECON_DICOM_DIR, "/tmp/recon_server_dicoms");
  assert.equal(config.SCANNER_DICOM_DIR, "/tmp/scanner_dicoms/");
  assert.equal(config.LOG_FILEPATH, "/tmp/recon_project.log");
  assert.equal(config.SHARED_KEY, PLACEHOLDER_SHARED_KEY);
  assert.equal(config.MAX_CONCURRENT_JOBS, 1);
  assert.deepEqual(config.TRUSTEDIPS, []);
  assert.equal(config.CLIENT_DEFAULT_PFILE_NAME, "P00000.7");
  assert.equal(config.CLIENT_DEFAULT_PFILE_PATH, "/tmp/default_pfile_on_client/P00000.7");
  assert.equal(config.CLIENT_DOWNLOAD_DIR, "client_downloads");
});

Deno.test("parseOpts() gives every option the seed does not set its default", () => {
  const config = configOf(SEED);
  // The seed's own /tmp paths are no longer the defaults (docs/DEPLOY.md §7).
  const seedPaths = new Set(["SHARED_KEY", "RECON_FILEPATH", "RECON_DICOM_DIR", "LOG_FILEPATH"]);
  for (const name of OPTION_NAMES) {
    if (!seedPaths.has(name)) assert.deepEqual(config[name], DEFAULTS[name], name);
  }
});

Deno.test("parseOpts() of an empty or comment-only text gives the defaults", () => {
  for (const text of ["", "\n", "# only a comment\n\n   \n", "\r\n"]) {
    const { config, warnings } = parseOpts(text);
    assert.deepEqual(config, DEFAULTS);
    assert.deepEqual(warnings, []);
  }
});

Deno.test("parseOptsDocument() numbers the positional lines past comments and blanks", () => {
  const text = "\n# c\nhost.example\n\n# port\n  6000  \n";
  const { lines } = parseOptsDocument(text);
  const values = lines.filter((line): line is ValueLine => line.kind === "positional");
  assert.deepEqual(values.map((line) => [line.key, line.number]), [
    ["SERVER_HOST", 3],
    ["SERVER_PORT", 6],
  ]);
  assert.equal(configOf(text).SERVER_PORT, 6000);
});

Deno.test("a commented-out TRUSTEDIPS is ignored in both forms", () => {
  for (
    const line of ["#TRUSTEDIPS: 10.0.0.1", "# TRUSTEDIPS = 10.0.0.1", "  #TRUSTEDIPS=1.2.3.4"]
  ) {
    assert.deepEqual(configOf(seedWith(line)).TRUSTEDIPS, []);
  }
});

Deno.test("TRUSTEDIPS is read from both the colon and the equals form", () => {
  const expected = ["192.168.1.101", "192.168.1.102"];
  assert.deepEqual(
    configOf(seedWith("TRUSTEDIPS: 192.168.1.101,192.168.1.102")).TRUSTEDIPS,
    expected,
  );
  assert.deepEqual(
    configOf(seedWith("TRUSTEDIPS = 192.168.1.101, 192.168.1.102")).TRUSTEDIPS,
    expected,
  );
  assert.deepEqual(configOf(seedWith("TRUSTEDIPS=127.0.0.1,::1,")).TRUSTEDIPS, [
    "127.0.0.1",
    "::1",
  ]);
  assert.deepEqual(configOf(seedWith("TRUSTEDIPS:")).TRUSTEDIPS, []);
});

Deno.test("an inline comment after whitespace is stripped from a value", () => {
  const config = configOf(
    seedWith(
      "CLIENT_DAEMON_POLL_INTERVAL = 10 # (Used by daemon if watchdog is not active/available)",
      "MAX_CONCURRENT_JOBS = 3\t# tab before the comment",
      "CLIENT_WATCH_PATTERN = scan#2.7 # a # inside a word stays",
    ),
  );
  assert.equal(config.CLIENT_DAEMON_POLL_INTERVAL, 10);
  assert.equal(config.MAX_CONCURRENT_JOBS, 3);
  assert.equal(config.CLIENT_WATCH_PATTERN, "scan#2.7");
});

Deno.test("an inline comment is stripped from a positional line too", () => {
  assert.equal(configOf(seedReplacing(4, "60001   # the port")).SERVER_PORT, 60001);
});

Deno.test("a # inside double quotes does not start a comment", () => {
  const config = configOf(
    seedWith(`CLIENT_DAEMON_RECON_OPTIONS_JSON = {"note": "scan #2 \\" #x", "n": 1} # real`),
  );
  assert.deepEqual(config.CLIENT_DAEMON_RECON_OPTIONS_JSON, { note: 'scan #2 " #x', n: 1 });
});

Deno.test("a value that is only a comment is empty and means the default", () => {
  assert.equal(
    configOf(seedWith("MAX_CONCURRENT_JOBS = 4", "MAX_CONCURRENT_JOBS = # none"))
      .MAX_CONCURRENT_JOBS,
    1,
  );
});

Deno.test("a CRLF file gives the same config as the LF file", () => {
  assert.deepEqual(configOf(SEED_CRLF), configOf(SEED));
  assert.equal(configOf(SEED_CRLF.replace("60000\r\n", "60002\r\n")).SERVER_PORT, 60002);
  assert.equal(parseOptsDocument(SEED_CRLF).eol, "\r\n");
});

Deno.test("a comment ending with a backslash does not swallow the next line", () => {
  const { document, config } = parseOpts(SEED);
  const backslash = document.lines.find((line) => line.raw.endsWith("\\"));
  assert.equal(backslash?.kind, "comment");
  const next = document.lines[backslash!.number];
  assert.equal(next.kind, "option");
  assert.equal(config.CLIENT_DEFAULT_PFILE_NAME, "P00000.7");
});

Deno.test("an empty value means the option's default", () => {
  const config = configOf(
    seedWith(
      "MAX_CONCURRENT_JOBS =",
      "CLIENT_WATCH_PATTERN =   ",
      "CLIENT_DOWNLOAD_DIR = elsewhere",
      "CLIENT_DOWNLOAD_DIR =",
      "MATLAB_COMMAND =",
      "CLIENT_DAEMON_RECON_OPTIONS_JSON =",
    ),
  );
  assert.equal(config.MAX_CONCURRENT_JOBS, 1);
  assert.equal(config.CLIENT_WATCH_PATTERN, "*.7");
  assert.equal(config.CLIENT_DOWNLOAD_DIR, "client_downloads");
  assert.deepEqual(config.MATLAB_COMMAND, ["matlab", "-batch"]);
  assert.deepEqual(config.CLIENT_DAEMON_RECON_OPTIONS_JSON, {});
});

Deno.test("with allowUnknownOptions an unknown option is kept, warned about once and written back", () => {
  const text = seedWith("SITE_NAME = north wing", "SITE_NAME = again", "TRUSTED_IPS = 10.0.0.1");
  const { config, warnings, document, unknownOptions } = parseOpts(text, {
    allowUnknownOptions: true,
  });
  assert.deepEqual(warnings, [
    `recon.opts line ${SEED_LINE_COUNT + 1}: unknown option "SITE_NAME" is kept but not used`,
    `recon.opts line ${SEED_LINE_COUNT + 3}: unknown option "TRUSTED_IPS" ` +
    "(did you mean TRUSTEDIPS?) is kept but not used",
  ]);
  assert.deepEqual(unknownOptions, [
    { line: SEED_LINE_COUNT + 1, name: "SITE_NAME", suggestion: undefined },
    { line: SEED_LINE_COUNT + 3, name: "TRUSTED_IPS", suggestion: "TRUSTEDIPS" },
  ]);
  assert.equal(Object.hasOwn(config, "SITE_NAME"), false);
  assert.deepEqual(config.TRUSTEDIPS, []);
  setOption(document, "SHARED_KEY", makeKey());
  assert.match(
    formatOpts(document),
    /\nSITE_NAME = north wing\nSITE_NAME = again\nTRUSTED_IPS = 10.0.0.1\n$/,
  );
});

Deno.test("a KEY = VALUE line for a positional option overrides it, with a warning", () => {
  const { config, warnings } = parseOpts(
    seedWith("SERVER_PORT = 60001", "RECON_SCRIPT = /opt/r.sh"),
  );
  assert.equal(config.SERVER_PORT, 60001);
  assert.equal(config.RECON_SCRIPT, "/opt/r.sh");
  assert.match(
    warnings[0],
    /line \d+: SERVER_PORT is set again \(first on line 4\); line \d+ wins/,
  );
});

Deno.test("a file of KEY = VALUE lines only needs no positional lines", () => {
  const { config, warnings } = parseOpts(
    "SERVER_HOST = recon.example\nSERVER_PORT: 7000\nUSERNAME = x\n",
  );
  assert.equal(config.SERVER_HOST, "recon.example");
  assert.equal(config.SERVER_PORT, 7000);
  assert.equal(config.USERNAME, "x");
  assert.equal(config.RECON_FILEPATH, DEFAULTS.RECON_FILEPATH);
  assert.deepEqual(warnings, []);
});

Deno.test("a known KEY = VALUE line ends a short positional part, with a warning", () => {
  const { config, warnings } = parseOpts("myhost\n6000\nMAX_CONCURRENT_JOBS = 2\n");
  assert.equal(config.SERVER_HOST, "myhost");
  assert.equal(config.SERVER_PORT, 6000);
  assert.equal(config.USERNAME, DEFAULTS.USERNAME);
  assert.equal(config.MAX_CONCURRENT_JOBS, 2);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /only 2 of the 11 positional lines.*USERNAME, PASSWORD/);
});

Deno.test("a lower-case known option where a positional value is due is an error", () => {
  const error = assertConfigError(
    "server_host = recon\n",
    /^recon.opts line 1: "server_host" is not/,
  );
  assert.equal(error.hint, "option names are upper case: SERVER_HOST");
});

Deno.test("a positional value may contain = when it does not name a known option", () => {
  const config = configOf(seedReplacing(8, "PW=secret"));
  assert.equal(config.PASSWORD, "PW=secret");
});

Deno.test("EXECUTOR reads local or slurm in any case; SLURM_SBATCH_ARGS splits at spaces", () => {
  const config = configOf(
    seedWith(
      "EXECUTOR = Slurm\nSLURM_SBATCH_ARGS = --partition=gpu  --gres=gpu:1\nSLURM_POLL_INTERVAL = 0.5",
    ),
  );
  assert.equal(config.EXECUTOR, "slurm");
  assert.deepEqual(config.SLURM_SBATCH_ARGS, ["--partition=gpu", "--gres=gpu:1"]);
  assert.equal(config.SLURM_POLL_INTERVAL, 0.5);
  assert.equal(configOf(seedWith("")).EXECUTOR, "local");
});

const ERROR_CASES: [string, string, string | RegExp][] = [
  [
    "SERVER_PORT that is not a number",
    seedReplacing(4, "60k"),
    'recon.opts line 4: SERVER_PORT must be an integer from 1 to 65535, got "60k"',
  ],
  ["SERVER_PORT 0", seedReplacing(4, "0"), /^recon.opts line 4: SERVER_PORT must be an integer/],
  ["SERVER_PORT 65536", seedReplacing(4, "65536"), /^recon.opts line 4: SERVER_PORT .*"65536"/],
  ["SSH_PORT -22", seedReplacing(10, "-22"), /^recon.opts line 10: SSH_PORT must be an integer/],
  [
    "MAX_CONCURRENT_JOBS below 1",
    seedReplacing(31, "MAX_CONCURRENT_JOBS = 0"),
    'recon.opts line 31: MAX_CONCURRENT_JOBS must be an integer of at least 1, got "0"',
  ],
  [
    "MAX_CONCURRENT_JOBS as a fraction",
    seedReplacing(31, "MAX_CONCURRENT_JOBS = 1.5"),
    /^recon.opts line 31: MAX_CONCURRENT_JOBS must be an integer/,
  ],
  [
    "EXECUTOR that is neither local nor slurm",
    seedWith("EXECUTOR = kubernetes"),
    `recon.opts line ${
      SEED_LINE_COUNT + 1
    }: EXECUTOR must be one of local, slurm, got "kubernetes"`,
  ],
  [
    "a malformed line",
    seedWith("this line has no equals sign"),
    `recon.opts line ${SEED_LINE_COUNT + 1}: expected KEY = VALUE or a # comment ` +
    "(the line is not shown: it may hold SHARED_KEY)",
  ],
  ["a line with no key", seedWith("= 5"), /line \d+: expected KEY = VALUE or a # comment/],
  [
    "an option without its =",
    seedWith("JOB_TIMEOUT 60"),
    `recon.opts line ${SEED_LINE_COUNT + 1}: expected JOB_TIMEOUT = VALUE: there is no "=" ` +
    "(the line is not shown: it may hold SHARED_KEY)",
  ],
  [
    "a lower-case key",
    seedWith("max_concurrent_jobs = 2"),
    /line \d+: "max_concurrent_jobs" is not a valid option name$/,
  ],
  [
    "a key starting with a digit",
    seedWith("1KEY = 2"),
    /line \d+: "1KEY" is not a valid option name/,
  ],
  ["a key with a dash", seedWith("MY-KEY = 2"), /"MY-KEY" is not a valid option name/],
  [
    "bad JSON in CLIENT_DAEMON_RECON_OPTIONS_JSON",
    seedWith("CLIENT_DAEMON_RECON_OPTIONS_JSON = {slice: 2}"),
    /line \d+: CLIENT_DAEMON_RECON_OPTIONS_JSON is not valid JSON \(.*\), got "{slice: 2}"/,
  ],
  [
    "a JSON array in CLIENT_DAEMON_RECON_OPTIONS_JSON",
    seedWith("CLIENT_DAEMON_RECON_OPTIONS_JSON = [1, 2]"),
    /CLIENT_DAEMON_RECON_OPTIONS_JSON must be a JSON object, got an array$/,
  ],
  [
    "JSON null in CLIENT_DAEMON_RECON_OPTIONS_JSON",
    seedWith("CLIENT_DAEMON_RECON_OPTIONS_JSON = null"),
    /must be a JSON object, got null$/,
  ],
  [
    "a JSON string in CLIENT_DAEMON_RECON_OPTIONS_JSON",
    seedWith('CLIENT_DAEMON_RECON_OPTIONS_JSON = "x"'),
    /must be a JSON object, got string$/,
  ],
  [
    "seconds that are words",
    seedWith("JOB_TIMEOUT = soon"),
    /JOB_TIMEOUT must be a number of seconds from 0 to 2147483, got "soon"/,
  ],
  [
    "negative seconds",
    seedWith("SHUTDOWN_GRACE = -1"),
    /SHUTDOWN_GRACE must be a number of seconds/,
  ],
  [
    "a poll interval of 0",
    seedWith("CLIENT_DAEMON_POLL_INTERVAL = 0"),
    /POLL_INTERVAL must be a number of seconds greater than 0 and at most 2147483, got "0"/,
  ],
  [
    "seconds beyond a timer's range",
    seedWith("IDLE_TIMEOUT = 2147484"),
    /IDLE_TIMEOUT must be a number of seconds/,
  ],
  ["seconds in exponent form", seedWith("HANDSHAKE_TIMEOUT = 1e3"), /HANDSHAKE_TIMEOUT must be/],
  [
    "a byte size with an unknown unit",
    seedWith("MAX_JOB_BYTES = 12X"),
    /MAX_JOB_BYTES must be a size in bytes like 1073741824, 512M or 64G, got "12X"/,
  ],
  [
    "a byte size of 0 for MAX_JOB_BYTES",
    seedWith("MAX_JOB_BYTES = 0"),
    /MAX_JOB_BYTES must be a size/,
  ],
  ["a negative byte size", seedWith("DISK_FREE_MARGIN = -1G"), /DISK_FREE_MARGIN must be a size/],
  [
    "a host name in TRUSTEDIPS",
    seedWith("TRUSTEDIPS = 10.0.0.1, scanner.local"),
    /TRUSTEDIPS must be a comma-separated list of IP addresses, got "scanner.local"/,
  ],
  ["a network in TRUSTEDIPS", seedWith("TRUSTEDIPS: 10.0.0.0/8"), /got "10.0.0.0\/8"/],
  ["an IPv4 octet above 255", seedWith("TRUSTEDIPS: 10.0.0.256"), /got "10.0.0.256"/],
  [
    "LOCKOUT_FAILURES below 0",
    seedWith("LOCKOUT_FAILURES = -1"),
    /LOCKOUT_FAILURES must be an integer of at least 0/,
  ],
];

for (const [what, text, message] of ERROR_CASES) {
  Deno.test(`parseOpts() rejects ${what} with a ConfigError naming the line`, () => {
    assertConfigError(text, message);
  });
}

Deno.test("parseOpts() errors name the source it is given and carry hints", () => {
  let caught: unknown;
  try {
    parseOpts("SERVER_HOST = h\nserver_port = 1\n", { source: "/etc/recon/recon.opts" });
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof ConfigError);
  assert.match(caught.message, /^\/etc\/recon\/recon.opts line 2: /);
  assert.equal(caught.hint, "option names are upper case: SERVER_PORT");
  const json = assertConfigError(seedWith("CLIENT_DAEMON_RECON_OPTIONS_JSON = [1]"), /JSON object/);
  assert.match(json.hint ?? "", /JSON object on one line/);
});

Deno.test("parseOpts() error messages stay one line for a very long value", () => {
  const error = assertConfigError(seedReplacing(4, "9".repeat(10_000)), /SERVER_PORT/);
  assert.ok(error.message.length < 200);
  assert.ok(!error.message.includes("\n"));
});

Deno.test("__proto__ and constructor keys do not pollute any object", () => {
  assertConfigError(seedWith("__proto__ = polluted"), /"__proto__" is not a valid option name/);
  const { config, warnings } = parseOpts(
    seedWith(
      "CONSTRUCTOR = polluted",
      "PROTOTYPE = polluted",
      'CLIENT_DAEMON_RECON_OPTIONS_JSON = {"__proto__": {"polluted": true}}',
    ),
    { allowUnknownOptions: true },
  );
  assert.equal(warnings.length, 2);
  assert.equal(Object.getPrototypeOf(config), Object.prototype);
  assert.equal(Object.hasOwn(config, "CONSTRUCTOR"), false);
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.equal(typeof config.constructor, "function");
  const options = config.CLIENT_DAEMON_RECON_OPTIONS_JSON;
  assert.equal(Object.getPrototypeOf(options), Object.prototype);
  assert.equal((options as Record<string, unknown>).polluted, undefined);
  for (const key of ["__proto__", "constructor", "hasOwnProperty", "toString"]) {
    assert.equal(isOptionName(key), false, key);
  }
});

Deno.test("formatOpts() reproduces the seed byte for byte, LF and CRLF", () => {
  assert.equal(formatOpts(parseOptsDocument(SEED)), SEED);
  assert.equal(formatOpts(parseOptsDocument(SEED_CRLF)), SEED_CRLF);
});

Deno.test("formatOpts() keeps odd files byte for byte", () => {
  const texts = [
    "",
    "\n\n",
    SEED.trimEnd(),
    "\uFEFF" + SEED,
    "localhost\r\n60000\n# mixed endings\r\n",
    "  indented  # comment\n\t60000\t\n",
    seedWith("UNKNOWN_THING =   spaced   # note", "TRUSTEDIPS:1.2.3.4"),
  ];
  for (const text of texts) assert.equal(formatOpts(parseOptsDocument(text)), text);
});

Deno.test("a byte order mark does not become part of SERVER_HOST", () => {
  assert.equal(configOf("\uFEFF" + SEED).SERVER_HOST, "localhost");
  assert.equal(configOf("\uFEFFSERVER_PORT = 5\n").SERVER_PORT, 5);
});

Deno.test("parse, format and parse again gives the same config", () => {
  const text = seedWith(
    "TRUSTEDIPS: 10.0.0.1,::1",
    'CLIENT_DAEMON_RECON_OPTIONS_JSON = {"a": [1, 2]}',
    "MAX_JOB_BYTES = 512M",
  );
  const first = parseOpts(text);
  assert.deepEqual(parseOpts(formatOpts(first.document)).config, first.config);
});

Deno.test("setOption() changes SHARED_KEY in place and nothing else", () => {
  const key = makeKey();
  const { document } = parseOpts(SEED);
  setOption(document, "SHARED_KEY", key);
  const text = formatOpts(document);
  assert.equal(text, SEED.replace(`SHARED_KEY = ${PLACEHOLDER_SHARED_KEY}`, `SHARED_KEY = ${key}`));
  assert.equal(configOf(text).SHARED_KEY, key);
});

Deno.test("setOption() keeps CRLF endings and the line's inline comment", () => {
  const { document } = parseOpts(
    SEED_CRLF.replace("MAX_CONCURRENT_JOBS = 1", "MAX_CONCURRENT_JOBS = 1 # one"),
  );
  setOption(document, "MAX_CONCURRENT_JOBS", "4");
  const text = formatOpts(document);
  assert.match(text, /\r\nMAX_CONCURRENT_JOBS = 4 # one\r\n/);
  assert.equal(text.replaceAll("\r\n", "").includes("\n"), false);
  assert.equal(configOf(text).MAX_CONCURRENT_JOBS, 4);
});

Deno.test("setOption() appends an absent option in the file's line ending", () => {
  for (const base of [SEED, SEED_CRLF, SEED.trimEnd()]) {
    const { document } = parseOpts(base);
    setOption(document, "JOB_TIMEOUT", "60");
    setOption(document, "SITE_NAME", "north");
    const text = formatOpts(document);
    const eol = base === SEED_CRLF ? "\r\n" : "\n";
    const end = base === SEED.trimEnd() ? "" : eol;
    assert.ok(text.endsWith(`client_downloads${eol}JOB_TIMEOUT = 60${eol}SITE_NAME = north${end}`));
    const again = parseOpts(text, { allowUnknownOptions: true });
    assert.equal(again.config.JOB_TIMEOUT, 60);
    assert.equal(findOptionLine(again.document, "SITE_NAME")?.value, "north");
  }
});

Deno.test("setOption() fills an empty value with a space on each side", () => {
  const { document } = parseOpts("SHARED_KEY =\nJOB_TIMEOUT = #unset\nMATLAB_COMMAND =#x\n");
  setOption(document, "SHARED_KEY", "k");
  setOption(document, "JOB_TIMEOUT", "5");
  setOption(document, "MATLAB_COMMAND", "octave");
  assert.equal(
    formatOpts(document),
    "SHARED_KEY = k\nJOB_TIMEOUT = 5 #unset\nMATLAB_COMMAND = octave #x\n",
  );
  const config = configOf(formatOpts(document));
  assert.equal(config.JOB_TIMEOUT, 5);
  assert.deepEqual(config.MATLAB_COMMAND, ["octave"]);
});

Deno.test("setOption() changes the line that wins when an option is set twice", () => {
  const { document } = parseOpts(seedWith("SERVER_PORT = 60001"));
  setOption(document, "SERVER_PORT", "60002");
  const text = formatOpts(document);
  assert.ok(text.startsWith(SEED));
  assert.equal(configOf(text).SERVER_PORT, 60002);
});

Deno.test("setOption() rewrites a positional line in place", () => {
  const { document } = parseOpts(SEED);
  setOption(document, "SERVER_HOST", "recon.example.org");
  const text = formatOpts(document);
  assert.equal(text, SEED.replace("\nlocalhost\n", "\nrecon.example.org\n"));
  assert.equal(configOf(text).SERVER_HOST, "recon.example.org");
});

Deno.test("setOption() refuses values that would not read back as themselves", () => {
  const { document } = parseOpts(SEED);
  const bad: [string, string][] = [
    ["SHARED_KEY", "a\nSERVER_PORT = 1"],
    ["SHARED_KEY", "a\rb"],
    ["SHARED_KEY", " padded"],
    ["SHARED_KEY", "key # not a comment"],
    ["SHARED_KEY", "#key"],
    ["lower_case", "x"],
    ["__proto__", "x"],
    ["SERVER_HOST", ""],
    ["SERVER_HOST", "#host"],
    ["SERVER_HOST", "SERVER_PORT = 1"],
    ["SERVER_HOST", "server_port: 1"],
  ];
  for (const [key, value] of bad) {
    assert.throws(
      () => setOption(document, key, value),
      TypeError,
      `${key}=${JSON.stringify(value)}`,
    );
  }
  assert.equal(formatOpts(document), SEED);
});

Deno.test("setOption() refuses to append an unknown option where a positional value is due", () => {
  const { document } = parseOpts("host\n60000\n");
  assert.throws(() => setOption(document, "SITE_NAME", "x"), TypeError);
  setOption(document, "JOB_TIMEOUT", "5");
  assert.equal(configOf(formatOpts(document)).JOB_TIMEOUT, 5);
});

Deno.test("every option has docs, and each literal default reads back as DEFAULTS", () => {
  assert.deepEqual(Object.keys(OPTION_DOCS), [...OPTION_NAMES]);
  for (const key of POSITIONAL_KEYS) assert.ok(OPTION_NAMES.includes(key));
  for (const name of OPTION_NAMES) {
    const doc = OPTION_DOCS[name];
    assert.ok(["server", "client", "both", "watch", "legacy"].includes(doc.readBy), name);
    assert.ok(doc.description.length > 10, name);
    if (!doc.default.startsWith("(")) {
      assert.deepEqual(parseOptionValue(name, doc.default), DEFAULTS[name], name);
    }
  }
});

Deno.test("formatOptionValue() of every default reads back as the default", () => {
  for (const name of OPTION_NAMES) {
    const text = formatOptionValue(name, DEFAULTS[name]);
    const value = text === "" ? DEFAULTS[name] : parseOptionValue(name, text);
    assert.deepEqual(value, DEFAULTS[name], name);
  }
});

Deno.test("DEFAULTS cannot be changed by accident", () => {
  assert.throws(() => {
    (DEFAULTS as ReconConfig).SERVER_PORT = 1;
  }, TypeError);
  assert.throws(() => (DEFAULTS.TRUSTEDIPS as string[]).push("1.2.3.4"), TypeError);
  const config = configOf("");
  config.TRUSTEDIPS.push("10.0.0.1");
  config.CLIENT_DAEMON_RECON_OPTIONS_JSON.x = 1;
  assert.deepEqual(configOf("").TRUSTEDIPS, []);
  assert.deepEqual(DEFAULTS.CLIENT_DAEMON_RECON_OPTIONS_JSON, {});
});

Deno.test("the default sizes and limits are the documented ones", () => {
  assert.equal(DEFAULTS.MAX_JOB_BYTES, 64 * 2 ** 30);
  assert.equal(DEFAULTS.DISK_FREE_MARGIN, 2 ** 30);
  assert.equal(DEFAULTS.JOB_TIMEOUT, 3600);
  assert.deepEqual(DEFAULTS.MATLAB_COMMAND, ["matlab", "-batch"]);
  assert.equal(DEFAULTS.CLIENT_DAEMON_STATE_FILE, "");
});

Deno.test("parseByteSize() reads plain bytes and K, M, G, T suffixes", () => {
  const cases: [string, number | undefined][] = [
    ["0", 0],
    ["1073741824", 2 ** 30],
    ["512M", 512 * 2 ** 20],
    ["64G", 64 * 2 ** 30],
    ["64g", 64 * 2 ** 30],
    ["2T", 2 * 2 ** 40],
    ["4K", 4096],
    ["1 GiB", 2 ** 30],
    ["10MB", 10 * 2 ** 20],
    ["", undefined],
    ["G", undefined],
    ["1.5G", undefined],
    ["-1", undefined],
    ["1P", undefined],
    ["0x10", undefined],
    ["99999999999T", undefined],
  ];
  for (const [text, expected] of cases) assert.equal(parseByteSize(text), expected, text);
  assert.equal(formatByteSize(64 * 2 ** 30), "64G");
  assert.equal(formatByteSize(1000), "1000");
  assert.equal(formatByteSize(0), "0");
  assert.equal(configOf(seedWith("MAX_JOB_BYTES = 512M")).MAX_JOB_BYTES, 512 * 2 ** 20);
});

Deno.test("isIpAddress() accepts IPv4 and IPv6 literals only", () => {
  for (
    const ok of ["127.0.0.1", "0.0.0.0", "255.255.255.255", "::1", "fe80::1", "::ffff:10.0.0.1"]
  ) {
    assert.equal(isIpAddress(ok), true, ok);
  }
  for (
    const bad of [
      "",
      "localhost",
      "1.2.3",
      "1.2.3.4.5",
      "256.1.1.1",
      "[::1]",
      ":::",
      "1::2::3",
      "10.0.0.0/8",
    ]
  ) {
    assert.equal(isIpAddress(bad), false, bad);
  }
});

Deno.test("MATLAB_COMMAND is split on whitespace into argv", () => {
  const config = configOf(seedWith("MATLAB_COMMAND = /opt/matlab/bin/matlab   -nodisplay\t-batch"));
  assert.deepEqual(config.MATLAB_COMMAND, ["/opt/matlab/bin/matlab", "-nodisplay", "-batch"]);
});

Deno.test("requireSharedKey() returns a well-formed key", () => {
  const key = makeKey();
  const config = configOf(seedWith(`SHARED_KEY = ${key}`));
  assert.equal(requireSharedKey(config, "recon.opts"), key);
});

Deno.test("requireSharedKey() rejects the placeholder, an empty key and malformed keys", () => {
  const key = makeKey();
  const cases: [string, RegExp][] = [
    [PLACEHOLDER_SHARED_KEY, /^\/etc\/recon.opts: SHARED_KEY is still the placeholder/],
    ["", /^\/etc\/recon.opts: SHARED_KEY is not set; generate one with .recon-server keygen.$/],
    [key.slice(0, 40), /^\/etc\/recon.opts: SHARED_KEY must be 32 bytes .*; got 40 characters$/],
    [key.slice(0, 43), /: SHARED_KEY must be 32 bytes of urlsafe base64/],
    [key + "A", /: SHARED_KEY must be 32 bytes of urlsafe base64/],
    [key.replace(/^./, "+"), /: SHARED_KEY must be 32 bytes of urlsafe base64/],
    [key.replace(/^./, "/"), /: SHARED_KEY must be 32 bytes of urlsafe base64/],
    ["A".repeat(42) + "B=", /: SHARED_KEY must be 32 bytes of urlsafe base64/],
  ];
  for (const [value, message] of cases) {
    const config = { ...DEFAULTS, SHARED_KEY: value } as ReconConfig;
    let caught: unknown;
    try {
      requireSharedKey(config, "/etc/recon.opts");
    } catch (error) {
      caught = error;
    }
    assert.ok(caught instanceof ConfigError, value);
    assert.match(caught.message, message);
    assert.ok(!caught.message.includes("\n"));
    if (value.length > 30) assert.ok(!caught.message.includes(value), "the key is not shown");
    if (value === "" || value === PLACEHOLDER_SHARED_KEY) {
      // The message says to run keygen; the hint adds where the key goes, not that again.
      assert.equal(
        caught.hint,
        'put it in /etc/recon.opts as the line "SHARED_KEY = <key>"; the server and every ' +
          "client need the same key in their recon.opts",
      );
    } else {
      assert.equal(
        caught.hint,
        "generate one with 'recon-server keygen' and put the same value in recon.opts on the " +
          "server and every client",
      );
    }
  }
});

Deno.test("resolveConfigPaths() makes relative paths absolute against the opts directory", () => {
  const config = configOf(
    seedWith(
      "CLIENT_WATCH_DIRECTORY = incoming",
      "CLIENT_DAEMON_ON_COMPLETE = ../hooks/done.sh",
      "CLIENT_DEFAULT_PFILE_PATH = ./P1.7",
    ),
  );
  const resolved = resolveConfigPaths(config, "/etc/recon");
  assert.equal(resolved.CLIENT_DOWNLOAD_DIR, "/etc/recon/client_downloads");
  assert.equal(resolved.RECON_SCRIPT, "/etc/recon/default_recon_script.sh");
  assert.equal(resolved.CLIENT_WATCH_DIRECTORY, "/etc/recon/incoming");
  assert.equal(resolved.CLIENT_DAEMON_ON_COMPLETE, "/etc/hooks/done.sh");
  assert.equal(resolved.CLIENT_DEFAULT_PFILE_PATH, "/etc/recon/P1.7");
  assert.equal(resolved.CLIENT_DAEMON_STATE_FILE, "/etc/recon/recon-watch.sqlite");
  assert.equal(resolved.RECON_FILEPATH, "/tmp/recon_server_pfiles");
  assert.equal(resolved.LOG_FILEPATH, "/tmp/recon_project.log");
  assert.equal(resolved.MRRAW_PATH, "/usr/g/mrraw/");
  assert.equal(config.CLIENT_DOWNLOAD_DIR, "client_downloads", "the input is not changed");
});

Deno.test("resolveConfigPaths() leaves empty paths empty and needs an absolute base", () => {
  const resolved = resolveConfigPaths(configOf(""), "/srv/recon");
  assert.equal(resolved.CLIENT_WATCH_DIRECTORY, "");
  assert.equal(resolved.CLIENT_DAEMON_ON_COMPLETE, "");
  const state = resolveConfigPaths(configOf("CLIENT_DAEMON_STATE_FILE = /var/lib/w.db\n"), "/srv");
  assert.equal(state.CLIENT_DAEMON_STATE_FILE, "/var/lib/w.db");
  assert.throws(() => resolveConfigPaths(configOf(""), "relative/dir"), TypeError);
});

Deno.test("redactedConfig() hides SHARED_KEY and PASSWORD and adds SHARED_KEY_ID", () => {
  const key = makeKey();
  const config = configOf(seedWith(`SHARED_KEY = ${key}`));
  const shown = redactedConfig(config, "k-1234");
  assert.equal(shown.SHARED_KEY, "<redacted>");
  assert.equal(shown.PASSWORD, "<redacted>");
  assert.equal(shown.SHARED_KEY_ID, "k-1234");
  assert.equal(config.SHARED_KEY, key, "the input is not changed");
  assert.equal(Object.hasOwn(redactedConfig(config), "SHARED_KEY_ID"), false);
  assert.equal(redactedConfig(configOf(SEED)).SHARED_KEY, PLACEHOLDER_SHARED_KEY);
  assert.ok(!showConfigJson(config, "k").includes(key));
  assert.equal(JSON.parse(showConfigJson(config, "k")).SHARED_KEY_ID, "k");
});

Deno.test("showConfigText() lists every option and reads back as the same config", () => {
  const key = makeKey();
  const config = configOf(
    seedWith(
      `SHARED_KEY = ${key}`,
      "TRUSTEDIPS: 10.0.0.1,::1",
      'CLIENT_DAEMON_RECON_OPTIONS_JSON = {"a": 1}',
      "MAX_JOB_BYTES = 3000",
    ),
  );
  const text = showConfigText(config, "abcd");
  assert.ok(!text.includes(key));
  assert.match(text, /^SHARED_KEY = <redacted>$/m);
  assert.match(text, /^# SHARED_KEY_ID = abcd$/m);
  for (const name of OPTION_NAMES) assert.match(text, new RegExp(`^${name} =`, "m"));
  const { config: again, warnings } = parseOpts(text);
  assert.deepEqual(warnings, []);
  assert.deepEqual({ ...again, SHARED_KEY: "", PASSWORD: "" }, {
    ...config,
    SHARED_KEY: "",
    PASSWORD: "",
  });
});

Deno.test("configFromDocument() checks a document built by hand", () => {
  const document = parseOptsDocument("");
  setOption(document, "SERVER_PORT", "70000");
  assert.throws(
    () => configFromDocument(document, { source: "x.opts" }),
    /^ConfigError: x.opts line 1: SERVER_PORT/,
  );
});

Deno.test("every prefix of the seed either parses and formats back or is a ConfigError", () => {
  for (const text of [SEED, SEED_CRLF]) {
    for (let end = 0; end <= text.length; end++) {
      const prefix = text.slice(0, end);
      try {
        const { document } = parseOpts(prefix);
        assert.equal(formatOpts(document), prefix);
      } catch (error) {
        assert.ok(error instanceof ConfigError, `offset ${end}: ${error}`);
      }
    }
  }
});

Deno.test("random lines parse and format back byte for byte, or fail with a ConfigError", () => {
  const pieces = [
    "",
    " ",
    "\t",
    "#",
    "# c",
    "\\",
    "=",
    ":",
    "KEY",
    "SHARED_KEY",
    "TRUSTEDIPS",
    "x",
    '"',
    "{}",
    "60000",
    "\r",
    "__proto__",
    "a#b",
    " # note",
    "ÿ",
    "\u0000",
  ];
  let seed = 42;
  const random = (n: number) => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed % n;
  };
  for (let round = 0; round < 2000; round++) {
    const lines: string[] = [];
    for (let line = random(15); line > 0; line--) {
      let text = "";
      for (let part = random(5); part > 0; part--) text += pieces[random(pieces.length)];
      lines.push(text + ["\n", "\r\n", ""][random(3)]);
    }
    const text = lines.join("");
    try {
      const { document, config } = parseOpts(text);
      assert.equal(formatOpts(document), text);
      assert.deepEqual(parseOpts(formatOpts(document)).config, config);
    } catch (error) {
      assert.ok(error instanceof ConfigError, `${JSON.stringify(text)}: ${error}`);
    }
  }
});
