/**
 * The DICOM destinations a session may name (docs/PROTOCOL.md §6.11), at the session
 * level against an in-process server, its real job store and deliverer, and a real
 * client file: a submission's `deliver` (checked against DESTINATION_<NAME> and the
 * client's deliver= list; the job goes to DEFAULT_DESTINATIONS and then to those),
 * `redeliver_job`, the deliveries in JobInfo, `destinations` in the status, a server
 * without destinations, re-runs and version 2 clients. The destinations point at a
 * closed port: what is checked here is what the session accepts and records (sending
 * to a real PACS is tests/server/pacs_delivery_test.ts's).
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { Channel } from "../../lib/wire/channel.ts";
import { parseDestination } from "../../lib/opts/destination.ts";
import type { ReconConfig } from "../../lib/opts/mod.ts";
import { addClient } from "../../lib/server/client_file.ts";
import type { ClientKey } from "../../lib/server/client_keys.ts";
import { freePort, waitFor } from "../support/e2e.ts";
import {
  announce,
  expectMessage,
  fetchResults,
  nextMessage,
  startTestServer,
  TestClock,
  upload,
} from "../support/test_server.ts";

const encoder = new TextEncoder();
const SCAN = encoder.encode("raw k-space of one scan");
const FILES = [{ name: "P00001.7", size: SCAN.length }];

/** PACS and RESEARCH on a port nobody listens on; `defaults` every job goes to. */
function destinations(defaults: string[] = []): Partial<ReconConfig> {
  const port = freePort();
  return {
    DESTINATIONS: {
      PACS: parseDestination("PACS", `dicom://ORTHANC@127.0.0.1:${port}`),
      RESEARCH: parseDestination("RESEARCH", `dicom://ARCHIVE@127.0.0.1:${port}?timeout=2`),
    },
    DEFAULT_DESTINATIONS: defaults,
  };
}

/** A server with a client file: mr1 may deliver to PACS, mr2 nowhere. */
async function startServer(config: Partial<ReconConfig> = {}, clock?: TestClock) {
  const dir = await Deno.makeTempDir({ prefix: "recon-destinations-test-" });
  const file = path.join(dir, "recon-clients");
  const now = new Date();
  const mr1 = await addClient(file, { name: "mr1", deliver: ["PACS"], now });
  const mr2 = await addClient(file, { name: "mr2", now });
  const s = await startTestServer({ config: { CLIENT_KEYS_FILE: file, ...config }, clock });
  return {
    s,
    mr1,
    mr2,
    /** A session under `key` (default: SHARED_KEY, the admin client `default`). */
    async connect(key?: ClientKey, version?: number): Promise<Channel> {
      if (!key) return await s.connect(version);
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: s.port });
      return await Channel.connect(conn, { sharedKey: key.raw, keyId: key.keyId, version });
    },
    async [Symbol.asyncDispose]() {
      await s[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Announce SCAN with `extra` in submit_recon_job; the server's first answer. */
async function announceJob(
  channel: Channel,
  extra: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  await announce((message) => channel.send(message), FILES, extra);
  return await nextMessage(channel);
}

/** One request, one answer, in a session of its own. */
async function ask(
  connect: () => Promise<Channel>,
  message: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const channel = await connect();
  try {
    await channel.send(message);
    const answer = await nextMessage(channel);
    await channel.close();
    return answer;
  } finally {
    channel.abort();
  }
}

/** Submit SCAN, wait for the job's end and take its results; returns its id. */
async function runJob(
  connect: () => Promise<Channel>,
  extra: Record<string, unknown> = {},
): Promise<string> {
  const channel = await connect();
  try {
    const id = await upload(channel, { "P00001.7": SCAN }, extra);
    await fetchResults(channel, id);
    await channel.close();
    return id;
  } finally {
    channel.abort();
  }
}

function assertRefused(answer: Record<string, unknown>, reason: string, kind = "refused") {
  assert.deepEqual(answer, { type: "error", kind, reason });
}

Deno.test("a submission naming destinations the server has goes to the defaults and then to those", async () => {
  await using site = await startServer(destinations(["RESEARCH"]));
  const { s, mr1 } = site;
  const id = await runJob(() => site.connect(), { deliver: ["pacs", "Research"] });
  assert.deepEqual(s.server.store.get(id)?.deliverTo, ["RESEARCH", "PACS"]);
  // mr1 may name PACS; RESEARCH it gets anyway (a default), so naming it is no refusal.
  const own = await runJob(() => site.connect(mr1), { deliver: ["PACS", "RESEARCH"] });
  assert.deepEqual(s.server.store.get(own)?.deliverTo, ["RESEARCH", "PACS"]);
  // Without deliver, and from a version 2 client (whose schema ignores the member).
  const plain = await runJob(() => site.connect(mr1));
  assert.deepEqual(s.server.store.get(plain)?.deliverTo, ["RESEARCH"]);
  const v2 = await runJob(() => site.connect(undefined, 2), {
    deliver: ["PACS"],
    priority: "urgent",
  });
  assert.deepEqual(s.server.store.get(v2)?.deliverTo, ["RESEARCH"]);
  assert.equal(s.server.store.get(v2)?.priority, "normal", "nor a priority");
  await s.logLine(
    /job \S+: receiving 1 file\(s\), \d+ bytes \(priority normal\), for RESEARCH, PACS/,
  );
});

Deno.test("a destination the server does not have is refused before any file, naming those it has", async () => {
  await using site = await startServer(destinations());
  const channel = await site.connect();
  try {
    const answer = await announceJob(channel, { deliver: ["PACS", "archive"] });
    assertRefused(
      answer,
      'no destination "ARCHIVE" on this server; the destinations are PACS, RESEARCH',
    );
    // The session goes on at top level, and nothing was recorded.
    await channel.send({ type: "list_jobs" });
    assert.deepEqual(await nextMessage(channel), { type: "job_list", jobs: [] });
    await channel.close();
  } finally {
    channel.abort();
  }
  await site.s.logLine(/job refused: no destination "ARCHIVE"/);
});

Deno.test("a client may name only the destinations of its deliver= list", async () => {
  await using site = await startServer(destinations());
  const { s, mr1, mr2 } = site;
  const one = await site.connect(mr1);
  try {
    assertRefused(
      await announceJob(one, { deliver: ["RESEARCH"] }),
      "client mr1 may not deliver to RESEARCH (its deliver= list is PACS); ask the server's administrator",
    );
    const id = await upload(one, { "P00001.7": SCAN }, { deliver: ["pacs"] });
    assert.deepEqual(s.server.store.get(id)?.deliverTo, ["PACS"]);
  } finally {
    one.abort();
  }
  const two = await site.connect(mr2);
  try {
    assertRefused(
      await announceJob(two, { deliver: ["PACS"] }),
      "client mr2 may not deliver to PACS (its line in the server's client file has no deliver= list); ask the server's administrator",
    );
    await two.close();
  } finally {
    two.abort();
  }
});

Deno.test("a server without destinations refuses deliver and redeliver_job, and says it has none", async () => {
  await using site = await startServer();
  const channel = await site.connect();
  try {
    assertRefused(
      await announceJob(channel, { deliver: ["PACS"] }),
      "this server has no DICOM destinations (no DESTINATION_<NAME> in its recon.opts); submit without --deliver",
    );
    await channel.send({ type: "get_server_status" });
    const status = await nextMessage(channel);
    assert.deepEqual(status.destinations, []);
    assert.equal(status.default_destinations, undefined);
    await channel.close();
  } finally {
    channel.abort();
  }
  const id = await runJob(() => site.connect());
  assert.deepEqual(site.s.server.store.get(id)?.deliverTo, []);
  assertRefused(
    await ask(() => site.connect(), { type: "redeliver_job", job_id: id }),
    "this server has no DICOM destinations (no DESTINATION_<NAME> in its recon.opts); there is nothing to deliver to",
  );
  const job = await ask(() => site.connect(), { type: "follow_job", job_id: id });
  assert.equal((job.job as Record<string, unknown>).deliveries, undefined, "no deliveries member");
});

Deno.test("the status names the destinations each client may name, and DEFAULT_DESTINATIONS", async () => {
  await using site = await startServer(destinations(["RESEARCH"]));
  const admin = await ask(() => site.connect(), { type: "get_server_status" });
  assert.deepEqual(admin.destinations, ["PACS", "RESEARCH"]);
  assert.deepEqual(admin.default_destinations, ["RESEARCH"]);
  // mr1 may name PACS (its deliver= list) and RESEARCH (every job's); mr2 only RESEARCH.
  const mr1 = await ask(() => site.connect(site.mr1), { type: "get_server_status" });
  assert.deepEqual(mr1.destinations, ["PACS", "RESEARCH"]);
  assert.deepEqual(mr1.default_destinations, ["RESEARCH"]);
  const mr2 = await ask(() => site.connect(site.mr2), { type: "get_server_status" });
  assert.deepEqual(mr2.destinations, ["RESEARCH"]);
  // Versions 1 and 2 see what they always saw.
  const v2 = await ask(() => site.connect(undefined, 2), { type: "get_server_status" });
  assert.equal(v2.destinations, undefined);
});

Deno.test("a succeeded job's deliveries are in job_status and job_list", async () => {
  await using site = await startServer(destinations());
  const id = await runJob(() => site.connect(), { deliver: ["PACS", "RESEARCH"] });
  // Its results (result.dcm, provenance.json) are no DICOM files: skipped, nothing to send.
  const deliveries = await waitFor("the job's deliveries", () => {
    const found = site.s.server.store.deliveries.summaries(id);
    return found.length === 2 && found.every((d) => d.state === "delivered") ? found : undefined;
  });
  assert.deepEqual(deliveries.map((d) => d.destination), ["PACS", "RESEARCH"]);
  assert.deepEqual(deliveries.map((d) => [d.files_total, d.files_skipped]), [[0, 2], [0, 2]]);
  const channel = await site.connect();
  try {
    await channel.send({ type: "follow_job", job_id: id });
    const first = await nextMessage(channel);
    assert.deepEqual((first.job as { deliveries?: unknown }).deliveries, deliveries);
    await nextMessage(channel); // the final job_status
    await channel.send({ type: "list_jobs" });
    const list = await nextMessage(channel);
    const listed = (list.jobs as { deliveries?: unknown }[])[0];
    assert.deepEqual(listed.deliveries, deliveries);
    await channel.close();
  } finally {
    channel.abort();
  }
});

Deno.test("redeliver_job sends a succeeded job's results again, to its destinations or to those named", async () => {
  await using site = await startServer(destinations());
  const { s, mr1 } = site;
  const id = await runJob(() => site.connect(mr1), { deliver: ["PACS"] });
  await waitFor("the delivery to PACS", () => s.server.store.deliveries.summaries(id).length > 0);
  const again = await ask(() => site.connect(mr1), { type: "redeliver_job", job_id: id });
  assert.equal(again.type, "job_status");
  const job = again.job as { job_id: string; state: string; deliveries: { destination: string }[] };
  assert.equal(job.job_id, id);
  assert.equal(job.state, "succeeded");
  assert.deepEqual(job.deliveries.map((d) => d.destination), ["PACS"]);
  await s.logLine(new RegExp(`job ${id}: delivery again to PACS asked by mr1 at `));
  // mr1 may not add RESEARCH; the admin client may, and a name the server lacks is refused.
  assertRefused(
    await ask(() => site.connect(mr1), { type: "redeliver_job", job_id: id, to: ["RESEARCH"] }),
    "client mr1 may not deliver to RESEARCH (its deliver= list is PACS); ask the server's administrator",
  );
  assertRefused(
    await ask(() => site.connect(), { type: "redeliver_job", job_id: id, to: ["ARCHIVE"] }),
    'no destination "ARCHIVE" on this server; the destinations are PACS, RESEARCH',
  );
  const both = await ask(
    () => site.connect(),
    { type: "redeliver_job", job_id: id, to: ["research"] },
  );
  const named = both.job as { deliveries: { destination: string }[] };
  assert.deepEqual(named.deliveries.map((d) => d.destination), ["PACS", "RESEARCH"]);
  // Another client's job is not found, like one that does not exist.
  const other = await ask(() => site.connect(site.mr2), { type: "redeliver_job", job_id: id });
  assertRefused(other, `no job ${id} on this server`, "not_found");
});

Deno.test("redeliver_job refuses a job that did not succeed and one whose results expired", async () => {
  const clock = new TestClock();
  await using site = await startServer(destinations(["PACS"]), clock);
  const { s } = site;
  // A job still running.
  await Deno.writeTextFile(s.config.RECON_SCRIPT, "#!/bin/sh\nsleep 30\n");
  const channel = await site.connect();
  let running: string;
  try {
    running = await upload(channel, { "P00001.7": SCAN });
  } finally {
    channel.abort();
  }
  await waitFor("the job to run", () => s.server.store.get(running)?.state === "running");
  assertRefused(
    await ask(() => site.connect(), { type: "redeliver_job", job_id: running }),
    `job ${running} is running; only a succeeded job's results can be delivered again`,
  );
  const cancelled = await ask(() => site.connect(), { type: "cancel_job", job_id: running });
  assert.equal((cancelled.job as { state: string }).state, "cancelled");
  // A succeeded job whose results went with RESULT_RETENTION.
  await Deno.writeTextFile(
    s.config.RECON_SCRIPT,
    `#!/bin/sh\nprintf 'image' >"$RECON_OUTPUT_DIR/result.dcm"\n`,
  );
  const id = await runJob(() => site.connect());
  // Past RESULT_RETENTION: the request settles the job on the spot.
  clock.advance(s.config.RESULT_RETENTION + 60);
  const answer = await ask(() => site.connect(), { type: "redeliver_job", job_id: id });
  assertRefused(
    answer,
    `job ${id} expired, its results were removed (RESULT_RETENTION); there is nothing to send`,
    "expired",
  );
  const unknown = crypto.randomUUID();
  assertRefused(
    await ask(() => site.connect(), { type: "redeliver_job", job_id: unknown }),
    `no job ${unknown} on this server`,
    "not_found",
  );
});

Deno.test("a re-run goes where the failed job went", async () => {
  await using site = await startServer(destinations());
  const { s } = site;
  await Deno.writeTextFile(s.config.RECON_SCRIPT, "#!/bin/sh\nexit 3\n");
  const channel = await site.connect();
  let failed: string;
  try {
    failed = await upload(channel, { "P00001.7": SCAN }, { deliver: ["RESEARCH"] });
    await expectMessage(channel, "job_failed");
    await channel.close();
  } finally {
    channel.abort();
  }
  const rerun = await site.connect();
  try {
    await rerun.send({ type: "rerun_job", job_id: failed });
    const queued = await nextMessage(rerun);
    assert.equal(queued.type, "job_queued");
    assert.deepEqual(s.server.store.get(queued.job_id as string)?.deliverTo, ["RESEARCH"]);
  } finally {
    rerun.abort();
  }
});
