/**
 * End to end, RECON_SCRIPT misbehaving: it fails, hangs past JOB_TIMEOUT with a
 * grandchild, writes no result, floods its output, or leaves a symlink to a file
 * outside its output directory. Each gives the client a plain outcome, and the server
 * stays up, bounded in memory, with nothing left behind.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { delay, E2EServer, listDir, pgrep, testdata, UUID, waitFor } from "./support/e2e.ts";

Deno.test("RECON_SCRIPT failures reach the client as job_failed, and the server cleans up", async (t) => {
  await using server = await E2EServer.start({
    script: testdata("e2e_recon.sh"),
    // Long enough for the 38 MB output flood below on a loaded 2-core machine (it takes
    // ~0.5 s alone), short enough for the hang step.
    options: { JOB_TIMEOUT: 6 },
  });
  const file = path.join(server.dir, "P00042.7");
  await Deno.writeTextFile(file, "raw data");
  const submit = (options: Record<string, unknown>, ...flags: string[]) =>
    server.client(["--files", file, "--recon-options", JSON.stringify(options), ...flags]);

  await t.step(
    "a script exiting with 3 fails the job: exit 1, reason and stderr tail",
    async () => {
      const result = await submit({ stderr_lines: 25, exit: 3 });
      assert.equal(result.code, 1, result.stderr);
      assert.equal(result.stdout, "");
      assert.match(
        result.stderr,
        new RegExp(
          `^recon-client: error: job ${UUID.source} failed: the reconstruction script exited with code 3$`,
          "m",
        ),
      );
      // The reason names the exit code: no detail line repeats it.
      assert.doesNotMatch(result.stderr, /script exit code/);
      assert.match(
        result.stderr,
        /^hint: .*whole output is in RECON_FILEPATH\/job_[0-9a-f-]+\.log/m,
      );
      const hint = "on the server:\n";
      assert.ok(result.stderr.includes(hint), result.stderr);
      const tail = result.stderr.slice(result.stderr.indexOf(hint) + hint.length).trimEnd();
      assert.deepEqual(
        tail.split("\n"),
        Array.from({ length: 20 }, (_, i) => `  e2e stderr line ${i + 6}`),
        "the last 20 lines of the script's stderr end the report",
      );

      const json = await submit({ stderr_lines: 2, exit: 3 }, "--json");
      assert.equal(json.code, 1);
      const report = JSON.parse(json.stdout);
      assert.equal(report.status, "failed");
      assert.equal(report.exit_code, 1);
      assert.equal(report.script_exit_code, 3);
      assert.match(report.job_id, UUID);
      assert.match(report.error, /exited with code 3/);
      assert.deepEqual(report.stderr_tail, ["e2e stderr line 1", "e2e stderr line 2"]);
      await server.waitForNoJobDirs();
    },
  );

  await t.step(
    "a script hanging past JOB_TIMEOUT is stopped with its whole process group",
    async () => {
      // A sleep length no other process uses: it marks the script and its grandchild.
      const marker = `1000.${crypto.getRandomValues(new Uint32Array(1))[0]}`;
      const started = Date.now();
      const result = await submit({ hang: marker });
      const elapsed = Date.now() - started;
      assert.equal(result.code, 1, result.stderr);
      assert.match(
        result.stderr,
        /failed: the script did not finish within JOB_TIMEOUT \(6 s\) and was stopped/,
      );
      assert.ok(elapsed < 15_000, `the job was stopped soon after JOB_TIMEOUT (${elapsed} ms)`);
      // The client has exited, so only the script group could still hold the marker.
      const left = await waitFor("the script's processes to end", async () => {
        const pids = await pgrep(marker);
        return pids.length === 0 ? pids : undefined;
      }, { timeoutMs: 5000 }).catch(async () => await pgrep(marker));
      assert.deepEqual(left, [], "no process of the script's group (sleep &) survives");
      await server.waitForNoJobDirs();
    },
  );

  await t.step('a script that writes no result fails the job with "no result files"', async () => {
    const result = await submit({ no_output: 1 }, "--json");
    assert.equal(result.code, 1, result.stderr);
    const report = JSON.parse(result.stdout);
    assert.equal(report.status, "failed");
    assert.equal(report.script_exit_code, 0);
    assert.match(report.error, /wrote no result files/);
    assert.match(result.stderr, /no result files/);
    assert.deepEqual(
      await listDir(path.join(server.downloadDir, report.job_id)),
      [],
      "no download directory is made for a failed job",
    );
    await server.waitForNoJobDirs();
  });

  await t.step(
    "a script that floods stdout: the job completes, server memory stays bounded",
    async () => {
      const before = await server.rssKiB();
      let peak = before;
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          peak = Math.max(peak, await server.rssKiB());
          await delay(25);
        }
      })();
      let result;
      try {
        // 200,000 lines of about 190 bytes: 38 MB of output.
        result = await submit({ flood: 200_000 });
      } finally {
        sampling = false;
        await sampler;
      }
      assert.equal(result.code, 0, result.stderr.slice(-2000));
      assert.match(result.stdout, /manifest\.txt$/m, "the results arrived");
      const progress = result.stderr.split("\n").filter((line) => line.startsWith("  | line "));
      assert.ok(progress.length > 0, "the client got progress lines");
      assert.ok(progress.length <= 200_000);
      const growthMiB = (peak - before) / 1024;
      // 150 MiB: the design's memory target for the server, whatever the job does.
      assert.ok(
        peak < 150 * 1024 && growthMiB < 100,
        `server RSS stayed bounded: ${before} KiB before, peak ${peak} KiB`,
      );
      const log = await Deno.stat(
        path.join(server.reconFilePath, `job_${/job (\S+) queued/.exec(result.stderr)![1]}.log`),
      );
      assert.ok(log.size <= 17 * 1024 * 1024, `the job log is capped (${log.size} bytes)`);
      await server.waitForNoJobDirs();
    },
  );

  await t.step("a symlink in the output directory is not sent; the normal files are", async () => {
    const result = await submit({ symlink: "/etc/passwd" }, "--json");
    assert.equal(result.code, 0, result.stderr);
    const report = JSON.parse(result.stdout);
    assert.deepEqual(
      report.files.map((f: { name: string }) => f.name),
      ["derived/P00042.7.copy", "manifest.txt", "provenance.json"],
    );
    assert.deepEqual(await listDir(report.result_dir), [
      "derived",
      "manifest.txt",
      "provenance.json",
    ]);
    await server.waitForLog(/not sending link \(symbolic link\)/);
    await server.waitForNoJobDirs();
  });

  await t.step("the server still answers after all of it", async () => {
    const status = await server.client(["--server-status", "--json"]);
    assert.equal(status.code, 0, status.stderr);
    const fields = JSON.parse(status.stdout);
    assert.equal(fields.jobs_failed, 4);
    assert.equal(fields.jobs_completed, 2);
    assert.equal(fields.active_workers, 0);
  });
});
