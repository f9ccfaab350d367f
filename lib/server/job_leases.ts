/**
 * Which sessions are using a job's files right now, so that nothing removes them under
 * a session's feet: an upload in progress writes a `receiving` job's inputs (a cancel
 * or a resumed upload from a new connection first stops it and waits until it let go),
 * and a delivery reads a job's results (the sweeper leaves them until it ends, however
 * late that is past RESULT_RETENTION). Memory only: a restart ends every session.
 *
 * @module
 */

interface Upload {
  stop: () => void;
  done: Promise<void>;
}

/** Uploads in progress and results being delivered, by job id. */
export class JobLeases {
  #uploads = new Map<string, Upload>();
  #deliveries = new Map<string, number>();
  /** Bytes of each `receiving` job already on disk (verified), for disk admission. */
  readonly heldBytes = new Map<string, number>();
  /**
   * When a cut-off upload's UPLOAD_RESUME_WINDOW ends, counted from its cut-off (the
   * store's `uploadExpiresAt` counts from the submission): whichever is later holds.
   */
  readonly resumeUntil = new Map<string, number>();

  /** Job `id`'s upload was cut off: it may be resumed until `until`. Returns `until`. */
  cutOff(id: string, until: number): number {
    this.resumeUntil.set(id, Math.max(until, this.resumeUntil.get(id) ?? 0));
    return this.resumeUntil.get(id)!;
  }

  /** Forget what is kept about a job that is no longer `receiving`. */
  forgetUpload(id: string): void {
    this.heldBytes.delete(id);
    this.resumeUntil.delete(id);
  }

  /**
   * Record that this session uploads job `id`; `stop` ends its session. Returns the
   * function the session calls once it no longer touches the job's files.
   */
  beginUpload(id: string, stop: () => void): () => void {
    let end!: () => void;
    const done = new Promise<void>((resolve) => (end = resolve));
    const upload = { stop, done };
    this.#uploads.set(id, upload);
    return () => {
      if (this.#uploads.get(id) === upload) this.#uploads.delete(id);
      end();
    };
  }

  /** True while a session uploads job `id`. */
  uploading(id: string): boolean {
    return this.#uploads.has(id);
  }

  /** Stop the session uploading job `id`, if any, and wait until it let go of the files. */
  async stopUpload(id: string): Promise<void> {
    const upload = this.#uploads.get(id);
    if (!upload) return;
    upload.stop();
    await upload.done;
  }

  /** A session starts reading job `id`'s results; call the returned function when done. */
  holdResults(id: string): () => void {
    this.#deliveries.set(id, (this.#deliveries.get(id) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.#deliveries.get(id) ?? 1) - 1;
      if (left > 0) this.#deliveries.set(id, left);
      else this.#deliveries.delete(id);
    };
  }

  /** True while some session delivers job `id`'s results. */
  resultsHeld(id: string): boolean {
    return this.#deliveries.has(id);
  }
}
