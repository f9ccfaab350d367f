/**
 * `watch --since TIME`: the forms it accepts (a date at local midnight, a local or
 * zoned date and time, a time ago) and what it refuses (no such day, the future,
 * anything else) with a usage error.
 */
import assert from "node:assert/strict";
import { UsageError } from "../../lib/errors.ts";
import { parseSince } from "../../lib/watch/since.ts";

const NOW = new Date("2026-11-23T12:00:00.000Z");

Deno.test("parseSince() reads a date as local midnight and a date and time as local time", () => {
  assert.equal(parseSince("2026-11-20", NOW).getTime(), new Date(2026, 10, 20).getTime());
  assert.equal(
    parseSince("2026-11-20T08:30", NOW).getTime(),
    new Date(2026, 10, 20, 8, 30).getTime(),
  );
  assert.equal(
    parseSince("2026-11-20 08:30:15", NOW).getTime(),
    new Date(2026, 10, 20, 8, 30, 15).getTime(),
  );
});

Deno.test("parseSince() honours Z and an offset", () => {
  assert.equal(parseSince("2026-11-20T08:30:00Z", NOW).toISOString(), "2026-11-20T08:30:00.000Z");
  assert.equal(
    parseSince("2026-11-20T08:30:00+01:00", NOW).toISOString(),
    "2026-11-20T07:30:00.000Z",
  );
});

Deno.test("parseSince() reads a time ago in minutes, hours and days", () => {
  assert.equal(parseSince("90m", NOW).toISOString(), "2026-11-23T10:30:00.000Z");
  assert.equal(parseSince("12h", NOW).toISOString(), "2026-11-23T00:00:00.000Z");
  assert.equal(parseSince("7d", NOW).toISOString(), "2026-11-16T12:00:00.000Z");
});

Deno.test("parseSince() refuses a day that does not exist, the future and other text", () => {
  for (
    const bad of [
      "",
      "yesterday",
      "2026-02-31",
      "2026-13-01",
      "2026-11-20T25:00",
      "20261120",
      "7 days",
      "-3d",
      "3w",
      "2026-11-20T08:30:00+0100x",
    ]
  ) {
    assert.throws(
      () => parseSince(bad, NOW),
      (error: Error) => error instanceof UsageError && /is not a date/.test(error.message),
      bad,
    );
  }
  assert.throws(
    () => parseSince("2027-01-01", NOW),
    (error: Error) => error instanceof UsageError && /is in the future/.test(error.message),
  );
});
