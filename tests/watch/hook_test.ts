/**
 * CLIENT_DAEMON_ON_COMPLETE: run as PROGRAM JOB_ID RESULT_DIR without a shell; a
 * failure, a missing program or a hang is logged and never thrown.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { runCompletionHook } from "../../lib/watch/hook.ts";

function collector() {
  const lines: string[] = [];
  const record = (level: string) => (message: string) => lines.push(`${level} ${message}`);
  return {
    lines,
    log: {
      debug: record("DEBUG"),
      info: record("INFO"),
      warn: record("WARN"),
      error: record("ERROR"),
    },
  };
}

async function withScript(text: string, body: (program: string, dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "recon_watch_hook_test_" });
  const program = path.join(dir, "hook.sh");
  await Deno.writeTextFile(program, text, { mode: 0o755 });
  try {
    await body(program, dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("runCompletionHook() passes job id and result dir as two argv entries, no shell", async () => {
  await withScript(
    `#!/bin/sh\nprintf '%s\\n' "$#" "$1" "$2" > "$(dirname "$0")/args"\n`,
    async (program, dir) => {
      const { lines, log } = collector();
      const resultDir = path.join(dir, "results with spaces; $(touch pwned)");
      const ok = await runCompletionHook({ program, jobId: "job-1", resultDir, log });
      assert.equal(ok, true);
      assert.deepEqual(
        (await Deno.readTextFile(path.join(dir, "args"))).split("\n").slice(0, 3),
        ["2", "job-1", resultDir],
      );
      await assert.rejects(Deno.stat(path.join(dir, "pwned")));
      assert.match(lines.join("\n"), /^INFO job job-1: CLIENT_DAEMON_ON_COMPLETE .* finished$/m);
    },
  );
});

Deno.test("runCompletionHook() logs a failing hook with its exit code and last stderr line", async () => {
  await withScript(
    `#!/bin/sh\necho "first" >&2\necho "PACS refused the images" >&2\nexit 4\n`,
    async (program) => {
      const { lines, log } = collector();
      const ok = await runCompletionHook({ program, jobId: "job-2", resultDir: "/r", log });
      assert.equal(ok, false);
      assert.match(
        lines.join("\n"),
        /^WARN job job-2: CLIENT_DAEMON_ON_COMPLETE .* exited with code 4: PACS refused the images; the results stay in \/r$/m,
      );
    },
  );
});

Deno.test("runCompletionHook() logs a hook that cannot be started", async () => {
  const { lines, log } = collector();
  const ok = await runCompletionHook({
    program: "/nonexistent/push_to_pacs",
    jobId: "job-3",
    resultDir: "/r",
    log,
  });
  assert.equal(ok, false);
  assert.match(
    lines.join("\n"),
    /^WARN job job-3: cannot start CLIENT_DAEMON_ON_COMPLETE \/nonexistent\/push_to_pacs/m,
  );
});

Deno.test("runCompletionHook() stops a hook that runs too long, and one the watcher stops", async () => {
  await withScript(`#!/bin/sh\nexec sleep 30\n`, async (program) => {
    const { lines, log } = collector();
    const started = Date.now();
    assert.equal(
      await runCompletionHook({ program, jobId: "job-4", resultDir: "/r", log, timeoutMs: 200 }),
      false,
    );
    assert.ok(Date.now() - started < 5000);
    assert.match(lines.join("\n"), /was stopped: it ran longer than 0\.2 s/);

    const controller = new AbortController();
    const running = runCompletionHook({
      program,
      jobId: "job-5",
      resultDir: "/r",
      log,
      signal: controller.signal,
    });
    setTimeout(() => controller.abort(), 100);
    assert.equal(await running, false);
    assert.match(lines.join("\n"), /job-5: .* was stopped: the watcher is stopping/);
  });
});
