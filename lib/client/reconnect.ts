/**
 * Getting a lost session back (README "Exit codes": 5): which failures are worth a new
 * connection, the waits between attempts (1 s doubling to 30 s, with jitter, so that
 * the clients of a restarted server do not all come back at the same instant), and
 * the bound on the whole: CLIENT_RECONNECT_TIMEOUT from the moment the connection was
 * lost until a new session hears from the server about the job again. Clock and sleep
 * are injectable, so tests run an hour of outage in no time.
 *
 * A key the server no longer accepts ends it all at once (exit 3): the server said so
 * in its GOODBYE (PROTOCOL.md §6.10), or refused the key when reconnecting (§2.9).
 * The key was good when the work began, so it was revoked or replaced, or may no longer
 * come from this address: no retry, later fetch or cancel can work with it.
 *
 * @module
 */
import type { Channel } from "../wire/channel.ts";
import { KEY_REVOKED_REASON } from "../wire/protocol.ts";
import {
  ConnectionError,
  errorMessage,
  InterruptedError,
  KeyRejectedError,
  ProtocolError,
  TruncatedFrameError,
} from "../errors.ts";

/** First wait after a lost connection (ms). */
export const RECONNECT_BASE_MS = 1_000;
/** Longest wait between two attempts (ms). */
export const RECONNECT_CAP_MS = 30_000;

/** The hint once the server no longer accepts this client's key: only a new key helps. */
export const NEW_KEY_HINT = "the server no longer accepts this key: ask the recon box's " +
  "administrator for a new one (recon-server clients add or rotate) and put it in " +
  "recon.opts; the server's log says why";

/**
 * The server's GOODBYE in the middle of something (`during`: " while waiting for job
 * …"), as the error that ends the session: a lost connection, made again, unless the
 * server said it no longer accepts this client's key. Then this key cannot open
 * another session, and the error is a KeyRejectedError, which is not retried.
 */
export function goodbyeError(reason: string, during = "", cause?: unknown): ConnectionError {
  const message = `the server ended the session${during}${reason ? `: ${reason}` : ""}`;
  return reason === KEY_REVOKED_REASON
    ? new KeyRejectedError(message, { hint: NEW_KEY_HINT, cause })
    : new ConnectionError(message, { cause });
}

/** Sleeps `ms`, or rejects with InterruptedError when `signal` aborts first. */
export type Sleep = (ms: number, signal?: AbortSignal) => Promise<void>;

/** A real sleep that an abort ends early. */
export const realSleep: Sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new InterruptedError("interrupted"));
    const onAbort = () => {
      clearTimeout(timer);
      reject(new InterruptedError("interrupted"));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });

/** How a client reconnects; the defaults are the documented numbers. */
export interface ReconnectOptions {
  /** Opens a new session (connect and handshake). */
  connect: () => Promise<Channel>;
  /** CLIENT_RECONNECT_TIMEOUT in ms: 0 gives up at the first lost connection. */
  timeoutMs: number;
  baseMs?: number;
  capMs?: number;
  /** A number in [0, 1) for the jitter. */
  random?: () => number;
  sleep?: Sleep;
  /** Clock in ms. */
  now?: () => number;
}

/**
 * True when `error` means the connection went away (reset, closed, timed out, refused
 * while the server restarts, the server said goodbye) rather than something a new
 * connection cannot change: a peer that broke the protocol, a key the server does
 * not accept, a version it does not speak, or a server that cannot prove the key.
 */
export function isConnectionLoss(error: unknown): boolean {
  if (!(error instanceof ConnectionError) || error instanceof KeyRejectedError) return false;
  // A connection that ends inside a frame is a protocol error to the framing (a peer
  // never closes there, §1), but a cable pulled or a proxy cut looks just like that.
  if (error instanceof ProtocolError) return error instanceof TruncatedFrameError;
  return !/version mismatch|could not prove it holds SHARED_KEY/.test(error.message);
}

/** The wait before attempt `attempt` (1, 2, …): half to all of min(cap, base·2^(n-1)). */
export function reconnectDelay(
  attempt: number,
  options: { baseMs?: number; capMs?: number; random?: () => number } = {},
): number {
  const base = options.baseMs ?? RECONNECT_BASE_MS;
  const cap = options.capMs ?? RECONNECT_CAP_MS;
  const ceiling = Math.min(cap, base * 2 ** Math.min(Math.max(attempt - 1, 0), 30));
  return Math.round(ceiling / 2 + (options.random ?? Math.random)() * (ceiling / 2));
}

/** "0.6 s", "4 s", "30 s". */
export function formatWait(ms: number): string {
  const seconds = ms / 1000;
  return seconds < 9.95 ? `${Number(seconds.toFixed(1))} s` : `${Math.round(seconds)} s`;
}

/** A duration for a message: "90 s", "30 min", "1 h", "1.5 h". */
export function formatTimeout(ms: number): string {
  const seconds = ms / 1000;
  if (seconds < 120) return `${Number(seconds.toFixed(1))} s`;
  if (seconds < 7200) return `${Number((seconds / 60).toFixed(1))} min`;
  return `${Number((seconds / 3600).toFixed(1))} h`;
}

/** Why reconnecting ended without a session. */
export class GaveUp extends Error {
  /** The last failure (the lost connection, or the last attempt's). */
  readonly last: unknown;
  /** True when the time ran out; false when a failure no retry can change came. */
  readonly timedOut: boolean;
  constructor(last: unknown, timedOut: boolean) {
    super(errorMessage(last), { cause: last });
    this.last = last;
    this.timedOut = timedOut;
  }
}

/**
 * The error to end with when reconnecting gave up at a refused key, or undefined when
 * it gave up for another reason. `lost` says what was under way ("lost the connection
 * while waiting for job …"). A ConnectionError (exit 3) whose cause is the refusal:
 * no hint to wait again, fetch or cancel, since none can work with this key.
 */
export function keyRefusedAfter(lost: string, gaveUp: GaveUp): ConnectionError | undefined {
  if (!(gaveUp.last instanceof KeyRejectedError)) return undefined;
  return new ConnectionError(`${lost} and could not reconnect: ${gaveUp.message}`, {
    hint: NEW_KEY_HINT,
    cause: gaveUp.last,
  });
}

/**
 * One job's reconnections: {@link lost} starts the clock at the first lost connection,
 * {@link heard} stops it once a new session has heard from the server about the job
 * (an outage that ended no longer counts against the next one).
 */
export class Reconnector {
  readonly timeoutMs: number;
  readonly #options: ReconnectOptions;
  readonly #now: () => number;
  readonly #sleep: Sleep;
  #lostAt?: number;
  #attempts = 0;

  constructor(options: ReconnectOptions) {
    if (!(options.timeoutMs >= 0)) throw new RangeError("timeoutMs must be 0 or more");
    this.#options = options;
    this.timeoutMs = options.timeoutMs;
    this.#now = options.now ?? Date.now;
    this.#sleep = options.sleep ?? realSleep;
  }

  /** The server answered in the new session: the outage is over. */
  heard(): void {
    this.#lostAt = undefined;
    this.#attempts = 0;
  }

  /** Attempts since the connection was lost. */
  get attempts(): number {
    return this.#attempts;
  }

  /**
   * After `error` broke the session: wait, connect, and again until a session opens.
   * `notice` hears one line before each wait. Throws {@link GaveUp} when the time runs
   * out or a failure no retry can change comes; InterruptedError when `signal` aborts.
   */
  async lost(
    error: unknown,
    notice: (text: string) => void,
    signal?: AbortSignal,
  ): Promise<Channel> {
    this.#lostAt ??= this.#now();
    let last = error;
    while (true) {
      const left = this.#lostAt + this.timeoutMs - this.#now();
      if (left <= 0) throw new GaveUp(last, true);
      this.#attempts++;
      const wait = Math.min(reconnectDelay(this.#attempts, this.#options), left);
      notice(`connection lost: ${errorMessage(last)}; reconnecting in ${formatWait(wait)}…`);
      await this.#sleep(wait, signal);
      if (signal?.aborted) throw new InterruptedError("interrupted while reconnecting");
      try {
        return await this.#options.connect();
      } catch (failure) {
        if (!isConnectionLoss(failure)) throw new GaveUp(failure, false);
        last = failure;
      }
    }
  }
}

/** Inputs of {@link withReconnect}. */
export interface SessionLoopOptions<T> {
  connect: () => Promise<Channel>;
  /** Without one, a lost connection ends the loop as it is. */
  reconnector?: Reconnector;
  /**
   * One session's work; `heard` tells that the server answered in it. It may run again
   * in a new session after a lost connection, so it keeps its progress outside.
   */
  session: (channel: Channel, heard: () => void) => Promise<T>;
  /** Hears the reconnect notices. */
  notice: (text: string) => void;
  /** Aborted on Ctrl-C: the session is cut with {@link interrupted}. */
  signal?: AbortSignal;
  interrupted: () => InterruptedError;
  /** The error to end with when reconnecting gives up. */
  gaveUp: (failure: GaveUp) => Error;
}

/**
 * Run `session` until it returns, connecting again after each lost connection (the
 * job-free cousin of lib/client/run_job.ts, for `wait` and `logs --follow`).
 */
export async function withReconnect<T>(options: SessionLoopOptions<T>): Promise<T> {
  const { signal, reconnector } = options;
  if (signal?.aborted) throw options.interrupted();
  let channel = await options.connect();
  while (true) {
    const current = channel;
    const onAbort = () => current.abort(options.interrupted());
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const result = await options.session(current, () => reconnector?.heard());
      await current.close();
      return result;
    } catch (error) {
      if (error instanceof ConnectionError || signal?.aborted) current.abort();
      else await current.close();
      if (signal?.aborted) throw options.interrupted();
      if (!reconnector || !isConnectionLoss(error)) throw error;
      try {
        channel = await reconnector.lost(error, options.notice, signal);
      } catch (failure) {
        if (failure instanceof GaveUp) throw options.gaveUp(failure);
        if (failure instanceof InterruptedError) throw options.interrupted();
        throw failure;
      }
      options.notice("reconnected");
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }
}
