/**
 * Tests for lib/server/server_metrics.ts: the metrics over a real job store (each job
 * counted once in its final state, run time and queue wait in the histograms, gauges
 * read at the scrape, disk free that cannot be read), the handshake failure labels for
 * every refusal lib/wire/handshake.ts can throw, byte counting on a real TCP
 * connection and its cost, and the hooks in ReconServer (connections, sessions,
 * refusals and failed handshakes by reason, jobs matching `server_status_response`),
 * with `promtool check metrics` on the output.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { ConnectionError, ProtocolError, TimeoutError } from "../../lib/errors.ts";
import { Channel } from "../../lib/wire/channel.ts";
import { encodeFrame, writeAll } from "../../lib/wire/frame.ts";
import { HandshakeRefused } from "../../lib/wire/handshake.ts";
import { JobLeases } from "../../lib/server/job_leases.ts";
import { JobStore, type NewJob } from "../../lib/server/job_store.ts";
import type { Scheduler } from "../../lib/server/scheduler.ts";
import {
  admissionRefusalReason,
  HANDSHAKE_FAILURE_REASONS,
  type HandshakeFailureReason,
  handshakeFailureReason,
  REFUSAL_REASONS,
  ServerMetrics,
} from "../../lib/server/server_metrics.ts";
import { ROOT, waitFor } from "../support/e2e.ts";
import { testKey } from "../support/channel_pair.ts";
import { checkMetrics, parseSamples, sample } from "../support/metrics.ts";
import { nextMessage, startTestServer, upload } from "../support/test_server.ts";

const SHA = "a".repeat(64);
const T0 = Date.UTC(2025, 0, 6, 8, 0, 0);

/** A clock the test moves by hand. */
function clock() {
  const c = { ms: T0, now: () => c.ms, advance: (s: number) => (c.ms += s * 1000) };
  return c;
}

/** A job store in a temporary directory and metrics over it; everything closed on dispose. */
async function metricsSite(options: { diskFree?: (dir: string) => Promise<number> } = {}) {
  const dir = await Deno.makeTempDir({ prefix: "recon-metrics-test-" });
  const time = clock();
  const store = JobStore.open(path.join(dir, "state"), { now: time.now });
  const scheduler = { executorProblem: undefined } as {
    executorProblem?: { reason: string; since: number };
  };
  const leases = new JobLeases();
  const metrics = new ServerMetrics({
    store,
    scheduler: scheduler as Scheduler,
    leases,
    reconFilePath: dir,
    diskFreeMargin: 1_000_000,
    diskFree: options.diskFree ?? (() => Promise.resolve(5_000_000)),
    executor: "local",
    version: "9.8.7",
    now: time.now,
  });
  const samples = async () => parseSamples(await metrics.render());
  return {
    store,
    scheduler,
    leases,
    metrics,
    time,
    samples,
    async [Symbol.asyncDispose]() {
      metrics.close();
      store.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function newJob(id: string, overrides: Partial<NewJob> = {}): NewJob {
  return {
    id,
    priority: "normal",
    client: "scanner-3",
    peer: "127.0.0.1:40000",
    keyId: "0011223344556677",
    options: {},
    inputDir: `/in/${id}`,
    outputDir: `/out/${id}`,
    logPath: `/log/${id}`,
    files: [{ name: "PATIENT_DOE_JOHN.7", size: 1000 }],
    uploadExpiresAt: T0 + 3_600_000,
    ...overrides,
  };
}

/** A new job of `store`, queued. */
function queue(store: JobStore, id: string, overrides: Partial<NewJob> = {}): void {
  store.createReceiving(newJob(id, overrides));
  store.inputVerified(id, 0, SHA);
  store.markQueued(id);
}

function succeed(store: JobStore, id: string): void {
  store.markSucceeded(id, {
    exitCode: 0,
    stderrTail: [],
    outputs: [{ name: "img.dcm", size: 300, sha256: SHA }],
    skipped: 0,
    resultsExpireAt: T0 + 86_400_000,
  });
}

Deno.test("render() at start shows every metric, each label of the finished states and reasons at 0, and passes promtool check metrics", async () => {
  await using site = await metricsSite();
  const text = await site.metrics.render();
  await checkMetrics(text);
  const s = parseSamples(text);
  for (const state of ["succeeded", "failed", "cancelled"]) {
    assert.equal(sample(s, `recon_jobs_finished_total{state="${state}"}`), 0);
  }
  for (const reason of HANDSHAKE_FAILURE_REASONS) {
    assert.equal(sample(s, `recon_handshake_failures_total{reason="${reason}"}`), 0);
  }
  for (const reason of REFUSAL_REASONS) {
    assert.equal(sample(s, `recon_connections_refused_total{reason="${reason}"}`), 0);
  }
  for (const priority of ["high", "normal", "low"]) {
    assert.equal(sample(s, `recon_jobs_queued{priority="${priority}"}`), 0);
  }
  for (
    const name of [
      "recon_jobs_submitted_total",
      "recon_jobs_running",
      "recon_jobs_receiving",
      "recon_network_received_bytes_total",
      "recon_network_sent_bytes_total",
      "recon_connections_open",
      "recon_sessions_open",
      "recon_kept_input_bytes",
      "recon_kept_result_bytes",
      "recon_job_duration_seconds_count",
      "recon_job_queue_wait_seconds_count",
    ]
  ) assert.equal(sample(s, name), 0, name);
  assert.equal(sample(s, "recon_disk_free_bytes"), 5_000_000);
  assert.equal(sample(s, "recon_disk_free_margin_bytes"), 1_000_000);
  assert.equal(sample(s, "recon_executor_available"), 1);
  assert.equal(sample(s, 'recon_executor_info{executor="local"}'), 1);
  assert.equal(sample(s, `recon_build_info{version="9.8.7",deno="${Deno.version.deno}"}`), 1);
  assert.equal(sample(s, "recon_start_time_seconds"), T0 / 1000);
  assert.match(site.metrics.contentType, /^text\/plain; version=0\.0\.4/);
});

Deno.test("a job is counted once in its final state, with its run time and queue wait in the histograms", async () => {
  await using site = await metricsSite();
  const { store, time } = site;
  queue(store, "ok");
  time.advance(10);
  store.markRunning("ok");
  time.advance(90);
  succeed(store, "ok");
  store.markExpired("ok"); // a later change of a finished job counts nothing more
  store.createReceiving(newJob("cut")); // an upload that never completed
  store.markFailed("cut", { reason: "the upload was not resumed", exitCode: null, stderrTail: [] });
  queue(store, "bad");
  time.advance(2);
  store.markRunning("bad");
  time.advance(4000);
  store.markFailed("bad", { reason: "exit 3", exitCode: 3, stderrTail: [] });
  queue(store, "gone");
  store.markCancelled("gone", { reason: "wrong scan", by: "someone" });
  const s = await site.samples();
  assert.equal(sample(s, 'recon_jobs_finished_total{state="succeeded"}'), 1);
  assert.equal(sample(s, 'recon_jobs_finished_total{state="failed"}'), 2);
  assert.equal(sample(s, 'recon_jobs_finished_total{state="cancelled"}'), 1);
  assert.equal(sample(s, "recon_jobs_submitted_total"), 3, "ok, bad and gone were queued");
  // Run times 90 s and 4000 s; only jobs that ran have one.
  assert.equal(sample(s, "recon_job_duration_seconds_count"), 2);
  assert.equal(sample(s, "recon_job_duration_seconds_sum"), 4090);
  assert.equal(sample(s, 'recon_job_duration_seconds_bucket{le="60"}'), 0);
  assert.equal(sample(s, 'recon_job_duration_seconds_bucket{le="120"}'), 1);
  assert.equal(sample(s, 'recon_job_duration_seconds_bucket{le="3600"}'), 1);
  assert.equal(sample(s, 'recon_job_duration_seconds_bucket{le="7200"}'), 2);
  // Queue waits 10 s and 2 s.
  assert.equal(sample(s, "recon_job_queue_wait_seconds_count"), 2);
  assert.equal(sample(s, "recon_job_queue_wait_seconds_sum"), 12);
  assert.equal(sample(s, 'recon_job_queue_wait_seconds_bucket{le="1"}'), 0);
  assert.equal(sample(s, 'recon_job_queue_wait_seconds_bucket{le="5"}'), 1);
  assert.equal(sample(s, 'recon_job_queue_wait_seconds_bucket{le="15"}'), 2);
  await checkMetrics(await site.metrics.render());
});

Deno.test("the gauges are read from the store at each scrape: queued by priority, running, receiving, kept bytes with partial uploads", async () => {
  await using site = await metricsSite();
  const { store, leases } = site;
  queue(store, "h1", { priority: "high" });
  queue(store, "l1", { priority: "low" });
  queue(store, "l2", { priority: "low" });
  queue(store, "r1");
  store.markRunning("r1");
  store.createReceiving(newJob("up"));
  leases.heldBytes.set("up", 400);
  let s = await site.samples();
  assert.equal(sample(s, 'recon_jobs_queued{priority="high"}'), 1);
  assert.equal(sample(s, 'recon_jobs_queued{priority="normal"}'), 0);
  assert.equal(sample(s, 'recon_jobs_queued{priority="low"}'), 2);
  assert.equal(sample(s, "recon_jobs_running"), 1);
  assert.equal(sample(s, "recon_jobs_receiving"), 1);
  assert.equal(sample(s, "recon_kept_input_bytes"), 4 * 1000 + 400);
  assert.equal(sample(s, "recon_kept_result_bytes"), 0);
  succeed(store, "r1");
  store.markRunning("h1");
  s = await site.samples();
  assert.equal(sample(s, 'recon_jobs_queued{priority="high"}'), 0);
  assert.equal(sample(s, "recon_jobs_running"), 1);
  assert.equal(sample(s, "recon_kept_result_bytes"), 300);
});

Deno.test("disk free that cannot be read has no sample, and it comes back when it can", async () => {
  let free: number | undefined = 42;
  await using site = await metricsSite({
    diskFree: () => free === undefined ? Promise.reject(new Error("EIO")) : Promise.resolve(free),
  });
  assert.equal(sample(await site.samples(), "recon_disk_free_bytes"), 42);
  free = undefined;
  const text = await site.metrics.render();
  assert.doesNotMatch(text, /recon_disk_free_bytes /);
  assert.equal(sample(parseSamples(text), "recon_disk_free_margin_bytes"), 1_000_000);
  await checkMetrics(text);
  free = 7;
  assert.equal(sample(await site.samples(), "recon_disk_free_bytes"), 7);
});

Deno.test("recon_executor_available follows the scheduler's executor problem", async () => {
  await using site = await metricsSite();
  site.scheduler.executorProblem = { reason: "sbatch: Slurm is down", since: T0 };
  assert.equal(sample(await site.samples(), "recon_executor_available"), 0);
  site.scheduler.executorProblem = undefined;
  assert.equal(sample(await site.samples(), "recon_executor_available"), 1);
});

Deno.test("close() stops counting job changes", async () => {
  await using site = await metricsSite();
  site.metrics.close();
  queue(site.store, "late");
  site.store.markCancelled("late", { reason: "r", by: "b" });
  const s = await site.samples();
  assert.equal(sample(s, 'recon_jobs_finished_total{state="cancelled"}'), 0);
  assert.equal(sample(s, "recon_jobs_submitted_total"), 0);
});

Deno.test("connections and sessions open go up and down; refusals and failed handshakes count by reason", async () => {
  await using site = await metricsSite();
  const { metrics } = site;
  metrics.connectionOpened();
  metrics.connectionOpened();
  metrics.sessionOpened();
  metrics.connectionRefused("too_many_from_address");
  metrics.handshakeFailed("timeout");
  metrics.handshakeFailed("timeout");
  let s = await site.samples();
  assert.equal(sample(s, "recon_connections_open"), 2);
  assert.equal(sample(s, "recon_sessions_open"), 1);
  assert.equal(sample(s, 'recon_connections_refused_total{reason="too_many_from_address"}'), 1);
  assert.equal(sample(s, 'recon_handshake_failures_total{reason="timeout"}'), 2);
  metrics.sessionClosed();
  metrics.connectionClosed();
  s = await site.samples();
  assert.equal(sample(s, "recon_connections_open"), 1);
  assert.equal(sample(s, "recon_sessions_open"), 0);
  assert.equal(admissionRefusalReason("busy"), "busy");
  assert.equal(admissionRefusalReason("too many from this address"), "too_many_from_address");
});

Deno.test("handshakeFailureReason() gives a bounded label for each error Channel.accept throws", () => {
  const refused = (message: string, keyId?: string) =>
    new HandshakeRefused("hello", message, keyId);
  const cases: [unknown, HandshakeFailureReason, { refusal?: string }?][] = [
    [new TimeoutError("the handshake did not finish in time"), "timeout"],
    [refused("closed before sending a hello"), "closed"],
    [refused("first frame is not a recon hello (bad magic)"), "not_recon"],
    [refused("malformed client hello"), "not_recon"],
    [refused("unsupported protocol version 9"), "unsupported_version"],
    [refused("unknown key id 00ff", "00ff"), "unknown_key"],
    [refused("unknown key id 00ff", "00ff"), "key_refused", {
      refusal: "client x's key was revoked",
    }],
    [refused("client sent an unusable X25519 public key", "00ff"), "bad_public_key"],
    [
      refused("closed before confirming (client rejected our proof: wrong key?)"),
      "confirmation_failed",
    ],
    [refused("client confirmation did not verify (replay?)"), "confirmation_failed"],
    [refused("something new"), "other"],
    [new ProtocolError("frame of 99999 bytes exceeds the limit"), "bad_frame"],
    [new ConnectionError("connection lost during the handshake (reset)"), "connection_lost"],
    [new Error("?"), "other"],
    ["not even an error", "other"],
  ];
  for (const [error, expected, keys] of cases) {
    assert.equal(handshakeFailureReason(error, keys), expected, String(error));
  }
});

Deno.test("every HandshakeRefused that lib/wire/handshake.ts throws has a label of its own, not 'other'", async () => {
  const source = await Deno.readTextFile(path.join(ROOT, "lib", "wire", "handshake.ts"));
  const messages = [...source.matchAll(/new HandshakeRefused\(\s*"(\w+)",\s*[`"]([^`"$]+)/g)];
  assert.ok(messages.length >= 8, `found only ${messages.length} refusals`);
  for (const [, stage, message] of messages) {
    assert.notEqual(
      handshakeFailureReason(new HandshakeRefused(stage, message)),
      "other",
      `"${message}" needs a label in REFUSED_MESSAGES`,
    );
  }
});

Deno.test("countBytes() counts every byte a real TCP connection reads and writes, and costs next to nothing", async () => {
  await using site = await metricsSite();
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const [client, accepted] = await Promise.all([
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    listener.accept(),
  ]);
  listener.close();
  const conn = site.metrics.countBytes(accepted);
  assert.equal(conn, accepted, "the same connection, so setNoDelay and close still work");
  await writeAll(client, new Uint8Array(100_000));
  client.closeWrite();
  const buffer = new Uint8Array(8192);
  let read = 0;
  for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) read += n;
  await writeAll(conn, new Uint8Array(70_000));
  conn.close();
  while (await client.read(buffer) !== null) { /* drain what the server sent */ }
  client.close();
  assert.equal(read, 100_000);
  let s = await site.samples();
  assert.equal(sample(s, "recon_network_received_bytes_total"), 100_000);
  assert.equal(sample(s, "recon_network_sent_bytes_total"), 70_000);
  // Counters only go up, overlapping scrapes or not.
  const [a, b] = await Promise.all([site.metrics.render(), site.metrics.render()]);
  assert.equal(sample(parseSamples(a), "recon_network_received_bytes_total"), 100_000);
  assert.equal(sample(parseSamples(b), "recon_network_received_bytes_total"), 100_000);
  s = await site.samples();
  assert.equal(sample(s, "recon_network_sent_bytes_total"), 70_000);

  // The cost: a wrapped read against a bare one, on a connection that answers at once.
  const bare = instantConn();
  const wrapped = site.metrics.countBytes(instantConn());
  const perCall = async (c: Deno.Conn) => {
    const rounds = 200_000;
    const start = performance.now();
    for (let i = 0; i < rounds; i++) await c.read(buffer);
    return (performance.now() - start) * 1000 / rounds;
  };
  await perCall(bare);
  await perCall(wrapped); // warm up both
  const extra = (await perCall(wrapped)) - (await perCall(bare));
  console.log(`countBytes: ${extra.toFixed(3)} µs more per read`);
  assert.ok(extra < 2, `countBytes adds ${extra} µs per read`);
});

/** A Deno.Conn whose read answers 8192 bytes at once (for measuring the wrapper only). */
function instantConn(): Deno.Conn {
  return {
    read: (p: Uint8Array) => Promise.resolve(p.length),
    write: (p: Uint8Array) => Promise.resolve(p.length),
  } as unknown as Deno.Conn;
}

Deno.test("render() with 2,000 jobs asks the store only after a job changed, and takes well under a millisecond otherwise", async () => {
  await using site = await metricsSite();
  for (let i = 0; i < 2000; i++) {
    queue(site.store, `j${i}`);
    if (i % 2 === 0) {
      site.store.markRunning(`j${i}`);
      succeed(site.store, `j${i}`);
    }
  }
  const timed = async (rounds: number, before: (i: number) => void) => {
    let total = 0;
    for (let i = 0; i < rounds; i++) {
      before(i);
      const start = performance.now();
      await site.metrics.render();
      total += performance.now() - start;
    }
    return total * 1000 / rounds;
  };
  await timed(20, () => {}); // warm up
  const quiet = await timed(200, () => {});
  const changed = await timed(50, (i) => queue(site.store, `late${i}`));
  console.log(
    `render(): ${quiet.toFixed(0)} µs, ${changed.toFixed(0)} µs after a job changed (2,000 jobs)`,
  );
  assert.ok(quiet < 2000, `render() took ${quiet} µs`);
  assert.ok(changed < 50_000, `render() after a change took ${changed} µs`);
  const s = await site.samples();
  assert.equal(sample(s, 'recon_jobs_queued{priority="normal"}'), 1000 + 50, "not stale");
});

// --- The hooks in ReconServer -----------------------------------------------------

/** Sleeps `--sleep` seconds; `--fail 1` exits 3; else one result. */
const SCRIPT = `seconds=0 fail=0
while [ $# -gt 0 ]; do
  case "$1" in --sleep) seconds=$2; shift ;; --fail) fail=$2; shift ;; esac
  shift
done
sleep "$seconds"
if [ "$fail" = 1 ]; then echo "bad scan" >&2; exit 3; fi
printf 'image' >"$RECON_OUTPUT_DIR/result.dcm"
`;

const SCAN = new TextEncoder().encode("raw k-space of one scan");

Deno.test("ReconServer: after a succeeded, a failed and a queued-then-cancelled job the counters match server_status_response; no file name or key id appears", async () => {
  await using s = await startTestServer({
    script: SCRIPT,
    config: { MAX_CONCURRENT_JOBS: 1 },
    diskFree: () => Promise.resolve(987_654_321_000),
  });
  const submit = async (options: Record<string, unknown>) => {
    const channel = await s.connect();
    try {
      return await upload(channel, { "PATIENT_DOE_JOHN.7": SCAN }, {
        client_recon_options_json: JSON.stringify(options),
      });
    } finally {
      channel.abort();
    }
  };
  const final = (id: string) => ["succeeded", "failed"].includes(s.server.store.get(id)!.state);
  const ok = await submit({});
  await waitFor("the first job to succeed", () => final(ok));
  const bad = await submit({ fail: 1 });
  await waitFor("the second job to fail", () => final(bad));
  const slow = await submit({ sleep: 30 });
  await waitFor("the slow job to run", () => s.server.store.get(slow)!.state === "running");
  const waiting = await submit({});
  await s.server.scheduler.cancel(waiting, "wrong scan", "the test");
  const channel = await s.connect();
  await channel.send({ type: "get_server_status" });
  const status = await nextMessage(channel);
  const text = await s.server.metrics.render();
  await channel.close();
  const m = parseSamples(text);
  assert.equal(sample(m, 'recon_jobs_finished_total{state="succeeded"}'), status.jobs_completed);
  assert.equal(sample(m, 'recon_jobs_finished_total{state="failed"}'), status.jobs_failed);
  assert.equal(sample(m, 'recon_jobs_finished_total{state="cancelled"}'), status.jobs_cancelled);
  assert.deepEqual([status.jobs_completed, status.jobs_failed, status.jobs_cancelled], [1, 1, 1]);
  assert.equal(sample(m, "recon_jobs_submitted_total"), 4);
  assert.equal(sample(m, "recon_jobs_running"), status.active_workers);
  assert.equal(sample(m, 'recon_jobs_queued{priority="normal"}'), status.queued_normal);
  assert.equal(sample(m, "recon_kept_input_bytes"), status.kept_input_bytes);
  assert.equal(sample(m, "recon_kept_result_bytes"), status.kept_result_bytes);
  assert.equal(sample(m, "recon_disk_free_bytes"), status.disk_free_bytes);
  assert.equal(sample(m, "recon_disk_free_margin_bytes"), status.disk_free_margin);
  assert.equal(sample(m, "recon_job_duration_seconds_count"), 2);
  assert.equal(sample(m, "recon_job_queue_wait_seconds_count"), 3);
  assert.equal(sample(m, "recon_sessions_open"), 1, "the status session");
  assert.equal(sample(m, "recon_connections_open"), 1);
  assert.ok(sample(m, "recon_network_received_bytes_total") > 4 * SCAN.length);
  assert.ok(sample(m, "recon_network_sent_bytes_total") > 0);
  for (const secret of ["PATIENT_DOE_JOHN", s.key.id, s.key.text, s.dir, "127.0.0.1"]) {
    assert.ok(!text.includes(secret), `/metrics shows ${secret}`);
  }
  await checkMetrics(text);
  channel.abort();
  await waitFor("the status session to end", async () => {
    const after = parseSamples(await s.server.metrics.render());
    return sample(after, "recon_sessions_open") === 0 &&
      sample(after, "recon_connections_open") === 0;
  });
});

Deno.test("ReconServer counts each failed handshake by reason, and connections refused for too many from one address", async () => {
  await using s = await startTestServer({
    config: { HANDSHAKE_TIMEOUT: 1, MAX_UNAUTHENTICATED_PER_IP: 2 },
  });
  const port = s.port;
  const connect = () => Deno.connect({ hostname: "127.0.0.1", port });
  const failures = async (reason: string, count: number) => {
    await waitFor(`${count} handshake failure(s) ${reason}`, async () => {
      const m = parseSamples(await s.server.metrics.render());
      return sample(m, `recon_handshake_failures_total{reason="${reason}"}`) === count;
    });
  };
  (await connect()).close();
  await failures("closed", 1);
  const garbage = await connect();
  await writeAll(garbage, encodeFrame(new TextEncoder().encode("GET / HTTP/1.1 hello there")));
  await failures("not_recon", 1);
  garbage.close();
  const stranger = await testKey();
  // A key nobody has; then our key id with other key bytes (the client drops the
  // connection when our proof does not verify).
  for (
    const [keyId, reason] of [[stranger.id, "unknown_key"], [s.key.id, "confirmation_failed"]]
  ) {
    const conn = await connect();
    await assert.rejects(Channel.connect(conn, { sharedKey: stranger.raw, keyId }));
    conn.close();
    await failures(reason, 1);
  }
  // Two silent connections use up the address's share; a third is refused; both time out.
  const silent = [await connect(), await connect()];
  await waitFor("two handshakes in progress", async () => {
    const m = parseSamples(await s.server.metrics.render());
    return sample(m, "recon_connections_open") === 2;
  });
  const third = await connect();
  await waitFor("the third connection refused", async () => {
    const m = parseSamples(await s.server.metrics.render());
    return sample(m, 'recon_connections_refused_total{reason="too_many_from_address"}') === 1;
  });
  third.close();
  await failures("timeout", 2);
  for (const conn of silent) conn.close();
  const m = parseSamples(await s.server.metrics.render());
  assert.equal(sample(m, "recon_sessions_open"), 0);
  assert.equal(sample(m, 'recon_connections_refused_total{reason="not_trusted"}'), 0);
  await checkMetrics(await s.server.metrics.render());
});

Deno.test("ReconServer counts a connection from an address not in TRUSTEDIPS as refused, not_trusted", async () => {
  await using s = await startTestServer({ config: { TRUSTEDIPS: ["192.0.2.1"] } });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: s.port });
  await waitFor("the refusal", async () => {
    const m = parseSamples(await s.server.metrics.render());
    return sample(m, 'recon_connections_refused_total{reason="not_trusted"}') === 1;
  });
  conn.close();
});
