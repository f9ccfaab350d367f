/**
 * Tests for lib/wire/deadline.ts: a deadline fires once when armed, never after
 * disarm, and re-arming restarts it. Time is driven by hand (tests/support/manual_timers.ts),
 * and the real timers are checked once on their own.
 */
import assert from "node:assert/strict";
import { TimeoutError } from "../../lib/errors.ts";
import { Deadline, realTimers } from "../../lib/wire/deadline.ts";
import { ManualTimers } from "../support/manual_timers.ts";

Deno.test("Deadline fires a TimeoutError once, when its time is up", () => {
  const timers = new ManualTimers();
  const fired: TimeoutError[] = [];
  const deadline = new Deadline("too slow", (error) => fired.push(error), timers);
  deadline.arm(10);
  timers.advance(9);
  assert.equal(fired.length, 0);
  timers.advance(1);
  assert.equal(fired.length, 1);
  assert.ok(fired[0] instanceof TimeoutError);
  assert.equal(fired[0].message, "too slow");
  timers.advance(1000);
  assert.equal(fired.length, 1, "once");
  assert.deepEqual(timers.pending, []);
});

Deno.test("Deadline never fires after disarm, and 0 or Infinity means no deadline", () => {
  const timers = new ManualTimers();
  let fired = 0;
  const deadline = new Deadline("too slow", () => fired++, timers);
  deadline.arm(20);
  deadline.disarm();
  assert.deepEqual(timers.pending, []);
  for (const ms of [0, -1, Infinity, NaN]) {
    deadline.arm(ms);
    assert.deepEqual(timers.pending, [], `arm(${ms})`);
  }
  deadline.disarm();
  timers.advance(1_000_000);
  assert.equal(fired, 0);
});

Deno.test("Deadline re-armed restarts the countdown", () => {
  const timers = new ManualTimers();
  let fired = 0;
  const deadline = new Deadline("late", () => fired++, timers);
  deadline.arm(30);
  timers.advance(15);
  deadline.arm(60);
  assert.deepEqual(timers.pending, [{ in: 60, every: undefined }], "the first arming was replaced");
  timers.advance(59);
  assert.equal(fired, 0);
  timers.advance(1);
  assert.equal(fired, 1);
});

Deno.test("Deadline runs on the real timers by default", async () => {
  const fired = Promise.withResolvers<TimeoutError>();
  new Deadline("real", fired.resolve).arm(5);
  const error = await fired.promise;
  assert.ok(error instanceof TimeoutError);
  assert.equal(error.message, "real");
});

Deno.test("realTimers repeats a timer until it is cancelled", async () => {
  let ticks = 0;
  const three = Promise.withResolvers<void>();
  const cancel = realTimers.start(1, () => {
    if (++ticks === 3) three.resolve();
  }, { repeat: true });
  await three.promise;
  cancel();
  assert.equal(ticks, 3);
});
