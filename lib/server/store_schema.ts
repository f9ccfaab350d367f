/**
 * The job store's schema (lib/server/job_store.ts) and its forward migrations, keyed by
 * `PRAGMA user_version`: version N is what {@link MIGRATIONS}[0 … N-1] build from an
 * empty file. A store at an older version is brought up to date at open, all pending
 * steps in one transaction (a crash half-way leaves the old version, intact); a store
 * at a newer version than this build knows is refused, never written.
 *
 * Layout (version 1; version 2 adds the identity tables, see {@link V2}; version 3 the
 * deliveries to DICOM destinations, see {@link V3}; version 4 the result files' times,
 * see {@link V4}):
 * - `jobs`: one row per job, every JobRecord field; times are INTEGER ms since the
 *   epoch, `options_json` and `stderr_tail_json` JSON text. `seq` (AUTOINCREMENT, never
 *   reused) is the submission order that paging and FIFO use; `priority_rank` is
 *   derived from `priority` (high 0, normal 1, low 2) for the queue index. `client`
 *   names the submitter (a client of the client file, or `default` for SHARED_KEY),
 *   `executor`/`executor_ref` say what runs the job (`local`; a Slurm job id later).
 * - `inputs` and `outputs`: one row per file of a job, by position (`idx`).
 * - Later work adds tables beside these in a new migration, as version 3 did for the
 *   deliveries; nothing of an earlier version needs to change for them.
 *
 * Indexes serve the queries the server runs often: the queue (`queued`, by rank and
 * seq), listing by state in seq order, and the sweeper's three retention queries
 * (partial indexes, so each scans only jobs that can be due).
 *
 * @module
 */
import type { DatabaseSync, SQLInputValue } from "node:sqlite";

/** One migration: the SQL that takes a store from version `index` to `index + 1`. */
export type Migration = string;

const V1 = `
CREATE TABLE jobs (
  seq               INTEGER PRIMARY KEY AUTOINCREMENT,
  id                TEXT    NOT NULL UNIQUE,
  state             TEXT    NOT NULL CHECK (state IN
                      ('receiving', 'queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired')),
  priority          TEXT    NOT NULL CHECK (priority IN ('high', 'normal', 'low')),
  priority_rank     INTEGER GENERATED ALWAYS AS
                      (CASE priority WHEN 'high' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END) VIRTUAL,
  client            TEXT    NOT NULL,
  peer              TEXT    NOT NULL,
  key_id            TEXT    NOT NULL,
  options_json      TEXT    NOT NULL,
  submitted_at      INTEGER NOT NULL,
  queued_at         INTEGER,
  started_at        INTEGER,
  finished_at       INTEGER,
  delivered_at      INTEGER,
  upload_expires_at INTEGER,
  results_expire_at INTEGER,
  inputs_expire_at  INTEGER,
  expired_at        INTEGER,
  attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  exit_code         INTEGER,
  reason            TEXT,
  stderr_tail_json  TEXT    NOT NULL DEFAULT '[]',
  cancelled_by      TEXT,
  rerun_of          TEXT,
  input_dir         TEXT    NOT NULL,
  output_dir        TEXT    NOT NULL,
  log_path          TEXT    NOT NULL,
  file_count        INTEGER NOT NULL,
  input_bytes       INTEGER NOT NULL,
  primary_file      TEXT    NOT NULL,
  result_count      INTEGER,
  result_bytes      INTEGER,
  skipped           INTEGER,
  inputs_removed    INTEGER NOT NULL DEFAULT 0 CHECK (inputs_removed IN (0, 1)),
  results_removed   INTEGER NOT NULL DEFAULT 0 CHECK (results_removed IN (0, 1)),
  executor          TEXT    NOT NULL DEFAULT 'local',
  executor_ref      TEXT
);
CREATE TABLE inputs (
  job_id        TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  idx           INTEGER NOT NULL CHECK (idx >= 0),
  name          TEXT    NOT NULL,
  size          INTEGER NOT NULL CHECK (size >= 0),
  original_path TEXT,
  sha256        TEXT,
  PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
CREATE TABLE outputs (
  job_id  TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  idx     INTEGER NOT NULL CHECK (idx >= 0),
  name    TEXT    NOT NULL,
  size    INTEGER NOT NULL CHECK (size >= 0),
  sha256  TEXT    NOT NULL,
  dev     INTEGER,
  ino     INTEGER,
  PRIMARY KEY (job_id, idx)
) WITHOUT ROWID;
CREATE INDEX jobs_by_state ON jobs (state, seq);
CREATE INDEX jobs_queue ON jobs (state, priority_rank, seq);
CREATE INDEX jobs_uploads_due ON jobs (state, upload_expires_at);
CREATE INDEX jobs_inputs_due ON jobs (state, inputs_removed, inputs_expire_at);
CREATE INDEX jobs_results_due ON jobs (state, results_removed, results_expire_at);
`;

/**
 * Version 2 (identities, issue 14): every job recorded before it came through
 * SHARED_KEY, the client now named `default`; `client_seen` (when and from where each
 * client last completed a handshake), `client_snapshot` (the client keys the server
 * last knew, to audit what changed in the client file while it was down) and
 * `audit_head` (the audit log's last line: its file, seq and SHA-256, so that a cut or
 * edited tail is detected).
 */
const V2 = `
UPDATE jobs SET client = 'default';
CREATE INDEX jobs_by_client ON jobs (client, seq);
CREATE TABLE client_seen (
  client  TEXT    PRIMARY KEY,
  key_id  TEXT    NOT NULL,
  address TEXT    NOT NULL,
  seen_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE client_snapshot (
  key_id  TEXT PRIMARY KEY,
  client  TEXT NOT NULL,
  flags   TEXT NOT NULL,
  expires TEXT
) WITHOUT ROWID;
CREATE TABLE audit_head (
  id   INTEGER PRIMARY KEY CHECK (id = 1),
  file TEXT    NOT NULL,
  seq  INTEGER NOT NULL CHECK (seq >= 0),
  hash TEXT    NOT NULL
);
`;

/**
 * Version 3 (DICOM destinations, issue 17): `jobs.deliver_to`, the destination names a
 * job's results go to once it succeeds (JSON array, upper case; `[]` for every older
 * job); `deliveries`, one row per job and destination (lib/server/delivery_store.ts:
 * pending → sending → delivered | failed, with its retries), and `delivery_files`, one
 * row per result file of it (pending, sent, skipped as not DICOM, or failed; the
 * C-STORE requests made for it). The due index serves the deliverer's loop.
 */
const V3 = `
ALTER TABLE jobs ADD COLUMN deliver_to TEXT NOT NULL DEFAULT '[]';
CREATE TABLE deliveries (
  job_id          TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  destination     TEXT    NOT NULL,
  state           TEXT    NOT NULL CHECK (state IN ('pending', 'sending', 'delivered', 'failed')),
  attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  next_attempt_at INTEGER,
  give_up_at      INTEGER NOT NULL,
  last_error      TEXT,
  requested_at    INTEGER NOT NULL,
  finished_at     INTEGER,
  instances_total INTEGER,
  PRIMARY KEY (job_id, destination)
) WITHOUT ROWID;
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
CREATE TABLE delivery_files (
  job_id           TEXT    NOT NULL,
  destination      TEXT    NOT NULL,
  output_idx       INTEGER NOT NULL CHECK (output_idx >= 0),
  state            TEXT    NOT NULL CHECK (state IN ('pending', 'sent', 'skipped', 'failed')),
  sop_instance_uid TEXT,
  status           INTEGER,
  stores           INTEGER NOT NULL DEFAULT 0 CHECK (stores >= 0),
  reason           TEXT,
  PRIMARY KEY (job_id, destination, output_idx),
  FOREIGN KEY (job_id, destination) REFERENCES deliveries (job_id, destination) ON DELETE CASCADE
) WITHOUT ROWID;
`;

/**
 * Version 4 (one SHA-256 per file, issue 18): `outputs.mtime_ms` and `outputs.ctime_ms`,
 * each result file's modification and status-change times (ms since the epoch) when
 * its SHA-256 was taken at job end. A delivery that finds them (with size, dev and ino)
 * unchanged sends the recorded SHA-256 instead of hashing the file again; NULL (every
 * older result) means it hashes.
 */
const V4 = `
ALTER TABLE outputs ADD COLUMN mtime_ms INTEGER;
ALTER TABLE outputs ADD COLUMN ctime_ms INTEGER;
`;

/** Every migration this build knows, oldest first. */
export const MIGRATIONS: readonly Migration[] = [V1, V2, V3, V4];

/** The schema version this build writes: the number of migrations it knows. */
export const STORE_SCHEMA_VERSION = MIGRATIONS.length;

type Row = Record<string, SQLInputValue>;

/** `PRAGMA user_version` of `db` (throws SQLite's error on a file that is no database). */
export function schemaVersionOf(db: DatabaseSync): number {
  return Number((db.prepare("PRAGMA user_version").get() as Row).user_version);
}

/**
 * Bring `db` from its version up to `migrations.length`, every pending step in one
 * `BEGIN IMMEDIATE` transaction together with the new `user_version`; returns the
 * version it started from. A failing step rolls every step back and rethrows.
 * The caller refuses a newer version before calling this.
 */
export function migrate(db: DatabaseSync, migrations: readonly Migration[] = MIGRATIONS): number {
  const from = schemaVersionOf(db);
  if (from >= migrations.length) return from;
  db.exec("BEGIN IMMEDIATE");
  try {
    for (let version = from; version < migrations.length; version++) db.exec(migrations[version]);
    db.exec(`PRAGMA user_version = ${migrations.length}`);
    db.exec("COMMIT");
  } catch (error) {
    db.exec("ROLLBACK");
    throw error;
  }
  return from;
}
