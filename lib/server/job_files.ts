/**
 * A job's files on disk: where a partial input and the "output not final" marker live,
 * how many verified bytes a cut-off upload holds, and removing a job's directories. The job store is told first (the caller commits `inputs_removed` or the new
 * state before calling these), so a removal that fails or is cut short by a crash
 * leaves a directory the store says is gone, which the next start removes
 * (lib/server/recovery.ts), never one the store still counts on.
 *
 * @module
 */
import * as path from "node:path";
import type { Logger } from "../log.ts";
import { errorMessage } from "../errors.ts";
import { partialLength } from "../wire/file_receive.ts";
import type { InputRecord } from "./job_store.ts";

/**
 * Where input `index` of a job is received before its SHA-256 verified, in the job's
 * input directory: no input's name can start with `-` (PROTOCOL.md §6.2).
 */
export function partialPath(inputDir: string, index: number): string {
  return path.join(inputDir, `-partial-${index}`);
}

/** Verified bytes a receiving job holds: its whole files and its partial ones. */
export async function heldBytes(inputDir: string, inputs: InputRecord[]): Promise<number> {
  let held = 0;
  for (const input of inputs) {
    held += input.sha256 !== undefined
      ? input.size
      : Math.min(input.size, await partialLength(partialPath(inputDir, input.index)));
  }
  return held;
}

/**
 * The marker that says job output is not final, next to the job's log
 * (`RECON_FILEPATH/job_<id>.running`); it holds the output directory's path
 * (lib/server/worker.ts writes it, lib/server/recovery.ts reads it).
 */
export function runningMarkerPath(logPath: string): string {
  return logPath.replace(/\.log$/, "") + ".running";
}

/**
 * Remove a directory tree (a symbolic link in its place is removed, never followed).
 * Returns false, with a warning logged, when it could not be removed; "not there" is
 * success.
 */
export async function removeQuietly(target: string, log: Logger): Promise<boolean> {
  try {
    await Deno.remove(target, { recursive: true });
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return true;
    log.warn(`could not remove ${target}: ${errorMessage(error)}`);
    return false;
  }
}
