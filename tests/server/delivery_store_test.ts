/**
 * Tests for lib/server/delivery_store.ts and schema version 3 (lib/server/store_schema.ts):
 * a version 2 store migrated in place keeps its jobs; a delivery's life (created with
 * its files pending, attempts, retry, delivered, failed, redelivered), every refused
 * transition, deliveries a stop cut off resumed after a reopen, the succeeded jobs
 * whose deliveries were never created, summaries as JobInfo shows them, the
 * deliveries that need attention (the status page's), and JobStore's `deliverTo`.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { StoreError } from "../../lib/errors.ts";
import type { AttemptEnd } from "../../lib/server/delivery_store.ts";
import { JobStore, type NewJob, STORE_FILE } from "../../lib/server/job_store.ts";
import { migrate, MIGRATIONS, STORE_SCHEMA_VERSION } from "../../lib/server/store_schema.ts";

const T0 = Date.UTC(2026, 11, 1, 9, 0, 0);
const HOUR = 3_600_000;
const SHA = "c".repeat(64);

async function stateDir(): Promise<{ dir: string } & AsyncDisposable> {
  const parent = await Deno.makeTempDir({ prefix: "recon-deliveries-" });
  return {
    dir: path.join(parent, "state"),
    [Symbol.asyncDispose]: () => Deno.remove(parent, { recursive: true }),
  };
}

/** A store on a clock the test moves, closed with `using`. */
function openStore(dir: string) {
  let now = T0;
  const store = JobStore.open(dir, { now: () => now });
  return Object.assign(store, {
    advance: (ms: number) => void (now += ms),
    now: () => now,
    [Symbol.dispose]: () => store.close(),
  });
}

function newJob(overrides: Partial<NewJob> = {}): NewJob {
  const id = overrides.id ?? crypto.randomUUID();
  return {
    id,
    priority: "normal",
    client: "mr1",
    peer: "127.0.0.1:40000",
    keyId: "k1",
    options: {},
    inputDir: `/srv/recon/job_${id}_input`,
    outputDir: `/srv/recon/job_${id}_output`,
    logPath: `/srv/recon/job_${id}.log`,
    files: [{ name: "raw.dat", size: 10 }],
    uploadExpiresAt: T0 + HOUR,
    ...overrides,
  };
}

/** A succeeded job with `outputs` result files (img0.dcm, img1.dcm, …). */
function succeededJob(store: JobStore, outputs = 3, deliverTo = ["PACS"]): string {
  const job = store.createReceiving(newJob({ deliverTo }));
  store.inputVerified(job.id, 0, SHA);
  store.markQueued(job.id);
  store.markRunning(job.id);
  store.markSucceeded(job.id, {
    exitCode: 0,
    stderrTail: [],
    outputs: Array.from(
      { length: outputs },
      (_, i) => ({ name: `img${i}.dcm`, size: 100, sha256: SHA }),
    ),
    skipped: 0,
    resultsExpireAt: T0 + 7 * 24 * HOUR,
  });
  return job.id;
}

Deno.test("a version 2 store is migrated to version 3 in place: its jobs stay, with no destinations and no deliveries", async () => {
  await using tmp = await stateDir();
  await Deno.mkdir(tmp.dir, { recursive: true, mode: 0o700 });
  const file = path.join(tmp.dir, STORE_FILE);
  const id = crypto.randomUUID();
  {
    // What a version 2 server left: its schema and one succeeded job with two results.
    const db = new DatabaseSync(file);
    db.exec("PRAGMA journal_mode = WAL");
    assert.equal(migrate(db, MIGRATIONS.slice(0, 2)), 0);
    db.prepare(
      `INSERT INTO jobs (id, state, priority, client, peer, key_id, options_json, submitted_at,
         finished_at, input_dir, output_dir, log_path, file_count, input_bytes, primary_file,
         result_count, result_bytes, results_expire_at)
       VALUES (?, 'succeeded', 'normal', 'default', '10.0.0.5:4000', 'k', '{}', ?, ?, '/i', '/o',
         '/l', 1, 10, 'raw.dat', 2, 200, ?)`,
    ).run(id, T0, T0 + 1000, T0 + HOUR);
    db.prepare(
      "INSERT INTO outputs (job_id, idx, name, size, sha256) VALUES (?, 0, 'a.dcm', 100, ?), (?, 1, 'b.dcm', 100, ?)",
    ).run(id, SHA, id, SHA);
    assert.equal(db.prepare("PRAGMA user_version").get()!.user_version, 2);
    db.close();
  }
  {
    using store = openStore(tmp.dir);
    assert.equal(store.schemaVersion(), STORE_SCHEMA_VERSION);
    assert.ok(STORE_SCHEMA_VERSION >= 3);
    const job = store.get(id)!;
    assert.equal(job.state, "succeeded");
    assert.equal(job.client, "default");
    assert.deepEqual(job.deliverTo, []);
    assert.equal(store.outputs(id).length, 2);
    assert.deepEqual(store.deliveries.ofJob(id), []);
    assert.deepEqual(store.deliveries.missing(), [], "an old job is delivered nowhere");
    // The new tables work on the migrated file.
    assert.equal(store.deliveries.create(id, ["PACS"], T0 + HOUR).length, 1);
    assert.equal(store.deliveries.files(id, "PACS").length, 2);
  }
  // Reopened: already at the current version, nothing to do.
  using again = openStore(tmp.dir);
  assert.equal(again.schemaVersion(), STORE_SCHEMA_VERSION);
  assert.equal(again.deliveries.ofJob(id).length, 1);
});

Deno.test("createReceiving() keeps deliverTo in order and refuses a name that is not upper case letters and digits, or twice", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  const job = store.createReceiving(newJob({ deliverTo: ["RESEARCH", "PACS"] }));
  assert.deepEqual(store.get(job.id)!.deliverTo, ["RESEARCH", "PACS"]);
  assert.deepEqual(store.createReceiving(newJob()).deliverTo, []);
  for (const bad of [["pacs"], ["PACS_1"], [""], ["PACS", "PACS"], ["A B"]]) {
    assert.throws(() => store.createReceiving(newJob({ deliverTo: bad })), TypeError, bad.join());
  }
  assert.equal(store.list({ limit: 10 }).length, 2, "nothing else was recorded");
});

Deno.test("a delivery's life: created with every file pending, a failed attempt, the retry, delivered", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  const { deliveries } = store;
  const id = succeededJob(store, 3);
  const [created] = deliveries.create(id, ["PACS"], T0 + 24 * HOUR);
  assert.deepEqual(created, {
    jobId: id,
    destination: "PACS",
    state: "pending",
    attempts: 0,
    nextAttemptAt: T0,
    giveUpAt: T0 + 24 * HOUR,
    requestedAt: T0,
  });
  assert.deepEqual(deliveries.create(id, ["PACS"], T0), [], "created once");
  assert.deepEqual(deliveries.files(id, "PACS").map((f) => [f.outputIndex, f.state, f.stores]), [
    [0, "pending", 0],
    [1, "pending", 0],
    [2, "pending", 0],
  ]);
  assert.deepEqual(deliveries.summaries(id), [{
    destination: "PACS",
    state: "pending",
    files_total: 3,
    files_sent: 0,
    files_skipped: 0,
    files_failed: 0,
    attempts: 0,
    next_attempt_at: new Date(T0).toISOString(),
  }]);
  assert.deepEqual(deliveries.due(T0, 10).map((d) => d.jobId), [id]);
  assert.equal(deliveries.nextAttemptAt(), T0);

  assert.throws(
    () => deliveries.checked(id, "PACS", []),
    /is pending; no attempt of it is under way/,
  );
  const sending = deliveries.begin(id, "PACS");
  assert.equal(sending.state, "sending");
  // The checks before sending are shown while it sends: file 1 is no DICOM.
  const notDicom = "not a DICOM Part 10 file: no DICM at 128";
  deliveries.checked(id, "PACS", [
    { outputIndex: 1, state: "skipped", stores: 0, reason: notDicom },
  ]);
  assert.deepEqual(
    [deliveries.summaries(id)[0].files_total, deliveries.summaries(id)[0].files_skipped],
    [2, 1],
  );
  assert.equal(sending.attempts, 1);
  assert.equal(sending.nextAttemptAt, undefined);
  assert.deepEqual(deliveries.due(T0 + HOUR, 10), [], "a delivery being sent is not due");
  assert.throws(() => deliveries.begin(id, "PACS"), StoreError);
  // The first file is stored, the second is no DICOM, the third is refused by the PACS.
  const retry = deliveries.endAttempt(id, "PACS", {
    files: [
      { outputIndex: 0, state: "sent", sopInstanceUid: "1.2.3.1", status: 0, stores: 1 },
      { outputIndex: 1, state: "skipped", stores: 0, reason: notDicom },
      {
        outputIndex: 2,
        state: "failed",
        sopInstanceUid: "1.2.3.3",
        status: 0xa700,
        stores: 1,
        reason: "C-STORE status 0xa700",
      },
    ],
    end: { state: "pending", nextAttemptAt: T0 + 30_000, lastError: "1 file not stored" },
    instancesTotal: 2,
  });
  assert.equal(retry.state, "pending");
  assert.equal(retry.lastError, "1 file not stored");
  assert.equal(retry.instancesTotal, 2);
  assert.deepEqual(deliveries.due(T0 + 29_999, 10), []);
  assert.deepEqual(deliveries.due(T0 + 30_000, 10).map((d) => d.destination), ["PACS"]);
  assert.deepEqual(deliveries.summaries(id)[0], {
    destination: "PACS",
    state: "pending",
    files_total: 2,
    files_sent: 1,
    files_skipped: 1,
    files_failed: 1,
    attempts: 1,
    last_error: "1 file not stored",
    next_attempt_at: new Date(T0 + 30_000).toISOString(),
  });

  store.advance(30_000);
  deliveries.begin(id, "PACS");
  const done = deliveries.endAttempt(id, "PACS", {
    files: [{ outputIndex: 2, state: "sent", status: 0, stores: 1 }],
    end: { state: "delivered" },
    instancesTotal: 2,
  });
  assert.equal(done.state, "delivered");
  assert.equal(done.finishedAt, T0 + 30_000);
  assert.equal(done.lastError, undefined);
  assert.equal(done.attempts, 2);
  const files = deliveries.files(id, "PACS");
  assert.deepEqual(files[2], {
    outputIndex: 2,
    state: "sent",
    sopInstanceUid: "1.2.3.3",
    status: 0,
    stores: 2,
  });
  assert.deepEqual(files.map((f) => f.stores), [1, 0, 2], "stores add up over attempts");
  assert.equal(deliveries.summaries(id)[0].finished_at, new Date(T0 + 30_000).toISOString());
  assert.equal(deliveries.summaries(id)[0].next_attempt_at, undefined);
  assert.throws(
    () =>
      deliveries.endAttempt(id, "PACS", {
        files: [],
        end: { state: "delivered" },
        instancesTotal: 2,
      }),
    /the delivery of job .* to PACS is delivered; no attempt of it is under way/,
  );
  assert.deepEqual(deliveries.counts(), { pending: 0, sending: 0, delivered: 1, failed: 0 });
});

Deno.test("fail() gives up a pending or sending delivery, and nothing else", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  const { deliveries } = store;
  const id = succeededJob(store, 1, ["PACS", "RESEARCH"]);
  deliveries.create(id, ["PACS", "RESEARCH"], T0 + HOUR);
  deliveries.begin(id, "RESEARCH");
  const failed = deliveries.fail(id, "PACS", "the job's results were removed")!;
  assert.equal(failed.state, "failed");
  assert.equal(failed.finishedAt, T0);
  assert.equal(deliveries.fail(id, "RESEARCH", "gone")!.state, "failed");
  assert.equal(deliveries.fail(id, "PACS", "again"), undefined);
  assert.equal(deliveries.fail(id, "NOWHERE", "x"), undefined);
  assert.equal(deliveries.get(id, "PACS")!.lastError, "the job's results were removed");
  assert.equal(deliveries.nextAttemptAt(), undefined);
  assert.throws(() => deliveries.begin(id, "NOWHERE"), /job .* has no delivery to NOWHERE/);
  // Given up at the last attempt: failed with why.
  const other = succeededJob(store, 1);
  deliveries.create(other, ["PACS"], T0);
  deliveries.begin(other, "PACS");
  const given = deliveries.endAttempt(other, "PACS", {
    files: [{ outputIndex: 0, state: "pending", stores: 0 }],
    end: { state: "failed", lastError: "connection refused" },
    instancesTotal: 1,
  });
  assert.deepEqual([given.state, given.lastError, given.finishedAt], [
    "failed",
    "connection refused",
    T0,
  ]);
  assert.deepEqual(deliveries.counts(), { pending: 0, sending: 0, delivered: 0, failed: 3 });
});

Deno.test("a delivery a stop cut off while sending is pending and due again after a reopen", async () => {
  await using tmp = await stateDir();
  let id: string;
  {
    using store = openStore(tmp.dir);
    id = succeededJob(store, 2);
    store.deliveries.create(id, ["PACS"], T0 + HOUR);
    store.deliveries.begin(id, "PACS");
  }
  using store = openStore(tmp.dir);
  store.advance(5000);
  assert.equal(store.deliveries.get(id, "PACS")!.state, "sending");
  const resumed = store.deliveries.resumeInterrupted();
  assert.deepEqual(resumed.map((d) => [d.jobId, d.state]), [[id, "sending"]]);
  const now = store.deliveries.get(id, "PACS")!;
  assert.deepEqual([now.state, now.nextAttemptAt, now.attempts], ["pending", T0 + 5000, 1]);
  assert.deepEqual(store.deliveries.resumeInterrupted(), []);
});

Deno.test("missing() finds succeeded jobs whose deliveries were never created, and only those", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  const { deliveries } = store;
  const both = succeededJob(store, 1, ["PACS", "RESEARCH"]);
  const none = succeededJob(store, 1, []);
  const gone = succeededJob(store, 1, ["PACS"]);
  store.markExpired(gone);
  store.setResultsRemoved(gone);
  store.createReceiving(newJob({ deliverTo: ["PACS"] })); // not succeeded (yet)
  assert.deepEqual(deliveries.missing().map((m) => [m.jobId, m.destination]), [
    [both, "PACS"],
    [both, "RESEARCH"],
  ]);
  deliveries.create(both, ["RESEARCH"], T0 + HOUR);
  assert.deepEqual(deliveries.missing().map((m) => m.destination), ["PACS"]);
  assert.equal(deliveries.missing()[0].finishedAt, T0);
  assert.deepEqual(deliveries.ofJob(none), []);
});

Deno.test("reset() sends every DICOM file again: skipped ones stay skipped, C-STORE counts stay, a new destination is created", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  const { deliveries } = store;
  const id = succeededJob(store, 3);
  deliveries.create(id, ["PACS"], T0 + HOUR);
  deliveries.begin(id, "PACS");
  deliveries.endAttempt(id, "PACS", {
    files: [
      { outputIndex: 0, state: "sent", sopInstanceUid: "1.2", status: 0, stores: 1 },
      { outputIndex: 1, state: "skipped", stores: 0, reason: "not DICOM" },
      { outputIndex: 2, state: "sent", sopInstanceUid: "1.3", status: 0, stores: 1 },
    ],
    end: { state: "delivered" },
    instancesTotal: 2,
  });
  store.advance(HOUR);
  const reset = deliveries.reset(id, ["PACS", "RESEARCH"], T0 + 25 * HOUR);
  assert.deepEqual(reset.map((d) => [d.destination, d.state, d.attempts, d.nextAttemptAt]), [
    ["PACS", "pending", 0, T0 + HOUR],
    ["RESEARCH", "pending", 0, T0 + HOUR],
  ]);
  assert.equal(reset[0].giveUpAt, T0 + 25 * HOUR);
  assert.equal(reset[0].requestedAt, T0 + HOUR);
  assert.equal(reset[0].finishedAt, undefined);
  assert.deepEqual(
    deliveries.files(id, "PACS").map((f) => [f.state, f.stores, f.sopInstanceUid ?? null]),
    [["pending", 1, "1.2"], ["skipped", 0, null], ["pending", 1, "1.3"]],
  );
  assert.deepEqual(deliveries.files(id, "RESEARCH").map((f) => f.state), [
    "pending",
    "pending",
    "pending",
  ]);
  assert.deepEqual(
    deliveries.summaries(id).map((s) => [s.destination, s.files_total, s.files_skipped]),
    [
      ["PACS", 2, 1],
      ["RESEARCH", 3, 0],
    ],
  );
});

Deno.test("attention() lists pending, sending and recently failed deliveries newest first, at most limit; failedSince() counts the failed", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  const { deliveries } = store;
  /** A job with a delivery to PACS, asked for now. */
  const delivery = () => {
    const id = succeededJob(store, 2);
    deliveries.create(id, ["PACS"], store.now() + HOUR);
    return id;
  };
  const end = (id: string, e: AttemptEnd) =>
    deliveries.endAttempt(id, "PACS", {
      files: [{ outputIndex: 0, state: "sent", status: 0, stores: 1 }],
      end: e,
      instancesTotal: 2,
    });
  // Given up 25 h before the listing: too old.
  const old = delivery();
  deliveries.fail(old, "PACS", "the job's results were removed");
  store.advance(HOUR);
  const delivered = delivery();
  deliveries.begin(delivered, "PACS");
  deliveries.endAttempt(delivered, "PACS", {
    files: [0, 1].map((i) => ({ outputIndex: i, state: "sent", status: 0, stores: 1 })),
    end: { state: "delivered" },
    instancesTotal: 2,
  });
  store.advance(HOUR);
  const retrying = delivery();
  deliveries.begin(retrying, "PACS");
  end(retrying, { state: "pending", nextAttemptAt: store.now() + 30_000, lastError: "refused" });
  store.advance(HOUR);
  const sending = delivery();
  deliveries.begin(sending, "PACS");
  store.advance(HOUR);
  const pending = delivery();
  // Asked for before the others, given up last: listed first.
  const failed = delivery();
  deliveries.begin(failed, "PACS");
  store.advance(21 * HOUR);
  end(failed, { state: "failed", lastError: "img1.dcm: C-STORE status 0xa700" });

  const since = store.now() - 24 * HOUR;
  const listed = deliveries.attention(since, 10);
  assert.deepEqual(listed.map((d) => d.jobId), [failed, pending, sending, retrying]);
  assert.deepEqual(listed.map((d) => d.delivery.state), [
    "failed",
    "pending",
    "sending",
    "pending",
  ]);
  assert.deepEqual(listed[0].delivery, {
    destination: "PACS",
    state: "failed",
    files_total: 2,
    files_sent: 1,
    files_skipped: 0,
    files_failed: 0,
    attempts: 1,
    last_error: "img1.dcm: C-STORE status 0xa700",
    finished_at: new Date(store.now()).toISOString(),
  });
  assert.equal(listed[3].delivery.attempts, 1);
  assert.equal(listed[3].delivery.last_error, "refused");
  assert.deepEqual(deliveries.attention(since, 2).map((d) => d.jobId), [failed, pending]);
  assert.deepEqual(
    deliveries.attention(T0, 10).map((d) => d.jobId).at(-1),
    old,
    "a failure since sinceMs is listed, last as the oldest",
  );
  assert.equal(deliveries.failedSince(since), 1);
  assert.equal(deliveries.failedSince(T0), 2);
  assert.equal(deliveries.failedSince(store.now() + 1), 0);
  for (const limit of [0, -1, 1.5, Number.NaN]) {
    assert.throws(() => deliveries.attention(since, limit), TypeError);
  }
});
