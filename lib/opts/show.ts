/**
 * The effective configuration as `--show-config` prints it (like `sshd -T`),
 * with secrets redacted.
 *
 * @module
 */
import { OPTION_NAMES, PLACEHOLDER_SHARED_KEY, type ReconConfig } from "./schema.ts";
import { formatOptionValue } from "./values.ts";

/** What replaces a secret value. */
export const REDACTED = "<redacted>";

/** {@link redactedConfig} result: every option, secrets replaced, plus the key's id if known. */
export type RedactedConfig = Omit<ReconConfig, "SHARED_KEY" | "PASSWORD"> & {
  SHARED_KEY: string;
  PASSWORD: string;
  SHARED_KEY_ID?: string;
};

/**
 * A copy of `config` safe to print: SHARED_KEY and the legacy PASSWORD become
 * `"<redacted>"` (an empty key or the placeholder is shown as is, since it tells
 * the reader what is wrong), and `SHARED_KEY_ID` is added when `keyId` is given
 * so two hosts can compare keys without showing them.
 */
export function redactedConfig(config: ReconConfig, keyId?: string): RedactedConfig {
  const copy: RedactedConfig = structuredClone(config);
  if (copy.SHARED_KEY !== "" && copy.SHARED_KEY !== PLACEHOLDER_SHARED_KEY) {
    copy.SHARED_KEY = REDACTED;
  }
  if (copy.PASSWORD !== "") copy.PASSWORD = REDACTED;
  if (keyId !== undefined) copy.SHARED_KEY_ID = keyId;
  return copy;
}

/** `--show-config --json`: the redacted config as pretty JSON, options in table order. */
export function showConfigJson(config: ReconConfig, keyId?: string): string {
  return JSON.stringify(redactedConfig(config, keyId), null, 2);
}

/**
 * `--show-config`: one `KEY = VALUE` line per option in table order, secrets
 * redacted, then `# SHARED_KEY_ID = …` when `keyId` is given. Without secrets it
 * is valid recon.opts text that reads back as the same config.
 */
export function showConfigText(config: ReconConfig, keyId?: string): string {
  const shown = redactedConfig(config);
  const lines = OPTION_NAMES.map((name) =>
    `${name} = ${formatOptionValue(name, shown[name] as never)}`.trimEnd()
  );
  if (keyId !== undefined) lines.push(`# SHARED_KEY_ID = ${keyId}`);
  return lines.join("\n") + "\n";
}
