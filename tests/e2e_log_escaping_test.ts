/**
 * End to end, untrusted text in the server's log (issue 11 item 9): a result file
 * whose name carries an escape sequence, an 8-bit CSI and a newline, and a recon
 * option value with a C1 control, reach stderr and LOG_FILEPATH escaped, on one line
 * each: no forged log line, nothing a terminal would act on.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { E2EServer, tempDir } from "./support/e2e.ts";

/** Writes one result, and a FIFO (not a regular file: skipped) with a hostile name. */
const SCRIPT = `#!/bin/sh
out="$RECON_OUTPUT_DIR"
mkfifo "$out/$(printf 'evil\\033[31m\\302\\233x\\nFAKE ERROR forged line')"
echo result > "$out/result.dcm"
`;

// deno-lint-ignore no-control-regex
const RAW_CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/;

function assertSafe(where: string, log: string): void {
  assert.match(log, /not sending evil\\x1b\[31m\\x9bx\\nFAKE ERROR forged line/, where);
  assert.match(log, /--note a\\x9b31mb/, where);
  assert.doesNotMatch(log, /^FAKE/m, `${where}: a forged line`);
  assert.doesNotMatch(log, RAW_CONTROL, `${where}: a raw control character`);
}

Deno.test("the server log shows a hostile result name and option value escaped, on stderr and in LOG_FILEPATH", async () => {
  await using scripts = await tempDir();
  const script = path.join(scripts.path, "hostile_names.sh");
  await Deno.writeTextFile(script, SCRIPT, { mode: 0o755 });
  await using server = await E2EServer.start({ script });
  const input = path.join(server.dir, "P00042.7");
  await Deno.writeTextFile(input, "raw data");
  const result = await server.client([
    "--files",
    input,
    "--recon-options",
    JSON.stringify({ note: "a\u009b31mb" }),
  ]);
  assert.equal(result.code, 0, result.stderr);
  await server.waitForLog(/not sending evil/);
  assertSafe("stderr", server.log);
  assertSafe("LOG_FILEPATH", await Deno.readTextFile(path.join(server.dir, "recon.log")));
});
