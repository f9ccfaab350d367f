/**
 * The encrypted, framed, sequenced record stream between client and server
 * (docs/PROTOCOL.md §3 Records and §5 Transfer).
 *
 * After the handshake every frame holds one Fernet token whose plaintext is a record:
 * `seq (u64 BE) | type (u8) | payload`. Sequence numbers start at 0 in each direction
 * and must be exactly the next one expected, so a duplicated, dropped, reordered,
 * reflected or spliced record ends the session. A session ends with a GOODBYE record,
 * so a connection cut at a record boundary is never mistaken for a complete one.
 *
 * Both directions are pipelined: records are encrypted (the crypto backend of
 * lib/crypto/backend.ts runs off the main thread) while earlier ones are written in
 * sequence order, and up to `cryptoDepth` received frames are read ahead and decrypted
 * while the caller handles earlier ones. With libcrypto, DATA frames are built in reused
 * buffers and received records are decrypted in place (no fresh 1 MiB buffer per record).
 * Files are cut into records by lib/wire/transfer.ts.
 *
 * @module
 */
import { ConnectionError, ProtocolError, TimeoutError } from "../errors.ts";
import { InvalidTokenError, tokenLength } from "../crypto/fernet_token.ts";
import {
  type ByteReader,
  type ByteWriter,
  encodeFrame,
  FRAME_HEADER_SIZE,
  FrameReader,
  sealFrame,
  writeAll,
} from "./frame.ts";
import { Deadline, realTimers, type Timers } from "./deadline.ts";
import { releaseBuffer } from "../buffers.ts";
import {
  clientHandshake,
  type ClientHandshakeOptions,
  MAX_HANDSHAKE_FRAME_SIZE,
  serverHandshake,
  type ServerHandshakeOptions,
  type SessionKeys,
} from "./handshake.ts";
import { KeySchedule } from "../crypto/key_schedule.ts";
import { type CryptoBackend, defaultCryptoBackend } from "../crypto/backend.ts";
import {
  encodeFileEnd,
  type Incoming,
  MAX_FRAME_SIZE,
  MAX_MESSAGE_SIZE,
  MAX_RECORD_PAYLOAD,
  parseRecord,
  RECORD_HEADER_SIZE,
  RecordType,
  writeRecordHeader,
} from "./record.ts";

/** File chunk size (PROTOCOL.md §5; chosen by measurement, docs/PERFORMANCE.md). */
export const DEFAULT_CHUNK_SIZE = 1024 * 1024;
/** Records being encrypted or decrypted at once per direction. */
export const DEFAULT_CRYPTO_DEPTH = 4;
/** Ratchet after this many records: 32 GiB of the largest records under one key. */
export const DEFAULT_RECORDS_PER_KEY = Math.floor(
  32 * 1024 ** 3 / (RECORD_HEADER_SIZE + MAX_RECORD_PAYLOAD),
);
/** A clock difference larger than this is logged once (no TTL applies in a session). */
export const CLOCK_SKEW_WARNING_SECONDS = 300;
/** Longest silence before we send a PING (PROTOCOL.md §8). */
export const MAX_KEEPALIVE_MS = 20_000;

/** A byte stream we can run a channel over: `Deno.Conn` or an in-memory duplex. */
export interface Duplex extends ByteReader, ByteWriter {
  close(): void;
}

/** Tunables and test hooks shared by both ends. */
export interface ChannelOptions {
  /** Close the session when nothing arrives for this long (ms); 0 disables. Default 300 s. */
  idleTimeoutMs?: number;
  /** Send a PING when we sent nothing for this long (ms). Default idleTimeoutMs / 3. */
  keepaliveMs?: number;
  /** Handshake deadline (ms). Default 10 s. */
  handshakeTimeoutMs?: number;
  /** File chunk size in bytes, at most MAX_RECORD_PAYLOAD. */
  chunkSize?: number;
  /** Records in flight per direction. */
  cryptoDepth?: number;
  /** Ratchet threshold in records (tests use a tiny one). */
  recordsPerKey?: number;
  /** Clock for Fernet timestamps (seconds). */
  now?: () => number;
  /** What computes the tokens. Default: the process's (lib/crypto/backend.ts). */
  crypto?: CryptoBackend;
  /** Clock and timers for the deadlines and keepalives. Default: the runtime's own. */
  timers?: Timers;
  /** Told once when the peer's clock differs by more than CLOCK_SKEW_WARNING_SECONDS. */
  onClockSkew?: (seconds: number) => void;
  /** How errors name the other side: "server" or "client" (default "peer"). */
  peerName?: string;
}

/** Client-side handshake inputs. */
export interface ClientChannelOptions extends ChannelOptions, ClientHandshakeOptions {
  sharedKey: Uint8Array<ArrayBuffer>;
  keyId: string;
}

/** Server-side handshake inputs. */
export interface ServerChannelOptions extends ChannelOptions, ServerHandshakeOptions {
  /** Accepted keys: key id → SHARED_KEY bytes. */
  keys: ReadonlyMap<string, Uint8Array<ArrayBuffer>>;
}

/** Progress callback: bytes so far. */
export type ProgressCallback = (bytes: number) => void;

/** Result of a verified file transfer. */
export interface FileDigest {
  size: number;
  sha256: string;
}

const encoder = new TextEncoder();

function ignore(promise: Promise<unknown>): void {
  promise.catch(() => {});
}

type Pending = { frame: Promise<Uint8Array<ArrayBuffer>>; seq: number } | { end: Error | null };

/** An authenticated session. Create with {@link Channel.connect} or {@link Channel.accept}. */
export class Channel {
  readonly keyId: string;
  /** The protocol version agreed in the handshake (PROTOCOL.md §2): it selects the messages. */
  readonly version: number;
  #conn: Duplex;
  #reader: FrameReader;
  #sendKeys: KeySchedule;
  #receiveKeys: KeySchedule;
  #options:
    & Required<Omit<ChannelOptions, "onClockSkew">>
    & Pick<ChannelOptions, "onClockSkew">;
  #peer: string;
  #sendSeq = 0;
  #pumpSeq = 0;
  #writeChain: Promise<void> = Promise.resolve();
  #lastSend: number;
  #stopKeepalive: (() => void) | undefined;
  #idle: Deadline;
  #queue: Pending[] = [];
  #queueWaiter: (() => void) | undefined;
  #spaceWaiter: (() => void) | undefined;
  #pumping = false;
  #failure: Error | undefined;
  #closed = false;
  /** Whether the backend builds tokens in given buffers and decrypts in place. */
  #reuseBuffers: boolean;
  /** Free DATA frame buffers, each {@link #frameBufferSize} bytes (see #recycleFrame). */
  #framePool: Uint8Array<ArrayBuffer>[] = [];
  #frameBufferSize: number;
  #skewReported = false;
  #finished = false;

  private constructor(
    conn: Duplex,
    reader: FrameReader,
    keys: SessionKeys,
    options: ChannelOptions,
  ) {
    this.#conn = conn;
    this.#reader = reader;
    this.keyId = keys.keyId;
    this.version = keys.version;
    const idleTimeoutMs = options.idleTimeoutMs ?? 300_000;
    this.#options = {
      idleTimeoutMs,
      // At most 20 s, so that a peer with a shorter IDLE_TIMEOUT (60 s or more) than
      // ours still hears from us in time: the timeouts are not negotiated.
      keepaliveMs: options.keepaliveMs ??
        Math.min(MAX_KEEPALIVE_MS, Math.max(1000, Math.floor(idleTimeoutMs / 3))),
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
      chunkSize: Math.min(options.chunkSize ?? DEFAULT_CHUNK_SIZE, MAX_RECORD_PAYLOAD),
      cryptoDepth: Math.max(1, options.cryptoDepth ?? DEFAULT_CRYPTO_DEPTH),
      recordsPerKey: options.recordsPerKey ?? DEFAULT_RECORDS_PER_KEY,
      now: options.now ?? (() => Math.floor(Date.now() / 1000)),
      crypto: options.crypto ?? defaultCryptoBackend(),
      timers: options.timers ?? realTimers,
      onClockSkew: options.onClockSkew,
      peerName: options.peerName ?? "peer",
    };
    this.#peer = this.#options.peerName;
    const { recordsPerKey, crypto, chunkSize } = this.#options;
    this.#reuseBuffers = crypto.reusesBuffers;
    this.#frameBufferSize = FRAME_HEADER_SIZE + tokenLength(RECORD_HEADER_SIZE + chunkSize);
    this.#sendKeys = new KeySchedule(keys.sendKey, recordsPerKey, crypto);
    this.#receiveKeys = new KeySchedule(keys.receiveKey, recordsPerKey, crypto);
    reader.maxFrameSize = MAX_FRAME_SIZE;
    const timers = this.#options.timers;
    this.#lastSend = timers.now();
    this.#idle = new Deadline(
      `no data from the ${options.peerName ?? "peer"} for ${Math.round(idleTimeoutMs / 1000)} s`,
      (error) => this.#fail(error),
      timers,
    );
    if (idleTimeoutMs > 0) {
      this.#stopKeepalive = timers.start(this.#options.keepaliveMs, () => this.#ping(), {
        repeat: true,
        unref: true,
      });
    }
  }

  /** Run the client handshake over `conn`; throws HandshakeError/ProtocolError/TimeoutError. */
  static async connect(conn: Duplex, options: ClientChannelOptions): Promise<Channel> {
    return await Channel.#handshake(
      conn,
      options,
      (io) => clientHandshake(io, options.sharedKey, options.keyId, options),
    );
  }

  /** Run the server handshake over `conn`; throws HandshakeRefused and friends. */
  static async accept(conn: Duplex, options: ServerChannelOptions): Promise<Channel> {
    return await Channel.#handshake(
      conn,
      options,
      (io) => serverHandshake(io, options.keys, options),
    );
  }

  static async #handshake(
    conn: Duplex,
    options: ChannelOptions,
    run: (
      io: {
        readFrame(): Promise<Uint8Array<ArrayBuffer> | null>;
        writeFrame(p: Uint8Array<ArrayBuffer>): Promise<void>;
      },
    ) => Promise<SessionKeys>,
  ): Promise<Channel> {
    const reader = new FrameReader(conn, { maxFrameSize: MAX_HANDSHAKE_FRAME_SIZE });
    let timedOut: TimeoutError | undefined;
    const deadline = new Deadline("the handshake did not finish in time", (error) => {
      timedOut = error;
      try {
        conn.close();
      } catch { /* already closed */ }
    }, options.timers);
    deadline.arm(options.handshakeTimeoutMs ?? 10_000);
    try {
      const keys = await run({
        readFrame: () => reader.read(),
        writeFrame: (payload) => writeAll(conn, encodeFrame(payload)),
      });
      return new Channel(conn, reader, keys, options);
    } catch (error) {
      if (timedOut) throw timedOut;
      if (error instanceof ConnectionError) throw error;
      throw new ConnectionError(
        `connection lost during the handshake (${(error as Error).message})`,
        { cause: error },
      );
    } finally {
      deadline.disarm();
    }
  }

  /** Send one control message as JSON (validated by the caller, lib/wire/protocol.ts). */
  send(message: Record<string, unknown>): Promise<void> {
    const json = encoder.encode(JSON.stringify(message));
    if (json.length > MAX_MESSAGE_SIZE) {
      return Promise.reject(new RangeError(`message of ${json.length} bytes is too large`));
    }
    const record = new Uint8Array(RECORD_HEADER_SIZE + json.length);
    record.set(json, RECORD_HEADER_SIZE);
    return this.#sendRecord(RecordType.MESSAGE, record);
  }

  /**
   * Queue one DATA record. `record` reserves RECORD_HEADER_SIZE leading bytes for the
   * header. Until the returned promise resolves (the record is written) it must not be
   * touched; after that it is freed, or with `reuse` left for the caller to fill again.
   */
  sendData(record: Uint8Array<ArrayBuffer>, options: { reuse?: boolean } = {}): Promise<void> {
    if (record.length - RECORD_HEADER_SIZE > MAX_RECORD_PAYLOAD) {
      return Promise.reject(
        new RangeError(`a DATA record holds at most ${MAX_RECORD_PAYLOAD} bytes`),
      );
    }
    return this.#sendRecord(RecordType.DATA, record, !options.reuse, this.#reuseBuffers);
  }

  /** Send the FILE_END record that closes a file: its size and SHA-256. */
  sendFileEnd(size: number, sha256: Uint8Array): Promise<void> {
    return this.#sendRecord(RecordType.FILE_END, encodeFileEnd(size, sha256));
  }

  /** Records being encrypted at once (the depth of lib/wire/transfer.ts's send window). */
  get cryptoDepth(): number {
    return this.#options.cryptoDepth;
  }

  /** Size of the DATA records files are cut into. */
  get chunkSize(): number {
    return this.#options.chunkSize;
  }

  /** How errors name the other side. */
  get peerName(): string {
    return this.#peer;
  }

  /**
   * The next record from the peer, in order. PINGs are consumed here. A connection
   * closed without GOODBYE throws ConnectionError.
   */
  async receive(): Promise<Incoming> {
    while (true) {
      if (this.#finished) throw new ProtocolError(`the ${this.#peer} already ended the session`);
      const pending = await this.#nextPending();
      if ("end" in pending) {
        const error = this.#failure ?? pending.end ??
          new ConnectionError(
            `the ${this.#peer} closed the connection without ending the session`,
          );
        this.#fail(error);
        throw error;
      }
      let record: Uint8Array<ArrayBuffer>;
      try {
        record = await pending.frame;
      } catch (error) {
        const failure = error instanceof InvalidTokenError
          ? new ProtocolError(`record ${pending.seq} failed authentication (${error.message})`, {
            cause: error,
          })
          : error as Error;
        this.#fail(failure);
        throw failure;
      }
      const incoming = this.#parseRecord(record, pending.seq);
      if (incoming) return incoming;
    }
  }

  #parseRecord(record: Uint8Array<ArrayBuffer>, expectedSeq: number): Incoming | undefined {
    let incoming: Incoming | undefined;
    try {
      incoming = parseRecord(record, expectedSeq);
    } catch (error) {
      this.#fail(error as Error);
      throw error;
    }
    if (incoming?.type === "goodbye") this.#finished = true;
    return incoming;
  }

  /** End the session: GOODBYE, flush, close. Safe to call twice. */
  async close(reason = ""): Promise<void> {
    if (this.#closed) return;
    if (!this.#failure) {
      const body = encoder.encode(reason.slice(0, 500));
      const record = new Uint8Array(RECORD_HEADER_SIZE + body.length);
      record.set(body, RECORD_HEADER_SIZE);
      try {
        await this.#sendRecord(RecordType.GOODBYE, record);
      } catch { /* the peer may be gone already */ }
    }
    this.abort();
  }

  /** Close at once without GOODBYE (the peer will see an incomplete session). */
  abort(error?: Error): void {
    if (error && !this.#failure) this.#failure = error;
    if (this.#closed) return;
    this.#closed = true;
    for (const buffer of this.#framePool.splice(0)) releaseBuffer(buffer);
    this.#idle.disarm();
    this.#stopKeepalive?.();
    this.#stopKeepalive = undefined;
    try {
      this.#conn.close();
    } catch { /* already closed */ }
    this.#wake();
  }

  /** True once the channel failed or was closed. */
  get closed(): boolean {
    return this.#closed;
  }

  #fail(error: Error): void {
    if (!this.#failure) this.#failure = error;
    this.abort();
  }

  #wake(): void {
    this.#queueWaiter?.();
    this.#queueWaiter = undefined;
    this.#spaceWaiter?.();
    this.#spaceWaiter = undefined;
  }

  #ping(): void {
    if (this.#closed || this.#options.timers.now() - this.#lastSend < this.#options.keepaliveMs) {
      return;
    }
    ignore(this.#sendRecord(RecordType.PING, new Uint8Array(RECORD_HEADER_SIZE)));
  }

  /**
   * Keep a written DATA frame's buffer for the next one when the backend builds tokens
   * in given buffers (the pool's size: a full chunk's frame), else free it. Fresh 1 MiB
   * buffers cost zero-filling and page faults per record (docs/PERFORMANCE.md).
   */
  #recycleFrame(
    sealed: Uint8Array<ArrayBuffer>,
    output: Uint8Array<ArrayBuffer> | undefined,
  ): void {
    const keep = (buffer: Uint8Array<ArrayBuffer>) => {
      if (
        this.#reuseBuffers && !this.#closed && buffer.byteLength === this.#frameBufferSize &&
        this.#framePool.length <= this.#options.cryptoDepth
      ) {
        this.#framePool.push(buffer);
      } else releaseBuffer(buffer);
    };
    // A record too large for a pooled buffer got a fresh one: the pooled one stays free.
    if (output !== undefined && sealed.buffer !== output.buffer) keep(output);
    keep(new Uint8Array(sealed.buffer));
  }

  /**
   * Encrypt `record` (header space reserved, filled here) and queue it for writing.
   * The sequence number is taken synchronously and writes run in sequence order.
   */
  #sendRecord(
    type: number,
    record: Uint8Array<ArrayBuffer>,
    release = true,
    pooled = false,
  ): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#closed) return Promise.reject(new ConnectionError("the session is closed"));
    const seq = this.#sendSeq++;
    if (!Number.isSafeInteger(seq)) return Promise.reject(new RangeError("sequence exhausted"));
    writeRecordHeader(record, seq, type);
    this.#lastSend = this.#options.timers.now();
    const output = pooled ? this.#framePool.pop() : undefined;
    const frame = this.#sendKeys.keyFor(seq).then((key) =>
      key.fernet.encrypt(record, { prefix: FRAME_HEADER_SIZE, now: this.#options.now, output })
    );
    ignore(frame);
    const written = this.#writeChain.then(async () => {
      if (this.#failure) throw this.#failure;
      try {
        const sealed = sealFrame(await frame);
        // The record was copied into the token: both can go once the token is written.
        if (release) releaseBuffer(record);
        await writeAll(this.#conn, sealed);
        this.#recycleFrame(sealed, output);
      } catch (error) {
        const failure = this.#failure ?? new ConnectionError(
          `sending to the ${this.#peer} failed: ${(error as Error).message}`,
          { cause: error },
        );
        this.#fail(failure);
        throw failure;
      }
    });
    this.#writeChain = written;
    ignore(written);
    return written;
  }

  async #nextPending(): Promise<Pending> {
    if (!this.#pumping) {
      this.#pumping = true;
      this.#pump();
    }
    if (this.#queueWaiter) {
      // Two readers would steal each other's records; the protocol has one at a time.
      throw new Error("Channel.receive() called while another receive() is waiting");
    }
    while (this.#queue.length === 0) {
      if (this.#closed) {
        return { end: this.#failure ?? new ConnectionError("the session is closed") };
      }
      await new Promise<void>((resolve) => (this.#queueWaiter = resolve));
    }
    const pending = this.#queue.shift()!;
    this.#spaceWaiter?.();
    this.#spaceWaiter = undefined;
    return pending;
  }

  #push(pending: Pending): void {
    this.#queue.push(pending);
    this.#queueWaiter?.();
    this.#queueWaiter = undefined;
  }

  /** Reads frames ahead and starts their decryption, at most cryptoDepth at a time. */
  async #pump(): Promise<void> {
    const reader = this.#reader;
    const idle = this.#idle;
    const idleMs = this.#options.idleTimeoutMs;
    try {
      while (!this.#closed) {
        while (this.#queue.length >= this.#options.cryptoDepth && !this.#closed) {
          await new Promise<void>((resolve) => (this.#spaceWaiter = resolve));
        }
        if (this.#closed) break;
        idle.arm(idleMs);
        const frame = await reader.read();
        idle.disarm();
        if (frame === null) {
          this.#push({ end: null });
          return;
        }
        const seq = this.#pumpSeq++;
        const decrypted = this.#receiveKeys.keyFor(seq).then(async (key) => {
          // In place where the backend can: the plaintext is then a view of the frame,
          // one 1 MiB allocation per record fewer; its reader frees it (transfer.ts).
          const plaintext = await key.fernet.decrypt(frame, { inPlace: this.#reuseBuffers });
          this.#checkClock(key.fernet.timestampOf(frame));
          if (plaintext.buffer !== frame.buffer) releaseBuffer(frame);
          return plaintext;
        });
        ignore(decrypted);
        this.#push({ frame: decrypted, seq });
      }
      this.#push({ end: this.#failure ?? new ConnectionError("the session is closed") });
    } catch (error) {
      idle.disarm();
      // A raw socket error (reset, broken pipe) is a lost connection: say so, typed.
      const failure = error instanceof ConnectionError ? error : new ConnectionError(
        `connection to the ${this.#peer} lost: ${(error as Error).message}`,
        { cause: error },
      );
      this.#push({ end: this.#failure ?? failure });
    }
  }

  #checkClock(timestamp: number): void {
    if (this.#skewReported || !this.#options.onClockSkew) return;
    const skew = timestamp - this.#options.now();
    if (Math.abs(skew) > CLOCK_SKEW_WARNING_SECONDS) {
      this.#skewReported = true;
      this.#options.onClockSkew(skew);
    }
  }
}
