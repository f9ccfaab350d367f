/**
 * Test support for session-level tests of the server: an in-process ReconServer on
 * 127.0.0.1 (port 0) with its own temporary directory (RECON_FILEPATH, RECON_DICOM_DIR,
 * the job store in `state/`, a RECON_SCRIPT), real channels to drive by hand, and a
 * restart on the same directory and key, as after a shutdown. An injected clock lets a
 * test move past a retention without waiting for it.
 *
 * ```ts
 * await using s = await startTestServer({ script: 'echo hi >"$RECON_OUTPUT_DIR/a.dcm"\n' });
 * const channel = await s.connect();
 * ```
 *
 * @module
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { Channel } from "../../lib/wire/channel.ts";
import { defaultConfig, type ReconConfig } from "../../lib/opts/mod.ts";
import { ReconServer } from "../../lib/server/server.ts";
import { sendStream } from "../../lib/wire/transfer.ts";
import { testKey } from "./channel_pair.ts";
import { waitFor } from "./e2e.ts";
import { BytesReader } from "./memory_duplex.ts";
import { memoryLog } from "./memory_log.ts";
import { rawClient } from "./raw_peer.ts";

/** A clock a test moves by hand (ms since the epoch), starting at the real time. */
export class TestClock {
  ms = Date.now();
  readonly now = (): number => this.ms;
  /** Move the clock `seconds` ahead. */
  advance(seconds: number): void {
    this.ms += seconds * 1000;
  }
}

/** Options of {@link startTestServer}. */
export interface TestServerOptions {
  /** The body of RECON_SCRIPT (sh, after `set -eu`). Default: one result at once. */
  script?: string;
  config?: Partial<ReconConfig>;
  diskFree?: (dir: string) => Promise<number>;
  clock?: TestClock;
}

/** The default RECON_SCRIPT: one result naming the job. */
export const QUICK_SCRIPT =
  `printf 'image of %s\\n' "$RECON_JOB_ID" >"$RECON_OUTPUT_DIR/result.dcm"\n`;

/** A server in a temporary directory, with helpers; shut down and removed on dispose. */
export interface TestServer extends AsyncDisposable {
  server: ReconServer;
  key: Awaited<ReturnType<typeof testKey>>;
  dir: string;
  config: ReconConfig;
  lines: string[];
  port: number;
  outputDir(jobId: string): string;
  inputDir(jobId: string): string;
  /** A session on Channel.connect (`version`: an older client). */
  connect(version?: number): Promise<Channel>;
  /** A session of hand-written records. */
  raw(version?: number): ReturnType<typeof rawClient>;
  /** Wait for a log line matching `pattern`; returns it. */
  logLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** Shut the server down gracefully and start another on the same directory and key. */
  restart(config?: Partial<ReconConfig>): Promise<void>;
}

/** Start a server for a test (see {@link TestServer}). */
export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  const dir = await Deno.makeTempDir({ prefix: "recon-server-test-" });
  const key = await testKey();
  const script = path.join(dir, "recon.sh");
  await Deno.writeTextFile(script, `#!/bin/sh\nset -eu\n${options.script ?? QUICK_SCRIPT}`);
  let config: ReconConfig = {
    ...defaultConfig(),
    SERVER_HOST: "127.0.0.1",
    SERVER_PORT: 0,
    SHARED_KEY: key.text,
    RECON_FILEPATH: path.join(dir, "pfiles"),
    RECON_DICOM_DIR: path.join(dir, "dicoms"),
    RECON_STATE_DIR: path.join(dir, "state"),
    RECON_SCRIPT: script,
    JOB_TIMEOUT: 30,
    SHUTDOWN_GRACE: 1,
    ...options.config,
  };
  const { lines, log } = memoryLog();
  const start = (port: number) =>
    ReconServer.start({
      config: { ...config, SERVER_PORT: port },
      sharedKey: key,
      log,
      diskFree: options.diskFree,
      now: options.clock?.now,
      killGraceMs: 200,
    });
  let server = await start(0);
  const site: TestServer = {
    get server() {
      return server;
    },
    key,
    dir,
    get config() {
      return config;
    },
    lines,
    get port() {
      return server.addr.port;
    },
    outputDir: (jobId) => path.join(config.RECON_DICOM_DIR, `job_${jobId}_output`),
    inputDir: (jobId) => path.join(config.RECON_FILEPATH, `job_${jobId}_input`),
    async connect(version?: number) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
      conn.setNoDelay(true);
      return await Channel.connect(conn, { sharedKey: key.raw, keyId: key.id, version });
    },
    async raw(version?: number) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
      return await rawClient(conn, key, { version });
    },
    logLine(pattern: RegExp, timeoutMs = 10_000) {
      return waitFor(`a log line ${pattern}`, () => lines.find((line) => pattern.test(line)), {
        timeoutMs,
      }).catch((error) => {
        throw new Error(`${error.message}; log:\n${lines.join("\n")}`);
      });
    },
    async restart(changes: Partial<ReconConfig> = {}) {
      const port = server.addr.port;
      await server.shutdown();
      config = { ...config, ...changes };
      server = await start(port);
    },
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      await Deno.remove(dir, { recursive: true });
    },
  };
  return site;
}

/** The next control message on `channel`. */
export async function nextMessage(channel: Channel): Promise<Record<string, unknown>> {
  const incoming = await channel.receive();
  assert.equal(incoming.type, "message", `expected a message, got ${JSON.stringify(incoming)}`);
  return (incoming as { message: Record<string, unknown> }).message;
}

/** Wait for a message of `type`, skipping job_started and job_progress. */
export async function expectMessage(
  channel: Channel,
  type: string,
): Promise<Record<string, unknown>> {
  while (true) {
    const message = await nextMessage(channel);
    if (message.type === "job_started" || message.type === "job_progress") continue;
    assert.equal(message.type, type, `expected ${type}, got ${JSON.stringify(message)}`);
    return message;
  }
}

/** Announce a job as a version 2 or 3 client does: `submit_recon_job`, then `input_file`s. */
export async function announce(
  send: (message: Record<string, unknown>) => Promise<void>,
  files: { name: string; size: number }[],
  extra: Record<string, unknown> = {},
): Promise<void> {
  await send({
    type: "submit_recon_job",
    file_count: files.length,
    client_recon_options_json: "{}",
    ...extra,
  });
  for (const file of files) await send({ type: "input_file", ...file });
}

/**
 * Submit `files` (name → bytes) on `channel`, sending each when asked; returns the job
 * id from `job_queued`. `extra` goes into `submit_recon_job` (options, priority).
 */
export async function upload(
  channel: Channel,
  files: Record<string, Uint8Array>,
  extra: Record<string, unknown> = {},
): Promise<string> {
  const entries = Object.entries(files);
  await announce(
    (message) => channel.send(message),
    entries.map(([name, bytes]) => ({ name, size: bytes.length })),
    extra,
  );
  for (let i = 0; i < entries.length; i++) {
    const request = await nextMessage(channel);
    assert.equal(request.type, "request_file", JSON.stringify(request));
    const bytes = files[request.name as string];
    await sendStream(channel, new BytesReader(bytes), bytes.length);
  }
  const queued = await nextMessage(channel);
  assert.equal(queued.type, "job_queued", JSON.stringify(queued));
  return queued.job_id as string;
}

/** Receive one file's DATA and FILE_END into memory. */
export async function receiveBytes(channel: Channel): Promise<{
  bytes: Uint8Array;
  size: number;
  sha256: string;
}> {
  const chunks: Uint8Array[] = [];
  while (true) {
    const incoming = await channel.receive();
    if (incoming.type === "data") chunks.push(incoming.bytes.slice());
    else if (incoming.type === "file_end") {
      const bytes = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
      let offset = 0;
      for (const chunk of chunks) {
        bytes.set(chunk, offset);
        offset += chunk.length;
      }
      return { bytes, size: incoming.size, sha256: incoming.sha256 };
    } else throw new Error(`expected file data, got ${JSON.stringify(incoming)}`);
  }
}

/**
 * Take every result after `dicom_transfer_start` (answering `ready` with `resume`),
 * confirm them with `results_received`; returns name → bytes received.
 */
export async function fetchResults(
  channel: Channel,
  jobId: string,
  resume: { resume_index?: number; resume_offset?: number } = {},
): Promise<{ start: Record<string, unknown>; files: Map<string, Uint8Array>; offsets: number[] }> {
  const start = await expectMessage(channel, "dicom_transfer_start");
  assert.equal(start.job_id, jobId);
  await channel.send({ type: "dicom_transfer_ack", job_id: jobId, status: "ready", ...resume });
  const files = new Map<string, Uint8Array>();
  const offsets: number[] = [];
  for (let i = resume.resume_index ?? 0; i < (start.count as number); i++) {
    const result = await nextMessage(channel);
    assert.equal(result.type, "result_file", JSON.stringify(result));
    offsets.push((result.offset as number | undefined) ?? 0);
    files.set(result.name as string, (await receiveBytes(channel)).bytes);
  }
  const complete = await nextMessage(channel);
  assert.equal(complete.type, "recon_complete", JSON.stringify(complete));
  await channel.send({ type: "results_received", job_id: jobId });
  return { start, files, offsets };
}
