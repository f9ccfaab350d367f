/**
 * Reading the audit log (issue 14) that lib/server/audit_log.ts writes: its files
 * oldest first (the rotated `audit.jsonl.<UTC stamp>` files, then the current one),
 * line by line in bounded memory, filtered by job, client or time; and verifying it:
 * each line's `seq` and `prev` (the SHA-256 of the line before), the `audit_rotated`
 * link at the top of each later file, any `audit_mismatch` the server recorded, and the
 * last line against the head the job store keeps (lib/server/audit_head.ts), which is
 * what catches a cut or rewritten tail: the chain alone cannot. Verifying may start at
 * a later seq, once older files are archived or a recorded break is dealt with.
 *
 * @module
 */
import { createHash } from "node:crypto";
import * as path from "node:path";
import type { ReconConfig } from "../opts/mod.ts";
import type { AuditHead } from "./audit_head.ts";

/** `prev` of the first line: 64 zeros. */
export const ZERO_HASH = "0".repeat(64);

/** The log's file name in RECON_STATE_DIR when AUDIT_LOG is empty. */
export const AUDIT_FILE = "audit.jsonl";

/** A longer line is not one recon wrote (the largest, job_submitted, lists inputs). */
export const MAX_AUDIT_LINE_BYTES = 64 * 1024 * 1024;

const CHUNK_BYTES = 1024 * 1024;

/** AUDIT_LOG, or its default `audit.jsonl` in the state directory `stateDir`. */
export function auditLogPath(config: Pick<ReconConfig, "AUDIT_LOG">, stateDir: string): string {
  return config.AUDIT_LOG !== "" ? config.AUDIT_LOG : path.join(stateDir, AUDIT_FILE);
}

/** One parsed line: the fields every line has, then the event's own. */
export interface AuditRecord {
  seq: number;
  /** ISO 8601 UTC with milliseconds. */
  time: string;
  event: string;
  prev: string;
  [field: string]: unknown;
}

/** Hex SHA-256 of `bytes`. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const HASH = /^[0-9a-f]{64}$/;

/** The record on a line (without its newline), or what is wrong with the line. */
export function parseAuditLine(bytes: Uint8Array): AuditRecord | string {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(bytes));
  } catch {
    return "not a line of JSON";
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return "not a JSON object";
  }
  const record = value as Record<string, unknown>;
  if (!Number.isSafeInteger(record.seq) || (record.seq as number) < 1) return "no valid seq";
  if (typeof record.time !== "string" || typeof record.event !== "string") {
    return "no time or event";
  }
  if (typeof record.prev !== "string" || !HASH.test(record.prev)) return "no valid prev";
  return record as AuditRecord;
}

/** The name a rotated file gets: `<base>.<yyyymmddThhmmssZ>` and `.N` when taken. */
export function rotatedName(base: string, time: number, number = 0): string {
  const stamp = new Date(time).toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
  return number === 0 ? `${base}.${stamp}` : `${base}.${stamp}.${number}`;
}

const ROTATED = /^\.(\d{8}T\d{6}Z)(?:\.([1-9]\d{0,8}))?$/;

/**
 * The files of the log at `logPath`, oldest first, as full paths: the rotated files in
 * the order of their names' stamp and number, then `logPath` itself when it exists.
 */
export async function listAuditFiles(logPath: string): Promise<string[]> {
  const dir = path.dirname(logPath);
  const base = path.basename(logPath);
  const rotated: { name: string; stamp: string; number: number }[] = [];
  let current = false;
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.name === base) current = true;
      if (!entry.name.startsWith(base)) continue;
      const match = ROTATED.exec(entry.name.slice(base.length));
      if (match) rotated.push({ name: entry.name, stamp: match[1], number: Number(match[2] ?? 0) });
    }
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
  rotated.sort((a, b) => a.stamp < b.stamp ? -1 : a.stamp > b.stamp ? 1 : a.number - b.number);
  const files = rotated.map((file) => path.join(dir, file.name));
  if (current) files.push(logPath);
  return files;
}

/** A line of a file as {@link readLines} gives it. */
export interface AuditLine {
  /** The line's bytes without its newline (a copy: the caller may keep it). */
  bytes: Uint8Array;
  /** 1-based line number. */
  line: number;
  /** False for the last line of a file that does not end in a newline (a cut-off write). */
  terminated: boolean;
}

/**
 * The lines of `file`, read 1 MiB at a time.
 * @throws {RangeError} at a line longer than {@link MAX_AUDIT_LINE_BYTES}.
 */
export async function* readLines(file: string): AsyncGenerator<AuditLine> {
  using handle = await Deno.open(file, { read: true });
  const buffer = new Uint8Array(CHUNK_BYTES);
  let carry: Uint8Array[] = [];
  let carried = 0;
  let line = 0;
  const take = (tail: Uint8Array): Uint8Array => {
    if (carry.length === 0) return tail.slice();
    const bytes = concat([...carry, tail]);
    carry = [];
    carried = 0;
    return bytes;
  };
  while (true) {
    const read = await handle.read(buffer);
    if (read === null) break;
    const chunk = buffer.subarray(0, read);
    let start = 0;
    while (start < read) {
      const end = chunk.indexOf(10, start);
      if (end === -1) {
        carried += read - start;
        if (carried > MAX_AUDIT_LINE_BYTES) {
          throw new RangeError(`line ${line + 1} is longer than ${MAX_AUDIT_LINE_BYTES} bytes`);
        }
        carry.push(chunk.slice(start));
        break;
      }
      if (carried + end - start > MAX_AUDIT_LINE_BYTES) {
        throw new RangeError(`line ${line + 1} is longer than ${MAX_AUDIT_LINE_BYTES} bytes`);
      }
      yield { bytes: take(chunk.subarray(start, end)), line: ++line, terminated: true };
      start = end + 1;
    }
  }
  if (carried > 0) yield { bytes: take(new Uint8Array(0)), line: ++line, terminated: false };
}

/** `parts` joined into one array. */
export function concat(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    bytes.set(part, offset);
    offset += part.length;
  }
  return bytes;
}

/** What {@link readAuditLog} keeps. All given conditions must hold. */
export interface AuditFilter {
  /** Lines whose `job` is this job id. */
  job?: string;
  /** Lines whose `client` is this client name. */
  client?: string;
  /** Lines at or after this time (ms since the epoch). */
  since?: number;
}

/** A record with where it stands. */
export interface AuditEntry {
  /** Base name of the file. */
  file: string;
  line: number;
  record: AuditRecord;
}

/**
 * The records of the log at `logPath` that pass `filter`, oldest first. Lines that
 * are no record are passed to `onBadLine` and skipped (`audit --verify` reports them).
 */
export async function* readAuditLog(
  logPath: string,
  filter: AuditFilter = {},
  onBadLine: (file: string, line: number, what: string) => void = () => {},
): AsyncGenerator<AuditEntry> {
  for (const file of await listAuditFiles(logPath)) {
    const name = path.basename(file);
    for await (const { bytes, line } of readLines(file)) {
      const record = parseAuditLine(bytes);
      if (typeof record === "string") {
        onBadLine(name, line, record);
        continue;
      }
      if (filter.job !== undefined && record.job !== filter.job) continue;
      if (filter.client !== undefined && record.client !== filter.client) continue;
      if (filter.since !== undefined && !(Date.parse(record.time) >= filter.since)) continue;
      yield { file: name, line, record };
    }
  }
}

/** A place where the log is not what the server wrote. */
export interface AuditProblem {
  /** Base name of the file. */
  file: string;
  /** 1-based line; 0 for the file as a whole. */
  line: number;
  seq?: number;
  what: string;
}

/** Options of {@link verifyAuditLog}. */
export interface VerifyAuditOptions {
  /**
   * Check from the line of this seq on (default 1, the whole log). The lines before it
   * may be missing (archived files) or broken (a break found and dealt with, such as an
   * `audit_mismatch` line); the line of this seq is taken as it is (its link to the one
   * before is not checked), every later one must chain to it, and the end must match
   * the head as always.
   */
  fromSeq?: number;
}

/** The outcome of {@link verifyAuditLog}. */
export interface AuditVerification {
  /**
   * Lines checked, in {@link files} files: every line and file of the log, or with
   * `fromSeq` those from that seq on.
   */
  lines: number;
  files: number;
  /** The last line's seq and time, when there is one. */
  last?: { seq: number; time: string };
  /**
   * Lines after the job store's head: written while the check ran, or by a server that
   * stopped before recording the head (its next start adopts them).
   */
  pastHead: number;
  /** The first {@link MAX_AUDIT_PROBLEMS} problems. */
  problems: AuditProblem[];
  /** How many problems there are in all. */
  problemCount: number;
}

/** Problems kept by {@link verifyAuditLog} (a file of garbage has one a line). */
export const MAX_AUDIT_PROBLEMS = 1000;

/**
 * Check the whole log at `logPath` against `head`, the job store's record of its end.
 * Read `head` before calling: lines written by a running server meanwhile are then
 * past the head (allowed), never short of it. One problem is reported per broken
 * place, and the check goes on from the line after it (so one edit is one problem).
 */
export async function verifyAuditLog(
  logPath: string,
  head: AuditHead | undefined,
  options: VerifyAuditOptions = {},
): Promise<AuditVerification> {
  const files = await listAuditFiles(logPath);
  const fromSeq = options.fromSeq ?? 1;
  const problems: AuditProblem[] = [];
  const result: AuditVerification = {
    lines: 0,
    files: fromSeq > 1 ? 0 : files.length,
    pastHead: 0,
    problems,
    problemCount: 0,
  };
  const report = (problem: AuditProblem) => {
    if (result.problemCount++ < MAX_AUDIT_PROBLEMS) problems.push(problem);
  };
  let prevHash = ZERO_HASH;
  let lastSeq = 0;
  let lastPlace = { file: path.basename(logPath), line: 0 };
  const headSeq = head && head.seq > 0 ? head.seq : 0;
  // With fromSeq, nothing is checked until the first line at or after it.
  let checking = fromSeq <= 1;
  let read = 0;
  for (const [index, file] of files.entries()) {
    const name = path.basename(file);
    const previousName = index > 0 ? path.basename(files[index - 1]) : undefined;
    let count = 0;
    let counted = false;
    try {
      for await (const { bytes, line, terminated } of readLines(file)) {
        count++;
        read++;
        const hash = sha256Hex(bytes);
        const record = parseAuditLine(bytes);
        lastPlace = { file: name, line };
        // A line that is no record stands for the seq after the one before.
        const seq = typeof record === "string" ? lastSeq + 1 : record.seq;
        const first = !checking && seq >= fromSeq;
        if (first) checking = true;
        if (!checking) {
          // Archived or acknowledged: only followed, so the chain goes on from it.
          prevHash = hash;
          lastSeq = seq;
          if (typeof record !== "string") result.last = { seq, time: record.time };
          continue;
        }
        result.lines++;
        if (!counted && fromSeq > 1) result.files++;
        counted = true;
        const problem = (what: string, seq?: number) => report({ file: name, line, seq, what });
        if (typeof record === "string") {
          problem(`${record}: the line was changed`);
          prevHash = hash;
          lastSeq++;
          continue;
        }
        const broken = first
          ? startProblem(fromSeq, seq)
          : rotationProblem(record, count, previousName, lastSeq) ??
            chainProblem(record, {
              lastSeq,
              prevHash,
              startOfLog: result.lines === 1,
              before: count === 1 ? `the last line of ${previousName}` : `line ${line - 1}`,
            });
        if (broken) problem(broken, seq);
        if (!terminated) problem("the line has no newline at its end (a write cut off)", seq);
        if (record.event === "audit_mismatch") {
          problem(
            `the server found the log did not match its job store: ${String(record.problem)} ` +
              `(once that is dealt with, check from the line after it: --from-seq ${seq + 1})`,
            seq,
          );
        }
        if (seq === headSeq && head && hash !== head.hash) {
          problem(
            "this line differs from the one the server wrote (its SHA-256 is not the job store's audit head)",
            seq,
          );
        }
        if (seq > headSeq) result.pastHead++;
        prevHash = hash;
        lastSeq = seq;
        result.last = { seq, time: record.time };
      }
    } catch (error) {
      if (!(error instanceof RangeError)) throw error;
      if (checking) report({ file: name, line: count + 1, what: error.message });
    }
    if (checking && count === 0 && index < files.length - 1) {
      report({ file: name, line: 0, what: "the rotated file is empty" });
    }
  }
  if (!checking && read > 0) {
    report({
      ...lastPlace,
      seq: lastSeq,
      what: `the log ends at seq ${lastSeq}, before seq ${fromSeq} where the check was to start`,
    });
  }
  const ends = `the job store's audit head is at seq ${headSeq}`;
  if (!head || headSeq === 0) {
    if (result.lines > 0) {
      report({
        ...lastPlace,
        seq: result.last?.seq,
        what: "the job store holds no audit head, so a cut tail could not be seen " +
          "(jobs.sqlite new, replaced, or of another RECON_STATE_DIR?)",
      });
    }
  } else if (head.file !== path.basename(logPath)) {
    report({
      ...lastPlace,
      what: `the job store's audit head is for ${head.file}, not ${path.basename(logPath)}`,
    });
  } else if (read === 0) {
    report({ ...lastPlace, what: `there is no audit log, but ${ends}` });
  } else if (lastSeq < headSeq) {
    report({
      ...lastPlace,
      seq: lastSeq,
      what: `the log ends at seq ${lastSeq}, but ${ends}: ` +
        `${headSeq - lastSeq} line(s) were cut from its end`,
    });
  }
  return result;
}

/** What is wrong with the first line checked from `fromSeq` on, if anything. */
function startProblem(fromSeq: number, seq: number): string | undefined {
  if (seq === fromSeq) return undefined;
  const missing = seq - fromSeq === 1
    ? `the line of seq ${fromSeq} is missing`
    : `the lines of seq ${fromSeq} to ${seq - 1} are missing`;
  return `the first line from seq ${fromSeq} on is seq ${seq}: ${missing}`;
}

/** What is wrong with the link from the line before (`before`) to `record`, if anything. */
function chainProblem(
  record: AuditRecord,
  at: { lastSeq: number; prevHash: string; startOfLog: boolean; before: string },
): string | undefined {
  const { seq } = record;
  const { lastSeq } = at;
  if (seq === lastSeq + 1) {
    return record.prev === at.prevHash
      ? undefined
      : `its prev is not the SHA-256 of the line before: ${at.before} or this one was changed`;
  }
  if (at.startOfLog) {
    return `the log starts at seq ${seq}, not 1: the lines or files before it are missing`;
  }
  return seq > lastSeq + 1
    ? `seq ${seq} follows seq ${lastSeq}: ${seq - lastSeq - 1} line(s) before it were removed`
    : `seq ${seq} follows seq ${lastSeq}: lines were reordered or repeated`;
}

/** What is wrong with the link from one file to the next, if anything. */
function rotationProblem(
  record: AuditRecord,
  lineInFile: number,
  previousName: string | undefined,
  lastSeq: number,
): string | undefined {
  const rotated = record.event === "audit_rotated";
  if (lineInFile > 1) return rotated ? "audit_rotated inside a file" : undefined;
  if (previousName === undefined) {
    return rotated
      ? `the log starts with a rotation from ${String(record.previous_file)} ` +
        `(seq ${String(record.previous_seq)}), which is missing (if it was archived, ` +
        `check from this line on: --from-seq ${record.seq})`
      : undefined;
  }
  if (!rotated) {
    // A gap in seq says more (a removed line), and is reported instead.
    return record.seq === lastSeq + 1
      ? "the file does not start with audit_rotated: files before it are missing"
      : undefined;
  }
  if (record.previous_file !== previousName || record.previous_seq !== lastSeq) {
    return `audit_rotated names ${String(record.previous_file)} ending at seq ${
      String(record.previous_seq)
    }, but the file before is ${previousName} ending at seq ${lastSeq}: a rotated file is missing`;
  }
  return undefined;
}
