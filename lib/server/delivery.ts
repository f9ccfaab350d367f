/**
 * Delivering a finished job's results to its client (docs/PROTOCOL.md §6.1 step 6,
 * §6.5): `dicom_transfer_start`, the client's `dicom_transfer_ack`, each file as
 * `result_file` + transfer (never following links, from where a version 3 client's
 * earlier delivery broke off), `recon_complete`, and the client's `results_received`,
 * which the job store records as `delivered_at`. Version 3 keeps the results until
 * they expire (lib/server/sweeper.ts), so they can be fetched again; versions 1 and 2
 * remove them on `results_received`. Anything else fails the delivery and keeps them.
 *
 * `dicom_transfer_start` also says how many entries of the output directory were
 * skipped (not which: their names stay in the server log), so that a client can warn
 * that not everything the script wrote came back.
 *
 * Version 2 announces the results by count and total size and names them one
 * `result_file` at a time; version 1 lists them all in `dicom_transfer_start` and
 * `recon_complete`, which bounds what a version 1 client can receive.
 *
 * @module
 */
import * as path from "node:path";
import type { Channel } from "../wire/channel.ts";
import type { Incoming } from "../wire/record.ts";
import { MAX_MESSAGE_SIZE } from "../wire/record.ts";
import { errorMessage, ProtocolError, TransferError } from "../errors.ts";
import {
  type ClientMessage,
  MAX_FILES_PER_JOB,
  MAX_RESULT_FILES,
  parseClientMessage,
} from "../wire/protocol.ts";
import { sendFileFrom } from "../wire/file_send.ts";
import type { JobRecord, OutputRecord } from "./job_store.ts";
import { peerAddress } from "./audit_jobs.ts";
import { removeQuietly, type SessionContext } from "./session_context.ts";

/** What {@link deliveryProblem} looks at of each result. */
interface Result {
  name: string;
  size: number;
}

const encoder = new TextEncoder();
/** A SHA-256 in hex is always 64 digits: a stand-in gives `recon_complete`'s exact size. */
const SHA256_PLACEHOLDER = "0".repeat(64);

function jsonBytes(message: unknown): number {
  return encoder.encode(JSON.stringify(message)).length;
}

/**
 * Why these results cannot be delivered in this protocol version, or `undefined`.
 * Version 1 lists every result in `recon_complete` (the larger of its two lists), so
 * that message must fit MAX_MESSAGE_SIZE and the list MAX_FILES_PER_JOB.
 */
export function deliveryProblem(results: readonly Result[], version: number): string | undefined {
  const count = results.length;
  if (version !== 1) {
    return count > MAX_RESULT_FILES
      ? `the job has ${count} result files, more than MAX_RESULT_FILES (${MAX_RESULT_FILES})`
      : undefined;
  }
  const tooMany = count > MAX_FILES_PER_JOB;
  if (
    tooMany || jsonBytes({
        type: "recon_complete",
        job_id: crypto.randomUUID(),
        files: results.map(({ name, size }) => ({ name, size, sha256: SHA256_PLACEHOLDER })),
      }) > MAX_MESSAGE_SIZE
  ) {
    return `the job has ${count} result files, more than a protocol version 1 client can receive; upgrade recon-client`;
  }
  return undefined;
}

/**
 * Send `job`'s results and wait for the client's confirmation; on any failure they stay.
 * A version 3 client may say it holds the first results already (`resume_index`) and
 * part of the next (`resume_offset`): those bytes are not sent again (§6.7). Each file
 * must still be the one collected (device and inode) with the SHA-256 recorded; that
 * SHA-256 is sent without hashing the file again while the file is unchanged.
 * Version 3 keeps the results after `results_received` (they expire with
 * RESULT_RETENTION); versions 1 and 2 remove them then, as they always did.
 */
export async function deliverResults(
  channel: Channel,
  job: JobRecord,
  outputs: readonly OutputRecord[],
  pending: Promise<Incoming>,
  context: SessionContext,
): Promise<void> {
  const { log, peer, store } = context;
  const v1 = channel.version === 1;
  const expectFromClient = async (type: string): Promise<ClientMessage> => {
    const answer = await pending;
    const message = answer.type === "message"
      ? parseClientMessage(answer.message, channel.version) as ClientMessage
      : undefined;
    if (message?.type === "error") {
      throw new TransferError(`the client could not take the results: ${message.reason}`);
    }
    const about = (message as { job_id?: string } | undefined)?.job_id;
    if (message?.type !== type || about !== job.id) {
      const other = about && about !== job.id ? ` for job ${about}` : "";
      throw new TransferError(
        `expected ${type} for job ${job.id} from the client, got ${
          message?.type ?? answer.type
        }${other}`,
      );
    }
    return message;
  };
  try {
    const totalSize = outputs.reduce((sum, result) => sum + result.size, 0);
    const skipped = job.skipped ?? 0;
    await channel.send({
      type: "dicom_transfer_start",
      job_id: job.id,
      count: outputs.length,
      ...(v1
        ? { files: outputs.map(({ name, size }) => ({ name, size })) }
        : { total_size: totalSize }),
      // Omitted when 0, so the message is what it always was when nothing was skipped.
      ...(skipped > 0 ? { skipped } : {}),
    });
    const ack = await expectFromClient("dicom_transfer_ack");
    if (ack.type !== "dicom_transfer_ack") throw new TransferError("no dicom_transfer_ack");
    if (ack.status !== "ready") {
      throw new TransferError(`the client refused the results (status "${ack.status}")`);
    }
    const from = resumePoint(ack, outputs);
    if (from.index > 0 || from.offset > 0) {
      log.info(
        `${peer}: job ${job.id}: the client holds ${from.index} result(s) and ${from.offset} bytes of the next; sending the rest`,
      );
    }
    for (let index = from.index; index < outputs.length; index++) {
      const result = outputs[index];
      const offset = index === from.index ? from.offset : 0;
      await channel.send({
        type: "result_file",
        job_id: job.id,
        name: result.name,
        size: result.size,
        ...(offset > 0 ? { offset } : {}),
      });
      // The SHA-256 recorded at job end goes in FILE_END while the file is unchanged
      // (dev, ino, size, times); otherwise the file is hashed as it is sent and must
      // match it, or the transfer fails before FILE_END: the client never takes other
      // bytes for the job's result.
      await sendFileFrom(
        channel,
        path.join(job.outputDir, result.name),
        result.size,
        {
          noFollow: true,
          expect: result.dev !== undefined && result.ino !== undefined
            ? { dev: result.dev, ino: result.ino }
            : undefined,
          offset,
          recorded: { sha256: result.sha256, mtimeMs: result.mtimeMs, ctimeMs: result.ctimeMs },
        },
      ).catch(async (error) => {
        if (!(error instanceof TransferError)) throw error;
        // Our file, not the connection, failed: say so in place of the rest of the
        // file (PROTOCOL §5), so the client stops with the reason instead of taking a
        // closed connection for a network fault and asking again and again.
        await channel.send({
          type: "error",
          kind: "transfer",
          reason: `result ${JSON.stringify(result.name)} ${unsendable(error)}; ` +
            `the results stay on the server, whose log says more`,
        }).catch(() => {});
        throw new TransferError(`result ${JSON.stringify(result.name)}: ${error.message}`, {
          cause: error,
        });
      });
    }
    await channel.send(
      v1
        ? {
          type: "recon_complete",
          job_id: job.id,
          files: outputs.map(({ name, size, sha256 }) => ({ name, size, sha256 })),
        }
        : { type: "recon_complete", job_id: job.id, count: outputs.length },
    );
    // Only the client's word that every file arrived intact counts as delivered.
    pending = channel.receive();
    await expectFromClient("results_received");
    store.markDelivered(job.id);
    log.info(`${peer}: job ${job.id}: delivered ${outputs.length} result file(s)`);
    auditDelivery(job, outputs, context);
  } catch (error) {
    log.warn(
      `job ${job.id}: delivery failed (${errorMessage(error)}); results kept in ${job.outputDir}`,
    );
    throw error;
  }
  if (channel.version < 3) await removeDelivered(job, context);
}

/** Why a result could not be sent, for the client: without the server's paths. */
function unsendable(error: TransferError): string {
  const text = error.message;
  if (/not the file recorded|not the one recorded|changed/.test(text)) {
    return "was changed on the server after its job ended";
  }
  if (/not a regular file/.test(text)) return "is no longer a regular file on the server";
  return "cannot be read on the server";
}

/**
 * Where a resumed delivery starts: `resume_index` results the client holds and
 * `resume_offset` bytes of the next. Beyond the results is a protocol error (§6.7).
 */
function resumePoint(
  ack: { resume_index?: number; resume_offset?: number },
  outputs: readonly OutputRecord[],
): { index: number; offset: number } {
  const index = ack.resume_index ?? 0;
  const offset = ack.resume_offset ?? 0;
  if (index > outputs.length) {
    throw new ProtocolError(
      `the client says it holds ${index} results of ${outputs.length} (resume_index)`,
    );
  }
  const size = index < outputs.length ? outputs[index].size : 0;
  if (offset > size) {
    throw new ProtocolError(
      `the client says it holds ${offset} bytes of a result of ${size} (resume_offset)`,
    );
  }
  return { index, offset };
}

/**
 * A version 1 or 2 client's `results_received` removes the results (§6.5): the job
 * is recorded `expired` first, then the files go.
 */
async function removeDelivered(job: JobRecord, context: SessionContext): Promise<void> {
  const { store, log } = context;
  try {
    store.markExpired(job.id);
  } catch (error) {
    log.warn(`job ${job.id}: results delivered but kept: ${errorMessage(error)}`);
    return;
  }
  if (await removeQuietly(job.outputDir, log)) store.setResultsRemoved(job.id);
}

/**
 * The audit line of a confirmed delivery: `job_delivered` to the session that submitted
 * the job, `job_fetched` to a later one (`recon-client fetch`, `wait`, the watch mode).
 * Who received the results is known only here.
 */
function auditDelivery(
  job: JobRecord,
  outputs: readonly OutputRecord[],
  context: SessionContext,
): void {
  const event = job.peer === context.peer ? "job_delivered" : "job_fetched";
  context.audit.record(event, {
    job: job.id,
    client: job.client,
    to: context.client.name,
    address: peerAddress(context.peer),
    files: outputs.length,
    bytes: outputs.reduce((sum, output) => sum + output.size, 0),
  }).catch((error) =>
    context.log.error(`audit log: cannot record ${event} of job ${job.id}: ${errorMessage(error)}`)
  );
}
