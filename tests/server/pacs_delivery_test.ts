/**
 * Tests for lib/server/pacs_delivery.ts and delivery_attempt.ts against a real Orthanc
 * (tests/support/orthanc.ts) and series made by dcmtk (tests/support/dicom_series.ts),
 * through a real job store: a succeeded job's results all arrive with their SOP Instance
 * UIDs and a non-DICOM result is skipped and reported; Orthanc killed mid-delivery, the
 * retry sends only what had not arrived (counted from delivery_files); a wrong called AE
 * title is recorded with the rejection and given up after DELIVERY_RETRY_FOR (audited,
 * hook called); results removed first; a result changed on disk is not sent; a shutdown
 * in the middle and a stop while `sending` resume at the next start; redeliver.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import type { Destination } from "../../lib/opts/mod.ts";
import { JobStore } from "../../lib/server/job_store.ts";
import type { JobRecord } from "../../lib/server/job_store.ts";
import {
  PacsDeliverer,
  type PacsDelivererOptions,
  RESULTS_REMOVED,
} from "../../lib/server/pacs_delivery.ts";
import { attemptEnd, retryDelay } from "../../lib/server/delivery_attempt.ts";
import { Refusal } from "../../lib/server/refusal.ts";
import { makeSeries, type SeriesFile } from "../support/dicom_series.ts";
import { Orthanc } from "../support/orthanc.ts";
import { delay, sha256Hex, waitFor } from "../support/e2e.ts";
import { memoryLog } from "../support/memory_log.ts";

/** A state directory and a results directory, removed with `await using`. */
async function workDir(): Promise<{ dir: string; store: JobStore } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "recon-pacs-" });
  const store = JobStore.open(path.join(dir, "state"));
  return {
    dir,
    store,
    [Symbol.asyncDispose]: async () => {
      store.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function destinationOf(
  orthanc: Orthanc | { dicomPort: number; aet: string },
  aet?: string,
): Destination {
  const calledAet = aet ?? orthanc.aet;
  return {
    name: "PACS",
    url: `dicom://${calledAet}@127.0.0.1:${orthanc.dicomPort}`,
    calledAet,
    host: "127.0.0.1",
    port: orthanc.dicomPort,
    callingAet: "RECON",
    timeoutS: 10,
  };
}

/** A port nothing listens on. */
function closedPort(): number {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return (listener.addr as Deno.NetAddr).port;
}

/** Audit events kept in memory. */
function memoryAudit() {
  const events: { event: string; fields: Record<string, unknown> }[] = [];
  return {
    events,
    record(event: string, fields: Record<string, unknown>) {
      events.push({ event, fields });
      return Promise.resolve();
    },
  };
}

/** Series made once per test run (dump2dcm takes a while for many files), by count and syntax. */
const made = new Map<string, Promise<{ dir: string; files: SeriesFile[] }>>();

/**
 * `count` files of one series in `dir`. Different counts or syntaxes are different series;
 * the same ones are copies (each test has an Orthanc of its own).
 */
async function seriesIn(
  dir: string,
  count: number,
  syntax: "explicit" | "implicit",
): Promise<SeriesFile[]> {
  const key = `${count} ${syntax}`;
  if (!made.has(key)) {
    made.set(
      key,
      (async () => {
        const source = await Deno.makeTempDir({ prefix: "recon-pacs-series-" });
        addEventListener("unload", () => Deno.removeSync(source, { recursive: true }));
        return { dir: source, files: await makeSeries(source, count, { syntax }) };
      })(),
    );
  }
  const { files } = await made.get(key)!;
  await Deno.mkdir(dir, { recursive: true });
  return await Promise.all(files.map(async (file) => {
    const copy = path.join(dir, path.basename(file.path));
    await Deno.copyFile(file.path, copy);
    return { ...file, path: copy };
  }));
}

/**
 * A job of `store` that succeeded with `series` (made in its output directory) and the
 * `extra` files written beside them; delivered to `deliverTo`.
 */
async function succeededJob(
  store: JobStore,
  dir: string,
  r: {
    count: number;
    syntax?: "explicit" | "implicit";
    extra?: Record<string, string>;
    deliverTo?: string[];
  },
): Promise<{ job: JobRecord; series: SeriesFile[] }> {
  const id = crypto.randomUUID();
  const outputDir = path.join(dir, `job_${id}_output`);
  const series = await seriesIn(outputDir, r.count, r.syntax ?? "explicit");
  for (const [name, text] of Object.entries(r.extra ?? {})) {
    await Deno.writeTextFile(path.join(outputDir, name), text);
  }
  const names = (await Array.fromAsync(Deno.readDir(outputDir))).map((e) => e.name).sort();
  const outputs = await Promise.all(names.map(async (name) => {
    const file = path.join(outputDir, name);
    const info = await Deno.stat(file);
    return {
      name,
      size: info.size,
      sha256: sha256Hex(await Deno.readFile(file)),
      dev: info.dev,
      ino: info.ino!,
      // As the worker records them: a file still at these times is not hashed again.
      mtimeMs: info.mtime?.getTime(),
      ctimeMs: info.ctime?.getTime(),
    };
  }));
  store.createReceiving({
    id,
    priority: "normal",
    client: "mr1",
    peer: "127.0.0.1:40000",
    keyId: "k1",
    options: {},
    inputDir: path.join(dir, `job_${id}_input`),
    outputDir,
    logPath: path.join(dir, `job_${id}.log`),
    files: [{ name: "raw.dat", size: 1 }],
    uploadExpiresAt: Date.now() + 3_600_000,
    deliverTo: r.deliverTo ?? ["PACS"],
  });
  store.inputVerified(id, 0, "0".repeat(64));
  store.markQueued(id);
  store.markRunning(id);
  const job = store.markSucceeded(id, {
    exitCode: 0,
    stderrTail: [],
    outputs,
    skipped: 0,
    resultsExpireAt: Date.now() + 3_600_000,
  });
  return { job, series };
}

/** A deliverer with a short backoff, closed with `await using`. */
function deliverer(
  options: Omit<PacsDelivererOptions, "log" | "retryFor"> & { retryFor?: number },
) {
  const { lines, log } = memoryLog();
  const audit = memoryAudit();
  const failures: string[] = [];
  const deliverer = new PacsDeliverer({
    retryFor: 60,
    backoff: { firstMs: 100, maxMs: 400 },
    audit,
    onDeliveryFailed: (job, destination, reason) =>
      failures.push(`${job.id} ${destination} ${reason}`),
    log,
    ...options,
  });
  return Object.assign(deliverer, {
    lines,
    audit,
    failures,
    [Symbol.asyncDispose]: () => deliverer.close(),
  });
}

function settled(store: JobStore, jobId: string, destination = "PACS", timeoutMs = 20_000) {
  return waitFor(`the delivery of ${jobId} to ${destination} to settle`, () => {
    const delivery = store.deliveries.get(jobId, destination);
    return delivery?.state === "delivered" || delivery?.state === "failed" ? delivery : undefined;
  }, { timeoutMs, intervalMs: 20 });
}

async function storedUids(orthanc: Orthanc): Promise<string[]> {
  return (await orthanc.instances()).map((i) => i.sopInstanceUid).sort();
}

const uids = (series: SeriesFile[]) => series.map((f) => f.sopInstanceUid).sort();

Deno.test("retryDelay() doubles from 30 s to at most 15 min", () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 100].map((n) => retryDelay(n) / 1000), [
    30,
    60,
    120,
    240,
    480,
    900,
    900,
    900,
  ]);
});

Deno.test("attemptEnd(): delivered when nothing is left; else retried after the backoff, the last try at the give-up time, then failed", () => {
  const delivery = {
    jobId: "j",
    destination: "PACS",
    state: "sending" as const,
    attempts: 3,
    giveUpAt: 1_000_000,
    requestedAt: 0,
  };
  const report = { files: [], instancesTotal: 4, sent: 3, skipped: 1, left: 1 };
  const r = { now: 100_000, stopping: false };
  assert.deepEqual(attemptEnd(delivery, { ...report, left: 0 }, r), { state: "delivered" });
  const failedFile = { ...report, firstFailure: "img-0002.dcm: refused: C-STORE status 0xa700" };
  assert.deepEqual(attemptEnd(delivery, failedFile, r), {
    state: "pending",
    nextAttemptAt: 100_000 + 120_000,
    lastError: "1 of 4 file(s) not stored; img-0002.dcm: refused: C-STORE status 0xa700",
  });
  const refused = { ...report, error: "connection refused" };
  assert.deepEqual(attemptEnd(delivery, refused, { now: 950_000, stopping: false }), {
    state: "pending",
    nextAttemptAt: 1_000_000,
    lastError: "connection refused",
  });
  assert.deepEqual(attemptEnd(delivery, refused, { now: 1_000_000, stopping: false }), {
    state: "failed",
    lastError: "connection refused",
  });
  assert.deepEqual(attemptEnd(delivery, refused, { now: 2_000_000, stopping: true }), {
    state: "pending",
    nextAttemptAt: 2_000_000,
    lastError: "connection refused",
  });
});

Deno.test("a succeeded job's DICOM results all arrive with their SOP Instance UIDs; a text file is skipped and reported", async () => {
  await using work = await workDir();
  await using orthanc = await Orthanc.start();
  await using pacs = deliverer({
    store: work.store,
    destinations: { PACS: destinationOf(orthanc) },
  });
  pacs.start();
  // Made after start: the store's change creates the delivery.
  const explicit = await succeededJob(work.store, work.dir, {
    count: 32,
    extra: { "notes.txt": "not an image" },
  });
  const implicit = await succeededJob(work.store, work.dir, { count: 4, syntax: "implicit" });
  for (const { job } of [explicit, implicit]) {
    assert.equal((await settled(work.store, job.id)).state, "delivered");
  }
  assert.deepEqual(
    await storedUids(orthanc),
    uids([...explicit.series, ...implicit.series]).sort(),
  );
  const [summary] = work.store.deliveries.summaries(explicit.job.id);
  assert.deepEqual({ ...summary, finished_at: undefined }, {
    destination: "PACS",
    state: "delivered",
    files_total: 32,
    files_sent: 32,
    files_skipped: 1,
    files_failed: 0,
    attempts: 1,
    finished_at: undefined,
  });
  const notes = work.store.outputs(explicit.job.id).find((o) => o.name === "notes.txt")!;
  const skipped = work.store.deliveries.files(explicit.job.id, "PACS")[notes.index];
  assert.equal(skipped.state, "skipped");
  assert.equal(skipped.stores, 0);
  assert.match(skipped.reason!, /^not a DICOM Part 10 file: /);
  const files = work.store.deliveries.files(explicit.job.id, "PACS").filter((f) =>
    f.state === "sent"
  );
  assert.deepEqual(files.map((f) => f.sopInstanceUid).sort(), uids(explicit.series));
  assert.ok(files.every((f) => f.stores === 1 && f.status === 0));
  assert.deepEqual(pacs.audit.events.find((e) => e.fields.job === explicit.job.id), {
    event: "job_delivered_pacs",
    fields: { job: explicit.job.id, destination: "PACS", instances: 32, skipped: 1, stores: 32 },
  });
  assert.ok(
    pacs.lines.some((line) =>
      line.startsWith(
        `info job ${explicit.job.id}: delivered 32 DICOM file(s) to PACS (dicom://`,
      ) &&
      line.endsWith("attempt 1; 1 result(s) skipped, not DICOM")
    ),
    pacs.lines.join("\n"),
  );
  assert.deepEqual(pacs.failures, []);
});

Deno.test("Orthanc killed mid-delivery: the retry sends only the files that had not arrived", async () => {
  await using work = await workDir();
  await using orthanc = await Orthanc.start();
  await using pacs = deliverer({
    store: work.store,
    destinations: { PACS: destinationOf(orthanc) },
  });
  // 120 files: Orthanc takes about 10 ms each, long enough to be cut off part way.
  const { job, series } = await succeededJob(work.store, work.dir, { count: 120 });
  pacs.start();
  await waitFor("some instances stored", async () => (await orthanc.count()) >= 10, {
    intervalMs: 5,
  });
  await orthanc.stop("SIGKILL");
  const first = await waitFor("the first attempt to end", () => {
    const delivery = work.store.deliveries.get(job.id, "PACS")!;
    return delivery.state === "pending" && delivery.attempts >= 1 ? delivery : undefined;
  }, { intervalMs: 10 });
  const after1 = work.store.deliveries.files(job.id, "PACS");
  const sent1 = after1.filter((f) => f.state === "sent").length;
  const stores1 = after1.reduce((sum, f) => sum + f.stores, 0);
  // Orthanc counts an instance before its answer leaves: the last one seen may be unconfirmed.
  assert.ok(sent1 >= 9 && sent1 < series.length, `sent in the first attempt: ${sent1}`);
  assert.ok(stores1 - sent1 <= 1, `requests without an answer: ${stores1 - sent1}`);
  assert.ok(first.lastError, "the association's end is recorded");
  assert.equal(after1.filter((f) => f.state === "failed").length, 0, "not refused: not confirmed");
  await orthanc.restart();
  const done = await settled(work.store, job.id);
  assert.equal(done.state, "delivered");
  assert.ok(done.attempts >= 2);
  const after = work.store.deliveries.files(job.id, "PACS");
  const stores = after.reduce((sum, f) => sum + f.stores, 0);
  assert.equal(
    stores,
    stores1 + (series.length - sent1),
    "only what had not arrived was sent again",
  );
  for (const [i, file] of after1.entries()) {
    if (file.state === "sent") {
      assert.equal(after[i].stores, 1, "a file stored once is not sent again");
    }
  }
  assert.deepEqual(await storedUids(orthanc), uids(series));
  const audited = pacs.audit.events.find((e) => e.event === "job_delivered_pacs")!;
  assert.equal(audited.fields.stores, stores);
  assert.ok(
    pacs.lines.some((l) => l.startsWith(`warn job ${job.id}: delivery to PACS (`)),
    pacs.lines.join("\n"),
  );
});

Deno.test("a wrong called AE title: the rejection is recorded, retried, and given up after DELIVERY_RETRY_FOR (audited, hook called)", async () => {
  await using work = await workDir();
  await using orthanc = await Orthanc.start({ checkCalledAet: true });
  await using pacs = deliverer({
    store: work.store,
    destinations: { PACS: destinationOf(orthanc, "NOTORTHANC") },
    retryFor: 1.5,
  });
  const { job } = await succeededJob(work.store, work.dir, { count: 3 });
  pacs.start();
  const pending = await waitFor("a retry to be planned", () => {
    const [summary] = work.store.deliveries.summaries(job.id);
    return summary.state === "pending" && summary.attempts >= 1 ? summary : undefined;
  }, { intervalMs: 10 });
  assert.match(pending.last_error!, /the called AE title is not recognized/);
  assert.ok(pending.next_attempt_at);
  const failed = await settled(work.store, job.id);
  assert.equal(failed.state, "failed");
  assert.ok(failed.attempts >= 3, `attempts ${failed.attempts}`);
  assert.ok(failed.finishedAt! >= failed.giveUpAt);
  assert.match(failed.lastError!, /the called AE title is not recognized/);
  assert.equal(failed.lastError!.includes("\n"), false);
  assert.deepEqual(pacs.failures, [`${job.id} PACS ${failed.lastError}`]);
  const audited = pacs.audit.events.filter((e) => e.event === "delivery_failed");
  assert.deepEqual(audited, [{
    event: "delivery_failed",
    fields: { job: job.id, destination: "PACS", reason: failed.lastError, sent: 0, failed: 3 },
  }]);
  assert.ok(
    pacs.lines.some((l) => l.startsWith(`error job ${job.id}: delivery to PACS given up after`)),
  );
  assert.equal(await orthanc.count(), 0);
});

Deno.test("a delivery whose results expire before it could be sent fails with why; a result changed on disk is not sent", async () => {
  await using work = await workDir();
  await using orthanc = await Orthanc.start();
  const down = { dicomPort: closedPort(), aet: "ORTHANC" };
  await using pacs = deliverer({
    store: work.store,
    destinations: { PACS: destinationOf(orthanc), DOWN: destinationOf(down) },
  });
  pacs.start();
  const late = await succeededJob(work.store, work.dir, { count: 2, deliverTo: ["DOWN"] });
  await waitFor(
    "a failed attempt",
    () =>
      work.store.deliveries.get(late.job.id, "DOWN")!.attempts >= 1 &&
      work.store.deliveries.get(late.job.id, "DOWN")!.state === "pending",
  );
  assert.match(work.store.deliveries.get(late.job.id, "DOWN")!.lastError!, /refused|connect/i);
  work.store.markExpired(late.job.id);
  const failed = work.store.deliveries.get(late.job.id, "DOWN")!;
  assert.deepEqual([failed.state, failed.lastError], ["failed", RESULTS_REMOVED]);
  assert.deepEqual(pacs.failures, [`${late.job.id} DOWN ${RESULTS_REMOVED}`]);

  // One result truncated after the job finished, another rewritten in place with as many
  // bytes (its times moved on, so it is hashed again): the others go, they do not.
  const { job, series } = await succeededJob(work.store, work.dir, { count: 4, deliverTo: [] });
  const victim = work.store.outputs(job.id)[1];
  const file = path.join(job.outputDir, victim.name);
  await Deno.truncate(file, victim.size - 100);
  const rewritten = work.store.outputs(job.id)[3];
  const bytes = await Deno.readFile(path.join(job.outputDir, rewritten.name));
  bytes[bytes.length - 1] ^= 0xff;
  await delay(20); // a later modification time than the one recorded
  await Deno.writeFile(path.join(job.outputDir, rewritten.name), bytes);
  pacs.redeliver(job.id, ["pacs"]);
  const settledOne = await waitFor("the attempt", () => {
    const d = work.store.deliveries.get(job.id, "PACS");
    return d?.state === "pending" && d.attempts >= 1 ? d : undefined;
  }, { intervalMs: 10 });
  assert.match(
    settledOne.lastError!,
    /^2 of 4 file\(s\) not stored; result 2: changed since the job finished \(\d+ → \d+ bytes\)$/,
  );
  const files = work.store.deliveries.files(job.id, "PACS");
  assert.deepEqual(files.map((f) => f.state), ["sent", "failed", "sent", "failed"]);
  assert.equal(
    files[3].reason,
    "changed since the job finished (its SHA-256 is not the one recorded)",
  );
  assert.ok(
    !settledOne.lastError!.includes("img-"),
    "no result's name in last_error (patient data)",
  );
  assert.equal(files[1].stores, 0);
  assert.deepEqual(await storedUids(orthanc), uids([series[0], series[2]]));
});

Deno.test("a shutdown in the middle leaves what was not confirmed pending; the next start sends the rest, and a stop while sending resumes too", async () => {
  await using work = await workDir();
  await using orthanc = await Orthanc.start();
  const destinations = { PACS: destinationOf(orthanc) };
  const { job, series } = await succeededJob(work.store, work.dir, { count: 120 });
  {
    await using pacs = deliverer({ store: work.store, destinations });
    pacs.start();
    await waitFor("some instances stored", async () => (await orthanc.count()) >= 10, {
      intervalMs: 5,
    });
    await pacs.close();
    assert.ok(pacs.lines.some((l) => l.includes("stopped by the shutdown")), pacs.lines.join("\n"));
  }
  const stopped = work.store.deliveries.get(job.id, "PACS")!;
  assert.equal(stopped.state, "pending");
  const files = work.store.deliveries.files(job.id, "PACS");
  const sent = files.filter((f) => f.state === "sent").length;
  assert.ok(sent >= 9 && sent < series.length, `sent before the shutdown: ${sent}`);
  assert.equal(files.filter((f) => f.state === "failed").length, 0);
  const storesBefore = files.reduce((sum, f) => sum + f.stores, 0);
  // The next start: everything arrives, nothing that was stored is sent again.
  await using next = deliverer({ store: work.store, destinations });
  next.start();
  assert.equal((await settled(work.store, job.id)).state, "delivered");
  const after = work.store.deliveries.files(job.id, "PACS");
  assert.equal(after.reduce((sum, f) => sum + f.stores, 0), storesBefore + series.length - sent);
  assert.deepEqual(await storedUids(orthanc), uids(series));

  // A crash while `sending`: the recovery makes it pending again, and it is sent.
  const other = await succeededJob(work.store, work.dir, { count: 3, deliverTo: [] });
  work.store.deliveries.create(other.job.id, ["PACS"], Date.now() + 60_000);
  work.store.deliveries.begin(other.job.id, "PACS");
  assert.deepEqual(work.store.deliveries.resumeInterrupted().map((d) => d.jobId), [other.job.id]);
  await using third = deliverer({ store: work.store, destinations });
  third.start();
  assert.equal((await settled(work.store, other.job.id)).state, "delivered");
});

Deno.test("start() creates the deliveries of a job that succeeded while no deliverer ran", async () => {
  await using work = await workDir();
  await using orthanc = await Orthanc.start();
  const { job, series } = await succeededJob(work.store, work.dir, { count: 5 });
  assert.deepEqual(work.store.deliveries.ofJob(job.id), []);
  await using pacs = deliverer({
    store: work.store,
    destinations: { PACS: destinationOf(orthanc) },
  });
  pacs.start();
  const done = await settled(work.store, job.id);
  assert.equal(done.state, "delivered");
  assert.equal(
    done.giveUpAt,
    job.finishedAt! + 60_000,
    "DELIVERY_RETRY_FOR counts from the job's end",
  );
  assert.deepEqual(await storedUids(orthanc), uids(series));
});

Deno.test("redeliver() sends every DICOM file again, to the job's destinations or those named; refusals say why", async () => {
  await using work = await workDir();
  await using orthanc = await Orthanc.start();
  await using second = await Orthanc.start({ aet: "ARCHIVE" });
  await using pacs = deliverer({
    store: work.store,
    destinations: {
      PACS: destinationOf(orthanc),
      ARCHIVE: { ...destinationOf(second), name: "ARCHIVE" },
    },
  });
  pacs.start();
  const { job, series } = await succeededJob(work.store, work.dir, {
    count: 6,
    extra: { "a.txt": "x" },
  });
  await settled(work.store, job.id);
  const summaries = pacs.redeliver(job.id);
  assert.deepEqual(
    summaries.map((s) => [s.destination, s.state, s.files_sent, s.files_skipped, s.attempts]),
    [
      ["PACS", "pending", 0, 1, 0],
    ],
  );
  await settled(work.store, job.id);
  const files = work.store.deliveries.files(job.id, "PACS");
  assert.deepEqual(files.map((f) => f.stores), [0, 2, 2, 2, 2, 2, 2], "sent twice; a.txt never");
  assert.equal(await orthanc.count(), 6);
  // Another destination by name (any case): created.
  assert.deepEqual(pacs.redeliver(job.id, ["archive"]).map((s) => s.destination), [
    "ARCHIVE",
    "PACS",
  ]);
  assert.equal((await settled(work.store, job.id, "ARCHIVE")).state, "delivered");
  assert.deepEqual(await storedUids(second), uids(series));
  // Refusals.
  assert.throws(
    () => pacs.redeliver(crypto.randomUUID()),
    (e) => e instanceof Refusal && e.kind === "not_found",
  );
  assert.throws(
    () => pacs.redeliver(job.id, ["NOWHERE"]),
    /^Refusal: there is no destination NOWHERE in the server's recon.opts \(configured: ARCHIVE, PACS\)$/,
  );
  const none = await succeededJob(work.store, work.dir, { count: 1, deliverTo: [] });
  assert.throws(
    () => pacs.redeliver(none.job.id),
    /was sent to no destination; name one \(ARCHIVE, PACS\)/,
  );
  work.store.markExpired(none.job.id);
  assert.throws(
    () => pacs.redeliver(none.job.id, ["PACS"]),
    (e) => e instanceof Refusal && e.kind === "expired",
  );
});
