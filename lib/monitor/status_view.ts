/**
 * What the status page (lib/monitor/status_page.ts) shows, read from a running
 * ReconServer at one instant (issue 16): the server (version, host, uptime, executor,
 * disk free against DISK_FREE_MARGIN, workers, the counts `--server-status` gives, from
 * the same sources as lib/server/session.ts), the running jobs with their progress, the
 * uploads in progress, the queue in order, the last 50 finished jobs and 24 hourly
 * figures; with DICOM destinations, the deliveries (lib/monitor/status_delivery_view.ts).
 *
 * The view holds job ids, client names, priorities, states, sizes, times and failure
 * reasons only: never a file name or a directory, which may carry patient data. A
 * failure reason is text from elsewhere (an error message, a cancel reason) that could
 * name a job's files, so those of the job, its directories and RECON_FILEPATH /
 * RECON_DICOM_DIR are blanked out of it here (lib/monitor/status_redact.ts), before
 * anything renders it; a delivery's last error too.
 *
 * @module
 */
import type { ReconConfig } from "../opts/mod.ts";
import type { JobRecord, JobStore } from "../server/job_store.ts";
import type { ReconServer } from "../server/server.ts";
import { diskFree as statfsFree } from "../server/session.ts";
import { VERSION } from "../version.ts";
import type { JobState, Priority } from "../wire/protocol.ts";
import {
  type DeliveriesView,
  deliveriesView,
  type DeliveryView,
  jobDeliveries,
} from "./status_delivery_view.ts";
import { jobSecrets, redact } from "./status_redact.ts";

export { redact };

/** How many finished jobs the page lists. */
export const RECENT_FINISHED = 50;
/** Hours in the chart (the current one included). */
export const CHART_HOURS = 24;
/**
 * At most this many jobs are counted in the chart (the newest; more is noted on the
 * page): reading 5,000 records costs about 50 ms, far more than a recon box finishes
 * in a day.
 */
export const CHART_JOB_LIMIT = 5_000;
/** Seconds between the page's reloads (`<meta http-equiv="refresh">`). */
export const REFRESH_SECONDS = 15;

const HOUR_MS = 3_600_000;

/** A running job. */
export interface RunningJobView {
  id: string;
  client: string;
  priority: Priority;
  startedAt: number;
  elapsedMs: number;
  /** The script's last `PROGRESS n`, when it printed one. */
  percent?: number;
  /** `local` or `slurm`, and the executor's name for the run (a Slurm job id). */
  executor: string;
  executorRef?: string;
  /** Runs started so far, this one included. */
  attempt: number;
  fileCount: number;
  inputBytes: number;
}

/** A job whose inputs are still arriving (`receiving`). */
export interface UploadView {
  id: string;
  client: string;
  priority: Priority;
  submittedAt: number;
  /** Verified bytes on disk so far (lib/server/job_leases.ts `heldBytes`). */
  receivedBytes: number;
  /** Bytes announced. */
  totalBytes: number;
  fileCount: number;
  /** True while a session sends it; false for a cut-off upload waiting to be resumed. */
  active: boolean;
  /** Until when a cut-off upload may be resumed. */
  resumableUntil?: number;
}

/** A queued job, in queue order. */
export interface QueuedJobView {
  position: number;
  id: string;
  client: string;
  priority: Priority;
  /** Since when it waits (queued, or submitted when older records lack it). */
  waitingSince: number;
  waitingMs: number;
  fileCount: number;
  inputBytes: number;
  /** Runs started before (a restart or an unavailable executor put it back). */
  attempts: number;
}

/** A job that finished (or expired after it succeeded). */
export interface FinishedJobView {
  id: string;
  client: string;
  priority: Priority;
  state: JobState;
  finishedAt: number;
  /** From its (last) start to its end; absent when it never ran. */
  durationMs?: number;
  inputBytes: number;
  resultCount?: number;
  resultBytes?: number;
  /** Why it failed or was cancelled, file names and directories blanked out. */
  reason?: string;
  /** Its deliveries to DICOM destinations, by destination; absent when it has none. */
  deliveries?: DeliveryView[];
}

/** One hour of the chart: [start, start + 1 h). */
export interface HourView {
  start: number;
  succeeded: number;
  failed: number;
  cancelled: number;
  /** Input bytes of the jobs queued in this hour. */
  inputBytes: number;
}

/** Everything the status page shows, at `now`. */
export interface StatusView {
  now: number;
  version: string;
  host: string;
  startedAt: number;
  uptimeMs: number;
  executor: string;
  /** Why the executor takes no jobs now, since when (lib/server/scheduler.ts). */
  executorProblem?: { reason: string; since: number };
  disk: {
    /** Free on RECON_FILEPATH's file system; absent when it could not be read. */
    freeBytes?: number;
    marginBytes: number;
    keptInputBytes: number;
    keptResultBytes: number;
  };
  workers: { busy: number; max: number };
  /** Since this server started, as `--server-status` counts them. */
  sinceStart: { succeeded: number; failed: number; cancelled: number };
  queuedByPriority: Record<Priority, number>;
  /** What needs someone's attention now, one line each; empty when all is well. */
  problems: string[];
  running: RunningJobView[];
  uploads: UploadView[];
  queue: QueuedJobView[];
  finished: FinishedJobView[];
  /** {@link CHART_HOURS} hours, oldest first, the last one the current (partial) hour. */
  hours: HourView[];
  /** True when more jobs finished in the chart's hours than {@link CHART_JOB_LIMIT}. */
  chartTruncated: boolean;
  /** The deliveries to DICOM destinations; absent when the server has no destination. */
  deliveries?: DeliveriesView;
  refreshSeconds: number;
}

/** What a ReconServer does not expose and the page needs. */
export interface StatusSettings {
  /**
   * EXECUTOR; RECON_FILEPATH (disk free is measured there); DISK_FREE_MARGIN;
   * RECON_DICOM_DIR; DESTINATIONS (the deliveries are shown when there is one).
   */
  config: Pick<
    ReconConfig,
    "EXECUTOR" | "RECON_FILEPATH" | "RECON_DICOM_DIR" | "DISK_FREE_MARGIN" | "DESTINATIONS"
  >;
  /** When the server started (ms since the epoch); default: when this process started. */
  startedAt?: number;
  /** Free bytes on the file system of a directory; default statfs (tests pretend). */
  diskFree?: (dir: string) => Promise<number>;
  /**
   * What needs attention, one line each, for the page's banner: pass `/healthz`'s lines
   * (lib/monitor/health.ts) so that the page and the probe agree. Default: the
   * executor's problem and the disk under DISK_FREE_MARGIN.
   */
  problems?: string[];
}

/** Read what the status page shows from `server` at `now` (ms since the epoch). */
export async function statusView(
  server: ReconServer,
  now: number,
  settings: StatusSettings,
): Promise<StatusView> {
  const { store, scheduler, leases } = server;
  const { config } = settings;
  const startedAt = settings.startedAt ?? Math.round(performance.timeOrigin);
  const counts = store.counts();
  const kept = store.keptBytes();
  // A receiving job's verified bytes are on disk too (as --server-status counts them).
  let partial = 0;
  for (const bytes of leases.heldBytes.values()) partial += bytes;
  const freeBytes = await (settings.diskFree ?? statfsFree)(config.RECON_FILEPATH)
    .catch(() => undefined);
  const hidden = [config.RECON_FILEPATH, config.RECON_DICOM_DIR];

  // From the store: the executor's id for the run (a Slurm job id) came after the start.
  const live = scheduler.running().map((job) => ({ job, record: store.get(job.id) ?? job.record }));
  const running = live.map(({ job, record }): RunningJobView => {
    const started = record.startedAt ?? job.record.startedAt ?? now;
    return {
      id: record.id,
      client: record.client,
      priority: record.priority,
      startedAt: started,
      elapsedMs: Math.max(0, now - started),
      percent: job.percent,
      executor: record.executor,
      executorRef: record.executorRef,
      attempt: record.attempts,
      fileCount: record.fileCount,
      inputBytes: record.inputBytes,
    };
  });

  const uploads = store.inState("receiving").map((record): UploadView => {
    const active = leases.uploading(record.id);
    const until = Math.max(record.uploadExpiresAt ?? 0, leases.resumeUntil.get(record.id) ?? 0);
    return {
      id: record.id,
      client: record.client,
      priority: record.priority,
      submittedAt: record.submittedAt,
      receivedBytes: Math.min(leases.heldBytes.get(record.id) ?? 0, record.inputBytes),
      totalBytes: record.inputBytes,
      fileCount: record.fileCount,
      active,
      resumableUntil: active || until === 0 ? undefined : until,
    };
  });

  const queued = store.queued();
  const queue = queued.map((record, index): QueuedJobView => {
    const since = record.queuedAt ?? record.submittedAt;
    return {
      position: index + 1,
      id: record.id,
      client: record.client,
      priority: record.priority,
      waitingSince: since,
      waitingMs: Math.max(0, now - since),
      fileCount: record.fileCount,
      inputBytes: record.inputBytes,
      attempts: record.attempts,
    };
  });

  const finished = store.finishedSince(0, RECENT_FINISHED).map((record) =>
    finishedJob(store, record, hidden)
  );

  const chart = hourlyFigures(store, now, [...queued, ...live.map(({ record }) => record)]);

  const problem = scheduler.executorProblem;
  const view: StatusView = {
    now,
    version: VERSION,
    host: hostName(),
    startedAt,
    uptimeMs: Math.max(0, now - startedAt),
    executor: config.EXECUTOR,
    executorProblem: problem && { reason: problem.reason, since: problem.since },
    disk: {
      freeBytes,
      marginBytes: config.DISK_FREE_MARGIN,
      keptInputBytes: kept.inputs + partial,
      keptResultBytes: kept.results,
    },
    workers: { busy: scheduler.activeWorkers, max: scheduler.maxWorkers },
    sinceStart: { ...scheduler.counts },
    queuedByPriority: { ...counts.queuedByPriority },
    problems: [],
    running,
    uploads,
    queue,
    finished,
    hours: chart.hours,
    chartTruncated: chart.truncated,
    refreshSeconds: REFRESH_SECONDS,
  };
  const destinations = Object.keys(config.DESTINATIONS);
  if (destinations.length > 0) {
    view.deliveries = deliveriesView(store, now, destinations, hidden);
  }
  view.problems = settings.problems ? [...settings.problems] : problemsOf(view);
  return view;
}

/** The lines of the page's banner: what keeps jobs from running or being accepted. */
function problemsOf(view: StatusView): string[] {
  const problems: string[] = [];
  if (view.executorProblem) {
    problems.push(
      `The executor (${view.executor}) takes no jobs: ${view.executorProblem.reason}`,
    );
  }
  const { freeBytes, marginBytes } = view.disk;
  if (freeBytes === undefined) {
    problems.push("The free space on RECON_FILEPATH cannot be read.");
  } else if (freeBytes < marginBytes) {
    problems.push(
      "The disk of RECON_FILEPATH has less free space than DISK_FREE_MARGIN: new jobs are refused.",
    );
  }
  return problems;
}

/** A finished job for the page, its reason with file names and directories blanked out. */
function finishedJob(store: JobStore, record: JobRecord, hidden: string[]): FinishedJobView {
  const job: FinishedJobView = {
    id: record.id,
    client: record.client,
    priority: record.priority,
    state: record.state,
    finishedAt: record.finishedAt ?? record.submittedAt,
    inputBytes: record.inputBytes,
  };
  if (record.startedAt !== undefined && record.finishedAt !== undefined) {
    job.durationMs = Math.max(0, record.finishedAt - record.startedAt);
  }
  if (record.resultCount !== undefined) job.resultCount = record.resultCount;
  if (record.resultBytes !== undefined) job.resultBytes = record.resultBytes;
  if (record.cancelledBy) {
    // A cancel reason is whatever the person typed, which may name a patient: only who.
    job.reason = `cancelled by ${record.cancelledBy.replace(/ at \S+$/, "")}`;
  } else if (record.reason) {
    job.reason = redact(record.reason, jobSecrets(store, record, hidden));
  }
  if (record.state === "succeeded" || record.state === "expired") {
    const deliveries = jobDeliveries(store, record.id);
    if (deliveries.length > 0) job.deliveries = deliveries;
  }
  return job;
}

/**
 * The chart's hours: jobs finished per hour by state (an expired job succeeded), and
 * input bytes of the jobs queued per hour (finished, queued or running now).
 */
function hourlyFigures(
  store: JobStore,
  now: number,
  waiting: JobRecord[],
): { hours: HourView[]; truncated: boolean } {
  const first = Math.floor(now / HOUR_MS) * HOUR_MS - (CHART_HOURS - 1) * HOUR_MS;
  const hours: HourView[] = Array.from({ length: CHART_HOURS }, (_, i) => ({
    start: first + i * HOUR_MS,
    succeeded: 0,
    failed: 0,
    cancelled: 0,
    inputBytes: 0,
  }));
  const slot = (ms: number | undefined) => {
    if (ms === undefined || ms < first) return undefined;
    return hours[Math.floor((ms - first) / HOUR_MS)];
  };
  const done = store.finishedSince(first, CHART_JOB_LIMIT);
  const jobs = new Map<string, JobRecord>();
  for (const record of [...done, ...waiting]) jobs.set(record.id, record);
  for (const record of done) {
    const hour = slot(record.finishedAt);
    if (!hour) continue;
    if (record.state === "succeeded" || record.state === "expired") hour.succeeded++;
    else if (record.state === "failed") hour.failed++;
    else if (record.state === "cancelled") hour.cancelled++;
  }
  for (const record of jobs.values()) {
    const hour = slot(record.queuedAt);
    if (hour) hour.inputBytes += record.inputBytes;
  }
  return { hours, truncated: done.length >= CHART_JOB_LIMIT };
}

/** This host's name, or "unknown" without --allow-sys. */
function hostName(): string {
  try {
    return Deno.hostname();
  } catch {
    return "unknown";
  }
}
