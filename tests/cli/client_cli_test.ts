/**
 * recon-client's command line end to end (bin/recon-client against a real server):
 * which options a one-off submission uses, global options before `watch`, and the
 * messages for common slips, each in our words with what to do next; the job commands
 * by id (`--detach`, `wait`, `jobs`, `logs`, `fetch` twice, `cancel`), refusals in one
 * line, and exit code 5 with a fetch command that works once the server is back.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { CLIENT_BIN, E2EServer, listDir, run, testdata } from "../support/e2e.ts";

/** The `recon-client: error: …` line of a failed run (there must be exactly one). */
function errorLine(stderr: string): string {
  const lines = stderr.split("\n").filter((line) => line.startsWith("recon-client: error: "));
  assert.equal(lines.length, 1, `one error line in:\n${stderr}`);
  return lines[0];
}

/** The `arg …` lines e2e_recon.sh recorded in the job's manifest.txt (the script's argv). */
async function scriptArgs(stdout: string): Promise<string[]> {
  const manifest = stdout.split("\n").find((line) => line.endsWith("/manifest.txt"));
  assert.ok(manifest, `manifest.txt among the results:\n${stdout}`);
  const text = await Deno.readTextFile(manifest);
  return text.split("\n").filter((line) => line.startsWith("arg ")).slice(1);
}

Deno.test("a one-off submission ignores CLIENT_DAEMON_RECON_OPTIONS_JSON (watch mode's option)", async () => {
  await using server = await E2EServer.start({
    script: testdata("e2e_recon.sh"),
    options: { CLIENT_DAEMON_RECON_OPTIONS_JSON: '{"name": "watched"}' },
  });
  const file = path.join(server.dir, "P00001.7");
  await Deno.writeTextFile(file, "raw");

  const plain = await server.client(["--files", file]);
  assert.equal(plain.code, 0, plain.stderr);
  assert.deepEqual(await scriptArgs(plain.stdout), []);

  const given = await server.client(["--files", file, "--recon-options", '{"name": "given"}']);
  assert.equal(given.code, 0, given.stderr);
  assert.deepEqual(await scriptArgs(given.stdout), ["arg --name", "arg given"]);
});

Deno.test("common slips get our own message naming what to do", async (t) => {
  await using server = await E2EServer.start({ script: testdata("e2e_recon.sh") });
  const file = path.join(server.dir, "P00001.7");
  await Deno.writeTextFile(file, "raw");

  await t.step("no files and a missing CLIENT_DEFAULT_PFILE_PATH names both ways out", async () => {
    const result = await server.client([]);
    assert.equal(result.code, 2, result.stderr);
    assert.equal(
      errorLine(result.stderr),
      "recon-client: error: no input files given, and the default CLIENT_DEFAULT_PFILE_PATH " +
        `${
          path.join(server.dir, "default_pfile", "P00000.7")
        } cannot be used: no such file or directory`,
    );
    assert.match(
      result.stderr,
      /^hint: name the files: recon-client --files FILE\.\.\. \(or --directory DIR\); or set CLIENT_DEFAULT_PFILE_PATH in .*recon\.opts$/m,
    );
  });

  await t.step("--file: unknown option, did you mean --files", async () => {
    const result = await server.client(["--file", file]);
    assert.equal(result.code, 2, result.stderr);
    assert.equal(
      errorLine(result.stderr),
      "recon-client: error: unknown option --file (did you mean --files?)",
    );
    assert.match(result.stderr, /^hint: see 'recon-client --help'$/m);
  });

  await t.step("a download dir under /sys is refused in our words, before sending", async () => {
    const result = await server.client(["--files", file, "--download-dir", "/sys/kernel/recon"]);
    assert.equal(result.code, 2, result.stderr);
    assert.equal(
      errorLine(result.stderr),
      "recon-client: error: cannot write results to --download-dir /sys/kernel/recon: " +
        "recon-client may not use paths under /dev, /proc or /sys",
    );
    assert.match(result.stderr, /^hint: choose a directory you can write$/m);
    assert.doesNotMatch(result.stderr, /allow-all/);
  });

  await t.step("CLIENT_DOWNLOAD_DIR under /proc names the option and the file", async () => {
    const optsPath = await server.writeClientOpts("proc_dir.opts", {
      CLIENT_DOWNLOAD_DIR: "/proc/recon",
    });
    const result = await server.client(["--files", file], { optsPath });
    assert.equal(result.code, 2, result.stderr);
    assert.match(
      errorLine(result.stderr),
      /cannot write results to CLIENT_DOWNLOAD_DIR \/proc\/recon \(from .*proc_dir\.opts\): recon-client may not use paths under/,
    );
    assert.match(
      result.stderr,
      /^hint: set CLIENT_DOWNLOAD_DIR in .*proc_dir\.opts, or pass --download-dir/m,
    );
  });

  await t.step(
    "an input file under /proc, and --opts under /proc, are refused in our words",
    async () => {
      const input = await server.client(["--files", "/proc/cpuinfo"]);
      assert.equal(input.code, 2, input.stderr);
      assert.equal(
        errorLine(input.stderr),
        "recon-client: error: cannot use input file /proc/cpuinfo: " +
          "recon-client may not use paths under /dev, /proc or /sys",
      );
      assert.match(input.stderr, /^hint: copy it to a directory outside \/dev, \/proc and \/sys$/m);
      const opts = await run(CLIENT_BIN, ["--opts", "/proc/no_such.opts", "--server-status"]);
      assert.equal(opts.code, 2, opts.stderr);
      assert.match(
        errorLine(opts.stderr),
        /recon-client may not use paths under \/dev, \/proc or \/sys$/,
      );
      assert.match(opts.stderr, /^hint: /m);
      assert.doesNotMatch(input.stderr + opts.stderr, /allow-all/);
    },
  );

  await t.step("nothing reached the server as a job", () => {
    assert.doesNotMatch(server.log, /receiving \d+ file/);
  });
});

Deno.test("global options may come before the watch command as well as after it", async () => {
  await using server = await E2EServer.start({ script: testdata("e2e_recon.sh") });
  const state = path.join(server.dir, "watch.sqlite");
  const optsPath = await server.writeClientOpts("watch.opts", { CLIENT_DAEMON_STATE_FILE: state });
  const orders = [
    ["watch", "--opts", optsPath, "--status", "--json"],
    ["--opts", optsPath, "watch", "--status", "--json"],
    ["--opts", optsPath, "--json", "--debug", "watch", "--status"],
    [`--opts=${optsPath}`, "--port", "1", "watch", "--status", "--json"],
  ];
  for (const argv of orders) {
    const result = await run(CLIENT_BIN, argv, { cwd: server.dir });
    // 10: the health check finds no watcher running (docs/WATCH.md §12).
    assert.equal(result.code, 10, `${argv.join(" ")}:\n${result.stderr}`);
    assert.equal(JSON.parse(result.stdout).state_file, state, argv.join(" "));
  }
  // The same option after the command wins, as with git.
  const later = await run(CLIENT_BIN, [
    "--opts",
    path.join(server.dir, "no_such_dir", "x.opts"),
    "watch",
    "--opts",
    optsPath,
    "--status",
    "--json",
  ]);
  assert.equal(later.code, 10, later.stderr);

  const misplaced = await run(CLIENT_BIN, ["--opts", optsPath, "--quiet", "watch", "--status"]);
  assert.equal(misplaced.code, 2, misplaced.stderr);
  assert.equal(
    errorLine(misplaced.stderr),
    'recon-client: error: "watch" must come first, or after global options only',
  );
  assert.match(
    misplaced.stderr,
    /^hint: global options are --opts, --host, --port, --json, --debug, --allow-unknown-options;/m,
  );

  const typo = await run(CLIENT_BIN, ["--opts", optsPath, "watch", "--stauts"]);
  assert.equal(typo.code, 2, typo.stderr);
  assert.equal(
    errorLine(typo.stderr),
    "recon-client: error: unknown option --stauts (did you mean --status?)",
  );
  assert.match(typo.stderr, /^hint: see 'recon-client watch --help'$/m);
});

const UUID_TEXT = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

Deno.test("--detach prints the job id alone; wait, jobs, logs and fetch (twice) find it by that id", async () => {
  await using server = await E2EServer.start({ script: testdata("e2e_recon.sh") });
  const file = path.join(server.dir, "P00001.7");
  await Deno.writeTextFile(file, "raw");
  const detached = await server.client([
    "--files",
    file,
    "--detach",
    "--priority",
    "low",
    "--recon-options",
    '{"progress": 50}',
  ]);
  assert.equal(detached.code, 0, detached.stderr);
  const jobId = detached.stdout.trim();
  assert.match(jobId, UUID_TEXT);
  assert.equal(detached.stdout, `${jobId}\n`, "only the id on stdout");
  assert.deepEqual(await listDir(server.downloadDir), [], "nothing downloaded");

  const waited = await server.client(["wait", jobId]);
  assert.equal(waited.code, 0, waited.stderr);
  assert.match(
    waited.stdout,
    new RegExp(
      `^${jobId} succeeded at \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d UTC: 3 result file\\(s\\), `,
    ),
  );

  const listed = await server.client(["jobs", "--json"]);
  assert.equal(listed.code, 0, listed.stderr);
  const [job] = JSON.parse(listed.stdout).jobs;
  assert.equal(job.job_id, jobId);
  assert.equal(job.state, "succeeded");
  assert.equal(job.priority, "low");
  const table = await server.client(["jobs", "--state", "succeeded"]);
  assert.match(table.stdout, /^JOB ID +FILE +STATE +PRIORITY +POS +SUBMITTED \(UTC\)/);
  assert.match(table.stdout, new RegExp(`^${jobId} +P00001\\.7 +succeeded +low +- +`, "m"));

  const logs = await server.client(["logs", jobId]);
  assert.equal(logs.code, 0, logs.stderr);
  assert.match(logs.stdout, /PROGRESS 50/);

  const fetched = await server.client(["fetch", jobId]);
  assert.equal(fetched.code, 0, fetched.stderr);
  const paths = fetched.stdout.trimEnd().split("\n");
  assert.deepEqual(
    paths.map((p) => path.relative(path.join(server.downloadDir, jobId), p)).sort(),
    ["derived/P00001.7.copy", "manifest.txt", "provenance.json"],
  );
  const again = await server.client(["fetch", jobId, "--json"]);
  assert.equal(again.code, 0, again.stderr);
  const document = JSON.parse(again.stdout);
  assert.equal(document.status, "completed");
  assert.deepEqual(document.files.map((f: { path: string }) => f.path).sort(), paths.sort());
  assert.match(server.log, /delivered/);
});

Deno.test("requests about a job by id: one line in the server's words and exit 1; a malformed id is exit 2", async () => {
  await using server = await E2EServer.start({ script: testdata("e2e_recon.sh") });
  const unknown = "0b7f0f2e-3c1a-4b5e-9d2f-6a7b8c9d0e1f";
  for (const args of [["fetch", unknown], ["cancel", unknown], ["logs", unknown]]) {
    const result = await server.client(args);
    assert.equal(result.code, 1, `${args[0]}: ${result.stderr}`);
    assert.match(errorLine(result.stderr), new RegExp(`${unknown}`));
  }
  const waited = await server.client(["wait", unknown]);
  assert.equal(waited.code, 1, waited.stderr);
  assert.match(waited.stdout, new RegExp(`^${unknown} `));

  const file = path.join(server.dir, "P00001.7");
  await Deno.writeTextFile(file, "raw");
  const done = await server.client(["--files", file, "--json"]);
  assert.equal(done.code, 0, done.stderr);
  const { job_id: jobId } = JSON.parse(done.stdout);
  const cancel = await server.client(["cancel", jobId]);
  assert.equal(cancel.code, 1, cancel.stderr);
  assert.match(errorLine(cancel.stderr), new RegExp(`job ${jobId} .*succeeded`));
  assert.equal(cancel.stdout, "");

  const malformed = await server.client(["fetch", "not-a-job"]);
  assert.equal(malformed.code, 2, malformed.stderr);
  assert.equal(errorLine(malformed.stderr), 'recon-client: error: "not-a-job" is not a job id');
});

Deno.test("a server gone for longer than CLIENT_RECONNECT_TIMEOUT: exit 5, the job id and a fetch command that works once it is back", async () => {
  await using server = await E2EServer.start({
    script: testdata("e2e_recon.sh"),
    expectCleanJobDirs: false,
  });
  const optsPath = await server.writeClientOpts("impatient.opts", { CLIENT_RECONNECT_TIMEOUT: 2 });
  const file = path.join(server.dir, "P00001.7");
  await Deno.writeTextFile(file, "raw");
  const downloads = path.join(server.dir, "elsewhere");
  const flag = path.join(server.dir, "go");
  await using client = server.spawnClient([
    "--files",
    file,
    "--download-dir",
    downloads,
    "--json",
    "--recon-options",
    JSON.stringify({ wait_for: flag }),
  ], { optsPath });
  await server.waitForLog(/job \S+: running|started/);
  await server.stop("SIGTERM");
  const result = await client.result(30_000);
  assert.equal(result.code, 5, result.stderr);
  const document = JSON.parse(result.stdout);
  assert.equal(document.exit_code, 5);
  assert.match(document.job_id, UUID_TEXT);
  const expected =
    `recon-client --opts ${optsPath} --port ${server.port} fetch ${document.job_id} ` +
    `--download-dir ${downloads}`;
  assert.equal(document.fetch_command, expected);
  assert.match(
    errorLine(result.stderr),
    new RegExp(
      `^recon-client: error: lost the connection while following job ${document.job_id} and ` +
        "could not reconnect within CLIENT_RECONNECT_TIMEOUT \\(2 s\\): ",
    ),
  );
  assert.match(result.stderr, new RegExp(`^hint: .*fetch its results later: ${expected}$`, "m"));
  assert.match(result.stderr, /^connection lost: .*; reconnecting in [\d.]+ s…$/m);

  await server.restart();
  await Deno.writeTextFile(flag, "");
  const fetched = await run(CLIENT_BIN, document.fetch_command.split(" ").slice(1));
  assert.equal(fetched.code, 0, fetched.stderr);
  assert.ok(
    fetched.stdout.split("\n").some((line) =>
      line === path.join(downloads, document.job_id, "manifest.txt")
    ),
    fetched.stdout,
  );
});

Deno.test("--help names every job command and exit code 5; each command has its own help", async () => {
  const help = await run(CLIENT_BIN, ["--help"]);
  assert.equal(help.code, 0);
  for (const command of ["jobs", "wait", "fetch", "cancel", "logs", "rerun"]) {
    assert.match(help.stdout, new RegExp(`^  ${command} `, "m"), command);
    const own = await run(CLIENT_BIN, [command, "--help"]);
    assert.equal(own.code, 0, own.stderr);
    assert.ok(own.stdout.startsWith(`recon-client ${command}: `), own.stdout);
  }
  assert.match(help.stdout, /^ {2}5 {4}the job is on the server/m);
  assert.match(help.stdout, /--detach/);
  assert.match(help.stdout, /--priority P/);
});
