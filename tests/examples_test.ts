/**
 * The example reconstruction scripts in examples/: a BART phantom reconstructs into
 * DICOM that dcmtk reads with the right matrix size, failures give a one-line reason,
 * the fallback says it is one, and the no-op script writes its result.
 *
 * Needs BART and dcmtk. When they are missing these tests FAIL (they never skip):
 * install them with `apt-get install bart dcmtk`.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const EXAMPLES = path.join(ROOT, "examples");

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Run a program with a clean environment (PATH and HOME only, plus `env`), the way
 * recon-server runs a `.sh` RECON_SCRIPT: argv only, stdin closed.
 */
async function run(
  program: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<Result> {
  const output = await new Deno.Command(program, {
    args,
    clearEnv: true,
    env: {
      PATH: Deno.env.get("PATH") ?? "/usr/local/bin:/usr/bin:/bin",
      HOME: Deno.env.get("HOME") ?? "/tmp",
      ...env,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** Run examples/NAME with sh, as the server does for a .sh script. */
function script(name: string, args: string[], env: Record<string, string> = {}) {
  return run("sh", [path.join(EXAMPLES, name), ...args], env);
}

/** Fail (never skip) when a tool the examples need is not installed. */
async function requireTool(tool: string): Promise<void> {
  const found = await run("sh", ["-c", 'command -v "$1"', "sh", tool]);
  assert.equal(
    found.code,
    0,
    `${tool} is not installed; install it with 'apt-get install bart dcmtk' ` +
      "(the examples tests need BART and dcmtk and do not skip)",
  );
}

/** A temporary directory removed after `body`, whatever happens. */
async function withTempDir(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "recon_examples_test_" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function listFiles(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) if (entry.isFile) names.push(entry.name);
  return names.sort();
}

/** The value of a US attribute such as Rows (0028,0010) in dcmdump's output. */
function usValue(dump: string, tag: string): number | undefined {
  const match = new RegExp(`^\\(${tag}\\) US (\\d+)`, "m").exec(dump);
  return match ? Number(match[1]) : undefined;
}

/** dcmdump a file: must exit 0; returns its output. */
async function dcmdump(file: string): Promise<string> {
  const dump = await run("dcmdump", [file]);
  assert.equal(dump.code, 0, `dcmdump cannot read ${file}: ${dump.stderr}`);
  return dump.stdout;
}

function errorLines(stderr: string): string[] {
  return stderr.split("\n").filter((line) => line.trim() !== "");
}

Deno.test("examples: the scripts are executable", async () => {
  for (const name of ["make_phantom.sh", "bart_recon.sh", "fallback_recon.sh", "noop_recon.sh"]) {
    const info = await Deno.stat(path.join(EXAMPLES, name));
    assert.ok(info.mode !== null && (info.mode & 0o111) !== 0, `${name} is not executable`);
  }
});

Deno.test("examples: make_phantom + bart_recon give DICOM that dcmdump reads (128 x 128)", async () => {
  await requireTool("bart");
  await requireTool("dcmdump");
  await withTempDir(async (dir) => {
    const input = path.join(dir, "job_input");
    const output = path.join(dir, "output");
    await Deno.mkdir(output);

    const phantom = await script("make_phantom.sh", [input]);
    assert.equal(phantom.code, 0, `make_phantom.sh failed: ${phantom.stderr}`);
    assert.deepEqual(await listFiles(input), ["kspace.cfl", "kspace.hdr"]);

    const recon = await script("bart_recon.sh", [input, "--name", "phantom", "--bogus", "1"], {
      RECON_OUTPUT_DIR: output,
      RECON_INPUT_DIR: input,
      RECON_JOB_ID: "00000000-0000-4000-8000-000000000001",
    });
    assert.equal(recon.code, 0, `bart_recon.sh failed: ${recon.stderr}`);
    assert.match(recon.stdout, /^PROGRESS 100$/m);
    assert.match(recon.stderr, /ignoring unknown option --bogus/);

    const files = await listFiles(output);
    const dicoms = files.filter((name) => name.endsWith(".dcm"));
    assert.ok(dicoms.length >= 1, `no .dcm written; output has: ${files.join(", ")}`);
    assert.deepEqual(files, ["phantom.dcm"], "only the DICOM belongs in RECON_OUTPUT_DIR");

    const dump = await dcmdump(path.join(output, "phantom.dcm"));
    assert.equal(usValue(dump, "0028,0010"), 128, "Rows");
    assert.equal(usValue(dump, "0028,0011"), 128, "Columns");
    assert.match(dump, /SecondaryCaptureImageStorage/);
    assert.match(dump, /\(0008,103e\) LO \[phantom\]/);
  });
});

Deno.test("examples: bart_recon reconstructs a 3-D phantom into one DICOM per slice", async () => {
  await requireTool("bart");
  await requireTool("dcmdump");
  await withTempDir(async (dir) => {
    const input = path.join(dir, "job_input");
    const output = path.join(dir, "output");
    await Deno.mkdir(output);
    const phantom = await script("make_phantom.sh", [
      input,
      "--3d",
      "--size",
      "16",
      "--coils",
      "2",
    ]);
    assert.equal(phantom.code, 0, phantom.stderr);

    const recon = await script("bart_recon.sh", [input], { RECON_OUTPUT_DIR: output });
    assert.equal(recon.code, 0, recon.stderr);
    assert.match(recon.stdout, /bitmask 7/);
    const files = await listFiles(output);
    assert.equal(files.length, 16);
    assert.equal(files[0], "recon-0000.dcm");
    const series = new Set<string>();
    for (const name of [files[0], files[15]]) {
      const dump = await dcmdump(path.join(output, name));
      assert.equal(usValue(dump, "0028,0010"), 16, "Rows");
      assert.equal(usValue(dump, "0028,0011"), 16, "Columns");
      series.add(/\(0020,000e\) UI \[([0-9.]+)\]/.exec(dump)?.[1] ?? "missing");
    }
    assert.equal(series.size, 1, "all slices belong to one series");
    assert.ok(!series.has("missing"));
  });
});

Deno.test("examples: bart_recon fails with one line on an empty input directory", async () => {
  await requireTool("bart");
  await withTempDir(async (dir) => {
    const input = path.join(dir, "empty");
    const output = path.join(dir, "output");
    await Deno.mkdir(input);
    await Deno.mkdir(output);
    const recon = await script("bart_recon.sh", [input], { RECON_OUTPUT_DIR: output });
    assert.notEqual(recon.code, 0);
    const lines = errorLines(recon.stderr);
    assert.equal(lines.length, 1, `expected one line on stderr, got: ${recon.stderr}`);
    assert.match(lines[0], /^bart_recon: error: no BART k-space found in /);
    assert.deepEqual(await listFiles(output), []);
  });
});

Deno.test("examples: bart_recon refuses to run without RECON_OUTPUT_DIR or with a bad --name", async () => {
  await requireTool("bart");
  await withTempDir(async (dir) => {
    const noOutput = await script("bart_recon.sh", [dir]);
    assert.equal(noOutput.code, 2);
    assert.deepEqual(errorLines(noOutput.stderr).length, 1);
    assert.match(noOutput.stderr, /RECON_OUTPUT_DIR is not set/);

    const badName = await script("bart_recon.sh", [dir, "--name", "../escape"], {
      RECON_OUTPUT_DIR: dir,
    });
    assert.equal(badName.code, 2);
    assert.match(badName.stderr, /^bart_recon: error: --name must be/m);
  });
});

Deno.test("examples: fallback_recon writes a placeholder DICOM per file and says it is a fallback", async () => {
  await requireTool("dcmdump");
  await requireTool("img2dcm");
  await withTempDir(async (dir) => {
    const input = path.join(dir, "job_input");
    const output = path.join(dir, "output");
    await Deno.mkdir(input);
    await Deno.mkdir(output);
    await Deno.writeTextFile(path.join(input, "P00001.7"), "not really a P-file\n");
    const fallback = await script("fallback_recon.sh", [input, "--name", "x"], {
      RECON_OUTPUT_DIR: output,
    });
    assert.equal(fallback.code, 0, fallback.stderr);
    assert.match(fallback.stderr, /FALLBACK: this is NOT a reconstruction/);
    assert.deepEqual(await listFiles(output), ["P00001.7.fallback.dcm"]);
    const dump = await dcmdump(path.join(output, "P00001.7.fallback.dcm"));
    assert.equal(usValue(dump, "0028,0010"), 64);
    assert.match(dump, /FALLBACK/);
  });
});

Deno.test("examples: noop_recon writes result.txt with the input names and sizes", async () => {
  await withTempDir(async (dir) => {
    const input = path.join(dir, "job_input");
    const output = path.join(dir, "output");
    await Deno.mkdir(input);
    await Deno.mkdir(output);
    await Deno.writeFile(path.join(input, "P00001.7"), new Uint8Array(1024));
    await Deno.writeTextFile(path.join(input, "notes.txt"), "abc");
    const noop = await script("noop_recon.sh", [input, "--mode", "fast"], {
      RECON_OUTPUT_DIR: output,
      RECON_JOB_ID: "job-1",
    });
    assert.equal(noop.code, 0, noop.stderr);
    assert.match(noop.stdout, /^PROGRESS 100$/m);
    assert.deepEqual(await listFiles(output), ["result.txt"]);
    const result = await Deno.readTextFile(path.join(output, "result.txt"));
    assert.match(result, /^job: job-1$/m);
    assert.match(result, /^file: 1024 P00001\.7$/m);
    assert.match(result, /^file: 3 notes\.txt$/m);
    assert.match(result, /^arg: --mode$/m);
  });
});

Deno.test("examples: bart_recon names several series by number, never by the input's file name", async () => {
  await requireTool("bart");
  await requireTool("dcmdump");
  await withTempDir(async (dir) => {
    const input = path.join(dir, "job_input");
    const output = path.join(dir, "output");
    await Deno.mkdir(output);
    for (const patient of ["PATIENT_DOE_JOHN", "PATIENT_ROE_JANE"]) {
      const made = await script("make_phantom.sh", [path.join(dir, patient), "--size", "32"]);
      assert.equal(made.code, 0, made.stderr);
      await Deno.mkdir(input, { recursive: true });
      for (const ext of ["cfl", "hdr"]) {
        await Deno.rename(
          path.join(dir, patient, `kspace.${ext}`),
          path.join(input, `${patient}.${ext}`),
        );
      }
    }
    const recon = await script("bart_recon.sh", [input, "--name", "t1"], {
      RECON_OUTPUT_DIR: output,
      RECON_INPUT_DIR: input,
      RECON_JOB_ID: "00000000-0000-4000-8000-000000000002",
    });
    assert.equal(recon.code, 0, `bart_recon.sh failed: ${recon.stderr}`);
    const dicoms = (await listFiles(output)).filter((name) => name.endsWith(".dcm"));
    assert.equal(dicoms.length, 2, dicoms.join(", "));
    const descriptions = [];
    for (const name of dicoms) {
      const dump = await dcmdump(path.join(output, name));
      descriptions.push(/\(0008,103e\) LO \[([^\]]*)\]/.exec(dump)?.[1]);
      assert.ok(!dump.includes("PATIENT_"), `${name}: an input's name is inside the DICOM`);
    }
    assert.deepEqual(descriptions.sort(), ["t1 series 1", "t1 series 2"]);
  });
});
