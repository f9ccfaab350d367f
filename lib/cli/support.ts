/**
 * What both entrypoints share: turning any thrown value into the printed
 * `recon-…: error: …` / `hint: …` lines with an exit code, loading recon.opts for a
 * command, and the SHARED_KEY → session key material step.
 *
 * @module
 */
import { ConfigError, ExitCode, ReconError } from "../errors.ts";
import { printable } from "../printable.ts";
import { decodeKey, generateKey, keyId } from "../crypto/keys.ts";
import { type LoadedOpts, loadOpts, requireSharedKey } from "../opts/mod.ts";

/** The lines to print on stderr and the exit code for an error. */
export function describeError(
  program: string,
  error: unknown,
): { lines: string[]; exitCode: number } {
  if (error instanceof ReconError) {
    const [message, hint] = ourWords(program, error.message, error.hint);
    const lines = [`${program}: error: ${printable(message)}`];
    if (hint) lines.push(`hint: ${printable(hint)}`);
    return { lines, exitCode: error.exitCode };
  }
  const [message, hint] = ourWords(
    program,
    error instanceof Error ? error.message : String(error),
    "this is unexpected; rerun with --debug and report it",
  );
  return {
    lines: [`${program}: error: ${printable(message)}`, `hint: ${printable(hint!)}`],
    exitCode: ExitCode.USAGE,
  };
}

/**
 * Deno's text for a path its sandbox withholds (/dev, /proc, /sys need --allow-all)
 * tells the user to rerun deno with a flag, which bin/recon-* do not let them do: say
 * instead that the program may not use such paths, and what to do.
 */
function ourWords(program: string, message: string, hint?: string): [string, string?] {
  const sandbox = /Requires \w+ access to "[^"]*", run again with the --allow-[\w-]+ flag/g;
  if (!sandbox.test(message)) return [message, hint];
  return [
    message.replace(sandbox, `${program} may not use paths under /dev, /proc or /sys`),
    hint ?? "choose a path outside /dev, /proc and /sys",
  ];
}

/** Options of {@link loadConfig}. */
export interface LoadConfigOptions {
  /** `--allow-unknown-options`: an unknown option is a warning, not an error. */
  allowUnknownOptions?: boolean;
  /**
   * `--show-config`: only read. A missing file is an error (nothing is created), an
   * unknown option is listed rather than refused, and an unusable SHARED_KEY, which
   * a real start refuses, is one of the warnings.
   */
  showConfig?: boolean;
}

/**
 * Load recon.opts for `role`, creating the default file when missing (unless
 * `showConfig`). An option neither program knows is an error unless
 * `allowUnknownOptions` (the `--allow-unknown-options` flag), when it is a warning in
 * `LoadedOpts.warnings`.
 */
export async function loadConfig(
  optsPath: string,
  role: "server" | "client",
  options: LoadConfigOptions = {},
): Promise<LoadedOpts> {
  const showConfig = options.showConfig ?? false;
  const loaded = await loadOpts(optsPath, {
    role,
    generateKey,
    allowUnknownOptions: (options.allowUnknownOptions ?? false) || showConfig,
    createIfMissing: !showConfig,
  });
  if (showConfig && !(role === "server" && await clientsWithoutSharedKey(loaded))) {
    try {
      requireSharedKey(loaded.config, loaded.path);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      loaded.warnings.push(`${error.message} (a real start refuses it)`);
    }
  }
  return loaded;
}

/**
 * The server's recon.opts for a command that only reads it (`backup`, `clients`,
 * `audit`): nothing is created, an option neither program knows is a warning. A
 * missing file's hint asks for the server's file: `recon-server --opts PATH` there would
 * start a server with a fresh key in the wrong place.
 */
export async function loadServerOpts(optsPath: string): Promise<LoadedOpts> {
  return await loadOpts(optsPath, {
    role: "server",
    createIfMissing: false,
    missingHint: "pass --opts with the server's recon.opts, e.g. --opts /etc/recon/recon.opts",
    allowUnknownOptions: true,
    generateKey,
  });
}

/**
 * Whether a server's recon.opts leaves SHARED_KEY empty because the clients have their
 * own keys in CLIENT_KEYS_FILE (the file exists; the server checks that it holds a
 * client). Then there is no client `default`.
 */
export async function clientsWithoutSharedKey(loaded: LoadedOpts): Promise<boolean> {
  const { config } = loaded;
  if (config.SHARED_KEY !== "" || config.CLIENT_KEYS_FILE === "") return false;
  try {
    await Deno.stat(config.CLIENT_KEYS_FILE);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** The SHARED_KEY bytes and key id, or a ConfigError naming SHARED_KEY. */
export async function sharedKeyMaterial(
  loaded: LoadedOpts,
): Promise<{ raw: Uint8Array<ArrayBuffer>; id: string }> {
  const text = requireSharedKey(loaded.config, loaded.path);
  let raw: Uint8Array<ArrayBuffer>;
  try {
    raw = decodeKey(text);
  } catch (error) {
    throw new ConfigError(`${loaded.path}: SHARED_KEY: ${(error as Error).message}`);
  }
  return { raw, id: await keyId(raw) };
}
