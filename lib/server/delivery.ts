/**
 * Delivering a finished job's results to its client (docs/PROTOCOL.md §6.1 step 6,
 * §6.5): `dicom_transfer_start`, the client's `dicom_transfer_ack`, each file as
 * `result_file` + transfer (never following links), `recon_complete`, and only after
 * the client's `results_received` the results are removed. Anything else keeps them.
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
import type { Channel } from "../wire/channel.ts";
import type { Incoming } from "../wire/record.ts";
import { MAX_MESSAGE_SIZE } from "../wire/record.ts";
import { errorMessage, TransferError } from "../errors.ts";
import {
  type ClientMessage,
  type ClientMessageV1,
  type FileEntry,
  MAX_FILES_PER_JOB,
  MAX_RESULT_FILES,
  parseClientMessage,
} from "../wire/protocol.ts";
import { type FileIdentity, sendFileFrom } from "../wire/transfer.ts";
import type { Job } from "./jobs.ts";
import { removeQuietly, type SessionContext } from "./session_context.ts";

/** A collected result (lib/server/results.ts). */
interface Result {
  name: string;
  path: string;
  size: number;
  identity?: FileIdentity;
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
      ? `the script wrote ${count} result files, more than MAX_RESULT_FILES (${MAX_RESULT_FILES})`
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
    return `the script wrote ${count} result files, more than a protocol version 1 client can receive; upgrade recon-client`;
  }
  return undefined;
}

/** What a successful job has for its client (lib/server/jobs.ts JobOutcome). */
export interface Delivery {
  results: readonly Result[];
  /** Entries of the output directory not sent (§6.5): only their number is told. */
  skipped: number;
}

/** Send the results and wait for the client's confirmation; results kept on any failure. */
export async function deliverResults(
  channel: Channel,
  job: Job,
  { results, skipped }: Delivery,
  pending: Promise<Incoming>,
  context: SessionContext,
): Promise<void> {
  const { log, peer } = context;
  const v1 = channel.version === 1;
  const expectFromClient = async (type: string): Promise<ClientMessage | ClientMessageV1> => {
    const answer = await pending;
    const message = answer.type === "message"
      ? parseClientMessage(answer.message, channel.version)
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
    const totalSize = results.reduce((sum, result) => sum + result.size, 0);
    await channel.send({
      type: "dicom_transfer_start",
      job_id: job.id,
      count: results.length,
      ...(v1
        ? { files: results.map(({ name, size }) => ({ name, size })) }
        : { total_size: totalSize }),
      // Omitted when 0, so the message is what it always was when nothing was skipped.
      ...(skipped > 0 ? { skipped } : {}),
    });
    const ack = await expectFromClient("dicom_transfer_ack");
    if (ack.type === "dicom_transfer_ack" && ack.status !== "ready") {
      throw new TransferError(`the client refused the results (status "${ack.status}")`);
    }
    const delivered: FileEntry[] = [];
    for (const result of results) {
      await channel.send({
        type: "result_file",
        job_id: job.id,
        name: result.name,
        size: result.size,
      });
      const digest = await sendFileFrom(channel, result.path, result.size, {
        noFollow: true,
        expect: result.identity,
      });
      // Version 2 keeps no list: each file's SHA-256 went with its FILE_END.
      if (v1) delivered.push({ name: result.name, size: result.size, sha256: digest.sha256 });
    }
    await channel.send(
      v1
        ? { type: "recon_complete", job_id: job.id, files: delivered }
        : { type: "recon_complete", job_id: job.id, count: results.length },
    );
    // Only the client's word that every file arrived intact lets the results go.
    pending = channel.receive();
    await expectFromClient("results_received");
    await removeQuietly(job.outputDir, log);
    log.info(`${peer}: job ${job.id}: delivered ${results.length} result file(s)`);
  } catch (error) {
    log.warn(
      `job ${job.id}: delivery failed (${errorMessage(error)}); results kept in ${job.outputDir}`,
    );
    throw error;
  }
}
