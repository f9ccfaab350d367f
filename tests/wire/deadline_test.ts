/**
 * Tests for lib/wire/deadline.ts: a deadline fires once when armed, never after
 * disarm, and re-arming restarts it.
 */
import assert from "node:assert/strict";
import { TimeoutError } from "../../lib/errors.ts";
import { Deadline } from "../../lib/wire/deadline.ts";

Deno.test("Deadline fires a TimeoutError once armed and not after disarm", async () => {
  const fired: TimeoutError[] = [];
  const deadline = new Deadline("too slow", (error) => fired.push(error));
  deadline.arm(10);
  await new Promise((resolve) => setTimeout(resolve, 40));
  assert.equal(fired.length, 1);
  assert.ok(fired[0] instanceof TimeoutError);
  assert.equal(fired[0].message, "too slow");

  deadline.arm(20);
  deadline.disarm();
  deadline.arm(0); // 0 means "no deadline"
  await new Promise((resolve) => setTimeout(resolve, 40));
  assert.equal(fired.length, 1);
});

Deno.test("Deadline re-armed restarts the countdown", async () => {
  let fired = 0;
  const deadline = new Deadline("late", () => fired++);
  deadline.arm(30);
  await new Promise((resolve) => setTimeout(resolve, 15));
  deadline.arm(60);
  await new Promise((resolve) => setTimeout(resolve, 30));
  assert.equal(fired, 0, "the first arming was replaced");
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.equal(fired, 1);
});
