/**
 * Tests for lib/server/slurm.ts against a real one-node Slurm cluster
 * (scripts/slurm-local through tests/support/slurm.ts), no mocks: the startup check,
 * submitting through the fixed wrapper (a client's option value reaches the script as
 * one argv element whatever it holds), following a job's output, exit file and state,
 * scancel on an abort and a timeout, and what Slurm's states mean when a job left no
 * exit status. The parsers and the reasons are tested without a cluster.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import {
  cancelSlurmJob,
  checkSlurm,
  type FollowOptions,
  followSlurmJob,
  parseScontrolJob,
  readExitFile,
  SlurmError,
  slurmFailureReason,
  slurmJobActive,
  slurmJobState,
  type SlurmSettings,
  type SlurmState,
  type SlurmSubmission,
  submitToSlurm,
  WRAPPER_NAME,
  WRAPPER_SCRIPT,
} from "../../lib/server/slurm.ts";
import { ensureSlurm } from "../support/slurm.ts";

async function settings(extra: Partial<SlurmSettings> = {}): Promise<SlurmSettings> {
  const { env } = await ensureSlurm();
  return { sbatchArgs: [], pollIntervalMs: 200, env, ...extra };
}

/** RECON_FILEPATH with one job's directory, script and log; removed on dispose. */
async function site(scriptBody: string) {
  const root = await Deno.makeTempDir({ prefix: "recon-slurm-" });
  const jobId = crypto.randomUUID();
  const workDir = path.join(root, `job_${jobId}.slurm`);
  await Deno.mkdir(workDir, { mode: 0o700 });
  const outputDir = path.join(root, `job_${jobId}_output`);
  await Deno.mkdir(outputDir);
  const script = path.join(root, "recon.sh");
  await Deno.writeTextFile(script, scriptBody);
  const logPath = path.join(root, `job_${jobId}.log`);
  const submission = (options: Partial<SlurmSubmission> = {}): SlurmSubmission => ({
    jobId,
    workDir,
    argv: ["sh", script, path.join(root, "input")],
    env: {
      RECON_JOB_ID: jobId,
      RECON_INPUT_DIR: path.join(root, "input"),
      RECON_OUTPUT_DIR: outputDir,
    },
    nice: 100,
    ...options,
  });
  return {
    root,
    jobId,
    workDir,
    outputDir,
    logPath,
    submission,
    [Symbol.asyncDispose]: () => Deno.remove(root, { recursive: true }),
  };
}

/** What a follow delivered besides its result. */
function recorder(logPath: string, extra: Partial<FollowOptions> = {}) {
  const lines: [string, string][] = [];
  const progress: number[] = [];
  const states: SlurmState[] = [];
  const options: FollowOptions = {
    logPath,
    signal: new AbortController().signal,
    timeoutMs: 0,
    onLine: (text, stream) => lines.push([stream, text]),
    onProgress: (percent) => progress.push(percent),
    onState: (state) => states.push(state),
    ...extra,
  };
  return { lines, progress, states, options };
}

async function scontrol(env: Record<string, string>, ...args: string[]): Promise<string> {
  const output = await new Deno.Command("scontrol", { args, env, stderr: "null" }).output();
  return new TextDecoder().decode(output.stdout);
}

// ---------------------------------------------------------------------------------
// Without a cluster

const RUNNING_LINE =
  "JobId=42 JobName=recon-abc UserId=root(0) GroupId=root(0) MCS_label=N/A Priority=1 Nice=100 Account=(null) QOS=(null) JobState=RUNNING Reason=None Dependency=(null) Requeue=0 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=1-02:03:04 TimeLimit=00:02:00 TimeMin=N/A Command=/srv/JobState=FAILED WorkDir=/srv StdOut=/srv/job/stdout Power= ";

Deno.test("parseScontrolJob() reads the state, run time and exit code of its job's line only", () => {
  const other = RUNNING_LINE.replace("JobId=42 ", "JobId=420 ").replace("RUNNING", "PENDING");
  assert.deepEqual(parseScontrolJob(`${other}\n${RUNNING_LINE}\n`, "42"), {
    state: "RUNNING",
    exitCode: 0,
    runSeconds: ((24 + 2) * 60 + 3) * 60 + 4,
  });
  assert.equal(parseScontrolJob(other, "42"), undefined);
  assert.equal(parseScontrolJob("", "42"), undefined);
});

Deno.test("parseScontrolJob() keeps a Reason with spaces and leaves out None", () => {
  const pending = RUNNING_LINE.replace(
    "JobState=RUNNING Reason=None",
    "JobState=PENDING Reason=(ReqNodeNotAvail, UnavailableNodes:n1)",
  );
  assert.equal(parseScontrolJob(pending, "42")?.reason, "(ReqNodeNotAvail, UnavailableNodes:n1)");
  const failed = RUNNING_LINE.replace(
    "JobState=RUNNING Reason=None",
    "JobState=FAILED Reason=NonZeroExitCode",
  )
    .replace("ExitCode=0:0", "ExitCode=3:0");
  assert.deepEqual(parseScontrolJob(failed, "42"), {
    state: "FAILED",
    reason: "NonZeroExitCode",
    exitCode: 3,
    runSeconds: 93784,
  });
});

Deno.test("parseScontrolJob() reports a state it does not know as UNKNOWN with Slurm's name", () => {
  const suspended = RUNNING_LINE.replace("JobState=RUNNING", "JobState=SUSPENDED");
  assert.deepEqual(parseScontrolJob(suspended, "42")?.state, "UNKNOWN");
  assert.deepEqual(parseScontrolJob(suspended, "42")?.reason, "SUSPENDED");
});

Deno.test("slurmFailureReason() gives one line per state naming the state and Slurm's reason", () => {
  const states: SlurmState[] = [
    "PENDING",
    "RUNNING",
    "COMPLETING",
    "COMPLETED",
    "FAILED",
    "TIMEOUT",
    "OUT_OF_MEMORY",
    "NODE_FAIL",
    "CANCELLED",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "UNKNOWN",
  ];
  const seen = new Set<string>();
  for (const state of states) {
    const text = slurmFailureReason(state);
    assert.ok(!text.includes("\n"), state);
    assert.ok(text.includes(state), `${state}: ${text}`);
    seen.add(text);
  }
  assert.equal(seen.size, states.length);
  assert.equal(slurmFailureReason("TIMEOUT"), "Slurm stopped the job at its time limit (TIMEOUT)");
  assert.equal(
    slurmFailureReason("TIMEOUT", "TimeLimit"),
    "Slurm stopped the job at its time limit (TIMEOUT: TimeLimit)",
  );
  assert.match(slurmFailureReason("OUT_OF_MEMORY"), /ran out of memory \(OUT_OF_MEMORY\)/);
  assert.match(slurmFailureReason("NODE_FAIL"), /node running the job failed \(NODE_FAIL\)/);
  assert.match(slurmFailureReason("CANCELLED"), /cancelled in Slurm, not by recon/);
  assert.match(
    slurmFailureReason("FAILED", "JobLaunchFailure"),
    /\(FAILED: JobLaunchFailure\).*shared?/,
  );
  assert.match(slurmFailureReason("UNKNOWN", "SUSPENDED"), /\(SUSPENDED\)/);
  assert.match(slurmFailureReason("GONE"), /no longer knows the job/);
});

Deno.test("readExitFile() reads a code or a signal, nothing while absent, and refuses anything else", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.equal(await readExitFile(dir), undefined);
    for (
      const [text, expected] of [
        ["0\n", { exitCode: 0, signal: null }],
        ["3\n", { exitCode: 3, signal: null }],
        ["255\n", { exitCode: 255, signal: null }],
        ["signal SIGKILL\n", { exitCode: null, signal: "SIGKILL" }],
        ["signal SIGRTMIN+3\n", { exitCode: null, signal: "SIGRTMIN+3" }],
      ] as const
    ) {
      await Deno.writeTextFile(path.join(dir, "exit"), text);
      assert.deepEqual(await readExitFile(dir), expected, text);
    }
    for (const text of ["", "3", "256\n", "-1\n", "3\n4\n", "signal KILL\n", "x".repeat(100)]) {
      await Deno.writeTextFile(path.join(dir, "exit"), text);
      await assert.rejects(readExitFile(dir), SyntaxError, JSON.stringify(text));
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("submitToSlurm() refuses NUL, bad variable names and an empty command before writing anything", async () => {
  await using job = await site("exit 0\n");
  const s: SlurmSettings = { sbatchArgs: [], pollIntervalMs: 1000 };
  for (
    const bad of [
      job.submission({ argv: [] }),
      job.submission({ argv: ["sh", "a\0b"] }),
      job.submission({ env: { "A=B": "x" } }),
      job.submission({ env: { A: "x\0y" } }),
      job.submission({ jobId: "../x" }),
      job.submission({ timeLimitMinutes: 0 }),
    ]
  ) {
    await assert.rejects(submitToSlurm(s, bad), TypeError);
  }
  assert.deepEqual([...Deno.readDirSync(job.workDir)], []);
});

// ---------------------------------------------------------------------------------
// On the cluster

Deno.test("checkSlurm() passes for the default partition and a named one that exists", async () => {
  assert.equal(await checkSlurm(await settings()), undefined);
  assert.equal(await checkSlurm(await settings({ sbatchArgs: ["-p", "gpu"] })), undefined);
  assert.equal(
    await checkSlurm(await settings({ sbatchArgs: ["--partition=debug,gpu"] })),
    undefined,
  );
});

Deno.test("checkSlurm() names a missing partition and the ones there are", async () => {
  for (
    const args of [["--partition=nope"], ["--partition", "nope"], ["-pnope"], ["-p", "gpu,nope"]]
  ) {
    const problem = await checkSlurm(await settings({ sbatchArgs: args }));
    assert.match(
      problem ?? "",
      /^Slurm partition "nope" \(SLURM_SBATCH_ARGS\) does not exist; the cluster has .*debug/,
    );
  }
});

Deno.test("checkSlurm() says when sbatch is not on PATH", async () => {
  const s = await settings();
  const empty = await Deno.makeTempDir();
  try {
    const problem = await checkSlurm({ ...s, env: { ...s.env, PATH: empty } });
    assert.equal(problem, "sbatch not found on PATH (Slurm's client commands)");
  } finally {
    await Deno.remove(empty);
  }
});

Deno.test("checkSlurm() names a SLURM_CONF that is not there at once", async () => {
  const started = Date.now();
  const problem = await checkSlurm({
    sbatchArgs: [],
    pollIntervalMs: 1000,
    env: { SLURM_CONF: "/nonexistent/slurm.conf" },
  });
  assert.match(problem ?? "", /^SLURM_CONF \/nonexistent\/slurm.conf cannot be read: /);
  assert.ok(Date.now() - started < 1000);
});

Deno.test("a Slurm command that does not answer in time fails with one line naming it", async () => {
  const s = await settings();
  // The same cluster on a port nothing listens on.
  const dir = await Deno.makeTempDir();
  try {
    const conf = await Deno.readTextFile(s.env!.SLURM_CONF);
    const unreachable = path.join(dir, "slurm.conf");
    await Deno.writeTextFile(unreachable, conf.replace(/^SlurmctldPort=\d+/m, "SlurmctldPort=9"));
    const down = { ...s, env: { ...s.env, SLURM_CONF: unreachable }, commandTimeoutMs: 1500 };
    await assert.rejects(slurmJobState(down, "1"), (error: Error) => {
      assert.ok(error instanceof SlurmError);
      assert.equal(error.message, "scontrol show job 1 did not finish within 1.5 s");
      return true;
    });
    assert.equal(await checkSlurm(down), "scontrol show partition did not finish within 1.5 s");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("slurmJobState() is GONE and cancelSlurmJob() no error for a job Slurm does not know", async () => {
  const s = await settings();
  assert.deepEqual(await slurmJobState(s, "987654321"), { state: "GONE" });
  await cancelSlurmJob(s, "987654321");
  await assert.rejects(slurmJobState(s, "1; id"), TypeError);
});

Deno.test("submitToSlurm() names the job recon-<id> with its nice, time limit and no requeue, sbatchArgs last", async () => {
  const s = await settings({ sbatchArgs: ["--hold", "--partition=gpu"] });
  await using job = await site("exit 0\n");
  const slurmId = await submitToSlurm(s, job.submission({ nice: 200, timeLimitMinutes: 2 }));
  try {
    const line = await scontrol(s.env!, "show", "job", "-o", slurmId);
    assert.match(line, new RegExp(`JobName=recon-${job.jobId} `));
    assert.match(line, / Nice=200 /);
    assert.match(line, / TimeLimit=00:02:00 /);
    assert.match(line, / Requeue=0 /);
    assert.match(line, / Partition=gpu /);
    assert.match(line, new RegExp(` StdOut=${job.workDir}/stdout `));
    assert.equal((await slurmJobState(s, slurmId)).state, "PENDING");
    assert.equal(await Deno.readTextFile(path.join(job.root, WRAPPER_NAME)), WRAPPER_SCRIPT);
  } finally {
    await cancelSlurmJob(s, slurmId);
  }
  assert.equal((await slurmJobState(s, slurmId)).state, "CANCELLED");
});

Deno.test("followSlurmJob() streams lines and PROGRESS, logs them, and takes exit 0 from the exit file", async () => {
  const s = await settings();
  await using job = await site(
    'echo "hello $1"\necho "PROGRESS 50"\necho "to stderr" >&2\necho started\nsleep 1\necho "$RECON_JOB_ID" > "$RECON_OUTPUT_DIR/id"\necho done\n',
  );
  // What an earlier attempt left must not count.
  await Deno.writeTextFile(path.join(job.workDir, "exit"), "7\n");
  const slurmId = await submitToSlurm(s, job.submission());
  let seenRunning: Promise<string> | undefined;
  const { lines, progress, states, options } = recorder(job.logPath, {
    onLine: (text, stream) => {
      lines.push([stream, text]);
      if (text === "started") seenRunning = scontrol(s.env!, "show", "job", "-o", slurmId);
    },
  });
  const result = await followSlurmJob(s, slurmId, job.workDir, options);
  assert.deepEqual(result, {
    exitCode: 0,
    signal: null,
    timedOut: false,
    cancelled: false,
    stderrTail: ["to stderr"],
  });
  // Each stream in order (the two files are read one after the other).
  assert.deepEqual(lines.filter(([stream]) => stream === "stdout").map(([, text]) => text), [
    `hello ${path.join(job.root, "input")}`,
    "started",
    "done",
  ]);
  assert.deepEqual(lines.filter(([stream]) => stream === "stderr").map(([, text]) => text), [
    "to stderr",
  ]);
  assert.deepEqual(progress, [50]);
  assert.ok(states.includes("RUNNING"), states.join());
  assert.match(
    await seenRunning!,
    new RegExp(`JobId=${slurmId} JobName=recon-${job.jobId} .* JobState=RUNNING `),
  );
  assert.equal(await Deno.readTextFile(path.join(job.outputDir, "id")), `${job.jobId}\n`);
  const log = await Deno.readTextFile(job.logPath);
  assert.match(log, new RegExp(`^# \\S+ Slurm job ${slurmId}: output from `));
  assert.match(log, /\nhello .*\nPROGRESS 50\n/);
  assert.match(log, /\n! to stderr\n/);
  assert.match(log, /\n# exit code 0\n$/);
});

Deno.test("followSlurmJob() reports exit 3 with the stderr tail and no reason of Slurm's", async () => {
  const s = await settings();
  await using job = await site('for i in $(seq 30); do echo "err $i" >&2; done\nexit 3\n');
  const slurmId = await submitToSlurm(s, job.submission());
  const { options } = recorder(job.logPath);
  const result = await followSlurmJob(s, slurmId, job.workDir, options);
  assert.equal(result.exitCode, 3);
  assert.equal(result.signal, null);
  assert.equal(result.reason, undefined);
  assert.deepEqual(result.stderrTail, Array.from({ length: 20 }, (_, i) => `err ${i + 11}`));
  assert.equal((await slurmJobState(s, slurmId)).state, "FAILED");
});

Deno.test("a client's option value reaches the script as one argv element, untouched", async () => {
  const s = await settings();
  const hostile = [
    "-n",
    "--help",
    "two words",
    'it\'s "quoted"',
    "$(touch pwned)",
    "`touch pwned`",
    "; touch pwned #",
    "*",
    "back\\slash",
    "line\nbreak",
    "",
    "  padded  ",
    "ünïcödé",
    "%j %x",
  ];
  await using job = await site('printf "%s\\0" "$@" > "$RECON_OUTPUT_DIR/argv"\n');
  const argv = [
    "sh",
    path.join(job.root, "recon.sh"),
    "/in",
    ...hostile.flatMap((v, i) => [`--k${i}`, v]),
  ];
  const slurmId = await submitToSlurm(
    s,
    job.submission({ argv, env: { RECON_OUTPUT_DIR: job.outputDir, ODD: "a\nb $(x)" } }),
  );
  const result = await followSlurmJob(s, slurmId, job.workDir, recorder(job.logPath).options);
  assert.equal(result.exitCode, 0, result.stderrTail.join("\n"));
  const received = (await Deno.readTextFile(path.join(job.outputDir, "argv"))).split("\0").slice(
    0,
    -1,
  );
  assert.deepEqual(received, argv.slice(2));
  for (const dir of [job.root, job.workDir, Deno.cwd()]) {
    assert.ok(![...Deno.readDirSync(dir)].some((entry) => entry.name === "pwned"), dir);
  }
});

Deno.test("aborting followSlurmJob() scancels the job and reports it cancelled", async () => {
  const s = await settings();
  await using job = await site("echo started\nsleep 60\n");
  const slurmId = await submitToSlurm(s, job.submission());
  const abort = new AbortController();
  const { options } = recorder(job.logPath, {
    signal: abort.signal,
    onLine: (text) => text === "started" && abort.abort(),
  });
  const started = Date.now();
  const result = await followSlurmJob(s, slurmId, job.workDir, options);
  assert.equal(result.cancelled, true);
  assert.equal(result.timedOut, false);
  assert.equal(result.reason, undefined);
  assert.ok(Date.now() - started < 20_000);
  assert.equal((await slurmJobState(s, slurmId)).state, "CANCELLED");
  assert.match(
    await Deno.readTextFile(job.logPath),
    new RegExp(`# cancelled: scancel of Slurm job ${slurmId}\n`),
  );
});

Deno.test("followSlurmJob() scancels a job still queued when aborted", async () => {
  const s = await settings({ sbatchArgs: ["--hold"] });
  await using job = await site("exit 0\n");
  const slurmId = await submitToSlurm(s, job.submission());
  const abort = new AbortController();
  const { options, states } = recorder(job.logPath, {
    signal: abort.signal,
    onState: (state) => {
      states.push(state);
      if (state === "PENDING") abort.abort();
    },
  });
  const result = await followSlurmJob(s, slurmId, job.workDir, options);
  assert.equal(result.cancelled, true);
  assert.deepEqual(states, ["PENDING", "CANCELLED"]);
});

Deno.test("followSlurmJob() scancels a job that runs past timeoutMs and reports it timed out", async () => {
  const s = await settings();
  await using job = await site("echo started\nsleep 60\n");
  const slurmId = await submitToSlurm(s, job.submission());
  const started = Date.now();
  const result = await followSlurmJob(
    s,
    slurmId,
    job.workDir,
    recorder(job.logPath, { timeoutMs: 1500 }).options,
  );
  assert.equal(result.timedOut, true);
  assert.equal(result.cancelled, false);
  assert.equal(result.reason, undefined);
  assert.ok(Date.now() - started < 20_000);
  assert.equal((await slurmJobState(s, slurmId)).state, "CANCELLED");
  assert.match(await Deno.readTextFile(job.logPath), /# timeout after 1.5 s: scancel of Slurm job/);
});

Deno.test("a job scancelled by someone else fails with Slurm's reason beside the signal", async () => {
  const s = await settings();
  await using job = await site("echo started\nsleep 60\n");
  const slurmId = await submitToSlurm(s, job.submission());
  let cancelled: Promise<void> | undefined;
  const { options } = recorder(job.logPath, {
    onLine: (text) => {
      if (text === "started") cancelled = cancelSlurmJob(s, slurmId);
    },
  });
  const result = await followSlurmJob(s, slurmId, job.workDir, options);
  await cancelled;
  assert.equal(result.cancelled, false);
  assert.equal(result.exitCode, null);
  assert.equal(result.signal, "SIGTERM");
  assert.match(result.reason ?? "", /^the job was cancelled in Slurm, not by recon \(CANCELLED/);
});

Deno.test("a job that ends without an exit file fails with its Slurm state as the reason", async () => {
  const s = await settings({ sbatchArgs: ["--hold"] });
  await using job = await site("exit 0\n");
  const slurmId = await submitToSlurm(s, job.submission());
  // The wrapper finds no command: it fails before the script runs.
  await Deno.remove(path.join(job.workDir, "argv"));
  await scontrol(s.env!, "release", slurmId);
  const result = await followSlurmJob(s, slurmId, job.workDir, recorder(job.logPath).options);
  assert.equal(result.exitCode, null);
  assert.equal(result.cancelled, false);
  assert.match(
    result.reason ?? "",
    /^the job failed in Slurm before the script reported an exit status \(FAILED: NonZeroExitCode\)/,
  );
  assert.match(await Deno.readTextFile(job.logPath), /\n# no exit status: the job failed in Slurm/);
});

Deno.test("followSlurmJob() reads a flood of output in full, in order", async () => {
  const s = await settings();
  await using job = await site("seq 200000\n");
  const slurmId = await submitToSlurm(s, job.submission());
  let count = 0;
  let last = "";
  const { options } = recorder(job.logPath, {
    onLine: (text) => {
      count++;
      if (text !== String(count)) throw new Error(`line ${count} is "${text}"`);
      last = text;
    },
  });
  const result = await followSlurmJob(s, slurmId, job.workDir, options);
  assert.equal(result.exitCode, 0);
  assert.equal(count, 200000);
  assert.equal(last, "200000");
});

Deno.test("followSlurmJob() logs Slurm unreachable, follows on and takes the exit file", async () => {
  const s = await settings();
  await using job = await site("echo hi\n");
  const unreachable = path.join(job.root, "unreachable.conf");
  const conf = await Deno.readTextFile(s.env!.SLURM_CONF);
  await Deno.writeTextFile(unreachable, conf.replace(/^SlurmctldPort=\d+/m, "SlurmctldPort=9"));
  const slurmId = await submitToSlurm(s, job.submission());
  const down = { ...s, env: { ...s.env, SLURM_CONF: unreachable }, commandTimeoutMs: 500 };
  const { lines, options } = recorder(job.logPath);
  const result = await followSlurmJob(down, slurmId, job.workDir, options);
  assert.deepEqual(result, {
    exitCode: 0,
    signal: null,
    timedOut: false,
    cancelled: false,
    stderrTail: [],
  });
  assert.deepEqual(lines, [["stdout", "hi"]]);
  const log = await Deno.readTextFile(job.logPath);
  // Said once, however often it is asked.
  assert.equal(
    log.split(`scontrol show job ${slurmId} did not finish within 0.5 s; still following`).length,
    2,
  );
  assert.match(log, /# Slurm still reports the job unanswered; not waiting\n# exit code 0\n$/);
});

Deno.test("followSlurmJob() detached stops following at once and leaves the Slurm job running", async () => {
  const s = await settings();
  await using job = await site("echo started\nsleep 60\n");
  const slurmId = await submitToSlurm(s, job.submission());
  const detach = new AbortController();
  try {
    const { options } = recorder(job.logPath, {
      detach: detach.signal,
      onLine: (text) => text === "started" && detach.abort(),
    });
    const result = await followSlurmJob(s, slurmId, job.workDir, options);
    assert.equal(result.cancelled, true);
    assert.equal(result.exitCode, null);
    assert.equal((await slurmJobState(s, slurmId)).state, "RUNNING");
    assert.match(
      await Deno.readTextFile(job.logPath),
      new RegExp(`Slurm job ${slurmId} runs on\n$`),
    );
  } finally {
    await cancelSlurmJob(s, slurmId);
    // Gone before its directory is removed.
    while (slurmJobActive((await slurmJobState(s, slurmId)).state)) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
});

Deno.test("the wrapper runs a program, never a shell builtin, and names one it cannot find", async () => {
  const s = await settings();
  await using job = await site("exit 0\n");
  const slurmId = await submitToSlurm(s, job.submission({ argv: ["eval", "echo pwned"] }));
  const { lines, options } = recorder(job.logPath);
  const result = await followSlurmJob(s, slurmId, job.workDir, options);
  assert.equal(result.exitCode, 127);
  assert.ok(!lines.some(([, text]) => text === "pwned"));
  assert.match(result.stderrTail.join("\n"), /eval: not found/);
});
