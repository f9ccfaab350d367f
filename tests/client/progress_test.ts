/**
 * Tests for lib/client/progress.ts: the transfer line shows size, percentage, rate and
 * time left in one unit system (SI), computed from an injected clock; a pipe gets
 * plain lines and no bar; --quiet gets nothing.
 */
import assert from "node:assert/strict";
import {
  formatBytes,
  formatDuration,
  formatTransfer,
  ProgressDisplay,
} from "../../lib/client/progress.ts";

Deno.test("formatBytes() uses SI units with three significant digits", () => {
  const cases: [number, string][] = [
    [0, "0 B"],
    [999, "999 B"],
    [1000, "1.00 kB"],
    [1536, "1.54 kB"],
    [99_949, "99.9 kB"],
    [999_499, "999 kB"],
    [999_500, "1.00 MB"],
    [12_345_678, "12.3 MB"],
    [1_000_000_000, "1.00 GB"],
    [2.5e12, "2.50 TB"],
    [4e15, "4000 TB"],
  ];
  for (const [bytes, text] of cases) assert.equal(formatBytes(bytes), text, String(bytes));
});

Deno.test("formatDuration() gives m:ss, and h:mm:ss from an hour on", () => {
  assert.equal(formatDuration(0), "0:00");
  assert.equal(formatDuration(-5), "0:00");
  assert.equal(formatDuration(9_400), "0:09");
  assert.equal(formatDuration(59_600), "1:00");
  assert.equal(formatDuration(754_000), "12:34");
  assert.equal(formatDuration(3_600_000), "1:00:00");
  assert.equal(formatDuration(3_725_000), "1:02:05");
});

Deno.test("formatTransfer() shows size, percentage, average rate and ETA in SI units", () => {
  const line = formatTransfer({
    verb: "uploading",
    name: "P00001.7",
    bytes: 250_000_000,
    total: 1_000_000_000,
    elapsedMs: 5_000,
  });
  assert.equal(
    line,
    "uploading P00001.7 [#####---------------]  25% 250 MB / 1.00 GB  50.0 MB/s  ETA 0:15",
  );
  assert.doesNotMatch(line, /MiB|KiB|GiB/);
});

Deno.test("formatTransfer() shows no rate or ETA before half a second, and the time taken once done", () => {
  const early = formatTransfer({
    verb: "downloading",
    name: "image.dcm",
    bytes: 1000,
    total: 4000,
    elapsedMs: 100,
  });
  assert.equal(
    early,
    "downloading image.dcm [#####---------------]  25% 1.00 kB / 4.00 kB  -- MB/s  ETA --:--",
  );
  const started = formatTransfer({
    verb: "uploading",
    name: "a",
    bytes: 0,
    total: 10,
    elapsedMs: 9000,
  });
  assert.match(started, / 0% 0 B \/ 10 B {2}-- MB\/s {2}ETA --:--$/);
  const done = formatTransfer({
    verb: "uploading",
    name: "P00001.7",
    bytes: 3_000_000,
    total: 3_000_000,
    elapsedMs: 61_000,
  });
  assert.equal(
    done,
    "uploading P00001.7 [####################] 100% 3.00 MB / 3.00 MB  49.2 kB/s  in 1:01",
  );
  const empty = formatTransfer({ verb: "uploading", name: "e", bytes: 0, total: 0, elapsedMs: 0 });
  assert.match(empty, /\[#{20}\] 100% 0 B \/ 0 B {2}-- MB\/s {2}in 0:00$/);
});

Deno.test("formatTransfer() never shows 100% before the last byte, and cuts long names at the front", () => {
  const line = formatTransfer({
    verb: "uploading",
    name: `${"x".repeat(40)}_P00001.7`,
    bytes: 999,
    total: 1000,
    elapsedMs: 1000,
  });
  assert.match(line, /^uploading …x{22}_P00001\.7 /);
  assert.match(line, / 99% /);
});

/** A display writing into a string, on a clock the test moves. */
function display(options: { tty: boolean; quiet?: boolean }) {
  let now = 1_000_000;
  let output = "";
  const shown = new ProgressDisplay({
    write: (text) => output += text,
    tty: options.tty,
    quiet: options.quiet ?? false,
    now: () => now,
  });
  return {
    shown,
    tick: (ms: number) => now += ms,
    get output() {
      return output;
    },
  };
}

Deno.test("ProgressDisplay on a terminal redraws one line from the injected clock and ends it", () => {
  const d = display({ tty: true });
  d.shown.show({ kind: "upload", name: "P1.7", bytes: 0, total: 100_000_000 });
  d.tick(2_000);
  d.shown.show({ kind: "upload", name: "P1.7", bytes: 40_000_000, total: 100_000_000 });
  d.tick(50); // within 100 ms of the last draw: skipped
  d.shown.show({ kind: "upload", name: "P1.7", bytes: 41_000_000, total: 100_000_000 });
  d.tick(1_000);
  d.shown.show({ kind: "upload", name: "P1.7", bytes: 100_000_000, total: 100_000_000 });
  d.shown.finish();
  const frames = d.output.split("\r").slice(1).map((frame) => frame.trimEnd());
  assert.deepEqual(frames, [
    "uploading P1.7 [--------------------]   0% 0 B / 100 MB  -- MB/s  ETA --:--",
    "uploading P1.7 [########------------]  40% 40.0 MB / 100 MB  20.0 MB/s  ETA 0:03",
    "uploading P1.7 [####################] 100% 100 MB / 100 MB  32.8 MB/s  in 0:03",
  ]);
  assert.ok(d.output.endsWith("\n"));
});

Deno.test("ProgressDisplay without a terminal prints no bar, and with --quiet nothing", () => {
  const piped = display({ tty: false });
  piped.shown.show({ kind: "upload", name: "P1.7", bytes: 5, total: 10 });
  piped.shown.show({ kind: "queued", jobId: "j1" });
  piped.shown.show({ kind: "progress", percent: 50 });
  assert.equal(piped.output, "job j1 queued\n  progress 50%\n");
  const quiet = display({ tty: true, quiet: true });
  quiet.shown.show({ kind: "upload", name: "P1.7", bytes: 5, total: 10 });
  quiet.shown.show({ kind: "queued", jobId: "j1" });
  quiet.shown.line("done");
  assert.equal(quiet.output, "");
});

Deno.test("ProgressDisplay shows a followed job's state through its statusLine, on its own line", () => {
  const written: string[] = [];
  const job = {
    job_id: "0b7f0f2e-3c1a-4b5e-9d2f-6a7b8c9d0e1f",
    state: "queued" as const,
    priority: "high" as const,
    queue_position: 2,
    submitted_at: "2026-12-01T10:00:00.000Z",
    file_count: 1,
    input_bytes: 3,
    attempts: 0,
  };
  new ProgressDisplay({
    write: (text) => written.push(text),
    tty: false,
    quiet: false,
    statusLine: (info) => `job ${info.job_id} is ${info.state} at ${info.queue_position}`,
  }).show({ kind: "status", job });
  new ProgressDisplay({ write: (text) => written.push(text), tty: false, quiet: false })
    .show({ kind: "status", job });
  assert.deepEqual(written, [
    `job ${job.job_id} is queued at 2\n`,
    `job ${job.job_id} queued\n`,
  ]);
});

Deno.test("ProgressDisplay with alertsOnly (--json) still says when the connection is lost; --quiet not even that", () => {
  const written: string[] = [];
  const json = new ProgressDisplay({
    write: (text) => written.push(text),
    tty: false,
    quiet: false,
    alertsOnly: true,
  });
  json.show({ kind: "queued", jobId: "x" });
  json.line("job x complete");
  json.reconnect("connection lost: reset; reconnecting in 1 s…");
  new ProgressDisplay({ write: (text) => written.push(text), tty: false, quiet: true })
    .reconnect("connection lost: reset; reconnecting in 1 s…");
  assert.deepEqual(written, ["connection lost: reset; reconnecting in 1 s…\n"]);
});
