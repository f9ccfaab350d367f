/**
 * Files ↔ the channel (docs/PROTOCOL.md §5): stream bytes as DATA records with a
 * bounded window of records in flight (so reading, encrypting and writing overlap and
 * memory stays at about cryptoDepth × chunkSize), end each file with its size and
 * SHA-256; send a regular file from disk; receive into a temporary file created exclusively inside the target
 * directory, and move it into place only when FILE_END checked out. A failed
 * receive leaves nothing behind.
 *
 * One SHA-256 per file (docs/PROTOCOL.md §5): the sender hashes what it reads (or, for a
 * file whose hash it recorded and that has not changed since, sends that hash). A
 * receiver of a fresh transfer does not hash: every byte came from an authenticated
 * record in sequence, so it checks the sizes and takes FILE_END's SHA-256 as the
 * file's. A resumed transfer hashes (its kept prefix must be the sender's), and
 * `verifyAfterWrite` reads the written file back and compares.
 *
 * @module
 */
import { createHash, type Hash } from "node:crypto";
import * as path from "node:path";
import type { Channel, FileDigest, ProgressCallback } from "./channel.ts";
import { errorMessage, ReconError, TransferError } from "../errors.ts";
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
async function hashPrefix(file: Deno.FsFile, length: number, name: string): Promise<ResumePoint> {
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
