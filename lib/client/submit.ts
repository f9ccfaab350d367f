/**
 * Submitting a job and seeing it through (docs/PROTOCOL.md §6, protocol version 2):
 * announce the files (`submit_recon_job` with their count, one `input_file` each),
 * answer each `request_file` (only for files announced in this job), follow the job's
 * progress, accept the results into `CLIENT_DOWNLOAD_DIR/<job_id>/` when they fit
 * (free space, CLIENT_MAX_RESULT_BYTES), check every name, size and count against the
 * announcement, and return when `recon_complete` confirms the count, with the number
 * of files the server said it skipped (§6.5), which the caller warns about.
 *
 * @module
 */
import * as path from "node:path";
import { statfs } from "node:fs/promises";
import type { Channel } from "../wire/channel.ts";
import {
  ConnectionError,
  errorMessage,
  InterruptedError,
  JobError,
  ProtocolError,
  ReconError,
  TransferError,
} from "../errors.ts";
import { resolveInside, resultPathProblem } from "../wire/file_names.ts";
import { printable } from "../printable.ts";
import {
  type FileEntry,
  type MessageOf,
  parseServerMessage,
  type ReconOptions,
  type ServerMessage,
} from "../wire/protocol.ts";
import { receiveFileTo, sendFileFrom } from "../wire/transfer.ts";
import type { LocalFile } from "./files.ts";

/** What the caller hears while the job runs (for the progress display). */
export type SubmitEvent =
  | { kind: "upload"; name: string; bytes: number; total: number }
  | { kind: "queued"; jobId: string }
  | { kind: "started"; jobId: string }
  | { kind: "progress"; text?: string; percent?: number }
  | { kind: "notice"; text: string }
  | { kind: "download"; name: string; bytes: number; total: number };

/** Inputs of {@link submitJob}. */
export interface SubmitOptions {
  channel: Channel;
  files: LocalFile[];
  options: ReconOptions;
  /** CLIENT_DOWNLOAD_DIR; results go to `<downloadDir>/<job_id>/`. */
  downloadDir: string;
  onEvent?: (event: SubmitEvent) => void;
  /** Aborted on Ctrl-C: before queueing the upload is dropped; after, the job is cancelled. */
  signal?: AbortSignal;
  /** Logs hostile server behaviour. */
  onHostile?: (message: string) => void;
  /** CLIENT_MAX_RESULT_BYTES: refuse results whose announced total is larger; 0 = no cap. */
  maxResultBytes?: number;
  /** Free bytes on the file system that holds `dir` (default statfs; a test can pretend). */
  diskFree?: (dir: string) => Promise<number>;
}

/** Free bytes for an unprivileged user on the file system that holds `dir`. */
export async function diskFree(dir: string): Promise<number> {
  const stats = await statfs(dir);
  return Number(stats.bavail) * Number(stats.bsize);
}

/** A downloaded result. */
export interface DownloadedFile {
  name: string;
  path: string;
  size: number;
  sha256: string;
}

/** The finished job. */
export interface SubmitResult {
  jobId: string;
  uploaded: FileEntry[];
  resultDir: string;
  files: DownloadedFile[];
  /**
   * Entries the script wrote that the server did not send (`dicom_transfer_start`'s
   * `skipped`, 0 when absent): the results that came are good, but not complete.
   */
  skipped: number;
}

/** Details of a failed job for the printed report. */
export class JobFailedError extends JobError {
  readonly jobId: string;
  readonly scriptExitCode: number | null;
  readonly stderrTail: string[];
  constructor(jobId: string, reason: string, exitCode: number | null, stderrTail: string[]) {
    super(`job ${jobId} failed: ${reason}`, {
      hint: stderrTail.length > 0
        ? `the script's last stderr lines are below; its whole output is in ` +
          `RECON_FILEPATH/job_${jobId}.log on the server:\n  ${stderrTail.join("\n  ")}`
        : undefined,
    });
    this.jobId = jobId;
    this.scriptExitCode = exitCode;
    this.stderrTail = stderrTail;
  }
}

/**
 * The job was cancelled on the server at our request (after an interrupt), and the
 * server confirmed it with `job_failed`: nothing of it keeps running there.
 */
export class JobCancelledError extends InterruptedError {
  readonly jobId: string;
  constructor(jobId: string) {
    super(`job ${jobId} cancelled`);
    this.jobId = jobId;
  }
}

/** Run one job end to end. */
export async function submitJob(options: SubmitOptions): Promise<SubmitResult> {
  if (options.signal?.aborted) throw new InterruptedError("interrupted before the job was sent");
  const submission = new Submission(options);
  const onAbort = () => submission.interrupt();
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    return await submission.run();
  } catch (error) {
    if (submission.interrupted && !(error instanceof InterruptedError)) {
      throw new InterruptedError("interrupted", { cause: error });
    }
    throw error;
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
  }
}

type ServerMessageOf<T extends ServerMessage["type"]> = MessageOf<ServerMessage, T>;

/**
 * One job's conversation, in the order of docs/PROTOCOL.md §6.1: upload (answer each
 * `request_file`), wait for `job_queued`, follow the job's events, receive the
 * results. Each server message is handled by the step it belongs to, and one read
 * loop drives them; each step checks what it needs (a file not yet sent, results
 * announced for our job id), so a message out of turn is refused there.
 */
class Submission {
  readonly #options: SubmitOptions;
  readonly #channel: Channel;
  readonly #byName: Map<string, LocalFile>;
  readonly #sent = new Set<string>();
  #jobId?: string;
  #uploaded: FileEntry[] = [];
  /** Every file sent, job_queued not yet read: an interrupt then waits for job_queued
   * and cancels the job, rather than leave a queued job without its client. */
  #uploadComplete = false;
  #downloading = false;
  #resultDir?: string;
  /** `dicom_transfer_start`'s count, total size and skipped count, once announced. */
  #announced?: { count: number; totalSize: number; skipped: number };
  #receivedBytes = 0;
  readonly #names = new Set<string>();
  readonly #downloaded: DownloadedFile[] = [];
  interrupted = false;

  constructor(options: SubmitOptions) {
    this.#options = options;
    this.#channel = options.channel;
    this.#byName = new Map(options.files.map((file) => [file.name, file]));
  }

  async run(): Promise<SubmitResult> {
    if (this.#channel.version !== 3) {
      throw new ProtocolError(
        `this client speaks protocol version 3, not ${this.#channel.version}`,
      );
    }
    const { files } = this.#options;
    // The announcement: a count, then one message per file, so that no message grows
    // with the number of files (PROTOCOL.md §4.2).
    await this.#channel.send({
      type: "submit_recon_job",
      file_count: files.length,
      client_recon_options_json: JSON.stringify(this.#options.options),
    });
    for (const file of files) {
      await this.#channel.send({
        type: "input_file",
        name: file.name,
        size: file.size,
        original_path_on_client: file.path,
      });
    }
    try {
      while (true) {
        const result = await this.#handle(await this.#next());
        if (result) return result;
      }
    } catch (error) {
      throw this.#whereResultsAre(error);
    }
  }

  /** A failure after results were announced says where they are (they stay on the server). */
  #whereResultsAre(error: unknown): unknown {
    const jobId = this.#jobId;
    if (!this.#announced || !jobId || !(error instanceof ReconError) || error.hint) return error;
    const arrived = this.#downloaded.length > 0
      ? `; the ${this.#downloaded.length} that arrived are in ${this.#resultDir}`
      : "";
    return Object.assign(error, {
      hint: `the server keeps the results in RECON_DICOM_DIR/job_${jobId}_output${arrived}`,
    });
  }

  /** Ctrl-C: drop the upload, cancel the queued job, or stop a download, by where we are. */
  interrupt(): void {
    this.interrupted = true;
    const jobId = this.#jobId;
    if (this.#downloading) {
      // The job is done; stop receiving. The server keeps the results (no results_received).
      this.#channel.abort(
        new InterruptedError(`interrupted while downloading the results of job ${jobId}`, {
          hint: `the server keeps them in RECON_DICOM_DIR/job_${jobId}_output`,
        }),
      );
    } else if (jobId) {
      this.#event({ kind: "notice", text: `cancelling job ${jobId} on the server…` });
      this.#channel.send({ type: "cancel_job", job_id: jobId, reason: "interrupted" })
        .catch(() => {});
    } else if (this.#uploadComplete) {
      // job_queued is on its way; its handler calls interrupt() again.
    } else {
      this.#channel.abort(
        new InterruptedError("interrupted during upload; the server drops the job"),
      );
    }
  }

  #event(event: SubmitEvent): void {
    this.#options.onEvent?.(event);
  }

  /** Report hostile server behaviour, cut the connection and throw. */
  #hostile(text: string): never {
    // It quotes the server's words; JSON.stringify leaves DEL and C1 controls as they are.
    const message = printable(text);
    this.#options.onHostile?.(message);
    this.#channel.abort();
    throw new ProtocolError(message);
  }

  /** The server's next message, checked to be about our job once we know its id. */
  async #next(): Promise<ServerMessage> {
    const incoming = await this.#channel.receive();
    if (incoming.type === "goodbye") {
      throw new ConnectionError(
        `the server ended the session before the job finished${
          incoming.reason ? ` (${incoming.reason})` : ""
        }`,
      );
    }
    if (incoming.type !== "message") this.#hostile(`server sent unexpected ${incoming.type} data`);
    const message = parseServerMessage(incoming.message);
    const about = (message as { job_id?: string }).job_id;
    if (this.#jobId && about !== undefined && about !== this.#jobId) {
      this.#hostile(`server sent ${message.type} for job ${about}, not ours (${this.#jobId})`);
    }
    return message;
  }

  /** Dispatch one message; the result once `recon_complete` confirms every file. */
  async #handle(message: ServerMessage): Promise<SubmitResult | undefined> {
    switch (message.type) {
      case "request_file":
        return await this.#upload(message);
      case "job_queued":
        return this.#queued(message);
      case "job_started":
      case "job_progress":
      case "server_shutting_down":
        return this.#follow(message);
      case "error":
        throw this.#refusal(message);
      case "job_failed":
        throw this.#failure(message);
      case "dicom_transfer_start":
        return await this.#acceptResults(message);
      case "result_file":
        return await this.#receiveResult(message);
      case "recon_complete":
        return await this.#complete(message);
      default:
        this.#hostile(`server sent ${message.type} during a job`);
    }
  }

  /** Upload: send a file the server asked for, once, and only one this job offered. */
  async #upload(request: ServerMessageOf<"request_file">): Promise<undefined> {
    const file = this.#byName.get(request.name);
    if (!file || this.#sent.has(request.name)) {
      this.#hostile(
        `server asked for ${
          JSON.stringify(request.name)
        }, which this job did not offer (or already sent); refusing`,
      );
    }
    this.#sent.add(file.name);
    try {
      const digest = await sendFileFrom(this.#channel, file.path, file.size, {
        onProgress: (bytes) =>
          this.#event({ kind: "upload", name: file.name, bytes, total: file.size }),
      });
      // The server verified this SHA-256 at FILE_END (§5).
      this.#uploaded.push({
        name: file.name,
        size: file.size,
        original_path_on_client: file.path,
        sha256: digest.sha256,
      });
      this.#uploadComplete = this.#sent.size === this.#options.files.length;
    } catch (error) {
      if (error instanceof TransferError) {
        await this.#channel.send({ type: "error", reason: error.message }).catch(() => {});
      }
      throw error;
    }
  }

  /** Wait for queued: the job has an id; an interrupt that waited for it cancels it now. */
  #queued(message: ServerMessageOf<"job_queued">): undefined {
    if (!this.#uploadComplete || message.files_received !== this.#options.files.length) {
      this.#hostile(
        `server queued the job after ${message.files_received} of ${this.#options.files.length} files`,
      );
    }
    this.#jobId = message.job_id;
    this.#event({ kind: "queued", jobId: message.job_id });
    if (this.interrupted) this.interrupt();
    return undefined;
  }

  /** Follow: pass the job's events on to the caller. */
  #follow(
    message: ServerMessageOf<"job_started" | "job_progress" | "server_shutting_down">,
  ): undefined {
    if (message.type === "job_started") this.#event({ kind: "started", jobId: message.job_id });
    else if (message.type === "job_progress") {
      this.#event({ kind: "progress", text: message.text, percent: message.percent });
    } else this.#event({ kind: "notice", text: `server: ${message.reason}` });
    return undefined;
  }

  #refusal(message: ServerMessageOf<"error">): Error {
    if (message.kind === "transfer") {
      return new TransferError(`the server could not take the upload: ${message.reason}`);
    }
    return new JobError(`the server refused the job: ${message.reason}`);
  }

  #failure(message: ServerMessageOf<"job_failed">): Error {
    if (this.interrupted) return new JobCancelledError(message.job_id);
    return new JobFailedError(
      message.job_id,
      message.reason,
      message.exit_code,
      message.stderr_tail,
    );
  }

  /**
   * Receive results: they must fit CLIENT_MAX_RESULT_BYTES and the free space of the
   * download directory; then create the job's directory and say ready. Otherwise answer
   * `refused`, and the results stay on the server.
   */
  async #acceptResults(message: ServerMessageOf<"dicom_transfer_start">): Promise<undefined> {
    const jobId = this.#jobId;
    if (!jobId || message.job_id !== jobId) this.#hostile("results announced for another job");
    if (this.#announced) this.#hostile("results announced twice");
    const { count, total_size: totalSize, skipped = 0 } = message;
    this.#announced = { count, totalSize, skipped };
    const { downloadDir, maxResultBytes = 0 } = this.#options;
    const resultDir = path.join(downloadDir, jobId);
    this.#resultDir = resultDir;
    const kept = `they stay on the server in RECON_DICOM_DIR/job_${jobId}_output`;
    const refuse = async (reason: string, hint?: string): Promise<never> => {
      await this.#channel.send({ type: "dicom_transfer_ack", job_id: jobId, status: "refused" })
        .catch(() => {});
      throw new TransferError(`${reason}; ${kept}`, { hint });
    };
    const what = `the ${count} result file(s) of job ${jobId} (${totalSize} bytes)`;
    if (maxResultBytes > 0 && totalSize > maxResultBytes) {
      await refuse(
        `${what} exceed CLIENT_MAX_RESULT_BYTES (${maxResultBytes})`,
        "raise CLIENT_MAX_RESULT_BYTES in recon.opts (0 = no cap) for jobs this large",
      );
    }
    try {
      await Deno.mkdir(downloadDir, { recursive: true });
      const free = await (this.#options.diskFree ?? diskFree)(downloadDir);
      if (totalSize > free) {
        await refuse(
          `${what} do not fit in ${downloadDir} (${free} bytes free)`,
          "free space in CLIENT_DOWNLOAD_DIR, or point it at a larger disk",
        );
      }
      await Deno.mkdir(resultDir);
    } catch (error) {
      if (error instanceof TransferError) throw error;
      await refuse(`cannot create ${resultDir}: ${errorMessage(error)}`);
    }
    this.#downloading = true;
    await this.#channel.send({ type: "dicom_transfer_ack", job_id: jobId, status: "ready" });
  }

  /**
   * Receive one result into the job's directory, never over an existing file. Its name
   * must be safe (§6.2) and new, and it must fit the announced count and total size.
   */
  async #receiveResult(message: ServerMessageOf<"result_file">): Promise<undefined> {
    const resultDir = this.#resultDir;
    const announced = this.#announced;
    if (!resultDir || !announced || !this.#downloading) {
      this.#hostile(`server sent result ${JSON.stringify(message.name)} before announcing any`);
    }
    const problem = resultPathProblem(message.name);
    if (problem) {
      this.#hostile(
        `server sent an unsafe result name ${JSON.stringify(message.name)}: ${problem}`,
      );
    }
    if (this.#names.has(message.name)) {
      this.#hostile(`server sent result ${JSON.stringify(message.name)} twice`);
    }
    if (this.#names.size >= announced.count) {
      this.#hostile(`server sent more than the ${announced.count} result(s) it announced`);
    }
    if (this.#receivedBytes + message.size > announced.totalSize) {
      this.#hostile(`server sent more than the ${announced.totalSize} bytes it announced`);
    }
    this.#names.add(message.name);
    this.#receivedBytes += message.size;
    const target = resolveInside(resultDir, message.name);
    await Deno.mkdir(path.dirname(target), { recursive: true });
    const digest = await receiveFileTo(this.#channel, target, message.size, {
      noOverwrite: true,
      onProgress: (bytes) =>
        this.#event({ kind: "download", name: message.name, bytes, total: message.size }),
    });
    this.#downloaded.push({ name: message.name, path: target, ...digest });
  }

  /**
   * `recon_complete`: every announced result arrived, each verified by the SHA-256 of
   * its FILE_END; only now may the server remove them.
   */
  async #complete(message: ServerMessageOf<"recon_complete">): Promise<SubmitResult> {
    const jobId = this.#jobId;
    const resultDir = this.#resultDir;
    const announced = this.#announced;
    if (!resultDir || !jobId || !announced) this.#hostile("recon_complete before any result");
    const received = this.#downloaded.length;
    if (
      received !== announced.count || message.count !== announced.count ||
      this.#receivedBytes !== announced.totalSize
    ) {
      throw new TransferError(
        `job finished with ${received} of ${announced.count} result file(s) (${this.#receivedBytes} of ${announced.totalSize} bytes)`,
      );
    }
    await this.#channel.send({ type: "results_received", job_id: jobId });
    return {
      jobId,
      uploaded: this.#uploaded,
      resultDir,
      files: this.#downloaded,
      skipped: announced.skipped,
    };
  }
}
