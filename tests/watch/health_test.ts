/**
 * `watch --status`'s health check: each check on its own and together (the lowest
 * exit code wins), notes of another run ignored, thresholds turned off, the duration
 * flags' hostile inputs, the text and JSON lines, the Prometheus output (checked by
 * promtool), and exit 11 from a real `--status` while a process holds the lock but
 * its heartbeat is old.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { generateKey } from "../../lib/crypto/keys.ts";
import { UsageError } from "../../lib/errors.ts";
import {
  assessHealth,
  DEFAULT_MAX_BACKOFF_MS,
  DEFAULT_MAX_WAITING_MS,
  formatDuration,
  HEALTH_CHECKS,
  HealthExit,
  type HealthInput,
  NOT_SCANNING_MIN_MS,
  parseLimit,
} from "../../lib/watch/health.ts";
import { WatcherLock } from "../../lib/watch/lock.ts";
import {
  type FileRecord,
  HEARTBEAT_KEY,
  SERVER_TROUBLE_KEY,
  StateStore,
} from "../../lib/watch/state.ts";
import { statusJson, statusText } from "../../lib/watch/status.ts";
import { statusMetrics } from "../../lib/watch/status_metrics.ts";
import { CLIENT_BIN, run, type RunResult } from "../support/e2e.ts";

const NOW = new Date("2026-11-23T12:00:00.000Z");
const ago = (ms: number) => new Date(NOW.getTime() - ms).toISOString();
const MIN = 60_000;

function row(id: number, extra: Partial<FileRecord>): FileRecord {
  return {
    id,
    path: `/scans/P${id}.7`,
    size: 1000,
    mtimeMs: 1,
    ino: id,
    sha256: "ab".repeat(32),
    status: "pending",
    groupId: `g${id}`,
    jobId: null,
    phase: null,
    reason: null,
    resultDir: null,
    runId: null,
    attempts: 0,
    firstSeen: ago(2 * 60 * MIN),
    updatedAt: ago(MIN),
    waitingSince: ago(MIN),
    ...extra,
  };
}

/** A running watcher (run "r1") that scanned a second ago and reaches the server. */
function running(extra: Partial<HealthInput> = {}): HealthInput {
  return {
    watcherRunning: true,
    stateFileExists: true,
    runId: "r1",
    pid: 4242,
    startedAt: ago(60 * MIN),
    heartbeat: { runId: "r1", at: ago(1000), pollMs: 10_000 },
    files: [],
    now: NOW,
    limits: { maxWaitingMs: DEFAULT_MAX_WAITING_MS, maxBackoffMs: DEFAULT_MAX_BACKOFF_MS },
    ...extra,
  };
}

const trouble = (sinceMs: number, runId = "r1") => ({
  runId,
  since: ago(sinceMs),
  failures: 9,
  lastError: "cannot connect to recon:60000: connection refused",
  lastAttemptAt: ago(10_000),
  nextAttemptAt: ago(-60_000),
});

const checks = (input: HealthInput) => assessHealth(input).problems.map((p) => p.check);

Deno.test("assessHealth() finds a running watcher that scans, reaches the server and has nothing old waiting healthy", () => {
  const health = assessHealth(running({ files: [row(1, {}), row(2, { status: "done" })] }));
  assert.equal(health.ok, true);
  assert.equal(health.exitCode, 0);
  assert.deepEqual(health.problems, []);
  assert.deepEqual(health.watcher, {
    running: true,
    pid: 4242,
    startedAt: ago(60 * MIN),
    lastScanAt: ago(1000),
    listError: null,
  });
  assert.equal(health.server, null);
  assert.deepEqual(health.waiting, {
    count: 1,
    overLimit: 0,
    oldest: { path: "/scans/P1.7", status: "pending", since: ago(MIN), ageMs: MIN },
  });
  assert.equal(health.limits.notScanningMs, NOT_SCANNING_MIN_MS);
});

Deno.test("assessHealth() says not_running (10): never started, stopped or crashed, and stopped by itself", () => {
  const never = assessHealth({
    watcherRunning: false,
    stateFileExists: false,
    files: [],
    now: NOW,
    limits: { maxWaitingMs: null, maxBackoffMs: null },
  });
  assert.equal(never.exitCode, HealthExit.NOT_RUNNING);
  assert.equal(
    never.problems[0].message,
    "no watcher is running, and none has run with this state file yet",
  );
  const crashed = assessHealth(running({ watcherRunning: false }));
  assert.equal(crashed.exitCode, 10);
  assert.equal(
    crashed.problems[0].message,
    "no watcher is running (the last one started at 2026-11-23 11:00:00 UTC as pid 4242)",
  );
  assert.equal(crashed.watcher.pid, null, "no pid for a process that is gone");
  assert.equal(crashed.watcher.lastScanAt, null, "a dead watcher's heartbeat says nothing");
  const refused = assessHealth(running({
    watcherRunning: false,
    stopped: { at: ago(MIN), reason: "the server does not accept key id 0123", hint: "fix it" },
  }));
  assert.equal(
    refused.problems[0].message,
    "the watcher stopped by itself at 2026-11-23 11:59:00 UTC: the server does not accept key id 0123",
  );
});

Deno.test("assessHealth() says not_scanning (11) after 10 minutes, or 5 poll intervals, without a complete scan", () => {
  assert.deepEqual(
    checks(running({ heartbeat: { runId: "r1", at: ago(NOT_SCANNING_MIN_MS), pollMs: 10_000 } })),
    [],
    "exactly the limit is not over it",
  );
  const hung = assessHealth(running({
    heartbeat: { runId: "r1", at: ago(NOT_SCANNING_MIN_MS + 1000), pollMs: 10_000 },
  }));
  assert.equal(hung.exitCode, HealthExit.NOT_SCANNING);
  assert.equal(
    hung.problems[0].message,
    "the watcher runs but has made no complete scan for 10 min (limit 10 min): it may hang " +
      "(a network filesystem that does not answer?)",
  );
  const slowPoll = running({ heartbeat: { runId: "r1", at: ago(20 * MIN), pollMs: 5 * MIN } });
  assert.deepEqual(checks(slowPoll), [], "5 polls of 5 min is 25 min");
  assert.equal(assessHealth(slowPoll).limits.notScanningMs, 25 * MIN);
  const unlisted = assessHealth(running({
    heartbeat: {
      runId: "r1",
      at: ago(3 * 60 * MIN),
      pollMs: 10_000,
      listError: "no such file or directory",
    },
  }));
  assert.equal(
    unlisted.problems[0].message,
    "the watcher cannot list its directory: no such file or directory; no complete scan " +
      "for 3 h 00 min (limit 10 min)",
  );
  assert.equal(unlisted.watcher.listError, "no such file or directory");
});

Deno.test("assessHealth() ignores a heartbeat or server note of another run (an older watcher writes none)", () => {
  const input = running({
    heartbeat: { runId: "r0", at: ago(5 * 60 * MIN), pollMs: 10_000 },
    serverTrouble: trouble(5 * 60 * MIN, "r0"),
  });
  const health = assessHealth(input);
  assert.deepEqual(health.problems, []);
  assert.equal(health.server, null);
  assert.equal(health.watcher.lastScanAt, null);
});

Deno.test("assessHealth() says backoff (12) once the server has been unreachable longer than max_backoff", () => {
  const short = assessHealth(running({ serverTrouble: trouble(DEFAULT_MAX_BACKOFF_MS) }));
  assert.deepEqual(short.problems, []);
  assert.equal(short.server?.failures, 9, "shown, not yet a problem");
  const long = assessHealth(running({ serverTrouble: trouble(DEFAULT_MAX_BACKOFF_MS + 1000) }));
  assert.equal(long.exitCode, HealthExit.BACKOFF);
  assert.equal(
    long.problems[0].message,
    "the watcher has not reached the server for 15 min (limit 15 min, 9 failed attempt(s)): " +
      "cannot connect to recon:60000: connection refused",
  );
  const off = running({
    serverTrouble: trouble(30 * 24 * 60 * MIN),
    limits: { maxWaitingMs: null, maxBackoffMs: null },
  });
  assert.deepEqual(checks(off), [], "null turns the check off");
  assert.equal(assessHealth(off).server?.unreachableMs, 30 * 24 * 60 * MIN);
});

Deno.test("assessHealth() says waiting (13) for files pending or uploading longer than max_waiting, not for others", () => {
  const old = ago(DEFAULT_MAX_WAITING_MS + 1000);
  const files = [
    row(1, { waitingSince: ago(DEFAULT_MAX_WAITING_MS) }),
    row(2, { status: "submitted", phase: "uploading", jobId: "j2", waitingSince: old }),
    row(3, { status: "submitted", phase: "running", jobId: "j3", waitingSince: old }),
    row(4, { status: "failed", waitingSince: old }),
    row(5, { status: "baseline", sha256: null, waitingSince: null }),
    row(6, { status: "pending", waitingSince: ago(2 * DEFAULT_MAX_WAITING_MS) }),
  ];
  const health = assessHealth(running({ files }));
  assert.equal(health.exitCode, HealthExit.WAITING);
  assert.deepEqual(health.waiting.count, 3);
  assert.deepEqual(health.waiting.overLimit, 2);
  assert.equal(health.waiting.oldest?.path, "/scans/P6.7");
  assert.equal(
    health.problems[0].message,
    "2 file(s) waiting longer than 60 min to reach the server; the oldest, /scans/P6.7, " +
      "for 2 h 00 min (not sent yet)",
  );
  const uploading = assessHealth(running({ files: [files[1]] }));
  assert.match(uploading.problems[0].message, /\/scans\/P2\.7, for 60 min \(upload not finished\)/);
  assert.deepEqual(
    checks(running({ files, limits: { maxWaitingMs: null, maxBackoffMs: null } })),
    [],
  );
});

Deno.test("assessHealth() lists every problem and exits with the lowest code", () => {
  const files = [row(1, { waitingSince: ago(2 * DEFAULT_MAX_WAITING_MS) })];
  const all = assessHealth(running({
    heartbeat: { runId: "r1", at: ago(60 * MIN), pollMs: 10_000 },
    serverTrouble: trouble(60 * MIN),
    files,
  }));
  assert.deepEqual(all.problems.map((p) => [p.check, p.exitCode]), [
    ["not_scanning", 11],
    ["backoff", 12],
    ["waiting", 13],
  ]);
  assert.equal(all.exitCode, 11);
  const stopped = assessHealth(running({ watcherRunning: false, files }));
  assert.deepEqual(stopped.problems.map((p) => p.check), ["not_running", "waiting"]);
  assert.equal(stopped.exitCode, 10);
  assert.deepEqual(HEALTH_CHECKS.map((c) => c.exitCode), [10, 11, 12, 13]);
  for (const { exitCode } of HEALTH_CHECKS) {
    assert.ok(![0, 1, 2, 3, 4, 5, 130].includes(exitCode), "clear of the client's own codes");
  }
});

Deno.test("parseLimit() takes seconds, s, m, h and d; 0 turns the check off", () => {
  assert.equal(parseLimit("90", "--max-waiting"), 90_000);
  assert.equal(parseLimit("90s", "--max-waiting"), 90_000);
  assert.equal(parseLimit("1.5", "--max-waiting"), 1_500);
  assert.equal(parseLimit("30m", "--max-waiting"), 30 * MIN);
  assert.equal(parseLimit(" 2h ", "--max-waiting"), 120 * MIN);
  assert.equal(parseLimit("1d", "--max-waiting"), 24 * 60 * MIN);
  assert.equal(parseLimit("365d", "--max-waiting"), 365 * 24 * 60 * MIN);
  assert.equal(parseLimit("0", "--max-waiting"), null);
  assert.equal(parseLimit("0m", "--max-backoff"), null);
  for (
    const bad of [
      "",
      " ",
      "-1",
      "1w",
      "1h30m",
      "10 m",
      "1e3",
      "0x10",
      "Infinity",
      "NaN",
      "366d",
      "9999999999",
      "1.",
      ".5",
      "1M",
      "__proto__",
      "5\0",
    ]
  ) {
    assert.throws(
      () => parseLimit(bad, "--max-waiting"),
      (error: unknown) =>
        error instanceof UsageError &&
        error.message === `--max-waiting "${bad}" is not a duration of up to a year`,
      JSON.stringify(bad),
    );
  }
});

Deno.test("formatDuration() reads as seconds, minutes, hours and days", () => {
  assert.equal(formatDuration(-5), "0 s");
  assert.equal(formatDuration(999), "0 s");
  assert.equal(formatDuration(119_999), "119 s");
  assert.equal(formatDuration(120_000), "2 min");
  assert.equal(formatDuration(119 * MIN), "119 min");
  assert.equal(formatDuration(125 * MIN), "2 h 05 min");
  assert.equal(formatDuration(47 * 60 * MIN), "47 h 00 min");
  assert.equal(formatDuration(3 * 24 * 60 * MIN + 4 * 60 * MIN), "3 d 4 h");
});

const REPORT_FILES = [
  row(1, { waitingSince: ago(2 * DEFAULT_MAX_WAITING_MS) }),
  row(2, { status: "done", resultDir: "/dl/j2", jobId: "j2" }),
];

function troubled() {
  return assessHealth(running({ serverTrouble: trouble(20 * MIN), files: REPORT_FILES }));
}

Deno.test("statusText() gives the watcher's pid, the server line, and one problem: line per check that fails", () => {
  const text = statusText({
    stateFile: "/var/lib/recon-client/recon-watch.sqlite",
    stateFileExists: true,
    watcherRunning: true,
    files: REPORT_FILES,
    now: NOW,
    health: troubled(),
  });
  const lines = text.split("\n");
  assert.deepEqual(lines.slice(1, 6), [
    "watcher:    running (pid 4242, started 2026-11-23 11:00:00 UTC; last scan 2026-11-23 11:59:59 UTC)",
    "server:     not reached since 2026-11-23 11:40:00 UTC (20 min, 9 failed attempt(s)): " +
    "cannot connect to recon:60000: connection refused; next attempt 2026-11-23 12:01:00 UTC",
    "health:     2 problem(s), exit 12",
    "problem:    the watcher has not reached the server for 20 min (limit 15 min, 9 failed " +
    "attempt(s)): cannot connect to recon:60000: connection refused",
    "problem:    1 file(s) waiting longer than 60 min to reach the server; the oldest, " +
    "/scans/P1.7, for 2 h 00 min (not sent yet)",
  ]);
  const healthy = statusText({
    stateFile: "/s",
    stateFileExists: true,
    watcherRunning: true,
    files: [],
    now: NOW,
    health: assessHealth(running()),
  });
  assert.match(healthy, /^health: +ok$/m);
  assert.doesNotMatch(healthy, /^(server|problem|directory):/m);
});

Deno.test("statusJson() gives the health with snake_case names, seconds and null for what is off or unknown", () => {
  const document = JSON.parse(statusJson({
    stateFile: "/s",
    stateFileExists: true,
    watcherRunning: true,
    files: REPORT_FILES,
    now: NOW,
    health: assessHealth(
      running({
        serverTrouble: trouble(20 * MIN),
        files: REPORT_FILES,
        limits: { maxWaitingMs: 90_000, maxBackoffMs: null },
      }),
    ),
  }));
  assert.deepEqual(document.health, {
    ok: false,
    exit_code: 13,
    checked_at: "2026-11-23T12:00:00.000Z",
    limits: { max_waiting_s: 90, max_backoff_s: null, not_scanning_s: 600 },
    watcher: {
      running: true,
      pid: 4242,
      started_at: "2026-11-23T11:00:00.000Z",
      last_scan_at: "2026-11-23T11:59:59.000Z",
      list_error: null,
    },
    server: {
      unreachable_since: "2026-11-23T11:40:00.000Z",
      unreachable_s: 1200,
      failures: 9,
      last_error: "cannot connect to recon:60000: connection refused",
      last_attempt_at: "2026-11-23T11:59:50.000Z",
      next_attempt_at: "2026-11-23T12:01:00.000Z",
    },
    waiting: {
      count: 1,
      over_limit: 1,
      oldest: {
        path: "/scans/P1.7",
        status: "pending",
        since: "2026-11-23T10:00:00.000Z",
        age_s: 7200,
      },
    },
    problems: [{
      check: "waiting",
      exit_code: 13,
      message: "1 file(s) waiting longer than 90 s to reach the server; the oldest, " +
        "/scans/P1.7, for 2 h 00 min (not sent yet)",
    }],
  });
});

/** `promtool check metrics` on `text`; promtool must be there (never skipped). */
async function promtoolCheck(text: string): Promise<void> {
  let result: RunResult;
  try {
    result = await run("promtool", ["check", "metrics"], { stdin: text });
  } catch (error) {
    throw new Error(
      `promtool is needed (Debian package prometheus; scripts/ensure-test-deps): ${error}`,
    );
  }
  assert.equal(result.code, 0, `promtool check metrics:\n${result.stdout}${result.stderr}`);
}

Deno.test("statusMetrics() gives every check and status, passes promtool, and escapes the state file label", async () => {
  const hostile = '/var/lib/a "quoted" \\ dir\nx/recon-watch.sqlite';
  const text = statusMetrics({
    stateFile: hostile,
    stateFileExists: true,
    watcherRunning: true,
    files: REPORT_FILES,
    now: NOW,
    health: troubled(),
  });
  const label = 'state_file="/var/lib/a \\"quoted\\" \\\\ dir\\nx/recon-watch.sqlite"';
  assert.equal(text.split("\n").filter((line) => line.includes("\n")).length, 0);
  for (
    const line of [
      `recon_watch_up{${label}} 1`,
      `recon_watch_healthy{${label}} 0`,
      `recon_watch_problem{${label},check="not_running"} 0`,
      `recon_watch_problem{${label},check="not_scanning"} 0`,
      `recon_watch_problem{${label},check="backoff"} 1`,
      `recon_watch_problem{${label},check="waiting"} 1`,
      `recon_watch_files{${label},status="pending"} 1`,
      `recon_watch_files{${label},status="done"} 1`,
      `recon_watch_files{${label},status="baseline"} 0`,
      `recon_watch_waiting_files{${label}} 1`,
      `recon_watch_oldest_waiting_seconds{${label}} 7200`,
      `recon_watch_server_unreachable_seconds{${label}} 1200`,
      `recon_watch_server_failed_attempts{${label}} 9`,
      `recon_watch_start_time_seconds{${label}} ${Date.parse("2026-11-23T11:00:00Z") / 1000}`,
      `recon_watch_last_scan_timestamp_seconds{${label}} ${
        Date.parse("2026-11-23T11:59:59Z") / 1000
      }`,
    ]
  ) {
    assert.ok(text.split("\n").includes(line), `${line}\nin\n${text}`);
  }
  await promtoolCheck(text);
  const stopped = statusMetrics({
    stateFile: "/s",
    stateFileExists: false,
    watcherRunning: false,
    files: [],
    now: NOW,
    health: assessHealth({
      watcherRunning: false,
      stateFileExists: false,
      files: [],
      now: NOW,
      limits: { maxWaitingMs: null, maxBackoffMs: null },
    }),
  });
  assert.doesNotMatch(stopped, /start_time|last_scan/, "no time stamps that are not known");
  await promtoolCheck(stopped);
});

Deno.test("watch --status exits 11 while a live process holds the lock but the heartbeat of its run is old", async () => {
  const dir = await Deno.makeTempDir({ prefix: "recon_watch_health_test_" });
  try {
    const statePath = path.join(dir, "recon-watch.sqlite");
    const optsPath = path.join(dir, "recon.opts");
    await Deno.mkdir(path.join(dir, "watch"));
    await Deno.writeTextFile(
      optsPath,
      `SHARED_KEY = ${generateKey()}\nCLIENT_WATCH_DIRECTORY = ${path.join(dir, "watch")}\n` +
        `CLIENT_DAEMON_STATE_FILE = ${statePath}\n`,
      { mode: 0o600 },
    );
    const store = StateStore.open(statePath);
    const at = new Date(Date.now() - 12 * MIN).toISOString();
    try {
      store.setMeta("run_id", "r1");
      store.setMeta("pid", String(Deno.pid));
      store.setMeta("started_at", at);
      store.setMeta(
        HEARTBEAT_KEY,
        JSON.stringify({ runId: "r1", at, pollMs: 10_000, listError: "input/output error" }),
      );
      store.setMeta(
        SERVER_TROUBLE_KEY,
        JSON.stringify({ ...trouble(0), since: new Date(Date.now() - 1000).toISOString() }),
      );
    } finally {
      store.close();
    }
    const status = (...args: string[]) =>
      run(CLIENT_BIN, ["watch", "--opts", optsPath, "--status", ...args]);
    const free = await status();
    assert.equal(free.code, 10, `nobody holds the lock: not running\n${free.stdout}`);
    const lock = await WatcherLock.acquire(statePath);
    assert.ok(lock);
    try {
      const text = await status();
      assert.equal(text.code, 11, text.stdout + text.stderr);
      assert.match(text.stdout, new RegExp(`^watcher: +running \\(pid ${Deno.pid}, `, "m"));
      assert.match(text.stdout, /^directory: +cannot be listed: input\/output error$/m);
      assert.match(
        text.stdout,
        /^problem: +the watcher cannot list its directory: input\/output error; no complete scan for 12 min \(limit 10 min\)$/m,
      );
      const json = await status("--json");
      assert.equal(json.code, 11);
      assert.deepEqual(
        JSON.parse(json.stdout).health.problems.map((p: { check: string }) => p.check),
        ["not_scanning"],
        "a server unreachable for a second is no problem yet",
      );
      assert.equal((await status("--exit-zero")).code, 0);
    } finally {
      lock.release();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
