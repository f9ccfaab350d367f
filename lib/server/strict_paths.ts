/**
 * The server's directories, checked and made before it logs a line or listens:
 * RECON_FILEPATH (job inputs, per-job logs, the pid file), RECON_DICOM_DIR (job
 * outputs until delivered) and the directory of LOG_FILEPATH. Every one is checked
 * before any is created, so a refused start leaves nothing behind; a missing one is
 * then created (mode 0700, the log directory 0750) and checked again. One that
 * another local user could write, or that is not the server's own, is refused with
 * the path and the fix (lib/fs_safety.ts): whoever can write there can swap a job's
 * output directory and inject images into a patient's results, copy them out, or
 * turn a file the server writes into a symbolic link to any file. The defaults of
 * older versions, in the world-shared /tmp, are refused by name.
 *
 * @module
 */
import { basename, dirname, resolve } from "node:path";
import { ConfigError, errorMessage } from "../errors.ts";
import {
  checkDirToCreate,
  checkPrivateDir,
  checkPrivateFile,
  type OwnerOptions,
  type PathProblem,
} from "../fs_safety.ts";
import { DEFAULTS, type ReconConfig } from "../opts/mod.ts";

/**
 * The defaults before they moved to /var (recon.opts.example up to commit 3649682):
 * paths in /tmp, where any user can create them first. A recon.opts carried over
 * from then must not start a server there.
 */
export const OLD_TMP_DEFAULTS: Readonly<
  Record<"RECON_FILEPATH" | "RECON_DICOM_DIR" | "LOG_FILEPATH", string>
> = Object.freeze({
  RECON_FILEPATH: "/tmp/recon_server_pfiles",
  RECON_DICOM_DIR: "/tmp/recon_server_dicoms",
  LOG_FILEPATH: "/tmp/recon_project.log",
});

/**
 * Refuse every option still at its old /tmp default, naming each one's new default.
 * @throws {ConfigError} (exit 2).
 */
function refuseOldDefaults(config: ReconConfig): void {
  const old = (Object.keys(OLD_TMP_DEFAULTS) as (keyof typeof OLD_TMP_DEFAULTS)[]).filter(
    (option) => config[option] !== "" && resolve(config[option]) === OLD_TMP_DEFAULTS[option],
  );
  if (old.length === 0) return;
  throw new ConfigError(
    `recon.opts still has the old default ${old.map((o) => `${o} ${config[o]}`).join(", ")}` +
      `, from an older version; refusing ${old.length === 1 ? "it" : "them"}: any user can ` +
      "create or replace files in /tmp",
    {
      hint: `set the new default${old.length === 1 ? "" : "s"} in recon.opts: ` +
        old.map((o) => `${o} = ${DEFAULTS[o]}`).join(", ") + " (docs/DEPLOY.md §7)",
    },
  );
}

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

/**
 * True when `dir` holds nothing but `logFile` and its rotated copies: the log's own
 * directory, whose mode or owner a fix may change. /var/log or /srv holds more, and
 * is not recon's to change.
 */
async function holdsOnlyLog(dir: string, logFile: string): Promise<boolean> {
  const name = basename(logFile);
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.name.startsWith(name)) return false;
    }
    return true;
  } catch {
    return false;
  }
}

async function refusal(
  entry: ServerDir,
  found: PathProblem,
  config: ReconConfig,
): Promise<ConfigError> {
  const where = found.path === entry.dir
    ? `${entry.what} ${found.path}`
    : `${found.path}, a parent of ${entry.what} ${entry.dir},`;
  // RECON_FILEPATH and RECON_DICOM_DIR name the server's own directories; the log's
  // directory is only where LOG_FILEPATH happens to be, and may be everyone's.
  const own = !found.shared &&
    (entry.option !== "LOG_FILEPATH" || await holdsOnlyLog(entry.dir, config.LOG_FILEPATH));
  const elsewhere = entry.option === "LOG_FILEPATH"
    ? `set LOG_FILEPATH in recon.opts to a file in a directory of its own, e.g. ` +
      DEFAULTS.LOG_FILEPATH
    : `set ${entry.option} in recon.opts to a directory of its own, e.g. ${DEFAULTS[entry.option]}`;
  return new ConfigError(
    `${where} ${found.problem}; refusing to use it: another ` +
      `user could replace the files the server writes or reads there`,
    {
      hint: own
        ? `${found.fix}; or set ${entry.option} in recon.opts to a path only the ` +
          `server's user can write (default ${DEFAULTS[entry.option]})`
        : elsewhere,
    },
  );
}

/**
 * Refuse the old /tmp defaults; check that RECON_FILEPATH, RECON_DICOM_DIR and the
 * directory of LOG_FILEPATH (or, when missing, what they would be created in) and an
 * existing LOG_FILEPATH are private to the server's user; only then create the
 * missing directories, and check them again.
 * @throws {ConfigError} naming the path, what is wrong and the fix (exit 2).
 */
export async function prepareServerPaths(
  config: ReconConfig,
  options: OwnerOptions = {},
): Promise<void> {
  refuseOldDefaults(config);
  const dirs = serverDirs(config);
  for (const entry of dirs) {
    const problem = await checkDirToCreate(entry.dir, options);
    if (problem) throw await refusal(entry, problem, config);
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
  for (const entry of dirs) {
    try {
      await ensureDir(entry);
    } catch (error) {
      throw new ConfigError(`cannot create ${entry.what} ${entry.dir}: ${errorMessage(error)}`, {
        hint: `create it (mode ${entry.mode.toString(8).padStart(4, "0")}, owned by the ` +
          `server's user), or set ${entry.option} in recon.opts to a directory the server ` +
          "can write",
      });
    }
    // Again: what was just created, and anything changed since the first check.
    const problem = await checkPrivateDir(entry.dir, options);
    if (problem) throw await refusal(entry, problem, config);
  }
}
