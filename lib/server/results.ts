/**
 * Finding a job's result files (docs/PROTOCOL.md §6.5): every regular file under the
 * job's output directory, relative paths kept; symlinks and anything else that is not
 * a regular file are skipped (and reported), so a script cannot make the server send
 * a file from outside its output directory.
 *
 * The output directory itself must still be the directory the server created for the
 * job (same device and inode, not a symbolic link): a script that replaces it with a
 * link (`rmdir "$RECON_OUTPUT_DIR"; ln -s /etc "$RECON_OUTPUT_DIR"`) fails its job
 * and nothing is collected. Each directory below it is checked the same way before
 * and after it is read.
 *
 * Legacy scripts that write into RECON_DICOM_DIR itself have their files adopted only
 * in the explicit LEGACY_SHARED_OUTPUT mode (one job at a time; see
 * {@link adoptLegacyResults}).
 *
 * @module
 */
import { type FileIdentity, fileTimes, openForSending } from "../wire/file_send.ts";
import { readSha256 } from "../wire/file_hash.ts";
import * as path from "node:path";
import { JobError } from "../errors.ts";
import { resultPathProblem } from "../wire/file_names.ts";

export { readSha256 } from "../wire/file_hash.ts";

/** A result file on the server. */
export interface ResultFile {
  /** Relative path with `/` separators: what the client is told. */
  name: string;
  /** Absolute path on the server. */
  path: string;
  size: number;
  /**
   * The file found when the results were collected: what is sent must be this very
   * file, even if a directory on its path was swapped since (lib/wire/file_send.ts).
   */
  identity?: FileIdentity;
}

/** Result files and what was skipped. */
export interface ResultScan {
  files: ResultFile[];
  skipped: string[];
}

/** Which directory a path named when the server looked: device and inode. */
export interface DirectoryIdentity {
  dev: number;
  ino: number;
}

/** Directories below the output directory deeper than this are skipped. */
export const MAX_RESULT_DEPTH = 15;

/**
 * The identity of the directory at `dir` (not following a link). Throws TypeError
 * when `dir` is not a directory.
 */
export async function directoryIdentity(dir: string): Promise<DirectoryIdentity> {
  const info = await Deno.lstat(dir);
  if (!info.isDirectory || info.dev === null || info.ino === null) {
    throw new TypeError(`${dir} is not a directory`);
  }
  return { dev: info.dev, ino: info.ino };
}

/**
 * What is at `dir` now when it is not the directory `identity` names (for the job's
 * reason and the log), or undefined when it still is.
 */
export async function replacedDirectory(
  dir: string,
  identity: DirectoryIdentity,
): Promise<string | undefined> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(dir);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return "it no longer exists";
    throw error;
  }
  if (info.isSymlink) {
    const target = await Deno.readLink(dir).catch(() => "?");
    return `it is now a symbolic link to ${JSON.stringify(target)}`;
  }
  if (!info.isDirectory) return "it is now something other than a directory";
  if (info.dev !== identity.dev || info.ino !== identity.ino) {
    return "it is now another directory";
  }
  return undefined;
}

/**
 * Fail with JobError unless `outputDir` is still the directory `identity` names: the
 * job's reason says what was found instead.
 */
export async function checkOutputDirectory(
  outputDir: string,
  identity: DirectoryIdentity,
): Promise<void> {
  const problem = await replacedDirectory(outputDir, identity);
  if (problem) {
    throw new JobError(
      `RECON_OUTPUT_DIR is not the directory the server created (${problem}); no results are sent`,
    );
  }
}

/**
 * Walk `outputDir`, which must still be the directory `identity` names, without
 * following symbolic links. Files come sorted by name. Throws JobError when the
 * output directory, or a directory below it, is replaced before or while it is read.
 *
 * A directory swapped and swapped back between two checks would go unnoticed; only a
 * process of the job could do that, and every one carrying its RECON_JOB_ID has been
 * stopped before results are collected (lib/server/runner.ts).
 */
export async function collectResults(
  outputDir: string,
  identity: DirectoryIdentity,
): Promise<ResultScan> {
  const files: ResultFile[] = [];
  const skipped: string[] = [];
  const changed = (prefix: string) =>
    new JobError(
      `${
        prefix ? `the directory ${JSON.stringify(prefix)} in ` : ""
      }RECON_OUTPUT_DIR changed while results were collected; no results are sent`,
    );
  async function walk(
    dir: string,
    prefix: string,
    depth: number,
    expected: DirectoryIdentity,
  ): Promise<void> {
    const entries = await Array.fromAsync(Deno.readDir(dir));
    // Read from the directory we meant, not from wherever a link swapped in leads.
    if (await replacedDirectory(dir, expected)) throw changed(prefix);
    for (const entry of entries) {
      const relative = prefix ? `${prefix}/${entry.name}` : entry.name;
      const full = path.join(dir, entry.name);
      const info = await Deno.lstat(full).catch((error) => {
        if (error instanceof Deno.errors.NotFound) return undefined;
        throw error;
      });
      if (!info) {
        skipped.push(`${relative} (removed while results were collected)`);
      } else if (info.isSymlink) {
        skipped.push(`${relative} (symbolic link)`);
      } else if (info.isDirectory) {
        if (depth >= MAX_RESULT_DEPTH) skipped.push(`${relative} (too deep)`);
        else await walk(full, relative, depth + 1, { dev: info.dev!, ino: info.ino! });
      } else if (info.isFile) {
        // A name the client would refuse would make it refuse every result: skip it here.
        const problem = resultPathProblem(relative);
        if (problem) {
          skipped.push(`${JSON.stringify(relative)} (${problem})`);
          continue;
        }
        files.push({
          name: relative,
          path: full,
          size: info.size,
          identity: { dev: info.dev!, ino: info.ino! },
        });
      } else {
        skipped.push(`${relative} (not a regular file)`);
      }
    }
    // And nothing was swapped in while the entries were looked at.
    if (await replacedDirectory(dir, expected)) throw changed(prefix);
  }
  await checkOutputDirectory(outputDir, identity);
  await walk(outputDir, "", 0, identity);
  files.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  return { files, skipped };
}

/** Names of the entries in `dir` now (for the LEGACY_SHARED_OUTPUT mode). */
export async function snapshotDirectory(dir: string): Promise<Set<string>> {
  const names = new Set<string>();
  try {
    for await (const entry of Deno.readDir(dir)) names.add(entry.name);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return names;
}

/**
 * The LEGACY_SHARED_OUTPUT mode: move the regular files that appeared in `dicomDir`
 * since `before` into `outputDir`, which must still be the directory `identity`
 * names. Returns their names. Safe only when one job runs at a time and the job's
 * processes have been stopped before this runs, so that every new file is this job's
 * (a helper that left both its process group and its environment could still write
 * here later: the mode is for legacy scripts that do not leave helpers behind).
 */
export async function adoptLegacyResults(
  dicomDir: string,
  before: Set<string>,
  outputDir: string,
  identity: DirectoryIdentity,
): Promise<string[]> {
  await checkOutputDirectory(outputDir, identity);
  const adopted: string[] = [];
  for await (const entry of Deno.readDir(dicomDir)) {
    if (before.has(entry.name) || !entry.isFile) continue;
    if (/^job_.*_output$/.test(entry.name)) continue;
    // rename() moves a name, never what a link points to: a link swapped in for the
    // file lands in the output directory as a link, and collectResults skips it.
    await Deno.rename(path.join(dicomDir, entry.name), path.join(outputDir, entry.name));
    adopted.push(entry.name);
  }
  return adopted;
}

/** A result's SHA-256 at job end, and its file's times then (lib/wire/file_send.ts). */
export interface HashedResult {
  sha256: string;
  mtimeMs?: number;
  ctimeMs?: number;
}

/**
 * The SHA-256 (hex) of a collected result, read without following links and only if it
 * is still the file collected (device and inode): what the job store records for it,
 * with the file's modification and status-change times, the same before and after the
 * read. A delivery sends that SHA-256 without hashing again while they stay the same
 * (lib/wire/file_send.ts sendFileFrom). Throws JobError when the file is not the one
 * collected, changes while it is read, or cannot be read.
 */
export async function hashResult(result: ResultFile): Promise<HashedResult> {
  let opened: { file: Deno.FsFile; size: number; info: Deno.FileInfo };
  const changed = (what: string, detail: string) =>
    new JobError(
      `result ${
        JSON.stringify(result.name)
      } ${what} while results were collected (${detail}); no results are sent`,
    );
  try {
    opened = await openForSending(result.path, { noFollow: true, expect: result.identity });
  } catch (error) {
    throw changed("changed", (error as Error).message);
  }
  let size: number;
  let sha256: string;
  let after: Deno.FileInfo;
  try {
    ({ size, sha256 } = await readSha256(opened.file));
    after = await opened.file.stat();
  } finally {
    opened.file.close();
  }
  if (size !== result.size) {
    throw changed("changed size", `${result.size} → ${size} bytes`);
  }
  const times = fileTimes(opened.info);
  const timesAfter = fileTimes(after);
  if (
    after.size !== size || times.mtimeMs !== timesAfter.mtimeMs ||
    times.ctimeMs !== timesAfter.ctimeMs
  ) {
    throw changed("changed", "it was written to as it was hashed");
  }
  return { sha256, ...times };
}
