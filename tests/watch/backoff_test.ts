/**
 * Backoff for an unreachable server: 2 s doubling to a 5 min cap, each delay drawn
 * between half and all of its ceiling, and back to the start after a success.
 */
import assert from "node:assert/strict";
import { Backoff, BACKOFF_BASE_MS, BACKOFF_CAP_MS } from "../../lib/watch/backoff.ts";

Deno.test("Backoff documents 2 s doubling up to 5 min", () => {
  assert.equal(BACKOFF_BASE_MS, 2000);
  assert.equal(BACKOFF_CAP_MS, 300_000);
});

Deno.test("Backoff.fail() doubles from the base and stops at the cap (no jitter at random 1)", () => {
  const backoff = new Backoff({ random: () => 1 });
  const delays = Array.from({ length: 12 }, () => backoff.fail());
  assert.deepEqual(
    delays,
    [2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 300000, 300000, 300000, 300000],
  );
  assert.equal(backoff.failures, 12);
});

Deno.test("Backoff.fail() draws between half and all of the ceiling", () => {
  const low = new Backoff({ random: () => 0 });
  assert.deepEqual([low.fail(), low.fail(), low.fail()], [1000, 2000, 4000]);
  const backoff = new Backoff();
  for (let i = 1; i <= 30; i++) {
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (i - 1));
    const delay = backoff.fail();
    assert.ok(delay >= ceiling / 2 && delay <= ceiling, `attempt ${i}: ${delay} ms`);
  }
});

Deno.test("Backoff stays finite after very many failures", () => {
  const backoff = new Backoff({ random: () => 0.5 });
  let delay = 0;
  for (let i = 0; i < 5000; i++) delay = backoff.fail();
  assert.equal(delay, 225_000);
});

Deno.test("Backoff.succeed() starts again from the base delay", () => {
  const backoff = new Backoff({ random: () => 1 });
  backoff.fail();
  backoff.fail();
  backoff.fail();
  backoff.succeed();
  assert.equal(backoff.failures, 0);
  assert.equal(backoff.fail(), 2000);
});

Deno.test("Backoff rejects a base of 0 or a cap below the base", () => {
  assert.throws(() => new Backoff({ baseMs: 0 }), RangeError);
  assert.throws(() => new Backoff({ baseMs: 10, capMs: 5 }), RangeError);
  assert.throws(() => new Backoff({ baseMs: Number.NaN }), RangeError);
});
