/**
 * Test support: a man in the middle between a client socket and a server socket on
 * 127.0.0.1. It can work on whole frames (record, drop, duplicate, hold and swap,
 * reflect back to the sender, inject) or on raw bytes (flip a byte at an offset).
 *
 * ```ts
 * await using proxy = await startProxy({ onFrame: (f) => f.index === 2 ? [] : undefined });
 * // Channel.connect(proxy.client, …) and Channel.accept(proxy.server, …)
 * ```
 *
 * When either side closes or fails, the proxy closes both of its sockets, so each end
 * sees the connection go away.
 *
 * @module
 */
import { FRAME_HEADER_SIZE, writeAll } from "../../lib/wire/frame.ts";
import { socketPair } from "./channel_pair.ts";

/** Which way bytes travel. */
export type Direction = "toServer" | "toClient";

/** One frame seen by the proxy, header included. */
export interface CapturedFrame {
  direction: Direction;
  /** Index of the frame in its direction: 0 is the first hello. */
  index: number;
  /** Length prefix and payload. */
  bytes: Uint8Array<ArrayBuffer>;
}

/** Where a frame goes: on to its receiver, or back to its sender. */
export type Delivery = { to: "receiver" | "sender"; bytes: Uint8Array<ArrayBuffer> };

/** Decides what becomes of a frame. `undefined` forwards it unchanged; `[]` drops it. */
export type FrameRule = (frame: CapturedFrame) => Delivery[] | undefined;

/** Changes a chunk of raw bytes; `offset` is the stream offset of its first byte. */
export type ByteRule = (direction: Direction, offset: number, chunk: Uint8Array) => void;

export interface ProxyOptions {
  /** Work on frames (default: forward every frame). */
  onFrame?: FrameRule;
  /** Work on raw bytes instead of frames (in place). */
  onBytes?: ByteRule;
}

/** A running proxy. */
export interface Proxy extends AsyncDisposable {
  /** The client's socket: run Channel.connect on it. */
  client: Deno.TcpConn;
  /** The server's socket: run Channel.accept on it. */
  server: Deno.TcpConn;
  /** Every frame seen in each direction, as it arrived (frame mode only). */
  frames: Record<Direction, Uint8Array<ArrayBuffer>[]>;
  /** Bytes seen in each direction (both modes). */
  bytes: Record<Direction, number>;
  /** Resolves when both directions have stopped. */
  done: Promise<void>;
}

/** Forward `bytes` to the frame's receiver. */
export function forward(bytes: Uint8Array<ArrayBuffer>): Delivery {
  return { to: "receiver", bytes };
}

/** Send `bytes` back to the frame's sender. */
export function reflect(bytes: Uint8Array<ArrayBuffer>): Delivery {
  return { to: "sender", bytes };
}

/** Start a proxy between two fresh socket pairs. */
export async function startProxy(options: ProxyOptions = {}): Promise<Proxy> {
  const clientSide = await socketPair();
  const serverSide = await socketPair();
  // The proxy's own ends: it reads what the client sends on `nearClient`, and so on.
  const nearClient = clientSide.server;
  const nearServer = serverSide.client;
  const frames: Proxy["frames"] = { toServer: [], toClient: [] };
  const bytes: Proxy["bytes"] = { toServer: 0, toClient: 0 };

  // Writes to one socket are chained so reflected and forwarded frames never interleave.
  const chains = new Map<Deno.TcpConn, Promise<void>>([
    [nearClient, Promise.resolve()],
    [nearServer, Promise.resolve()],
  ]);
  const send = (conn: Deno.TcpConn, data: Uint8Array<ArrayBuffer>): Promise<void> => {
    const next = chains.get(conn)!.then(() => writeAll(conn, data));
    chains.set(conn, next.catch(() => {}));
    return next;
  };

  let closed = false;
  const closeAll = () => {
    if (closed) return;
    closed = true;
    for (const conn of [nearClient, nearServer]) {
      try {
        conn.close();
      } catch { /* already closed */ }
    }
  };

  async function pump(direction: Direction, from: Deno.TcpConn, to: Deno.TcpConn) {
    const buffer = new Uint8Array(64 * 1024);
    let pending = new Uint8Array(0);
    let index = 0;
    try {
      while (true) {
        const n = await from.read(buffer);
        if (n === null) break;
        const chunk = buffer.slice(0, n);
        if (options.onBytes) {
          options.onBytes(direction, bytes[direction], chunk);
          bytes[direction] += n;
          await send(to, chunk);
          continue;
        }
        bytes[direction] += n;
        const joined = new Uint8Array(pending.length + n);
        joined.set(pending);
        joined.set(chunk, pending.length);
        pending = joined;
        while (pending.length >= FRAME_HEADER_SIZE) {
          const length = new DataView(pending.buffer, pending.byteOffset).getUint32(0);
          if (pending.length < FRAME_HEADER_SIZE + length) break;
          const frame = pending.slice(0, FRAME_HEADER_SIZE + length);
          pending = pending.slice(FRAME_HEADER_SIZE + length);
          frames[direction].push(frame);
          const deliveries = options.onFrame?.({ direction, index: index++, bytes: frame }) ??
            [forward(frame)];
          for (const delivery of deliveries) {
            await send(delivery.to === "receiver" ? to : from, delivery.bytes);
          }
        }
      }
      // Let whatever is queued reach the other side before the connection goes away.
      await chains.get(to);
      await chains.get(from);
    } catch { /* one side went away */ }
    closeAll();
  }

  const done = Promise.all([
    pump("toServer", nearClient, nearServer),
    pump("toClient", nearServer, nearClient),
  ]).then(() => {});

  return {
    client: clientSide.client,
    server: serverSide.server,
    frames,
    bytes,
    done,
    [Symbol.asyncDispose]: async () => {
      closeAll();
      await clientSide[Symbol.asyncDispose]();
      await serverSide[Symbol.asyncDispose]();
      await done;
    },
  };
}
