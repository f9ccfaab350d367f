/**
 * Tests for lib/server/runner.ts: the argv the script gets, its process group, output
 * handling and timeouts, with real child processes.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { findJobProcesses } from "../../lib/server/job_processes.ts";
import { buildScriptCommand, MAX_LINE_LENGTH, runScript } from "../../lib/server/runner.ts";

async function tempDir(): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "recon-runner-" });
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

async function script(dir: string, name: string, body: string): Promise<string> {
  const file = path.join(dir, name);
  await Deno.writeTextFile(file, body, { mode: 0o755 });
  return file;
}

Deno.test("buildScriptCommand() passes options as --key value in the object's order", () => {
  const command = buildScriptCommand("/opt/recon.sh", "/in", { b: 1, a: "x y", c: true }, []);
  assert.deepEqual(command, {
    program: "sh",
    args: ["/opt/recon.sh", "/in", "--b", "1", "--a", "x y", "--c", "true"],
  });
});

Deno.test("buildScriptCommand() runs .py with python3 and other files directly", () => {
  assert.equal(buildScriptCommand("/r.py", "/in", {}, []).program, "python3");
  assert.deepEqual(buildScriptCommand("/opt/recon", "/in", { k: "v" }, []), {
    program: "/opt/recon",
    args: ["/in", "--k", "v"],
  });
});

Deno.test("buildScriptCommand() calls a Matlab function with quoted pairs through MATLAB_COMMAND", () => {
  const command = buildScriptCommand("/m/recon_fn.m", "/in/job's", { name: "it's" }, [
    "matlab",
    "-batch",
  ]);
  assert.deepEqual(command, {
    program: "matlab",
    args: ["-batch", "recon_fn('/in/job''s','name','it''s')"],
    cwd: "/m",
  });
});

Deno.test("buildScriptCommand() refuses a .m file whose name is not a Matlab identifier", () => {
  assert.throws(() => buildScriptCommand("/m/1bad-name.m", "/in", {}, ["matlab"]), /Matlab/);
});

Deno.test("runScript() streams lines, reads PROGRESS and keeps the stderr tail", async () => {
  await using tmp = await tempDir();
  const file = await script(
    tmp.dir,
    "s.sh",
    'echo "hello $1"\necho "PROGRESS 40"\nfor i in $(seq 30); do echo "err $i" >&2; done\nexit 3\n',
  );
  const lines: string[] = [];
  const percents: number[] = [];
  const result = await runScript({
    command: { program: "sh", args: [file, "world"] },
    env: {},
    logPath: path.join(tmp.dir, "job.log"),
    timeoutMs: 10_000,
    onLine: (line) => lines.push(line),
    onProgress: (percent) => percents.push(percent),
  });
  assert.equal(result.exitCode, 3);
  assert.equal(result.timedOut, false);
  assert.deepEqual(percents, [40]);
  assert.ok(lines.includes("hello world"));
  assert.equal(result.stderrTail.length, 20);
  assert.equal(result.stderrTail.at(-1), "err 30");
  const log = await Deno.readTextFile(path.join(tmp.dir, "job.log"));
  assert.match(log, /hello world/);
  assert.match(log, /! err 30/);
  assert.match(log, /exit code 3/);
});

Deno.test("runScript() passes the environment it is given", async () => {
  await using tmp = await tempDir();
  const file = await script(tmp.dir, "env.sh", 'echo "$RECON_JOB_ID:$RECON_OUTPUT_DIR"\n');
  const lines: string[] = [];
  const result = await runScript({
    command: { program: "sh", args: [file] },
    env: { RECON_JOB_ID: "job-1", RECON_OUTPUT_DIR: "/out" },
    logPath: path.join(tmp.dir, "job.log"),
    timeoutMs: 0,
    onLine: (line) => lines.push(line),
  });
  assert.equal(result.exitCode, 0);
  assert.deepEqual(lines, ["job-1:/out"]);
});

function processAlive(marker: string): boolean {
  const { stdout } = new Deno.Command("pgrep", { args: ["-f", marker] }).outputSync();
  return new TextDecoder().decode(stdout).trim().length > 0;
}

Deno.test("runScript() stops a script past its timeout together with its grandchildren", async () => {
  await using tmp = await tempDir();
  const marker = `recon-test-marker-${crypto.randomUUID()}`;
  // The marker rides along as $0 of each inner shell, so pgrep -f can find them.
  const file = await script(
    tmp.dir,
    "hang.sh",
    `sh -c 'sleep 1000' ${marker} &\nsh -c 'sleep 1000' ${marker}\n`,
  );
  const started = Date.now();
  const result = await runScript({
    command: { program: "sh", args: [file] },
    env: {},
    logPath: path.join(tmp.dir, "job.log"),
    timeoutMs: 500,
    graceMs: 500,
  });
  assert.equal(result.timedOut, true);
  assert.ok(Date.now() - started < 5000, "the timeout ended the script promptly");
  for (let i = 0; i < 20 && processAlive(marker); i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.equal(processAlive(marker), false, "no process of the script's group is left");
});

Deno.test("runScript() kills what a finished script left running in the background", async () => {
  await using tmp = await tempDir();
  const marker = `recon-test-bg-${crypto.randomUUID()}`;
  const file = await script(tmp.dir, "bg.sh", `sh -c 'sleep 1000' ${marker} &\necho done\n`);
  const result = await runScript({
    command: { program: "sh", args: [file] },
    env: {},
    logPath: path.join(tmp.dir, "job.log"),
    timeoutMs: 0,
  });
  assert.equal(result.exitCode, 0);
  for (let i = 0; i < 20 && processAlive(marker); i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.equal(processAlive(marker), false);
});

Deno.test("runScript() stops the script when the job is cancelled", async () => {
  await using tmp = await tempDir();
  const file = await script(tmp.dir, "slow.sh", "sleep 30\n");
  const controller = new AbortController();
  setTimeout(() => controller.abort(), 200);
  const result = await runScript({
    command: { program: "sh", args: [file] },
    env: {},
    logPath: path.join(tmp.dir, "job.log"),
    timeoutMs: 0,
    signal: controller.signal,
  });
  assert.equal(result.cancelled, true);
  assert.equal(result.exitCode, null);
});

Deno.test("runScript() caps very long lines and a flooding script's log", async () => {
  await using tmp = await tempDir();
  const file = await script(
    tmp.dir,
    "flood.sh",
    `head -c 20000 /dev/zero | tr '\\0' x; echo\nyes flood | head -n 200000\n`,
  );
  let count = 0;
  let longest = 0;
  const result = await runScript({
    command: { program: "sh", args: [file] },
    env: {},
    logPath: path.join(tmp.dir, "job.log"),
    timeoutMs: 30_000,
    onLine: (line) => {
      count++;
      longest = Math.max(longest, line.length);
    },
  });
  assert.equal(result.exitCode, 0);
  assert.equal(longest, MAX_LINE_LENGTH);
  assert.equal(count, 200_001);
  const size = (await Deno.stat(path.join(tmp.dir, "job.log"))).size;
  assert.ok(size < 17 * 1024 * 1024, `log stays bounded (${size} bytes)`);
});

Deno.test("runScript() reports a program that does not exist as a failed run", async () => {
  await using tmp = await tempDir();
  const result = await runScript({
    command: { program: path.join(tmp.dir, "missing"), args: [] },
    env: {},
    logPath: path.join(tmp.dir, "job.log"),
    timeoutMs: 0,
  });
  // setsid starts, then cannot exec the program: the shell convention's 127.
  assert.equal(result.exitCode, 127);
});

/** Resolves with `promise`, or fails the test when it takes longer than `ms`. */
async function within<T>(ms: number, what: string, promise: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

for (
  const [name, helper] of [
    // The script waits until the helper is in its own session, so that the helper is
    // not caught by the kill of the script's group by luck.
    [
      "setsid sleep &",
      `setsid sh -c 'echo $$ > "$0.pid"; exec sleep 1000' "$0" &\nwhile [ ! -s "$0.pid" ]; do sleep 0.05; done\n`,
    ],
    [
      "Python Popen(start_new_session=True)",
      `python3 -c "import subprocess; subprocess.Popen(['sleep', '1000'], start_new_session=True)"\n`,
    ],
  ] as const
) {
  Deno.test(`runScript() returns when the script ends and stops a helper left by ${name}`, async () => {
    await using tmp = await tempDir();
    const jobId = crypto.randomUUID();
    const file = await script(tmp.dir, "helper.sh", `${helper}echo started\n`);
    const result = await within(
      10_000,
      "runScript",
      runScript({
        command: { program: "sh", args: [file] },
        env: { RECON_JOB_ID: jobId },
        logPath: path.join(tmp.dir, "job.log"),
        timeoutMs: 0,
      }),
    );
    assert.equal(result.exitCode, 0);
    assert.deepEqual(await findJobProcesses(jobId), [], "no process of the job is left");
    assert.match(await Deno.readTextFile(path.join(tmp.dir, "job.log")), /stopped 1 process/);
  });
}

Deno.test("runScript() past its timeout also stops a helper outside the script's group", async () => {
  await using tmp = await tempDir();
  const jobId = crypto.randomUUID();
  const file = await script(
    tmp.dir,
    "hang.sh",
    `setsid sh -c 'echo $$ > "$0.pid"; exec sleep 1000' "$0" &\nsleep 1000\n`,
  );
  const result = await within(
    10_000,
    "runScript",
    runScript({
      command: { program: "sh", args: [file] },
      env: { RECON_JOB_ID: jobId },
      logPath: path.join(tmp.dir, "job.log"),
      timeoutMs: 300,
      graceMs: 300,
    }),
  );
  assert.equal(result.timedOut, true);
  assert.deepEqual(await findJobProcesses(jobId), []);
});

Deno.test("runScript() stops reading pipes held open by a helper it cannot find", async () => {
  await using tmp = await tempDir();
  const pidFile = path.join(tmp.dir, "helper.pid");
  // env -i clears RECON_JOB_ID and setsid leaves the group: only the bounded drain helps.
  const file = await script(
    tmp.dir,
    "escape.sh",
    `setsid sh -c 'echo $$ > "$0"; exec env -i sleep 1000' "${pidFile}" &\n` +
      `while [ ! -s "${pidFile}" ]; do sleep 0.05; done\necho done\n`,
  );
  try {
    const lines: string[] = [];
    const result = await within(
      10_000,
      "runScript",
      runScript({
        command: { program: "sh", args: [file] },
        env: { RECON_JOB_ID: crypto.randomUUID() },
        logPath: path.join(tmp.dir, "job.log"),
        timeoutMs: 0,
        drainMs: 200,
        onLine: (line) => lines.push(line),
      }),
    );
    assert.equal(result.exitCode, 0);
    assert.deepEqual(lines, ["done"]);
    assert.match(await Deno.readTextFile(path.join(tmp.dir, "job.log")), /stopped reading/);
  } finally {
    const pid = Number((await Deno.readTextFile(pidFile)).trim());
    if (pid > 1) Deno.kill(pid, "SIGKILL");
  }
});

Deno.test("findJobProcesses() matches the whole RECON_JOB_ID entry, not a prefix", async () => {
  const jobId = crypto.randomUUID();
  const child = new Deno.Command("sleep", {
    args: ["1000"],
    env: { RECON_JOB_ID: `${jobId}-other` },
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    assert.deepEqual(await findJobProcesses(jobId), []);
    assert.deepEqual(await findJobProcesses(`${jobId}-other`), [child.pid]);
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
});

Deno.test("runScript() never writes the job log or pid file through a planted symbolic link", async () => {
  await using tmp = await tempDir();
  const target = path.join(tmp.dir, "precious");
  await Deno.writeTextFile(target, "keep me\n");
  const logLink = path.join(tmp.dir, "job.log");
  await Deno.symlink(target, logLink);
  const file = await script(tmp.dir, "ok.sh", "echo hi\n");
  await assert.rejects(
    runScript({
      command: { program: "sh", args: [file] },
      env: {},
      logPath: logLink,
      timeoutMs: 0,
    }),
  );
  assert.equal(await Deno.readTextFile(target), "keep me\n");

  // The pid file: the link is replaced by a file of our own, its target left alone.
  const pidLink = path.join(tmp.dir, "job.pid");
  await Deno.symlink(target, pidLink);
  const result = await runScript({
    command: { program: "sh", args: [file] },
    env: {},
    logPath: path.join(tmp.dir, "real.log"),
    pidPath: pidLink,
    timeoutMs: 0,
  });
  assert.equal(result.exitCode, 0);
  assert.equal(await Deno.readTextFile(target), "keep me\n");
});
