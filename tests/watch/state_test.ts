/**
 * The watch mode's state file (SQLite) and its lock: statuses move only the ways the
 * exactly-once rules allow, a submitted job's phase follows it, everything survives
 * reopening, older schemas are moved forward keeping every row (and an upload under
 * way stays one), each waiting file knows since when it waits, a foreign or newer
 * file is refused with a clear message, and one watcher holds the lock at a time.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { ConfigError } from "../../lib/errors.ts";
import { lockPathFor, WatcherLock, watcherRunning } from "../../lib/watch/lock.ts";
import {
  FIRST_START_KEY,
  HEARTBEAT_KEY,
  JOB_PHASES,
  type NewFile,
  SERVER_TROUBLE_KEY,
  STATE_SCHEMA_VERSION,
  StateStore,
} from "../../lib/watch/state.ts";
import { DatabaseSync } from "node:sqlite";

async function withDir(body: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "recon_watch_state_test_" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const fixedClock = () => new Date("2026-11-23T12:00:00.000Z");

function file(name: string, extra: Partial<NewFile> = {}): NewFile {
  return {
    path: `/scans/${name}`,
    size: 100,
    mtimeMs: 1_700_000_000_000,
    ino: 42,
    sha256: "ab".repeat(32),
    ...extra,
  };
}

Deno.test("StateStore records a pending file and reads it back after reopening", async () => {
  await withDir((dir) => {
    const statePath = path.join(dir, "state.sqlite");
    let store = StateStore.open(statePath, { now: fixedClock });
    const added = store.addPending(file("P1.7"), "g1");
    assert.equal(added.status, "pending");
    assert.equal(added.groupId, "g1");
    assert.equal(added.jobId, null);
    assert.equal(added.firstSeen, "2026-11-23T12:00:00.000Z");
    store.close();
    store = StateStore.open(statePath);
    try {
      assert.deepEqual(store.latest("/scans/P1.7"), added);
      assert.equal(store.latest("/scans/other.7"), undefined);
      assert.deepEqual(store.pendingGroups(), [{ groupId: "g1", files: [added] }]);
    } finally {
      store.close();
    }
  });
});

Deno.test("StateStore groups pending files by group, oldest group first", async () => {
  await withDir((dir) => {
    const store = StateStore.open(path.join(dir, "s.sqlite"));
    try {
      store.addPending(file("a.7"), "g2");
      store.addPending(file("b.7"), "g1");
      store.addPending(file("c.7"), "g2");
      const groups = store.pendingGroups();
      assert.deepEqual(groups.map((g) => g.groupId), ["g2", "g1"]);
      assert.deepEqual(groups[0].files.map((f) => f.path), ["/scans/a.7", "/scans/c.7"]);
    } finally {
      store.close();
    }
  });
});

Deno.test("StateStore: pending → submitted → done, and a done file is never pending again by itself", async () => {
  await withDir((dir) => {
    const store = StateStore.open(path.join(dir, "s.sqlite"));
    try {
      const ids = [store.addPending(file("a.7"), "g").id, store.addPending(file("b.7"), "g").id];
      store.countAttempt(ids);
      store.markSubmitted(ids, "job-1", "run-1");
      let rows = store.byIds(ids);
      assert.deepEqual(rows.map((r) => [r.status, r.jobId, r.runId, r.attempts]), [
        ["submitted", "job-1", "run-1", 1],
        ["submitted", "job-1", "run-1", 1],
      ]);
      assert.deepEqual(store.pendingGroups(), []);
      assert.equal(store.markDone(ids, "job-1", "/dl/job-1"), 2);
      rows = store.byIds(ids);
      assert.deepEqual(rows.map((r) => [r.status, r.resultDir]), [
        ["done", "/dl/job-1"],
        ["done", "/dl/job-1"],
      ]);
      // Late messages about the job change nothing any more.
      assert.equal(store.markFailed(ids, "late", "job-1"), 0);
      assert.equal(store.markPendingAgain(ids, "job-1", "late"), 0);
      store.markSkipped(ids[0], "late");
      assert.equal(store.byIds([ids[0]])[0].status, "done");
      assert.deepEqual(store.counts(), {
        pending: 0,
        submitted: 0,
        done: 2,
        failed: 0,
        skipped: 0,
        baseline: 0,
      });
    } finally {
      store.close();
    }
  });
});

Deno.test("StateStore: a job update for another job id leaves the rows alone", async () => {
  await withDir((dir) => {
    const store = StateStore.open(path.join(dir, "s.sqlite"));
    try {
      const ids = [store.addPending(file("a.7"), "g").id];
      store.markSubmitted(ids, "job-1", "run-1");
      assert.equal(store.markDone(ids, "job-2", "/dl"), 0);
      assert.equal(store.markFailed(ids, "x", "job-2"), 0);
      assert.equal(store.byIds(ids)[0].status, "submitted");
    } finally {
      store.close();
    }
  });
});

Deno.test("StateStore: failed keeps its reason and job id; a refusal before queueing has no job id", async () => {
  await withDir((dir) => {
    const store = StateStore.open(path.join(dir, "s.sqlite"));
    try {
      const a = store.addPending(file("a.7"), "g1").id;
      const b = store.addPending(file("b.7"), "g2").id;
      store.markSubmitted([a], "job-1", "run");
      store.markFailed([a], "the reconstruction script exited with code 3", "job-1");
      store.markFailed([b], "the server refused the job: too big", null);
      const [rowA, rowB] = store.byIds([a, b]);
      assert.deepEqual([rowA.status, rowA.jobId, rowA.reason], [
        "failed",
        "job-1",
        "the reconstruction script exited with code 3",
      ]);
      assert.deepEqual([rowB.status, rowB.jobId], ["failed", null]);
    } finally {
      store.close();
    }
  });
});

Deno.test("StateStore: a confirmed cancellation makes the files pending again without job id", async () => {
  await withDir((dir) => {
    const store = StateStore.open(path.join(dir, "s.sqlite"));
    try {
      const ids = [store.addPending(file("a.7"), "g").id];
      store.markSubmitted(ids, "job-1", "run");
      assert.equal(store.markPendingAgain(ids, "job-1", "cancelled at stop"), 1);
      const [row] = store.byIds(ids);
      assert.deepEqual([row.status, row.jobId, row.runId, row.reason], [
        "pending",
        null,
        null,
        "cancelled at stop",
      ]);
      assert.deepEqual(store.pendingGroups().map((g) => g.groupId), ["g"]);
    } finally {
      store.close();
    }
  });
});

Deno.test("StateStore: skipped only from pending; notes on pending and submitted rows", async () => {
  await withDir((dir) => {
    const store = StateStore.open(path.join(dir, "s.sqlite"));
    try {
      const a = store.addPending(file("a.7"), "g").id;
      const b = store.addPending(file("b.7"), "g").id;
      store.notePending([a], "waiting");
      store.markSkipped(a, "deleted before it was sent");
      store.markSubmitted([b], "job-1", "run");
      store.noteSubmitted([b], "job-1", "connection lost");
      const [rowA, rowB] = store.byIds([a, b]);
      assert.deepEqual([rowA.status, rowA.reason], ["skipped", "deleted before it was sent"]);
      assert.deepEqual([rowB.status, rowB.reason], ["submitted", "connection lost"]);
    } finally {
      store.close();
    }
  });
});

Deno.test("StateStore.retry() makes rows pending again and clears job, result and note", async () => {
  await withDir((dir) => {
    const store = StateStore.open(path.join(dir, "s.sqlite"));
    try {
      const ids = [store.addPending(file("a.7"), "g").id, store.addPending(file("b.7"), "g").id];
      store.markSubmitted(ids, "job-1", "run");
      store.markFailed(ids, "broken", "job-1");
      assert.equal(store.retry(ids), 2);
      for (const row of store.byIds(ids)) {
        assert.deepEqual([row.status, row.jobId, row.runId, row.resultDir], [
          "pending",
          null,
          null,
          null,
        ]);
        assert.equal(row.groupId, "g", "companions stay together");
      }
      assert.equal(store.retry(ids), 0, "already pending");
    } finally {
      store.close();
    }
  });
});

Deno.test("StateStore.byJobId() finds a job by its id or a unique prefix of 8+ characters", async () => {
  await withDir((dir) => {
    const store = StateStore.open(path.join(dir, "s.sqlite"));
    try {
      const id = store.addPending(file("a.7"), "g").id;
      store.markSubmitted([id], "0123abcd-1111-2222-3333-444455556666", "run");
      assert.equal(store.byJobId("0123abcd-1111-2222-3333-444455556666").length, 1);
      assert.equal(store.byJobId("0123abcd").length, 1);
      assert.equal(store.byJobId("0123abc").length, 0, "7 characters must match exactly");
      assert.equal(store.byJobId("0123abc%").length, 0, "LIKE wildcards are escaped");
      assert.equal(store.byJobId("________").length, 0, "LIKE wildcards are escaped");
    } finally {
      store.close();
    }
  });
});

Deno.test("StateStore.restat() keeps the row and its status for the same content", async () => {
  await withDir((dir) => {
    const store = StateStore.open(path.join(dir, "s.sqlite"));
    try {
      const row = store.addPending(file("a.7"), "g");
      store.restat(row.id, { size: 100, mtimeMs: 5, ino: 43 });
      const [after] = store.byIds([row.id]);
      assert.deepEqual([after.mtimeMs, after.ino, after.status], [5, 43, "pending"]);
    } finally {
      store.close();
    }
  });
});

Deno.test("StateStore keeps meta values", async () => {
  await withDir((dir) => {
    const store = StateStore.open(path.join(dir, "s.sqlite"));
    try {
      assert.equal(store.getMeta("run_id"), undefined);
      store.setMeta("run_id", "r1");
      store.setMeta("run_id", "r2");
      assert.equal(store.getMeta("run_id"), "r2");
    } finally {
      store.close();
    }
  });
});

Deno.test("StateStore refuses a file that is not SQLite, naming it", async () => {
  await withDir(async (dir) => {
    const statePath = path.join(dir, "garbage.sqlite");
    await Deno.writeTextFile(statePath, "this is not a database, just some text\n".repeat(200));
    assert.throws(
      () => StateStore.open(statePath),
      (error: Error) =>
        error instanceof ConfigError && error.message.includes(statePath) &&
        /cannot use state file/.test(error.message),
    );
  });
});

Deno.test("StateStore refuses a state file from a newer schema", async () => {
  await withDir((dir) => {
    const statePath = path.join(dir, "new.sqlite");
    const db = new DatabaseSync(statePath);
    db.exec(`PRAGMA user_version = ${STATE_SCHEMA_VERSION + 1}`);
    db.close();
    assert.throws(() => StateStore.open(statePath), /written by a newer recon/);
  });
});

Deno.test("StateStore refuses a state file in a directory that does not exist", async () => {
  await withDir((dir) => {
    assert.throws(
      () => StateStore.open(path.join(dir, "missing", "s.sqlite")),
      (error: Error) =>
        error instanceof ConfigError && /CLIENT_DAEMON_STATE_FILE/.test(error.hint!),
    );
  });
});

Deno.test("StateStore: two handles on one file (watcher and --retry) see each other's writes", async () => {
  await withDir((dir) => {
    const statePath = path.join(dir, "s.sqlite");
    const watcher = StateStore.open(statePath);
    const cli = StateStore.open(statePath);
    try {
      const row = watcher.addPending(file("a.7"), "g");
      watcher.markSubmitted([row.id], "job-1", "run");
      watcher.markFailed([row.id], "broken", "job-1");
      assert.equal(cli.retry([row.id]), 1);
      assert.deepEqual(watcher.pendingGroups().map((g) => g.groupId), ["g"]);
    } finally {
      watcher.close();
      cli.close();
    }
  });
});

Deno.test("WatcherLock: one holder at a time; watcherRunning() tells; released on release()", async () => {
  await withDir(async (dir) => {
    const statePath = path.join(dir, "s.sqlite");
    assert.equal(await watcherRunning(statePath), false, "no lock file yet");
    const first = await WatcherLock.acquire(statePath);
    assert.ok(first);
    try {
      assert.ok(await Deno.stat(lockPathFor(statePath)));
      assert.equal(await watcherRunning(statePath), true);
      assert.equal(await WatcherLock.acquire(statePath), undefined);
    } finally {
      first.release();
    }
    assert.equal(await watcherRunning(statePath), false);
    const second = await WatcherLock.acquire(statePath);
    assert.ok(second);
    second.release();
  });
});

Deno.test("StateStore read-only (--status) reads a closed or open state file and writes nothing", async () => {
  await withDir(async (dir) => {
    const statePath = path.join(dir, "s.sqlite");
    const writer = StateStore.open(statePath);
    writer.addPending(file("a.7"), "g");
    const whileOpen = StateStore.open(statePath, { readOnly: true });
    assert.equal(whileOpen.list().length, 1);
    whileOpen.close();
    writer.close();
    const afterClose = StateStore.open(statePath, { readOnly: true });
    try {
      assert.equal(afterClose.list().length, 1);
      assert.throws(() => afterClose.setMeta("k", "v"), /readonly/);
    } finally {
      afterClose.close();
    }
    const empty = path.join(dir, "empty.sqlite");
    await Deno.writeFile(empty, new Uint8Array(0));
    assert.throws(
      () => StateStore.open(empty, { readOnly: true }),
      /cannot use state file .*not a recon watch state file/,
    );
  });
});

Deno.test("StateStore.addBaseline() records files as baseline, unhashed, each in its own group, with the first-start note", async () => {
  await withDir((dir) => {
    const store = StateStore.open(path.join(dir, "s.sqlite"), { now: fixedClock });
    try {
      assert.equal(store.firstStart(), undefined, "a new state file has had no first start");
      const note = {
        at: "2026-11-23T12:00:00.000Z",
        mode: "baseline" as const,
        baseline: 2,
        sent: 0,
      };
      store.addBaseline([
        { path: "/scans/old1.7", size: 10, mtimeMs: 1, ino: 5 },
        { path: "/scans/old2.7", size: 20, mtimeMs: 2, ino: 6 },
      ], note);
      const rows = store.list();
      assert.deepEqual(rows.map((r) => [r.path, r.status, r.sha256, r.size]), [
        ["/scans/old1.7", "baseline", null, 10],
        ["/scans/old2.7", "baseline", null, 20],
      ]);
      assert.notEqual(rows[0].groupId, rows[1].groupId);
      assert.deepEqual(store.pendingGroups(), [], "a baseline file is never sent by itself");
      assert.deepEqual(store.firstStart(), note);
      assert.equal(store.counts().baseline, 2);
      // --retry of baseline files named together: pending, in one new group.
      assert.equal(store.retry(rows.map((r) => r.id), "together"), 2);
      assert.deepEqual(store.pendingGroups().map((g) => [g.groupId, g.files.length]), [
        ["together", 2],
      ]);
    } finally {
      store.close();
    }
  });
});

Deno.test("StateStore.setWatching() replaces the files being written; watching() reads them back", async () => {
  await withDir((dir) => {
    const statePath = path.join(dir, "s.sqlite");
    const store = StateStore.open(statePath);
    const reader = StateStore.open(statePath, { readOnly: true });
    try {
      const growing = {
        path: "/scans/P1.7",
        size: 100,
        mtimeMs: 5,
        seenAt: "2026-11-23T12:00:00.000Z",
        stableAt: "2026-11-23T12:00:05.000Z",
      };
      store.setWatching([growing, { ...growing, path: "/scans/P2.7" }]);
      assert.deepEqual(reader.watching().map((w) => w.path), ["/scans/P1.7", "/scans/P2.7"]);
      store.setWatching([{ ...growing, size: 200 }]);
      assert.deepEqual(reader.watching(), [{ ...growing, size: 200 }]);
      store.setWatching([]);
      assert.deepEqual(reader.watching(), []);
    } finally {
      reader.close();
      store.close();
    }
  });
});

Deno.test("StateStore moves a version 1 state file to the current schema, keeping every row, and notes it is no first start", async () => {
  await withDir((dir) => {
    const statePath = path.join(dir, "v1.sqlite");
    const db = new DatabaseSync(statePath);
    // The version 1 schema as shipped before baselines.
    db.exec(`
      CREATE TABLE files (
        id INTEGER PRIMARY KEY, path TEXT NOT NULL, size INTEGER NOT NULL,
        mtime_ms INTEGER NOT NULL, ino INTEGER, sha256 TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'submitted', 'done', 'failed', 'skipped')),
        group_id TEXT NOT NULL, job_id TEXT, reason TEXT, result_dir TEXT, run_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0, first_seen TEXT NOT NULL, updated_at TEXT NOT NULL);
      CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      INSERT INTO files (path, size, mtime_ms, ino, sha256, status, group_id, job_id, result_dir,
        attempts, first_seen, updated_at)
      VALUES ('/scans/a.7', 7, 1, 2, '${"ab".repeat(32)}', 'done', 'g', 'job-1', '/dl/job-1', 1,
        '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:01.000Z');
      INSERT INTO meta VALUES ('run_id', 'old');
      PRAGMA user_version = 1;
    `);
    db.close();
    const readOnly = StateStore.open(statePath, { readOnly: true });
    try {
      assert.equal(readOnly.list().length, 1, "--status reads a version 1 file as it is");
      assert.deepEqual(readOnly.watching(), []);
    } finally {
      readOnly.close();
    }
    const store = StateStore.open(statePath);
    try {
      const [row] = store.list();
      assert.deepEqual(
        [row.path, row.status, row.sha256, row.jobId, row.resultDir, row.attempts],
        ["/scans/a.7", "done", "ab".repeat(32), "job-1", "/dl/job-1", 1],
      );
      assert.equal(store.getMeta("run_id"), "old");
      assert.equal(store.firstStart()?.mode, "upgrade");
      store.addBaseline([{ path: "/scans/b.7", size: 1, mtimeMs: 1, ino: 1 }], store.firstStart()!);
      assert.equal(store.counts().baseline, 1, "the new status is allowed after the move");
      store.setWatching([]);
    } finally {
      store.close();
    }
    const again = new DatabaseSync(statePath);
    try {
      const { user_version: version } = again.prepare("PRAGMA user_version").get() as {
        user_version: number;
      };
      assert.equal(version, STATE_SCHEMA_VERSION);
      const meta = again.prepare("SELECT value FROM meta WHERE key = ?").get(FIRST_START_KEY);
      assert.ok(meta);
    } finally {
      again.close();
    }
  });
});

Deno.test("StateStore: submitted from the job id on, with the phase moving uploading → queued → running → downloading", async () => {
  await withDir((dir) => {
    const statePath = path.join(dir, "s.sqlite");
    const store = StateStore.open(statePath);
    try {
      const ids = [store.addPending(file("a.7"), "g").id, store.addPending(file("b.7"), "g").id];
      assert.equal(store.byIds(ids)[0].phase, null);
      store.markSubmitted(ids, "job-1", "run-1");
      assert.deepEqual(store.byIds(ids).map((r) => [r.status, r.jobId, r.phase]), [
        ["submitted", "job-1", "uploading"],
        ["submitted", "job-1", "uploading"],
      ]);
      assert.deepEqual(store.pendingGroups(), [], "never sent as another job");
      store.noteSubmitted(ids, "job-1", "waiting for the server: connection refused");
      for (const phase of JOB_PHASES.slice(1)) {
        assert.equal(store.setPhase(ids, "job-1", phase), 2);
        assert.deepEqual(store.byIds(ids).map((r) => [r.phase, r.reason]), [
          [phase, null],
          [phase, null],
        ], "a new phase clears the note");
      }
      assert.equal(store.setPhase(ids, "job-2", "queued"), 0, "another job's news");
      assert.equal(store.markDone(ids, "job-1", "/dl/job-1"), 2);
      assert.deepEqual(store.byIds(ids).map((r) => [r.status, r.phase]), [
        ["done", null],
        ["done", null],
      ]);
      assert.equal(store.setPhase(ids, "job-1", "running"), 0, "a done file has no phase");
    } finally {
      store.close();
    }
  });
});

Deno.test("StateStore.submittedJobs() lists each job with its rows and phase; adopt() records the run that follows it", async () => {
  await withDir((dir) => {
    const store = StateStore.open(path.join(dir, "s.sqlite"));
    try {
      const a = store.addPending(file("a.7"), "g1").id;
      const cal = store.addPending(file("cal.7"), "g1").id;
      const b = store.addPending(file("b.7"), "g2").id;
      const c = store.addPending(file("c.7"), "g3").id;
      store.markSubmitted([a, cal], "job-1", "run-1");
      store.markSubmitted([b], "job-2", "run-1");
      store.setPhase([b], "job-2", "downloading");
      store.markSubmitted([c], "job-3", "run-1");
      store.markFailed([c], "broken", "job-3");
      assert.deepEqual(
        store.submittedJobs().map((job) => [
          job.jobId,
          job.groupId,
          job.phase,
          job.files.map((f) => f.id),
        ]),
        [["job-1", "g1", "uploading", [a, cal]], ["job-2", "g2", "downloading", [b]]],
      );
      store.adopt([a, cal], "job-1", "run-2");
      store.adopt([c], "job-3", "run-2");
      assert.deepEqual(store.byIds([a, cal, b, c]).map((r) => r.runId), [
        "run-2",
        "run-2",
        "run-1",
        "run-1",
      ], "only rows still submitted under that job");
    } finally {
      store.close();
    }
  });
});

Deno.test("StateStore: the server no longer holding an upload makes its files pending again, without job or phase", async () => {
  await withDir((dir) => {
    const store = StateStore.open(path.join(dir, "s.sqlite"));
    try {
      const ids = [store.addPending(file("a.7"), "g").id];
      store.markSubmitted(ids, "job-1", "run");
      assert.equal(store.markPendingAgain(ids, "job-1", "the server no longer has it"), 1);
      const [row] = store.byIds(ids);
      assert.deepEqual([row.status, row.jobId, row.phase, row.runId], [
        "pending",
        null,
        null,
        null,
      ]);
      store.markSubmitted(ids, "job-2", "run");
      store.setPhase(ids, "job-2", "queued");
      store.markFailed(ids, "no job job-2 on this server", "job-2");
      assert.deepEqual(
        store.byIds(ids).map((r) => [r.status, r.jobId, r.phase, r.reason]),
        [["failed", "job-2", null, "no job job-2 on this server"]],
      );
      assert.equal(store.retry(ids), 1);
      assert.deepEqual(store.byIds(ids).map((r) => [r.status, r.jobId, r.phase]), [
        ["pending", null, null],
      ]);
    } finally {
      store.close();
    }
  });
});

/** A state file as a schema 2 watcher left it: one file of each kind it knew. */
function writeVersion2(statePath: string): void {
  const db = new DatabaseSync(statePath);
  db.exec(`
    CREATE TABLE files (
      id INTEGER PRIMARY KEY, path TEXT NOT NULL, size INTEGER NOT NULL,
      mtime_ms INTEGER NOT NULL, ino INTEGER, sha256 TEXT,
      status TEXT NOT NULL
        CHECK (status IN ('pending', 'submitted', 'done', 'failed', 'skipped', 'baseline')),
      group_id TEXT NOT NULL, job_id TEXT, reason TEXT, result_dir TEXT, run_id TEXT,
      attempts INTEGER NOT NULL DEFAULT 0, first_seen TEXT NOT NULL, updated_at TEXT NOT NULL);
    CREATE INDEX files_by_path ON files (path, id);
    CREATE INDEX files_by_status ON files (status, group_id);
    CREATE INDEX files_by_job ON files (job_id);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE watching (path TEXT PRIMARY KEY, size INTEGER NOT NULL,
      mtime_ms INTEGER NOT NULL, seen_at TEXT NOT NULL, stable_at TEXT NOT NULL);
    INSERT INTO meta VALUES ('first_start', '{"at":"2026-11-20T08:00:00.000Z","mode":"baseline","baseline":1,"sent":0}');
    PRAGMA user_version = 2;
  `);
  const insert = db.prepare(
    `INSERT INTO files (path, size, mtime_ms, ino, sha256, status, group_id, job_id, reason,
       result_dir, run_id, attempts, first_seen, updated_at)
     VALUES (?, 7, 1, 2, ?, ?, ?, ?, ?, ?, ?, ?, '2026-11-21T00:00:00.000Z', '2026-11-21T00:00:01.000Z')`,
  );
  const sum = "ab".repeat(32);
  insert.run("/scans/done.7", sum, "done", "g1", "job-1", null, "/dl/job-1", "old", 1);
  insert.run("/scans/queued.7", sum, "submitted", "g2", "job-2", null, null, "old", 1);
  insert.run("/scans/pending.7", sum, "pending", "g3", null, "waiting", null, null, 1);
  insert.run("/scans/old.7", null, "baseline", "g4", null, null, null, null, 0);
  db.close();
}

Deno.test("StateStore moves a version 2 state file to the current schema: every row kept, a submitted job is queued (followed, not sent again)", async () => {
  await withDir((dir) => {
    const statePath = path.join(dir, "v2.sqlite");
    writeVersion2(statePath);
    const readOnly = StateStore.open(statePath, { readOnly: true });
    try {
      assert.deepEqual(
        readOnly.list().map((r) => [r.status, r.phase]),
        [["done", null], ["submitted", null], ["pending", null], ["baseline", null]],
        "--status reads a version 2 file as it is (an older watcher may run)",
      );
    } finally {
      readOnly.close();
    }
    const store = StateStore.open(statePath);
    try {
      assert.deepEqual(
        store.list().map((r) => [r.path, r.status, r.jobId, r.phase, r.reason, r.resultDir]),
        [
          ["/scans/done.7", "done", "job-1", null, null, "/dl/job-1"],
          ["/scans/queued.7", "submitted", "job-2", "queued", null, null],
          ["/scans/pending.7", "pending", null, null, "waiting", null],
          ["/scans/old.7", "baseline", null, null, null, null],
        ],
      );
      assert.deepEqual(store.submittedJobs().map((job) => [job.jobId, job.phase]), [
        ["job-2", "queued"],
      ]);
      assert.equal(store.firstStart()?.mode, "baseline", "the first start stays done");
      assert.deepEqual(store.pendingGroups().map((g) => g.groupId), ["g3"]);
      assert.deepEqual(
        store.list().map((r) => r.waitingSince),
        [
          "2026-11-21T00:00:00.000Z",
          "2026-11-21T00:00:00.000Z",
          "2026-11-21T00:00:01.000Z",
          null,
        ],
        "waiting since: a pending row's updated_at, else first_seen; none for baseline",
      );
    } finally {
      store.close();
    }
    const db = new DatabaseSync(statePath);
    try {
      const { user_version: version } = db.prepare("PRAGMA user_version").get() as {
        user_version: number;
      };
      assert.equal(version, STATE_SCHEMA_VERSION);
      assert.throws(
        () => db.exec("UPDATE files SET phase = 'lost' WHERE id = 1"),
        /CHECK constraint failed/,
        "the phase column keeps its CHECK",
      );
    } finally {
      db.close();
    }
    // Opening again changes nothing more.
    const again = StateStore.open(statePath);
    try {
      assert.equal(again.list().length, 4);
    } finally {
      again.close();
    }
  });
});

Deno.test("StateStore: two processes opening a version 2 file at once migrate it once", async () => {
  await withDir((dir) => {
    const statePath = path.join(dir, "v2.sqlite");
    writeVersion2(statePath);
    const first = StateStore.open(statePath);
    const second = StateStore.open(statePath);
    try {
      assert.equal(first.list().length, 4);
      assert.deepEqual(second.list().map((r) => r.phase), [null, "queued", null, null]);
    } finally {
      first.close();
      second.close();
    }
  });
});

/** A state file as a schema 3 watcher left it: an upload under way, a pending file. */
function writeVersion3(statePath: string): void {
  writeVersion2(statePath);
  const db = new DatabaseSync(statePath);
  db.exec(`
    ALTER TABLE files ADD COLUMN phase TEXT
      CHECK (phase IS NULL OR phase IN ('uploading', 'queued', 'running', 'downloading'));
    UPDATE files SET phase = 'uploading', first_seen = '2026-11-20T00:00:00.000Z'
      WHERE status = 'submitted';
    PRAGMA user_version = 3;
  `);
  db.close();
}

Deno.test("StateStore moves a version 3 state file to version 4: an upload stays uploading, and each waiting file gets the time it waits since", async () => {
  await withDir((dir) => {
    const statePath = path.join(dir, "v3.sqlite");
    writeVersion3(statePath);
    const readOnly = StateStore.open(statePath, { readOnly: true });
    try {
      assert.deepEqual(
        readOnly.list().map((r) => [r.status, r.phase, r.waitingSince]),
        [
          ["done", null, "2026-11-21T00:00:00.000Z"],
          ["submitted", "uploading", "2026-11-20T00:00:00.000Z"],
          ["pending", null, "2026-11-21T00:00:01.000Z"],
          ["baseline", null, null],
        ],
        "--status reads a version 3 file as it is, with the same rule as the migration",
      );
    } finally {
      readOnly.close();
    }
    const store = StateStore.open(statePath);
    try {
      assert.deepEqual(
        store.list().map((r) => [r.status, r.phase, r.waitingSince]),
        [
          ["done", null, "2026-11-21T00:00:00.000Z"],
          ["submitted", "uploading", "2026-11-20T00:00:00.000Z"],
          ["pending", null, "2026-11-21T00:00:01.000Z"],
          ["baseline", null, null],
        ],
        "not made queued as a version 2 file's submitted rows are",
      );
      assert.deepEqual(store.submittedJobs().map((job) => job.phase), ["uploading"]);
    } finally {
      store.close();
    }
    const db = new DatabaseSync(statePath);
    try {
      const { user_version: version } = db.prepare("PRAGMA user_version").get() as {
        user_version: number;
      };
      assert.equal(version, 4);
    } finally {
      db.close();
    }
  });
});

Deno.test("StateStore: a file waits from when it is recorded or retried, through its upload, and not from when the server lost the upload", async () => {
  await withDir((dir) => {
    let clock = Date.parse("2026-11-23T10:00:00.000Z");
    const store = StateStore.open(path.join(dir, "s.sqlite"), { now: () => new Date(clock) });
    try {
      const row = store.addPending(
        { path: "/scans/P1.7", size: 1, mtimeMs: 1, ino: 1, sha256: "ab".repeat(32) },
        "g1",
      );
      assert.equal(row.waitingSince, "2026-11-23T10:00:00.000Z");
      clock += 60_000;
      store.notePending([row.id], "waiting for the server: connection refused");
      store.countAttempt([row.id]);
      store.markSubmitted([row.id], "job-1", "run");
      store.noteSubmitted([row.id], "job-1", "connection lost");
      assert.equal(store.byIds([row.id])[0].waitingSince, "2026-11-23T10:00:00.000Z");
      clock += 60_000;
      store.markPendingAgain([row.id], "job-1", "the server no longer has the upload");
      assert.equal(store.byIds([row.id])[0].waitingSince, "2026-11-23T10:00:00.000Z");
      store.markSubmitted([row.id], "job-2", "run");
      store.markFailed([row.id], "the script exited with code 3", "job-2");
      clock += 60_000;
      store.retry([row.id]);
      assert.equal(store.byIds([row.id])[0].waitingSince, "2026-11-23T10:03:00.000Z");
      store.addBaseline([{ path: "/scans/old.7", size: 1, mtimeMs: 1, ino: 2 }], {
        at: "2026-11-23T10:03:00.000Z",
        mode: "baseline",
        baseline: 1,
        sent: 0,
      });
      assert.equal(store.latest("/scans/old.7")?.waitingSince, null);
    } finally {
      store.close();
    }
  });
});

Deno.test("StateStore keeps the heartbeat and the server trouble note in its meta table", async () => {
  await withDir((dir) => {
    const store = StateStore.open(path.join(dir, "s.sqlite"));
    try {
      assert.equal(store.heartbeat(), undefined);
      assert.equal(store.serverTrouble(), undefined);
      const beat = { runId: "r", at: "2026-11-23T10:00:00.000Z", pollMs: 10_000 };
      store.setMeta(HEARTBEAT_KEY, JSON.stringify(beat));
      const trouble = {
        runId: "r",
        since: "2026-11-23T10:00:00.000Z",
        failures: 3,
        lastError: "connection refused",
        lastAttemptAt: "2026-11-23T10:00:07.000Z",
        nextAttemptAt: "2026-11-23T10:00:15.000Z",
      };
      store.setMeta(SERVER_TROUBLE_KEY, JSON.stringify(trouble));
      assert.deepEqual(store.heartbeat(), beat);
      assert.deepEqual(store.serverTrouble(), trouble);
    } finally {
      store.close();
    }
  });
});
