/**
 * One job of the watch mode, seen through (docs/WATCH.md §2, §5): a pending group sent
 * as a new job, or a job the server named taken up again, by {@link runJob}
 * (lib/client/run_job.ts), and what its end means for the state file.
 *
 * The state file follows the job: `submitted` with the job id and phase `uploading`
 * the moment the server names it (runJob's `onJobId`, at its first `request_file`,
 * before the first byte goes), then the phases `queued`, `running`, `downloading`,
 * then `done` or `failed`. Taking a job up again is `resume_upload` for an upload that
 * was not finished (only the bytes the server lacks go) and `follow_job` with
 * delivery otherwise (the download resumes after the results already verified). A
 * lost connection is made again by runJob for CLIENT_RECONNECT_TIMEOUT; after that
 * the job waits, `submitted`, for the sender's backoff ({@link JobRunContext}).
 *
 * What a failure means is decided by {@link classifyFailure}; a stop interrupts the
 * job without cancelling it: it stays on the server for the next run.
 *
 * @module
 */
import * as path from "node:path";
import type { Channel } from "../wire/channel.ts";
import { ConnectionError, errorMessage, type KeyRejectedError } from "../errors.ts";
import type { ReconOptions } from "../wire/protocol.ts";
import { describeFiles, type LocalFile } from "../client/files.ts";
import { skippedWarning } from "../client/format.ts";
import { JobFailedError, type SubmitEvent, type SubmitResult } from "../client/job.ts";
import { cancelJob, waitForJob } from "../client/query.ts";
import { isConnectionLoss } from "../client/reconnect.ts";
import { runJob, type RunJobOptions } from "../client/run_job.ts";
import { classifyFailure, keyRejected, neverRan } from "./outcome.ts";
import type { FileProbe, WatchLog } from "./probe.ts";
import { sameStat } from "./scanner.ts";
import type { FileRecord, JobPhase, StateStore } from "./state.ts";
import { names } from "./words.ts";

/** CLIENT_RECONNECT_TIMEOUT's default (ms). */
export const RECONNECT_TIMEOUT_MS = 3_600_000;

/** One job's way in: a new one, or one the server named already. */
export type Way =
  | { kind: "submit" }
  | { kind: "resume"; jobId: string }
  | { kind: "follow"; jobId: string; phase: JobPhase };

/** What a job needs from the sender that runs it. */
export interface JobRunContext {
  store: StateStore;
  runId: string;
  log: WatchLog;
  probe: FileProbe;
  /** Aborted when the watcher stops. */
  signal: AbortSignal;
  reconOptions: ReconOptions;
  downloadDir: string;
  maxResultBytes?: number;
  verifyAfterWrite?: boolean;
  /** Opens a session (for runJob's reconnections). */
  connect: () => Promise<Channel>;
  /** Opens a session, or undefined when the watcher stops first. */
  open: () => Promise<Channel | undefined>;
  reconnectTimeoutMs?: number;
  reconnect?: RunJobOptions["reconnect"];
  /** Checks pending files just before sending (skips the gone, defers the changed). */
  sendable: (groupId: string, rows: FileRecord[]) => Promise<FileRecord[] | undefined>;
  /** The server could not be reached: back off; `note` records why the job waits. */
  serverDown: (error: unknown, jobId: string | undefined, note: (reason: string) => void) => void;
  /** A session opened. */
  serverUp: () => void;
  /** A file changed during its upload: try again after a short backoff. */
  uploadFailed: () => void;
  /** The job no longer uploads: another group may. */
  uploadDone: (groupId: string) => void;
  /** The job is done: run CLIENT_DAEMON_ON_COMPLETE. */
  completed: (jobId: string, resultDir: string) => void;
  /** The server refused our key: the watcher stops. */
  keyRejected: (error: KeyRejectedError) => void;
}

/** A job of the sender from its start to its end (one use). */
export class JobRun {
  readonly #c: JobRunContext;
  readonly #groupId: string;
  readonly #way: Way;
  #rows: FileRecord[];
  #jobId?: string;
  #phase: JobPhase | null;
  /** One "connection lost" line per phase; the rest are debug. */
  #lostNoted = false;

  constructor(context: JobRunContext, groupId: string, rows: FileRecord[], way: Way) {
    this.#c = context;
    this.#groupId = groupId;
    this.#rows = rows;
    this.#way = way;
    this.#jobId = way.kind === "submit" ? undefined : way.jobId;
    this.#phase = way.kind === "submit" ? null : way.kind === "resume" ? "uploading" : way.phase;
  }

  get #ids(): number[] {
    return this.#rows.map((row) => row.id);
  }

  /** See the job through; `onChannel` hears the first session (to cut it on stop). */
  async run(onChannel: (channel: Channel) => void): Promise<void> {
    const { store, log } = this.#c;
    const way = this.#way;
    try {
      const files = await this.#prepare();
      if (!files) return;
      store.countAttempt(this.#ids);
      let channel: Channel | undefined;
      try {
        channel = await this.#c.open();
      } catch (error) {
        const rejected = keyRejected(error);
        if (!rejected) return this.#serverDown(error);
        this.#note(`not sent: ${rejected.message}`);
        return this.#c.keyRejected(rejected);
      }
      if (!channel) return;
      onChannel(channel);
      this.#c.serverUp();
      const what = names(this.#rows);
      let opening: RunJobOptions["opening"];
      if (way.kind === "submit") {
        log.info(`sending ${what} as one job (${this.#rows.length} file(s))`);
        opening = { kind: "submit", options: this.#c.reconOptions };
      } else {
        store.adopt(this.#ids, way.jobId, this.#c.runId);
        log.info(
          way.kind === "resume"
            ? `job ${way.jobId}: resuming its upload (${what}); the server asks for what it lacks`
            : `job ${way.jobId}: following it again (${what}; it was ${way.phase})`,
        );
        opening = { kind: way.kind };
      }
      const outcome = await runJob({
        opening,
        jobId: this.#jobId,
        files: files === true ? undefined : files,
        channel,
        connect: this.#c.connect,
        reconnectTimeoutMs: this.#c.reconnectTimeoutMs ?? RECONNECT_TIMEOUT_MS,
        reconnect: this.#c.reconnect,
        downloadDir: this.#c.downloadDir,
        maxResultBytes: this.#c.maxResultBytes,
        verifyAfterWrite: this.#c.verifyAfterWrite,
        signal: this.#c.signal,
        // A stop leaves the job on the server; the next run takes it up again.
        cancelOnInterrupt: false,
        onJobId: (jobId) => {
          this.#jobId = jobId;
          this.#phase = "uploading";
          store.markSubmitted(this.#ids, jobId, this.#c.runId, "uploading");
          log.debug(`job ${jobId}: named by the server; uploading ${what}`);
        },
        onEvent: (event) => this.#event(event),
        onHostile: (message) => log.error(`hostile server behaviour: ${message}`),
      });
      await channel.close().catch(() => {});
      if (outcome.kind !== "results") throw new Error("the job ended without its results");
      this.#done(outcome.result);
    } catch (error) {
      await this.#failed(error);
    }
  }

  /**
   * The files to send (true when the job needs none: it is followed), or undefined
   * when the group cannot go now.
   */
  async #prepare(): Promise<LocalFile[] | true | undefined> {
    const { store, log } = this.#c;
    const way = this.#way;
    if (way.kind === "follow") return true;
    if (way.kind === "resume" && !await this.#unchanged()) {
      // The server holds bytes of what the file was: drop the job, and let the loop
      // judge the files afresh (skipped if gone, a new scan if changed).
      await this.#dropUpload("a file changed before its upload was resumed");
      return undefined;
    }
    if (way.kind === "submit") {
      const rows = await this.#c.sendable(this.#groupId, this.#rows);
      if (!rows || rows.length === 0) return undefined;
      this.#rows = rows;
    }
    try {
      return await describeFiles(this.#rows.map((row) => row.path));
    } catch (error) {
      const reason = errorMessage(error);
      if (way.kind === "resume") {
        await this.#dropUpload(reason);
        return undefined;
      }
      store.markFailed(this.#ids, reason, null);
      log.error(`cannot send ${names(this.#rows)}: ${reason}; not sent`);
      return undefined;
    }
  }

  /** True when every file of an unfinished upload is still exactly as recorded. */
  async #unchanged(): Promise<boolean> {
    for (const row of this.#rows) {
      const result = await this.#c.probe.stat(row.path);
      if (result.kind !== "file" || !sameStat(result.stat, row)) return false;
    }
    return true;
  }

  /** Record a new phase of the job (once per change); past the upload, free its slot. */
  #enter(phase: JobPhase): void {
    if (phase !== "uploading") this.#c.uploadDone(this.#groupId);
    if (this.#phase === phase || !this.#jobId) return;
    this.#phase = phase;
    this.#lostNoted = false;
    this.#c.store.setPhase(this.#ids, this.#jobId, phase);
  }

  #event(event: SubmitEvent): void {
    const { log } = this.#c;
    switch (event.kind) {
      case "queued":
        this.#jobId = event.jobId;
        this.#enter("queued");
        log.info(`job ${event.jobId}: queued on the server (${names(this.#rows)})`);
        return;
      case "status": {
        const state = event.job.state;
        if (state === "queued" || state === "running") {
          if (this.#phase !== state) log.info(`job ${event.job.job_id}: ${state} on the server`);
          this.#enter(state);
        } else {
          this.#c.uploadDone(this.#groupId);
        }
        return;
      }
      case "started":
        log.debug(`job ${event.jobId}: running`);
        this.#enter("running");
        return;
      case "download":
        this.#enter("downloading");
        return;
      case "upload":
      case "progress":
        return;
      default:
        // The client's own lines: notices, and those about reconnecting.
        if ("text" in event && typeof event.text === "string") this.#notice(event.text);
        return;
    }
  }

  /** A line of the client's; one "connection lost" per phase (the rest are debug). */
  #notice(text: string): void {
    const { log } = this.#c;
    if (!/^connection lost/.test(text)) {
      log.info(`job ${this.#jobId}: ${text}`);
    } else if (this.#lostNoted) {
      log.debug(`job ${this.#jobId}: ${text}`);
    } else {
      this.#lostNoted = true;
      log.warn(`job ${this.#jobId}: ${text}`);
    }
  }

  #done(result: SubmitResult): void {
    const { store, log } = this.#c;
    // The server's SHA-256 of each upload against ours from when the file was found
    // finished: a difference means the file changed after it looked complete.
    const changed = this.#rows.filter((row) => {
      const sent = result.uploaded.find((entry) => entry.name === path.basename(row.path));
      // A baseline file sent by --retry was never hashed: nothing to compare with.
      return sent?.sha256 !== undefined && row.sha256 !== null && sent.sha256 !== row.sha256;
    });
    let note: string | undefined;
    if (changed.length > 0) {
      note = `${names(changed)} changed after it was found complete: the server got ` +
        "different content than recorded (raise CLIENT_DAEMON_STABILITY_DELAY?)";
      log.warn(`job ${result.jobId}: ${note}`);
    }
    const skipped = skippedWarning(result.skipped);
    if (skipped) log.warn(`job ${result.jobId}: ${skipped}`);
    const marked = store.markDone(this.#ids, result.jobId, result.resultDir, note);
    log.info(
      `job ${result.jobId}: done, ${result.files.length} result file(s) in ${result.resultDir}`,
    );
    // Once per job: only the run that recorded it done runs the hook.
    if (marked > 0) this.#c.completed(result.jobId, result.resultDir);
  }

  async #failed(error: unknown): Promise<void> {
    const { store, log } = this.#c;
    const rows = this.#rows;
    const jobId = this.#jobId;
    const ids = this.#ids;
    const message = errorMessage(error);
    const retry = `recon-client watch --retry ${jobId ?? rows[0]?.path ?? "FILE"}`;
    switch (classifyFailure(error, { phase: this.#phase, stopping: this.#c.signal.aborted })) {
      case "abandoned":
        store.notePending(ids, "upload abandoned when the watcher stopped");
        log.info(
          `stopped while sending ${names(rows)} before the server named a job; sent at the ` +
            "next start",
        );
        return;
      case "unreachable":
      case "lost-contact":
        return this.#serverDown(error);
      case "refused":
        store.markFailed(ids, message, null);
        log.error(
          `${message} (${names(rows)}); not sent again automatically; after fixing the ` +
            `cause: ${retry}`,
        );
        return;
      case "upload-failed":
        log.warn(`sending ${names(rows)} failed: ${message}`);
        if (jobId) await this.#dropUpload(message);
        else await this.#c.sendable(this.#groupId, rows);
        return this.#c.uploadFailed();
      case "left": {
        const note = this.#phase === "uploading"
          ? `the watcher stopped during the upload of job ${jobId}; the server keeps what ` +
            "arrived and the next start sends the rest"
          : `the watcher stopped while job ${jobId} was ${this.#phase}; it goes on on the ` +
            "server and the next start fetches its results";
        store.noteSubmitted(ids, jobId!, note);
        log.info(note);
        return;
      }
      case "gone":
        return this.#gone(message);
      case "upload-expired": {
        const ended = await this.#howExpiredUploadEnded();
        if (ended === "lost") return this.#serverDown(error);
        return ended === "never-ran" ? this.#gone(message) : this.#unavailable(message, retry);
      }
      case "unavailable":
        return this.#unavailable(message, retry);
      case "job-failed": {
        let reason = message;
        if (error instanceof JobFailedError && error.stderrTail.length > 0) {
          reason += ` (script stderr: ${error.stderrTail.at(-1)})`;
        }
        store.markFailed(ids, reason, jobId!);
        log.error(`${reason}; not sent again automatically; after fixing the cause: ${retry}`);
        return;
      }
      case "key-rejected": {
        const rejected = keyRejected(error)!;
        store.noteSubmitted(ids, jobId!, `waiting for the server: ${rejected.message}`);
        return this.#c.keyRejected(rejected);
      }
      case "results-lost": {
        const reason = `results not received: ${message}`;
        store.markFailed(ids, reason, jobId!);
        log.error(
          `job ${jobId}: ${reason}; not sent again automatically ('${retry}' sends it again)`,
        );
        return;
      }
    }
  }

  #serverDown(error: unknown): void {
    this.#c.serverDown(error, this.#jobId, (reason) => this.#note(reason));
  }

  /** A note on the job's rows, pending or submitted. */
  #note(reason: string): void {
    if (this.#jobId) this.#c.store.noteSubmitted(this.#ids, this.#jobId, reason);
    else this.#c.store.notePending(this.#ids, reason);
  }

  /** The server does not hold the job and never queued it: send the files as a new job. */
  #gone(message: string): void {
    const reason = `the server no longer has the upload of job ${this.#jobId} (${message}); ` +
      "sent again as a new job";
    if (this.#c.store.markPendingAgain(this.#ids, this.#jobId!, reason) > 0) {
      this.#c.log.warn(`${reason}: ${names(this.#rows)}`);
    }
  }

  /** The server cannot give us the job (unknown, expired): failed, in its words. */
  #unavailable(message: string, retry: string): void {
    this.#c.store.markFailed(this.#ids, message, this.#jobId!);
    this.#c.log.error(
      `${message} (${names(this.#rows)}); not sent again automatically (the server may have ` +
        `run it); to send it as a new job: ${retry}`,
    );
  }

  /** Run `body` in a session of its own, cut when the watcher stops. */
  async #session<T>(body: (channel: Channel) => Promise<T>): Promise<T | undefined> {
    const channel = await this.#c.open();
    if (!channel) return undefined;
    const cut = () => channel.abort();
    this.#c.signal.addEventListener("abort", cut, { once: true });
    try {
      const result = await body(channel);
      await channel.close().catch(() => {});
      return result;
    } finally {
      this.#c.signal.removeEventListener("abort", cut);
      channel.abort();
    }
  }

  /**
   * A resumed upload was answered `expired`: ask how the job ended, to tell an upload
   * the server gave up (it never ran: send again) from a job whose results expired.
   */
  async #howExpiredUploadEnded(): Promise<"never-ran" | "ran" | "lost"> {
    try {
      const job = await this.#session((channel) => waitForJob(channel, this.#jobId!));
      if (!job) return "lost";
      return neverRan(job) ? "never-ran" : "ran";
    } catch (error) {
      // Refused (its results expired, or it is unknown now): it ran, or cannot be told.
      return error instanceof ConnectionError && isConnectionLoss(error) ? "lost" : "ran";
    }
  }

  /**
   * An upload that cannot be finished (a file changed or is gone): cancel its job on the
   * server (best effort: a job nobody resumes is never queued, and the server drops it
   * after UPLOAD_RESUME_WINDOW anyway), make the files pending and check them again.
   */
  async #dropUpload(why: string): Promise<void> {
    const jobId = this.#jobId!;
    try {
      await this.#session((channel) =>
        cancelJob(channel, jobId, `the watcher's upload cannot go on: ${why}`)
      );
    } catch (error) {
      this.#c.log.debug(`job ${jobId}: cannot cancel it on the server: ${errorMessage(error)}`);
    }
    this.#c.store.markPendingAgain(
      this.#ids,
      jobId,
      `the upload of job ${jobId} was dropped: ${why}`,
    );
    await this.#c.sendable(this.#groupId, this.#rows);
  }
}
