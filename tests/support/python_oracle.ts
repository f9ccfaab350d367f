/**
 * Python's `cryptography` package as an interop oracle for the Fernet and key tests.
 * A missing python3 or `cryptography` is a failure that says how to install it, never
 * a silent skip: interop with Python's Fernet is a promise we make to users.
 *
 * ```ts
 * const tokens = await runPython(PY_ENCRYPT, { key, items });
 * ```
 *
 * @module
 */

/** What to install when the oracle cannot run. */
export const PYTHON_MISSING = "interop tests need python3 with the 'cryptography' package " +
  "(Debian/Ubuntu: apt-get install python3-cryptography; or pip install cryptography)";

/** Runs `script` with `python3 -c`, `input` as JSON on stdin; returns its JSON output. */
export async function runPython(script: string, input: unknown): Promise<unknown> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command("python3", {
      args: ["-c", script],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(`python3 not found on PATH: ${PYTHON_MISSING}`, { cause: error });
    }
    throw error;
  }
  // Write while reading, and tolerate a broken pipe: a python3 that fails at import
  // exits without reading stdin, and its stderr is what explains the failure.
  const writing = (async () => {
    const writer = child.stdin.getWriter();
    try {
      await writer.write(new TextEncoder().encode(JSON.stringify(input)));
      await writer.close();
    } catch {
      await writer.abort().catch(() => {});
    }
  })();
  const [{ code, stdout, stderr }] = await Promise.all([child.output(), writing]);
  const errors = new TextDecoder().decode(stderr);
  if (code !== 0) {
    if (errors.includes("No module named 'cryptography'")) {
      throw new Error(`python3 has no 'cryptography' module: ${PYTHON_MISSING}`);
    }
    throw new Error(`python3 exited with ${code}:\n${errors}`);
  }
  return JSON.parse(new TextDecoder().decode(stdout));
}
