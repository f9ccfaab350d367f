/**
 * End to end (bin/recon-server and bin/recon-client as real processes): each succeeded
 * job's results come back with the server's provenance.json, verified like any result,
 * naming the inputs by the SHA-256 of the files the client sent, the options and
 * priority, the SHA-256 of RECON_SCRIPT, the server's version and host, and a rerun's
 * failed job; the script's own results still come back whole; a failed job has none.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { VERSION } from "../lib/version.ts";
import {
  E2EServer,
  listDir,
  sha256File,
  tempDir,
  testdata,
  writeRandomFile,
} from "./support/e2e.ts";

/** The `client` the job store recorded for `jobId` (read-only; the server keeps running). */
function storedClient(server: E2EServer, jobId: string): string {
  const db = new DatabaseSync(path.join(server.stateDir, "jobs.sqlite"), { readOnly: true });
  try {
    const row = db.prepare("SELECT client FROM jobs WHERE id = ?").get(jobId);
    assert.ok(row, `job ${jobId} in the store`);
    return String(row.client);
  } finally {
    db.close();
  }
}

/** Every file under `dir`, relative paths, sorted. */
async function tree(dir: string, prefix = ""): Promise<string[]> {
  const found: string[] = [];
  for (const name of await listDir(dir)) {
    const full = path.join(dir, name);
    if ((await Deno.lstat(full)).isDirectory) found.push(...await tree(full, `${prefix}${name}/`));
    else found.push(`${prefix}${name}`);
  }
  return found.sort();
}

Deno.test("a job's results come back with provenance.json: the inputs' and the script's SHA-256 match the files", async () => {
  const script = testdata("e2e_recon.sh");
  await using server = await E2EServer.start({ script });
  await using files = await tempDir();
  const primary = path.join(files.path, "P00001.7");
  const calibration = path.join(files.path, "coil.dat");
  await writeRandomFile(primary, 3 * 1024 * 1024 + 5);
  await writeRandomFile(calibration, 4096);

  const result = await server.client([
    "--files",
    primary,
    calibration,
    "--recon-options",
    JSON.stringify({ slices: 128, name: "t1" }),
    "--priority",
    "high",
    "--json",
  ]);
  assert.equal(result.code, 0, result.stderr);
  const report = JSON.parse(result.stdout) as {
    job_id: string;
    result_dir: string;
    files: { name: string; path: string; size: number; sha256: string }[];
  };
  const jobId = report.job_id;
  assert.deepEqual(report.files.map((file) => file.name), [
    "derived/P00001.7.copy",
    "derived/coil.dat.copy",
    "manifest.txt",
    "provenance.json",
  ]);
  assert.deepEqual(await tree(report.result_dir), report.files.map((file) => file.name));

  // The script's own results are whole.
  for (const [copy, original] of [["P00001.7.copy", primary], ["coil.dat.copy", calibration]]) {
    assert.equal(
      await sha256File(path.join(report.result_dir, "derived", copy)),
      await sha256File(original),
    );
  }
  assert.match(
    await Deno.readTextFile(path.join(report.result_dir, "manifest.txt")),
    new RegExp(`^sha256 ${await sha256File(primary)} P00001\\.7$`, "m"),
  );

  // provenance.json arrived verified, and says what went in and what ran.
  const file = path.join(report.result_dir, "provenance.json");
  const sent = report.files.find((entry) => entry.name === "provenance.json")!;
  assert.equal(await sha256File(file), sent.sha256);
  const provenance = JSON.parse(await Deno.readTextFile(file));
  assert.equal(provenance.recon_provenance, 1);
  assert.equal(provenance.job_id, jobId);
  assert.equal(provenance.client, storedClient(server, jobId));
  assert.equal(provenance.exit_code, 0);
  assert.equal(provenance.attempts, 1);
  assert.equal(provenance.priority, "high");
  assert.deepEqual(provenance.options, { slices: 128, name: "t1" });
  assert.deepEqual(provenance.inputs, [
    { name: "P00001.7", size: 3 * 1024 * 1024 + 5, sha256: await sha256File(primary) },
    { name: "coil.dat", size: 4096, sha256: await sha256File(calibration) },
  ]);
  assert.deepEqual(provenance.script, { path: script, sha256: await sha256File(script) });
  assert.deepEqual(provenance.server, { version: VERSION, host: Deno.hostname() });
  const [submitted, started, finished] = [
    provenance.submitted_at,
    provenance.started_at,
    provenance.finished_at,
  ].map(Date.parse);
  assert.ok(submitted <= started && started <= finished, JSON.stringify(provenance));
  assert.ok(!("rerun_of" in provenance));

  // The job store counts it among the results, and a later fetch finds it in place.
  const jobs = await server.client(["jobs", "--json"]);
  assert.equal(jobs.code, 0, jobs.stderr);
  const listed = (JSON.parse(jobs.stdout).jobs as { job_id: string; result_count: number }[])
    .find((job) => job.job_id === jobId);
  assert.equal(listed?.result_count, 4);
  const again = await server.client(["fetch", jobId]);
  assert.equal(again.code, 0, again.stderr);
  assert.ok(again.stdout.split("\n").includes(file), again.stdout);
  assert.equal(await sha256File(file), sent.sha256, "the same file, untouched");
});

Deno.test("a failed job has no provenance.json; its rerun's names the failed job and the same inputs", async () => {
  const script = testdata("e2e_recon.sh");
  await using server = await E2EServer.start({ script });
  await using files = await tempDir();
  const input = path.join(files.path, "P00002.7");
  await writeRandomFile(input, 70_000);

  const failed = await server.client([
    "--files",
    input,
    "--recon-options",
    JSON.stringify({ exit: 3 }),
  ]);
  assert.equal(failed.code, 1, failed.stderr);
  const failedId = /job ([0-9a-f-]{36})/.exec(failed.stderr)?.[1];
  assert.ok(failedId, failed.stderr);
  assert.deepEqual(await listDir(path.join(server.downloadDir, failedId)), []);
  assert.ok(
    !(await listDir(server.dicomDir)).includes(`job_${failedId}_output`),
    "the failed job's output, had it any, is gone",
  );

  const rerun = await server.client(["rerun", failedId, "--recon-options", "{}", "--json"]);
  assert.equal(rerun.code, 0, rerun.stderr);
  const report = JSON.parse(rerun.stdout) as { job_id: string; result_dir: string };
  assert.notEqual(report.job_id, failedId);
  const provenance = JSON.parse(
    await Deno.readTextFile(path.join(report.result_dir, "provenance.json")),
  );
  assert.equal(provenance.job_id, report.job_id);
  assert.equal(provenance.rerun_of, failedId);
  assert.deepEqual(provenance.options, {});
  assert.deepEqual(provenance.inputs, [
    { name: "P00002.7", size: 70_000, sha256: await sha256File(input) },
  ]);
  assert.deepEqual(provenance.script, { path: script, sha256: await sha256File(script) });
});
