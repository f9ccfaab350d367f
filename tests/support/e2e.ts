/**
 * Test support for every test that runs the real programs: `bin/recon-server` and
 * `bin/recon-client` (one-shot or `watch`) as child processes, each with its own
 * temporary directory and recon.opts, over real sockets on 127.0.0.1 (port 0), stopped
 * by PID (SIGTERM, then SIGKILL) with `await using`.
 *
 * - {@link E2EServer}: a server with a recon.opts in the seed's layout; `client()` runs
 *   `recon-client` against it, `spawnClient()` starts one to watch or interrupt.
 * - {@link WatchSite}: a scanner "site" for watch mode: one recon.opts shared by a
 *   {@link WatchServer} and a {@link WatcherProcess}, a watch directory and a recon
 *   script that logs every run; {@link SlowRelay} throttles an upload to interrupt it.
 * - Waiting: {@link waitFor} polls a condition, {@link StreamText} waits for a pattern
 *   in a child's output. A timeout shows the end of every live child's stderr.
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
import { DatabaseSync } from "node:sqlite";
import { fileURLToPath } from "node:url";
import { generateKey } from "../../lib/crypto/keys.ts";
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
 * Poll `check` until it returns a truthy value and return that, or fail after
 * `timeoutMs` with `what` and the end of each live child's stderr in the message.
 */
export async function waitFor<T>(
  what: string,
  check: () => T | Promise<T>,
  { timeoutMs = 10_000, intervalMs = 50 } = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const value = await check();
    if (value) return value as NonNullable<T>;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${liveLogs()}`);
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

/** Children still running, whose stderr a {@link waitFor} timeout shows. */
const live = new Set<Spawned>();

function liveLogs(): string {
  return [...live].map((child) =>
    `\n--- ${child.label} stderr (end) ---\n${child.stderr.slice(-4000)}`
  ).join("");
}

/** Options of {@link Spawned}. */
export interface SpawnOptions {
  env?: Record<string, string>;
  /** The signal `await using` stops the child with (default SIGKILL). */
  disposeSignal?: Deno.Signal;
}

/**
 * A child process watched while it runs: its output is collected as it arrives (so it
 * never blocks on a full pipe), a test can wait for a line on stderr, and it is
 * stopped by PID. The programs' wrappers exec deno, so the PID is the program itself.
 */
export class Spawned implements AsyncDisposable {
  readonly pid: number;
  /** `program first-arg`, for messages. */
  readonly label: string;
  readonly #child: Deno.ChildProcess;
  readonly #stdout: StreamText;
  readonly #stderr: StreamText;
  readonly #status: Promise<Deno.CommandStatus>;
  readonly #disposeSignal: Deno.Signal;
  #exited: Deno.CommandStatus | undefined;

  constructor(program: string, args: string[], options: SpawnOptions = {}) {
    this.label = `${path.basename(program)} ${args.slice(0, 1).join(" ")}`;
    this.#child = new Deno.Command(program, {
      args,
      env: options.env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.pid = this.#child.pid;
    this.#disposeSignal = options.disposeSignal ?? "SIGKILL";
    this.#stdout = new StreamText(this.#child.stdout);
    this.#stderr = new StreamText(this.#child.stderr);
    live.add(this);
    this.#status = this.#child.status.then((status) => {
      this.#exited = status;
      live.delete(this);
      return status;
    });
  }

  /** Stdout so far. */
  get stdout(): string {
    return this.#stdout.text;
  }

  /** Stderr so far (the programs' log). */
  get stderr(): string {
    return this.#stderr.text;
  }

  /** True while the process runs. */
  get running(): boolean {
    return this.#exited === undefined;
  }

  /** Wait until stderr matches `pattern`; fails at once when the process exits first. */
  waitForStderr(pattern: RegExp, timeoutMs = 20_000): Promise<RegExpExecArray> {
    return waitFor(`${pattern} in the stderr of ${this.label}`, () => {
      const match = pattern.exec(this.stderr);
      if (!match && !this.running) {
        throw new Error(`${this.label} exited before printing ${pattern}:\n${this.stderr}`);
      }
      return match;
    }, { timeoutMs, intervalMs: 20 });
  }

  /** How many lines of stderr match `pattern`. */
  count(pattern: RegExp): number {
    return this.stderr.split("\n").filter((line) => pattern.test(line)).length;
  }

  /** Send a signal to the process. */
  kill(signal: Deno.Signal): void {
    this.#child.kill(signal);
  }

  /** Wait for the process to exit; returns its status. */
  exited(): Promise<Deno.CommandStatus> {
    return this.#status;
  }

  /** Wait for the process to exit by itself (SIGKILL after `timeoutMs`). */
  async result(timeoutMs = 120_000): Promise<RunResult> {
    const timer = setTimeout(() => this.#signal("SIGKILL"), timeoutMs);
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

  /**
   * Send `signal` (by PID) and wait for the exit; SIGKILL after `timeoutMs`. Returns the
   * status and how long the exit took.
   */
  async stop(
    signal: Deno.Signal = "SIGTERM",
    timeoutMs = 15_000,
  ): Promise<{ status: Deno.CommandStatus; ms: number; killed: boolean }> {
    const started = Date.now();
    if (this.#exited) {
      await Promise.all([this.#stdout.done, this.#stderr.done]);
      return { status: this.#exited, ms: 0, killed: false };
    }
    this.#signal(signal);
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      this.#signal("SIGKILL");
    }, timeoutMs);
    try {
      const status = await this.#status;
      await Promise.all([this.#stdout.done, this.#stderr.done]);
      return { status, ms: Date.now() - started, killed };
    } finally {
      clearTimeout(timer);
    }
  }

  #signal(signal: Deno.Signal): void {
    try {
      Deno.kill(this.pid, signal);
    } catch { /* exited meanwhile */ }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop(this.#disposeSignal);
  }
}

/** A client started with {@link E2EServer.spawnClient}, killed (SIGKILL) on dispose. */
export type ClientProcess = Spawned;

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
   * On dispose, fail when a job input or output directory is left that the job store
   * does not keep (see {@link E2EServer.strayJobDirs}). Default true; tests that kill
   * the server on purpose turn it off.
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
  /** PID of the server's deno process (bin/recon-server execs it); a restart changes it. */
  pid: number;
  /** RECON_FILEPATH: job input directories and job logs. */
  readonly reconFilePath: string;
  /** RECON_DICOM_DIR: job output directories. */
  readonly dicomDir: string;
  /** CLIENT_DOWNLOAD_DIR. */
  readonly downloadDir: string;
  /** SHARED_KEY. */
  readonly key: string;
  expectCleanJobDirs: boolean;
  #process: Spawned;
  /** The log of the processes before a {@link restart}. */
  #earlierLog = "";
  #env?: Record<string, string>;
  readonly #options: Record<string, string | number>;
  readonly #script: string;

  private constructor(init: {
    dir: string;
    key: string;
    script: string;
    options: Record<string, string | number>;
    process: Spawned;
    port: number;
    expectCleanJobDirs: boolean;
    env?: Record<string, string>;
  }) {
    this.dir = init.dir;
    this.key = init.key;
    this.optsPath = path.join(init.dir, "recon.opts");
    this.reconFilePath = path.join(init.dir, "recon_pfiles");
    this.dicomDir = path.join(init.dir, "recon_dicoms");
    this.downloadDir = path.join(init.dir, "client_downloads");
    this.port = init.port;
    this.#process = init.process;
    this.pid = init.process.pid;
    this.#options = init.options;
    this.#script = init.script;
    this.expectCleanJobDirs = init.expectCleanJobDirs;
    this.#env = init.env;
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
    const process = new Spawned(
      SERVER_BIN,
      ["--opts", optsPath, "--port", "0", "--host", "127.0.0.1"],
      { env: options.env, disposeSignal: "SIGTERM" },
    );
    let port: number;
    try {
      const match = await process.waitForStderr(
        /listening on 127\.0\.0\.1:(\d+)/,
        options.startTimeoutMs ?? 20_000,
      );
      port = Number(match[1]);
    } catch (error) {
      await process.stop("SIGKILL");
      await Deno.remove(dir, { recursive: true });
      throw error;
    }
    return new E2EServer({
      dir,
      key,
      script: options.script,
      options: settings,
      process,
      port,
      expectCleanJobDirs: options.expectCleanJobDirs ?? true,
      env: options.env,
    });
  }

  /**
   * The monitoring endpoint (HTTP_LISTEN, e.g. `127.0.0.1:0`) as the server's log names
   * it: `http://127.0.0.1:PORT` without a trailing slash. The server logs it before
   * "listening on", so it is there once {@link start} returns.
   */
  get httpUrl(): string {
    const match = /http: serving .* on (https?:\/\/\S+?)\/?(?:\s|$)/.exec(this.log);
    if (!match) throw new Error("the server did not log an HTTP endpoint: is HTTP_LISTEN set?");
    return match[1];
  }

  /** Everything the server wrote to stderr so far (its log). */
  get log(): string {
    return this.#earlierLog + this.#process.stderr;
  }

  /** Wait until the server log (of the current process) matches `pattern`. */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<RegExpExecArray> {
    return this.#process.waitForStderr(pattern, timeoutMs);
  }

  /**
   * Start the server again on the same recon.opts, directories and port, after it was
   * stopped ({@link stop}, SIGTERM or SIGKILL; a running one is stopped with SIGTERM
   * first), and wait until it listens. {@link log} keeps the earlier processes' output.
   */
  async restart(timeoutMs = 20_000): Promise<void> {
    if (this.#process.running) await this.#process.stop("SIGTERM");
    this.#earlierLog += this.#process.stderr;
    const process = new Spawned(
      SERVER_BIN,
      ["--opts", this.optsPath, "--port", String(this.port), "--host", "127.0.0.1"],
      { env: this.#env, disposeSignal: "SIGTERM" },
    );
    this.#process = process;
    this.pid = process.pid;
    try {
      await process.waitForStderr(
        new RegExp(`listening on 127\\.0\\.0\\.1:${this.port}\\b`),
        timeoutMs,
      );
    } catch (error) {
      await process.stop("SIGKILL");
      throw error;
    }
  }

  /** True while the server process runs. */
  get running(): boolean {
    return this.#process.running;
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
    return new Spawned(CLIENT_BIN, this.#clientArgs(args, options.optsPath));
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

  /** RECON_STATE_DIR as the server resolves it (`state` beside RECON_FILEPATH). */
  get stateDir(): string {
    return path.join(this.dir, "state");
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
      for (const name of await listDir(dir)) {
        if (pattern.test(name)) found.push(path.join(dir, name));
      }
    }
    return found.sort();
  }

  /**
   * Job directories the job store does not keep (issue 13 lifetimes): an input
   * directory is kept while its job is receiving, queued or running, and for a failed
   * job until its inputs expire (FAILED_INPUT_RETENTION); an output directory while its
   * job runs, while it waits to follow its Slurm job again (EXECUTOR = slurm, a stopped
   * server), and, once it succeeded, until its results expire (RESULT_RETENTION). Any
   * other one, or one of a job the store does not know, is a leftover. The store is
   * read without its lock (read-only), so this works while the server runs.
   */
  async strayJobDirs(): Promise<string[]> {
    const jobs = readStoreJobs(path.join(this.stateDir, "jobs.sqlite"));
    return (await this.jobDirs()).filter((dir) => {
      const match = /job_([0-9a-f-]{36})_(input|output)$/.exec(dir);
      const job = match ? jobs.get(match[1]) : undefined;
      if (!job) return true;
      if (match![2] === "input") {
        return !(["receiving", "queued", "running"].includes(job.state) ||
          (job.state === "failed" && !job.inputsRemoved));
      }
      // A Slurm job a stopped server left running writes on into it (issue 15): kept
      // while its job waits to be followed again.
      const followed = job.state === "queued" && job.slurm;
      return !(job.state === "running" || followed ||
        (job.state === "succeeded" && !job.resultsRemoved));
    });
  }

  /**
   * Wait until no job directory is left beyond what the job store keeps (the server
   * cleans up asynchronously): no stray one ({@link strayJobDirs}). A succeeded job's
   * results and a failed job's inputs stay until they expire.
   */
  async waitForNoJobDirs(timeoutMs = 10_000): Promise<void> {
    let left: string[] = [];
    try {
      await waitFor("the job directories to be removed", async () => {
        left = await this.strayJobDirs();
        return left.length === 0;
      }, { timeoutMs });
    } catch {
      assert.fail(`job directories left behind: ${left.join(", ")}\n${this.log.slice(-3000)}`);
    }
  }

  /** Wait for the server to exit; returns its status. */
  exited(): Promise<Deno.CommandStatus> {
    return this.#process.exited();
  }

  /**
   * Send `signal` and wait for the exit; SIGKILL after `timeoutMs`. Returns the status
   * and how long the exit took.
   */
  stop(
    signal: Deno.Signal = "SIGTERM",
    timeoutMs = 15_000,
  ): Promise<{ status: Deno.CommandStatus; ms: number; killed: boolean }> {
    return this.#process.stop(signal, timeoutMs);
  }

  /**
   * Stop the server, check that no job directory is left that the job store does not
   * keep, remove the temporary directory.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    let left: string[] = [];
    try {
      await this.stop("SIGTERM");
      if (this.expectCleanJobDirs) left = await this.strayJobDirs();
    } finally {
      await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    }
    assert.deepEqual(left, [], "no job directory is left behind when the server stops");
  }
}

/** What {@link E2EServer.strayJobDirs} reads of each job in the store. */
interface StoredJob {
  state: string;
  inputsRemoved: boolean;
  resultsRemoved: boolean;
  /** Handed to Slurm (a Slurm job id recorded). */
  slurm: boolean;
}

/**
 * The jobs in the store file `file` by id, read-only (the server may be running: it
 * locks a file of its own, not the database); none when there is no store yet.
 */
function readStoreJobs(file: string): Map<string, StoredJob> {
  const jobs = new Map<string, StoredJob>();
  try {
    Deno.statSync(file);
  } catch {
    return jobs;
  }
  const db = new DatabaseSync(file, { readOnly: true });
  try {
    const rows = db.prepare(
      "SELECT id, state, inputs_removed, results_removed, executor, executor_ref FROM jobs",
    ).all();
    for (const row of rows) {
      jobs.set(String(row.id), {
        state: String(row.state),
        inputsRemoved: Number(row.inputs_removed) === 1,
        resultsRemoved: Number(row.results_removed) === 1,
        slurm: row.executor === "slurm" && row.executor_ref !== null,
      });
    }
  } finally {
    db.close();
  }
  return jobs;
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

/** Fill `bytes` with random bytes (getRandomValues takes at most 64 KiB at a time). */
function fillRandom(bytes: Uint8Array): void {
  for (let offset = 0; offset < bytes.length; offset += 65536) {
    crypto.getRandomValues(bytes.subarray(offset, Math.min(offset + 65536, bytes.length)));
  }
}

/** `size` random bytes. */
export function randomBytes(size: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(size);
  fillRandom(bytes);
  return bytes;
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
      fillRandom(part);
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

/** SHA-256 hex of bytes. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
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

// ---------------------------------------------------------------------------
// Watch mode: a scanner site with a server and a watcher sharing one recon.opts.

/**
 * The watch site's RECON_SCRIPT. It appends one line per run to `runs.log`:
 * `<job_id> <input names…> | <script arguments>`, writes `sha256.txt` (one
 * `<sha256>  <name>` line per input) as the job's result, fails (exit 3) for inputs
 * whose names contain "bad" unless the file `allow_bad` exists in the site, and sleeps
 * for the seconds in the file `slow_job` when that exists.
 */
const WATCH_RECON_SCRIPT = `#!/bin/sh
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

/** One run of the watch site's recon script on the server. */
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

/** `watch --status --json` as the tests read it. */
export interface StatusDocument {
  watcher_running: boolean;
  /** Why the watcher stopped by itself (a refused key), or null. */
  watcher_stopped: { at: string; reason: string; hint: string } | null;
  counts: Record<string, number>;
  files: {
    path: string;
    status: string;
    job_id: string | null;
    reason: string | null;
    /** Null for a baseline file (never hashed). */
    sha256: string | null;
    attempts: number;
  }[];
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

  /**
   * A site whose watcher scans every 0.3 s, takes a file once it stayed unchanged for
   * 0.8 s and groups files finished within 0.5 s of each other.
   */
  static async create(options: SiteOptions = {}): Promise<WatchSite> {
    const site = new WatchSite(await Deno.makeTempDir({ prefix: "recon_watch_test_" }));
    await Deno.mkdir(site.watchDir);
    const script = path.join(site.dir, "recon.sh");
    await Deno.writeTextFile(script, WATCH_RECON_SCRIPT, { mode: 0o755 });
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

  /** Wait until the recon script has run at least `count` times; returns the runs. */
  waitForRuns(count: number, timeoutMs = 60_000): Promise<Run[]> {
    return waitFor(`${count} run(s) of the recon script`, async () => {
      const runs = await this.runs();
      return runs.length >= count ? runs : undefined;
    }, { timeoutMs, intervalMs: 100 });
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
    return (await listDir(this.serverInputDir)).filter((name) => name.startsWith("job_"));
  }

  /** Run `bin/recon-client watch --opts SITE ARGS` to completion (e.g. --status). */
  client(args: string[]): Promise<RunResult> {
    return run(CLIENT_BIN, ["watch", "--opts", this.optsPath, ...args]);
  }

  /** The parsed `watch --status --json` document. */
  async status(): Promise<StatusDocument> {
    const result = await this.client(["--status", "--json"]);
    assert.equal(result.code, 0, result.stderr);
    return JSON.parse(result.stdout);
  }

  /** Wait until `file` has `status` in the state file; returns its entry. */
  waitForStatus(
    file: string,
    status: string,
    timeoutMs = 60_000,
  ): Promise<StatusDocument["files"][number]> {
    return waitFor(`${file} to be ${status}`, async () => {
      const document = await this.status();
      return document.files.find((entry) => entry.path === file && entry.status === status);
    }, { timeoutMs, intervalMs: 100 });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Deno.remove(this.dir, { recursive: true });
  }
}

/** A `bin/recon-server` for a {@link WatchSite}, stopped with SIGTERM on dispose. */
export class WatchServer extends Spawned {
  port = 0;

  /** Start on `port` (0: a free one) and wait until it listens. */
  static async start(site: WatchSite, port = 0): Promise<WatchServer> {
    const server = new WatchServer(
      SERVER_BIN,
      ["--opts", site.optsPath, "--host", "127.0.0.1", "--port", String(port)],
      { disposeSignal: "SIGTERM" },
    );
    try {
      const match = await server.waitForStderr(/listening on 127\.0\.0\.1:(\d+)/);
      server.port = Number(match[1]);
    } catch (error) {
      await server.stop();
      throw error;
    }
    return server;
  }
}

/** A `bin/recon-client watch` for a {@link WatchSite}, stopped with SIGTERM on dispose. */
export class WatcherProcess extends Spawned {
  /** Start `recon-client watch --opts SITE --port PORT ARGS`; returns once it watches. */
  static async start(
    site: WatchSite,
    port: number,
    args: string[] = [],
  ): Promise<WatcherProcess> {
    const watcher = WatcherProcess.spawn(site, port, args);
    try {
      await watcher.waitForStderr(/watching /);
    } catch (error) {
      await watcher.stop();
      throw error;
    }
    return watcher;
  }

  /** Start without waiting for anything. */
  static spawn(site: WatchSite, port: number, args: string[] = []): WatcherProcess {
    return new WatcherProcess(
      CLIENT_BIN,
      ["watch", "--opts", site.optsPath, "--port", String(port), ...args],
      { disposeSignal: "SIGTERM" },
    );
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
