/**
 * End to end, ON_JOB_END (lib/server/job_hooks.ts) with bin/recon-server and
 * bin/recon-client: the hook runs once for each job that succeeds, fails or is
 * cancelled, with the documented arguments and environment; a hook that fails or
 * hangs never delays or fails a job or its client, at most 4 run at once, and a
 * shutdown stops the ones still running with everything they started.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { E2EServer, pgrep, testdata, UUID, waitFor } from "./support/e2e.ts";

async function tempDir(): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "recon-e2e-hooks-" });
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

async function hookScript(dir: string, body: string): Promise<string> {
  const file = path.join(dir, "on-job-end");
  await Deno.writeTextFile(file, `#!/bin/sh\n${body}`, { mode: 0o755 });
  return file;
}

/** The job id the client names on stderr (`job <uuid> queued`), or its --detach output. */
function jobIdOf(result: { stdout: string; stderr: string }): string {
  const match = new RegExp(`job (${UUID.source})`).exec(result.stderr) ??
    new RegExp(`^(${UUID.source})$`, "m").exec(result.stdout);
  assert.ok(match, `no job id in the client's output:\n${result.stderr}`);
  return match[1];
}

Deno.test("ON_JOB_END runs once for each succeeded, failed and cancelled job, with its arguments", async () => {
  await using hook = await tempDir();
  const runs = path.join(hook.dir, "runs.txt");
  // One line per run, written with one append (runs may overlap).
  const program = await hookScript(
    hook.dir,
    `line=$(printf '[%s] ' "$@")\n` +
      `line="$line| state=$RECON_JOB_STATE client=$RECON_CLIENT dir=$RECON_RESULT_DIR ` +
      `count=$RECON_RESULT_COUNT exit=$RECON_EXIT_CODE reason=$RECON_REASON id=$RECON_JOB_ID"\n` +
      `printf '%s\\n' "$line" >> '${runs}'\n`,
  );
  const missing = path.join(hook.dir, "no-such-program");
  await using server = await E2EServer.start({
    script: testdata("e2e_recon.sh"),
    options: { ON_JOB_END: program, ON_DELIVERY_FAILED: missing },
  });
  assert.match(
    server.log,
    new RegExp(
      `ON_DELIVERY_FAILED ${missing} does not exist; fix ON_DELIVERY_FAILED in recon.opts`,
    ),
    "a hook that cannot run is reported at the start",
  );
  const file = path.join(server.dir, "P00042.7");
  await Deno.writeTextFile(file, "raw data");
  const lineOf = (id: string) =>
    waitFor(`the hook's run for job ${id}`, async () => {
      const text = await Deno.readTextFile(runs).catch(() => "");
      return text.split("\n").find((line) => line.startsWith(`[${id}]`));
    });

  const ok = await server.client(["--files", file]);
  assert.equal(ok.code, 0, ok.stderr);
  const succeeded = jobIdOf(ok);
  const outputDir = path.join(server.dicomDir, `job_${succeeded}_output`);
  assert.equal(
    await lineOf(succeeded),
    `[${succeeded}] [succeeded] [default] [${outputDir}] | state=succeeded client=default ` +
      `dir=${outputDir} count=3 exit=0 reason= id=${succeeded}`,
  );

  const bad = await server.client(["--files", file, "--recon-options", '{"exit": 3}']);
  assert.equal(bad.code, 1, bad.stderr);
  const failed = jobIdOf(bad);
  assert.equal(
    await lineOf(failed),
    `[${failed}] [failed] [default] [] | state=failed client=default dir= count= exit=3 ` +
      `reason=the reconstruction script exited with code 3 id=${failed}`,
  );

  const slow = await server.client([
    "--files",
    file,
    "--detach",
    "--recon-options",
    '{"sleep": 30}',
  ]);
  assert.equal(slow.code, 0, slow.stderr);
  const cancelled = jobIdOf(slow);
  const cancel = await server.client(["cancel", cancelled, "--reason", "wrong protocol"]);
  assert.equal(cancel.code, 0, cancel.stderr);
  assert.match(
    await lineOf(cancelled),
    new RegExp(
      `^\\[${cancelled}\\] \\[cancelled\\] \\[default\\] \\[\\] \\| state=cancelled client=default dir= count= exit=.* reason=wrong protocol id=${cancelled}$`,
    ),
  );

  await server.waitForNoJobDirs();
  const lines = (await Deno.readTextFile(runs)).trim().split("\n");
  assert.equal(lines.length, 3, `one run per job:\n${lines.join("\n")}`);
  assert.doesNotMatch(server.log, /ON_JOB_END .* (exited|was killed|ran longer)/);
});

Deno.test("a hook that fails or hangs never delays or fails a job, and shutdown stops it", async () => {
  await using hook = await tempDir();
  // A sleep length no other process uses: it marks the hanging hooks and their children.
  const marker = `1000.${crypto.getRandomValues(new Uint32Array(1))[0]}`;
  const program = await hookScript(
    hook.dir,
    `case $2 in\n` +
      `succeeded) echo "waiting for the relay" >&2; sleep ${marker} & sleep ${marker} ;;\n` +
      `*) echo "notify: relay unreachable" >&2; exit 3 ;;\n` +
      `esac\n`,
  );
  await using server = await E2EServer.start({
    script: testdata("e2e_recon.sh"),
    options: { ON_JOB_END: program, HOOK_TIMEOUT: "10m", SHUTDOWN_GRACE: 1 },
  });
  const file = path.join(server.dir, "P00042.7");
  await Deno.writeTextFile(file, "raw data");

  const bad = await server.client(["--files", file, "--recon-options", '{"exit": 3}']);
  assert.equal(bad.code, 1, bad.stderr);
  assert.match(bad.stderr, /failed: the reconstruction script exited with code 3$/m);
  assert.doesNotMatch(bad.stderr, /ON_JOB_END|relay/, "the client hears nothing of the hook");
  const failed = jobIdOf(bad);
  await server.waitForLog(
    new RegExp(
      `WARN  recon-server: ON_JOB_END ${program} exited 3 for job ${failed}: notify: relay unreachable$`,
      "m",
    ),
  );

  // Six jobs while their hooks hang: each client is done in the usual time.
  for (let i = 0; i < 6; i++) {
    const started = Date.now();
    const ok = await server.client(["--files", file]);
    assert.equal(ok.code, 0, ok.stderr);
    const elapsed = Date.now() - started;
    assert.ok(elapsed < 15_000, `job ${i + 1} took ${elapsed} ms`);
    if (i === 0) {
      // The job is done and its client has exited, while its hook still runs.
      await waitFor("the first hook to run", async () => (await pgrep(marker)).length === 2);
    }
  }
  await waitFor("4 hooks to run", async () => (await pgrep(marker)).length === 8);
  await new Promise((resolve) => setTimeout(resolve, 300));
  assert.equal((await pgrep(marker)).length, 8, "at most 4 hooks (2 processes each) at once");

  const stop = await server.stop("SIGTERM");
  assert.equal(stop.killed, false, "the server stopped by itself");
  assert.ok(stop.ms < 10_000, `shutdown took ${stop.ms} ms`);
  assert.deepEqual(await pgrep(marker), [], "no hook process outlives the server");
  const stopped = server.log.split("\n").filter((line) =>
    line.includes(`ON_JOB_END ${program} was stopped: the server is shutting down for job`)
  );
  assert.equal(stopped.length, 4, server.log.slice(-3000));
  assert.match(server.log, /2 queued hook run\(s\) dropped: the server is stopping/);
});

Deno.test("ON_JOB_END runs for a job the restart's recovery fails, after the recovery stopped its processes", async () => {
  await using hook = await tempDir();
  const runs = path.join(hook.dir, "runs.txt");
  // It takes a moment: the recovery stops every process carrying the job's RECON_JOB_ID.
  const program = await hookScript(
    hook.dir,
    `sleep 1\nprintf '%s %s %s\\n' "$1" "$2" "$RECON_REASON" >> '${runs}'\n`,
  );
  await using server = await E2EServer.start({
    script: testdata("e2e_recon.sh"),
    options: { ON_JOB_END: program, JOB_MAX_ATTEMPTS: 1 },
    expectCleanJobDirs: false,
  });
  const file = path.join(server.dir, "P00042.7");
  await Deno.writeTextFile(file, "raw data");
  const timeline = path.join(hook.dir, "timeline");
  const detached = await server.client([
    "--files",
    file,
    "--detach",
    "--recon-options",
    JSON.stringify({ timeline, sleep: 30 }),
  ]);
  const id = jobIdOf(detached);
  await waitFor("the script to start", () => Deno.readTextFile(timeline).catch(() => ""));
  await server.stop("SIGKILL");
  await server.restart();
  assert.match(
    server.log,
    new RegExp(`job ${id}: failed: the server stopped while it was running`),
  );
  const line = await waitFor(
    "the hook's run",
    () => Deno.readTextFile(runs).catch(() => ""),
    { timeoutMs: 15_000 },
  );
  assert.equal(line, `${id} failed the server stopped while it was running\n`);
  assert.doesNotMatch(server.log, /ON_JOB_END .* (exited|was killed|ran longer)/);
});
