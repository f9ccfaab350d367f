/**
 * recon-client's modes, one handler each (README "Using it"): submit (and `--detach`),
 * `rerun`, `fetch`, `wait`, `jobs`, `cancel`, `logs`, `--server-status` and
 * `--view-queue`. Each takes the parsed command and a {@link ClientContext} (the
 * entrypoint's stdout, stderr and interrupt signal) and returns the exit code;
 * failures are thrown for the entrypoint to print (lib/cli/entry.ts runMain).
 *
 * @module
 */
import { ExitCode, InterruptedError, LostContactError } from "../errors.ts";
import { printable } from "../printable.ts";
import type { JobInfo } from "../wire/protocol.ts";
import {
  type Command,
  commandLine,
  type GlobalArgs,
  laterCommand,
  type SubmitArgs,
} from "./args.ts";
import {
  jobLine,
  jobLinesJson,
  jobsJson,
  jobsText,
  queuedText,
  queueJson,
  queueText,
  resultJson,
  resultText,
  skippedWarning,
  statusJson,
  statusNotice,
  statusText,
} from "./format.ts";
import { JobUnavailableError, type QueuedJob, type SubmitResult } from "./job.ts";
import type { JobOutcome } from "./job_session.ts";
import { ProgressDisplay } from "./progress.ts";
import {
  cancelJob,
  getJobLog,
  getQueueDetails,
  getServerStatus,
  listJobs,
  waitForJob,
} from "./query.ts";
import {
  formatTimeout,
  keyRefusedAfter,
  type ReconnectOptions,
  Reconnector,
  withReconnect,
} from "./reconnect.ts";
import type { RunJobOptions } from "./run_job.ts";
import { ask, checkDownloadDir, inputFiles, reconOptionsFrom, type Setup } from "./setup.ts";
import { followAndFetch, queueJob, rerunJob, submitJob } from "./submit.ts";

/** What the entrypoint lends a command. */
export interface ClientContext {
  writeStdout: (text: string) => void;
  writeStderr: (text: string) => void;
  /** Whether stderr (progress) and stdout (logs) are terminals. */
  stderrIsTerminal: boolean;
  stdoutIsTerminal: boolean;
  /** Aborted on SIGINT/SIGTERM. */
  signal: AbortSignal;
  /** Everything on stdin (`--files -`). */
  readStdin: () => Promise<string>;
  /** Test hooks for reconnecting (sleep, clock, jitter). */
  reconnect?: Partial<Omit<ReconnectOptions, "connect" | "timeoutMs">>;
  /** Polling interval of `logs --follow` when nothing new came (ms). Default 500. */
  logPollMs?: number;
}

/** A command that talks to the server. */
export type ServerCommand = Exclude<
  Command,
  { kind: "help" | "version" | "keygen" | "show-config" }
>;

/** Run `command`; returns the exit code. */
export function runCommand(
  command: ServerCommand,
  setup: Setup,
  context: ClientContext,
): Promise<number> {
  switch (command.kind) {
    case "status":
      return showStatus(setup, command.global, context);
    case "queue":
      return showQueue(setup, command.global, context);
    case "submit":
      return submit(setup, command, context);
    case "rerun":
      return rerun(setup, command, context);
    case "fetch":
      return fetch(setup, command, context);
    case "wait":
      return wait(setup, command.global, command.jobIds, context);
    case "jobs":
      return showJobs(setup, command, context);
    case "cancel":
      return cancel(setup, command, context);
    case "logs":
      return logs(setup, command, context);
  }
}

function display(global: GlobalArgs, context: ClientContext, waiting?: string): ProgressDisplay {
  return new ProgressDisplay({
    write: context.writeStderr,
    tty: context.stderrIsTerminal,
    quiet: global.quiet,
    alertsOnly: global.json,
    statusLine: (job) => {
      const line = statusNotice(job);
      return waiting && (job.state === "queued" || job.state === "running")
        ? `${line}; ${waiting}`
        : line;
    },
  });
}

/** The options every job run shares: limits, events, reconnecting, hints. */
function jobOptions(
  setup: Setup,
  global: GlobalArgs,
  context: ClientContext,
  view: ProgressDisplay,
  downloadDir?: string,
): Omit<RunJobOptions, "opening"> {
  const { config, logger, program } = setup;
  return {
    connect: setup.connect,
    reconnectTimeoutMs: config.CLIENT_RECONNECT_TIMEOUT * 1000,
    reconnect: context.reconnect,
    downloadDir: config.CLIENT_DOWNLOAD_DIR,
    maxResultBytes: config.CLIENT_MAX_RESULT_BYTES,
    signal: context.signal,
    onEvent: (event) => view.show(event),
    onHostile: (message) => logger.error(`hostile server behaviour: ${message}`),
    command: (subcommand, jobId) =>
      laterCommand(
        program,
        global,
        subcommand,
        jobId,
        subcommand === "fetch" ? downloadDir : undefined,
      ),
  };
}

async function showStatus(setup: Setup, global: GlobalArgs, context: ClientContext) {
  const status = await ask(setup, getServerStatus);
  const { SERVER_HOST, SERVER_PORT } = setup.config;
  context.writeStdout(
    global.json ? statusJson(status) : statusText(status, `${SERVER_HOST}:${SERVER_PORT}`),
  );
  return ExitCode.OK;
}

async function showQueue(setup: Setup, global: GlobalArgs, context: ClientContext) {
  const { jobs } = await ask(setup, getQueueDetails);
  context.writeStdout(global.json ? queueJson(jobs) : queueText(jobs));
  return ExitCode.OK;
}

/** A finished job's report: a line on stderr, the skipped warning, the results on stdout. */
function reportResults(
  result: SubmitResult,
  setup: Setup,
  global: GlobalArgs,
  view: ProgressDisplay,
  context: ClientContext,
): number {
  view.finish();
  view.line(`job ${result.jobId} complete: ${result.files.length} file(s) in ${result.resultDir}`);
  // Not silenced by --quiet or --json: a result that did not come back matters. The
  // exit code stays 0, since the results that did arrive are good.
  const warning = skippedWarning(result.skipped);
  if (warning) context.writeStderr(`${setup.program}: warning: ${warning}\n`);
  context.writeStdout(global.json ? resultJson(result) : resultText(result));
  return ExitCode.OK;
}

function reportQueued(
  job: QueuedJob,
  global: GlobalArgs,
  view: ProgressDisplay,
  context: ClientContext,
) {
  view.finish();
  context.writeStdout(queuedText(job, global.json));
  return ExitCode.OK;
}

async function submit(setup: Setup, args: SubmitArgs, context: ClientContext): Promise<number> {
  const { config } = setup;
  const view = display(args.global, context);
  // Check everything local before connecting.
  const files = await inputFiles(args, setup, context.readStdin);
  const options = reconOptionsFrom(args.reconOptions) ?? {};
  if (!args.detach) {
    await checkDownloadDir(config.CLIENT_DOWNLOAD_DIR, args.downloadDir, setup.loaded.path);
  }
  const run = {
    ...jobOptions(setup, args.global, context, view, args.downloadDir),
    files,
    options,
    priority: args.priority,
  };
  try {
    if (args.detach) return reportQueued(await queueJob(run), args.global, view, context);
    return reportResults(await submitJob(run), setup, args.global, view, context);
  } finally {
    view.finish();
  }
}

async function rerun(
  setup: Setup,
  args: Extract<Command, { kind: "rerun" }>,
  context: ClientContext,
): Promise<number> {
  const { config } = setup;
  const view = display(args.global, context);
  const options = reconOptionsFrom(args.reconOptions);
  if (!args.detach) {
    await checkDownloadDir(config.CLIENT_DOWNLOAD_DIR, args.downloadDir, setup.loaded.path);
  }
  try {
    const outcome: JobOutcome = await rerunJob({
      ...jobOptions(setup, args.global, context, view, args.downloadDir),
      jobId: args.jobId,
      options,
      priority: args.priority,
      until: args.detach ? "queued" : "results",
      onJobId: (jobId) => view.line(`job ${args.jobId} runs again as job ${jobId}`),
    });
    if (outcome.kind === "queued") return reportQueued(outcome, args.global, view, context);
    return reportResults(outcome.result, setup, args.global, view, context);
  } finally {
    view.finish();
  }
}

async function fetch(
  setup: Setup,
  args: Extract<Command, { kind: "fetch" }>,
  context: ClientContext,
): Promise<number> {
  const view = display(
    args.global,
    context,
    "waiting for it to end (Ctrl-C stops waiting; the job goes on)",
  );
  await checkDownloadDir(setup.config.CLIENT_DOWNLOAD_DIR, args.downloadDir, setup.loaded.path);
  try {
    const result = await followAndFetch({
      ...jobOptions(setup, args.global, context, view, args.downloadDir),
      jobId: args.jobId,
    });
    return reportResults(result, setup, args.global, view, context);
  } finally {
    view.finish();
  }
}

/** `wait`'s report of a job it could not follow: the server's words. */
interface Unavailable {
  job_id: string;
  error: string;
  kind: string;
}

async function wait(
  setup: Setup,
  global: GlobalArgs,
  jobIds: string[],
  context: ClientContext,
): Promise<number> {
  const view = display(global, context);
  const { config, program } = setup;
  const timeoutMs = config.CLIENT_RECONNECT_TIMEOUT * 1000;
  const reconnector = new Reconnector({
    ...context.reconnect,
    connect: setup.connect,
    timeoutMs,
  });
  const ended: (JobInfo | Unavailable)[] = [];
  let ok = true;
  try {
    for (const jobId of jobIds) {
      let outcome: JobInfo | Unavailable;
      try {
        outcome = await withReconnect({
          connect: setup.connect,
          reconnector,
          session: (channel, heard) =>
            waitForJob(channel, jobId, { onHeard: heard, onEvent: (event) => view.show(event) }),
          notice: (text) => view.reconnect(text),
          signal: context.signal,
          interrupted: () =>
            new InterruptedError(`stopped waiting for job ${jobId}; it goes on on the server`),
          gaveUp: (failure) => {
            const lost = `lost the connection while waiting for job ${jobId}`;
            return keyRefusedAfter(lost, failure) ?? new LostContactError(
              jobId,
              `${lost} and could not reconnect${
                failure.timedOut
                  ? ` within CLIENT_RECONNECT_TIMEOUT (${formatTimeout(timeoutMs)})`
                  : ""
              }: ${failure.message}`,
              {
                hint: `the jobs stay on the server; wait again: ${
                  commandLine(program, global, ["wait", ...jobIds])
                }`,
                cause: failure.last,
              },
            );
          },
        });
      } catch (error) {
        if (!(error instanceof JobUnavailableError)) throw error;
        outcome = { job_id: jobId, error: error.message, kind: error.kind };
      }
      ended.push(outcome);
      const line = "state" in outcome ? jobLine(outcome) : `${jobId} ${outcome.error}`;
      if (!("state" in outcome) || outcome.state !== "succeeded") ok = false;
      view.finish();
      if (!global.json) context.writeStdout(`${printable(line)}\n`);
    }
  } finally {
    view.finish();
  }
  if (global.json) context.writeStdout(jobLinesJson(ended as JobInfo[]));
  return ok ? ExitCode.OK : ExitCode.JOB_FAILED;
}

async function showJobs(
  setup: Setup,
  args: Extract<Command, { kind: "jobs" }>,
  context: ClientContext,
): Promise<number> {
  const jobs = await ask(
    setup,
    (channel) => listJobs(channel, { state: args.state, allClients: args.allClients }),
  );
  context.writeStdout(
    args.global.json ? jobsJson(jobs) : jobsText(jobs, args.state, { allClients: args.allClients }),
  );
  return ExitCode.OK;
}

async function cancel(
  setup: Setup,
  args: Extract<Command, { kind: "cancel" }>,
  context: ClientContext,
): Promise<number> {
  const reason = args.reason ?? "cancelled with recon-client";
  const ended: (JobInfo | Unavailable)[] = [];
  await ask(setup, async (channel) => {
    for (const jobId of args.jobIds) {
      try {
        const job = await cancelJob(channel, jobId, reason);
        ended.push(job);
        if (!args.global.json) context.writeStdout(`${printable(jobLine(job))}\n`);
      } catch (error) {
        if (!(error instanceof JobUnavailableError)) throw error;
        ended.push({ job_id: jobId, error: error.message, kind: error.kind });
        if (!args.global.json) {
          context.writeStderr(`${setup.program}: error: ${printable(error.message)}\n`);
        }
      }
    }
  });
  if (args.global.json) context.writeStdout(jobLinesJson(ended as JobInfo[]));
  const refused = ended.some((job) => !("state" in job));
  return refused ? ExitCode.JOB_FAILED : ExitCode.OK;
}

async function logs(
  setup: Setup,
  args: Extract<Command, { kind: "logs" }>,
  context: ClientContext,
): Promise<number> {
  const { config } = setup;
  const pollMs = context.logPollMs ?? 500;
  const view = display(args.global, context);
  const timeoutMs = config.CLIENT_RECONNECT_TIMEOUT * 1000;
  const collected: string[] = [];
  // On a terminal the script's output cannot drive it (control characters become ?);
  // into a pipe or file it goes as the server keeps it.
  const write = (text: string) => {
    if (args.global.json) collected.push(text);
    else context.writeStdout(context.stdoutIsTerminal ? printable(text) : text);
  };
  let offset = 0;
  let final = false;
  await withReconnect({
    connect: setup.connect,
    reconnector: args.follow
      ? new Reconnector({ ...context.reconnect, connect: setup.connect, timeoutMs })
      : undefined,
    notice: (text) => view.reconnect(text),
    signal: context.signal,
    interrupted: () => new InterruptedError(`stopped following the log of job ${args.jobId}`),
    gaveUp: (failure) =>
      keyRefusedAfter(
        `lost the connection while following the log of job ${args.jobId}`,
        failure,
      ) ??
        new LostContactError(
          args.jobId,
          `lost the connection while following the log of job ${args.jobId}: ${failure.message}`,
          { cause: failure.last },
        ),
    session: async (channel, heard) => {
      while (true) {
        const piece = await getJobLog(channel, args.jobId, offset);
        heard();
        if (piece.text !== "") write(piece.text);
        offset = piece.next_offset;
        final = piece.final === true;
        if (final) return;
        if (piece.next_offset === piece.offset) {
          if (!args.follow) return;
          await new Promise((resolve) => setTimeout(resolve, pollMs));
        }
      }
    },
  });
  if (args.global.json) {
    context.writeStdout(
      `${JSON.stringify({ job_id: args.jobId, log: collected.join(""), final }, null, 2)}\n`,
    );
  }
  return ExitCode.OK;
}
