/**
 * Tests for lib/wire/frame.ts: length checks before allocation, truncation at every
 * offset, clean EOF, frames split and coalesced across reads, sticky failure.
 * No I/O: every source is a scripted reader.
 */
import assert from "node:assert/strict";
import { ProtocolError } from "../../lib/errors.ts";
import {
  encodeFrame,
  FRAME_HEADER_SIZE,
  FrameReader,
  sealFrame,
  writeAll,
} from "../../lib/wire/frame.ts";
import { MAX_FRAME_SIZE } from "../../lib/wire/record.ts";
import { MAX_HANDSHAKE_FRAME_SIZE } from "../../lib/wire/handshake.ts";
import {
  BytesReader,
  concatBytes,
  randomBytes,
  ScriptedReader,
  seededRandom,
} from "../support/memory_duplex.ts";

function header(length: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(FRAME_HEADER_SIZE);
  new DataView(bytes.buffer).setUint32(0, length);
  return bytes;
}

function payload(length: number, fill = 0xab): Uint8Array<ArrayBuffer> {
  return new Uint8Array(length).fill(fill);
}

async function readAll(reader: FrameReader): Promise<Uint8Array[]> {
  const frames: Uint8Array[] = [];
  for (let frame = await reader.read(); frame !== null; frame = await reader.read()) {
    frames.push(frame);
  }
  return frames;
}

for (const limit of [MAX_HANDSHAKE_FRAME_SIZE, MAX_FRAME_SIZE]) {
  for (const length of [0, limit + 1, 2 ** 31, 2 ** 32 - 1]) {
    Deno.test(
      `FrameReader rejects length ${length} (limit ${limit}) right after the 4 header bytes`,
      async () => {
        // Only the header is scripted; a read for the body would throw a different error.
        const source = new ScriptedReader([header(length)], { failAfterScript: true });
        const reader = new FrameReader(source, { maxFrameSize: limit });
        await assert.rejects(
          reader.read(),
          (error: unknown) =>
            error instanceof ProtocolError &&
            error.message.includes(`frame length ${length} is outside the allowed range`),
        );
        assert.equal(source.reads, 1, "nothing was read past the header");
        // The only buffer in play is the reader's fixed 64 KiB one.
        assert.ok(source.requested.every((size) => size <= 64 * 1024));
      },
    );
  }
}

Deno.test("FrameReader accepts a frame of exactly the limit", async () => {
  const body = randomBytes(MAX_HANDSHAKE_FRAME_SIZE);
  const reader = new FrameReader(new ScriptedReader([encodeFrame(body)]), {
    maxFrameSize: MAX_HANDSHAKE_FRAME_SIZE,
  });
  assert.deepEqual(await reader.read(), body);
  assert.equal(await reader.read(), null);
});

Deno.test("FrameReader applies a raised limit to the next frame", async () => {
  const big = payload(1000);
  const source = new ScriptedReader([encodeFrame(payload(10)), encodeFrame(big)]);
  const reader = new FrameReader(source, { maxFrameSize: 100 });
  assert.equal((await reader.read())?.length, 10);
  reader.maxFrameSize = 2000;
  assert.equal(reader.maxFrameSize, 2000);
  assert.deepEqual(await reader.read(), big);
});

Deno.test("FrameReader returns null on a clean EOF before any frame", async () => {
  const reader = new FrameReader(new ScriptedReader([]), { maxFrameSize: 100 });
  assert.equal(await reader.read(), null);
});

Deno.test("FrameReader returns null on a clean EOF between frames", async () => {
  const frames = [payload(3, 1), payload(7, 2)];
  const reader = new FrameReader(new ScriptedReader(frames.map((f) => encodeFrame(f))), {
    maxFrameSize: 100,
  });
  assert.deepEqual(await readAll(reader), frames);
});

Deno.test("FrameReader refuses a stream truncated at every offset inside a frame", async () => {
  const whole = concatBytes(encodeFrame(payload(5, 1)), encodeFrame(randomBytes(20)));
  const boundaries = new Set([0, 9, whole.length]);
  for (let cut = 0; cut <= whole.length; cut++) {
    const reader = new FrameReader(new ScriptedReader([whole.subarray(0, cut)]), {
      maxFrameSize: 100,
    });
    if (boundaries.has(cut)) {
      const frames = await readAll(reader);
      assert.equal(frames.length, cut === 0 ? 0 : cut === 9 ? 1 : 2, `cut at ${cut}`);
      continue;
    }
    const inHeader = cut < 4 || (cut > 9 && cut < 13);
    await assert.rejects(
      readAll(reader),
      (error: unknown) =>
        error instanceof ProtocolError &&
        error.message.includes(inHeader ? "frame header" : "in the middle of a frame ("),
      `cut at ${cut}`,
    );
  }
});

Deno.test("FrameReader reports how much of a truncated body arrived", async () => {
  const frame = encodeFrame(payload(100_000));
  const reader = new FrameReader(new ScriptedReader([frame.subarray(0, 70_004)]), {
    maxFrameSize: 200_000,
  });
  await assert.rejects(reader.read(), /70000 of 100000 bytes/);
});

Deno.test("FrameReader serves many small frames that arrive in one read", async () => {
  const random = seededRandom(7);
  const frames = Array.from(
    { length: 1000 },
    (_, i) => payload(1 + Math.floor(random() * 50), i & 0xff),
  );
  const source = new ScriptedReader([concatBytes(...frames.map((f) => encodeFrame(f)))]);
  const reader = new FrameReader(source, { maxFrameSize: 100 });
  assert.deepEqual(await readAll(reader), frames);
  // About 35 KB fits the 64 KiB buffer: one read for the data and one for EOF.
  assert.equal(source.reads, 2);
});

Deno.test("FrameReader assembles a large frame split over many reads", async () => {
  const body = randomBytes(3 * 1024 * 1024 + 17);
  const frame = encodeFrame(body);
  const chunks: Uint8Array[] = [];
  for (let offset = 0; offset < frame.length; offset += 4093) {
    chunks.push(frame.subarray(offset, offset + 4093));
  }
  const reader = new FrameReader(new ScriptedReader(chunks), { maxFrameSize: MAX_FRAME_SIZE });
  assert.deepEqual(await reader.read(), body);
  assert.equal(await reader.read(), null);
});

Deno.test("FrameReader reads a frame delivered one byte at a time", async () => {
  const frames = [randomBytes(300), randomBytes(1), randomBytes(70_000)];
  const stream = concatBytes(...frames.map((f) => encodeFrame(f)));
  const chunks = Array.from(stream, (byte) => new Uint8Array([byte]));
  const reader = new FrameReader(new ScriptedReader(chunks), { maxFrameSize: 100_000 });
  assert.deepEqual(await readAll(reader), frames);
});

Deno.test("FrameReader reads frames cut at random points, whatever the chunking", async () => {
  const random = seededRandom(42);
  for (let round = 0; round < 50; round++) {
    const frames = Array.from(
      { length: 1 + Math.floor(random() * 20) },
      () => randomBytes(1 + Math.floor(random() * (random() < 0.2 ? 150_000 : 300))),
    );
    const stream = concatBytes(...frames.map((f) => encodeFrame(f)));
    const chunks: Uint8Array[] = [];
    for (let offset = 0; offset < stream.length;) {
      const size = 1 + Math.floor(random() * (random() < 0.5 ? 10 : 100_000));
      chunks.push(stream.subarray(offset, offset + size));
      offset += size;
    }
    const reader = new FrameReader(new ScriptedReader(chunks), { maxFrameSize: 150_000 });
    assert.deepEqual(await readAll(reader), frames, `round ${round}`);
  }
});

Deno.test("FrameReader stays failed after a bad frame and reads no more", async () => {
  const source = new ScriptedReader([
    concatBytes(header(0), encodeFrame(payload(4))),
  ]);
  const reader = new FrameReader(source, { maxFrameSize: 100 });
  const first = await reader.read().catch((error) => error);
  assert.ok(first instanceof ProtocolError);
  const readsAfterFailure = source.reads;
  const second = await reader.read().catch((error) => error);
  assert.equal(second, first, "the same error again");
  assert.equal(source.reads, readsAfterFailure, "the source was not read again");
});

Deno.test("FrameReader stays failed after its source threw", async () => {
  let calls = 0;
  const reader = new FrameReader({
    read: () => {
      calls++;
      return Promise.reject(new Deno.errors.ConnectionReset("reset by peer"));
    },
  }, { maxFrameSize: 100 });
  await assert.rejects(reader.read(), Deno.errors.ConnectionReset);
  await assert.rejects(reader.read(), Deno.errors.ConnectionReset);
  assert.equal(calls, 1);
});

Deno.test("encodeFrame() writes a big-endian length before a copy of the payload", () => {
  const body = new Uint8Array([1, 2, 3]);
  const frame = encodeFrame(body);
  assert.deepEqual(frame, new Uint8Array([0, 0, 0, 3, 1, 2, 3]));
  body[0] = 9;
  assert.equal(frame[4], 1, "the frame holds a copy");
  const long = encodeFrame(new Uint8Array(0x01020304 & 0xffff));
  assert.deepEqual(long.subarray(0, 4), new Uint8Array([0, 0, 0x03, 0x04]));
});

Deno.test("sealFrame() fills in the reserved prefix of a subarray", () => {
  const backing = new Uint8Array(20);
  const frame = sealFrame(backing.subarray(8, 18));
  assert.deepEqual(Array.from(frame.subarray(0, 4)), [0, 0, 0, 6]);
  assert.deepEqual(Array.from(backing.subarray(0, 8)), [0, 0, 0, 0, 0, 0, 0, 0]);
});

Deno.test("encodeFrame() and FrameReader round-trip both ways", async () => {
  const body = randomBytes(1234);
  const frame = encodeFrame(body);
  const decoded = await new FrameReader(new BytesReader(frame), { maxFrameSize: 2000 }).read();
  assert.deepEqual(decoded, body);
  assert.deepEqual(encodeFrame(decoded!), frame);
});

Deno.test("writeAll() loops over short writes", async () => {
  const received: number[] = [];
  const sink = {
    write: (bytes: Uint8Array) => {
      const n = Math.min(3, bytes.length);
      received.push(...bytes.subarray(0, n));
      return Promise.resolve(n);
    },
  };
  const bytes = Uint8Array.from({ length: 100 }, (_, i) => i);
  await writeAll(sink, bytes);
  assert.deepEqual(received, Array.from(bytes));
});
