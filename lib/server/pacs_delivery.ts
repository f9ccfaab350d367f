/**
 * Delivery of succeeded jobs' DICOM results to the PACS and archives of recon.opts'
 * `DESTINATION_<NAME>` lines (issue 17). When a job that names destinations
 * (`JobRecord.deliverTo`) succeeds, one delivery per destination is recorded in the
 * job store (lib/server/delivery_store.ts), due at once and given up DELIVERY_RETRY_FOR
 * after the job finished. A loop takes due deliveries, at most
 * {@link MAX_CONCURRENT_DELIVERIES} at once; each attempt (lib/server/delivery_attempt.ts)
 * sends the files not sent yet and records what became of each:
 *
 * - nothing left to send: `delivered` (logged, audited `job_delivered_pacs`);
 * - an association error or files not stored: `pending` again, tried after a backoff
 *   (DELIVERY_BACKOFF of lib/server/delivery_attempt.ts: 30 s doubling up to 15 min),
 *   the last try at the give-up time;
 * - still failing at the give-up time, or the job's results removed first: `failed`
 *   (logged, audited `delivery_failed`, and `onDeliveryFailed`, i.e. ON_DELIVERY_FAILED).
 *
 * The store says what is due, so a restart resumes where the last server stopped
 * (lib/server/recovery.ts makes a delivery cut off while `sending` pending again; a job
 * that succeeded just before a crash gets its deliveries at {@link PacsDeliverer.start}).
 * A shutdown aborts the sends in progress: what was not confirmed stays pending. The
 * job's results are held (lib/server/job_leases.ts) while an attempt reads them.
 *
 * @module
 */
import { errorMessage } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Destination } from "../opts/mod.ts";
import type { AuditSink } from "./audit_jobs.ts";
import {
  attemptDelivery,
  attemptEnd,
  type AttemptReport,
  loadSender,
  unsentReport,
} from "./delivery_attempt.ts";
import type { DeliveryRecord, DeliverySummary } from "./delivery_store.ts";
import type { JobLeases } from "./job_leases.ts";
import type { JobRecord, JobStore } from "./job_store.ts";
import { Refusal, unknownJob, utc } from "./refusal.ts";

/** Deliveries sent at the same time, at most. */
export const MAX_CONCURRENT_DELIVERIES = 2;
/** Why a delivery fails when the job's results expired first. */
export const RESULTS_REMOVED = "results were removed (RESULT_RETENTION)";
/** The longest the loop sleeps, so that a jump of the clock delays nothing for long. */
const MAX_SLEEP_MS = 60_000;

/** Inputs of {@link PacsDeliverer}. */
export interface PacsDelivererOptions {
  store: JobStore;
  /** recon.opts' destinations, by name (upper case). */
  destinations: Record<string, Destination>;
  /** DELIVERY_RETRY_FOR in seconds. */
  retryFor: number;
  log: Logger;
  audit?: AuditSink;
  /** Results read by an attempt are held, so the sweeper does not remove them under it. */
  leases?: JobLeases;
  /** A delivery was given up (ON_DELIVERY_FAILED, lib/server/job_hooks.ts). */
  onDeliveryFailed?: (job: JobRecord, destination: string, reason: string) => void;
  /** An attempt ended (the metrics): files stored and C-STORE requests made by it, and the state it left. */
  onAttemptEnd?: (destination: string, attempt: AttemptTally) => void;
  /** The clock (ms since the epoch); default Date.now. */
  now?: () => number;
  /** Default DELIVERY_BACKOFF (lib/server/delivery_attempt.ts); tests shorten it. */
  backoff?: { firstMs: number; maxMs: number };
  /** Default {@link MAX_CONCURRENT_DELIVERIES}. */
  maxConcurrent?: number;
}

/** What one attempt did, for {@link PacsDelivererOptions.onAttemptEnd}. */
export interface AttemptTally {
  /** Files stored by the destination in this attempt. */
  stored: number;
  /** C-STORE requests this attempt made. */
  stores: number;
  state: DeliveryRecord["state"];
}

/** Files stored so far and C-STORE requests made so far, of one delivery. */
function tally(files: { state: string; stores: number }[]): { stored: number; stores: number } {
  let stored = 0;
  let stores = 0;
  for (const file of files) {
    if (file.state === "sent") stored++;
    stores += file.stores;
  }
  return { stored, stores };
}

interface Active {
  controller: AbortController;
  /** Redelivered while it ran: its outcome is not recorded. */
  reset: boolean;
  done: Promise<void>;
}

const keyOf = (jobId: string, destination: string) => `${jobId} ${destination}`;

/** Sends succeeded jobs' results to their destinations, with retries, until closed. */
export class PacsDeliverer {
  #options: PacsDelivererOptions;
  #now: () => number;
  #max: number;
  #active = new Map<string, Active>();
  #timer?: ReturnType<typeof setTimeout>;
  #started = false;
  #closed = false;
  #unsubscribe: () => void;

  /** Follows the store's changes from now on; sends nothing before {@link start}. */
  constructor(options: PacsDelivererOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#max = options.maxConcurrent ?? MAX_CONCURRENT_DELIVERIES;
    this.#unsubscribe = options.store.onChange(({ job, what }) => {
      if (what === "state" && job.state === "succeeded" && job.deliverTo.length > 0) {
        this.#create(job.id, job.deliverTo, job.finishedAt ?? this.#now());
      } else if ((what === "state" && job.state === "expired") || what === "results_removed") {
        this.#resultsGone(job);
      }
    });
  }

  /** Deliveries being sent now. */
  get sending(): number {
    return this.#active.size;
  }

  /**
   * Create the deliveries a stop left uncreated (a job that succeeded just before it),
   * then send what is due, and go on until {@link close}.
   */
  start(): void {
    const missing = this.#options.store.deliveries.missing();
    for (const { jobId, destination, finishedAt } of missing) {
      this.#create(jobId, [destination], finishedAt);
    }
    this.#started = true;
    // The DICOM library, loaded now rather than by the first delivery (an error shows then).
    if (Object.keys(this.#options.destinations).length > 0) loadSender().catch(() => {});
    this.#schedule();
  }

  /**
   * Deliver job `jobId` again to `to` (default: every destination it was delivered or
   * asked to be delivered to): each file not skipped is sent again, retried for a new
   * DELIVERY_RETRY_FOR; a send in progress is stopped first. Returns the job's deliveries.
   * @throws {Refusal} for an unknown job, one without kept results, or an unknown name.
   */
  redeliver(jobId: string, to?: string[]): DeliverySummary[] {
    const { store, destinations, log } = this.#options;
    const job = store.get(jobId);
    if (!job) throw unknownJob(jobId);
    if (job.state !== "succeeded" || job.resultsRemoved) {
      throw new Refusal(
        `job ${jobId} is ${job.state}; only a succeeded job whose results are kept can be delivered again`,
        job.state === "expired" ? "expired" : "refused",
      );
    }
    const configured = Object.keys(destinations).sort();
    const asked = to ??
      [...job.deliverTo, ...store.deliveries.ofJob(jobId).map((d) => d.destination)];
    const names = [...new Set(asked.map((name) => name.toUpperCase()))];
    if (names.length === 0) {
      throw new Refusal(
        `job ${jobId} was sent to no destination; name one (${
          configured.join(", ") || "none configured"
        })`,
      );
    }
    const unknown = names.find((name) => !destinations[name]);
    if (unknown !== undefined) {
      throw new Refusal(
        `there is no destination ${unknown} in the server's recon.opts (configured: ${
          configured.join(", ") || "none"
        })`,
      );
    }
    for (const name of names) {
      const active = this.#active.get(keyOf(jobId, name));
      if (active) {
        active.reset = true;
        active.controller.abort(new Error("delivered again"));
      }
    }
    store.deliveries.reset(jobId, names, this.#now() + this.#options.retryFor * 1000);
    log.info(`job ${jobId}: delivering its results again to ${names.join(", ")}`);
    const summaries = store.deliveries.summaries(jobId); // as the request left them: pending
    this.#schedule();
    return summaries;
  }

  /** Send nothing more: sends in progress are aborted (what was not confirmed stays pending). */
  async close(): Promise<void> {
    this.#closed = true;
    this.#unsubscribe();
    clearTimeout(this.#timer);
    const active = [...this.#active.values()];
    for (const { controller } of active) controller.abort(new Error("the server is shutting down"));
    await Promise.all(active.map((a) => a.done));
  }

  #create(jobId: string, names: string[], finishedAt: number): void {
    const { store, log, retryFor } = this.#options;
    try {
      const created = store.deliveries.create(jobId, names, finishedAt + retryFor * 1000);
      if (created.length > 0) {
        log.info(`job ${jobId}: its results go to ${created.map((d) => d.destination).join(", ")}`);
      }
    } catch (error) {
      log.error(`job ${jobId}: cannot record its deliveries: ${errorMessage(error)}`);
    }
    this.#schedule();
  }

  /** The job's results expired: its deliveries not sent yet fail (one being sent holds them). */
  #resultsGone(job: JobRecord): void {
    for (const delivery of this.#options.store.deliveries.ofJob(job.id)) {
      if (delivery.state !== "pending") continue;
      const failed = this.#options.store.deliveries.fail(
        job.id,
        delivery.destination,
        RESULTS_REMOVED,
      );
      if (failed) this.#gaveUp(job, failed);
    }
  }

  #schedule(): void {
    if (!this.#started || this.#closed) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const { deliveries } = this.#options.store;
    const now = this.#now();
    try {
      if (this.#active.size < this.#max) {
        for (const delivery of deliveries.due(now, this.#max + this.#active.size)) {
          if (this.#active.size >= this.#max) break;
          if (!this.#active.has(keyOf(delivery.jobId, delivery.destination))) this.#run(delivery);
        }
      }
      // One due now but not started waits for a running attempt, whose end comes back here.
      const next = deliveries.nextAttemptAt();
      if (next !== undefined && next > now) {
        this.#timer = setTimeout(() => this.#schedule(), Math.min(next - now, MAX_SLEEP_MS));
      }
    } catch (error) {
      this.#options.log.error(`deliveries: cannot read the job store: ${errorMessage(error)}`);
      this.#timer = setTimeout(() => this.#schedule(), MAX_SLEEP_MS);
    }
  }

  #run(delivery: DeliveryRecord): void {
    const key = keyOf(delivery.jobId, delivery.destination);
    const active: Active = {
      controller: new AbortController(),
      reset: false,
      done: Promise.resolve(),
    };
    this.#active.set(key, active);
    active.done = this.#attempt(delivery, active)
      .catch((error) =>
        this.#options.log.error(
          `job ${delivery.jobId}: delivery to ${delivery.destination} failed: ${
            errorMessage(error)
          }`,
        )
      )
      .finally(() => {
        this.#active.delete(key);
        this.#schedule();
      });
  }

  async #attempt({ jobId, destination: name }: DeliveryRecord, active: Active): Promise<void> {
    const { store, destinations, leases } = this.#options;
    const delivery = store.deliveries.begin(jobId, name);
    const before = tally(store.deliveries.files(jobId, name));
    const job = store.get(jobId);
    if (!job || job.state !== "succeeded" || job.resultsRemoved) {
      const failed = store.deliveries.fail(jobId, name, RESULTS_REMOVED);
      if (failed) this.#options.onAttemptEnd?.(name, { stored: 0, stores: 0, state: failed.state });
      if (job && failed) this.#gaveUp(job, failed);
      return;
    }
    const destination = destinations[name];
    const started = performance.now();
    let report: AttemptReport;
    if (!destination) {
      const files = store.deliveries.files(jobId, name);
      report = unsentReport(files, `DESTINATION_${name} is no longer in recon.opts`);
    } else {
      const release = leases?.holdResults(jobId) ?? (() => {});
      try {
        report = await attemptDelivery({
          outputDir: job.outputDir,
          outputs: store.outputs(jobId),
          files: store.deliveries.files(jobId, name),
          destination,
          signal: active.controller.signal,
          onChecked: (files) => {
            if (!active.reset) store.deliveries.checked(jobId, name, files);
          },
        });
      } catch (error) {
        // Not the network (dicom_send never throws for that): retried like it all the same.
        report = unsentReport(
          store.deliveries.files(jobId, name),
          `cannot send: ${errorMessage(error)}`,
        );
      } finally {
        release();
      }
    }
    if (active.reset) return; // delivered again meanwhile: reset() made it pending anew
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const recorded = store.deliveries.endAttempt(jobId, name, {
      files: report.files,
      end: attemptEnd(delivery, report, {
        now: this.#now(),
        stopping: this.#closed,
        backoff: this.#options.backoff,
      }),
      instancesTotal: report.instancesTotal,
    });
    const after = tally(store.deliveries.files(jobId, name));
    this.#options.onAttemptEnd?.(name, {
      stored: after.stored - before.stored,
      stores: after.stores - before.stores,
      state: recorded.state,
    });
    this.#report(job, recorded, report, seconds);
  }

  #report(job: JobRecord, delivery: DeliveryRecord, report: AttemptReport, seconds: string): void {
    const { log, destinations } = this.#options;
    const { destination: name } = delivery;
    const where = destinations[name]?.url ?? name;
    if (delivery.state === "delivered") {
      const stores = this.#options.store.deliveries.files(job.id, name)
        .reduce((sum, file) => sum + file.stores, 0);
      const skipped = report.skipped > 0 ? `; ${report.skipped} result(s) skipped, not DICOM` : "";
      log.info(
        `job ${job.id}: delivered ${report.sent} DICOM file(s) to ${name} (${where}) in ${seconds} s, attempt ${delivery.attempts}${skipped}`,
      );
      this.#audit("job_delivered_pacs", {
        job: job.id,
        destination: name,
        instances: report.sent,
        skipped: report.skipped,
        stores,
      });
    } else if (delivery.state === "failed") {
      this.#gaveUp(job, delivery);
    } else if (this.#closed) {
      log.info(
        `job ${job.id}: delivery to ${name} stopped by the shutdown, ${report.sent} of ${report.instancesTotal} sent; the rest goes at the next start`,
      );
    } else {
      log.warn(
        `job ${job.id}: delivery to ${name} (${where}), attempt ${delivery.attempts}: ${delivery.lastError}; ${report.sent} of ${report.instancesTotal} sent; next attempt ${
          utc(delivery.nextAttemptAt!)
        }, given up at ${utc(delivery.giveUpAt)}`,
      );
    }
  }

  /** A delivery was given up: logged, audited, and the hook told. */
  #gaveUp(job: JobRecord, delivery: DeliveryRecord): void {
    const { log, store, onDeliveryFailed } = this.#options;
    const reason = delivery.lastError ?? "given up";
    const files = store.deliveries.files(job.id, delivery.destination);
    const sent = files.filter((f) => f.state === "sent").length;
    const failed = files.filter((f) => f.state === "pending" || f.state === "failed").length;
    log.error(
      `job ${job.id}: delivery to ${delivery.destination} given up after ${delivery.attempts} attempt(s): ${reason}; ${sent} file(s) sent, ${failed} not`,
    );
    this.#audit("delivery_failed", {
      job: job.id,
      destination: delivery.destination,
      reason,
      sent,
      failed,
    });
    try {
      onDeliveryFailed?.(job, delivery.destination, reason);
    } catch (error) {
      log.error(`job ${job.id}: ON_DELIVERY_FAILED: ${errorMessage(error)}`);
    }
  }

  #audit(event: string, fields: Record<string, unknown>): void {
    this.#options.audit?.record(event, fields).catch((error) =>
      this.#options.log.error(`audit log: cannot record ${event}: ${errorMessage(error)}`)
    );
  }
}
