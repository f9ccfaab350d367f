/**
 * A succeeded job's provenance (issue 14; docs/PROTOCOL.md §6.5): `provenance.json` at
 * the top of the job's output directory, written by the server after the script exited
 * 0 and every process of the job was stopped, and before the results are listed and
 * hashed. So it travels with the images like any result, verified by its SHA-256, and is
 * recorded with the job's outputs in the job store (and the audit log's job_finished):
 * an image can be traced to the raw data it came from. It names the inputs with the
 * SHA-256 their upload verified (from the job store), the options, priority and client,
 * the script's path and SHA-256, the server's version and host, and the times and
 * attempts of the run.
 *
 * The script's SHA-256 is taken just before the script starts ({@link hashScript}): an
 * edit of RECON_SCRIPT while the job runs does not change what its provenance names.
 *
 * The name is the server's. A script that wrote a `provenance.json` of its own keeps it
 * as `provenance.script.json` (`provenance.script.1.json`, … when that is taken too);
 * the worker notes the rename in the job's log.
 *
 * LEGACY_SHARED_OUTPUT: such a job's results are still sent from its own output
 * directory (the files new in RECON_DICOM_DIR are moved into it first,
 * lib/server/results.ts adoptLegacyResults), so provenance.json is written there, after
 * that move: a legacy script's own provenance.json in RECON_DICOM_DIR is moved in and
 * renamed like any other. It is never written into RECON_DICOM_DIR itself: shared by
 * every job, a provenance.json there would describe whichever job ran last, and the next
 * job would count it among the files that were there before it.
 *
 * A failed or cancelled job has none: it is written only once the script exited 0, and
 * when anything after that fails the job, its whole output directory is removed
 * (lib/server/worker.ts).
 *
 * @module
 */
import { createHash } from "node:crypto";
import fs from "node:fs";
import * as path from "node:path";
import { JobError } from "../errors.ts";
import type { Priority, ReconOptions } from "../wire/protocol.ts";
import type { InputRecord, JobRecord } from "./job_store.ts";
import { checkOutputDirectory, type DirectoryIdentity } from "./results.ts";

/** The file's name in the output directory (and so in the client's download directory). */
export const PROVENANCE_FILE = "provenance.json";
/** Where a script's own provenance.json goes (numbered before `.json` when taken). */
export const SCRIPT_PROVENANCE_FILE = "provenance.script.json";
/** The format's version: the `recon_provenance` member. */
export const PROVENANCE_VERSION = 1;
/** Numbered names tried for a script's own provenance.json before the job fails. */
const MAX_RENAME_TRIES = 1000;

/** A file with its size and SHA-256 (hex). */
export interface ProvenanceFile {
  name: string;
  size: number;
  sha256: string;
}

/** The document, members in the order they are written. Times are ISO 8601 UTC. */
export interface Provenance {
  recon_provenance: typeof PROVENANCE_VERSION;
  job_id: string;
  client: string;
  submitted_at: string;
  started_at: string;
  /** When the script's run ended (its processes stopped), just before this was written. */
  finished_at: string;
  attempts: number;
  exit_code: 0;
  priority: Priority;
  options: ReconOptions;
  /** In the order they were announced; the first is the primary file. */
  inputs: ProvenanceFile[];
  script: { path: string; sha256: string };
  server: { version: string; host: string };
  rerun_of?: string;
}

/** What {@link buildProvenance} describes. */
export interface ProvenanceSource {
  /** The running job as the job store recorded it (markRunning). */
  job: JobRecord;
  /** Its inputs, each verified (`store.inputs(id)`). */
  inputs: readonly InputRecord[];
  /** RECON_SCRIPT as run, and its SHA-256 when the run started. */
  script: { path: string; sha256: string };
  server: { version: string; host: string };
  /** ms since the epoch. */
  finishedAt: number;
}

/**
 * The provenance of a succeeded run. Throws TypeError when the job store's record lacks
 * what a provenance must name (an input not verified, a job that never started): the
 * store queues only verified jobs, so this is a bug, and the job fails rather than
 * shipping a provenance that cannot trace its images.
 */
export function buildProvenance(source: ProvenanceSource): Provenance {
  const { job } = source;
  if (job.startedAt === undefined) throw new TypeError(`job ${job.id} has no start time`);
  const inputs = source.inputs.map((input): ProvenanceFile => {
    if (input.sha256 === undefined) {
      throw new TypeError(`input ${JSON.stringify(input.name)} of job ${job.id} is not verified`);
    }
    return { name: input.name, size: input.size, sha256: input.sha256 };
  });
  return {
    recon_provenance: PROVENANCE_VERSION,
    job_id: job.id,
    client: job.client,
    submitted_at: new Date(job.submittedAt).toISOString(),
    started_at: new Date(job.startedAt).toISOString(),
    finished_at: new Date(source.finishedAt).toISOString(),
    attempts: job.attempts,
    exit_code: 0,
    priority: job.priority,
    options: job.options,
    inputs,
    script: { path: source.script.path, sha256: source.script.sha256 },
    server: { version: source.server.version, host: source.server.host },
    ...(job.rerunOf !== undefined ? { rerun_of: job.rerunOf } : {}),
  };
}

/** The file's text: indented JSON and a final newline, for people as much as programs. */
export function provenanceText(provenance: Provenance): string {
  return `${JSON.stringify(provenance, null, 2)}\n`;
}

/** Bytes read at a time when the script is hashed. */
const HASH_CHUNK = 1024 * 1024;

/** The SHA-256 (hex) of the file at `file` (RECON_SCRIPT), read in bounded chunks. */
export async function hashScript(file: string): Promise<string> {
  const hash = createHash("sha256");
  using handle = await Deno.open(file, { read: true });
  const buffer = new Uint8Array(HASH_CHUNK);
  for (let n = await handle.read(buffer); n !== null; n = await handle.read(buffer)) {
    hash.update(buffer.subarray(0, n));
  }
  return hash.digest("hex");
}

/** Whether anything, even a dangling link, has the name `file`. */
async function taken(file: string): Promise<boolean> {
  try {
    await Deno.lstat(file);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/**
 * Write `provenance` as {@link PROVENANCE_FILE} at the top of `outputDir`, which must
 * still be the directory `identity` names (else JobError, nothing written: a link put
 * in its place must not make the server write elsewhere). A `provenance.json` the
 * script left there (file, link or directory; only its name moves) is renamed first;
 * returns the name it got, or undefined when there was none. Mode 0644 less the umask,
 * like the files a script writes.
 *
 * Called only once every process of the job has been stopped, so no one else names
 * entries in `outputDir` meanwhile; the file is still created exclusively, never
 * through whatever is at its name.
 */
export async function writeProvenance(
  outputDir: string,
  identity: DirectoryIdentity,
  provenance: Provenance,
): Promise<string | undefined> {
  await checkOutputDirectory(outputDir, identity);
  const target = path.join(outputDir, PROVENANCE_FILE);
  let moved: string | undefined;
  if (await taken(target)) {
    const stem = SCRIPT_PROVENANCE_FILE.slice(0, -".json".length);
    for (let n = 0; n < MAX_RENAME_TRIES && moved === undefined; n++) {
      const name = n === 0 ? SCRIPT_PROVENANCE_FILE : `${stem}.${n}.json`;
      if (!(await taken(path.join(outputDir, name)))) moved = name;
    }
    if (moved === undefined) {
      throw new JobError(
        `the script wrote ${PROVENANCE_FILE} and ${MAX_RENAME_TRIES} ${stem}.*.json files; ` +
          `the server's ${PROVENANCE_FILE} has no name left, no results are sent`,
      );
    }
    await Deno.rename(target, path.join(outputDir, moved));
  }
  const handle = await fs.promises.open(
    target,
    fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
    0o644,
  );
  try {
    await handle.writeFile(provenanceText(provenance));
  } finally {
    await handle.close();
  }
  return moved;
}
