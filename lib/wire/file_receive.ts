/**
 * Receiving a file onto disk (docs/PROTOCOL.md §5, §5.2, §9.8): into a temporary file
 * created exclusively inside the target directory and moved into place only when
 * FILE_END checked out (a failed receive leaves nothing behind); or resumable, into a
 * partial file that only ever holds verified bytes, so a later session can continue at
 * its length. `verifyAfterWrite` reads the written file back and compares.
 *
 * @module
 */
import * as path from "node:path";
import type { Channel, FileDigest, ProgressCallback } from "./channel.ts";
import { ReconError, TransferError } from "../errors.ts";
import { receiveStream } from "./transfer.ts";
import { hashPrefix, readSha256 } from "./file_hash.ts";

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
 * Wrap disk operations on `name`: our own disk's failures (full, read-only, …) become
 * transfer errors; the channel's errors, from receiveStream, stay what they are.
 */
function diskErrors(name: string): <T>(operation: Promise<T>) => Promise<T> {
  return (operation) =>
    operation.catch((error) => {
      throw error instanceof ReconError ? error : new TransferError(
        `cannot write ${name}: ${(error as Error).message}`,
        { cause: error },
      );
    });
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
  const disk = diskErrors(target);
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
  /**
   * Read the whole file back once it has arrived and check its size and SHA-256
   * against FILE_END (VERIFY_AFTER_WRITE); a mismatch fails the transfer and empties
   * the file.
   */
  verifyAfterWrite?: boolean;
}

/**
 * Receive the next file on `channel` into `partialPath`, keeping its first `offset`
 * bytes (they arrived in an earlier session) and appending the rest. Every byte written
 * came from an authenticated record, so after any failure the partial file holds only
 * verified bytes and a later session can resume at its length; a SHA-256 mismatch
 * (the whole file is not what the sender has) empties it instead. On success the
 * caller moves the file into place. A link at `partialPath` is refused, never followed.
 *
 * Only a resumed transfer (offset > 0) hashes while it receives: it must show that the
 * kept bytes are the sender's. A fresh one takes FILE_END's SHA-256 ({@link receiveStream}),
 * unless `verifyAfterWrite` reads the file back.
 */
export async function receiveFileResumable(
  channel: Channel,
  partialPath: string,
  size: number,
  offset: number,
  options: ResumableOptions = {},
): Promise<FileDigest> {
  const disk = diskErrors(partialPath);
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
    // Only a file longer than the offset is cut: truncating a file (even to its own
    // length) makes ext4 write all of it out when it is closed (auto_da_alloc), a
    // stall of a third of a second per GiB at the end of a big transfer.
    if (opened.size > offset) await disk(file.truncate(offset));
    const resume = offset > 0 ? await hashPrefix(file, offset, partialPath) : undefined;
    await disk(file.seek(offset, Deno.SeekMode.Start));
    const sink = { write: (bytes: Uint8Array) => disk(file.write(bytes)) };
    try {
      const digest = await receiveStream(channel, sink, size, options.onProgress, resume);
      if (options.verifyAfterWrite) await verifyWritten(file, partialPath, digest);
      return digest;
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

/**
 * VERIFY_AFTER_WRITE: read `file` back from its start through the file system and
 * check that it holds exactly `digest`'s size and SHA-256. Throws TransferError (with
 * "SHA-256 mismatch", which empties a partial file) when it does not.
 */
async function verifyWritten(file: Deno.FsFile, name: string, digest: FileDigest): Promise<void> {
  const read = await (async () => {
    await file.seek(0, Deno.SeekMode.Start);
    return await readSha256(file);
  })().catch((error) => {
    throw new TransferError(`cannot read back ${name}: ${(error as Error).message}`, {
      cause: error,
    });
  });
  if (read.size !== digest.size || read.sha256 !== digest.sha256) {
    throw new TransferError(
      `SHA-256 mismatch after writing ${name}: it reads back as ${read.size} bytes with SHA-256 ${read.sha256}, the sender sent ${digest.size} bytes with ${digest.sha256}`,
      {
        hint: "VERIFY_AFTER_WRITE found this disk returning other bytes than were written: " +
          "the file was discarded; check the disk (dmesg, its SMART data) before trying again",
      },
    );
  }
}
