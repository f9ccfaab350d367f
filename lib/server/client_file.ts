/**
 * The client file on disk (CLIENT_KEYS_FILE; its format is lib/server/client_keys.ts):
 * reading it, and the edits behind `recon-server clients add|revoke|rotate`.
 *
 * An edit holds an exclusive flock on the file itself while it reads, changes and
 * replaces it, so two edits never lose each other's change. The new text goes to a
 * temporary file in the same directory, is fsync'd, given the old file's mode, owner
 * and group, and renamed over the old one: a running server (which re-reads the file
 * when it changes) sees the old file or the new one, never half of one, and a root
 * edit leaves the file readable by the server's user only, as it was. A new file gets
 * the owner and group of recon.opts and its mode without any bit for others or
 * execution (0640 for a `0640 root:recon` recon.opts, 0600 for a 0600 one). Another
 * edit may have renamed a new file into place while this one waited for the lock: the
 * lock is then taken again on the file now at the path. A malformed file is refused,
 * not repaired: it is fixed by hand first; so is, with a `check`, a file the server
 * refuses (others can write it, or it belongs to another user: {@link
 * clientFileProblem}). Every edit drops the retiring keys whose expires= has passed.
 *
 * @module
 */
import * as path from "node:path";
import { ConfigError, UsageError } from "../errors.ts";
import { generateKey } from "../crypto/keys.ts";
import { DEFAULT_CLIENT_KEYS_FILE_NAME, type ReconConfig } from "../opts/mod.ts";
import {
  checkDestinations,
  checkFromPatterns,
  type ClientKey,
  clientNameProblem,
  DEFAULT_CLIENT,
  formatClientFile,
  formatTime,
  makeClientKey,
  parseClientFile,
  type ParseClientFileOptions,
} from "./client_keys.ts";

/** Largest client file read: some 30,000 keys, far more than any site has scanners. */
export const MAX_CLIENT_FILE_BYTES = 4 * 1024 * 1024;

/** Owner and group given to a new client file. */
export interface FileOwner {
  uid: number;
  gid: number;
  /**
   * Mode of a new file; default 0600. recon.opts' mode masked with 0640, so that a
   * server that reads a `0640 root:recon` recon.opts through its group reads the
   * client file the same way (and nobody else does).
   */
  mode?: number;
}

/** What every edit takes. */
export interface EditOptions {
  /** The time of the edit: CREATED of a new key, and what has expired. */
  now: Date;
  /** SHARED_KEY's key id, when recon.opts sets one: no client key may have it. */
  sharedKeyId?: string;
  /** Refuse a file a server would refuse (and warn) before changing it; default: no check. */
  check?: ClientFileCheck;
}

/** Options of {@link addClient}. */
export interface AddClientOptions extends EditOptions {
  name: string;
  admin?: boolean;
  highPriority?: boolean;
  /** Addresses and CIDR blocks the key may come from; absent: any. */
  from?: string[];
  /** Destinations it may deliver to; absent: none. */
  deliver?: string[];
  /** Owner and group of the file when this creates it, e.g. recon.opts's; default ours. */
  newFileOwner?: FileOwner;
}

/** Options of {@link rotateClient}. */
export interface RotateClientOptions extends EditOptions {
  /**
   * How long the old keys keep working, in seconds (KEY_ROTATION_GRACE, or `--grace`):
   * the one replaced, and at most as long every older one still retiring.
   */
  graceSeconds: number;
}

/** What {@link rotateClient} did. */
export interface Rotation {
  /** The client's new key. */
  current: ClientKey;
  /** The key it replaces, with its expires= (in `retiring` unless that has passed). */
  previous: ClientKey;
  /** Its keys that still work until their expires=, the one just replaced among them. */
  retiring: ClientKey[];
  /** Older retiring keys whose expires= the grace brought forward: key id → the time they had. */
  shortened: Map<string, string>;
  /** Its keys that stopped working with this rotation (a grace of 0), `previous` among them. */
  stopped: ClientKey[];
}

/** The client file named by recon.opts: CLIENT_KEYS_FILE, else `recon-clients` beside it. */
export function clientKeysPath(config: ReconConfig, optsPath: string): string {
  if (config.CLIENT_KEYS_FILE !== "") return path.resolve(config.CLIENT_KEYS_FILE);
  return path.join(path.dirname(path.resolve(optsPath)), DEFAULT_CLIENT_KEYS_FILE_NAME);
}

/** The user a client file must belong to, and whose group may read it. */
export interface ClientFileUser {
  uid: number | null;
  gid: number | null;
  /** How messages name this user; default "the server's user". */
  name?: string;
}

/** What is wrong with a client file's owner or mode ({@link clientFileProblem}). */
export interface ClientFileProblem {
  /** True: the server does not use the file (a way in for others); false: a warning. */
  refuse: boolean;
  /** What is wrong, naming the file. */
  what: string;
  /** The command that fixes it: `run chmod go-w FILE`. */
  fix: string;
}

/**
 * Whether the client file `info` describes may be trusted by a server running as
 * `user`: every key in it is a way in, an `admin` one to every client's jobs. Refused
 * (`refuse: true`): a file other users can write (group or others write bit), or owned
 * by anyone but root or the server's user, since they could add a key of their own.
 * Warned: a file others can read, or the group of another user than the server can
 * read (0600, or 0640 with the server's group, is quiet).
 */
export function clientFileProblem(
  file: string,
  info: Pick<Deno.FileInfo, "mode" | "uid" | "gid">,
  user: ClientFileUser,
): ClientFileProblem | undefined {
  if (info.mode === null || Deno.build.os === "windows") return undefined;
  const mode = info.mode & 0o777;
  const octal = mode.toString(8).padStart(4, "0");
  if ((mode & 0o022) !== 0) {
    return {
      refuse: true,
      what: `${file} can be written by other users (mode ${octal}): anyone who can write ` +
        "it can give themselves an admin key",
      fix: `run chmod go-w ${file}`,
    };
  }
  if (info.uid !== null && user.uid !== null && info.uid !== 0 && info.uid !== user.uid) {
    return {
      refuse: true,
      what: `${file} belongs to uid ${info.uid}, neither root nor ${
        user.name ?? "the server's user"
      } (uid ${user.uid}), who could give themselves an admin key`,
      fix: `run chown root ${file}`,
    };
  }
  const othersRead = (mode & 0o004) !== 0;
  const foreignGroupRead = (mode & 0o040) !== 0 && info.gid !== null && info.gid !== user.gid;
  if (othersRead || foreignGroupRead) {
    return {
      refuse: false,
      what: `${file} holds every client's key but other users can read it (mode ${octal}, ` +
        `group ${info.gid})`,
      fix: `run chmod 600 ${file}, or chmod 640 with the group of the user recon-server runs as`,
    };
  }
  return undefined;
}

/**
 * {@link clientFileProblem} as one line each, for the server's log: `refuse` (the file is
 * not used) or `warn`, the fix included.
 */
export function clientFileAccess(
  file: string,
  info: Pick<Deno.FileInfo, "mode" | "uid" | "gid">,
  user: ClientFileUser,
): { refuse?: string; warn?: string } {
  const problem = clientFileProblem(file, info, user);
  if (!problem) return {};
  const text = `${problem.what}; ${problem.fix}`;
  return problem.refuse ? { refuse: text } : { warn: text };
}

/**
 * What the command line checks of the file it reads or edits, as a running server
 * would: whose it must be (the CLI runs as root: the owner of recon.opts stands for
 * the server's user), and where a warning goes.
 */
export interface ClientFileCheck {
  user: ClientFileUser;
  /** Told of a file others can read, in one line with its fix. */
  warn: (text: string) => void;
}

/**
 * Apply `check` to the open file `file` whose stat is `info`.
 * @throws {ConfigError} for a file a server refuses, its fix as the hint.
 */
function checkClientFile(file: string, info: Deno.FileInfo, check?: ClientFileCheck): void {
  if (!check) return;
  const problem = clientFileProblem(file, info, check.user);
  if (!problem) return;
  if (!problem.refuse) {
    check.warn(`${problem.what}; ${problem.fix}`);
    return;
  }
  throw new ConfigError(problem.what, {
    hint: `${problem.fix} (until then a running recon-server ignores the file and keeps ` +
      "the keys it read before)",
  });
}

/** Options of {@link readClientFile}. */
export interface ReadClientFileOptions extends ParseClientFileOptions {
  /** Refuse (and warn) as a server would; default: no check. */
  check?: ClientFileCheck;
}

/**
 * The keys in the client file, validated; a missing file has none. Takes no lock:
 * edits replace the file by rename, so a reader sees a whole file.
 * @throws {ClientFileError} for a malformed file, ConfigError when it cannot be read
 * or (with `check`) a server would refuse it.
 */
export async function readClientFile(
  file: string,
  options: ReadClientFileOptions = {},
): Promise<ClientKey[]> {
  let handle: Deno.FsFile;
  try {
    handle = await Deno.open(file, { read: true });
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw fileError("read", file, error);
  }
  try {
    checkClientFile(file, await handle.stat(), options.check);
    return await parseClientFile(await readText(handle, file), file, options);
  } finally {
    handle.close();
  }
}

/**
 * Add client `name` with a new key, creating the file if needed.
 * @throws {UsageError} for a name that is not valid, reserved or already there, or a
 * bad `from`/`deliver`; ConfigError for a key id already in use (run it again).
 */
export async function addClient(file: string, options: AddClientOptions): Promise<ClientKey> {
  const { name } = options;
  const problem = clientNameProblem(name);
  if (problem) throw new UsageError(problem);
  const from = options.from === undefined ? [] : usage(() => checkFromPatterns(options.from!));
  const deliver = options.deliver === undefined
    ? []
    : usage(() => checkDestinations(options.deliver!));
  const owner = options.newFileOwner ?? { uid: Deno.uid() ?? 0, gid: Deno.gid() ?? 0 };
  // With an owner for a new file, the edit always finds (or makes) a file.
  const added = await editClientFile(file, options, owner, async (keys) => {
    const existing = keys.find((key) => key.name === name);
    if (existing) {
      throw new UsageError(`client ${name} already exists (${file}:${existing.line})`, {
        hint: `give it a new key with 'recon-server clients rotate ${name}', or pick another name`,
      });
    }
    const key = await makeClientKey(generateKey(), {
      name,
      created: formatTime(options.now),
      admin: options.admin ?? false,
      highPriority: options.highPriority ?? false,
      from,
      deliver,
    });
    checkNewKeyId(key, keys, options.sharedKeyId, file);
    return { keys: [...keys, key], result: key };
  });
  return added!;
}

/**
 * Remove every key of client `name` (its current one and those retiring).
 * @returns the lines removed.
 * @throws {UsageError} when there is no such client.
 */
export async function revokeClient(
  file: string,
  name: string,
  options: Partial<EditOptions> = {},
): Promise<ClientKey[]> {
  const edit = { ...options, now: options.now ?? new Date() };
  const removed = await editClientFile(file, edit, undefined, (keys) => {
    const removed = keys.filter((key) => key.name === name);
    if (removed.length === 0) throw unknownClient(name, file);
    return Promise.resolve({ keys: keys.filter((key) => key.name !== name), result: removed });
  });
  if (!removed) throw unknownClient(name, file);
  return removed;
}

/**
 * Give client `name` a new key, same flags; its current key becomes a retiring one that
 * works for `graceSeconds` more (0: it stops at once, and is dropped). Its older
 * retiring keys work no longer than that either: a rotation after a leak, with a short
 * grace, must not leave an older key working for days.
 * @throws {UsageError} when there is no such client; ConfigError for a key id in use.
 */
export async function rotateClient(
  file: string,
  name: string,
  options: RotateClientOptions,
): Promise<Rotation> {
  const end = options.now.getTime() + options.graceSeconds * 1000;
  const expires = formatTime(new Date(end));
  const rotation = await editClientFile(file, options, undefined, async (keys) => {
    const old = keys.find((key) => key.name === name && key.expires === undefined);
    if (!old) throw unknownClient(name, file);
    const current = await makeClientKey(generateKey(), {
      ...old,
      created: formatTime(options.now),
      line: 0,
    });
    checkNewKeyId(current, keys, options.sharedKeyId, file);
    const retired = { ...old, expires };
    const shortened = new Map<string, string>();
    const next = keys.flatMap((key) => {
      if (key === old) return [current, retired];
      if (key.name !== name || key.expires === undefined || Date.parse(key.expires) <= end) {
        return [key];
      }
      shortened.set(key.keyId, key.expires);
      return [{ ...key, expires }];
    });
    const kept = withoutExpired(next, options.now);
    return {
      keys: kept,
      result: {
        current,
        previous: retired,
        retiring: kept.filter((key) => key.name === name && key !== current),
        shortened,
        stopped: next.filter((key) => key.name === name && !kept.includes(key)),
      },
    };
  });
  if (!rotation) throw unknownClient(name, file);
  return rotation;
}

function unknownClient(name: string, file: string): UsageError {
  if (name === DEFAULT_CLIENT) {
    return new UsageError(
      `${DEFAULT_CLIENT} is the SHARED_KEY in recon.opts, not a client in ${file}`,
      {
        hint: "to retire it, give every client its own key, then remove SHARED_KEY from recon.opts",
      },
    );
  }
  return new UsageError(`there is no client ${name} in ${file}`, {
    hint: "'recon-server clients list' shows the clients",
  });
}

/** A new key whose id is taken (2^-64 odds, but never two clients with one key id). */
function checkNewKeyId(
  key: ClientKey,
  keys: readonly ClientKey[],
  sharedKeyId: string | undefined,
  file: string,
): void {
  const taken = keys.find((other) => other.keyId === key.keyId);
  if (taken || key.keyId === sharedKeyId) {
    throw new ConfigError(
      `the new key's id ${key.keyId} is already used by ${
        taken ? `${file}:${taken.line}` : "SHARED_KEY in recon.opts"
      }; nothing was changed`,
      { hint: "run the command again for another key" },
    );
  }
}

/** `keys` without the retiring ones whose time is up. */
function withoutExpired(keys: readonly ClientKey[], now: Date): ClientKey[] {
  return keys.filter((key) => key.expires === undefined || Date.parse(key.expires) > now.getTime());
}

function usage<T>(check: () => T): T {
  try {
    return check();
  } catch (error) {
    if (error instanceof TypeError) throw new UsageError(error.message);
    throw error;
  }
}

/** The file locked for an edit. */
interface LockedFile {
  handle: Deno.FsFile;
  /** The locked file's stat: its mode, owner and group go to the new file. */
  stat: Deno.FileInfo;
  /** Created (empty) by this edit, to be removed again if the edit fails. */
  created: boolean;
}

/**
 * Lock, read, change and replace the client file. `create` is the owner of a new file;
 * without it a missing file gives undefined (nothing to revoke or rotate).
 */
async function editClientFile<T>(
  file: string,
  options: EditOptions,
  create: FileOwner | undefined,
  change: (keys: ClientKey[]) => Promise<{ keys: ClientKey[]; result: T }>,
): Promise<T | undefined> {
  const locked = await lockClientFile(file, create);
  if (!locked) return undefined;
  let replaced = false;
  try {
    checkClientFile(file, locked.stat, options.check);
    const text = await readText(locked.handle, file);
    const keys = await parseClientFile(text, file, { sharedKeyId: options.sharedKeyId });
    const { keys: next, result } = await change(withoutExpired(keys, options.now));
    await replaceFile(file, formatClientFile(withoutExpired(next, options.now)), locked.stat);
    replaced = true;
    return result;
  } finally {
    // Still holding the lock: an editor waiting on this empty file sees it gone and
    // starts over.
    if (locked.created && !replaced) await Deno.remove(file).catch(() => {});
    locked.handle.close();
  }
}

/** How often a lock is taken again because the file was replaced meanwhile. */
const MAX_LOCK_ATTEMPTS = 100;

async function lockClientFile(
  file: string,
  create: FileOwner | undefined,
): Promise<LockedFile | undefined> {
  for (let attempt = 0; attempt < MAX_LOCK_ATTEMPTS; attempt++) {
    let handle: Deno.FsFile;
    let created = false;
    try {
      await refuseLink(file);
      handle = await Deno.open(file, { read: true });
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw fileError("read", file, error);
      if (!create) return undefined;
      try {
        handle = await Deno.open(file, { read: true, write: true, createNew: true, mode: 0o600 });
      } catch (error) {
        if (error instanceof Deno.errors.AlreadyExists) continue;
        throw fileError("create", file, error);
      }
      created = true;
      try {
        await chownIfNeeded(file, await handle.stat(), create);
        // After chown, which may clear mode bits.
        await Deno.chmod(file, (create.mode ?? 0o600) & 0o640);
      } catch (error) {
        await Deno.remove(file).catch(() => {});
        handle.close();
        throw error;
      }
    }
    await handle.lock(true);
    const stat = await handle.stat();
    const now = await Deno.lstat(file).catch(() => undefined);
    if (now && now.dev === stat.dev && now.ino === stat.ino) {
      if (!stat.isFile) {
        handle.close();
        throw new ConfigError(`${file} is not a regular file`);
      }
      return { handle, stat, created };
    }
    // Replaced or removed by another edit while we waited: lock what is there now.
    handle.close();
  }
  throw new ConfigError(`${file} keeps being replaced; could not lock it for an edit`);
}

/** An edit never writes through a symbolic link (its rename would replace the link). */
async function refuseLink(file: string): Promise<void> {
  const stat = await Deno.lstat(file);
  if (stat.isSymlink) {
    throw new ConfigError(`${file} is a symbolic link; an edit would replace the link`, {
      hint: "set CLIENT_KEYS_FILE in recon.opts to the file it points to",
    });
  }
}

/** Write `text` to a temporary file beside `file`, fsync it, and rename it over `file`. */
async function replaceFile(file: string, text: string, old: Deno.FileInfo): Promise<void> {
  const dir = path.dirname(file);
  const temp = path.join(dir, `.${path.basename(file)}.${crypto.randomUUID().slice(0, 8)}.tmp`);
  let handle: Deno.FsFile;
  try {
    handle = await Deno.open(temp, { write: true, createNew: true, mode: 0o600 });
  } catch (error) {
    throw fileError("write", file, error, dir);
  }
  try {
    try {
      const bytes = new TextEncoder().encode(text);
      for (let written = 0; written < bytes.length;) {
        written += await handle.write(bytes.subarray(written));
      }
      await handle.sync();
      // chown first: it may clear mode bits, which chmod then sets.
      await chownIfNeeded(temp, await handle.stat(), { uid: old.uid!, gid: old.gid! });
    } finally {
      handle.close();
    }
    await Deno.chmod(temp, old.mode! & 0o777);
    await Deno.rename(temp, file);
  } catch (error) {
    await Deno.remove(temp).catch(() => {});
    if (error instanceof ConfigError) throw error;
    throw fileError("write", file, error);
  }
  // The rename itself must survive a crash too.
  const directory = await Deno.open(dir, { read: true });
  try {
    await directory.sync();
  } finally {
    directory.close();
  }
}

/** Give `file` (whose stat is `stat`) `owner`, unless it has it already. */
async function chownIfNeeded(file: string, stat: Deno.FileInfo, owner: FileOwner): Promise<void> {
  if (stat.uid === owner.uid && stat.gid === owner.gid) return;
  try {
    await Deno.chown(file, owner.uid, owner.gid);
  } catch (error) {
    if (!(error instanceof Deno.errors.PermissionDenied)) throw error;
    throw new ConfigError(
      `cannot give ${file} the owner ${owner.uid} and group ${owner.gid} it must have`,
      { hint: "run the command as root or as the server's user", cause: error },
    );
  }
}

/** The whole file as text, at most {@link MAX_CLIENT_FILE_BYTES}. */
async function readText(handle: Deno.FsFile, file: string): Promise<string> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const buffer = new Uint8Array(65536);
  for (;;) {
    let count: number | null;
    try {
      count = await handle.read(buffer);
    } catch (error) {
      throw fileError("read", file, error);
    }
    if (count === null) break;
    size += count;
    if (size > MAX_CLIENT_FILE_BYTES) {
      throw new ConfigError(
        `${file} is larger than ${MAX_CLIENT_FILE_BYTES} bytes; it is not a client file`,
      );
    }
    chunks.push(buffer.slice(0, count));
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(concat(chunks, size));
  } catch {
    throw new ConfigError(`${file} is not UTF-8 text; it is not a client file`);
  }
}

function concat(chunks: readonly Uint8Array[], size: number): Uint8Array {
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  return bytes;
}

/** A file system error as a one-line ConfigError; `where` is the path at fault. */
function fileError(action: string, file: string, error: unknown, where = file): Error {
  if (error instanceof ConfigError) return error;
  if (error instanceof Deno.errors.PermissionDenied) {
    return new ConfigError(`cannot ${action} client file ${file}: permission denied on ${where}`, {
      hint: "run the command as root or as the server's user",
      cause: error,
    });
  }
  const reason = error instanceof Deno.errors.NotFound
    ? `${where} does not exist`
    : error instanceof Error
    ? error.message
    : String(error);
  return new ConfigError(`cannot ${action} client file ${file}: ${reason}`, {
    hint: "check CLIENT_KEYS_FILE in recon.opts",
    cause: error,
  });
}
