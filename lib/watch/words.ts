/**
 * How the watch mode names files and durations in its log lines.
 *
 * @module
 */
import * as path from "node:path";

/** Base names, at most four: `P1.7, cal.7` or `a.7, b.7, c.7 and 5 more`. */
export function names(rows: readonly { path: string }[]): string {
  const list = rows.map((row) => path.basename(row.path));
  return list.length <= 4
    ? list.join(", ")
    : `${list.slice(0, 3).join(", ")} and ${list.length - 3} more`;
}

/** Milliseconds as seconds for people: `0.3 s`, `2 s`, `300 s`. */
export function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}
