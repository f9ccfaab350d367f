/**
 * The results side of a job's session (docs/PROTOCOL.md §6.1 step 6, §6.7): check the
 * announcement (`dicom_transfer_start`) against CLIENT_MAX_RESULT_BYTES and the free
 * space, say where to start (`resume_index`, `resume_offset`: what an earlier session
 * or process verified, lib/client/download.ts), receive each `result_file` after
 * checking its name, size and offset, and confirm with `results_received` once
 * `recon_complete` agrees with what arrived.
 *
 * @module
 */
import * as path from "node:path";
import type { Channel } from "../wire/channel.ts";
import { ConnectionError, errorMessage, ReconError, TransferError } from "../errors.ts";
import { resultPathProblem } from "../wire/file_names.ts";
import type { MessageOf, ServerMessage } from "../wire/protocol.ts";
import { type Announcement, ResultDownload, type ResumePoint } from "./download.ts";
import {
  type ClientJob,
  diskFree,
  type JobOptions,
  type JobOutcome,
  type SubmitEvent,
} from "./job.ts";

type ServerMessageOf<T extends ServerMessage["type"]> = MessageOf<ServerMessage, T>;

/** What a delivery borrows from its session. */
export interface DeliveryContext {
  channel: Channel;
  job: ClientJob;
  options: JobOptions;
  /** Report hostile server behaviour, cut the connection and throw. */
  hostile: (text: string) => never;
  /** The server answered about our job in this session. */
  heard: () => void;
  event: (event: SubmitEvent) => void;
  fetchCommand: (jobId: string) => string;
}

/** One session's delivery of a job's results. */
export class ResultDelivery {
  readonly #c: DeliveryContext;
  /** This session's announcement, and where it asked the server to start. */
  #announced?: Announcement & { skipped: number; start: ResumePoint };
  /** Results received in this session. */
  #sessionResults = 0;
  /** Between `ready` and `recon_complete`: an interrupt stops the download. */
  downloading = false;

  constructor(context: DeliveryContext) {
    this.#c = context;
  }

  /**
   * Receive results: they must fit CLIENT_MAX_RESULT_BYTES and the free space of the
   * download directory; then open the download (taking over what an earlier session
   * verified) and say ready, with where to start. Otherwise answer `refused`, and the
   * results stay on the server.
   */
  async accept(message: ServerMessageOf<"dicom_transfer_start">): Promise<undefined> {
    const job = this.#c.job;
    const jobId = job.jobId;
    if (!jobId || message.job_id !== jobId || job.phase === "upload") {
      this.#c.hostile("results announced for another job");
    }
    if (this.#announced) this.#c.hostile("results announced twice");
    const { count, total_size: totalSize, skipped = 0 } = message;
    if (
      job.download &&
      (job.download.announced.count !== count || job.download.announced.totalSize !== totalSize)
    ) {
      this.#c.hostile(
        `server announced ${count} result(s) of ${totalSize} bytes, ` +
          `${job.download.announced.count} of ${job.download.announced.totalSize} before`,
      );
    }
    this.#c.heard();
    job.phase = "download";
    job.skipped = skipped;
    const { maxResultBytes = 0 } = this.#c.options;
    const kept = `they stay on the server in RECON_DICOM_DIR/job_${jobId}_output`;
    const later = `${this.#c.fetchCommand(jobId)} fetches them`;
    const refuse = async (reason: string, hint: string): Promise<never> => {
      await this.#c.channel.send({ type: "dicom_transfer_ack", job_id: jobId, status: "refused" })
        .catch(() => {});
      throw new TransferError(`${reason}; ${kept}`, { hint: `${hint}; then ${later}` });
    };
    const what = `the ${count} result file(s) of job ${jobId} (${totalSize} bytes)`;
    if (maxResultBytes > 0 && totalSize > maxResultBytes) {
      await refuse(
        `${what} exceed CLIENT_MAX_RESULT_BYTES (${maxResultBytes})`,
        "raise CLIENT_MAX_RESULT_BYTES in recon.opts (0 = no cap) for jobs this large",
      );
    }
    const download = await this.#openDownload(jobId, { count, totalSize }, what, refuse);
    job.download = download;
    const start = await download.resumePoint();
    this.#announced = { count, totalSize, skipped, start };
    this.downloading = true;
    if (start.index === count && count > 0) {
      this.#c.event({
        kind: "notice",
        text: `the ${count} result file(s) of job ${jobId} are already in ` +
          `${download.resultDir}, verified`,
      });
    } else if (start.index > 0 || start.offset > 0) {
      const partly = start.offset > 0 ? ` and ${start.offset} bytes of the next` : "";
      this.#c.event({
        kind: "notice",
        text: `resuming the results of job ${jobId}: ${start.index} of ${count} file(s) ` +
          `already here${partly}`,
      });
    }
    await this.#c.channel.send({
      type: "dicom_transfer_ack",
      job_id: jobId,
      status: "ready",
      ...(start.index > 0 ? { resume_index: start.index } : {}),
      ...(start.offset > 0 ? { resume_offset: start.offset } : {}),
    });
  }

  /**
   * The download of the announced results, taking over what an earlier session or
   * process verified, once the rest fits the free space; `refuse` otherwise.
   */
  async #openDownload(
    jobId: string,
    announced: Announcement,
    what: string,
    refuse: (reason: string, hint: string) => Promise<never>,
  ): Promise<ResultDownload> {
    const { downloadDir } = this.#c.options;
    const cannot = (error: unknown) =>
      refuse(
        `cannot save the results in ${path.join(downloadDir, jobId)}: ${errorMessage(error)}`,
        error instanceof ReconError && error.hint ? error.hint : "check CLIENT_DOWNLOAD_DIR",
      );
    let download: ResultDownload;
    let free: number;
    try {
      await Deno.mkdir(downloadDir, { recursive: true });
      download = this.#c.job.download ??
        await ResultDownload.open(downloadDir, jobId, announced);
      free = await (this.#c.options.diskFree ?? diskFree)(downloadDir);
    } catch (error) {
      return await cannot(error);
    }
    if (announced.totalSize - download.verifiedBytes > free) {
      return await refuse(
        `${what} do not fit in ${downloadDir} (${free} bytes free)`,
        "free space in CLIENT_DOWNLOAD_DIR, or point it at a larger disk",
      );
    }
    await download.prepare().catch(cannot);
    return download;
  }

  /**
   * Receive one result: its name must be safe (§6.2) and new, it must fit the announced
   * count and total size, and only the first of the session may start at the offset we
   * asked for, of the file we hold a part of.
   */
  async receive(message: ServerMessageOf<"result_file">): Promise<undefined> {
    const announced = this.#announced;
    const download = this.#c.job.download;
    if (!announced || !download || !this.downloading) {
      this.#c.hostile(`server sent result ${JSON.stringify(message.name)} before announcing any`);
    }
    const problem = resultPathProblem(message.name);
    if (problem) {
      this.#c.hostile(
        `server sent an unsafe result name ${JSON.stringify(message.name)}: ${problem}`,
      );
    }
    if (download.has(message.name)) {
      this.#c.hostile(`server sent result ${JSON.stringify(message.name)} twice`);
    }
    if (download.files.length >= announced.count) {
      this.#c.hostile(`server sent more than the ${announced.count} result(s) it announced`);
    }
    if (download.verifiedBytes + message.size > announced.totalSize) {
      this.#c.hostile(`server sent more than the ${announced.totalSize} bytes it announced`);
    }
    const offset = message.offset ?? 0;
    if (offset > 0) {
      const { start } = announced;
      const partial = download.partial;
      if (
        this.#sessionResults > 0 || offset !== start.offset || partial?.name !== message.name ||
        offset > message.size
      ) {
        this.#c.hostile(
          `server resumed ${JSON.stringify(message.name)} at byte ${offset}, ` +
            `which is not what this client holds`,
        );
      }
    }
    this.#sessionResults++;
    await download.receive(
      this.#c.channel,
      { name: message.name, size: message.size, offset },
      (bytes) =>
        this.#c.event({ kind: "download", name: message.name, bytes, total: message.size }),
      this.#c.options.verifyAfterWrite,
    ).catch((error) => {
      // The server said goodbye in the middle of a file (a restart): the connection
      // is gone as surely as when it breaks, and the verified part is kept.
      if (
        error instanceof TransferError && /ended the session in the middle/.test(error.message)
      ) {
        throw new ConnectionError(error.message, { cause: error });
      }
      throw error;
    });
    return undefined;
  }

  /**
   * `recon_complete`: every announced result arrived, each verified by the SHA-256 of
   * its FILE_END; only now may the server count them delivered.
   */
  async complete(message: ServerMessageOf<"recon_complete">): Promise<JobOutcome> {
    const job = this.#c.job;
    const jobId = job.jobId;
    const announced = this.#announced;
    const download = job.download;
    if (!jobId || !announced || !download) this.#c.hostile("recon_complete before any result");
    const received = download.files.length;
    if (
      received !== announced.count || message.count !== announced.count ||
      download.verifiedBytes !== announced.totalSize
    ) {
      throw new TransferError(
        `job finished with ${received} of ${announced.count} result file(s) ` +
          `(${download.verifiedBytes} of ${announced.totalSize} bytes)`,
      );
    }
    this.downloading = false;
    await this.#c.channel.send({ type: "results_received", job_id: jobId });
    return {
      kind: "results",
      result: {
        jobId,
        uploaded: [...job.uploaded.values()],
        resultDir: download.resultDir,
        files: [...download.files],
        skipped: announced.skipped,
      },
    };
  }
}
