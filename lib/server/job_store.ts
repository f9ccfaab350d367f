/**
 * The job store (docs/DESIGN.md "Where jobs live"; issue 13): every job the server
 * holds, in one SQLite database `<RECON_STATE_DIR>/jobs.sqlite` (`node:sqlite`), with
 * its inputs, outputs, times and outcome. A job lives here, not in a connection or a
 * process: each state change is one transaction, committed before the method returns,
 * so the caller acts on it only once it survives a crash or a power cut
 * (`journal_mode=WAL`, `synchronous=FULL`).
 *
 * States (the `state` column; docs/PROTOCOL.md §6.6):
 *
 *     receiving → queued → running → succeeded | failed | cancelled;  succeeded → expired
 *
 * `running → queued` only at a restart or shutdown ({@link JobStore.requeue}); failed
 * and cancelled come from any state before a final one. `expired` is only for a
 * succeeded job whose results the sweeper removed: a failed job whose kept inputs
 * expired stays `failed` with `inputsRemoved` set (it never had results to expire).
 * `inputsRemoved`/`resultsRemoved` say what is no longer on disk; they are set after
 * the files are gone, so a crash between the state change and the removal leaves the
 * removal to be done again (the sweeper finds it again in {@link JobStore.due}).
 *
 * The file itself (RECON_STATE_DIR, the lock that keeps a second server out, the
 * checks at open, migrations, backups) is lib/server/store_file.ts; the schema is
 * lib/server/store_schema.ts.
 *
 * Cost, measured on the development machine (2 cores, ext4 on a virtio disk, Deno
 * 2.9.6, SQLite 3.53.2, three runs of a script beside other work; medians of 200):
 * one transition commit (the statements of `markRunning` in `BEGIN IMMEDIATE …
 * COMMIT`) 0.27–0.31 ms with `synchronous=FULL`, 0.08 ms with NORMAL: FULL's extra
 * fsync of the WAL at each commit costs about 0.2 ms, nothing next to a job, and
 * keeps a committed state through a power cut, which NORMAL does not. `list()` of
 * 1,000 queued jobs 6.6–9.2 ms (`queued()` the same; reading the rows is about half
 * of it); `counts()` + `keptBytes()` + `due()` with 1,000 jobs 0.7 ms; `backup()` of
 * 1,000 jobs (0.9 MB) 12 ms.
 *
 * @module
 */
import type { DatabaseSync, SQLInputValue, StatementSync } from "node:sqlite";
import { StoreError } from "../errors.ts";
import {
  JOB_STATES,
  type JobInfo,
  type JobState,
  PRIORITIES,
  type Priority,
  type ReconOptions,
} from "../wire/protocol.ts";
import { copyDatabase, openStoreFile, releaseLock } from "./store_file.ts";
import { type AuditHead, auditHeadIn, setAuditHeadIn } from "./audit_head.ts";
import { ClientRecords } from "./client_activity.ts";
import { DeliveryStore } from "./delivery_store.ts";
import { schemaVersionOf } from "./store_schema.ts";

export { backupJobStore, type BackupReport, LOCK_FILE, STORE_FILE } from "./store_file.ts";
export { type AuditHead, readAuditHead } from "./audit_head.ts";

/** A job as {@link JobStore.createReceiving} records it. */
export interface NewJob {
  id: string;
  priority: Priority;
  /** Who submitted it: the key id until per-client identities exist (issue 14). */
  client: string;
  /** The peer's address, `host:port`. */
  peer: string;
  keyId: string;
  options: ReconOptions;
  inputDir: string;
  outputDir: string;
  logPath: string;
  files: { name: string; size: number; originalPath?: string }[];
  /** Until when a cut-off upload may be resumed (ms since the epoch). */
  uploadExpiresAt: number;
  rerunOf?: string;
  /**
   * The DICOM destinations its results go to once it succeeds (names of recon.opts'
   * `DESTINATION_<NAME>` lines, upper case, each once); default none.
   */
  deliverTo?: string[];
}

/** A job as recorded. Times are ms since the epoch; absent ones are undefined. */
export interface JobRecord {
  /** Submission order (never reused). */
  seq: number;
  id: string;
  state: JobState;
  priority: Priority;
  client: string;
  peer: string;
  keyId: string;
  options: ReconOptions;
  submittedAt: number;
  queuedAt?: number;
  startedAt?: number;
  finishedAt?: number;
  /** The first time the submitting client confirmed every result. */
  deliveredAt?: number;
  uploadExpiresAt?: number;
  resultsExpireAt?: number;
  inputsExpireAt?: number;
  expiredAt?: number;
  /** Runs started (a clean shutdown gives its attempt back). */
  attempts: number;
  exitCode?: number;
  reason?: string;
  stderrTail: string[];
  cancelledBy?: string;
  rerunOf?: string;
  inputDir: string;
  outputDir: string;
  logPath: string;
  fileCount: number;
  inputBytes: number;
  primaryFile: string;
  resultCount?: number;
  resultBytes?: number;
  skipped?: number;
  /** The inputs are no longer on disk. */
  inputsRemoved: boolean;
  /** The results are no longer on disk. */
  resultsRemoved: boolean;
  /** What runs the job: `local` (a process group here); `slurm` later (issue 15). */
  executor: string;
  executorRef?: string;
  /** The DICOM destinations its results go to once it succeeds (lib/server/pacs_delivery.ts). */
  deliverTo: string[];
}

/**
 * A committed change of a job, as {@link JobStore.onChange} reports it: `state` (a new
 * job has `from` undefined), `inputs_removed`, `results_removed`, or `delivered` (each
 * confirmed delivery; `job.deliveredAt` keeps the first).
 */
export interface StoreChange {
  job: JobRecord;
  from: JobState | undefined;
  what: "state" | "inputs_removed" | "results_removed" | "delivered";
}

/** One input file of a job. */
export interface InputRecord {
  index: number;
  name: string;
  size: number;
  originalPath?: string;
  /** Hex SHA-256, set once the whole file is verified. */
  sha256?: string;
}

/** One result file of a succeeded job. */
export interface OutputRecord {
  index: number;
  name: string;
  size: number;
  sha256: string;
  dev?: number;
  ino?: number;
  /**
   * The file's modification and status-change times (ms) when its SHA-256 was taken:
   * while they, size, dev and ino are unchanged, a delivery sends that SHA-256 without
   * hashing the file again. Absent for results recorded before schema version 4.
   */
  mtimeMs?: number;
  ctimeMs?: number;
}

/** What {@link JobStore.markSucceeded} records. */
export interface SuccessRecord {
  exitCode: number;
  stderrTail: string[];
  outputs: Omit<OutputRecord, "index">[];
  skipped: number;
  resultsExpireAt: number;
}

/** What {@link JobStore.markFailed} records. */
export interface FailureRecord {
  reason: string;
  exitCode: number | null;
  stderrTail: string[];
  /** Until when the inputs are kept for a rerun; absent: they are removed now. */
  inputsExpireAt?: number;
}

/** The jobs whose retention ran out ({@link JobStore.due}). */
export interface DueJobs {
  /** Receiving jobs whose upload window ran out: they fail, partial inputs removed. */
  uploads: JobRecord[];
  /** Failed jobs whose kept inputs expired. */
  failedInputs: JobRecord[];
  /** Succeeded jobs whose results expired, and expired ones whose results are still on disk. */
  results: JobRecord[];
}

/** Options of {@link JobStore.open}. */
export interface JobStoreOptions {
  /** The clock for recorded times (ms since the epoch); default `Date.now`. */
  now?: () => number;
}

type Row = Record<string, SQLInputValue>;

/** A destination name as the job store keeps it (lib/opts/destination.ts, upper case). */
const DESTINATION_NAME = /^[A-Z0-9]+$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const NOT_FINAL: readonly JobState[] = ["receiving", "queued", "running"];
const AFTER_FINAL: readonly JobState[] = ["succeeded", "failed", "cancelled", "expired"];

function optional<T>(value: SQLInputValue, convert: (value: SQLInputValue) => T): T | undefined {
  return value === null || value === undefined ? undefined : convert(value);
}

/** A copy without the undefined properties, so records compare and print without them. */
function defined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}

/** Nullable columns and the JobRecord fields they fill when set. */
const OPTIONAL_NUMBERS = [
  ["queued_at", "queuedAt"],
  ["started_at", "startedAt"],
  ["finished_at", "finishedAt"],
  ["delivered_at", "deliveredAt"],
  ["upload_expires_at", "uploadExpiresAt"],
  ["results_expire_at", "resultsExpireAt"],
  ["inputs_expire_at", "inputsExpireAt"],
  ["expired_at", "expiredAt"],
  ["exit_code", "exitCode"],
  ["result_count", "resultCount"],
  ["result_bytes", "resultBytes"],
  ["skipped", "skipped"],
] as const;
const OPTIONAL_STRINGS = [
  ["reason", "reason"],
  ["cancelled_by", "cancelledBy"],
  ["rerun_of", "rerunOf"],
  ["executor_ref", "executorRef"],
] as const;

function toRecord(row: Row): JobRecord {
  const job: JobRecord = {
    seq: Number(row.seq),
    id: String(row.id),
    state: row.state as JobState,
    priority: row.priority as Priority,
    client: String(row.client),
    peer: String(row.peer),
    keyId: String(row.key_id),
    options: JSON.parse(String(row.options_json)) as ReconOptions,
    submittedAt: Number(row.submitted_at),
    attempts: Number(row.attempts),
    stderrTail: JSON.parse(String(row.stderr_tail_json)) as string[],
    inputDir: String(row.input_dir),
    outputDir: String(row.output_dir),
    logPath: String(row.log_path),
    fileCount: Number(row.file_count),
    inputBytes: Number(row.input_bytes),
    primaryFile: String(row.primary_file),
    inputsRemoved: Number(row.inputs_removed) === 1,
    resultsRemoved: Number(row.results_removed) === 1,
    executor: String(row.executor),
    deliverTo: JSON.parse(String(row.deliver_to)) as string[],
  };
  // Absent times and outcomes stay absent (not undefined-valued) properties.
  for (const [column, field] of OPTIONAL_NUMBERS) {
    if (row[column] !== null) job[field] = Number(row[column]);
  }
  for (const [column, field] of OPTIONAL_STRINGS) {
    if (row[column] !== null) job[field] = String(row[column]);
  }
  return job;
}

function iso(ms: number | undefined): string | undefined {
  return ms === undefined ? undefined : new Date(ms).toISOString();
}

/**
 * A job as the protocol describes it (`JobInfo` in `job_status` and `job_list`):
 * times as ISO-8601 UTC strings, absent fields omitted.
 */
export function toJobInfo(job: JobRecord, queuePosition?: number, percent?: number): JobInfo {
  return defined<JobInfo>({
    job_id: job.id,
    state: job.state,
    priority: job.priority,
    queue_position: queuePosition,
    submitted_at: new Date(job.submittedAt).toISOString(),
    started_at: iso(job.startedAt),
    finished_at: iso(job.finishedAt),
    file_count: job.fileCount,
    input_bytes: job.inputBytes,
    primary_file: job.primaryFile,
    attempts: job.attempts,
    exit_code: job.exitCode,
    reason: job.reason,
    cancelled_by: job.cancelledBy,
    result_count: job.resultCount,
    result_bytes: job.resultBytes,
    delivered_at: iso(job.deliveredAt),
    results_expire_at: iso(job.resultsExpireAt),
    inputs_expire_at: iso(job.inputsExpireAt),
    rerun_of: job.rerunOf,
    percent,
    client: job.client,
    // Absent for the local executor, the common case.
    executor: job.executor === "local" ? undefined : job.executor,
    executor_ref: job.executorRef,
  });
}

function checkSize(what: string, size: number): void {
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new TypeError(`${what} must be a whole number of bytes, got ${size}`);
  }
}

function checkSha256(sha256: string): void {
  if (!SHA256_HEX.test(sha256)) {
    throw new TypeError(`a SHA-256 must be 64 lowercase hex digits, got "${sha256}"`);
  }
}

/**
 * The job store of one server. Every method is synchronous and commits before it
 * returns (but {@link backup}); a transition not allowed from the job's state
 * throws {@link StoreError} and changes nothing.
 */
export class JobStore {
  /** The database file. */
  readonly path: string;
  #db: DatabaseSync;
  #lock: Deno.FsFile;
  #now: () => number;
  #statements = new Map<string, StatementSync>();
  #listeners = new Set<(change: StoreChange) => void>();
  /** The client tables: last seen, the known client keys (lib/server/client_activity.ts). */
  readonly clients: ClientRecords;
  /** The deliveries to DICOM destinations and their files (lib/server/delivery_store.ts). */
  readonly deliveries: DeliveryStore;

  private constructor(file: string, db: DatabaseSync, lock: Deno.FsFile, now: () => number) {
    this.path = file;
    this.#db = db;
    this.#lock = lock;
    this.#now = now;
    this.clients = new ClientRecords(db);
    this.deliveries = new DeliveryStore(db, now);
  }

  /** `client` completed a handshake with `keyId` from `address` (now). */
  clientSeen(client: string, keyId: string, address: string): void {
    this.clients.seen(client, keyId, address, this.#now());
  }

  /** Where the audit log ends, as last recorded (lib/server/audit_head.ts). */
  auditHead(): AuditHead | undefined {
    return auditHeadIn(this.#db);
  }

  /** Record where the audit log ends now. */
  setAuditHead(head: AuditHead): void {
    setAuditHeadIn(this.#db, head);
  }

  /**
   * Open (creating it when missing) the job store in `stateDir`, and hold it until
   * {@link close}: a second opener, in this process or another, is refused.
   * @throws {StoreError} (exit 2) naming the file and why it cannot be used.
   */
  static open(stateDir: string, options: JobStoreOptions = {}): JobStore {
    const { file, db, lock } = openStoreFile(stateDir);
    return new JobStore(file, db, lock, options.now ?? Date.now);
  }

  /** Close the database and release the lock. */
  close(): void {
    this.#statements.clear();
    try {
      this.#db.close();
    } finally {
      releaseLock(this.#lock);
    }
  }

  /** The schema version of the open store (this build's). */
  schemaVersion(): number {
    return schemaVersionOf(this.#db);
  }

  #sql(sql: string): StatementSync {
    let statement = this.#statements.get(sql);
    if (!statement) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  #rows(sql: string, ...params: SQLInputValue[]): JobRecord[] {
    return (this.#sql(sql).all(...params) as Row[]).map(toRecord);
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

  #require(id: string): JobRecord {
    const job = this.get(id);
    if (!job) throw new StoreError(`there is no job ${id} in the job store`);
    return job;
  }

  /**
   * One transition of job `id`: refused unless its state is one of `from`
   * (`job X is succeeded; it cannot start`); `apply` makes the change in the same
   * transaction. Returns the record as committed.
   */
  #transition(
    id: string,
    from: readonly JobState[],
    refusal: string,
    apply: (job: JobRecord, now: number) => void,
    what: StoreChange["what"] = "state",
  ): JobRecord {
    let before: JobState | undefined;
    const job = this.#transaction(() => {
      const job = this.#require(id);
      if (!from.includes(job.state)) throw new StoreError(`job ${id} is ${job.state}; ${refusal}`);
      before = job.state;
      apply(job, this.#now());
      return this.#require(id);
    });
    if (what !== "state" || before !== job.state) this.#announce({ job, from: before, what });
    return job;
  }

  /**
   * Call `listener` after each committed change of a job: a new job (`from`
   * undefined), a state change, its inputs or results removed, its first delivery.
   * Returns the function that stops it. A listener's error is not the store's: it is
   * reported on stderr and the change stands.
   */
  onChange(listener: (change: StoreChange) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #announce(change: StoreChange): void {
    for (const listener of this.#listeners) {
      try {
        listener(change);
      } catch (error) {
        console.error(`job store listener failed: ${(error as Error)?.message ?? error}`);
      }
    }
  }

  /** Record a new job whose upload begins (state receiving), with its announced inputs. */
  createReceiving(job: NewJob): JobRecord {
    if (typeof job.id !== "string" || job.id === "") throw new TypeError("a job needs an id");
    if (!PRIORITIES.includes(job.priority)) {
      throw new TypeError(`unknown priority "${job.priority}"`);
    }
    if (job.files.length === 0) throw new TypeError(`job ${job.id} has no input files`);
    for (const file of job.files) checkSize(`the size of ${file.name}`, file.size);
    const deliverTo = job.deliverTo ?? [];
    for (const name of deliverTo) {
      if (typeof name !== "string" || !DESTINATION_NAME.test(name)) {
        throw new TypeError(
          `a destination name is letters and digits in upper case, got "${name}"`,
        );
      }
    }
    if (new Set(deliverTo).size !== deliverTo.length) {
      throw new TypeError(`job ${job.id} names a destination twice: ${deliverTo.join(", ")}`);
    }
    const inputBytes = job.files.reduce((sum, file) => sum + file.size, 0);
    const created = this.#transaction(() => {
      if (this.get(job.id)) throw new StoreError(`job ${job.id} is already in the job store`);
      this.#sql(
        `INSERT INTO jobs (id, state, priority, client, peer, key_id, options_json, submitted_at,
           upload_expires_at, rerun_of, input_dir, output_dir, log_path, file_count, input_bytes,
           primary_file, deliver_to)
         VALUES (?, 'receiving', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      ).run(
        job.id,
        job.priority,
        job.client,
        job.peer,
        job.keyId,
        JSON.stringify(job.options),
        this.#now(),
        job.uploadExpiresAt,
        job.rerunOf ?? null,
        job.inputDir,
        job.outputDir,
        job.logPath,
        job.files.length,
        inputBytes,
        job.files[0].name,
        JSON.stringify(deliverTo),
      );
      const insert = this.#sql(
        "INSERT INTO inputs (job_id, idx, name, size, original_path) VALUES (?, ?, ?, ?, ?)",
      );
      job.files.forEach((file, index) =>
        insert.run(job.id, index, file.name, file.size, file.originalPath ?? null)
      );
      return this.#require(job.id);
    });
    this.#announce({ job: created, from: undefined, what: "state" });
    return created;
  }

  /** Input `index` of a receiving job arrived whole and matched `sha256`. */
  inputVerified(id: string, index: number, sha256: string): void {
    checkSha256(sha256);
    this.#transition(id, ["receiving"], "its inputs cannot change", () => {
      const { changes } = this.#sql("UPDATE inputs SET sha256 = ? WHERE job_id = ? AND idx = ?")
        .run(sha256, id, index);
      if (Number(changes) !== 1) throw new StoreError(`job ${id} has no input number ${index}`);
    });
  }

  /** receiving → queued, once every input is verified. */
  markQueued(id: string): JobRecord {
    return this.#transition(id, ["receiving"], "it cannot be queued", (_job, now) => {
      const { n } = this.#sql(
        "SELECT COUNT(*) AS n FROM inputs WHERE job_id = ? AND sha256 IS NULL",
      ).get(id) as Row;
      if (Number(n) > 0) {
        throw new StoreError(`job ${id} has ${n} input(s) not verified yet; it cannot be queued`);
      }
      this.#sql("UPDATE jobs SET state = 'queued', queued_at = ? WHERE id = ?").run(now, id);
    });
  }

  /** queued → running; one more attempt. */
  markRunning(id: string): JobRecord {
    return this.#transition(id, ["queued"], "it cannot start", (_job, now) => {
      this.#sql(
        "UPDATE jobs SET state = 'running', started_at = ?, attempts = attempts + 1 WHERE id = ?",
      ).run(now, id);
    });
  }

  /**
   * running → queued, back in its place (submission order), at a restart or a
   * shutdown; `refundAttempt` gives the attempt back (a clean shutdown stopped it).
   */
  requeue(id: string, options: { refundAttempt: boolean }): JobRecord {
    return this.#transition(id, ["running"], "it cannot go back to the queue", () => {
      this.#sql(
        `UPDATE jobs SET state = 'queued', started_at = NULL,
           attempts = MAX(0, attempts - ?) WHERE id = ?`,
      ).run(options.refundAttempt ? 1 : 0, id);
    });
  }

  /** running → succeeded, with the result files in the order they are sent. */
  markSucceeded(id: string, r: SuccessRecord): JobRecord {
    for (const output of r.outputs) {
      checkSize(`the size of ${output.name}`, output.size);
      checkSha256(output.sha256);
    }
    const resultBytes = r.outputs.reduce((sum, output) => sum + output.size, 0);
    return this.#transition(id, ["running"], "it cannot succeed", (_job, now) => {
      this.#sql(
        `UPDATE jobs SET state = 'succeeded', finished_at = ?, exit_code = ?, reason = NULL,
           stderr_tail_json = ?, result_count = ?, result_bytes = ?, skipped = ?,
           results_expire_at = ? WHERE id = ?`,
      ).run(
        now,
        r.exitCode,
        JSON.stringify(r.stderrTail),
        r.outputs.length,
        resultBytes,
        r.skipped,
        r.resultsExpireAt,
        id,
      );
      this.#sql("DELETE FROM outputs WHERE job_id = ?").run(id);
      const insert = this.#sql(
        `INSERT INTO outputs (job_id, idx, name, size, sha256, dev, ino, mtime_ms, ctime_ms)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      );
      r.outputs.forEach((output, index) =>
        insert.run(
          id,
          index,
          output.name,
          output.size,
          output.sha256,
          output.dev ?? null,
          output.ino ?? null,
          output.mtimeMs ?? null,
          output.ctimeMs ?? null,
        )
      );
    });
  }

  /** receiving, queued or running → failed. */
  markFailed(id: string, r: FailureRecord): JobRecord {
    return this.#transition(id, NOT_FINAL, "it cannot fail", (_job, now) => {
      this.#sql(
        `UPDATE jobs SET state = 'failed', finished_at = ?, reason = ?, exit_code = ?,
           stderr_tail_json = ?, inputs_expire_at = ? WHERE id = ?`,
      ).run(
        now,
        r.reason,
        r.exitCode,
        JSON.stringify(r.stderrTail),
        r.inputsExpireAt ?? null,
        id,
      );
    });
  }

  /**
   * receiving, queued or running → cancelled, recording why and by whom, and for a
   * running job how its stopped script ended (exit code, stderr tail).
   */
  markCancelled(
    id: string,
    r: { reason: string; by: string; exitCode?: number | null; stderrTail?: string[] },
  ): JobRecord {
    return this.#transition(id, NOT_FINAL, "it cannot be cancelled", (_job, now) => {
      this.#sql(
        `UPDATE jobs SET state = 'cancelled', finished_at = ?, reason = ?, cancelled_by = ?,
           exit_code = COALESCE(?, exit_code), stderr_tail_json = COALESCE(?, stderr_tail_json)
         WHERE id = ?`,
      ).run(
        now,
        r.reason,
        r.by,
        r.exitCode ?? null,
        r.stderrTail === undefined ? null : JSON.stringify(r.stderrTail),
        id,
      );
    });
  }

  /**
   * Apply the retentions of this start to the jobs already finished: a succeeded job's
   * results expire `resultsMs` after it finished, a failed job's kept inputs
   * `failedInputsMs` after, whatever the retentions were when it finished (an admin who
   * lowers RESULT_RETENTION to free the disk gets the space back now, not a week later).
   * One transaction; returns how many jobs got a new time.
   */
  applyRetention(r: { resultsMs: number; failedInputsMs: number }): number {
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      const results = this.#sql(
        `UPDATE jobs SET results_expire_at = finished_at + ?
         WHERE state = 'succeeded' AND results_removed = 0 AND finished_at IS NOT NULL
           AND results_expire_at IS NOT finished_at + ?`,
      ).run(r.resultsMs, r.resultsMs);
      const inputs = this.#sql(
        `UPDATE jobs SET inputs_expire_at = finished_at + ?
         WHERE state = 'failed' AND inputs_removed = 0 AND finished_at IS NOT NULL
           AND inputs_expire_at IS NOT finished_at + ?`,
      ).run(r.failedInputsMs, r.failedInputsMs);
      this.#db.exec("COMMIT");
      return Number(results.changes) + Number(inputs.changes);
    } catch (error) {
      this.#db.exec("ROLLBACK");
      throw error;
    }
  }

  /** The submitting client confirmed every result: sets `deliveredAt` the first time only. */
  markDelivered(id: string): JobRecord {
    return this.#transition(id, ["succeeded"], "it has no results to deliver", (_job, now) => {
      this.#sql("UPDATE jobs SET delivered_at = COALESCE(delivered_at, ?) WHERE id = ?").run(
        now,
        id,
      );
    }, "delivered");
  }

  /**
   * succeeded → expired: its results are due for removal and no longer fetched. Set
   * {@link setResultsRemoved} once they are gone.
   */
  markExpired(id: string): JobRecord {
    return this.#transition(id, ["succeeded"], "it cannot expire", (_job, now) => {
      this.#sql("UPDATE jobs SET state = 'expired', expired_at = ? WHERE id = ?").run(now, id);
    });
  }

  /** The job's inputs are gone from disk (only once it is final). */
  setInputsRemoved(id: string): void {
    this.#transition(id, AFTER_FINAL, "its inputs are still needed", () => {
      this.#sql("UPDATE jobs SET inputs_removed = 1 WHERE id = ?").run(id);
    }, "inputs_removed");
  }

  /** The job's results (or partial output) are gone from disk (only once it is final). */
  setResultsRemoved(id: string): void {
    this.#transition(id, AFTER_FINAL, "its output is still needed", () => {
      this.#sql("UPDATE jobs SET results_removed = 1 WHERE id = ?").run(id);
    }, "results_removed");
  }

  /**
   * A rerun: the kept inputs of failed job `fromId` become those of receiving job
   * `toId` (names, sizes, SHA-256, so it can be queued at once); `fromId` then has
   * none. The caller moves the files.
   */
  takeInputs(fromId: string, toId: string): void {
    if (fromId === toId) throw new TypeError(`job ${fromId} cannot take its own inputs`);
    this.#transaction(() => {
      const from = this.#require(fromId);
      const to = this.#require(toId);
      if (from.state !== "failed") {
        throw new StoreError(`job ${fromId} is ${from.state}; only a failed job can be rerun`);
      }
      if (from.inputsRemoved) {
        throw new StoreError(`job ${fromId} no longer has its inputs; it cannot be rerun`);
      }
      if (to.state !== "receiving") {
        throw new StoreError(`job ${toId} is ${to.state}; it cannot take other inputs`);
      }
      this.#sql("DELETE FROM inputs WHERE job_id = ?").run(toId);
      this.#sql(
        `INSERT INTO inputs (job_id, idx, name, size, original_path, sha256)
         SELECT ?, idx, name, size, original_path, sha256 FROM inputs WHERE job_id = ?`,
      ).run(toId, fromId);
      this.#sql(
        "UPDATE jobs SET file_count = ?, input_bytes = ?, primary_file = ? WHERE id = ?",
      ).run(from.fileCount, from.inputBytes, from.primaryFile, toId);
      this.#sql("UPDATE jobs SET inputs_removed = 1 WHERE id = ?").run(fromId);
    });
  }

  /**
   * What the executor calls the running job (a Slurm job id), and which executor it is
   * (`local`, `slurm`; unchanged when not given). Committed before the executor follows
   * it, so that a restart finds it (lib/server/recovery.ts).
   */
  setExecutorRef(id: string, ref: string, executor?: string): void {
    this.#transition(id, ["running"], "it has no executor", () => {
      this.#sql("UPDATE jobs SET executor_ref = ?, executor = COALESCE(?, executor) WHERE id = ?")
        .run(ref, executor ?? null, id);
    });
  }

  /** The job `id`, if the store has it. */
  get(id: string): JobRecord | undefined {
    return this.#rows("SELECT * FROM jobs WHERE id = ?", id)[0];
  }

  /** The latest re-run of job `id` (the job its inputs moved to), if any. */
  rerunOf(id: string): JobRecord | undefined {
    return this.#rows("SELECT * FROM jobs WHERE rerun_of = ? ORDER BY seq DESC LIMIT 1", id)[0];
  }

  /** The job's input files, in announcement order. */
  inputs(id: string): InputRecord[] {
    return (this.#sql("SELECT * FROM inputs WHERE job_id = ? ORDER BY idx").all(id) as Row[])
      .map((row) =>
        defined<InputRecord>({
          index: Number(row.idx),
          name: String(row.name),
          size: Number(row.size),
          originalPath: optional(row.original_path, String),
          sha256: optional(row.sha256, String),
        })
      );
  }

  /** The job's result files, in the order they are sent. */
  outputs(id: string): OutputRecord[] {
    return (this.#sql("SELECT * FROM outputs WHERE job_id = ? ORDER BY idx").all(id) as Row[])
      .map((row) =>
        defined<OutputRecord>({
          index: Number(row.idx),
          name: String(row.name),
          size: Number(row.size),
          sha256: String(row.sha256),
          dev: optional(row.dev, Number),
          ino: optional(row.ino, Number),
          mtimeMs: optional(row.mtime_ms, Number),
          ctimeMs: optional(row.ctime_ms, Number),
        })
      );
  }

  /** The queue: queued jobs, high before normal before low, each level in submission order. */
  queued(): JobRecord[] {
    return this.#rows("SELECT * FROM jobs WHERE state = 'queued' ORDER BY priority_rank, seq");
  }

  /** The jobs in `state`, in submission order. */
  inState(state: JobState): JobRecord[] {
    return this.#rows("SELECT * FROM jobs WHERE state = ? ORDER BY seq", state);
  }

  /**
   * A page of jobs in submission order: at most `limit`, after `afterSeq`, in `state`,
   * of `client` (each when given).
   */
  list(q: { state?: JobState; afterSeq?: number; limit: number; client?: string }): JobRecord[] {
    if (!Number.isSafeInteger(q.limit) || q.limit < 1) {
      throw new TypeError(`limit must be a positive whole number, got ${q.limit}`);
    }
    const where = ["seq > ?"];
    const params: SQLInputValue[] = [q.afterSeq ?? 0];
    if (q.state !== undefined) {
      where.push("state = ?");
      params.push(q.state);
    }
    if (q.client !== undefined) {
      where.push("client = ?");
      params.push(q.client);
    }
    return this.#rows(
      `SELECT * FROM jobs WHERE ${where.join(" AND ")} ORDER BY seq LIMIT ?`,
      ...params,
      q.limit,
    );
  }

  /**
   * The jobs that finished at or after `sinceMs` (succeeded, failed, cancelled, and
   * expired ones, which keep their finish time), newest first, at most `limit`: the
   * status page's recent jobs and its 24-hour chart (lib/monitor/status_view.ts).
   * No index covers `finished_at`, so this scans the table: with 10,000 jobs in the
   * store, 3.7 ms for the newest 50 and 1.2 ms when none is that recent (development
   * machine, medians of 30); each job returned costs about 0.01 ms more (its record).
   */
  finishedSince(sinceMs: number, limit: number): JobRecord[] {
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new TypeError(`limit must be a positive whole number, got ${limit}`);
    }
    // Sorting only (finished_at, seq) and reading whole rows for the few kept is 5×
    // faster than sorting whole rows.
    return this.#rows(
      `SELECT jobs.* FROM (
         SELECT seq, finished_at FROM jobs WHERE finished_at IS NOT NULL AND finished_at >= ?
         ORDER BY finished_at DESC, seq DESC LIMIT ?
       ) AS recent JOIN jobs USING (seq) ORDER BY recent.finished_at DESC, seq DESC`,
      sinceMs,
      limit,
    );
  }

  /** The jobs whose retention ran out at `now`, for the sweeper. */
  due(now: number): DueJobs {
    return {
      uploads: this.#rows(
        `SELECT * FROM jobs WHERE state = 'receiving' AND upload_expires_at <= ?
         ORDER BY upload_expires_at`,
        now,
      ),
      failedInputs: this.#rows(
        `SELECT * FROM jobs WHERE state = 'failed' AND inputs_removed = 0
           AND inputs_expire_at <= ? ORDER BY inputs_expire_at`,
        now,
      ),
      results: this.#rows(
        `SELECT * FROM jobs WHERE state IN ('succeeded', 'expired') AND results_removed = 0
           AND results_expire_at <= ? ORDER BY results_expire_at`,
        now,
      ),
    };
  }

  /** How many jobs are in each state, and queued ones by priority. */
  counts(): { byState: Record<JobState, number>; queuedByPriority: Record<Priority, number> } {
    const byState = Object.fromEntries(JOB_STATES.map((state) => [state, 0])) as Record<
      JobState,
      number
    >;
    for (const row of this.#sql("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state").all()) {
      byState[row.state as JobState] = Number(row.n);
    }
    const queuedByPriority = { high: 0, normal: 0, low: 0 };
    for (
      const row of this.#sql(
        "SELECT priority, COUNT(*) AS n FROM jobs WHERE state = 'queued' GROUP BY priority",
      ).all()
    ) {
      queuedByPriority[row.priority as Priority] = Number(row.n);
    }
    return { byState, queuedByPriority };
  }

  /**
   * Bytes of inputs and results on disk by the store's account: inputs of jobs past
   * receiving not yet removed (a receiving job's partial inputs are counted by the
   * caller, who knows their verified length), results of succeeded and expired jobs
   * not yet removed.
   */
  keptBytes(): { inputs: number; results: number } {
    const row = this.#sql(
      `SELECT
         (SELECT COALESCE(SUM(input_bytes), 0) FROM jobs
            WHERE state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired')
              AND inputs_removed = 0) AS inputs,
         (SELECT COALESCE(SUM(result_bytes), 0) FROM jobs
            WHERE state IN ('succeeded', 'expired') AND results_removed = 0) AS results`,
    ).get() as Row;
    return { inputs: Number(row.inputs), results: Number(row.results) };
  }

  /**
   * A consistent copy of the store in `file` (which must not exist), taken while the
   * server goes on (SQLite's online backup API).
   */
  async backup(file: string): Promise<void> {
    await copyDatabase(this.#db, file);
  }
}
