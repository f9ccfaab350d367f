/**
 * Test support: a client that runs the real handshake and then writes records by
 * hand (any sequence number, type or payload, correctly encrypted), so the receiving
 * Channel's record checks can be tested one failure class at a time, without an
 * HMAC failure hiding a parse bug.
 *
 * @module
 */
import { Channel, type ChannelOptions } from "../../lib/wire/channel.ts";
import { RECORD_HEADER_SIZE } from "../../lib/wire/record.ts";
import { Fernet } from "../../lib/crypto/fernet.ts";
import { encodeFrame, FrameReader, writeAll } from "../../lib/wire/frame.ts";
import { clientHandshake, MAX_HANDSHAKE_FRAME_SIZE } from "../../lib/wire/handshake.ts";
import { KeySchedule } from "../../lib/crypto/key_schedule.ts";
import { socketPair, testKey } from "./channel_pair.ts";

/** One record as the channel lays it out before encryption. */
export function recordBytes(
  seq: number,
  type: number,
  payload: Uint8Array = new Uint8Array(0),
): Uint8Array<ArrayBuffer> {
  const record = new Uint8Array(RECORD_HEADER_SIZE + payload.length);
  const view = new DataView(record.buffer);
  view.setBigUint64(0, BigInt(seq));
  view.setUint8(8, type);
  record.set(payload, RECORD_HEADER_SIZE);
  return record;
}

/** A hand-driven client facing a real server-side Channel over 127.0.0.1. */
export interface RawSession extends AsyncDisposable {
  server: Channel;
  /** The client's socket, for writing raw bytes. */
  conn: Deno.TcpConn;
  /** Encrypt `plaintext` under the client→server key for `seq` and send it as one frame. */
  sendRecord(seq: number, plaintext: Uint8Array): Promise<void>;
  /** The key schedule of the client→server direction. */
  sendKeys: KeySchedule;
  /** A Fernet instance for the server→client direction (epoch 0). */
  receiveFernet: Fernet;
  /** Frames from the server (after the handshake). */
  reader: FrameReader;
}

/** Handshake a raw client with `Channel.accept` and hand both over. */
export async function rawSession(options: ChannelOptions = {}): Promise<RawSession> {
  const key = await testKey();
  const sockets = await socketPair();
  const reader = new FrameReader(sockets.client, { maxFrameSize: MAX_HANDSHAKE_FRAME_SIZE });
  const [keys, server] = await Promise.all([
    clientHandshake(
      {
        readFrame: () => reader.read(),
        writeFrame: (payload) => writeAll(sockets.client, encodeFrame(payload)),
      },
      key.raw,
      key.id,
    ),
    Channel.accept(sockets.server, { ...options, keys: new Map([[key.id, key.raw]]) }),
  ]);
  reader.maxFrameSize = 64 * 1024 * 1024;
  const sendKeys = new KeySchedule(keys.sendKey, options.recordsPerKey ?? 1_000_000);
  return {
    server,
    conn: sockets.client,
    sendKeys,
    receiveFernet: await Fernet.fromKey(keys.receiveKey),
    reader,
    async sendRecord(seq, plaintext) {
      const { fernet } = await sendKeys.keyFor(seq);
      await writeAll(sockets.client, encodeFrame(await fernet.encrypt(plaintext)));
    },
    [Symbol.asyncDispose]: async () => {
      server.abort();
      await sockets[Symbol.asyncDispose]();
    },
  };
}

/** A record from the server as a {@link RawClient} reads it. */
export interface RawRecord {
  seq: number;
  type: number;
  payload: Uint8Array<ArrayBuffer>;
}

/**
 * A hand-driven client facing a real server (a ReconServer or `bin/recon-server`): the
 * real client handshake, then records written by hand with consecutive sequence
 * numbers (any type, any payload, correctly encrypted), and the server's records read
 * and decrypted one at a time.
 */
export interface RawClient extends AsyncDisposable {
  conn: Deno.TcpConn;
  /** Send one record of `type` with the next sequence number. */
  send(type: number, payload?: Uint8Array): Promise<void>;
  /** Send a control message (a MESSAGE record of JSON). */
  sendMessage(message: unknown): Promise<void>;
  /** The server's next record; null when it closed the connection (or reset it). */
  next(): Promise<RawRecord | null>;
  /** The server's next MESSAGE, skipping PINGs; null when the connection ended first. */
  nextMessage(): Promise<Record<string, unknown> | null>;
}

/**
 * Run the client handshake on `conn` with `key` and hand over a {@link RawClient};
 * `version` makes it offer an older protocol version (default: the current one).
 */
export async function rawClient(
  conn: Deno.TcpConn,
  key: { raw: Uint8Array<ArrayBuffer>; id: string },
  options: { version?: number } = {},
): Promise<RawClient> {
  const reader = new FrameReader(conn, { maxFrameSize: MAX_HANDSHAKE_FRAME_SIZE });
  const keys = await clientHandshake(
    {
      readFrame: () => reader.read(),
      writeFrame: (payload) => writeAll(conn, encodeFrame(payload)),
    },
    key.raw,
    key.id,
    { version: options.version },
  );
  reader.maxFrameSize = 64 * 1024 * 1024;
  const sendKeys = new KeySchedule(keys.sendKey, 1_000_000);
  const receiveKeys = new KeySchedule(keys.receiveKey, 1_000_000);
  let sendSeq = 0;
  let receiveSeq = 0;
  const client: RawClient = {
    conn,
    async send(type, payload = new Uint8Array(0)) {
      const seq = sendSeq++;
      const { fernet } = await sendKeys.keyFor(seq);
      await writeAll(conn, encodeFrame(await fernet.encrypt(recordBytes(seq, type, payload))));
    },
    sendMessage(message) {
      return client.send(0x01, new TextEncoder().encode(JSON.stringify(message)));
    },
    async next() {
      const frame = await reader.read().catch(() => null);
      if (frame === null) return null;
      const seq = receiveSeq++;
      const { fernet } = await receiveKeys.keyFor(seq);
      const record = await fernet.decrypt(frame);
      const view = new DataView(record.buffer, record.byteOffset, record.length);
      return {
        seq: Number(view.getBigUint64(0)),
        type: record[8],
        payload: record.subarray(RECORD_HEADER_SIZE),
      };
    },
    async nextMessage() {
      while (true) {
        const record = await client.next();
        if (record === null) return null;
        if (record.type === 0x05) continue;
        if (record.type !== 0x01) {
          throw new Error(`expected a MESSAGE record, got type ${record.type}`);
        }
        return JSON.parse(new TextDecoder().decode(record.payload));
      }
    },
    [Symbol.asyncDispose]() {
      try {
        conn.close();
      } catch { /* closed */ }
      return Promise.resolve();
    },
  };
  return client;
}
