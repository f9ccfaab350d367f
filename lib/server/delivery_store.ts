/**
 * The deliveries of the job store (schema version 3, lib/server/store_schema.ts): one
 * per succeeded job and DICOM destination, with one row per result file, written by
 * lib/server/pacs_delivery.ts on the server's open store ({@link JobStore.deliveries}).
 *
 * States of a delivery (the `state` column):
 *
 *     pending → sending → delivered | pending (retry later) | failed (given up)
 *     pending → failed (the job's results were removed);  sending → pending (restart)
 *     any → pending (redelivered: every DICOM file to send again)
 *
 * A file is `pending` until an attempt settles it: `sent` (the destination answered
 * its C-STORE with success or a warning), `skipped` (not a DICOM Part 10 file; never
 * sent), or `failed` (refused, or no longer the file the job wrote: tried again at the
 * next attempt); one whose association ended before its answer stays `pending`. `stores`
 * counts the C-STORE requests made for it over every attempt, so a retry that sends
 * only what had not arrived shows in the counts. Every method commits before it
 * returns, as the job store's do.
 *
 * @module
 */
import type { DatabaseSync, StatementSync } from "node:sqlite";
import { StoreError } from "../errors.ts";
import type { DeliveryState, DeliverySummary } from "../wire/protocol.ts";
import {
  type AttemptEnd,
  type DeliveryFileRecord,
  type DeliveryRecord,
  type FileOutcome,
  type Row,
  toDelivery,
  toFile,
  toSummary,
} from "./delivery_records.ts";

export { DELIVERY_STATES, type DeliveryState, type DeliverySummary } from "../wire/protocol.ts";
export type {
  AttemptEnd,
  DeliveryFileRecord,
  DeliveryFileState,
  DeliveryRecord,
  FileOutcome,
} from "./delivery_records.ts";

/** A delivery as JobInfo shows it, with its job's id ({@link DeliveryStore.attention}). */
export interface JobDelivery {
  jobId: string;
  delivery: DeliverySummary;
}

/** Deliveries `d` with their files counted as {@link toSummary} reads them. */
const SUMMARY_SELECT = `SELECT d.*,
  (SELECT COUNT(*) FROM delivery_files f WHERE f.job_id = d.job_id
     AND f.destination = d.destination AND f.state != 'skipped') AS files_total,
  (SELECT COUNT(*) FROM delivery_files f WHERE f.job_id = d.job_id
     AND f.destination = d.destination AND f.state = 'sent') AS files_sent,
  (SELECT COUNT(*) FROM delivery_files f WHERE f.job_id = d.job_id
     AND f.destination = d.destination AND f.state = 'skipped') AS files_skipped,
  (SELECT COUNT(*) FROM delivery_files f WHERE f.job_id = d.job_id
     AND f.destination = d.destination AND f.state = 'failed') AS files_failed
FROM deliveries d`;

/** The delivery tables of an open job store. */
export class DeliveryStore {
  #db: DatabaseSync;
  #now: () => number;
  #statements = new Map<string, StatementSync>();

  constructor(db: DatabaseSync, now: () => number = Date.now) {
    this.#db = db;
    this.#now = now;
  }

  #sql(sql: string): StatementSync {
    let statement = this.#statements.get(sql);
    if (!statement) this.#statements.set(sql, statement = this.#db.prepare(sql));
    return statement;
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

  /** The delivery of job `jobId` to `destination`, if there is one. */
  get(jobId: string, destination: string): DeliveryRecord | undefined {
    const row = this.#sql("SELECT * FROM deliveries WHERE job_id = ? AND destination = ?")
      .get(jobId, destination) as Row | undefined;
    return row && toDelivery(row);
  }

  /** The job's deliveries, by destination name. */
  ofJob(jobId: string): DeliveryRecord[] {
    return (this.#sql("SELECT * FROM deliveries WHERE job_id = ? ORDER BY destination")
      .all(jobId) as Row[]).map(toDelivery);
  }

  /** The files of a delivery, in the job's output order. */
  files(jobId: string, destination: string): DeliveryFileRecord[] {
    return (this.#sql(
      "SELECT * FROM delivery_files WHERE job_id = ? AND destination = ? ORDER BY output_idx",
    ).all(jobId, destination) as Row[]).map(toFile);
  }

  /**
   * A delivery of succeeded job `jobId` to each of `destinations` that it does not have
   * yet, every output file pending, tried at once and given up at `giveUpAt`. Returns
   * the deliveries created.
   */
  create(jobId: string, destinations: string[], giveUpAt: number): DeliveryRecord[] {
    return this.#transaction(() =>
      destinations.flatMap((destination) =>
        this.#insert(
          jobId,
          destination,
          giveUpAt,
        )
      )
    );
  }

  #insert(jobId: string, destination: string, giveUpAt: number): DeliveryRecord[] {
    const now = this.#now();
    const { changes } = this.#sql(
      `INSERT INTO deliveries (job_id, destination, state, next_attempt_at, give_up_at, requested_at)
       VALUES (?, ?, 'pending', ?, ?, ?) ON CONFLICT DO NOTHING`,
    ).run(jobId, destination, now, giveUpAt, now);
    if (Number(changes) === 0) return [];
    this.#sql(
      `INSERT INTO delivery_files (job_id, destination, output_idx, state)
       SELECT job_id, ?, idx, 'pending' FROM outputs WHERE job_id = ?`,
    ).run(destination, jobId);
    return [this.get(jobId, destination)!];
  }

  /**
   * Succeeded jobs (results kept) with a destination in `deliver_to` but no delivery to
   * it: the server stopped between the job's end and its deliveries' creation.
   */
  missing(): { jobId: string; destination: string; finishedAt: number }[] {
    return (this.#sql(
      `SELECT jobs.id, jobs.finished_at, names.value AS destination
       FROM jobs, json_each(jobs.deliver_to) AS names
       WHERE jobs.state = 'succeeded' AND jobs.results_removed = 0 AND jobs.deliver_to != '[]'
         AND NOT EXISTS (SELECT 1 FROM deliveries
                         WHERE deliveries.job_id = jobs.id AND deliveries.destination = names.value)
       ORDER BY jobs.seq`,
    ).all() as Row[]).map((row) => ({
      jobId: String(row.id),
      destination: String(row.destination),
      finishedAt: Number(row.finished_at),
    }));
  }

  /** Pending deliveries due at `now`, longest waiting first, at most `limit`. */
  due(now: number, limit: number): DeliveryRecord[] {
    return (this.#sql(
      `SELECT * FROM deliveries WHERE state = 'pending' AND next_attempt_at <= ?
       ORDER BY next_attempt_at, job_id, destination LIMIT ?`,
    ).all(now, limit) as Row[]).map(toDelivery);
  }

  /** When the next pending delivery is due, if any is pending. */
  nextAttemptAt(): number | undefined {
    const row = this.#sql(
      "SELECT MIN(next_attempt_at) AS at FROM deliveries WHERE state = 'pending'",
    ).get() as Row;
    return row.at === null ? undefined : Number(row.at);
  }

  /** pending → sending: an attempt begins (counted). */
  begin(jobId: string, destination: string): DeliveryRecord {
    return this.#transaction(() => {
      this.#require(jobId, destination, ["pending"], "it cannot be sent now");
      this.#sql(
        `UPDATE deliveries SET state = 'sending', attempts = attempts + 1, next_attempt_at = NULL
         WHERE job_id = ? AND destination = ?`,
      ).run(jobId, destination);
      return this.get(jobId, destination)!;
    });
  }

  /**
   * sending → delivered | pending | failed, with what the attempt did to each file it
   * looked at and how many DICOM files the results hold.
   */
  endAttempt(
    jobId: string,
    destination: string,
    r: { files: FileOutcome[]; end: AttemptEnd; instancesTotal: number },
  ): DeliveryRecord {
    return this.#transaction(() => {
      this.#require(jobId, destination, ["sending"], "no attempt of it is under way");
      this.#updateFiles(jobId, destination, r.files);
      const { end } = r;
      const finished = end.state === "pending" ? null : this.#now();
      this.#sql(
        `UPDATE deliveries SET state = ?, next_attempt_at = ?, last_error = ?, finished_at = ?,
           instances_total = ? WHERE job_id = ? AND destination = ?`,
      ).run(
        end.state,
        end.state === "pending" ? end.nextAttemptAt : null,
        end.state === "delivered" ? null : end.lastError,
        finished,
        r.instancesTotal,
        jobId,
        destination,
      );
      return this.get(jobId, destination)!;
    });
  }

  /**
   * While an attempt sends: what its checks found before sending (the files skipped as
   * not DICOM, those no longer as recorded), so that the delivery shows them meanwhile.
   */
  checked(jobId: string, destination: string, files: FileOutcome[]): void {
    this.#transaction(() => {
      this.#require(jobId, destination, ["sending"], "no attempt of it is under way");
      this.#updateFiles(jobId, destination, files);
    });
  }

  #updateFiles(jobId: string, destination: string, files: FileOutcome[]): void {
    const update = this.#sql(
      `UPDATE delivery_files SET state = ?, sop_instance_uid = COALESCE(?, sop_instance_uid),
         status = ?, stores = stores + ?, reason = ?
       WHERE job_id = ? AND destination = ? AND output_idx = ?`,
    );
    for (const file of files) {
      update.run(
        file.state,
        file.sopInstanceUid ?? null,
        file.status ?? null,
        file.stores,
        file.reason ?? null,
        jobId,
        destination,
        file.outputIndex,
      );
    }
  }

  /**
   * pending or sending → failed with `reason` (the job's results are gone); undefined
   * when the delivery is not in one of those states.
   */
  fail(jobId: string, destination: string, reason: string): DeliveryRecord | undefined {
    const { changes } = this.#sql(
      `UPDATE deliveries SET state = 'failed', next_attempt_at = NULL, last_error = ?,
         finished_at = ? WHERE job_id = ? AND destination = ? AND state IN ('pending', 'sending')`,
    ).run(reason, this.#now(), jobId, destination);
    return Number(changes) === 1 ? this.get(jobId, destination) : undefined;
  }

  /** At a start: every `sending` delivery (cut off by the stop) is pending and due now. */
  resumeInterrupted(): DeliveryRecord[] {
    return this.#transaction(() => {
      const rows = (this.#sql("SELECT * FROM deliveries WHERE state = 'sending'").all() as Row[])
        .map(toDelivery);
      this.#sql(
        "UPDATE deliveries SET state = 'pending', next_attempt_at = ? WHERE state = 'sending'",
      ).run(this.#now());
      return rows;
    });
  }

  /**
   * Deliver job `jobId` again to each of `destinations`: an existing delivery becomes
   * pending, due now, with its attempts counted afresh, `giveUpAt`, and every file not
   * skipped pending again (their C-STORE counts kept); a missing one is created.
   */
  reset(jobId: string, destinations: string[], giveUpAt: number): DeliveryRecord[] {
    return this.#transaction(() =>
      destinations.map((destination) => {
        if (this.#insert(jobId, destination, giveUpAt).length === 0) {
          const now = this.#now();
          this.#sql(
            `UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?,
               give_up_at = ?, last_error = NULL, requested_at = ?, finished_at = NULL
             WHERE job_id = ? AND destination = ?`,
          ).run(now, giveUpAt, now, jobId, destination);
          this.#sql(
            `UPDATE delivery_files SET state = 'pending', status = NULL, reason = NULL
             WHERE job_id = ? AND destination = ? AND state != 'skipped'`,
          ).run(jobId, destination);
        }
        return this.get(jobId, destination)!;
      })
    );
  }

  /** The job's deliveries as JobInfo shows them. */
  summaries(jobId: string): DeliverySummary[] {
    return (this.#sql(`${SUMMARY_SELECT} WHERE d.job_id = ? ORDER BY d.destination`)
      .all(jobId) as Row[]).map(toSummary);
  }

  /**
   * The deliveries that need someone's attention, for the status page: every pending or
   * sending one, and those given up (failed) at or after `sinceMs`; newest first (by when
   * it was given up, else when it was asked for), at most `limit`.
   */
  attention(sinceMs: number, limit: number): JobDelivery[] {
    if (!Number.isSafeInteger(limit) || limit < 1) {
      throw new TypeError(`limit must be a positive whole number, got ${limit}`);
    }
    return (this.#sql(
      `${SUMMARY_SELECT}
       WHERE d.state IN ('pending', 'sending') OR (d.state = 'failed' AND d.finished_at >= ?)
       ORDER BY COALESCE(d.finished_at, d.requested_at) DESC, d.job_id, d.destination LIMIT ?`,
    ).all(sinceMs, limit) as Row[]).map((row) => ({
      jobId: String(row.job_id),
      delivery: toSummary(row),
    }));
  }

  /** How many deliveries were given up (failed) at or after `sinceMs`. */
  failedSince(sinceMs: number): number {
    const row = this.#sql(
      "SELECT COUNT(*) AS n FROM deliveries WHERE state = 'failed' AND finished_at >= ?",
    ).get(sinceMs) as Row;
    return Number(row.n);
  }

  /** How many deliveries are in each state (for metrics and the status page). */
  counts(): Record<DeliveryState, number> {
    const counts = { pending: 0, sending: 0, delivered: 0, failed: 0 };
    for (
      const row of this.#sql("SELECT state, COUNT(*) AS n FROM deliveries GROUP BY state").all()
    ) {
      counts[row.state as DeliveryState] = Number(row.n);
    }
    return counts;
  }

  #require(
    jobId: string,
    destination: string,
    states: readonly DeliveryState[],
    refusal: string,
  ): DeliveryRecord {
    const record = this.get(jobId, destination);
    if (!record) throw new StoreError(`job ${jobId} has no delivery to ${destination}`);
    if (!states.includes(record.state)) {
      throw new StoreError(
        `the delivery of job ${jobId} to ${destination} is ${record.state}; ${refusal}`,
      );
    }
    return record;
  }
}
