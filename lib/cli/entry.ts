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
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { UsageError } from "../errors.ts";
import { decodeKey, generateKey, keyId } from "../crypto/keys.ts";
import { shutdownLogging } from "../log.ts";
import { type ReconConfig, showConfigJson, type UnknownOption } from "../opts/mod.ts";
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
 * `parseArgs` in strict mode with positionals; a bad flag becomes a UsageError that
 * points at `--help`.
 */
export function parseCommandLine<T extends ParseArgsOptionsConfig>(
  program: string,
  argv: string[],
  options: T,
) {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message, { hint: `see '${program} --help'` });
  }
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
