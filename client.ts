/**
 * recon-client: submits reconstruction jobs to a recon-server and fetches the
 * images, or asks the server for its status and queue. See `recon-client --help`.
 *
 * This is the only client module that reads Deno.args, writes stdout or exits.
 *
 * @module
 */
import * as path from "node:path";
import { parseArgs } from "node:util";
import { connectOptionsFrom, connectToServer } from "./lib/client/connect.ts";
import {
  describeFiles,
  fileErrorReason,
  filesMatching,
  type LocalFile,
  pathsFromLines,
} from "./lib/client/files.ts";
import {
  failureDetails,
  failureJson,
  queueJson,
  queueText,
  resultJson,
  resultText,
  skippedWarning,
  statusJson,
  statusText,
} from "./lib/client/format.ts";
import { ProgressDisplay } from "./lib/client/progress.ts";
import { getQueueDetails, getServerStatus } from "./lib/client/query.ts";
import { JobCancelledError, submitJob, type SubmitResult } from "./lib/client/submit.ts";
import type { Channel } from "./lib/wire/channel.ts";
import {
  keygenText,
  parseCommandLine,
  parsePort,
  runMain,
  showConfigText,
  splitCommand,
  textWriter,
  versionText,
  warningText,
} from "./lib/cli/entry.ts";
import { loadConfig, sharedKeyMaterial } from "./lib/cli/support.ts";
import { ExitCode, InterruptedError, JobError, UsageError } from "./lib/errors.ts";
import { log, type Logger, setupLogging } from "./lib/log.ts";
import type { LoadedOpts, ReconConfig } from "./lib/opts/mod.ts";
import { parseReconOptions, type ReconOptions } from "./lib/wire/protocol.ts";
import { VERSION } from "./lib/version.ts";
import { watchMain } from "./lib/watch/cli.ts";

const PROGRAM = "recon-client";

const HELP = `${PROGRAM} ${VERSION}: send raw scan files to a recon-server, run the site's
reconstruction there, and receive the images (DICOM). Everything on the wire is
encrypted with the SHARED_KEY from recon.opts.

Usage:
  ${PROGRAM} [--files FILE... | --files - | --directory DIR [--pattern GLOB]]
             [--recon-options JSON] [options]
  ${PROGRAM} --server-status [--json]
  ${PROGRAM} --view-queue [--json]
  ${PROGRAM} watch [--watch-dir DIR] [--pattern GLOB] [--status | --retry FILE|JOB_ID]
  ${PROGRAM} keygen

With no files, submits CLIENT_DEFAULT_PFILE_PATH from recon.opts.

Submitting:
  --files FILE...         input files (the first is the primary file); "-" reads
                          paths from stdin, one per line
  --directory DIR         send the files in DIR that match --pattern
  --pattern GLOB          glob for --directory (default "*"), e.g. "*.7"
  --recon-options JSON    options for the reconstruction script, a JSON object;
                          each becomes "--key value" on the script's command line
  --download-dir DIR      where results go (default CLIENT_DOWNLOAD_DIR); each job
                          gets DIR/<job_id>/

Querying:
  --server-status         uptime, version, workers, queue length, jobs done/failed
  --view-queue            running and queued jobs

General (the ones marked * may also come before "watch", as in
${PROGRAM} --opts /etc/recon/recon.opts watch --status):
  --opts PATH           * recon.opts to use (default ./recon.opts; created when missing)
  --host HOST           * override SERVER_HOST
  --port PORT           * override SERVER_PORT
  --json                * print one JSON document on stdout instead of text
  --quiet                 no progress or messages on stderr, only errors
  --debug               * debug logging
  --show-config           print the effective configuration as JSON (key redacted),
                          with any recon.opts lines naming no option
  --allow-unknown-options
                        * accept recon.opts options neither program knows, with a
                          warning
  -h, --help              this help
  -V, --version           print the version

Output: stdout lists the downloaded result files, one path per line, so
  ${PROGRAM} --files scan.7 | xargs dcmdump
works. Progress and messages go to stderr (a progress bar on a terminal), and so
does a warning when the server did not send some of the files the script wrote
(links, special files, names a client refuses; its log says which).

Exit codes:
  0    success (also when the server skipped some of the script's files: a
       warning on stderr and "skipped" in --json say how many)
  1    the job failed on the server (the reason and the script's last stderr lines
       are printed) or the server refused it
  2    usage or configuration error (bad flag, bad recon.opts, missing file)
  3    connection or handshake error (server down, wrong SHARED_KEY, refused)
  4    transfer error (size or SHA-256 mismatch, disk full, file changed)
  130  interrupted (Ctrl-C); a running job is cancelled on the server

Examples:
  ${PROGRAM} --files /path/to/P00000.7 /path/to/calibration.dat \\
      --recon-options '{"option1": "value1", "num_slices": 128}'
  ${PROGRAM} --directory /path/to/scan_data/ --pattern "*.dcm" \\
      --recon-options '{"custom_script_param": true}'
  ${PROGRAM} --server-status
  ${PROGRAM} --view-queue --json
  find /scans/today -name '*.7' | ${PROGRAM} --files -
`;

/** The command line of everything but `watch` (lib/watch/cli.ts parses its own). */
const CLIENT_OPTIONS = {
  files: { type: "string", multiple: true },
  directory: { type: "string" },
  pattern: { type: "string" },
  "recon-options": { type: "string" },
  "server-status": { type: "boolean" },
  "view-queue": { type: "boolean" },
  opts: { type: "string" },
  host: { type: "string" },
  port: { type: "string" },
  "download-dir": { type: "string" },
  json: { type: "boolean" },
  quiet: { type: "boolean" },
  debug: { type: "boolean" },
  "show-config": { type: "boolean" },
  "allow-unknown-options": { type: "boolean" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

/**
 * Options that may also come before the `watch` command (`recon-client --opts X watch
 * --status`), as with git or kubectl; true when the option takes a value.
 */
const GLOBAL_OPTIONS: Readonly<Record<string, boolean>> = {
  opts: true,
  host: true,
  port: true,
  json: false,
  debug: false,
  "allow-unknown-options": false,
};

const writeStdout = textWriter(Deno.stdout);
const writeStderr = textWriter(Deno.stderr, { ignoreErrors: true });

interface Args {
  files: string[];
  filesGiven: boolean;
  directory?: string;
  pattern: string;
  reconOptions?: string;
  serverStatus: boolean;
  viewQueue: boolean;
  opts: string;
  host?: string;
  port?: string;
  downloadDir?: string;
  json: boolean;
  quiet: boolean;
  debug: boolean;
  showConfig: boolean;
  allowUnknownOptions: boolean;
  help: boolean;
  version: boolean;
  command?: string;
}

/**
 * True when "watch" is the first argument that is neither an option nor its value
 * (and no --files before it makes it a file name): the command is misplaced, after an
 * option that is not global.
 */
function misplacedWatch(argv: string[]): boolean {
  const { tokens } = parseArgs({
    args: argv,
    options: CLIENT_OPTIONS,
    allowPositionals: true,
    strict: false,
    tokens: true,
  });
  const first = tokens.find((token) => token.kind === "positional");
  return first?.value === "watch" &&
    !tokens.some((token) => token.kind === "option" && token.name === "files");
}

function parseClientArgs(argv: string[]): Args {
  if (misplacedWatch(argv)) {
    throw new UsageError(`"watch" must come first, or after global options only`, {
      hint: `global options are ${
        Object.keys(GLOBAL_OPTIONS).map((name) => `--${name}`).join(", ")
      }; the rest go after "watch" (see '${PROGRAM} watch --help')`,
    });
  }
  const { values, positionals } = parseCommandLine(PROGRAM, argv, CLIENT_OPTIONS);
  const files = [...(values.files ?? [])];
  let command: string | undefined;
  if (files.length > 0) files.push(...positionals);
  else if (positionals[0] === "keygen" && positionals.length === 1) command = "keygen";
  else if (positionals.length > 0) {
    throw new UsageError(`unexpected argument "${positionals[0]}"`, {
      hint: `input files go after --files; see '${PROGRAM} --help'`,
    });
  }
  const args: Args = {
    files,
    filesGiven: files.length > 0,
    directory: values.directory,
    pattern: values.pattern ?? "*",
    reconOptions: values["recon-options"],
    serverStatus: values["server-status"] ?? false,
    viewQueue: values["view-queue"] ?? false,
    opts: values.opts ?? "recon.opts",
    host: values.host,
    port: values.port,
    downloadDir: values["download-dir"],
    json: values.json ?? false,
    quiet: values.quiet ?? false,
    debug: values.debug ?? false,
    showConfig: values["show-config"] ?? false,
    allowUnknownOptions: values["allow-unknown-options"] ?? false,
    help: values.help ?? false,
    version: values.version ?? false,
    command,
  };
  const modes = [args.filesGiven || args.directory !== undefined, args.serverStatus, args.viewQueue]
    .filter(Boolean).length;
  if (modes > 1) {
    throw new UsageError("choose one of --files/--directory, --server-status, --view-queue");
  }
  if (args.filesGiven && args.directory !== undefined) {
    throw new UsageError("use either --files or --directory, not both");
  }
  if (values.pattern !== undefined && args.directory === undefined) {
    throw new UsageError("--pattern needs --directory");
  }
  return args;
}

async function readStdinPaths(): Promise<string[]> {
  const text = await new Response(Deno.stdin.readable).text();
  return pathsFromLines(text);
}

async function inputPaths(args: Args, defaultPfile: string): Promise<string[]> {
  if (args.directory !== undefined) return await filesMatching(args.directory, args.pattern);
  if (args.filesGiven) {
    if (args.files.includes("-")) {
      if (args.files.length > 1) throw new UsageError('"--files -" cannot be mixed with paths');
      const paths = await readStdinPaths();
      if (paths.length === 0) throw new UsageError("no file paths on stdin");
      return paths;
    }
    return args.files;
  }
  // recon.opts cannot make it empty: an empty value means the default path.
  return [defaultPfile];
}

/**
 * The files to send, checked. Without --files or --directory that is
 * CLIENT_DEFAULT_PFILE_PATH, and a problem with it says so: the user named no file.
 */
async function inputFiles(args: Args, loaded: LoadedOpts): Promise<LocalFile[]> {
  const defaultPfile = loaded.config.CLIENT_DEFAULT_PFILE_PATH;
  const paths = await inputPaths(args, defaultPfile);
  if (args.filesGiven || args.directory !== undefined) return await describeFiles(paths);
  let reason: string | undefined;
  try {
    if (!(await Deno.stat(defaultPfile)).isFile) reason = "not a regular file";
  } catch (error) {
    reason = fileErrorReason(error);
  }
  if (reason !== undefined) {
    throw new UsageError(
      `no input files given, and the default CLIENT_DEFAULT_PFILE_PATH ${defaultPfile} ` +
        `cannot be used: ${reason}`,
      {
        hint: `name the files: ${PROGRAM} --files FILE... (or --directory DIR); ` +
          `or set CLIENT_DEFAULT_PFILE_PATH in ${loaded.path}`,
      },
    );
  }
  return await describeFiles(paths);
}

/**
 * The job's options: `--recon-options` or none. CLIENT_DAEMON_RECON_OPTIONS_JSON is
 * for the jobs watch mode sends (README), never for a one-off submission.
 */
function reconOptionsFrom(args: Args): ReconOptions {
  if (args.reconOptions === undefined) return {};
  try {
    return parseReconOptions(args.reconOptions);
  } catch (error) {
    throw new UsageError(`--recon-options: ${(error as Error).message}`, {
      hint: `for example --recon-options '{"num_slices": 128, "algorithm": "fft"}'`,
    });
  }
}

/**
 * Make sure results can be saved before anything is sent: finding out after a long
 * upload and reconstruction would strand the results on the server.
 */
async function checkDownloadDir(dir: string, args: Args, optsPath: string): Promise<void> {
  try {
    await Deno.mkdir(dir, { recursive: true });
    const probe = await Deno.makeTempFile({ dir, prefix: ".recon-write-test-" });
    await Deno.remove(probe);
  } catch (error) {
    const given = args.downloadDir === undefined
      ? `CLIENT_DOWNLOAD_DIR ${dir} (from ${optsPath})`
      : `--download-dir ${args.downloadDir}`;
    throw new UsageError(`cannot write results to ${given}: ${fileErrorReason(error)}`, {
      hint: args.downloadDir === undefined
        ? `set CLIENT_DOWNLOAD_DIR in ${optsPath}, or pass --download-dir, to a directory you can write`
        : "choose a directory you can write",
      cause: error,
    });
  }
}

function applyFlags(config: ReconConfig, args: Args): void {
  if (args.host !== undefined) config.SERVER_HOST = args.host;
  if (args.port !== undefined) config.SERVER_PORT = parsePort(args.port);
  if (args.downloadDir !== undefined) config.CLIENT_DOWNLOAD_DIR = path.resolve(args.downloadDir);
}

/** What every mode that talks to the server has set up: config, logging, the key. */
interface Setup {
  loaded: LoadedOpts;
  config: ReconConfig;
  logger: Logger;
  key: { raw: Uint8Array<ArrayBuffer>; id: string };
}

async function setUp(loaded: LoadedOpts, args: Args): Promise<Setup> {
  const { config } = loaded;
  await setupLogging({
    program: PROGRAM,
    level: args.debug ? "debug" : "info",
    stderrLevel: args.debug ? "debug" : "warning",
    filePath: config.LOG_FILEPATH || undefined,
  });
  const logger = log(PROGRAM);
  for (const warning of loaded.warnings) logger.warn(warning);
  return { loaded, config, logger, key: await sharedKeyMaterial(loaded) };
}

function connect({ config, key, logger }: Setup): Promise<Channel> {
  return connectToServer(
    connectOptionsFrom(
      config,
      key,
      (seconds) => logger.warn(`the server's clock differs from ours by ${seconds} s; check NTP`),
    ),
  );
}

/** One request in a session of its own; a failure cuts the session. */
async function ask<T>(setup: Setup, request: (channel: Channel) => Promise<T>): Promise<T> {
  const channel = await connect(setup);
  try {
    const answer = await request(channel);
    await channel.close();
    return answer;
  } catch (error) {
    channel.abort();
    throw error;
  }
}

async function showServerStatus(setup: Setup, args: Args): Promise<number> {
  const status = await ask(setup, getServerStatus);
  const { SERVER_HOST, SERVER_PORT } = setup.config;
  writeStdout(args.json ? statusJson(status) : statusText(status, `${SERVER_HOST}:${SERVER_PORT}`));
  return ExitCode.OK;
}

async function showQueue(setup: Setup, args: Args): Promise<number> {
  const { jobs } = await ask(setup, getQueueDetails);
  writeStdout(args.json ? queueJson(jobs) : queueText(jobs));
  return ExitCode.OK;
}

async function submit(setup: Setup, args: Args, signal: AbortSignal): Promise<number> {
  const { config, logger } = setup;
  const display = new ProgressDisplay({
    write: writeStderr,
    tty: Deno.stderr.isTerminal(),
    quiet: args.quiet || args.json,
  });
  // Check everything local before connecting.
  const files = await inputFiles(args, setup.loaded);
  const reconOptions = reconOptionsFrom(args);
  await checkDownloadDir(config.CLIENT_DOWNLOAD_DIR, args, setup.loaded.path);
  if (signal.aborted) throw new InterruptedError("interrupted before connecting");
  const channel = await connect(setup);
  let result: SubmitResult;
  try {
    result = await submitJob({
      channel,
      files,
      options: reconOptions,
      downloadDir: config.CLIENT_DOWNLOAD_DIR,
      maxResultBytes: config.CLIENT_MAX_RESULT_BYTES,
      signal,
      onEvent: (event) => display.show(event),
      onHostile: (message) => logger.error(`hostile server behaviour: ${message}`),
    });
    await channel.close();
  } catch (error) {
    display.finish();
    // A job that failed or was cancelled on the server ends the session politely;
    // anything else is cut.
    const settled = error instanceof JobError || error instanceof JobCancelledError;
    if (settled && !channel.closed) await channel.close();
    else channel.abort();
    throw error;
  }
  display.finish();
  display.line(
    `job ${result.jobId} complete: ${result.files.length} file(s) in ${result.resultDir}`,
  );
  // Not silenced by --quiet or --json: a result that did not come back matters. The
  // exit code stays 0, since the results that did arrive are good.
  const warning = skippedWarning(result.skipped);
  if (warning) writeStderr(`${PROGRAM}: warning: ${warning}\n`);
  writeStdout(args.json ? resultJson(result) : resultText(result));
  return ExitCode.OK;
}

/** Print `text` on stdout; the mode succeeded. */
function print(text: string): number {
  writeStdout(text);
  return ExitCode.OK;
}

/** One path per mode: watch, --help, --version, keygen, --show-config, status, queue, submit. */
async function main(argv: string[], interrupt: AbortController): Promise<number> {
  const split = splitCommand(argv, ["watch"], GLOBAL_OPTIONS);
  if (split.command === "watch") {
    return await watchMain(split.argv, {
      program: PROGRAM,
      writeStdout,
      writeStderr,
      signal: interrupt.signal,
    });
  }
  const args = parseClientArgs(argv);
  if (args.help) return print(HELP);
  if (args.version) return print(versionText(PROGRAM));
  if (args.command === "keygen") return print(keygenText());
  // --show-config only reads, and lists unknown options instead of stopping at the first.
  const loaded = await loadConfig(args.opts, "client", {
    allowUnknownOptions: args.allowUnknownOptions,
    showConfig: args.showConfig,
  });
  applyFlags(loaded.config, args);
  if (args.showConfig) {
    writeStderr(warningText(PROGRAM, loaded.warnings));
    return print(await showConfigText(loaded.config, loaded.unknownOptions));
  }
  const setup = await setUp(loaded, args);
  if (args.serverStatus) return await showServerStatus(setup, args);
  if (args.viewQueue) return await showQueue(setup, args);
  return await submit(setup, args, interrupt.signal);
}

if (import.meta.main) {
  const interrupt = new AbortController();
  let interrupts = 0;
  const onInterrupt = () => {
    interrupts++;
    if (interrupts > 1) {
      writeStderr(`\n${PROGRAM}: interrupted\n`);
      Deno.exit(ExitCode.INTERRUPTED);
    }
    interrupt.abort();
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  Deno.addSignalListener("SIGTERM", onInterrupt);
  const json = Deno.args.includes("--json");
  Deno.exit(
    await runMain(() => main(Deno.args, interrupt), {
      program: PROGRAM,
      writeStderr,
      details: failureDetails,
      onFailure: (error, exitCode) => {
        if (json) writeStdout(failureJson(error, exitCode));
      },
    }),
  );
}
