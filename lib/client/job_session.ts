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
import type { Channel } from "../wire/channel.ts";
import {
  ConnectionError,
  InterruptedError,
  JobError,
  ProtocolError,
  ReconError,
  TransferError,
} from "../errors.ts";
import { printable } from "../printable.ts";
import {
  FINAL_STATES,
  type JobInfo,
  type MessageOf,
  parseServerMessage,
  type ServerMessage,
} from "../wire/protocol.ts";
import { sendFileFrom } from "../wire/file_send.ts";
import { ResultDelivery } from "./delivery.ts";
import { goodbyeError } from "./reconnect.ts";
import type { LocalFile } from "./files.ts";
import {
  type ClientJob,
  defaultCommand,
  JobCancelledError,
  JobFailedError,
  type JobOptions,
  type JobOutcome,
  JobUnavailableError,
  type Opening,
  type SubmitEvent,
  unavailableKind,
} from "./job.ts";

export {
  ClientJob,
  defaultCommand,
  type JobOptions,
  type JobOutcome,
  type JobPhase,
  type Opening,
} from "./job.ts";

type ServerMessageOf<T extends ServerMessage["type"]> = MessageOf<ServerMessage, T>;

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
  /** A file is being sent: an interrupt stops it at the next record (see interrupt()). */
  #sending = false;
  /** Set by an interrupt during a file: the next progress report throws it. */
  #stopSending?: InterruptedError;
  #stallTimer?: ReturnType<typeof setTimeout>;
  /** The job as the last `job_status` described it. */
  #lastState?: JobInfo;
  /** The results' side of the session. */
  readonly #delivery: ResultDelivery;
  /** A resume_upload the server refused: follow the job instead (it may be queued). */
  #fellBack = false;
  /** `job_status` messages heard while following without the results. */
  #statuses = 0;

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
    this.#delivery = new ResultDelivery({
      channel,
      job,
      options,
      hostile: (text) => this.#hostile(text),
      heard: () => this.#heardFrom(),
      event: (event) => this.#event(event),
      fetchCommand: (jobId) => this.#fetchCommand(jobId),
    });
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
          ...(opening.deliver?.length ? { deliver: opening.deliver } : {}),
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
        await this.#channel.send({ type: "follow_job", job_id: jobId, deliver: this.#download });
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

  /** Whether this run takes the results (not `--no-download`). */
  get #download(): boolean {
    return this.#options.download ?? true;
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
    if (this.#delivery.downloading) {
      // The job is done; stop receiving. The server keeps the results (no results_received).
      this.#channel.abort(
        new InterruptedError(`interrupted while downloading the results of job ${jobId}`, {
          hint: `the server keeps them in RECON_DICOM_DIR/job_${jobId}_output; ` +
            `${this.#fetchCommand(jobId!)} resumes the download`,
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
      const stop = new InterruptedError(`interrupted during the upload of job ${jobId}`);
      if (!this.#sending) return this.#channel.abort(stop);
      // Stop between two records, so the records in flight settle before the session
      // is cut; a send stalled for a second is cut where it is.
      this.#stopSending = stop;
      this.#stallTimer = setTimeout(() => this.#channel.abort(stop), 1000);
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
    if (incoming.type === "goodbye") throw this.#goodbye(incoming.reason);
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

  /** The error for the server's GOODBYE: a lost connection, or a revoked key. */
  #goodbye(reason: string, cause?: unknown): ConnectionError {
    const jobId = this.#job.jobId;
    return goodbyeError(reason, ` before ${jobId ? `job ${jobId}` : "the job"} finished`, cause);
  }

  /**
   * A send that failed because the server closed the connection: the server may have
   * said why first (a GOODBYE, e.g. for a revoked key, §6.10), and the channel may
   * already have read it ahead. Nothing is waited for: a failed channel is closed, and
   * hands out only the records it read before it failed.
   */
  async #whySendFailed(error: unknown): Promise<unknown> {
    if (!(error instanceof ConnectionError) || !this.#channel.closed) return error;
    try {
      while (true) {
        const incoming = await this.#channel.receive();
        if (incoming.type === "goodbye") return this.#goodbye(incoming.reason, error);
      }
    } catch {
      return error; // nothing more was read: the send's failure says it all
    }
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
        return await this.#delivery.accept(message);
      case "result_file":
        return await this.#delivery.receive(message);
      case "recon_complete":
        return await this.#delivery.complete(message);
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
    this.#sending = true;
    try {
      const digest = await sendFileFrom(this.#channel, file.path, file.size, {
        offset,
        onProgress: (bytes) => {
          if (this.#stopSending) throw this.#stopSending;
          this.#event({ kind: "upload", name: file.name, bytes, total: file.size });
        },
      });
      // Sent whole before the interrupt was noticed: cut the session all the same.
      if (this.#stopSending) throw this.#stopSending;
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
      throw await this.#whySendFailed(error);
    } finally {
      this.#sending = false;
      clearTimeout(this.#stallTimer);
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
    // Without the results the job is followed in a session of its own (run_job.ts).
    if (this.#options.until === "queued" || !this.#download) {
      return { kind: "queued", jobId: message.job_id, uploaded: [...job.uploaded.values()] };
    }
    return undefined;
  }

  /**
   * `job_status`: where the job is now (the answer to follow_job). Following without
   * the results, the second one is the job's final state (§6.7): the outcome.
   */
  #status(message: ServerMessageOf<"job_status">): JobOutcome | undefined {
    const job = this.#job;
    const info = message.job;
    if (!job.jobId || job.phase === "upload" && !this.#fellBack) {
      this.#hostile("server sent job_status before the job was queued");
    }
    if (this.#fellBack) job.phase = "wait";
    this.#heardFrom();
    this.#lastState = info;
    const withoutResults = !this.#download && (this.#opening.kind === "follow" || this.#fellBack);
    // A failed or cancelled job's job_failed follows at once and says it all; without
    // the results the caller reports how the job ended.
    const told = info.state === "failed" || info.state === "cancelled" ||
      (withoutResults && FINAL_STATES.includes(info.state));
    if (!told) this.#event({ kind: "status", job: info });
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
    if (withoutResults) {
      if (++this.#statuses === 1) return undefined;
      if (!FINAL_STATES.includes(info.state)) {
        this.#hostile(`the server's last word on job ${info.job_id} says ${info.state}`);
      }
      if (
        info.state === "cancelled" && job.interrupted && (this.#options.cancelOnInterrupt ?? true)
      ) {
        throw new JobCancelledError(info.job_id);
      }
      return { kind: "ended", job: info, uploaded: [...job.uploaded.values()] };
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
      await this.#channel.send({ type: "follow_job", job_id: jobId, deliver: this.#download });
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
    const last = this.#lastState;
    const cancelled = last?.job_id === message.job_id && last.state === "cancelled";
    return new JobFailedError(
      message.job_id,
      message.reason,
      message.exit_code,
      message.stderr_tail,
      cancelled ? { cancelledBy: last.cancelled_by ?? "" } : undefined,
    );
  }
}
