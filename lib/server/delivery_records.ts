/**
 * The rows of the delivery tables (schema version 3, lib/server/store_schema.ts) as
 * records: a delivery ({@link DeliveryRecord}), one of its files
 * ({@link DeliveryFileRecord}), and a delivery as JobInfo shows it (`DeliverySummary`,
 * docs/PROTOCOL.md §6.11). The store that reads and writes them is
 * lib/server/delivery_store.ts.
 *
 * @module
 */
import type { SQLInputValue } from "node:sqlite";
import type { DeliveryState, DeliverySummary } from "../wire/protocol.ts";

export type Row = Record<string, SQLInputValue>;

/** A result file's state within a delivery. */
export type DeliveryFileState = "pending" | "sent" | "skipped" | "failed";

/** One delivery as recorded. Times are ms since the epoch. */
export interface DeliveryRecord {
  jobId: string;
  /** The destination's name (upper case). */
  destination: string;
  state: DeliveryState;
  /** Attempts since it was last requested. */
  attempts: number;
  /** When a pending delivery is tried next. */
  nextAttemptAt?: number;
  /** A failing attempt at or after this time gives the delivery up. */
  giveUpAt: number;
  /** Why the last attempt did not deliver everything (one line). */
  lastError?: string;
  /** When it was asked for: the job's end, or the last redelivery. */
  requestedAt: number;
  /** When it was delivered or given up. */
  finishedAt?: number;
  /** The DICOM files among the results, once an attempt has looked. */
  instancesTotal?: number;
}

/** One result file of a delivery. */
export interface DeliveryFileRecord {
  /** The file's `idx` in the job's outputs. */
  outputIndex: number;
  state: DeliveryFileState;
  sopInstanceUid?: string;
  /** The last C-STORE response status. */
  status?: number;
  /** C-STORE requests made for it, over every attempt. */
  stores: number;
  /** Why it was skipped or not stored (one line). */
  reason?: string;
}

/** What an attempt did to one file ({@link DeliveryStore.endAttempt}). */
export interface FileOutcome {
  outputIndex: number;
  state: DeliveryFileState;
  sopInstanceUid?: string;
  status?: number;
  /** C-STORE requests made for it in this attempt. */
  stores: number;
  reason?: string;
}

/** How an attempt left its delivery. */
export type AttemptEnd =
  | { state: "delivered" }
  | { state: "pending"; nextAttemptAt: number; lastError: string }
  | { state: "failed"; lastError: string };

export function toDelivery(row: Row): DeliveryRecord {
  const record: DeliveryRecord = {
    jobId: String(row.job_id),
    destination: String(row.destination),
    state: row.state as DeliveryState,
    attempts: Number(row.attempts),
    giveUpAt: Number(row.give_up_at),
    requestedAt: Number(row.requested_at),
  };
  if (row.next_attempt_at !== null) record.nextAttemptAt = Number(row.next_attempt_at);
  if (row.last_error !== null) record.lastError = String(row.last_error);
  if (row.finished_at !== null) record.finishedAt = Number(row.finished_at);
  if (row.instances_total !== null) record.instancesTotal = Number(row.instances_total);
  return record;
}

export function toFile(row: Row): DeliveryFileRecord {
  const file: DeliveryFileRecord = {
    outputIndex: Number(row.output_idx),
    state: row.state as DeliveryFileState,
    stores: Number(row.stores),
  };
  if (row.sop_instance_uid !== null) file.sopInstanceUid = String(row.sop_instance_uid);
  if (row.status !== null) file.status = Number(row.status);
  if (row.reason !== null) file.reason = String(row.reason);
  return file;
}

/**
 * A delivery row with its `files_total` (not skipped), `files_sent`, `files_skipped` and
 * `files_failed` counts as JobInfo shows it: times ISO-8601 UTC, `next_attempt_at` only
 * while pending.
 */
export function toSummary(row: Row): DeliverySummary {
  const record = toDelivery(row);
  const summary: DeliverySummary = {
    destination: record.destination,
    state: record.state,
    files_total: Number(row.files_total),
    files_sent: Number(row.files_sent),
    files_skipped: Number(row.files_skipped),
    files_failed: Number(row.files_failed),
    attempts: record.attempts,
  };
  if (record.lastError !== undefined) summary.last_error = record.lastError;
  if (record.state === "pending" && record.nextAttemptAt !== undefined) {
    summary.next_attempt_at = new Date(record.nextAttemptAt).toISOString();
  }
  if (record.finishedAt !== undefined) {
    summary.finished_at = new Date(record.finishedAt).toISOString();
  }
  return summary;
}
