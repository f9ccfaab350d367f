/**
 * Tests for lib/server/audit_read.ts: `verifyAuditLog` on an intact log of several
 * rotated files, and on each kind of tampering (an edited or deleted middle line, a cut
 * tail, an edited last line, a deleted rotated file, the oldest one gone, a cut-off
 * last line, a recorded audit_mismatch, no head, every single flipped byte), each named
 * by file and line; the files' order; the filters of `readAuditLog`; `fromSeq` after
 * archived files and an acknowledged break. Then `bin/recon-server audit` as a subprocess
 * on a state directory prepared through a real JobStore: `--verify` intact and broken,
 * `--verify --from-seq`, `--json --job`, the text form, bad arguments, a log moved away.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import type { AuditHead } from "../../lib/server/audit_head.ts";
import { AuditLog } from "../../lib/server/audit_log.ts";
import {
  type AuditProblem,
  listAuditFiles,
  readAuditLog,
  verifyAuditLog,
} from "../../lib/server/audit_read.ts";
import { formatAuditRecord, parseSince } from "../../lib/server/audit_cli.ts";
import { JobStore } from "../../lib/server/job_store.ts";
import { run, SERVER_BIN } from "../support/e2e.ts";
import { memoryLog } from "../support/memory_log.ts";

const T0 = Date.UTC(2026, 11, 1, 9, 0, 0);
const JOB_A = "6f1c0b9e-0000-4000-8000-00000000000a";
const JOB_B = "6f1c0b9e-0000-4000-8000-00000000000b";

class MemoryHead {
  head?: AuditHead;
  auditHead(): AuditHead | undefined {
    return this.head;
  }
  setAuditHead(head: AuditHead): void {
    this.head = { ...head };
  }
}

/** The events of a small site: two clients, two jobs, refusals; one minute apart each. */
async function writeEvents(
  logPath: string,
  head: { auditHead(): AuditHead | undefined; setAuditHead(head: AuditHead): void },
  rotateBytes: number,
): Promise<void> {
  let now = T0;
  const audit = await AuditLog.open({
    path: logPath,
    rotateBytes,
    head,
    log: memoryLog().log,
    now: () => now,
  });
  const events: [string, Record<string, unknown>][] = [
    ["server_started", { version: "0.1.0", host: "box", pid: 42, clients: 2 }],
    ["handshake_ok", { client: "mr1", key_id: "3f2a9c0d11e2b4a5", address: "10.0.0.5" }],
    ["job_submitted", {
      job: JOB_A,
      client: "mr1",
      address: "10.0.0.5",
      priority: "normal",
      options: { slices: 3 },
      inputs: [
        { name: "P12345.7", size: 1_200_000_000, sha256: "a".repeat(64) },
        { name: "calib.h5", size: 2_000_000, sha256: "b".repeat(64) },
      ],
    }],
    ["handshake_ok", { client: "mr2", key_id: "0a1b2c3d4e5f6071", address: "10.0.1.7" }],
    ["job_submitted", {
      job: JOB_B,
      client: "mr2",
      address: "10.0.1.7",
      priority: "high",
      options: {},
      inputs: [{ name: "P2.7", size: 5000, sha256: "c".repeat(64) }],
    }],
    ["job_started", { job: JOB_A, client: "mr1", attempt: 1, executor: "local" }],
    ["job_finished", {
      job: JOB_A,
      client: "mr1",
      state: "succeeded",
      exit_code: 0,
      duration_seconds: 61,
      outputs: [{ name: "img.dcm", size: 525_000, sha256: "d".repeat(64) }],
    }],
    ["job_delivered", {
      job: JOB_A,
      client: "mr1",
      to: "mr1",
      address: "10.0.0.5",
      files: 1,
      bytes: 525_000,
    }],
    ["job_cancelled", { job: JOB_B, client: "mr2", by: "mr1", reason: "wrong series" }],
    ["client_revoked", { client: "mr2", key_ids: ["0a1b2c3d4e5f6071"] }],
  ];
  for (const [event, fields] of events) {
    await audit.record(event, fields);
    now += 60_000;
  }
  audit.refused("192.0.2.7", "not in TRUSTEDIPS");
  audit.refused("192.0.2.7", "not in TRUSTEDIPS");
  await audit.close();
}

/** A log of 4 files (a line of each file named in `files`), with its head. */
async function sampleLog(): Promise<
  { logPath: string; head: MemoryHead; files: string[] } & AsyncDisposable
> {
  const dir = await Deno.makeTempDir({ prefix: "recon-audit-verify-" });
  const logPath = path.join(dir, "audit.jsonl");
  const head = new MemoryHead();
  await writeEvents(logPath, head, 900);
  const files = await listAuditFiles(logPath);
  assert.ok(files.length >= 4, `${files.length} files`);
  return {
    logPath,
    head,
    files,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

async function lines(file: string): Promise<string[]> {
  return (await Deno.readTextFile(file)).slice(0, -1).split("\n");
}

async function writeLines(file: string, content: string[]): Promise<void> {
  await Deno.writeTextFile(file, content.map((line) => `${line}\n`).join(""));
}

/** A rotated file (not the current one) of at least 3 lines. */
async function middleFile(files: string[]): Promise<string> {
  for (const file of files.slice(0, -1)) if ((await lines(file)).length >= 3) return file;
  throw new Error("no rotated file of 3 lines");
}

function where(problem: AuditProblem): string {
  return `${problem.file}:${problem.line}`;
}

Deno.test("verifyAuditLog() passes an intact log of several files", async () => {
  await using log = await sampleLog();
  const result = await verifyAuditLog(log.logPath, log.head.head);
  assert.deepEqual(result.problems, []);
  assert.equal(result.problemCount, 0);
  assert.equal(result.files, log.files.length);
  assert.equal(result.lines, log.head.head!.seq);
  assert.equal(result.last?.seq, log.head.head!.seq);
  assert.equal(result.pastHead, 0);
});

Deno.test("verifyAuditLog() names the line after an edited middle line", async () => {
  await using log = await sampleLog();
  const file = await middleFile(log.files);
  const content = await lines(file);
  content[1] = content[1].replace(/"client":"mr\d"/, '"client":"mr9"');
  await writeLines(file, content);
  const { problems } = await verifyAuditLog(log.logPath, log.head.head);
  assert.equal(problems.length, 1, JSON.stringify(problems));
  assert.equal(where(problems[0]), `${path.basename(file)}:3`);
  assert.match(problems[0].what, /prev is not the SHA-256 of the line before: line 2 or this one/);
});

Deno.test("verifyAuditLog() names the line after a deleted middle line", async () => {
  await using log = await sampleLog();
  const file = await middleFile(log.files);
  const content = await lines(file);
  const removed = JSON.parse(content[1]).seq;
  content.splice(1, 1);
  await writeLines(file, content);
  const { problems } = await verifyAuditLog(log.logPath, log.head.head);
  assert.equal(problems.length, 1, JSON.stringify(problems));
  assert.equal(where(problems[0]), `${path.basename(file)}:2`);
  assert.equal(problems[0].seq, removed + 1);
  assert.match(problems[0].what, /follows seq \d+: 1 line\(s\) before it were removed/);
});

Deno.test("verifyAuditLog() sees a cut tail by the job store's head", async () => {
  await using log = await sampleLog();
  const file = log.files.at(-1)!;
  const content = await lines(file);
  await writeLines(file, content.slice(0, -1));
  const { problems } = await verifyAuditLog(log.logPath, log.head.head);
  assert.equal(problems.length, 1, JSON.stringify(problems));
  assert.equal(where(problems[0]), `audit.jsonl:${content.length - 1}`);
  assert.match(
    problems[0].what,
    /ends at seq \d+, but the job store's audit head .*: 1 line\(s\) were cut/,
  );
});

Deno.test("verifyAuditLog() sees an edited last line by the job store's head", async () => {
  await using log = await sampleLog();
  const file = log.files.at(-1)!;
  const content = await lines(file);
  content[content.length - 1] = content.at(-1)!.replace('"count":2', '"count":1');
  await writeLines(file, content);
  const { problems } = await verifyAuditLog(log.logPath, log.head.head);
  assert.equal(problems.length, 1, JSON.stringify(problems));
  assert.equal(where(problems[0]), `audit.jsonl:${content.length}`);
  assert.match(problems[0].what, /differs from the one the server wrote/);
});

Deno.test("verifyAuditLog() names the file after a deleted rotated file", async () => {
  await using log = await sampleLog();
  await Deno.remove(log.files[1]);
  const { problems } = await verifyAuditLog(log.logPath, log.head.head);
  assert.equal(problems.length, 1, JSON.stringify(problems));
  assert.equal(where(problems[0]), `${path.basename(log.files[2])}:1`);
  assert.match(
    problems[0].what,
    new RegExp(`audit_rotated names ${path.basename(log.files[1])} .*: a rotated file is missing`),
  );
});

Deno.test("verifyAuditLog() sees the oldest file gone", async () => {
  await using log = await sampleLog();
  await Deno.remove(log.files[0]);
  const { problems } = await verifyAuditLog(log.logPath, log.head.head);
  assert.equal(problems.length, 1, JSON.stringify(problems));
  assert.equal(where(problems[0]), `${path.basename(log.files[1])}:1`);
  assert.match(problems[0].what, /starts with a rotation from .*, which is missing/);
});

Deno.test("verifyAuditLog() reports a last line cut off without its newline", async () => {
  await using log = await sampleLog();
  const file = log.files.at(-1)!;
  const text = await Deno.readTextFile(file);
  await Deno.writeTextFile(file, text.slice(0, -1));
  const { problems } = await verifyAuditLog(log.logPath, log.head.head);
  assert.ok(problems.some((problem) => /no newline at its end/.test(problem.what)));
});

Deno.test("verifyAuditLog() reports every audit_mismatch the server recorded", async () => {
  await using log = await sampleLog();
  // The server finds the tail cut at its next start and records that.
  const file = log.files.at(-1)!;
  await writeLines(file, (await lines(file)).slice(0, -1));
  const audit = await AuditLog.open({
    path: log.logPath,
    rotateBytes: 0,
    head: log.head,
    log: memoryLog().log,
  });
  await audit.close();
  const { problems } = await verifyAuditLog(log.logPath, log.head.head);
  assert.equal(problems.length, 1, JSON.stringify(problems));
  assert.equal(where(problems[0]), `audit.jsonl:${(await lines(file)).length}`);
  assert.match(problems[0].what, /did not match its job store: .* lines were cut from its end/);
});

Deno.test("verifyAuditLog() without a head in the job store says a cut tail could not be seen", async () => {
  await using log = await sampleLog();
  const { problems } = await verifyAuditLog(log.logPath, undefined);
  assert.equal(problems.length, 1);
  assert.match(problems[0].what, /no audit head/);
  const none = await verifyAuditLog(path.join(path.dirname(log.logPath), "none.jsonl"), undefined);
  assert.deepEqual(none, { lines: 0, files: 0, pastHead: 0, problems: [], problemCount: 0 });
  const missing = await verifyAuditLog(
    path.join(path.dirname(log.logPath), "none.jsonl"),
    { file: "none.jsonl", seq: 3, hash: "0".repeat(64) },
  );
  assert.match(missing.problems[0].what, /there is no audit log, but .* seq 3/);
});

Deno.test("verifyAuditLog() accepts lines past the head (written while it ran)", async () => {
  await using log = await sampleLog();
  const earlier = { ...log.head.head! };
  const audit = await AuditLog.open({
    path: log.logPath,
    rotateBytes: 0,
    head: log.head,
    log: memoryLog().log,
  });
  await audit.record("server_stopped", { reason: "SIGTERM" });
  await audit.close();
  const result = await verifyAuditLog(log.logPath, earlier);
  assert.deepEqual(result.problems, []);
  assert.equal(result.pastHead, 1);
});

Deno.test("verifyAuditLog() fails for a flipped bit at every offset of the oldest and the current file", async () => {
  await using log = await sampleLog();
  // The oldest file (the chain's start) and the current one (its end, held by the head).
  for (const file of [log.files[0], log.files.at(-1)!]) {
    const original = await Deno.readFile(file);
    for (let offset = 0; offset < original.length; offset++) {
      const flipped = original.slice();
      flipped[offset] ^= 0x01;
      await Deno.writeFile(file, flipped);
      const result = await verifyAuditLog(log.logPath, log.head.head);
      assert.ok(result.problemCount > 0, `${path.basename(file)} offset ${offset} not seen`);
    }
    await Deno.writeFile(file, original);
  }
  assert.equal((await verifyAuditLog(log.logPath, log.head.head)).problemCount, 0);
});

/** The seq of the first line of `file`. */
async function firstSeq(file: string): Promise<number> {
  return JSON.parse((await lines(file))[0]).seq;
}

Deno.test("verifyAuditLog() with fromSeq passes once the oldest files are archived, and still checks the rest", async () => {
  await using log = await sampleLog();
  await Deno.remove(log.files[0]);
  await Deno.remove(log.files[1]);
  const start = await firstSeq(log.files[2]);
  const whole = await verifyAuditLog(log.logPath, log.head.head);
  assert.equal(whole.problems.length, 1, JSON.stringify(whole.problems));
  assert.match(
    whole.problems[0].what,
    new RegExp(
      `which is missing \\(if it was archived, check from this line on: --from-seq ${start}\\)$`,
    ),
  );

  const from = await verifyAuditLog(log.logPath, log.head.head, { fromSeq: start });
  assert.deepEqual(from.problems, []);
  assert.equal(from.files, log.files.length - 2);
  assert.equal(from.lines, log.head.head!.seq - start + 1);
  assert.equal(from.last?.seq, log.head.head!.seq);

  // A seq that was in the archived files: the lines up to the kept ones are missing.
  const early = await verifyAuditLog(log.logPath, log.head.head, { fromSeq: start - 2 });
  assert.deepEqual(early.problems.map((problem) => problem.what), [
    `the first line from seq ${start - 2} on is seq ${start}: the lines of seq ${start - 2} to ${
      start - 1
    } are missing`,
  ]);
  const one = await verifyAuditLog(log.logPath, log.head.head, { fromSeq: start - 1 });
  assert.equal(
    one.problems[0].what,
    `the first line from seq ${start - 1} on is seq ${start}: the line of seq ${
      start - 1
    } is missing`,
  );

  // After the start, an edit is found as before; the end is held by the head as before.
  const kept = await middleFile(log.files.slice(2));
  const original = await lines(kept);
  const edited = original.slice();
  edited[1] = edited[1].replace(/"client":"mr\d"/, '"client":"mr9"');
  await writeLines(kept, edited);
  const broken = await verifyAuditLog(log.logPath, log.head.head, { fromSeq: start });
  assert.deepEqual(broken.problems.map(where), [`${path.basename(kept)}:3`]);
  await writeLines(kept, original);
  const file = log.files.at(-1)!;
  const content = await lines(file);
  await writeLines(file, content.slice(0, -1));
  const cut = await verifyAuditLog(log.logPath, log.head.head, { fromSeq: start });
  assert.deepEqual(cut.problems.map(where), [`audit.jsonl:${content.length - 1}`]);
  assert.match(cut.problems[0].what, /1 line\(s\) were cut from its end/);

  // A start past the log's end checks nothing, and says so.
  const past = await verifyAuditLog(log.logPath, log.head.head, {
    fromSeq: log.head.head!.seq + 5,
  });
  assert.ok(
    past.problems.some((problem) =>
      problem.what ===
        `the log ends at seq ${log.head.head!.seq - 1}, before seq ${
          log.head.head!.seq + 5
        } where the check was to start`
    ),
    JSON.stringify(past.problems),
  );
});

Deno.test("verifyAuditLog() with fromSeq after a recorded audit_mismatch or an edited line no longer reports them", async () => {
  await using log = await sampleLog();
  // An edited middle line of the oldest file breaks the link to the line after it.
  const oldest = log.files[0];
  const content = await lines(oldest);
  content[0] = content[0].replace('"host":"box"', '"host":"bux"');
  await writeLines(oldest, content);
  // The tail cut, found by the server at its next start and recorded.
  const file = log.files.at(-1)!;
  await writeLines(file, (await lines(file)).slice(0, -1));
  const audit = await AuditLog.open({
    path: log.logPath,
    rotateBytes: 0,
    head: log.head,
    log: memoryLog().log,
  });
  await audit.record("server_stopped", { reason: "SIGTERM" });
  await audit.close();
  const whole = await verifyAuditLog(log.logPath, log.head.head);
  assert.equal(whole.problems.length, 2, JSON.stringify(whole.problems));
  assert.equal(where(whole.problems[0]), `${path.basename(oldest)}:2`);
  const mismatch = whole.problems[1];
  assert.match(
    mismatch.what,
    new RegExp(
      `did not match its job store: .* \\(once that is dealt with, check from the line after ` +
        `it: --from-seq ${mismatch.seq! + 1}\\)$`,
    ),
  );

  const after = await verifyAuditLog(log.logPath, log.head.head, { fromSeq: mismatch.seq! + 1 });
  assert.deepEqual(after.problems, []);
  assert.equal(after.lines, 1, "the server_stopped line");
  // The mismatch line itself, checked, is still reported.
  const at = await verifyAuditLog(log.logPath, log.head.head, { fromSeq: mismatch.seq! });
  assert.deepEqual(at.problems.map((problem) => problem.seq), [mismatch.seq]);
});

Deno.test("listAuditFiles() orders rotated files by stamp, then number, the current file last", async () => {
  const dir = await Deno.makeTempDir({ prefix: "recon-audit-files-" });
  try {
    const names = [
      "audit.jsonl",
      "audit.jsonl.20261201T090000Z.10",
      "audit.jsonl.20261201T090000Z.2",
      "audit.jsonl.20261201T090000Z",
      "audit.jsonl.20261130T235959Z",
      "audit.jsonl.20261201T090000Z.02", // not a name recon gives
      "audit.jsonl.bak",
      "other.jsonl.20261201T090000Z",
    ];
    for (const name of names) await Deno.writeTextFile(path.join(dir, name), "");
    const files = await listAuditFiles(path.join(dir, "audit.jsonl"));
    assert.deepEqual(files.map((file) => path.basename(file)), [
      "audit.jsonl.20261130T235959Z",
      "audit.jsonl.20261201T090000Z",
      "audit.jsonl.20261201T090000Z.2",
      "audit.jsonl.20261201T090000Z.10",
      "audit.jsonl",
    ]);
    assert.deepEqual(await listAuditFiles(path.join(dir, "missing", "audit.jsonl")), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readAuditLog() filters by job, client and time, and skips lines that are no record", async () => {
  await using log = await sampleLog();
  const collect = async (filter: Parameters<typeof readAuditLog>[1]) => {
    const events: string[] = [];
    for await (const { record } of readAuditLog(log.logPath, filter)) events.push(record.event);
    return events;
  };
  assert.deepEqual(await collect({ job: JOB_A }), [
    "job_submitted",
    "job_started",
    "job_finished",
    "job_delivered",
  ]);
  assert.deepEqual(await collect({ client: "mr2" }), [
    "handshake_ok",
    "job_submitted",
    "job_cancelled",
    "client_revoked",
  ]);
  assert.deepEqual(await collect({ client: "mr2", job: JOB_B }), [
    "job_submitted",
    "job_cancelled",
  ]);
  const since = await collect({ since: T0 + 8 * 60_000 });
  assert.deepEqual(since.filter((event) => event !== "audit_rotated"), [
    "job_cancelled",
    "client_revoked",
    "connection_refused",
  ]);
  const file = log.files[0];
  await Deno.writeTextFile(file, "not json\n", { append: true });
  const bad: string[] = [];
  let count = 0;
  for await (
    const _ of readAuditLog(log.logPath, {}, (f, l, what) => bad.push(`${f}:${l} ${what}`))
  ) {
    count++;
  }
  assert.equal(count, log.head.head!.seq);
  assert.deepEqual(bad, [
    `${path.basename(file)}:${(await lines(file)).length} not a line of JSON`,
  ]);
});

Deno.test("formatAuditRecord() writes TIME EVENT key=value with inputs summed, safe for a terminal", () => {
  const prev = "0".repeat(64);
  assert.equal(
    formatAuditRecord({
      seq: 3,
      time: "2026-12-01T09:02:00.000Z",
      event: "job_submitted",
      job: JOB_A,
      client: "mr1",
      options: { slices: 3 },
      inputs: [{ name: "a", size: 1_200_000_000, sha256: "a" }, { name: "b", size: 2_000_000 }],
      prev,
    }),
    `2026-12-01T09:02:00.000Z job_submitted job=${JOB_A} client=mr1 options={"slices":3} inputs=2 (1.20 GB)`,
  );
  assert.equal(
    formatAuditRecord({
      seq: 4,
      time: "2026-12-01T09:03:00.000Z",
      event: "job_cancelled",
      by: "mr1",
      reason: "wrong\u001b[31m series\nx",
      key_ids: ["k1", "k2"],
      prev,
    }),
    '2026-12-01T09:03:00.000Z job_cancelled by=mr1 reason="wrong\\u001b[31m series\\nx" key_ids=k1,k2',
  );
  assert.equal(
    formatAuditRecord({ seq: 5, time: "t", event: "x", reason: "\u009b2J", prev }),
    "t x reason=\\x9b2J",
  );
});

Deno.test("parseSince() takes an ISO 8601 time (UTC without an offset) or a time ago", () => {
  const now = T0;
  assert.equal(parseSince("24h", now), now - 86_400_000);
  assert.equal(parseSince("90m", now), now - 5_400_000);
  assert.equal(parseSince("7d", now), now - 7 * 86_400_000);
  assert.equal(parseSince("2026-12-01T08:00:00Z", now), T0 - 3_600_000);
  assert.equal(parseSince("2026-12-01T08:00:00", now), T0 - 3_600_000);
  assert.equal(parseSince("2026-12-01 08:00", now), T0 - 3_600_000);
  assert.equal(parseSince("2026-12-01T10:00:00+02:00", now), T0 - 3_600_000);
  assert.equal(parseSince("2026-12-01", now), Date.UTC(2026, 11, 1));
  for (const bad of ["", "yesterday", "2026-13-45", "12/01/2026", "-1h", "2026-12-01T25:00"]) {
    assert.throws(() => parseSince(bad, now), /--since needs an ISO 8601 time or a time ago/, bad);
  }
});

/** A site whose recon.opts names a state directory with a real job store and log. */
async function preparedSite(): Promise<
  { dir: string; optsPath: string; logPath: string } & AsyncDisposable
> {
  const dir = await Deno.makeTempDir({ prefix: "recon-audit-cli-" });
  const stateDir = path.join(dir, "state");
  const optsPath = path.join(dir, "recon.opts");
  await Deno.writeTextFile(
    optsPath,
    [
      "SHARED_KEY = " + "A".repeat(43) + "=",
      `RECON_FILEPATH = ${path.join(dir, "jobs")}`,
      `RECON_DICOM_DIR = ${path.join(dir, "results")}`,
      `RECON_STATE_DIR = ${stateDir}`,
    ].join("\n") + "\n",
    { mode: 0o600 },
  );
  const store = JobStore.open(stateDir);
  try {
    await writeEvents(path.join(stateDir, "audit.jsonl"), store, 900);
  } finally {
    store.close();
  }
  return {
    dir,
    optsPath,
    logPath: path.join(stateDir, "audit.jsonl"),
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

Deno.test("recon-server audit: --verify, --json --job, the text form and bad arguments, as a subprocess", async () => {
  await using site = await preparedSite();
  const files = await listAuditFiles(site.logPath);
  let total = 0;
  for (const file of files) total += (await lines(file)).length;
  const audit = (...args: string[]) => run(SERVER_BIN, ["audit", "--opts", site.optsPath, ...args]);

  const intact = await audit("--verify");
  assert.equal(intact.code, 0, intact.stderr);
  assert.match(
    intact.stdout,
    new RegExp(
      `^audit log intact: ${total} lines in ${files.length} files, last 2026-12-01T09:10:00\\.000Z\n$`,
    ),
  );

  const json = await audit("--json", "--job", JOB_A);
  assert.equal(json.code, 0, json.stderr);
  const records = JSON.parse(json.stdout);
  assert.deepEqual(records.map((record: { event: string }) => record.event), [
    "job_submitted",
    "job_started",
    "job_finished",
    "job_delivered",
  ]);
  assert.ok(records.every((record: { job: string }) => record.job === JOB_A));
  assert.deepEqual(records[0].inputs[0], {
    name: "P12345.7",
    size: 1_200_000_000,
    sha256: "a".repeat(64),
  });

  const text = await audit("--client", "mr2", "--since", "2026-12-01T09:05:00Z");
  assert.equal(text.code, 0, text.stderr);
  assert.equal(
    text.stdout,
    "2026-12-01T09:08:00.000Z job_cancelled job=" + JOB_B +
      ' client=mr2 by=mr1 reason="wrong series"\n' +
      "2026-12-01T09:09:00.000Z client_revoked client=mr2 key_ids=0a1b2c3d4e5f6071\n",
  );
  const everything = await audit();
  assert.equal(everything.stdout.trimEnd().split("\n").length, total);
  assert.match(everything.stdout, /job_submitted job=\S+ client=mr1 .* inputs=2 \(1\.20 GB\)\n/);

  // An edited middle line: where, and exit 1.
  const file = await middleFile(files);
  const content = await lines(file);
  content[1] = content[1].replace(/"client":"mr\d"/, '"client":"mr9"');
  await writeLines(file, content);
  const broken = await audit("--verify");
  assert.equal(broken.code, 1);
  assert.match(
    broken.stdout,
    new RegExp(
      `^audit log broken at ${file.replace(/[.]/g, "\\.")}:3 \\(seq \\d+\\): its prev is not`,
    ),
  );
  const brokenJson = await audit("--verify", "--json");
  assert.equal(brokenJson.code, 1);
  assert.equal(JSON.parse(brokenJson.stdout).intact, false);
  assert.equal(JSON.parse(brokenJson.stdout).problems[0].line, 3);

  const usage = await audit("--verify", "--job", JOB_A);
  assert.equal(usage.code, 2);
  assert.match(
    usage.stderr,
    /^recon-server: error: --verify checks the whole log; it takes no --job\n/,
  );
  const since = await audit("--since", "yesterday");
  assert.equal(since.code, 2);
  assert.match(since.stderr, /--since needs an ISO 8601 time or a time ago, got "yesterday"/);
  const unknown = await audit("--jobs", JOB_A);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown option --jobs \(did you mean --job\?\)/);
  const help = await run(SERVER_BIN, ["audit", "--help"]);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /recon-server audit --verify/);
  const missing = await run(SERVER_BIN, ["audit", "--opts", path.join(site.dir, "none.opts")]);
  assert.equal(missing.code, 2);

  // A site whose server has not written an audit line yet.
  const fresh = path.join(site.dir, "fresh.opts");
  await Deno.writeTextFile(
    fresh,
    (await Deno.readTextFile(site.optsPath)).replace(
      /RECON_STATE_DIR = .*/,
      "RECON_STATE_DIR = " + path.join(site.dir, "fresh"),
    ),
    { mode: 0o600 },
  );
  const empty = await run(SERVER_BIN, ["audit", "--opts", fresh]);
  assert.deepEqual([empty.code, empty.stdout], [0, ""]);
  assert.match(
    empty.stderr,
    /^recon-server: there is no audit log at .*fresh\/audit\.jsonl yet\n$/,
  );
  const nothing = await run(SERVER_BIN, ["audit", "--verify", "--opts", fresh]);
  assert.deepEqual([nothing.code, nothing.stdout], [0, "audit log intact: 0 lines in 0 files\n"]);
});

Deno.test("recon-server audit --verify --from-seq: archived files, exit 0 with 'from seq N'; bad values are usage errors", async () => {
  await using site = await preparedSite();
  const files = await listAuditFiles(site.logPath);
  const audit = (...args: string[]) => run(SERVER_BIN, ["audit", "--opts", site.optsPath, ...args]);
  // Archived, as DEPLOY.md §9 says: the oldest file moved elsewhere.
  await Deno.rename(files[0], path.join(site.dir, path.basename(files[0])));
  const start = await firstSeq(files[1]);
  const broken = await audit("--verify");
  assert.equal(broken.code, 1);
  assert.match(broken.stdout, new RegExp(`--from-seq ${start}\\)\n$`));

  let kept = 0;
  for (const file of files.slice(1)) kept += (await lines(file)).length;
  const intact = await audit("--verify", "--from-seq", String(start));
  assert.equal(intact.code, 0, intact.stdout + intact.stderr);
  assert.equal(
    intact.stdout,
    `audit log intact from seq ${start}: ${kept} lines in ${files.length - 1} files, ` +
      "last 2026-12-01T09:10:00.000Z\n",
  );
  const json = await audit("--verify", "--json", "--from-seq", String(start));
  assert.equal(json.code, 0);
  assert.deepEqual(
    [JSON.parse(json.stdout).intact, JSON.parse(json.stdout).from_seq],
    [true, start],
  );

  const usage: [string[], string[]][] = [
    [["--from-seq", "3"], [
      "recon-server: error: --from-seq only goes with --verify",
      "hint: recon-server audit --verify --from-seq N [--opts PATH]; to print from a time, --since",
    ]],
    ...["0", "-1", "x", "1.5", ""].map((
      bad,
    ): [string[], string[]] => [["--verify", `--from-seq=${bad}`], [
      `recon-server: error: --from-seq needs the seq of a line, 1 or more, got "${bad}"`,
      "hint: --verify names the seq of each place it finds broken; --json shows every line's",
    ]]),
    [["--job", "nonsense"], [
      'recon-server: error: "nonsense" is not a job id',
      "hint: a job id is a UUID like 0b7f0f2e-3c1a-4b5e-9d2f-6a7b8c9d0e1f; " +
      "'recon-client jobs --all-clients' lists the server's jobs",
    ]],
    [["--client", "MR1"], [
      `recon-server: error: client name "MR1" is not valid: 1 to 63 characters of a-z, 0-9, '.', ` +
      "'_' and '-', starting with a letter or digit",
      "hint: 'recon-server clients list' names them",
    ]],
  ];
  for (const [args, expected] of usage) {
    const result = await audit(...args);
    assert.equal(result.code, 2, args.join(" "));
    assert.deepEqual(result.stderr.trimEnd().split("\n"), expected, args.join(" "));
    assert.equal(result.stdout, "");
  }
  // A job id in capitals is the same job; --client default is SHARED_KEY's.
  const upper = await audit("--job", JOB_A.toUpperCase());
  assert.equal(upper.code, 0, upper.stderr);
  assert.equal(upper.stdout.trimEnd().split("\n").length, 4);
  assert.equal((await audit("--client", "default")).code, 0);
});

Deno.test("recon-server audit warns when the log is gone but the job store records lines of it", async () => {
  await using site = await preparedSite();
  const files = await listAuditFiles(site.logPath);
  const moved = path.join(site.dir, "moved");
  await Deno.mkdir(moved);
  for (const file of files) await Deno.rename(file, path.join(moved, path.basename(file)));
  const head = JSON.parse(
    (await run(SERVER_BIN, ["audit", "--verify", "--json", "--opts", site.optsPath])).stdout,
  );
  assert.equal(head.intact, false);
  const printed = await run(SERVER_BIN, ["audit", "--opts", site.optsPath]);
  assert.deepEqual([printed.code, printed.stdout], [0, ""]);
  let total = 0;
  for (const file of files) total += (await lines(path.join(moved, path.basename(file)))).length;
  assert.equal(
    printed.stderr,
    `recon-server: warning: there is no audit log at ${site.logPath}, but the job store records ` +
      `${total} line(s) written to audit.jsonl; were its files moved or deleted? See ` +
      "'recon-server audit --verify'\n",
  );
});

Deno.test("recon-server --help and audit --help show every option of audit --verify and its exit codes", async () => {
  const main = await run(SERVER_BIN, ["--help"]);
  assert.match(
    main.stdout,
    /^ {2}recon-server audit --verify \[--from-seq N\] \[--opts PATH\] \[--json\]$/m,
  );
  assert.match(
    main.stdout,
    /audit --verify: 1 the audit log\nis broken \(2 when it or the job store cannot be read\)/,
  );
  const help = await run(SERVER_BIN, ["audit", "--help"]);
  assert.match(
    help.stdout,
    /^ {2}recon-server audit --verify \[--from-seq N\] \[--opts PATH\] \[--json\]$/m,
  );
  assert.match(help.stdout, /^ {2}--from-seq N {5}with --verify: check from the line of seq N on/m);
  assert.match(help.stdout, /1 --verify found it broken; 2 usage or configuration error/);
});
