/**
 * Finding a job's result files (docs/PROTOCOL.md §6.5): every regular file under the
 * job's output directory, relative paths kept; symlinks and anything else that is not
 * a regular file are skipped (and reported), so a script cannot make the server send
 * a file from outside its output directory. Legacy scripts that write into
 * RECON_DICOM_DIR itself have their new files moved into the job's output directory.
 *
 * @module
 */
import * as path from "node:path";
import { resultPathProblem } from "../wire/file_names.ts";

/** A result file on the server. */
export interface ResultFile {
  /** Relative path with `/` separators: what the client is told. */
  name: string;
  /** Absolute path on the server. */
  path: string;
  size: number;
}

/** Result files and what was skipped. */
export interface ResultScan {
  files: ResultFile[];
  skipped: string[];
}

/** Walk `outputDir` (no symlinks followed). Files come sorted by name. */
export async function collectResults(outputDir: string): Promise<ResultScan> {
  const files: ResultFile[] = [];
  const skipped: string[] = [];
  async function walk(dir: string, prefix: string, depth: number): Promise<void> {
    for await (const entry of Deno.readDir(dir)) {
      const relative = prefix ? `${prefix}/${entry.name}` : entry.name;
      const full = path.join(dir, entry.name);
      if (entry.isSymlink) {
        skipped.push(`${relative} (symbolic link)`);
      } else if (entry.isDirectory) {
        if (depth >= 15) skipped.push(`${relative} (too deep)`);
        else await walk(full, relative, depth + 1);
      } else if (entry.isFile) {
        // A name the client would refuse would make it refuse every result: skip it here.
        const problem = resultPathProblem(relative);
        if (problem) {
          skipped.push(`${JSON.stringify(relative)} (${problem})`);
          continue;
        }
        const info = await Deno.lstat(full);
        files.push({ name: relative, path: full, size: info.size });
      } else {
        skipped.push(`${relative} (not a regular file)`);
      }
    }
  }
  await walk(outputDir, "", 0);
  files.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  return { files, skipped };
}

/** Names of the entries in `dir` now (for the legacy RECON_DICOM_DIR convention). */
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
 * Move regular files that appeared in `dicomDir` since `before` into `outputDir`
 * (legacy scripts; only safe with MAX_CONCURRENT_JOBS = 1). Returns their names.
 */
export async function adoptLegacyResults(
  dicomDir: string,
  before: Set<string>,
  outputDir: string,
): Promise<string[]> {
  const adopted: string[] = [];
  const outputName = path.basename(outputDir);
  for await (const entry of Deno.readDir(dicomDir)) {
    if (before.has(entry.name) || entry.name === outputName || !entry.isFile) continue;
    if (/^job_.*_output$/.test(entry.name)) continue;
    await Deno.rename(path.join(dicomDir, entry.name), path.join(outputDir, entry.name));
    adopted.push(entry.name);
  }
  return adopted;
}
