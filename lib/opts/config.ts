/**
 * From a recon.opts document to a typed, validated {@link ReconConfig}, and the
 * checks and path resolution callers apply to it.
 *
 * @module
 */
import { dirname, isAbsolute, resolve } from "node:path";
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
  LEGACY_OPTION_NAMES,
  nearestOptionName,
  OPTION_NAMES,
  OPTION_SPECS,
  type OptionName,
  PLACEHOLDER_SHARED_KEY,
  POSITIONAL_KEYS,
  type ReconConfig,
} from "./schema.ts";
import { OptionValueError, parseOptionValue, quoteFromOpts } from "./values.ts";
import { DESTINATION_KEY, DestinationError, parseDestination } from "./destination.ts";

/**
 * A `KEY = VALUE` line whose KEY neither program reads and that is not a legacy
 * name ({@link LEGACY_OPTION_NAMES}); reported once per name, at its first line.
 */
export interface UnknownOption {
  /** 1-based line number. */
  line: number;
  /** The name as written; it matches `KEY_PATTERN`. */
  name: string;
  /** The known option it is most likely a misspelling of. */
  suggestion?: OptionName;
}

/** A typed config plus what the reader should be told about the file. */
export interface OptsReading {
  config: ReconConfig;
  /** One line each, naming file and line: unknown options, options set twice. */
  warnings: string[];
  /** Lines naming no option (only when `allowUnknownOptions`; otherwise they throw). */
  unknownOptions: UnknownOption[];
}

/** {@link parseOpts} result: the config, its warnings, and the document for rewriting. */
export interface ParsedOpts extends OptsReading {
  document: OptsDocument;
}

/** File name given to the watch mode's state database when CLIENT_DAEMON_STATE_FILE is empty. */
export const DEFAULT_STATE_FILE_NAME = "recon-watch.sqlite";

/** The server's client file when CLIENT_KEYS_FILE is empty: beside recon.opts. */
export const DEFAULT_CLIENT_KEYS_FILE_NAME = "recon-clients";

/** The audit log when AUDIT_LOG is empty: in RECON_STATE_DIR. */
export const DEFAULT_AUDIT_LOG_NAME = "audit.jsonl";

/**
 * How messages show an unknown option: its name quoted and the suggestion. Only
 * the name, never the value. The name matches `KEY_PATTERN` (upper case, digits,
 * `_`), which a Fernet key, with lower-case letters among its 43 characters,
 * practically never does; longer names than `MAX_QUOTED_LENGTH` are not shown anyway.
 */
export function describeUnknownOption(unknown: UnknownOption): string {
  const guess = unknown.suggestion
    ? ` (did you mean ${unknown.suggestion}?)`
    : unknown.name.startsWith("DESTINATION_")
    ? " (the NAME of a DESTINATION_<NAME> line is letters and digits only, no _)"
    : "";
  return `unknown option ${quoteFromOpts(unknown.name, "name")}${guess}`;
}

function findUnknownOptions(document: OptsDocument): UnknownOption[] {
  const unknown = new Map<string, UnknownOption>();
  for (const line of document.lines) {
    if (
      line.kind !== "option" || isOptionName(line.key) || LEGACY_OPTION_NAMES.has(line.key) ||
      DESTINATION_KEY.test(line.key)
    ) {
      continue;
    }
    if (!unknown.has(line.key)) {
      unknown.set(line.key, {
        line: line.number,
        name: line.key,
        suggestion: nearestOptionName(line.key),
      });
    }
  }
  return [...unknown.values()];
}

/**
 * Type-check every value of a document and build the config. A later line
 * overrides an earlier one; an empty value means the option's default. Names
 * are checked before values. An option known to either program is accepted
 * (one recon.opts may serve both), and so is a legacy name; any other name
 * is an error unless `allowUnknownOptions`, when it is a warning.
 * @throws {ConfigError} naming the file and line of an unknown option, or the
 *   file, line and option of an invalid value.
 */
export function configFromDocument(
  document: OptsDocument,
  options: ParseOptsOptions = {},
): OptsReading {
  const source = options.source ?? "recon.opts";
  const unknownOptions = findUnknownOptions(document);
  const [first, ...more] = unknownOptions;
  if (first && !options.allowUnknownOptions) {
    const others = more.length === 0
      ? ""
      : ` (${more.length} more unknown option${more.length === 1 ? "" : "s"} after it)`;
    throw new ConfigError(
      `${source} line ${first.line}: ${describeUnknownOption(first)}${others}; ` +
        "fix the name or start with --allow-unknown-options",
      {
        hint: "one recon.opts may serve both programs: the options either of them reads are " +
          "accepted (docs/CONFIGURATION.md)",
      },
    );
  }
  const config = defaultConfig();
  const warnings = unknownOptions.map((unknown) =>
    `${source} line ${unknown.line}: ${describeUnknownOption(unknown)} is kept but not used`
  );
  const setOn = new Map<string, number>();
  let positional = 0;
  for (const line of document.lines) {
    if (line.kind !== "positional" && line.kind !== "option") continue;
    if (line.kind === "positional") positional++;
    if (line.kind === "option" && DESTINATION_KEY.test(line.key)) {
      setDestination(config, line, source, warnings);
      continue;
    }
    if (!isOptionName(line.key)) continue;
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
  const unknownDestination = config.DEFAULT_DESTINATIONS.find((name) => !config.DESTINATIONS[name]);
  if (unknownDestination !== undefined) {
    const line = setOn.get("DEFAULT_DESTINATIONS");
    const known = Object.keys(config.DESTINATIONS);
    throw new ConfigError(
      `${source} line ${line}: DEFAULT_DESTINATIONS names ${unknownDestination}, but there is no ` +
        `DESTINATION_${unknownDestination} line`,
      {
        hint: known.length > 0
          ? `the destinations are ${known.join(", ")}`
          : `add DESTINATION_${unknownDestination} = dicom://CALLED_AET@host:port`,
      },
    );
  }
  if (positional > 0 && positional < POSITIONAL_KEYS.length) {
    warnings.push(
      `${source}: only ${positional} of the ${POSITIONAL_KEYS.length} positional lines ` +
        `(${POSITIONAL_KEYS[0]} … ${POSITIONAL_KEYS.at(-1)}); ` +
        `${POSITIONAL_KEYS.slice(positional).join(", ")} take their defaults`,
    );
  }
  return { config, warnings, unknownOptions };
}

/** A `DESTINATION_<NAME>` line into `config.DESTINATIONS` (an empty value removes it). */
function setDestination(
  config: ReconConfig,
  line: ValueLine,
  source: string,
  warnings: string[],
): void {
  const name = DESTINATION_KEY.exec(line.key)![1].toUpperCase();
  if (config.DESTINATIONS[name]) {
    warnings.push(
      `${source} line ${line.number}: DESTINATION_${name} is set again; line ${line.number} wins`,
    );
  }
  if (line.value === "") {
    delete config.DESTINATIONS[name];
    return;
  }
  try {
    config.DESTINATIONS[name] = parseDestination(name, line.value);
  } catch (error) {
    if (!(error instanceof DestinationError)) throw error;
    throw new ConfigError(`${source} line ${line.number}: ${line.key} ${error.message}`, {
      hint: error.hint,
    });
  }
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
 * CLIENT_DAEMON_STATE_FILE becomes `baseDir/recon-watch.sqlite`, an empty
 * RECON_STATE_DIR `state` beside RECON_FILEPATH, an empty CLIENT_KEYS_FILE
 * `baseDir/recon-clients`, an empty AUDIT_LOG `audit.jsonl` in RECON_STATE_DIR; other
 * empty paths stay empty.
 * @throws {TypeError} if `baseDir` is not absolute.
 */
export function resolveConfigPaths(config: ReconConfig, baseDir: string): ReconConfig {
  if (!isAbsolute(baseDir)) throw new TypeError(`baseDir must be absolute, got "${baseDir}"`);
  const resolved = structuredClone(config);
  for (const name of PATH_OPTIONS) {
    const value = resolved[name] as string;
    if (value !== "" && !isAbsolute(value)) (resolved[name] as string) = resolve(baseDir, value);
  }
  for (const destination of Object.values(resolved.DESTINATIONS)) {
    const tls = destination.tls;
    if (!tls) continue;
    tls.ca = resolve(baseDir, tls.ca);
    if (tls.cert !== undefined) tls.cert = resolve(baseDir, tls.cert);
    if (tls.key !== undefined) tls.key = resolve(baseDir, tls.key);
  }
  if (resolved.CLIENT_DAEMON_STATE_FILE === "") {
    resolved.CLIENT_DAEMON_STATE_FILE = resolve(baseDir, DEFAULT_STATE_FILE_NAME);
  }
  if (resolved.RECON_STATE_DIR === "" && resolved.RECON_FILEPATH !== "") {
    resolved.RECON_STATE_DIR = resolve(dirname(resolved.RECON_FILEPATH), "state");
  }
  if (resolved.CLIENT_KEYS_FILE === "") {
    resolved.CLIENT_KEYS_FILE = resolve(baseDir, DEFAULT_CLIENT_KEYS_FILE_NAME);
  }
  if (resolved.AUDIT_LOG === "" && resolved.RECON_STATE_DIR !== "") {
    resolved.AUDIT_LOG = resolve(resolved.RECON_STATE_DIR, DEFAULT_AUDIT_LOG_NAME);
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
    // The message already says to run keygen; the hint says what to do with its key.
    throw new ConfigError(
      `${source}: SHARED_KEY ${problem}; generate one with 'recon-server keygen'`,
      {
        hint: `put it in ${source} as the line "SHARED_KEY = <key>"; the server and every ` +
          "client need the same key in their recon.opts",
      },
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
