/**
 * Which local files a submission sends (README "Submitting jobs"): `--files`
 * (or `--files -` for paths on stdin), `--directory` with a glob `--pattern`, or
 * CLIENT_DEFAULT_PFILE_PATH. Every file is checked before anything is sent.
 *
 * @module
 */
import * as path from "node:path";
// @ts-types="npm:@types/picomatch@4.0.3"
import picomatch from "picomatch";
import { errorMessage, UsageError } from "../errors.ts";
import { checkJobFileNames } from "../wire/file_names.ts";
import { MAX_FILES_PER_JOB } from "../wire/protocol.ts";

/** A file to send. */
export interface LocalFile {
  path: string;
  name: string;
  size: number;
}

/**
 * Why a file operation failed, in words for the person who named the path. Deno's own
 * text for a path its sandbox withholds tells the user to rerun deno with --allow-all,
 * which they cannot do through bin/recon-client.
 */
export function fileErrorReason(error: unknown): string {
  if (error instanceof Deno.errors.NotFound) return "no such file or directory";
  if (error instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (error instanceof Deno.errors.NotADirectory) return "part of the path is not a directory";
  if (error instanceof Deno.errors.NotCapable) return OFF_LIMITS;
  return errorMessage(error);
}

/**
 * Deno asks for --allow-all before it touches /dev, /proc or /sys (device files and
 * kernel settings), and recon-client runs with narrower permissions on purpose.
 */
export const OFF_LIMITS = "recon-client may not use paths under /dev, /proc or /sys";

/** Stat each path: it must be a readable regular file with a safe, unique base name. */
export async function describeFiles(paths: readonly string[]): Promise<LocalFile[]> {
  if (paths.length === 0) throw new UsageError("no input files given");
  if (paths.length > MAX_FILES_PER_JOB) {
    throw new UsageError(
      `${paths.length} input files; one job takes at most ${MAX_FILES_PER_JOB}`,
      { hint: "split them into several jobs" },
    );
  }
  const files: LocalFile[] = [];
  for (const given of paths) {
    const absolute = path.resolve(given);
    let info: Deno.FileInfo;
    try {
      info = await Deno.stat(absolute);
    } catch (error) {
      throw new UsageError(`cannot use input file ${given}: ${fileErrorReason(error)}`, {
        hint: error instanceof Deno.errors.NotCapable
          ? "copy it to a directory outside /dev, /proc and /sys"
          : undefined,
        cause: error,
      });
    }
    if (!info.isFile) throw new UsageError(`cannot use input file ${given}: not a regular file`);
    try {
      (await Deno.open(absolute, { read: true })).close();
    } catch (error) {
      throw new UsageError(`cannot read input file ${given}: ${fileErrorReason(error)}`, {
        cause: error,
      });
    }
    files.push({ path: absolute, name: path.basename(absolute), size: info.size });
  }
  try {
    checkJobFileNames(files.map((file) => file.name));
  } catch (error) {
    throw new UsageError((error as Error).message, {
      hint: "each job's files need distinct plain names; rename or send them as separate jobs",
    });
  }
  return files;
}

/** Regular files directly in `directory` whose names match `pattern`, sorted. */
export async function filesMatching(directory: string, pattern: string): Promise<string[]> {
  const isMatch = picomatch(pattern, { dot: false });
  const matches: string[] = [];
  try {
    for await (const entry of Deno.readDir(directory)) {
      if (entry.isFile && isMatch(entry.name)) matches.push(path.join(directory, entry.name));
    }
  } catch (error) {
    throw new UsageError(`cannot list --directory ${directory}: ${fileErrorReason(error)}`, {
      cause: error,
    });
  }
  if (matches.length === 0) {
    throw new UsageError(`no files in ${directory} match the pattern "${pattern}"`);
  }
  return matches.sort();
}

/** Paths from text, one per line (for `--files -`); blank lines ignored. */
export function pathsFromLines(text: string): string[] {
  return text.split(/\r?\n/).map((line) => line.trim()).filter((line) => line.length > 0);
}
