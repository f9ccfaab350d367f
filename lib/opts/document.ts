/**
 * recon.opts as a document: every line kept with its kind, text and line ending,
 * so that the file can be changed one value at a time and written back with its
 * comments, order and line endings intact (`formatOpts(parseOptsDocument(t)) === t`).
 *
 * Syntax (docs/CONFIGURATION.md):
 * - Blank lines and lines whose first non-blank character is `#` are comments,
 *   including commented-out options and comments ending with a backslash.
 * - The first eleven other lines are the positional values ({@link POSITIONAL_KEYS}).
 *   A line `KNOWN_OPTION = …` (in any case), or `NAME = …` where NAME is a near
 *   miss of a known option (`JOB_TIMOUT = 5`), ends the positional part early.
 * - Then `KEY = VALUE` or `KEY: VALUE` lines; KEY matches `^[A-Z][A-Z0-9_]*$`.
 * - In any value, a `#` at its start or after whitespace, outside double quotes,
 *   begins a comment; the value is trimmed.
 *
 * A line that is not understood may hold SHARED_KEY (pasted alone, or with its
 * `=` forgotten), so errors name its line and never echo it (see `quoteFromOpts`).
 *
 * @module
 */
import { ConfigError } from "../errors.ts";
import { isOptionName, nearestOptionName, type OptionName, POSITIONAL_KEYS } from "./schema.ts";
import { DESTINATION_KEY } from "./destination.ts";
import { quoteFromOpts } from "./values.ts";

/** Option names: an upper-case letter, then upper-case letters, digits and `_`. */
export const KEY_PATTERN: RegExp = /^[A-Z][A-Z0-9_]*$/;

/** The line ending a line had in the file; `""` for a last line without one. */
export type LineEnding = "" | "\n" | "\r\n";

/** A blank or comment line, kept verbatim. */
export interface TextLine {
  kind: "blank" | "comment";
  /** 1-based line number in the parsed text. */
  number: number;
  raw: string;
  eol: LineEnding;
}

/** A line that sets a value: a positional line or a `KEY = VALUE` line. */
export interface ValueLine {
  kind: "positional" | "option";
  number: number;
  /** The whole line without its ending; always `before + value + after`. */
  raw: string;
  eol: LineEnding;
  /** The option name: from POSITIONAL_KEYS for a positional line, else as written. */
  key: string;
  /** The value, trimmed, inline comment removed; `""` means the default. */
  value: string;
  /** Text before the value (`KEY = ` or indentation). */
  before: string;
  /** Text after the value (spaces and an inline comment). */
  after: string;
}

/** One line of recon.opts. */
export type OptsLine = TextLine | ValueLine;

/** A parsed recon.opts, every line kept. */
export interface OptsDocument {
  lines: OptsLine[];
  /** The line ending used for appended lines: the file's first one, else `\n`. */
  eol: "\n" | "\r\n";
}

/** Options for {@link parseOptsDocument} and `parseOpts`. */
export interface ParseOptsOptions {
  /** How messages name the file, e.g. its path. Default `"recon.opts"`. */
  source?: string;
  /**
   * Accept options known to neither program, with a warning (`--allow-unknown-options`).
   * By default the first one is a `ConfigError`: a misspelt option would otherwise
   * leave its default in force with only a warning to show for it.
   */
  allowUnknownOptions?: boolean;
}

const BOM = "\uFEFF";

/**
 * Find where an inline comment starts in `text` (at `from` or later): a `#` at
 * `from` or after whitespace, outside double quotes. Returns `text.length` if none.
 */
function commentStart(text: string, from: number): number {
  let quoted = false;
  for (let i = from; i < text.length; i++) {
    const char = text[i];
    if (quoted) {
      if (char === "\\") i++;
      else if (char === '"') quoted = false;
    } else if (char === '"') {
      quoted = true;
    } else if (char === "#" && (i === from || /\s/.test(text[i - 1]))) {
      return i;
    }
  }
  return text.length;
}

/** Split `text` at `from` into the value and what follows it (spaces and comment). */
function splitValue(text: string, from: number): { before: string; value: string; after: string } {
  let start = from;
  while (start < text.length && /\s/.test(text[start])) start++;
  const value = text.slice(start, commentStart(text, start)).trimEnd();
  return {
    before: text.slice(0, start),
    value,
    after: text.slice(start + value.length),
  };
}

function fail(source: string, line: number, message: string, hint?: string): never {
  throw new ConfigError(`${source} line ${line}: ${message}`, { hint });
}

/** The `KEY =` / `KEY:` prefix of a line: the key and where its value starts. */
function keyPrefix(body: string): { key: string; valueFrom: number } | undefined {
  const match = /^\s*([^\s=:]*)\s*[=:]/.exec(body);
  return match ? { key: match[1], valueFrom: match[0].length } : undefined;
}

/** Whether a `NAME =` prefix names a known option or, in upper case, a near miss of one. */
function looksLikeOption(key: string): boolean {
  return isOptionName(key.toUpperCase()) || DESTINATION_KEY.test(key) ||
    (KEY_PATTERN.test(key) && nearestOptionName(key) !== undefined);
}

/**
 * The option a line without `=` or `:` was meant to set, from its first word
 * followed by more text (`SHARED_KEY <key>`): a known name in any case, or a
 * near miss of one written in upper case.
 */
function optionMissingEquals(body: string): OptionName | undefined {
  const match = /^\s*(\S+)\s+\S/.exec(body);
  if (!match) return undefined;
  const word = match[1];
  if (isOptionName(word.toUpperCase())) return word.toUpperCase() as OptionName;
  return KEY_PATTERN.test(word) ? nearestOptionName(word) : undefined;
}

function failMissingEquals(source: string, line: number, name: OptionName): never {
  fail(
    source,
    line,
    `expected ${name} = VALUE: there is no "=" (the line is not shown: it may hold SHARED_KEY)`,
    `write ${name} = VALUE`,
  );
}

function splitLines(text: string): { raw: string; eol: LineEnding }[] {
  const lines: { raw: string; eol: LineEnding }[] = [];
  const pattern = /\r?\n/g;
  let start = 0;
  for (let match = pattern.exec(text); match; match = pattern.exec(text)) {
    lines.push({ raw: text.slice(start, match.index), eol: match[0] as LineEnding });
    start = match.index + match[0].length;
  }
  if (start < text.length) lines.push({ raw: text.slice(start), eol: "" });
  return lines;
}

/**
 * Parse recon.opts text into a document. Values are not type-checked here
 * (see `configFromDocument`).
 * @throws {ConfigError} naming the line for a line that is not `KEY = VALUE`
 *   or whose key is not a valid option name.
 */
export function parseOptsDocument(text: string, options: ParseOptsOptions = {}): OptsDocument {
  const source = options.source ?? "recon.opts";
  const lines: OptsLine[] = [];
  let positional = 0;
  for (const [index, { raw, eol }] of splitLines(text).entries()) {
    const number = index + 1;
    const bom = index === 0 && raw.startsWith(BOM) ? BOM : "";
    const body = raw.slice(bom.length);
    const trimmed = body.trim();
    if (trimmed === "" || trimmed.startsWith("#")) {
      lines.push({ kind: trimmed === "" ? "blank" : "comment", number, raw, eol });
      continue;
    }
    const prefix = keyPrefix(body);
    if (positional < POSITIONAL_KEYS.length && !(prefix && looksLikeOption(prefix.key))) {
      // A positional value is anything, but `SHARED_KEY <key>` is a forgotten "=":
      // taken as SERVER_HOST it would be shown by --show-config and in errors.
      const missing = prefix ? undefined : optionMissingEquals(body);
      if (missing) failMissingEquals(source, number, missing);
      const parts = splitValue(body, 0);
      const key = POSITIONAL_KEYS[positional++];
      lines.push({
        kind: "positional",
        number,
        raw,
        eol,
        key,
        ...parts,
        before: bom + parts.before,
      });
      continue;
    }
    positional = POSITIONAL_KEYS.length;
    if (!prefix || prefix.key === "") {
      const missing = prefix ? undefined : optionMissingEquals(body);
      if (missing) failMissingEquals(source, number, missing);
      fail(
        source,
        number,
        "expected KEY = VALUE or a # comment (the line is not shown: it may hold SHARED_KEY)",
      );
    }
    if (!KEY_PATTERN.test(prefix.key)) {
      const upper = prefix.key.toUpperCase();
      fail(
        source,
        number,
        `${quoteFromOpts(prefix.key, "name")} is not a valid option name`,
        isOptionName(upper)
          ? `option names are upper case: ${upper}`
          : "option names are upper-case letters, digits and _, starting with a letter",
      );
    }
    const parts = splitValue(body, prefix.valueFrom);
    lines.push({
      kind: "option",
      number,
      raw,
      eol,
      key: prefix.key,
      ...parts,
      before: bom + parts.before,
    });
  }
  const firstEnding = lines.find((line) => line.eol !== "")?.eol;
  return { lines, eol: firstEnding === "\r\n" ? "\r\n" : "\n" };
}

/** The document's text, byte for byte as parsed plus any changes. */
export function formatOpts(document: OptsDocument): string {
  return document.lines.map((line) => line.raw + line.eol).join("");
}

/** The line that decides `key`'s value (the last one that sets it), if any. */
export function findOptionLine(document: OptsDocument, key: string): ValueLine | undefined {
  return document.lines.findLast((line): line is ValueLine =>
    (line.kind === "positional" || line.kind === "option") && line.key === key
  );
}

/**
 * Set option `key` to `value` in place: the line that decides the value is
 * rewritten keeping its comment; if no line sets it, `KEY = VALUE` is appended.
 * An empty value means the default (positional lines cannot be emptied).
 * @throws {TypeError} for an invalid key, or a value that would not read back
 *   as itself (line breaks, surrounding spaces, an inline `#` comment, an empty
 *   positional line, an unknown key appended before the positional lines end).
 */
export function setOption(document: OptsDocument, key: string, value: string): void {
  if (!KEY_PATTERN.test(key)) {
    throw new TypeError(`invalid option name ${quoteFromOpts(key, "name")}`);
  }
  if (/[\r\n]/.test(value) || value.trim() !== value || commentStart(value, 0) < value.length) {
    throw new TypeError(
      `value for ${key} would not read back unchanged: ${quoteFromOpts(value)}`,
    );
  }
  const { lines } = document;
  const existing = findOptionLine(document, key);
  if (existing?.kind === "positional") {
    // A positional line cannot be empty or look like `OPTION = …`: the lines after it would shift.
    const prefix = keyPrefix(value);
    const missing = prefix ? undefined : optionMissingEquals(value);
    if (value === "" || (prefix && looksLikeOption(prefix.key)) || missing) {
      throw new TypeError(
        `${key} is a positional line and cannot be set to ${quoteFromOpts(value)}`,
      );
    }
    lines[lines.indexOf(existing)] = {
      ...existing,
      value,
      raw: existing.before + value + existing.after,
    };
    return;
  }
  if (existing) {
    // `KEY =` and `KEY = # note` need a space on each side of a new value.
    const before = value !== "" && !/\s$/.test(existing.before)
      ? `${existing.before} `
      : existing.before;
    const after = value !== "" && existing.after !== "" && !/^\s/.test(existing.after)
      ? ` ${existing.after}`
      : existing.after;
    lines[lines.indexOf(existing)] = {
      ...existing,
      before,
      value,
      after,
      raw: before + value + after,
    };
    return;
  }
  const valueLines = lines.filter((line) => line.kind === "positional" || line.kind === "option");
  const inPositional = valueLines.length < POSITIONAL_KEYS.length &&
    valueLines.every((line) => line.kind === "positional");
  if (inPositional && !looksLikeOption(key)) {
    // It would be read back as the next positional value.
    throw new TypeError(
      `cannot append ${key} before the ${POSITIONAL_KEYS.length} positional lines`,
    );
  }
  const last = lines.at(-1);
  const eol: LineEnding = last ? last.eol : document.eol;
  if (last && last.eol === "") lines[lines.length - 1] = { ...last, eol: document.eol };
  const before = `${key} = `;
  lines.push({
    kind: "option",
    number: lines.length + 1,
    raw: before + value,
    eol,
    key,
    value,
    before,
    after: "",
  });
}
