/**
 * `recon-client watch --status --prometheus` (docs/WATCH.md §12): the watcher's health
 * and counts in the Prometheus text exposition format, for node_exporter's textfile
 * collector. Every sample carries the state file as a label, so two watchers on one
 * host (two scanners' directories) write files that do not clash.
 *
 * @module
 */
import { HEALTH_CHECKS } from "./health.ts";
import { FILE_STATUSES } from "./state.ts";
import type { StatusReport } from "./status.ts";

/** A label value as the exposition format wants it: `\`, `"` and newlines escaped. */
function labelValue(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

/** The metrics of one `--status`; needs `report.health`. */
export function statusMetrics(report: StatusReport): string {
  const health = report.health;
  if (!health) throw new TypeError("statusMetrics() needs the report's health");
  const base = `state_file="${labelValue(report.stateFile)}"`;
  const lines: string[] = [];
  const gauge = (name: string, help: string, samples: [string, number][]) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`);
    for (const [labels, value] of samples) {
      lines.push(`${name}{${base}${labels ? `,${labels}` : ""}} ${value}`);
    }
  };
  const seconds = (iso: string) => Date.parse(iso) / 1000;
  const counts = Object.fromEntries(FILE_STATUSES.map((status) => [status, 0]));
  for (const file of report.files) counts[file.status]++;

  gauge("recon_watch_up", "1 when a watcher process holds the state file's lock.", [
    ["", health.watcher.running ? 1 : 0],
  ]);
  gauge("recon_watch_healthy", "1 when watch --status finds no problem (exit code 0).", [
    ["", health.ok ? 1 : 0],
  ]);
  gauge(
    "recon_watch_problem",
    "1 for each check of watch --status that fails (see docs/WATCH.md).",
    HEALTH_CHECKS.map(({ check }) => [
      `check="${check}"`,
      health.problems.some((p) => p.check === check) ? 1 : 0,
    ]),
  );
  gauge(
    "recon_watch_files",
    "Files recorded in the state file, by status.",
    FILE_STATUSES.map((status) => [`status="${status}"`, counts[status]]),
  );
  gauge("recon_watch_being_written_files", "Files the running watcher waits on to finish.", [
    ["", (report.writing ?? []).length],
  ]);
  gauge("recon_watch_waiting_files", "Files found complete and not yet on the server.", [
    ["", health.waiting.count],
  ]);
  gauge(
    "recon_watch_oldest_waiting_seconds",
    "How long the oldest file not yet on the server has waited (0: none).",
    [["", health.waiting.oldest ? Math.floor(health.waiting.oldest.ageMs / 1000) : 0]],
  );
  gauge(
    "recon_watch_server_unreachable_seconds",
    "How long the running watcher has failed to reach the server (0: it reaches it).",
    [["", health.server ? Math.floor(health.server.unreachableMs / 1000) : 0]],
  );
  gauge(
    "recon_watch_server_failed_attempts",
    "Failed attempts in a row to reach the server.",
    [["", health.server?.failures ?? 0]],
  );
  if (health.watcher.running && health.watcher.startedAt) {
    gauge("recon_watch_start_time_seconds", "When the running watcher started.", [
      ["", seconds(health.watcher.startedAt)],
    ]);
  }
  if (health.watcher.lastScanAt) {
    gauge(
      "recon_watch_last_scan_timestamp_seconds",
      "When the running watcher last finished a scan of its directory.",
      [["", seconds(health.watcher.lastScanAt)]],
    );
  }
  return `${lines.join("\n")}\n`;
}
