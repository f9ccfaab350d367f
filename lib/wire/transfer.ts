/**
 * One file's stream over the channel (docs/PROTOCOL.md §5, §5.2): its bytes as DATA
 * records with a bounded window of records in flight (so reading, encrypting and
 * writing overlap and memory stays at about cryptoDepth × chunkSize), then FILE_END
 * with its size and SHA-256; and the receiving side of that stream.
 *
 * One SHA-256 per file (docs/PROTOCOL.md §5): the sender hashes what it reads (or, for a
 * file whose hash it recorded and that has not changed since, sends that hash). A
 * receiver of a fresh transfer does not hash: every byte came from an authenticated
 * record in sequence, so it checks the sizes and takes FILE_END's SHA-256 as the
 * file's. A resumed transfer hashes (its kept prefix must be the sender's). Files on
 * disk: lib/wire/file_send.ts and lib/wire/file_receive.ts.
 *
 * @module
 */
import { createHash, type Hash } from "node:crypto";
import type { Channel, FileDigest, ProgressCallback } from "./channel.ts";
import { TransferError } from "../errors.ts";
import { releaseBuffer } from "../buffers.ts";
import { type ByteReader, type ByteWriter, writeAll } from "./frame.ts";
import { RECORD_HEADER_SIZE } from "./record.ts";

/**
 * Where a resumed transfer starts: the bytes before `offset` are already with the
 * receiver, and `hash` has seen exactly them (PROTOCOL.md §5.2).
 */
export interface ResumePoint {
  offset: number;
  hash: Hash;
}

/**
 * The whole file's SHA-256 known before it is read (a result hashed at job end), for
 * {@link sendStream}: the bytes are not hashed again, and `check` runs after the last
 * byte was read and before FILE_END, to refuse a file that changed meanwhile.
 */
export interface KnownDigest {
  /** The whole file's SHA-256, hex. */
  sha256: string;
  /** Offset of the first byte `source` holds (bytes before it are not sent). */
  offset: number;
  check: () => Promise<void>;
}

/** Options of {@link sendStream}. */
export interface SendStreamOptions {
  /**
   * The SHA-256 (hex) the whole file must have: a file hashed here that does not match
   * fails before FILE_END, so the receiver never takes other bytes for it.
   */
  expectSha256?: string;
  /** Send this SHA-256 instead of hashing (`resume` is then not used). */
  known?: KnownDigest;
}

/**
 * Stream `size` bytes from `source` as DATA records followed by a FILE_END record
 * carrying the size and SHA-256. Memory stays at about cryptoDepth × chunkSize.
 * With `resume`, `source` holds the bytes from `resume.offset` on, `size` is still the
 * whole file's, and FILE_END carries the whole file's size and SHA-256.
 */
export async function sendStream(
  channel: Channel,
  source: ByteReader,
  size: number,
  onProgress?: ProgressCallback,
  resume?: ResumePoint,
  options: SendStreamOptions = {},
): Promise<FileDigest> {
  const known = options.known;
  const hash = known ? undefined : resume?.hash ?? createHash("sha256");
  const chunkSize = channel.chunkSize;
  const window: Promise<void>[] = [];
  // Record buffers are reused once written: fresh 1 MiB buffers cost zero-filling and
  // page faults on every chunk (docs/PERFORMANCE.md). At most cryptoDepth + 1 exist.
  const free: Uint8Array<ArrayBuffer>[] = [];
  let sent = known?.offset ?? resume?.offset ?? 0;
  try {
    while (true) {
      const record = free.pop() ?? new Uint8Array(RECORD_HEADER_SIZE + chunkSize);
      const body = record.subarray(RECORD_HEADER_SIZE);
      let filled = 0;
      while (filled < chunkSize) {
        const n = await source.read(body.subarray(filled)).catch((error) => {
          throw new TransferError(`cannot read the file being sent: ${error.message}`, {
            cause: error,
          });
        });
        if (n === null) break;
        filled += n;
      }
      if (filled === 0) break;
      hash?.update(body.subarray(0, filled));
      sent += filled;
      if (sent > size) {
        throw new TransferError(
          `the file grew while it was being sent (announced ${size} bytes)`,
        );
      }
      const written = record;
      const sending = channel.sendData(record.subarray(0, RECORD_HEADER_SIZE + filled), {
        reuse: true,
      }).then(() => void free.push(written));
      // A failed channel rejects every record in the window at once, while this loop
      // awaits only the oldest (or a read): the others must not count as unhandled
      // (Deno ends the process on one). Their failure still reaches the caller.
      sending.catch(() => {});
      window.push(sending);
      if (window.length >= channel.cryptoDepth) await window.shift();
      onProgress?.(sent);
      if (filled < chunkSize) break;
    }
    await Promise.all(window.splice(0));
  } catch (error) {
    // The source failed (the file grew or cannot be read) with records still being
    // written. Let them finish before the caller hears of it: whoever then closes the
    // connection closes it at a record boundary, never in the middle of a frame
    // (PROTOCOL.md §1, §5). A channel that failed rejects them at once.
    await Promise.allSettled(window);
    throw error;
  } finally {
    for (const buffer of free.splice(0)) releaseBuffer(buffer);
  }
  if (sent !== size) {
    throw new TransferError(
      `the file changed while it was being sent: announced ${size} bytes, read ${sent}`,
    );
  }
  await known?.check();
  const sha256 = hash ? hash.digest("hex") : known!.sha256;
  if (options.expectSha256 !== undefined && sha256 !== options.expectSha256) {
    throw new TransferError(
      `the file is not the one recorded (SHA-256 ${sha256}, recorded ${options.expectSha256}); not sending it`,
    );
  }
  await channel.sendFileEnd(sent, Uint8Array.fromHex(sha256));
  return { size: sent, sha256 };
}

/**
 * Receive one file sent with {@link sendStream} into `sink`. Fails with TransferError
 * when more than `expectedSize` bytes arrive or the sizes do not match; the caller then
 * deletes what was written. The file's SHA-256 is FILE_END's: the bytes came in
 * authenticated records, in sequence (PROTOCOL.md §3, §5), so they are the bytes the
 * sender read and hashed, and they are not hashed again here. With `resume`, the first
 * `resume.offset` bytes are already in place (and in `resume.hash`); only the rest
 * arrives, and the whole file's SHA-256 is computed and must match FILE_END's.
 */
export async function receiveStream(
  channel: Channel,
  sink: ByteWriter,
  expectedSize: number,
  onProgress?: ProgressCallback,
  resume?: ResumePoint,
): Promise<FileDigest> {
  const hash = resume?.hash;
  let received = resume?.offset ?? 0;
  while (true) {
    const incoming = await channel.receive();
    if (incoming.type === "data") {
      received += incoming.bytes.length;
      if (received > expectedSize) {
        throw new TransferError(
          `the ${channel.peerName} sent more than the announced ${expectedSize} bytes`,
        );
      }
      hash?.update(incoming.bytes);
      await writeAll(sink, incoming.bytes);
      releaseBuffer(incoming.bytes);
      onProgress?.(received);
    } else if (incoming.type === "file_end") {
      if (incoming.size !== received || received !== expectedSize) {
        throw new TransferError(
          `size mismatch: announced ${expectedSize} bytes, received ${received}, sender says ${incoming.size}`,
        );
      }
      const sha256 = hash ? hash.digest("hex") : incoming.sha256;
      if (incoming.sha256 !== sha256) {
        throw new TransferError(
          `SHA-256 mismatch: received ${sha256}, sender says ${incoming.sha256}`,
        );
      }
      return { size: received, sha256 };
    } else if (incoming.type === "message") {
      const reason = (incoming.message as { reason?: unknown })?.reason;
      throw new TransferError(
        `the ${channel.peerName} abandoned the transfer after ${received} bytes${
          reason ? `: ${String(reason)}` : ""
        }`,
      );
    } else {
      throw new TransferError(
        `the ${channel.peerName} ended the session in the middle of a file (${received} bytes)`,
      );
    }
  }
}
