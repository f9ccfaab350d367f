/**
 * recon-client's modes, one handler each (README "Using it"): submit (and `--detach`,
 * `--no-download`), `rerun`, `fetch`, `wait`, `jobs`, `cancel`, `logs`, `redeliver`,
 * `--server-status` and `--view-queue`. Each takes the parsed command and a {@link ClientContext} (the
 * entrypoint's stdout, stderr and interrupt signal) and returns the exit code;
 * failures are thrown for the entrypoint to print (lib/cli/entry.ts runMain).
 *
 * @module
 */
import { ExitCode, InterruptedError, JobError, LostContactError } from "../errors.ts";
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
  deliveryLine,
  deliveryReport,
  jobLine,
  jobLinesJson,
  jobsJson,
  jobsText,
  noDownloadJson,
  queuedText,
  queueJson,
  queueText,
  redeliverJson,
  resultJson,
  resultText,
  skippedWarning,
  statusJson,
  statusNotice,
  statusText,
} from "./format.ts";
import { JobFailedError, JobUnavailableError, type QueuedJob, type SubmitResult } from "./job.ts";
import type { JobOutcome } from "./job_session.ts";
import { ProgressDisplay } from "./progress.ts";
import {
  cancelJob,
  getJobLog,
  getQueueDetails,
  getServerStatus,
  listJobs,
  redeliverJob,
  type ServerStatus,
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
import { followAndFetch, queueJob, rerunJob, submitJob, submitWithoutResults } from "./submit.ts";

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
    case "redeliver":
      return redeliver(setup, command, context);
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
    verifyAfterWrite: config.VERIFY_AFTER_WRITE === "yes",
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

/**
 * A finished job's report: a line on stderr, the skipped warning, the results on
 * stdout; with `job` (asked for after a `--deliver` submission) a line on stderr per
 * destination its results go to, and its deliveries in `--json`.
 */
function reportResults(
  result: SubmitResult,
  setup: Setup,
  global: GlobalArgs,
  view: ProgressDisplay,
  context: ClientContext,
  job?: JobInfo,
): number {
  view.finish();
  view.line(`job ${result.jobId} complete: ${result.files.length} file(s) in ${result.resultDir}`);
  for (const delivery of job?.deliveries ?? []) {
    view.line(`job ${result.jobId}: ${printable(deliveryLine(delivery))}`);
  }
  // Not silenced by --quiet or --json: a result that did not come back matters. The
  // exit code stays 0, since the results that did arrive are good.
  const warning = skippedWarning(result.skipped);
  if (warning) context.writeStderr(`${setup.program}: warning: ${warning}\n`);
  context.writeStdout(
    global.json ? resultJson(result, job?.deliveries) : resultText(result),
  );
  return ExitCode.OK;
}

/**
 * Before a submission with `--deliver`: a server that does not know destinations (a
 * recon-server from before them) would take the job and ignore the names; say so
 * instead. The server itself refuses names it does not have or this client may not use.
 */
function checkServerDelivers(status: ServerStatus, setup: Setup): void {
  if (status.destinations === undefined) {
    const { SERVER_HOST, SERVER_PORT } = setup.config;
    throw new JobError(
      `the server at ${SERVER_HOST}:${SERVER_PORT} (recon ${
        printable(status.version)
      }) does not send results to DICOM destinations`,
      { hint: "upgrade recon-server, or leave out --deliver and --to" },
    );
  }
}

/**
 * The job as the server holds it after it ended (a `follow_job` of a finished job), for
 * the deliveries of a `--deliver` submission; undefined, with a notice, when it cannot
 * be had: the results are here all the same.
 */
async function endedJob(
  setup: Setup,
  jobId: string,
  view: ProgressDisplay,
): Promise<JobInfo | undefined> {
  try {
    return await ask(setup, (channel) => waitForJob(channel, jobId));
  } catch (error) {
    view.line(`could not ask where job ${jobId}'s results go: ${(error as Error).message}`);
    return undefined;
  }
}

/**
 * `--no-download`: how the job ended and where its results go (stdout); a job that did
 * not succeed is reported as a failed job is (exit code 1).
 */
function reportEnded(
  ended: { job: JobInfo; uploaded: unknown[] },
  global: GlobalArgs,
  view: ProgressDisplay,
  context: ClientContext,
): number {
  const { job } = ended;
  view.finish();
  if (job.state === "succeeded") {
    context.writeStdout(global.json ? noDownloadJson(job, ended.uploaded) : deliveryReport(job));
    return ExitCode.OK;
  }
  if (job.state === "expired") {
    throw new JobUnavailableError("expired", `job ${job.job_id} expired; its results were removed`);
  }
  throw new JobFailedError(
    job.job_id,
    job.reason ?? `the job is ${job.state}`,
    job.exit_code ?? null,
    [],
    job.state === "cancelled" ? { cancelledBy: job.cancelled_by ?? "" } : undefined,
  );
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
  if (!args.detach && !args.noDownload) {
    await checkDownloadDir(config.CLIENT_DOWNLOAD_DIR, args.downloadDir, setup.loaded.path);
  }
  if (args.deliver) checkServerDelivers(await ask(setup, getServerStatus), setup);
  const run = {
    ...jobOptions(setup, args.global, context, view, args.downloadDir),
    files,
    options,
    priority: args.priority,
    deliver: args.deliver,
  };
  try {
    if (args.detach) return reportQueued(await queueJob(run), args.global, view, context);
    if (args.noDownload) {
      return reportEnded(await submitWithoutResults(run), args.global, view, context);
    }
    const result = await submitJob(run);
    const job = args.deliver ? await endedJob(setup, result.jobId, view) : undefined;
    return reportResults(result, setup, args.global, view, context, job);
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
  if (!args.detach && !args.noDownload) {
    await checkDownloadDir(config.CLIENT_DOWNLOAD_DIR, args.downloadDir, setup.loaded.path);
  }
  try {
    const outcome: JobOutcome = await rerunJob({
      ...jobOptions(setup, args.global, context, view, args.downloadDir),
      jobId: args.jobId,
      options,
      priority: args.priority,
      until: args.detach ? "queued" : "results",
      download: !args.noDownload,
      onJobId: (jobId) => view.line(`job ${args.jobId} runs again as job ${jobId}`),
    });
    if (outcome.kind === "queued") return reportQueued(outcome, args.global, view, context);
    if (outcome.kind === "ended") return reportEnded(outcome, args.global, view, context);
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

async function redeliver(
  setup: Setup,
  args: Extract<Command, { kind: "redeliver" }>,
  context: ClientContext,
): Promise<number> {
  const job = await ask(setup, async (channel) => {
    checkServerDelivers(await getServerStatus(channel), setup);
    return await redeliverJob(channel, args.jobId, args.to);
  });
  context.writeStdout(args.global.json ? redeliverJson(job) : deliveryReport(job));
  return ExitCode.OK;
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
