/**
 * Tests for lib/server/job_store.ts, store_file.ts and store_schema.ts: every
 * transition and every refusal, the queue's priority order, paging, the sweeper's
 * due() for each retention, counts and kept bytes, toJobInfo, migrations, refusal of
 * a newer schema, a damaged file and a second opener (a real second process), reopen
 * after close and after SIGKILL, and a backup taken while another process writes.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { DatabaseSync } from "node:sqlite";
import { StoreError } from "../../lib/errors.ts";
import {
  backupJobStore,
  type JobRecord,
  JobStore,
  LOCK_FILE,
  type NewJob,
  STORE_FILE,
  toJobInfo,
} from "../../lib/server/job_store.ts";
import { migrate, MIGRATIONS, STORE_SCHEMA_VERSION } from "../../lib/server/store_schema.ts";
import { JOB_STATES, type JobState, parseServerMessage } from "../../lib/wire/protocol.ts";

const T0 = Date.UTC(2026, 11, 1, 9, 0, 0);
const SHA_A = "a".repeat(64);
const SHA_B = "b".repeat(64);
const JOB_STORE_MODULE = new URL("../../lib/server/job_store.ts", import.meta.url).href;

/** A temporary state directory (RECON_STATE_DIR) removed with `await using`. */
async function stateDir(): Promise<{ dir: string } & AsyncDisposable> {
  const parent = await Deno.makeTempDir({ prefix: "recon-store-" });
  return {
    dir: path.join(parent, "state"),
    [Symbol.asyncDispose]: () => Deno.remove(parent, { recursive: true }),
  };
}

/** A clock the test moves by hand. */
function manualClock(start = T0): { now: () => number; advance: (ms: number) => void } {
  let now = start;
  return { now: () => now, advance: (ms) => void (now += ms) };
}

/** A store on a manual clock, closed with `using`. */
function openStore(
  dir: string,
  clock = manualClock(),
): JobStore & Disposable & { clock: ReturnType<typeof manualClock> } {
  const store = JobStore.open(dir, { now: clock.now });
  return Object.assign(store, {
    clock,
    [Symbol.dispose]: () => store.close(),
  });
}

let counter = 0;

function newJob(overrides: Partial<NewJob> = {}): NewJob {
  const id = overrides.id ?? crypto.randomUUID();
  counter++;
  return {
    id,
    priority: "normal",
    client: "k1d",
    peer: "127.0.0.1:40000",
    keyId: "k1d",
    options: { iterations: 10, fast: true, note: `job ${counter}` },
    inputDir: `/srv/recon/jobs/job_${id}_input`,
    outputDir: `/srv/recon/results/job_${id}_output`,
    logPath: `/srv/recon/jobs/job_${id}.log`,
    files: [
      { name: "P12345.7", size: 1000, originalPath: "/usr/g/mrraw/P12345.7" },
      { name: "cal.dat", size: 24 },
    ],
    uploadExpiresAt: T0 + 3_600_000,
    ...overrides,
  };
}

/** A job of `store` brought to `state` by the transitions the server makes. */
function jobIn(store: JobStore, state: JobState, overrides: Partial<NewJob> = {}): JobRecord {
  const job = store.createReceiving(newJob(overrides));
  if (state === "receiving") return job;
  if (state === "failed") return store.markFailed(job.id, failure());
  if (state === "cancelled") return store.markCancelled(job.id, { reason: "r", by: "b" });
  for (const input of store.inputs(job.id)) store.inputVerified(job.id, input.index, SHA_A);
  const queued = store.markQueued(job.id);
  if (state === "queued") return queued;
  const running = store.markRunning(job.id);
  if (state === "running") return running;
  store.markSucceeded(job.id, success());
  if (state === "succeeded") return store.get(job.id)!;
  return store.markExpired(job.id);
}

function success(resultsExpireAt = T0 + 7 * 86_400_000) {
  return {
    exitCode: 0,
    stderrTail: ["done"],
    outputs: [
      { name: "img0001.dcm", size: 500, sha256: SHA_A, dev: 2049, ino: 77 },
      { name: "img0002.dcm", size: 700, sha256: SHA_B },
    ],
    skipped: 1,
    resultsExpireAt,
  };
}

function failure(inputsExpireAt?: number) {
  return {
    reason: "the script exited with status 3",
    exitCode: 3,
    stderrTail: ["boom"],
    inputsExpireAt,
  };
}

/** Run `code` in a new deno process (`deno eval`), with `env`; stdout and stderr piped. */
function denoEval(code: string, env: Record<string, string>): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["eval", "--quiet", code],
    env,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Read `child`'s stdout until a line matches `pattern`; returns the lines read. */
async function readUntil(child: Deno.ChildProcess, pattern: RegExp): Promise<string> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  try {
    while (!pattern.test(text)) {
      const { value, done } = await reader.read();
      if (done) {
        const { stderr } = await child.output().catch(() => ({ stderr: new Uint8Array() }));
        throw new Error(
          `the child ended before ${pattern}: ${text}${new TextDecoder().decode(stderr)}`,
        );
      }
      text += value;
    }
    return text;
  } finally {
    reader.releaseLock();
  }
}

/**
 * A second process that holds the store in `dir` open: creates `jobs` queued jobs,
 * prints `ready`, then (when `write`) commits transitions without pause until killed.
 */
function holder(dir: string, jobs: number, write: boolean): Deno.ChildProcess {
  return denoEval(
    `
    const { JobStore } = await import(${JSON.stringify(JOB_STORE_MODULE)});
    const store = JobStore.open(Deno.env.get("DIR"));
    const sha = "c".repeat(64);
    const make = () => {
      const id = crypto.randomUUID();
      store.createReceiving({ id, priority: "normal", client: "c", peer: "p", keyId: "k",
        options: {}, inputDir: "/i/" + id, outputDir: "/o/" + id, logPath: "/l/" + id,
        files: [{ name: "P1.7", size: 10 }], uploadExpiresAt: Date.now() + 3600000 });
      store.inputVerified(id, 0, sha);
      store.markQueued(id);
      return id;
    };
    for (let i = 0; i < Number(Deno.env.get("JOBS")); i++) make();
    console.log("ready");
    if (Deno.env.get("WRITE") === "1") {
      for (;;) {
        const id = make();
        store.markRunning(id);
        store.requeue(id, { refundAttempt: true });
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    }
    await Deno.stdin.readable.pipeTo(new WritableStream());
    store.close();
    `,
    { DIR: dir, JOBS: String(jobs), WRITE: write ? "1" : "0" },
  );
}

async function stop(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGKILL");
  } catch { /* already gone */ }
  await child.status;
  await child.stdout.cancel().catch(() => {});
  await child.stderr.cancel().catch(() => {});
  await child.stdin.close().catch(() => {});
}

function refuses(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof StoreError, `expected a StoreError, got ${error}`);
    assert.match(error.message, pattern);
    assert.doesNotMatch(error.message, /\n/, "one line");
    return true;
  });
}

// --- opening -------------------------------------------------------------------------

Deno.test("JobStore.open() creates RECON_STATE_DIR 0700 and jobs.sqlite 0600 in WAL mode at the current schema", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  assert.equal(store.path, path.join(tmp.dir, STORE_FILE));
  assert.equal(store.schemaVersion(), STORE_SCHEMA_VERSION);
  assert.equal((await Deno.stat(tmp.dir)).mode! & 0o777, 0o700);
  assert.equal((await Deno.stat(store.path)).mode! & 0o777, 0o600);
  assert.equal((await Deno.stat(path.join(tmp.dir, LOCK_FILE))).mode! & 0o777, 0o600);
  assert.equal((await Deno.readTextFile(path.join(tmp.dir, LOCK_FILE))).trim(), String(Deno.pid));
  store.createReceiving(newJob()); // the -wal file appears with the database's mode
  assert.equal((await Deno.stat(`${store.path}-wal`)).mode! & 0o777, 0o600);
  const reader = new DatabaseSync(store.path, { readOnly: true });
  try {
    assert.equal(reader.prepare("PRAGMA journal_mode").get()!.journal_mode, "wal");
  } finally {
    reader.close();
  }
});

Deno.test("JobStore.open() refuses a state directory others can write, or a file in its place", async () => {
  await using tmp = await stateDir();
  await Deno.mkdir(tmp.dir, { mode: 0o700 });
  await Deno.chmod(tmp.dir, 0o777);
  refuses(
    () => JobStore.open(tmp.dir),
    /^RECON_STATE_DIR .*state is writable by other users \(mode 0777\); refusing to keep the job store there$/,
  );
  await Deno.remove(tmp.dir);
  await Deno.writeTextFile(tmp.dir, "");
  refuses(() => JobStore.open(tmp.dir), /^RECON_STATE_DIR .*state is not a directory$/);
});

Deno.test("JobStore.open() refuses a symbolic link or a directory as jobs.sqlite", async () => {
  await using tmp = await stateDir();
  await Deno.mkdir(tmp.dir, { mode: 0o700 });
  const file = path.join(tmp.dir, STORE_FILE);
  await Deno.symlink("/etc/passwd", file);
  refuses(() => JobStore.open(tmp.dir), /^the job store .*jobs\.sqlite is not a regular file$/);
  await Deno.remove(file);
  await Deno.mkdir(file);
  refuses(() => JobStore.open(tmp.dir), /^the job store .*jobs\.sqlite is not a regular file$/);
});

Deno.test("JobStore.open() refuses a file that is no database, naming it and SQLite's words", async () => {
  await using tmp = await stateDir();
  await Deno.mkdir(tmp.dir, { mode: 0o700 });
  const file = path.join(tmp.dir, STORE_FILE);
  const garbage = new Uint8Array(8192);
  crypto.getRandomValues(garbage);
  await Deno.writeFile(file, garbage);
  assert.throws(() => JobStore.open(tmp.dir), (error: unknown) => {
    assert.ok(error instanceof StoreError);
    assert.equal(error.message, `the job store ${file} is damaged: file is not a database`);
    assert.match(error.hint!, /recon-server backup FILE/);
    return true;
  });
  assert.deepEqual(await Deno.readFile(file), garbage, "the damaged file is left as it was");
  // The refusal released the lock: a repaired store opens.
  await Deno.remove(file);
  JobStore.open(tmp.dir).close();
});

Deno.test("JobStore.open() refuses a store whose pages were overwritten (quick_check)", async () => {
  await using tmp = await stateDir();
  {
    using store = openStore(tmp.dir);
    for (let i = 0; i < 300; i++) jobIn(store, "queued");
  }
  const file = path.join(tmp.dir, STORE_FILE);
  const bytes = await Deno.readFile(file);
  assert.ok(bytes.length > 20 * 4096);
  // Pages 3 to 12 (of the jobs table and its indexes) become noise; the header stays.
  const noise = new Uint8Array(10 * 4096);
  crypto.getRandomValues(noise);
  bytes.set(noise, 2 * 4096);
  await Deno.writeFile(file, bytes);
  refuses(() => JobStore.open(tmp.dir), /^the job store .*jobs\.sqlite is damaged: /);
});

Deno.test("JobStore.open() refuses a newer schema with the upgrade hint, and writes nothing to it", async () => {
  await using tmp = await stateDir();
  JobStore.open(tmp.dir).close();
  const file = path.join(tmp.dir, STORE_FILE);
  const db = new DatabaseSync(file);
  db.exec(`PRAGMA user_version = ${STORE_SCHEMA_VERSION + 1}`);
  db.close();
  const before = await Deno.readFile(file);
  refuses(
    () => JobStore.open(tmp.dir),
    new RegExp(
      `^the job store ${file} has schema version ${STORE_SCHEMA_VERSION + 1}, newer than this ` +
        `recon-server \\(${STORE_SCHEMA_VERSION}\\); upgrade recon-server or restore a backup$`,
    ),
  );
  assert.deepEqual(await Deno.readFile(file), before);
});

Deno.test("JobStore.open() refuses an SQLite file that holds other tables and no schema version", async () => {
  await using tmp = await stateDir();
  await Deno.mkdir(tmp.dir, { mode: 0o700 });
  const db = new DatabaseSync(path.join(tmp.dir, STORE_FILE));
  db.exec("CREATE TABLE files (id INTEGER PRIMARY KEY, path TEXT)");
  db.close();
  refuses(
    () => JobStore.open(tmp.dir),
    /^.*jobs\.sqlite is not a recon job store: it holds tables \(files\) but no schema version$/,
  );
});

// --- migrations ------------------------------------------------------------------------

Deno.test("JobStore.open() migrates an empty version 0 database made by hand", async () => {
  await using tmp = await stateDir();
  await Deno.mkdir(tmp.dir, { mode: 0o700 });
  const file = path.join(tmp.dir, STORE_FILE);
  const db = new DatabaseSync(file);
  db.exec("PRAGMA user_version = 0; VACUUM");
  db.close();
  using store = openStore(tmp.dir);
  assert.equal(store.schemaVersion(), STORE_SCHEMA_VERSION);
  const job = jobIn(store, "queued");
  assert.equal(store.get(job.id)!.state, "queued");
});

Deno.test("migrate() runs the pending steps in one transaction and keeps every row", async () => {
  await using tmp = await stateDir();
  let id: string;
  {
    using store = openStore(tmp.dir);
    id = jobIn(store, "succeeded").id;
  }
  const file = path.join(tmp.dir, STORE_FILE);
  const db = new DatabaseSync(file);
  try {
    // A later build's step 2: a new column and a new table beside the jobs.
    const next = [
      ...MIGRATIONS,
      `ALTER TABLE jobs ADD COLUMN site TEXT NOT NULL DEFAULT 'here';
       CREATE TABLE notices (job_id TEXT NOT NULL REFERENCES jobs (id), sent_to TEXT NOT NULL);`,
    ];
    assert.equal(migrate(db, next), STORE_SCHEMA_VERSION);
    assert.equal(db.prepare("PRAGMA user_version").get()!.user_version, next.length);
    const row = db.prepare("SELECT id, state, site FROM jobs").get()!;
    assert.deepEqual({ ...row }, { id, state: "succeeded", site: "here" });
    assert.equal(db.prepare("SELECT COUNT(*) AS n FROM outputs").get()!.n, 2);
    // A step that fails half-way changes nothing, not even the steps before it.
    const broken = [...next, "ALTER TABLE jobs ADD COLUMN x TEXT", "SELECT * FROM no_such_table"];
    assert.throws(() => migrate(db, broken), /no such table: no_such_table/);
    assert.equal(db.prepare("PRAGMA user_version").get()!.user_version, next.length);
    const columns = db.prepare("SELECT name FROM pragma_table_info('jobs')").all().map((r) =>
      r.name
    );
    assert.ok(!columns.includes("x"));
  } finally {
    db.close();
  }
  // This build now meets a newer store.
  refuses(
    () => JobStore.open(tmp.dir),
    new RegExp(
      `has schema version ${
        STORE_SCHEMA_VERSION + 1
      }, newer than this recon-server \\(${STORE_SCHEMA_VERSION}\\)`,
    ),
  );
});

Deno.test("version 2: jobs of a version 1 store become client default's; the client tables start empty", async () => {
  await using tmp = await stateDir();
  let id: string;
  {
    using store = openStore(tmp.dir);
    id = jobIn(store, "succeeded").id;
  }
  const file = path.join(tmp.dir, STORE_FILE);
  {
    // Back to what a version 1 server left: the client was the key id.
    const db = new DatabaseSync(file);
    db.exec(
      `ALTER TABLE outputs DROP COLUMN mtime_ms; ALTER TABLE outputs DROP COLUMN ctime_ms;
             DROP TABLE delivery_files; DROP TABLE deliveries; ALTER TABLE jobs DROP COLUMN deliver_to;
             DROP INDEX jobs_by_client; DROP TABLE client_seen; DROP TABLE client_snapshot;
             DROP TABLE audit_head; UPDATE jobs SET client = '0011223344556677';
             PRAGMA user_version = 1`,
    );
    db.close();
  }
  using store = openStore(tmp.dir);
  assert.equal(store.schemaVersion(), STORE_SCHEMA_VERSION);
  assert.equal(store.get(id)!.client, "default");
  assert.equal(store.auditHead(), undefined);
  assert.deepEqual([...store.clients.snapshot()], []);
  store.clientSeen("mr1", "00112233aabbccdd", "10.0.0.5");
  store.setAuditHead({ file: "audit.jsonl", seq: 3, hash: "ab".repeat(32) });
  assert.deepEqual(store.auditHead(), { file: "audit.jsonl", seq: 3, hash: "ab".repeat(32) });
  const activity = store.clients.activity();
  assert.equal(activity.get("default")!.jobs, 1);
  assert.equal(activity.get("mr1")!.lastAddress, "10.0.0.5");
  assert.equal(activity.get("mr1")!.jobs, 0);
});

Deno.test("version 4: a version 3 store keeps its results, with no file times, and records them for new results", async () => {
  await using tmp = await stateDir();
  let old: string;
  {
    using store = openStore(tmp.dir);
    old = jobIn(store, "succeeded").id;
  }
  const file = path.join(tmp.dir, STORE_FILE);
  {
    // Back to what a version 3 server left: no times of the result files.
    const db = new DatabaseSync(file);
    db.exec(
      `ALTER TABLE outputs DROP COLUMN mtime_ms; ALTER TABLE outputs DROP COLUMN ctime_ms;
             PRAGMA user_version = 3`,
    );
    db.close();
  }
  using store = openStore(tmp.dir);
  assert.equal(store.schemaVersion(), STORE_SCHEMA_VERSION);
  const before = store.outputs(old);
  assert.ok(before.length > 0);
  for (const output of before) {
    assert.equal(output.mtimeMs, undefined, "an older result's times are unknown: it is hashed");
    assert.equal(output.ctimeMs, undefined);
  }
  const job = store.createReceiving(newJob());
  for (const input of store.inputs(job.id)) store.inputVerified(job.id, input.index, SHA_A);
  store.markQueued(job.id);
  store.markRunning(job.id);
  store.markSucceeded(job.id, {
    ...success(),
    outputs: [{ name: "a.dcm", size: 3, sha256: SHA_A, dev: 1, ino: 2, mtimeMs: 5, ctimeMs: 6 }],
  });
  assert.deepEqual(store.outputs(job.id), [
    { index: 0, name: "a.dcm", size: 3, sha256: SHA_A, dev: 1, ino: 2, mtimeMs: 5, ctimeMs: 6 },
  ]);
});

Deno.test("onChange reports each committed change after its commit, and a failing listener changes nothing", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  const seen: string[] = [];
  store.onChange(() => {
    throw new Error("listener bug");
  });
  const stop = store.onChange(({ job, from, what }) => {
    // Committed: a fresh read sees the same state.
    assert.equal(store.get(job.id)!.state, job.state);
    seen.push(`${from ?? "-"}>${job.state}:${what}`);
  });
  const job = jobIn(store, "succeeded");
  store.markDelivered(job.id);
  stop();
  store.markExpired(job.id);
  assert.equal(seen[0], "->receiving:state");
  assert.ok(seen.includes("receiving>queued:state"));
  assert.ok(seen.includes("queued>running:state"));
  assert.ok(seen.includes("running>succeeded:state"));
  assert.equal(seen.at(-1), "succeeded>succeeded:delivered");
  assert.equal(store.get(job.id)!.state, "expired");
});

// --- one server per store --------------------------------------------------------------

Deno.test("a second opener of the store is refused, in this process and in another", async () => {
  await using tmp = await stateDir();
  const first = JobStore.open(tmp.dir);
  try {
    refuses(
      () => JobStore.open(tmp.dir),
      new RegExp(
        `^the job store .*jobs\\.sqlite is in use by another recon-server \\(pid ${Deno.pid}\\)$`,
      ),
    );
    const other = denoEval(
      `
      const { JobStore } = await import(${JSON.stringify(JOB_STORE_MODULE)});
      try {
        JobStore.open(Deno.env.get("DIR"));
        console.log("opened");
      } catch (error) {
        console.log(error.name + ": " + error.message);
        console.log("hint: " + error.hint);
      }
      `,
      { DIR: tmp.dir },
    );
    await other.stdin.close();
    const output = await other.output();
    const text = new TextDecoder().decode(output.stdout);
    assert.match(
      text,
      new RegExp(
        `^StoreError: the job store .*jobs\\.sqlite is in use by another recon-server \\(pid ${Deno.pid}\\)\\n` +
          "hint: stop that server first, or give this one its own RECON_STATE_DIR in recon.opts\\n$",
      ),
    );
  } finally {
    first.close();
  }
  JobStore.open(tmp.dir).close();
});

Deno.test("a store held by another process is refused naming its pid, and free again once it is SIGKILLed", async () => {
  await using tmp = await stateDir();
  const child = holder(tmp.dir, 3, false);
  try {
    await readUntil(child, /ready/);
    refuses(
      () => JobStore.open(tmp.dir),
      new RegExp(`is in use by another recon-server \\(pid ${child.pid}\\)$`),
    );
  } finally {
    await stop(child); // SIGKILL: no close(), the lock dies with the process
  }
  using store = openStore(tmp.dir);
  assert.equal(store.inState("queued").length, 3, "what the killed process committed is there");
});

// --- transitions ---------------------------------------------------------------------

Deno.test("a job's whole life: receiving, queued, running, succeeded, delivered, expired", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  const spec = newJob({
    priority: "high",
    rerunOf: crypto.randomUUID(),
    deliverTo: ["PACS", "RESEARCH"],
  });
  const created = store.createReceiving(spec);
  assert.deepEqual(created, {
    seq: 1,
    id: spec.id,
    state: "receiving",
    priority: "high",
    client: "k1d",
    peer: "127.0.0.1:40000",
    keyId: "k1d",
    options: spec.options,
    submittedAt: T0,
    uploadExpiresAt: T0 + 3_600_000,
    attempts: 0,
    stderrTail: [],
    rerunOf: spec.rerunOf,
    inputDir: spec.inputDir,
    outputDir: spec.outputDir,
    logPath: spec.logPath,
    fileCount: 2,
    inputBytes: 1024,
    primaryFile: "P12345.7",
    inputsRemoved: false,
    resultsRemoved: false,
    executor: "local",
    deliverTo: ["PACS", "RESEARCH"],
  });
  assert.deepEqual(store.inputs(spec.id), [
    { index: 0, name: "P12345.7", size: 1000, originalPath: "/usr/g/mrraw/P12345.7" },
    { index: 1, name: "cal.dat", size: 24 },
  ]);
  store.inputVerified(spec.id, 0, SHA_A);
  refuses(
    () => store.markQueued(spec.id),
    /^job .* has 1 input\(s\) not verified yet; it cannot be queued$/,
  );
  store.inputVerified(spec.id, 1, SHA_B);
  assert.deepEqual(store.inputs(spec.id).map((input) => input.sha256), [SHA_A, SHA_B]);

  store.clock.advance(1000);
  const queued = store.markQueued(spec.id);
  assert.equal(queued.state, "queued");
  assert.equal(queued.queuedAt, T0 + 1000);

  store.clock.advance(1000);
  const running = store.markRunning(spec.id);
  assert.equal(running.state, "running");
  assert.equal(running.startedAt, T0 + 2000);
  assert.equal(running.attempts, 1);
  store.setExecutorRef(spec.id, "slurm:4711");

  store.clock.advance(1000);
  const succeeded = store.markSucceeded(spec.id, success(T0 + 99_000));
  assert.equal(succeeded.state, "succeeded");
  assert.equal(succeeded.finishedAt, T0 + 3000);
  assert.equal(succeeded.exitCode, 0);
  assert.deepEqual(succeeded.stderrTail, ["done"]);
  assert.equal(succeeded.resultCount, 2);
  assert.equal(succeeded.resultBytes, 1200);
  assert.equal(succeeded.skipped, 1);
  assert.equal(succeeded.resultsExpireAt, T0 + 99_000);
  assert.equal(succeeded.executorRef, "slurm:4711");
  assert.deepEqual(store.outputs(spec.id), [
    { index: 0, name: "img0001.dcm", size: 500, sha256: SHA_A, dev: 2049, ino: 77 },
    { index: 1, name: "img0002.dcm", size: 700, sha256: SHA_B },
  ]);
  store.setInputsRemoved(spec.id);

  store.clock.advance(1000);
  assert.equal(store.markDelivered(spec.id).deliveredAt, T0 + 4000);
  store.clock.advance(1000);
  assert.equal(store.markDelivered(spec.id).deliveredAt, T0 + 4000, "the first delivery stays");

  store.clock.advance(1000);
  const expired = store.markExpired(spec.id);
  assert.equal(expired.state, "expired");
  assert.equal(expired.expiredAt, T0 + 6000);
  assert.equal(expired.resultsRemoved, false, "set once the files are gone");
  store.setResultsRemoved(spec.id);
  const final = store.get(spec.id)!;
  assert.equal(final.resultsRemoved, true);
  assert.equal(final.inputsRemoved, true);
  assert.deepEqual(store.outputs(spec.id).length, 2, "the record of the results stays");
});

/** Every transition, the states it starts from, and how a refusal reads. */
const TRANSITIONS: {
  name: string;
  from: JobState[];
  refusal: string;
  apply: (store: JobStore, id: string) => unknown;
}[] = [
  {
    name: "inputVerified",
    from: ["receiving"],
    refusal: "its inputs cannot change",
    apply: (store, id) => store.inputVerified(id, 0, SHA_B),
  },
  {
    name: "markQueued",
    from: ["receiving"],
    refusal: "it cannot be queued",
    apply: (store, id) => store.markQueued(id),
  },
  {
    name: "markRunning",
    from: ["queued"],
    refusal: "it cannot start",
    apply: (store, id) => store.markRunning(id),
  },
  {
    name: "requeue",
    from: ["running"],
    refusal: "it cannot go back to the queue",
    apply: (store, id) => store.requeue(id, { refundAttempt: false }),
  },
  {
    name: "markSucceeded",
    from: ["running"],
    refusal: "it cannot succeed",
    apply: (store, id) => store.markSucceeded(id, success()),
  },
  {
    name: "markFailed",
    from: ["receiving", "queued", "running"],
    refusal: "it cannot fail",
    apply: (store, id) => store.markFailed(id, failure()),
  },
  {
    name: "markCancelled",
    from: ["receiving", "queued", "running"],
    refusal: "it cannot be cancelled",
    apply: (store, id) => store.markCancelled(id, { reason: "no longer needed", by: "me" }),
  },
  {
    name: "markDelivered",
    from: ["succeeded"],
    refusal: "it has no results to deliver",
    apply: (store, id) => store.markDelivered(id),
  },
  {
    name: "markExpired",
    from: ["succeeded"],
    refusal: "it cannot expire",
    apply: (store, id) => store.markExpired(id),
  },
  {
    name: "setInputsRemoved",
    from: ["succeeded", "failed", "cancelled", "expired"],
    refusal: "its inputs are still needed",
    apply: (store, id) => store.setInputsRemoved(id),
  },
  {
    name: "setResultsRemoved",
    from: ["succeeded", "failed", "cancelled", "expired"],
    refusal: "its output is still needed",
    apply: (store, id) => store.setResultsRemoved(id),
  },
  {
    name: "setExecutorRef",
    from: ["running"],
    refusal: "it has no executor",
    apply: (store, id) => store.setExecutorRef(id, "4711"),
  },
];

for (const transition of TRANSITIONS) {
  Deno.test(`${transition.name}() works from ${transition.from.join(", ")} only, and a refusal changes nothing`, async () => {
    await using tmp = await stateDir();
    using store = openStore(tmp.dir);
    for (const state of JOB_STATES) {
      const job = jobIn(store, state);
      if (transition.name === "markQueued" && state === "receiving") {
        for (const input of store.inputs(job.id)) store.inputVerified(job.id, input.index, SHA_A);
      }
      const before = { record: store.get(job.id), inputs: store.inputs(job.id) };
      if (transition.from.includes(state)) {
        transition.apply(store, job.id);
        continue;
      }
      refuses(
        () => transition.apply(store, job.id),
        new RegExp(`^job ${job.id} is ${state}; ${transition.refusal}$`),
      );
      assert.deepEqual({ record: store.get(job.id), inputs: store.inputs(job.id) }, before);
    }
    refuses(
      () => transition.apply(store, "0badc0de-0000-4000-8000-000000000000"),
      /^there is no job 0badc0de-0000-4000-8000-000000000000 in the job store$/,
    );
  });
}

Deno.test("markFailed() and markCancelled() record the outcome from each state before a final one", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  for (const state of ["receiving", "queued", "running"] as const) {
    const failed = store.markFailed(jobIn(store, state).id, failure(T0 + 5000));
    assert.equal(failed.state, "failed");
    assert.equal(failed.reason, "the script exited with status 3");
    assert.equal(failed.exitCode, 3);
    assert.deepEqual(failed.stderrTail, ["boom"]);
    assert.equal(failed.inputsExpireAt, T0 + 5000);
    assert.equal(failed.finishedAt, T0);
    const cancelled = store.markCancelled(jobIn(store, state).id, {
      reason: "wrong protocol",
      by: "127.0.0.1:5555 (key k1d)",
    });
    assert.equal(cancelled.state, "cancelled");
    assert.equal(cancelled.reason, "wrong protocol");
    assert.equal(cancelled.cancelledBy, "127.0.0.1:5555 (key k1d)");
  }
  // No exit code (the script never ran) and inputs not kept.
  const cut = store.markFailed(jobIn(store, "receiving").id, {
    reason: "the upload was not completed within UPLOAD_RESUME_WINDOW (3600 s)",
    exitCode: null,
    stderrTail: [],
  });
  assert.equal(cut.exitCode, undefined);
  assert.equal(cut.inputsExpireAt, undefined);
});

Deno.test("requeue() puts a running job back in its place, giving the attempt back only when asked", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  const first = jobIn(store, "running");
  const second = jobIn(store, "queued");
  assert.deepEqual(store.queued().map((job) => job.id), [second.id]);
  const crashed = store.requeue(first.id, { refundAttempt: false });
  assert.equal(crashed.state, "queued");
  assert.equal(crashed.attempts, 1);
  assert.equal(crashed.startedAt, undefined);
  assert.deepEqual(
    store.queued().map((job) => job.id),
    [first.id, second.id],
    "FIFO by submission",
  );
  assert.equal(store.markRunning(first.id).attempts, 2);
  const shutdown = store.requeue(first.id, { refundAttempt: true });
  assert.equal(shutdown.attempts, 1, "a clean shutdown does not use up an attempt");
});

Deno.test("createReceiving() refuses a duplicate id, no files and bad sizes; inputVerified() a bad SHA-256 or index", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  const job = store.createReceiving(newJob());
  refuses(
    () => store.createReceiving(newJob({ id: job.id })),
    /^job .* is already in the job store$/,
  );
  assert.throws(() => store.createReceiving(newJob({ files: [] })), TypeError);
  assert.throws(
    () => store.createReceiving(newJob({ files: [{ name: "a", size: -1 }] })),
    /the size of a must be a whole number of bytes, got -1/,
  );
  assert.throws(
    () => store.createReceiving(newJob({ priority: "urgent" as never })),
    /unknown priority "urgent"/,
  );
  assert.throws(() => store.inputVerified(job.id, 0, "ABC"), /64 lowercase hex digits/);
  refuses(() => store.inputVerified(job.id, 2, SHA_A), /^job .* has no input number 2$/);
  assert.equal(store.list({ limit: 10 }).length, 1, "nothing else was recorded");
});

Deno.test("takeInputs() moves a failed job's kept inputs to its rerun, which can be queued at once", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  const old = jobIn(store, "queued");
  store.markRunning(old.id);
  store.markFailed(old.id, failure(T0 + 3 * 86_400_000));
  const rerun = store.createReceiving(
    newJob({ rerunOf: old.id, files: [{ name: "placeholder", size: 1 }] }),
  );
  store.takeInputs(old.id, rerun.id);
  assert.deepEqual(
    store.inputs(rerun.id),
    store.inputs(old.id),
    "names, sizes, original paths and SHA-256 move",
  );
  const moved = store.get(rerun.id)!;
  assert.equal(moved.fileCount, 2);
  assert.equal(moved.inputBytes, 1024);
  assert.equal(moved.primaryFile, "P12345.7");
  assert.equal(moved.rerunOf, old.id);
  assert.equal(store.get(old.id)!.inputsRemoved, true);
  assert.equal(store.markQueued(rerun.id).state, "queued");
  assert.deepEqual(store.due(T0 + 4 * 86_400_000).failedInputs, [], "nothing left to expire");

  const again = store.createReceiving(newJob());
  refuses(
    () => store.takeInputs(old.id, again.id),
    /^job .* no longer has its inputs; it cannot be rerun$/,
  );
  const succeeded = jobIn(store, "succeeded");
  refuses(
    () => store.takeInputs(succeeded.id, again.id),
    /^job .* is succeeded; only a failed job can be rerun$/,
  );
  const other = store.markFailed(jobIn(store, "running").id, failure(T0 + 1000));
  refuses(
    () => store.takeInputs(other.id, rerun.id),
    /^job .* is queued; it cannot take other inputs$/,
  );
  assert.throws(() => store.takeInputs(other.id, other.id), TypeError);
});

// --- queries --------------------------------------------------------------------------

Deno.test("queued() orders high, normal, low, each in submission order; counts() by priority", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  const order = ["low", "normal", "high", "normal", "low", "high", "high"] as const;
  const jobs = order.map((priority) => jobIn(store, "queued", { priority }));
  jobIn(store, "running", { priority: "high" });
  jobIn(store, "receiving", { priority: "high" });
  const expected = [2, 5, 6, 1, 3, 0, 4].map((i) => jobs[i].id);
  assert.deepEqual(store.queued().map((job) => job.id), expected);
  assert.deepEqual(store.counts().queuedByPriority, { high: 3, normal: 2, low: 2 });
  // The next job to start is always the head of queued().
  store.markRunning(expected[0]);
  assert.equal(store.queued()[0].id, expected[1]);
});

Deno.test("list() pages in submission order by afterSeq and limit, with and without a state", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  const states: JobState[] = [
    "queued",
    "failed",
    "queued",
    "succeeded",
    "queued",
    "queued",
    "running",
  ];
  const jobs = states.map((state) => jobIn(store, state));
  const pages: string[][] = [];
  let afterSeq: number | undefined;
  for (;;) {
    const page = store.list({ afterSeq, limit: 3 });
    if (page.length === 0) break;
    pages.push(page.map((job) => job.id));
    afterSeq = page.at(-1)!.seq;
  }
  assert.deepEqual(
    pages,
    [jobs.slice(0, 3), jobs.slice(3, 6), jobs.slice(6)].map((p) => p.map((j) => j.id)),
  );
  const queued = jobs.filter((_, i) => states[i] === "queued").map((job) => job.id);
  const first = store.list({ state: "queued", limit: 2 });
  assert.deepEqual(first.map((job) => job.id), queued.slice(0, 2));
  const rest = store.list({ state: "queued", afterSeq: first[1].seq, limit: 500 });
  assert.deepEqual(rest.map((job) => job.id), queued.slice(2));
  assert.deepEqual(store.list({ state: "expired", limit: 5 }), []);
  assert.deepEqual(store.inState("queued").map((job) => job.id), queued);
  assert.throws(() => store.list({ limit: 0 }), TypeError);
});

Deno.test("due() finds expired upload windows, kept inputs and results, each at its time and until removed", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  const hour = 3_600_000;
  const upload = store.createReceiving(newJob({ uploadExpiresAt: T0 + hour }));
  const failedKept = store.markFailed(jobIn(store, "running").id, failure(T0 + 2 * hour));
  store.markFailed(jobIn(store, "queued").id, failure()); // inputs not kept: never due
  const done = jobIn(store, "running");
  store.markSucceeded(done.id, success(T0 + 3 * hour));
  jobIn(store, "queued");
  const ids = (due: ReturnType<JobStore["due"]>) => ({
    uploads: due.uploads.map((job) => job.id),
    failedInputs: due.failedInputs.map((job) => job.id),
    results: due.results.map((job) => job.id),
  });
  assert.deepEqual(ids(store.due(T0 + hour - 1)), { uploads: [], failedInputs: [], results: [] });
  assert.deepEqual(ids(store.due(T0 + hour)), {
    uploads: [upload.id],
    failedInputs: [],
    results: [],
  });
  assert.deepEqual(ids(store.due(T0 + 3 * hour)), {
    uploads: [upload.id],
    failedInputs: [failedKept.id],
    results: [done.id],
  });
  // What the sweeper does: each state change first, then the files, then the flag.
  store.markFailed(upload.id, {
    reason: "the upload was not completed",
    exitCode: null,
    stderrTail: [],
  });
  store.setInputsRemoved(upload.id);
  store.setInputsRemoved(failedKept.id);
  store.markExpired(done.id);
  assert.deepEqual(ids(store.due(T0 + 3 * hour)).results, [done.id], "expired, files not yet gone");
  store.setResultsRemoved(done.id);
  assert.deepEqual(ids(store.due(T0 + 100 * hour)), { uploads: [], failedInputs: [], results: [] });
  assert.equal(
    store.get(failedKept.id)!.state,
    "failed",
    "a failed job whose inputs expired stays failed",
  );
});

Deno.test("counts() and keptBytes() follow the states and what is still on disk", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  assert.deepEqual(store.counts(), {
    byState: {
      receiving: 0,
      queued: 0,
      running: 0,
      succeeded: 0,
      failed: 0,
      cancelled: 0,
      expired: 0,
    },
    queuedByPriority: { high: 0, normal: 0, low: 0 },
  });
  assert.deepEqual(store.keptBytes(), { inputs: 0, results: 0 });
  jobIn(store, "receiving"); // partial inputs: the caller counts them
  jobIn(store, "queued");
  jobIn(store, "running");
  const succeeded = jobIn(store, "succeeded");
  const failed = store.markFailed(jobIn(store, "queued").id, failure(T0 + 1));
  jobIn(store, "cancelled", { priority: "low" });
  jobIn(store, "expired");
  assert.deepEqual(store.counts().byState, {
    receiving: 1,
    queued: 1,
    running: 1,
    succeeded: 1,
    failed: 1,
    cancelled: 1,
    expired: 1,
  });
  // 1024 input bytes for each job past receiving whose inputs are still there (6),
  // 1200 result bytes for the succeeded and the expired job.
  assert.deepEqual(store.keptBytes(), { inputs: 6 * 1024, results: 2 * 1200 });
  store.setInputsRemoved(succeeded.id);
  store.setInputsRemoved(failed.id);
  store.setResultsRemoved(succeeded.id);
  assert.deepEqual(store.keptBytes(), { inputs: 4 * 1024, results: 1200 });
});

Deno.test("toJobInfo() gives the protocol's JobInfo with UTC times, which job_status accepts", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  const queued = jobIn(store, "queued", { priority: "low" });
  assert.deepEqual(toJobInfo(queued, 3), {
    job_id: queued.id,
    state: "queued",
    priority: "low",
    queue_position: 3,
    submitted_at: "2026-12-01T09:00:00.000Z",
    file_count: 2,
    input_bytes: 1024,
    primary_file: "P12345.7",
    attempts: 0,
    client: "k1d",
  });
  const rerun = store.createReceiving(newJob({ rerunOf: queued.id }));
  const job = store.get(rerun.id)!;
  store.clock.advance(90_000);
  const done = jobIn(store, "succeeded");
  store.markDelivered(done.id);
  const info = toJobInfo(store.get(done.id)!, undefined, 100);
  assert.deepEqual(info, {
    job_id: done.id,
    state: "succeeded",
    priority: "normal",
    submitted_at: "2026-12-01T09:01:30.000Z",
    started_at: "2026-12-01T09:01:30.000Z",
    finished_at: "2026-12-01T09:01:30.000Z",
    file_count: 2,
    input_bytes: 1024,
    primary_file: "P12345.7",
    attempts: 1,
    exit_code: 0,
    result_count: 2,
    result_bytes: 1200,
    delivered_at: "2026-12-01T09:01:30.000Z",
    results_expire_at: "2026-12-08T09:00:00.000Z",
    percent: 100,
    client: "k1d",
  });
  const cancelled = toJobInfo(store.markCancelled(job.id, { reason: "typo", by: "10.0.0.7:4000" }));
  assert.equal(cancelled.rerun_of, queued.id);
  assert.equal(cancelled.cancelled_by, "10.0.0.7:4000");
  assert.equal(cancelled.reason, "typo");
  for (const sent of [info, cancelled, toJobInfo(queued, 3)]) {
    const message = JSON.parse(JSON.stringify({ type: "job_status", job: sent }));
    assert.deepEqual(parseServerMessage(message), message);
  }
});

// --- durability and backups -----------------------------------------------------------

Deno.test("a store reopened after close() holds every job, input and output as committed", async () => {
  await using tmp = await stateDir();
  const snapshot = (store: JobStore) =>
    store.list({ limit: 500 }).map((job) => ({
      job,
      inputs: store.inputs(job.id),
      outputs: store.outputs(job.id),
    }));
  let before;
  {
    using store = openStore(tmp.dir);
    for (const state of JOB_STATES) jobIn(store, state, { priority: "high" });
    store.markDelivered(jobIn(store, "succeeded").id);
    before = snapshot(store);
  }
  using store = openStore(tmp.dir);
  assert.deepEqual(snapshot(store), before);
  const next = store.createReceiving(newJob());
  assert.equal(next.seq, before.length + 1, "seq keeps counting");
});

Deno.test("applyRetention() re-times finished jobs by the retentions of this start, shorter or longer, and leaves the rest", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  const succeeded = jobIn(store, "succeeded"); // finished at T0, results until T0 + 7 d
  const failed = store.markFailed(jobIn(store, "running").id, failure(T0 + 3 * 86_400_000));
  const removed = jobIn(store, "succeeded");
  store.markExpired(removed.id);
  store.setResultsRemoved(removed.id);
  const queued = jobIn(store, "queued");
  assert.equal(store.applyRetention({ resultsMs: 5_000, failedInputsMs: 86_400_000 }), 2);
  assert.equal(store.get(succeeded.id)!.resultsExpireAt, T0 + 5_000);
  assert.equal(store.get(failed.id)!.inputsExpireAt, T0 + 86_400_000);
  assert.equal(store.get(removed.id)!.resultsExpireAt, T0 + 7 * 86_400_000, "expired: untouched");
  assert.equal(store.get(queued.id)!.resultsExpireAt, undefined);
  // Due now for the sweeper; applying the same retentions again changes nothing.
  assert.deepEqual(store.due(T0 + 5_000).results.map((job) => job.id), [succeeded.id]);
  assert.equal(store.applyRetention({ resultsMs: 5_000, failedInputsMs: 86_400_000 }), 0);
  assert.equal(store.applyRetention({ resultsMs: 30 * 86_400_000, failedInputsMs: 86_400_000 }), 1);
  assert.equal(store.get(succeeded.id)!.resultsExpireAt, T0 + 30 * 86_400_000);
});

Deno.test("backup() copies the open store to a new 0600 file that opens as a store, and refuses to overwrite", async () => {
  await using tmp = await stateDir();
  using store = openStore(tmp.dir);
  for (const state of JOB_STATES) jobIn(store, state);
  const copyDir = path.join(path.dirname(tmp.dir), "restored");
  await Deno.mkdir(copyDir, { mode: 0o700 });
  const copy = path.join(copyDir, STORE_FILE);
  await store.backup(copy);
  assert.equal((await Deno.stat(copy)).mode! & 0o777, 0o600);
  assert.deepEqual(
    (await Array.fromAsync(Deno.readDir(copyDir))).map((entry) => entry.name),
    [STORE_FILE],
    "one self-contained file (no -wal beside it)",
  );
  await assert.rejects(() => store.backup(copy), (error: unknown) => {
    assert.ok(error instanceof StoreError);
    assert.equal(error.message, `${copy} already exists; refusing to overwrite it`);
    return true;
  });
  using restored = openStore(copyDir);
  assert.deepEqual(restored.list({ limit: 500 }), store.list({ limit: 500 }));
  assert.deepEqual(restored.counts(), store.counts());
});

Deno.test("backupJobStore() copies a store another process writes without pause, consistently", async () => {
  await using tmp = await stateDir();
  const writer = holder(tmp.dir, 200, true);
  const copyDir = path.join(path.dirname(tmp.dir), "copy");
  await Deno.mkdir(copyDir, { mode: 0o700 });
  const file = path.join(copyDir, STORE_FILE);
  let report;
  try {
    await readUntil(writer, /ready/);
    await new Promise((resolve) => setTimeout(resolve, 200)); // let it commit more
    report = await backupJobStore(tmp.dir, file);
    // The writer still runs: the backup neither stopped nor locked it out.
    assert.equal(await Promise.race([writer.status, Promise.resolve("running")]), "running");
  } finally {
    await stop(writer);
  }
  assert.equal(report.file, file);
  assert.equal(report.schemaVersion, STORE_SCHEMA_VERSION);
  assert.ok(report.jobs >= 200, `${report.jobs} jobs`);
  using copy = openStore(copyDir);
  const jobs = copy.list({ limit: 500_000 });
  assert.equal(jobs.length, report.jobs);
  // One snapshot of committed states: every job but the last is whole (its input
  // verified) and queued; the writer's last job may be between two of its own commits.
  for (const job of jobs.slice(0, -1)) {
    assert.equal(job.state, "queued");
    assert.deepEqual(copy.inputs(job.id).map((input) => input.sha256), ["c".repeat(64)]);
  }
  const last = jobs.at(-1)!;
  assert.ok(["receiving", "queued", "running"].includes(last.state), last.state);
  const lastInputs = copy.inputs(last.id).map((input) => input.sha256);
  assert.ok(last.state === "receiving" || lastInputs[0] === "c".repeat(64), last.state);
  assert.deepEqual(jobs.map((job) => job.seq), jobs.map((_, i) => i + 1));
});

Deno.test("backupJobStore() refuses a missing store and an existing target, and leaves no partial copy", async () => {
  await using tmp = await stateDir();
  const target = path.join(path.dirname(tmp.dir), "backup.sqlite");
  await assert.rejects(() => backupJobStore(tmp.dir, target), (error: unknown) => {
    assert.ok(error instanceof StoreError);
    assert.match(error.message, /^there is no job store at .*jobs\.sqlite; nothing to back up$/);
    return true;
  });
  await assert.rejects(() => Deno.lstat(target), Deno.errors.NotFound);
  JobStore.open(tmp.dir).close();
  await Deno.writeTextFile(target, "keep me");
  await assert.rejects(
    () => backupJobStore(tmp.dir, target),
    /already exists; refusing to overwrite it/,
  );
  assert.equal(await Deno.readTextFile(target), "keep me");
  const nowhere = path.join(path.dirname(tmp.dir), "no", "such", "dir");
  await assert.rejects(
    () => backupJobStore(tmp.dir, path.join(nowhere, "b.sqlite")),
    (error: unknown) => {
      assert.ok(error instanceof StoreError);
      assert.equal(
        error.message,
        `cannot create ${nowhere}/b.sqlite: the directory ${nowhere} does not exist`,
      );
      return true;
    },
  );
});
