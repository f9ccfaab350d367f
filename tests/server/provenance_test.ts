/**
 * Tests for lib/server/provenance.ts: the document built from the job store's record
 * (members in order, `rerun_of` only for a rerun, a record that cannot trace its images
 * refused), the script's SHA-256, and writing `provenance.json` into the output
 * directory: a script's own file of that name (even a link or a directory) renamed out
 * of the way, never followed, and nothing written when the output directory was
 * replaced by a link. How the worker uses it is in worker_test.ts.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as path from "node:path";
import { JobError } from "../../lib/errors.ts";
import type { InputRecord, JobRecord } from "../../lib/server/job_store.ts";
import {
  buildProvenance,
  hashScript,
  type Provenance,
  PROVENANCE_FILE,
  provenanceText,
  SCRIPT_PROVENANCE_FILE,
  writeProvenance,
} from "../../lib/server/provenance.ts";
import { directoryIdentity } from "../../lib/server/results.ts";

const ID = "0b7f0f2e-3c1a-4b5e-9d2f-6a7b8c9d0e1f";
const EARLIER = "5d0c7e8f-1a2b-4c3d-8e9f-0a1b2c3d4e5f";
const SHA_A = "a".repeat(64);
const SHA_B = "b".repeat(64);
const SHA_SCRIPT = "c".repeat(64);

function record(extra: Partial<JobRecord> = {}): JobRecord {
  return {
    seq: 7,
    id: ID,
    state: "running",
    priority: "high",
    client: "mr1",
    peer: "10.0.0.5:40000",
    keyId: "3f2a9c0d11e2b4a5",
    options: { slices: 128, name: "t1" },
    submittedAt: Date.parse("2026-12-01T10:00:00.000Z"),
    queuedAt: Date.parse("2026-12-01T10:00:02.000Z"),
    startedAt: Date.parse("2026-12-01T10:00:03.250Z"),
    attempts: 2,
    stderrTail: [],
    inputDir: `/recon/job_${ID}_input`,
    outputDir: `/dicom/job_${ID}_output`,
    logPath: `/recon/job_${ID}.log`,
    fileCount: 2,
    inputBytes: 30,
    primaryFile: "P00001.7",
    inputsRemoved: false,
    resultsRemoved: false,
    executor: "local",
    deliverTo: [],
    ...extra,
  };
}

const INPUTS: InputRecord[] = [
  { index: 0, name: "P00001.7", size: 20, originalPath: "/scans/P00001.7", sha256: SHA_A },
  { index: 1, name: "cal/coil.dat", size: 10, sha256: SHA_B },
];

function build(job = record(), inputs = INPUTS): Provenance {
  return buildProvenance({
    job,
    inputs,
    script: { path: "/opt/recon/recon.sh", sha256: SHA_SCRIPT },
    server: { version: "1.2.3", host: "recon1" },
    finishedAt: Date.parse("2026-12-01T10:05:00.500Z"),
  });
}

Deno.test("buildProvenance() names the job, its inputs with their SHA-256, the script and the server, members in order", () => {
  const provenance = build();
  assert.deepEqual(provenance, {
    recon_provenance: 1,
    job_id: ID,
    client: "mr1",
    submitted_at: "2026-12-01T10:00:00.000Z",
    started_at: "2026-12-01T10:00:03.250Z",
    finished_at: "2026-12-01T10:05:00.500Z",
    attempts: 2,
    exit_code: 0,
    priority: "high",
    options: { slices: 128, name: "t1" },
    inputs: [
      { name: "P00001.7", size: 20, sha256: SHA_A },
      { name: "cal/coil.dat", size: 10, sha256: SHA_B },
    ],
    script: { path: "/opt/recon/recon.sh", sha256: SHA_SCRIPT },
    server: { version: "1.2.3", host: "recon1" },
  });
  assert.deepEqual(Object.keys(provenance), [
    "recon_provenance",
    "job_id",
    "client",
    "submitted_at",
    "started_at",
    "finished_at",
    "attempts",
    "exit_code",
    "priority",
    "options",
    "inputs",
    "script",
    "server",
  ]);
  assert.ok(!("rerun_of" in provenance), "only a rerun names the job it reran");
  const text = provenanceText(provenance);
  assert.ok(text.endsWith("}\n"));
  assert.deepEqual(JSON.parse(text), provenance);
  assert.ok(!text.includes("/scans/"), "the client's own paths are not the server's to publish");
  assert.ok(!text.includes("10.0.0.5"), "nor the peer's address or the key id");
  assert.ok(!text.includes("3f2a9c0d11e2b4a5"));
});

Deno.test("buildProvenance() of a rerun names the failed job it ran again, last", () => {
  const provenance = build(record({ rerunOf: EARLIER }));
  assert.equal(provenance.rerun_of, EARLIER);
  assert.equal(Object.keys(provenance).at(-1), "rerun_of");
});

Deno.test("buildProvenance() refuses a record that cannot trace its images: an input not verified, no start time", () => {
  assert.throws(
    () => build(record(), [INPUTS[0], { index: 1, name: "cal/coil.dat", size: 10 }]),
    (error: Error) =>
      error instanceof TypeError &&
      error.message === `input "cal/coil.dat" of job ${ID} is not verified`,
  );
  assert.throws(
    () => build(record({ startedAt: undefined })),
    (error: Error) => error instanceof TypeError && error.message === `job ${ID} has no start time`,
  );
});

/** An output directory as the worker creates it, removed on dispose. */
async function outputDir() {
  const root = await Deno.makeTempDir({ prefix: "recon-provenance-" });
  const dir = path.join(root, `job_${ID}_output`);
  await Deno.mkdir(dir, { mode: 0o750 });
  return {
    root,
    dir,
    identity: await directoryIdentity(dir),
    [Symbol.asyncDispose]: () => Deno.remove(root, { recursive: true }),
  };
}

async function names(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((entry) => entry.name).sort();
}

Deno.test("hashScript() is the SHA-256 of the script's bytes, also past one read's chunk", async () => {
  await using out = await outputDir();
  const file = path.join(out.root, "recon.sh");
  const bytes = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => (i * 7) & 0xff);
  await Deno.writeFile(file, bytes);
  assert.equal(await hashScript(file), createHash("sha256").update(bytes).digest("hex"));
  await Deno.writeFile(file, new Uint8Array(0));
  assert.equal(await hashScript(file), createHash("sha256").digest("hex"), "an empty script");
  await assert.rejects(hashScript(path.join(out.root, "missing.sh")), Deno.errors.NotFound);
});

Deno.test("writeProvenance() writes provenance.json at the top of the output directory, mode 0644 at most", async () => {
  await using out = await outputDir();
  await Deno.writeTextFile(path.join(out.dir, "image.dcm"), "DICM");
  const provenance = build();
  assert.equal(await writeProvenance(out.dir, out.identity, provenance), undefined);
  assert.deepEqual(await names(out.dir), ["image.dcm", PROVENANCE_FILE]);
  const file = path.join(out.dir, PROVENANCE_FILE);
  assert.equal(await Deno.readTextFile(file), provenanceText(provenance));
  const mode = (await Deno.lstat(file)).mode! & 0o777;
  assert.equal(mode & ~0o644, 0, `mode ${mode.toString(8)}`);
});

Deno.test("writeProvenance() keeps a script's own provenance.json as provenance.script.json, numbered when that is taken", async () => {
  await using out = await outputDir();
  await Deno.writeTextFile(path.join(out.dir, PROVENANCE_FILE), "the script's first");
  assert.equal(await writeProvenance(out.dir, out.identity, build()), SCRIPT_PROVENANCE_FILE);
  assert.equal(
    await Deno.readTextFile(path.join(out.dir, SCRIPT_PROVENANCE_FILE)),
    "the script's first",
  );
  // A second script's file, with the first rename's name and the next one's taken.
  await Deno.writeTextFile(path.join(out.dir, PROVENANCE_FILE), "the script's second");
  await Deno.writeTextFile(path.join(out.dir, "provenance.script.1.json"), "taken");
  assert.equal(await writeProvenance(out.dir, out.identity, build()), "provenance.script.2.json");
  assert.deepEqual(await names(out.dir), [
    PROVENANCE_FILE,
    "provenance.script.1.json",
    "provenance.script.2.json",
    SCRIPT_PROVENANCE_FILE,
  ]);
  assert.equal(
    await Deno.readTextFile(path.join(out.dir, "provenance.script.2.json")),
    "the script's second",
  );
  assert.equal(await Deno.readTextFile(path.join(out.dir, "provenance.script.1.json")), "taken");
  assert.deepEqual(
    JSON.parse(await Deno.readTextFile(path.join(out.dir, PROVENANCE_FILE))),
    build(),
  );
});

Deno.test("writeProvenance() moves a link or a directory the script put at the name, never writing through it", async () => {
  await using out = await outputDir();
  const elsewhere = path.join(out.root, "elsewhere.json");
  await Deno.writeTextFile(elsewhere, "not the job's");
  await Deno.symlink(elsewhere, path.join(out.dir, PROVENANCE_FILE));
  // A dangling link at the first rename's name is taken too.
  await Deno.symlink(path.join(out.root, "nowhere"), path.join(out.dir, SCRIPT_PROVENANCE_FILE));
  assert.equal(await writeProvenance(out.dir, out.identity, build()), "provenance.script.1.json");
  assert.equal(await Deno.readTextFile(elsewhere), "not the job's", "the link's target untouched");
  assert.ok((await Deno.lstat(path.join(out.dir, "provenance.script.1.json"))).isSymlink);
  assert.ok((await Deno.lstat(path.join(out.dir, PROVENANCE_FILE))).isFile);

  await using second = await outputDir();
  await Deno.mkdir(path.join(second.dir, PROVENANCE_FILE));
  await Deno.writeTextFile(path.join(second.dir, PROVENANCE_FILE, "inner.txt"), "x");
  assert.equal(await writeProvenance(second.dir, second.identity, build()), SCRIPT_PROVENANCE_FILE);
  assert.deepEqual(await names(path.join(second.dir, SCRIPT_PROVENANCE_FILE)), ["inner.txt"]);
  assert.ok((await Deno.lstat(path.join(second.dir, PROVENANCE_FILE))).isFile);
});

Deno.test("writeProvenance() writes nothing when the output directory was replaced by a link", async () => {
  await using out = await outputDir();
  const target = path.join(out.root, "etc");
  await Deno.mkdir(target);
  await Deno.writeTextFile(path.join(target, PROVENANCE_FILE), "someone else's");
  await Deno.remove(out.dir);
  await Deno.symlink(target, out.dir);
  await assert.rejects(
    writeProvenance(out.dir, out.identity, build()),
    (error: Error) =>
      error instanceof JobError &&
      /^RECON_OUTPUT_DIR is not the directory the server created \(it is now a symbolic link to/
        .test(error.message),
  );
  assert.deepEqual(await names(target), [PROVENANCE_FILE]);
  assert.equal(await Deno.readTextFile(path.join(target, PROVENANCE_FILE)), "someone else's");
});
