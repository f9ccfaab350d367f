/**
 * End to end with a real PACS (issue 17): bin/recon-server runs BART on simulated
 * k-space (examples/bart_recon.sh), and sends the DICOM series to a real Orthanc
 * (tests/support/orthanc.ts) named in DEFAULT_DESTINATIONS: every image arrives with
 * its SOP Instance UID, provenance.json is skipped and reported, `recon-client jobs`
 * shows it delivered, the audit log and /metrics record it. ON_JOB_END fires when the
 * job ends, not when its deliveries do; a destination that keeps rejecting the
 * association is given up after DELIVERY_RETRY_FOR: failed in `jobs`, audited, logged,
 * ON_DELIVERY_FAILED run with the rejection's reason.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { readDicomHeader } from "../lib/server/dicom_file.ts";
import { E2EServer, listDir, ROOT, run, tempDir, waitFor } from "./support/e2e.ts";
import { readAudit } from "./support/identity.ts";
import { checkMetrics } from "./support/metrics.ts";
import { Orthanc } from "./support/orthanc.ts";

interface Delivery {
  destination: string;
  state: string;
  files_total: number;
  files_sent: number;
  files_skipped: number;
  files_failed: number;
  attempts: number;
  last_error?: string;
}

/** Simulated 3-D k-space (BART's phantom): `kspace.hdr` and `kspace.cfl` in `dir`. */
async function phantom(dir: string): Promise<string[]> {
  const made = await run(path.join(ROOT, "examples", "make_phantom.sh"), [
    dir,
    "--3d",
    "--size",
    "16",
    "--coils",
    "2",
  ]);
  assert.equal(
    made.code,
    0,
    `make_phantom.sh (is bart installed? apt-get install bart): ${made.stderr}`,
  );
  return [path.join(dir, "kspace.hdr"), path.join(dir, "kspace.cfl")];
}

/** A hook that appends "ARGS" and the time to `record`. */
async function recordingHook(dir: string, name: string, record: string): Promise<string> {
  const file = path.join(dir, name);
  await Deno.writeTextFile(
    file,
    `#!/bin/sh\nprintf '%s|%s\\n' "$*" "$(date +%s%N)" >> '${record}'\n`,
    { mode: 0o755 },
  );
  return file;
}

async function deliveriesOf(server: E2EServer, jobId: string): Promise<Delivery[]> {
  const listed = await server.client(["jobs", "--json"]);
  assert.equal(listed.code, 0, listed.stderr);
  const job = (JSON.parse(listed.stdout).jobs as { job_id: string; deliveries?: Delivery[] }[])
    .find((candidate) => candidate.job_id === jobId);
  return job?.deliveries ?? [];
}

Deno.test("a BART series reaches a real Orthanc: every SOP Instance UID, provenance.json skipped, jobs, audit, metrics", async () => {
  await using orthanc = await Orthanc.start({ checkCalledAet: true });
  await using files = await tempDir();
  const record = path.join(files.path, "ended.txt");
  await using server = await E2EServer.start({
    script: path.join(ROOT, "examples", "bart_recon.sh"),
    options: {
      DESTINATION_PACS:
        `dicom://${orthanc.aet}@127.0.0.1:${orthanc.dicomPort}?calling=RECONTEST&timeout=10`,
      DEFAULT_DESTINATIONS: "PACS",
      ON_JOB_END: await recordingHook(files.path, "ended.sh", record),
      HTTP_LISTEN: "127.0.0.1:0",
      JOB_TIMEOUT: 120,
    },
  });
  const inputs = await phantom(path.join(files.path, "scan"));
  const result = await server.client([
    "--files",
    ...inputs,
    "--recon-options",
    JSON.stringify({ name: "phantom" }),
    "--json",
  ]);
  assert.equal(result.code, 0, result.stderr);
  const report = JSON.parse(result.stdout) as {
    job_id: string;
    files: { name: string; path: string }[];
  };
  const jobId = report.job_id;
  const images = report.files.filter((file) => file.name.endsWith(".dcm"));
  assert.ok(images.length >= 8, `a series of slices came back: ${report.files.map((f) => f.name)}`);
  const expected: string[] = [];
  for (const image of images) {
    const header = await readDicomHeader(image.path);
    assert.ok(!("notDicom" in header), `${image.name}: ${JSON.stringify(header)}`);
    expected.push(header.sopInstanceUid);
  }

  const done = await waitFor("the delivery to PACS", async () => {
    const [delivery] = await deliveriesOf(server, jobId);
    return delivery?.state === "delivered" ? delivery : undefined;
  }, { timeoutMs: 60_000 });
  assert.equal(done.destination, "PACS");
  assert.equal(done.files_total, images.length);
  assert.equal(done.files_sent, images.length);
  assert.equal(done.files_failed, 0);
  assert.ok(done.files_skipped >= 1, "provenance.json is skipped, not sent");
  const stored = (await orthanc.instances()).map((instance) => instance.sopInstanceUid).sort();
  assert.deepEqual(stored, expected.sort());
  const [first] = await orthanc.instances();
  const metadata = await orthanc.metadata(first.id);
  assert.equal(metadata.RemoteAET, "RECONTEST");
  assert.equal(metadata.CalledAET, orthanc.aet);

  const text = await server.client(["jobs"]);
  assert.match(text.stdout, new RegExp(`PACS ${images.length}/${images.length}`));
  // ON_JOB_END ran once, with the job's id, state, client and result directory.
  const ended = (await Deno.readTextFile(record)).trim().split("\n");
  assert.equal(ended.length, 1, ended.join("\n"));
  assert.match(ended[0], new RegExp(`^${jobId} succeeded default \\S+\\|`));

  const events = (await readAudit(server)).filter((event) => event.job === jobId);
  const delivered = events.find((event) => event.event === "job_delivered_pacs");
  assert.ok(delivered, JSON.stringify(events));
  assert.equal(delivered.destination, "PACS");
  assert.equal(delivered.instances, images.length);

  const metrics = await (await fetch(`${server.httpUrl}/metrics`)).text();
  assert.match(
    metrics,
    new RegExp(`^recon_pacs_instances_sent_total\\{destination="PACS"\\} ${images.length}$`, "m"),
  );
  assert.match(
    metrics,
    /^recon_pacs_deliveries_total\{destination="PACS",outcome="delivered"\} 1$/m,
  );
  assert.match(metrics, /^recon_pacs_deliveries\{state="delivered"\} 1$/m);
  await checkMetrics(metrics);
  assert.deepEqual(await listDir(path.join(files.path, "scan")), ["kspace.cfl", "kspace.hdr"]);
});

Deno.test("ON_JOB_END fires at the job's end, not the delivery's; a rejecting PACS is given up after DELIVERY_RETRY_FOR", async () => {
  // Orthanc checks the called AE title: DESTINATION_WRONG names another, so every
  // association is rejected.
  await using orthanc = await Orthanc.start({ checkCalledAet: true });
  await using files = await tempDir();
  const ended = path.join(files.path, "ended.txt");
  const failed = path.join(files.path, "failed.txt");
  const script = path.join(files.path, "recon.sh");
  // A script whose one result is a copy of a DICOM file.
  const dicom = path.join(files.path, "image.dcm");
  const made = await run("sh", [
    "-c",
    `printf '(0008,0016) UI =SecondaryCaptureImageStorage\\n(0008,0018) UI [1.2.826.0.1.3680043.8.498.${Date.now()}]\\n(0010,0010) PN [Test^Phantom]\\n(0020,000d) UI [1.2.3.4.5.6]\\n(0020,000e) UI [1.2.3.4.5.6.7]\\n' > '${files.path}/img.dump' && dump2dcm +te '${files.path}/img.dump' '${dicom}'`,
  ]);
  assert.equal(made.code, 0, `dump2dcm (apt-get install dcmtk): ${made.stderr}`);
  await Deno.writeTextFile(
    script,
    `#!/bin/sh\ncp '${dicom}' "$RECON_OUTPUT_DIR/image.dcm"\n`,
    { mode: 0o755 },
  );
  await using server = await E2EServer.start({
    script,
    options: {
      DESTINATION_WRONG: `dicom://NOTORTHANC@127.0.0.1:${orthanc.dicomPort}?timeout=5`,
      DEFAULT_DESTINATIONS: "WRONG",
      DELIVERY_RETRY_FOR: "3s",
      ON_JOB_END: await recordingHook(files.path, "ended.sh", ended),
      ON_DELIVERY_FAILED: await recordingHook(files.path, "failed.sh", failed),
    },
  });
  const scan = path.join(files.path, "P00001.7");
  await Deno.writeTextFile(scan, "raw data");
  const result = await server.client(["--files", scan, "--no-download", "--json"]);
  assert.equal(result.code, 0, result.stderr);
  const jobId = JSON.parse(result.stdout).job_id as string;
  assert.deepEqual(await listDir(server.downloadDir), [], "--no-download fetched nothing");

  // The job ended: ON_JOB_END ran while the delivery was still being tried.
  await waitFor("ON_JOB_END", async () => (await Deno.readTextFile(ended).catch(() => "")) !== "");
  assert.match(await Deno.readTextFile(ended), new RegExp(`^${jobId} succeeded default `));
  const [trying] = await deliveriesOf(server, jobId);
  assert.notEqual(trying.state, "failed", "ON_JOB_END did not wait for the delivery to give up");

  const gaveUp = await waitFor("the delivery given up", async () => {
    const [delivery] = await deliveriesOf(server, jobId);
    return delivery?.state === "failed" ? delivery : undefined;
  }, { timeoutMs: 60_000 });
  assert.match(gaveUp.last_error ?? "", /called AE title is not recognized/);
  assert.equal(gaveUp.files_sent, 0);
  assert.equal(await orthanc.count(), 0);
  const listed = await server.client(["jobs"]);
  assert.match(listed.stdout, /WRONG failed 0\/1/);
  await waitFor(
    "ON_DELIVERY_FAILED",
    async () => (await Deno.readTextFile(failed).catch(() => "")) !== "",
  );
  const [hookLine] = (await Deno.readTextFile(failed)).trim().split("\n");
  assert.match(hookLine, new RegExp(`^${jobId} WRONG .*called AE title is not recognized`));
  assert.match(server.log, new RegExp(`job ${jobId}: .*WRONG.*(gave up|given up|failed)`));
  const events = (await readAudit(server)).filter((event) => event.job === jobId);
  const failure = events.find((event) => event.event === "delivery_failed");
  assert.ok(failure, JSON.stringify(events));
  assert.equal(failure.destination, "WRONG");
});

Deno.test("the start warns about what will make deliveries fail: an unreadable TLS file, results that expire first", async () => {
  await using files = await tempDir();
  const missing = path.join(files.path, "no-such-ca.pem");
  await using server = await E2EServer.start({
    script: path.join(ROOT, "examples", "bart_recon.sh"),
    options: {
      DESTINATION_SECURE: `dicom+tls://PACS@127.0.0.1:2762?ca=${missing}`,
      RESULT_RETENTION: "1h",
      DELIVERY_RETRY_FOR: "24h",
    },
  });
  assert.match(
    server.log,
    new RegExp(
      `WARN .*DESTINATION_SECURE: cannot read its ca= file ${missing} \\(no such file\\): deliveries there will fail until it can`,
    ),
  );
  assert.match(
    server.log,
    /WARN .*RESULT_RETENTION \(3600 s\) is shorter than DELIVERY_RETRY_FOR \(86400 s\)/,
  );
});
