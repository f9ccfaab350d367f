/**
 * The version 3 requests about jobs that need no following (docs/PROTOCOL.md §6.9):
 * `list_jobs` (a page of the jobs the store holds), a top-level `cancel_job`, and
 * `get_job_log` (a piece of a job's log). A request about a job that cannot be
 * answered throws a {@link Refusal} of the right kind; the session answers it with
 * `error` and stays at top level.
 *
 * @module
 */
import { FINAL_STATES, type JobInfo, type JobState } from "../wire/protocol.ts";
import type { JobRecord } from "./job_store.ts";
import { jobInfo } from "./follow.ts";
import { Refusal } from "./refusal.ts";
import { findJob, type SessionContext } from "./session_context.ts";

/** Most jobs in one `job_list` (and the default). */
export const MAX_LIST_LIMIT = 500;
/** Most bytes of a job's log in one `job_log`. */
export const MAX_LOG_PIECE = 64 * 1024;

/** The cursor of a page: the last job's `seq`, opaque to the client. */
function encodeCursor(seq: number): string {
  return `s${seq}`;
}

function decodeCursor(cursor: string): number {
  const match = /^s(\d{1,15})$/.exec(cursor);
  if (!match) {
    throw new Refusal(`list_jobs: ${JSON.stringify(cursor)} is not a cursor this server gave`);
  }
  return Number(match[1]);
}

/**
 * `list_jobs`: at most `limit` jobs (1–500, default 500) of the session's client (every
 * client's with `all_clients`, admin only) in submission order after `cursor`, in
 * `state` when given; `cursor` in the answer when more follow. Jobs past
 * their retention are settled first (lib/server/sweeper.ts).
 */
export function listJobs(
  request: { state?: JobState; cursor?: string; limit?: number; all_clients?: boolean },
  context: SessionContext,
): { jobs: JobInfo[]; cursor?: string } {
  if (request.all_clients && !context.client.admin) {
    throw new Refusal(
      `listing every client's jobs needs an admin client; ${context.client.name} is not one`,
    );
  }
  const client = request.all_clients ? undefined : context.client.name;
  const limit = Math.min(Math.max(request.limit ?? MAX_LIST_LIMIT, 1), MAX_LIST_LIMIT);
  const afterSeq = request.cursor === undefined ? undefined : decodeCursor(request.cursor);
  const { store, sweeper } = context;
  const page = store.list({ state: request.state, afterSeq, limit: limit + 1, client });
  const more = page.length > limit;
  const records = page.slice(0, limit).map((record) => sweeper.settle(record));
  const positions = new Map(store.queued().map((job, index) => [job.id, index + 1]));
  const jobs = records
    // Settling may have moved a job out of the state asked for.
    .filter((record) => request.state === undefined || record.state === request.state)
    .map((record) => jobInfo(record, context, positions.get(record.id)));
  return more ? { jobs, cursor: encodeCursor(page[limit - 1].seq) } : { jobs };
}

/**
 * A top-level `cancel_job`: resolves with the job once it is final (a running job's
 * processes are all stopped first). Refused for a final job, with when it finished.
 */
export async function cancelJobById(
  id: string,
  reason: string | undefined,
  context: SessionContext,
): Promise<JobRecord> {
  const found = findJob(context, id);
  context.sweeper.settle(found);
  context.log.info(`${context.peer}: job ${id}: cancel asked by ${context.by}`);
  return await context.scheduler.cancel(id, reason ?? "the job was cancelled", context.by);
}

/**
 * `get_job_log`: up to {@link MAX_LOG_PIECE} bytes of job `id`'s log from `offset`,
 * ending at the last line end in the piece when there is one (else at a whole UTF-8
 * character); `final` once the job is final and the piece reaches the end.
 */
export async function readJobLog(
  id: string,
  offset: number,
  context: SessionContext,
): Promise<{ job_id: string; offset: number; next_offset: number; text: string; final?: boolean }> {
  const record = findJob(context, id);
  const final = FINAL_STATES.includes(record.state) || record.state === "expired";
  let file: Deno.FsFile;
  try {
    const info = await Deno.lstat(record.logPath);
    if (!info.isFile) throw new Deno.errors.NotFound();
    file = await Deno.open(record.logPath, { read: true });
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    if (record.startedAt === undefined) {
      // Never started (still queued, or ended before it ran): no log yet, or ever.
      if (offset > 0) throw new Refusal(`job ${id} has no log beyond byte 0`);
      return { job_id: id, offset, next_offset: 0, text: "", ...(final ? { final } : {}) };
    }
    throw new Refusal(
      `the log of job ${id} was removed (LOG_RETENTION) or never written`,
      "expired",
    );
  }
  try {
    const size = (await file.stat()).size;
    if (offset > size) {
      throw new Refusal(`the log of job ${id} has ${size} bytes; there is nothing at ${offset}`);
    }
    const buffer = new Uint8Array(Math.min(MAX_LOG_PIECE, size - offset));
    await file.seek(offset, Deno.SeekMode.Start);
    let filled = 0;
    while (filled < buffer.length) {
      const n = await file.read(buffer.subarray(filled));
      if (n === null) break;
      filled += n;
    }
    const piece = cutPiece(buffer.subarray(0, filled), final && offset + filled >= size);
    const next = offset + piece.length;
    return {
      job_id: id,
      offset,
      next_offset: next,
      text: new TextDecoder().decode(piece),
      ...(final && next >= size ? { final: true } : {}),
    };
  } finally {
    file.close();
  }
}

/**
 * The part of `bytes` to send: up to its last newline when it has one; else all of it
 * when nothing can be added to the log, or up to the last whole UTF-8 character (a
 * script may be in the middle of writing one).
 */
function cutPiece(bytes: Uint8Array, complete: boolean): Uint8Array {
  const newline = bytes.lastIndexOf(0x0a);
  if (newline >= 0) return bytes.subarray(0, newline + 1);
  if (complete) return bytes;
  // A lead byte whose continuation bytes are not all here yet waits for the next piece.
  for (let back = 1; back <= Math.min(3, bytes.length); back++) {
    const byte = bytes[bytes.length - back];
    if ((byte & 0xc0) === 0x80) continue;
    const width = byte >= 0xf0 ? 4 : byte >= 0xe0 ? 3 : byte >= 0xc0 ? 2 : 1;
    return width > back ? bytes.subarray(0, bytes.length - back) : bytes;
  }
  return bytes;
}
