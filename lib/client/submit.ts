/**
 * Submitting a job and seeing it through (docs/PROTOCOL.md §6): announce the files,
 * answer each `request_file` (only for files announced in this job), follow the job's
 * progress, accept the results into `CLIENT_DOWNLOAD_DIR/<job_id>/` with every name
 * checked, and return when `recon_complete` confirms every file's SHA-256.
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
  TransferError,
} from "../errors.ts";
import { resolveInside, resultPathProblem } from "../wire/file_names.ts";
import { printable } from "../printable.ts";
import { type FileEntry, parseServerMessage, type ReconOptions } from "../wire/protocol.ts";
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
}

/** Details of a failed job for the printed report. */
export class JobFailedError extends JobError {
  readonly jobId: string;
  readonly scriptExitCode: number | null;
  readonly stderrTail: string[];
  constructor(jobId: string, reason: string, exitCode: number | null, stderrTail: string[]) {
    super(`job ${jobId} failed: ${reason}`, {
      hint: stderrTail.length > 0
        ? `last lines of the script's stderr:\n  ${stderrTail.join("\n  ")}`
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
  const { channel, files, onEvent } = options;
  const byName = new Map(files.map((file) => [file.name, file]));
  const sent = new Set<string>();
  let jobId: string | undefined;
  let uploaded: FileEntry[] = [];
  let interrupted = false;
  // Every file sent, job_queued not yet read: an interrupt then waits for job_queued
  // and cancels the job, rather than leave a queued job without its client.
  let uploadComplete = false;
  const hostile = (text: string): never => {
    // It quotes the server's words; JSON.stringify leaves DEL and C1 controls as they are.
    const message = printable(text);
    options.onHostile?.(message);
    channel.abort();
    throw new ProtocolError(message);
  };
  let downloading = false;
  const onAbort = () => {
    interrupted = true;
    if (downloading) {
      // The job is done; stop receiving. The server keeps the results (no results_received).
      channel.abort(
        new InterruptedError(`interrupted while downloading the results of job ${jobId}`, {
          hint: `the server keeps them in RECON_DICOM_DIR/job_${jobId}_output`,
        }),
      );
    } else if (jobId) {
      onEvent?.({ kind: "notice", text: `cancelling job ${jobId} on the server…` });
      channel.send({ type: "cancel_job", job_id: jobId, reason: "interrupted" }).catch(() => {});
    } else if (uploadComplete) {
      // job_queued is on its way; its handler calls onAbort again.
    } else {
      channel.abort(new InterruptedError("interrupted during upload; the server drops the job"));
    }
  };
  if (options.signal?.aborted) throw new InterruptedError("interrupted before the job was sent");
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    await channel.send({
      type: "submit_recon_job",
      files: files.map((file) => ({
        name: file.name,
        size: file.size,
        original_path_on_client: file.path,
      })),
      client_recon_options_json: JSON.stringify(options.options),
    });
    let resultDir: string | undefined;
    const announced = new Map<string, number>();
    const downloaded: DownloadedFile[] = [];
    while (true) {
      const incoming = await channel.receive();
      if (incoming.type === "goodbye") {
        throw new ConnectionError(
          `the server ended the session before the job finished${
            incoming.reason ? ` (${incoming.reason})` : ""
          }`,
        );
      }
      if (incoming.type !== "message") hostile(`server sent unexpected ${incoming.type} data`);
      const message = parseServerMessage((incoming as { message: unknown }).message);
      const about = (message as { job_id?: string }).job_id;
      if (jobId && about !== undefined && about !== jobId) {
        hostile(`server sent ${message.type} for job ${about}, not ours (${jobId})`);
      }
      switch (message.type) {
        case "request_file": {
          const file = byName.get(message.name);
          if (!file || sent.has(message.name)) {
            hostile(
              `server asked for ${
                JSON.stringify(message.name)
              }, which this job did not offer (or already sent); refusing`,
            );
          }
          sent.add(file!.name);
          try {
            await sendFileFrom(
              channel,
              file!.path,
              file!.size,
              {
                onProgress: (bytes) =>
                  onEvent?.({ kind: "upload", name: file!.name, bytes, total: file!.size }),
              },
            );
            uploadComplete = sent.size === files.length;
          } catch (error) {
            if (error instanceof TransferError) {
              await channel.send({ type: "error", reason: error.message }).catch(() => {});
            }
            throw error;
          }
          break;
        }
        case "job_queued":
          jobId = message.job_id;
          uploaded = message.files ?? [];
          onEvent?.({ kind: "queued", jobId });
          if (interrupted) onAbort();
          break;
        case "job_started":
          onEvent?.({ kind: "started", jobId: message.job_id });
          break;
        case "job_progress":
          onEvent?.({ kind: "progress", text: message.text, percent: message.percent });
          break;
        case "server_shutting_down":
          onEvent?.({ kind: "notice", text: `server: ${message.reason}` });
          break;
        case "error":
          if (message.kind === "transfer") {
            throw new TransferError(`the server could not take the upload: ${message.reason}`);
          }
          throw new JobError(`the server refused the job: ${message.reason}`);
        case "job_failed":
          if (interrupted) throw new JobCancelledError(message.job_id);
          throw new JobFailedError(
            message.job_id,
            message.reason,
            message.exit_code,
            message.stderr_tail,
          );
        case "dicom_transfer_start": {
          if (!jobId || message.job_id !== jobId) hostile("results announced for another job");
          for (const file of message.files) {
            const problem = resultPathProblem(file.name);
            if (problem) {
              await channel.send({ type: "dicom_transfer_ack", job_id: jobId!, status: "refused" });
              hostile(
                `server offered an unsafe result name ${JSON.stringify(file.name)}: ${problem}`,
              );
            }
            announced.set(file.name, file.size);
          }
          if (announced.size !== message.count) {
            hostile("result count does not match the file list");
          }
          resultDir = path.join(options.downloadDir, jobId!);
          try {
            await Deno.mkdir(options.downloadDir, { recursive: true });
            await Deno.mkdir(resultDir);
          } catch (error) {
            await channel.send({ type: "dicom_transfer_ack", job_id: jobId!, status: "refused" })
              .catch(() => {});
            throw new TransferError(`cannot create ${resultDir}: ${errorMessage(error)}`, {
              hint: `the server keeps the results in RECON_DICOM_DIR/job_${jobId}_output`,
            });
          }
          downloading = true;
          await channel.send({ type: "dicom_transfer_ack", job_id: jobId!, status: "ready" });
          break;
        }
        case "result_file": {
          const size = announced.get(message.name);
          if (!resultDir || size === undefined || size !== message.size) {
            hostile(
              `server sent result ${JSON.stringify(message.name)}, which it did not announce`,
            );
          }
          announced.delete(message.name);
          const target = resolveInside(resultDir!, message.name);
          await Deno.mkdir(path.dirname(target), { recursive: true });
          const digest = await receiveFileTo(channel, target, message.size, {
            noOverwrite: true,
            onProgress: (bytes) =>
              onEvent?.({ kind: "download", name: message.name, bytes, total: message.size }),
          });
          downloaded.push({ name: message.name, path: target, ...digest });
          break;
        }
        case "recon_complete": {
          if (announced.size > 0 || !resultDir) {
            throw new TransferError(
              `job finished but ${announced.size} result file(s) never arrived`,
            );
          }
          for (const file of message.files) {
            const mine = downloaded.find((d) => d.name === file.name);
            if (!mine || mine.sha256 !== file.sha256) {
              throw new TransferError(`result ${file.name}: SHA-256 does not match the server's`);
            }
          }
          await channel.send({ type: "results_received", job_id: jobId! });
          return { jobId: jobId!, uploaded, resultDir, files: downloaded };
        }
        default:
          hostile(`server sent ${message.type} during a job`);
      }
    }
  } catch (error) {
    if (interrupted && !(error instanceof InterruptedError)) {
      throw new InterruptedError("interrupted", { cause: error });
    }
    throw error;
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
  }
}
