/**
 * Tests for lib/server/worker.ts: a job's run from its script to an outcome. Only the
 * output directory the server created is collected (a script that swaps it for a link
 * fails its job and nothing of the link's target is touched); RECON_DICOM_DIR itself
 * only in the LEGACY_SHARED_OUTPUT mode, after the job's processes were stopped; and
 * the `job_<id>.running` marker exists exactly while the job's output is not final.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { Job } from "../../lib/server/jobs.ts";
import { executeJob, type WorkerSettings } from "../../lib/server/worker.ts";
import { memoryLog } from "../support/memory_log.ts";

/** RECON_FILEPATH, RECON_DICOM_DIR, a script and one job, removed on dispose. */
async function site(scriptBody: string) {
  const root = await Deno.makeTempDir({ prefix: "recon-worker-" });
  const reconFilePath = path.join(root, "pfiles");
  const dicomDir = path.join(root, "dicoms");
  await Deno.mkdir(reconFilePath);
  await Deno.mkdir(dicomDir);
  const script = path.join(root, "recon.sh");
  await Deno.writeTextFile(script, scriptBody);
  const id = crypto.randomUUID();
  const inputDir = path.join(reconFilePath, `job_${id}_input`);
  await Deno.mkdir(inputDir);
  await Deno.writeTextFile(path.join(inputDir, "P00001.7"), "raw");
  const job = new Job({
    id,
    files: [{ name: "P00001.7", size: 3 }],
    options: {},
    inputDir,
    outputDir: path.join(dicomDir, `job_${id}_output`),
    logPath: path.join(reconFilePath, `job_${id}.log`),
  });
  const settings = (legacySharedOutput = false): WorkerSettings => ({
    reconScript: script,
    reconDicomDir: dicomDir,
    matlabCommand: ["false"],
    jobTimeout: 30,
    legacySharedOutput,
    killGraceMs: 200,
  });
  const marker = path.join(reconFilePath, `job_${id}.running`);
  return {
    root,
    reconFilePath,
    dicomDir,
    job,
    marker,
    settings,
    [Symbol.asyncDispose]: () => Deno.remove(root, { recursive: true }),
  };
}

async function names(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((entry) => entry.name).sort();
}

Deno.test("executeJob() fails a job whose script replaced RECON_OUTPUT_DIR with a link, and sends nothing", async () => {
  await using s = await site("");
  const secret = path.join(s.root, "etc");
  await Deno.mkdir(secret);
  await Deno.writeTextFile(path.join(secret, "shadow"), "root:$6$hash");
  await Deno.writeTextFile(
    s.settings().reconScript,
    `rmdir "$RECON_OUTPUT_DIR"\nln -s ${JSON.stringify(secret)} "$RECON_OUTPUT_DIR"\n`,
  );
  const { log } = memoryLog();
  const outcome = await executeJob(s.job, s.settings(), log);
  assert.ok(!outcome.ok);
  assert.match(
    outcome.reason,
    /^RECON_OUTPUT_DIR is not the directory the server created \(it is now a symbolic link to ".*etc"\); no results are sent$/,
  );
  assert.equal(outcome.exitCode, 0, "the script itself exited 0");
  // The link is gone, never followed: what it pointed to is untouched.
  assert.deepEqual(await names(s.dicomDir), []);
  assert.deepEqual(await names(secret), ["shadow"]);
  assert.deepEqual(await names(s.reconFilePath), [`job_${s.job.id}.log`], "marker removed");
});

Deno.test("executeJob() keeps the running marker exactly while the job's output is not final", async () => {
  await using s = await site("");
  await Deno.writeTextFile(
    s.settings().reconScript,
    `test -f ${JSON.stringify(s.marker)} && cat ${
      JSON.stringify(s.marker)
    } > "$RECON_OUTPUT_DIR/marker.txt"\n`,
  );
  const { log } = memoryLog();
  const outcome = await executeJob(s.job, s.settings(), log);
  assert.ok(outcome.ok, JSON.stringify(outcome));
  assert.deepEqual(outcome.results.map((r) => r.name), ["marker.txt"]);
  assert.equal(
    await Deno.readTextFile(path.join(s.job.outputDir, "marker.txt")),
    `${s.job.outputDir}\n`,
    "the marker existed while the script ran and names the output directory",
  );
  assert.deepEqual(await names(s.reconFilePath), [`job_${s.job.id}.log`], "and is gone after");
});

Deno.test("executeJob() of a failed script removes its output and the marker", async () => {
  await using s = await site(`echo partial > "$RECON_OUTPUT_DIR/partial.dcm"\nexit 3\n`);
  const { log } = memoryLog();
  const outcome = await executeJob(s.job, s.settings(), log);
  assert.ok(!outcome.ok);
  assert.equal(outcome.reason, "the reconstruction script exited with code 3");
  assert.deepEqual(await names(s.dicomDir), []);
  assert.deepEqual(await names(s.reconFilePath), [`job_${s.job.id}.log`]);
});

Deno.test("executeJob() without LEGACY_SHARED_OUTPUT never collects from RECON_DICOM_DIR itself", async () => {
  await using s = await site(
    `echo mine > "$RECON_OUTPUT_DIR/own.dcm"\necho legacy > "$(dirname "$RECON_OUTPUT_DIR")/legacy.dcm"\n`,
  );
  const { log } = memoryLog();
  const outcome = await executeJob(s.job, s.settings(false), log);
  assert.ok(outcome.ok, JSON.stringify(outcome));
  assert.deepEqual(outcome.results.map((r) => r.name), ["own.dcm"]);
  assert.deepEqual(await names(s.dicomDir), [`job_${s.job.id}_output`, "legacy.dcm"]);
});

Deno.test("executeJob() with LEGACY_SHARED_OUTPUT adopts the job's new files, after its processes were stopped", async () => {
  await using s = await site("");
  await Deno.writeTextFile(path.join(s.dicomDir, "before.dcm"), "someone else's");
  // A helper of the job writes late: it is stopped with the script, before the snapshot.
  await Deno.writeTextFile(
    s.settings().reconScript,
    `DICOM="$(dirname "$RECON_OUTPUT_DIR")"\n` +
      `(sleep 0.5; echo late > "$DICOM/late.dcm") &\n` +
      `echo image > "$DICOM/image.dcm"\n`,
  );
  const { lines, log } = memoryLog();
  const outcome = await executeJob(s.job, s.settings(true), log);
  assert.ok(outcome.ok, JSON.stringify(outcome));
  assert.deepEqual(outcome.results.map((r) => r.name), ["image.dcm"]);
  assert.ok(lines.some((line) => /took 1 new file\(s\) from RECON_DICOM_DIR/.test(line)));
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.deepEqual(
    await names(s.dicomDir),
    ["before.dcm", `job_${s.job.id}_output`],
    "the late writer never wrote",
  );
  assert.deepEqual(await names(s.job.outputDir), ["image.dcm"]);
});
