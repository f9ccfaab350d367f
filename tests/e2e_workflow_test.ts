/**
 * End to end, the workflow a scanner drives: bin/recon-client sends files to a real
 * bin/recon-server, which runs RECON_SCRIPT (tests/testdata/e2e_recon.sh, or a `.m`
 * script through a stub MATLAB_COMMAND) and sends the results back. Checks what
 * arrives, what the script saw, and that the server leaves no job directory behind.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import {
  E2EServer,
  listDir,
  type RunResult,
  sha256File,
  testdata,
  UUID,
  writeRandomFile,
} from "./support/e2e.ts";

/** What e2e_recon.sh recorded in manifest.txt. */
interface Manifest {
  args: string[];
  sha256: Map<string, string>;
}

function parseManifest(text: string): Manifest {
  const args: string[] = [];
  const sha256 = new Map<string, string>();
  for (const line of text.split("\n")) {
    if (line.startsWith("arg ")) args.push(line.slice(4));
    else {
      const match = /^sha256 ([0-9a-f]{64}) (.+)$/.exec(line);
      if (match) sha256.set(match[2], match[1]);
    }
  }
  return { args, sha256 };
}

/** The downloaded paths on stdout, checked to lie in one CLIENT_DOWNLOAD_DIR/<job_id>/. */
function downloadedPaths(
  result: RunResult,
  downloadDir: string,
): { jobId: string; jobDir: string; paths: string[] } {
  assert.equal(result.code, 0, `client failed:\n${result.stderr}`);
  assert.ok(result.stdout.endsWith("\n"), "stdout ends with a newline");
  const paths = result.stdout.slice(0, -1).split("\n");
  const queued = new RegExp(`job (${UUID.source}) queued`).exec(result.stderr);
  assert.ok(queued, `stderr names the job id:\n${result.stderr}`);
  const jobId = queued[1];
  const jobDir = path.join(downloadDir, jobId);
  for (const file of paths) {
    assert.ok(path.isAbsolute(file), `${file} is an absolute path`);
    assert.ok(file.startsWith(jobDir + path.sep), `${file} lies under ${jobDir}`);
  }
  return { jobId, jobDir, paths };
}

Deno.test("a job with a 50 MB and a small file runs RECON_SCRIPT and brings its results back", async (t) => {
  await using server = await E2EServer.start({ script: testdata("e2e_recon.sh") });
  const inputs = path.join(server.dir, "scanner");
  await Deno.mkdir(inputs);

  await t.step("whole flow: files, recon options, results, SHA-256, cleanup", async () => {
    const big = path.join(inputs, "P12345.7");
    const small = path.join(inputs, "calibration.dat");
    const bigSha = await writeRandomFile(big, 50 * 1024 * 1024);
    await Deno.writeTextFile(small, "coil sensitivities\n");
    const smallSha = await sha256File(small);
    const options = { zeta: "last letter", alpha: 1, flag: true, it: "it's" };
    const result = await server.client([
      "--files",
      big,
      small,
      "--recon-options",
      JSON.stringify(options),
    ]);
    const { jobId, jobDir, paths } = downloadedPaths(result, server.downloadDir);
    assert.deepEqual(
      paths,
      [
        path.join(jobDir, "derived", "P12345.7.copy"),
        path.join(jobDir, "derived", "calibration.dat.copy"),
        path.join(jobDir, "manifest.txt"),
        path.join(jobDir, "provenance.json"),
      ].sort(),
    );
    assert.deepEqual(await listDir(jobDir), ["derived", "manifest.txt", "provenance.json"]);

    const manifest = parseManifest(await Deno.readTextFile(path.join(jobDir, "manifest.txt")));
    const inputDir = path.join(server.reconFilePath, `job_${jobId}_input`);
    assert.deepEqual(manifest.args, [
      inputDir,
      "--zeta",
      "last letter",
      "--alpha",
      "1",
      "--flag",
      "true",
      "--it",
      "it's",
    ], "the script got the input dir, then the options as --key value in their order");
    assert.equal(manifest.sha256.get("P12345.7"), bigSha, "the script read the 50 MB file intact");
    assert.equal(manifest.sha256.get("calibration.dat"), smallSha);
    assert.equal(manifest.sha256.size, 2, "exactly the two files were in the job input dir");
    assert.equal(await sha256File(path.join(jobDir, "derived", "P12345.7.copy")), bigSha);
    assert.equal(
      await Deno.readTextFile(path.join(jobDir, "derived", "calibration.dat.copy")),
      "coil sensitivities\n",
    );
    await server.waitForNoJobDirs();
    assert.deepEqual(
      (await listDir(server.reconFilePath)).filter((name) => name.startsWith("job_")),
      [`job_${jobId}.log`],
      "only the job's log is kept on the server",
    );
    await Deno.remove(big);
  });

  await t.step(
    "--json reports the job, the uploads with SHA-256 and the result files",
    async () => {
      const file = path.join(inputs, "P00001.7");
      await Deno.writeTextFile(file, "raw");
      const result = await server.client(["--files", file, "--json"]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stderr, "", "--json prints no progress on stderr");
      const report = JSON.parse(result.stdout);
      assert.equal(report.status, "completed");
      assert.match(report.job_id, UUID);
      assert.equal(report.result_dir, path.join(server.downloadDir, report.job_id));
      assert.deepEqual(report.uploaded.map((f: { name: string }) => f.name), ["P00001.7"]);
      assert.equal(report.uploaded[0].sha256, await sha256File(file));
      assert.deepEqual(
        report.files.map((f: { name: string }) => f.name),
        ["derived/P00001.7.copy", "manifest.txt", "provenance.json"],
      );
      for (const f of report.files) assert.equal(await sha256File(f.path), f.sha256);
    },
  );

  await t.step('--directory D --pattern "*.7" sends only the matching files', async () => {
    const scan = path.join(server.dir, "scan_dir");
    await Deno.mkdir(path.join(scan, "sub.7"), { recursive: true });
    for (const name of ["P001.7", "P002.7", "notes.txt", "P003.7.bak", ".hidden.7"]) {
      await Deno.writeTextFile(path.join(scan, name), name);
    }
    await Deno.writeTextFile(path.join(scan, "sub.7", "inner.7"), "inner");
    const result = await server.client(["--directory", scan, "--pattern", "*.7"]);
    const { jobDir } = downloadedPaths(result, server.downloadDir);
    const manifest = parseManifest(await Deno.readTextFile(path.join(jobDir, "manifest.txt")));
    assert.deepEqual([...manifest.sha256.keys()].sort(), ["P001.7", "P002.7"]);
    assert.deepEqual(await listDir(path.join(jobDir, "derived")), ["P001.7.copy", "P002.7.copy"]);
  });

  await t.step("with no files the client submits CLIENT_DEFAULT_PFILE_PATH", async () => {
    const pfile = path.join(server.dir, "default_pfile", "P00000.7");
    await Deno.mkdir(path.dirname(pfile), { recursive: true });
    await Deno.writeTextFile(pfile, "the default P-file");
    const result = await server.client([]);
    const { jobDir } = downloadedPaths(result, server.downloadDir);
    const manifest = parseManifest(await Deno.readTextFile(path.join(jobDir, "manifest.txt")));
    assert.deepEqual([...manifest.sha256.keys()], ["P00000.7"]);
    assert.equal(manifest.sha256.get("P00000.7"), await sha256File(pfile));
  });

  await t.step("--files - reads the paths from stdin, one per line", async () => {
    const a = path.join(inputs, "from stdin A.7");
    const b = path.join(inputs, "from_stdin_B.dat");
    await Deno.writeTextFile(a, "A");
    await Deno.writeTextFile(b, "B");
    const result = await server.client(["--files", "-"], { stdin: `${a}\n\n  ${b}  \n` });
    const { jobDir } = downloadedPaths(result, server.downloadDir);
    const manifest = parseManifest(await Deno.readTextFile(path.join(jobDir, "manifest.txt")));
    assert.deepEqual([...manifest.sha256.keys()].sort(), ["from stdin A.7", "from_stdin_B.dat"]);
    assert.equal(
      await Deno.readTextFile(path.join(jobDir, "derived", "from stdin A.7.copy")),
      "A",
    );
  });

  await server.waitForNoJobDirs();
});

Deno.test("a .m RECON_SCRIPT runs through MATLAB_COMMAND as name('input_dir','key','value',…)", async () => {
  const script = testdata("e2e_recon.m");
  await using server = await E2EServer.start({
    script,
    options: { MATLAB_COMMAND: `sh ${testdata("matlab_stub.sh")} -batch` },
  });
  const file = path.join(server.dir, "P777.7");
  await Deno.writeTextFile(file, "k-space");
  const options = { quote: "it's a 'test'", n: 3, on: false };
  const result = await server.client(["--files", file, "--recon-options", JSON.stringify(options)]);
  const { jobId, jobDir, paths } = downloadedPaths(result, server.downloadDir);
  assert.deepEqual(paths, [
    path.join(jobDir, "matlab_call.txt"),
    path.join(jobDir, "provenance.json"),
  ]);
  const lines = (await Deno.readTextFile(paths[0])).trimEnd().split("\n");
  const inputDir = path.join(server.reconFilePath, `job_${jobId}_input`);
  assert.deepEqual(lines, [
    `cwd ${path.dirname(script)}`,
    "arg -batch",
    `arg e2e_recon('${inputDir}','quote','it''s a ''test''','n','3','on','false')`,
  ], "one argument after MATLAB_COMMAND's own: the call, single quotes doubled");
  // The provenance names the .m file that ran, not MATLAB_COMMAND.
  const provenance = JSON.parse(await Deno.readTextFile(paths[1]));
  assert.deepEqual(provenance.script, { path: script, sha256: await sha256File(script) });
  assert.deepEqual(provenance.options, options);
  await server.waitForNoJobDirs();
});
