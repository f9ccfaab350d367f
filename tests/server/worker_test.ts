/**
 * Tests for lib/server/worker.ts: a job's run from its script to an outcome, and its
 * final state recorded in a real job store before its files are kept or removed. Only
 * the output directory the server created is collected (a script that swaps it for a
 * link fails its job and nothing of the link's target is touched); RECON_DICOM_DIR
 * itself only in the LEGACY_SHARED_OUTPUT mode, after the job's processes were
 * stopped; the `job_<id>.running` marker exists exactly while the job's output is not
 * final; results are recorded with their SHA-256 and kept, a failed job's inputs are
 * kept for a re-run, a cancelled job leaves nothing; a succeeded job's results include
 * the server's provenance.json (inputs and script as they were when it ran; a script's
 * own file of that name renamed), a failed one has none.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as path from "node:path";
import { JobStore } from "../../lib/server/job_store.ts";
import { ExecutorUnavailable, RunningJob } from "../../lib/server/scheduler.ts";
import {
  discardRun,
  executeJob,
  finishJob,
  type Launcher,
  type WorkerSettings,
} from "../../lib/server/worker.ts";
import { VERSION } from "../../lib/version.ts";
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
  const store = JobStore.open(path.join(root, "state"));
  store.createReceiving({
    id,
    priority: "normal",
    client: "k",
    peer: "127.0.0.1:1",
    keyId: "k",
    options: {},
    inputDir,
    outputDir: path.join(dicomDir, `job_${id}_output`),
    logPath: path.join(reconFilePath, `job_${id}.log`),
    files: [{ name: "P00001.7", size: 3 }],
    uploadExpiresAt: Date.now() + 60_000,
  });
  store.inputVerified(id, 0, createHash("sha256").update("raw").digest("hex"));
  store.markQueued(id);
  const job = new RunningJob(store.markRunning(id), () => {});
  const settings = (legacySharedOutput = false): WorkerSettings => ({
    reconScript: script,
    reconDicomDir: dicomDir,
    matlabCommand: ["false"],
    jobTimeout: 30,
    legacySharedOutput,
    killGraceMs: 200,
    resultRetention: 3600,
    failedInputRetention: 7200,
  });
  const marker = path.join(reconFilePath, `job_${id}.running`);
  return {
    root,
    reconFilePath,
    dicomDir,
    job,
    marker,
    settings,
    store,
    inputDir,
    [Symbol.asyncDispose]: () => {
      store.close();
      return Deno.remove(root, { recursive: true });
    },
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
  const outcome = await executeJob(s.store, s.job, s.settings(), log);
  assert.ok(!outcome.ok);
  assert.match(
    outcome.reason,
    /^RECON_OUTPUT_DIR is not the directory the server created \(it is now a symbolic link to ".*etc"\); no results are sent$/,
  );
  assert.equal(outcome.exitCode, 0, "the script itself exited 0");
  await finishJob(s.store, s.job, outcome, s.settings(), log);
  // The link is gone, never followed: what it pointed to is untouched.
  assert.deepEqual(await names(s.dicomDir), []);
  assert.deepEqual(await names(secret), ["shadow"]);
  assert.deepEqual(
    await names(s.reconFilePath),
    [`job_${s.job.id}.log`, `job_${s.job.id}_input`],
    "marker removed, inputs kept for a re-run",
  );
});

Deno.test("the running marker exists exactly while the job's output is not final", async () => {
  await using s = await site("");
  await Deno.writeTextFile(
    s.settings().reconScript,
    `test -f ${JSON.stringify(s.marker)} && cat ${
      JSON.stringify(s.marker)
    } > "$RECON_OUTPUT_DIR/marker.txt"\n`,
  );
  const { log } = memoryLog();
  const outcome = await executeJob(s.store, s.job, s.settings(), log);
  assert.ok(outcome.ok, JSON.stringify(outcome));
  assert.deepEqual(outcome.results.map((r) => r.name), ["marker.txt", "provenance.json"]);
  assert.equal(
    await Deno.readTextFile(path.join(s.job.record.outputDir, "marker.txt")),
    `${s.job.record.outputDir}\n`,
    "the marker existed while the script ran and names the output directory",
  );
  assert.ok((await names(s.reconFilePath)).includes(`job_${s.job.id}.running`), "not final yet");
  await finishJob(s.store, s.job, outcome, s.settings(), log);
  assert.deepEqual(await names(s.reconFilePath), [`job_${s.job.id}.log`], "and is gone after");
});

Deno.test("finishJob() of a succeeded run records each result with its size, SHA-256 and inode, keeps them and removes the inputs", async () => {
  await using s = await site(
    `printf 'one' >"$RECON_OUTPUT_DIR/a.dcm"\nmkdir "$RECON_OUTPUT_DIR/sub"\nprintf 'two!' >"$RECON_OUTPUT_DIR/sub/b.dcm"\n`,
  );
  const { lines, log } = memoryLog();
  const outcome = await executeJob(s.store, s.job, s.settings(), log);
  assert.ok(outcome.ok, JSON.stringify(outcome));
  const before = Date.now();
  const record = await finishJob(s.store, s.job, outcome, s.settings(), log);
  const provenance = await Deno.readFile(path.join(s.job.record.outputDir, "provenance.json"));
  assert.equal(record.state, "succeeded");
  assert.equal(record.exitCode, 0);
  assert.equal(record.resultCount, 3, "a.dcm, sub/b.dcm and the server's provenance.json");
  assert.equal(record.resultBytes, 7 + provenance.length);
  assert.ok(record.resultsExpireAt! >= before + 3600_000, "RESULT_RETENTION after it finished");
  assert.equal(record.inputsRemoved, true);
  await assert.rejects(Deno.stat(s.inputDir), Deno.errors.NotFound);
  const outputs = s.store.outputs(s.job.id);
  assert.deepEqual(outputs.map(({ name, size, sha256 }) => ({ name, size, sha256 })), [
    { name: "a.dcm", size: 3, sha256: createHash("sha256").update("one").digest("hex") },
    {
      name: "provenance.json",
      size: provenance.length,
      sha256: createHash("sha256").update(provenance).digest("hex"),
    },
    { name: "sub/b.dcm", size: 4, sha256: createHash("sha256").update("two!").digest("hex") },
  ]);
  const info = await Deno.lstat(path.join(s.job.record.outputDir, "a.dcm"));
  assert.equal(outputs[0].ino, info.ino);
  assert.equal(outputs[0].dev, info.dev);
  assert.deepEqual(
    await names(s.job.record.outputDir),
    ["a.dcm", "provenance.json", "sub"],
    "the results stay",
  );
  assert.ok(
    lines.some((line) =>
      line.includes(`succeeded with 3 result file(s), ${7 + provenance.length} bytes, kept in `)
    ),
  );
});

Deno.test("finishJob() of a failed script removes its output and the marker and keeps the inputs until FAILED_INPUT_RETENTION", async () => {
  await using s = await site(
    `echo partial > "$RECON_OUTPUT_DIR/partial.dcm"\necho oops >&2\nexit 3\n`,
  );
  const { lines, log } = memoryLog();
  const outcome = await executeJob(s.store, s.job, s.settings(), log);
  assert.ok(!outcome.ok);
  assert.equal(outcome.reason, "the reconstruction script exited with code 3");
  const before = Date.now();
  const record = await finishJob(s.store, s.job, outcome, s.settings(), log);
  assert.equal(record.state, "failed");
  assert.equal(record.exitCode, 3);
  assert.deepEqual(record.stderrTail, ["oops"]);
  assert.equal(record.inputsRemoved, false);
  assert.ok(record.inputsExpireAt! >= before + 7200_000);
  assert.deepEqual(await names(s.dicomDir), []);
  assert.deepEqual(await names(s.inputDir), ["P00001.7"], "kept for a re-run");
  assert.deepEqual(await names(s.reconFilePath), [`job_${s.job.id}.log`, `job_${s.job.id}_input`]);
  assert.ok(
    lines.some((line) =>
      line.includes(`job ${s.job.id}: failed: the reconstruction script exited with code 3 (log: `)
    ),
  );
});

Deno.test("finishJob() of a cancelled run records who cancelled it and removes its inputs and output", async () => {
  await using s = await site(`echo partial > "$RECON_OUTPUT_DIR/partial.dcm"\nsleep 30\n`);
  const { log } = memoryLog();
  const running = executeJob(s.store, s.job, s.settings(), log);
  await new Promise((resolve) => setTimeout(resolve, 300));
  s.job.stop = { kind: "cancel", reason: "wrong patient", by: "127.0.0.1:9 (key id k)" };
  s.job.abort.abort("wrong patient");
  const outcome = await running;
  assert.ok(!outcome.ok);
  assert.equal(outcome.reason, "wrong patient");
  const record = await finishJob(s.store, s.job, outcome, s.settings(), log);
  assert.equal(record.state, "cancelled");
  assert.equal(record.reason, "wrong patient");
  assert.equal(record.cancelledBy, "127.0.0.1:9 (key id k)");
  assert.equal(record.inputsRemoved, true);
  assert.deepEqual(await names(s.dicomDir), []);
  assert.deepEqual(await names(s.reconFilePath), [`job_${s.job.id}.log`]);
});

Deno.test("finishJob() of a cancelled run keeps how the stopped script ended: its exit code and last stderr lines", async () => {
  await using s = await site(
    `trap 'echo "stopping at slice 7" >&2; exit 7' TERM\nsleep 30 &\nwait\n`,
  );
  const { log } = memoryLog();
  const running = executeJob(s.store, s.job, s.settings(), log);
  await new Promise((resolve) => setTimeout(resolve, 300));
  s.job.stop = { kind: "cancel", reason: "wrong patient", by: "127.0.0.1:9 (key id k)" };
  s.job.abort.abort("wrong patient");
  const outcome = await running;
  const record = await finishJob(s.store, s.job, outcome, s.settings(), log);
  assert.equal(record.state, "cancelled");
  assert.equal(record.exitCode, 7);
  assert.deepEqual(record.stderrTail, ["stopping at slice 7"]);
});

Deno.test("discardRun() removes what a run stopped by a shutdown wrote, and its marker", async () => {
  await using s = await site(`echo partial > "$RECON_OUTPUT_DIR/partial.dcm"\nsleep 30\n`);
  const { log } = memoryLog();
  const running = executeJob(s.store, s.job, s.settings(), log);
  await new Promise((resolve) => setTimeout(resolve, 300));
  s.job.stop = { kind: "shutdown", reason: "the server is shutting down" };
  s.job.abort.abort("the server is shutting down");
  await running;
  await discardRun(s.job, log);
  assert.deepEqual(await names(s.dicomDir), []);
  assert.deepEqual(await names(s.reconFilePath), [`job_${s.job.id}.log`, `job_${s.job.id}_input`]);
});

Deno.test("executeJob() removes what an earlier attempt of the job left in its output directory", async () => {
  await using s = await site(`ls "$RECON_OUTPUT_DIR" >"$RECON_OUTPUT_DIR/seen.txt"\n`);
  await Deno.mkdir(s.job.record.outputDir);
  await Deno.writeTextFile(path.join(s.job.record.outputDir, "half.dcm"), "from the last attempt");
  const { log } = memoryLog();
  const outcome = await executeJob(s.store, s.job, s.settings(), log);
  assert.ok(outcome.ok, JSON.stringify(outcome));
  assert.deepEqual(outcome.results.map((r) => r.name), ["provenance.json", "seen.txt"]);
  assert.equal(
    await Deno.readTextFile(path.join(s.job.record.outputDir, "seen.txt")),
    "seen.txt\n",
  );
});

Deno.test("executeJob() without LEGACY_SHARED_OUTPUT never collects from RECON_DICOM_DIR itself", async () => {
  await using s = await site(
    `echo mine > "$RECON_OUTPUT_DIR/own.dcm"\necho legacy > "$(dirname "$RECON_OUTPUT_DIR")/legacy.dcm"\n`,
  );
  const { log } = memoryLog();
  const outcome = await executeJob(s.store, s.job, s.settings(false), log);
  assert.ok(outcome.ok, JSON.stringify(outcome));
  assert.deepEqual(outcome.results.map((r) => r.name), ["own.dcm", "provenance.json"]);
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
  const outcome = await executeJob(s.store, s.job, s.settings(true), log);
  assert.ok(outcome.ok, JSON.stringify(outcome));
  assert.deepEqual(outcome.results.map((r) => r.name), ["image.dcm", "provenance.json"]);
  assert.ok(lines.some((line) => /took 1 new file\(s\) from RECON_DICOM_DIR/.test(line)));
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.deepEqual(
    await names(s.dicomDir),
    ["before.dcm", `job_${s.job.id}_output`],
    "the late writer never wrote",
  );
  assert.deepEqual(await names(s.job.record.outputDir), ["image.dcm", "provenance.json"]);
});

Deno.test("executeJob() writes provenance.json: the inputs' SHA-256 from the job store, the script's as it was when the run started", async () => {
  // The script edits itself while it runs: the provenance names what ran.
  const body = `echo image > "$RECON_OUTPUT_DIR/image.dcm"\necho '# edited' >> "$0"\n`;
  await using s = await site(body);
  const { log } = memoryLog();
  const before = Date.now();
  const outcome = await executeJob(s.store, s.job, s.settings(), log);
  assert.ok(outcome.ok, JSON.stringify(outcome));
  assert.notEqual(await Deno.readTextFile(s.settings().reconScript), body, "the script changed");
  const text = await Deno.readTextFile(path.join(s.job.record.outputDir, "provenance.json"));
  const provenance = JSON.parse(text);
  const sha256 = (data: string) => createHash("sha256").update(data).digest("hex");
  assert.deepEqual(provenance, {
    recon_provenance: 1,
    job_id: s.job.id,
    client: "k",
    submitted_at: new Date(s.job.record.submittedAt).toISOString(),
    started_at: new Date(s.job.record.startedAt!).toISOString(),
    finished_at: provenance.finished_at,
    attempts: 1,
    exit_code: 0,
    priority: "normal",
    options: {},
    inputs: [{ name: "P00001.7", size: 3, sha256: sha256("raw") }],
    script: { path: s.settings().reconScript, sha256: sha256(body) },
    server: { version: VERSION, host: Deno.hostname() },
  });
  const finished = Date.parse(provenance.finished_at);
  assert.ok(finished >= before && finished <= Date.now(), provenance.finished_at);
  const sent = outcome.results.find((result) => result.name === "provenance.json");
  assert.equal(sent?.sha256, sha256(text), "hashed and sent like any result");
});

Deno.test("executeJob() keeps a script's own provenance.json as provenance.script.json and says so in the job's log", async () => {
  await using s = await site(
    `echo image > "$RECON_OUTPUT_DIR/image.dcm"\necho '{"mine": true}' > "$RECON_OUTPUT_DIR/provenance.json"\n`,
  );
  const { lines, log } = memoryLog();
  const outcome = await executeJob(s.store, s.job, s.settings(), log);
  assert.ok(outcome.ok, JSON.stringify(outcome));
  assert.deepEqual(outcome.results.map((r) => r.name), [
    "image.dcm",
    "provenance.json",
    "provenance.script.json",
  ]);
  const output = s.job.record.outputDir;
  assert.equal(
    await Deno.readTextFile(path.join(output, "provenance.script.json")),
    '{"mine": true}\n',
  );
  assert.equal(
    JSON.parse(await Deno.readTextFile(path.join(output, "provenance.json"))).job_id,
    s.job.id,
  );
  const note = "the script's own provenance.json was renamed to provenance.script.json: " +
    "provenance.json is the server's";
  assert.match(await Deno.readTextFile(s.job.record.logPath), new RegExp(`\\n# \\S+ ${note}\\n$`));
  assert.ok(lines.includes(`info job ${s.job.id}: ${note}`));
});

Deno.test("a failed job gets no provenance.json: a script that wrote nothing fails, and its output goes", async () => {
  await using s = await site(`true\n`);
  const { log } = memoryLog();
  const outcome = await executeJob(s.store, s.job, s.settings(), log);
  assert.ok(!outcome.ok, "provenance.json alone is not a result");
  assert.equal(
    outcome.reason,
    "the script finished but wrote no result files into RECON_OUTPUT_DIR",
  );
  const record = await finishJob(s.store, s.job, outcome, s.settings(), log);
  assert.equal(record.state, "failed");
  assert.deepEqual(await names(s.dicomDir), [], "the output, provenance.json with it, is gone");
});

Deno.test("executeJob() with LEGACY_SHARED_OUTPUT writes provenance.json into the job's output directory, never into RECON_DICOM_DIR", async () => {
  await using s = await site(
    `DICOM="$(dirname "$RECON_OUTPUT_DIR")"\necho image > "$DICOM/image.dcm"\necho legacy > "$DICOM/provenance.json"\n`,
  );
  const { log } = memoryLog();
  const outcome = await executeJob(s.store, s.job, s.settings(true), log);
  assert.ok(outcome.ok, JSON.stringify(outcome));
  assert.deepEqual(outcome.results.map((r) => r.name), [
    "image.dcm",
    "provenance.json",
    "provenance.script.json",
  ]);
  assert.deepEqual(await names(s.dicomDir), [`job_${s.job.id}_output`]);
  const output = s.job.record.outputDir;
  assert.equal(await Deno.readTextFile(path.join(output, "provenance.script.json")), "legacy\n");
  assert.equal(
    JSON.parse(await Deno.readTextFile(path.join(output, "provenance.json"))).job_id,
    s.job.id,
  );
});

Deno.test("executeJob() through a launcher: its reason fails the job; a launcher that cannot take the job throws ExecutorUnavailable, no outcome", async () => {
  await using s = await site("#!/bin/sh\nexit 0\n");
  await Deno.chmod(s.settings().reconScript, 0o755);
  const { log } = memoryLog();
  const seen: string[][] = [];
  const slurmLike: Launcher = {
    run(_job, request) {
      seen.push([request.command.program, ...request.command.args]);
      return Promise.resolve({
        exitCode: null,
        signal: null,
        timedOut: false,
        cancelled: false,
        stderrTail: ["slurmstepd: error: *** JOB 12 ON vm CANCELLED DUE TO TIME LIMIT ***"],
        reason: "Slurm stopped the job at its time limit (TIMEOUT)",
      });
    },
  };
  const outcome = await executeJob(s.store, s.job, { ...s.settings(), launcher: slurmLike }, log);
  assert.deepEqual(outcome, {
    ok: false,
    reason: "Slurm stopped the job at its time limit (TIMEOUT)",
    exitCode: null,
    stderrTail: ["slurmstepd: error: *** JOB 12 ON vm CANCELLED DUE TO TIME LIMIT ***"],
  });
  assert.equal(seen.length, 1);

  const down: Launcher = {
    run: () => Promise.reject(new ExecutorUnavailable("Slurm does not answer: sbatch failed")),
  };
  await assert.rejects(
    () => executeJob(s.store, s.job, { ...s.settings(), launcher: down }, log),
    ExecutorUnavailable,
  );
});
