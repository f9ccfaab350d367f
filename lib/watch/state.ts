/**
 * The watch mode's durable memory (docs/WATCH.md "State file"): one SQLite database
 * (`node:sqlite`) with a row per scan file: path, size, mtime, inode, SHA-256, the
 * group (job) it belongs to, the server's job id and its status.
 *
 * Status moves `pending → submitted → done | failed`; `skipped` is for a file that
 * was deleted or changed before it could be sent. A row becomes `submitted` the
 * moment the server reports `job_queued`, in the same synchronous call, so a crash
 * afterwards can never make the watcher send that file again.
 *
 * Writes are synchronous and the database runs in WAL mode with `synchronous=FULL`:
 * a committed status survives a crash or a power cut. `recon-client watch --status`
 * and `--retry` read and write the same file while a watcher runs.
 *
 * @module
 */
import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import { ConfigError, errorMessage } from "../errors.ts";
import type { FileStat } from "./scanner.ts";

/** Where a scan file stands. */
export type FileStatus = "pending" | "submitted" | "done" | "failed" | "skipped";

/** Every status, in the order they are listed. */
export const FILE_STATUSES: readonly FileStatus[] = [
  "pending",
  "submitted",
  "done",
  "failed",
  "skipped",
];

/** Schema version kept in `PRAGMA user_version`. */
export const STATE_SCHEMA_VERSION = 1;

/** One scan file as recorded. */
export interface FileRecord {
  id: number;
  /** Absolute path. */
  path: string;
  size: number;
  mtimeMs: number;
  ino: number | null;
  /** Hex SHA-256 of the content when it was found complete. */
  sha256: string;
  status: FileStatus;
  /** Files with the same group id are sent as one job. */
  groupId: string;
  /** Set from `job_queued` on. */
  jobId: string | null;
  /** Why it failed or was skipped, or a note on a submitted job. */
  reason: string | null;
  /** Where the results went (done). */
  resultDir: string | null;
  /** The watcher run that submitted it (to tell a live job from an orphaned one). */
  runId: string | null;
  /** Submission attempts (connections tried). */
  attempts: number;
  /** ISO 8601 UTC. */
  firstSeen: string;
  updatedAt: string;
}

/** A file to record as pending. */
export interface NewFile extends FileStat {
  path: string;
  sha256: string;
}

/** Options of {@link StateStore.open}. */
export interface StateStoreOptions {
  /** Injectable clock for the timestamps. */
  now?: () => Date;
  /** Open an existing file for reading only (`--status`): never takes a write lock. */
  readOnly?: boolean;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS files (
  id          INTEGER PRIMARY KEY,
  path        TEXT    NOT NULL,
  size        INTEGER NOT NULL,
  mtime_ms    INTEGER NOT NULL,
  ino         INTEGER,
  sha256      TEXT    NOT NULL,
  status      TEXT    NOT NULL
              CHECK (status IN ('pending', 'submitted', 'done', 'failed', 'skipped')),
  group_id    TEXT    NOT NULL,
  job_id      TEXT,
  reason      TEXT,
  result_dir  TEXT,
  run_id      TEXT,
  attempts    INTEGER NOT NULL DEFAULT 0,
  first_seen  TEXT    NOT NULL,
  updated_at  TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS files_by_path ON files (path, id);
CREATE INDEX IF NOT EXISTS files_by_status ON files (status, group_id);
CREATE INDEX IF NOT EXISTS files_by_job ON files (job_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

type Row = Record<string, SQLInputValue>;

function toRecord(row: Row): FileRecord {
  return {
    id: Number(row.id),
    path: String(row.path),
    size: Number(row.size),
    mtimeMs: Number(row.mtime_ms),
    ino: row.ino === null ? null : Number(row.ino),
    sha256: String(row.sha256),
    status: row.status as FileStatus,
    groupId: String(row.group_id),
    jobId: row.job_id === null ? null : String(row.job_id),
    reason: row.reason === null ? null : String(row.reason),
    resultDir: row.result_dir === null ? null : String(row.result_dir),
    runId: row.run_id === null ? null : String(row.run_id),
    attempts: Number(row.attempts),
    firstSeen: String(row.first_seen),
    updatedAt: String(row.updated_at),
  };
}

/** The state database. Every method is synchronous and commits before it returns. */
export class StateStore {
  readonly path: string;
  #db: DatabaseSync;
  #now: () => Date;

  private constructor(path: string, db: DatabaseSync, now: () => Date) {
    this.path = path;
    this.#db = db;
    this.#now = now;
  }

  /**
   * Open (creating if needed) the state file at `path`.
   * @throws {ConfigError} when it is not a usable state file.
   */
  static open(path: string, options: StateStoreOptions = {}): StateStore {
    let db: DatabaseSync | undefined;
    try {
      db = new DatabaseSync(path, { readOnly: options.readOnly ?? false });
      // Wait for --status/--retry in another process instead of failing at once.
      db.exec("PRAGMA busy_timeout = 10000");
      const { user_version: version } = db.prepare("PRAGMA user_version").get() as Row;
      if (Number(version) > STATE_SCHEMA_VERSION) {
        throw new ConfigError(
          `state file ${path} was written by a newer recon (schema ${version}); ` +
            "upgrade recon-client or point --state elsewhere",
        );
      }
      if (options.readOnly) {
        if (Number(version) === 0) throw new Error("it is not a recon watch state file");
      } else {
        db.exec("PRAGMA journal_mode = WAL");
        db.exec("PRAGMA synchronous = FULL");
        if (Number(version) < STATE_SCHEMA_VERSION) {
          db.exec(SCHEMA);
          db.exec(`PRAGMA user_version = ${STATE_SCHEMA_VERSION}`);
        }
      }
    } catch (error) {
      try {
        db?.close();
      } catch { /* not open */ }
      if (error instanceof ConfigError) throw error;
      throw new ConfigError(`cannot use state file ${path}: ${errorMessage(error)}`, {
        hint: "set CLIENT_DAEMON_STATE_FILE (or --state) to a writable path",
        cause: error,
      });
    }
    return new StateStore(path, db, options.now ?? (() => new Date()));
  }

  close(): void {
    this.#db.close();
  }

  #stamp(): string {
    return this.#now().toISOString();
  }

  #rows(sql: string, ...params: SQLInputValue[]): FileRecord[] {
    return (this.#db.prepare(sql).all(...params) as Row[]).map(toRecord);
  }

  #transaction<T>(body: () => T): T {
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      const result = body();
      this.#db.exec("COMMIT");
      return result;
    } catch (error) {
      this.#db.exec("ROLLBACK");
      throw error;
    }
  }

  /** The newest row for `path`, if any. */
  latest(path: string): FileRecord | undefined {
    return this.#rows("SELECT * FROM files WHERE path = ? ORDER BY id DESC LIMIT 1", path)[0];
  }

  /** Record a newly finished file as pending in group `groupId`. */
  addPending(file: NewFile, groupId: string): FileRecord {
    const stamp = this.#stamp();
    const { lastInsertRowid } = this.#db.prepare(
      `INSERT INTO files (path, size, mtime_ms, ino, sha256, status, group_id, first_seen, updated_at)
       VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)`,
    ).run(file.path, file.size, file.mtimeMs, file.ino, file.sha256, groupId, stamp, stamp);
    return this.#rows("SELECT * FROM files WHERE id = ?", lastInsertRowid)[0];
  }

  /** Same content under a new stat (touched, copied over with the same bytes). */
  restat(id: number, stat: FileStat): void {
    this.#db.prepare(
      "UPDATE files SET size = ?, mtime_ms = ?, ino = ?, updated_at = ? WHERE id = ?",
    )
      .run(stat.size, stat.mtimeMs, stat.ino, this.#stamp(), id);
  }

  /** Pending files by group, oldest group first. */
  pendingGroups(): { groupId: string; files: FileRecord[] }[] {
    const groups = new Map<string, FileRecord[]>();
    for (const row of this.#rows("SELECT * FROM files WHERE status = 'pending' ORDER BY id")) {
      const files = groups.get(row.groupId) ?? [];
      files.push(row);
      groups.set(row.groupId, files);
    }
    return [...groups].map(([groupId, files]) => ({ groupId, files }));
  }

  /** One more connection attempt for these rows. */
  countAttempt(ids: readonly number[]): void {
    this.#each(ids, "UPDATE files SET attempts = attempts + 1 WHERE id = ?");
  }

  #each(ids: readonly number[], sql: string, ...params: SQLInputValue[]): number {
    const statement = this.#db.prepare(sql);
    return this.#transaction(() => {
      let changes = 0;
      for (const id of ids) changes += Number(statement.run(...params, id).changes);
      return changes;
    });
  }

  /** The server queued the job: from now on these files are never sent again by themselves. */
  markSubmitted(ids: readonly number[], jobId: string, runId: string): void {
    this.#each(
      ids,
      `UPDATE files SET status = 'submitted', job_id = ?, run_id = ?, reason = NULL, updated_at = ?
       WHERE status = 'pending' AND id = ?`,
      jobId,
      runId,
      this.#stamp(),
    );
  }

  /**
   * Results received. Only rows still submitted under `jobId` change (a retry wins).
   * `note` is kept as the reason column, e.g. a warning about the upload.
   */
  markDone(ids: readonly number[], jobId: string, resultDir: string, note?: string): number {
    return this.#each(
      ids,
      `UPDATE files SET status = 'done', result_dir = ?, reason = ?, updated_at = ?
       WHERE status = 'submitted' AND job_id = ? AND id = ?`,
      resultDir,
      note ?? null,
      this.#stamp(),
      jobId,
    );
  }

  /** The job failed or was refused (`jobId` null: refused before it was queued). */
  markFailed(ids: readonly number[], reason: string, jobId: string | null): number {
    return this.#each(
      ids,
      `UPDATE files SET status = 'failed', reason = ?, job_id = COALESCE(?, job_id), updated_at = ?
       WHERE (status = 'pending' OR (status = 'submitted' AND job_id = ?)) AND id = ?`,
      reason,
      jobId,
      this.#stamp(),
      jobId,
    );
  }

  /** The job was cancelled on the server (confirmed): send the files again later. */
  markPendingAgain(ids: readonly number[], jobId: string, reason: string): number {
    return this.#each(
      ids,
      `UPDATE files SET status = 'pending', job_id = NULL, run_id = NULL, reason = ?, updated_at = ?
       WHERE status = 'submitted' AND job_id = ? AND id = ?`,
      reason,
      this.#stamp(),
      jobId,
    );
  }

  /** A note on rows still submitted under `jobId` (e.g. the connection was lost). */
  noteSubmitted(ids: readonly number[], jobId: string, reason: string): void {
    this.#each(
      ids,
      `UPDATE files SET reason = ?, updated_at = ? WHERE status = 'submitted' AND job_id = ? AND id = ?`,
      reason,
      this.#stamp(),
      jobId,
    );
  }

  /** A pending file that was deleted or changed before it was sent. */
  markSkipped(id: number, reason: string): void {
    this.#db.prepare(
      "UPDATE files SET status = 'skipped', reason = ?, updated_at = ? WHERE status = 'pending' AND id = ?",
    ).run(reason, this.#stamp(), id);
  }

  /** A note on pending rows (why they wait). */
  notePending(ids: readonly number[], reason: string | null): void {
    this.#each(ids, "UPDATE files SET reason = ? WHERE status = 'pending' AND id = ?", reason);
  }

  /** Every row, oldest first. */
  list(): FileRecord[] {
    return this.#rows("SELECT * FROM files ORDER BY id");
  }

  /** Rows with this id. */
  byIds(ids: readonly number[]): FileRecord[] {
    return ids.flatMap((id) => this.#rows("SELECT * FROM files WHERE id = ?", id));
  }

  /** Rows of the job whose id is `jobId` or starts with it (at least 8 characters). */
  byJobId(jobId: string): FileRecord[] {
    if (jobId.length < 8) return this.#rows("SELECT * FROM files WHERE job_id = ?", jobId);
    const escaped = jobId.replace(/[\\%_]/g, (c) => `\\${c}`);
    return this.#rows(
      "SELECT * FROM files WHERE job_id LIKE ? ESCAPE '\\' ORDER BY id",
      `${escaped}%`,
    );
  }

  /** Rows in group `groupId`. */
  byGroup(groupId: string): FileRecord[] {
    return this.#rows("SELECT * FROM files WHERE group_id = ? ORDER BY id", groupId);
  }

  /** Make rows pending again (`--retry`); returns how many changed. */
  retry(ids: readonly number[]): number {
    return this.#each(
      ids,
      `UPDATE files SET status = 'pending', job_id = NULL, run_id = NULL, result_dir = NULL,
       reason = 'retry requested', updated_at = ? WHERE status != 'pending' AND id = ?`,
      this.#stamp(),
    );
  }

  /** A value from the meta table. */
  getMeta(key: string): string | undefined {
    const row = this.#db.prepare("SELECT value FROM meta WHERE key = ?").get(key) as
      | Row
      | undefined;
    return row ? String(row.value) : undefined;
  }

  setMeta(key: string, value: string): void {
    this.#db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)").run(key, value);
  }

  /** How many rows have each status. */
  counts(): Record<FileStatus, number> {
    const counts = Object.fromEntries(FILE_STATUSES.map((status) => [status, 0])) as Record<
      FileStatus,
      number
    >;
    for (
      const row of this.#db.prepare("SELECT status, COUNT(*) AS n FROM files GROUP BY status")
        .all() as Row[]
    ) {
      counts[row.status as FileStatus] = Number(row.n);
    }
    return counts;
  }
}
