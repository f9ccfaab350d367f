/**
 * `recon-client watch`: scanner watch mode (docs/WATCH.md). Parses the watch
 * command line, applies its flags over recon.opts, and runs one of: the watcher
 * (lib/watch/daemon.ts) until SIGTERM/SIGINT, `--status` (with its health check for
 * monitoring, lib/watch/health.ts), or `--retry`.
 *
 * Of the watch modules only this one writes stdout, through `context.writeStdout`.
 *
 * @module
 */
import * as path from "node:path";
import { parseCommandLine, parsePort } from "../cli/entry.ts";
import { loadConfig, sharedKeyMaterial } from "../cli/support.ts";
import { ConfigError, ExitCode, UsageError } from "../errors.ts";
import { log, setupLogging } from "../log.ts";
import type { ReconConfig } from "../opts/mod.ts";
import { checkReconOptions, parseReconOptions, type ReconOptions } from "../wire/protocol.ts";
import { connectOptionsFrom, connectToServer } from "../client/connect.ts";
import { type ExistingFiles, runWatchDaemon } from "./daemon.ts";
import { WatcherLock, watcherRunning } from "./lock.ts";
import { parseSince } from "./since.ts";
import {
  assessHealth,
  DEFAULT_MAX_BACKOFF_MS,
  DEFAULT_MAX_WAITING_MS,
  formatDuration,
  type HealthInput,
  type HealthLimits,
  parseLimit,
} from "./health.ts";
import { planRetry, statusJson, type StatusReport, statusText } from "./status.ts";
import { statusMetrics } from "./status_metrics.ts";
import { StateStore } from "./state.ts";

/** What the entrypoint lends the watch command. */
export interface WatchContext {
  program: string;
  writeStdout: (text: string) => void;
  writeStderr: (text: string) => void;
  /** Aborted on SIGINT/SIGTERM. */
  signal: AbortSignal;
}

function help(program: string): string {
  const maxWaiting = formatDuration(DEFAULT_MAX_WAITING_MS);
  const maxBackoff = formatDuration(DEFAULT_MAX_BACKOFF_MS);
  return `${program} watch: scanner watch mode. Watches CLIENT_WATCH_DIRECTORY, sends every
finished file matching CLIENT_WATCH_PATTERN exactly once, and saves the results in
CLIENT_DOWNLOAD_DIR/<job_id>/. Runs in the foreground until SIGTERM or Ctrl-C.
Stopping it leaves its jobs on the server: the next start takes each up again
(resumes its upload, or fetches its results) instead of sending its files again.

The first start (no state file yet) records the files already in the directory as
"baseline" and does not send them; only files that appear (or change) afterwards are
sent. --submit-existing or --since TIME send old files too; --retry FILE sends one.

Usage:
  ${program} watch [--watch-dir DIR] [--pattern GLOB] [--recon-options JSON] [options]
  ${program} watch --status [--json | --prometheus] [--max-waiting DURATION]
                 [--max-backoff DURATION] [--exit-zero]
  ${program} watch --retry FILE|JOB_ID [--retry FILE|JOB_ID ...] [--json]

Watching:
  --watch-dir DIR         overrides CLIENT_WATCH_DIRECTORY
  --pattern GLOB          overrides CLIENT_WATCH_PATTERN (a glob on the file name)
  --recon-options JSON    overrides CLIENT_DAEMON_RECON_OPTIONS_JSON
  --download-dir DIR      overrides CLIENT_DOWNLOAD_DIR
  --host HOST             overrides SERVER_HOST
  --port PORT             overrides SERVER_PORT

First start only (ignored, with a warning, once the state file has its baseline):
  --submit-existing       send every matching file already in the directory
  --since TIME            send those modified at or after TIME, baseline the rest;
                          TIME is 2026-11-20, '2026-11-20 08:30' (local time unless
                          it ends in Z or +HH:MM), or a time ago: 90m, 12h, 7d

State:
  --state PATH            the state file (default CLIENT_DAEMON_STATE_FILE, else
                          recon-watch.sqlite next to recon.opts)
  --status                list the recorded files and their state: pending,
                          submitted (with the job's phase: uploading, queued,
                          running, downloading), done, failed, skipped (baseline
                          files are counted), the files being written, why
                          the watcher stopped if it stopped by itself, and the
                          watcher's health (below)
  --retry FILE|JOB_ID     make a failed (or, with no watcher running, submitted)
                          file and the rest of its job pending again, to be sent
                          as a new job, or send a baseline file (baseline files
                          named in one command go as one job); a running watcher
                          sends it at its next scan, otherwise the next start does
  --json                  --status/--retry output as JSON

Health (--status; docs/WATCH.md section 12):
  --status also checks the watcher's health and exits non-zero when something is
  wrong, one problem: line (and one entry of .health.problems) per failed check:
   10 no watcher is running (no process holds the state file's lock)
   11 the watcher runs but finished no scan of its directory for 10 minutes (or 5
      poll intervals, if longer), e.g. the directory cannot be listed
   12 the watcher has failed to reach the server for longer than --max-backoff
   13 a file has waited longer than --max-waiting to reach the server (pending, or
      its upload not finished)
  With several problems the lowest code wins; 0 is healthy, 2 means it cannot tell.
  --max-waiting DURATION  the age that makes a waiting file a problem (default
                          ${maxWaiting}); DURATION is 90s, 30m, 2h, 1d or seconds; 0: off
  --max-backoff DURATION  how long failing to reach the server may last (default
                          ${maxBackoff}); 0: off
  --prometheus            --status as Prometheus metrics (node_exporter textfile)
  --exit-zero             exit 0 whatever the health (as before it was checked)

General:
  --opts PATH             recon.opts to use (default ./recon.opts)
  --debug                 debug logging
  --allow-unknown-options accept recon.opts options neither program knows, with a
                          warning
  -h, --help              this help

Timing comes from recon.opts: CLIENT_DAEMON_POLL_INTERVAL (scan), _STABILITY_DELAY
(a file must stay unchanged that long), _GROUPING_TIMEOUT (files finished that close
together go as one job). CLIENT_DAEMON_ON_COMPLETE runs as PROGRAM JOB_ID RESULT_DIR
after each completed job.

Exit codes: 0 stopped by SIGTERM/Ctrl-C, --retry done, or --status healthy; 10-13
--status found a problem (above); 2 usage or configuration error (watch directory
missing or unreadable, bad options, another watcher uses the same state file, nothing
matches --retry), also when the server refuses our SHARED_KEY: the watcher stops
instead of retrying, and --status says why.
`;
}

interface WatchArgs {
  opts: string;
  watchDir?: string;
  pattern?: string;
  reconOptions?: string;
  downloadDir?: string;
  host?: string;
  port?: string;
  state?: string;
  status: boolean;
  retry: string[];
  submitExisting: boolean;
  since?: string;
  json: boolean;
  prometheus: boolean;
  maxWaiting?: string;
  maxBackoff?: string;
  exitZero: boolean;
  debug: boolean;
  allowUnknownOptions: boolean;
  help: boolean;
}

function parseWatchArgs(argv: string[], program: string): WatchArgs {
  // One parser for both commands: unknown options name the nearest known one.
  const { values } = parseCommandLine(program, argv, {
    opts: { type: "string" },
    "watch-dir": { type: "string" },
    pattern: { type: "string" },
    "recon-options": { type: "string" },
    "download-dir": { type: "string" },
    host: { type: "string" },
    port: { type: "string" },
    state: { type: "string" },
    status: { type: "boolean" },
    retry: { type: "string", multiple: true },
    "submit-existing": { type: "boolean" },
    since: { type: "string" },
    json: { type: "boolean" },
    prometheus: { type: "boolean" },
    "max-waiting": { type: "string" },
    "max-backoff": { type: "string" },
    "exit-zero": { type: "boolean" },
    debug: { type: "boolean" },
    "allow-unknown-options": { type: "boolean" },
    help: { type: "boolean", short: "h" },
  }, { command: `${program} watch`, allowPositionals: false });
  const args: WatchArgs = {
    opts: values.opts ?? "recon.opts",
    watchDir: values["watch-dir"],
    pattern: values.pattern,
    reconOptions: values["recon-options"],
    downloadDir: values["download-dir"],
    host: values.host,
    port: values.port,
    state: values.state,
    status: values.status ?? false,
    retry: values.retry ?? [],
    submitExisting: values["submit-existing"] ?? false,
    since: values.since,
    json: values.json ?? false,
    prometheus: values.prometheus ?? false,
    maxWaiting: values["max-waiting"],
    maxBackoff: values["max-backoff"],
    exitZero: values["exit-zero"] ?? false,
    debug: values.debug ?? false,
    allowUnknownOptions: values["allow-unknown-options"] ?? false,
    help: values.help ?? false,
  };
  if (args.status && args.retry.length > 0) {
    throw new UsageError("use either --status or --retry, not both");
  }
  if (args.json && !args.status && args.retry.length === 0) {
    throw new UsageError("--json goes with --status or --retry");
  }
  const statusOnly = [
    ["--prometheus", args.prometheus],
    ["--max-waiting", args.maxWaiting !== undefined],
    ["--max-backoff", args.maxBackoff !== undefined],
    ["--exit-zero", args.exitZero],
  ].filter(([, given]) => given).map(([flag]) => flag);
  if (statusOnly.length > 0 && !args.status) {
    const verb = statusOnly.length === 1 ? "goes" : "go";
    throw new UsageError(`${statusOnly.join(" and ")} ${verb} with --status`);
  }
  if (args.json && args.prometheus) {
    throw new UsageError("use either --json or --prometheus, not both");
  }
  if (args.submitExisting && args.since !== undefined) {
    throw new UsageError("use either --submit-existing or --since, not both");
  }
  if ((args.submitExisting || args.since !== undefined) && (args.status || args.retry.length)) {
    throw new UsageError("--submit-existing and --since go with starting the watcher", {
      hint: "to send a file already recorded, use --retry FILE",
    });
  }
  if (args.pattern !== undefined && args.pattern.trim() === "") {
    throw new UsageError("--pattern must not be empty");
  }
  return args;
}

function applyFlags(config: ReconConfig, args: WatchArgs): void {
  if (args.watchDir !== undefined) config.CLIENT_WATCH_DIRECTORY = path.resolve(args.watchDir);
  if (args.pattern !== undefined) config.CLIENT_WATCH_PATTERN = args.pattern;
  if (args.downloadDir !== undefined) config.CLIENT_DOWNLOAD_DIR = path.resolve(args.downloadDir);
  if (args.host !== undefined) config.SERVER_HOST = args.host;
  if (args.port !== undefined) config.SERVER_PORT = parsePort(args.port);
  if (args.state !== undefined) config.CLIENT_DAEMON_STATE_FILE = path.resolve(args.state);
}

function watchReconOptions(args: WatchArgs, config: ReconConfig): ReconOptions {
  try {
    return args.reconOptions === undefined
      ? checkReconOptions(config.CLIENT_DAEMON_RECON_OPTIONS_JSON)
      : parseReconOptions(args.reconOptions);
  } catch (error) {
    const source = args.reconOptions === undefined
      ? "CLIENT_DAEMON_RECON_OPTIONS_JSON"
      : "--recon-options";
    throw new ConfigError(`${source}: ${(error as Error).message}`, {
      hint: `for example {"num_slices": 128, "algorithm": "fft"}`,
    });
  }
}

async function exists(file: string): Promise<boolean> {
  try {
    await Deno.stat(file);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw new ConfigError(`cannot use state file ${file}: ${(error as Error).message}`);
  }
}

function healthLimits(args: WatchArgs): HealthLimits {
  return {
    maxWaitingMs: args.maxWaiting === undefined
      ? DEFAULT_MAX_WAITING_MS
      : parseLimit(args.maxWaiting, "--max-waiting"),
    maxBackoffMs: args.maxBackoff === undefined
      ? DEFAULT_MAX_BACKOFF_MS
      : parseLimit(args.maxBackoff, "--max-backoff"),
  };
}

/** `--status`: prints the report; returns its health's exit code (0 with --exit-zero). */
async function showStatus(statePath: string, args: WatchArgs, context: WatchContext) {
  const limits = healthLimits(args);
  const now = new Date();
  const stateFileExists = await exists(statePath);
  const running = await watcherRunning(statePath);
  const report: StatusReport = {
    stateFile: statePath,
    stateFileExists,
    watcherRunning: running,
    files: [],
    now,
  };
  const input: HealthInput = { watcherRunning: running, stateFileExists, files: [], now, limits };
  if (stateFileExists) {
    const store = StateStore.open(statePath, { readOnly: true });
    try {
      report.files = input.files = store.list();
      // Rows left by a watcher that crashed would be stale: only a running one's count.
      report.writing = running ? store.watching() : [];
      report.firstStart = store.firstStart();
      report.stopped = input.stopped = store.stopNote();
      const pid = Number(store.getMeta("pid"));
      input.pid = Number.isInteger(pid) ? pid : undefined;
      input.runId = store.getMeta("run_id");
      input.startedAt = store.getMeta("started_at");
      input.heartbeat = store.heartbeat();
      input.serverTrouble = store.serverTrouble();
    } finally {
      store.close();
    }
  }
  report.health = assessHealth(input);
  let output: string;
  if (args.json) output = `${statusJson(report)}\n`;
  else if (args.prometheus) output = statusMetrics(report);
  else output = statusText(report);
  context.writeStdout(output);
  return args.exitZero ? ExitCode.OK : report.health.exitCode;
}

async function retry(
  statePath: string,
  config: ReconConfig,
  args: WatchArgs,
  context: WatchContext,
): Promise<number> {
  if (!await exists(statePath)) {
    throw new UsageError(`no state file at ${statePath}: the watcher has recorded nothing yet`, {
      hint: "pass the same --opts (or --state) the watcher uses",
    });
  }
  const running = await watcherRunning(statePath);
  const store = StateStore.open(statePath);
  try {
    const plan = await planRetry(store, args.retry, {
      watcherRunning: running,
      cwd: Deno.cwd(),
    });
    // A baseline file has a group of its own; those named together go as one job.
    const baseline = plan.retry.filter((row) => row.status === "baseline");
    store.retry(plan.retry.filter((row) => row.status !== "baseline").map((row) => row.id));
    if (baseline.length > 0) store.retry(baseline.map((row) => row.id), crypto.randomUUID());
    const when = running
      ? `the running watcher sends them within CLIENT_DAEMON_POLL_INTERVAL (${config.CLIENT_DAEMON_POLL_INTERVAL} s)`
      : "they are sent when 'recon-client watch' next starts";
    if (args.json) {
      context.writeStdout(
        `${
          JSON.stringify(
            {
              retried: plan.retry.map((row) => ({
                path: row.path,
                previous_status: row.status,
                job_id: row.jobId,
              })),
              already_pending: plan.alreadyPending.map((row) => row.path),
              watcher_running: running,
            },
            null,
            2,
          )
        }\n`,
      );
    } else {
      const lines = [
        ...plan.retry.map((row) =>
          `${row.path}: ${row.status}${row.jobId ? ` (job ${row.jobId})` : ""} -> pending`
        ),
        ...plan.alreadyPending.map((row) => `${row.path}: already pending`),
        when,
      ];
      context.writeStdout(`${lines.join("\n")}\n`);
    }
    return ExitCode.OK;
  } finally {
    store.close();
  }
}

async function watch(
  loaded: Awaited<ReturnType<typeof loadConfig>>,
  args: WatchArgs,
  context: WatchContext,
): Promise<number> {
  const { config } = loaded;
  await setupLogging({
    program: context.program,
    level: args.debug ? "debug" : "info",
    stderrLevel: args.debug ? "debug" : "info",
    filePath: config.LOG_FILEPATH || undefined,
  });
  const logger = log(context.program, "watch");
  for (const warning of loaded.warnings) logger.warn(warning);
  const key = await sharedKeyMaterial(loaded);
  const reconOptions = watchReconOptions(args, config);
  let existing: ExistingFiles | undefined;
  if (args.submitExisting) existing = { mode: "submit-existing" };
  if (args.since !== undefined) existing = { mode: "since", since: parseSince(args.since) };
  if (config.CLIENT_WATCH_DIRECTORY === "") {
    throw new ConfigError("CLIENT_WATCH_DIRECTORY is not set", {
      hint: `set it in ${loaded.path} or pass --watch-dir DIR`,
    });
  }
  const statePath = config.CLIENT_DAEMON_STATE_FILE;
  let lock: WatcherLock | undefined;
  try {
    await Deno.mkdir(path.dirname(statePath), { recursive: true });
    lock = await WatcherLock.acquire(statePath);
  } catch (error) {
    throw new ConfigError(`cannot use state file ${statePath}: ${(error as Error).message}`, {
      hint: "set CLIENT_DAEMON_STATE_FILE (or --state) to a path the watcher can write",
      cause: error,
    });
  }
  if (!lock) {
    throw new UsageError(`another recon-client watch is running with state file ${statePath}`, {
      hint: "stop it first, or give this one its own --state (and its own watch directory)",
    });
  }
  try {
    const store = StateStore.open(statePath);
    try {
      const runId = crypto.randomUUID();
      store.setMeta("run_id", runId);
      store.setMeta("pid", String(Deno.pid));
      store.setMeta("started_at", new Date().toISOString());
      const where = `${config.SERVER_HOST}:${config.SERVER_PORT}`;
      let skewWarned = false;
      const end = await runWatchDaemon({
        watchDir: path.resolve(config.CLIENT_WATCH_DIRECTORY),
        pattern: config.CLIENT_WATCH_PATTERN,
        pollMs: config.CLIENT_DAEMON_POLL_INTERVAL * 1000,
        stabilityMs: config.CLIENT_DAEMON_STABILITY_DELAY * 1000,
        groupingMs: config.CLIENT_DAEMON_GROUPING_TIMEOUT * 1000,
        reconOptions,
        downloadDir: config.CLIENT_DOWNLOAD_DIR,
        maxResultBytes: config.CLIENT_MAX_RESULT_BYTES,
        verifyAfterWrite: config.VERIFY_AFTER_WRITE === "yes",
        reconnectTimeoutMs: config.CLIENT_RECONNECT_TIMEOUT * 1000,
        onComplete: config.CLIENT_DAEMON_ON_COMPLETE,
        store,
        runId,
        serverName: where,
        existing,
        log: logger,
        signal: context.signal,
        connect: () =>
          connectToServer(connectOptionsFrom(config, key, (seconds) => {
            if (skewWarned) return;
            skewWarned = true;
            logger.warn(`the server's clock differs from ours by ${seconds} s; check NTP`);
          })),
      });
      // Already logged with its hint and noted for --status; a service manager must
      // not restart us into the same refusal (the unit's RestartPreventExitStatus=2).
      if (end.kind === "key-rejected") return ExitCode.USAGE;
    } finally {
      store.close();
    }
  } finally {
    lock.release();
  }
  return ExitCode.OK;
}

/** Run `recon-client watch …`; returns the exit code (errors are thrown for the entrypoint). */
export async function watchMain(argv: string[], context: WatchContext): Promise<number> {
  const args = parseWatchArgs(argv, context.program);
  if (args.help) {
    context.writeStdout(help(context.program));
    return ExitCode.OK;
  }
  const loaded = await loadConfig(args.opts, "client", {
    allowUnknownOptions: args.allowUnknownOptions,
  });
  applyFlags(loaded.config, args);
  const statePath = loaded.config.CLIENT_DAEMON_STATE_FILE;
  if (args.status) return await showStatus(statePath, args, context);
  if (args.retry.length > 0) return await retry(statePath, loaded.config, args, context);
  return await watch(loaded, args, context);
}
