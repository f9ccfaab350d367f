/**
 * Tests for lib/log.ts: formatRecord() writes every message as one line with its
 * control characters escaped, whatever the caller put in it; setupLogging() does so on
 * stderr and in LOG_FILEPATH (in a child process); LogThrottle lets one line per key
 * per window through and counts the rest.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import type { LogRecord } from "@logtape/logtape";
import { formatRecord, LogThrottle } from "../lib/log.ts";

function record(message: readonly unknown[]): LogRecord {
  return {
    category: ["recon-server"],
    level: "warning",
    message,
    rawMessage: "",
    properties: {},
    timestamp: Date.UTC(2026, 10, 23, 15, 22, 28, 123),
  };
}

const HOSTILE = "evil\u001b[31m\u009bx\nFAKE ERROR forged line";
const ESCAPED = "evil\\x1b[31m\\x9bx\\nFAKE ERROR forged line";

Deno.test("formatRecord() writes one line with a hostile name escaped", () => {
  assert.equal(
    formatRecord(record([`job 1: not sending ${HOSTILE}`])),
    `2026-11-23T15:22:28.123Z WARN  recon-server: job 1: not sending ${ESCAPED}\n`,
  );
});

Deno.test("formatRecord() escapes interpolated values of a tagged message too", () => {
  const line = formatRecord(record(["name ", HOSTILE, ", value ", "a\u009b31mb", ""]));
  assert.equal(
    line,
    `2026-11-23T15:22:28.123Z WARN  recon-server: name ${ESCAPED}, value a\\x9b31mb\n`,
  );
});

Deno.test("setupLogging() writes a hostile name escaped to stderr and to LOG_FILEPATH", async () => {
  const dir = await Deno.makeTempDir({ prefix: "recon-log-test-" });
  try {
    const file = path.join(dir, "recon.log");
    const program = `
      import { log, setupLogging, shutdownLogging } from ${
      JSON.stringify(new URL("../lib/log.ts", import.meta.url).href)
    };
      await setupLogging({ program: "recon-server", filePath: ${JSON.stringify(file)} });
      log("recon-server").warn(${JSON.stringify(`not sending ${HOSTILE}`)});
      await shutdownLogging();
    `;
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-check", program],
      cwd: new URL("..", import.meta.url).pathname,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
    for (
      const [where, text] of [
        ["stderr", new TextDecoder().decode(output.stderr)],
        ["LOG_FILEPATH", await Deno.readTextFile(file)],
      ]
    ) {
      assert.match(
        text,
        /^\S+ WARN {2}recon-server: not sending evil\\x1b\[31m\\x9bx\\nFAKE ERROR forged line\n$/,
        where,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("setupLogging() refuses a symbolic link at LOG_FILEPATH and never writes its target", async () => {
  const dir = await Deno.makeTempDir({ prefix: "recon-log-test-" });
  try {
    const target = path.join(dir, "precious");
    await Deno.writeTextFile(target, "keep me\n");
    const link = path.join(dir, "recon.log");
    await Deno.symlink(target, link);
    const program = `
      import { log, setupLogging, shutdownLogging } from ${
      JSON.stringify(new URL("../lib/log.ts", import.meta.url).href)
    };
      await setupLogging({ program: "recon-server", filePath: ${JSON.stringify(link)} });
      log("recon-server").warn("a line");
      await shutdownLogging();
    `;
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-check", program],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(output.code, 0);
    const stderr = new TextDecoder().decode(output.stderr);
    assert.match(stderr, /cannot open log file .*recon\.log.*; logging to stderr only/);
    assert.match(stderr, /WARN {2}recon-server: a line/);
    assert.equal(await Deno.readTextFile(target), "keep me\n");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

function throttle(maxLines = 100) {
  const clock = { now: 1_000_000 };
  return { clock, throttle: new LogThrottle({ windowMs: 60_000, maxLines, now: () => clock.now }) };
}

Deno.test("LogThrottle lets one line per key per window through and counts the rest", () => {
  const { clock, throttle: t } = throttle();
  assert.deepEqual(t.pass("10.0.0.1"), { held: 0 });
  for (let i = 0; i < 500; i++) assert.equal(t.pass("10.0.0.1"), undefined);
  assert.deepEqual(t.pass("10.0.0.2"), { held: 0 }, "another key has its own window");
  clock.now += 59_999;
  assert.equal(t.pass("10.0.0.1"), undefined);
  clock.now += 1;
  assert.deepEqual(t.pass("10.0.0.1"), { held: 501 }, "the next line says how many were held");
  assert.equal(t.pass("10.0.0.1"), undefined);
});

Deno.test("LogThrottle caps lines over all keys per window, saying so once", () => {
  const { clock, throttle: t } = throttle(3);
  assert.deepEqual(t.pass("a"), { held: 0 });
  assert.deepEqual(t.pass("b"), { held: 0 });
  assert.deepEqual(t.pass("c"), { held: 0 });
  assert.equal(t.pass("d"), "cap");
  for (const key of ["e", "f", "d", "e"]) assert.equal(t.pass(key), undefined, key);
  clock.now += 60_000;
  assert.deepEqual(t.pass("e"), { held: 2 }, "held lines of a capped key are counted");
  assert.deepEqual(t.pass("a"), { held: 0 });
});

Deno.test("LogThrottle stays bounded under a flood of distinct keys", () => {
  const { clock, throttle: t } = throttle(1_000_000);
  for (let i = 0; i < 30_000; i++) t.pass(`key ${i}`);
  assert.ok(t.tracked <= 10_000, `${t.tracked} keys remembered`);
  clock.now += 60_000;
  // Still answers for old and new keys alike.
  assert.deepEqual(t.pass("key 29999"), { held: 0 });
  assert.deepEqual(t.pass("new"), { held: 0 });
});
