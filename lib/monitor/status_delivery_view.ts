/**
 * The deliveries to DICOM destinations (issue 17) as the status page shows them, read
 * from the job store (lib/server/delivery_store.ts) for lib/monitor/status_view.ts: how
 * many deliveries are in each state, those that need attention (pending, sending, or
 * given up in the last 24 hours) and each finished job's deliveries in short.
 *
 * A delivery's last error is text from the server's attempts and the PACS's answers,
 * which names a result file when one was refused: the job's file names and directories
 * are blanked out of it here (lib/monitor/status_redact.ts), as from failure reasons.
 *
 * @module
 */
import type { DeliveryState, DeliverySummary } from "../server/delivery_store.ts";
import type { JobStore } from "../server/job_store.ts";
import { jobSecrets, redact } from "./status_redact.ts";

/** How many deliveries that need attention the page lists (the newest). */
export const DELIVERY_ATTENTION_LIMIT = 50;
/** A delivery given up this long ago or less needs attention (and turns the card red). */
export const DELIVERY_FAILED_WINDOW_MS = 24 * 3_600_000;
/** The longest last error shown; longer ones are cut with "…". */
const MAX_ERROR_LENGTH = 300;

/** One delivery of a job, in short (a finished job's cell). */
export interface DeliveryView {
  /** The destination's name (upper case). */
  destination: string;
  state: DeliveryState;
  /** Attempts since it was last asked for. */
  attempts: number;
  /** DICOM files stored there, of those to send. */
  filesSent: number;
  filesTotal: number;
  /** Results that are not DICOM: never sent. */
  filesSkipped: number;
  /** Files refused or changed at the last attempt that saw them. */
  filesFailed: number;
}

/** A delivery that needs attention. */
export interface AttentionDeliveryView extends DeliveryView {
  jobId: string;
  /** When a pending one is tried next. */
  nextAttemptAt?: number;
  /** When it was given up (failed). */
  finishedAt?: number;
  /** Why the last attempt did not deliver everything: file names and directories blanked out. */
  lastError?: string;
}

/** The deliveries part of the page; only when the server has destinations. */
export interface DeliveriesView {
  /** The configured destinations' names. */
  destinations: string[];
  /** Every delivery the job store holds, by state. */
  counts: Record<DeliveryState, number>;
  /** Deliveries given up within {@link DELIVERY_FAILED_WINDOW_MS}. */
  failedRecently: number;
  /**
   * Pending, sending and recently given up deliveries, newest first, at most
   * {@link DELIVERY_ATTENTION_LIMIT}.
   */
  attention: AttentionDeliveryView[];
}

/**
 * The deliveries at `now` for a server with `destinations`; `hidden` are directories
 * to blank out of every last error (RECON_FILEPATH, RECON_DICOM_DIR).
 */
export function deliveriesView(
  store: JobStore,
  now: number,
  destinations: string[],
  hidden: string[],
): DeliveriesView {
  const since = now - DELIVERY_FAILED_WINDOW_MS;
  const redactor = errorRedactor(store, hidden);
  const attention = store.deliveries.attention(since, DELIVERY_ATTENTION_LIMIT).map(
    ({ jobId, delivery }): AttentionDeliveryView => {
      const view: AttentionDeliveryView = { jobId, ...short(delivery) };
      if (delivery.next_attempt_at !== undefined) {
        view.nextAttemptAt = Date.parse(delivery.next_attempt_at);
      }
      if (delivery.finished_at !== undefined) view.finishedAt = Date.parse(delivery.finished_at);
      if (delivery.last_error !== undefined) {
        view.lastError = redactor(jobId, delivery.last_error);
      }
      return view;
    },
  );
  return {
    destinations: [...destinations],
    counts: store.deliveries.counts(),
    failedRecently: store.deliveries.failedSince(since),
    attention,
  };
}

/** The deliveries of finished job `jobId`, by destination; empty when it has none. */
export function jobDeliveries(store: JobStore, jobId: string): DeliveryView[] {
  return store.deliveries.summaries(jobId).map(short);
}

function short(delivery: DeliverySummary): DeliveryView {
  return {
    destination: delivery.destination,
    state: delivery.state,
    attempts: delivery.attempts,
    filesSent: delivery.files_sent,
    filesTotal: delivery.files_total,
    filesSkipped: delivery.files_skipped,
    filesFailed: delivery.files_failed,
  };
}

/**
 * Blanks a job's file names and directories out of an error about it (reading the
 * job's names once per job), on one line, cut at {@link MAX_ERROR_LENGTH}.
 */
function errorRedactor(store: JobStore, hidden: string[]): (jobId: string, text: string) => string {
  const secrets = new Map<string, ReturnType<typeof jobSecrets>>();
  return (jobId, text) => {
    let hide = secrets.get(jobId);
    if (!hide) {
      const record = store.get(jobId);
      hide = record ? jobSecrets(store, record, hidden) : { paths: hidden, names: [] };
      secrets.set(jobId, hide);
    }
    const line = redact(text, hide).replace(/\s*[\r\n]+\s*/g, " ");
    return line.length > MAX_ERROR_LENGTH ? `${line.slice(0, MAX_ERROR_LENGTH - 1)}…` : line;
  };
}
