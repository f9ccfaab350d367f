/**
 * The server's directories, made and checked before it logs a line or listens:
 * RECON_FILEPATH (job inputs, per-job logs, the pid file), RECON_DICOM_DIR (job
 * outputs until delivered) and the directory of LOG_FILEPATH. A missing one is
 * created (mode 0700, the log directory 0750). One that another local user could
 * write, or that is not the server's own, is refused with the path and the fix
 * (lib/fs_safety.ts): whoever can write there can swap a job's output directory and
 * inject images into a patient's results, copy them out, or turn a file the server
 * writes into a symbolic link to any file.
 *
 * @module
 */
import { dirname } from "node:path";
import { ConfigError, errorMessage } from "../errors.ts";
import {
  checkPrivateDir,
  checkPrivateFile,
  type OwnerOptions,
  type PathProblem,
} from "../fs_safety.ts";
import { DEFAULTS, type ReconConfig } from "../opts/mod.ts";

/** One directory the server needs: which option names it and how to create it. */
interface ServerDir {
  option: "RECON_FILEPATH" | "RECON_DICOM_DIR" | "LOG_FILEPATH";
  dir: string;
  mode: number;
  /** How the path is named in messages, e.g. "the directory of LOG_FILEPATH". */
  what: string;
}

function serverDirs(config: ReconConfig): ServerDir[] {
  const dirs: ServerDir[] = [
    { option: "RECON_FILEPATH", dir: config.RECON_FILEPATH, mode: 0o700, what: "RECON_FILEPATH" },
    {
      option: "RECON_DICOM_DIR",
      dir: config.RECON_DICOM_DIR,
      mode: 0o700,
      what: "RECON_DICOM_DIR",
    },
  ];
  if (config.LOG_FILEPATH !== "") {
    dirs.push({
      option: "LOG_FILEPATH",
      dir: dirname(config.LOG_FILEPATH),
      mode: 0o750,
      what: "the directory of LOG_FILEPATH",
    });
  }
  return dirs;
}

/** Create `dir` (and missing parents) when it does not exist; its own mode is `mode`. */
async function ensureDir(entry: ServerDir): Promise<void> {
  try {
    await Deno.lstat(entry.dir);
    return;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  // Missing parents: 0755 whatever the umask, so no one else can write them either.
  await Deno.mkdir(dirname(entry.dir), { recursive: true, mode: 0o755 });
  try {
    await Deno.mkdir(entry.dir, { mode: entry.mode });
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) return; // checked below like any other
    throw error;
  }
  // mkdir's mode passes through the umask; a 0077 umask must not leave it 0700 for
  // the log directory, nor a 0 umask make it writable by all.
  await Deno.chmod(entry.dir, entry.mode);
}

function refusal(entry: ServerDir, found: PathProblem): ConfigError {
  const where = found.path === entry.dir
    ? `${entry.what} ${found.path}`
    : `${found.path}, a parent of ${entry.what} ${entry.dir},`;
  return new ConfigError(
    `${where} ${found.problem}; refusing to use it: another ` +
      `user could replace the files the server writes or reads there`,
    {
      hint: `${found.fix}; or set ${entry.option} in recon.opts to a path only the ` +
        `server's user can write (default ${DEFAULTS[entry.option]})`,
    },
  );
}

/**
 * Create RECON_FILEPATH, RECON_DICOM_DIR and the directory of LOG_FILEPATH when
 * missing, then check each (and an existing LOG_FILEPATH) is private to the server's
 * user.
 * @throws {ConfigError} naming the path, what is wrong and the fix (exit 2).
 */
export async function prepareServerPaths(
  config: ReconConfig,
  options: OwnerOptions = {},
): Promise<void> {
  for (const entry of serverDirs(config)) {
    try {
      await ensureDir(entry);
    } catch (error) {
      throw new ConfigError(`cannot create ${entry.what} ${entry.dir}: ${errorMessage(error)}`, {
        hint: `create it (mode ${entry.mode.toString(8).padStart(4, "0")}, owned by the ` +
          `server's user), or set ${entry.option} in recon.opts to a directory the server ` +
          "can write",
      });
    }
    const problem = await checkPrivateDir(entry.dir, options);
    if (problem) throw refusal(entry, problem);
  }
  if (config.LOG_FILEPATH !== "") {
    const problem = await checkPrivateFile(config.LOG_FILEPATH, options);
    if (problem) {
      throw new ConfigError(
        `LOG_FILEPATH ${problem.path} ${problem.problem}; refusing to append to it`,
        { hint: `${problem.fix}; or set LOG_FILEPATH in recon.opts to another file` },
      );
    }
  }
}
