/**
 * `recon-server backup FILE` through bin/recon-server (issue 13): a consistent copy of
 * the job store named by recon.opts, taken from another process while the store's
 * owner holds it open and commits without pause, and after that owner was SIGKILLed
 * (its last commits only in the WAL); the refusals, each one line with exit 2.
 *
 * The store's owner here is a small deno process that opens the store as recon-server
 * does (JobStore.open: the lock file, WAL, synchronous=FULL) and writes jobs.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { JobStore, STORE_FILE } from "../lib/server/job_store.ts";
import { STORE_SCHEMA_VERSION } from "../lib/server/store_schema.ts";
import { run, SERVER_BIN, Spawned, tempDir } from "./support/e2e.ts";

const JOB_STORE_MODULE = new URL("../lib/server/job_store.ts", import.meta.url).href;

/** recon.opts for a site in `dir` whose RECON_STATE_DIR is `dir/state`. */
async function writeOpts(dir: string): Promise<{ optsPath: string; stateDir: string }> {
  const optsPath = path.join(dir, "recon.opts");
  const stateDir = path.join(dir, "state");
  await Deno.writeTextFile(
    optsPath,
    [
      "SHARED_KEY = " + "A".repeat(43) + "=",
      `RECON_FILEPATH = ${path.join(dir, "jobs")}`,
      `RECON_DICOM_DIR = ${path.join(dir, "results")}`,
      `RECON_STATE_DIR = ${stateDir}`,
    ].join("\n") + "\n",
    { mode: 0o600 },
  );
  return { optsPath, stateDir };
}

/**
 * A process holding the store in `stateDir`: it records `jobs` queued jobs, says
 * `ready N` on stderr, then (when `write`) commits a job and two transitions at a time
 * without pause, saying `committed N` every 100 jobs.
 */
function storeOwner(stateDir: string, jobs: number, write: boolean): Spawned {
  const code = `
    const { JobStore } = await import(${JSON.stringify(JOB_STORE_MODULE)});
    const store = JobStore.open(${JSON.stringify(stateDir)});
    let count = 0;
    const make = () => {
      const id = crypto.randomUUID();
      store.createReceiving({ id, priority: "normal", client: "k", peer: "127.0.0.1:1", keyId: "k",
        options: { n: count }, inputDir: "/i/" + id, outputDir: "/o/" + id, logPath: "/l/" + id,
        files: [{ name: "P1.7", size: 100 }], uploadExpiresAt: Date.now() + 3600000 });
      store.inputVerified(id, 0, "d".repeat(64));
      store.markQueued(id);
      count++;
      return id;
    };
    for (let i = 0; i < ${jobs}; i++) make();
    console.error("ready " + count);
    if (${write}) {
      for (;;) {
        const id = make();
        store.markRunning(id);
        store.requeue(id, { refundAttempt: true });
        if (count % 100 === 0) console.error("committed " + count);
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    }
    setInterval(() => {}, 60000);
  `;
  return new Spawned(Deno.execPath(), ["eval", "--quiet", code]);
}

function errorLines(stderr: string): string[] {
  return stderr.trimEnd().split("\n");
}

Deno.test("recon-server backup FILE copies the job store while its owner writes, without stopping it", async () => {
  await using site = await tempDir("recon_backup_");
  const { optsPath, stateDir } = await writeOpts(site.path);
  await using owner = storeOwner(stateDir, 300, true);
  await owner.waitForStderr(/ready 300/);
  const file = path.join(site.path, "backup.sqlite");

  const result = await run(SERVER_BIN, ["backup", "--opts", optsPath, file]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stderr, "");
  const line = new RegExp(`^backed up (\\d+) jobs to (.*) \\(schema ${STORE_SCHEMA_VERSION}\\)\\n$`)
    .exec(result.stdout);
  assert.ok(line, result.stdout);
  assert.equal(line[2], file);
  const copied = Number(line[1]);
  assert.ok(copied >= 300, result.stdout);

  // The owner was neither stopped nor locked out: it goes on committing.
  const last = Math.max(300, ...[...owner.stderr.matchAll(/committed (\d+)/g)].map((m) => +m[1]));
  await owner.waitForStderr(new RegExp(`committed ${last + 100}\n`));
  assert.ok(owner.running);

  assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
  const restored = path.join(site.path, "restored");
  await Deno.mkdir(restored, { mode: 0o700 });
  await Deno.rename(file, path.join(restored, STORE_FILE));
  const store = JobStore.open(restored);
  try {
    const jobs = store.list({ limit: 100_000 });
    assert.equal(jobs.length, copied, "the line counts the jobs in the copy");
    // One snapshot of committed states: every job but the last is queued; the last may
    // be between two of its own commits (receiving, or running before its requeue).
    assert.ok(
      jobs.slice(0, -1).every((job) => job.state === "queued"),
      "one snapshot of committed states",
    );
    assert.ok(["receiving", "queued", "running"].includes(jobs.at(-1)!.state), jobs.at(-1)!.state);
    assert.deepEqual(jobs.map((job) => job.options.n), jobs.map((_, i) => i));
  } finally {
    store.close();
  }
});

Deno.test("recon-server backup FILE copies what a SIGKILLed owner committed, its last jobs only in the WAL", async () => {
  await using site = await tempDir("recon_backup_");
  const { optsPath, stateDir } = await writeOpts(site.path);
  const owner = storeOwner(stateDir, 40, false);
  await owner.waitForStderr(/ready 40/);
  await owner.stop("SIGKILL");
  assert.ok((await Deno.stat(path.join(stateDir, `${STORE_FILE}-wal`))).size > 0);

  const file = path.join(site.path, "backup.sqlite");
  const result = await run(SERVER_BIN, ["backup", "--opts", optsPath, file]);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout, `backed up 40 jobs to ${file} (schema ${STORE_SCHEMA_VERSION})\n`);
  // The backup only read: the store opens for the next server as it was.
  const store = JobStore.open(stateDir);
  try {
    assert.equal(store.inState("queued").length, 40);
  } finally {
    store.close();
  }
});

Deno.test("recon-server backup refuses an existing FILE, a missing store or recon.opts, and a missing FILE, in one line with exit 2", async () => {
  await using site = await tempDir("recon_backup_");
  const { optsPath, stateDir } = await writeOpts(site.path);
  const file = path.join(site.path, "backup.sqlite");

  const none = await run(SERVER_BIN, ["backup", "--opts", optsPath, file]);
  assert.equal(none.code, 2, none.stderr);
  assert.deepEqual(errorLines(none.stderr), [
    `recon-server: error: there is no job store at ${stateDir}/${STORE_FILE}; nothing to back up`,
    "hint: check RECON_STATE_DIR in recon.opts (--opts PATH names the server's file)",
  ]);
  await assert.rejects(Deno.lstat(file), Deno.errors.NotFound);
  await assert.rejects(Deno.lstat(stateDir), Deno.errors.NotFound, "nothing was created");

  JobStore.open(stateDir).close();
  await Deno.writeTextFile(file, "an older backup\n");
  const exists = await run(SERVER_BIN, ["backup", "--opts", optsPath, file]);
  assert.equal(exists.code, 2, exists.stderr);
  assert.deepEqual(errorLines(exists.stderr), [
    `recon-server: error: ${file} already exists; refusing to overwrite it`,
    "hint: name a file that does not exist yet",
  ]);
  assert.equal(await Deno.readTextFile(file), "an older backup\n");

  const missingOpts = path.join(site.path, "other", "recon.opts");
  const noOpts = await run(SERVER_BIN, ["backup", "--opts", missingOpts, `${file}.2`]);
  assert.equal(noOpts.code, 2, noOpts.stderr);
  assert.match(
    noOpts.stderr,
    new RegExp(`^recon-server: error: recon\\.opts ${missingOpts} does not exist$`, "m"),
  );
  await assert.rejects(Deno.lstat(missingOpts), Deno.errors.NotFound, "recon.opts is not created");

  const noFile = await run(SERVER_BIN, ["backup", "--opts", optsPath]);
  assert.equal(noFile.code, 2, noFile.stderr);
  assert.deepEqual(errorLines(noFile.stderr), [
    "recon-server: error: backup takes one FILE, the copy to write",
    "hint: recon-server backup [--opts PATH] FILE",
  ]);

  const help = await run(SERVER_BIN, ["--help"]);
  assert.match(help.stdout, /^ {2}recon-server backup \[--opts PATH\] FILE$/m);
  assert.match(
    help.stdout,
    /^ {2}backup FILE {5}copy the job store \(jobs\.sqlite in RECON_STATE_DIR\)/m,
  );
});
