/**
 * The effective configuration as `--show-config` prints it (like `sshd -T`),
 * with secrets redacted, and the lines of recon.opts that set no option.
 *
 * @module
 */
import { describeUnknownOption, type UnknownOption } from "./config.ts";
import { OPTION_NAMES, PLACEHOLDER_SHARED_KEY, type ReconConfig } from "./schema.ts";
import { formatOptionValue } from "./values.ts";

/** What replaces a secret value. */
export const REDACTED = "<redacted>";

/** What `--show-config` shows for an empty SHARED_KEY: `""` would read as a key. */
export const NOT_SET = "<not set>";

/** {@link redactedConfig} result: every option, secrets replaced, plus the key's id if known. */
export type RedactedConfig = Omit<ReconConfig, "SHARED_KEY" | "PASSWORD"> & {
  SHARED_KEY: string;
  PASSWORD: string;
  SHARED_KEY_ID?: string;
};

/** 43 URL-safe base64 characters and `=`: what a Fernet key looks like. */
const KEY_SHAPE = /[A-Za-z0-9_-]{43}=/;

/**
 * A copy of `config` safe to print: SHARED_KEY, HTTP_TOKEN and the legacy PASSWORD become
 * `"<redacted>"` (an empty key or the placeholder is shown as is, since it tells
 * the reader what is wrong), and `SHARED_KEY_ID` is added when `keyId` is given
 * so two hosts can compare keys without showing them. Any other text option
 * holding something shaped like a key is redacted too: a key pasted on a line of
 * its own among the eleven positional lines is read as that line's value.
 */
export function redactedConfig(config: ReconConfig, keyId?: string): RedactedConfig {
  const copy: RedactedConfig = structuredClone(config);
  const text = copy as unknown as Record<string, unknown>;
  for (const name of OPTION_NAMES) {
    const value = text[name];
    if (typeof value === "string" && KEY_SHAPE.test(value)) text[name] = REDACTED;
  }
  if (copy.SHARED_KEY !== "" && copy.SHARED_KEY !== PLACEHOLDER_SHARED_KEY) {
    copy.SHARED_KEY = REDACTED;
  }
  if (copy.PASSWORD !== "") copy.PASSWORD = REDACTED;
  if (copy.HTTP_TOKEN !== "") copy.HTTP_TOKEN = REDACTED;
  if (keyId !== undefined) copy.SHARED_KEY_ID = keyId;
  return copy;
}

/** One entry of `unknown_options` in {@link showConfigJson}: where, what, and the likely fix. */
export interface ShownUnknownOption {
  line: number;
  name: string;
  suggestion: string | null;
}

/**
 * `--show-config --json`: the redacted config as pretty JSON, options in table
 * order, an empty SHARED_KEY shown as {@link NOT_SET}; given `unknownOptions` (`LoadedOpts.unknownOptions`), then an
 * `unknown_options` array of `{ line, name, suggestion }` (lower case: not an option).
 */
export function showConfigJson(
  config: ReconConfig,
  keyId?: string,
  unknownOptions?: readonly UnknownOption[],
): string {
  const shown: RedactedConfig & { unknown_options?: ShownUnknownOption[] } = redactedConfig(
    config,
    keyId,
  );
  if (shown.SHARED_KEY === "") shown.SHARED_KEY = NOT_SET;
  if (unknownOptions !== undefined) {
    shown.unknown_options = unknownOptions.map(({ line, name, suggestion }) => ({
      line,
      name,
      suggestion: suggestion ?? null,
    }));
  }
  return JSON.stringify(shown, null, 2);
}

/**
 * `--show-config`: one `KEY = VALUE` line per option in table order, secrets
 * redacted, then `# SHARED_KEY_ID = …` when `keyId` is given, then a comment
 * section listing `unknownOptions` by line. Without secrets it is valid
 * recon.opts text that reads back as the same config.
 */
export function showConfigText(
  config: ReconConfig,
  keyId?: string,
  unknownOptions: readonly UnknownOption[] = [],
): string {
  const shown = redactedConfig(config);
  const lines = OPTION_NAMES.map((name) =>
    `${name} = ${formatOptionValue(name, shown[name] as never)}`.trimEnd()
  );
  for (const destination of Object.values(config.DESTINATIONS)) {
    lines.push(`DESTINATION_${destination.name} = ${destination.url}`);
  }
  if (keyId !== undefined) lines.push(`# SHARED_KEY_ID = ${keyId}`);
  if (unknownOptions.length > 0) {
    lines.push("# unknown options (kept in recon.opts, not used):");
    for (const unknown of unknownOptions) {
      lines.push(`#   line ${unknown.line}: ${describeUnknownOption(unknown)}`);
    }
  }
  return lines.join("\n") + "\n";
}
