/**
 * The plumbing both entrypoints (server.ts, client.ts) share: writers for stdout and
 * stderr, the command-line parser with its usage error, `--port`, `--version`,
 * `keygen`, `--show-config`, and the top-level catch that prints
 * `recon-…: error: …` plus `hint: …` and picks the exit code (README "Exit codes").
 *
 * Nothing here reads Deno.args, touches Deno.stdout or exits: the entrypoints pass
 * their streams and arguments in, print what comes back and exit with the code.
 *
 * @module
 */
import { editDistance } from "../edit_distance.ts";
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { UsageError } from "../errors.ts";
import { decodeKey, generateKey, keyId } from "../crypto/keys.ts";
import { shutdownLogging } from "../log.ts";
import { type ReconConfig, showConfigJson, type UnknownOption } from "../opts/mod.ts";
import { printable } from "../printable.ts";
import { VERSION } from "../version.ts";
import { describeError } from "./support.ts";

/** What {@link textWriter} writes to: `Deno.stdout`, `Deno.stderr`, or a test's fake. */
export interface SyncWriter {
  writeSync(bytes: Uint8Array): number;
}

const encoder = new TextEncoder();

/**
 * A function that writes text to `output` in full (a pipe may take fewer bytes than
 * offered). With `ignoreErrors` a closed stream is not an error: stderr carries
 * messages, and losing one must not turn into a second failure.
 */
export function textWriter(
  output: SyncWriter,
  options: { ignoreErrors?: boolean } = {},
): (text: string) => void {
  return (text) => {
    const bytes = encoder.encode(text);
    try {
      let written = 0;
      while (written < bytes.length) written += output.writeSync(bytes.subarray(written));
    } catch (error) {
      if (!options.ignoreErrors) throw error;
    }
  };
}

/**
 * `parseArgs` in strict mode; a bad flag becomes a UsageError in our words (an
 * unknown option names the nearest known one) that points at `--help`. `command`
 * names the help to point at (`recon-client watch`); positionals are allowed unless
 * `allowPositionals` is false.
 */
export function parseCommandLine<T extends ParseArgsOptionsConfig>(
  program: string,
  argv: string[],
  options: T,
  settings: { command?: string; allowPositionals?: boolean } = {},
) {
  const hint = `see '${settings.command ?? program} --help'`;
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(commandLineMessage(error as Error, argv, Object.keys(options)), { hint });
  }
  if (settings.allowPositionals === false && parsed.positionals.length > 0) {
    throw new UsageError(`unexpected argument "${parsed.positionals[0]}"`, { hint });
  }
  return parsed;
}

/** `parseArgs`'s complaint about `argv` in our words (its own suggest `--` and dashes). */
function commandLineMessage(error: Error & { code?: string }, argv: string[], names: string[]) {
  // The quoted flag: "Unknown option '--file'", "Option '-h, --help' does not take…".
  let flag = /'(?:-\w, )?(-[^'\s<]*)/.exec(error.message)?.[1] ?? "";
  switch (error.code) {
    case "ERR_PARSE_ARGS_UNKNOWN_OPTION": {
      // parseArgs reads "-files" as the short options -f -i -l …; name what was typed.
      const typed = argv.find((arg) =>
        /^-[^-]/.test(arg) && arg.length > 2 && arg.startsWith(flag.slice(0, 2))
      );
      if (flag.length === 2 && typed) flag = typed.split("=")[0];
      const nearest = nearestFlag(flag, names);
      return `unknown option ${flag}${nearest ? ` (did you mean --${nearest}?)` : ""}`;
    }
    case "ERR_PARSE_ARGS_INVALID_OPTION_VALUE": {
      if (/does not take an argument/.test(error.message)) return `${flag} takes no value`;
      if (/ambiguous/.test(error.message)) {
        const next = argv[argv.indexOf(flag) + 1];
        if (next === undefined) return `${flag} needs a value`;
        return `${flag} needs a value, but the next argument "${next}" is an option; ` +
          `if it is the value, write ${flag}=${next}`;
      }
      return `${flag} needs a value`;
    }
  }
  return error.message;
}

/**
 * The known long option `flag` most likely misspells, for "did you mean": `_` for
 * `-`, a single dash, up to two edits (one for short names), or the start of exactly
 * one name (`--down` → `--download-dir`).
 */
export function nearestFlag(flag: string, names: readonly string[]): string | undefined {
  const typed = flag.replace(/^-+/, "").replaceAll("_", "-").toLowerCase();
  if (typed === "") return undefined;
  if (names.includes(typed)) return typed;
  const limit = typed.length <= 4 ? 1 : 2;
  let best: { name: string; distance: number } | undefined;
  for (const name of names) {
    const distance = editDistance(typed, name);
    if (distance <= limit && (best === undefined || distance < best.distance)) {
      best = { name, distance };
    }
  }
  if (best) return best.name;
  const starting = names.filter((name) => typed.length >= 3 && name.startsWith(typed));
  return starting.length === 1 ? starting[0] : undefined;
}

/**
 * Split `argv` at a subcommand that follows only global options, as git and kubectl
 * allow: `--opts X --debug watch --status` gives `{ command: "watch", argv: ["--opts",
 * "X", "--debug", "--status"] }`, the globals first so that the same flag after the
 * command wins. `globals` maps each global long option to whether it takes a value.
 * Anything else before the command, or no command, returns `argv` unchanged.
 */
export function splitCommand(
  argv: readonly string[],
  commands: readonly string[],
  globals: Readonly<Record<string, boolean>>,
): { command?: string; argv: string[] } {
  let i = 0;
  while (i < argv.length) {
    const arg = argv[i];
    if (commands.includes(arg)) {
      return { command: arg, argv: [...argv.slice(0, i), ...argv.slice(i + 1)] };
    }
    const name = /^--([^=]+)(=|$)/.exec(arg);
    if (!name || !Object.hasOwn(globals, name[1])) break;
    i += globals[name[1]] && name[2] === "" ? 2 : 1;
  }
  return { argv: [...argv] };
}

/**
 * The `--port` value: digits only, up to 65535, and at least `min` (the server may
 * listen on 0, "any free port"; a client must name a real one).
 */
export function parsePort(text: string, min: 0 | 1 = 1): number {
  const port = Number(text);
  if (!/^\d+$/.test(text) || port < min || port > 65535) {
    throw new UsageError(`--port must be a number from ${min} to 65535, got "${text}"`);
  }
  return port;
}

/** What `--version` prints. */
export function versionText(program: string): string {
  return `${program} ${VERSION}\n`;
}

/** What `keygen` prints: a new SHARED_KEY. */
export function keygenText(): string {
  return `${generateKey()}\n`;
}

/**
 * What `--show-config` prints: the effective configuration as JSON with the key
 * redacted, plus its key id when SHARED_KEY is usable (shown without one otherwise),
 * and given `unknownOptions` (recon.opts loaded with `allowUnknownOptions`) an
 * `unknown_options` list of the lines neither program knows.
 */
export async function showConfigText(
  config: ReconConfig,
  unknownOptions?: readonly UnknownOption[],
): Promise<string> {
  let id: string | undefined;
  try {
    id = await keyId(decodeKey(config.SHARED_KEY));
  } catch { /* no usable key: shown redacted without an id */ }
  return `${showConfigJson(config, id, unknownOptions)}\n`;
}

/**
 * `PROGRAM: warning: …` lines for stderr, one per warning (e.g. `LoadedOpts.warnings`
 * shown with `--show-config`), control characters replaced; "" when there are none.
 */
export function warningText(program: string, warnings: readonly string[]): string {
  return warnings.map((warning) => `${program}: warning: ${printable(warning)}\n`).join("");
}

/** Inputs of {@link runMain}. */
export interface RunMainOptions {
  program: string;
  writeStderr: (text: string) => void;
  /** Lines to print under the error line, e.g. a failed script's exit code. */
  details?: (error: unknown) => string[];
  /** Told of every failure after it is printed, e.g. to print a JSON document too. */
  onFailure?: (error: unknown, exitCode: number) => void;
}

/**
 * Run an entrypoint's `main` and return the exit code to exit with: `main`'s own, or
 * for a thrown error the error's, after printing `PROGRAM: error: …` and any
 * `hint: …` on stderr. Logging is flushed either way.
 */
export async function runMain(
  main: () => Promise<number>,
  options: RunMainOptions,
): Promise<number> {
  let code: number;
  try {
    code = await main();
  } catch (error) {
    const { lines, exitCode } = describeError(options.program, error);
    lines.splice(1, 0, ...(options.details?.(error) ?? []));
    options.writeStderr(`${lines.join("\n")}\n`);
    options.onFailure?.(error, exitCode);
    code = exitCode;
  }
  await shutdownLogging();
  return code;
}
