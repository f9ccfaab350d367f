/**
 * Files ↔ the channel (docs/PROTOCOL.md §5): stream bytes as DATA records with a
 * bounded window of records in flight (so reading, encrypting and writing overlap and
 * memory stays at about cryptoDepth × chunkSize), end each file with its size and
 * SHA-256; send a regular file from disk; receive into a temporary file created exclusively inside the target
 * directory, and move it into place only when size and SHA-256 match. A failed
 * receive leaves nothing behind.
 *
 * @module
 */
import { createHash, type Hash } from "node:crypto";
import * as path from "node:path";
import type { Channel, FileDigest, ProgressCallback } from "./channel.ts";
import { ReconError, TransferError } from "../errors.ts";
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
): Promise<FileDigest> {
  const hash = resume?.hash ?? createHash("sha256");
  const chunkSize = channel.chunkSize;
  const window: Promise<void>[] = [];
  // Record buffers are reused once written: fresh 1 MiB buffers cost zero-filling and
  // page faults on every chunk (docs/PERFORMANCE.md). At most cryptoDepth + 1 exist.
  const free: Uint8Array<ArrayBuffer>[] = [];
  let sent = resume?.offset ?? 0;
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
      hash.update(body.subarray(0, filled));
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
  const digest = hash.digest();
  if (sent !== size) {
    throw new TransferError(
      `the file changed while it was being sent: announced ${size} bytes, read ${sent}`,
    );
  }
  await channel.sendFileEnd(sent, digest);
  return { size: sent, sha256: digest.toString("hex") };
}

/**
 * Receive one file sent with {@link sendStream} into `sink`. Fails with TransferError
 * when more than `expectedSize` bytes arrive or the size or SHA-256 do not match; the
 * caller then deletes what was written. With `resume`, the first `resume.offset` bytes
 * are already in place (and in `resume.hash`); only the rest arrives.
 */
export async function receiveStream(
  channel: Channel,
  sink: ByteWriter,
  expectedSize: number,
  onProgress?: ProgressCallback,
  resume?: ResumePoint,
): Promise<FileDigest> {
  const hash = resume?.hash ?? createHash("sha256");
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
      hash.update(incoming.bytes);
      await writeAll(sink, incoming.bytes);
      releaseBuffer(incoming.bytes);
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

/** Options for {@link receiveFileTo}. */
export interface ReceiveOptions {
  /** Refuse to replace an existing file (client downloads). Default true. */
  noOverwrite?: boolean;
  onProgress?: ProgressCallback;
}

const encoder = new TextEncoder();

/** The longest prefix of `name` of whole characters that is at most `bytes` of UTF-8. */
function prefixOfBytes(name: string, bytes: number): string {
  let prefix = "";
  let used = 0;
  for (const char of name) {
    used += encoder.encode(char).length;
    if (used > bytes) break;
    prefix += char;
  }
  return prefix;
}

/**
 * Receive the next file on `channel` into `target` (its directory must exist and be
 * ours). Returns size and SHA-256; on any failure the temporary file is removed.
 */
export async function receiveFileTo(
  channel: Channel,
  target: string,
  size: number,
  options: ReceiveOptions = {},
): Promise<FileDigest> {
  const dir = path.dirname(target);
  const temp = path.join(
    dir,
    // At most 1 + 200 + 14 bytes, whatever the name's script: a name may have 255 bytes.
    `.${prefixOfBytes(path.basename(target), 200)}.${crypto.randomUUID().slice(0, 8)}.part`,
  );
  // Our own disk's failures (full, read-only, …) are transfer errors; the channel's
  // errors, from receiveStream, stay what they are.
  const disk = <T>(operation: Promise<T>): Promise<T> =>
    operation.catch((error) => {
      throw error instanceof ReconError ? error : new TransferError(
        `cannot write ${target}: ${(error as Error).message}`,
        { cause: error },
      );
    });
  let file: Deno.FsFile | undefined;
  try {
    const opened = await disk(Deno.open(temp, { createNew: true, write: true, mode: 0o600 }));
    file = opened;
    const sink = { write: (bytes: Uint8Array) => disk(opened.write(bytes)) };
    const digest = await receiveStream(channel, sink, size, options.onProgress);
    file.close();
    file = undefined;
    if (options.noOverwrite ?? true) {
      // link() fails when the target exists, so nothing is ever overwritten.
      await disk(Deno.link(temp, target)).catch((error) => {
        if (error.cause instanceof Deno.errors.AlreadyExists) {
          throw new TransferError(`${target} already exists; not overwriting it`);
        }
        throw error;
      });
      await disk(Deno.remove(temp));
    } else {
      await disk(Deno.rename(temp, target));
    }
    return digest;
  } catch (error) {
    try {
      file?.close();
    } catch { /* closed */ }
    await Deno.remove(temp).catch(() => {});
    throw error;
  }
}

/** Device and inode: which file a path named when it was looked at. */
export interface FileIdentity {
  dev: number;
  ino: number;
}

/** Options for {@link openForSending} and {@link sendFileFrom}. */
export interface SendOptions {
  /**
   * Refuse a path that is (or becomes, between the check and the open) a symbolic
   * link: the server's results must be the files the script wrote, nothing else.
   */
  noFollow?: boolean;
  /**
   * The file must be this one (device and inode as seen earlier): a directory on the
   * path swapped for a link since then leads to another file, which is refused.
   */
  expect?: FileIdentity;
  /**
   * Bytes the receiver already holds: they are read and hashed here, not sent, and
   * FILE_END still carries the whole file's size and SHA-256. Default 0.
   */
  offset?: number;
  onProgress?: ProgressCallback;
}

/** Open a regular file for sending; returns it with its size. Throws TransferError. */
export async function openForSending(
  filePath: string,
  options: SendOptions = {},
): Promise<{ file: Deno.FsFile; size: number }> {
  const refuse = (link: boolean) =>
    new TransferError(
      `${filePath} is not a regular file${link ? " (it is or became a symbolic link)" : ""}`,
    );
  let file: Deno.FsFile;
  let before: Deno.FileInfo | undefined;
  try {
    if (options.noFollow) before = await Deno.lstat(filePath);
  } catch (error) {
    throw new TransferError(`cannot read ${filePath}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  // Not even opened when it is not a regular file now: a link could lead to a FIFO
  // (an open that blocks) or a device.
  if (before && !before.isFile) throw refuse(before.isSymlink);
  try {
    file = await Deno.open(filePath, { read: true });
  } catch (error) {
    throw new TransferError(`cannot read ${filePath}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const info = await file.stat();
  const swapped = (before !== undefined && (before.ino !== info.ino || before.dev !== info.dev)) ||
    (options.expect !== undefined &&
      (options.expect.ino !== info.ino || options.expect.dev !== info.dev));
  if (!info.isFile || swapped) {
    file.close();
    throw refuse(swapped);
  }
  return { file, size: info.size };
}

/** Send the file at `filePath`, which must still have `size` bytes. */
export async function sendFileFrom(
  channel: Channel,
  filePath: string,
  size: number,
  options: SendOptions = {},
): Promise<FileDigest> {
  const { file, size: actual } = await openForSending(filePath, options);
  try {
    if (actual !== size) {
      throw new TransferError(
        `${filePath} changed size since it was announced (${size} → ${actual} bytes)`,
      );
    }
    const offset = options.offset ?? 0;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > size) {
      throw new TransferError(
        `cannot resume ${filePath} at byte ${offset}: the file has ${size} bytes`,
      );
    }
    const resume = offset > 0 ? await hashPrefix(file, offset, filePath) : undefined;
    return await sendStream(channel, file, size, options.onProgress, resume);
  } finally {
    file.close();
  }
}

/** Size of the buffer a resumed transfer hashes its first bytes with. */
const PREFIX_CHUNK = 1024 * 1024;

/**
 * Hash the first `length` bytes of `file` from where it is positioned (its start),
 * leaving it positioned right after them. Throws TransferError when it is shorter.
 */
async function hashPrefix(file: Deno.FsFile, length: number, name: string): Promise<ResumePoint> {
  const hash = createHash("sha256");
  const buffer = new Uint8Array(Math.min(PREFIX_CHUNK, length));
  let done = 0;
  while (done < length) {
    const n = await file.read(buffer.subarray(0, Math.min(buffer.length, length - done)));
    if (n === null) {
      throw new TransferError(`${name} has only ${done} of the ${length} bytes to resume after`);
    }
    hash.update(buffer.subarray(0, n));
    done += n;
  }
  return { offset: length, hash };
}

/** Verified bytes in a partial file (its length), 0 when there is none. */
export async function partialLength(partialPath: string): Promise<number> {
  try {
    const info = await Deno.lstat(partialPath);
    return info.isFile ? info.size : 0;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return 0;
    throw error;
  }
}

/** Options of {@link receiveFileResumable}. */
export interface ResumableOptions {
  /** Told the bytes of the whole file held so far (offset included). */
  onProgress?: ProgressCallback;
}

/**
 * Receive the next file on `channel` into `partialPath`, keeping its first `offset`
 * bytes (they arrived in an earlier session) and appending the rest. Every byte written
 * came from an authenticated record, so after any failure the partial file holds only
 * verified bytes and a later session can resume at its length; a SHA-256 mismatch
 * (the whole file is not what the sender has) empties it instead. On success the
 * caller moves the file into place. A link at `partialPath` is refused, never followed.
 */
export async function receiveFileResumable(
  channel: Channel,
  partialPath: string,
  size: number,
  offset: number,
  options: ResumableOptions = {},
): Promise<FileDigest> {
  const disk = <T>(operation: Promise<T>): Promise<T> =>
    operation.catch((error) => {
      throw error instanceof ReconError ? error : new TransferError(
        `cannot write ${partialPath}: ${(error as Error).message}`,
        { cause: error },
      );
    });
  const before = await Deno.lstat(partialPath).catch(() => undefined);
  if (before && !before.isFile) {
    throw new TransferError(`${partialPath} is not a regular file; not writing to it`);
  }
  const held = before?.size ?? 0;
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > held || offset > size) {
    throw new TransferError(
      `cannot resume ${partialPath} at byte ${offset}: ${held} bytes are held of ${size}`,
    );
  }
  const file = await disk(Deno.open(partialPath, {
    read: true,
    write: true,
    create: true,
    mode: 0o600,
  }));
  try {
    const opened = await file.stat();
    const now = await Deno.lstat(partialPath).catch(() => undefined);
    const same = (info?: Deno.FileInfo) => info?.ino === opened.ino && info?.dev === opened.dev;
    if ((before && !same(before)) || !now?.isFile || !same(now)) {
      throw new TransferError(`${partialPath} was replaced while it was opened; not writing to it`);
    }
    await disk(file.truncate(offset));
    const resume = offset > 0 ? await hashPrefix(file, offset, partialPath) : undefined;
    await disk(file.seek(offset, Deno.SeekMode.Start));
    const sink = { write: (bytes: Uint8Array) => disk(file.write(bytes)) };
    try {
      return await receiveStream(channel, sink, size, options.onProgress, resume);
    } catch (error) {
      if (error instanceof TransferError && /SHA-256 mismatch/.test(error.message)) {
        await file.truncate(0).catch(() => {});
      }
      throw error;
    }
  } finally {
    try {
      file.close();
    } catch { /* closed */ }
  }
}
