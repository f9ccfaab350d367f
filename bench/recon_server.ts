/**
 * recon-server and recon-client as the benchmark runs them: the shipped entry points
 * (bin/recon-server, bin/recon-client, which exec deno, so the PID is deno's), a
 * private recon.opts in a temporary directory, 127.0.0.1 and a free port.
 *
 * @module
 */
import * as path from "node:path";
import { generateKey } from "../lib/crypto/keys.ts";
import {
  type CommandUsage,
  type MeasuredOptions,
  ROOT,
  runMeasured,
  stopProcess,
  track,
} from "./measure.ts";

export const SERVER_BIN = path.join(ROOT, "bin", "recon-server");
export const CLIENT_BIN = path.join(ROOT, "bin", "recon-client");

/** Settings of one benchmark server. */
export interface ServerSetup {
  /** Directory for recon.opts, job input and output (created; the caller removes it). */
  dir: string;
  script: string;
  /** Extra `KEY = value` settings. */
  extra?: Record<string, string | number>;
  /** Environment for the server (defaults to the bench's own). */
  env?: Record<string, string>;
  /** Run server.ts with these deno flags instead of bin/recon-server (profiling). */
  denoFlags?: string[];
  /**
   * Run the server on these CPUs only (`taskset -c CPUS`, which execs it: the PID stays
   * deno's); its threads and its job scripts inherit the set.
   */
  cpus?: string;
}

/** A running recon-server. */
export class ReconServerProcess {
  readonly pid: number;
  readonly port: number;
  readonly opts: string;
  /** Milliseconds from spawn to the "listening on" log line. */
  readonly startMs: number;
  #child: Deno.ChildProcess;
  #log: string[];

  private constructor(
    child: Deno.ChildProcess,
    port: number,
    opts: string,
    startMs: number,
    log: string[],
  ) {
    this.#child = child;
    this.pid = child.pid;
    this.port = port;
    this.opts = opts;
    this.startMs = startMs;
    this.#log = log;
  }

  /** Write recon.opts into `setup.dir` (mode 0600) and return its path. */
  static async writeOpts(setup: ServerSetup): Promise<string> {
    await Deno.mkdir(setup.dir, { recursive: true });
    const opts = path.join(setup.dir, "recon.opts");
    const settings: Record<string, string | number> = {
      SHARED_KEY: generateKey(),
      SERVER_HOST: "127.0.0.1",
      RECON_SCRIPT: setup.script,
      RECON_FILEPATH: path.join(setup.dir, "server_in"),
      RECON_DICOM_DIR: path.join(setup.dir, "server_out"),
      // Inside the work directory: an empty value means the default, /var/log/recon.
      LOG_FILEPATH: path.join(setup.dir, "recon.log"),
      DISK_FREE_MARGIN: "64M",
      ...setup.extra,
    };
    const text = Object.entries(settings).map(([key, value]) => `${key} = ${value}\n`).join("");
    await Deno.writeTextFile(opts, text, { mode: 0o600 });
    await Deno.chmod(opts, 0o600);
    return opts;
  }

  /** Start a server and wait for its "listening on 127.0.0.1:PORT" line (max 30 s). */
  static async start(setup: ServerSetup, opts?: string): Promise<ReconServerProcess> {
    opts ??= await ReconServerProcess.writeOpts(setup);
    const args = ["--opts", opts, "--port", "0", "--host", "127.0.0.1"];
    const [program, programArgs] = setup.denoFlags
      ? [
        Deno.execPath(),
        [
          "run",
          "--quiet",
          "--config",
          path.join(ROOT, "deno.json"),
          ...setup.denoFlags,
          ...(await Deno.readTextFile(path.join(ROOT, "bin", "permissions"))).trim().split(/\s+/),
          path.join(ROOT, "server.ts"),
          ...args,
        ],
      ]
      : [SERVER_BIN, args];
    const started = performance.now();
    const [exe, exeArgs]: [string, string[]] = setup.cpus
      ? ["taskset", ["-c", setup.cpus, program, ...programArgs]]
      : [program, programArgs];
    const child = new Deno.Command(exe, {
      args: exeArgs,
      env: setup.env,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    track(child, "recon-server");
    const log: string[] = [];
    const { promise: portFound, resolve: resolvePort } = Promise.withResolvers<
      { port: number; at: number } | null
    >();
    // Drain stderr for the server's whole life (a full pipe would stall it).
    (async () => {
      const decoder = new TextDecoder();
      let pending = "";
      for await (const chunk of child.stderr) {
        pending += decoder.decode(chunk, { stream: true });
        let newline: number;
        while ((newline = pending.indexOf("\n")) >= 0) {
          const line = pending.slice(0, newline);
          pending = pending.slice(newline + 1);
          log.push(line);
          if (log.length > 200) log.shift();
          const match = /listening on 127\.0\.0\.1:(\d+)/.exec(line);
          if (match) resolvePort({ port: Number(match[1]), at: performance.now() });
        }
      }
      resolvePort(null);
    })().catch(() => resolvePort(null));
    const timer = setTimeout(() => resolvePort(null), 30_000);
    const found = await portFound;
    clearTimeout(timer);
    if (!found) {
      await stopProcess(child);
      throw new Error(`recon-server did not start:\n${log.join("\n")}`);
    }
    return new ReconServerProcess(child, found.port, opts, found.at - started, log);
  }

  /** The server's last log lines (for error reports). */
  get log(): string {
    return this.#log.join("\n");
  }

  /** SIGINT (what a site's service manager sends) and wait; SIGKILL after 15 s. */
  async stop(signal: Deno.Signal = "SIGINT"): Promise<void> {
    let exited = false;
    const status = this.#child.status.then(() => (exited = true));
    try {
      this.#child.kill(signal);
    } catch { /* gone */ }
    const timer = setTimeout(() => {
      if (!exited) stopProcess(this.#child, 0);
    }, 15_000);
    await status;
    clearTimeout(timer);
  }
}

/** Run bin/recon-client under the rusage wrapper; throws with the client's stderr on failure. */
export function runClient(
  workDir: string,
  server: ReconServerProcess,
  args: string[],
  options: MeasuredOptions = {},
): Promise<CommandUsage> {
  return runMeasured(
    workDir,
    CLIENT_BIN,
    ["--opts", server.opts, "--host", "127.0.0.1", "--port", String(server.port), ...args],
    { label: "recon-client", ...options },
  );
}
