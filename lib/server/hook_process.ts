/**
 * One run of a site program that belongs to no job (ON_JOB_END, ON_DELIVERY_FAILED;
 * lib/server/job_hooks.ts queues them): argv only, stdin closed, stdout discarded,
 * in its own process group (`setsid`, as lib/server/runner.ts starts RECON_SCRIPT) so
 * that HOOK_TIMEOUT or a stop ends it with everything it started. Only the last line
 * of its stderr is kept, for the one log line about a failure.
 *
 * @module
 */
import { errorMessage } from "../errors.ts";

/** Characters of the stderr kept to find its last line. */
const TAIL_CHARS = 4096;

/** Options of {@link HookProcess}. */
export interface HookProcessOptions {
  program: string;
  args: string[];
  /** Added to the server's environment. */
  env: Record<string, string>;
  /** HOOK_TIMEOUT (ms): then the process group gets SIGTERM, SIGKILL `graceMs` later. */
  timeoutMs: number;
  /** Default 2000 ms. */
  graceMs?: number;
}

/** How a run ended. */
export interface HookOutcome {
  /** Undefined when it exited 0 by itself, else e.g. `exited 3`, `was killed by SIGSEGV`. */
  failure?: string;
  /** The last non-empty line of its stderr, or "". */
  lastLine: string;
}

/** A running hook program; see the module comment. */
export class HookProcess {
  /** Resolves once it exited and its stderr is closed (what it started ended too). */
  readonly done: Promise<HookOutcome>;
  #child: Deno.ChildProcess;
  #stopped?: string;
  #stopReading = new AbortController();
  #graceMs: number;
  #graceTimer?: ReturnType<typeof setTimeout>;

  /** @throws when `setsid` cannot be started. */
  constructor(options: HookProcessOptions) {
    this.#graceMs = options.graceMs ?? 2000;
    this.#child = new Deno.Command("setsid", {
      args: [options.program, ...options.args],
      env: options.env,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const seconds = options.timeoutMs / 1000;
    const timer = setTimeout(
      () => this.stop(`ran longer than HOOK_TIMEOUT (${seconds} s) and was killed`),
      options.timeoutMs,
    );
    this.done = this.#wait().finally(() => {
      clearTimeout(timer);
      clearTimeout(this.#graceTimer);
      // Nothing it started outlives it.
      killGroup(this.#child.pid, "SIGKILL");
    });
  }

  /** End it now: SIGTERM to its group, SIGKILL after the grace; `why` becomes its failure. */
  stop(why: string): void {
    if (this.#stopped !== undefined) return;
    this.#stopped = why;
    killGroup(this.#child.pid, "SIGTERM");
    this.#graceTimer = setTimeout(() => {
      killGroup(this.#child.pid, "SIGKILL");
      // A process that left the group may still hold stderr: stop reading soon.
      this.#graceTimer = setTimeout(() => this.#stopReading.abort(), 1000);
    }, this.#graceMs);
  }

  async #wait(): Promise<HookOutcome> {
    const [status, lastLine] = await Promise.all([
      this.#child.status,
      readLastLine(this.#child.stderr, this.#stopReading.signal),
    ]);
    const failure = this.#stopped ??
      (status.success
        ? undefined
        : status.signal
        ? `was killed by ${status.signal}`
        : `exited ${status.code}`);
    return { failure, lastLine };
  }
}

/** Why `program` cannot be started, or undefined when it looks runnable. */
export async function cannotRun(program: string): Promise<string | undefined> {
  try {
    const info = await Deno.stat(program);
    if (!info.isFile) return "is not a file";
    if (info.mode !== null && (info.mode & 0o111) === 0) return "is not executable (chmod +x it)";
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return "does not exist";
    return `cannot be read: ${errorMessage(error)}`;
  }
  return undefined;
}

/** The last line of `stream`'s last {@link TAIL_CHARS}, read until it ends or `stop` aborts. */
async function readLastLine(
  stream: ReadableStream<Uint8Array>,
  stop: AbortSignal,
): Promise<string> {
  const reader = stream.getReader();
  stop.addEventListener("abort", () => void reader.cancel().catch(() => {}), { once: true });
  const decoder = new TextDecoder();
  let text = "";
  while (true) {
    const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
    if (done || !value) break;
    text = (text + decoder.decode(value, { stream: true })).slice(-TAIL_CHARS);
  }
  return text.split(/\r?\n/).map((line) => line.trim()).filter(Boolean).at(-1) ?? "";
}

function killGroup(pid: number, signal: Deno.Signal): void {
  try {
    Deno.kill(-pid, signal);
  } catch { /* the group is gone */ }
}
