/**
 * Test support for the end-to-end tests: a real `bin/recon-server` child process with
 * its own temporary directory and recon.opts, and `bin/recon-client` runs against it,
 * all over real sockets on 127.0.0.1. Stopped by PID (SIGTERM, then SIGKILL) with
 * `await using`.
 *
 * ```ts
 * await using server = await E2EServer.start({ script: testdata("e2e_recon.sh") });
 * const result = await server.client(["--files", file]);
 * ```
 *
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { OWNER_FILE } from "../../lib/server/recovery.ts";

/** The repository root. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** The programs under test: the shipped wrappers (`deno run` with the shipped permissions). */
export const SERVER_BIN = path.join(ROOT, "bin", "recon-server");
export const CLIENT_BIN = path.join(ROOT, "bin", "recon-client");

/** Path of a fixture in tests/testdata/. */
export function testdata(name: string): string {
  return path.join(ROOT, "tests", "testdata", name);
}

/** How a finished process ended and what it printed. */
export interface RunResult {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
}

/** Options of {@link run}. */
export interface RunOptions {
  /** Written to the process's stdin, which is then closed; stdin is /dev/null without it. */
  stdin?: string;
  env?: Record<string, string>;
  cwd?: string;
  /** The process is killed (SIGKILL) and the run fails after this long. Default 120 s. */
  timeoutMs?: number;
}

const decoder = new TextDecoder();

/** Run a program to completion, collecting stdout and stderr. */
export async function run(
  program: string,
  args: string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const child = new Deno.Command(program, {
    args,
    env: options.env,
    cwd: options.cwd,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, options.timeoutMs ?? 120_000);
  try {
    if (options.stdin !== undefined) {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(options.stdin));
      await writer.close();
    }
    const output = await child.output();
    const result = {
      code: output.code,
      signal: output.signal,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
    };
    if (timedOut) {
      throw new Error(
        `${path.basename(program)} ${args.join(" ")} did not finish in time\n${result.stderr}`,
      );
    }
    return result;
  } finally {
    clearTimeout(timer);
  }
}

let sharedKey: Promise<string> | undefined;

/** A SHARED_KEY made by `bin/recon-server keygen` (once per test process). */
export function keygen(): Promise<string> {
  sharedKey ??= run(SERVER_BIN, ["keygen"]).then((result) => {
    assert.equal(result.code, 0, `recon-server keygen failed: ${result.stderr}`);
    const key = result.stdout.trim();
    assert.match(key, /^[A-Za-z0-9_-]{43}=$/, "keygen prints one 44-character key");
    return key;
  });
  return sharedKey;
}

/** Resolve after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Poll `check` until it returns a value other than `undefined`/`false`, or fail after
 * `timeoutMs` with `what` in the message.
 */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  { timeoutMs = 10_000, intervalMs = 50 } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await delay(intervalMs);
  }
}

/**
 * Reads a child's stream into a string as it arrives (so the child never blocks on a
 * full pipe) and lets a test wait for a pattern in it. Keeps the last `limit` chars.
 */
export class StreamText {
  text = "";
  readonly done: Promise<void>;
  #limit: number;

  constructor(stream: ReadableStream<Uint8Array>, limit = 4 * 1024 * 1024) {
    this.#limit = limit;
    this.done = this.#pump(stream);
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    const streaming = new TextDecoder();
    for await (const chunk of stream) {
      this.text += streaming.decode(chunk, { stream: true });
      if (this.text.length > this.#limit) this.text = this.text.slice(-this.#limit);
    }
    this.text += streaming.decode();
  }

  /** The first match of `pattern`, waiting up to `timeoutMs`. */
  waitFor(pattern: RegExp, timeoutMs = 20_000): Promise<RegExpExecArray> {
    return waitFor(`${pattern} in the output`, () => pattern.exec(this.text) ?? undefined, {
      timeoutMs,
      intervalMs: 20,
    }).catch((error) => {
      throw new Error(`${error.message}; output so far:\n${this.text.slice(-4000)}`);
    });
  }
}

/** A client started with {@link E2EServer.spawnClient}, watched while it runs. */
export class ClientProcess implements AsyncDisposable {
  readonly pid: number;
  readonly #child: Deno.ChildProcess;
  readonly #stdout: StreamText;
  readonly #stderr: StreamText;
  readonly #status: Promise<Deno.CommandStatus>;

  constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.pid = child.pid;
    this.#stdout = new StreamText(child.stdout);
    this.#stderr = new StreamText(child.stderr);
    this.#status = child.status;
  }

  /** Stderr so far. */
  get stderr(): string {
    return this.#stderr.text;
  }

  /** Wait until stderr matches `pattern`. */
  waitForStderr(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray> {
    return this.#stderr.waitFor(pattern, timeoutMs);
  }

  /** Send a signal to the client (its deno process: the wrapper execs it). */
  kill(signal: Deno.Signal): void {
    this.#child.kill(signal);
  }

  /** Wait for the client to exit (killing it with SIGKILL after `timeoutMs`). */
  async result(timeoutMs = 120_000): Promise<RunResult> {
    const timer = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* gone */ }
    }, timeoutMs);
    try {
      const status = await this.#status;
      await Promise.all([this.#stdout.done, this.#stderr.done]);
      return {
        code: status.code,
        signal: status.signal,
        stdout: this.#stdout.text,
        stderr: this.#stderr.text,
      };
    } finally {
      clearTimeout(timer);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* already exited */ }
    await this.result();
  }
}

/** Options of {@link E2EServer.start}. */
export interface E2EServerOptions {
  /** RECON_SCRIPT. */
  script: string;
  /**
   * More `KEY = VALUE` lines, or replacements for the defaults (SHARED_KEY,
   * MAX_CONCURRENT_JOBS 1, JOB_TIMEOUT 60, SHUTDOWN_GRACE 2, CLIENT_DOWNLOAD_DIR,
   * CLIENT_DEFAULT_PFILE_PATH, LOCKOUT_FAILURES 0).
   */
  options?: Record<string, string | number>;
  /** Environment of the server (and so of RECON_SCRIPT), added to ours. */
  env?: Record<string, string>;
  /** How long to wait for "listening on". Default 20 s. */
  startTimeoutMs?: number;
  /**
   * On dispose, fail when a job input or output directory is left behind.
   * Default true; tests that kill the server on purpose turn it off.
   */
  expectCleanJobDirs?: boolean;
}

/** The eleven positional values and the default options of a test recon.opts. */
function optsText(dir: string, script: string, options: Record<string, string | number>): string {
  const lines = [
    "# recon.opts written by tests/support/e2e.ts",
    "127.0.0.1 # SERVER_HOST",
    "60000 # SERVER_PORT (the tests pass --port)",
    "sdc",
    "adw2.0",
    "22",
    "/usr/g/mrraw/",
    path.join(dir, "recon_pfiles"),
    script,
    path.join(dir, "recon_dicoms"),
    path.join(dir, "scanner_dicoms"),
    path.join(dir, "recon.log"),
  ];
  for (const [key, value] of Object.entries(options)) lines.push(`${key} = ${value}`);
  return lines.join("\n") + "\n";
}

/** A recon-server child process with its own directory and recon.opts. */
export class E2EServer implements AsyncDisposable {
  /** Temporary directory holding recon.opts and every directory the server and clients use. */
  readonly dir: string;
  readonly optsPath: string;
  readonly port: number;
  /** PID of the server's deno process (bin/recon-server execs it). */
  readonly pid: number;
  /** RECON_FILEPATH: job input directories and job logs. */
  readonly reconFilePath: string;
  /** RECON_DICOM_DIR: job output directories. */
  readonly dicomDir: string;
  /** CLIENT_DOWNLOAD_DIR. */
  readonly downloadDir: string;
  /** SHARED_KEY. */
  readonly key: string;
  expectCleanJobDirs: boolean;
  readonly #child: Deno.ChildProcess;
  readonly #stderr: StreamText;
  readonly #stdout: StreamText;
  readonly #status: Promise<Deno.CommandStatus>;
  #exited: Deno.CommandStatus | undefined;
  readonly #options: Record<string, string | number>;
  readonly #script: string;

  private constructor(init: {
    dir: string;
    key: string;
    script: string;
    options: Record<string, string | number>;
    child: Deno.ChildProcess;
    stderr: StreamText;
    stdout: StreamText;
    port: number;
    expectCleanJobDirs: boolean;
  }) {
    this.dir = init.dir;
    this.key = init.key;
    this.optsPath = path.join(init.dir, "recon.opts");
    this.reconFilePath = path.join(init.dir, "recon_pfiles");
    this.dicomDir = path.join(init.dir, "recon_dicoms");
    this.downloadDir = path.join(init.dir, "client_downloads");
    this.port = init.port;
    this.#child = init.child;
    this.pid = init.child.pid;
    this.#stderr = init.stderr;
    this.#stdout = init.stdout;
    this.#options = init.options;
    this.#script = init.script;
    this.expectCleanJobDirs = init.expectCleanJobDirs;
    this.#status = init.child.status.then((status) => (this.#exited = status));
  }

  /** Write recon.opts, start the server on a free port and wait until it listens. */
  static async start(options: E2EServerOptions): Promise<E2EServer> {
    const dir = await Deno.makeTempDir({ prefix: "recon_e2e_" });
    const key = await keygen();
    const settings: Record<string, string | number> = {
      SHARED_KEY: key,
      MAX_CONCURRENT_JOBS: 1,
      JOB_TIMEOUT: 60,
      SHUTDOWN_GRACE: 2,
      // The bad-input tests fail handshakes on purpose; a lockout would hide later cases.
      LOCKOUT_FAILURES: 0,
      CLIENT_DOWNLOAD_DIR: path.join(dir, "client_downloads"),
      CLIENT_DEFAULT_PFILE_PATH: path.join(dir, "default_pfile", "P00000.7"),
      ...options.options,
    };
    const optsPath = path.join(dir, "recon.opts");
    await Deno.writeTextFile(optsPath, optsText(dir, options.script, settings), { mode: 0o600 });
    const child = new Deno.Command(SERVER_BIN, {
      args: ["--opts", optsPath, "--port", "0", "--host", "127.0.0.1"],
      env: options.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const stderr = new StreamText(child.stderr);
    const stdout = new StreamText(child.stdout);
    const exited = child.status.then((status) => {
      throw new Error(
        `recon-server exited (code ${status.code}) before listening:\n${stderr.text}`,
      );
    });
    let port: number;
    try {
      const match = await Promise.race([
        stderr.waitFor(/listening on 127\.0\.0\.1:(\d+)/, options.startTimeoutMs ?? 20_000),
        exited,
      ]);
      port = Number(match[1]);
    } catch (error) {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await child.status;
      await Promise.all([stderr.done, stdout.done]);
      await Deno.remove(dir, { recursive: true });
      throw error;
    }
    exited.catch(() => {});
    return new E2EServer({
      dir,
      key,
      script: options.script,
      options: settings,
      child,
      stderr,
      stdout,
      port,
      expectCleanJobDirs: options.expectCleanJobDirs ?? true,
    });
  }

  /** Everything the server wrote to stderr so far (its log). */
  get log(): string {
    return this.#stderr.text;
  }

  /** Wait until the server log matches `pattern`. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray> {
    return this.#stderr.waitFor(pattern, timeoutMs);
  }

  /** True while the server process runs. */
  get running(): boolean {
    return this.#exited === undefined;
  }

  /**
   * Write another recon.opts for clients in the server's directory: the server's file
   * with `changes` applied (a value of `null` drops the option). Returns its path.
   */
  async writeClientOpts(
    name: string,
    changes: Record<string, string | number | null>,
  ): Promise<string> {
    const settings: Record<string, string | number> = { ...this.#options };
    for (const [key, value] of Object.entries(changes)) {
      if (value === null) delete settings[key];
      else settings[key] = value;
    }
    const file = path.join(this.dir, name);
    await Deno.writeTextFile(file, optsText(this.dir, this.#script, settings), { mode: 0o600 });
    return file;
  }

  #clientArgs(args: string[], optsPath?: string): string[] {
    return ["--opts", optsPath ?? this.optsPath, "--port", String(this.port), ...args];
  }

  /** Run `bin/recon-client --opts … --port PORT ARGS` to completion. */
  client(
    args: string[],
    options: RunOptions & { optsPath?: string } = {},
  ): Promise<RunResult> {
    return run(CLIENT_BIN, this.#clientArgs(args, options.optsPath), options);
  }

  /** Start a client and return at once, to watch or kill it while it runs. */
  spawnClient(args: string[], options: { optsPath?: string } = {}): ClientProcess {
    const child = new Deno.Command(CLIENT_BIN, {
      args: this.#clientArgs(args, options.optsPath),
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new ClientProcess(child);
  }

  /** Resident memory of the server process in KiB (from /proc). */
  async rssKiB(): Promise<number> {
    const status = await Deno.readTextFile(`/proc/${this.pid}/status`);
    // The wrapper script execs the server, so this PID is the server itself, not sh.
    assert.doesNotMatch(
      status,
      /^Name:\s+(sh|dash|bash)$/m,
      "the PID is the server, not its wrapper",
    );
    const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
    assert.ok(match, `no VmRSS line in /proc/${this.pid}/status`);
    return Number(match[1]);
  }

  /** Job input directories (job_*_input) and job output directories (job_*_output) now. */
  async jobDirs(): Promise<string[]> {
    const found: string[] = [];
    for (
      const [dir, pattern] of [
        [this.reconFilePath, /^job_.*_input$/],
        [this.dicomDir, /^job_.*_output$/],
      ] as const
    ) {
      try {
        for await (const entry of Deno.readDir(dir)) {
          if (pattern.test(entry.name)) found.push(path.join(dir, entry.name));
        }
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
    }
    return found.sort();
  }

  /** Wait until no job input or output directory is left (the server cleans up async). */
  async waitForNoJobDirs(timeoutMs = 10_000): Promise<void> {
    let left: string[] = [];
    try {
      await waitFor("the job directories to be removed", async () => {
        left = await this.jobDirs();
        return left.length === 0;
      }, { timeoutMs });
    } catch {
      assert.fail(`job directories left behind: ${left.join(", ")}\n${this.log.slice(-3000)}`);
    }
  }

  /** Wait for the server to exit; returns its status. */
  exited(): Promise<Deno.CommandStatus> {
    return this.#status;
  }

  /**
   * Send `signal` and wait for the exit; SIGKILL after `timeoutMs`. Returns the status
   * and how long the exit took.
   */
  async stop(
    signal: Deno.Signal = "SIGTERM",
    timeoutMs = 15_000,
  ): Promise<{ status: Deno.CommandStatus; ms: number; killed: boolean }> {
    const started = Date.now();
    if (this.#exited) return { status: this.#exited, ms: 0, killed: false };
    try {
      Deno.kill(this.pid, signal);
    } catch { /* exited meanwhile */ }
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      try {
        Deno.kill(this.pid, "SIGKILL");
      } catch { /* exited meanwhile */ }
    }, timeoutMs);
    try {
      const status = await this.#status;
      await Promise.all([this.#stderr.done, this.#stdout.done]);
      return { status, ms: Date.now() - started, killed };
    } finally {
      clearTimeout(timer);
    }
  }

  /** Stop the server, check that no job directory is left, remove the temporary directory. */
  async [Symbol.asyncDispose](): Promise<void> {
    let left: string[] = [];
    try {
      await this.stop("SIGTERM");
      if (this.expectCleanJobDirs) left = await this.jobDirs();
    } finally {
      await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    }
    assert.deepEqual(left, [], "no job directory is left behind when the server stops");
  }
}

/** A temporary directory removed with `await using`. */
export async function tempDir(prefix = "recon_e2e_files_"): Promise<
  { path: string } & AsyncDisposable
> {
  const dir = await Deno.makeTempDir({ prefix });
  return {
    path: dir,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }).catch(() => {}),
  };
}

/** Write `size` random bytes to `file` (1 MiB at a time); returns the SHA-256 hex. */
export async function writeRandomFile(file: string, size: number): Promise<string> {
  const handle = await Deno.open(file, { write: true, createNew: true });
  const hash = createHash("sha256");
  try {
    const chunk = new Uint8Array(1024 * 1024);
    let written = 0;
    while (written < size) {
      const part = chunk.subarray(0, Math.min(chunk.length, size - written));
      for (let offset = 0; offset < part.length; offset += 65536) {
        crypto.getRandomValues(part.subarray(offset, Math.min(offset + 65536, part.length)));
      }
      hash.update(part);
      let done = 0;
      while (done < part.length) done += await handle.write(part.subarray(done));
      written += part.length;
    }
  } finally {
    handle.close();
  }
  return hash.digest("hex");
}

/** SHA-256 hex of a file, read in chunks. */
export async function sha256File(file: string): Promise<string> {
  const hash = createHash("sha256");
  const handle = await Deno.open(file, { read: true });
  // Reading `readable` to its end closes the file.
  for await (const chunk of handle.readable) hash.update(chunk);
  return hash.digest("hex");
}

/** Directory entries (names), sorted; [] when the directory does not exist. */
export async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      // The server's marker in RECON_FILEPATH (lib/server/recovery.ts) is not a leftover.
      if (entry.name !== OWNER_FILE) names.push(entry.name);
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  return names.sort();
}

/** PIDs of processes whose command line matches `marker` (`pgrep -f`); [] when none. */
export async function pgrep(marker: string): Promise<number[]> {
  const result = await run("pgrep", ["-f", "--", marker]);
  if (result.code === 1) return [];
  assert.equal(result.code, 0, `pgrep failed: ${result.stderr}`);
  return result.stdout.trim().split("\n").map(Number);
}

/** A job id (a lower-case UUID), as in the client's `job <uuid> queued` line. */
export const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;
