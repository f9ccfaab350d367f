/**
 * The job store's file (lib/server/job_store.ts): where it lives, who may use it, and
 * a consistent copy of it.
 *
 * - RECON_STATE_DIR is made 0700 when missing and refused when it is not this user's
 *   or others can write it; `jobs.sqlite` is 0600 (SQLite gives its -wal and -shm
 *   files the same mode) and never a symbolic link.
 * - One recon-server per store: the server holds an exclusive `flock` on
 *   `jobs.sqlite.lock`, which names its pid, while the store is open. SQLite's own
 *   `locking_mode=EXCLUSIVE` would also lock out `recon-server backup`, which reads
 *   the database from another process while the server runs; the lock file does not.
 *   The lock dies with the process, also on SIGKILL, and no child inherits it
 *   (close-on-exec), so a script that outlives a crashed server does not hold it.
 *   SQLite's busy_timeout is 0 for the server: it never waits on a lock.
 * - At open: a file SQLite cannot read or whose `quick_check` fails is refused as
 *   damaged (naming the file and SQLite's words); a database with tables but no
 *   schema version is not ours; a newer schema is refused with the upgrade hint;
 *   then WAL, `synchronous=FULL` and the forward migrations (lib/server/store_schema.ts).
 * - A backup is SQLite's online backup API in one step (one snapshot, taken while the
 *   server writes), into a new 0600 file, turned into one self-contained file
 *   (journal_mode=DELETE) and checked.
 *
 * @module
 */
import { backup as sqliteBackup, DatabaseSync, type SQLInputValue } from "node:sqlite";
import * as path from "node:path";
import { errorMessage, StoreError } from "../errors.ts";
import { migrate, schemaVersionOf, STORE_SCHEMA_VERSION } from "./store_schema.ts";

type Row = Record<string, SQLInputValue>;

/** The database's file name in RECON_STATE_DIR. */
export const STORE_FILE = "jobs.sqlite";
/** The lock file beside it, held by the server that has the store open (holds its pid). */
export const LOCK_FILE = `${STORE_FILE}.lock`;

/** What a backup copied ({@link backupJobStore}). */
export interface BackupReport {
  file: string;
  jobs: number;
  schemaVersion: number;
}

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, "0");
}

/**
 * Make RECON_STATE_DIR when missing (mode 0700; missing parents 0755) and refuse one
 * that is not a directory, not this user's, or writable by others: whoever can write
 * there can replace the job store and, with it, where results are read from.
 */
function prepareStateDir(dir: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(dir);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    Deno.mkdirSync(path.dirname(dir), { recursive: true, mode: 0o755 });
    try {
      Deno.mkdirSync(dir, { mode: 0o700 });
      Deno.chmodSync(dir, 0o700); // mkdir's mode passes through the umask
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    }
    info = Deno.statSync(dir);
  }
  const hint = `make it private to the server's user (chmod 700 ${dir}), or set ` +
    "RECON_STATE_DIR in recon.opts to a directory of its own";
  if (!info.isDirectory) {
    throw new StoreError(`RECON_STATE_DIR ${dir} is not a directory`, { hint });
  }
  const uid = Deno.uid();
  if (uid !== null && info.uid !== null && info.uid !== uid) {
    throw new StoreError(
      `RECON_STATE_DIR ${dir} is owned by uid ${info.uid}, not by the server's user (uid ${uid})`,
      { hint },
    );
  }
  if (info.mode !== null && (info.mode & 0o022) !== 0) {
    throw new StoreError(
      `RECON_STATE_DIR ${dir} is writable by other users (mode ${octal(info.mode)}); ` +
        "refusing to keep the job store there",
      { hint },
    );
  }
}

/**
 * Create the database file 0600 when missing (SQLite gives its -wal and -shm files the
 * same mode); an existing one must be a regular file, never a symbolic link, and is
 * made 0600.
 */
function prepareStoreFile(file: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(file);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    Deno.openSync(file, { write: true, createNew: true, mode: 0o600 }).close();
    Deno.chmodSync(file, 0o600);
    return;
  }
  if (!info.isFile) {
    throw new StoreError(`the job store ${file} is not a regular file`, {
      hint: "move it away; the server creates a new job store there",
    });
  }
  if (info.mode !== null && (info.mode & 0o077) !== 0) Deno.chmodSync(file, 0o600);
}

/**
 * Take the store's lock file, or throw naming the process that holds it. Returns the
 * open, locked file; closing it releases the lock.
 */
function takeLock(stateDir: string, store: string): Deno.FsFile {
  const lockPath = path.join(stateDir, LOCK_FILE);
  const info = (() => {
    try {
      return Deno.lstatSync(lockPath);
    } catch {
      return undefined;
    }
  })();
  if (info && !info.isFile) {
    throw new StoreError(`${lockPath} is not a regular file`, { hint: `remove ${lockPath}` });
  }
  const lock = Deno.openSync(lockPath, { read: true, write: true, create: true, mode: 0o600 });
  let locked = false;
  try {
    locked = lock.tryLockSync(true);
    if (!locked) {
      const pid = Number(new TextDecoder().decode(Deno.readFileSync(lockPath)).trim());
      const who = Number.isSafeInteger(pid) && pid > 0
        ? `another recon-server (pid ${pid})`
        : "another recon-server";
      throw new StoreError(`the job store ${store} is in use by ${who}`, {
        hint: "stop that server first, or give this one its own RECON_STATE_DIR in recon.opts",
      });
    }
    lock.truncateSync(0);
    const bytes = new TextEncoder().encode(`${Deno.pid}\n`);
    for (let written = 0; written < bytes.length;) {
      written += lock.writeSync(bytes.subarray(written));
    }
    return lock;
  } catch (error) {
    if (locked) lock.unlockSync();
    lock.close();
    throw error;
  }
}

/** The store's words for a file SQLite cannot use as a job store. */
function damaged(file: string, reason: string, cause?: unknown): StoreError {
  // One line: SQLite's own report spans several.
  const words = reason.split(/\s*\n\s*/).filter((part) => part !== "").join("; ");
  return new StoreError(`the job store ${file} is damaged: ${words}`, {
    hint: `copy a backup made with 'recon-server backup FILE' over ${file} and remove ` +
      `${file}-wal and ${file}-shm; or move the three aside to start with an empty store ` +
      "(job directories it does not know are then left in place, docs/DEPLOY.md §7)",
    cause,
  });
}

function newerSchema(file: string, version: number): StoreError {
  return new StoreError(
    `the job store ${file} has schema version ${version}, newer than this recon-server ` +
      `(${STORE_SCHEMA_VERSION}); upgrade recon-server or restore a backup`,
  );
}

/**
 * Open `file` as a job store of this build: refuse a file that is not an SQLite
 * database, fails `quick_check`, holds tables without a schema version (not ours), or
 * has a newer schema; then WAL, synchronous=FULL and the pending migrations.
 */
function openDatabase(file: string): DatabaseSync {
  let db: DatabaseSync | undefined;
  try {
    db = new DatabaseSync(file);
    // A second writer is locked out by the lock file; never wait on SQLite's lock.
    db.exec("PRAGMA busy_timeout = 0");
    let version: number;
    let check: string[];
    try {
      version = schemaVersionOf(db);
      check = (db.prepare("PRAGMA quick_check").all() as Row[]).map((row) =>
        String(Object.values(row)[0])
      );
    } catch (error) {
      throw damaged(file, errorMessage(error), error);
    }
    if (check.length !== 1 || check[0] !== "ok") {
      throw damaged(file, `SQLite's quick_check says: ${check.slice(0, 3).join("; ")}`);
    }
    if (version > STORE_SCHEMA_VERSION) throw newerSchema(file, version);
    if (version === 0) {
      const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .all() as Row[]).map((row) => String(row.name));
      if (tables.length > 0) {
        throw new StoreError(
          `${file} is not a recon job store: it holds tables (${tables.join(", ")}) ` +
            "but no schema version",
          { hint: "set RECON_STATE_DIR in recon.opts to a directory of its own" },
        );
      }
    }
    const mode = db.prepare("PRAGMA journal_mode = WAL").get() as Row;
    if (String(mode.journal_mode) !== "wal") {
      throw new StoreError(`cannot put the job store ${file} in WAL mode`);
    }
    db.exec("PRAGMA synchronous = FULL");
    db.exec("PRAGMA foreign_keys = ON");
    migrate(db);
    return db;
  } catch (error) {
    try {
      db?.close();
    } catch { /* not open */ }
    if (error instanceof StoreError) throw error;
    throw new StoreError(`cannot open the job store ${file}: ${errorMessage(error)}`, {
      hint: "check RECON_STATE_DIR in recon.opts and the free space there",
      cause: error,
    });
  }
}

/**
 * Copy the database open as `db` into `file`, consistently, while others read and
 * write it (SQLite's online backup API, in one step: the copy is one snapshot). The
 * file is created 0600 and must not exist; the copy is turned into a single
 * self-contained file (journal_mode=DELETE), checked, and counted. A failed copy is
 * removed.
 */
export async function copyDatabase(db: DatabaseSync, file: string): Promise<BackupReport> {
  try {
    Deno.openSync(file, { write: true, createNew: true, mode: 0o600 }).close();
  } catch (error) {
    if (error instanceof Deno.errors.AlreadyExists) {
      throw new StoreError(`${file} already exists; refusing to overwrite it`, {
        hint: "name a file that does not exist yet",
      });
    }
    const why = error instanceof Deno.errors.NotFound
      ? `the directory ${path.dirname(path.resolve(file))} does not exist`
      : errorMessage(error);
    throw new StoreError(`cannot create ${file}: ${why}`, { cause: error });
  }
  try {
    Deno.chmodSync(file, 0o600);
    await sqliteBackup(db, file, { rate: -1 });
    const copy = new DatabaseSync(file);
    try {
      copy.exec("PRAGMA journal_mode = DELETE");
      const check = copy.prepare("PRAGMA quick_check").get() as Row;
      if (String(Object.values(check)[0]) !== "ok") {
        throw new Error(`the copy fails SQLite's quick_check: ${Object.values(check)[0]}`);
      }
      const jobs = Number((copy.prepare("SELECT COUNT(*) AS n FROM jobs").get() as Row).n);
      return { file, jobs, schemaVersion: schemaVersionOf(copy) };
    } finally {
      copy.close();
    }
  } catch (error) {
    for (const leftover of [file, `${file}-wal`, `${file}-shm`, `${file}-journal`]) {
      try {
        Deno.removeSync(leftover);
      } catch { /* not there */ }
    }
    if (error instanceof StoreError) throw error;
    throw new StoreError(`cannot back up the job store to ${file}: ${errorMessage(error)}`, {
      cause: error,
    });
  }
}

/**
 * `recon-server backup FILE`: copy the job store in `stateDir` to `file` from a
 * process that is not the server, while the server runs or not. The store is opened
 * read-only and without its lock file (WAL lets this reader and the server's writes
 * go on together); it is never migrated or changed. Run it as the server's user:
 * SQLite may create the store's -wal and -shm files, which the server must own.
 * @throws {StoreError} no store there, another user's, or the copy failed.
 */
export async function backupJobStore(stateDir: string, file: string): Promise<BackupReport> {
  const store = path.join(stateDir, STORE_FILE);
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(store);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new StoreError(`there is no job store at ${store}; nothing to back up`, {
        hint: "check RECON_STATE_DIR in recon.opts (--opts PATH names the server's file)",
      });
    }
    throw new StoreError(`cannot read the job store ${store}: ${errorMessage(error)}`);
  }
  const uid = Deno.uid();
  if (uid !== null && info.uid !== null && info.uid !== uid) {
    throw new StoreError(
      `the job store ${store} belongs to uid ${info.uid}; run the backup as that user`,
      { hint: "e.g. sudo -u <the server's user> recon-server backup FILE" },
    );
  }
  return await readStoreFile(store, (db) => copyDatabase(db, file));
}

/**
 * Read the job store file `store` from a process that is not the server (a backup,
 * `clients list`, `audit --verify`): read-only, without the lock file, waiting for an
 * instant of the server's write lock. When the store has no -wal file (no server has it
 * open, so the main file holds everything) a temporary copy is read instead: SQLite
 * would create -wal and -shm files beside a WAL database it opens, and a reader running
 * as another user (root) would leave files the server could not use.
 * @throws {StoreError} when it is no recon job store.
 */
export async function readStoreFile<T>(
  store: string,
  read: (db: DatabaseSync) => T | Promise<T>,
): Promise<T> {
  let walExists = true;
  try {
    Deno.statSync(`${store}-wal`);
  } catch {
    walExists = false;
  }
  let copyDir: string | undefined;
  let db: DatabaseSync | undefined;
  try {
    try {
      let file = store;
      if (!walExists) {
        copyDir = await Deno.makeTempDir({ prefix: "recon-store-read-" });
        file = path.join(copyDir, STORE_FILE);
        await Deno.copyFile(store, file);
      }
      db = new DatabaseSync(file, { readOnly: true });
      db.exec("PRAGMA busy_timeout = 5000");
      const version = schemaVersionOf(db);
      if (version === 0) throw new Error("it is not a recon job store (no schema version)");
    } catch (error) {
      throw damaged(store, errorMessage(error), error);
    }
    return await read(db);
  } finally {
    db?.close();
    if (copyDir) await Deno.remove(copyDir, { recursive: true }).catch(() => {});
  }
}

/** An open, locked, checked and migrated job store ({@link openStoreFile}). */
export interface OpenStore {
  file: string;
  db: DatabaseSync;
  /** The locked lock file: closing it releases the store. */
  lock: Deno.FsFile;
}

/**
 * Open the job store in `stateDir` for the server: prepare the directory, take the
 * lock, create or check the file, open, check and migrate the database.
 * @throws {StoreError} naming the file and why it cannot be used (nothing is held then).
 */
export function openStoreFile(stateDir: string): OpenStore {
  const dir = path.resolve(stateDir);
  const file = path.join(dir, STORE_FILE);
  try {
    prepareStateDir(dir);
  } catch (error) {
    if (error instanceof StoreError) throw error;
    throw new StoreError(`cannot use RECON_STATE_DIR ${dir}: ${errorMessage(error)}`, {
      hint: "set RECON_STATE_DIR in recon.opts to a directory the server can write",
      cause: error,
    });
  }
  let lock: Deno.FsFile;
  try {
    lock = takeLock(dir, file);
  } catch (error) {
    if (error instanceof StoreError) throw error;
    throw new StoreError(`cannot lock the job store ${file}: ${errorMessage(error)}`, {
      hint: `check that ${path.join(dir, LOCK_FILE)} belongs to the server's user`,
      cause: error,
    });
  }
  try {
    prepareStoreFile(file);
    return { file, db: openDatabase(file), lock };
  } catch (error) {
    releaseLock(lock);
    if (error instanceof StoreError) throw error;
    throw new StoreError(`cannot open the job store ${file}: ${errorMessage(error)}`, {
      cause: error,
    });
  }
}

/** Release and close the lock file taken by {@link openStoreFile}. */
export function releaseLock(lock: Deno.FsFile): void {
  try {
    lock.truncateSync(0);
    lock.unlockSync();
  } finally {
    lock.close();
  }
}
