/**
 * Following a queued job for its session (docs/PROTOCOL.md §6.1 steps 5–6): relay
 * `job_started` and `job_progress`, answer the client's `cancel_job`, and report the
 * outcome: `job_failed`, or the results (lib/server/delivery.ts).
 *
 * A client that breaks the protocol here is cut off, but its job is still seen through
 * to an outcome, so nothing is left without a log line saying where it is.
 *
 * @module
 */
import type { Channel } from "../wire/channel.ts";
import type { Incoming } from "../wire/record.ts";
import { errorMessage, TransferError } from "../errors.ts";
import { type ClientMessage, type ClientMessageV1, parseClientMessage } from "../wire/protocol.ts";
import type { Job, JobEvent, JobOutcome } from "./jobs.ts";
import { deliverResults, deliveryProblem } from "./delivery.ts";
import {
  cancelJob,
  keptResultsHint,
  removeQuietly,
  type SessionContext,
} from "./session_context.ts";

/** A session following its job (see {@link followJob}). */
interface Following {
  channel: Channel;
  job: Job;
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

/**
 * Relay the job's events to the client while watching for `cancel_job` or a lost
 * connection; then deliver results or report the failure.
 */
export async function followJob(
  channel: Channel,
  job: Job,
  context: SessionContext,
): Promise<AfterJob> {
  const following: Following = { channel, job, context, incoming: channel.receive(), ended: false };
  const outcome = await relayUntilOutcome(following);
  job.events.close();
  if (!outcome) return { next: following.incoming };
  return await reportOutcome(following, outcome);
}

/** Relay job events and answer the client's records until the job has an outcome. */
async function relayUntilOutcome(following: Following): Promise<JobOutcome | undefined> {
  const { job } = following;
  let event = job.events.next();
  while (true) {
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
      if (!value) return undefined;
      event = job.events.next();
      if (value.kind === "finished") return value.outcome;
      await relayEvent(following, value);
    }
  }
}

/** Pass `job_started` or `job_progress` on, unless the client is gone. */
async function relayEvent(
  following: Following,
  event: Exclude<JobEvent, { kind: "finished" }>,
): Promise<void> {
  const { channel, job } = following;
  if (following.clientGone) return;
  const message = event.kind === "started"
    ? { type: "job_started", job_id: job.id }
    : { type: "job_progress", job_id: job.id, text: event.text, percent: event.percent };
  await channel.send(message).catch((error) => (following.clientGone = error));
}

function clientLost(following: Following, error: Error): void {
  const { job, context } = following;
  following.clientGone = error;
  following.incoming = undefined;
  context.log.info(`${context.peer}: job ${job.id}: client disconnected; the job continues`);
}

/** A record from the client while its job runs: GOODBYE, its own `cancel_job`, or a cut-off. */
async function fromClient(following: Following, record: Incoming): Promise<void> {
  const { channel, job, context } = following;
  if (record.type === "goodbye") {
    following.clientGone = new Error("the client ended the session");
    following.incoming = undefined;
    following.ended = true;
    context.log.info(`${context.peer}: job ${job.id}: client ended the session; the job continues`);
    await channel.close();
    return;
  }
  if (record.type !== "message") {
    return cutOff(following, `client sent ${record.type} data while its job runs`);
  }
  let message: ClientMessage | ClientMessageV1;
  try {
    message = parseClientMessage(record.message, channel.version);
  } catch (error) {
    return cutOff(following, `client sent an invalid message: ${errorMessage(error)}`);
  }
  if (message.type !== "cancel_job" || (message.job_id ?? job.id) !== job.id) {
    return cutOff(following, `client sent ${message.type} while its job runs`);
  }
  context.log.info(`${context.peer}: job ${job.id}: cancelled by the client`);
  cancelJob(job, context);
  following.incoming = channel.receive();
}

/** Stop listening to a client that broke the protocol; its job goes on. */
function cutOff(following: Following, reason: string): void {
  const { channel, job, context } = following;
  following.clientGone = new TransferError(reason);
  following.incoming = undefined;
  context.log.warn(
    `${context.peer}: job ${job.id}: ${reason}; closing the session, the job continues`,
  );
  channel.abort(following.clientGone);
}

/** Tell the client how its job ended: `job_failed`, or the results (§6.5). */
async function reportOutcome(following: Following, outcome: JobOutcome): Promise<AfterJob> {
  const { channel, job, context, incoming, clientGone, ended } = following;
  if (!outcome.ok) {
    await removeQuietly(job.outputDir, context.log);
    context.log.warn(`job ${job.id}: failed: ${outcome.reason} (log: ${job.logPath})`);
    if (!clientGone) {
      await channel.send({
        type: "job_failed",
        job_id: job.id,
        reason: outcome.reason,
        exit_code: outcome.exitCode,
        stderr_tail: outcome.stderrTail,
      });
    }
    return { next: incoming, ended };
  }
  if (clientGone || !incoming) {
    context.log.warn(
      `job ${job.id}: finished but its client is gone; results kept in ${job.outputDir}`,
    );
    return { ended };
  }
  const problem = deliveryProblem(outcome.results, channel.version);
  if (problem) {
    // More than this client's protocol version can receive: the job ran, the results
    // stay, and the client hears why and where instead of a session that breaks.
    context.log.warn(`job ${job.id}: ${problem}; results kept in ${job.outputDir}`);
    await channel.send({
      type: "job_failed",
      job_id: job.id,
      reason: `${problem}; they are kept on the server in ${keptResultsHint(job.id)}`,
      exit_code: 0,
      stderr_tail: [],
    });
    return { next: incoming };
  }
  // The relay loop left a read pending (incoming); deliver with it.
  await deliverResults(channel, job, outcome, incoming, context);
  return {};
}
