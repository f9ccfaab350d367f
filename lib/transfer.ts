/**
 * Files on disk ↔ the channel (docs/PROTOCOL.md §5): send a regular file in bounded
 * chunks; receive into a temporary file created exclusively inside the target
 * directory, and move it into place only when size and SHA-256 match. A failed
 * receive leaves nothing behind.
 *
 * @module
 */
import * as path from "node:path";
import type { Channel, FileDigest, ProgressCallback } from "./channel.ts";
import { TransferError } from "./errors.ts";

/** Options for {@link receiveFileTo}. */
export interface ReceiveOptions {
  /** Refuse to replace an existing file (client downloads). Default true. */
  noOverwrite?: boolean;
  onProgress?: ProgressCallback;
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
    `.${path.basename(target).slice(0, 200)}.${crypto.randomUUID().slice(0, 8)}.part`,
  );
  let file: Deno.FsFile | undefined;
  try {
    file = await Deno.open(temp, { createNew: true, write: true, mode: 0o600 });
    const digest = await channel.receiveFile(file, size, options.onProgress);
    file.close();
    file = undefined;
    if (options.noOverwrite ?? true) {
      // link() fails when the target exists, so nothing is ever overwritten.
      try {
        await Deno.link(temp, target);
      } catch (error) {
        if (error instanceof Deno.errors.AlreadyExists) {
          throw new TransferError(`${target} already exists; not overwriting it`);
        }
        throw error;
      }
      await Deno.remove(temp);
    } else {
      await Deno.rename(temp, target);
    }
    return digest;
  } catch (error) {
    try {
      file?.close();
    } catch { /* closed */ }
    await Deno.remove(temp).catch(() => {});
    if (error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotFound) {
      throw new TransferError(`cannot write ${target}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    throw error;
  }
}

/** Options for {@link openForSending} and {@link sendFileFrom}. */
export interface SendOptions {
  /**
   * Refuse a path that is (or becomes, between the check and the open) a symbolic
   * link: the server's results must be the files the script wrote, nothing else.
   */
  noFollow?: boolean;
  onProgress?: ProgressCallback;
}

/** Open a regular file for sending; returns it with its size. Throws TransferError. */
export async function openForSending(
  filePath: string,
  options: SendOptions = {},
): Promise<{ file: Deno.FsFile; size: number }> {
  let file: Deno.FsFile;
  let before: Deno.FileInfo | undefined;
  try {
    if (options.noFollow) before = await Deno.lstat(filePath);
    file = await Deno.open(filePath, { read: true });
  } catch (error) {
    throw new TransferError(`cannot read ${filePath}: ${(error as Error).message}`, {
      cause: error,
    });
  }
  const info = await file.stat();
  const swapped = before !== undefined &&
    (!before.isFile || before.ino !== info.ino || before.dev !== info.dev);
  if (!info.isFile || swapped) {
    file.close();
    throw new TransferError(
      `${filePath} is not a regular file${swapped ? " (it is or became a symbolic link)" : ""}`,
    );
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
    return await channel.sendFile(file, size, options.onProgress);
  } finally {
    file.close();
  }
}
