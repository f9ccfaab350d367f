/**
 * CLIENT_DAEMON_ON_COMPLETE (docs/WATCH.md "Completion hook"): after each completed
 * job the watch mode runs the site's program as `PROGRAM <job_id> <result_dir>`,
 * with `Deno.Command` and an argv array (never a shell), stdin closed, e.g. to push
 * the DICOM on to a PACS. Its failure is logged and never stops the watcher.
 *
 * @module
 */
import { errorMessage } from "../errors.ts";
import type { WatchLog } from "./probe.ts";

/** A hook that runs longer is stopped (SIGTERM, then SIGKILL). */
export const HOOK_TIMEOUT_MS = 30 * 60_000;
/** Bytes of the hook's output kept for the log line. */
const TAIL_BYTES = 2048;

/** Inputs of {@link runCompletionHook}. */
export interface HookOptions {
  program: string;
  jobId: string;
  resultDir: string;
  log: WatchLog;
  timeoutMs?: number;
  /** Aborted when the watcher stops: the hook is stopped too. */
  signal?: AbortSignal;
}

async function tail(stream: ReadableStream<Uint8Array>): Promise<string> {
  let kept = new Uint8Array(0);
  for await (const chunk of stream) {
    const joined = new Uint8Array(kept.length + chunk.length);
    joined.set(kept);
    joined.set(chunk, kept.length);
    kept = joined.slice(Math.max(0, joined.length - TAIL_BYTES));
  }
  return new TextDecoder().decode(kept);
}

function lastLine(text: string): string {
  return text.split(/\r?\n/).map((line) => line.trim()).filter(Boolean).at(-1) ?? "";
}

/** Run the hook once; resolves true when it exited 0. Never throws. */
export async function runCompletionHook(options: HookOptions): Promise<boolean> {
  const { program, jobId, resultDir, log } = options;
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program, {
      args: [jobId, resultDir],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    log.warn(
      `job ${jobId}: cannot start CLIENT_DAEMON_ON_COMPLETE ${program}: ${errorMessage(error)}`,
    );
    return false;
  }
  let stoppedBecause: string | undefined;
  let killTimer: ReturnType<typeof setTimeout> | undefined;
  const stop = (why: string) => {
    stoppedBecause = why;
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
    killTimer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
    }, 2000);
  };
  const timeoutMs = options.timeoutMs ?? HOOK_TIMEOUT_MS;
  const timer = setTimeout(() => stop(`it ran longer than ${timeoutMs / 1000} s`), timeoutMs);
  const onAbort = () => stop("the watcher is stopping");
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const [, stderr, status] = await Promise.all([
      tail(child.stdout),
      tail(child.stderr),
      child.status,
    ]);
    if (status.success) {
      log.info(`job ${jobId}: CLIENT_DAEMON_ON_COMPLETE ${program} finished`);
      return true;
    }
    const how = stoppedBecause
      ? `was stopped: ${stoppedBecause}`
      : status.signal
      ? `was killed by ${status.signal}`
      : `exited with code ${status.code}`;
    const said = lastLine(stderr);
    log.warn(
      `job ${jobId}: CLIENT_DAEMON_ON_COMPLETE ${program} ${how}${said ? `: ${said}` : ""}; ` +
        `the results stay in ${resultDir}`,
    );
    return false;
  } finally {
    clearTimeout(timer);
    clearTimeout(killTimer);
    options.signal?.removeEventListener("abort", onAbort);
  }
}
