/**
 * Tests for lib/server/log_retention.ts: job logs older than LOG_RETENTION days are
 * removed (one line with the count), recent ones, running jobs' logs, links and other
 * files are kept.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import type { Logger } from "../../lib/log.ts";
import { startLogSweeper, sweepJobLogs } from "../../lib/server/log_retention.ts";

const DAY_MS = 24 * 60 * 60 * 1000;

function capture(): { lines: string[]; log: Logger } {
  const lines: string[] = [];
  const record = (level: string) => (message: string) => lines.push(`${level} ${message}`);
  const log = {
    debug: record("debug"),
    info: record("info"),
    warn: record("warn"),
    error: record("error"),
  };
  return { lines, log: log as unknown as Logger };
}

async function tempDir(): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "recon-log-retention-" });
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

async function writeAged(file: string, ageDays: number, now: number): Promise<void> {
  await Deno.writeTextFile(file, "log\n");
  const when = new Date(now - ageDays * DAY_MS);
  await Deno.utime(file, when, when);
}

async function names(dir: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(dir)) found.push(entry.name);
  return found.sort();
}

Deno.test("sweepJobLogs() removes job logs older than LOG_RETENTION days and keeps the rest", async () => {
  await using tmp = await tempDir();
  const now = Date.now();
  const [oldA, oldB, fresh, running] = Array.from({ length: 4 }, () => crypto.randomUUID());
  await writeAged(path.join(tmp.dir, `job_${oldA}.log`), 31, now);
  await writeAged(path.join(tmp.dir, `job_${oldB}.log`), 400, now);
  await writeAged(path.join(tmp.dir, `job_${fresh}.log`), 29, now);
  await writeAged(path.join(tmp.dir, `job_${running}.log`), 45, now);
  await Deno.writeTextFile(path.join(tmp.dir, `job_${running}.pid`), "1\n");
  await writeAged(path.join(tmp.dir, "site_notes.log"), 90, now);
  const victim = path.join(tmp.dir, "victim");
  await writeAged(victim, 90, now);
  const linkId = crypto.randomUUID();
  await Deno.symlink(victim, path.join(tmp.dir, `job_${linkId}.log`));

  const { lines, log } = capture();
  const removed = await sweepJobLogs({ dir: tmp.dir, days: 30, log, now: () => now });
  assert.equal(removed, 2);
  assert.deepEqual(lines, [
    `info removed 2 job logs older than 30 days (LOG_RETENTION) from ${tmp.dir}`,
  ]);
  assert.deepEqual(
    await names(tmp.dir),
    [
      `job_${fresh}.log`,
      `job_${linkId}.log`,
      `job_${running}.log`,
      `job_${running}.pid`,
      "site_notes.log",
      "victim",
    ]
      .sort(),
  );

  // Nothing to remove: nothing logged.
  assert.equal(await sweepJobLogs({ dir: tmp.dir, days: 30, log, now: () => now }), 0);
  assert.equal(lines.length, 1);
  // The clock moves on: the 29-day-old log goes two days later.
  assert.equal(await sweepJobLogs({ dir: tmp.dir, days: 30, log, now: () => now + 2 * DAY_MS }), 1);
  assert.match(lines[1], /removed 1 job log older than 30 days/);
});

Deno.test("sweepJobLogs() with LOG_RETENTION 0 or a missing directory removes nothing", async () => {
  await using tmp = await tempDir();
  const now = Date.now();
  const file = path.join(tmp.dir, `job_${crypto.randomUUID()}.log`);
  await writeAged(file, 10_000, now);
  const { lines, log } = capture();
  assert.equal(await sweepJobLogs({ dir: tmp.dir, days: 0, log }), 0);
  assert.equal(await sweepJobLogs({ dir: path.join(tmp.dir, "missing"), days: 1, log }), 0);
  await Deno.stat(file);
  assert.deepEqual(lines, []);
});

Deno.test("startLogSweeper() sweeps at once and then every interval until stopped", async () => {
  await using tmp = await tempDir();
  let now = Date.now();
  const { lines, log } = capture();
  await writeAged(path.join(tmp.dir, `job_${crypto.randomUUID()}.log`), 2, now);
  const sweeper = startLogSweeper({ dir: tmp.dir, days: 1, log, now: () => now, intervalMs: 20 });
  assert.equal(await sweeper.first, 1);
  // A log written now ages two days by the injected clock; the next round removes it.
  await writeAged(path.join(tmp.dir, `job_${crypto.randomUUID()}.log`), 0, now);
  now += 2 * DAY_MS;
  const deadline = Date.now() + 5_000;
  while ((await names(tmp.dir)).length > 0 && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  await sweeper.stop();
  assert.deepEqual(await names(tmp.dir), []);
  assert.equal(lines.filter((line) => /removed 1 job log older than 1 day /.test(line)).length, 2);
});
