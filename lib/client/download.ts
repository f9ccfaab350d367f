/**
 * A job's results arriving in `CLIENT_DOWNLOAD_DIR/<job_id>/` so that a cut connection,
 * an interrupt or a second `fetch` loses nothing (docs/PROTOCOL.md §5.2, §6.6): the
 * server sends its results in a fixed order, and the client tells it where to start
 * (`dicom_transfer_ack.resume_index` and `resume_offset`).
 *
 * Beside the directory (never inside it: a result may have any safe name) live two
 * files of ours:
 * - `.recon-<job_id>.journal`: JSON lines. A header with the announced count and total
 *   size, then one line per result once it is verified and in place (index, name,
 *   size, SHA-256), in the server's order, and a `partial` line naming the result that
 *   is growing in the part file.
 * - `.recon-<job_id>.part`: the result being received, holding only verified bytes
 *   (lib/wire/file_receive.ts receiveFileResumable), moved into place when whole.
 *
 * A new process checks every recorded result again (present, same size and SHA-256);
 * the first that is not counts as missing, and so does everything after it. A result
 * that arrives again for a name that exists is accepted when the file there is
 * identical, and refused (never overwritten) when it differs.
 *
 * @module
 */
import { createHash } from "node:crypto";
import * as path from "node:path";
import type { Channel } from "../wire/channel.ts";
import { errorMessage, ReconError, TransferError } from "../errors.ts";
import { resolveInside, resultPathProblem } from "../wire/file_names.ts";
import { partialLength, receiveFileResumable } from "../wire/file_receive.ts";

/** A downloaded (and verified) result. */
export interface DownloadedFile {
  name: string;
  path: string;
  size: number;
  sha256: string;
}

/** What `dicom_transfer_start` announced. */
export interface Announcement {
  count: number;
  totalSize: number;
}

/** Where the next session starts: results held, and verified bytes of the next one. */
export interface ResumePoint {
  index: number;
  offset: number;
}

interface JournalHeader {
  job_id: string;
  count: number;
  total_size: number;
}

interface PartialNote {
  index: number;
  name: string;
}

/** The journal of `jobId`'s download in `downloadDir`. */
export function journalPath(downloadDir: string, jobId: string): string {
  return path.join(downloadDir, `.recon-${jobId}.journal`);
}

/** The part file of `jobId`'s download in `downloadDir`. */
export function partPath(downloadDir: string, jobId: string): string {
  return path.join(downloadDir, `.recon-${jobId}.part`);
}

/** SHA-256 (hex) of the regular file at `file`, or undefined when there is none. */
export async function fileSha256(file: string): Promise<string | undefined> {
  let handle: Deno.FsFile;
  try {
    if (!(await Deno.lstat(file)).isFile) return undefined;
    handle = await Deno.open(file, { read: true });
  } catch {
    return undefined;
  }
  try {
    const hash = createHash("sha256");
    const buffer = new Uint8Array(1024 * 1024);
    while (true) {
      const n = await handle.read(buffer);
      if (n === null) break;
      hash.update(buffer.subarray(0, n));
    }
    return hash.digest("hex");
  } finally {
    handle.close();
  }
}

/** Our own disk's failures as transfer errors (exit code 4) that name the path. */
function disk<T>(what: string, operation: Promise<T>): Promise<T> {
  return operation.catch((error) => {
    throw error instanceof ReconError
      ? error
      : new TransferError(`cannot ${what}: ${errorMessage(error)}`, { cause: error });
  });
}

/** One job's results: what is verified, what is partly here, where the rest goes. */
export class ResultDownload {
  readonly jobId: string;
  readonly downloadDir: string;
  readonly resultDir: string;
  readonly announced: Announcement;
  readonly #journal: string;
  readonly #part: string;
  readonly #files: DownloadedFile[] = [];
  readonly #names = new Set<string>();
  #partial?: PartialNote;
  /** The journal on disk is missing or differs from what was taken over: write it afresh. */
  #stale = false;

  private constructor(downloadDir: string, jobId: string, announced: Announcement) {
    this.jobId = jobId;
    this.downloadDir = downloadDir;
    this.resultDir = path.join(downloadDir, jobId);
    this.announced = announced;
    this.#journal = journalPath(downloadDir, jobId);
    this.#part = partPath(downloadDir, jobId);
  }

  /**
   * Open the download of `jobId`'s results into `downloadDir/<jobId>/`, taking over what
   * an earlier session or process verified there. Only reads: {@link prepare} creates
   * the directory and the journal once the results are accepted.
   */
  static async open(
    downloadDir: string,
    jobId: string,
    announced: Announcement,
  ): Promise<ResultDownload> {
    const download = new ResultDownload(downloadDir, jobId, announced);
    await download.#load();
    return download;
  }

  /**
   * Create the result directory (a link in its place is refused). The journal is
   * written with the first result that arrives.
   */
  async prepare(): Promise<void> {
    await this.#prepareDir();
  }

  /** The verified results, in the server's order. */
  get files(): readonly DownloadedFile[] {
    return this.#files;
  }

  /** Bytes of the verified results. */
  get verifiedBytes(): number {
    return this.#files.reduce((sum, file) => sum + file.size, 0);
  }

  /** True once every announced result is verified. */
  get complete(): boolean {
    return this.#files.length === this.announced.count;
  }

  /** True when a result of this name is verified already. */
  has(name: string): boolean {
    return this.#names.has(name);
  }

  /** The name of the result growing in the part file, with its index. */
  get partial(): PartialNote | undefined {
    return this.#partial;
  }

  /** Where the server should start: results held, and verified bytes of the next. */
  async resumePoint(): Promise<ResumePoint> {
    const index = this.#files.length;
    const offset = this.#partial?.index === index ? await partialLength(this.#part) : 0;
    return { index, offset };
  }

  /**
   * Receive the result the server announced with `result_file` (the caller checked its
   * name, size and offset against the announcement) and put it in place. Its SHA-256 is
   * the server's FILE_END (lib/wire/transfer.ts); with `verifyAfterWrite` the file is
   * read back and checked against it first.
   */
  async receive(
    channel: Channel,
    result: { name: string; size: number; offset: number },
    onProgress?: (bytes: number) => void,
    verifyAfterWrite = false,
  ): Promise<DownloadedFile> {
    const index = this.#files.length;
    if (this.#partial?.index !== index || this.#partial.name !== result.name) {
      this.#partial = { index, name: result.name };
      if (!this.#stale) await this.#append({ partial: index, name: result.name });
    }
    if (this.#stale) {
      await this.#rewrite();
      this.#stale = false;
    }
    const digest = await receiveFileResumable(
      channel,
      this.#part,
      result.size,
      result.offset,
      { onProgress, verifyAfterWrite },
    );
    const target = resolveInside(this.resultDir, result.name);
    await this.#place(target, digest.sha256);
    const file: DownloadedFile = { name: result.name, path: target, ...digest };
    this.#files.push(file);
    this.#names.add(result.name);
    this.#partial = undefined;
    await this.#append({ index, name: file.name, size: file.size, sha256: file.sha256 });
    return file;
  }

  async #prepareDir(): Promise<void> {
    await disk(
      `create ${this.downloadDir}`,
      Deno.mkdir(this.downloadDir, { recursive: true }),
    );
    try {
      await Deno.mkdir(this.resultDir);
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) {
        throw new TransferError(`cannot create ${this.resultDir}: ${errorMessage(error)}`, {
          cause: error,
        });
      }
      const info = await disk(`use ${this.resultDir}`, Deno.lstat(this.resultDir));
      if (!info.isDirectory) {
        throw new TransferError(`${this.resultDir} exists and is not a directory`, {
          hint: "move it away, or fetch into another --download-dir",
        });
      }
    }
  }

  /** Take over an earlier journal: every recorded result still here and intact. */
  async #load(): Promise<void> {
    const { lines, clean } = await this.#readJournal();
    const header = lines.shift() as Partial<JournalHeader> | undefined;
    const sameJob = header?.job_id === this.jobId && header.count === this.announced.count &&
      header.total_size === this.announced.totalSize;
    let intact = sameJob && clean;
    if (sameJob) {
      for (const line of lines) {
        if (typeof line.partial === "number" && typeof line.name === "string") {
          this.#partial = { index: line.partial, name: line.name };
          continue;
        }
        if (!(await this.#takeOver(line))) {
          intact = false;
          break;
        }
      }
      if (this.#partial && this.#partial.index !== this.#files.length) this.#partial = undefined;
    }
    this.#stale = !intact;
  }

  /** Record line `line` as verified if its file is here, whole and unchanged. */
  async #takeOver(line: Record<string, unknown>): Promise<boolean> {
    const { index, name, size, sha256 } = line;
    if (
      index !== this.#files.length || typeof name !== "string" ||
      resultPathProblem(name) !== undefined || this.#names.has(name) ||
      typeof size !== "number" || typeof sha256 !== "string" ||
      this.#files.length >= this.announced.count
    ) {
      return false;
    }
    const target = resolveInside(this.resultDir, name);
    const info = await Deno.lstat(target).catch(() => undefined);
    if (!info?.isFile || info.size !== size || (await fileSha256(target)) !== sha256) {
      return false;
    }
    this.#files.push({ name, path: target, size, sha256 });
    this.#names.add(name);
    return true;
  }

  /** The journal's lines up to the first that does not parse; `clean` when that is all. */
  async #readJournal(): Promise<{ lines: Record<string, unknown>[]; clean: boolean }> {
    let text: string;
    try {
      const info = await Deno.lstat(this.#journal);
      if (!info.isFile) {
        throw new TransferError(`${this.#journal} is not a regular file`, {
          hint: "remove it; it is recon-client's record of a download",
        });
      }
      text = await Deno.readTextFile(this.#journal);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return { lines: [], clean: false };
      if (error instanceof ReconError) throw error;
      throw new TransferError(`cannot read ${this.#journal}: ${errorMessage(error)}`, {
        cause: error,
      });
    }
    const lines: Record<string, unknown>[] = [];
    const texts = text.split("\n");
    // A last line without its newline was cut short when the process stopped.
    const whole = texts.pop() === "";
    for (const line of texts) {
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        return { lines, clean: false };
      }
      if (value === null || typeof value !== "object" || Array.isArray(value)) {
        return { lines, clean: false };
      }
      lines.push(value as Record<string, unknown>);
    }
    return { lines, clean: whole };
  }

  /** Write the journal afresh: the header, the verified results, the partial note. */
  async #rewrite(): Promise<void> {
    const header: JournalHeader = {
      job_id: this.jobId,
      count: this.announced.count,
      total_size: this.announced.totalSize,
    };
    const lines: unknown[] = [
      header,
      ...this.#files.map((file, index) => ({
        index,
        name: file.name,
        size: file.size,
        sha256: file.sha256,
      })),
    ];
    if (this.#partial) lines.push({ partial: this.#partial.index, name: this.#partial.name });
    const temp = `${this.#journal}.${crypto.randomUUID().slice(0, 8)}.tmp`;
    await disk(
      `write ${this.#journal}`,
      Deno.writeTextFile(temp, lines.map((line) => `${JSON.stringify(line)}\n`).join(""), {
        createNew: true,
        mode: 0o600,
      }),
    );
    await disk(`write ${this.#journal}`, Deno.rename(temp, this.#journal));
  }

  async #append(line: Record<string, unknown>): Promise<void> {
    await disk(
      `write ${this.#journal}`,
      Deno.writeTextFile(this.#journal, `${JSON.stringify(line)}\n`, { append: true }),
    );
  }

  /**
   * Move the whole part file to `target`, never over an existing file: link() fails
   * when the target exists. An identical file there is as good as ours.
   */
  async #place(target: string, sha256: string): Promise<void> {
    await disk(
      `create ${path.dirname(target)}`,
      Deno.mkdir(path.dirname(target), { recursive: true }),
    );
    try {
      await Deno.link(this.#part, target);
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) {
        throw new TransferError(`cannot write ${target}: ${errorMessage(error)}`, {
          cause: error,
        });
      }
      if ((await fileSha256(target)) !== sha256) {
        throw new TransferError(
          `${target} already exists and differs from the server's result; not overwriting it`,
          { hint: "move it away and fetch again, or fetch into another --download-dir" },
        );
      }
    }
    await disk(`remove ${this.#part}`, Deno.remove(this.#part));
  }
}
