/**
 * recon.opts: reading, validation, defaults and writing, with no I/O of its own
 * (file access is in `opts_file.ts`). The reference is docs/CONFIGURATION.md.
 *
 * A recon.opts opens with eleven positional value lines ({@link POSITIONAL_KEYS})
 * and continues with `KEY = VALUE` lines; `#` starts a comment. Parsing keeps
 * every line, so `formatOpts(parseOpts(text).document) === text` and
 * {@link setOption} changes one value without touching the rest.
 *
 * - `lib/opts/schema.ts`: option names, types, {@link DEFAULTS}, {@link OPTION_DOCS}
 * - `lib/opts/values.ts`: one value's text to typed value and back
 * - `lib/opts/document.ts`: lines, comments, round-trip writing
 * - `lib/opts/config.ts`: document to validated config, key check, path resolution
 * - `lib/opts/show.ts`: `--show-config` output with secrets redacted
 *
 * @module
 */
export {
  defaultConfig,
  DEFAULTS,
  isOptionName,
  MAX_SECONDS,
  OPTION_DOCS,
  OPTION_NAMES,
  OPTION_SPECS,
  type OptionDoc,
  type OptionName,
  type OptionSpec,
  type OptionType,
  PLACEHOLDER_SHARED_KEY,
  POSITIONAL_KEYS,
  type ReadBy,
  type ReconConfig,
} from "./opts/schema.ts";
export {
  formatByteSize,
  formatOptionValue,
  isIpAddress,
  OptionValueError,
  parseByteSize,
  parseOptionValue,
} from "./opts/values.ts";
export {
  findOptionLine,
  formatOpts,
  KEY_PATTERN,
  type LineEnding,
  type OptsDocument,
  type OptsLine,
  parseOptsDocument,
  type ParseOptsOptions,
  setOption,
  type TextLine,
  type ValueLine,
} from "./opts/document.ts";
export {
  configFromDocument,
  DEFAULT_STATE_FILE_NAME,
  type OptsReading,
  type ParsedOpts,
  parseOpts,
  PATH_OPTIONS,
  requireSharedKey,
  resolveConfigPaths,
} from "./opts/config.ts";
export {
  REDACTED,
  type RedactedConfig,
  redactedConfig,
  showConfigJson,
  showConfigText,
} from "./opts/show.ts";
export { DEFAULT_OPTS_TEXT } from "./opts/default_text.ts";
