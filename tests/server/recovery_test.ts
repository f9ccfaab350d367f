/**
 * Tests for lib/server/recovery.ts: what a stopped server left behind is put right at
 * the next start from a real job store: leftover scripts stopped, jobs that were
 * running queued again or failed after their last attempt, partial output removed,
 * cut-off uploads kept resumable, directories the store says are gone removed, and
 * nothing the store does not know touched.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as path from "node:path";
import { JobStore } from "../../lib/server/job_store.ts";
import { JobLeases } from "../../lib/server/job_leases.ts";
import {
  isScriptOfJob,
  OWNER_FILE,
  recoverAfterCrash,
  type RecoveryOptions,
} from "../../lib/server/recovery.ts";
import { memoryLog } from "../support/memory_log.ts";

/**
 * A temporary site: `dir` is RECON_FILEPATH, `dicoms` RECON_DICOM_DIR (inside it, as
 * some tests had it), a job store beside them, and the options of recoverAfterCrash.
 */
async function tempDir(): Promise<
  {
    dir: string;
    store: JobStore;
    leases: JobLeases;
    lines: string[];
    options: (overrides?: Partial<RecoveryOptions>) => RecoveryOptions;
    /** A job in `state` with its input directory (and output for running/succeeded). */
    job: (
      state: "receiving" | "queued" | "running" | "succeeded" | "failed" | "cancelled",
    ) => Promise<string>;
  } & AsyncDisposable
> {
  const root = await Deno.makeTempDir({ prefix: "recon-recovery-" });
  const dir = path.join(root, "pfiles");
  const dicoms = path.join(root, "dicoms");
  await Deno.mkdir(dir);
  await Deno.mkdir(dicoms);
  const store = JobStore.open(path.join(root, "state"));
  const leases = new JobLeases();
  const { lines, log } = memoryLog();
  const options = (overrides: Partial<RecoveryOptions> = {}): RecoveryOptions => ({
    reconFilePath: dir,
    reconDicomDir: dicoms,
    store,
    leases,
    jobMaxAttempts: 2,
    failedInputRetention: 3600,
    uploadResumeWindow: 600,
    log,
    ...overrides,
  });
  const job = async (state: string) => {
    const id = crypto.randomUUID();
    const inputDir = path.join(dir, `job_${id}_input`);
    const outputDir = path.join(dicoms, `job_${id}_output`);
    await Deno.mkdir(inputDir);
    await Deno.writeTextFile(path.join(inputDir, "P00001.7"), "raw");
    store.createReceiving({
      id,
      priority: "normal",
      client: "k",
      peer: "127.0.0.1:1",
      keyId: "k",
      options: {},
      inputDir,
      outputDir,
      logPath: path.join(dir, `job_${id}.log`),
      files: [{ name: "P00001.7", size: 3 }],
      uploadExpiresAt: Date.now() + 60_000,
    });
    if (state === "receiving") return id;
    store.inputVerified(id, 0, createHash("sha256").update("raw").digest("hex"));
    store.markQueued(id);
    if (state === "queued") return id;
    if (state === "cancelled") {
      store.markCancelled(id, { reason: "x", by: "y" });
      return id;
    }
    store.markRunning(id);
    await Deno.mkdir(outputDir);
    await Deno.writeTextFile(path.join(outputDir, "image.dcm"), "half an image");
    if (state === "succeeded") {
      store.markSucceeded(id, {
        exitCode: 0,
        stderrTail: [],
        outputs: [{ name: "image.dcm", size: 13, sha256: "0".repeat(64) }],
        skipped: 0,
        resultsExpireAt: Date.now() + 60_000,
      });
    } else if (state === "failed") {
      store.markFailed(id, { reason: "exit 3", exitCode: 3, stderrTail: [] });
      await Deno.remove(outputDir, { recursive: true });
    }
    return id;
  };
  return {
    dir,
    store,
    leases,
    lines,
    options,
    job,
    [Symbol.asyncDispose]: async () => {
      store.close();
      await Deno.remove(root, { recursive: true });
    },
  };
}

/** A `sleep` in its own process group, optionally with RECON_JOB_ID set. */
function sleeper(env: Record<string, string>): Deno.ChildProcess {
  return new Deno.Command("setsid", {
    args: ["sleep", "30"],
    env,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return !/\) [ZX] /.test(stat);
  } catch {
    return false;
  }
}

Deno.test("recoverAfterCrash() stops a leftover script's group and leaves an input dir the store does not know", async () => {
  await using tmp = await tempDir();
  const jobId = crypto.randomUUID();
  const child = sleeper({ RECON_JOB_ID: jobId });
  try {
    await Deno.writeTextFile(path.join(tmp.dir, `job_${jobId}.pid`), `${child.pid}\n`);
    const inputDir = path.join(tmp.dir, `job_${jobId}_input`);
    await Deno.mkdir(inputDir);
    await Deno.writeTextFile(path.join(inputDir, "P00000.7"), "partial");
    await Deno.mkdir(path.join(tmp.dir, "not_a_job_dir"));
    assert.equal(await isScriptOfJob(child.pid, jobId), true);

    const report = await recoverAfterCrash(tmp.options());

    assert.deepEqual(report.stoppedScripts, [child.pid]);
    assert.deepEqual(report.removedInputDirs, []);
    assert.deepEqual(report.unknownDirs, [inputDir]);
    const status = await child.status;
    assert.equal(status.signal, "SIGKILL");
    const left = (await Array.fromAsync(Deno.readDir(tmp.dir))).map((e) => e.name).sort();
    assert.deepEqual(left, [OWNER_FILE, `job_${jobId}_input`, "not_a_job_dir"]);
    assert.ok(
      tmp.lines.some((line) =>
        line.startsWith(`warn ${inputDir}: left in place: the job store has no job ${jobId}`)
      ),
      tmp.lines.join("\n"),
    );
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }
});

Deno.test("recoverAfterCrash() never signals a process whose pid was reused by something else", async () => {
  await using tmp = await tempDir();
  const jobId = crypto.randomUUID();
  const stranger = sleeper({ RECON_JOB_ID: crypto.randomUUID() });
  try {
    await Deno.writeTextFile(path.join(tmp.dir, `job_${jobId}.pid`), `${stranger.pid}\n`);
    const report = await recoverAfterCrash(tmp.options());
    assert.deepEqual(report.stoppedScripts, []);
    assert.equal(alive(stranger.pid), true, "the unrelated process still runs");
  } finally {
    stranger.kill("SIGKILL");
    await stranger.status;
  }
});

Deno.test("recoverAfterCrash() leaves the directory alone while another live server uses it", async () => {
  await using tmp = await tempDir();
  // A live process whose command line looks like a recon-server.
  const other = new Deno.Command("sh", {
    args: ["-c", "sleep 30", "recon-server"],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    // sh -c puts "recon-server" into its argv ($0), which is what /proc/PID/cmdline shows.
    await Deno.writeTextFile(path.join(tmp.dir, OWNER_FILE), `${other.pid}\n`);
    const inputDir = path.join(tmp.dir, `job_${crypto.randomUUID()}_input`);
    await Deno.mkdir(inputDir);
    const report = await recoverAfterCrash(tmp.options());
    assert.deepEqual(report.removedInputDirs, []);
    assert.ok((await Deno.stat(inputDir)).isDirectory, "the other server's upload is untouched");
  } finally {
    other.kill("SIGKILL");
    await other.status;
  }
});

Deno.test("recoverAfterCrash() is a no-op for a directory that does not exist yet", async () => {
  await using tmp = await tempDir();
  const report = await recoverAfterCrash(
    tmp.options({ reconFilePath: `/tmp/recon-missing-${crypto.randomUUID()}` }),
  );
  assert.deepEqual(report, {
    removedInputDirs: [],
    stoppedScripts: [],
    removedOutputDirs: [],
    requeued: [],
    failed: [],
    unknownDirs: [],
    resumedDeliveries: [],
  });
});

Deno.test("recoverAfterCrash() removes the partial output a marker names, and leaves results the store does not know", async () => {
  await using tmp = await tempDir();
  const { reconFilePath, reconDicomDir: dicomDir } = tmp.options();
  // Killed halfway: its marker is still there.
  const partialId = crypto.randomUUID();
  const partial = path.join(dicomDir, `job_${partialId}_output`);
  await Deno.mkdir(partial);
  await Deno.writeTextFile(path.join(partial, "partial.dcm"), "half an image");
  await Deno.writeTextFile(path.join(reconFilePath, `job_${partialId}.running`), `${partial}\n`);
  // Finished under an older server, its client gone: results kept for the operator.
  const doneId = crypto.randomUUID();
  const done = path.join(dicomDir, `job_${doneId}_output`);
  await Deno.mkdir(done);
  await Deno.writeTextFile(path.join(done, "image.dcm"), "a whole image");

  const report = await recoverAfterCrash(tmp.options());

  assert.deepEqual(report.removedOutputDirs, [partial]);
  assert.deepEqual(report.unknownDirs, [done]);
  assert.deepEqual(await Array.fromAsync(Deno.readDir(dicomDir), (e) => e.name), [
    `job_${doneId}_output`,
  ]);
  assert.deepEqual(await Array.fromAsync(Deno.readDir(reconFilePath), (e) => e.name), [
    OWNER_FILE,
  ]);
  assert.ok(
    tmp.lines.some((line) =>
      line === `warn job ${partialId}: removed ${partial}, partial output of a job that never ` +
          "finished (the server stopped during it)"
    ),
    tmp.lines.join("\n"),
  );
});

Deno.test("recoverAfterCrash() queues a job that was running again, and fails it after JOB_MAX_ATTEMPTS, keeping its inputs", async () => {
  await using tmp = await tempDir();
  const once = await tmp.job("running");
  const twice = await tmp.job("running");
  // The second was started twice: a restart put it back once already.
  tmp.store.requeue(twice, { refundAttempt: false });
  tmp.store.markRunning(twice);
  const queued = await tmp.job("queued");
  const before = Date.now();

  const report = await recoverAfterCrash(tmp.options({ jobMaxAttempts: 2 }));

  assert.deepEqual(report.requeued, [once]);
  assert.deepEqual(report.failed, [twice]);
  const requeued = tmp.store.get(once)!;
  assert.equal(requeued.state, "queued");
  assert.equal(requeued.attempts, 1, "the attempt stays counted");
  const failed = tmp.store.get(twice)!;
  assert.equal(failed.state, "failed");
  assert.equal(failed.reason, "the server stopped while it was running");
  assert.equal(failed.exitCode, undefined);
  assert.ok(failed.inputsExpireAt! >= before + 3600_000, "kept FAILED_INPUT_RETENTION");
  assert.ok((await Deno.stat(failed.inputDir)).isDirectory, "for a re-run");
  for (const id of [once, twice]) {
    await assert.rejects(Deno.lstat(tmp.store.get(id)!.outputDir), Deno.errors.NotFound);
  }
  assert.equal(report.removedOutputDirs.length, 2, "partial output is never results");
  assert.deepEqual(tmp.store.queued().map((job) => job.id), [once, queued], "in their order");
  assert.ok(tmp.lines.includes("info 2 queued job(s) resume in their order"), tmp.lines.join("\n"));
});

Deno.test("recoverAfterCrash() keeps cut-off uploads resumable for UPLOAD_RESUME_WINDOW from the start, and counts their verified bytes", async () => {
  await using tmp = await tempDir();
  const id = await tmp.job("receiving");
  const inputDir = tmp.store.get(id)!.inputDir;
  await Deno.remove(path.join(inputDir, "P00001.7"));
  await Deno.writeTextFile(path.join(inputDir, "-partial-0"), "ra");
  const now = Date.now();
  await recoverAfterCrash(tmp.options({ uploadResumeWindow: 600, now: () => now }));
  assert.equal(tmp.store.get(id)!.state, "receiving");
  assert.equal(tmp.leases.resumeUntil.get(id), now + 600_000);
  assert.equal(tmp.leases.heldBytes.get(id), 2);
  assert.deepEqual(await Array.fromAsync(Deno.readDir(inputDir), (e) => e.name), ["-partial-0"]);
});

Deno.test("recoverAfterCrash() removes directories the store says are gone and keeps those a job needs", async () => {
  await using tmp = await tempDir();
  const cancelled = await tmp.job("cancelled"); // its input removal never finished
  const succeeded = await tmp.job("succeeded"); // inputs gone, results kept
  const failed = await tmp.job("failed"); // inputs kept for a re-run
  const queued = await tmp.job("queued");
  const expired = await tmp.job("succeeded");
  tmp.store.markExpired(expired); // its results' removal never finished

  const report = await recoverAfterCrash(tmp.options());

  const inputOf = (id: string) => tmp.store.get(id)!.inputDir;
  const outputOf = (id: string) => tmp.store.get(id)!.outputDir;
  assert.deepEqual(
    report.removedInputDirs.sort(),
    [inputOf(cancelled), inputOf(succeeded), inputOf(expired)].sort(),
  );
  assert.deepEqual(report.removedOutputDirs, [outputOf(expired)]);
  assert.deepEqual(report.unknownDirs, []);
  for (const id of [cancelled, succeeded, expired]) {
    assert.equal(tmp.store.get(id)!.inputsRemoved, true, "the store hears they are gone");
  }
  assert.equal(tmp.store.get(expired)!.resultsRemoved, true);
  assert.ok((await Deno.stat(inputOf(failed))).isDirectory);
  assert.ok((await Deno.stat(inputOf(queued))).isDirectory);
  assert.ok((await Deno.stat(path.join(outputOf(succeeded), "image.dcm"))).isFile);
});

Deno.test("recoverAfterCrash() keeps the results of a job that succeeded but left its marker", async () => {
  await using tmp = await tempDir();
  const id = await tmp.job("succeeded");
  const record = tmp.store.get(id)!;
  await Deno.writeTextFile(path.join(tmp.dir, `job_${id}.running`), `${record.outputDir}\n`);
  const report = await recoverAfterCrash(tmp.options());
  assert.deepEqual(report.removedOutputDirs.filter((dir) => dir === record.outputDir), []);
  assert.ok((await Deno.stat(path.join(record.outputDir, "image.dcm"))).isFile);
  await assert.rejects(Deno.lstat(path.join(tmp.dir, `job_${id}.running`)), Deno.errors.NotFound);
});

Deno.test("recoverAfterCrash() removes a link left in place of a partial output directory, not what it points to", async () => {
  await using tmp = await tempDir();
  const secret = path.join(tmp.dir, "etc");
  await Deno.mkdir(secret);
  await Deno.writeTextFile(path.join(secret, "shadow"), "root:$6$hash");
  const jobId = crypto.randomUUID();
  const output = path.join(tmp.dir, `job_${jobId}_output`);
  await Deno.symlink(secret, output);
  await Deno.writeTextFile(path.join(tmp.dir, `job_${jobId}.running`), `${output}\n`);

  const report = await recoverAfterCrash(tmp.options());

  assert.deepEqual(report.removedOutputDirs, [output]);
  await assert.rejects(Deno.lstat(output), Deno.errors.NotFound);
  assert.deepEqual(await Array.fromAsync(Deno.readDir(secret), (e) => e.name), ["shadow"]);
});

Deno.test("recoverAfterCrash() touches nothing but the job's own output directory a marker names", async () => {
  await using tmp = await tempDir();
  const jobId = crypto.randomUUID();
  const precious = path.join(tmp.dir, "precious");
  await Deno.mkdir(precious);
  const other = path.join(tmp.dir, `job_${crypto.randomUUID()}_output`);
  await Deno.mkdir(other);
  for (const [index, named] of [precious, other, "relative/job_x_output"].entries()) {
    const marker = path.join(tmp.dir, `job_${jobId.slice(0, -1)}${index}.running`);
    await Deno.writeTextFile(marker, `${named}\n`);
  }

  const report = await recoverAfterCrash(tmp.options());

  assert.deepEqual(report.removedOutputDirs, []);
  const left = (await Array.fromAsync(Deno.readDir(tmp.dir), (e) => e.name)).sort();
  assert.deepEqual(left, [OWNER_FILE, path.basename(other), "precious"].sort());
});
