/**
 * End to end, EXECUTOR = slurm (issue 15; docs/DEPLOY.md §10): real `bin/recon-server`
 * and `bin/recon-client` processes, and a real one-node Slurm cluster on this machine
 * (scripts/slurm-local, through tests/support/slurm.ts), so the compute node sees the
 * server's directories at the same paths:
 *
 * - a job runs as Slurm job `recon-<job id>` (RUNNING in `scontrol` while it runs, its
 *   priority as `--nice`, the partition of SLURM_SBATCH_ARGS) with correct results, its
 *   output streamed to the job log and its Slurm job id in `jobs` and `--view-queue`;
 * - a failing script's exit code and stderr tail; recon's own JOB_TIMEOUT (the Slurm job
 *   is cancelled, `--time` a whole minute past it); Slurm's TIMEOUT (`--time=1` in
 *   SLURM_SBATCH_ARGS and no JOB_TIMEOUT) with its own reason;
 * - `recon-client cancel` reaches `scancel`;
 * - a server SIGKILLed while its Slurm jobs run (one finishes while it is down, one
 *   after its restart) delivers each job's results once, from the one Slurm job submitted;
 * - Slurm stopped: a job waits in the queue and `--server-status` says why; Slurm back:
 *   it runs (on a cluster of its own, so the suite's shared one stays up);
 * - a partition that does not exist keeps the server from starting, in one line.
 *
 * The suite's cluster is shared by every test file running in parallel: tests here only
 * add jobs to it; the one that stops Slurm starts a private cluster for that.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import {
  E2EServer,
  keygen,
  listDir,
  run,
  type RunResult,
  SERVER_BIN,
  sha256File,
  tempDir,
  testdata,
  UUID,
  waitFor,
  writeRandomFile,
} from "./support/e2e.ts";
import { jobInfo, type ListedJob, listJobs, processAlive } from "./support/durable.ts";
import { ensureSlurm, LocalSlurm } from "./support/slurm.ts";

const QUEUED = new RegExp(`job (${UUID.source}) queued`);
const MIB = 1024 * 1024;

/**
 * The RECON_SCRIPT of these tests. Each run appends `<job id> <SLURM_JOB_ID> <pid>` to
 * `starts.log` beside the script, prints a line on stdout, one on stderr and
 * `PROGRESS 50`, then:
 *   --fail CODE       exits CODE ("failing on purpose with CODE" on stderr)
 *   --wait_for FILE   waits (at most 60 s) until FILE exists
 *   --sleep SECONDS   sleeps
 * and writes `sums.txt` (`<sha256>  <name>` per input, in name order) and
 * `slurm_job_id.txt` (its SLURM_JOB_ID) as its results.
 */
const SLURM_RECON_SCRIPT = `#!/bin/sh
set -eu
indir=$1
shift
out=\${RECON_OUTPUT_DIR:?RECON_OUTPUT_DIR is not set}
here=$(dirname "$0")
wait_for=
sleep_s=
fail=
while [ "$#" -ge 2 ]; do
	case $1 in
	--wait_for) wait_for=$2 ;;
	--sleep) sleep_s=$2 ;;
	--fail) fail=$2 ;;
	esac
	shift 2
done
printf '%s %s %s\\n' "$RECON_JOB_ID" "\${SLURM_JOB_ID:-none}" "$$" >>"$here/starts.log"
echo "slurm script started job $RECON_JOB_ID as Slurm job \${SLURM_JOB_ID:-none}"
echo "a line on stderr" >&2
echo "PROGRESS 50"
if [ -n "$fail" ]; then
	echo "failing on purpose with $fail" >&2
	exit "$fail"
fi
if [ -n "$wait_for" ]; then
	i=0
	while [ ! -e "$wait_for" ]; do
		i=$((i + 1))
		if [ "$i" -gt 1200 ]; then
			echo "slurm script: gave up waiting for $wait_for" >&2
			exit 9
		fi
		sleep 0.05
	done
fi
[ -z "$sleep_s" ] || sleep "$sleep_s"
for f in "$indir"/*; do
	[ -f "$f" ] || continue
	printf '%s  %s\\n' "$(sha256sum <"$f" | cut -d ' ' -f 1)" "\${f##*/}" >>"$out/sums.txt"
done
printf '%s\\n' "\${SLURM_JOB_ID:-none}" >"$out/slurm_job_id.txt"
echo "slurm script finished job $RECON_JOB_ID"
`;

/** One run of the script: its recon job id, the Slurm job id it saw, its shell's pid. */
interface Start {
  jobId: string;
  slurmJobId: string;
  pid: number;
}

/** Write the script into `dir` (as `recon.sh`); returns its path. */
async function writeSlurmScript(dir: string): Promise<string> {
  const file = path.join(dir, "recon.sh");
  await Deno.writeTextFile(file, SLURM_RECON_SCRIPT, { mode: 0o755 });
  return file;
}

/** The script's runs so far, in order. */
async function starts(dir: string): Promise<Start[]> {
  const text = await Deno.readTextFile(path.join(dir, "starts.log")).catch((error) => {
    if (error instanceof Deno.errors.NotFound) return "";
    throw error;
  });
  return text.split("\n").filter(Boolean).map((line) => {
    const [jobId, slurmJobId, pid] = line.split(" ");
    return { jobId, slurmJobId, pid: Number(pid) };
  });
}

/** A recon-server with EXECUTOR = slurm on the cluster of `env`, polling every 0.2 s. */
function slurmServer(
  script: string,
  env: Record<string, string>,
  options: Record<string, string | number> = {},
): Promise<E2EServer> {
  return E2EServer.start({
    script,
    options: { EXECUTOR: "slurm", SLURM_POLL_INTERVAL: "0.2s", ...options },
    env,
  });
}

/** Run a Slurm command against the cluster of `env`. */
function slurm(env: Record<string, string>, program: string, args: string[]): Promise<RunResult> {
  return run(program, args, { env, timeoutMs: 60_000 });
}

/**
 * `scontrol show job -o ID` as its KEY=VALUE fields, or undefined once Slurm no longer
 * knows the job.
 */
async function slurmJob(
  env: Record<string, string>,
  slurmId: string,
): Promise<Record<string, string> | undefined> {
  const result = await slurm(env, "scontrol", ["show", "job", "-o", slurmId]);
  if (result.code !== 0 && /Invalid job id/i.test(result.stderr)) return undefined;
  assert.equal(result.code, 0, `scontrol show job ${slurmId}: ${result.stderr}`);
  const fields: Record<string, string> = {};
  for (const match of result.stdout.trim().matchAll(/(\S+?)=(\S*)/g)) {
    fields[match[1]] ??= match[2];
  }
  return fields;
}

/** Ids of the Slurm jobs named `name` that Slurm knows, finished ones included. */
async function slurmJobsNamed(env: Record<string, string>, name: string): Promise<string[]> {
  const result = await slurm(env, "squeue", ["-h", "-t", "all", "-n", name, "-o", "%i"]);
  assert.equal(result.code, 0, `squeue -n ${name}: ${result.stderr}`);
  return result.stdout.split("\n").filter(Boolean).sort();
}

/** Whether `squeue` (pending, running, completing jobs) still lists Slurm job `slurmId`. */
async function inSqueue(env: Record<string, string>, slurmId: string): Promise<boolean> {
  const result = await slurm(env, "squeue", ["-h", "-j", slurmId, "-o", "%i %T"]);
  // squeue -j of a job Slurm no longer knows fails ("Invalid job id specified").
  if (result.code !== 0 && /Invalid job id/i.test(result.stderr)) return false;
  assert.equal(result.code, 0, `squeue -j ${slurmId}: ${result.stderr}`);
  return result.stdout.trim() !== "";
}

/** Wait until job `id` runs on Slurm (its Slurm job id recorded); returns the job. */
function waitForSlurmRun(server: E2EServer, id: string, timeoutMs = 30_000): Promise<ListedJob> {
  return waitFor(`job ${id} to run on Slurm`, async () => {
    const job = (await listJobs(server)).find((entry) => entry.job_id === id);
    return job?.state === "running" && job.executor_ref !== undefined ? job : undefined;
  }, { timeoutMs, intervalMs: 100 });
}

/** The `sums.txt` a job of the script writes for these inputs (name → SHA-256). */
function sums(inputs: Record<string, string>): string {
  return Object.keys(inputs).sort().map((name) => `${inputs[name]}  ${name}\n`).join("");
}

/**
 * The Slurm jobs of a test's recon jobs, cancelled by name (`recon-<job id>`) when the
 * test ends, so that a test that failed halfway leaves no job running on the shared
 * cluster. Cancelling a job that has ended is a no-op.
 */
class SlurmJobs implements AsyncDisposable {
  readonly #ids = new Set<string>();
  constructor(readonly env: Record<string, string>) {}

  /** Track recon job `id`; returns it. */
  track(id: string): string {
    this.#ids.add(id);
    return id;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const id of this.#ids) {
      await run("scancel", ["--name", `recon-${id}`], { env: this.env, timeoutMs: 30_000 });
    }
  }
}

/** Cells of a table line (columns two or more spaces apart). */
function cells(line: string): string[] {
  return line.split(/ {2,}/);
}

Deno.test("a job runs through Slurm as recon-<id>, RUNNING in scontrol while it runs, with correct results", async () => {
  const cluster = await ensureSlurm();
  await using files = await tempDir();
  const script = await writeSlurmScript(files.path);
  await using server = await slurmServer(script, cluster.env, {
    SLURM_SBATCH_ARGS: "--partition=gpu",
  });
  await using slurmJobs = new SlurmJobs(cluster.env);
  const inputs: Record<string, string> = {
    "P00001.7": await writeRandomFile(path.join(files.path, "P00001.7"), 1 * MIB),
    "calibration.dat": await writeRandomFile(path.join(files.path, "calibration.dat"), 1000),
  };
  const release = path.join(files.path, "release");
  const download = path.join(files.path, "downloads");
  await using client = server.spawnClient([
    "--files",
    path.join(files.path, "P00001.7"),
    path.join(files.path, "calibration.dat"),
    "--download-dir",
    download,
    "--priority",
    "low",
    "--recon-options",
    JSON.stringify({ wait_for: release }),
  ]);
  const id = slurmJobs.track((await client.waitForStderr(QUEUED))[1]);
  const running = await waitForSlurmRun(server, id);
  const slurmId = running.executor_ref!;
  assert.match(slurmId, /^\d+$/, "the executor_ref is the Slurm job id");
  assert.equal(running.executor, "slurm");

  // recon lists it running once it left recon's queue; Slurm may still hold it PENDING.
  const seen = await waitFor(`Slurm job ${slurmId} to be RUNNING`, async () => {
    const fields = await slurmJob(cluster.env, slurmId);
    return fields?.JobState === "RUNNING" ? fields : undefined;
  }, { timeoutMs: 30_000, intervalMs: 100 });
  assert.equal(seen.JobName, `recon-${id}`);
  assert.equal(seen.Partition, "gpu", "SLURM_SBATCH_ARGS reach sbatch");
  assert.equal(seen.Nice, "200", "priority low is --nice=200");
  assert.equal(seen.TimeLimit, "00:02:00", "--time: a whole minute past JOB_TIMEOUT (60 s)");

  // The script's stdout reaches the server while it runs: its PROGRESS line.
  await waitFor("the script's PROGRESS 50", async () => (await jobInfo(server, id)).percent === 50);
  const listed = await server.client(["jobs"]);
  assert.equal(listed.code, 0, listed.stderr);
  const rows = listed.stdout.trimEnd().split("\n");
  assert.deepEqual(cells(rows[0]).slice(0, 4), ["JOB ID", "FILE", "STATE", "SLURM"]);
  assert.deepEqual(cells(rows[1]).slice(0, 4), [id, "P00001.7", "running 50%", slurmId]);
  const queue = await server.client(["--view-queue"]);
  assert.equal(queue.code, 0, queue.stderr);
  const queueRows = queue.stdout.trimEnd().split("\n");
  assert.deepEqual(cells(queueRows[0]).slice(0, 3), ["JOB ID", "STATUS", "SLURM"]);
  assert.deepEqual(cells(queueRows[1]).slice(0, 3), [id, "running 50%", slurmId]);
  const status = await server.client(["--server-status"]);
  assert.equal(status.code, 0, status.stderr);
  assert.match(status.stdout, /^executor: +slurm$/m);
  assert.doesNotMatch(status.stdout, /executor problem/);

  await Deno.writeTextFile(release, "");
  const result = await client.result(60_000);
  assert.equal(result.code, 0, result.stderr);
  const jobDir = path.join(download, id);
  assert.equal(await Deno.readTextFile(path.join(jobDir, "sums.txt")), sums(inputs));
  assert.equal(
    (await Deno.readTextFile(path.join(jobDir, "slurm_job_id.txt"))).trim(),
    slurmId,
    "the script ran inside that Slurm job",
  );
  assert.deepEqual(
    result.stdout.trim().split("\n").sort(),
    ["provenance.json", "slurm_job_id.txt", "sums.txt"].map((name) => path.join(jobDir, name)),
  );
  assert.deepEqual((await starts(files.path)).map((start) => start.jobId), [id], "one run");

  const done = await jobInfo(server, id);
  assert.equal(done.state, "succeeded");
  assert.equal(done.executor_ref, slurmId);
  assert.equal(done.attempts, 1);
  assert.equal((await slurmJob(cluster.env, slurmId))?.JobState, "COMPLETED");
  assert.deepEqual(await slurmJobsNamed(cluster.env, `recon-${id}`), [slurmId]);
  assert.match(server.log, new RegExp(`job ${id}: submitted as Slurm job ${slurmId}\\b`));

  // The job log holds the script's output as a local run's does (stderr lines marked "!").
  const logs = await server.client(["logs", id]);
  assert.equal(logs.code, 0, logs.stderr);
  assert.match(
    logs.stdout,
    new RegExp(`^slurm script started job ${id} as Slurm job ${slurmId}$`, "m"),
  );
  assert.match(logs.stdout, /^! ?a line on stderr$/m);
  assert.match(logs.stdout, new RegExp(`^slurm script finished job ${id}$`, "m"));
  assert.ok(
    !(await listDir(server.reconFilePath)).some((name) => name.endsWith(".slurm")),
    "the job's Slurm work directory is removed once it ended",
  );
  assert.equal(
    await sha256File(path.join(jobDir, "sums.txt")),
    await sha256File(path.join(server.dicomDir, `job_${id}_output`, "sums.txt")),
    "the server keeps the results it sent",
  );
});

Deno.test("a failing script's exit code and stderr tail, and recon's JOB_TIMEOUT, through Slurm; the timed-out Slurm job is cancelled", async () => {
  const cluster = await ensureSlurm();
  await using files = await tempDir();
  const script = await writeSlurmScript(files.path);
  await using server = await slurmServer(script, cluster.env, { JOB_TIMEOUT: 3 });
  await using slurmJobs = new SlurmJobs(cluster.env);
  const input = path.join(files.path, "P00002.7");
  await Deno.writeTextFile(input, "raw");
  const submit = (options: Record<string, unknown>, ...flags: string[]) =>
    server.client(["--files", input, "--recon-options", JSON.stringify(options), ...flags], {
      timeoutMs: 60_000,
    });

  const failed = await submit({ fail: 3 });
  assert.equal(failed.code, 1, failed.stderr);
  assert.match(
    failed.stderr,
    new RegExp(
      `^recon-client: error: job ${UUID.source} failed: the reconstruction script exited with code 3$`,
      "m",
    ),
  );
  const hint = "on the server:\n";
  assert.ok(failed.stderr.includes(hint), failed.stderr);
  assert.deepEqual(
    failed.stderr.slice(failed.stderr.indexOf(hint) + hint.length).trimEnd().split("\n"),
    ["  a line on stderr", "  failing on purpose with 3"],
    "the script's stderr tail ends the report",
  );
  const json = await submit({ fail: 4 }, "--json");
  assert.equal(json.code, 1, json.stderr);
  const report = JSON.parse(json.stdout);
  assert.equal(report.script_exit_code, 4);
  assert.deepEqual(report.stderr_tail, ["a line on stderr", "failing on purpose with 4"]);
  const failedJob = await jobInfo(server, report.job_id);
  assert.equal(failedJob.exit_code, 4);
  assert.equal((await slurmJob(cluster.env, failedJob.executor_ref!))?.JobState, "FAILED");

  const started = Date.now();
  const timedOut = await submit({ sleep: 60 }, "--json");
  const elapsed = Date.now() - started;
  assert.equal(timedOut.code, 1, timedOut.stderr);
  const timeout = JSON.parse(timedOut.stdout);
  slurmJobs.track(timeout.job_id);
  assert.equal(
    timeout.error,
    `job ${timeout.job_id} failed: the script did not finish within JOB_TIMEOUT (3 s) and was stopped`,
  );
  assert.ok(elapsed < 20_000, `stopped soon after JOB_TIMEOUT (${elapsed} ms)`);
  const slurmId = (await jobInfo(server, timeout.job_id)).executor_ref!;
  const seen = await slurmJob(cluster.env, slurmId);
  assert.equal(seen?.JobState, "CANCELLED", "recon ran scancel at its own timeout");
  assert.equal(seen?.TimeLimit, "00:02:00", "--time: a whole minute past JOB_TIMEOUT (3 s)");
  assert.equal(await inSqueue(cluster.env, slurmId), false, "the Slurm job is gone");
  const pid = (await starts(files.path)).find((start) => start.jobId === timeout.job_id)!.pid;
  await waitFor("the timed-out script's shell to end", async () => !await processAlive(pid), {
    timeoutMs: 10_000,
  });
  await server.waitForNoJobDirs();
});

Deno.test("a script past Slurm's own time limit (--time=1, no JOB_TIMEOUT) fails with Slurm's TIMEOUT reason", async () => {
  const cluster = await ensureSlurm();
  await using files = await tempDir();
  const script = await writeSlurmScript(files.path);
  await using server = await slurmServer(script, cluster.env, {
    JOB_TIMEOUT: 0,
    SLURM_SBATCH_ARGS: "--time=1",
  });
  await using slurmJobs = new SlurmJobs(cluster.env);
  const input = path.join(files.path, "P00003.7");
  await Deno.writeTextFile(input, "raw");
  const started = Date.now();
  const result = await server.client(
    ["--files", input, "--recon-options", JSON.stringify({ sleep: 150 }), "--json"],
    { timeoutMs: 180_000 },
  );
  const elapsed = Date.now() - started;
  assert.equal(result.code, 1, result.stderr);
  const report = JSON.parse(result.stdout);
  slurmJobs.track(report.job_id);
  assert.match(
    report.error,
    new RegExp(
      `^job ${report.job_id} failed: Slurm stopped the job at its time limit \\(TIMEOUT\\b`,
    ),
  );
  assert.equal(report.script_exit_code, null);
  assert.ok(elapsed >= 60_000, `not before the one-minute limit (${elapsed} ms)`);
  assert.ok(elapsed < 150_000, `Slurm ended it, not the script (${elapsed} ms)`);
  const job = await jobInfo(server, report.job_id);
  assert.equal(job.state, "failed");
  assert.match(job.reason!, /^Slurm stopped the job at its time limit \(TIMEOUT\b/);
  assert.equal((await slurmJob(cluster.env, job.executor_ref!))?.JobState, "TIMEOUT");
  await server.waitForNoJobDirs();
});

Deno.test("recon-client cancel of a job running on Slurm reaches scancel: the Slurm job leaves squeue, CANCELLED", async () => {
  const cluster = await ensureSlurm();
  await using files = await tempDir();
  const script = await writeSlurmScript(files.path);
  await using server = await slurmServer(script, cluster.env);
  await using slurmJobs = new SlurmJobs(cluster.env);
  const input = path.join(files.path, "P00004.7");
  await Deno.writeTextFile(input, "raw");
  const submitted = await server.client([
    "--files",
    input,
    "--detach",
    "--recon-options",
    JSON.stringify({ sleep: 120 }),
  ]);
  assert.equal(submitted.code, 0, submitted.stderr);
  const id = slurmJobs.track(submitted.stdout.trim());
  const slurmId = (await waitForSlurmRun(server, id)).executor_ref!;
  const start = await waitFor(
    "the script to start",
    async () => (await starts(files.path)).find((entry) => entry.jobId === id),
  );
  assert.equal((await slurmJob(cluster.env, slurmId))?.JobState, "RUNNING");

  const cancelled = await server.client(["cancel", id, "--reason", "not needed"]);
  assert.equal(cancelled.code, 0, cancelled.stderr);
  assert.match(cancelled.stdout, new RegExp(`^${id} cancelled at .*: not needed`));
  assert.equal((await slurmJob(cluster.env, slurmId))?.JobState, "CANCELLED");
  await waitFor(
    "the Slurm job to leave squeue",
    async () => !await inSqueue(cluster.env, slurmId),
    {
      timeoutMs: 5_000,
    },
  );
  await waitFor("the script's shell to end", async () => !await processAlive(start.pid), {
    timeoutMs: 10_000,
  });
  const job = await jobInfo(server, id);
  assert.equal(job.state, "cancelled");
  assert.equal(job.reason, "not needed");
  await server.waitForNoJobDirs();
});

Deno.test("a server SIGKILLed while its Slurm jobs run follows them again: results once each, one Slurm job each", async () => {
  const cluster = await ensureSlurm();
  await using files = await tempDir();
  const script = await writeSlurmScript(files.path);
  await using server = await slurmServer(script, cluster.env, {
    MAX_CONCURRENT_JOBS: 2,
    CLIENT_RECONNECT_TIMEOUT: 60,
  });
  await using slurmJobs = new SlurmJobs(cluster.env);
  // Job A's script ends while no server runs; job B's after the restart.
  const jobs = ["A", "B"].map((name) => ({
    name,
    input: path.join(files.path, `P0000${name}.7`),
    release: path.join(files.path, `release_${name}`),
    download: path.join(files.path, `downloads_${name}`),
  }));
  const sumsOf: Record<string, string> = {};
  for (const job of jobs) sumsOf[job.name] = await writeRandomFile(job.input, 256 * 1024);
  const spawn = (job: (typeof jobs)[number]) =>
    server.spawnClient([
      "--files",
      job.input,
      "--download-dir",
      job.download,
      "--recon-options",
      JSON.stringify({ wait_for: job.release }),
    ]);
  await using clientA = spawn(jobs[0]);
  await using clientB = spawn(jobs[1]);
  const clients = [clientA, clientB];
  const ids = await Promise.all(
    clients.map(async (client) => slurmJobs.track((await client.waitForStderr(QUEUED))[1])),
  );
  const refs = await Promise.all(
    ids.map(async (id) => (await waitForSlurmRun(server, id)).executor_ref!),
  );
  await waitFor("both scripts to start", async () => (await starts(files.path)).length === 2);

  const { status } = await server.stop("SIGKILL");
  assert.equal(status.signal, "SIGKILL");
  for (const ref of refs) {
    assert.equal((await slurmJob(cluster.env, ref))?.JobState, "RUNNING", "Slurm jobs outlive it");
  }
  await Deno.writeTextFile(jobs[0].release, "");
  await waitFor(
    "job A's Slurm job to complete while no server runs",
    async () => (await slurmJob(cluster.env, refs[0]))?.JobState === "COMPLETED",
    { timeoutMs: 20_000 },
  );

  await server.restart();
  await Deno.writeTextFile(jobs[1].release, "");
  for (const [i, client] of clients.entries()) {
    const result = await client.result(60_000);
    assert.equal(result.code, 0, `the client of job ${jobs[i].name}:\n${result.stderr}`);
    assert.equal(
      await Deno.readTextFile(path.join(jobs[i].download, ids[i], "sums.txt")),
      sums({ [path.basename(jobs[i].input)]: sumsOf[jobs[i].name] }),
    );
  }
  assert.deepEqual(
    (await starts(files.path)).map((start) => start.jobId).sort(),
    [...ids].sort(),
    "each script ran once",
  );
  for (const [i, id] of ids.entries()) {
    const job = await jobInfo(server, id);
    assert.equal(job.state, "succeeded");
    assert.equal(job.executor_ref, refs[i], "the same Slurm job, followed again");
    assert.ok(job.delivered_at, "its results were delivered");
    assert.deepEqual(
      await slurmJobsNamed(cluster.env, `recon-${id}`),
      [refs[i]],
      `one Slurm job named recon-${id}`,
    );
    const submitted = server.log.match(new RegExp(`job ${id}: submitted as Slurm job`, "g"));
    assert.equal(submitted?.length, 1, "submitted once, over both server processes");
    const succeeded = server.log.match(new RegExp(`job ${id}: succeeded with`, "g"));
    assert.equal(succeeded?.length, 1, "its results were collected once");
    assert.match(server.log, new RegExp(`job ${id}: following Slurm job ${refs[i]} again`));
  }
});

Deno.test("Slurm stopped: a submitted job waits in the queue and --server-status says why; Slurm back: it runs", async () => {
  await using cluster = await LocalSlurm.start();
  await using files = await tempDir();
  const script = await writeSlurmScript(files.path);
  await using server = await slurmServer(script, cluster.env);
  const input = path.join(files.path, "P00005.7");
  const inputSum = await writeRandomFile(input, 4096);

  await cluster.down();
  const submitted = await server.client(["--files", input, "--detach"]);
  assert.equal(submitted.code, 0, submitted.stderr);
  const id = submitted.stdout.trim();
  const problem = await waitFor("the server to report Slurm's absence", async () => {
    const result = await server.client(["--server-status", "--json"]);
    assert.equal(result.code, 0, result.stderr);
    return JSON.parse(result.stdout).executor_problem as string | undefined;
  }, { timeoutMs: 60_000, intervalMs: 500 });
  assert.match(problem, /^Slurm does not answer: sbatch failed: .* \(since \d{4}-\d\d-\d\dT/);
  const text = await server.client(["--server-status"]);
  assert.match(text.stdout, /^executor: +slurm$/m);
  assert.match(text.stdout, /^executor problem: +Slurm does not answer: sbatch failed: /m);
  // Between its tries the job is back in the queue, and no try used up an attempt.
  await waitFor("the job to wait in the queue", async () => {
    const job = await jobInfo(server, id);
    return job.state === "queued" && job.attempts === 0 && job.executor_ref === undefined;
  }, { timeoutMs: 30_000, intervalMs: 100 });
  assert.deepEqual(await starts(files.path), [], "the script did not run");

  await cluster.up();
  const waited = await server.client(["wait", id], { timeoutMs: 120_000 });
  assert.equal(waited.code, 0, waited.stderr);
  assert.match(waited.stdout, new RegExp(`^${id} succeeded`));
  const download = path.join(files.path, "downloads");
  const fetched = await server.client(["fetch", id, "--download-dir", download]);
  assert.equal(fetched.code, 0, fetched.stderr);
  assert.equal(
    await Deno.readTextFile(path.join(download, id, "sums.txt")),
    sums({ "P00005.7": inputSum }),
  );
  const job = await jobInfo(server, id);
  assert.equal(job.attempts, 1);
  assert.deepEqual(await slurmJobsNamed(cluster.env, `recon-${id}`), [job.executor_ref]);
  const after = await server.client(["--server-status", "--json"]);
  assert.equal(JSON.parse(after.stdout).executor_problem, undefined, "the problem is gone");
});

Deno.test("recon-server with EXECUTOR = slurm refuses to start in one line when SLURM_SBATCH_ARGS names a partition that does not exist", async () => {
  const cluster = await ensureSlurm();
  await using site = await tempDir("recon_slurm_startup_");
  for (const args of ["--partition=nosuch", "-p nosuch --gres=gpu:1", "--partition nosuch"]) {
    const optsPath = path.join(site.path, "recon.opts");
    const lines = [
      `SHARED_KEY = ${await keygen()}`,
      "SERVER_HOST = 127.0.0.1",
      `RECON_FILEPATH = ${path.join(site.path, "jobs")}`,
      `RECON_DICOM_DIR = ${path.join(site.path, "results")}`,
      `RECON_SCRIPT = ${testdata("e2e_recon.sh")}`,
      `LOG_FILEPATH = ${path.join(site.path, "recon.log")}`,
      "EXECUTOR = slurm",
      `SLURM_SBATCH_ARGS = ${args}`,
    ];
    await Deno.writeTextFile(optsPath, lines.join("\n") + "\n", { mode: 0o600 });
    const result = await run(SERVER_BIN, ["--opts", optsPath, "--port", "0"], {
      env: cluster.env,
      timeoutMs: 60_000,
    });
    assert.equal(result.code, 2, `${args}:\n${result.stderr}`);
    const errors = result.stderr.split("\n").filter((line) =>
      line.startsWith("recon-server: error:")
    );
    assert.equal(errors.length, 1, result.stderr);
    assert.match(errors[0], /^recon-server: error: EXECUTOR = slurm: .*nosuch/);
    assert.doesNotMatch(result.stderr, /listening on/);
  }
});
