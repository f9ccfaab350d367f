/**
 * End to end (bin/recon-server and bin/recon-client as real processes): `/metrics` on
 * HTTP_LISTEN after a job that succeeded, one that failed, one cancelled while queued
 * and one still running, plus a connection closed before its handshake. The text passes
 * `promtool check metrics` (Debian package `prometheus`; the test fails without it),
 * its counters and gauges say what `recon-client --server-status --json` says, the
 * histograms counted the jobs that ran and waited, and no file name or key appears.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { ExitCode } from "../lib/errors.ts";
import { E2EServer, tempDir, testdata, waitFor } from "./support/e2e.ts";
import { jobInfo } from "./support/durable.ts";
import { checkMetrics, parseSamples, sample } from "./support/metrics.ts";

const MIB = 1024 * 1024;

/** GET `url`; fails unless 200. */
async function scrape(url: string): Promise<{ text: string; contentType: string }> {
  const response = await fetch(url, { signal: AbortSignal.timeout(20_000) });
  const text = await response.text();
  assert.equal(response.status, 200, text);
  return { text, contentType: response.headers.get("content-type") ?? "" };
}

/** Run recon-client; its stdout, or a failure with its stderr unless it exits `code`. */
async function client(server: E2EServer, args: string[], code = 0): Promise<string> {
  const result = await server.client(args);
  assert.equal(result.code, code, `recon-client ${args.join(" ")}:\n${result.stderr}`);
  return result.stdout;
}

Deno.test("/metrics after a succeeded, a failed, a queued-then-cancelled and a running job passes promtool and agrees with --server-status --json", async () => {
  await using files = await tempDir();
  await using server = await E2EServer.start({
    script: testdata("e2e_recon.sh"),
    options: { HTTP_LISTEN: "127.0.0.1:0", MAX_CONCURRENT_JOBS: 1 },
  });
  const url = `${server.httpUrl}/metrics`;
  const before = parseSamples((await scrape(url)).text);
  assert.equal(sample(before, 'recon_jobs_finished_total{state="succeeded"}'), 0);

  // A file name that must never show: it may carry a patient's name.
  const input = path.join(files.path, "DOE_JOHN_P12345.7");
  const scan = new Uint8Array(MIB).fill(7);
  await Deno.writeFile(input, scan);
  const downloads = path.join(files.path, "downloads");
  await client(server, ["--files", input, "--download-dir", downloads]);
  const failing = JSON.stringify({ exit: 3 });
  await client(server, ["--files", input, "--recon-options", failing], ExitCode.JOB_FAILED);
  const slow = JSON.stringify({ sleep: 60 });
  const running = (await client(server, ["--files", input, "--detach", "--recon-options", slow]))
    .trim();
  await waitFor(
    "the slow job to run",
    async () => (await jobInfo(server, running)).state === "running",
  );
  const queued = (await client(server, ["--files", input, "--detach"])).trim();
  await client(server, ["cancel", queued]);
  // A port check: connects and closes before any hello.
  (await Deno.connect({ hostname: "127.0.0.1", port: server.port })).close();
  await waitFor("the closed connection to be counted", async () => {
    const m = parseSamples((await scrape(url)).text);
    return sample(m, 'recon_handshake_failures_total{reason="closed"}') === 1;
  });

  const status = JSON.parse(await client(server, ["--server-status", "--json"]));
  // recon-client has exited; its session ends on the server a moment later.
  await waitFor("the status session to end", async () => {
    const m = parseSamples((await scrape(url)).text);
    return sample(m, "recon_sessions_open") === 0 && sample(m, "recon_connections_open") === 0;
  });
  const { text, contentType } = await scrape(url);
  assert.match(contentType, /^text\/plain; version=0\.0\.4/);
  await checkMetrics(text);
  const m = parseSamples(text);
  const finished = (state: string) => sample(m, `recon_jobs_finished_total{state="${state}"}`);
  assert.deepEqual(
    [finished("succeeded"), finished("failed"), finished("cancelled")],
    [status.jobs_completed, status.jobs_failed, status.jobs_cancelled],
  );
  assert.deepEqual([status.jobs_completed, status.jobs_failed, status.jobs_cancelled], [1, 1, 1]);
  assert.equal(sample(m, "recon_jobs_submitted_total"), 4);
  assert.equal(sample(m, "recon_jobs_running"), status.active_workers);
  assert.equal(sample(m, "recon_jobs_running"), 1);
  for (const priority of ["high", "normal", "low"]) {
    assert.equal(
      sample(m, `recon_jobs_queued{priority="${priority}"}`),
      status[`queued_${priority}`],
    );
  }
  assert.equal(sample(m, "recon_kept_input_bytes"), status.kept_input_bytes);
  assert.equal(sample(m, "recon_kept_result_bytes"), status.kept_result_bytes);
  assert.equal(sample(m, "recon_disk_free_margin_bytes"), status.disk_free_margin);
  // Free space moves with everything else on the machine: close, not equal.
  assert.ok(Math.abs(sample(m, "recon_disk_free_bytes") - status.disk_free_bytes) < 256 * MIB);
  assert.equal(sample(m, "recon_job_duration_seconds_count"), 2, "the jobs that ran to an end");
  assert.equal(sample(m, "recon_job_queue_wait_seconds_count"), 3, "the jobs that started");
  assert.ok(sample(m, "recon_network_received_bytes_total") > 4 * scan.length);
  assert.ok(sample(m, "recon_network_sent_bytes_total") > scan.length, "the results went back");
  assert.equal(sample(m, "recon_executor_available"), 1);
  assert.equal(sample(m, 'recon_executor_info{executor="local"}'), 1);
  assert.equal(sample(m, 'recon_handshake_failures_total{reason="closed"}'), 1);
  assert.equal(sample(m, "recon_sessions_open"), 0);
  assert.ok(
    [...m.keys()].some((series) => series.startsWith("recon_build_info{version=")),
    "build info",
  );
  for (const secret of ["DOE_JOHN", "P12345", server.key, files.path, server.dir]) {
    assert.ok(!text.includes(secret), `/metrics shows ${secret}`);
  }
  await client(server, ["cancel", running]);
});
