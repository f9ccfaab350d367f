/**
 * Raw TCP over 127.0.0.1 with no crypto, no framing and no hashing: the ceiling the
 * benchmark compares recon with. Same runtime as recon (Deno), so the difference to
 * recon is what recon's protocol costs, not the language.
 *
 *     deno run -A bench/raw_tcp.ts recv --out FILE|-      # prints "PORT <n>", then "BYTES <n>"
 *     deno run -A bench/raw_tcp.ts send --port N (--file FILE | --bytes N)
 *
 * `--out -` discards what arrives and `--bytes N` sends N bytes from memory: together
 * they measure the socket alone; with files they do what recon's upload does
 * (read a file, write a file) minus the protocol.
 */
import { parseArgs } from "node:util";

const { positionals, values } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    out: { type: "string" },
    port: { type: "string" },
    file: { type: "string" },
    bytes: { type: "string" },
    "buffer-kib": { type: "string", default: "1024" },
  },
});
const bufferSize = Number(values["buffer-kib"]) * 1024;
const buffer = new Uint8Array(bufferSize);

async function writeAll(sink: { write(b: Uint8Array): Promise<number> }, bytes: Uint8Array) {
  let done = 0;
  while (done < bytes.length) done += await sink.write(bytes.subarray(done));
}

if (positionals[0] === "recv") {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  console.log(`PORT ${(listener.addr as Deno.NetAddr).port}`);
  const conn = await listener.accept();
  listener.close();
  const out = values.out && values.out !== "-"
    ? await Deno.open(values.out, { write: true, create: true, truncate: true })
    : undefined;
  let total = 0;
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) break;
    total += n;
    if (out) await writeAll(out, buffer.subarray(0, n));
  }
  out?.close();
  conn.close();
  console.log(`BYTES ${total}`);
} else if (positionals[0] === "send") {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: Number(values.port) });
  conn.setNoDelay(true);
  if (values.file) {
    using file = await Deno.open(values.file, { read: true });
    while (true) {
      const n = await file.read(buffer);
      if (n === null) break;
      await writeAll(conn, buffer.subarray(0, n));
    }
  } else {
    let left = Number(values.bytes);
    crypto.getRandomValues(buffer.subarray(0, 65536));
    while (left > 0) {
      const n = Math.min(left, bufferSize);
      await writeAll(conn, buffer.subarray(0, n));
      left -= n;
    }
  }
  conn.close();
} else {
  console.error("usage: raw_tcp.ts recv --out FILE|- | send --port N (--file F | --bytes N)");
  Deno.exit(2);
}
