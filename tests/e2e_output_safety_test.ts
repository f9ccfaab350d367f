/**
 * End to end, what may come back as a job's results (issue 11): only files in the
 * output directory the server created for the job. A script that swaps that directory
 * for a link to /etc gets its job failed and nothing sent; what a script killed with
 * the server left in its output directory is removed at the next start, never kept
 * as results (the job store says the job never finished); and a file a previous job's stray writer drops into the shared
 * RECON_DICOM_DIR never reaches the next job's client.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { E2EServer, listDir, pgrep, tempDir, waitFor } from "./support/e2e.ts";

/** A recon script `recon.sh` in a fresh directory. */
async function script(dir: string, body: string): Promise<string> {
  const file = path.join(dir, "recon.sh");
  await Deno.writeTextFile(file, body);
  return file;
}

Deno.test("a script that replaces RECON_OUTPUT_DIR with a link to a secret fails its job and nothing is sent", async () => {
  await using files = await tempDir();
  const secret = path.join(files.path, "etc");
  await Deno.mkdir(secret);
  await Deno.writeTextFile(path.join(secret, "shadow"), "root:$6$secret-hash");
  await using server = await E2EServer.start({
    script: await script(
      files.path,
      `rmdir "$RECON_OUTPUT_DIR" && ln -s ${JSON.stringify(secret)} "$RECON_OUTPUT_DIR"\n`,
    ),
  });
  const input = path.join(files.path, "P00001.7");
  await Deno.writeTextFile(input, "raw");
  const result = await server.client(["--files", input]);
  assert.equal(result.code, 1, `${result.stderr}\n--- server ---\n${server.log}`);
  assert.equal(result.stdout, "");
  assert.match(
    result.stderr,
    /RECON_OUTPUT_DIR is not the directory the server created \(it is now a symbolic link to .*etc.*\); no results are sent/,
  );
  await server.waitForLog(/failed: RECON_OUTPUT_DIR is not the directory .*symbolic link/);
  const downloaded = await listDir(server.downloadDir);
  for (const job of downloaded) {
    assert.deepEqual(await listDir(path.join(server.downloadDir, job)), [], "nothing arrived");
  }
  assert.deepEqual(await listDir(secret), ["shadow"], "the link's target is untouched");
  await server.waitForNoJobDirs();
});

Deno.test("a restart after a SIGKILL mid-script removes the partial output and says so", async () => {
  await using files = await tempDir();
  const marker = `1000.${crypto.getRandomValues(new Uint32Array(1))[0]}`;
  // One attempt: the restart fails the job rather than running it again.
  const server = await E2EServer.start({
    script: await script(
      files.path,
      `echo half > "$RECON_OUTPUT_DIR/partial.dcm"\nexec sleep ${marker}\n`,
    ),
    options: { CLIENT_RECONNECT_TIMEOUT: 1, JOB_MAX_ATTEMPTS: 1 },
    expectCleanJobDirs: false,
  });
  await using _ = server;
  const input = path.join(files.path, "P00001.7");
  await Deno.writeTextFile(input, "raw");
  try {
    await using client = server.spawnClient(["--files", input]);
    const partial = await waitFor("the script's partial output", async () => {
      for (const name of await listDir(server.dicomDir)) {
        const file = path.join(server.dicomDir, name, "partial.dcm");
        if (await Deno.stat(file).then(() => true, () => false)) return name;
      }
      return undefined;
    });
    await waitFor("the script to run", async () => (await pgrep(marker)).length > 0);
    await server.stop("SIGKILL");
    // It gave up reconnecting: the job stays on the server (exit 5).
    assert.equal((await client.result(30_000)).code, 5);

    await server.restart();
    const dir = path.join(server.dicomDir, partial);
    assert.ok(
      server.log.includes(
        `removed ${dir}, partial output of a job that never finished (the server stopped during it)`,
      ),
      server.log,
    );
    assert.deepEqual(await listDir(server.dicomDir), [], "no partial output is left");
    const jobId = /^job_(.*)_output$/.exec(partial)![1];
    assert.deepEqual(
      (await listDir(server.reconFilePath)).filter((name) => name.startsWith("job_")),
      [`job_${jobId}.log`, `job_${jobId}_input`],
      "only the job's log and its inputs, kept for a re-run, are left in RECON_FILEPATH",
    );
  } finally {
    for (const pid of await pgrep(marker)) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
  }
});

Deno.test("a file a previous job's stray writer drops into RECON_DICOM_DIR never reaches the next job's client", async () => {
  await using files = await tempDir();
  // Job A starts a writer that leaves both its process group and its environment (so
  // the server cannot find it) and writes patient A's image into the shared
  // RECON_DICOM_DIR while job B runs. Deterministic order: A's script returns once its writer runs without the job's
  // environment; the writer writes once B's script runs; B finishes after that.
  const started = JSON.stringify(path.join(files.path, "writer_started"));
  const bRunning = JSON.stringify(path.join(files.path, "b_running"));
  const wait = (file: string) =>
    `i=0; while [ ! -e ${file} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done`;
  const body = `DICOM="$(dirname "$RECON_OUTPUT_DIR")"
if [ "$3" = a ]; then
  setsid env -i sh -c 'touch "$1"; ${wait('"$2"')}; echo PATIENT-A > "$0/patient_a.dcm"' \\
    "$DICOM" ${started} ${bRunning} </dev/null >/dev/null 2>&1 &
  ${wait(started)}
  echo A > "$RECON_OUTPUT_DIR/a.dcm"
else
  touch ${bRunning}
  ${wait('"$DICOM/patient_a.dcm"')}
  echo B > "$RECON_OUTPUT_DIR/b.dcm"
fi
`;
  await using server = await E2EServer.start({ script: await script(files.path, body) });
  const input = path.join(files.path, "P00001.7");
  await Deno.writeTextFile(input, "raw");
  const a = await server.client(["--files", input, "--recon-options", '{"role": "a"}']);
  assert.equal(a.code, 0, a.stderr);
  const b = await server.client(["--files", input, "--recon-options", '{"role": "b"}']);
  assert.equal(b.code, 0, b.stderr);
  assert.deepEqual(
    b.stdout.trimEnd().split("\n").map((file) => path.basename(file)),
    ["b.dcm", "provenance.json"],
    "job B received only its own image (and the server's provenance.json)",
  );
  // The stray file did land in the shared directory, and stays there.
  assert.equal(
    await Deno.readTextFile(path.join(server.dicomDir, "patient_a.dcm")),
    "PATIENT-A\n",
  );
  await server.waitForNoJobDirs();
});

/** Writes ok.dcm and -rf.dcm (sent), a name with a newline, one with an escape sequence
 * and links to /etc and /etc/passwd (skipped). */
const MIXED_RESULTS = `printf 'ok' >"$RECON_OUTPUT_DIR/ok.dcm"
printf 'dash' >"$RECON_OUTPUT_DIR/-rf.dcm"
printf 'bad' >"$RECON_OUTPUT_DIR/$(printf 'a\\nb.dcm')"
printf 'bad' >"$RECON_OUTPUT_DIR/$(printf 'e\\033[31mred.dcm')"
ln -s /etc "$RECON_OUTPUT_DIR/etc"
ln -s /etc/passwd "$RECON_OUTPUT_DIR/passwd"
`;

Deno.test("result files the server skips are counted by the client: a warning, skipped in --json, exit 0", async () => {
  await using files = await tempDir();
  await using server = await E2EServer.start({ script: await script(files.path, MIXED_RESULTS) });
  const input = path.join(files.path, "P00001.7");
  await Deno.writeTextFile(input, "raw");
  const warning = "recon-client: warning: 4 result file(s) the script wrote were not sent " +
    "(names a client refuses, links or special files); the server log says which\n";

  const text = await server.client(["--files", input]);
  assert.equal(text.code, 0, `${text.stderr}\n--- server ---\n${server.log}`);
  assert.match(text.stderr, /complete: 3 file\(s\)/, "ok.dcm, -rf.dcm and provenance.json");
  assert.ok(text.stderr.includes(warning), text.stderr);
  assert.equal(text.stderr.includes("passwd"), false, "no skipped name reaches the client");
  const paths = text.stdout.trimEnd().split("\n");
  assert.deepEqual(paths.map((p) => path.basename(p)), ["-rf.dcm", "ok.dcm", "provenance.json"]);

  const json = await server.client(["--files", input, "--json"]);
  assert.equal(json.code, 0, json.stderr);
  assert.equal(json.stderr, warning, "--json keeps stderr to the warning");
  const report = JSON.parse(json.stdout);
  assert.equal(report.status, "completed");
  assert.equal(report.skipped, 4);
  assert.deepEqual(report.files.map((f: { name: string }) => f.name), [
    "-rf.dcm",
    "ok.dcm",
    "provenance.json",
  ]);

  await server.waitForLog(/not sending passwd \(symbolic link\)/);
  await server.waitForLog(/not sending "a\\nb\.dcm" \(.*control character/);
  await server.waitForNoJobDirs();
});

Deno.test("a job whose every result file was skipped fails and says how many were not sent", async () => {
  await using files = await tempDir();
  await using server = await E2EServer.start({
    script: await script(
      files.path,
      `printf 'bad' >"$RECON_OUTPUT_DIR/$(printf 'a\\nb.dcm')"\nln -s /etc/passwd "$RECON_OUTPUT_DIR/passwd"\n`,
    ),
  });
  const input = path.join(files.path, "P00001.7");
  await Deno.writeTextFile(input, "raw");
  const result = await server.client(["--files", input, "--json"]);
  assert.equal(result.code, 1, `${result.stderr}\n--- server ---\n${server.log}`);
  const report = JSON.parse(result.stdout);
  assert.match(
    report.error,
    /wrote no result the client can receive into RECON_OUTPUT_DIR \(2 entries were not sent: .*the server log names them\)/,
  );
  await server.waitForNoJobDirs();
});
