/**
 * One end of a bare lib/wire/channel.ts session over 127.0.0.1, for measuring the channel
 * alone (no server, no job, no disk) at a given chunk size and crypto depth. Run two of
 * these as separate processes, so each end has its own event loop and threads, as in a
 * real transfer:
 *
 *     BENCH_KEY=<base64 key> deno run -A bench/channel_peer.ts recv --bytes N [--chunk B] [--depth D]
 *         # prints "PORT <n>", then "TRANSFER <seconds> <cpu seconds>" and "BYTES <n>"
 *     BENCH_KEY=<base64 key> deno run -A bench/channel_peer.ts send --port P --bytes N [--chunk B] [--depth D]
 *
 * The sender streams N bytes from memory (8 MiB of random data, repeated) through
 * `sendStream` (SHA-256, Fernet, framing, pipelining); the receiver runs
 * `receiveStream` into a sink that discards, so this is the data path minus the
 * disk. Crypto runs as in the shipped programs. Both ends need the same --chunk and
 * --depth only if you want them symmetric;
 * the receiver's depth is its read-ahead.
 *
 * Each end prints "TRANSFER <seconds> <cpu seconds>" measured from the end of the
 * handshake to the end of the file (the receiver: verified; the sender: GOODBYE
 * written), CPU from process.cpuUsage() (all threads, user+sys), so process start-up
 * and the handshake are left out.
 */
import { receiveStream, sendStream } from "../lib/wire/transfer.ts";
import { cpuUsage } from "node:process";
import { parseArgs } from "node:util";
import { Channel } from "../lib/wire/channel.ts";
import { decodeKey, keyId } from "../lib/crypto/keys.ts";

const { positionals, values } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    port: { type: "string" },
    bytes: { type: "string" },
    chunk: { type: "string" },
    depth: { type: "string" },
  },
});
const keyText = Deno.env.get("BENCH_KEY");
if (!keyText) throw new Error("BENCH_KEY is not set");
const raw = decodeKey(keyText);
const id = await keyId(raw);
const bytes = Number(values.bytes);
const tuning = {
  chunkSize: values.chunk ? Number(values.chunk) : undefined,
  cryptoDepth: values.depth ? Number(values.depth) : undefined,
  idleTimeoutMs: 60_000,
};

function report(start: number, cpu: ReturnType<typeof cpuUsage>): void {
  const used = cpuUsage(cpu);
  const seconds = (performance.now() - start) / 1000;
  console.log(`TRANSFER ${seconds.toFixed(4)} ${((used.user + used.system) / 1e6).toFixed(4)}`);
}

if (positionals[0] === "recv") {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(`PORT ${(listener.addr as Deno.NetAddr).port}`);
  const conn = await listener.accept();
  listener.close();
  conn.setNoDelay(true);
  const channel = await Channel.accept(conn, { ...tuning, keys: new Map([[id, raw]]) });
  const sink = { write: (chunk: Uint8Array) => Promise.resolve(chunk.length) };
  const start = performance.now();
  const cpu = cpuUsage();
  const digest = await receiveStream(channel, sink, bytes);
  report(start, cpu);
  const end = await channel.receive();
  if (end.type !== "goodbye") throw new Error(`expected goodbye, got ${end.type}`);
  channel.abort();
  console.log(`BYTES ${digest.size}`);
} else if (positionals[0] === "send") {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(values.port) });
  conn.setNoDelay(true);
  const channel = await Channel.connect(conn, { ...tuning, sharedKey: raw, keyId: id });
  const pattern = new Uint8Array(8 * 1024 * 1024);
  for (let offset = 0; offset < pattern.length; offset += 65536) {
    crypto.getRandomValues(pattern.subarray(offset, offset + 65536));
  }
  let position = 0;
  const source = {
    read(buffer: Uint8Array): Promise<number | null> {
      if (position >= bytes) return Promise.resolve(null);
      const start = position % pattern.length;
      const n = Math.min(buffer.length, bytes - position, pattern.length - start);
      buffer.set(pattern.subarray(start, start + n));
      position += n;
      return Promise.resolve(n);
    },
  };
  const start = performance.now();
  const cpu = cpuUsage();
  await sendStream(channel, source, bytes);
  await channel.close();
  report(start, cpu);
} else {
  console.error("usage: channel_peer.ts recv|send --bytes N [--port P] [--chunk B] [--depth D]");
  Deno.exit(2);
}
