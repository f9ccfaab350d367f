/**
 * Test support: a connected client/server Channel pair over real 127.0.0.1 sockets,
 * closed with `await using`.
 *
 * @module
 */
import { Channel, type ChannelOptions } from "../../lib/wire/channel.ts";
import { decodeKey, generateKey, keyId } from "../../lib/crypto/keys.ts";

/** A fresh SHARED_KEY with its raw bytes and id. */
export async function testKey(): Promise<
  { text: string; raw: Uint8Array<ArrayBuffer>; id: string }
> {
  const text = generateKey();
  const raw = decodeKey(text) as Uint8Array<ArrayBuffer>;
  return { text, raw, id: await keyId(raw) };
}

/** A connected pair of sockets on 127.0.0.1. */
export async function socketPair(): Promise<
  { client: Deno.TcpConn; server: Deno.TcpConn } & AsyncDisposable
> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [client, server] = await Promise.all([
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    listener.accept(),
  ]);
  listener.close();
  return {
    client,
    server,
    [Symbol.asyncDispose]: () => {
      for (const conn of [client, server]) {
        try {
          conn.close();
        } catch { /* closed */ }
      }
      return Promise.resolve();
    },
  };
}

/** Handshaken channels over a real socket pair; the server end may get its own options. */
export async function channelPair(
  options: ChannelOptions = {},
  serverOptions: ChannelOptions = options,
): Promise<{ client: Channel; server: Channel } & AsyncDisposable> {
  const key = await testKey();
  const sockets = await socketPair();
  const [client, server] = await Promise.all([
    Channel.connect(sockets.client, { ...options, sharedKey: key.raw, keyId: key.id }),
    Channel.accept(sockets.server, { ...serverOptions, keys: new Map([[key.id, key.raw]]) }),
  ]);
  return {
    client,
    server,
    [Symbol.asyncDispose]: async () => {
      client.abort();
      server.abort();
      await sockets[Symbol.asyncDispose]();
    },
  };
}
