/**
 * Tests for the deliveries on the status page (issue 17): lib/monitor/status_delivery_view.ts
 * and status_delivery_page.ts through statusView() and renderStatusPage(). With DICOM
 * destinations, statusView() of a real job store counts the deliveries by state, lists
 * those that need attention (pending, sending, given up in the last 24 h) newest first
 * with their last errors, the job's file names and directories blanked out, and gives
 * each finished job its deliveries; the page shows a Deliveries card (red when one was
 * given up in the last 24 h, orange while one is retried), the section and a short
 * cell per destination, escapes everything and names no file. Without destinations
 * the card and the section are left out.
 */
import assert from "node:assert/strict";
import type { DeliveriesView } from "../../lib/monitor/status_delivery_view.ts";
import { renderStatusPage } from "../../lib/monitor/status_page.ts";
import { type StatusSettings, type StatusView, statusView } from "../../lib/monitor/status_view.ts";
import { parseDestination } from "../../lib/opts/mod.ts";
import type { AttemptEnd, FileOutcome } from "../../lib/server/delivery_store.ts";
import { JobLeases } from "../../lib/server/job_leases.ts";
import { JobStore, type NewJob } from "../../lib/server/job_store.ts";
import type { ReconServer } from "../../lib/server/server.ts";
import { clockedStore } from "../support/clocked_store.ts";

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const GIB = 1024 ** 3;
const NOW = Date.UTC(2026, 4, 12, 14, 37, 12);
const SHA = "c".repeat(64);
/** A result file's name: it must never reach the page (it could be a patient's). */
const SECRET = "PATIENT_DOE";

type Clocked = { store: JobStore; at: (ms: number) => void };

/**
 * A job that succeeded at `finished` with two results, `PATIENT_DOE.dcm` and
 * `series/PATIENT_DOE_2.dcm`, whose deliveries go to `deliverTo`.
 */
function succeeded(s: Clocked, finished: number, deliverTo: string[]): string {
  const id = crypto.randomUUID();
  const job: NewJob = {
    id,
    priority: "normal",
    client: "mr1",
    peer: "127.0.0.1:40000",
    keyId: "k1d",
    options: {},
    inputDir: `/srv/recon/job_${id}_input`,
    outputDir: `/srv/results/job_${id}_output`,
    logPath: `/srv/recon/job_${id}.log`,
    files: [{ name: `${SECRET}_raw.7`, size: 1000 }],
    uploadExpiresAt: finished + HOUR,
    deliverTo,
  };
  s.at(finished - 10 * MINUTE);
  s.store.createReceiving(job);
  s.store.inputVerified(id, 0, SHA);
  s.store.markQueued(id);
  s.store.markRunning(id);
  s.at(finished);
  s.store.markSucceeded(id, {
    exitCode: 0,
    stderrTail: [],
    outputs: [
      { name: `${SECRET}.dcm`, size: 4096, sha256: SHA },
      { name: `series/${SECRET}_2.dcm`, size: 4096, sha256: SHA },
    ],
    skipped: 0,
    resultsExpireAt: finished + 7 * 24 * HOUR,
  });
  if (deliverTo.length > 0) s.store.deliveries.create(id, deliverTo, finished + 24 * HOUR);
  return id;
}

/** One attempt at `at` that stores the files `sent` (by index) and ends as `end`. */
function attempt(s: Clocked, id: string, at: number, sent: number[], end: AttemptEnd): void {
  s.at(at);
  s.store.deliveries.begin(id, "PACS");
  const files: FileOutcome[] = [0, 1].map((i) =>
    sent.includes(i)
      ? { outputIndex: i, state: "sent", status: 0, stores: 1 }
      : { outputIndex: i, state: "failed", status: 0xa700, stores: 1, reason: "refused" }
  );
  s.store.deliveries.endAttempt(id, "PACS", { files, end, instancesTotal: 2 });
}

/** A ReconServer's parts that statusView() reads, with no running job. */
function storeOnlyServer(store: JobStore): ReconServer {
  const scheduler = {
    running: () => [],
    executorProblem: undefined,
    activeWorkers: 0,
    maxWorkers: 1,
    counts: { succeeded: 0, failed: 0, cancelled: 0 },
  };
  return { store, scheduler, leases: new JobLeases() } as unknown as ReconServer;
}

function settings(destinations: string[]): StatusSettings {
  return {
    config: {
      EXECUTOR: "local",
      RECON_FILEPATH: "/srv/recon",
      RECON_DICOM_DIR: "/srv/results",
      DISK_FREE_MARGIN: GIB,
      DESTINATIONS: Object.fromEntries(
        destinations.map((name) => [name, parseDestination(name, "dicom://ORTHANC@pacs:4242")]),
      ),
    },
    startedAt: NOW - HOUR,
    diskFree: () => Promise.resolve(100 * GIB),
  };
}

/** The text of `html`: tags removed, the five entities read back, spaces collapsed. */
function textOf(html: string): string {
  return html.replace(/<[^>]*>/g, " ").replace(/&lt;/g, "<").replace(/&gt;/g, ">")
    .replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, "&").replace(/\s+/g, " ");
}

/** The `<section id="ID">` of the page. */
function sectionOf(html: string, id: string): string {
  const match = new RegExp(`<section id="${id}">([\\s\\S]*?)</section>`).exec(html);
  assert.ok(match, `the page has a section ${id}`);
  return match[1];
}

/** The Deliveries card's HTML, if the page has one. */
function deliveriesCard(html: string): string | undefined {
  return /<div class="card[^"]*"><div class="label">Deliveries<\/div>.*?<\/div><\/div>/.exec(html)
    ?.[0];
}

Deno.test("statusView() of a store with deliveries counts them, lists those that need attention newest first, file names blanked out, and each job's; the page shows them", async () => {
  await using s = await clockedStore(NOW);
  const delivered = succeeded(s, NOW - 3 * HOUR, ["PACS"]);
  attempt(s, delivered, NOW - 3 * HOUR + 5000, [0, 1], { state: "delivered" });
  // Retrying: the PACS refused the first file; its error names the file and its directory.
  const retrying = succeeded(s, NOW - 2 * HOUR, ["PACS"]);
  const outputDir = `/srv/results/job_${retrying}_output`;
  attempt(s, retrying, NOW - 2 * HOUR + 5000, [1], {
    state: "pending",
    nextAttemptAt: NOW + 5 * MINUTE,
    lastError: `1 of 2 file(s) not stored; ${SECRET}.dcm: refused (${outputDir}/${SECRET}.dcm)`,
  });
  // Given up an hour ago, naming a file in a subdirectory by its last part; and 25 h ago.
  const failed = succeeded(s, NOW - 25 * HOUR, ["PACS"]);
  attempt(s, failed, NOW - HOUR, [], {
    state: "failed",
    lastError: `2 of 2 file(s) not stored; ${SECRET}_2.dcm refused:\n0xA700`,
  });
  const old = succeeded(s, NOW - 49 * HOUR, ["PACS"]);
  attempt(s, old, NOW - 25 * HOUR, [], { state: "failed", lastError: "connection refused" });
  // Not tried yet, to another destination; and a job delivered nowhere.
  const waiting = succeeded(s, NOW - 10 * MINUTE, ["RESEARCH"]);
  const nowhere = succeeded(s, NOW - 5 * MINUTE, []);

  const view = await statusView(storeOnlyServer(s.store), NOW, settings(["PACS", "RESEARCH"]));
  const deliveries = view.deliveries!;
  assert.deepEqual(deliveries.destinations, ["PACS", "RESEARCH"]);
  assert.deepEqual(deliveries.counts, { pending: 2, sending: 0, delivered: 1, failed: 2 });
  assert.equal(deliveries.failedRecently, 1);
  assert.deepEqual(
    deliveries.attention.map((d) => [d.jobId, d.destination, d.state, d.attempts]),
    [[waiting, "RESEARCH", "pending", 0], [failed, "PACS", "failed", 1], [
      retrying,
      "PACS",
      "pending",
      1,
    ]],
  );
  const [first, second, third] = deliveries.attention;
  assert.equal(first.nextAttemptAt, NOW - 10 * MINUTE);
  assert.equal(first.lastError, undefined);
  assert.equal(second.finishedAt, NOW - HOUR);
  assert.equal(second.lastError, "2 of 2 file(s) not stored; <file> refused: 0xA700");
  assert.deepEqual([third.filesSent, third.filesTotal, third.filesFailed], [1, 2, 1]);
  assert.equal(third.nextAttemptAt, NOW + 5 * MINUTE);
  assert.equal(third.lastError, "1 of 2 file(s) not stored; <file>: refused (<path>/<file>)");
  const cells = (id: string) =>
    view.finished.find((job) => job.id === id)?.deliveries?.map((d) => [d.destination, d.state]);
  assert.deepEqual(cells(delivered), [["PACS", "delivered"]]);
  assert.deepEqual(cells(waiting), [["RESEARCH", "pending"]]);
  assert.equal(cells(nowhere), undefined, "a job delivered nowhere has no deliveries");

  const html = renderStatusPage(view);
  assert.ok(!html.includes(SECRET), "no result file name anywhere");
  assert.ok(!html.includes("/srv/"), "no directory anywhere");
  const card = deliveriesCard(html);
  assert.ok(card, "the page has a Deliveries card");
  assert.match(card, /class="card tone-bad"/);
  assert.equal(
    textOf(card).trim(),
    "Deliveries 1 failed in the last 24 h 1 delivered · 2 in progress",
  );
  const section = textOf(sectionOf(html, "deliveries"));
  assert.match(section, /Deliveries 3 need attention/);
  assert.match(section, new RegExp(`${waiting} RESEARCH pending 0/2 0 14:27:12 ${failed}`));
  assert.match(
    section,
    new RegExp(`${failed} PACS failed 0/2 \\(2 not stored\\) 1 13:37:12 2 of 2 file\\(s\\)`),
  );
  assert.match(
    section,
    new RegExp(`${retrying} PACS retrying 1/2 \\(1 not stored\\) 1 14:42:12 1 of 2`),
  );
  assert.ok(section.includes("<file> refused: 0xA700"), "the error on one line, escaped");
  assert.ok(!section.includes(old), "a delivery given up over 24 h ago is not listed");
  const finished = sectionOf(html, "finished");
  assert.match(finished, /<th>Delivery<\/th>/);
  for (
    const [id, cell] of [
      [delivered, '<span class="dlv delivered">PACS 2/2 ✓</span>'],
      [retrying, '<span class="dlv retrying">PACS retrying 1/2</span>'],
      [failed, '<span class="dlv failed">PACS failed 0/2</span>'],
      [waiting, '<span class="dlv pending">RESEARCH pending</span>'],
    ]
  ) {
    assert.match(finished, new RegExp(`${id}.*${cell}`), `the row of ${id} has ${cell}`);
  }
  assert.match(finished, new RegExp(`${nowhere}.*?</td><td></td><td class="wrap"></td></tr>`));
  // The section comes after the queue.
  assert.ok(html.indexOf('<section id="queue">') < html.indexOf('<section id="deliveries">'));

  // Without destinations: no card, no section; the finished jobs still show theirs.
  const bare = renderStatusPage(await statusView(storeOnlyServer(s.store), NOW, settings([])));
  assert.equal(deliveriesCard(bare), undefined);
  assert.ok(!bare.includes('<section id="deliveries">'));
  assert.match(sectionOf(bare, "finished"), /PACS 2\/2 ✓/);
  assert.ok(!bare.includes(SECRET));
});

Deno.test("a server with destinations and no delivery has a quiet card and says that nothing waits; one with neither shows no delivery column", async () => {
  await using s = await clockedStore(NOW);
  succeeded(s, NOW - HOUR, []);
  const html = renderStatusPage(
    await statusView(storeOnlyServer(s.store), NOW, settings(["PACS"])),
  );
  assert.match(deliveriesCard(html)!, /^<div class="card"><div class="label">/);
  assert.match(textOf(deliveriesCard(html)!), /0 delivered 0 in progress · 0 failed to PACS/);
  assert.match(
    textOf(sectionOf(html, "deliveries")),
    /Deliveries to PACS No delivery is waiting, and none was given up in the last 24 hours\./,
  );
  assert.match(sectionOf(html, "finished"), /<th>Delivery<\/th>/);
  const none = renderStatusPage(await statusView(storeOnlyServer(s.store), NOW, settings([])));
  assert.doesNotMatch(none, /Delivery<\/th>|class="dlv/);
});

/** A view from an empty store with `deliveries` replaced. */
async function viewWith(deliveries: DeliveriesView): Promise<StatusView> {
  await using s = await clockedStore(NOW);
  const view = await statusView(storeOnlyServer(s.store), NOW, settings(["PACS"]));
  return { ...view, deliveries };
}

Deno.test("the deliveries are escaped, the card is orange while one is retried, and the newest 50 are said to be so", async () => {
  const hostile = `<script>alert(1)</script>"'&`;
  const entry = {
    jobId: hostile,
    destination: hostile,
    state: "pending" as const,
    attempts: 2,
    filesSent: 0,
    filesTotal: 3,
    filesSkipped: 1,
    filesFailed: 0,
    nextAttemptAt: NOW + MINUTE,
    lastError: `"><img src=x onerror=alert(1)> \u202eevil`,
  };
  const html = renderStatusPage(
    await viewWith({
      destinations: [hostile],
      counts: { pending: 1, sending: 0, delivered: 0, failed: 0 },
      failedRecently: 0,
      attention: [entry],
    }),
  );
  assert.doesNotMatch(html, /<script|<img/i);
  assert.ok(html.includes("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;"));
  assert.ok(html.includes("\\u202eevil") && !html.includes("\u202e"));
  assert.match(deliveriesCard(html)!, /class="card tone-warn"/);
  assert.match(
    textOf(sectionOf(html, "deliveries")),
    /retrying 0\/3 \(1 skipped\) 2 14:38:12/,
  );

  const many = renderStatusPage(
    await viewWith({
      destinations: ["PACS"],
      counts: { pending: 0, sending: 60, delivered: 0, failed: 0 },
      failedRecently: 0,
      attention: Array.from({ length: 50 }, () => ({
        ...entry,
        jobId: crypto.randomUUID(),
        destination: "PACS",
        state: "sending" as const,
      })),
    }),
  );
  assert.match(
    textOf(sectionOf(many, "deliveries")),
    /Deliveries the newest 50 that need attention/,
  );
  assert.match(deliveriesCard(many)!, /class="card"/, "sending is not a problem");
  assert.match(textOf(deliveriesCard(many)!), /60 in progress/);
});
