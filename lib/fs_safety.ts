/**
 * Directories and files that no other local user can tamper with, like sshd's
 * StrictModes. A directory someone else can write lets them swap what the program
 * writes or reads there (a job's output directory, the pid file as a symbolic link
 * to any file a root server would then truncate), so the server refuses to use one.
 *
 * {@link checkPrivateDir} walks from a directory up to `/`: the directory must be
 * owned by the program's user and writable by nobody else; every parent must be
 * owned by root or that user and writable by nobody else, except a root-owned
 * sticky directory such as `/tmp` (its sticky bit stops others from renaming or
 * removing what is ours in it), and a root-owned parent that only a system group
 * (gid below {@link FIRST_USER_GID}) may also write, such as Ubuntu's `/var/log`
 * (`0775 root:syslog`): system groups hold services the site already trusts as
 * much as root, whereas the people who log in are in user groups. A fix never changes a
 * directory that is not the program's own ({@link PathProblem.shared}): only another
 * path helps there. {@link writeFileNoFollow} and
 * {@link openAppendNoFollow} never write through a symbolic link (`O_NOFOLLOW`).
 *
 * @module
 */
import fs from "node:fs";
import { dirname, resolve } from "node:path";

/** Why a path is unsafe, and what to run or change about it. */
export interface PathProblem {
  /** The path at fault: the directory itself or one of its parents. */
  path: string;
  /** What is wrong, e.g. `is writable by other users (mode 0777)`. */
  problem: string;
  /** A command or change that fixes it. */
  fix: string;
  /**
   * True when the path at fault is not the program's own to change: a root-owned
   * sticky directory such as `/tmp`, or a parent of the directory checked. `fix` then
   * names another path, never a chmod or chown of this one, which would break the
   * machine for everyone else.
   */
  shared?: boolean;
}

/** Inputs of {@link checkPrivateDir} and {@link checkPrivateFile}. */
export interface OwnerOptions {
  /** The uid that must own the directory (default: this process's). */
  uid?: number;
  /** lstat, for tests that pretend other owners; default `Deno.lstat`. */
  lstat?: (path: string) => Promise<Deno.FileInfo>;
}

const STICKY = 0o1000;
const WRITABLE_BY_OTHERS = 0o022;
const WRITABLE_BY_GROUP = 0o020;
const WRITABLE_BY_WORLD = 0o002;
/** Debian's and Ubuntu's first gid for people's groups; lower ones are system groups. */
export const FIRST_USER_GID = 1000;

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, "0");
}

function processUid(): number {
  return Deno.uid() ?? 0;
}

/** Who may own or write a parent: "root", or "root or uid 1000" for a non-root program. */
function rootOr(uid: number): string {
  return uid === 0 ? "root" : `root or uid ${uid}`;
}

/** The problem with one path component, or undefined. `leaf` is the directory itself. */
function componentProblem(
  path: string,
  info: Deno.FileInfo,
  uid: number,
  leaf: boolean,
): PathProblem | undefined {
  const mode = info.mode ?? 0;
  const owner = info.uid ?? 0;
  if (leaf && info.isSymlink) {
    // Where it points is checked too (checkPrivateDir); the link itself must not be
    // someone else's, who could point it elsewhere at any time.
    if (owner === 0 || owner === uid) return undefined;
    return {
      path,
      problem: `is a symbolic link owned by uid ${owner}`,
      fix: `remove ${path}, or choose a directory of your own`,
    };
  }
  const rootSticky = owner === 0 && (mode & STICKY) !== 0;
  if (leaf) {
    if (!info.isDirectory) {
      return { path, problem: "is not a directory", fix: `remove ${path} or choose another path` };
    }
    if (rootSticky && (mode & WRITABLE_BY_OTHERS)) {
      // /tmp and its kind: every user may create files in it, and its mode is what lets
      // them; chmod go-w there would break every other program on the machine.
      return {
        path,
        problem: `is a shared directory (mode ${octal(mode)}) in which every user can create files`,
        fix: `choose a directory of its own (leave ${path} as it is)`,
        shared: true,
      };
    }
    if (owner !== uid) {
      return {
        path,
        problem: `is owned by uid ${owner}, not by this program's user (uid ${uid})`,
        fix: `run chown ${uid} ${path}, or choose a directory of your own`,
      };
    }
    if (mode & WRITABLE_BY_OTHERS) {
      return {
        path,
        problem: `is writable by other users (mode ${octal(mode)})`,
        fix: `run chmod go-w ${path} (0700 or 0750)`,
      };
    }
    return undefined;
  }
  // A parent is not the program's to change (it may be /, /srv or someone's home):
  // the fix is always another path.
  if (owner !== 0 && owner !== uid) {
    return {
      path,
      problem: `is owned by uid ${owner}, who could replace what is below it`,
      fix: `choose a directory whose parents belong to ${rootOr(uid)}`,
      shared: true,
    };
  }
  if (info.isSymlink) return undefined;
  const systemGroupOnly = owner === 0 && !(mode & WRITABLE_BY_WORLD) &&
    (mode & WRITABLE_BY_GROUP) !== 0 && (info.gid ?? FIRST_USER_GID) < FIRST_USER_GID;
  if ((mode & WRITABLE_BY_OTHERS) && !rootSticky && !systemGroupOnly) {
    return {
      path,
      problem: `is writable by other users (mode ${octal(mode)}), who could replace what is ` +
        "below it",
      fix: `choose a directory whose parents only ${rootOr(uid)} can write`,
      shared: true,
    };
  }
  return undefined;
}

async function walk(
  dir: string,
  uid: number,
  lstat: (path: string) => Promise<Deno.FileInfo>,
  leaf = true,
): Promise<PathProblem | undefined> {
  let path = resolve(dir);
  while (true) {
    const problem = componentProblem(path, await lstat(path), uid, leaf);
    if (problem) return problem;
    const parent = dirname(path);
    if (parent === path) return undefined;
    path = parent;
    leaf = false;
  }
}

/**
 * The first reason why `dir` (which must exist) is not private to user `uid`, or
 * undefined when it is. Symbolic links on the way must belong to root or `uid`, and
 * the directory they lead to is checked the same way.
 * @throws the lstat error (e.g. NotFound) of a component.
 */
export async function checkPrivateDir(
  dir: string,
  options: OwnerOptions = {},
): Promise<PathProblem | undefined> {
  const uid = options.uid ?? processUid();
  const lstat = options.lstat ?? Deno.lstat;
  const lexical = resolve(dir);
  const problem = await walk(lexical, uid, lstat);
  if (problem) return problem;
  const real = await Deno.realPath(lexical);
  return real === lexical ? undefined : await walk(real, uid, lstat);
}

/** True for an lstat error that means "not there (yet)". */
function isMissing(error: unknown): boolean {
  return error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory;
}

/**
 * {@link checkPrivateDir} for a directory that may not exist yet, before anything is
 * created: an existing `dir` is checked as such; for a missing one, its nearest
 * existing ancestor is checked as a parent (the directories created below it will
 * be the program's own). Undefined when creating and using `dir` is safe so far.
 */
export async function checkDirToCreate(
  dir: string,
  options: OwnerOptions = {},
): Promise<PathProblem | undefined> {
  const uid = options.uid ?? processUid();
  const lstat = options.lstat ?? Deno.lstat;
  let path = resolve(dir);
  try {
    await lstat(path);
    return await checkPrivateDir(path, options);
  } catch (error) {
    if (!isMissing(error)) throw error;
  }
  while (true) {
    const parent = dirname(path);
    if (parent === path) return undefined;
    path = parent;
    try {
      await lstat(path);
    } catch (error) {
      if (isMissing(error)) continue;
      throw error;
    }
    const problem = await walk(path, uid, lstat, false);
    if (problem) return problem;
    const real = await Deno.realPath(path);
    return real === path ? undefined : await walk(real, uid, lstat, false);
  }
}

/**
 * The reason why an existing `file` is unsafe to append to as user `uid`: a symbolic
 * link, not a regular file, owned by someone else, or writable by others. Undefined
 * when it is fine or does not exist. Its directory is checked with
 * {@link checkPrivateDir}.
 */
export async function checkPrivateFile(
  file: string,
  options: OwnerOptions = {},
): Promise<PathProblem | undefined> {
  const uid = options.uid ?? processUid();
  const lstat = options.lstat ?? Deno.lstat;
  let info: Deno.FileInfo;
  try {
    info = await lstat(file);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  if (info.isSymlink) {
    return { path: file, problem: "is a symbolic link", fix: `remove ${file}` };
  }
  if (!info.isFile) {
    return { path: file, problem: "is not a regular file", fix: `remove ${file}` };
  }
  if ((info.uid ?? 0) !== uid) {
    return {
      path: file,
      problem: `is owned by uid ${info.uid}, not by this program's user (uid ${uid})`,
      fix: `remove ${file} or run chown ${uid} ${file}`,
    };
  }
  if ((info.mode ?? 0) & WRITABLE_BY_OTHERS) {
    return {
      path: file,
      problem: `is writable by other users (mode ${octal(info.mode ?? 0)})`,
      fix: `run chmod go-w ${file}`,
    };
  }
  return undefined;
}

const { O_WRONLY, O_CREAT, O_EXCL, O_APPEND, O_NOFOLLOW } = fs.constants;

/**
 * Replace `file` with a new file holding `text`, mode `mode`, never writing through
 * a symbolic link: whatever is at `file` is unlinked first (unlinking a link removes
 * the link, not its target), then the file is created with `O_CREAT | O_EXCL |
 * O_NOFOLLOW`, which fails if anything appeared there meanwhile.
 */
export async function writeFileNoFollow(file: string, text: string, mode = 0o600): Promise<void> {
  await Deno.remove(file).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  });
  const handle = await fs.promises.open(file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
  try {
    await handle.writeFile(text);
  } finally {
    await handle.close();
  }
}

/**
 * Open `file` for appending, creating it with `mode` if missing, without following a
 * symbolic link at `file` (`O_NOFOLLOW`: ELOOP instead). The caller closes the handle.
 */
export async function openAppendNoFollow(
  file: string,
  mode = 0o640,
): Promise<fs.promises.FileHandle> {
  return await fs.promises.open(file, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, mode);
}

/** A file opened for appending by {@link openAppendNoFollowSync}. */
export interface AppendFile {
  /** Writes some of `bytes`, returning how many (like `Deno.FsFile.writeSync`). */
  writeSync(bytes: Uint8Array): number;
  close(): void;
}

/**
 * The synchronous form of {@link openAppendNoFollow}, for logs written line by line
 * from synchronous code. Throws (ELOOP) when `file` is a symbolic link.
 */
export function openAppendNoFollowSync(file: string, mode = 0o640): AppendFile {
  const fd = fs.openSync(file, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW, mode);
  return {
    writeSync: (bytes) => fs.writeSync(fd, bytes),
    close: () => fs.closeSync(fd),
  };
}
