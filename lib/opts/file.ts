/**
 * Reading recon.opts from disk, and creating the default one when it is missing.
 * Parsing and validation are in the sibling modules; this one only adds the file.
 *
 * @module
 */
import { dirname, resolve } from "node:path";
import { ConfigError, errorMessage } from "../errors.ts";
import { parseOpts, resolveConfigPaths, type UnknownOption } from "./config.ts";
import { DEFAULT_OPTS_TEXT } from "./default_text.ts";
import { formatOpts, setOption } from "./document.ts";
import { PLACEHOLDER_SHARED_KEY, type ReconConfig } from "./schema.ts";
import { applyUserDefaults, type ProgramUser } from "./user_paths.ts";

/** Largest recon.opts read; anything bigger is not a config file. */
export const MAX_OPTS_BYTES = 1024 * 1024;

/** Options for {@link loadOpts}. */
export interface LoadOptsOptions {
  /** The server fills SHARED_KEY of a new file; a client cannot invent the server's key. */
  role: "server" | "client";
  /**
   * Write the default file when `path` does not exist (default true). False creates
   * nothing at all (not the client's state directory either): a missing file is an
   * error. `--show-config` only reads.
   */
  createIfMissing?: boolean;
  /**
   * The hint when the file is missing and `createIfMissing` is false; default: how to
   * create it. A command that only reads the server's file says where that file is
   * instead: creating one in the wrong place starts a server with a key nobody has.
   */
  missingHint?: string;
  /** A new random key, e.g. `generateKey` from lib/crypto/keys.ts. */
  generateKey: () => string;
  /** Accept unknown options with a warning instead of a ConfigError (`--allow-unknown-options`). */
  allowUnknownOptions?: boolean;
  /**
   * Who runs the program (default: this process's uid, XDG_STATE_HOME and HOME): a
   * client not run as root keeps its default files in its state directory
   * (lib/opts/user_paths.ts), and recon.opts may be readable by its own group.
   */
  user?: ProgramUser & { gid: number };
}

/** {@link loadOpts} result. */
export interface LoadedOpts {
  /** The validated config, relative paths resolved against the file's directory. */
  config: ReconConfig;
  /**
   * One line each: unknown options, options set twice, a file others can read.
   * Not logged here (logging is set up from this very config): the caller logs each once.
   */
  warnings: string[];
  /** Lines naming no option; empty unless `allowUnknownOptions` (for `--show-config`). */
  unknownOptions: UnknownOption[];
  /** Absolute path of the file read or created. */
  path: string;
  /** True when the file did not exist and was written by this call. */
  created: boolean;
}

function describe(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.IsADirectory) return "it is a directory";
  return errorMessage(error);
}

async function readOptsText(path: string): Promise<string | undefined> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw new ConfigError(`cannot read ${path}: ${describe(error)}`, { cause: error });
  }
  try {
    const info = await file.stat();
    if (!info.isFile) throw new ConfigError(`cannot read ${path}: it is not a regular file`);
    if (info.size > MAX_OPTS_BYTES) {
      throw new ConfigError(`cannot read ${path}: ${info.size} bytes is too big for recon.opts`);
    }
    const bytes = new Uint8Array(info.size);
    let length = 0;
    while (length < bytes.length) {
      const read = await file.read(bytes.subarray(length));
      if (read === null) break;
      length += read;
    }
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(0, length));
    } catch (error) {
      throw new ConfigError(`cannot read ${path}: it is not UTF-8 text`, { cause: error });
    }
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(`cannot read ${path}: ${describe(error)}`, { cause: error });
  } finally {
    file.close();
  }
}

/** Write `text` to a new file `path`, mode 0600; false if it appeared meanwhile. */
async function createOptsFile(path: string, text: string): Promise<boolean> {
  try {
    await Deno.writeTextFile(path, text, { createNew: true, mode: 0o600 });
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) return false;
    const reason = error instanceof Deno.errors.NotFound
      ? `directory ${dirname(path)} does not exist`
      : describe(error);
    throw new ConfigError(`recon.opts not found and cannot create ${path}: ${reason}`, {
      cause: error,
      hint: "pass --opts with the path of an existing recon.opts",
    });
  }
}

function processUser(): ProgramUser & { gid: number } {
  return {
    uid: Deno.uid() ?? 0,
    gid: Deno.gid() ?? 0,
    env: { XDG_STATE_HOME: Deno.env.get("XDG_STATE_HOME"), HOME: Deno.env.get("HOME") },
  };
}

/**
 * A warning when users other than the program's own can read or change recon.opts.
 * Mode 0600, or 0640 with the program's own group (`0640 root:recon` for a service
 * running as recon:recon), is quiet: that group is the service itself. Whoever can
 * read the file has SHARED_KEY, and the site's RECON_SCRIPT, run as the service's
 * user, is among them: it is trusted code (docs/DEPLOY.md §2).
 */
async function modeWarning(
  path: string,
  user: { uid: number; gid: number },
): Promise<string | undefined> {
  if (Deno.build.os === "windows") return undefined;
  try {
    const { mode, gid } = await Deno.stat(path);
    if (mode === null) return undefined;
    const octal = (mode & 0o777).toString(8).padStart(4, "0");
    const ownGroup = gid === user.gid && (mode & 0o037) === 0;
    if ((mode & 0o077) === 0 || ownGroup) return undefined;
    return `${path} holds SHARED_KEY but other users can access it (mode ${octal}, group ` +
      `${gid}); run chmod 600 ${path}, or chmod 640 with the group of the user recon runs as`;
  } catch {
    return undefined;
  }
}

/**
 * Read and validate recon.opts at `path`. When it does not exist (and
 * `createIfMissing`), write the default file there with mode 0600: the server
 * puts a fresh key in it and carries on (`created: true`; the caller tells the
 * user where the file is and that clients need that key); a client leaves the
 * placeholder and throws, since only the server's key can work.
 *
 * SHARED_KEY is not checked here (`keygen` and `--show-config` work without
 * one); callers that connect use `requireSharedKey`.
 * @throws {ConfigError} naming the file: unreadable, malformed, an unknown
 *   option (unless `allowUnknownOptions`), invalid value, or a client's freshly
 *   created default file.
 */
export async function loadOpts(path: string, options: LoadOptsOptions): Promise<LoadedOpts> {
  const absolute = resolve(path);
  let text = await readOptsText(absolute);
  let created = false;
  if (text === undefined) {
    if (options.createIfMissing === false) {
      const program = `recon-${options.role}`;
      throw new ConfigError(`recon.opts ${absolute} does not exist`, {
        hint: options.missingHint ??
          `run ${program} --opts ${absolute} once to create it, or copy recon.opts.example` +
            (options.role === "client" ? "; either way it needs the server's SHARED_KEY" : ""),
      });
    }
    const fresh = parseOpts(DEFAULT_OPTS_TEXT).document;
    if (options.role === "server") setOption(fresh, "SHARED_KEY", options.generateKey());
    created = await createOptsFile(absolute, formatOpts(fresh));
    if (created && options.role === "client") {
      throw new ConfigError(
        `created a default recon.opts at ${absolute}; put the server's SHARED_KEY in it and ` +
          "run again",
        { hint: "copy the SHARED_KEY line from the server's recon.opts" },
      );
    }
    // Another process may have created it first: read whatever is there now.
    text = created ? formatOpts(fresh) : await readOptsText(absolute);
    if (text === undefined) throw new ConfigError(`cannot read ${absolute}: no such file`);
  }
  const { config, warnings, unknownOptions } = parseOpts(text, {
    source: absolute,
    allowUnknownOptions: options.allowUnknownOptions,
  });
  const user = options.user ?? processUser();
  const hasKey = config.SHARED_KEY !== "" && config.SHARED_KEY !== PLACEHOLDER_SHARED_KEY;
  const warning = hasKey && !created ? await modeWarning(absolute, user) : undefined;
  if (warning) warnings.push(warning);
  const own = applyUserDefaults(config, options.role, user);
  if (own.stateDir !== undefined && options.createIfMissing !== false) {
    // Best effort: a log, download or state file there creates no parents of its own.
    await Deno.mkdir(own.stateDir, { recursive: true, mode: 0o700 }).catch(() => {});
  }
  return {
    config: resolveConfigPaths(own.config, dirname(absolute)),
    warnings,
    unknownOptions,
    path: absolute,
    created,
  };
}
