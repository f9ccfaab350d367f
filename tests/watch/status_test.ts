/**
 * `watch --status` output (baseline counted, files being written, a watcher that
 * stopped on a refused key) and what `watch --retry FILE|JOB_ID` selects: a file brings
 * its whole job along, a job id may be a unique prefix, and a retry is refused for a
 * file that changed since or a job the running watcher follows (it takes up every job
 * the server named). A submitted file shows its job's phase.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { UsageError } from "../../lib/errors.ts";
import type { FileProbe, StatResult } from "../../lib/watch/probe.ts";
import { planRetry, statusJson, type StatusReport, statusText } from "../../lib/watch/status.ts";
import { type FileRecord, StateStore } from "../../lib/watch/state.ts";

const JOB_A = "aaaaaaaa-0000-4000-8000-000000000001";
const JOB_B = "bbbbbbbb-0000-4000-8000-000000000002";

/** A probe that says every file is exactly as recorded, except those in `changed`. */
function probeFor(store: StateStore, changed: Set<string> = new Set()): FileProbe {
  return {
    list: () => Promise.resolve([]),
    stat: (file): Promise<StatResult> => {
      const row = store.latest(file);
      if (!row || changed.has(file)) return Promise.resolve({ kind: "gone" });
      return Promise.resolve({
        kind: "file",
        stat: { size: row.size, mtimeMs: row.mtimeMs, ino: row.ino },
      });
    },
    checkReadable: () => Promise.resolve(),
    sha256: () => Promise.resolve(""),
  };
}

async function withStore(body: (store: StateStore) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "recon_watch_status_test_" });
  const store = StateStore.open(path.join(dir, "s.sqlite"), {
    now: () => new Date("2026-11-23T12:00:00.000Z"),
  });
  try {
    await body(store);
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** P1.7 + cal.7 failed together as JOB_A; P2.7 done as JOB_B; P3.7 pending. */
function populate(store: StateStore): Record<string, FileRecord> {
  const add = (name: string, group: string) =>
    store.addPending({
      path: `/scans/${name}`,
      size: 1000,
      mtimeMs: 1_700_000_000_000,
      ino: 1,
      sha256: "cd".repeat(32),
    }, group);
  const p1 = add("P1.7", "g1");
  const cal = add("cal.7", "g1");
  const p2 = add("P2.7", "g2");
  const p3 = add("P3.7", "g3");
  store.markSubmitted([p1.id, cal.id], JOB_A, "old-run");
  store.markFailed([p1.id, cal.id], "the reconstruction script exited with code 3", JOB_A);
  store.markSubmitted([p2.id], JOB_B, "old-run");
  store.markDone([p2.id], JOB_B, `/downloads/${JOB_B}`);
  return { p1, cal, p2, p3 };
}

const options = (store: StateStore, extra = {}) => ({
  watcherRunning: false,
  cwd: "/elsewhere",
  probe: probeFor(store),
  ...extra,
});

Deno.test("planRetry() by FILE takes the whole job the file went with", async () => {
  await withStore(async (store) => {
    const { p1, cal } = populate(store);
    const plan = await planRetry(store, ["/scans/P1.7"], options(store));
    assert.deepEqual(plan.retry.map((r) => r.id), [p1.id, cal.id]);
    assert.deepEqual(plan.alreadyPending, []);
  });
});

Deno.test("planRetry() accepts a bare file name and a path relative to the working directory", async () => {
  await withStore(async (store) => {
    const { p2 } = populate(store);
    assert.deepEqual(
      (await planRetry(store, ["P2.7"], options(store))).retry.map((r) => r.id),
      [p2.id],
    );
    assert.deepEqual(
      (await planRetry(store, ["P2.7"], options(store, { cwd: "/scans" }))).retry.map((r) => r.id),
      [p2.id],
    );
  });
});

Deno.test("planRetry() by JOB_ID, also by a unique prefix of 8 characters", async () => {
  await withStore(async (store) => {
    const { p1, cal } = populate(store);
    for (const selector of [JOB_A, "aaaaaaaa", JOB_A.toUpperCase()]) {
      const plan = await planRetry(store, [selector], options(store));
      assert.deepEqual(plan.retry.map((r) => r.id), [p1.id, cal.id], selector);
    }
  });
});

Deno.test("planRetry() reports a pending file as already pending", async () => {
  await withStore(async (store) => {
    const { p3 } = populate(store);
    const plan = await planRetry(store, ["/scans/P3.7"], options(store));
    assert.deepEqual(plan.retry, []);
    assert.deepEqual(plan.alreadyPending.map((r) => r.id), [p3.id]);
  });
});

Deno.test("planRetry() refuses what matches nothing", async () => {
  await withStore(async (store) => {
    populate(store);
    for (const selector of ["nope.7", "/scans/nope.7", "cccccccc", "short"]) {
      await assert.rejects(
        planRetry(store, [selector], options(store)),
        (error: Error) =>
          error instanceof UsageError && /no recorded file or job/.test(error.message),
        selector,
      );
    }
  });
});

Deno.test("planRetry() refuses a file that changed or vanished since it was recorded", async () => {
  await withStore(async (store) => {
    populate(store);
    await assert.rejects(
      planRetry(store, [JOB_A], {
        ...options(store),
        probe: probeFor(store, new Set(["/scans/cal.7"])),
      }),
      /\/scans\/cal\.7 is gone or changed since it was recorded/,
    );
  });
});

Deno.test("planRetry() refuses a submitted job while a watcher runs, whichever run submitted it", async () => {
  await withStore(async (store) => {
    const p3 = populate(store).p3;
    const job = "cccccccc-0000-4000-8000-000000000003";
    store.markSubmitted([p3.id], job, "an-earlier-run");
    store.setPhase([p3.id], job, "running");
    await assert.rejects(
      planRetry(store, ["/scans/P3.7"], options(store, { watcherRunning: true })),
      (error: Error) =>
        error instanceof UsageError &&
        error.message ===
          `job ${job} (/scans/P3.7) is running and followed by the running watcher` &&
        /stop the watcher first/.test(error.hint ?? ""),
    );
    // With no watcher running a person may send the files as a new job.
    const plan = await planRetry(store, [job], options(store));
    assert.deepEqual(plan.retry.map((r) => r.id), [p3.id]);
  });
});

function report(files: FileRecord[], running = true): StatusReport {
  return {
    stateFile: "/etc/recon/recon-watch.sqlite",
    stateFileExists: true,
    watcherRunning: running,
    files,
  };
}

Deno.test("statusText() lists status, job, size, file and note, with a summary", async () => {
  await withStore((store) => {
    populate(store);
    const text = statusText(report(store.list()));
    assert.match(text, /^state file: \/etc\/recon\/recon-watch\.sqlite$/m);
    assert.match(text, /^watcher: +running$/m);
    assert.match(text, /^STATUS +PHASE +UPDATED \(UTC\) +JOB ID +SIZE +FILE +NOTE$/m);
    assert.match(
      text,
      new RegExp(
        `^failed +- +2026-11-23 12:00:00 +${JOB_A} +1\\.00 kB +/scans/P1\\.7 +the reconstruction script exited with code 3$`,
        "m",
      ),
    );
    assert.match(text, new RegExp(`^done .* /scans/P2\\.7 +results in /downloads/${JOB_B}$`, "m"));
    assert.match(text, /^pending .* - +1\.00 kB +\/scans\/P3\.7$/m);
    assert.match(text, /^4 file\(s\): 1 pending, 1 done, 2 failed$/m);
    return Promise.resolve();
  });
});

Deno.test("statusText() for an empty or missing state file says so", () => {
  const text = statusText({ ...report([], false), stateFileExists: false });
  assert.match(text, /\(not created yet\)/);
  assert.match(text, /watcher: +not running/);
  assert.match(text, /no files recorded yet/);
});

Deno.test("statusJson() gives every field with snake_case names and counts", async () => {
  await withStore((store) => {
    populate(store);
    const document = JSON.parse(statusJson(report(store.list())));
    assert.equal(document.watcher_running, true);
    assert.deepEqual(document.counts, {
      pending: 1,
      submitted: 0,
      done: 1,
      failed: 2,
      skipped: 0,
      baseline: 0,
    });
    assert.equal(document.watcher_stopped, null);
    assert.equal(document.first_start, null);
    assert.deepEqual(document.being_written, []);
    assert.deepEqual(Object.keys(document.files[0]).sort(), [
      "attempts",
      "first_seen",
      "group_id",
      "job_id",
      "mtime",
      "path",
      "phase",
      "reason",
      "result_dir",
      "sha256",
      "size",
      "status",
      "updated_at",
      "waiting_since",
    ]);
    assert.equal(document.health, null, "no health judged for this report");
    assert.equal(document.files[0].mtime, new Date(1_700_000_000_000).toISOString());
    return Promise.resolve();
  });
});

Deno.test("statusText() gives sizes in SI units, as the client's progress bar does", async () => {
  await withStore((store) => {
    store.addPending({
      path: "/scans/P1.7",
      size: 3_000_000_000,
      mtimeMs: 1_700_000_000_000,
      ino: 1,
      sha256: "cd".repeat(32),
    }, "g1");
    const text = statusText(report(store.list()));
    assert.match(text, / 3\.00 GB /);
    assert.doesNotMatch(text, /GiB|MiB|KiB/);
    return Promise.resolve();
  });
});

const FIRST_START = {
  at: "2026-11-20T08:00:00.000Z",
  mode: "baseline" as const,
  baseline: 1234,
  sent: 0,
};

const GROWING = {
  path: "/scans/P9.7",
  size: 3 * 1024 * 1024,
  mtimeMs: 1_700_000_000_000,
  seenAt: "2026-11-23T12:00:00.000Z",
  stableAt: "2026-11-23T12:00:05.000Z",
};

Deno.test("statusText() counts baseline files instead of listing them, and shows a file being written", () => {
  const baseline = Array.from({ length: 1234 }, (_, i) => ({
    id: i + 1,
    path: `/scans/old${i}.7`,
    size: 10,
    mtimeMs: 1,
    ino: i,
    sha256: null,
    status: "baseline" as const,
    groupId: `g${i}`,
    jobId: null,
    phase: null,
    reason: null,
    resultDir: null,
    runId: null,
    attempts: 0,
    firstSeen: FIRST_START.at,
    updatedAt: FIRST_START.at,
    waitingSince: null,
  }));
  const text = statusText({
    ...report(baseline),
    firstStart: FIRST_START,
    writing: [GROWING],
    now: new Date("2026-11-23T12:00:02.100Z"),
  });
  assert.match(
    text,
    /^baseline: +1,234 file\(s\) already there at the first start \(2026-11-20 08:00:00 UTC\), recorded and not sent/m,
  );
  assert.doesNotMatch(text, /old1\.7/);
  assert.match(
    text,
    /^writing +- +2026-11-23 12:00:00 +- +3\.15 MB +\/scans\/P9\.7 +being written, stable in 3 s if it stays unchanged$/m,
  );
  assert.match(text, /^1234 file\(s\): 1234 baseline; 1 being written$/m);
  assert.doesNotMatch(text, /no files recorded/);
});

Deno.test("statusText() with only a file being written says so instead of 'no files recorded'", () => {
  const text = statusText({
    ...report([]),
    writing: [GROWING],
    now: new Date("2026-11-23T12:00:09.000Z"),
  });
  assert.match(text, /^writing .*P9\.7 +being written, stable now: about to be recorded$/m);
  assert.match(text, /^no files recorded yet; 1 being written$/m);
});

Deno.test("statusText() and statusJson() say why the watcher stopped by itself", () => {
  const stopped = {
    at: "2026-11-23T12:30:00.000Z",
    reason: "handshake with scanner:60000 failed: the server does not accept key id " +
      "0123456789abcdef; the watcher stopped instead of retrying",
    hint: "set SHARED_KEY in recon.opts to a key the server accepts, then start the watcher again",
  };
  const text = statusText({ ...report([], false), stopped });
  assert.match(
    text,
    /^watcher: +not running: stopped 2026-11-23 12:30:00 UTC: .*does not accept key id 0123456789abcdef; the watcher stopped instead of retrying$/m,
  );
  assert.match(text, /^ +set SHARED_KEY in recon\.opts/m);
  const document = JSON.parse(
    statusJson({ ...report([], false), stopped, firstStart: FIRST_START, writing: [GROWING] }),
  );
  assert.deepEqual(document.watcher_stopped, stopped);
  assert.deepEqual(document.first_start, FIRST_START);
  assert.equal(document.being_written.length, 1);
  assert.deepEqual(Object.keys(document.being_written[0]).sort(), [
    "mtime",
    "path",
    "seen_at",
    "size",
    "stable_at",
    "stable_in_s",
  ]);
});

Deno.test("planRetry() takes a baseline file alone (its group is its own)", async () => {
  await withStore(async (store) => {
    store.addBaseline([
      { path: "/scans/old1.7", size: 1000, mtimeMs: 1_700_000_000_000, ino: 1 },
      { path: "/scans/old2.7", size: 1000, mtimeMs: 1_700_000_000_000, ino: 1 },
    ], FIRST_START);
    const plan = await planRetry(store, ["old1.7"], options(store));
    assert.deepEqual(plan.retry.map((row) => [row.path, row.status]), [
      ["/scans/old1.7", "baseline"],
    ]);
  });
});

Deno.test("statusText() and statusJson() show the job id and phase of each file in flight", async () => {
  await withStore((store) => {
    const add = (name: string, group: string) =>
      store.addPending({
        path: `/scans/${name}`,
        size: 1000,
        mtimeMs: 1_700_000_000_000,
        ino: 1,
        sha256: "cd".repeat(32),
      }, group).id;
    const phases = ["uploading", "queued", "running", "downloading"] as const;
    phases.forEach((phase, i) => {
      const id = add(`P${i}.7`, `g${i}`);
      const job = `${i}aaaaaaa-0000-4000-8000-00000000000${i}`;
      store.markSubmitted([id], job, "run");
      if (phase !== "uploading") store.setPhase([id], job, phase);
    });
    const text = statusText(report(store.list()));
    assert.match(
      text,
      /^submitted +uploading +2026-11-23 12:00:00 +0aaaaaaa-\S+ +1\.00 kB +\/scans\/P0\.7 +being uploaded \(the server named the job\)$/m,
    );
    assert.match(text, /^submitted +queued .* \/scans\/P1\.7 +queued on the server$/m);
    assert.match(text, /^submitted +running .* \/scans\/P2\.7 +running on the server$/m);
    assert.match(text, /^submitted +downloading .* \/scans\/P3\.7 +results being downloaded$/m);
    // A note (e.g. a lost connection) says more than the phase.
    const [first] = store.list();
    store.noteSubmitted([first.id], first.jobId!, "waiting for the server: connection refused");
    assert.match(
      statusText(report(store.list())),
      /^submitted +uploading .* \/scans\/P0\.7 +waiting for the server: connection refused$/m,
    );
    const document = JSON.parse(statusJson(report(store.list())));
    assert.deepEqual(
      document.files.map((file: { job_id: string; phase: string }) => [file.job_id, file.phase]),
      store.list().map((row, i) => [row.jobId, phases[i]]),
    );
    return Promise.resolve();
  });
});
