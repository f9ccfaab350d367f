/**
 * The watch mode's view of the filesystem: list the watched directory, stat a
 * file, check it can be opened, hash it. Kept behind one interface so the daemon's
 * tests can make one file unreadable even when they run as root.
 *
 * @module
 */
import { createHash } from "node:crypto";
import type { FileStat } from "./scanner.ts";

/** Where the watch mode's messages go (a logtape Logger fits). */
export interface WatchLog {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

/** What a stat found. */
export type StatResult =
  | { kind: "file"; stat: FileStat }
  | { kind: "gone" }
  | { kind: "other" }
  | { kind: "error"; message: string };

/** Filesystem access used by the daemon. */
export interface FileProbe {
  /** Names of the entries directly in `dir` that may be files (regular or symlinks). */
  list(dir: string): Promise<string[]>;
  stat(file: string): Promise<StatResult>;
  /** Throws when the file cannot be opened for reading. */
  checkReadable(file: string): Promise<void>;
  /** Hex SHA-256 of the file; stops early (throwing) when `signal` is aborted. */
  sha256(file: string, signal?: AbortSignal): Promise<string>;
}

/** Chunk read while hashing. */
const HASH_CHUNK = 1024 * 1024;

/** Why an fs operation failed, in a few words. */
export function describeFsError(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file or directory";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  return error instanceof Error ? error.message : String(error);
}

/** The real filesystem. */
export const denoProbe: FileProbe = {
  async list(dir) {
    const names: string[] = [];
    for await (const entry of Deno.readDir(dir)) {
      if (entry.isFile || entry.isSymlink) names.push(entry.name);
    }
    return names;
  },
  async stat(file) {
    try {
      const info = await Deno.stat(file);
      if (!info.isFile) return { kind: "other" };
      return {
        kind: "file",
        stat: { size: info.size, mtimeMs: info.mtime?.getTime() ?? 0, ino: info.ino ?? null },
      };
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return { kind: "gone" };
      return { kind: "error", message: describeFsError(error) };
    }
  },
  async checkReadable(file) {
    (await Deno.open(file, { read: true })).close();
  },
  async sha256(file, signal) {
    const hash = createHash("sha256");
    using handle = await Deno.open(file, { read: true });
    const buffer = new Uint8Array(HASH_CHUNK);
    while (true) {
      signal?.throwIfAborted();
      const read = await handle.read(buffer);
      if (read === null) break;
      hash.update(buffer.subarray(0, read));
    }
    return hash.digest("hex");
  },
};
