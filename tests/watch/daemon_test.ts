/**
 * The watch loop in-process, with the server unreachable (so nothing leaves the
 * machine) and short delays: what gets recorded as a finished scan, and how it copes
 * with a file that cannot be read, vanishes, shrinks, or changes before it is sent.
 * The real-server behaviour is in e2e_watch_test.ts. "Nothing more happens" is checked
 * after a number of further scans (the loop's `onScanned` hook), never after a sleep.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { ConnectionError, UsageError } from "../../lib/errors.ts";
import { Backoff } from "../../lib/watch/backoff.ts";
import { runWatchDaemon, type WatchDaemonOptions } from "../../lib/watch/daemon.ts";
import { denoProbe, type FileProbe } from "../../lib/watch/probe.ts";
import { StateStore } from "../../lib/watch/state.ts";
import { waitFor } from "../support/e2e.ts";

interface Harness {
  dir: string;
  watchDir: string;
  store: StateStore;
  lines: string[];
  /** Lines matching `pattern`. */
  count(pattern: RegExp): number;
  /** Resolves once the loop has scanned the whole directory `n` more times. */
  scans(n: number): Promise<void>;
  stop(): Promise<void>;
}

async function startDaemon(
  overrides: Partial<WatchDaemonOptions> = {},
  body: (harness: Harness) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "recon_watch_daemon_test_" });
  const watchDir = path.join(dir, "watch");
  await Deno.mkdir(watchDir);
  const store = StateStore.open(path.join(dir, "state.sqlite"));
  const lines: string[] = [];
  const record = (level: string) => (message: string) => lines.push(`${level} ${message}`);
  const controller = new AbortController();
  let scanned = 0;
  const running = runWatchDaemon({
    watchDir,
    pattern: "*.7",
    pollMs: 100,
    stabilityMs: 300,
    groupingMs: 100,
    reconOptions: {},
    downloadDir: path.join(dir, "downloads"),
    onComplete: "",
    store,
    runId: "test-run",
    connect: () =>
      Promise.reject(new ConnectionError("cannot connect to test:1: connection refused")),
    log: {
      debug: record("DEBUG"),
      info: record("INFO"),
      warn: record("WARN"),
      error: record("ERROR"),
    },
    signal: controller.signal,
    backoff: new Backoff({ baseMs: 100, capMs: 200 }),
    onScanned: () => scanned++,
    ...overrides,
  });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    controller.abort();
    await running;
  };
  try {
    await body({
      dir,
      watchDir,
      store,
      lines,
      count: (pattern) => lines.filter((line) => pattern.test(line)).length,
      scans: async (n) => {
        const target = scanned + n;
        await waitFor(`${n} more scan(s)`, () => scanned >= target, { intervalMs: 10 });
      },
      stop,
    });
  } finally {
    await stop().catch(() => {});
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function recorded(store: StateStore, file: string) {
  return store.list().filter((row) => row.path === file);
}

Deno.test("daemon: a file that cannot be read is logged once, the others go on", async () => {
  const locked = new Set<string>();
  const probe: FileProbe = {
    ...denoProbe,
    checkReadable: (file) =>
      locked.has(path.basename(file))
        ? Promise.reject(new Deno.errors.PermissionDenied("Permission denied (os error 13)"))
        : denoProbe.checkReadable(file),
  };
  locked.add("locked.7");
  await startDaemon({ probe }, async ({ watchDir, store, count, scans }) => {
    await Deno.writeTextFile(path.join(watchDir, "locked.7"), "secret");
    await Deno.writeTextFile(path.join(watchDir, "open.7"), "fine");
    await waitFor(
      "open.7 to be recorded",
      () => recorded(store, path.join(watchDir, "open.7")).length,
    );
    await scans(5); // locked.7 was stable long ago: tried again at each scan
    assert.equal(recorded(store, path.join(watchDir, "locked.7")).length, 0);
    assert.equal(
      count(/^WARN cannot read .*locked\.7: permission denied; the other files go on/),
      1,
    );
    locked.clear();
    await waitFor(
      "locked.7 to be recorded once readable",
      () => recorded(store, path.join(watchDir, "locked.7")).length,
    );
    assert.equal(count(/^INFO .*locked\.7 can be read now/), 1);
  });
});

Deno.test("daemon: a file deleted while it was being written is skipped with a log line", async () => {
  await startDaemon({ stabilityMs: 1000 }, async ({ watchDir, store, lines, count, scans }) => {
    const file = path.join(watchDir, "gone.7");
    await Deno.writeTextFile(file, "partial");
    await scans(2); // seen by a whole scan, not yet stable
    await Deno.remove(file);
    await waitFor(
      "the skip line",
      () => count(/gone\.7 disappeared before it was complete; skipped/),
    );
    await scans(12); // scans are >= 100 ms apart: past the 1 s stability delay
    assert.deepEqual(store.list(), [], lines.join("\n"));
  });
});

Deno.test("daemon: a file truncated while it was being written is logged and waited for again", async () => {
  await startDaemon({ stabilityMs: 1000 }, async ({ watchDir, store, count, scans }) => {
    const file = path.join(watchDir, "shrink.7");
    await Deno.writeTextFile(file, "x".repeat(5000));
    await scans(2); // seen by a whole scan, not yet stable
    await Deno.writeTextFile(file, "y".repeat(10));
    await waitFor(
      "the truncation line",
      () => count(/shrink\.7 got smaller \(5000 → 10 bytes\)/),
    );
    const [row] = await waitFor(
      "the final content to be recorded",
      () => recorded(store, file).length > 0 ? recorded(store, file) : undefined,
    );
    assert.equal(row.size, 10);
  });
});

Deno.test("daemon: a pending file deleted before it could be sent is marked skipped", async () => {
  await startDaemon({}, async ({ watchDir, store, count }) => {
    const file = path.join(watchDir, "P1.7");
    await Deno.writeTextFile(file, "scan");
    await waitFor("P1.7 pending", () => recorded(store, file)[0]?.status === "pending");
    await waitFor("a failed attempt", () => count(/connection refused.*retried with backoff/));
    await Deno.remove(file);
    await waitFor("P1.7 skipped", () => recorded(store, file)[0]?.status === "skipped");
    assert.equal(recorded(store, file)[0].reason, "deleted before it was sent");
    assert.equal(count(/^WARN .*P1\.7 was deleted before it was sent; skipped/), 1);
  });
});

Deno.test("daemon: one log line for the unreachable server, not one per attempt", async () => {
  await startDaemon({}, async ({ watchDir, store, count }) => {
    await Deno.writeTextFile(path.join(watchDir, "P1.7"), "scan");
    await waitFor("several attempts", () => (store.list()[0]?.attempts ?? 0) >= 4, {
      timeoutMs: 10_000,
    });
    assert.equal(count(/retried with backoff \(0\.1 s doubling up to 0\.2 s\)/), 1);
    assert.equal(count(/^DEBUG still failing/) >= 3, true);
  });
});

Deno.test("daemon: a file replaced by different content is a new scan; the same content is not", async () => {
  await startDaemon({}, async ({ watchDir, store, count }) => {
    const file = path.join(watchDir, "P1.7");
    await Deno.writeTextFile(file, "first scan");
    await waitFor("first record", () => recorded(store, file).length === 1);
    // Same bytes, new time stamp (e.g. copied again): still the same scan.
    await Deno.utime(file, new Date(), new Date(Date.now() + 60_000));
    await waitFor(
      "the new time stamp to be judged",
      () => count(/P1\.7: new time stamp, same content/),
    );
    assert.equal(recorded(store, file).length, 1);
    // Different bytes under the same name: a new scan, and the unsent old one is skipped.
    await Deno.writeTextFile(file, "second scan, different");
    await waitFor("second record", () => recorded(store, file).length === 2);
    const [first, second] = recorded(store, file);
    assert.equal(first.status, "skipped");
    assert.match(first.reason ?? "", /replaced by a different file/);
    assert.equal(second.status, "pending");
    assert.notEqual(first.sha256, second.sha256);
  });
});

Deno.test("daemon: files that are not regular files or do not match the pattern are ignored", async () => {
  await startDaemon({}, async ({ watchDir, store, scans }) => {
    await Deno.mkdir(path.join(watchDir, "dir.7"));
    await Deno.writeTextFile(path.join(watchDir, "notes.txt"), "x");
    await Deno.writeTextFile(path.join(watchDir, "P9.7"), "x");
    await waitFor("P9.7 recorded", () => store.list().length === 1);
    await scans(5); // past the stability delay for anything written with P9.7
    assert.deepEqual(store.list().map((row) => path.basename(row.path)), ["P9.7"]);
  });
});

Deno.test("daemon: a watch directory that does not exist is a usage error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "recon_watch_daemon_test_" });
  const store = StateStore.open(path.join(dir, "state.sqlite"));
  try {
    await assert.rejects(
      runWatchDaemon({
        watchDir: path.join(dir, "missing"),
        pattern: "*.7",
        pollMs: 100,
        stabilityMs: 100,
        groupingMs: 100,
        reconOptions: {},
        downloadDir: dir,
        onComplete: "",
        store,
        runId: "r",
        connect: () => Promise.reject(new Error("unused")),
        log: { debug() {}, info() {}, warn() {}, error() {} },
        signal: new AbortController().signal,
      }),
      (error: Error) =>
        error instanceof UsageError &&
        error.message === `cannot watch ${path.join(dir, "missing")}: no such file or directory`,
    );
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
