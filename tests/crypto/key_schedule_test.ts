/**
 * Tests for lib/crypto/key_schedule.ts: the HKDF ratchet and the per-direction schedule that
 * both ends derive independently from sequence numbers.
 */
import assert from "node:assert/strict";
import type { FernetCodec } from "../../lib/crypto/fernet_codec.ts";
import { InvalidTokenError } from "../../lib/crypto/fernet_token.ts";
import { KeySchedule, ratchetKey } from "../../lib/crypto/key_schedule.ts";
import { randomBytes } from "../support/memory_duplex.ts";

const encoder = new TextEncoder();

async function fernetFor(schedule: KeySchedule, seq: number): Promise<FernetCodec> {
  return (await schedule.keyFor(seq)).fernet;
}

Deno.test("ratchetKey() is deterministic and differs from its input", async () => {
  const key = randomBytes(32);
  const copy = key.slice();
  const next = await ratchetKey(key);
  assert.equal(next.length, 32);
  assert.deepEqual(await ratchetKey(key), next);
  assert.notDeepEqual(next, key);
  assert.deepEqual(key, copy, "the input is not modified");
});

Deno.test("ratchetKey() never repeats along a chain of 100 steps", async () => {
  const seen = new Set<string>();
  let key = randomBytes(32);
  for (let i = 0; i < 100; i++) {
    const text = Array.from(key).join(",");
    assert.ok(!seen.has(text), `step ${i} repeats an earlier key`);
    seen.add(text);
    key = await ratchetKey(key);
  }
});

Deno.test("ratchetKey() of different keys gives different keys", async () => {
  const a = new Uint8Array(32);
  const b = new Uint8Array(32);
  b[31] = 1;
  assert.notDeepEqual(await ratchetKey(a), await ratchetKey(b));
});

Deno.test("KeySchedule on both sides agrees across epochs, both ways", async () => {
  const initial = randomBytes(32);
  const recordsPerKey = 3;
  const alice = new KeySchedule(initial, recordsPerKey);
  const bob = new KeySchedule(initial, recordsPerKey);
  for (let seq = 0; seq < 20; seq++) {
    const plain = encoder.encode(`record ${seq}`);
    const [mine, theirs] = await Promise.all([fernetFor(alice, seq), fernetFor(bob, seq)]);
    assert.deepEqual(await theirs.decrypt(await mine.encrypt(plain)), plain, `seq ${seq}`);
    assert.deepEqual(await mine.decrypt(await theirs.encrypt(plain)), plain, `seq ${seq}`);
  }
});

Deno.test("KeySchedule changes key at each epoch boundary and not within an epoch", async () => {
  const schedule = new KeySchedule(randomBytes(32), 2);
  const token0 = await (await fernetFor(schedule, 0)).encrypt(new Uint8Array([1]));
  // Same epoch: seq 1 uses the same key.
  assert.deepEqual(await (await fernetFor(schedule, 1)).decrypt(token0), new Uint8Array([1]));
  // Next epoch: the old token no longer verifies.
  await assert.rejects(
    (await fernetFor(schedule, 2)).decrypt(token0),
    (error: unknown) => error instanceof InvalidTokenError && error.reason === "hmac",
  );
});

Deno.test("KeySchedule jumping ahead gives the same key as stepping through", async () => {
  const initial = randomBytes(32);
  const stepping = new KeySchedule(initial, 1);
  for (let seq = 0; seq < 10; seq++) await stepping.keyFor(seq);
  const jumping = new KeySchedule(initial, 1);
  const token = await (await fernetFor(stepping, 10)).encrypt(new Uint8Array([7]));
  assert.deepEqual(await (await fernetFor(jumping, 10)).decrypt(token), new Uint8Array([7]));
});

Deno.test("KeySchedule epoch n uses the initial key ratcheted n times", async () => {
  const initial = randomBytes(32);
  let raw = initial;
  for (let i = 0; i < 3; i++) raw = await ratchetKey(raw);
  const direct = new KeySchedule(raw, 5);
  const scheduled = new KeySchedule(initial, 5);
  const token = await (await fernetFor(scheduled, 15)).encrypt(new Uint8Array([3]));
  assert.deepEqual(await (await fernetFor(direct, 0)).decrypt(token), new Uint8Array([3]));
  // The raw bytes handed out (for a crypto backend other than WebCrypto) are that same key.
  assert.deepEqual((await scheduled.keyFor(16)).raw, raw);
  assert.deepEqual((await new KeySchedule(initial, 5).keyFor(0)).raw, initial);
});

Deno.test("KeySchedule refuses a key for an epoch it already discarded", async () => {
  const schedule = new KeySchedule(randomBytes(32), 4);
  await schedule.keyFor(8);
  assert.throws(() => schedule.keyFor(7), RangeError);
  assert.throws(() => schedule.keyFor(0), /epoch 0 was already discarded/);
  await schedule.keyFor(11); // still epoch 2
});

Deno.test("KeySchedule refuses a recordsPerKey that is not a positive integer", () => {
  for (const bad of [0, -1, 1.5, NaN, Infinity]) {
    assert.throws(() => new KeySchedule(randomBytes(32), bad), RangeError, String(bad));
  }
});

Deno.test("KeySchedule with a wrong-length key rejects when the key is first used", async () => {
  const schedule = new KeySchedule(randomBytes(16), 1);
  await assert.rejects(schedule.keyFor(0), TypeError);
});
