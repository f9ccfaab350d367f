/**
 * Conversion of one recon.opts value between its text and its typed form.
 *
 * The parsers throw a plain `Error` whose message completes "OPTION …"; the
 * caller adds the file and line and turns it into a `ConfigError`.
 *
 * @module
 */
import {
  MAX_SECONDS,
  OPTION_SPECS,
  type OptionName,
  type OptionType,
  type ReconConfig,
} from "./schema.ts";

/** A value that failed to convert: `message` completes "NAME …", `hint` says what works. */
export class OptionValueError extends Error {
  readonly hint?: string;
  constructor(message: string, hint?: string) {
    super(message);
    this.name = "OptionValueError";
    this.hint = hint;
  }
}

const UNITS: Record<string, number> = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

/**
 * Parse a byte size: a whole number of bytes or one with a K, M, G or T suffix
 * (powers of 1024), e.g. `1073741824`, `512M`, `64G`, `64GiB`. Returns
 * `undefined` for anything else, including sizes above 2^53-1.
 */
export function parseByteSize(text: string): number | undefined {
  const match = /^(\d+)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  if (!match) return undefined;
  const bytes = Number(match[1]) * UNITS[match[2].toUpperCase()];
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

/** Write a byte size the way a person would: `64G`, `512M`, else plain bytes. */
export function formatByteSize(bytes: number): string {
  for (const unit of ["T", "G", "M", "K"]) {
    if (bytes > 0 && bytes % UNITS[unit] === 0) return `${bytes / UNITS[unit]}${unit}`;
  }
  return String(bytes);
}

/** Whether `text` is an IPv4 or IPv6 address literal (no host names, no networks). */
export function isIpAddress(text: string): boolean {
  // A zone (`fe80::1%eth0`, `fe80::1%4`) only on link-local IPv6 (lib/server/access.ts).
  const zone = text.indexOf("%");
  if (zone >= 0) {
    return /^fe[89ab][0-9a-f]:/i.test(text) &&
      /^[A-Za-z0-9_.-]{1,15}$/.test(text.slice(zone + 1)) &&
      isIpAddress(text.slice(0, zone));
  }
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (v4) return v4.slice(1).every((octet) => Number(octet) <= 255);
  if (!/^[0-9A-Fa-f:.]+$/.test(text) || !text.includes(":")) return false;
  try {
    new URL(`http://[${text}]/`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Longest text from recon.opts that a message quotes. A Fernet key is 44
 * characters (43 before its `=`) with no space, `=` or `:` inside, so a
 * misplaced SHARED_KEY (on a positional line, without its `=`) is always longer
 * than this and is never echoed to a terminal or a log.
 */
export const MAX_QUOTED_LENGTH = 40;

/**
 * `text` from recon.opts as a message shows it: quoted (control characters
 * escaped) when at most {@link MAX_QUOTED_LENGTH} characters, otherwise only its
 * length, e.g. `a value of 44 characters (not shown)`.
 */
export function quoteFromOpts(text: string, noun = "value"): string {
  return text.length <= MAX_QUOTED_LENGTH
    ? JSON.stringify(text)
    : `a ${noun} of ${text.length} characters (not shown)`;
}

const quote = (text: string) => quoteFromOpts(text);

function describeRange(min: number, max: number): string {
  return max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`;
}

/**
 * Convert the (non-empty, trimmed) text of option `name` to its typed value.
 * @throws {OptionValueError} when the text is not a valid value for the option.
 */
export function parseOptionValue<K extends OptionName>(name: K, text: string): ReconConfig[K] {
  return convert(OPTION_SPECS[name].type, text) as ReconConfig[K];
}

function convert(type: OptionType, text: string): unknown {
  switch (type.kind) {
    case "string":
    case "path":
      return text;
    case "choice": {
      const value = text.toLowerCase();
      if (!type.values.includes(value)) {
        throw new OptionValueError(
          `must be one of ${type.values.join(", ")}, got ${quote(text)}`,
        );
      }
      return value;
    }
    case "int": {
      const value = /^\d+$/.test(text) ? Number(text) : NaN;
      if (!(value >= type.min && value <= type.max)) {
        throw new OptionValueError(
          `must be an integer ${describeRange(type.min, type.max)}, got ${quote(text)}`,
        );
      }
      return value;
    }
    case "seconds": {
      const value = /^(\d+(\.\d*)?|\.\d+)$/.test(text) ? Number(text) : NaN;
      const low = type.exclusive ? value > type.min : value >= type.min;
      if (!(low && value <= MAX_SECONDS)) {
        const range = type.exclusive
          ? `greater than ${type.min} and at most ${MAX_SECONDS}`
          : `from ${type.min} to ${MAX_SECONDS}`;
        throw new OptionValueError(`must be a number of seconds ${range}, got ${quote(text)}`);
      }
      return value;
    }
    case "duration": {
      const value = parseDuration(text);
      if (value === undefined || value < type.min || value > MAX_DURATION) {
        throw new OptionValueError(
          `must be a duration like 3600, 90s, 30m, 12h or 7d, got ${quote(text)}`,
          "a plain number is seconds; s, m, h and d are seconds, minutes, hours and days",
        );
      }
      return value;
    }
    case "bytes": {
      const value = parseByteSize(text);
      if (value === undefined || value < type.min) {
        throw new OptionValueError(
          `must be a size in bytes like 1073741824, 512M or 64G, got ${quote(text)}`,
          "K, M, G and T are powers of 1024",
        );
      }
      return value;
    }
    case "ips": {
      const addresses = text.split(",").map((part) => part.trim()).filter((part) => part !== "");
      const bad = addresses.find((address) => !isIpAddress(address));
      if (bad !== undefined) {
        throw new OptionValueError(
          `must be a comma-separated list of IP addresses, got ${quote(bad)}`,
          "list each client address, e.g. 192.168.1.101,::1; host names and networks are " +
            "not supported",
        );
      }
      return addresses;
    }
    case "json": {
      let value: unknown;
      try {
        value = JSON.parse(text);
      } catch (error) {
        // V8 quotes the start of the text in its message; keep only the reason.
        const reason = (error as Error).message.replace(
          /, ".*"(?:\.\.\.)? is not valid JSON$/s,
          "",
        );
        throw new OptionValueError(
          `is not valid JSON (${reason}), got ${quote(text)}`,
          `write a JSON object on one line, e.g. {"slice_thickness": "2mm"}`,
        );
      }
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        const got = value === null ? "null" : Array.isArray(value) ? "an array" : typeof value;
        throw new OptionValueError(
          `must be a JSON object, got ${got}`,
          `write a JSON object on one line, e.g. {"slice_thickness": "2mm"}`,
        );
      }
      return value;
    }
    case "argv":
      return text.split(/\s+/).filter((part) => part !== "");
    case "names": {
      const names = text.split(",").map((part) => part.trim()).filter((part) => part !== "");
      const bad = names.find((name) => !/^[A-Za-z0-9]+$/.test(name));
      if (bad !== undefined) {
        throw new OptionValueError(
          `must be a comma-separated list of names (letters and digits), got ${quote(bad)}`,
          "name the destinations of DESTINATION_<NAME> lines, e.g. PACS,RESEARCH",
        );
      }
      return [...new Set(names.map((name) => name.toUpperCase()))];
    }
  }
}

/** Longest duration accepted: 100 years, in seconds. */
export const MAX_DURATION = 100 * 365 * 86400;

const DURATION_UNITS: Readonly<Record<string, number>> = { "": 1, s: 1, m: 60, h: 3600, d: 86400 };

/**
 * Seconds of a duration written as a number of seconds or with a unit (`90s`, `30m`,
 * `12h`, `7d`; fractions allowed: `1.5h`), or undefined when it is not one.
 */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)$/i.exec(text.trim());
  if (!match) return undefined;
  return Number(match[1]) * DURATION_UNITS[match[2].toLowerCase()];
}

/**
 * The recon.opts text of a typed value; `parseOptionValue` reads it back to an
 * equal value (and an empty result means the default).
 */
export function formatOptionValue<K extends OptionName>(name: K, value: ReconConfig[K]): string {
  const type = OPTION_SPECS[name].type;
  switch (type.kind) {
    case "ips":
      return (value as string[]).join(",");
    case "argv":
      return (value as string[]).join(" ");
    case "names":
      return (value as string[]).join(",");
    case "json":
      return JSON.stringify(value);
    case "bytes":
      return formatByteSize(value as number);
    default:
      return String(value);
  }
}
