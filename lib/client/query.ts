/**
 * Questions to the server that are not a job's transfer (docs/PROTOCOL.md §4, §6.6):
 * `--server-status` and `--view-queue` (every protocol version), and in version 3 the
 * job store: list the jobs (every page), follow a job to its end without taking its
 * results (`wait`), cancel one, read its log, send its results to the server's
 * destinations again (`redeliver`). One request, validated answers; a
 * refusal (`error` of kind not_found, expired or refused) is a JobUnavailableError in
 * the server's words.
 *
 * @module
 */
import type { Channel } from "../wire/channel.ts";
import { JobError, ProtocolError } from "../errors.ts";
import {
  FINAL_STATES,
  type JobInfo,
  type JobState,
  type MessageOf,
  parseServerMessage,
  type ServerMessage,
} from "../wire/protocol.ts";
import { printable } from "../printable.ts";
import { JobUnavailableError, type SubmitEvent, unavailableKind } from "./job.ts";
import { goodbyeError } from "./reconnect.ts";

/** The server's `server_status_response`. */
export type ServerStatus = MessageOf<ServerMessage, "server_status_response">;
/** The server's `queue_details_response`. */
export type QueueDetails = MessageOf<ServerMessage, "queue_details_response">;
/** The server's `job_log`. */
export type JobLog = MessageOf<ServerMessage, "job_log">;

/**
 * The server's next message, validated; a goodbye is a lost connection, or the end of
 * a revoked key ({@link goodbyeError}), the more so `during` what (" while …").
 */
async function nextMessage(channel: Channel, during = ""): Promise<ServerMessage> {
  const incoming = await channel.receive();
  if (incoming.type === "goodbye") throw goodbyeError(incoming.reason, during);
  if (incoming.type !== "message") {
    throw new ProtocolError(`expected a message, got ${incoming.type}`);
  }
  return parseServerMessage(incoming.message);
}

/** A refusal as the error to throw. */
function refusal(message: MessageOf<ServerMessage, "error">): Error {
  const kind = unavailableKind(message.kind);
  if (kind) return new JobUnavailableError(kind, printable(message.reason));
  return new JobError(`the server refused: ${printable(message.reason)}`);
}

async function ask<T extends ServerMessage["type"]>(
  channel: Channel,
  request: "get_server_status" | "get_queue_details",
  expected: T,
): Promise<MessageOf<ServerMessage, T>> {
  await channel.send({ type: request });
  const incoming = await channel.receive();
  if (incoming.type !== "message") {
    throw new ProtocolError(`expected ${expected}, got ${incoming.type}`);
  }
  const message = parseServerMessage(incoming.message, channel.version);
  if (message.type !== expected) {
    throw new ProtocolError(`expected ${expected}, got ${message.type}`);
  }
  return message as MessageOf<ServerMessage, T>;
}

/** Ask for the server's status. */
export function getServerStatus(channel: Channel): Promise<ServerStatus> {
  return ask(channel, "get_server_status", "server_status_response");
}

/** Ask for the running and queued jobs. */
export function getQueueDetails(channel: Channel): Promise<QueueDetails> {
  return ask(channel, "get_queue_details", "queue_details_response");
}

/** Most pages {@link listJobs} reads: far beyond any store (500 jobs a page). */
const MAX_PAGES = 100_000;

/**
 * Every job the server shows this client (in `state`, if given), in submission order:
 * all pages. The server lists only this client's own jobs; `allClients` asks for every
 * client's, which only an admin client gets (anyone else: a JobUnavailableError of kind
 * refused, in the server's words).
 */
export async function listJobs(
  channel: Channel,
  options: { state?: JobState; limit?: number; allClients?: boolean } = {},
): Promise<JobInfo[]> {
  const jobs: JobInfo[] = [];
  const seen = new Set<string>();
  let cursor: string | undefined;
  for (let page = 0; page < MAX_PAGES; page++) {
    await channel.send({
      type: "list_jobs",
      ...(options.state ? { state: options.state } : {}),
      ...(cursor !== undefined ? { cursor } : {}),
      ...(options.limit !== undefined ? { limit: options.limit } : {}),
      ...(options.allClients ? { all_clients: true } : {}),
    });
    const message = await nextMessage(channel);
    if (message.type === "error") throw refusal(message);
    if (message.type !== "job_list") {
      throw new ProtocolError(`expected job_list, got ${message.type}`);
    }
    jobs.push(...message.jobs);
    if (message.cursor === undefined) return jobs;
    // A server that hands out the same page again would keep us here for ever.
    if (seen.has(message.cursor) || message.jobs.length === 0) {
      throw new ProtocolError("the server's job list does not advance (a cursor repeated)");
    }
    seen.add(message.cursor);
    cursor = message.cursor;
  }
  throw new ProtocolError(`the server's job list has more than ${MAX_PAGES} pages`);
}

/**
 * Cancel `jobId` (top level, version 3): the answer is the job's final state, once it
 * is final (a running job's processes are stopped first). A job already final is
 * refused (JobUnavailableError of kind refused).
 */
export async function cancelJob(
  channel: Channel,
  jobId: string,
  reason?: string,
): Promise<JobInfo> {
  await channel.send({ type: "cancel_job", job_id: jobId, ...(reason ? { reason } : {}) });
  while (true) {
    const message = await nextMessage(channel, ` while cancelling job ${jobId}`);
    if (message.type === "error") throw refusal(message);
    if (message.type === "server_shutting_down") continue;
    if (message.type !== "job_status" || message.job.job_id !== jobId) {
      throw new ProtocolError(`expected job_status for job ${jobId}, got ${message.type}`);
    }
    if (FINAL_STATES.includes(message.job.state) || message.job.state === "expired") {
      return message.job;
    }
  }
}

/**
 * Send succeeded job `jobId`'s results to the server's destinations again
 * (`redeliver_job`, §6.11): to `to`, or to every destination the job had. The answer is
 * the job with its deliveries as they are now; a refusal is a JobUnavailableError in
 * the server's words.
 */
export async function redeliverJob(
  channel: Channel,
  jobId: string,
  to?: readonly string[],
): Promise<JobInfo> {
  await channel.send({
    type: "redeliver_job",
    job_id: jobId,
    ...(to && to.length > 0 ? { to: [...to] } : {}),
  });
  const message = await nextMessage(channel, ` while asking to deliver job ${jobId} again`);
  if (message.type === "error") throw refusal(message);
  if (message.type !== "job_status" || message.job.job_id !== jobId) {
    throw new ProtocolError(`expected job_status for job ${jobId}, got ${message.type}`);
  }
  return message.job;
}

/** One piece of a job's log, from byte `offset` of it. */
export async function getJobLog(channel: Channel, jobId: string, offset = 0): Promise<JobLog> {
  await channel.send({ type: "get_job_log", job_id: jobId, ...(offset > 0 ? { offset } : {}) });
  const message = await nextMessage(channel, ` while reading the log of job ${jobId}`);
  if (message.type === "error") throw refusal(message);
  if (message.type !== "job_log" || message.job_id !== jobId) {
    throw new ProtocolError(`expected job_log for job ${jobId}, got ${message.type}`);
  }
  if (message.offset !== offset || message.next_offset < offset) {
    throw new ProtocolError(
      `the server sent job ${jobId}'s log from byte ${message.offset} to ` +
        `${message.next_offset}, asked from ${offset}`,
    );
  }
  return message;
}

/**
 * Follow `jobId` until it is final, without taking its results (`follow_job` without
 * `deliver`, §6.7): the server answers `job_status` with the job as it is, relays its
 * events while it waits or runs, and sends `job_status` once more, final, when it ends
 * (at once when it already had). `onHeard` is told when the server first answers;
 * `onEvent` hears the job's events.
 */
export async function waitForJob(
  channel: Channel,
  jobId: string,
  options: { onHeard?: () => void; onEvent?: (event: SubmitEvent) => void } = {},
): Promise<JobInfo> {
  await channel.send({ type: "follow_job", job_id: jobId });
  let first: JobInfo | undefined;
  while (true) {
    const message = await nextMessage(channel, ` while waiting for job ${jobId}`);
    if (message.type === "error") throw refusal(message);
    if (message.type === "server_shutting_down") {
      options.onEvent?.({ kind: "notice", text: `server: ${message.reason}` });
      continue;
    }
    const about = message.type === "job_status"
      ? message.job.job_id
      : (message as { job_id?: string }).job_id;
    if (about !== jobId) {
      throw new ProtocolError(`expected news of job ${jobId}, got ${message.type}`);
    }
    if (message.type === "job_status") {
      if (first) {
        const state = message.job.state;
        if (!FINAL_STATES.includes(state) && state !== "expired") {
          throw new ProtocolError(`the server's last word on job ${jobId} says ${state}`);
        }
        return message.job;
      }
      first = message.job;
      options.onHeard?.();
      // A job that has ended is told by the final job_status that follows.
      if (first.state === "queued" || first.state === "running") {
        options.onEvent?.({ kind: "status", job: first });
      }
    } else if (!first) {
      throw new ProtocolError(`${message.type} before job_status while following job ${jobId}`);
    } else if (message.type === "job_started") {
      options.onEvent?.({ kind: "started", jobId });
    } else if (message.type === "job_progress") {
      options.onEvent?.({ kind: "progress", text: message.text, percent: message.percent });
    } else {
      throw new ProtocolError(`unexpected ${message.type} while following job ${jobId}`);
    }
  }
}
