/**
 * The audit log (issue 14): append-only JSON Lines, one event a line, keys in a fixed
 * order (`seq`, `time`, `event`, the event's fields, `prev`), where `prev` is the hex
 * SHA-256 of the line before (64 zeros for seq 1), so that changing or removing a line
 * breaks the chain at the next one. The end of the chain (file, seq, hash) goes to the
 * job store after each fsync (lib/server/audit_head.ts): that catches what the chain
 * cannot, a cut or rewritten tail. `recon-server audit --verify` checks both
 * (lib/server/audit_read.ts).
 *
 * Writes are group commits: events recorded while a write is in flight go out together
 * in the next one, with one fdatasync, so a burst costs a few fsyncs, not one per line.
 * Refused connections and failed handshakes are counted, not written one by one: one
 * line per address and reason a minute, so a flood cannot become an fsync storm.
 *
 * Never key material and never file contents: callers pass names, sizes, hashes.
 *
 * @module
 */
import fs from "node:fs";
import * as path from "node:path";
import { errorMessage } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { AuditHead } from "./audit_head.ts";
import {
  concat,
  listAuditFiles,
  MAX_AUDIT_LINE_BYTES,
  parseAuditLine,
  rotatedName,
  sha256Hex,
  ZERO_HASH,
} from "./audit_read.ts";

/** Where the log's head is kept: the job store (JobStore has both methods). */
export interface AuditHeadStore {
  auditHead(): AuditHead | undefined;
  setAuditHead(head: AuditHead): void;
}

/** Inputs of {@link AuditLog.open}. */
export interface AuditLogOptions {
  /** AUDIT_LOG (lib/server/audit_read.ts auditLogPath). */
  path: string;
  /** AUDIT_ROTATE_BYTES: start a new file before this one would pass it; 0 = never. */
  rotateBytes: number;
  head: AuditHeadStore;
  log: Logger;
  /** The clock (ms since the epoch) of `time`, aggregation minutes and rotated names. */
  now?: () => number;
}

/** Distinct address/reason pairs counted a minute before the rest are counted together. */
export const MAX_AGGREGATES = 1000;

const MINUTE_MS = 60_000;
const READ_CHUNK = 64 * 1024;
/** Keys every line has; an event's fields must not use them. */
const RESERVED = ["seq", "time", "event", "prev"];
const EVENT_NAME = /^[a-z][a-z_]*$/;
const { O_RDONLY, O_RDWR, O_CREAT, O_APPEND, O_NOFOLLOW } = fs.constants;
const encoder = new TextEncoder();

interface Pending {
  event: string;
  time: number;
  /** The fields as JSON members without braces, e.g. `"job":"…","client":"mr1"`. */
  members: string;
  resolve: () => void;
  reject: (error: Error) => void;
}

interface Aggregate {
  event: "connection_refused" | "handshake_failed";
  address: string;
  reason: string;
  keyId?: string;
  client?: string;
  count: number;
  first: number;
  last: number;
}

type Handle = fs.promises.FileHandle;

/** The audit log of a running server. */
export class AuditLog {
  readonly path: string;
  #name: string;
  #rotateBytes: number;
  #head: AuditHeadStore;
  #log: Logger;
  #now: () => number;
  #file: Handle;
  /** Bytes in the current file. */
  #size: number;
  /** seq and SHA-256 of the last line written (0 and zeros before the first). */
  #seq = 0;
  #hash = ZERO_HASH;
  #queue: Pending[] = [];
  #writing?: Promise<void>;
  #failed?: Error;
  #closing?: Promise<void>;
  #aggregates = new Map<string, Aggregate>();
  #aggregateMinute = 0;
  #timer?: ReturnType<typeof setTimeout>;
  #syncs = 0;

  private constructor(options: AuditLogOptions, file: Handle, size: number) {
    this.path = options.path;
    this.#name = path.basename(options.path);
    this.#rotateBytes = options.rotateBytes;
    this.#head = options.head;
    this.#log = options.log;
    this.#now = options.now ?? Date.now;
    this.#file = file;
    this.#size = size;
  }

  /** fdatasyncs so far (each one a batch of lines). */
  get syncs(): number {
    return this.#syncs;
  }

  /**
   * Open (creating the directory 0700 and the file 0600 when missing) and check the log
   * against the job store's head. A log that goes on past the head with an intact chain
   * (the server stopped between an fsync and recording the head) is adopted. A log that
   * is shorter, differs, is missing, or has lines the store knows nothing of is logged as
   * an error and recorded as `audit_mismatch {problem}`, chained from the log's actual
   * last line, so that every later `audit --verify` reports it.
   */
  static async open(options: AuditLogOptions): Promise<AuditLog> {
    const logPath = path.resolve(options.path);
    const name = path.basename(logPath);
    await Deno.mkdir(path.dirname(logPath), { recursive: true, mode: 0o700 });
    // O_NOFOLLOW: a symbolic link planted at AUDIT_LOG is refused, never written through.
    const file = await fs.promises.open(
      logPath,
      O_RDWR | O_CREAT | O_APPEND | O_NOFOLLOW,
      0o600,
    );
    let audit: AuditLog;
    try {
      const info = await file.stat();
      if ((info.mode & 0o077) !== 0) {
        options.log.warn(
          `audit log ${logPath} was readable or writable by others (mode ${
            (info.mode & 0o777).toString(8)
          }); made it 0600`,
        );
        await file.chmod(0o600);
      }
      // A write cut off by a crash leaves part of a line that no caller was told was
      // written: drop it, so that the next line starts on a line of its own.
      const end = await completeEnd(file, info.size);
      if (end < info.size) {
        options.log.warn(
          `audit log ${logPath}: removed ${info.size - end} bytes of a line cut off at its end`,
        );
        await file.truncate(end);
      }
      audit = new AuditLog({ ...options, path: logPath }, file, end);
    } catch (error) {
      await file.close();
      throw error;
    }
    try {
      await audit.#resume(name);
    } catch (error) {
      await audit.close();
      throw error;
    }
    return audit;
  }

  /** Take up the chain where the log ends and compare that with the job store's head. */
  async #resume(name: string): Promise<void> {
    const head = this.#head.auditHead();
    const headSeq = head?.seq ?? 0;
    let source = name;
    let lines = linesBackward(this.#file, this.#size);
    let last = (await lines.next()).value;
    let rotatedFrom: string | undefined;
    if (last === undefined) {
      // An empty current file after a rotation that stopped before its first line.
      const previous = await newestRotated(this.path);
      if (previous) {
        const handle = await fs.promises.open(previous.path, O_RDONLY | O_NOFOLLOW);
        try {
          last = (await linesBackward(handle, previous.size).next()).value;
        } finally {
          await handle.close();
        }
        if (last !== undefined) rotatedFrom = source = previous.name;
        lines = linesBackward(this.#file, 0);
      }
    }
    let problem: string | undefined;
    if (last !== undefined) {
      const record = parseAuditLine(last);
      this.#hash = sha256Hex(last);
      this.#seq = typeof record === "string" ? headSeq : record.seq;
      if (typeof record === "string") {
        problem = `the last line of ${source} is not an audit record (${record})`;
      }
    }
    problem ??= await this.#againstHead(head, name, source, last, lines);
    const seq = this.#seq;
    await lines.return(undefined);
    const writes: Promise<void>[] = [];
    if (rotatedFrom !== undefined) {
      writes.push(this.record("audit_rotated", { previous_file: rotatedFrom, previous_seq: seq }));
    }
    if (problem !== undefined) {
      this.#log.error(
        `audit log ${this.path}: ${problem}; recorded as audit_mismatch ('recon-server audit --verify' reports it)`,
      );
      writes.push(this.record("audit_mismatch", { problem }));
    }
    await Promise.all(writes);
  }

  /** What is wrong with the log's end (`last`, in `source`) by the job store's head. */
  async #againstHead(
    head: AuditHead | undefined,
    name: string,
    source: string,
    last: Uint8Array | undefined,
    before: AsyncGenerator<Uint8Array>,
  ): Promise<string | undefined> {
    const seq = this.#seq;
    const at = `the job store's audit head is at seq ${head?.seq}`;
    if (!head || head.seq === 0) {
      return last === undefined ? undefined : `${source} holds lines up to seq ${seq}, but ` +
        `the job store has no audit head (jobs.sqlite new or replaced?)`;
    }
    if (head.file !== name) return `the job store's audit head is for ${head.file}, not ${name}`;
    if (last === undefined) return `${name} is missing or empty, but ${at}`;
    if (seq < head.seq) {
      return `${source} ends at seq ${seq}, but ${at}: lines were cut from its end`;
    }
    if (seq === head.seq) {
      return this.#hash === head.hash
        ? undefined
        : `the last line of ${source} (seq ${seq}) differs from the one written`;
    }
    const broken = await continuesFrom(before, last, head);
    if (broken) return broken;
    this.#log.info(
      `audit log ${this.path}: adopted ${seq - head.seq} line(s) written after the job ` +
        `store last recorded its end`,
    );
    this.#head.setAuditHead({ file: name, seq, hash: this.#hash });
    return undefined;
  }

  /**
   * Append one event: `fields` follow `event` in their own order. Resolves once the line
   * is fsync'd and the head recorded; rejects when the log cannot be written (and stays
   * so: every later call rejects too) or is closed.
   */
  record(event: string, fields: Record<string, unknown> = {}): Promise<void> {
    if (this.#failed) return Promise.reject(this.#failed);
    if (this.#closing) return Promise.reject(new Error(`the audit log ${this.path} is closed`));
    let members: string;
    try {
      members = encodeFields(event, fields);
    } catch (error) {
      return Promise.reject(error);
    }
    return new Promise((resolve, reject) => {
      this.#queue.push({ event, time: this.#now(), members, resolve, reject });
      // From a microtask: the records of this turn of the event loop share the write.
      this.#writing ??= Promise.resolve().then(() => this.#drain());
    });
  }

  /** A connection refused before the handshake (counted; see {@link MAX_AGGREGATES}). */
  refused(address: string, reason: string): void {
    this.#count("connection_refused", address, reason);
  }

  /**
   * A handshake that failed, with the key id the client named if any and the client
   * that key is (or was) known as, e.g. a revoked one (counted likewise).
   */
  handshakeFailed(address: string, reason: string, keyId?: string, client?: string): void {
    this.#count("handshake_failed", address, reason, keyId, client);
  }

  /**
   * Write what was counted so far now, not at the end of the minute (before a last line
   * such as `server_stopped`).
   */
  flushCounts(): void {
    if (this.#closing || this.#failed) return;
    this.#flushAggregates();
  }

  /** Write what was counted, wait for the writes, close the file. Idempotent. */
  close(): Promise<void> {
    if (this.#closing) return this.#closing;
    clearTimeout(this.#timer);
    this.#flushAggregates();
    this.#closing = (async () => {
      while (this.#writing) await this.#writing;
      await this.#file.close();
    })();
    return this.#closing;
  }

  #count(
    event: Aggregate["event"],
    address: string,
    reason: string,
    keyId?: string,
    client?: string,
  ): void {
    if (this.#closing || this.#failed) return;
    const now = this.#now();
    const minute = Math.floor(now / MINUTE_MS);
    if (minute !== this.#aggregateMinute) {
      this.#flushAggregates();
      this.#aggregateMinute = minute;
    }
    let key = JSON.stringify([event, address, reason, keyId ?? null, client ?? null]);
    let entry = this.#aggregates.get(key);
    if (!entry && this.#aggregates.size >= MAX_AGGREGATES) {
      // A flood from many addresses: one line for all the rest of this minute.
      key = JSON.stringify([event]);
      entry = this.#aggregates.get(key);
      if (!entry) {
        entry = { event, address: "*", reason: "other", count: 0, first: now, last: now };
        this.#aggregates.set(key, entry);
      }
    }
    if (!entry) {
      entry = { event, address, reason, keyId, client, count: 0, first: now, last: now };
      this.#aggregates.set(key, entry);
    }
    entry.count++;
    entry.last = now;
    this.#armTimer();
  }

  /**
   * Flush at the end of the counting minute (by the injected clock). Unref'd: it never
   * keeps a process alive; close() clears it and flushes.
   */
  #armTimer(): void {
    if (this.#timer !== undefined) return;
    const delay = (this.#aggregateMinute + 1) * MINUTE_MS - this.#now();
    const timer = setTimeout(() => {
      this.#timer = undefined;
      if (Math.floor(this.#now() / MINUTE_MS) !== this.#aggregateMinute) this.#flushAggregates();
      else this.#armTimer(); // the clock is behind the timer: look again
    }, Math.max(1, delay));
    Deno.unrefTimer(timer);
    this.#timer = timer;
  }

  #flushAggregates(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const entry of this.#aggregates.values()) {
      this.record(entry.event, {
        client: entry.client,
        address: entry.address,
        reason: entry.reason,
        key_id: entry.keyId,
        count: entry.count,
        first: new Date(entry.first).toISOString(),
        last: new Date(entry.last).toISOString(),
      }).catch(() => {/* logged by #drain */});
    }
    this.#aggregates.clear();
  }

  /** Write what is queued, batch after batch, until the queue is empty. */
  async #drain(): Promise<void> {
    while (this.#queue.length > 0) {
      const batch = this.#queue;
      this.#queue = [];
      try {
        if (this.#failed) throw this.#failed;
        await this.#write(batch);
      } catch (error) {
        if (!this.#failed) {
          this.#failed = new Error(
            `cannot write the audit log ${this.path}: ${errorMessage(error)}`,
            {
              cause: error,
            },
          );
          this.#log.error(`${this.#failed.message}; no more audit lines will be written`);
        }
        for (const pending of batch) pending.reject(this.#failed);
        continue;
      }
      for (const pending of batch) pending.resolve();
    }
    this.#writing = undefined;
  }

  /** Chain, append and fsync `batch`, rotating first where a line would pass the limit. */
  async #write(batch: Pending[]): Promise<void> {
    let lines: Uint8Array[] = [];
    let bytes = 0;
    for (const pending of batch) {
      let line = this.#line(pending);
      const full = this.#rotateBytes > 0 && this.#size + bytes > 0 &&
        this.#size + bytes + line.length + 1 > this.#rotateBytes;
      if (full) {
        await this.#append(lines, bytes);
        lines = [];
        bytes = 0;
        await this.#rotate(pending.time);
        line = this.#line(pending);
      }
      this.#seq++;
      this.#hash = sha256Hex(line);
      lines.push(line, NEWLINE);
      bytes += line.length + 1;
    }
    await this.#append(lines, bytes);
  }

  /** The bytes of the line after the last one (without its newline). */
  #line({ event, time, members }: Omit<Pending, "resolve" | "reject">): Uint8Array {
    const text = `{"seq":${this.#seq + 1},"time":"${new Date(time).toISOString()}",` +
      `"event":"${event}"${members ? "," : ""}${members},"prev":"${this.#hash}"}`;
    return encoder.encode(text);
  }

  /** Append, fdatasync, record the head. */
  async #append(lines: Uint8Array[], bytes: number): Promise<void> {
    if (bytes === 0) return;
    const buffer = concat(lines);
    let written = 0;
    while (written < buffer.length) {
      written += (await this.#file.write(buffer, written, buffer.length - written)).bytesWritten;
    }
    this.#size += bytes;
    await this.#file.datasync();
    this.#syncs++;
    this.#head.setAuditHead({ file: this.#name, seq: this.#seq, hash: this.#hash });
  }

  /**
   * Rename the current file to `<name>.<UTC stamp>` (numbered when taken) and start a
   * new one whose first line is `audit_rotated {previous_file, previous_seq}`, chained
   * from the old file's last line, at `time` (the event's that did not fit). Old files
   * are never removed.
   */
  async #rotate(time: number): Promise<void> {
    const dir = path.dirname(this.path);
    const stamp = this.#now();
    let target = "";
    for (let number = 0;; number++) {
      target = rotatedName(this.#name, stamp, number);
      try {
        await Deno.lstat(path.join(dir, target));
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) break;
        throw error;
      }
    }
    await this.#file.close();
    await Deno.rename(this.path, path.join(dir, target));
    this.#file = await fs.promises.open(this.path, O_RDWR | O_CREAT | O_APPEND | O_NOFOLLOW, 0o600);
    this.#size = 0;
    await syncDirectory(dir);
    const line = this.#line({
      event: "audit_rotated",
      time,
      members: encodeFields("audit_rotated", { previous_file: target, previous_seq: this.#seq }),
    });
    this.#seq++;
    this.#hash = sha256Hex(line);
    await this.#append([line, NEWLINE], line.length + 1);
  }
}

const NEWLINE = new Uint8Array([10]);

/** `fields` as JSON members in their own order, checked for what a line may hold. */
function encodeFields(event: string, fields: Record<string, unknown>): string {
  if (!EVENT_NAME.test(event)) throw new TypeError(`bad audit event name ${JSON.stringify(event)}`);
  if (typeof fields !== "object" || fields === null || Array.isArray(fields)) {
    throw new TypeError(`the fields of audit event ${event} must be an object`);
  }
  for (const key of RESERVED) {
    if (Object.hasOwn(fields, key)) {
      throw new TypeError(`audit event ${event} must not set "${key}" (the log sets it)`);
    }
  }
  const json = JSON.stringify(fields);
  if (!json.startsWith("{")) {
    throw new TypeError(`the fields of audit event ${event} must be an object`);
  }
  if (json.length > MAX_AUDIT_LINE_BYTES / 4) {
    throw new RangeError(`audit event ${event} is too large (${json.length} characters)`);
  }
  return json.slice(1, -1);
}

/** Read `bytes.length` bytes at `position` (fewer only at the end of the file). */
async function readAt(file: Handle, bytes: Uint8Array, position: number): Promise<number> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesRead } = await file.read(bytes, done, bytes.length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** The offset just past the last newline in the first `size` bytes (0 when none). */
async function completeEnd(file: Handle, size: number): Promise<number> {
  const chunk = new Uint8Array(READ_CHUNK);
  for (let end = size; end > 0;) {
    const start = Math.max(0, end - READ_CHUNK);
    const part = chunk.subarray(0, end - start);
    await readAt(file, part, start);
    const newline = part.lastIndexOf(10);
    if (newline !== -1) return start + newline + 1;
    end = start;
  }
  return 0;
}

/**
 * The lines of the first `end` bytes of `file` (which end in a newline), last first,
 * without their newlines.
 * @throws {RangeError} at a line longer than MAX_AUDIT_LINE_BYTES.
 */
async function* linesBackward(file: Handle, end: number): AsyncGenerator<Uint8Array> {
  let position = end - 1; // before the last line's newline
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  while (position > 0) {
    const start = Math.max(0, position - READ_CHUNK);
    const chunk = new Uint8Array(position - start);
    await readAt(file, chunk, start);
    let high = chunk.length;
    for (
      let index = chunk.lastIndexOf(10);
      index !== -1;
      index = chunk.lastIndexOf(10, index - 1)
    ) {
      yield concat([chunk.subarray(index + 1, high), ...pending]);
      pending = [];
      pendingBytes = 0;
      high = index;
      if (index === 0) break;
    }
    pending.unshift(chunk.subarray(0, high));
    pendingBytes += high;
    if (pendingBytes > MAX_AUDIT_LINE_BYTES) {
      throw new RangeError(`a line longer than ${MAX_AUDIT_LINE_BYTES} bytes`);
    }
    position = start;
  }
  if (end > 0) yield concat(pending);
}

/**
 * Undefined when the lines from `last` backwards (`lines` yields those before it) reach
 * back to `head` with an intact chain; else what is wrong.
 */
async function continuesFrom(
  lines: AsyncGenerator<Uint8Array>,
  last: Uint8Array,
  head: AuditHead,
): Promise<string | undefined> {
  const broken = `the log goes on past the job store's audit head (seq ${head.seq}), ` +
    `but not from it: lines were replaced`;
  let newer = parseAuditLine(last);
  while (typeof newer !== "string") {
    if (newer.seq === head.seq + 1) return newer.prev === head.hash ? undefined : broken;
    const next = await lines.next();
    if (next.done) return broken;
    const older = parseAuditLine(next.value);
    if (typeof older === "string" || older.seq !== newer.seq - 1) return broken;
    if (newer.prev !== sha256Hex(next.value)) return broken;
    newer = older;
  }
  return broken;
}

/** The newest rotated file beside `logPath`, if any. */
async function newestRotated(
  logPath: string,
): Promise<{ path: string; name: string; size: number } | undefined> {
  const files = await listAuditFiles(logPath);
  const rotated = files.filter((file) => file !== logPath);
  const newest = rotated.at(-1);
  if (newest === undefined) return undefined;
  return { path: newest, name: path.basename(newest), size: (await Deno.stat(newest)).size };
}

/** fsync a directory, so that a rename or a new file in it survives a crash. */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await fs.promises.open(dir, O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
