/**
 * `recon-server audit`: print the audit log (lib/server/audit_read.ts), all files
 * oldest first, filtered by job, client or time, as text or JSON; and `audit --verify`,
 * which checks the chain, the rotation links and the end against the job store's head
 * (`--from-seq N`: from seq N on, once older files are archived or a break is dealt
 * with). Only reads: recon.opts (a missing one is an error), the log, and the job store
 * without its lock, so it runs beside a running server. Run it as the server's user.
 *
 * The entrypoint (server.ts) passes the writers in; nothing here touches stdout.
 *
 * @module
 */
import * as path from "node:path";
import { parseCommandLine, warningText } from "../cli/entry.ts";
import { loadServerOpts } from "../cli/support.ts";
import { ConfigError, ExitCode, UsageError } from "../errors.ts";
import { parseDuration } from "../opts/values.ts";
import { escapeControls } from "../printable.ts";
import { JOB_ID_PATTERN } from "../wire/protocol.ts";
import { type AuditHead, readAuditHead } from "./audit_head.ts";
import {
  auditLogPath,
  type AuditProblem,
  type AuditRecord,
  listAuditFiles,
  readAuditLog,
  verifyAuditLog,
} from "./audit_read.ts";
import { clientNameProblem, DEFAULT_CLIENT } from "./client_keys.ts";
import { stateDirOf } from "./server.ts";

const COMMAND = "recon-server audit";

/** `recon-server audit --help`. */
export const AUDIT_HELP = `Usage:
  ${COMMAND} [--opts PATH] [--job ID] [--client NAME] [--since TIME] [--json]
  ${COMMAND} --verify [--from-seq N] [--opts PATH] [--json]

Prints the audit log (AUDIT_LOG, default audit.jsonl in RECON_STATE_DIR): every file,
the rotated ones first, one event a line: TIME EVENT key=value ...

Options:
  --opts PATH      the server's recon.opts (default ./recon.opts); only read
  --job ID         only the events of this job
  --client NAME    only the events of this client
  --since TIME     only events from TIME on: ISO 8601 (2026-12-01T19:42:00Z; UTC when
                   no offset is given) or a time ago (90m, 24h, 7d)
  --json           a JSON array of the events as logged, one a line
  --verify         check the whole log: every line's seq and prev (the SHA-256 of the
                   line before), the link between rotated files, any mismatch the
                   server found at a start, and the last line against the head the
                   job store keeps (which catches a cut or edited end). Prints
                   "audit log intact: ..." (exit 0) or one "audit log broken at
                   FILE:LINE (seq N): ..." line per place (exit 1)
  --from-seq N     with --verify: check from the line of seq N on. The files before it
                   may be archived, and a break before it (an audit_mismatch line
                   already dealt with) is no longer reported; the end is still
                   checked against the job store
  -h, --help       this help

Run it as the server's user; it works while the server runs. Exit codes: 0 printed,
or the log is intact; 1 --verify found it broken; 2 usage or configuration error
(recon.opts missing, the log or job store not readable).
`;

/** Where {@link auditCommand} writes. */
export interface AuditCommandIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  /** The clock for `--since 24h` (ms since the epoch); default Date.now. */
  now?: () => number;
}

/** Run `recon-server audit ARGV…`; returns the exit code. */
export async function auditCommand(argv: string[], io: AuditCommandIo): Promise<number> {
  const { values } = parseCommandLine(COMMAND, argv, {
    opts: { type: "string" },
    job: { type: "string" },
    client: { type: "string" },
    since: { type: "string" },
    json: { type: "boolean" },
    verify: { type: "boolean" },
    "from-seq": { type: "string" },
    help: { type: "boolean", short: "h" },
  }, { command: COMMAND, allowPositionals: false });
  if (values.help) {
    io.stdout(AUDIT_HELP);
    return ExitCode.OK;
  }
  const filtered = ["job", "client", "since"].filter((name) => name in values);
  if (values.verify && filtered.length > 0) {
    throw new UsageError(`--verify checks the whole log; it takes no --${filtered[0]}`, {
      hint: `${COMMAND} --verify [--from-seq N] [--opts PATH]`,
    });
  }
  if (values["from-seq"] !== undefined && !values.verify) {
    throw new UsageError("--from-seq only goes with --verify", {
      hint: `${COMMAND} --verify --from-seq N [--opts PATH]; to print from a time, --since`,
    });
  }
  const fromSeq = values["from-seq"] === undefined ? undefined : parseSeq(values["from-seq"]);
  const job = values.job === undefined ? undefined : parseJob(values.job);
  const client = values.client === undefined ? undefined : parseClient(values.client);
  const since = values.since === undefined
    ? undefined
    : parseSince(values.since, (io.now ?? Date.now)());
  const loaded = await loadServerOpts(values.opts ?? "recon.opts");
  io.stderr(warningText("recon-server", loaded.warnings));
  const stateDir = stateDirOf(loaded.config);
  const logPath = path.resolve(auditLogPath(loaded.config, stateDir));
  return await readable(logPath, async () => {
    if (values.verify) {
      // The head first: lines a running server writes meanwhile are then past it, never short.
      const head = await readAuditHead(stateDir);
      return await verify(logPath, head, fromSeq, values.json ?? false, io);
    }
    if ((await listAuditFiles(logPath)).length === 0) {
      io.stderr(noLogText(logPath, await readAuditHead(stateDir)));
    }
    const filter = { job, client, since };
    const onBadLine = (file: string, line: number, what: string) =>
      io.stderr(
        `recon-server: warning: ${path.join(path.dirname(logPath), file)}:${line}: ${what}; ` +
          `skipped (see '${COMMAND} --verify')\n`,
      );
    // Written 64 K characters at a time: a log may be hundreds of MB.
    let out = values.json ? "[" : "";
    let count = 0;
    for await (const { record } of readAuditLog(logPath, filter, onBadLine)) {
      out += values.json
        ? `${count === 0 ? "\n" : ",\n"}${JSON.stringify(record)}`
        : `${formatAuditRecord(record)}\n`;
      count++;
      if (out.length >= 65536) {
        io.stdout(out);
        out = "";
      }
    }
    if (values.json) out += count === 0 ? "]\n" : "\n]\n";
    io.stdout(out);
    return ExitCode.OK;
  });
}

/**
 * What `audit` says on stderr when it finds no log file: a server that has written no
 * line yet, or one whose lines the job store remembers (moved, archived, deleted).
 */
function noLogText(logPath: string, head: AuditHead | undefined): string {
  if (!head || head.seq === 0) return `recon-server: there is no audit log at ${logPath} yet\n`;
  return `recon-server: warning: there is no audit log at ${logPath}, but the job store ` +
    `records ${head.seq} line(s) written to ${head.file}; were its files moved or deleted? ` +
    `See '${COMMAND} --verify'\n`;
}

/** `--from-seq`: a seq, 1 or more. */
function parseSeq(text: string): number {
  const seq = /^[1-9]\d{0,14}$/.test(text) ? Number(text) : undefined;
  if (seq === undefined) {
    throw new UsageError(
      `--from-seq needs the seq of a line, 1 or more, got "${escapeControls(text)}"`,
      { hint: "--verify names the seq of each place it finds broken; --json shows every line's" },
    );
  }
  return seq;
}

/** `--job`: a job id (any case), as recon-client takes it. */
function parseJob(text: string): string {
  const id = text.trim().toLowerCase();
  if (!JOB_ID_PATTERN.test(id)) {
    throw new UsageError(`"${escapeControls(text)}" is not a job id`, {
      hint: "a job id is a UUID like 0b7f0f2e-3c1a-4b5e-9d2f-6a7b8c9d0e1f; " +
        "'recon-client jobs --all-clients' lists the server's jobs",
    });
  }
  return id;
}

/** `--client`: a client name, or `default` (SHARED_KEY). */
function parseClient(text: string): string {
  const problem = text === DEFAULT_CLIENT ? undefined : clientNameProblem(text);
  if (problem) throw new UsageError(problem, { hint: "'recon-server clients list' names them" });
  return text;
}

/** The time `--since` names, in ms since the epoch. */
export function parseSince(text: string, now: number): number {
  const seconds = parseDuration(text);
  if (seconds !== undefined) return now - seconds * 1000;
  if (/^\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?)?(?:Z|[+-]\d\d:?\d\d)?$/i.test(text)) {
    // Without an offset, UTC (JavaScript would take a date and time as local time).
    const zoned = /T|\s/.test(text) && !/(?:Z|[+-]\d\d:?\d\d)$/i.test(text)
      ? `${text.replace(" ", "T")}Z`
      : text.replace(" ", "T");
    const time = Date.parse(zoned);
    if (!Number.isNaN(time)) return time;
  }
  throw new UsageError(
    `--since needs an ISO 8601 time or a time ago, got "${escapeControls(text)}"`,
    { hint: "e.g. --since 2026-12-01T19:42:00Z, --since 2026-12-01, --since 24h, --since 7d" },
  );
}

/** A permission problem with the log, in words that say whose it is. */
async function readable(logPath: string, work: () => Promise<number>): Promise<number> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof Deno.errors.PermissionDenied) {
      throw new ConfigError(`cannot read the audit log ${logPath}: permission denied`, {
        hint: "run it as the server's user, e.g. sudo -u <that user> recon-server audit",
        cause: error,
      });
    }
    throw error;
  }
}

async function verify(
  logPath: string,
  head: AuditHead | undefined,
  fromSeq: number | undefined,
  json: boolean,
  io: AuditCommandIo,
): Promise<number> {
  const result = await verifyAuditLog(logPath, head, { fromSeq });
  const intact = result.problemCount === 0;
  const where = (problem: AuditProblem) => path.join(path.dirname(logPath), problem.file);
  if (json) {
    io.stdout(`${
      JSON.stringify(
        {
          intact,
          log: logPath,
          ...(fromSeq === undefined ? {} : { from_seq: fromSeq }),
          lines: result.lines,
          files: result.files,
          last_seq: result.last?.seq,
          last_time: result.last?.time,
          past_head: result.pastHead,
          problem_count: result.problemCount,
          problems: result.problems.map((problem) => ({ ...problem, file: where(problem) })),
        },
        null,
        2,
      )
    }\n`);
    return intact ? ExitCode.OK : ExitCode.JOB_FAILED;
  }
  if (intact) {
    const files = `${result.files} file${result.files === 1 ? "" : "s"}`;
    const last = result.last ? `, last ${result.last.time}` : "";
    const past = result.pastHead > 0
      ? ` (${result.pastHead} line(s) after the job store's head: written while this ran)`
      : "";
    const from = fromSeq === undefined ? "" : ` from seq ${fromSeq}`;
    io.stdout(`audit log intact${from}: ${result.lines} lines in ${files}${last}${past}\n`);
    return ExitCode.OK;
  }
  for (const problem of result.problems) {
    const seq = problem.seq === undefined ? "" : ` (seq ${problem.seq})`;
    io.stdout(
      escapeControls(
        `audit log broken at ${where(problem)}:${problem.line}${seq}: ${problem.what}`,
      ) +
        "\n",
    );
  }
  const more = result.problemCount - result.problems.length;
  if (more > 0) io.stdout(`... and ${more} more problem(s)\n`);
  return ExitCode.JOB_FAILED;
}

/** Fields the text form leaves out: the chain is for --verify. */
const HIDDEN = new Set(["seq", "time", "event", "prev"]);

/** One event as text: `TIME EVENT key=value …`, safe for a terminal. */
export function formatAuditRecord(record: AuditRecord): string {
  const parts = [record.time, record.event];
  for (const [key, value] of Object.entries(record)) {
    if (!HIDDEN.has(key) && value !== undefined) parts.push(`${key}=${formatValue(value)}`);
  }
  return escapeControls(parts.join(" "));
}

function formatValue(value: unknown): string {
  if (typeof value === "string") return /^[^\s"'=\\]+$/.test(value) ? value : JSON.stringify(value);
  if (Array.isArray(value) && value.length > 0 && value.every(isFileEntry)) {
    const bytes = value.reduce((sum, file) => sum + file.size, 0);
    return `${value.length} (${formatBytes(bytes)})`;
  }
  if (Array.isArray(value) && value.every((item) => typeof item === "string")) {
    return formatValue(value.join(","));
  }
  return JSON.stringify(value);
}

function isFileEntry(value: unknown): value is { size: number } {
  return typeof value === "object" && value !== null &&
    typeof (value as { size?: unknown }).size === "number";
}

/** Bytes in SI units, three significant digits (as recon-client shows sizes). */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ["kB", "MB", "GB", "TB", "PB"];
  let value = bytes / 1000;
  let unit = 0;
  while (value >= 999.5 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(value >= 99.95 ? 0 : value >= 9.995 ? 1 : 2)} ${units[unit]}`;
}
