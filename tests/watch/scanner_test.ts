/**
 * When a watched file counts as finished, and which files go together, driven by a
 * fake clock: no timers, no files.
 */
import assert from "node:assert/strict";
import {
  type FileStat,
  Grouper,
  MAX_GROUP_FILES,
  sameStat,
  StabilityTracker,
} from "../../lib/watch/scanner.ts";

const stat = (size: number, mtimeMs = size, ino: number | null = 7): FileStat => ({
  size,
  mtimeMs,
  ino,
});

Deno.test("sameStat() compares size, mtime and inode", () => {
  assert.ok(sameStat(stat(1, 2, 3), stat(1, 2, 3)));
  assert.ok(!sameStat(stat(1, 2, 3), stat(9, 2, 3)));
  assert.ok(!sameStat(stat(1, 2, 3), stat(1, 9, 3)));
  assert.ok(!sameStat(stat(1, 2, 3), stat(1, 2, 9)));
  assert.ok(sameStat(stat(1, 2, null), stat(1, 2, null)));
});

Deno.test("StabilityTracker reports a file stable only after it is unchanged for the delay", () => {
  const tracker = new StabilityTracker({ stabilityMs: 1000 });
  assert.deepEqual(tracker.observe("/w/a.7", stat(10), 0), { kind: "waiting", checkAt: 1000 });
  assert.deepEqual(tracker.observe("/w/a.7", stat(10), 999), { kind: "waiting", checkAt: 1000 });
  assert.deepEqual(tracker.observe("/w/a.7", stat(10), 1000), { kind: "stable" });
});

Deno.test("StabilityTracker restarts the delay whenever a growing file changes", () => {
  const tracker = new StabilityTracker({ stabilityMs: 1000 });
  let now = 0;
  for (let size = 1; size <= 20; size++, now += 300) {
    const verdict = tracker.observe("/w/a.7", stat(size), now);
    assert.equal(verdict.kind, "waiting", `size ${size} at ${now} ms`);
  }
  // Last change at 5700 ms; stable from 6700 ms on.
  assert.equal(tracker.observe("/w/a.7", stat(20), 6699).kind, "waiting");
  assert.equal(tracker.observe("/w/a.7", stat(20), 6700).kind, "stable");
});

Deno.test("StabilityTracker notices a file that got smaller (truncated) while waiting", () => {
  const tracker = new StabilityTracker({ stabilityMs: 1000 });
  tracker.observe("/w/a.7", stat(500), 0);
  const verdict = tracker.observe("/w/a.7", stat(100), 400);
  assert.deepEqual(verdict, { kind: "waiting", checkAt: 1400, shrunkFrom: 500 });
});

Deno.test("StabilityTracker hands a settled file out once and again only after it changes", () => {
  const tracker = new StabilityTracker({ stabilityMs: 500 });
  tracker.observe("/w/a.7", stat(10), 0);
  assert.equal(tracker.observe("/w/a.7", stat(10), 500).kind, "stable");
  tracker.settle("/w/a.7", stat(10));
  assert.deepEqual(tracker.observe("/w/a.7", stat(10), 5000), { kind: "settled" });
  assert.deepEqual(tracker.due(10_000), []);
  const changed = tracker.observe("/w/a.7", stat(4, 99), 6000);
  assert.deepEqual(changed, {
    kind: "waiting",
    checkAt: 6500,
    changedAfterSettled: stat(10),
    shrunkFrom: 10,
  });
  assert.equal(tracker.observe("/w/a.7", stat(4, 99), 6500).kind, "stable");
});

Deno.test("StabilityTracker treats a replaced file (new inode, same size and time) as changed", () => {
  const tracker = new StabilityTracker({ stabilityMs: 500 });
  tracker.settle("/w/a.7", stat(10, 10, 1));
  assert.equal(tracker.observe("/w/a.7", stat(10, 10, 2), 0).kind, "waiting");
});

Deno.test("StabilityTracker with a delay of 0 takes a file at first sight", () => {
  const tracker = new StabilityTracker({ stabilityMs: 0 });
  assert.deepEqual(tracker.observe("/w/a.7", stat(1), 0), { kind: "stable" });
});

Deno.test("StabilityTracker.due() and nextCheck() say when to look again; postpone() delays", () => {
  const tracker = new StabilityTracker({ stabilityMs: 1000 });
  assert.equal(tracker.nextCheck(), undefined);
  tracker.observe("/w/a.7", stat(1), 0);
  tracker.observe("/w/b.7", stat(1), 300);
  assert.equal(tracker.nextCheck(), 1000);
  assert.deepEqual(tracker.due(999), []);
  assert.deepEqual(tracker.due(1000), ["/w/a.7"]);
  assert.deepEqual(tracker.due(1300).sort(), ["/w/a.7", "/w/b.7"]);
  tracker.postpone("/w/a.7", 5000);
  assert.deepEqual(tracker.due(1300), ["/w/b.7"]);
  assert.equal(tracker.nextCheck(), 1300);
  // Postponing does not change when the file counts as stable.
  assert.equal(tracker.observe("/w/a.7", stat(1), 1300).kind, "stable");
});

Deno.test("StabilityTracker.forget() says whether a vanished file was still being watched", () => {
  const tracker = new StabilityTracker({ stabilityMs: 1000 });
  tracker.observe("/w/a.7", stat(1), 0);
  tracker.settle("/w/b.7", stat(1));
  assert.deepEqual(tracker.paths().sort(), ["/w/a.7", "/w/b.7"]);
  assert.deepEqual(tracker.forget("/w/a.7"), { wasWatching: true, wasSettled: false });
  assert.deepEqual(tracker.forget("/w/b.7"), { wasWatching: false, wasSettled: true });
  assert.deepEqual(tracker.forget("/w/c.7"), { wasWatching: false, wasSettled: false });
  assert.ok(!tracker.knows("/w/a.7"));
});

Deno.test("StabilityTracker rejects a negative delay", () => {
  assert.throws(() => new StabilityTracker({ stabilityMs: -1 }), RangeError);
});

function grouper(windowMs: number, maxFiles?: number) {
  let n = 0;
  return new Grouper({ windowMs, maxFiles, newId: () => `g${++n}` });
}

Deno.test("Grouper puts files that finish within the window of each other in one group", () => {
  const groups = grouper(500);
  assert.equal(groups.join(0), "g1");
  assert.equal(groups.join(400), "g1");
  assert.equal(groups.join(800), "g1"); // 400 ms after the previous one: still together
  assert.ok(groups.isOpen("g1", 1299));
  assert.equal(groups.closesAt(1000), 1300);
  assert.ok(!groups.isOpen("g1", 1300));
  assert.equal(groups.closesAt(1300), undefined);
  assert.equal(groups.join(1300), "g2");
});

Deno.test("Grouper closes a group when the next file comes later than the window", () => {
  const groups = grouper(500);
  assert.equal(groups.join(0), "g1");
  assert.equal(groups.join(500), "g2");
  assert.ok(!groups.isOpen("g1", 500));
  assert.ok(groups.isOpen("g2", 500));
});

Deno.test("Grouper with a window of 0 sends every file alone", () => {
  const groups = grouper(0);
  assert.equal(groups.join(0), "g1");
  assert.equal(groups.join(0), "g2");
  assert.ok(!groups.isOpen("g2", 0));
});

Deno.test("Grouper starts a new group after MAX_GROUP_FILES files", () => {
  assert.equal(MAX_GROUP_FILES, 100);
  const groups = grouper(500, 3);
  assert.deepEqual([0, 1, 2, 3, 4].map((t) => groups.join(t)), ["g1", "g1", "g1", "g2", "g2"]);
  assert.ok(!groups.isOpen("g1", 3));
});

Deno.test("Grouper says nothing about groups it did not make (an earlier run's are closed)", () => {
  const groups = grouper(500);
  groups.join(0);
  assert.ok(!groups.isOpen("from-an-earlier-run", 0));
});
