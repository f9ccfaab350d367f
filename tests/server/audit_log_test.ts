/**
 * Tests for lib/server/audit_log.ts: the line format (key order, seq, time, the prev
 * chain), the files' modes, group commit (many concurrent records, few fsyncs),
 * refused input, aggregation of refusals and failed handshakes by minute (an injected
 * clock; the end-of-minute timer; close; the cap on addresses), rotation carrying the
 * chain, and what open finds after a crash (a line past the head is adopted, a cut-off
 * write dropped, a rotation finished) or after tampering (a cut, edited, missing or
 * foreign log is recorded as audit_mismatch).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as path from "node:path";
import type { AuditHead } from "../../lib/server/audit_head.ts";
import { AuditLog, MAX_AGGREGATES } from "../../lib/server/audit_log.ts";
import { listAuditFiles, verifyAuditLog, ZERO_HASH } from "../../lib/server/audit_read.ts";
import { memoryLog } from "../support/memory_log.ts";

const T0 = Date.UTC(2026, 11, 1, 9, 0, 0);

/** A temporary directory removed with `await using`; the log goes in `dir/audit/`. */
async function site(): Promise<{ dir: string; logPath: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "recon-audit-" });
  return {
    dir,
    logPath: path.join(dir, "audit", "audit.jsonl"),
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

/** The job store's part: the head, in memory. */
class MemoryHead {
  head?: AuditHead;
  sets = 0;
  auditHead(): AuditHead | undefined {
    return this.head && { ...this.head };
  }
  setAuditHead(head: AuditHead): void {
    this.head = { ...head };
    this.sets++;
  }
}

/** A clock the test moves by hand. */
function manualClock(start = T0): { now: () => number; advance: (ms: number) => void } {
  let now = start;
  return { now: () => now, advance: (ms) => void (now += ms) };
}

interface Opened extends AsyncDisposable {
  audit: AuditLog;
  lines: string[];
}

async function open(
  logPath: string,
  head: MemoryHead,
  options: { rotateBytes?: number; now?: () => number } = {},
): Promise<Opened> {
  const { lines, log } = memoryLog();
  const audit = await AuditLog.open({
    path: logPath,
    rotateBytes: options.rotateBytes ?? 0,
    head,
    log,
    now: options.now ?? manualClock().now,
  });
  return { audit, lines, [Symbol.asyncDispose]: () => audit.close() };
}

function sha256(text: string): string {
  return createHash("sha256").update(new TextEncoder().encode(text)).digest("hex");
}

/** The lines of a file, without their newlines. */
async function fileLines(file: string): Promise<string[]> {
  const text = await Deno.readTextFile(file);
  assert.ok(text === "" || text.endsWith("\n"), `${file} ends in a newline`);
  return text === "" ? [] : text.slice(0, -1).split("\n");
}

/** Every line of the log, oldest file first. */
async function allLines(logPath: string): Promise<string[]> {
  const lines: string[] = [];
  for (const file of await listAuditFiles(logPath)) lines.push(...await fileLines(file));
  return lines;
}

/** Each line's seq runs 1, 2, …, and its prev is the SHA-256 of the line before. */
function assertChain(lines: string[]): void {
  let prev = ZERO_HASH;
  for (const [index, line] of lines.entries()) {
    const record = JSON.parse(line);
    assert.equal(record.seq, index + 1, line);
    assert.equal(record.prev, prev, line);
    prev = sha256(line);
  }
}

Deno.test("record() writes one line per event: seq, time, event, the fields in order, then prev", async () => {
  await using dir = await site();
  const head = new MemoryHead();
  const clock = manualClock();
  {
    await using log = await open(dir.logPath, head, { now: clock.now });
    await log.audit.record("server_started", { version: "0.1.0", host: "box", pid: 7, clients: 2 });
    clock.advance(1500);
    await log.audit.record("job_submitted", {
      job: "j1",
      client: "mr1",
      address: "10.0.0.5",
      priority: "normal",
      options: { slices: 3 },
      inputs: [{ name: "P1.7", size: 10, sha256: "a".repeat(64) }],
      rerun_of: undefined,
    });
    await log.audit.record("server_stopped");
  }
  const lines = await fileLines(dir.logPath);
  assert.equal(lines.length, 3);
  assert.equal(
    lines[0],
    `{"seq":1,"time":"2026-12-01T09:00:00.000Z","event":"server_started","version":"0.1.0",` +
      `"host":"box","pid":7,"clients":2,"prev":"${ZERO_HASH}"}`,
  );
  assert.deepEqual(Object.keys(JSON.parse(lines[1])), [
    "seq",
    "time",
    "event",
    "job",
    "client",
    "address",
    "priority",
    "options",
    "inputs",
    "prev",
  ]);
  assert.equal(JSON.parse(lines[1]).time, "2026-12-01T09:00:01.500Z");
  assert.equal(
    lines[2],
    `{"seq":3,"time":"2026-12-01T09:00:01.500Z","event":"server_stopped","prev":"${
      sha256(lines[1])
    }"}`,
  );
  assertChain(lines);
  assert.deepEqual(head.head, { file: "audit.jsonl", seq: 3, hash: sha256(lines[2]) });
  assert.equal((await Deno.stat(dir.logPath)).mode! & 0o777, 0o600);
  assert.equal((await Deno.stat(path.dirname(dir.logPath))).mode! & 0o777, 0o700);
});

Deno.test("record() resolves only once its line is written and the head is stored", async () => {
  await using dir = await site();
  const head = new MemoryHead();
  await using log = await open(dir.logPath, head);
  for (let seq = 1; seq <= 5; seq++) {
    await log.audit.record("handshake_ok", { client: "mr1", key_id: "k", address: "10.0.0.5" });
    const lines = await fileLines(dir.logPath);
    assert.equal(lines.length, seq);
    assert.deepEqual(head.head, { file: "audit.jsonl", seq, hash: sha256(lines[seq - 1]) });
  }
});

Deno.test("concurrent record() calls go out together: far fewer fsyncs than lines", async () => {
  await using dir = await site();
  const head = new MemoryHead();
  await using log = await open(dir.logPath, head);
  // 500 events in one turn of the event loop: one write, one fsync.
  await Promise.all(
    Array.from({ length: 500 }, (_, i) => log.audit.record("job_started", { job: `j${i}` })),
  );
  assert.equal(log.audit.syncs, 1);
  assert.equal(head.sets, 1);
  // Events recorded while a write is in flight share the next write.
  const first = log.audit.record("job_started", { job: "first" });
  await Promise.resolve(); // the first write has begun
  const rest = Array.from(
    { length: 100 },
    (_, i) => log.audit.record("job_started", { job: `later${i}` }),
  );
  await Promise.all([first, ...rest]);
  assert.equal(log.audit.syncs, 3);
  const lines = await fileLines(dir.logPath);
  assert.equal(lines.length, 601);
  assertChain(lines);
  // In the order recorded.
  assert.deepEqual(
    lines.slice(500, 503).map((line) => JSON.parse(line).job),
    ["first", "later0", "later1"],
  );
});

Deno.test("record() refuses the chain's own keys, bad event names and fields that are not an object", async () => {
  await using dir = await site();
  const head = new MemoryHead();
  await using log = await open(dir.logPath, head);
  for (const key of ["seq", "time", "event", "prev"]) {
    await assert.rejects(log.audit.record("job_started", { [key]: 1 }), TypeError);
  }
  for (const event of ["", "Job", "job-started", "job started", 'x"', "__proto__ "]) {
    await assert.rejects(log.audit.record(event, {}), TypeError, event);
  }
  for (const fields of [[], null, "text"]) {
    await assert.rejects(
      log.audit.record("job_started", fields as unknown as Record<string, unknown>),
      TypeError,
    );
  }
  await assert.rejects(log.audit.record("job_started", { n: 1n }), TypeError);
  // Field values are data: a newline or a quote in them stays inside the line.
  await log.audit.record("job_started", { job: 'a\n{"seq":99}\u2028', ["__proto__"]: "x" });
  const lines = await fileLines(dir.logPath);
  assert.equal(lines.length, 1);
  assert.equal(JSON.parse(lines[0]).job, 'a\n{"seq":99}\u2028');
  assert.equal(JSON.parse(lines[0]).seq, 1);
});

Deno.test("record() after close() rejects; close() is idempotent", async () => {
  await using dir = await site();
  const log = await open(dir.logPath, new MemoryHead());
  await log.audit.record("server_started", {});
  await Promise.all([log.audit.close(), log.audit.close()]);
  await assert.rejects(log.audit.record("server_stopped", {}), /closed/);
  log.audit.refused("10.0.0.1", "busy"); // ignored, no timer left behind
  await log.audit.close();
  assert.equal((await fileLines(dir.logPath)).length, 1);
});

Deno.test("open() makes a log that others may read or write 0600 again, and says so", async () => {
  await using dir = await site();
  await Deno.mkdir(path.dirname(dir.logPath), { mode: 0o700 });
  await Deno.writeTextFile(dir.logPath, "");
  await Deno.chmod(dir.logPath, 0o644);
  await using log = await open(dir.logPath, new MemoryHead());
  assert.equal((await Deno.stat(dir.logPath)).mode! & 0o777, 0o600);
  assert.ok(
    log.lines.some((line) => /^warn .*mode 644\); made it 0600/.test(line)),
    log.lines.join(),
  );
});

Deno.test("open() refuses a symbolic link at AUDIT_LOG instead of writing through it", async () => {
  await using dir = await site();
  const target = path.join(dir.dir, "elsewhere");
  await Deno.writeTextFile(target, "");
  await Deno.mkdir(path.dirname(dir.logPath));
  await Deno.symlink(target, dir.logPath);
  await assert.rejects(open(dir.logPath, new MemoryHead()));
  assert.equal(await Deno.readTextFile(target), "");
});

Deno.test("refused connections and failed handshakes become one line per address and reason a minute", async () => {
  await using dir = await site();
  const head = new MemoryHead();
  const clock = manualClock(T0 + 1000);
  const log = await open(dir.logPath, head, { now: clock.now });
  log.audit.refused("10.0.0.9", "not in TRUSTEDIPS");
  clock.advance(2000);
  log.audit.refused("10.0.0.9", "not in TRUSTEDIPS");
  log.audit.refused("10.0.0.9", "busy");
  log.audit.handshakeFailed("10.0.0.8", "key not accepted", "3f2a9c0d11e2b4a5");
  clock.advance(5000);
  log.audit.refused("10.0.0.9", "not in TRUSTEDIPS");
  log.audit.handshakeFailed("10.0.0.8", "key not accepted", "3f2a9c0d11e2b4a5");
  log.audit.handshakeFailed("10.0.0.8", "handshake timed out");
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(log.audit.syncs, 0, "nothing is written within the minute");
  // The next minute: the first event of it writes out the last one's counts.
  clock.advance(60_000);
  log.audit.refused("10.0.0.9", "not in TRUSTEDIPS");
  await log.audit.close(); // flushes the new minute's count
  const records = (await fileLines(dir.logPath)).map((line) => JSON.parse(line));
  const summary = records.map(({ seq: _s, time: _t, prev: _p, ...rest }) => rest);
  assert.deepEqual(summary, [
    {
      event: "connection_refused",
      address: "10.0.0.9",
      reason: "not in TRUSTEDIPS",
      count: 3,
      first: "2026-12-01T09:00:01.000Z",
      last: "2026-12-01T09:00:08.000Z",
    },
    {
      event: "connection_refused",
      address: "10.0.0.9",
      reason: "busy",
      count: 1,
      first: "2026-12-01T09:00:03.000Z",
      last: "2026-12-01T09:00:03.000Z",
    },
    {
      event: "handshake_failed",
      address: "10.0.0.8",
      reason: "key not accepted",
      key_id: "3f2a9c0d11e2b4a5",
      count: 2,
      first: "2026-12-01T09:00:03.000Z",
      last: "2026-12-01T09:00:08.000Z",
    },
    {
      event: "handshake_failed",
      address: "10.0.0.8",
      reason: "handshake timed out",
      count: 1,
      first: "2026-12-01T09:00:08.000Z",
      last: "2026-12-01T09:00:08.000Z",
    },
    {
      event: "connection_refused",
      address: "10.0.0.9",
      reason: "not in TRUSTEDIPS",
      count: 1,
      first: "2026-12-01T09:01:08.000Z",
      last: "2026-12-01T09:01:08.000Z",
    },
  ]);
  assert.ok(log.audit.syncs <= 2, `${log.audit.syncs} fsyncs for 5 lines`);
});

Deno.test("the minute's counts are written by a timer at the minute's end, without another event", async () => {
  await using dir = await site();
  const head = new MemoryHead();
  // A clock 40 ms before the end of a minute that runs with real time.
  const start = Date.now();
  const now = () => T0 + 60_000 - 40 + (Date.now() - start);
  await using log = await open(dir.logPath, head, { now });
  log.audit.refused("192.0.2.1", "busy");
  log.audit.refused("192.0.2.1", "busy");
  const deadline = Date.now() + 5000;
  while (head.head === undefined && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const lines = await fileLines(dir.logPath);
  assert.equal(lines.length, 1);
  assert.equal(JSON.parse(lines[0]).count, 2);
});

Deno.test("a flood from more addresses than MAX_AGGREGATES is counted in one more line", async () => {
  await using dir = await site();
  const clock = manualClock();
  {
    await using log = await open(dir.logPath, new MemoryHead(), { now: clock.now });
    for (let i = 0; i < MAX_AGGREGATES + 500; i++) {
      log.audit.refused(`10.${i >> 16 & 255}.${i >> 8 & 255}.${i & 255}`, "not in TRUSTEDIPS");
    }
    log.audit.refused("10.0.0.1", "not in TRUSTEDIPS"); // already counted: its own line
  }
  const records = (await fileLines(dir.logPath)).map((line) => JSON.parse(line));
  assert.equal(records.length, MAX_AGGREGATES + 1);
  assert.equal(records[1].count, 2);
  assert.deepEqual(
    { address: records.at(-1).address, reason: records.at(-1).reason, count: records.at(-1).count },
    { address: "*", reason: "other", count: 500 },
  );
});

Deno.test("rotation renames the file and carries the chain into the next one", async () => {
  await using dir = await site();
  const head = new MemoryHead();
  const clock = manualClock();
  const rotateBytes = 700;
  {
    await using log = await open(dir.logPath, head, { rotateBytes, now: clock.now });
    for (let i = 0; i < 12; i++) {
      await log.audit.record("job_started", { job: `job-${i}`, client: "mr1", attempt: 1 });
      if (i === 5) clock.advance(1000);
    }
  }
  const files = await listAuditFiles(dir.logPath);
  assert.deepEqual(files.map((file) => path.basename(file)), [
    "audit.jsonl.20261201T090000Z",
    "audit.jsonl.20261201T090000Z.1",
    "audit.jsonl.20261201T090001Z",
    "audit.jsonl.20261201T090001Z.1",
    "audit.jsonl.20261201T090001Z.2",
    "audit.jsonl",
  ]);
  const lines = await allLines(dir.logPath);
  assertChain(lines);
  for (const [index, file] of files.entries()) {
    assert.ok((await Deno.stat(file)).size <= rotateBytes, file);
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
    if (index === 0) continue;
    const first = JSON.parse((await fileLines(file))[0]);
    const before = (await fileLines(files[index - 1])).at(-1)!;
    assert.equal(first.event, "audit_rotated");
    assert.equal(first.previous_file, path.basename(files[index - 1]));
    assert.equal(first.previous_seq, JSON.parse(before).seq);
    assert.equal(first.prev, sha256(before));
  }
  assert.equal(lines.filter((line) => JSON.parse(line).event === "job_started").length, 12);
  assert.equal(head.head!.seq, lines.length);
  const verification = await verifyAuditLog(dir.logPath, head.head);
  assert.deepEqual(verification.problems, []);
});

Deno.test("open() goes on from the last line: seq and prev continue after a restart", async () => {
  await using dir = await site();
  const head = new MemoryHead();
  for (let start = 0; start < 3; start++) {
    await using log = await open(dir.logPath, head);
    await log.audit.record("server_started", { start });
  }
  const lines = await fileLines(dir.logPath);
  assert.equal(lines.length, 3);
  assertChain(lines);
});

Deno.test("open() adopts lines written after the head the job store recorded (a crash between the two)", async () => {
  await using dir = await site();
  const head = new MemoryHead();
  {
    await using log = await open(dir.logPath, head);
    for (let i = 0; i < 3; i++) await log.audit.record("job_started", { job: `j${i}` });
  }
  // The server died after the fsync of two more lines but before storing the head.
  const lines = await fileLines(dir.logPath);
  head.head = { file: "audit.jsonl", seq: 1, hash: sha256(lines[0]) };
  const log = await open(dir.logPath, head);
  await log.audit.record("server_started", {});
  await log.audit.close();
  const after = await fileLines(dir.logPath);
  assert.equal(after.length, 4);
  assertChain(after);
  assert.equal(JSON.parse(after[3]).event, "server_started");
  assert.ok(
    log.lines.some((line) => /^info .*adopted 2 line\(s\)/.test(line)),
    log.lines.join("\n"),
  );
  assert.ok(!log.lines.some((line) => line.startsWith("error")));
  assert.deepEqual((await verifyAuditLog(dir.logPath, head.head)).problems, []);
});

Deno.test("open() drops a line cut off in the middle of a write and goes on from the last whole one", async () => {
  await using dir = await site();
  const head = new MemoryHead();
  {
    await using log = await open(dir.logPath, head);
    await log.audit.record("job_started", { job: "j1" });
  }
  const torn = '{"seq":2,"time":"2026-12-01T09:00:00.000Z","event":"job_st';
  await Deno.writeTextFile(dir.logPath, torn, { append: true });
  const log = await open(dir.logPath, head);
  await log.audit.record("job_started", { job: "j2" });
  await log.audit.close();
  const lines = await fileLines(dir.logPath);
  assert.equal(lines.length, 2);
  assertChain(lines);
  assert.ok(
    log.lines.some((line) => line.includes(`removed ${torn.length} bytes`)),
    log.lines.join("\n"),
  );
  assert.deepEqual((await verifyAuditLog(dir.logPath, head.head)).problems, []);
});

Deno.test("open() finishes a rotation cut short after the rename: the new file starts with audit_rotated", async () => {
  await using dir = await site();
  const head = new MemoryHead();
  {
    await using log = await open(dir.logPath, head);
    await log.audit.record("job_started", { job: "j1" });
  }
  await Deno.rename(dir.logPath, `${dir.logPath}.20261201T090000Z`);
  const log = await open(dir.logPath, head);
  await log.audit.record("job_started", { job: "j2" });
  await log.audit.close();
  const lines = await fileLines(dir.logPath);
  assert.deepEqual(lines.map((line) => JSON.parse(line).event), ["audit_rotated", "job_started"]);
  assert.equal(JSON.parse(lines[0]).previous_file, "audit.jsonl.20261201T090000Z");
  assertChain(await allLines(dir.logPath));
  assert.ok(!log.lines.some((line) => line.startsWith("error")), log.lines.join("\n"));
  assert.deepEqual((await verifyAuditLog(dir.logPath, head.head)).problems, []);
});

/** A log of three lines with its head, then `tamper`, then open() again. */
async function reopenAfter(
  tamper: (logPath: string, lines: string[], head: MemoryHead) => Promise<void> | void,
): Promise<{ lines: string[]; logged: string[]; problems: string[] }> {
  await using dir = await site();
  const head = new MemoryHead();
  {
    await using log = await open(dir.logPath, head);
    for (let i = 0; i < 3; i++) await log.audit.record("job_started", { job: `j${i}` });
  }
  await tamper(dir.logPath, await fileLines(dir.logPath), head);
  const log = await open(dir.logPath, head);
  await log.audit.close();
  const verification = await verifyAuditLog(dir.logPath, head.head);
  return {
    lines: await allLines(dir.logPath),
    logged: log.lines,
    problems: verification.problems.map((problem) => problem.what),
  };
}

function mismatchOf(result: { lines: string[]; logged: string[]; problems: string[] }): string {
  const last = JSON.parse(result.lines.at(-1)!);
  assert.equal(last.event, "audit_mismatch");
  assert.ok(result.logged.some((line) => line.startsWith("error ") && line.includes(last.problem)));
  // audit --verify reports it from then on.
  assert.ok(
    result.problems.some((what) => what.includes(last.problem)),
    result.problems.join("\n"),
  );
  return last.problem;
}

Deno.test("open() after the log's end was cut records audit_mismatch, chained from the actual last line", async () => {
  const result = await reopenAfter(async (logPath, lines) => {
    await Deno.writeTextFile(logPath, lines.slice(0, 2).join("\n") + "\n");
  });
  assert.match(mismatchOf(result), /ends at seq 2, but the job store's audit head is at seq 3/);
  assert.equal(result.lines.length, 3);
  assertChain(result.lines);
});

Deno.test("open() after the last line was edited records audit_mismatch", async () => {
  const result = await reopenAfter(async (logPath, lines) => {
    lines[2] = lines[2].replace('"j2"', '"jX"');
    await Deno.writeTextFile(logPath, lines.join("\n") + "\n");
  });
  assert.match(mismatchOf(result), /last line of audit.jsonl \(seq 3\) differs/);
});

Deno.test("open() with the log removed while the head says lines existed records audit_mismatch", async () => {
  const result = await reopenAfter((logPath) => Deno.remove(logPath));
  assert.match(mismatchOf(result), /audit.jsonl is missing or empty, but .* head is at seq 3/);
  assert.equal(result.lines.length, 1);
  assertChain(result.lines);
});

Deno.test("open() with lines the job store has no head for (a new jobs.sqlite) records audit_mismatch", async () => {
  const result = await reopenAfter((_logPath, _lines, head) => {
    head.head = undefined;
  });
  assert.match(mismatchOf(result), /holds lines up to seq 3, but the job store has no audit head/);
});

Deno.test("open() with lines past the head that do not chain to it records audit_mismatch", async () => {
  const result = await reopenAfter(async (logPath, lines, head) => {
    head.head = { file: "audit.jsonl", seq: 1, hash: sha256(lines[0]) };
    lines[1] = lines[1].replace('"j1"', '"jX"'); // line 3's prev no longer matches
    await Deno.writeTextFile(logPath, lines.join("\n") + "\n");
  });
  assert.match(
    mismatchOf(result),
    /goes on past the job store's audit head \(seq 1\), but not from it/,
  );
});

Deno.test("open() with a head for another file name records audit_mismatch", async () => {
  const result = await reopenAfter((_logPath, _lines, head) => {
    head.head = { ...head.head!, file: "old-audit.jsonl" };
  });
  assert.match(mismatchOf(result), /head is for old-audit.jsonl, not audit.jsonl/);
});
