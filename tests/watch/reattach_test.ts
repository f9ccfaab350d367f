/**
 * A watcher that finds jobs the server named in its state file takes them up again
 * instead of sending their files as new jobs (docs/WATCH.md §5): the watch loop
 * in-process against a scripted server (real Channels on 127.0.0.1, one script per
 * connection; tests/client/scripted_server.ts). Each case starts from a state file as
 * an earlier run left it:
 *
 * - uploading → `resume_upload`, only the bytes after the server's offset go;
 * - queued / running → `follow_job` with delivery, results saved, `done`;
 * - a connection lost while following is made again, the job followed again;
 * - the server does not know an unfinished upload (not_found), or gave it up (expired,
 *   never started) → pending again, sent as a new job; a job it ran whose results
 *   expired, or a queued job it does not know → failed with its one line, never sent;
 * - a file gone before its upload resumed → the job is cancelled, the file skipped;
 * - a stop while following cancels nothing: the job stays submitted, noted.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as path from "node:path";
import { Backoff } from "../../lib/watch/backoff.ts";
import { runWatchDaemon, type WatchEnd } from "../../lib/watch/daemon.ts";
import { type FileRecord, type JobPhase, StateStore } from "../../lib/watch/state.ts";
import type { JobInfo } from "../../lib/wire/protocol.ts";
import { instantReconnect, type Peer, ScriptedServer } from "../client/scripted_server.ts";
import { waitFor } from "../support/e2e.ts";

const JOB = "0b6f3c8e-5d2a-4c61-9a7e-3f1d2b4c5a69";
const NEW_JOB = "7d6f2c1e-1111-4a2b-8c3d-4e5f60718293";
const SCAN = new Uint8Array(300_000).map((_, i) => (i * 31 + (i >> 9)) & 0xff);
const RESULT = new TextEncoder().encode("one reconstructed image\n");

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

function jobInfo(jobId: string, extra: Partial<JobInfo> = {}): JobInfo {
  return {
    job_id: jobId,
    state: "queued",
    priority: "normal",
    submitted_at: "2026-12-01T09:00:00.000Z",
    file_count: 1,
    input_bytes: SCAN.length,
    attempts: 0,
    ...extra,
  };
}

type Handler = (peer: Peer, message: Record<string, unknown>) => Promise<void>;

/** What the scripted server saw: each session's first message, and script failures. */
interface Seen {
  requests: string[];
  failures: unknown[];
}

/**
 * `count` sessions that each answer the client's first message with the handler for
 * its type (a session that only says goodbye, like the start-up key check, ends).
 */
function sessions(seen: Seen, handlers: Record<string, Handler>, count = 12) {
  const script = async (peer: Peer) => {
    let incoming;
    try {
      incoming = await peer.channel.receive();
    } catch {
      return;
    }
    if (incoming.type !== "message") return;
    const message = incoming.message as Record<string, unknown>;
    const label = `${message.type}${message.job_id ? ` ${message.job_id}` : ""}` +
      (message.deliver ? " deliver" : "");
    seen.requests.push(label);
    const handler = handlers[message.type as string];
    try {
      if (!handler) throw new Error(`unexpected ${label}`);
      await handler(peer, message);
    } catch (error) {
      seen.failures.push(error);
    }
  };
  return Array.from({ length: count }, () => script);
}

/** The results of `jobId`: one file, then recon_complete and the client's receipt. */
async function deliver(peer: Peer, jobId: string): Promise<void> {
  await peer.send({
    type: "dicom_transfer_start",
    job_id: jobId,
    count: 1,
    total_size: RESULT.length,
  });
  const ack = await peer.expect("dicom_transfer_ack");
  assert.equal(ack.status, "ready");
  await peer.send({ type: "result_file", job_id: jobId, name: "image.dcm", size: RESULT.length });
  await peer.sendFile(RESULT);
  await peer.send({ type: "recon_complete", job_id: jobId, count: 1 });
  await peer.expect("results_received");
}

/** A new submission of the scan: all of it arrives, the job is `jobId`, results follow. */
function acceptSubmission(jobId: string): Handler {
  return async (peer) => {
    const announced = await peer.expect("input_file");
    await peer.send({ type: "request_file", job_id: jobId, name: announced.name });
    const { bytes } = await peer.receiveFile();
    assert.equal(sha256(bytes), sha256(SCAN));
    await peer.send({ type: "job_queued", job_id: jobId, files_received: 1 });
    await deliver(peer, jobId);
  };
}

interface Site {
  dir: string;
  scan: string;
  store: StateStore;
  downloadDir: string;
  lines: string[];
  /** The scan's newest row. */
  row(): FileRecord;
  /** Lines matching `pattern`. */
  count(pattern: RegExp): number;
  /** Resolves once the loop has scanned the whole directory `n` more times. */
  scans(n: number): Promise<void>;
  /** Stop the watcher and wait for it. */
  stop(): Promise<WatchEnd>;
}

/**
 * A watch directory with the scan, a state file where an earlier run left it
 * submitted to `JOB` in `phase`, and a watcher started against `server`.
 */
async function reattach(
  phase: JobPhase,
  server: ScriptedServer,
  body: (site: Site) => Promise<void>,
  before?: (scan: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "recon_watch_reattach_test_" });
  const watchDir = path.join(dir, "watch");
  await Deno.mkdir(watchDir);
  const scan = path.join(watchDir, "P00001.7");
  await Deno.writeFile(scan, SCAN);
  const stat = await Deno.stat(scan);
  const store = StateStore.open(path.join(dir, "state.sqlite"));
  store.addBaseline([], { at: "2026-12-01T08:00:00.000Z", mode: "baseline", baseline: 0, sent: 0 });
  const { id } = store.addPending({
    path: scan,
    size: stat.size,
    mtimeMs: stat.mtime!.getTime(),
    ino: stat.ino,
    sha256: sha256(SCAN),
  }, "group-1");
  store.markSubmitted([id], JOB, "an-earlier-run");
  if (phase !== "uploading") store.setPhase([id], JOB, phase);
  await before?.(scan);
  let scanned = 0;
  const lines: string[] = [];
  const record = (level: string) => (message: string) => lines.push(`${level} ${message}`);
  const controller = new AbortController();
  const downloadDir = path.join(dir, "downloads");
  const running = runWatchDaemon({
    watchDir,
    pattern: "*.7",
    pollMs: 100,
    stabilityMs: 300,
    groupingMs: 100,
    reconOptions: {},
    downloadDir,
    onComplete: "",
    store,
    runId: "this-run",
    connect: server.connect,
    reconnectTimeoutMs: 60_000,
    reconnect: instantReconnect(),
    log: {
      debug: record("DEBUG"),
      info: record("INFO"),
      warn: record("WARN"),
      error: record("ERROR"),
    },
    signal: controller.signal,
    backoff: new Backoff({ baseMs: 50, capMs: 100 }),
    fileEvents: false,
    onScanned: () => scanned++,
  });
  const stop = () => {
    controller.abort();
    return running;
  };
  try {
    await body({
      dir,
      scan,
      store,
      downloadDir,
      lines,
      row: () => store.latest(scan)!,
      count: (pattern) => lines.filter((line) => pattern.test(line)).length,
      scans: async (n) => {
        const target = scanned + n;
        await waitFor(`${n} more scan(s)`, () => scanned >= target, { intervalMs: 10 });
      },
      stop,
    });
  } finally {
    await stop().catch(() => {});
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Wait until the scan's newest row has `status`; returns it. */
function statusOf(site: Site, status: string, timeoutMs = 10_000): Promise<FileRecord> {
  return waitFor(
    `the scan to be ${status}\n${site.lines.join("\n")}`,
    () => site.row().status === status ? site.row() : undefined,
    { timeoutMs, intervalMs: 20 },
  );
}

async function resultIn(site: Site, jobId: string): Promise<string> {
  return sha256(await Deno.readFile(path.join(site.downloadDir, jobId, "image.dcm")));
}

Deno.test("reattach: a job left queued is followed with delivery, never submitted again", async () => {
  const seen: Seen = { requests: [], failures: [] };
  await using server = await ScriptedServer.start(sessions(seen, {
    follow_job: async (peer, message) => {
      assert.equal(message.deliver, true);
      await peer.send({ type: "job_status", job: jobInfo(JOB, { state: "running", attempts: 1 }) });
      await peer.send({ type: "job_progress", job_id: JOB, text: "slice 3 of 4", percent: 75 });
      await deliver(peer, JOB);
    },
  }));
  await reattach("queued", server, async (site) => {
    const done = await statusOf(site, "done");
    assert.equal(done.jobId, JOB);
    assert.equal(done.phase, null);
    assert.equal(done.resultDir, path.join(site.downloadDir, JOB));
    assert.equal(done.runId, "this-run", "this run took the job up");
    assert.equal(await resultIn(site, JOB), sha256(RESULT));
    assert.equal(
      site.count(/^INFO 1 job\(s\) of an earlier run are on the server; taking them up again/),
      1,
    );
    assert.equal(
      site.count(
        new RegExp(`^INFO job ${JOB}: following it again \\(P00001\\.7; it was queued\\)`),
      ),
      1,
    );
  });
  assert.deepEqual(seen.failures, []);
  assert.deepEqual(seen.requests, [`follow_job ${JOB} deliver`]);
});

Deno.test("reattach: an unfinished upload is resumed from the server's offset, then followed to its results", async () => {
  const seen: Seen = { requests: [], failures: [] };
  const held = 200_000;
  let received = 0;
  await using server = await ScriptedServer.start(sessions(seen, {
    resume_upload: async (peer) => {
      await peer.send({ type: "request_file", job_id: JOB, name: "P00001.7", offset: held });
      const { bytes, sha256: whole } = await peer.receiveFile(SCAN.subarray(0, held));
      received = bytes.length;
      assert.equal(whole, sha256(SCAN));
      await peer.send({ type: "job_queued", job_id: JOB, files_received: 1 });
      await peer.send({ type: "job_started", job_id: JOB });
      await deliver(peer, JOB);
    },
  }));
  await reattach("uploading", server, async (site) => {
    assert.equal(site.row().phase, "uploading");
    const done = await statusOf(site, "done");
    assert.equal(done.jobId, JOB);
    assert.equal(done.reason, null, "the server got what was recorded");
    assert.equal(await resultIn(site, JOB), sha256(RESULT));
    assert.equal(site.count(new RegExp(`^INFO job ${JOB}: resuming its upload`)), 1);
  });
  assert.deepEqual(seen.failures, []);
  assert.deepEqual(seen.requests, [`resume_upload ${JOB}`]);
  assert.equal(received, SCAN.length - held, "only the bytes the server lacked");
});

Deno.test("reattach: a connection lost while following is made again and the job followed to its results", async () => {
  const seen: Seen = { requests: [], failures: [] };
  let follows = 0;
  await using server = await ScriptedServer.start(sessions(seen, {
    follow_job: async (peer) => {
      follows++;
      if (follows === 1) {
        await peer.send({
          type: "job_status",
          job: jobInfo(JOB, { state: "running", attempts: 1 }),
        });
        peer.channel.abort(); // the connection breaks while the job runs
        return;
      }
      await peer.send({
        type: "job_status",
        job: jobInfo(JOB, { state: "succeeded", attempts: 1 }),
      });
      await deliver(peer, JOB);
    },
  }));
  await reattach("queued", server, async (site) => {
    await statusOf(site, "done");
    assert.equal(await resultIn(site, JOB), sha256(RESULT));
    assert.equal(site.count(new RegExp(`^WARN job ${JOB}: connection lost`)), 1);
  });
  assert.deepEqual(seen.failures, []);
  assert.deepEqual(seen.requests, [`follow_job ${JOB} deliver`, `follow_job ${JOB} deliver`]);
});

Deno.test("reattach: an upload the server does not know (not_found) is sent again as a new job", async () => {
  const seen: Seen = { requests: [], failures: [] };
  await using server = await ScriptedServer.start(sessions(seen, {
    resume_upload: (peer) =>
      peer.send({ type: "error", kind: "not_found", reason: `no job ${JOB} on this server` }),
    submit_recon_job: acceptSubmission(NEW_JOB),
  }));
  await reattach("uploading", server, async (site) => {
    const done = await waitFor(
      "the scan done as the new job",
      () => site.row().status === "done" && site.row().jobId === NEW_JOB ? site.row() : undefined,
    );
    assert.equal(done.id, site.store.list()[0].id, "the same record, not a new scan");
    assert.equal(await resultIn(site, NEW_JOB), sha256(RESULT));
    assert.equal(
      site.count(
        new RegExp(
          `^WARN the server no longer has the upload of job ${JOB} \\(no job ${JOB} on this server\\); sent again as a new job: P00001\\.7`,
        ),
      ),
      1,
    );
  });
  assert.deepEqual(seen.failures, []);
  assert.deepEqual(seen.requests, [`resume_upload ${JOB}`, "submit_recon_job"]);
});

Deno.test("reattach: an upload the server gave up (expired, never started) is sent again as a new job", async () => {
  const seen: Seen = { requests: [], failures: [] };
  const gaveUp = jobInfo(JOB, {
    state: "failed",
    finished_at: "2026-12-01T10:00:00.000Z",
    reason: "the upload was not completed within UPLOAD_RESUME_WINDOW (3600 s)",
  });
  await using server = await ScriptedServer.start(sessions(seen, {
    resume_upload: (peer) =>
      peer.send({
        type: "error",
        kind: "expired",
        reason: `the upload of job ${JOB} was not resumed in time and was removed on ` +
          "2026-12-01T10:00:00.000Z",
      }),
    follow_job: async (peer, message) => {
      assert.equal(message.deliver, undefined, "only asks how it ended");
      await peer.send({ type: "job_status", job: gaveUp });
      await peer.send({ type: "job_status", job: gaveUp });
    },
    submit_recon_job: acceptSubmission(NEW_JOB),
  }));
  await reattach("uploading", server, async (site) => {
    await waitFor(
      "the scan done as the new job",
      () => site.row().jobId === NEW_JOB && site.row().status === "done",
    );
  });
  assert.deepEqual(seen.failures, []);
  assert.deepEqual(seen.requests, [
    `resume_upload ${JOB}`,
    `follow_job ${JOB}`,
    "submit_recon_job",
  ]);
});

Deno.test("reattach: an upload answered expired for a job that ran (its results expired) fails, never sent again", async () => {
  const seen: Seen = { requests: [], failures: [] };
  const expired = `job ${JOB} expired on 2026-12-08T10:00:00.000Z, its results were removed`;
  await using server = await ScriptedServer.start(sessions(seen, {
    // Its job_queued was lost with the connection: resume is refused, the client
    // follows it instead, and the server says its results expired.
    resume_upload: async (peer) => {
      await peer.send({
        type: "error",
        kind: "refused",
        reason: `job ${JOB} is expired; it is not being uploaded`,
      });
      const follow = await peer.expect("follow_job");
      assert.equal(follow.deliver, true);
      await peer.send({ type: "error", kind: "expired", reason: expired });
    },
    follow_job: (peer) => peer.send({ type: "error", kind: "expired", reason: expired }),
  }));
  await reattach("uploading", server, async (site) => {
    const failed = await statusOf(site, "failed");
    assert.equal(failed.reason, expired);
    assert.equal(failed.jobId, JOB);
    assert.equal(site.count(/not sent again automatically .*recon-client watch --retry/), 1);
  });
  assert.deepEqual(seen.failures, []);
  assert.deepEqual(seen.requests, [`resume_upload ${JOB}`, `follow_job ${JOB}`]);
});

Deno.test("reattach: a queued job the server does not know fails with its one line, never sent again", async () => {
  const seen: Seen = { requests: [], failures: [] };
  await using server = await ScriptedServer.start(sessions(seen, {
    follow_job: (peer) =>
      peer.send({ type: "error", kind: "not_found", reason: `no job ${JOB} on this server` }),
  }));
  await reattach("running", server, async (site) => {
    const failed = await statusOf(site, "failed");
    assert.deepEqual([failed.reason, failed.jobId, failed.phase], [
      `no job ${JOB} on this server`,
      JOB,
      null,
    ]);
    await site.scans(5); // several more passes of the loop: nothing is sent
  });
  assert.deepEqual(seen.failures, []);
  assert.deepEqual(seen.requests, [`follow_job ${JOB} deliver`]);
});

Deno.test("reattach: a file gone before its upload resumed cancels the job on the server and is skipped", async () => {
  const seen: Seen = { requests: [], failures: [] };
  await using server = await ScriptedServer.start(sessions(seen, {
    cancel_job: async (peer, message) => {
      assert.match(String(message.reason), /cannot go on/);
      await peer.send({ type: "job_status", job: jobInfo(JOB, { state: "cancelled" }) });
    },
  }));
  await reattach("uploading", server, async (site) => {
    const skipped = await statusOf(site, "skipped");
    assert.equal(skipped.reason, "deleted before it was sent");
    assert.equal(skipped.jobId, null);
  }, (scan) => Deno.remove(scan));
  assert.deepEqual(seen.failures, []);
  assert.deepEqual(seen.requests, [`cancel_job ${JOB}`]);
});

Deno.test("reattach: a stop while following cancels nothing; the job stays submitted for the next start", async () => {
  const seen: Seen = { requests: [], failures: [] };
  let following!: () => void;
  const followed = new Promise<void>((resolve) => following = resolve);
  await using server = await ScriptedServer.start(sessions(seen, {
    follow_job: async (peer) => {
      await peer.send({ type: "job_status", job: jobInfo(JOB, { state: "running", attempts: 1 }) });
      following();
      // Whatever the client sends until it goes away is recorded.
      while (true) {
        const incoming = await peer.channel.receive().catch(() => undefined);
        if (!incoming || incoming.type !== "message") return;
        seen.requests.push(String((incoming.message as { type: string }).type));
      }
    },
  }));
  await reattach("queued", server, async (site) => {
    await followed;
    await waitFor("the running phase", () => site.row().phase === "running");
    const end = await site.stop();
    assert.equal(end.kind, "stopped");
    const row = site.row();
    assert.deepEqual([row.status, row.jobId, row.phase], ["submitted", JOB, "running"]);
    assert.match(
      row.reason ?? "",
      /the watcher stopped while job .* was running; it goes on on the server/,
    );
  });
  assert.deepEqual(seen.failures, []);
  assert.deepEqual(seen.requests, [`follow_job ${JOB} deliver`], "no cancel_job");
});
