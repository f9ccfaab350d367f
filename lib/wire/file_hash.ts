/**
 * Hashing files on disk (docs/PROTOCOL.md §5, §5.2): the SHA-256 of a file read to its
 * end (a result at job end, VERIFY_AFTER_WRITE) and of the prefix a resumed transfer
 * keeps, read with a few pooled buffers so that hashing many files keeps memory flat.
 *
 * @module
 */
import { createHash } from "node:crypto";
import { TransferError } from "../errors.ts";
import { releaseBuffer } from "../buffers.ts";
import type { ResumePoint } from "./transfer.ts";

/** Size of the buffers files are read back and hashed with. */
const PREFIX_CHUNK = 1024 * 1024;

/**
 * Read buffers of {@link PREFIX_CHUNK} bytes, kept for the next hash: a fresh 1 MiB
 * buffer per file is garbage V8 collects only after ~64 MB of it, which glibc then keeps
 * (120 results hashed at a job's end: server RSS 151 MB with fresh buffers, 93 MB with
 * these; docs/PERFORMANCE.md). Each concurrent reader takes its own.
 */
const readBuffers: Uint8Array<ArrayBuffer>[] = [];
const MAX_READ_BUFFERS = 4;

async function withReadBuffer<T>(use: (buffer: Uint8Array<ArrayBuffer>) => Promise<T>): Promise<T> {
  const buffer = readBuffers.pop() ?? new Uint8Array(PREFIX_CHUNK);
  try {
    return await use(buffer);
  } finally {
    if (readBuffers.length < MAX_READ_BUFFERS) readBuffers.push(buffer);
    else releaseBuffer(buffer);
  }
}

/**
 * Hash the first `length` bytes of `file` from where it is positioned (its start),
 * leaving it positioned right after them. Throws TransferError when it is shorter.
 */
export async function hashPrefix(
  file: Deno.FsFile,
  length: number,
  name: string,
): Promise<ResumePoint> {
  const hash = createHash("sha256");
  await withReadBuffer(async (buffer) => {
    let done = 0;
    while (done < length) {
      const n = await file.read(buffer.subarray(0, Math.min(buffer.length, length - done)));
      if (n === null) {
        throw new TransferError(`${name} has only ${done} of the ${length} bytes to resume after`);
      }
      hash.update(buffer.subarray(0, n));
      done += n;
    }
  });
  return { offset: length, hash };
}

/** Read `file` from where it stands to its end: its SHA-256 (hex) and how many bytes it had. */
export async function readSha256(file: Deno.FsFile): Promise<{ sha256: string; size: number }> {
  const hash = createHash("sha256");
  const size = await withReadBuffer(async (buffer) => {
    let total = 0;
    for (let n = await file.read(buffer); n !== null; n = await file.read(buffer)) {
      hash.update(buffer.subarray(0, n));
      total += n;
    }
    return total;
  });
  return { sha256: hash.digest("hex"), size };
}
