/**
 * One session of a job, message by message (docs/PROTOCOL.md §6.1, §6.6): upload
 * (answer each `request_file`, from its `offset` when the server holds the start),
 * wait for `job_queued`, follow the job's events (`job_status`, `job_started`,
 * `job_progress`), receive the results into `CLIENT_DOWNLOAD_DIR/<job_id>/` when they
 * fit (free space, CLIENT_MAX_RESULT_BYTES), checking every name, size and count
 * against the announcement, and end when `recon_complete` confirms the count.
 *
 * A session opens in one of four ways: `submit_recon_job` (a new job), `resume_upload`
 * (the rest of a cut-off upload), `follow_job` with `deliver` (wait for a job and
 * take its results), or `rerun_job` (a failed job again, as a new one). What this
 * client knows of the job outlives the session in a {@link ClientJob}, so that the
 * next session (lib/client/run_job.ts) starts where this one stopped.
 *
 * @module
 */
import * as path from "node:path";
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
import { resultPathProblem } from "../wire/file_names.ts";
import { printable } from "../printable.ts";
import {
  type FileEntry,
  FINAL_STATES,
  type MessageOf,
  parseServerMessage,
  type Priority,
  type ReconOptions,
  type ServerMessage,
} from "../wire/protocol.ts";
import { sendFileFrom } from "../wire/transfer.ts";
import { type Announcement, ResultDownload } from "./download.ts";
import type { LocalFile } from "./files.ts";
import {
  diskFree,
  JobCancelledError,
  JobFailedError,
  JobUnavailableError,
  type SubmitEvent,
  type SubmitResult,
  unavailableKind,
} from "./job.ts";

/** How a session begins. */
export type Opening =
  | { kind: "submit"; options: ReconOptions; priority?: Priority }
  | { kind: "resume" }
  | { kind: "follow" }
  | { kind: "rerun"; jobId: string; options?: ReconOptions; priority?: Priority };

/** What a job's sessions need besides the channel. */
export interface JobOptions {
  /** The inputs (for a submission or a resumed upload; none otherwise). */
  files?: LocalFile[];
  /** CLIENT_DOWNLOAD_DIR; results go to `<downloadDir>/<job_id>/`. */
  downloadDir: string;
  /** Stop once the job is queued (`--detach`) instead of waiting for its results. */
  until?: "queued" | "results";
  /** CLIENT_MAX_RESULT_BYTES: refuse results whose announced total is larger; 0 = no cap. */
  maxResultBytes?: number;
  /** Free bytes on the file system that holds `dir` (default statfs; a test can pretend). */
  diskFree?: (dir: string) => Promise<number>;
  onEvent?: (event: SubmitEvent) => void;
  /**
   * Told the job id as soon as the server names it (the first `request_file` of a
   * submission, `job_queued` of a rerun), before the job is queued.
   */
  onJobId?: (jobId: string) => void;
  /** Logs hostile server behaviour. */
  onHostile?: (message: string) => void;
  /**
   * What an interrupt means while the job waits or runs: cancel it on the server (a
   * submission, as Ctrl-C always did), or only stop following it (`fetch`, `wait`).
   * Default true.
   */
  cancelOnInterrupt?: boolean;
  /**
   * The command line of `recon-client fetch ID` or `cancel ID` for hints, with the
   * options this one was given (`--opts`, `--host`, …); see {@link defaultCommand}.
   */
  command?: (subcommand: "fetch" | "cancel", jobId: string) => string;
}

/** How a job's sessions ended. */
export type JobOutcome =
  | { kind: "queued"; jobId: string; uploaded: FileEntry[] }
  | { kind: "results"; result: SubmitResult };

/** Where a job is, as far as this client knows. */
export type JobPhase = "upload" | "wait" | "download";

/** What this client knows of one job, across its sessions. */
export class ClientJob {
  jobId?: string;
  phase: JobPhase;
  /** Inputs whose upload ended with a FILE_END the server verified, by name. */
  readonly uploaded = new Map<string, FileEntry>();
  download?: ResultDownload;
  skipped = 0;
  /** Ctrl-C came: set before the session learns how to act on it. */
  interrupted = false;
  /** The interrupt came during an upload: cancel the job in a session of its own. */
  cancelWanted = false;

  constructor(phase: JobPhase, jobId?: string) {
    this.phase = phase;
    this.jobId = jobId;
  }
}

type ServerMessageOf<T extends ServerMessage["type"]> = MessageOf<ServerMessage, T>;

/** The default for {@link JobOptions.command}. */
export function defaultCommand(subcommand: "fetch" | "cancel", jobId: string): string {
  return `recon-client ${subcommand} ${jobId}`;
}

/**
 * One session's conversation. Each server message is handled by the step it belongs
 * to, and one read loop drives them; each step checks what it needs (a file not yet
 * sent in this session, results announced for our job id), so a message out of turn
 * is refused there.
 */
export class JobSession {
  readonly #channel: Channel;
  readonly #job: ClientJob;
  readonly #opening: Opening;
  readonly #options: JobOptions;
  readonly #onHeard: () => void;
  readonly #byName: Map<string, LocalFile>;
  /** Files asked for in this session (each at most once). */
  readonly #requested = new Set<string>();
  #heard = false;
  /** Every file of a submission sent, job_queued not yet read. */
  #uploadComplete = false;
  /** This session's result announcement, and where it asked the server to start. */
  #announced?: Announcement & { skipped: number; start: { index: number; offset: number } };
  /** Results received in this session, and their bytes. */
  #sessionResults = 0;
  #downloading = false;
  /** A resume_upload the server refused: follow the job instead (it may be queued). */
  #fellBack = false;

  constructor(
    channel: Channel,
    job: ClientJob,
    opening: Opening,
    options: JobOptions,
    onHeard: () => void = () => {},
  ) {
    this.#channel = channel;
    this.#job = job;
    this.#opening = opening;
    this.#options = options;
    this.#onHeard = onHeard;
    this.#byName = new Map((options.files ?? []).map((file) => [file.name, file]));
  }

  get #files(): LocalFile[] {
    return this.#options.files ?? [];
  }

  /** Run the session to its outcome; throws what ended it. */
  async run(): Promise<JobOutcome> {
    if (this.#channel.version !== 3) {
      throw new ProtocolError(
        `this client speaks protocol version 3, not ${this.#channel.version}`,
      );
    }
    await this.#open();
    try {
      while (true) {
        const outcome = await this.#handle(await this.#next());
        if (outcome) return outcome;
      }
    } catch (error) {
      throw this.#whereResultsAre(error);
    }
  }

  async #open(): Promise<void> {
    const opening = this.#opening;
    const jobId = this.#job.jobId;
    switch (opening.kind) {
      case "submit": {
        const files = this.#files;
        // A count, then one message per file, so that no message grows with the
        // number of files (PROTOCOL.md §4.2).
        await this.#channel.send({
          type: "submit_recon_job",
          file_count: files.length,
          client_recon_options_json: JSON.stringify(opening.options),
          ...(opening.priority ? { priority: opening.priority } : {}),
        });
        for (const file of files) {
          await this.#channel.send({
            type: "input_file",
            name: file.name,
            size: file.size,
            original_path_on_client: file.path,
          });
        }
        return;
      }
      case "resume":
        await this.#channel.send({ type: "resume_upload", job_id: jobId });
        return;
      case "follow":
        await this.#channel.send({ type: "follow_job", job_id: jobId, deliver: true });
        return;
      case "rerun":
        await this.#channel.send({
          type: "rerun_job",
          job_id: opening.jobId,
          ...(opening.options
            ? { client_recon_options_json: JSON.stringify(opening.options) }
            : {}),
          ...(opening.priority ? { priority: opening.priority } : {}),
        });
        return;
    }
  }

  /** A failure after results were announced says where they are and how to get the rest. */
  #whereResultsAre(error: unknown): unknown {
    const download = this.#job.download;
    const jobId = this.#job.jobId;
    if (!download || !jobId || !(error instanceof ReconError) || error.hint) return error;
    const held = download.files.length > 0
      ? `; the ${download.files.length} that arrived are in ${download.resultDir}`
      : "";
    return Object.assign(error, {
      hint: `the server keeps the results in RECON_DICOM_DIR/job_${jobId}_output${held}; ` +
        `${this.#fetchCommand(jobId)} resumes the download`,
    });
  }

  #fetchCommand(jobId: string): string {
    return (this.#options.command ?? defaultCommand)("fetch", jobId);
  }

  /**
   * Ctrl-C, by where the job is: stop the download (the server keeps the results),
   * cancel the job on the server, or (upload) cut the session and let the caller
   * cancel the job in a session of its own.
   */
  interrupt(): void {
    const job = this.#job;
    job.interrupted = true;
    const jobId = job.jobId;
    const cancel = this.#options.cancelOnInterrupt ?? true;
    if (this.#downloading) {
      // The job is done; stop receiving. The server keeps the results (no results_received).
      this.#channel.abort(
        new InterruptedError(`interrupted while downloading the results of job ${jobId}`, {
          hint: `the server keeps them; ${this.#fetchCommand(jobId!)} resumes the download`,
        }),
      );
    } else if (job.phase !== "upload" && jobId) {
      if (cancel) {
        this.#event({ kind: "notice", text: `cancelling job ${jobId} on the server…` });
        this.#channel.send({ type: "cancel_job", job_id: jobId, reason: "interrupted" })
          .catch(() => {});
      } else {
        this.#channel.abort(
          new InterruptedError(`stopped following job ${jobId}; it goes on on the server`, {
            hint: `fetch its results later: ${this.#fetchCommand(jobId)}`,
          }),
        );
      }
    } else if (this.#uploadComplete || this.#opening.kind === "rerun") {
      // job_queued is on its way; its handler calls interrupt() again.
    } else if (jobId) {
      job.cancelWanted = cancel;
      this.#channel.abort(new InterruptedError(`interrupted during the upload of job ${jobId}`));
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
    const about = message.type === "job_status"
      ? message.job.job_id
      : (message as { job_id?: string }).job_id;
    const jobId = this.#job.jobId;
    if (jobId && about !== undefined && about !== jobId) {
      this.#hostile(`server sent ${message.type} for job ${about}, not ours (${jobId})`);
    }
    return message;
  }

  /** The server answered about our job in this session. */
  #heardFrom(): void {
    if (this.#heard) return;
    this.#heard = true;
    this.#onHeard();
  }

  /** Learn the job's id (once). */
  #learnId(jobId: string): void {
    if (this.#job.jobId === jobId) return;
    this.#job.jobId = jobId;
    this.#options.onJobId?.(jobId);
  }

  /** Dispatch one message; the outcome once the session's goal is reached. */
  async #handle(message: ServerMessage): Promise<JobOutcome | undefined> {
    switch (message.type) {
      case "request_file":
        return await this.#upload(message);
      case "job_queued":
        return this.#queued(message);
      case "job_status":
        return this.#status(message);
      case "job_started":
      case "job_progress":
      case "server_shutting_down":
        return this.#follow(message);
      case "error":
        return await this.#refusal(message);
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

  /**
   * Upload: send a file the server asked for, once per session, only one this job
   * offered, from the offset the server already holds.
   */
  async #upload(request: ServerMessageOf<"request_file">): Promise<undefined> {
    const file = this.#byName.get(request.name);
    if (this.#job.phase !== "upload" || this.#fellBack) {
      this.#hostile(`server asked for ${JSON.stringify(request.name)} after the upload`);
    }
    if (!file || this.#requested.has(request.name)) {
      this.#hostile(
        `server asked for ${
          JSON.stringify(request.name)
        }, which this job did not offer (or already sent); refusing`,
      );
    }
    const offset = request.offset ?? 0;
    if (offset > file.size) {
      this.#hostile(
        `server asked for ${JSON.stringify(request.name)} from byte ${offset}, ` +
          `beyond its ${file.size} bytes`,
      );
    }
    this.#learnId(request.job_id);
    this.#heardFrom();
    this.#requested.add(file.name);
    try {
      const digest = await sendFileFrom(this.#channel, file.path, file.size, {
        offset,
        onProgress: (bytes) =>
          this.#event({ kind: "upload", name: file.name, bytes, total: file.size }),
      });
      // The server verifies this SHA-256 of the whole file at FILE_END (§5).
      this.#job.uploaded.set(file.name, {
        name: file.name,
        size: file.size,
        original_path_on_client: file.path,
        sha256: digest.sha256,
      });
      this.#uploadComplete = this.#opening.kind === "submit" &&
        this.#requested.size === this.#files.length;
    } catch (error) {
      if (error instanceof TransferError) {
        await this.#channel.send({ type: "error", reason: error.message }).catch(() => {});
      }
      throw error;
    }
  }

  /** Queued: the job has an id and waits; an interrupt that waited for it acts now. */
  #queued(message: ServerMessageOf<"job_queued">): JobOutcome | undefined {
    const job = this.#job;
    if (job.phase !== "upload" || this.#fellBack) this.#hostile("server queued the job twice");
    if (this.#opening.kind !== "rerun") {
      const count = this.#files.length;
      // A resumed upload sends only what the server lacked: it may have had it all.
      const allSent = this.#uploadComplete || this.#opening.kind === "resume";
      if (!allSent || message.files_received !== count) {
        this.#hostile(
          `server queued the job after ${message.files_received} of ${count} files`,
        );
      }
    }
    this.#learnId(message.job_id);
    this.#heardFrom();
    job.phase = "wait";
    this.#event({ kind: "queued", jobId: message.job_id });
    if (job.interrupted) this.interrupt();
    if (this.#options.until === "queued") {
      return { kind: "queued", jobId: message.job_id, uploaded: [...job.uploaded.values()] };
    }
    return undefined;
  }

  /** `job_status`: where the job is now (the answer to follow_job). */
  #status(message: ServerMessageOf<"job_status">): undefined {
    const job = this.#job;
    const info = message.job;
    if (!job.jobId || job.phase === "upload" && !this.#fellBack) {
      this.#hostile("server sent job_status before the job was queued");
    }
    if (this.#fellBack) job.phase = "wait";
    this.#heardFrom();
    this.#event({ kind: "status", job: info });
    if (info.state === "receiving") {
      this.#hostile(`server says job ${info.job_id} is still being uploaded while we follow it`);
    }
    if (info.state === "expired") {
      throw new JobUnavailableError(
        "expired",
        `job ${info.job_id} expired; its results were removed`,
      );
    }
    if (FINAL_STATES.includes(info.state) && job.download && info.state !== "succeeded") {
      this.#hostile(`server says job ${info.job_id} ${info.state} after it sent its results`);
    }
    return undefined;
  }

  /** Follow: pass the job's events on to the caller. */
  #follow(
    message: ServerMessageOf<"job_started" | "job_progress" | "server_shutting_down">,
  ): undefined {
    if (message.type === "server_shutting_down") {
      this.#event({ kind: "notice", text: `server: ${message.reason}` });
      return undefined;
    }
    if (this.#job.phase === "upload" && !this.#fellBack) {
      this.#hostile(`server sent ${message.type} before the job was queued`);
    }
    if (message.type === "job_started") this.#event({ kind: "started", jobId: message.job_id });
    else this.#event({ kind: "progress", text: message.text, percent: message.percent });
    return undefined;
  }

  /**
   * `error`: the server cannot do what we asked. A refused `resume_upload` may mean
   * the job was queued after all (its job_queued lost with the connection), or ended:
   * follow it instead, which says which.
   */
  async #refusal(message: ServerMessageOf<"error">): Promise<undefined> {
    // An absent or unknown kind counts as refused (§4.3).
    const kind = unavailableKind(message.kind) ??
      (message.kind === "transfer" ? undefined : "refused");
    const job = this.#job;
    const jobId = job.jobId;
    if (message.kind === "transfer") {
      throw new TransferError(`the server could not take the upload: ${message.reason}`);
    }
    if (kind === "refused" && this.#opening.kind === "resume" && !this.#heard && jobId) {
      if (this.#fellBack) throw new JobUnavailableError(kind, message.reason);
      this.#fellBack = true;
      await this.#channel.send({ type: "follow_job", job_id: jobId, deliver: true });
      return undefined;
    }
    if (kind === "refused" && job.phase === "upload" && this.#heard && jobId) {
      // In the middle of an upload the server refuses the next file only when it shuts
      // down (§7.5); the job waits, receiving, for this client to come back.
      throw new ConnectionError(`the server stopped the upload: ${message.reason}`);
    }
    // A request about a job by its id gets the server's one line; a new job's refusal
    // (too large, no disk space, …) says the job was refused.
    if (this.#opening.kind !== "submit") throw new JobUnavailableError(kind!, message.reason);
    throw new JobError(`the server refused the job: ${message.reason}`);
  }

  #failure(message: ServerMessageOf<"job_failed">): Error {
    if (this.#job.interrupted && (this.#options.cancelOnInterrupt ?? true)) {
      return new JobCancelledError(message.job_id);
    }
    return new JobFailedError(
      message.job_id,
      message.reason,
      message.exit_code,
      message.stderr_tail,
    );
  }

  /**
   * Receive results: they must fit CLIENT_MAX_RESULT_BYTES and the free space of the
   * download directory; then open the download (taking over what an earlier session
   * verified) and say ready, with where to start. Otherwise answer `refused`, and the
   * results stay on the server.
   */
  async #acceptResults(message: ServerMessageOf<"dicom_transfer_start">): Promise<undefined> {
    const job = this.#job;
    const jobId = job.jobId;
    if (!jobId || message.job_id !== jobId || job.phase === "upload") {
      this.#hostile("results announced for another job");
    }
    if (this.#announced) this.#hostile("results announced twice");
    const { count, total_size: totalSize, skipped = 0 } = message;
    if (
      job.download &&
      (job.download.announced.count !== count || job.download.announced.totalSize !== totalSize)
    ) {
      this.#hostile(
        `server announced ${count} result(s) of ${totalSize} bytes, ` +
          `${job.download.announced.count} of ${job.download.announced.totalSize} before`,
      );
    }
    this.#heardFrom();
    job.phase = "download";
    job.skipped = skipped;
    const { maxResultBytes = 0 } = this.#options;
    const kept = `they stay on the server in RECON_DICOM_DIR/job_${jobId}_output`;
    const later = `${this.#fetchCommand(jobId)} fetches them`;
    const refuse = async (reason: string, hint: string): Promise<never> => {
      await this.#channel.send({ type: "dicom_transfer_ack", job_id: jobId, status: "refused" })
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
    this.#downloading = true;
    if (start.index === count && count > 0) {
      this.#event({
        kind: "notice",
        text: `the ${count} result file(s) of job ${jobId} are already in ` +
          `${download.resultDir}, verified`,
      });
    } else if (start.index > 0 || start.offset > 0) {
      const partly = start.offset > 0 ? ` and ${start.offset} bytes of the next` : "";
      this.#event({
        kind: "notice",
        text: `resuming the results of job ${jobId}: ${start.index} of ${count} file(s) ` +
          `already here${partly}`,
      });
    }
    await this.#channel.send({
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
    const { downloadDir } = this.#options;
    const cannot = (error: unknown) =>
      refuse(
        `cannot save the results in ${path.join(downloadDir, jobId)}: ${errorMessage(error)}`,
        error instanceof ReconError && error.hint ? error.hint : "check CLIENT_DOWNLOAD_DIR",
      );
    let download: ResultDownload;
    let free: number;
    try {
      await Deno.mkdir(downloadDir, { recursive: true });
      download = this.#job.download ??
        await ResultDownload.open(downloadDir, jobId, announced);
      free = await (this.#options.diskFree ?? diskFree)(downloadDir);
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
  async #receiveResult(message: ServerMessageOf<"result_file">): Promise<undefined> {
    const announced = this.#announced;
    const download = this.#job.download;
    if (!announced || !download || !this.#downloading) {
      this.#hostile(`server sent result ${JSON.stringify(message.name)} before announcing any`);
    }
    const problem = resultPathProblem(message.name);
    if (problem) {
      this.#hostile(
        `server sent an unsafe result name ${JSON.stringify(message.name)}: ${problem}`,
      );
    }
    if (download.has(message.name)) {
      this.#hostile(`server sent result ${JSON.stringify(message.name)} twice`);
    }
    if (download.files.length >= announced.count) {
      this.#hostile(`server sent more than the ${announced.count} result(s) it announced`);
    }
    if (download.verifiedBytes + message.size > announced.totalSize) {
      this.#hostile(`server sent more than the ${announced.totalSize} bytes it announced`);
    }
    const offset = message.offset ?? 0;
    if (offset > 0) {
      const { start } = announced;
      const partial = download.partial;
      if (
        this.#sessionResults > 0 || offset !== start.offset || partial?.name !== message.name ||
        offset > message.size
      ) {
        this.#hostile(
          `server resumed ${JSON.stringify(message.name)} at byte ${offset}, ` +
            `which is not what this client holds`,
        );
      }
    }
    this.#sessionResults++;
    await download.receive(
      this.#channel,
      { name: message.name, size: message.size, offset },
      (bytes) => this.#event({ kind: "download", name: message.name, bytes, total: message.size }),
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
  async #complete(message: ServerMessageOf<"recon_complete">): Promise<JobOutcome> {
    const job = this.#job;
    const jobId = job.jobId;
    const announced = this.#announced;
    const download = job.download;
    if (!jobId || !announced || !download) this.#hostile("recon_complete before any result");
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
    this.#downloading = false;
    await this.#channel.send({ type: "results_received", job_id: jobId });
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
