/**
 * The PACS delivery metrics of /metrics (issue 17), in the server's registry
 * (lib/server/server_metrics.ts): what each attempt stored and asked, how deliveries
 * ended, by destination (a label bounded by recon.opts' DESTINATION_<NAME> lines), and
 * the deliveries in the job store by state, read again at most once a second.
 *
 * @module
 */
import { Counter, Gauge, type Registry } from "prom-client";
import { DELIVERY_STATES } from "../wire/protocol.ts";
import type { JobStore } from "./job_store.ts";
import type { AttemptTally } from "./pacs_delivery.ts";

/** How often, at most, a scrape asks the store for the deliveries by state. */
const REREAD_MS = 1000;

/** How an attempt ended, as the attempts counter labels it. */
const OUTCOMES = ["delivered", "retry", "failed"] as const;

/** Delivery metrics registered in `registry`; every destination's series present at 0. */
export class DeliveryMetrics {
  #store: JobStore;
  #readAt?: number;
  #stored: Counter<"destination">;
  #stores: Counter<"destination">;
  #attempts: Counter<"destination" | "outcome">;
  #ended: Counter<"destination" | "outcome">;
  #byState: Gauge<"state">;

  constructor(registry: Registry, store: JobStore, destinations: readonly string[]) {
    this.#store = store;
    const registers = [registry];
    this.#stored = new Counter({
      name: "recon_pacs_instances_sent_total",
      help: "DICOM files a destination confirmed it stored (C-STORE success or warning).",
      labelNames: ["destination"],
      registers,
    });
    this.#stores = new Counter({
      name: "recon_pacs_store_requests_total",
      help: "C-STORE requests sent, retries included.",
      labelNames: ["destination"],
      registers,
    });
    this.#attempts = new Counter({
      name: "recon_pacs_delivery_attempts_total",
      help:
        "Delivery attempts, by how they ended: delivered, retry (tried again later), failed (given up).",
      labelNames: ["destination", "outcome"],
      registers,
    });
    this.#ended = new Counter({
      name: "recon_pacs_deliveries_total",
      help: "Deliveries that reached delivered or failed (given up after DELIVERY_RETRY_FOR).",
      labelNames: ["destination", "outcome"],
      registers,
    });
    this.#byState = new Gauge({
      name: "recon_pacs_deliveries",
      help: "Deliveries in the job store, by state (pending, sending, delivered, failed).",
      labelNames: ["state"],
      registers,
    });
    for (const destination of destinations) {
      this.#stored.inc({ destination }, 0);
      this.#stores.inc({ destination }, 0);
      for (const outcome of OUTCOMES) this.#attempts.inc({ destination, outcome }, 0);
      for (const outcome of ["delivered", "failed"]) this.#ended.inc({ destination, outcome }, 0);
    }
  }

  /** An attempt of a delivery to `destination` ended (lib/server/pacs_delivery.ts). */
  attemptEnded(destination: string, attempt: AttemptTally): void {
    this.#stored.inc({ destination }, attempt.stored);
    this.#stores.inc({ destination }, attempt.stores);
    const outcome = attempt.state === "delivered" || attempt.state === "failed"
      ? attempt.state
      : "retry";
    this.#attempts.inc({ destination, outcome });
    if (outcome !== "retry") this.#ended.inc({ destination, outcome });
    this.#readAt = undefined;
  }

  /** Before a scrape: the deliveries by state, from the store when due. */
  read(): void {
    if (this.#readAt !== undefined && performance.now() - this.#readAt < REREAD_MS) return;
    this.#readAt = performance.now();
    const counts = this.#store.deliveries.counts();
    for (const state of DELIVERY_STATES) this.#byState.set({ state }, counts[state] ?? 0);
  }
}
