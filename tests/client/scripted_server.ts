/**
 * Test support for the client's job sessions: a fake recon-server on 127.0.0.1 whose
 * sessions are scripts, one per accepted connection, in order, built on the real
 * Channel; {@link REFUSE_KEY} in their place refuses that connection's key, as a server
 * that revoked it does. Once the scripts run out the listener closes, so a client that
 * reconnects again finds the port refused. Whatever a script throws (a failed
 * assertion) fails the test through {@link ScriptedServer.done}.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Channel } from "../../lib/wire/channel.ts";
import { HandshakeRefused } from "../../lib/wire/handshake.ts";
import { connectToServer } from "../../lib/client/connect.ts";
import { sendStream } from "../../lib/wire/transfer.ts";
import { testKey } from "../support/channel_pair.ts";

/** Serves bytes from memory as a file source for sendStream. */
export class MemorySource {
  #data: Uint8Array;
  #offset = 0;
  constructor(data: Uint8Array) {
    this.#data = data;
  }
  read(buffer: Uint8Array): Promise<number | null> {
    if (this.#offset >= this.#data.length) return Promise.resolve(null);
    const n = Math.min(buffer.length, this.#data.length - this.#offset);
    buffer.set(this.#data.subarray(this.#offset, this.#offset + n));
    this.#offset += n;
    return Promise.resolve(n);
  }
}

/** The server's side of one session, with helpers for the common steps. */
export class Peer {
  readonly channel: Channel;
  constructor(channel: Channel) {
    this.channel = channel;
  }

  /** The client's next control message (it must be one). */
  async message(): Promise<Record<string, unknown>> {
    const incoming = await this.channel.receive();
    assert.equal(incoming.type, "message", `expected a message, got ${incoming.type}`);
    return (incoming as { message: Record<string, unknown> }).message;
  }

  /** The client's next message, which must be of `type`. */
  async expect(type: string): Promise<Record<string, unknown>> {
    const message = await this.message();
    assert.equal(message.type, type, JSON.stringify(message));
    return message;
  }

  /** The next record's kind (message type, data, file_end, goodbye), or the error. */
  async next(): Promise<string> {
    try {
      const incoming = await this.channel.receive();
      if (incoming.type === "message") {
        return `message ${(incoming.message as { type?: string }).type}`;
      }
      return incoming.type;
    } catch (error) {
      return `error ${(error as Error).message}`;
    }
  }

  send(message: Record<string, unknown>): Promise<void> {
    return this.channel.send(message);
  }

  /**
   * Receive a file's DATA records until FILE_END; returns the bytes and the SHA-256 of
   * `held` + them (what FILE_END must carry). With `stopAfter`, abort the connection
   * after that many DATA records instead, and return what arrived.
   */
  async receiveFile(
    held: Uint8Array = new Uint8Array(0),
    stopAfter?: number,
  ): Promise<{ bytes: Uint8Array; sha256?: string; records: number }> {
    const chunks: Uint8Array[] = [];
    let records = 0;
    while (true) {
      const incoming = await this.channel.receive();
      if (incoming.type === "data") {
        chunks.push(incoming.bytes.slice());
        records++;
        if (stopAfter !== undefined && records >= stopAfter) {
          this.channel.abort();
          return { bytes: concat(chunks), records };
        }
      } else if (incoming.type === "file_end") {
        const bytes = concat(chunks);
        const sha256 = createHash("sha256").update(held).update(bytes).digest("hex");
        assert.equal(incoming.sha256, sha256, "FILE_END carries the whole file's SHA-256");
        assert.equal(incoming.size, held.length + bytes.length);
        return { bytes, sha256, records };
      } else {
        throw new Error(`expected DATA or FILE_END, got ${incoming.type}`);
      }
    }
  }

  /** Send `bytes[offset..]` as a result's records (FILE_END: the whole file). */
  async sendFile(bytes: Uint8Array, offset = 0): Promise<void> {
    const hash = createHash("sha256").update(bytes.subarray(0, offset));
    await sendStream(
      this.channel,
      new MemorySource(bytes.subarray(offset)),
      bytes.length,
      undefined,
      offset > 0 ? { offset, hash } : undefined,
    );
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}

/** One session's script. */
export type Script = (peer: Peer) => Promise<void>;

/**
 * In place of a script: refuse the connection's handshake with Refusal 2 (`key not
 * accepted`, PROTOCOL.md §2.9), as the server does once it revoked the client's key.
 */
export const REFUSE_KEY: unique symbol = Symbol("refuse the key");

/** A fake server that runs `scripts`, one per connection. */
export class ScriptedServer implements AsyncDisposable {
  readonly port: number;
  /** The key, also as text (SHARED_KEY) for a recon-client process. */
  readonly key: { text: string; raw: Uint8Array<ArrayBuffer>; id: string };
  /** Resolves when every script ran; rejects with the first script's failure. */
  readonly done: Promise<void>;
  /** Connections accepted so far. */
  accepted = 0;
  readonly #listener: Deno.TcpListener;
  readonly #channels: Channel[] = [];
  #finishing = false;

  private constructor(
    listener: Deno.TcpListener,
    key: { text: string; raw: Uint8Array<ArrayBuffer>; id: string },
    scripts: (Script | typeof REFUSE_KEY)[],
  ) {
    this.#listener = listener;
    this.port = listener.addr.port;
    this.key = key;
    this.done = this.#serve(scripts);
    this.done.catch(() => {});
  }

  static async start(scripts: (Script | typeof REFUSE_KEY)[]): Promise<ScriptedServer> {
    const key = await testKey();
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    return new ScriptedServer(listener, key, scripts);
  }

  async #serve(scripts: (Script | typeof REFUSE_KEY)[]): Promise<void> {
    try {
      for (const script of scripts) {
        let conn: Deno.TcpConn;
        try {
          conn = await this.#listener.accept();
        } catch (error) {
          if (this.#finishing) return; // the client is done: the scripts left are not needed
          throw error;
        }
        this.accepted++;
        if (script === REFUSE_KEY) {
          await this.#refuseKey(conn);
          continue;
        }
        const channel = await Channel.accept(conn, {
          keys: new Map([[this.key.id, this.key.raw]]),
        });
        this.#channels.push(channel);
        try {
          await script(new Peer(channel));
        } finally {
          // Give a polite close a moment to arrive, then cut.
          channel.abort();
        }
      }
    } finally {
      try {
        this.#listener.close();
      } catch { /* closed */ }
    }
  }

  /** The handshake with no key accepted: Refusal 2, and the client must have offered ours. */
  async #refuseKey(conn: Deno.TcpConn): Promise<void> {
    try {
      const channel = await Channel.accept(conn, { keys: new Map() });
      channel.abort();
      throw new Error("the handshake succeeded without a key");
    } catch (error) {
      if (!(error instanceof HandshakeRefused)) throw error;
      assert.equal(error.keyId, this.key.id, "the client offered its key");
    } finally {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  }

  /**
   * The client is done: the session under way ends as its script says, and the
   * scripts no connection came for are dropped (for a client that may or may not
   * connect again). Rejects with a script's failure, as {@link done}.
   */
  async finish(): Promise<void> {
    this.#finishing = true;
    try {
      this.#listener.close();
    } catch { /* closed */ }
    await this.done;
  }

  /** Opens a session as recon-client does. */
  connect = () =>
    connectToServer({
      host: "127.0.0.1",
      port: this.port,
      sharedKey: this.key.raw,
      keyId: this.key.id,
      connectTimeoutMs: 2000,
      handshakeTimeoutMs: 2000,
    });

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#listener.close();
    } catch { /* closed */ }
    for (const channel of this.#channels) channel.abort();
    await this.done.catch(() => {});
  }
}

/** Reconnect hooks that take no time: each sleep moves a fake clock instead. */
export function instantReconnect(): {
  now: () => number;
  sleep: (ms: number) => Promise<void>;
  random: () => number;
  slept: number[];
} {
  let clock = 0;
  const slept: number[] = [];
  return {
    now: () => clock,
    sleep: (ms: number) => {
      slept.push(ms);
      clock += ms;
      return Promise.resolve();
    },
    random: () => 0.5,
    slept,
  };
}
