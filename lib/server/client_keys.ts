/**
 * The client file (CLIENT_KEYS_FILE, `recon-clients` beside recon.opts): which keys the
 * server accepts and whose they are, one line per key, like OpenSSH's authorized_keys:
 *
 *     NAME KEY_ID KEY CREATED [FLAGS]
 *     mr1 3f2a9c0d11e2b4a5 <44 chars> 2026-12-01T19:42:00Z admin,high-priority
 *     mr2 77aa00bb11cc22dd <44 chars> 2026-11-01T10:00:00Z from="10.0.0.5",expires=2026-12-08T19:45:00Z
 *
 * FLAGS (no spaces): `admin`, `high-priority`, `from="ADDR,CIDR,…"` (the addresses the
 * key may come from, TRUSTEDIPS syntax plus CIDR blocks), `deliver="PACS,…"` (the
 * destinations it may name), `expires=TIME` (a retiring key, accepted until TIME, after
 * `recon-server clients rotate`). Each name has exactly one current line (no expires=);
 * no key id appears twice, nor SHARED_KEY's (that key is the client `default`, a name
 * the file may not use).
 *
 * Parsing and formatting only, no I/O (lib/server/client_file.ts reads and edits the
 * file). A message names `<file>:<line>:` and never contains a key's characters: the
 * KEY field is never quoted, and any other field only when it is too short to be a key.
 *
 * @module
 */
import { decodeKey, keyId } from "../crypto/keys.ts";
import { ConfigError, type ReconErrorOptions } from "../errors.ts";
import { MAX_QUOTED_LENGTH, quoteFromOpts } from "../opts/mod.ts";
import { TrustedAddresses } from "./access.ts";

/** Client names: lower case, 1 to 63 characters, starting with a letter or digit. */
export const CLIENT_NAME_PATTERN: RegExp = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** The name of the client SHARED_KEY in recon.opts stands for; the file may not use it. */
export const DEFAULT_CLIENT = "default";

/**
 * Destination names in `deliver=`: letters and digits, compared case-insensitively. At
 * most 32 characters (a DICOM AE title has 16), so that a key pasted there by mistake
 * is refused rather than taken, and then listed, as a destination.
 */
export const DESTINATION_PATTERN: RegExp = /^[A-Za-z0-9]{1,32}$/;

/** CREATED and expires=: UTC to the second. */
const TIME_PATTERN = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;

const KEY_ID_PATTERN = /^[0-9a-f]{16}$/;

/** The first lines of a file written by recon-server. */
export const CLIENT_FILE_HEADER =
  "# recon-clients: the client keys recon-server accepts, one per line (see 'recon-server clients --help').\n" +
  "# NAME KEY_ID KEY CREATED [FLAGS]; edit with recon-server clients add|revoke|rotate\n";

/** One line of the client file: a key and whose it is. */
export interface ClientKey {
  name: string;
  /** keyId(raw): 16 hex digits, public. */
  keyId: string;
  /** The key as text (44 characters of urlsafe base64). Never log or print it. */
  key: string;
  raw: Uint8Array<ArrayBuffer>;
  /** When the key was made, `2026-12-01T19:42:00Z`. */
  created: string;
  admin: boolean;
  highPriority: boolean;
  /** Addresses and CIDR blocks the key may connect from; empty: any (TRUSTEDIPS still applies). */
  from: string[];
  /** Destinations it may deliver to, upper case; empty: none. */
  deliver: string[];
  /** Set on a retiring key: accepted until then, then ignored. */
  expires?: string;
  /** Line number in the file (1-based); 0 for a key not read from a file. */
  line: number;
}

/** The fields of a client key other than the key itself ({@link makeClientKey}). */
export type ClientKeyFields = Omit<ClientKey, "keyId" | "key" | "raw" | "line"> & {
  line?: number;
};

/** A malformed client file; the message starts with `<file>:<line>: `. */
export class ClientFileError extends ConfigError {
  /** The line at fault, 1-based. */
  readonly line: number;
  constructor(message: string, options: ReconErrorOptions & { line: number }) {
    super(message, options);
    this.line = options.line;
  }
}

/** Options of {@link parseClientFile}. */
export interface ParseClientFileOptions {
  /** SHARED_KEY's key id when recon.opts sets one: no line may use that key. */
  sharedKeyId?: string;
}

/** `date` as the file writes times: ISO 8601 UTC to the second. */
export function formatTime(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

/** Why `name` cannot be a client name, or undefined when it can. */
export function clientNameProblem(name: string): string | undefined {
  if (name === DEFAULT_CLIENT) {
    return `the name ${DEFAULT_CLIENT} is reserved for SHARED_KEY in recon.opts`;
  }
  if (!CLIENT_NAME_PATTERN.test(name)) {
    return `${named("client name", name)} is not valid: 1 to 63 characters ` +
      `of a-z, 0-9, '.', '_' and '-', starting with a letter or digit`;
  }
  return undefined;
}

/**
 * `noun "text"` for a short text, else `a noun of N characters (not shown)`: a long one
 * may be a key pasted in the wrong place.
 */
function named(noun: string, text: string): string {
  if (text.length <= MAX_QUOTED_LENGTH) return `${noun} ${quoteFromOpts(text)}`;
  return `${/^[aeiou]/.test(noun) ? "an" : "a"} ${noun} of ${text.length} characters (not shown)`;
}

/**
 * Check `from=` entries: IP addresses (a link-local one may carry its zone) or CIDR
 * blocks. Returns them as written, without duplicates. `option` is how messages name
 * the list: `from=` in the file, `--from` on the command line.
 * @throws {TypeError} naming the first bad entry (quoted only if short).
 */
export function checkFromPatterns(patterns: readonly string[], option = "from="): string[] {
  if (patterns.length === 0) throw new TypeError(`${option} needs at least one address`);
  for (const pattern of patterns) {
    try {
      new TrustedAddresses([pattern], { networks: true, label: `${option} entry` });
    } catch (error) {
      // Its message quotes the entry, which must not show a key pasted in the wrong place.
      if (pattern.length <= MAX_QUOTED_LENGTH) throw error;
      throw new TypeError(
        `${named(`${option} entry`, pattern)} is not an IP address or CIDR block`,
      );
    }
  }
  return [...new Set(patterns)];
}

/**
 * Check `deliver=` destination names (`option`: `--deliver` on the command line);
 * returns them upper case, without duplicates.
 * @throws {TypeError} naming the first bad one.
 */
export function checkDestinations(names: readonly string[], option = "deliver="): string[] {
  if (names.length === 0) throw new TypeError(`${option} needs at least one destination`);
  for (const name of names) {
    if (!DESTINATION_PATTERN.test(name)) {
      throw new TypeError(
        `${named(`${option} destination`, name)} is not valid: 1 to 32 letters and digits`,
      );
    }
  }
  return [...new Set(names.map((name) => name.toUpperCase()))];
}

/**
 * A client key from its text and fields, its key id computed.
 * @throws {TypeError} when `key` is not a key (the message never shows it).
 */
export async function makeClientKey(key: string, fields: ClientKeyFields): Promise<ClientKey> {
  const raw = decodeKey(key);
  return { ...fields, key, raw, keyId: await keyId(raw), line: fields.line ?? 0 };
}

/**
 * Parse and validate a whole client file: every line, then the rules across lines
 * (one current key per name, no key id twice, none equal to SHARED_KEY's).
 * @throws {ClientFileError} `<file>:<line>: <what>` for the first problem.
 */
export async function parseClientFile(
  text: string,
  file: string,
  options: ParseClientFileOptions = {},
): Promise<ClientKey[]> {
  const keys: ClientKey[] = [];
  const lineOfKeyId = new Map<string, number>();
  const currentLine = new Map<string, number>();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const content = lines[i].replace(/\r$/, "").trim();
    if (content === "" || content.startsWith("#")) continue;
    const line = i + 1;
    const fail = (what: string) => new ClientFileError(`${file}:${line}: ${what}`, { line });
    let key: ClientKey;
    try {
      key = await parseLine(content, line);
    } catch (error) {
      if (error instanceof TypeError) throw fail(error.message);
      throw error;
    }
    if (key.keyId === options.sharedKeyId) {
      throw fail(
        `key id ${key.keyId} is SHARED_KEY's in recon.opts (the client ${DEFAULT_CLIENT}); ` +
          "give each client its own key",
      );
    }
    const seen = lineOfKeyId.get(key.keyId);
    if (seen !== undefined) throw fail(`key id ${key.keyId} is already on line ${seen}`);
    lineOfKeyId.set(key.keyId, line);
    if (key.expires === undefined) {
      const current = currentLine.get(key.name);
      if (current !== undefined) {
        throw fail(
          `client ${key.name} already has its current key on line ${current}; ` +
            "a second line for it needs expires=",
        );
      }
      currentLine.set(key.name, line);
    }
    keys.push(key);
  }
  for (const key of keys) {
    if (!currentLine.has(key.name)) {
      throw new ClientFileError(
        `${file}:${key.line}: client ${key.name} has no current key (each of its lines has ` +
          "expires=); remove its lines, or the expires= of the key it uses now",
        { line: key.line },
      );
    }
  }
  return keys;
}

/** One non-comment line; TypeError with the problem (no location). */
async function parseLine(content: string, line: number): Promise<ClientKey> {
  const fields = content.split(/\s+/);
  if (fields.length < 4 || fields.length > 5) {
    throw new TypeError(
      `expected NAME KEY_ID KEY CREATED [FLAGS], found ${fields.length} field${
        fields.length === 1 ? "" : "s"
      }${fields.length > 5 ? " (FLAGS may not contain spaces)" : ""}`,
    );
  }
  const [name, id, key, created, flagText] = fields;
  const nameProblem = clientNameProblem(name);
  if (nameProblem) throw new TypeError(nameProblem);
  // KEY_ID is not quoted: a line with its fields out of order could hold the key there.
  if (!KEY_ID_PATTERN.test(id)) {
    throw new TypeError("KEY_ID must be 16 lower-case hex digits (the key's key id)");
  }
  let raw: Uint8Array<ArrayBuffer>;
  try {
    raw = decodeKey(key);
  } catch (error) {
    throw new TypeError(`KEY ${(error as Error).message.replace(/^SHARED_KEY /, "")}`);
  }
  if (await keyId(raw) !== id) {
    throw new TypeError(`key id ${id} does not match the key on this line`);
  }
  checkTime(created, "CREATED");
  const flags = parseFlags(flagText ?? "");
  return { name, keyId: id, key, raw, created, ...flags, line };
}

/** The flags of a line, its defaults when there are none. */
function parseFlags(
  text: string,
): Pick<ClientKey, "admin" | "highPriority" | "from" | "deliver" | "expires"> {
  const flags: ReturnType<typeof parseFlags> = {
    admin: false,
    highPriority: false,
    from: [],
    deliver: [],
  };
  const seen = new Set<string>();
  for (const flag of splitFlags(text)) {
    const eq = flag.indexOf("=");
    const name = eq >= 0 ? flag.slice(0, eq) : flag;
    const value = eq >= 0 ? flag.slice(eq + 1) : undefined;
    if (!KNOWN_FLAGS.includes(name)) {
      throw new TypeError(
        `${named("unknown flag", name)} (known: admin, high-priority, ` +
          'from="…", deliver="…", expires=…)',
      );
    }
    if (seen.has(name)) throw new TypeError(`flag ${name} appears twice`);
    seen.add(name);
    const takesValue = name === "from" || name === "deliver" || name === "expires";
    if (takesValue !== (value !== undefined)) {
      throw new TypeError(
        takesValue ? `flag ${name} needs a value (${name}=…)` : `flag ${name} takes no value`,
      );
    }
    switch (name) {
      case "admin":
        flags.admin = true;
        break;
      case "high-priority":
        flags.highPriority = true;
        break;
      case "from":
        flags.from = checkFromPatterns(quotedList(name, value!, '"10.0.0.5,10.0.1.0/24"'));
        break;
      case "deliver":
        flags.deliver = checkDestinations(quotedList(name, value!, '"PACS,RESEARCH"'));
        break;
      case "expires":
        flags.expires = checkTime(value!, "expires=");
        break;
    }
  }
  return flags;
}

const KNOWN_FLAGS = ["admin", "high-priority", "from", "deliver", "expires"];

/** Split FLAGS at commas outside double quotes. */
function splitFlags(text: string): string[] {
  if (text === "") return [];
  const flags: string[] = [];
  let start = 0;
  let quoted = false;
  for (let i = 0; i <= text.length; i++) {
    if (i < text.length && text[i] === '"') quoted = !quoted;
    if (i === text.length || (text[i] === "," && !quoted)) {
      const flag = text.slice(start, i);
      if (flag === "") throw new TypeError("FLAGS has an empty flag (two commas in a row?)");
      flags.push(flag);
      start = i + 1;
    }
  }
  if (quoted) throw new TypeError('FLAGS has a quote (") that is not closed');
  return flags;
}

/** The entries of `"A,B"`; the quotes are required (as in authorized_keys). */
function quotedList(name: string, value: string, example: string): string[] {
  const match = /^"([^"]*)"$/.exec(value);
  if (!match) throw new TypeError(`${name}= needs a quoted list, e.g. ${name}=${example}`);
  return match[1] === "" ? [] : match[1].split(",").map((entry) => entry.trim());
}

/** `text` if it is a UTC time to the second, else TypeError naming `what`. */
function checkTime(text: string, what: string): string {
  if (!TIME_PATTERN.test(text) || formatTime(new Date(Date.parse(text) || 0)) !== text) {
    throw new TypeError(
      `${what} must be a UTC time like 2026-12-01T19:42:00Z, not ${quoteFromOpts(text)}`,
    );
  }
  return text;
}

/** The FLAGS field of a key, as the file writes it ("" when it has none). */
export function formatClientFlags(
  key: Pick<ClientKey, "admin" | "highPriority" | "from" | "deliver" | "expires">,
): string {
  const flags: string[] = [];
  if (key.admin) flags.push("admin");
  if (key.highPriority) flags.push("high-priority");
  if (key.from.length > 0) flags.push(`from="${key.from.join(",")}"`);
  if (key.deliver.length > 0) flags.push(`deliver="${key.deliver.join(",")}"`);
  if (key.expires !== undefined) flags.push(`expires=${key.expires}`);
  return flags.join(",");
}

/** One line of the file, without its newline: `NAME KEY_ID KEY CREATED [FLAGS]`. */
export function formatClientLine(key: ClientKey): string {
  const flags = formatClientFlags(key);
  return `${key.name} ${key.keyId} ${key.key} ${key.created}${flags ? ` ${flags}` : ""}`;
}

/** A whole file: {@link CLIENT_FILE_HEADER}, then one line per key in the order given. */
export function formatClientFile(keys: readonly ClientKey[]): string {
  return CLIENT_FILE_HEADER + keys.map((key) => `${formatClientLine(key)}\n`).join("");
}
