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
 * Both directions are pipelined: up to `cryptoDepth` records are being encrypted or
 * decrypted (on WebCrypto's worker threads) while the previous ones are written to or
 * read from the socket and the disk.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { ConnectionError, ProtocolError, TimeoutError, TransferError } from "./errors.ts";
import { InvalidTokenError, tokenLength } from "./fernet.ts";
import {
  type ByteReader,
  type ByteWriter,
  Deadline,
  encodeFrame,
  FRAME_HEADER_SIZE,
  FrameReader,
  sealFrame,
  writeAll,
} from "./frame.ts";
import {
  clientHandshake,
  type ClientHandshakeOptions,
  MAX_HANDSHAKE_FRAME_SIZE,
  serverHandshake,
  type SessionKeys,
} from "./handshake.ts";
import { type CryptoPool, POOL_THRESHOLD } from "./crypto_pool.ts";
import { KeySchedule } from "./key_schedule.ts";

/** Record types (PROTOCOL.md §3.2). */
export const RecordType = {
  MESSAGE: 0x01,
  DATA: 0x02,
  FILE_END: 0x03,
  GOODBYE: 0x04,
  PING: 0x05,
} as const;

/** seq (8) + type (1). */
export const RECORD_HEADER_SIZE = 9;
/** Largest record payload: file chunks and control messages are at most this. */
export const MAX_RECORD_PAYLOAD = 4 * 1024 * 1024;
/** Largest frame after authentication: one token carrying the largest record. */
export const MAX_FRAME_SIZE = tokenLength(RECORD_HEADER_SIZE + MAX_RECORD_PAYLOAD);
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
/** Largest control message (JSON bytes). */
export const MAX_MESSAGE_SIZE = 1024 * 1024;
/** FILE_END payload: size (u64) + SHA-256 (32). */
const FILE_END_SIZE = 40;

/** What {@link Channel.receive} yields. */
export type Incoming =
  | { type: "message"; message: unknown }
  | { type: "data"; bytes: Uint8Array<ArrayBuffer> }
  | { type: "file_end"; size: number; sha256: string }
  | { type: "goodbye"; reason: string };

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
  /** Told once when the peer's clock differs by more than CLOCK_SKEW_WARNING_SECONDS. */
  onClockSkew?: (seconds: number) => void;
  /** Worker threads for large records (file chunks); without one everything runs inline. */
  cryptoPool?: CryptoPool;
  /** How errors name the other side: "server" or "client" (default "peer"). */
  peerName?: string;
}

/** Client-side handshake inputs. */
export interface ClientChannelOptions extends ChannelOptions, ClientHandshakeOptions {
  sharedKey: Uint8Array<ArrayBuffer>;
  keyId: string;
}

/** Server-side handshake inputs. */
export interface ServerChannelOptions extends ChannelOptions {
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
const decoder = new TextDecoder("utf-8", { fatal: true });

function writeHeader(record: Uint8Array<ArrayBuffer>, seq: number, type: number): void {
  const view = new DataView(record.buffer, record.byteOffset, RECORD_HEADER_SIZE);
  view.setBigUint64(0, BigInt(seq));
  view.setUint8(8, type);
}

function ignore(promise: Promise<unknown>): void {
  promise.catch(() => {});
}

type Pending = { frame: Promise<Uint8Array<ArrayBuffer>>; seq: number } | { end: Error | null };

/** An authenticated session. Create with {@link Channel.connect} or {@link Channel.accept}. */
export class Channel {
  readonly keyId: string;
  #conn: Duplex;
  #reader: FrameReader;
  #sendKeys: KeySchedule;
  #receiveKeys: KeySchedule;
  #options:
    & Required<Omit<ChannelOptions, "onClockSkew" | "cryptoPool">>
    & Pick<ChannelOptions, "onClockSkew" | "cryptoPool">;
  #peer: string;
  #sendSeq = 0;
  #pumpSeq = 0;
  #writeChain: Promise<void> = Promise.resolve();
  #lastSend = Date.now();
  #keepalive: ReturnType<typeof setInterval> | undefined;
  #idle: Deadline;
  #queue: Pending[] = [];
  #queueWaiter: (() => void) | undefined;
  #spaceWaiter: (() => void) | undefined;
  #pumping = false;
  #failure: Error | undefined;
  #closed = false;
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
      onClockSkew: options.onClockSkew,
      cryptoPool: options.cryptoPool,
      peerName: options.peerName ?? "peer",
    };
    this.#peer = this.#options.peerName;
    this.#sendKeys = new KeySchedule(keys.sendKey, this.#options.recordsPerKey);
    this.#receiveKeys = new KeySchedule(keys.receiveKey, this.#options.recordsPerKey);
    reader.maxFrameSize = MAX_FRAME_SIZE;
    this.#idle = new Deadline(
      `no data from the ${options.peerName ?? "peer"} for ${Math.round(idleTimeoutMs / 1000)} s`,
      (error) => this.#fail(error),
    );
    if (idleTimeoutMs > 0) {
      this.#keepalive = setInterval(() => this.#ping(), this.#options.keepaliveMs);
      Deno.unrefTimer(this.#keepalive as unknown as number);
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
    return await Channel.#handshake(conn, options, (io) => serverHandshake(io, options.keys));
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
    });
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

  /** Send one control message as JSON (validated by the caller, lib/protocol.ts). */
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
   * Stream `size` bytes from `source` as DATA records followed by a FILE_END record
   * carrying the size and SHA-256. Memory stays at about cryptoDepth × chunkSize.
   */
  async sendFile(
    source: ByteReader,
    size: number,
    onProgress?: ProgressCallback,
  ): Promise<FileDigest> {
    const hash = createHash("sha256");
    const chunkSize = this.#options.chunkSize;
    const window: Promise<void>[] = [];
    let sent = 0;
    try {
      while (true) {
        const record = new Uint8Array(RECORD_HEADER_SIZE + chunkSize);
        const body = record.subarray(RECORD_HEADER_SIZE);
        let filled = 0;
        while (filled < chunkSize) {
          const n = await source.read(body.subarray(filled));
          if (n === null) break;
          filled += n;
        }
        if (filled === 0) break;
        hash.update(body.subarray(0, filled));
        sent += filled;
        if (sent > size) {
          throw new TransferError(
            `the file grew while it was being sent (announced ${size} bytes)`,
          );
        }
        window.push(
          this.#sendRecord(RecordType.DATA, record.subarray(0, RECORD_HEADER_SIZE + filled)),
        );
        if (window.length >= this.#options.cryptoDepth) await window.shift();
        onProgress?.(sent);
        if (filled < chunkSize) break;
      }
      await Promise.all(window.splice(0));
    } catch (error) {
      window.forEach(ignore);
      throw error;
    }
    const digest = hash.digest();
    if (sent !== size) {
      throw new TransferError(
        `the file changed while it was being sent: announced ${size} bytes, read ${sent}`,
      );
    }
    const end = new Uint8Array(RECORD_HEADER_SIZE + FILE_END_SIZE);
    new DataView(end.buffer).setBigUint64(RECORD_HEADER_SIZE, BigInt(sent));
    end.set(digest, RECORD_HEADER_SIZE + 8);
    await this.#sendRecord(RecordType.FILE_END, end);
    return { size: sent, sha256: digest.toString("hex") };
  }

  /**
   * Receive one file sent with {@link sendFile} into `sink`. Fails with TransferError
   * when more than `expectedSize` bytes arrive or the size or SHA-256 do not match; the
   * caller then deletes what was written.
   */
  async receiveFile(
    sink: ByteWriter,
    expectedSize: number,
    onProgress?: ProgressCallback,
  ): Promise<FileDigest> {
    const hash = createHash("sha256");
    let received = 0;
    while (true) {
      const incoming = await this.receive();
      if (incoming.type === "data") {
        received += incoming.bytes.length;
        if (received > expectedSize) {
          throw new TransferError(
            `the ${this.#peer} sent more than the announced ${expectedSize} bytes`,
          );
        }
        hash.update(incoming.bytes);
        await writeAll(sink, incoming.bytes);
        onProgress?.(received);
      } else if (incoming.type === "file_end") {
        const sha256 = hash.digest("hex");
        if (incoming.size !== received || received !== expectedSize) {
          throw new TransferError(
            `size mismatch: announced ${expectedSize} bytes, received ${received}, sender says ${incoming.size}`,
          );
        }
        if (incoming.sha256 !== sha256) {
          throw new TransferError(
            `SHA-256 mismatch: received ${sha256}, sender says ${incoming.sha256}`,
          );
        }
        return { size: received, sha256 };
      } else if (incoming.type === "message") {
        const reason = (incoming.message as { reason?: unknown })?.reason;
        throw new TransferError(
          `the ${this.#peer} abandoned the transfer after ${received} bytes${
            reason ? `: ${String(reason)}` : ""
          }`,
        );
      } else {
        throw new TransferError(
          `the ${this.#peer} ended the session in the middle of a file (${received} bytes)`,
        );
      }
    }
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
    const fail = (message: string): never => {
      const error = new ProtocolError(message);
      this.#fail(error);
      throw error;
    };
    if (record.length < RECORD_HEADER_SIZE) fail("record shorter than its header");
    const view = new DataView(record.buffer, record.byteOffset, record.length);
    const seq = view.getBigUint64(0);
    if (seq !== BigInt(expectedSeq)) {
      fail(`out-of-sequence record: expected ${expectedSeq}, got ${seq}`);
    }
    const payload = record.subarray(RECORD_HEADER_SIZE);
    switch (record[8]) {
      case RecordType.MESSAGE: {
        if (payload.length > MAX_MESSAGE_SIZE) fail(`control message of ${payload.length} bytes`);
        let message: unknown;
        try {
          message = JSON.parse(decoder.decode(payload));
        } catch {
          fail("control message is not valid UTF-8 JSON");
        }
        return { type: "message", message };
      }
      case RecordType.DATA:
        return { type: "data", bytes: payload };
      case RecordType.FILE_END: {
        if (payload.length !== FILE_END_SIZE) fail("FILE_END record has the wrong length");
        const size = Number(view.getBigUint64(RECORD_HEADER_SIZE));
        const sha256 = Array.from(
          payload.subarray(8),
          (b) => b.toString(16).padStart(2, "0"),
        ).join("");
        return { type: "file_end", size, sha256 };
      }
      case RecordType.GOODBYE: {
        this.#finished = true;
        let reason = "";
        try {
          reason = decoder.decode(payload).slice(0, 500);
        } catch { /* a reason is optional */ }
        return { type: "goodbye", reason };
      }
      case RecordType.PING:
        if (payload.length !== 0) fail("PING record with a payload");
        return undefined;
      default:
        return fail(`unknown record type ${record[8]}`);
    }
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
    const pool = this.#options.cryptoPool;
    if (pool) {
      for (const schedule of [this.#sendKeys, this.#receiveKeys]) {
        schedule.current().then((raw) => pool.forget(raw), () => {});
      }
    }
    this.#idle.disarm();
    if (this.#keepalive !== undefined) clearInterval(this.#keepalive);
    this.#keepalive = undefined;
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
    if (this.#closed || Date.now() - this.#lastSend < this.#options.keepaliveMs) return;
    ignore(this.#sendRecord(RecordType.PING, new Uint8Array(RECORD_HEADER_SIZE)));
  }

  /**
   * Encrypt `record` (header space reserved, filled here) and queue it for writing.
   * The sequence number is taken synchronously and writes run in sequence order.
   */
  #sendRecord(type: number, record: Uint8Array<ArrayBuffer>): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#closed) return Promise.reject(new ConnectionError("the session is closed"));
    const seq = this.#sendSeq++;
    if (!Number.isSafeInteger(seq)) return Promise.reject(new RangeError("sequence exhausted"));
    writeHeader(record, seq, type);
    this.#lastSend = Date.now();
    const pool = record.length >= POOL_THRESHOLD ? this.#options.cryptoPool : undefined;
    const frame = this.#sendKeys.keyFor(seq).then((key) =>
      pool
        ? pool.encrypt(key.raw, record, { prefix: FRAME_HEADER_SIZE, now: this.#options.now() })
        : key.fernet.encrypt(record, { prefix: FRAME_HEADER_SIZE, now: this.#options.now })
    );
    ignore(frame);
    const written = this.#writeChain.then(async () => {
      if (this.#failure) throw this.#failure;
      try {
        await writeAll(this.#conn, sealFrame(await frame));
      } catch (error) {
        const failure = this.#failure ?? new ConnectionError(
          `connection lost while sending (${(error as Error).message})`,
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
        const pool = frame.length >= POOL_THRESHOLD ? this.#options.cryptoPool : undefined;
        const decrypted = this.#receiveKeys.keyFor(seq).then(async (key) => {
          if (pool) {
            const { plaintext, timestamp } = await pool.decrypt(key.raw, frame);
            this.#checkClock(timestamp);
            return plaintext;
          }
          const plaintext = await key.fernet.decrypt(frame);
          this.#checkClock(key.fernet.timestampOf(frame));
          return plaintext;
        });
        ignore(decrypted);
        this.#push({ frame: decrypted, seq });
      }
      this.#push({ end: this.#failure ?? new ConnectionError("the session is closed") });
    } catch (error) {
      idle.disarm();
      this.#push({ end: this.#failure ?? (error as Error) });
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
