/**
 * End to end, through bin/recon-server and bin/recon-client: a client that breaks the
 * protocol while its job runs does not take recon-server (or its queue) down; text a
 * script or a peer sends never reaches the client's terminal as escape sequences; a
 * port that answers with something other than a recon handshake gets a plain reason.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { Channel } from "../lib/wire/channel.ts";
import { encodeFrame, FrameReader, writeAll } from "../lib/wire/frame.ts";
import { encodeRefusal, MAX_HANDSHAKE_FRAME_SIZE, RefusalCode } from "../lib/wire/handshake.ts";
import { decodeKey, keyId } from "../lib/crypto/keys.ts";
import { sendStream } from "../lib/wire/transfer.ts";
import { CLIENT_BIN, E2EServer, listDir, run, tempDir, testdata, UUID } from "./support/e2e.ts";
import { BytesReader } from "./support/memory_duplex.ts";

const encoder = new TextEncoder();
// deno-lint-ignore no-control-regex
const TERMINAL_CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

/** A session with the E2E server, driven by hand. */
async function connect(server: E2EServer): Promise<Channel> {
  const raw = decodeKey(server.key) as Uint8Array<ArrayBuffer>;
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  return await Channel.connect(conn, { sharedKey: raw, keyId: await keyId(raw) });
}

/** Submit one small file with `options`, send it when asked; returns the job id. */
async function queueJob(channel: Channel, options: Record<string, unknown>): Promise<string> {
  const content = encoder.encode("raw k-space");
  await channel.send({
    type: "submit_recon_job",
    file_count: 1,
    client_recon_options_json: JSON.stringify(options),
  });
  await channel.send({ type: "input_file", name: "P00007.7", size: content.length });
  for (;;) {
    const incoming = await channel.receive();
    assert.equal(incoming.type, "message");
    const message = (incoming as { message: Record<string, unknown> }).message;
    if (message.type === "request_file") {
      await sendStream(channel, new BytesReader(content), content.length);
    } else {
      assert.equal(message.type, "job_queued", JSON.stringify(message));
      return message.job_id as string;
    }
  }
}

Deno.test("recon-server keeps serving, and finishes the jobs, when clients break the protocol mid-job", async () => {
  await using server = await E2EServer.start({ script: testdata("e2e_recon.sh") });
  const misbehaviours: [string, (channel: Channel) => Promise<void>][] = [
    ["GOODBYE", (channel) => channel.close()],
    ["a valid message that does not belong", (c) => c.send({ type: "get_server_status" })],
    ["an invalid message", (c) => c.send({ type: "cancel_job", job_id: "../x" })],
  ];
  const jobs: string[] = [];
  for (const [what, misbehave] of misbehaviours) {
    const channel = await connect(server);
    try {
      const jobId = await queueJob(channel, { sleep: 0.3 });
      jobs.push(jobId);
      await misbehave(channel);
      const status = await server.client(["--server-status", "--json"]);
      assert.equal(status.code, 0, `after ${what}: ${status.stderr}\n${server.log.slice(-2000)}`);
    } finally {
      channel.abort();
    }
  }
  for (const jobId of jobs) {
    const outputDir = path.join(server.dicomDir, `job_${jobId}_output`);
    await server.waitForLog(
      new RegExp(
        `job ${jobId}: succeeded with \\d+ result file\\(s\\), \\d+ bytes, kept in ${outputDir} until `,
      ),
    );
    assert.deepEqual(await listDir(outputDir), ["derived", "manifest.txt", "provenance.json"]);
    await Deno.remove(outputDir, { recursive: true });
  }
  assert.ok(server.running, "recon-server is still running");
  assert.doesNotMatch(server.log, /internal error/);
  const status = JSON.parse((await server.client(["--server-status", "--json"])).stdout);
  assert.equal(status.jobs_completed, 3);
  assert.equal(status.jobs_failed, 0);
});

Deno.test("a failed job's ANSI escapes never reach recon-client's terminal", async () => {
  await using scripts = await tempDir("recon_e2e_script_");
  const script = path.join(scripts.path, "ansi_recon.sh");
  await Deno.writeTextFile(
    script,
    [
      "#!/bin/sh",
      String.raw`printf '\033[32mreconstructing\033[0m slice 1\n'`,
      String.raw`printf '\033]0;pwned\007title\n'`,
      String.raw`printf '\033[2J\033[Herror: \033[31mbad header\033[0m\r\n' >&2`,
      "exit 1",
      "",
    ].join("\n"),
  );
  await using server = await E2EServer.start({ script });
  const file = path.join(server.dir, "P00008.7");
  await Deno.writeTextFile(file, "raw data");

  const result = await server.client(["--files", file]);
  assert.equal(result.code, 1, result.stderr);
  assert.match(
    result.stderr,
    new RegExp(
      `^recon-client: error: job ${UUID.source} failed: the reconstruction script exited with code 1$`,
      "m",
    ),
  );
  // The script's lines arrive, defused: progress lines and the stderr tail in the hint.
  assert.ok(result.stderr.includes("?reconstructing? slice 1"), result.stderr);
  assert.ok(result.stderr.includes("?]0;pwned?title"), result.stderr);
  assert.ok(result.stderr.includes("  ??error: ?bad header?"), result.stderr);
  assert.doesNotMatch(result.stderr, TERMINAL_CONTROL, "no ESC, BEL or CR on the terminal");
  assert.doesNotMatch(result.stdout, TERMINAL_CONTROL);

  // --json keeps the script's text exactly, escaped by JSON: still no raw ESC byte.
  const json = await server.client(["--files", file, "--json"]);
  assert.equal(json.code, 1);
  assert.doesNotMatch(json.stdout, TERMINAL_CONTROL);
  assert.doesNotMatch(json.stderr, TERMINAL_CONTROL);
  const report = JSON.parse(json.stdout);
  assert.deepEqual(report.stderr_tail, ["\u001b[2J\u001b[Herror: \u001b[31mbad header\u001b[0m"]);
  await server.waitForNoJobDirs();
});

/** A TCP server on 127.0.0.1 that answers each connection with `answer`. */
function fakeServer(answer: (conn: Deno.Conn) => Promise<void>) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = (async () => {
    const conn = await listener.accept();
    try {
      await answer(conn);
    } catch { /* the client hung up */ }
    try {
      conn.close();
    } catch { /* closed */ }
  })();
  return {
    port: listener.addr.port,
    async [Symbol.asyncDispose]() {
      listener.close();
      await served.catch(() => {});
    },
  };
}

Deno.test("recon-client pointed at something that is not a recon-server says so: exit 3", async () => {
  await using server = await E2EServer.start({ script: testdata("e2e_recon.sh") });
  await using http = fakeServer(async (conn) => {
    await conn.read(new Uint8Array(256));
    await writeAll(
      conn,
      encoder.encode("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n\u001b[31m"),
    );
  });
  const result = await run(CLIENT_BIN, [
    "--opts",
    server.optsPath,
    "--port",
    String(http.port),
    "--server-status",
  ]);
  assert.equal(result.code, 3, result.stderr);
  assert.match(
    result.stderr,
    /^recon-client: error: handshake with 127\.0\.0\.1:\d+ failed: the answer is not a recon handshake \(.+\)$/m,
  );
  assert.match(
    result.stderr,
    /^hint: is SERVER_HOST:SERVER_PORT a recon-server, and of this version\?$/m,
  );
  assert.doesNotMatch(result.stderr, TERMINAL_CONTROL);
});

Deno.test("a refusal's text is printed by recon-client without its escape sequences", async () => {
  await using server = await E2EServer.start({ script: testdata("e2e_recon.sh") });
  await using refusing = fakeServer(async (conn) => {
    const reader = new FrameReader(conn, { maxFrameSize: MAX_HANDSHAKE_FRAME_SIZE });
    await reader.read();
    await writeAll(
      conn,
      encodeFrame(encodeRefusal(RefusalCode.REFUSED, "\u001b[2J\u001b[31mgo away\u0007")),
    );
  });
  const result = await run(CLIENT_BIN, [
    "--opts",
    server.optsPath,
    "--port",
    String(refusing.port),
    "--server-status",
  ]);
  assert.equal(result.code, 3, result.stderr);
  assert.match(result.stderr, /the server refused the handshake: \?\?go away\?$/m);
  assert.doesNotMatch(result.stderr, TERMINAL_CONTROL);
});
