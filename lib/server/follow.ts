/**
 * Following a job for a session (docs/PROTOCOL.md §6.1 steps 5–6, §6.7): relay
 * `job_started` and `job_progress`, answer the client's `cancel_job`, and report the
 * outcome: `job_failed`, the results (lib/server/delivery.ts), or, for a version 3
 * `follow_job` without `deliver`, a last `job_status`.
 *
 * A session follows the job its submission, resumed upload or re-run queued, or any
 * job by id (`follow_job`). Several sessions may follow one job; each has its own
 * subscription (lib/server/job_events.ts). A client that leaves or breaks the
 * protocol here is cut off, and the session ends at once, but its job runs on.
 *
 * @module
 */
import type { Channel } from "../wire/channel.ts";
import type { Incoming } from "../wire/record.ts";
import { errorMessage, TransferError } from "../errors.ts";
import { type ClientMessage, type JobInfo, parseClientMessage } from "../wire/protocol.ts";
import { type JobRecord, toJobInfo } from "./job_store.ts";
import type { JobEvent, Subscription } from "./job_events.ts";
import { deliverResults, deliveryProblem } from "./delivery.ts";
import { Refusal, utc } from "./refusal.ts";
import { findJob, keptResultsHint, type SessionContext } from "./session_context.ts";

/** A session following a job (see {@link followJob}). */
interface Following {
  channel: Channel;
  jobId: string;
  subscription: Subscription;
  context: SessionContext;
  /** The client's next record, while the session still reads from it. */
  incoming?: Promise<Incoming>;
  /** Set once the client is gone or cut off: nothing more is sent to it. */
  clientGone?: Error;
  /** The client said GOODBYE: the session ends with the job. */
  ended: boolean;
}

/** What comes after a followed job: the session's pending read, or its end. */
export type AfterJob = { next?: Promise<Incoming>; ended?: boolean };

/** Options of {@link followJob}. */
export interface FollowOptions {
  /** Send a succeeded job's results (a submission, or `follow_job` with `deliver`). */
  deliver: boolean;
}

/**
 * `follow_job`: check that job `id` can be followed (else a {@link Refusal} of the
 * right kind), send `job_status`, then follow it. A job past its retention is settled
 * first, so the answer never depends on when the sweeper last ran.
 */
export async function followJobById(
  channel: Channel,
  id: string,
  deliver: boolean,
  context: SessionContext,
): Promise<AfterJob> {
  const found = findJob(context, id);
  const record = context.sweeper.settle(found);
  if (record.state === "receiving") {
    throw new Refusal(`job ${id} is still being uploaded; its client resumes it`);
  }
  if (
    record.state === "expired" || (deliver && record.state === "succeeded" && record.resultsRemoved)
  ) {
    throw expiredRefusal(record);
  }
  // Subscribed before job_status, so no event after it is missed.
  const subscription = context.scheduler.subscribe(id);
  await channel.send({ type: "job_status", job: jobInfo(record, context) });
  return await followJob(channel, id, subscription, context, { deliver });
}

/** `error {kind: "expired"}` for a job whose results were removed. */
export function expiredRefusal(record: JobRecord): Refusal {
  return new Refusal(
    `job ${record.id} expired on ${utc(record.resultsExpireAt ?? record.expiredAt ?? 0)}, ` +
      "its results were removed",
    "expired",
  );
}

/**
 * The job as `job_status` and `job_list` describe it, with its queue place, percentage
 * and its deliveries to DICOM destinations (§6.11), when it has any.
 */
export function jobInfo(record: JobRecord, context: SessionContext, position?: number): JobInfo {
  if (record.state === "queued" && position === undefined) {
    const index = context.store.queued().findIndex((job) => job.id === record.id);
    if (index >= 0) position = index + 1;
  }
  const info = toJobInfo(record, position, context.scheduler.live(record.id)?.percent);
  const deliveries = context.store.deliveries.summaries(record.id);
  return deliveries.length > 0 ? { ...info, deliveries } : info;
}

/**
 * Relay the job's events to the client while watching for `cancel_job` or a lost
 * connection; then deliver results or report how the job ended.
 */
export async function followJob(
  channel: Channel,
  jobId: string,
  subscription: Subscription,
  context: SessionContext,
  options: FollowOptions,
): Promise<AfterJob> {
  const following: Following = {
    channel,
    jobId,
    subscription,
    context,
    incoming: channel.receive(),
    ended: false,
  };
  let final: JobRecord | { stopped: string } | { left: true };
  try {
    final = await relayUntilFinal(following);
  } finally {
    subscription.close();
  }
  // The client is gone: the session ends now and the job runs on in the scheduler (its
  // outcome and where its results are kept are logged there). Holding the session
  // until the job ends would keep its channel, keys and buffers for every queued job.
  if ("left" in final) return { ended: true };
  if ("stopped" in final) return await stopFollowing(following, final.stopped);
  return await reportOutcome(following, final, options);
}

/**
 * The server stops before the job is final (a shutdown): the job stays in the store
 * for the next start. A version 3 client follows it again then; an older one cannot,
 * so it hears why its job has no outcome in this session.
 */
async function stopFollowing(following: Following, reason: string): Promise<AfterJob> {
  const { channel, jobId, clientGone } = following;
  if (!clientGone) {
    if (channel.version < 3) {
      await channel.send({
        type: "job_failed",
        job_id: jobId,
        reason,
        exit_code: null,
        stderr_tail: [],
      }).catch(() => {});
    }
    await channel.close(reason);
  }
  return { ended: true };
}

/**
 * Relay job events and answer the client's records until the job is final, or until
 * the client is gone (`left`).
 */
async function relayUntilFinal(
  following: Following,
): Promise<JobRecord | { stopped: string } | { left: true }> {
  const { subscription } = following;
  let event = subscription.next();
  while (true) {
    if (following.clientGone) return { left: true };
    const { incoming } = following;
    const winner = await Promise.race([
      event.then((value) => ({ from: "job" as const, value })),
      ...(incoming
        ? [incoming.then(
          (value) => ({ from: "client" as const, value }),
          (error: Error) => ({ from: "lost" as const, error }),
        )]
        : []),
    ]);
    if (winner.from === "lost") clientLost(following, winner.error);
    else if (winner.from === "client") await fromClient(following, winner.value);
    else {
      const value = winner.value;
      if (!value) return { stopped: "the server stopped following the job" };
      event = subscription.next();
      if (value.kind === "finished") return value.record;
      if (value.kind === "stopped") return { stopped: value.reason };
      await relayEvent(following, value);
    }
  }
}

/** Pass `job_started` or `job_progress` on, unless the client is gone. */
async function relayEvent(
  following: Following,
  event: Extract<JobEvent, { kind: "started" | "progress" }>,
): Promise<void> {
  const { channel, jobId } = following;
  if (following.clientGone) return;
  const message = event.kind === "started"
    ? { type: "job_started", job_id: jobId }
    : { type: "job_progress", job_id: jobId, text: event.text, percent: event.percent };
  await channel.send(message).catch((error) => (following.clientGone = error));
}

function clientLost(following: Following, error: Error): void {
  const { jobId, context } = following;
  following.clientGone = error;
  following.incoming = undefined;
  context.log.info(`${context.peer}: job ${jobId}: client disconnected; the job continues`);
}

/** A record from the client while its job runs: GOODBYE, its `cancel_job`, or a cut-off. */
async function fromClient(following: Following, record: Incoming): Promise<void> {
  const { channel, jobId, context } = following;
  if (record.type === "goodbye") {
    following.clientGone = new Error("the client ended the session");
    following.incoming = undefined;
    following.ended = true;
    context.log.info(`${context.peer}: job ${jobId}: client ended the session; the job continues`);
    await channel.close();
    return;
  }
  if (record.type !== "message") {
    return cutOff(following, `client sent ${record.type} data while its job runs`);
  }
  let message: ClientMessage;
  try {
    message = parseClientMessage(record.message, channel.version) as ClientMessage;
  } catch (error) {
    return cutOff(following, `client sent an invalid message: ${errorMessage(error)}`);
  }
  if (message.type !== "cancel_job" || (message.job_id ?? jobId) !== jobId) {
    return cutOff(following, `client sent ${message.type} while its job runs`);
  }
  context.log.info(`${context.peer}: job ${jobId}: cancelled by the client`);
  const reason = "the job was cancelled by its client";
  context.scheduler.cancel(jobId, reason, context.by).catch((error) => {
    context.log.warn(`job ${jobId}: could not cancel it: ${errorMessage(error)}`);
  });
  following.incoming = channel.receive();
}

/** Stop listening to a client that broke the protocol; its job goes on. */
function cutOff(following: Following, reason: string): void {
  const { channel, jobId, context } = following;
  following.clientGone = new TransferError(reason);
  following.incoming = undefined;
  context.log.warn(
    `${context.peer}: job ${jobId}: ${reason}; closing the session, the job continues`,
  );
  channel.abort(following.clientGone);
}

/** Tell the client how its job ended: `job_failed`, the results (§6.5), or `job_status`. */
async function reportOutcome(
  following: Following,
  final: JobRecord,
  options: FollowOptions,
): Promise<AfterJob> {
  const { channel, context, incoming, clientGone, ended } = following;
  const { id, outputDir } = final;
  if (!options.deliver) {
    if (!clientGone) await channel.send({ type: "job_status", job: jobInfo(final, context) });
    return { next: incoming, ended };
  }
  if (final.state !== "succeeded") {
    if (!clientGone) {
      // Cancelled: the job_status first says by whom, so the client does not report
      // a failure (a version 3 client reads it; job_failed ends the follow as before).
      if (final.state === "cancelled" && channel.version >= 3) {
        await channel.send({ type: "job_status", job: jobInfo(final, context) });
      }
      await channel.send({
        type: "job_failed",
        job_id: id,
        reason: final.state === "expired"
          ? expiredRefusal(final).message
          : final.reason ?? `the job is ${final.state}`,
        exit_code: final.exitCode ?? null,
        stderr_tail: final.stderrTail,
      });
    }
    return { next: incoming, ended };
  }
  if (clientGone || !incoming) return { ended: true };
  // Held from here on: the sweeper leaves them until this delivery ends.
  const release = context.leases.holdResults(id);
  try {
    const current = context.store.get(id);
    if (current?.state !== "succeeded" || current.resultsRemoved) {
      await channel.send({
        type: "job_failed",
        job_id: id,
        reason: expiredRefusal(current ?? final).message,
        exit_code: 0,
        stderr_tail: [],
      });
      return { next: incoming };
    }
    const outputs = context.store.outputs(id);
    const problem = deliveryProblem(outputs, channel.version);
    if (problem) {
      // More than this client's protocol version can receive: the job ran, the results
      // stay, and the client hears why and where instead of a session that breaks.
      context.log.warn(`job ${id}: ${problem}; results kept in ${outputDir}`);
      await channel.send({
        type: "job_failed",
        job_id: id,
        reason: `${problem}; they are kept on the server in ${keptResultsHint(id)}`,
        exit_code: 0,
        stderr_tail: [],
      });
      return { next: incoming };
    }
    // The relay loop left a read pending (incoming); deliver with it.
    await deliverResults(channel, current, outputs, incoming, context);
    return {};
  } finally {
    release();
  }
}
