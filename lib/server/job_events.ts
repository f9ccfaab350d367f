/**
 * What a session following a job hears about it (docs/PROTOCOL.md §6.1 step 5, §6.7):
 * the job started, a progress line or percentage, and the job's final record. Each
 * following session has its own {@link Subscription}, so several sessions can follow
 * one job and a slow one never holds up another: when a subscription falls
 * {@link MAX_PENDING_EVENTS} behind, its text lines are dropped (a percentage replaces
 * the ones waiting), never `started`, the outcome or the end of following (§6.3).
 *
 * @module
 */
import { AsyncQueue } from "../async_queue.ts";
import type { JobRecord } from "./job_store.ts";

/**
 * An event of one job. `finished` carries the job as the store has it, final;
 * `stopped` says the server stops following it (a shutdown) while it is not final.
 */
export type JobEvent =
  | { kind: "started" }
  | { kind: "progress"; text?: string; percent?: number }
  | { kind: "finished"; record: JobRecord }
  | { kind: "stopped"; reason: string };

/** Most progress events waiting for a slow session before text lines are dropped. */
export const MAX_PENDING_EVENTS = 200;

/** One session's view of one job's events. */
export class Subscription {
  readonly jobId: string;
  readonly events = new AsyncQueue<JobEvent>();
  /** Text lines this session never saw because it read too slowly. */
  droppedLines = 0;
  #onClose: () => void;

  constructor(jobId: string, onClose: () => void) {
    this.jobId = jobId;
    this.#onClose = onClose;
  }

  /** Queue an event; text lines are dropped when this session is far behind. */
  push(event: JobEvent): void {
    if (event.kind === "progress" && this.events.length >= MAX_PENDING_EVENTS) {
      if (event.percent === undefined) {
        this.droppedLines++;
        return;
      }
      this.droppedLines += this.events.dropWhere((e) => e.kind === "progress");
    }
    this.events.push(event);
  }

  /** The next event; `undefined` once the subscription was closed and drained. */
  next(): Promise<JobEvent | undefined> {
    return this.events.next();
  }

  /** Stop hearing about the job (the session left or the server stops). */
  close(): void {
    this.events.close();
    this.#onClose();
  }
}
