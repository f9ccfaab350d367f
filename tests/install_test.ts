/**
 * Tests for `make install` (scripts/install): recon-server and recon-client on PATH
 * from PREFIX/bin, running the tree installed in PREFIX/lib/recon with its own deno
 * and npm cache, whatever deno or DENO_DIR the caller has.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { ROOT } from "./support/e2e.ts";

const DENO = Deno.execPath();

async function run(
  program: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const { code, stdout, stderr } = await new Deno.Command(program, {
    args,
    env,
    cwd: ROOT,
    stdin: "null",
  }).output();
  const text = new TextDecoder();
  return { code, stdout: text.decode(stdout), stderr: text.decode(stderr) };
}

Deno.test("scripts/install puts working recon-server and recon-client launchers in PREFIX/bin", async () => {
  const prefix = await Deno.makeTempDir({ prefix: "recon-install-" });
  try {
    const installed = await run(path.join(ROOT, "scripts", "install"), [DENO, prefix], {
      DENORT_BIN: "",
    });
    assert.equal(installed.code, 0, installed.stderr);
    for (const program of ["recon-server", "recon-client"]) {
      const launcher = path.join(prefix, "bin", program);
      assert.equal((await Deno.stat(launcher)).mode! & 0o777, 0o755);
      // A caller's own DENO_DIR and a deno-less PATH change nothing.
      const env = { DENO_DIR: path.join(prefix, "elsewhere"), PATH: "/usr/bin:/bin" };
      const version = await run(launcher, ["--version"], env);
      assert.equal(version.code, 0, version.stderr);
      assert.match(version.stdout, new RegExp(`^${program} \\d+\\.\\d+\\.\\d+`));
    }
    const key = await run(path.join(prefix, "bin", "recon-server"), ["keygen"]);
    assert.match(key.stdout.trim(), /^[A-Za-z0-9_-]{43}=$/);
    // The installed tree is not writable by others and holds no repository leftovers.
    const lib = path.join(prefix, "lib", "recon");
    assert.equal((await Deno.stat(lib)).mode! & 0o022, 0);
    await assert.rejects(Deno.stat(path.join(lib, "tests")), Deno.errors.NotFound);
  } finally {
    await Deno.remove(prefix, { recursive: true });
  }
});

Deno.test("scripts/install refuses a relative PREFIX with a one-line reason", async () => {
  const result = await run(path.join(ROOT, "scripts", "install"), [DENO, "relative/dir"]);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /PREFIX must be an absolute path/);
});
