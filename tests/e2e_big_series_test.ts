/**
 * Large series end to end (issue 11 item 3): bin/recon-server and bin/recon-client on
 * 127.0.0.1. A script that writes 20,000 small result files (one per slice of a long
 * fMRI or diffusion series) has every one delivered and verified, because protocol
 * version 2 announces results by count and names them one `result_file` at a time; and
 * a current client that meets a server speaking only version 1 says so in one line.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { encodeFrame, FrameReader, writeAll } from "../lib/wire/frame.ts";
import { MAX_HANDSHAKE_FRAME_SIZE, PROTOCOL_VERSION } from "../lib/wire/handshake.ts";
import { CLIENT_BIN, E2EServer, listDir, run, sha256Hex, tempDir, UUID } from "./support/e2e.ts";

const RESULTS = 20_000;

/** Writes RESULTS files with 30-character names; file i holds "slice i". */
const SERIES_SCRIPT = `#!/bin/sh
set -eu
i=0
while [ $i -lt ${RESULTS} ]; do
  printf 'slice %d' $i >"$RECON_OUTPUT_DIR/$(printf 'IM_%08d_slice_of_series.dcm' $i)"
  i=$((i + 1))
done
`;

function sliceName(i: number): string {
  return `IM_${String(i).padStart(8, "0")}_slice_of_series.dcm`;
}

Deno.test(`a script writing ${RESULTS} result files has every one delivered and verified`, async () => {
  await using work = await tempDir();
  const script = path.join(work.path, "series.sh");
  await Deno.writeTextFile(script, SERIES_SCRIPT);
  await using server = await E2EServer.start({ script });
  const input = path.join(work.path, "P00001.7");
  await Deno.writeTextFile(input, "raw k-space");

  const started = performance.now();
  const result = await server.client(["--files", input, "--json"], { timeoutMs: 300_000 });
  const seconds = (performance.now() - started) / 1000;
  console.log(`${RESULTS} results end to end: ${seconds.toFixed(1)} s`);
  assert.equal(result.code, 0, result.stderr.slice(-2000));

  const report = JSON.parse(result.stdout);
  assert.equal(report.status, "completed");
  assert.match(report.job_id, UUID);
  assert.equal(report.files.length, RESULTS + 1, "every slice and the server's provenance.json");
  const names = await listDir(report.result_dir);
  assert.equal(names.length, RESULTS + 1, "every result is in the job's download directory");
  assert.deepEqual(names, [
    ...Array.from({ length: RESULTS }, (_, i) => sliceName(i)),
    "provenance.json",
  ]);
  for (const i of [0, 1, 9_999, 10_000, 12_345, RESULTS - 1]) {
    const file = path.join(report.result_dir, sliceName(i));
    const expected = sha256Hex(new TextEncoder().encode(`slice ${i}`));
    assert.equal(sha256Hex(await Deno.readFile(file)), expected, sliceName(i));
    const listed = report.files.find((f: { name: string }) => f.name === sliceName(i));
    assert.equal(listed.sha256, expected);
  }
  // Confirmed with results_received: the server removed them.
  await server.waitForLog(
    new RegExp(`job ${report.job_id}: delivered ${RESULTS + 1} result file`),
  );
  await server.waitForNoJobDirs();
});

Deno.test("recon-client against a server that speaks only version 1 says so in one line", async () => {
  await using work = await tempDir();
  // A version 1 server answers any other version with this Refusal, byte for byte.
  const refusal = new Uint8Array([
    0x52,
    0x45,
    0x43,
    0x4e,
    1,
    0x7f,
    1,
    ...new TextEncoder().encode("unsupported protocol version 2; this server speaks version 1"),
  ]);
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    const conn = await listener.accept();
    try {
      const hello = await new FrameReader(conn, { maxFrameSize: MAX_HANDSHAKE_FRAME_SIZE }).read();
      await writeAll(conn, encodeFrame(refusal));
      return hello;
    } finally {
      conn.close();
    }
  })();
  // The server's recon.opts serves as the client's; the client is pointed elsewhere.
  await using server = await E2EServer.start({ script: path.join(work.path, "unused.sh") });
  const result = await run(CLIENT_BIN, [
    "--opts",
    server.optsPath,
    "--port",
    String(listener.addr.port),
    "--server-status",
  ]);
  const hello = await serving;
  assert.equal(hello?.[4], PROTOCOL_VERSION, "the client offered the current version");
  assert.equal(result.code, 3, result.stderr);
  const lines = result.stderr.trim().split("\n");
  assert.equal(
    lines[0],
    `recon-client: error: handshake with 127.0.0.1:${listener.addr.port} failed: ` +
      `version mismatch: the server speaks protocol version 1, this client speaks ${PROTOCOL_VERSION}`,
  );
  assert.match(lines[1] ?? "", /^hint: upgrade recon-server/);
});

Deno.test("recon-client refuses results over CLIENT_MAX_RESULT_BYTES and says where they stay", async () => {
  await using work = await tempDir();
  const script = path.join(work.path, "one.sh");
  await Deno.writeTextFile(script, "printf 'an image' >\"$RECON_OUTPUT_DIR/image.dcm\"\n");
  await using server = await E2EServer.start({ script, expectCleanJobDirs: false });
  const opts = await server.writeClientOpts("capped.opts", { CLIENT_MAX_RESULT_BYTES: 5 });
  const input = path.join(work.path, "P00001.7");
  await Deno.writeTextFile(input, "raw k-space");
  const result = await server.client(["--files", input], { optsPath: opts });
  assert.equal(result.code, 4, result.stderr);
  // image.dcm and the server's provenance.json.
  const match = new RegExp(
    `^recon-client: error: the 2 result file\\(s\\) of job (${UUID.source}) \\((\\d+) bytes\\) ` +
      "exceed CLIENT_MAX_RESULT_BYTES \\(5\\); they stay on the server in " +
      "RECON_DICOM_DIR/job_\\1_output$",
    "m",
  ).exec(result.stderr);
  assert.ok(match, result.stderr);
  const outputDir = path.join(server.dicomDir, `job_${match[1]}_output`);
  await server.waitForLog(/delivery failed/);
  assert.deepEqual(
    await listDir(outputDir),
    ["image.dcm", "provenance.json"],
    "the server keeps the results",
  );
  const provenance = await Deno.stat(path.join(outputDir, "provenance.json"));
  assert.equal(Number(match[2]), 8 + provenance.size);
});
