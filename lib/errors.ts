/**
 * Error classes that callers catch, each with the process exit code it maps to.
 *
 * `lib/` throws these; only `server.ts` and `client.ts` turn them into a printed
 * `recon-…: error: …` line, an optional `hint: …` line and an exit code
 * (README "Exit codes").
 *
 * @module
 */

/** Exit codes, documented in `--help` and README. */
export const ExitCode = {
  OK: 0,
  JOB_FAILED: 1,
  USAGE: 2,
  CONNECTION: 3,
  TRANSFER: 4,
  /** The job is on the server, but the client lost the connection and could not get it back. */
  LOST_CONTACT: 5,
  INTERRUPTED: 130,
} as const;

/** Options shared by every recon error. */
export interface ReconErrorOptions {
  /** What the person who can fix it should try, printed as `hint: …`. */
  hint?: string;
  cause?: unknown;
}

/** Base class: an error with a one-line message, an exit code and an optional hint. */
export class ReconError extends Error {
  readonly exitCode: number = ExitCode.USAGE;
  readonly hint?: string;
  constructor(message: string, options: ReconErrorOptions = {}) {
    super(message, { cause: options.cause });
    this.name = new.target.name;
    this.hint = options.hint;
  }
}

/** Bad command line. */
export class UsageError extends ReconError {
  override readonly exitCode = ExitCode.USAGE;
}

/** recon.opts is missing, malformed or holds an unusable value. */
export class ConfigError extends ReconError {
  override readonly exitCode = ExitCode.USAGE;
}

/**
 * The server's job store (lib/server/job_store.ts) cannot be used: damaged, in use by
 * another recon-server, written by a newer version, or a job transition it refuses.
 */
export class StoreError extends ConfigError {}

/** Could not connect, or the connection was lost outside a file transfer. */
export class ConnectionError extends ReconError {
  override readonly exitCode = ExitCode.CONNECTION;
}

/** The secure handshake failed: wrong key, version mismatch, refused. */
export class HandshakeError extends ConnectionError {}

/**
 * The server refused the handshake because it does not accept our SHARED_KEY, or
 * ended a session because it no longer does (PROTOCOL.md §6.10): trying again cannot
 * help until someone changes a key (the watcher stops on it).
 */
export class KeyRejectedError extends HandshakeError {}

/** The peer broke the protocol (bad frame, out-of-sequence record, invalid message). */
export class ProtocolError extends ConnectionError {}

/**
 * The connection ended inside a frame. To the framing that is a protocol error (a peer
 * never closes there), but a pulled cable or a cutting proxy looks just like it, so a
 * client that reconnects treats it as a lost connection.
 */
export class TruncatedFrameError extends ProtocolError {}

/** A read or handshake deadline passed. */
export class TimeoutError extends ConnectionError {}

/** A file transfer failed: size or SHA-256 mismatch, disk error, peer gone mid-file. */
export class TransferError extends ReconError {
  override readonly exitCode = ExitCode.TRANSFER;
}

/** The server ran the job and it failed (script error, timeout, no results). */
export class JobError extends ReconError {
  override readonly exitCode = ExitCode.JOB_FAILED;
}

/**
 * The server has the job (queued, running or finished), but the connection broke and
 * could not be made again within CLIENT_RECONNECT_TIMEOUT: the job goes on without us,
 * and its results can be fetched later (`recon-client fetch JOB_ID`).
 */
export class LostContactError extends ReconError {
  override readonly exitCode = ExitCode.LOST_CONTACT;
  readonly jobId: string;
  /** The command line that fetches the job's results later. */
  readonly fetchCommand?: string;
  constructor(
    jobId: string,
    message: string,
    options: ReconErrorOptions & { fetchCommand?: string } = {},
  ) {
    super(message, options);
    this.jobId = jobId;
    this.fetchCommand = options.fetchCommand;
  }
}

/** The user interrupted (Ctrl-C) or the process was told to stop. */
export class InterruptedError extends ReconError {
  override readonly exitCode = ExitCode.INTERRUPTED;
}

/** The message of any thrown value, for logs and one-line reports. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
