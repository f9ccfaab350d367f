/**
 * One attempt to deliver a job's results to a DICOM destination (issue 17), for
 * lib/server/pacs_delivery.ts: every file not yet sent is checked and the DICOM ones are
 * sent with C-STORE (lib/server/dicom_send.ts); what became of each file comes back as
 * {@link FileOutcome}s for the job store (lib/server/delivery_store.ts), and
 * {@link attemptEnd} says what that means for the delivery (delivered, retried after
 * {@link DELIVERY_BACKOFF}, or given up).
 *
 * Each file is first checked against the job store's outputs row: it must be the file
 * the job wrote (same device and inode, no link, same size and SHA-256; the SHA-256 is
 * taken again only when the file's times are no longer those recorded with it), because
 * dcmjs-dimse sends a truncated file zero-padded and a PACS stores it with success.
 * Then its Part 10 header is read (lib/server/dicom_file.ts): a file that is not
 * DICOM is `skipped` with why, and never sent. A file that does not arrive is `failed`
 * (tried again at the next attempt); one whose association ended before its answer
 * (the PACS went away, a shutdown aborted the send) stays `pending`: nobody knows
 * whether it arrived, and the delivery's `last_error` says why.
 *
 * @module
 */
import * as path from "node:path";
import { errorMessage } from "../errors.ts";
import type { Destination } from "../opts/mod.ts";
import { fileTimes, openForSending } from "../wire/file_send.ts";
import { isNotDicom, readDicomHeader } from "./dicom_file.ts";
import { readSha256 } from "./results.ts";
import type { Instance } from "./dicom_send.ts";
import type {
  AttemptEnd,
  DeliveryFileRecord,
  DeliveryRecord,
  FileOutcome,
} from "./delivery_store.ts";
import type { OutputRecord } from "./job_store.ts";

/** What {@link attemptDelivery} needs. */
export interface AttemptInput {
  /** The job's output directory and its outputs rows. */
  outputDir: string;
  outputs: OutputRecord[];
  /** The delivery's files as recorded (those pending or failed are tried). */
  files: DeliveryFileRecord[];
  destination: Destination;
  /** Aborted: stop sending; what was not confirmed stays pending. */
  signal?: AbortSignal;
  /** Told before sending what the checks found (files skipped, or not as recorded). */
  onChecked?: (files: FileOutcome[]) => void;
}

/** What an attempt did. */
export interface AttemptReport {
  /** The files it looked at, for {@link DeliveryStore.endAttempt}. */
  files: FileOutcome[];
  /** Association-level trouble (one line). */
  error?: string;
  /** The results not skipped (DICOM files, or not yet looked at), after this attempt. */
  instancesTotal: number;
  /** Files of the delivery sent, skipped, and not sent yet, after this attempt. */
  sent: number;
  skipped: number;
  left: number;
  /** Why the first file that did not arrive did not (one line, with its name). */
  firstFailure?: string;
}

/**
 * Why the file at `file` is no longer the result the job store recorded, or undefined
 * when it is (identity, size, SHA-256). Never follows a link. A file whose size and
 * modification and status-change times are still those recorded when its SHA-256 was
 * taken is not read again (as a download trusts it, lib/wire/file_send.ts; PROTOCOL §9.8).
 */
export async function changedResult(
  file: string,
  output: OutputRecord,
): Promise<string | undefined> {
  let opened: { file: Deno.FsFile; size: number; info: Deno.FileInfo };
  try {
    opened = await openForSending(file, {
      noFollow: true,
      expect: output.dev !== undefined && output.ino !== undefined
        ? { dev: output.dev, ino: output.ino }
        : undefined,
    });
  } catch (error) {
    return `not the file the job wrote: ${errorMessage(error)}`;
  }
  let read: { sha256: string; size: number };
  try {
    const times = fileTimes(opened.info);
    if (
      opened.size === output.size && output.mtimeMs !== undefined &&
      output.ctimeMs !== undefined && times.mtimeMs === output.mtimeMs &&
      times.ctimeMs === output.ctimeMs
    ) return undefined;
    read = await readSha256(opened.file);
  } catch (error) {
    return `cannot be read: ${errorMessage(error)}`;
  } finally {
    opened.file.close();
  }
  if (read.size !== output.size) {
    return `changed since the job finished (${output.size} → ${read.size} bytes)`;
  }
  if (read.sha256 !== output.sha256) {
    return "changed since the job finished (its SHA-256 is not the one recorded)";
  }
  return undefined;
}

let sender: Promise<typeof import("./dicom_send.ts")> | undefined;

/**
 * lib/server/dicom_send.ts, loaded once, when first asked for: dcmjs-dimse takes ~14 MB of
 * the server's memory once loaded, which a server without destinations does not need
 * (PacsDeliverer.start asks for it when there are destinations, so that the first
 * delivery does not wait ~0.1 s for it).
 */
export function loadSender(): Promise<typeof import("./dicom_send.ts")> {
  return sender ??= import("./dicom_send.ts");
}

/** Check the files not sent yet, send the DICOM ones, and say what became of each. */
export async function attemptDelivery(input: AttemptInput): Promise<AttemptReport> {
  const { outputDir, destination, signal } = input;
  const outputs = new Map(input.outputs.map((output) => [output.index, output]));
  const outcomes = new Map<number, FileOutcome>();
  const toSend: { index: number; name: string; instance: Instance }[] = [];
  for (const file of input.files) {
    if (file.state !== "pending" && file.state !== "failed") continue;
    if (signal?.aborted) break;
    const index = file.outputIndex;
    const output = outputs.get(index);
    if (!output) {
      outcomes.set(index, {
        outputIndex: index,
        state: "failed",
        stores: 0,
        reason: "no such result",
      });
      continue;
    }
    const filePath = path.join(outputDir, output.name);
    const changed = await changedResult(filePath, output);
    if (changed !== undefined) {
      outcomes.set(index, { outputIndex: index, state: "failed", stores: 0, reason: changed });
      continue;
    }
    let header;
    try {
      header = await readDicomHeader(filePath);
    } catch (error) {
      const reason = `cannot be read: ${errorMessage(error)}`;
      outcomes.set(index, { outputIndex: index, state: "failed", stores: 0, reason });
      continue;
    }
    if (isNotDicom(header)) {
      const reason = `not a DICOM Part 10 file: ${header.notDicom}`;
      outcomes.set(index, { outputIndex: index, state: "skipped", stores: 0, reason });
      continue;
    }
    const instance = { path: filePath, ...header };
    toSend.push({ index, name: output.name, instance });
  }
  if (outcomes.size > 0) input.onChecked?.([...outcomes.values()]);
  let error: string | undefined;
  if (toSend.length > 0 && !signal?.aborted) {
    const { sendInstances } = await loadSender();
    const report = await sendInstances(destination, toSend.map((f) => f.instance), signal);
    error = report.error;
    report.results.forEach((result, i) => {
      const { index, instance } = toSend[i];
      const stores = result.requested ? 1 : 0;
      const common = { outputIndex: index, sopInstanceUid: instance.sopInstanceUid, stores };
      const { status, reason } = result;
      if (result.arrived) {
        outcomes.set(index, { ...common, state: "sent", status, reason });
      } else if (status !== undefined) {
        outcomes.set(index, { ...common, state: "failed", status, reason }); // refused by the PACS
      } else if (error !== undefined || signal?.aborted) {
        // The association ended before an answer: it may or may not have arrived, and
        // the delivery's last_error says why; it is sent again at the next attempt.
        outcomes.set(index, { ...common, state: "pending", reason });
      } else {
        // Not sent for a reason of its own (a SOP class the PACS did not accept).
        outcomes.set(index, { ...common, state: "failed", reason });
      }
    });
  }
  return summarize(input.files, outcomes, input.outputs, error);
}

/** The delivery's files after the attempt, counted. */
function summarize(
  files: DeliveryFileRecord[],
  outcomes: Map<number, FileOutcome>,
  outputs: OutputRecord[],
  error: string | undefined,
): AttemptReport {
  const names = new Map(outputs.map((output) => [output.index, output.name]));
  const report: AttemptReport = {
    files: [...outcomes.values()],
    instancesTotal: 0,
    sent: 0,
    skipped: 0,
    left: 0,
  };
  if (error !== undefined) report.error = error;
  for (const file of files) {
    const outcome = outcomes.get(file.outputIndex);
    const state = outcome?.state ?? file.state;
    if (state === "skipped") report.skipped++;
    else report.instancesTotal++;
    if (state === "sent") report.sent++;
    if (state === "pending" || state === "failed") report.left++;
    if (state === "failed" && report.firstFailure === undefined) {
      // This line reaches the audit log, `recon-client jobs` and ON_DELIVERY_FAILED: a
      // result's name may carry patient data, so the file is named by its position.
      const name = names.get(file.outputIndex);
      let reason = outcome?.reason ?? file.reason ?? "not stored";
      for (const part of name ? [name, path.basename(name)] : []) {
        reason = reason.replaceAll(part, "the file");
      }
      report.firstFailure = `result ${file.outputIndex + 1}: ${reason}`;
    }
  }
  return report;
}

/** The wait after a failed attempt: `firstMs`, doubling with each attempt, at most `maxMs`. */
export const DELIVERY_BACKOFF = { firstMs: 30_000, maxMs: 15 * 60_000 };

/** The wait before attempt `attempts + 1`, after `attempts` failed ones. */
export function retryDelay(attempts: number, backoff = DELIVERY_BACKOFF): number {
  const doublings = Math.min(Math.max(attempts - 1, 0), 30);
  return Math.min(backoff.firstMs * 2 ** doublings, backoff.maxMs);
}

/**
 * How attempt number `delivery.attempts` leaves its delivery: delivered when nothing is
 * left to send; else pending again after {@link retryDelay} (at the latest at the
 * give-up time, so the last try is made then), failed once that time has come, and
 * pending and due at once when the server is `stopping` (it goes on at the next start).
 */
export function attemptEnd(
  delivery: DeliveryRecord,
  report: AttemptReport,
  r: { now: number; stopping: boolean; backoff?: { firstMs: number; maxMs: number } },
): AttemptEnd {
  if (report.left === 0) return { state: "delivered" };
  const lastError = report.error ??
    `${report.left} of ${report.instancesTotal} file(s) not stored; ${
      report.firstFailure ?? "not sent"
    }`;
  if (r.stopping) return { state: "pending", nextAttemptAt: r.now, lastError };
  if (r.now >= delivery.giveUpAt) return { state: "failed", lastError };
  const wait = retryDelay(delivery.attempts, r.backoff);
  return { state: "pending", nextAttemptAt: Math.min(r.now + wait, delivery.giveUpAt), lastError };
}

/** The report of an attempt that sent nothing because of `error` (one line). */
export function unsentReport(files: DeliveryFileRecord[], error: string): AttemptReport {
  const count = (...states: string[]) => files.filter((f) => states.includes(f.state)).length;
  return {
    files: [],
    error,
    instancesTotal: files.length - count("skipped"),
    sent: count("sent"),
    skipped: count("skipped"),
    left: count("pending", "failed"),
  };
}
