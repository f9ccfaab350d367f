/**
 * recon.opts, the one entry module: reading, validation, defaults and writing.
 * The reference is docs/CONFIGURATION.md.
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
 * - `lib/opts/file.ts`: the file on disk (the only module here that does I/O)
 *
 * @module
 */
export {
  defaultConfig,
  DEFAULTS,
  isOptionName,
  LEGACY_OPTION_NAMES,
  MAX_SECONDS,
  nearestOptionName,
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
} from "./schema.ts";
export {
  formatByteSize,
  formatOptionValue,
  isIpAddress,
  MAX_QUOTED_LENGTH,
  OptionValueError,
  parseByteSize,
  parseOptionValue,
  quoteFromOpts,
} from "./values.ts";
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
} from "./document.ts";
export {
  configFromDocument,
  DEFAULT_AUDIT_LOG_NAME,
  DEFAULT_CLIENT_KEYS_FILE_NAME,
  DEFAULT_STATE_FILE_NAME,
  describeUnknownOption,
  type OptsReading,
  type ParsedOpts,
  parseOpts,
  PATH_OPTIONS,
  requireSharedKey,
  resolveConfigPaths,
  type UnknownOption,
} from "./config.ts";
export {
  NOT_SET,
  REDACTED,
  type RedactedConfig,
  redactedConfig,
  showConfigJson,
  showConfigText,
  type ShownUnknownOption,
} from "./show.ts";
export { DEFAULT_OPTS_TEXT } from "./default_text.ts";
export { type LoadedOpts, loadOpts, type LoadOptsOptions, MAX_OPTS_BYTES } from "./file.ts";
export {
  DEFAULT_CALLING_AET,
  DEFAULT_DICOM_PORT,
  DEFAULT_DICOM_TIMEOUT_S,
  type Destination,
  DESTINATION_KEY,
  DESTINATION_NAME,
  DestinationError,
  parseDestination,
} from "./destination.ts";
