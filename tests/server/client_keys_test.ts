/**
 * Tests for lib/server/client_keys.ts (the client file's format, issue 14): both round
 * trips, every rule a line or the whole file can break with its `<file>:<line>:`
 * message, and that no message ever shows a key's characters, wherever in a line the
 * key was put and wherever the line was cut. Also the `from=` addresses and CIDR blocks
 * as lib/server/access.ts matches them (TrustedAddresses with `networks`).
 */
import assert from "node:assert/strict";
import { decodeKey, keyId } from "../../lib/crypto/keys.ts";
import { ConfigError, ExitCode } from "../../lib/errors.ts";
import { TrustedAddresses } from "../../lib/server/access.ts";
import {
  checkDestinations,
  checkFromPatterns,
  CLIENT_FILE_HEADER,
  CLIENT_NAME_PATTERN,
  ClientFileError,
  type ClientKey,
  clientNameProblem,
  formatClientFile,
  formatClientLine,
  formatTime,
  makeClientKey,
  parseClientFile,
} from "../../lib/server/client_keys.ts";

const FILE = "/etc/recon/recon-clients";
const KEYS = [
  "s7Vi1v6gRGjxlN7E6Mj9s59pTiAFDm8JHcdHq-vgzao=",
  "aiP5CLUBIN4s8gymLvKkXFGgNUs4tGJg8HUvrH8Dcko=",
  "dE9AzSDqh_BgYjX74cTKCbdUFN0ly6QGFXJgNs4HxYc=",
  "Ojk9pgPpeXZBkO0mH5VsKJIvKnwIX4vb-TrPw1TMPb8=",
];
const IDS = await Promise.all(KEYS.map((key) => keyId(decodeKey(key))));
const CREATED = "2026-12-01T19:42:00Z";

/** A line for key `i` of {@link KEYS}. */
function line(name: string, i: number, flags = "", created = CREATED): string {
  return `${name} ${IDS[i]} ${KEYS[i]} ${created}${flags ? ` ${flags}` : ""}`;
}

/** Whether `text` holds 8 or more consecutive characters of any of {@link KEYS}. */
function showsKey(text: string): boolean {
  return KEYS.some((key) => {
    for (let i = 0; i + 8 <= key.length; i++) if (text.includes(key.slice(i, i + 8))) return true;
    return false;
  });
}

async function parseError(text: string, sharedKeyId?: string): Promise<ClientFileError> {
  try {
    await parseClientFile(text, FILE, { sharedKeyId });
  } catch (error) {
    assert.ok(error instanceof ClientFileError, String(error));
    return error;
  }
  assert.fail(`parsed without an error:\n${text}`);
}

// ---------------------------------------------------------------------------
// Round trips

async function sampleKeys(): Promise<ClientKey[]> {
  const base = { admin: false, highPriority: false, from: [], deliver: [], created: CREATED };
  return [
    await makeClientKey(KEYS[0], { ...base, name: "mr1", admin: true, highPriority: true }),
    await makeClientKey(KEYS[1], {
      ...base,
      name: "mr2",
      from: ["10.0.0.5", "10.0.1.0/24", "2001:db8::/32", "fe80::1%eth0"],
      deliver: ["PACS", "RESEARCH"],
    }),
    await makeClientKey(KEYS[2], {
      ...base,
      name: "mr2",
      created: "2026-11-01T10:00:00Z",
      from: ["10.0.0.5"],
      expires: "2026-12-08T19:45:00Z",
    }),
    await makeClientKey(KEYS[3], { ...base, name: "0.scanner_b-9" }),
  ];
}

Deno.test("parseClientFile(formatClientFile(keys)) gives the keys back, numbered by line", async () => {
  const keys = await sampleKeys();
  const text = formatClientFile(keys);
  assert.ok(text.startsWith(CLIENT_FILE_HEADER));
  const parsed = await parseClientFile(text, FILE);
  const headerLines = CLIENT_FILE_HEADER.split("\n").length - 1;
  assert.deepEqual(parsed, keys.map((key, i) => ({ ...key, line: headerLines + i + 1 })));
});

Deno.test("formatClientFile(parseClientFile(text)) gives the text back for a file recon-server wrote", async () => {
  const text = formatClientFile(await sampleKeys());
  assert.equal(formatClientFile(await parseClientFile(text, FILE)), text);
});

Deno.test("formatClientLine() writes NAME KEY_ID KEY CREATED and the flags in a fixed order", async () => {
  const [mr1, mr2, retiring, plain] = await sampleKeys();
  assert.equal(formatClientLine(mr1), line("mr1", 0, "admin,high-priority"));
  assert.equal(
    formatClientLine(mr2),
    line(
      "mr2",
      1,
      'from="10.0.0.5,10.0.1.0/24,2001:db8::/32,fe80::1%eth0",deliver="PACS,RESEARCH"',
    ),
  );
  assert.equal(
    formatClientLine(retiring),
    line("mr2", 2, 'from="10.0.0.5",expires=2026-12-08T19:45:00Z', "2026-11-01T10:00:00Z"),
  );
  assert.equal(formatClientLine(plain), line("0.scanner_b-9", 3));
});

Deno.test("parseClientFile() reads the contract's example file", async () => {
  const text = [
    "# recon-clients: the client keys recon-server accepts, one per line.",
    line("mr1", 0, "admin,high-priority"),
    line("mr2", 1, 'from="10.0.0.5,10.0.1.0/24",deliver="PACS"', "2026-12-01T19:45:00Z"),
    line("mr2", 2, 'from="10.0.0.5",expires=2026-12-08T19:45:00Z', "2026-11-01T10:00:00Z"),
  ].join("\n");
  const keys = await parseClientFile(text, FILE);
  assert.deepEqual(
    keys.map(({ raw: _raw, ...rest }) => rest),
    [
      {
        name: "mr1",
        keyId: IDS[0],
        key: KEYS[0],
        created: CREATED,
        admin: true,
        highPriority: true,
        from: [],
        deliver: [],
        line: 2,
      },
      {
        name: "mr2",
        keyId: IDS[1],
        key: KEYS[1],
        created: "2026-12-01T19:45:00Z",
        admin: false,
        highPriority: false,
        from: ["10.0.0.5", "10.0.1.0/24"],
        deliver: ["PACS"],
        line: 3,
      },
      {
        name: "mr2",
        keyId: IDS[2],
        key: KEYS[2],
        created: "2026-11-01T10:00:00Z",
        admin: false,
        highPriority: false,
        from: ["10.0.0.5"],
        deliver: [],
        expires: "2026-12-08T19:45:00Z",
        line: 4,
      },
    ],
  );
  assert.deepEqual(keys[0].raw, decodeKey(KEYS[0]));
});

Deno.test("parseClientFile() skips comments and blank lines, and takes CRLF, tabs and extra spaces", async () => {
  assert.deepEqual(await parseClientFile("", FILE), []);
  assert.deepEqual(await parseClientFile("\n\n   \n# only comments\n  # indented\n", FILE), []);
  const text = `# header\r\n\r\n  mr1\t${IDS[0]}  ${KEYS[0]}\t${CREATED}   admin  \r\n`;
  const [key] = await parseClientFile(text, FILE);
  assert.equal(key.name, "mr1");
  assert.equal(key.admin, true);
  assert.equal(key.line, 3);
});

Deno.test("parseClientFile() upper-cases deliver= names and drops repeated destinations and addresses", async () => {
  const [key] = await parseClientFile(
    line("mr1", 0, 'from="10.0.0.5,10.0.0.5",deliver="pacs,PACS,Research"'),
    FILE,
  );
  assert.deepEqual(key.deliver, ["PACS", "RESEARCH"]);
  assert.deepEqual(key.from, ["10.0.0.5"]);
  assert.equal(formatClientLine(key), line("mr1", 0, 'from="10.0.0.5",deliver="PACS,RESEARCH"'));
});

Deno.test("parseClientFile() accepts any number of retiring keys beside a name's current one", async () => {
  const keys = await parseClientFile(
    [
      line("mr1", 0, "expires=2026-12-02T00:00:00Z"),
      line("mr1", 1),
      line("mr1", 2, "admin,expires=2026-12-03T00:00:00Z"),
    ].join("\n"),
    FILE,
  );
  assert.deepEqual(keys.map((key) => key.expires), [
    "2026-12-02T00:00:00Z",
    undefined,
    "2026-12-03T00:00:00Z",
  ]);
});

// ---------------------------------------------------------------------------
// Every rule, with its message

const GOOD = line("mr1", 0, "admin");

/** The bad line is line 3, after a comment and {@link GOOD}, unless `lines` says otherwise. */
const REJECTED: { rule: string; lines: string[]; line?: number; message: string }[] = [
  {
    rule: "fewer than four fields",
    lines: [`mr2 ${IDS[1]} ${KEYS[1]}`],
    message: "expected NAME KEY_ID KEY CREATED [FLAGS], found 3 fields",
  },
  {
    rule: "a space inside FLAGS",
    lines: [line("mr2", 1, "admin, high-priority")],
    message:
      "expected NAME KEY_ID KEY CREATED [FLAGS], found 6 fields (FLAGS may not contain spaces)",
  },
  {
    rule: "an upper-case name",
    lines: [line("MR2", 1)],
    message: `client name "MR2" is not valid: 1 to 63 characters of a-z, 0-9, '.', '_' and '-', ` +
      "starting with a letter or digit",
  },
  {
    rule: "a name starting with a dot",
    lines: [line(".mr2", 1)],
    message: `client name ".mr2" is not valid: 1 to 63 characters of a-z, 0-9, '.', '_' and '-', ` +
      "starting with a letter or digit",
  },
  {
    rule: "a name of 64 characters",
    lines: [line("m".repeat(64), 1)],
    message: "a client name of 64 characters (not shown) is not valid: 1 to 63 characters " +
      "of a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
  },
  {
    rule: "the reserved name default",
    lines: [line("default", 1)],
    message: "the name default is reserved for SHARED_KEY in recon.opts",
  },
  {
    rule: "a KEY_ID that is not 16 hex digits",
    lines: [`mr2 ${IDS[1].toUpperCase()} ${KEYS[1]} ${CREATED}`],
    message: "KEY_ID must be 16 lower-case hex digits (the key's key id)",
  },
  {
    rule: "a KEY one character short",
    lines: [`mr2 ${IDS[1]} ${KEYS[1].slice(1)} ${CREATED}`],
    message: 'KEY must be 32 bytes of urlsafe base64 (44 characters ending in "=", as made by ' +
      "Fernet.generate_key()); got 43 characters",
  },
  {
    rule: "a KEY_ID that is not the key's",
    lines: [`mr2 ${IDS[2]} ${KEYS[1]} ${CREATED}`],
    message: `key id ${IDS[2]} does not match the key on this line`,
  },
  {
    rule: "a CREATED without its Z",
    lines: [line("mr2", 1, "", "2026-12-01T19:42:00")],
    message: 'CREATED must be a UTC time like 2026-12-01T19:42:00Z, not "2026-12-01T19:42:00"',
  },
  {
    rule: "a CREATED on a day that does not exist",
    lines: [line("mr2", 1, "", "2026-02-30T10:00:00Z")],
    message: 'CREATED must be a UTC time like 2026-12-01T19:42:00Z, not "2026-02-30T10:00:00Z"',
  },
  {
    rule: "an unknown flag",
    lines: [line("mr2", 1, "admin,root")],
    message: 'unknown flag "root" (known: admin, high-priority, from="…", deliver="…", expires=…)',
  },
  {
    rule: "a flag twice",
    lines: [line("mr2", 1, "admin,high-priority,admin")],
    message: "flag admin appears twice",
  },
  {
    rule: "a value on admin",
    lines: [line("mr2", 1, "admin=yes")],
    message: "flag admin takes no value",
  },
  {
    rule: "from without a value",
    lines: [line("mr2", 1, "from")],
    message: "flag from needs a value (from=…)",
  },
  {
    rule: "from= without quotes",
    lines: [line("mr2", 1, "from=10.0.0.5")],
    message: 'from= needs a quoted list, e.g. from="10.0.0.5,10.0.1.0/24"',
  },
  {
    rule: "an empty from=",
    lines: [line("mr2", 1, 'from=""')],
    message: "from= needs at least one address",
  },
  {
    rule: "a host name in from=",
    lines: [line("mr2", 1, 'from="10.0.0.5,scanner.local"')],
    message: 'from= entry "scanner.local" is not an IP address',
  },
  {
    rule: "a CIDR block with host bits in from=",
    lines: [line("mr2", 1, 'from="10.0.1.1/24"')],
    message: 'from= entry "10.0.1.1/24" has address bits set beyond its /24',
  },
  {
    rule: "a prefix longer than the address in from=",
    lines: [line("mr2", 1, 'from="10.0.0.0/33"')],
    message: 'from= entry "10.0.0.0/33": the prefix length must be at most 32 for IPv4',
  },
  {
    rule: "a CIDR block that is not one in from=",
    lines: [line("mr2", 1, 'from="10.0.0.0/x"')],
    message: 'from= entry "10.0.0.0/x" is not an IP address or CIDR block (ADDRESS/BITS)',
  },
  {
    rule: "a zone on an address that is not link-local in from=",
    lines: [line("mr2", 1, 'from="10.0.0.5%eth0"')],
    message:
      'from= entry "10.0.0.5%eth0": a zone (%interface) is only allowed on a link-local fe80:: address',
  },
  {
    rule: "a destination that is not letters and digits",
    lines: [line("mr2", 1, 'deliver="PACS-2"')],
    message: 'deliver= destination "PACS-2" is not valid: 1 to 32 letters and digits',
  },
  {
    rule: "a destination of 33 characters",
    lines: [line("mr2", 1, `deliver="${"A".repeat(33)}"`)],
    message: `deliver= destination "${"A".repeat(33)}" is not valid: 1 to 32 letters and digits`,
  },
  {
    rule: "deliver= without quotes",
    lines: [line("mr2", 1, "deliver=PACS")],
    message: 'deliver= needs a quoted list, e.g. deliver="PACS,RESEARCH"',
  },
  {
    rule: "an expires= that is no time",
    lines: [line("mr2", 1, "expires=tomorrow")],
    message: 'expires= must be a UTC time like 2026-12-01T19:42:00Z, not "tomorrow"',
  },
  {
    rule: "a quote left open",
    lines: [line("mr2", 1, 'from="10.0.0.5,admin')],
    message: 'FLAGS has a quote (") that is not closed',
  },
  {
    rule: "two commas in a row",
    lines: [line("mr2", 1, "admin,,high-priority")],
    message: "FLAGS has an empty flag (two commas in a row?)",
  },
  {
    rule: "two current keys for one name",
    lines: [line("mr1", 1)],
    message:
      "client mr1 already has its current key on line 2; a second line for it needs expires=",
  },
  {
    rule: "one key for two names",
    lines: [line("mr2", 0)],
    message: `key id ${IDS[0]} is already on line 2`,
  },
  {
    rule: "one key twice for one name, once retiring",
    lines: [line("mr1", 0, "expires=2026-12-08T19:45:00Z")],
    message: `key id ${IDS[0]} is already on line 2`,
  },
  {
    rule: "a name with retiring keys only",
    lines: [
      line("mr2", 1, "expires=2026-12-08T19:45:00Z"),
      line("mr2", 2, "expires=2026-12-09T19:45:00Z"),
    ],
    message: "client mr2 has no current key (each of its lines has expires=); remove its lines, " +
      "or the expires= of the key it uses now",
  },
];

for (const { rule, lines, line: at, message } of REJECTED) {
  Deno.test(`parseClientFile() refuses ${rule}, naming file and line`, async () => {
    const error = await parseError(["# clients", GOOD, ...lines, line("mr3", 3)].join("\n"));
    assert.equal(error.message, `${FILE}:${at ?? 3}: ${message}`);
    assert.equal(error.line, at ?? 3, "the line, for the command line's hint");
    assert.equal(showsKey(error.message), false);
  });
}

Deno.test("parseClientFile() refuses a key that is SHARED_KEY's (the client default)", async () => {
  const error = await parseError(["# clients", GOOD, line("mr2", 1)].join("\n"), IDS[1]);
  assert.equal(
    error.message,
    `${FILE}:3: key id ${IDS[1]} is SHARED_KEY's in recon.opts (the client default); ` +
      "give each client its own key",
  );
  assert.ok(error instanceof ConfigError);
  assert.equal(error.exitCode, ExitCode.USAGE);
});

// ---------------------------------------------------------------------------
// No key's characters in a message

Deno.test("parseClientFile() never shows a key put in the wrong field", async () => {
  const key = KEYS[1];
  const short = key.slice(0, 43);
  const lines = [
    `${key} ${IDS[1]} ${KEYS[1]} ${CREATED}`,
    `mr2 ${key} ${KEYS[1]} ${CREATED}`,
    `mr2 ${IDS[1]} ${KEYS[1]} ${key}`,
    `mr2 ${IDS[1]} ${KEYS[1]} ${CREATED} ${key}`,
    `mr2 ${IDS[1]} ${KEYS[1]} ${CREATED} admin,${key}`,
    `mr2 ${IDS[1]} ${KEYS[1]} ${CREATED} from="${key}"`,
    `mr2 ${IDS[1]} ${KEYS[1]} ${CREATED} from="10.0.0.5,${key}/24"`,
    `mr2 ${IDS[1]} ${KEYS[1]} ${CREATED} deliver="${key}"`,
    `mr2 ${IDS[1]} ${KEYS[1]} ${CREATED} expires=${key}`,
    `mr2 ${IDS[1]} ${key.slice(1)} ${CREATED}`,
    `mr2 ${IDS[1]} ${key}${key} ${CREATED}`,
    `mr2 ${IDS[1]} ${CREATED} ${key}`,
    `mr2 ${key} ${CREATED}`,
    `${key}`,
    `${short} ${IDS[1]} ${KEYS[1]} ${CREATED}`,
    `mr2 ${IDS[1]} ${KEYS[1]} ${CREATED} ${short}`,
    `mr2 ${IDS[1]} ${KEYS[1]} ${CREATED} from="${short}"`,
    `mr2 ${IDS[1]} ${KEYS[1]} ${CREATED} deliver="${short}"`,
    `mr2 ${IDS[1]} ${KEYS[1]} ${CREATED} expires=${short}`,
  ];
  for (const bad of lines) {
    const error = await parseError(`${GOOD}\n${bad}\n`);
    assert.ok(error.message.startsWith(`${FILE}:2: `), error.message);
    assert.equal(showsKey(error.message), false, `${bad}\n→ ${error.message}`);
  }
});

Deno.test("parseClientFile() of a line cut at every offset names the line and never shows the key", async () => {
  const full = line(
    "mr2",
    1,
    'high-priority,from="10.0.0.5,10.0.1.0/24",deliver="PACS",expires=2026-12-08T19:45:00Z',
  );
  let refused = 0;
  for (let end = 1; end < full.length; end++) {
    const text = `${GOOD}\n${full.slice(0, end)}\n`;
    try {
      await parseClientFile(text, FILE);
    } catch (error) {
      assert.ok(error instanceof ClientFileError, String(error));
      assert.ok(error.message.startsWith(`${FILE}:2: `), error.message);
      assert.equal(showsKey(error.message), false, error.message);
      refused++;
    }
  }
  assert.ok(refused > full.length - 40, `${refused} of ${full.length - 1} cuts refused`);
});

// ---------------------------------------------------------------------------
// The pieces the command line uses

Deno.test("clientNameProblem() takes 1 to 63 lower-case characters and refuses the rest", () => {
  for (const name of ["a", "0", "mr1", "scanner.b_2-x", "m".repeat(63)]) {
    assert.equal(clientNameProblem(name), undefined, name);
    assert.match(name, CLIENT_NAME_PATTERN);
  }
  for (
    const name of ["", "Mr1", "-a", ".a", "_a", "a b", "a/b", "../x", "m".repeat(64), "ä", "a\n"]
  ) {
    assert.match(clientNameProblem(name)!, /is not valid/, JSON.stringify(name));
  }
  assert.equal(
    clientNameProblem("default"),
    "the name default is reserved for SHARED_KEY in recon.opts",
  );
});

Deno.test("checkFromPatterns() and checkDestinations() refuse empty lists and never quote a key", () => {
  assert.throws(() => checkFromPatterns([]), /from= needs at least one address/);
  assert.throws(() => checkDestinations([]), /deliver= needs at least one destination/);
  for (const check of [checkFromPatterns, checkDestinations]) {
    assert.throws(
      () => check([KEYS[0]]),
      (error: unknown) => error instanceof TypeError && !showsKey(error.message),
    );
  }
  const long = "0000:0000:0000:0000:0000:ffff:10.0.0.0/104";
  assert.ok(long.length > 40);
  assert.deepEqual(checkFromPatterns([long]), [long]);
});

Deno.test("checkFromPatterns() and checkDestinations() name the option as given, in whole sentences", () => {
  const refusals: [() => unknown, string][] = [
    [() => checkFromPatterns(["10.0.0.300"]), 'from= entry "10.0.0.300" is not an IP address'],
    [
      () => checkFromPatterns(["10.0.0.300"], "--from"),
      '--from entry "10.0.0.300" is not an IP address',
    ],
    [() => checkFromPatterns([], "--from"), "--from needs at least one address"],
    [
      () => checkFromPatterns([KEYS[0]], "--from"),
      "a --from entry of 44 characters (not shown) is not an IP address or CIDR block",
    ],
    [
      () => checkDestinations(["PACS-1"], "--deliver"),
      '--deliver destination "PACS-1" is not valid: 1 to 32 letters and digits',
    ],
    [
      () => checkDestinations([KEYS[0]]),
      "a deliver= destination of 44 characters (not shown) is not valid: 1 to 32 letters and digits",
    ],
    [() => checkDestinations([], "--deliver"), "--deliver needs at least one destination"],
  ];
  for (const [check, message] of refusals) {
    assert.throws(
      check,
      (error: unknown) => error instanceof TypeError && error.message === message,
    );
  }
  assert.equal(
    clientNameProblem("m".repeat(64)),
    "a client name of 64 characters (not shown) is not valid: 1 to 63 characters of a-z, 0-9, " +
      "'.', '_' and '-', starting with a letter or digit",
  );
});

Deno.test("formatTime() writes UTC to the second", () => {
  assert.equal(formatTime(new Date("2026-12-01T19:42:00.987Z")), "2026-12-01T19:42:00Z");
});

// ---------------------------------------------------------------------------
// from= as the server matches it

Deno.test("TrustedAddresses with networks matches addresses inside a CIDR block, in any spelling", () => {
  const from = new TrustedAddresses(["10.0.0.5", "10.0.1.0/24", "2001:db8::/32"], {
    networks: true,
  });
  assert.ok(from.restricted);
  for (const address of ["10.0.0.5", "10.0.1.0", "10.0.1.77", "10.0.1.255", "::ffff:10.0.1.77"]) {
    assert.ok(from.allows(address), address);
  }
  for (const address of ["2001:db8::1", "2001:DB8:ffff::5", "[2001:db8:1::]"]) {
    assert.ok(from.allows(address), address);
  }
  for (
    const address of [
      "10.0.0.6",
      "10.0.2.1",
      "10.0.0.255",
      "2001:db9::1",
      "::1",
      "",
      "x",
      "::ffff:10.0.2.1",
    ]
  ) {
    assert.ok(!from.allows(address), address);
  }
});

Deno.test("TrustedAddresses with networks: /0, a full-length prefix, and an IPv4-mapped block", () => {
  const anyV4 = new TrustedAddresses(["0.0.0.0/0"], { networks: true });
  assert.ok(anyV4.allows("192.168.7.9"));
  assert.ok(!anyV4.allows("2001:db8::1"), "an IPv4 block holds no IPv6 address");
  const one = new TrustedAddresses(["10.0.0.5/32", "2001:db8::7/128"], { networks: true });
  assert.ok(one.allows("10.0.0.5") && !one.allows("10.0.0.4"));
  assert.ok(one.allows("2001:db8::7") && !one.allows("2001:db8::6"));
  const mapped = new TrustedAddresses(["::ffff:10.0.0.0/104"], { networks: true });
  assert.ok(mapped.allows("10.1.2.3") && mapped.allows("::ffff:10.1.2.3"));
  assert.ok(!mapped.allows("11.0.0.1"));
  assert.throws(() => new TrustedAddresses(["::ffff:10.0.0.0/95"], { networks: true }));
});

Deno.test("TrustedAddresses without networks (TRUSTEDIPS) still refuses a CIDR block", () => {
  assert.throws(
    () => new TrustedAddresses(["10.0.0.0/8"]),
    /^TypeError: TRUSTEDIPS entry "10\.0\.0\.0\/8" is not an IP address$/,
  );
});
