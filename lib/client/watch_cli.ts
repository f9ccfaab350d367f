/**
 * `recon-client watch`: scanner watch mode (arrives with the watch-mode work).
 *
 * @module
 */
import { ExitCode } from "../errors.ts";

/** What the entrypoint lends the watch command. */
export interface WatchContext {
  program: string;
  writeStdout: (text: string) => void;
  writeStderr: (text: string) => void;
  /** Aborted on SIGINT/SIGTERM. */
  signal: AbortSignal;
}

/** Run `recon-client watch …`; returns the exit code. */
export function watchMain(_argv: string[], context: WatchContext): Promise<number> {
  context.writeStderr(`${context.program}: error: watch mode is not built yet\n`);
  return Promise.resolve(ExitCode.USAGE);
}
