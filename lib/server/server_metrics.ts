/**
 * The server's Prometheus metrics (issue 16): what `/metrics` shows, in the text
 * exposition format, from a registry of its own (no process metrics, no global state).
 *
 * Cheap by design, since a scrape may come every 100 ms during a 1 GiB upload: the byte
 * counters are one addition per read or write of a connection ({@link
 * ServerMetrics.countBytes}); finished jobs, durations and queue waits are counted from
 * the job store's change events as they happen; gauges (queue, running, kept bytes,
 * disk free, executor) are read at the scrape; the store's `counts()` and
 * `keptBytes()` (a scan of every job: 6 ms with 10,000) only when a job changed since the
 * last scrape. Nothing here names a file, a key or an address:
 * only states, priorities and bounded reason enums are labels.
 *
 * @module
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { ConnectionError, ProtocolError, TimeoutError } from "../errors.ts";
import { HandshakeRefused } from "../wire/handshake.ts";
import { PRIORITIES } from "../wire/protocol.ts";
import type { JobState } from "../wire/protocol.ts";
import type { AdmissionRefusal } from "./access.ts";
import type { ConnectionKeys } from "./client_registry.ts";
import type { JobLeases } from "./job_leases.ts";
import type { JobStore, StoreChange } from "./job_store.ts";
import type { Scheduler } from "./scheduler.ts";
import { DeliveryMetrics } from "./delivery_metrics.ts";
import type { AttemptTally } from "./pacs_delivery.ts";

/** Why a connection was refused before its handshake (`recon_connections_refused_total`). */
export const REFUSAL_REASONS = [
  "not_trusted",
  "busy",
  "too_many_from_address",
  "shutting_down",
] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

/** The label of AdmissionControl's refusal (lib/server/access.ts). */
export function admissionRefusalReason(refusal: AdmissionRefusal): RefusalReason {
  return refusal === "busy" ? "busy" : "too_many_from_address";
}

/** Why a handshake failed (`recon_handshake_failures_total`); see {@link handshakeFailureReason}. */
export const HANDSHAKE_FAILURE_REASONS = [
  "timeout",
  "closed",
  "bad_frame",
  "not_recon",
  "unsupported_version",
  "unknown_key",
  "key_refused",
  "bad_public_key",
  "confirmation_failed",
  "connection_lost",
  "other",
] as const;
export type HandshakeFailureReason = (typeof HANDSHAKE_FAILURE_REASONS)[number];

/** The final states a job is counted in, once (`recon_jobs_finished_total`). */
const FINISHED = ["succeeded", "failed", "cancelled"] as const satisfies readonly JobState[];

/** Job run times: a few seconds to a night. */
const DURATION_BUCKETS = [5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800];
/** Queue waits: none to half a day. */
const WAIT_BUCKETS = [0.5, 1, 5, 15, 30, 60, 300, 600, 1800, 3600, 7200, 14400, 43200];

/** The store's figures are asked again at least this often (ms), changes or not. */
const REREAD_MS = 60_000;

/** The server-side messages of lib/wire/handshake.ts, by what they mean. */
const REFUSED_MESSAGES: [prefix: string, reason: HandshakeFailureReason][] = [
  ["closed before sending a hello", "closed"],
  ["first frame is not a recon hello", "not_recon"],
  ["malformed client hello", "not_recon"],
  ["unsupported protocol version", "unsupported_version"],
  ["unknown key id", "unknown_key"],
  ["client sent an unusable X25519 public key", "bad_public_key"],
  ["closed before confirming", "confirmation_failed"],
  ["client confirmation did not verify", "confirmation_failed"],
];

/**
 * The bounded label for a failed handshake: `error` as `Channel.accept` threw it, and
 * the connection's `keys` (an existing key id that is revoked, retired or not accepted
 * from this address is `key_refused`; one nobody has is `unknown_key`).
 */
export function handshakeFailureReason(
  error: unknown,
  keys?: Pick<ConnectionKeys, "refusal">,
): HandshakeFailureReason {
  if (error instanceof TimeoutError) return "timeout";
  if (error instanceof HandshakeRefused) {
    const found = REFUSED_MESSAGES.find(([prefix]) => error.message.startsWith(prefix));
    const reason = found?.[1] ?? "other";
    return reason === "unknown_key" && keys?.refusal !== undefined ? "key_refused" : reason;
  }
  if (error instanceof ProtocolError) return "bad_frame";
  if (error instanceof ConnectionError) return "connection_lost";
  return "other";
}

/** What {@link ServerMetrics} reads. */
export interface ServerMetricsParts {
  store: JobStore;
  scheduler: Scheduler;
  leases: JobLeases;
  /** Where disk free is measured (RECON_FILEPATH), and DISK_FREE_MARGIN. */
  reconFilePath: string;
  diskFreeMargin: number;
  diskFree: (dir: string) => Promise<number>;
  /** EXECUTOR (`local`, `slurm`). */
  executor: string;
  version: string;
  /** The DESTINATION_<NAME> names (upper case): the PACS delivery metrics' label values. */
  destinations?: readonly string[];
  /** The clock (ms since the epoch); default Date.now. */
  now?: () => number;
}

/** The metrics of one running server. */
export class ServerMetrics {
  /** The Content-Type of {@link render}'s text. */
  readonly contentType: string;
  #parts: ServerMetricsParts;
  #registry = new Registry();
  #received = 0;
  #sent = 0;
  #reported = { received: 0, sent: 0 };
  #connections = 0;
  #sessions = 0;
  /** When the store was last asked (performance.now()); undefined: a job changed since. */
  #storeReadAt?: number;
  #kept = { inputs: 0, results: 0 };
  #unsubscribe: () => void;
  #m: ReturnType<typeof defineMetrics>;
  #deliveries: DeliveryMetrics;

  constructor(parts: ServerMetricsParts) {
    this.#parts = parts;
    this.contentType = this.#registry.contentType;
    this.#m = defineMetrics(this.#registry);
    this.#deliveries = new DeliveryMetrics(this.#registry, parts.store, parts.destinations ?? []);
    this.#m.buildInfo.set({ version: parts.version, deno: Deno.version.deno }, 1);
    this.#m.startTime.set(Math.floor((parts.now ?? Date.now)() / 1000));
    this.#m.executor.set({ executor: parts.executor }, 1);
    this.#unsubscribe = parts.store.onChange((change) => this.#jobChanged(change));
  }

  connectionOpened(): void {
    this.#connections++;
  }

  connectionClosed(): void {
    this.#connections--;
  }

  /** A session authenticated. */
  sessionOpened(): void {
    this.#sessions++;
  }

  sessionClosed(): void {
    this.#sessions--;
  }

  /**
   * `conn`, its `read` and `write` counting the bytes they move (one addition each).
   * Everything in lib/wire reads and writes through these two.
   */
  countBytes(conn: Deno.Conn): Deno.Conn {
    const read = conn.read.bind(conn);
    const write = conn.write.bind(conn);
    conn.read = async (p) => {
      const n = await read(p);
      if (n !== null) this.#received += n;
      return n;
    };
    conn.write = async (p) => {
      const n = await write(p);
      this.#sent += n;
      return n;
    };
    return conn;
  }

  handshakeFailed(reason: HandshakeFailureReason): void {
    this.#m.handshakeFailures.inc({ reason });
  }

  connectionRefused(reason: RefusalReason): void {
    this.#m.refused.inc({ reason });
  }

  /** An attempt to deliver to a PACS ended (lib/server/pacs_delivery.ts onAttemptEnd). */
  deliveryAttempted(destination: string, attempt: AttemptTally): void {
    this.#deliveries.attemptEnded(destination, attempt);
  }

  /** The metrics now, in the Prometheus text format. */
  async render(): Promise<string> {
    this.#flushBytes();
    this.#readScheduler();
    this.#readStore();
    this.#deliveries.read();
    await this.#readDisk();
    return await this.#registry.metrics();
  }

  /** Stop counting job changes (the store outlives no server). */
  close(): void {
    this.#unsubscribe();
  }

  /** Counters and histograms follow each state change as the store commits it. */
  #jobChanged({ job, from, what }: StoreChange): void {
    this.#storeReadAt = undefined;
    if (what !== "state") return;
    if (from === "receiving" && job.state === "queued") this.#m.submitted.inc();
    if (from === "queued" && job.state === "running") {
      observe(this.#m.queueWait, job.queuedAt, job.startedAt);
    }
    const state = FINISHED.find((final) => final === job.state);
    if (!state || FINISHED.some((final) => final === from)) return; // each job once
    this.#m.finished.inc({ state });
    if (from === "running") observe(this.#m.duration, job.startedAt, job.finishedAt);
  }

  /** The byte counters catch up with the connections (a delta: scrapes may overlap). */
  #flushBytes(): void {
    const received = this.#received - this.#reported.received;
    const sent = this.#sent - this.#reported.sent;
    this.#reported = { received: this.#received, sent: this.#sent };
    this.#m.received.inc(received);
    this.#m.sent.inc(sent);
  }

  #readScheduler(): void {
    this.#m.connectionsOpen.set(this.#connections);
    this.#m.sessionsOpen.set(this.#sessions);
    this.#m.executorAvailable.set(this.#parts.scheduler.executorProblem ? 0 : 1);
  }

  /**
   * The store's figures, asked again only after a job changed (or a minute passed, in
   * case a write did not announce itself); partial uploads as `--server-status` counts
   * them, at every scrape.
   */
  #readStore(): void {
    const { store, leases } = this.#parts;
    if (this.#storeReadAt === undefined || performance.now() - this.#storeReadAt > REREAD_MS) {
      this.#storeReadAt = performance.now();
      const { byState, queuedByPriority } = store.counts();
      for (const priority of PRIORITIES) {
        this.#m.queued.set({ priority }, queuedByPriority[priority]);
      }
      this.#m.running.set(byState.running);
      this.#m.receiving.set(byState.receiving);
      this.#kept = store.keptBytes();
      this.#m.keptResults.set(this.#kept.results);
    }
    let partial = 0;
    for (const bytes of leases.heldBytes.values()) partial += bytes;
    this.#m.keptInputs.set(this.#kept.inputs + partial);
  }

  /** Disk free on RECON_FILEPATH; a file system that cannot be read has no sample. */
  async #readDisk(): Promise<void> {
    const { diskFree, reconFilePath, diskFreeMargin } = this.#parts;
    this.#m.diskMargin.set(diskFreeMargin);
    const free = await diskFree(reconFilePath).catch(() => undefined);
    const name = "recon_disk_free_bytes";
    const registered = this.#registry.getSingleMetric(name) !== undefined;
    if (free === undefined) {
      if (registered) this.#registry.removeSingleMetric(name);
      return;
    }
    if (!registered) this.#registry.registerMetric(this.#m.diskFree);
    this.#m.diskFree.set(free);
  }
}

/** Observe the seconds from `start` to `end` (ms since the epoch) when both are known. */
function observe(histogram: Histogram, start?: number, end?: number): void {
  if (start !== undefined && end !== undefined) histogram.observe(Math.max(0, end - start) / 1000);
}

/** Every metric, registered in `registry`, labelled series present at 0. */
function defineMetrics(registry: Registry) {
  const registers = [registry];
  const counter = <L extends string>(name: string, help: string, labelNames: L[] = []) =>
    new Counter<L>({ name, help, labelNames, registers });
  const gauge = <L extends string>(name: string, help: string, labelNames: L[] = []) =>
    new Gauge<L>({ name, help, labelNames, registers });
  const m = {
    finished: counter(
      "recon_jobs_finished_total",
      "Jobs that reached a final state since this server started, by that state (uploads that failed included; a job cancelled while running is cancelled only).",
      ["state"],
    ),
    submitted: counter(
      "recon_jobs_submitted_total",
      "Jobs whose upload completed and that were queued, since this server started.",
    ),
    queued: gauge("recon_jobs_queued", "Jobs waiting in the queue, by priority.", ["priority"]),
    running: gauge("recon_jobs_running", "Jobs running now."),
    receiving: gauge("recon_jobs_receiving", "Jobs whose inputs are being uploaded."),
    duration: new Histogram({
      name: "recon_job_duration_seconds",
      help:
        "Run time of jobs that ran to a final state (running to succeeded, failed or cancelled).",
      buckets: DURATION_BUCKETS,
      registers,
    }),
    queueWait: new Histogram({
      name: "recon_job_queue_wait_seconds",
      help: "Time jobs waited in the queue before they started (queued to running).",
      buckets: WAIT_BUCKETS,
      registers,
    }),
    received: counter(
      "recon_network_received_bytes_total",
      "Bytes received on client connections, handshakes and framing included.",
    ),
    sent: counter(
      "recon_network_sent_bytes_total",
      "Bytes sent on client connections, handshakes and framing included.",
    ),
    handshakeFailures: counter(
      "recon_handshake_failures_total",
      "Connections admitted whose handshake failed, by reason.",
      ["reason"],
    ),
    refused: counter(
      "recon_connections_refused_total",
      "Connections refused before any handshake, by reason.",
      ["reason"],
    ),
    connectionsOpen: gauge("recon_connections_open", "Client connections open now."),
    sessionsOpen: gauge("recon_sessions_open", "Authenticated sessions open now."),
    diskFree: new Gauge({
      name: "recon_disk_free_bytes",
      help: "Bytes free for the server on the file system of RECON_FILEPATH.",
      registers: [],
    }),
    diskMargin: gauge(
      "recon_disk_free_margin_bytes",
      "DISK_FREE_MARGIN: jobs are refused when they would leave less free than this.",
    ),
    keptInputs: gauge(
      "recon_kept_input_bytes",
      "Bytes of job inputs kept on disk (partial uploads included).",
    ),
    keptResults: gauge("recon_kept_result_bytes", "Bytes of job results kept on disk."),
    executorAvailable: gauge(
      "recon_executor_available",
      "1 while the executor takes jobs, 0 while it cannot (e.g. Slurm does not answer).",
    ),
    executor: gauge("recon_executor_info", "The executor that runs jobs (EXECUTOR).", [
      "executor",
    ]),
    buildInfo: gauge("recon_build_info", "The recon and Deno versions of this server.", [
      "version",
      "deno",
    ]),
    startTime: gauge("recon_start_time_seconds", "When this server started (Unix time)."),
  };
  for (const state of FINISHED) m.finished.inc({ state }, 0);
  for (const reason of HANDSHAKE_FAILURE_REASONS) m.handshakeFailures.inc({ reason }, 0);
  for (const reason of REFUSAL_REASONS) m.refused.inc({ reason }, 0);
  return m;
}
