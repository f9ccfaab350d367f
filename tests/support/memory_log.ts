/**
 * A Logger that keeps every line in memory ("<level> <message>"), for tests that check
 * what the server logs without a log file or stderr.
 */
import type { Logger } from "../../lib/log.ts";

export function memoryLog(): { lines: string[]; log: Logger } {
  const lines: string[] = [];
  const logger: Record<string, unknown> = {};
  for (const level of ["trace", "debug", "info", "warn", "warning", "error", "fatal"]) {
    logger[level] = (message: string) => lines.push(`${level} ${message}`);
  }
  return { lines, log: logger as unknown as Logger };
}
