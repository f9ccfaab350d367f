/**
 * `recon-client watch` bad input, as a real process: each mistake exits 2 with one
 * clear line before anything is watched or sent.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { WatcherProcess, WatchSite } from "../support/e2e.ts";

async function watchFails(site: WatchSite, args: string[], pattern: RegExp) {
  const result = await site.client(args);
  assert.equal(result.code, 2, `exit code; stderr:\n${result.stderr}`);
  assert.match(result.stderr, pattern);
  // With --json the entrypoint prints the error as a JSON document on stdout too.
  if (args.includes("--json")) assert.equal(JSON.parse(result.stdout).exit_code, 2);
  else assert.equal(result.stdout, "");
  return result;
}

Deno.test("watch with a watch directory that does not exist exits 2 with a clear line", async () => {
  await using site = await WatchSite.create();
  const missing = path.join(site.dir, "no_such_dir");
  const result = await watchFails(
    site,
    ["--watch-dir", missing],
    /^recon-client: error: cannot watch .*no_such_dir: no such file or directory$/m,
  );
  assert.match(result.stderr, /^hint: .*--watch-dir/m);
});

Deno.test("watch with a watch directory that is a file exits 2", async () => {
  await using site = await WatchSite.create();
  await watchFails(site, ["--watch-dir", site.optsPath], /cannot watch .*recon\.opts/);
});

Deno.test("watch without CLIENT_WATCH_DIRECTORY exits 2 and names the option", async () => {
  await using site = await WatchSite.create();
  await Deno.writeTextFile(site.optsPath, "CLIENT_WATCH_DIRECTORY =\n", { append: true });
  await watchFails(site, [], /CLIENT_WATCH_DIRECTORY is not set/);
});

Deno.test("watch with bad recon options exits 2 and names where they came from", async () => {
  await using site = await WatchSite.create();
  await watchFails(site, ["--recon-options", "[1, 2]"], /--recon-options: .*must be a JSON object/);
  await watchFails(site, ["--recon-options", "{nope"], /--recon-options: .*not valid JSON/);
  await Deno.writeTextFile(
    site.optsPath,
    'CLIENT_DAEMON_RECON_OPTIONS_JSON = {"bad key": 1}\n',
    { append: true },
  );
  await watchFails(site, [], /CLIENT_DAEMON_RECON_OPTIONS_JSON: recon option key "bad key"/);
});

Deno.test("watch refuses a second watcher on the same state file", async () => {
  await using site = await WatchSite.create();
  await using first = await WatcherProcess.start(site, 1);
  await watchFails(
    site,
    [],
    /another recon-client watch is running with state file .*recon-watch\.sqlite/,
  );
  const status = await site.client(["--status"]);
  assert.equal(status.code, 0, status.stdout);
  assert.match(status.stdout, /^watcher: +running \(pid \d+, started .* UTC; last scan .* UTC\)$/m);
  assert.match(status.stdout, /^health: +ok$/m);
  assert.match(first.stderr, /watching /);
});

Deno.test("watch flags: unknown flags, --status with --retry, --json alone, bad --port", async () => {
  await using site = await WatchSite.create();
  await watchFails(site, ["--nope"], /error: unknown option --nope\n/);
  await watchFails(site, ["--status", "--retry", "x"], /either --status or --retry/);
  await watchFails(site, ["--json"], /--json goes with --status or --retry/);
  await watchFails(site, ["--port", "70000"], /--port must be a number from 1 to 65535/);
  await watchFails(site, ["--pattern", ""], /--pattern must not be empty/);
  await watchFails(
    site,
    ["--submit-existing", "--since", "1d"],
    /use either --submit-existing or --since/,
  );
  await watchFails(site, ["--status", "--since", "1d"], /go with starting the watcher/);
  await watchFails(site, ["--since", "last tuesday"], /--since "last tuesday" is not a date/);
  await watchFails(site, ["--exit-zero"], /--exit-zero goes with --status/);
  await watchFails(
    site,
    ["--max-waiting", "1h", "--prometheus"],
    /--prometheus and --max-waiting go with --status/,
  );
  await watchFails(site, ["--status", "--json", "--prometheus"], /either --json or --prometheus/);
  for (const bad of ["1w", "-5m", "", "1h30m", "2e3", "10 m", "400d", "Infinity"]) {
    const result = await watchFails(
      site,
      ["--status", `--max-waiting=${bad}`],
      /--max-waiting ".*" is not a duration of up to a year/,
    );
    assert.match(result.stderr, /^hint: for example --max-waiting 30m, 2h, 1d or 600/m);
  }
  await watchFails(site, ["--status", "--max-backoff", "soon"], /--max-backoff "soon"/);
});

Deno.test("watch --status before any run says the state file does not exist yet, and exits 10: no watcher runs", async () => {
  await using site = await WatchSite.create();
  const text = await site.client(["--status"]);
  assert.equal(text.code, 10, text.stderr);
  assert.match(text.stdout, /recon-watch\.sqlite \(not created yet\)/);
  assert.match(
    text.stdout,
    /^problem: +no watcher is running, and none has run with this state file yet$/m,
  );
  const result = await site.client(["--status", "--json"]);
  assert.equal(result.code, 10);
  const json = JSON.parse(result.stdout);
  assert.equal(json.state_file_exists, false);
  assert.deepEqual(json.files, []);
  assert.equal(json.health.exit_code, 10);
  assert.deepEqual(json.health.problems.map((p: { check: string }) => p.check), ["not_running"]);
  const old = await site.client(["--status", "--json", "--exit-zero"]);
  assert.equal(old.code, 0, "--exit-zero: the exit code before the health check");
  assert.equal(JSON.parse(old.stdout).health.exit_code, 10);
  await Deno.stat(site.optsPath);
  await assert.rejects(Deno.stat(path.join(site.dir, "recon-watch.sqlite")));
  await watchFails(site, ["--retry", "x.7"], /no state file at .*recon-watch\.sqlite/);
});

Deno.test("watch --help describes the command and exits 0", async () => {
  await using site = await WatchSite.create();
  const result = await site.client(["--help"]);
  assert.equal(result.code, 0);
  assert.match(result.stdout, /recon-client watch --status/);
  assert.match(result.stdout, /--retry FILE\|JOB_ID/);
  assert.match(result.stdout, /--submit-existing/);
  assert.match(result.stdout, /--since TIME/);
  for (const code of [10, 11, 12, 13]) assert.match(result.stdout, new RegExp(`^ +${code} `, "m"));
  assert.match(result.stdout, /--max-waiting DURATION .*\(default\s+60 min\)/s);
  assert.match(result.stdout, /--max-backoff DURATION .*\(default\s+15 min\)/s);
  assert.match(result.stdout, /--exit-zero +exit 0 whatever the health/);
  assert.match(result.stdout, /--prometheus/);
  assert.match(
    result.stdout,
    /first start .* records the files already in the directory as\s+"baseline"/,
  );
});
