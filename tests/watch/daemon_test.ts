/**
 * The watch loop in-process, with the server unreachable (so nothing leaves the
 * machine) and short delays: what gets recorded as a finished scan, and how it copes
 * with a file that cannot be read, vanishes, shrinks, or changes before it is sent;
 * what the first start does with the files already there; the files being written as
 * `--status` sees them; the stop when the server refuses our key; and the notes for
 * `--status`'s health check (the heartbeat, since when the server cannot be reached).
 * The real-server behaviour is in e2e_watch_test.ts. "Nothing more happens" is checked
 * after a number of further scans (the loop's `onScanned` hook), never after a sleep.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { ConnectionError, KeyRejectedError, UsageError } from "../../lib/errors.ts";
import { Backoff } from "../../lib/watch/backoff.ts";
import {
  runWatchDaemon,
  type WatchDaemonOptions,
  type WatchEnd,
  WATCHING_WRITE_MS,
} from "../../lib/watch/daemon.ts";
import { denoProbe, type FileProbe } from "../../lib/watch/probe.ts";
import { SERVER_TROUBLE_KEY, StateStore } from "../../lib/watch/state.ts";
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
  /** How the current run ended (by stop(), or by itself). */
  ended(): Promise<WatchEnd>;
  /** Stop this run and start another on the same directory and state file. */
  restart(overrides?: Partial<WatchDaemonOptions>): Promise<void>;
}

interface HarnessOptions {
  /** Runs before the first start, e.g. to put files in the directory. */
  setup?: (watchDir: string) => Promise<void>;
}

async function startDaemon(
  overrides: Partial<WatchDaemonOptions> = {},
  body: (harness: Harness) => Promise<void>,
  options: HarnessOptions = {},
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "recon_watch_daemon_test_" });
  const watchDir = path.join(dir, "watch");
  await Deno.mkdir(watchDir);
  await options.setup?.(watchDir);
  const store = StateStore.open(path.join(dir, "state.sqlite"));
  const lines: string[] = [];
  const record = (level: string) => (message: string) => lines.push(`${level} ${message}`);
  let controller = new AbortController();
  let scanned = 0;
  let running: Promise<WatchEnd> = Promise.resolve({ kind: "stopped" });
  let stopped = true;
  const launch = async (extra: Partial<WatchDaemonOptions> = {}) => {
    controller = new AbortController();
    stopped = false;
    let finished = false;
    const from = scanned;
    running = runWatchDaemon({
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
      ...extra,
    });
    running.then(() => finished = true, () => finished = true);
    // Started: the first start's baseline is taken before the first scan, so what the
    // body writes from here on is new.
    await waitFor("the first scan", () => scanned > from || finished, { intervalMs: 10 });
  };
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    controller.abort();
    await running;
  };
  try {
    await launch();
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
      ended: () => running,
      restart: async (extra) => {
        await stop();
        await launch(extra);
      },
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

/** Write `name` in `dir` with a modification time `ageMs` in the past. */
async function oldFile(dir: string, name: string, ageMs: number): Promise<string> {
  const file = path.join(dir, name);
  await Deno.writeTextFile(file, `old scan ${name}`);
  const when = new Date(Date.now() - ageMs);
  await Deno.utime(file, when, when);
  return file;
}

const DAY = 86_400_000;

Deno.test("daemon: the first start records the files already there as baseline and sends only new ones", async () => {
  let old1 = "";
  let old2 = "";
  await startDaemon({}, async ({ watchDir, store, count, scans, restart }) => {
    assert.deepEqual(store.list().map((row) => [path.basename(row.path), row.status]), [
      ["old1.7", "baseline"],
      ["old2.7", "baseline"],
    ]);
    assert.equal(
      count(
        /^INFO first start: 2 existing file\(s\) recorded as baseline, not sent \(use --submit-existing or --since TIME/,
      ),
      1,
    );
    assert.equal(store.firstStart()?.mode, "baseline");
    const fresh = path.join(watchDir, "new.7");
    await Deno.writeTextFile(fresh, "a new scan");
    await waitFor("new.7 pending", () => recorded(store, fresh)[0]?.status === "pending");
    await scans(5); // past the stability delay: nothing else was picked up
    assert.deepEqual(recorded(store, old1).map((row) => row.status), ["baseline"]);
    assert.equal(store.pendingGroups().length, 1);

    // A baseline file that gets new content is a new scan.
    await Deno.writeTextFile(old2, "rescanned under the same name");
    await waitFor("old2.7 as a new scan", () => recorded(store, old2).length === 2);
    assert.deepEqual(recorded(store, old2).map((row) => row.status), ["baseline", "pending"]);
    assert.equal(count(/old2\.7 is complete .*a new scan under a name seen before/), 1);

    // A later start takes no baseline: a file written while stopped is sent, and an
    // explicit first-start choice is reported as ignored.
    await restart({ existing: { mode: "submit-existing" } });
    const whileStopped = path.join(watchDir, "while_stopped.7");
    await Deno.writeTextFile(whileStopped, "arrived between two runs");
    await waitFor(
      "while_stopped.7 pending",
      () => recorded(store, whileStopped)[0]?.status === "pending",
    );
    assert.equal(count(/^INFO first start:/), 1, "one first start only");
    assert.equal(
      count(/^WARN --submit-existing is ignored: it applies to the first start only/),
      1,
    );
    assert.equal(store.counts().baseline, 2);
  }, {
    setup: async (watchDir) => {
      old1 = await oldFile(watchDir, "old1.7", 30 * DAY);
      old2 = await oldFile(watchDir, "old2.7", 2 * DAY);
      await Deno.writeTextFile(path.join(watchDir, "notes.txt"), "not a scan");
    },
  });
});

Deno.test("daemon: a file still written at the first start is sent once it is complete", async () => {
  let file = "";
  await startDaemon({}, async ({ store }) => {
    assert.equal(recorded(store, file)[0].status, "baseline");
    await Deno.writeTextFile(file, " and the rest", { append: true });
    await waitFor("the finished scan", () => recorded(store, file)[1]?.status === "pending");
  }, {
    setup: async (watchDir) => {
      file = path.join(watchDir, "P1.7");
      await Deno.writeTextFile(file, "the first half");
    },
  });
});

Deno.test("daemon: --submit-existing on the first start sends the files already there", async () => {
  await startDaemon(
    { existing: { mode: "submit-existing" } },
    async ({ store, count }) => {
      await waitFor("both pending", () => store.counts().pending === 2);
      assert.equal(store.counts().baseline, 0);
      assert.equal(count(/^INFO first start: --submit-existing: 2 existing file\(s\) are sent/), 1);
      assert.equal(store.firstStart()?.mode, "submit-existing");
    },
    {
      setup: async (watchDir) => {
        await oldFile(watchDir, "a.7", 3 * DAY);
        await oldFile(watchDir, "b.7", 300 * DAY);
      },
    },
  );
});

Deno.test("daemon: --since on the first start sends the files modified since, baselines the older", async () => {
  const since = new Date(Date.now() - 5 * DAY);
  await startDaemon(
    { existing: { mode: "since", since } },
    async ({ store, count, watchDir }) => {
      await waitFor("recent.7 pending", () => store.counts().pending === 1);
      assert.deepEqual(
        store.list().map((row) => [path.basename(row.path), row.status]).sort(),
        [["ancient.7", "baseline"], ["recent.7", "pending"]],
      );
      assert.equal(
        count(
          new RegExp(
            `^INFO first start: 1 existing file\\(s\\) modified since ${since.toISOString()} are sent; 1 older recorded as baseline`,
          ),
        ),
        1,
      );
      assert.deepEqual(store.firstStart(), {
        at: store.firstStart()!.at,
        mode: "since",
        since: since.toISOString(),
        baseline: 1,
        sent: 1,
      });
      assert.ok(watchDir);
    },
    {
      setup: async (watchDir) => {
        await oldFile(watchDir, "recent.7", 1 * DAY);
        await oldFile(watchDir, "ancient.7", 90 * DAY);
      },
    },
  );
});

Deno.test("daemon: a file being written is in the state file's watching table until it is recorded", async () => {
  await startDaemon({ stabilityMs: 1500 }, async ({ watchDir, store }) => {
    const file = path.join(watchDir, "growing.7");
    await Deno.writeTextFile(file, "part 1");
    const [first] = await waitFor("growing.7 to be noted", () => {
      const rows = store.watching();
      return rows.length > 0 ? rows : undefined;
    });
    assert.equal(first.path, file);
    assert.equal(first.size, 6);
    assert.equal(Date.parse(first.stableAt) - Date.parse(first.seenAt), 1500);
    // It grows: the note follows within the write interval.
    await Deno.writeTextFile(file, " and part 2", { append: true });
    await waitFor(
      "the new size to be noted",
      () => store.watching()[0]?.size === 17,
      { timeoutMs: WATCHING_WRITE_MS * 5 },
    );
    await waitFor("growing.7 recorded", () => recorded(store, file).length === 1);
    await waitFor("the watching table to be empty", () => store.watching().length === 0);
  });
});

Deno.test("daemon: the server refusing our key stops the watcher once, noted in the state file", async () => {
  let attempts = 0;
  const refuse = () => {
    attempts++;
    return Promise.reject(
      new KeyRejectedError(
        "handshake with test:1 failed: the server does not accept key id 0123456789abcdef",
        { hint: "does SHARED_KEY in recon.opts match the server's?" },
      ),
    );
  };
  // A working start-up check, so the refusal comes when a file is sent.
  let checked = false;
  const connect = () => {
    if (!checked) {
      checked = true;
      return Promise.reject(new ConnectionError("cannot connect to test:1: connection refused"));
    }
    return refuse();
  };
  await startDaemon({ connect }, async ({ watchDir, store, count, ended }) => {
    const file = path.join(watchDir, "P1.7");
    await Deno.writeTextFile(file, "scan");
    const end = await ended();
    assert.equal(end.kind, "key-rejected");
    assert.equal(attempts, 1, "not retried");
    const note = store.stopNote();
    assert.ok(note);
    assert.deepEqual(end.kind === "key-rejected" ? end.note : undefined, note);
    assert.match(note.reason, /does not accept key id 0123456789abcdef; the watcher stopped/);
    assert.match(note.hint, /SHARED_KEY in recon\.opts/);
    const [row] = recorded(store, file);
    assert.equal(row.status, "pending", "still to be sent once the key is fixed");
    assert.match(row.reason ?? "", /does not accept key id/);
    assert.equal(count(/^ERROR .*does not accept key id .*the watcher stopped/), 1);
    assert.equal(count(/retried with backoff/), 0);
  });
});

Deno.test("daemon: a wrong key is found by the check at start, before any file is sent", async () => {
  let attempts = 0;
  const connect = () => {
    attempts++;
    return Promise.reject(
      new KeyRejectedError("handshake with test:1 failed: the server does not accept key id ab"),
    );
  };
  await startDaemon({ connect }, async ({ store, ended, restart }) => {
    assert.equal((await ended()).kind, "key-rejected");
    assert.equal(attempts, 1);
    assert.ok(store.stopNote());
    // The next start clears the note (and checks again).
    await restart({
      connect: () => Promise.reject(new ConnectionError("cannot connect: connection refused")),
    });
    assert.equal(store.stopNote(), undefined);
  });
});

Deno.test("daemon: notes since when the server cannot be reached for --status, and drops the note at stop and at the next start", async () => {
  await startDaemon({}, async ({ watchDir, store, stop, restart }) => {
    await Deno.writeTextFile(path.join(watchDir, "P1.7"), "scan");
    const first = await waitFor("two failed attempts", () => {
      const note = store.serverTrouble();
      return note && note.failures >= 2 ? note : undefined;
    });
    assert.equal(first.runId, "test-run");
    assert.match(first.lastError, /cannot connect to test:1: connection refused/);
    assert.ok(first.since < first.lastAttemptAt, JSON.stringify(first));
    assert.ok(first.lastAttemptAt < first.nextAttemptAt, JSON.stringify(first));
    const later = await waitFor("a third failed attempt", () => {
      const note = store.serverTrouble();
      return note && note.failures >= 3 ? note : undefined;
    });
    assert.equal(later.since, first.since, "since the first failure of the run of failures");

    await stop();
    assert.equal(store.serverTrouble(), undefined);
    assert.equal(store.heartbeat(), undefined);
    // A note a crashed watcher left must not make the next run look stuck for longer.
    store.setMeta(SERVER_TROUBLE_KEY, JSON.stringify({ ...later, since: "2000-01-01T00:00:00Z" }));
    await restart({ runId: "second-run" });
    const again = await waitFor("a failed attempt of the new run", () => store.serverTrouble());
    assert.equal(again.runId, "second-run");
    assert.ok(again.since > first.since, JSON.stringify(again));
  });
});

Deno.test("daemon: the heartbeat says when the directory was last scanned, and why it cannot be listed while it cannot", async () => {
  let broken = false;
  const probe: FileProbe = {
    ...denoProbe,
    list: (dir) =>
      broken
        ? Promise.reject(new Deno.errors.NotFound("No such file or directory (os error 2)"))
        : denoProbe.list(dir),
  };
  await startDaemon({ probe }, async ({ store, scans }) => {
    const beat = store.heartbeat();
    assert.equal(beat?.runId, "test-run");
    assert.equal(beat?.pollMs, 100);
    assert.equal(beat?.listError, undefined);
    broken = true;
    const failing = await waitFor("the listing error in the heartbeat", () => {
      const note = store.heartbeat();
      return note?.listError ? note : undefined;
    });
    assert.equal(failing.listError, "no such file or directory");
    await scans(3);
    assert.equal(store.heartbeat()?.at, failing.at, "no complete scan meanwhile");
    broken = false;
    const listed = await waitFor("the heartbeat without the error", () => {
      const note = store.heartbeat();
      return note && note.listError === undefined ? note : undefined;
    });
    assert.ok(listed.at > failing.at, "a complete scan again");
  });
});
