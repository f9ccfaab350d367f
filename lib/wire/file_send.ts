/**
 * Sending a file from disk (docs/PROTOCOL.md §5, §5.2, §9.8): open a regular file,
 * refusing symbolic links and swapped paths where asked, and stream it with
 * lib/wire/transfer.ts, from an offset when resumed. A file whose SHA-256 was recorded
 * (a result at job end) and that is unchanged since is not hashed again: FILE_END
 * carries the recorded SHA-256; one changed since is hashed before any byte goes and
 * refused when it is no longer the recorded file.
 *
 * @module
 */
import type { Channel, FileDigest, ProgressCallback } from "./channel.ts";
import { errorMessage, TransferError } from "../errors.ts";
import { type KnownDigest, sendStream } from "./transfer.ts";
import { hashPrefix, readSha256 } from "./file_hash.ts";

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
  /**
   * The SHA-256 recorded for this file earlier, with the file's times then. When the
   * file (dev and ino as `expect`, size, mtime and ctime) is unchanged when it is
   * opened and again after its last byte was read, FILE_END carries the recorded
   * SHA-256 and nothing is hashed; a change after the open fails the transfer before
   * FILE_END. Otherwise the file is hashed as it is sent, and must match it.
   */
  recorded?: RecordedDigest;
  onProgress?: ProgressCallback;
}

/** A file's SHA-256 as recorded, and what its file looked like then. */
export interface RecordedDigest {
  sha256: string;
  /** Modification and status-change times in ms, as Deno reports them; absent: unknown. */
  mtimeMs?: number;
  ctimeMs?: number;
}

/** The times {@link RecordedDigest} keeps of a file (`undefined` where Deno gives none). */
export function fileTimes(info: Deno.FileInfo): { mtimeMs?: number; ctimeMs?: number } {
  return { mtimeMs: info.mtime?.getTime(), ctimeMs: info.ctime?.getTime() };
}

/** Whether `recorded` says when its file was last written (rows from before schema 4 do not). */
function knowsTimes(recorded: RecordedDigest): boolean {
  return recorded.mtimeMs !== undefined && recorded.ctimeMs !== undefined;
}

/** True when `info` still shows the file `recorded` describes, of `size` bytes. */
function unchanged(info: Deno.FileInfo, size: number, recorded: RecordedDigest): boolean {
  const now = fileTimes(info);
  return knowsTimes(recorded) && info.size === size && now.mtimeMs === recorded.mtimeMs &&
    now.ctimeMs === recorded.ctimeMs;
}

/**
 * Open a regular file for sending; returns it with its size and what fstat() said of
 * it. Throws TransferError.
 */
export async function openForSending(
  filePath: string,
  options: SendOptions = {},
): Promise<{ file: Deno.FsFile; size: number; info: Deno.FileInfo }> {
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
  return { file, size: info.size, info };
}

/** Send the file at `filePath`, which must still have `size` bytes. */
export async function sendFileFrom(
  channel: Channel,
  filePath: string,
  size: number,
  options: SendOptions = {},
): Promise<FileDigest> {
  const { file, size: actual, info } = await openForSending(filePath, options);
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
    let recorded = options.recorded;
    if (recorded && !unchanged(info, size, recorded) && knowsTimes(recorded)) {
      // Its times moved since the SHA-256 was recorded (written to, or only touched):
      // hash it now, before any byte goes, so that a file which is no longer the
      // recorded one is refused whole instead of after all its bytes were sent.
      const now = await readSha256(file).catch((error) => {
        throw new TransferError(`cannot read ${filePath}: ${errorMessage(error)}`, {
          cause: error,
        });
      });
      if (now.size !== size || now.sha256 !== recorded.sha256) {
        throw new TransferError(
          `${filePath} is not the file recorded when its job ended (now ${now.size} bytes, SHA-256 ${now.sha256}; recorded ${size} bytes, ${recorded.sha256}); not sending it`,
        );
      }
      await file.seek(0, Deno.SeekMode.Start);
      recorded = { sha256: recorded.sha256, ...fileTimes(info) };
    }
    if (recorded && unchanged(info, size, recorded)) {
      // Hashed when it was recorded (or just now), and not written since: that SHA-256 is sent.
      const trusted = recorded;
      if (offset > 0) await file.seek(offset, Deno.SeekMode.Start);
      const known: KnownDigest = {
        sha256: trusted.sha256,
        offset,
        check: async () => {
          if (!unchanged(await file.stat(), size, trusted)) {
            throw new TransferError(`${filePath} changed while it was being sent`);
          }
        },
      };
      return await sendStream(channel, file, size, options.onProgress, undefined, { known });
    }
    const resume = offset > 0 ? await hashPrefix(file, offset, filePath) : undefined;
    return await sendStream(channel, file, size, options.onProgress, resume, {
      expectSha256: recorded?.sha256,
    });
  } finally {
    file.close();
  }
}
