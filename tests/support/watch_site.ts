/**
 * Test support for the watch-mode tests: a temporary "site" (one recon.opts shared by
 * a real `bin/recon-server` and a real `bin/recon-client watch`, a watch directory,
 * a small RECON_SCRIPT that logs every run), both programs as child processes stopped
 * by PID, and a throttling TCP relay to make an upload last long enough to interrupt.
 *
 * The recon script appends one line per run to `runs.log`:
 * `<job_id> <input names…> | <script arguments>`, writes `sha256.txt` (one
 * `<sha256>  <name>` line per input) as the job's result, and fails (exit 3) for
 * inputs whose names contain "bad" unless the file `allow_bad` exists in the site.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { generateKey } from "../../lib/crypto/keys.ts";

/** The repository root. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const SERVER_BIN = path.join(ROOT, "bin", "recon-server");
const CLIENT_BIN = path.join(ROOT, "bin", "recon-client");

const RECON_SCRIPT = `#!/bin/sh
set -eu
input=$1
shift
here=$(dirname "$0")
names=""
for f in "$input"/*; do
  name=\${f##*/}
  sum=$(sha256sum "$f" | cut -d' ' -f1)
  printf '%s  %s\\n' "$sum" "$name" >> "$RECON_OUTPUT_DIR/sha256.txt"
  names="$names $name"
done
printf '%s%s | %s\\n' "$RECON_JOB_ID" "$names" "$*" >> "$here/runs.log"
case "$names" in
  *bad*) [ -e "$here/allow_bad" ] || { echo "refusing a bad scan:$names" >&2; exit 3; } ;;
esac
if [ -e "$here/slow_job" ]; then sleep "$(cat "$here/slow_job")"; fi
echo "PROGRESS 100"
`;

/** Resolve after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Children still running, whose logs a timeout shows to explain itself. */
const live = new Set<{ label: string; stderr: string }>();

function liveLogs(): string {
  return [...live].map((child) =>
    `--- ${child.label} stderr (end) ---\n${child.stderr.slice(-4000)}`
  )
    .join("\n");
}

/** Poll `check` until it returns a truthy value; fail with `what` after `timeoutMs`. */
export async function waitUntil<T>(
  what: string,
  check: () => T | Promise<T>,
  timeoutMs = 60_000,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${liveLogs()}`);
    }
    await delay(100);
  }
}

/** SHA-256 hex of bytes or of a file. */
export async function sha256Of(source: Uint8Array | string): Promise<string> {
  const bytes = typeof source === "string" ? await Deno.readFile(source) : source;
  return createHash("sha256").update(bytes).digest("hex");
}

/** Collects a child's output as text while it runs. */
class Collector {
  text = "";
  readonly done: Promise<void>;
  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of stream) this.text += decoder.decode(chunk, { stream: true });
    })();
  }
}

/** One run of the recon script on the server. */
export interface Run {
  jobId: string;
  names: string[];
  args: string;
}

/** Options of {@link WatchSite.create}. */
export interface SiteOptions {
  /** Extra `KEY = VALUE` lines for recon.opts (override the defaults below). */
  opts?: Record<string, string>;
}

/** A temporary site directory with recon.opts, a watch directory and the recon script. */
export class WatchSite implements AsyncDisposable {
  readonly dir: string;
  readonly watchDir: string;
  readonly optsPath: string;
  readonly downloadDir: string;
  readonly serverInputDir: string;

  private constructor(dir: string) {
    this.dir = dir;
    this.watchDir = path.join(dir, "watch");
    this.optsPath = path.join(dir, "recon.opts");
    this.downloadDir = path.join(dir, "downloads");
    this.serverInputDir = path.join(dir, "server_in");
  }

  static async create(options: SiteOptions = {}): Promise<WatchSite> {
    const site = new WatchSite(await Deno.makeTempDir({ prefix: "recon_watch_test_" }));
    await Deno.mkdir(site.watchDir);
    const script = path.join(site.dir, "recon.sh");
    await Deno.writeTextFile(script, RECON_SCRIPT, { mode: 0o755 });
    const values: Record<string, string> = {
      SHARED_KEY: generateKey(),
      SERVER_HOST: "127.0.0.1",
      RECON_FILEPATH: site.serverInputDir,
      RECON_DICOM_DIR: path.join(site.dir, "server_out"),
      RECON_SCRIPT: script,
      LOG_FILEPATH: path.join(site.dir, "recon.log"),
      CLIENT_DOWNLOAD_DIR: site.downloadDir,
      CLIENT_WATCH_DIRECTORY: site.watchDir,
      CLIENT_WATCH_PATTERN: "*.7",
      CLIENT_DAEMON_POLL_INTERVAL: "0.3",
      CLIENT_DAEMON_STABILITY_DELAY: "0.8",
      CLIENT_DAEMON_GROUPING_TIMEOUT: "0.5",
      CLIENT_DAEMON_RECON_OPTIONS_JSON: '{"mode": "watch_test"}',
      DISK_FREE_MARGIN: "0",
      ...options.opts,
    };
    const text = Object.entries(values).map(([key, value]) => `${key} = ${value}`).join("\n");
    await Deno.writeTextFile(site.optsPath, `${text}\n`, { mode: 0o600 });
    return site;
  }

  /** `name` inside the watch directory. */
  watched(name: string): string {
    return path.join(this.watchDir, name);
  }

  /** Every run of the recon script so far. */
  async runs(): Promise<Run[]> {
    let text: string;
    try {
      text = await Deno.readTextFile(path.join(this.dir, "runs.log"));
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return [];
      throw error;
    }
    return text.split("\n").filter(Boolean).map((line) => {
      const [head, args] = line.split(" | ");
      const [jobId, ...names] = head.trim().split(/\s+/);
      return { jobId, names: names.sort(), args: args ?? "" };
    });
  }

  /** The `sha256.txt` result of job `jobId` as downloaded by the client: name → sha256. */
  async resultSums(jobId: string): Promise<Map<string, string>> {
    const text = await Deno.readTextFile(path.join(this.downloadDir, jobId, "sha256.txt"));
    return new Map(
      text.split("\n").filter(Boolean).map((line) => {
        const [sum, name] = line.split(/\s+/);
        return [name, sum] as [string, string];
      }),
    );
  }

  /** Job input directories left on the server. */
  async serverInputDirs(): Promise<string[]> {
    const found: string[] = [];
    try {
      for await (const entry of Deno.readDir(this.serverInputDir)) {
        if (entry.isDirectory && entry.name.startsWith("job_")) found.push(entry.name);
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    return found;
  }

  /** Run `bin/recon-client watch --opts SITE ARGS` to completion (e.g. --status). */
  async client(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    const output = await new Deno.Command(CLIENT_BIN, {
      args: ["watch", "--opts", this.optsPath, ...args],
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

  /** The parsed `watch --status --json` document. */
  async status(): Promise<StatusDocument> {
    const result = await this.client(["--status", "--json"]);
    assert.equal(result.code, 0, result.stderr);
    return JSON.parse(result.stdout);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.dir, { recursive: true });
  }
}

/** `watch --status --json` as the tests read it. */
export interface StatusDocument {
  watcher_running: boolean;
  counts: Record<string, number>;
  files: {
    path: string;
    status: string;
    job_id: string | null;
    reason: string | null;
    sha256: string;
    attempts: number;
  }[];
}

/** A child process (server or watcher) with its stderr collected, stopped by PID. */
class Child implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly #stderr: Collector;
  readonly #stdout: Collector;
  #status?: Deno.CommandStatus;

  readonly label: string;

  constructor(program: string, args: string[]) {
    this.label = `${path.basename(program)} ${args.slice(0, 1).join(" ")}`;
    this.child = new Deno.Command(program, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#stderr = new Collector(this.child.stderr);
    this.#stdout = new Collector(this.child.stdout);
    live.add(this);
    this.child.status.then((status) => {
      this.#status = status;
      live.delete(this);
    });
  }

  get stderr(): string {
    return this.#stderr.text;
  }

  get stdout(): string {
    return this.#stdout.text;
  }

  get exited(): boolean {
    return this.#status !== undefined;
  }

  /** Wait until stderr matches `pattern`. */
  async waitFor(pattern: RegExp, timeoutMs = 60_000): Promise<RegExpExecArray> {
    return await waitUntil(`${pattern} in the stderr of ${this.label}`, () => {
      const match = pattern.exec(this.stderr);
      if (!match && this.exited) {
        throw new Error(`process exited before printing ${pattern}:\n${this.stderr}`);
      }
      return match;
    }, timeoutMs);
  }

  /** How many lines of stderr match `pattern`. */
  count(pattern: RegExp): number {
    return this.stderr.split("\n").filter((line) => pattern.test(line)).length;
  }

  /** SIGTERM (by PID), then wait; SIGKILL after `timeoutMs`. Returns status and duration. */
  async stop(timeoutMs = 15_000): Promise<{ status: Deno.CommandStatus; ms: number }> {
    const started = Date.now();
    if (!this.exited) {
      try {
        Deno.kill(this.child.pid, "SIGTERM");
      } catch { /* already gone */ }
    }
    const timer = setTimeout(() => {
      try {
        Deno.kill(this.child.pid, "SIGKILL");
      } catch { /* already gone */ }
    }, timeoutMs);
    try {
      const status = await this.child.status;
      await Promise.all([this.#stderr.done, this.#stdout.done]);
      return { status, ms: Date.now() - started };
    } finally {
      clearTimeout(timer);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }
}

/** A `bin/recon-server` for a site. */
export class ServerProcess extends Child {
  port = 0;

  /** Start on `port` (0: a free one) and wait until it listens. */
  static async start(site: WatchSite, port = 0): Promise<ServerProcess> {
    const server = new ServerProcess(SERVER_BIN, [
      "--opts",
      site.optsPath,
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
    ]);
    try {
      const match = await server.waitFor(/listening on 127\.0\.0\.1:(\d+)/);
      server.port = Number(match[1]);
    } catch (error) {
      await server.stop();
      throw error;
    }
    return server;
  }
}

/** A `bin/recon-client watch` for a site. */
export class WatcherProcess extends Child {
  /** Start `recon-client watch --opts SITE --port PORT ARGS`; returns once it watches. */
  static async start(
    site: WatchSite,
    port: number,
    args: string[] = [],
  ): Promise<WatcherProcess> {
    const watcher = WatcherProcess.spawn(site, port, args);
    try {
      await watcher.waitFor(/watching /);
    } catch (error) {
      await watcher.stop();
      throw error;
    }
    return watcher;
  }

  /** Start without waiting for anything. */
  static spawn(site: WatchSite, port: number, args: string[] = []): WatcherProcess {
    return new WatcherProcess(CLIENT_BIN, [
      "watch",
      "--opts",
      site.optsPath,
      "--port",
      String(port),
      ...args,
    ]);
  }
}

/** A port nothing listens on (yet). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/**
 * A TCP relay to `targetPort` that passes client → server bytes at about
 * `bytesPerSecond` (server → client unthrottled). When either side closes, both do.
 */
export class SlowRelay implements AsyncDisposable {
  readonly port: number;
  /** Bytes passed from the client to the server so far. */
  uploaded = 0;
  readonly #listener: Deno.TcpListener;
  readonly #tasks: Promise<void>[] = [];
  readonly #conns = new Set<Deno.Conn>();
  readonly #accepting: Promise<void>;

  constructor(targetPort: number, bytesPerSecond: number) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#listener = listener;
    this.port = listener.addr.port;
    this.#accepting = (async () => {
      try {
        for await (const client of listener) {
          this.#tasks.push(this.#relay(client, targetPort, bytesPerSecond));
        }
      } catch { /* listener closed */ }
    })();
  }

  async #relay(client: Deno.Conn, targetPort: number, bytesPerSecond: number): Promise<void> {
    this.#conns.add(client);
    let server: Deno.Conn;
    try {
      server = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
    } catch {
      client.close();
      this.#conns.delete(client);
      return;
    }
    this.#conns.add(server);
    const closeBoth = () => {
      for (const conn of [client, server]) {
        try {
          conn.close();
        } catch { /* closed */ }
        this.#conns.delete(conn);
      }
    };
    const pump = async (from: Deno.Conn, to: Deno.Conn, throttle: boolean) => {
      const buffer = new Uint8Array(throttle ? 16 * 1024 : 64 * 1024);
      try {
        while (true) {
          const read = await from.read(buffer);
          if (read === null) break;
          let written = 0;
          while (written < read) written += await to.write(buffer.subarray(written, read));
          if (throttle) {
            this.uploaded += read;
            await delay(Math.ceil((read / bytesPerSecond) * 1000));
          }
        }
      } catch { /* one side went away */ }
      closeBoth();
    };
    await Promise.all([pump(client, server, true), pump(server, client, false)]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#accepting;
    for (const conn of this.#conns) {
      try {
        conn.close();
      } catch { /* closed */ }
    }
    await Promise.all(this.#tasks);
  }
}
