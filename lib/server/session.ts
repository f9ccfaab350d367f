/**
 * One authenticated client session on the server (docs/PROTOCOL.md §4.4, §6): answers
 * status and queue queries, and for `submit_recon_job` takes the job in
 * (lib/server/intake.ts), follows it (lib/server/follow.ts) and delivers its results
 * (lib/server/delivery.ts). Messages are read by the rules of the protocol version
 * agreed in the handshake (`channel.version`).
 *
 * @module
 */
import { statfs } from "node:fs/promises";
import type { Channel } from "../wire/channel.ts";
import type { Incoming } from "../wire/record.ts";
import { TransferError } from "../errors.ts";
import { parseClientMessage } from "../wire/protocol.ts";
import { VERSION } from "../version.ts";
import type { Job } from "./jobs.ts";
import { receiveJob, Refusal, type Submit } from "./intake.ts";
import { followJob } from "./follow.ts";
import type { SessionContext } from "./session_context.ts";

export type { SessionContext } from "./session_context.ts";

/** Free bytes for an unprivileged user on the file system that holds `dir`. */
export async function diskFree(dir: string): Promise<number> {
  const stats = await statfs(dir);
  return Number(stats.bavail) * Number(stats.bsize);
}

/** Serve one channel until the client says goodbye or the connection ends. */
export async function serveSession(channel: Channel, context: SessionContext): Promise<void> {
  // A read left pending by a finished job is the next one to use (one reader at a time).
  let pending: Promise<Incoming> | undefined;
  while (true) {
    const incoming = await (pending ?? channel.receive());
    pending = undefined;
    if (incoming.type === "goodbye") return;
    if (incoming.type !== "message") {
      throw new TransferError(`client sent ${incoming.type} data outside a file transfer`);
    }
    const message = parseClientMessage(incoming.message, channel.version);
    switch (message.type) {
      case "get_server_status":
        await channel.send({
          type: "server_status_response",
          version: VERSION,
          uptime_seconds: Math.floor((Date.now() - context.startedAt) / 1000),
          max_concurrent_jobs: context.queue.maxWorkers,
          active_workers: context.queue.activeWorkers,
          queue_length: context.queue.queueLength,
          jobs_completed: context.queue.completed,
          jobs_failed: context.queue.failed,
        });
        break;
      case "get_queue_details":
        await channel.send({
          type: "queue_details_response",
          jobs: context.queue.jobs().map((job) => job.summary()),
        });
        break;
      case "submit_recon_job": {
        context.setBusy?.(true);
        const job = await submit(channel, message, context);
        if (job) {
          const after = await followJob(channel, job, context);
          if (after.ended) return;
          pending = after.next;
        }
        context.setBusy?.(false);
        break;
      }
      default:
        throw new TransferError(`client sent ${message.type} outside a job`);
    }
  }
}

/** Take a job in; a refusal is answered and leaves the session at top level. */
async function submit(
  channel: Channel,
  message: Submit,
  context: SessionContext,
): Promise<Job | undefined> {
  try {
    return await receiveJob(channel, message, context);
  } catch (error) {
    if (error instanceof Refusal) {
      context.log.warn(`${context.peer}: job refused: ${error.message}`);
      await channel.send({ type: "error", kind: "refused", reason: error.message });
      return undefined;
    }
    if (error instanceof TransferError && !channel.closed) {
      // Say why before hanging up, so the client reports a transfer error.
      await channel.send({ type: "error", kind: "transfer", reason: error.message })
        .catch(() => {});
    }
    throw error;
  }
}
