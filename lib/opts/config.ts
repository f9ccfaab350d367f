/**
 * From a recon.opts document to a typed, validated {@link ReconConfig}, and the
 * checks and path resolution callers apply to it.
 *
 * @module
 */
import { isAbsolute, resolve } from "node:path";
import { ConfigError, errorMessage } from "../errors.ts";
import { decodeKey } from "../crypto/keys.ts";
import {
  type OptsDocument,
  parseOptsDocument,
  type ParseOptsOptions,
  type ValueLine,
} from "./document.ts";
import {
  defaultConfig,
  isOptionName,
  OPTION_NAMES,
  OPTION_SPECS,
  type OptionName,
  PLACEHOLDER_SHARED_KEY,
  POSITIONAL_KEYS,
  type ReconConfig,
} from "./schema.ts";
import { OptionValueError, parseOptionValue } from "./values.ts";

/** A typed config plus what the reader should be told about the file. */
export interface OptsReading {
  config: ReconConfig;
  /** One line each, naming file and line: unknown options, options set twice. */
  warnings: string[];
}

/** {@link parseOpts} result: the config, its warnings, and the document for rewriting. */
export interface ParsedOpts extends OptsReading {
  document: OptsDocument;
}

/** File name given to the watch mode's state database when CLIENT_DAEMON_STATE_FILE is empty. */
export const DEFAULT_STATE_FILE_NAME = "recon-watch.sqlite";

const squash = (name: string) => name.replaceAll("_", "");

function unknownOptionWarning(source: string, line: ValueLine): string {
  const near = OPTION_NAMES.find((name) => squash(name) === squash(line.key));
  const guess = near ? ` (did you mean ${near}?)` : "";
  return `${source} line ${line.number}: unknown option ${line.key}${guess} is kept but not used`;
}

/**
 * Type-check every value of a document and build the config. A later line
 * overrides an earlier one; an empty value means the option's default.
 * @throws {ConfigError} naming the file, line and option for an invalid value.
 */
export function configFromDocument(
  document: OptsDocument,
  options: ParseOptsOptions = {},
): OptsReading {
  const source = options.source ?? "recon.opts";
  const config = defaultConfig();
  const warnings: string[] = [];
  const setOn = new Map<string, number>();
  let positional = 0;
  for (const line of document.lines) {
    if (line.kind !== "positional" && line.kind !== "option") continue;
    if (line.kind === "positional") positional++;
    if (!isOptionName(line.key)) {
      if (!setOn.has(line.key)) warnings.push(unknownOptionWarning(source, line));
      setOn.set(line.key, line.number);
      continue;
    }
    const first = setOn.get(line.key);
    if (first !== undefined) {
      warnings.push(
        `${source} line ${line.number}: ${line.key} is set again (first on line ${first}); ` +
          `line ${line.number} wins`,
      );
    } else {
      setOn.set(line.key, line.number);
    }
    setValue(config, line.key, line, source);
  }
  if (positional > 0 && positional < POSITIONAL_KEYS.length) {
    warnings.push(
      `${source}: only ${positional} of the ${POSITIONAL_KEYS.length} positional lines ` +
        `(${POSITIONAL_KEYS[0]} … ${POSITIONAL_KEYS.at(-1)}); ` +
        `${POSITIONAL_KEYS.slice(positional).join(", ")} take their defaults`,
    );
  }
  return { config, warnings };
}

function setValue<K extends OptionName>(
  config: ReconConfig,
  key: K,
  line: ValueLine,
  source: string,
): void {
  if (line.value === "") {
    config[key] = defaultConfig()[key];
    return;
  }
  try {
    config[key] = parseOptionValue(key, line.value);
  } catch (error) {
    if (!(error instanceof OptionValueError)) throw error;
    throw new ConfigError(`${source} line ${line.number}: ${key} ${error.message}`, {
      hint: error.hint,
      cause: error,
    });
  }
}

/**
 * Parse recon.opts text: the typed config, warnings, and the document that
 * `setOption`/`formatOpts` rewrite.
 * @throws {ConfigError} for a malformed line or invalid value, naming file and line.
 */
export function parseOpts(text: string, options: ParseOptsOptions = {}): ParsedOpts {
  const document = parseOptsDocument(text, options);
  return { ...configFromDocument(document, options), document };
}

/** The options holding a file or directory path; relative ones are resolved by {@link resolveConfigPaths}. */
export const PATH_OPTIONS: readonly OptionName[] = Object.freeze(
  OPTION_NAMES.filter((name) => OPTION_SPECS[name].type.kind === "path"),
);

/**
 * A copy of `config` whose relative paths ({@link PATH_OPTIONS}) are made
 * absolute against `baseDir`, the directory holding recon.opts: programs started
 * by cron or a service manager have no meaningful working directory. An empty
 * CLIENT_DAEMON_STATE_FILE becomes `baseDir/recon-watch.sqlite`; other empty
 * paths stay empty.
 * @throws {TypeError} if `baseDir` is not absolute.
 */
export function resolveConfigPaths(config: ReconConfig, baseDir: string): ReconConfig {
  if (!isAbsolute(baseDir)) throw new TypeError(`baseDir must be absolute, got "${baseDir}"`);
  const resolved = structuredClone(config);
  for (const name of PATH_OPTIONS) {
    const value = resolved[name] as string;
    if (value !== "" && !isAbsolute(value)) (resolved[name] as string) = resolve(baseDir, value);
  }
  if (resolved.CLIENT_DAEMON_STATE_FILE === "") {
    resolved.CLIENT_DAEMON_STATE_FILE = resolve(baseDir, DEFAULT_STATE_FILE_NAME);
  }
  return resolved;
}

const KEY_HINT = "generate one with 'recon-server keygen' and put the same value in recon.opts " +
  "on the server and every client";

/**
 * The SHARED_KEY of `config`, checked to be a usable Fernet key.
 * @param source how messages name the file, e.g. its path.
 * @throws {ConfigError} (one line naming SHARED_KEY and the file) when the key
 *   is empty, still the placeholder, or not 32 bytes of URL-safe base64. The
 *   key itself never appears in the message.
 */
export function requireSharedKey(config: ReconConfig, source: string): string {
  const key = config.SHARED_KEY;
  let problem: string | undefined;
  if (key === "") problem = "is not set";
  else if (key === PLACEHOLDER_SHARED_KEY) problem = `is still the placeholder ${key}`;
  if (problem) {
    throw new ConfigError(
      `${source}: SHARED_KEY ${problem}; generate one with 'recon-server keygen'`,
      { hint: KEY_HINT },
    );
  }
  try {
    decodeKey(key);
  } catch (error) {
    // decodeKey's message names SHARED_KEY and the length seen, never the key.
    throw new ConfigError(`${source}: ${errorMessage(error)}`, { hint: KEY_HINT, cause: error });
  }
  return key;
}
