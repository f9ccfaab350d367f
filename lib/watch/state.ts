/**
 * The watch mode's durable memory (docs/WATCH.md "State file"): one SQLite database
 * (`node:sqlite`) with a row per scan file: path, size, mtime, inode, SHA-256, the
 * group (job) it belongs to, the server's job id and its status.
 *
 * Status moves `pending → submitted → done | failed`; `skipped` is for a file that
 * was deleted or changed before it could be sent; `baseline` is for a file that was
 * already there at the first start and is never sent by itself (its content is not
 * hashed: a baseline row has no SHA-256). The `watching` table mirrors the files
 * the running watcher is waiting on (still being written), for `--status`; the `meta`
 * table holds, besides the run's id, pid and start, its heartbeat and since when it
 * cannot reach the server, for `--status`'s health check (lib/watch/health.ts).
 *
 * A row becomes `submitted`, with the job id, the moment the server names the job
 * (its first `request_file`), in the same synchronous call: from then on the watcher
 * only ever reattaches to that job (resumes its upload, follows it, fetches its
 * results), so a crash can never make it send the file as a second job. Its `phase`
 * (`uploading`, `queued`, `running`, `downloading`) says how to reattach.
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
export type FileStatus = "pending" | "submitted" | "done" | "failed" | "skipped" | "baseline";

/** Every status, in the order they are listed. */
export const FILE_STATUSES: readonly FileStatus[] = [
  "pending",
  "submitted",
  "done",
  "failed",
  "skipped",
  "baseline",
];

/** Where a submitted job stands, as far as the watcher knows (null when not submitted). */
export type JobPhase = "uploading" | "queued" | "running" | "downloading";

/** Every phase, in the order a job goes through them. */
export const JOB_PHASES: readonly JobPhase[] = ["uploading", "queued", "running", "downloading"];

/**
 * Schema version kept in `PRAGMA user_version`: 1 the first, 2 added baselines and
 * the `watching` table, 3 the job's `phase`, 4 `waiting_since` (for `--status`'s
 * health check).
 */
export const STATE_SCHEMA_VERSION = 4;

/** One scan file as recorded. */
export interface FileRecord {
  id: number;
  /** Absolute path. */
  path: string;
  size: number;
  mtimeMs: number;
  ino: number | null;
  /** Hex SHA-256 of the content when it was found complete; null for a baseline file. */
  sha256: string | null;
  status: FileStatus;
  /** Files with the same group id are sent as one job. */
  groupId: string;
  /** The server's job id, from its first `request_file` on. */
  jobId: string | null;
  /** Where the submitted job stands; null unless `submitted`. */
  phase: JobPhase | null;
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
  /**
   * Since when the file waits to be delivered (ISO 8601 UTC): when it was recorded
   * complete, or made pending by `--retry`; kept while it is pending and uploading.
   * Null for a baseline file.
   */
  waitingSince: string | null;
}

/** A file the running watcher waits on: seen, not yet unchanged for the stability delay. */
export interface WatchingRecord {
  path: string;
  size: number;
  mtimeMs: number;
  /** When the watcher first saw this size and mtime (ISO 8601 UTC). */
  seenAt: string;
  /** When it counts as complete if it stays unchanged (ISO 8601 UTC). */
  stableAt: string;
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

/** The `phase` column (schema 3), as created and as added to an older file. */
const PHASE_COLUMN =
  "TEXT CHECK (phase IS NULL OR phase IN ('uploading', 'queued', 'running', 'downloading'))";

const FILES_TABLE = (name: string) => `
CREATE TABLE ${name} (
  id          INTEGER PRIMARY KEY,
  path        TEXT    NOT NULL,
  size        INTEGER NOT NULL,
  mtime_ms    INTEGER NOT NULL,
  ino         INTEGER,
  sha256      TEXT,
  status      TEXT    NOT NULL
              CHECK (status IN ('pending', 'submitted', 'done', 'failed', 'skipped', 'baseline')),
  group_id    TEXT    NOT NULL,
  job_id      TEXT,
  reason      TEXT,
  result_dir  TEXT,
  run_id      TEXT,
  attempts    INTEGER NOT NULL DEFAULT 0,
  first_seen  TEXT    NOT NULL,
  updated_at  TEXT    NOT NULL,
  phase       ${PHASE_COLUMN},
  waiting_since TEXT
);`;

const INDEXES = `
CREATE INDEX IF NOT EXISTS files_by_path ON files (path, id);
CREATE INDEX IF NOT EXISTS files_by_status ON files (status, group_id);
CREATE INDEX IF NOT EXISTS files_by_job ON files (job_id);
`;

const OTHER_TABLES = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS watching (
  path        TEXT    PRIMARY KEY,
  size        INTEGER NOT NULL,
  mtime_ms    INTEGER NOT NULL,
  seen_at     TEXT    NOT NULL,
  stable_at   TEXT    NOT NULL
);
`;

/** The columns of schema 1 and 2 (schema 3 adds `phase`, 4 `waiting_since`). */
const V2_COLUMNS = "id, path, size, mtime_ms, ino, sha256, status, group_id, job_id, reason, " +
  "result_dir, run_id, attempts, first_seen, updated_at";

/**
 * Meta key set once the first start has dealt with the files already in the
 * directory (a JSON {@link FirstStart}); without it the next start is a first start.
 */
export const FIRST_START_KEY = "first_start";
/** Meta key set when the watcher stopped on a condition a person must fix (JSON {@link StopNote}). */
export const STOPPED_KEY = "stopped";
/** Meta key the running watcher refreshes as it scans (JSON {@link Heartbeat}). */
export const HEARTBEAT_KEY = "heartbeat";
/** Meta key set while the running watcher cannot reach the server (JSON {@link ServerTrouble}). */
export const SERVER_TROUBLE_KEY = "server_unreachable";

/** What the first start did with the files already in the watch directory. */
export interface FirstStart {
  at: string;
  /** `baseline`: recorded, not sent; `submit-existing`: sent; `since`: sent if modified since; `upgrade`: state file from before baselines. */
  mode: "baseline" | "submit-existing" | "since" | "upgrade";
  since?: string;
  /** Files recorded as baseline. */
  baseline: number;
  /** Existing files left to be sent. */
  sent: number;
}

/** Why the watcher stopped by itself. */
export interface StopNote {
  at: string;
  reason: string;
  hint: string;
}

/**
 * That the running watcher still scans its directory: written when it starts and
 * after a complete scan (at most once a minute), and when listing the directory
 * starts or stops failing. `--status` trusts it only for the run that holds the lock.
 */
export interface Heartbeat {
  /** The run that wrote it (meta `run_id`). */
  runId: string;
  /** The last complete scan of the directory (at first: the start), ISO 8601 UTC. */
  at: string;
  /** CLIENT_DAEMON_POLL_INTERVAL of that run (ms). */
  pollMs: number;
  /** Why the directory cannot be listed, while it cannot. */
  listError?: string;
}

/**
 * The running watcher has been failing to reach the server (and backing off) since
 * `since`; removed at its next successful connection.
 */
export interface ServerTrouble {
  runId: string;
  /** The first failed attempt of this run of failures, ISO 8601 UTC. */
  since: string;
  /** Failed attempts in a row. */
  failures: number;
  lastError: string;
  lastAttemptAt: string;
  nextAttemptAt: string;
}

/**
 * Create the current schema, or move an older state file to it, keeping every row:
 * 1 → 2 rebuilds the files table (v1 had sha256 NOT NULL and no 'baseline' status:
 * SQLite cannot alter a CHECK) and notes that a watcher already ran; 2 → 3 adds the
 * `phase` column. A row an older watcher left `submitted` had been queued by the
 * server (older watchers recorded the job id at `job_queued`): its phase is `queued`,
 * so the new watcher follows the job instead of forgetting it.
 */
function migrate(db: DatabaseSync): void {
  db.exec("BEGIN IMMEDIATE");
  try {
    // Read again under the write lock: another process may have migrated meanwhile.
    const version = Number((db.prepare("PRAGMA user_version").get() as Row).user_version);
    if (version >= STATE_SCHEMA_VERSION) {
      db.exec("COMMIT");
      return;
    }
    if (version === 0) {
      db.exec(FILES_TABLE("files"));
    } else if (version === 1) {
      db.exec(FILES_TABLE("files_v4"));
      db.exec(`INSERT INTO files_v4 (${V2_COLUMNS}) SELECT ${V2_COLUMNS} FROM files`);
      db.exec("DROP TABLE files");
      db.exec("ALTER TABLE files_v4 RENAME TO files");
    } else {
      if (version === 2) db.exec(`ALTER TABLE files ADD COLUMN phase ${PHASE_COLUMN}`);
      db.exec("ALTER TABLE files ADD COLUMN waiting_since TEXT");
    }
    if (version < 3) {
      db.exec(
        "UPDATE files SET phase = 'queued' WHERE status = 'submitted' AND job_id IS NOT NULL",
      );
    }
    // The best older files can tell; see waitingSince() for the same rule when reading.
    db.exec(
      `UPDATE files SET waiting_since = CASE WHEN status = 'pending' THEN updated_at
       ELSE first_seen END WHERE status != 'baseline'`,
    );
    db.exec(INDEXES);
    db.exec(OTHER_TABLES);
    if (version === 1) {
      // A watcher already ran on this directory: files that are there now and not
      // recorded arrived while it was stopped and must be sent, not baselined.
      const note: FirstStart = {
        at: new Date().toISOString(),
        mode: "upgrade",
        baseline: 0,
        sent: 0,
      };
      db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)").run(
        FIRST_START_KEY,
        JSON.stringify(note),
      );
    }
    db.exec(`PRAGMA user_version = ${STATE_SCHEMA_VERSION}`);
    db.exec("COMMIT");
  } catch (error) {
    db.exec("ROLLBACK");
    throw error;
  }
}

type Row = Record<string, SQLInputValue>;

function toRecord(row: Row): FileRecord {
  return {
    id: Number(row.id),
    path: String(row.path),
    size: Number(row.size),
    mtimeMs: Number(row.mtime_ms),
    ino: row.ino === null ? null : Number(row.ino),
    sha256: row.sha256 === null ? null : String(row.sha256),
    status: row.status as FileStatus,
    groupId: String(row.group_id),
    jobId: row.job_id === null ? null : String(row.job_id),
    // Absent in a schema 1 or 2 file that --status reads as it is.
    phase: row.phase === undefined || row.phase === null ? null : row.phase as JobPhase,
    reason: row.reason === null ? null : String(row.reason),
    resultDir: row.result_dir === null ? null : String(row.result_dir),
    runId: row.run_id === null ? null : String(row.run_id),
    attempts: Number(row.attempts),
    firstSeen: String(row.first_seen),
    updatedAt: String(row.updated_at),
    waitingSince: waitingSince(row),
  };
}

/**
 * The `waiting_since` column; in a file of schema 3 or older (read as it is by
 * `--status` while an older watcher runs), the best it can tell: a pending row's
 * `updated_at` changes only when it becomes pending, and otherwise the file has
 * waited since it was first recorded.
 */
function waitingSince(row: Row): string | null {
  if (row.waiting_since !== undefined && row.waiting_since !== null) {
    return String(row.waiting_since);
  }
  if (row.status === "baseline") return null;
  return String(row.status === "pending" ? row.updated_at : row.first_seen);
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
        if (Number(version) < STATE_SCHEMA_VERSION) migrate(db);
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
      `INSERT INTO files (path, size, mtime_ms, ino, sha256, status, group_id, first_seen,
         updated_at, waiting_since)
       VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?)`,
    ).run(file.path, file.size, file.mtimeMs, file.ino, file.sha256, groupId, stamp, stamp, stamp);
    return this.#rows("SELECT * FROM files WHERE id = ?", lastInsertRowid)[0];
  }

  /**
   * Record the files already in the directory at the first start as `baseline` (never
   * sent by themselves), each in a group of its own, together with the first-start
   * note: one transaction, so a crash half-way leaves a first start to do again.
   */
  addBaseline(files: readonly (FileStat & { path: string })[], note: FirstStart): void {
    const stamp = this.#stamp();
    const insert = this.#db.prepare(
      `INSERT INTO files (path, size, mtime_ms, ino, sha256, status, group_id, first_seen, updated_at)
       VALUES (?, ?, ?, ?, NULL, 'baseline', ?, ?, ?)`,
    );
    this.#transaction(() => {
      for (const file of files) {
        insert.run(file.path, file.size, file.mtimeMs, file.ino, crypto.randomUUID(), stamp, stamp);
      }
      this.setMeta(FIRST_START_KEY, JSON.stringify(note));
    });
  }

  /** What the first start did, if it has happened. */
  firstStart(): FirstStart | undefined {
    const value = this.getMeta(FIRST_START_KEY);
    return value === undefined ? undefined : JSON.parse(value) as FirstStart;
  }

  /** Why the watcher last stopped by itself, if it did and has not started since. */
  stopNote(): StopNote | undefined {
    const value = this.getMeta(STOPPED_KEY);
    return value === undefined ? undefined : JSON.parse(value) as StopNote;
  }

  /** The last heartbeat a watcher wrote, if any. */
  heartbeat(): Heartbeat | undefined {
    const value = this.getMeta(HEARTBEAT_KEY);
    return value === undefined ? undefined : JSON.parse(value) as Heartbeat;
  }

  /** Since when a watcher has been failing to reach the server, if it has. */
  serverTrouble(): ServerTrouble | undefined {
    const value = this.getMeta(SERVER_TROUBLE_KEY);
    return value === undefined ? undefined : JSON.parse(value) as ServerTrouble;
  }

  /** Replace the files the watcher waits on (one transaction). */
  setWatching(files: readonly WatchingRecord[]): void {
    const insert = this.#db.prepare(
      "INSERT INTO watching (path, size, mtime_ms, seen_at, stable_at) VALUES (?, ?, ?, ?, ?)",
    );
    this.#transaction(() => {
      this.#db.exec("DELETE FROM watching");
      for (const file of files) {
        insert.run(file.path, file.size, file.mtimeMs, file.seenAt, file.stableAt);
      }
    });
  }

  /** The files the watcher waits on, by path. */
  watching(): WatchingRecord[] {
    // A v1 file opened read-only (an older watcher runs) has no such table.
    const table = this.#db.prepare(
      "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'watching'",
    ).get();
    if (!table) return [];
    return (this.#db.prepare("SELECT * FROM watching ORDER BY path").all() as Row[]).map((row) => ({
      path: String(row.path),
      size: Number(row.size),
      mtimeMs: Number(row.mtime_ms),
      seenAt: String(row.seen_at),
      stableAt: String(row.stable_at),
    }));
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

  /**
   * The server named the job (its first `request_file`; `job_queued` for a server that
   * names it only then): from now on these files are never sent as another job by
   * themselves, only reattached to this one.
   */
  markSubmitted(
    ids: readonly number[],
    jobId: string,
    runId: string,
    phase: JobPhase = "uploading",
  ): void {
    this.#each(
      ids,
      `UPDATE files SET status = 'submitted', job_id = ?, run_id = ?, phase = ?, reason = NULL,
       updated_at = ? WHERE status = 'pending' AND id = ?`,
      jobId,
      runId,
      phase,
      this.#stamp(),
    );
  }

  /**
   * The submitted job moved on (queued, running, its results arriving); a note from
   * a lost connection no longer applies. Only rows still submitted under `jobId`.
   */
  setPhase(ids: readonly number[], jobId: string, phase: JobPhase): number {
    return this.#each(
      ids,
      `UPDATE files SET phase = ?, reason = NULL, updated_at = ?
       WHERE status = 'submitted' AND job_id = ? AND id = ?`,
      phase,
      this.#stamp(),
      jobId,
    );
  }

  /** This run follows the submitted job now (it reattached to it after a restart). */
  adopt(ids: readonly number[], jobId: string, runId: string): void {
    this.#each(
      ids,
      "UPDATE files SET run_id = ? WHERE status = 'submitted' AND job_id = ? AND id = ?",
      runId,
      jobId,
    );
  }

  /** Submitted jobs, each with its rows, oldest job first. */
  submittedJobs(): { jobId: string; groupId: string; phase: JobPhase; files: FileRecord[] }[] {
    const jobs = new Map<string, FileRecord[]>();
    for (
      const row of this.#rows(
        "SELECT * FROM files WHERE status = 'submitted' AND job_id IS NOT NULL ORDER BY id",
      )
    ) {
      const files = jobs.get(row.jobId!) ?? [];
      files.push(row);
      jobs.set(row.jobId!, files);
    }
    return [...jobs].map(([jobId, files]) => ({
      jobId,
      groupId: files[0].groupId,
      // The least advanced phase of its rows (they move together; a crash between
      // two rows' commits is impossible, each change is one transaction).
      phase: JOB_PHASES.find((phase) => files.some((file) => file.phase === phase)) ??
        "queued",
      files,
    }));
  }

  /**
   * Results received. Only rows still submitted under `jobId` change (a retry wins).
   * `note` is kept as the reason column, e.g. a warning about the upload.
   */
  markDone(ids: readonly number[], jobId: string, resultDir: string, note?: string): number {
    return this.#each(
      ids,
      `UPDATE files SET status = 'done', phase = NULL, result_dir = ?, reason = ?, updated_at = ?
       WHERE status = 'submitted' AND job_id = ? AND id = ?`,
      resultDir,
      note ?? null,
      this.#stamp(),
      jobId,
    );
  }

  /** The job failed or was refused (`jobId` null: refused before the server named a job). */
  markFailed(ids: readonly number[], reason: string, jobId: string | null): number {
    return this.#each(
      ids,
      `UPDATE files SET status = 'failed', phase = NULL, reason = ?, job_id = COALESCE(?, job_id),
       updated_at = ?
       WHERE (status = 'pending' OR (status = 'submitted' AND job_id = ?)) AND id = ?`,
      reason,
      jobId,
      this.#stamp(),
      jobId,
    );
  }

  /**
   * The server does not hold the job and never queued it (it does not know the job,
   * or the upload was dropped or cancelled before it was complete): the files are to
   * be sent again, as a new job.
   */
  markPendingAgain(ids: readonly number[], jobId: string, reason: string): number {
    return this.#each(
      ids,
      `UPDATE files SET status = 'pending', job_id = NULL, run_id = NULL, phase = NULL, reason = ?,
       updated_at = ?
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

  /**
   * Make rows pending again (`--retry`); returns how many changed. `groupId`, when
   * given, becomes their group (baseline files named together go as one job).
   */
  retry(ids: readonly number[], groupId?: string): number {
    const stamp = this.#stamp();
    return this.#each(
      ids,
      `UPDATE files SET status = 'pending', job_id = NULL, run_id = NULL, phase = NULL,
       result_dir = NULL, group_id = COALESCE(?, group_id), reason = 'retry requested',
       updated_at = ?, waiting_since = ?
       WHERE status != 'pending' AND id = ?`,
      groupId ?? null,
      stamp,
      stamp,
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

  deleteMeta(key: string): void {
    this.#db.prepare("DELETE FROM meta WHERE key = ?").run(key);
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
