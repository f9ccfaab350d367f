/**
 * Tests for lib/server/recovery.ts: what a crashed server left behind is cleaned up
 * at the next start, and nothing that is not ours is touched.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { log, type Logger } from "../../lib/log.ts";
import { isScriptOfJob, OWNER_FILE, recoverAfterCrash } from "../../lib/server/recovery.ts";

const logger = log("recon-test", "recovery");

async function tempDir(): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "recon-recovery-" });
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
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

Deno.test("recoverAfterCrash() stops a leftover script's group and removes leftover input dirs", async () => {
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

    const report = await recoverAfterCrash(tmp.dir, logger);

    assert.deepEqual(report.stoppedScripts, [child.pid]);
    assert.deepEqual(report.removedInputDirs, [inputDir]);
    const status = await child.status;
    assert.equal(status.signal, "SIGKILL");
    const left = (await Array.fromAsync(Deno.readDir(tmp.dir))).map((e) => e.name).sort();
    assert.deepEqual(left, [OWNER_FILE, "not_a_job_dir"]);
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
    const report = await recoverAfterCrash(tmp.dir, logger);
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
    const report = await recoverAfterCrash(tmp.dir, logger);
    assert.deepEqual(report.removedInputDirs, []);
    assert.ok((await Deno.stat(inputDir)).isDirectory, "the other server's upload is untouched");
  } finally {
    other.kill("SIGKILL");
    await other.status;
  }
});

Deno.test("recoverAfterCrash() is a no-op for a directory that does not exist yet", async () => {
  const report = await recoverAfterCrash(`/tmp/recon-missing-${crypto.randomUUID()}`, logger);
  assert.deepEqual(report, { removedInputDirs: [], stoppedScripts: [], removedOutputDirs: [] });
});

Deno.test("recoverAfterCrash() removes the partial output of a job that never finished, and keeps finished results", async () => {
  await using tmp = await tempDir();
  const reconFilePath = path.join(tmp.dir, "pfiles");
  const dicomDir = path.join(tmp.dir, "dicoms");
  await Deno.mkdir(reconFilePath);
  await Deno.mkdir(dicomDir);
  // Killed halfway: its marker is still there.
  const partialId = crypto.randomUUID();
  const partial = path.join(dicomDir, `job_${partialId}_output`);
  await Deno.mkdir(partial);
  await Deno.writeTextFile(path.join(partial, "partial.dcm"), "half an image");
  await Deno.writeTextFile(path.join(reconFilePath, `job_${partialId}.running`), `${partial}\n`);
  // Finished, its client gone: results kept for the operator, no marker.
  const doneId = crypto.randomUUID();
  const done = path.join(dicomDir, `job_${doneId}_output`);
  await Deno.mkdir(done);
  await Deno.writeTextFile(path.join(done, "image.dcm"), "a whole image");
  const lines: string[] = [];
  const capture = { info: () => {}, warn: (message: string) => lines.push(message) };

  const report = await recoverAfterCrash(reconFilePath, capture as unknown as Logger);

  assert.deepEqual(report.removedOutputDirs, [partial]);
  assert.deepEqual(await Array.fromAsync(Deno.readDir(dicomDir), (e) => e.name), [
    `job_${doneId}_output`,
  ]);
  assert.deepEqual(await Array.fromAsync(Deno.readDir(reconFilePath), (e) => e.name), [
    OWNER_FILE,
  ]);
  assert.ok(
    lines.some((line) =>
      line === `job ${partialId}: removed ${partial}, partial output of a job that never ` +
          "finished (the server stopped during it)"
    ),
    lines.join("\n"),
  );
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

  const report = await recoverAfterCrash(tmp.dir, logger);

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

  const report = await recoverAfterCrash(tmp.dir, logger);

  assert.deepEqual(report.removedOutputDirs, []);
  const left = (await Array.fromAsync(Deno.readDir(tmp.dir), (e) => e.name)).sort();
  assert.deepEqual(left, [OWNER_FILE, path.basename(other), "precious"].sort());
});
