/**
 * Seeing one job through its sessions (docs/PROTOCOL.md §6.6; README "Exit codes"):
 * run a {@link JobSession}, and when the connection breaks after the server named the
 * job, connect again ({@link Reconnector}) and go on where it stopped: `resume_upload`
 * during the upload (only the bytes the server lacks are sent), `follow_job` with
 * `deliver` afterwards (the download resumes after the verified results). A job the
 * server has is never submitted again. Without the results (`download` false,
 * `--no-download`) a queued job is followed in a session of its own, `follow_job`
 * without `deliver`, to its final state.
 *
 * When reconnecting takes longer than CLIENT_RECONNECT_TIMEOUT the job goes on without
 * us: LostContactError (exit code 5) names the command that fetches its results later;
 * an upload that cannot be completed is a ConnectionError (exit code 3), since there is
 * nothing to fetch. A key the server no longer accepts (lib/client/reconnect.ts) ends
 * the run at once, exit code 3, with no command to fetch or cancel: neither can work
 * with this key. Ctrl-C during an upload cuts the session and cancels the job in a
 * session of its own.
 *
 * @module
 */
import type { Channel } from "../wire/channel.ts";
import {
  ConnectionError,
  errorMessage,
  InterruptedError,
  JobError,
  LostContactError,
  ReconError,
} from "../errors.ts";
import {
  ClientJob,
  defaultCommand,
  type JobOptions,
  type JobOutcome,
  JobSession,
  type Opening,
} from "./job_session.ts";
import { JobCancelledError } from "./job.ts";
import { cancelJob } from "./query.ts";
import {
  formatTimeout,
  GaveUp,
  isConnectionLoss,
  keyRefusedAfter,
  type ReconnectOptions,
  Reconnector,
} from "./reconnect.ts";

/** Inputs of {@link runJob}. */
export interface RunJobOptions extends JobOptions {
  /** How the first session begins. */
  opening: Opening;
  /** The job, for an opening that names one (resume, follow). */
  jobId?: string;
  /** The first session, already open; without it {@link connect} opens it. */
  channel?: Channel;
  /** Opens a session: needed to reconnect, and for the first session without `channel`. */
  connect?: () => Promise<Channel>;
  /**
   * CLIENT_RECONNECT_TIMEOUT in ms. Without it (or without `connect`) a lost connection
   * ends the run as it is.
   */
  reconnectTimeoutMs?: number;
  /** Test hooks for reconnecting: sleep, clock, jitter, delays. */
  reconnect?: Partial<Omit<ReconnectOptions, "connect" | "timeoutMs">>;
  /** Aborted on Ctrl-C. */
  signal?: AbortSignal;
}

/** The session must close politely: the job's end was agreed (failed, cancelled, refused). */
function settled(error: unknown): boolean {
  return error instanceof JobError || error instanceof JobCancelledError;
}

/**
 * Run a job to its outcome over as many sessions as it takes. A channel this function
 * opened is closed here; `options.channel` is left to the caller (it may be dead).
 */
export async function runJob(options: RunJobOptions): Promise<JobOutcome> {
  const { signal } = options;
  if (signal?.aborted) throw new InterruptedError("interrupted before the job was sent");
  const kind = options.opening.kind;
  const job = new ClientJob(
    kind === "follow" ? "wait" : "upload",
    kind === "resume" || kind === "follow" ? options.jobId : undefined,
  );
  if ((kind === "resume" || kind === "follow") && !job.jobId) {
    throw new TypeError(`runJob(): a ${kind} opening needs a job id`);
  }
  const reconnector = options.connect && options.reconnectTimeoutMs !== undefined
    ? new Reconnector({
      ...options.reconnect,
      connect: options.connect,
      timeoutMs: options.reconnectTimeoutMs,
    })
    : undefined;
  if (!options.channel && !options.connect) {
    throw new TypeError("runJob(): give a channel, a connect function, or both");
  }
  const notice = (text: string) => options.onEvent?.({ kind: "reconnect", text });
  let channel = options.channel ?? await options.connect!();
  let opening = options.opening;
  while (true) {
    const session = new JobSession(channel, job, opening, options, () => reconnector?.heard());
    const onAbort = () => session.interrupt();
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted) session.interrupt();
    const own = channel !== options.channel;
    try {
      const outcome = await session.run();
      if (own) await channel.close();
      if (outcome.kind !== "queued" || !followWithoutResults(options)) return outcome;
    } catch (caught) {
      let error = caught;
      if (job.interrupted && !(error instanceof InterruptedError)) {
        error = new InterruptedError("interrupted", { cause: error });
      }
      if (own) {
        if (settled(error) && !channel.closed) await channel.close();
        else channel.abort();
      } else if (reconnector && isConnectionLoss(error)) {
        channel.abort(); // dead anyway; its successor is ours
      }
      if (job.cancelWanted && job.jobId) {
        throw await cancelAfterInterrupt(options, job.jobId, error);
      }
      if (
        job.interrupted || !reconnector || !job.jobId || !isConnectionLoss(error) ||
        signal?.aborted
      ) {
        throw error;
      }
      channel = await reconnectAfter(error, reconnector, job, options);
      opening = job.phase === "upload" ? { kind: "resume" } : { kind: "follow" };
      notice(
        job.phase === "upload"
          ? `reconnected; resuming the upload of job ${job.jobId}`
          : `reconnected; following job ${job.jobId} again`,
      );
      continue;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    // Queued, and its results are not wanted: follow it without them, in a session of
    // its own (the submission's would send them).
    opening = { kind: "follow" };
    try {
      channel = await options.connect!();
    } catch (error) {
      if (!reconnector || !isConnectionLoss(error) || signal?.aborted) throw error;
      channel = await reconnectAfter(error, reconnector, job, options);
    }
  }
}

/** `download` false: a queued job is followed to its end without its results. */
function followWithoutResults(options: RunJobOptions): boolean {
  if (options.download !== false || options.until === "queued") return false;
  if (!options.connect) throw new TypeError("runJob(): download false needs a connect function");
  return true;
}

/** Wait for a new session after `error`, or throw what the run ends with. */
async function reconnectAfter(
  error: unknown,
  reconnector: Reconnector,
  job: ClientJob,
  options: RunJobOptions,
): Promise<Channel> {
  const jobId = job.jobId!;
  try {
    return await reconnector.lost(
      error,
      (text) => options.onEvent?.({ kind: "reconnect", text }),
      options.signal,
    );
  } catch (failure) {
    if (failure instanceof InterruptedError) {
      job.interrupted = true;
      const cancel = options.cancelOnInterrupt ?? true;
      if (cancel && job.phase !== "download") {
        throw await cancelAfterInterrupt(options, jobId, failure);
      }
      throw new InterruptedError(`interrupted while reconnecting to follow job ${jobId}`, {
        hint: `it goes on on the server; fetch its results later: ${fetchCommand(options, jobId)}`,
      });
    }
    if (!(failure instanceof GaveUp)) throw failure;
    throw lostContact(failure, reconnector, job, options);
  }
}

function fetchCommand(options: RunJobOptions, jobId: string): string {
  return (options.command ?? defaultCommand)("fetch", jobId);
}

function cancelCommand(options: RunJobOptions, jobId: string): string {
  return (options.command ?? defaultCommand)("cancel", jobId);
}

/** The error a run ends with when reconnecting gave up. */
function lostContact(
  gaveUp: GaveUp,
  reconnector: Reconnector,
  job: ClientJob,
  options: RunJobOptions,
): ReconError {
  const jobId = job.jobId!;
  const where = job.phase === "upload"
    ? "during the upload of"
    : job.phase === "download"
    ? "while downloading the results of"
    : "while following";
  const lost = `lost the connection ${where} job ${jobId}`;
  const refused = keyRefusedAfter(lost, gaveUp);
  if (refused) return refused;
  const within = gaveUp.timedOut
    ? ` within CLIENT_RECONNECT_TIMEOUT (${formatTimeout(reconnector.timeoutMs)})`
    : "";
  const last = errorMessage(gaveUp.last);
  if (job.phase === "upload") {
    return new ConnectionError(
      `${lost} and could not reconnect${within}: ${last}`,
      {
        hint: "the server keeps what arrived for UPLOAD_RESUME_WINDOW, then fails the job; " +
          `send the files again (and ${cancelCommand(options, jobId)} drops the partial job now)`,
        cause: gaveUp.last,
      },
    );
  }
  return new LostContactError(
    jobId,
    `${lost} and could not reconnect${within}: ${last}`,
    {
      hint: `job ${jobId} stays on the server; fetch its results later: ${
        fetchCommand(options, jobId)
      }`,
      fetchCommand: fetchCommand(options, jobId),
      cause: gaveUp.last,
    },
  );
}

/**
 * Ctrl-C cut an upload (or a reconnection): cancel the job in a session of its own,
 * so that it neither waits for a resume nor runs. Returns the error to throw.
 */
async function cancelAfterInterrupt(
  options: RunJobOptions,
  jobId: string,
  cause: unknown,
): Promise<InterruptedError> {
  if (!options.connect) {
    return new InterruptedError(`interrupted during the upload of job ${jobId}`, {
      hint: "the server keeps what arrived for UPLOAD_RESUME_WINDOW, then fails the job",
      cause,
    });
  }
  options.onEvent?.({ kind: "notice", text: `cancelling job ${jobId} on the server…` });
  let channel: Channel | undefined;
  try {
    channel = await options.connect();
    const job = await cancelJob(channel, jobId, "interrupted");
    await channel.close();
    if (job.state === "cancelled") return new JobCancelledError(jobId);
    return new InterruptedError(
      `interrupted; job ${jobId} ${job.state} before it could be cancelled`,
      {
        cause,
      },
    );
  } catch (error) {
    channel?.abort();
    return new InterruptedError(
      `interrupted; could not cancel job ${jobId} on the server: ${errorMessage(error)}`,
      { hint: `if it is still there: ${cancelCommand(options, jobId)}`, cause },
    );
  }
}
