/**
 * What the person at the terminal sees while a job runs: a one-line progress bar on
 * a TTY (upload, job progress, download), plain lines otherwise, nothing with
 * `--quiet`. Everything goes to stderr; stdout is kept for results.
 *
 * @module
 */
import { printable } from "../printable.ts";
import type { SubmitEvent } from "./job.ts";

/** Where the display writes (stderr in the program, a buffer in tests). */
export interface DisplayOptions {
  write: (text: string) => void;
  tty: boolean;
  quiet: boolean;
  /**
   * Show nothing but lost and regained connections (`--json`: stdout is the document,
   * and a client that waits to reconnect must still say why it waits).
   */
  alertsOnly?: boolean;
  /** Clock in ms, for rates. */
  now?: () => number;
  /** The line for a followed job's state (format.ts statusNotice). */
  statusLine?: (job: Extract<SubmitEvent, { kind: "status" }>["job"]) => string;
}

/**
 * A byte count in SI units (kB, MB, GB: powers of 1000) with three significant
 * digits. SI throughout, sizes and rates alike, because network links and disks are
 * quoted in SI (a 1 Gbit/s link moves at most 125 MB/s), so the rate reads directly
 * against the link's.
 */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let value = bytes / 1000;
  let unit = 0;
  while (value >= 999.5 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  const digits = value >= 99.95 ? 0 : value >= 9.995 ? 1 : 2;
  return `${value.toFixed(digits)} ${units[unit]}`;
}

/** A duration as m:ss, or h:mm:ss from an hour on. */
export function formatDuration(ms: number): string {
  const total = Math.max(0, Math.round(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, "0");
  return hours > 0
    ? `${hours}:${String(minutes).padStart(2, "0")}:${seconds}`
    : `${minutes}:${seconds}`;
}

/** Below this much elapsed time a rate (and so an ETA) is noise. */
const MIN_RATE_MS = 500;

/** One transfer's state, for {@link formatTransfer}. */
export interface TransferState {
  verb: string;
  name: string;
  bytes: number;
  total: number;
  /** Time since this file's transfer began. */
  elapsedMs: number;
}

/**
 * The bar line for a transfer: name, bar, percentage, size done of total, average
 * rate and time left (the time taken once done), all in SI units:
 * `uploading P00001.7 [#####---------------]  25% 250 MB / 1.00 GB  50.0 MB/s  ETA 0:15`.
 */
export function formatTransfer(state: TransferState): string {
  const { bytes, total, elapsedMs } = state;
  const fraction = total > 0 ? Math.min(bytes / total, 1) : 1;
  const filled = Math.round(fraction * 20);
  const bar = `[${"#".repeat(filled)}${"-".repeat(20 - filled)}]`;
  const percent = `${Math.floor(fraction * 100)}%`.padStart(4);
  const size = `${formatBytes(bytes)} / ${formatBytes(total)}`;
  const done = bytes >= total;
  let rate = "-- MB/s";
  let time = done ? `in ${formatDuration(elapsedMs)}` : "ETA --:--";
  if (elapsedMs >= MIN_RATE_MS && bytes > 0) {
    const perSecond = bytes / (elapsedMs / 1000);
    rate = `${formatBytes(Math.round(perSecond))}/s`;
    if (!done) time = `ETA ${formatDuration(((total - bytes) / perSecond) * 1000)}`;
  }
  // A long name is cut at the front: the end (P00001.7, .dat) tells files apart.
  const name = state.name.length > 32 ? `…${state.name.slice(-31)}` : state.name;
  return `${state.verb} ${name} ${bar} ${percent} ${size}  ${rate}  ${time}`;
}

/** Renders submit events. Call {@link finish} before printing anything else. */
export class ProgressDisplay {
  #options: DisplayOptions;
  #lineOpen = false;
  #lastDraw = 0;
  #transferStart = 0;
  #transferName = "";
  #percent: number | undefined;
  #jobText = "";

  constructor(options: DisplayOptions) {
    this.#options = options;
  }

  /** How a followed job's state reads (`DisplayOptions.statusLine`, else a plain default). */
  #statusLine(job: Extract<SubmitEvent, { kind: "status" }>["job"]): string {
    return this.#options.statusLine?.(job) ?? `job ${job.job_id} ${job.state}`;
  }

  /** Print a full line (closing any bar first). */
  line(text: string): void {
    if (this.#options.quiet || this.#options.alertsOnly) return;
    this.finish();
    this.#options.write(`${printable(text)}\n`);
  }

  /** A line that only --quiet silences. */
  #alert(text: string): void {
    if (this.#options.quiet) return;
    this.finish();
    this.#options.write(`${printable(text)}\n`);
  }

  /** Say a lost or regained connection (see {@link DisplayOptions.alertsOnly}). */
  reconnect(text: string): void {
    this.show({ kind: "reconnect", text });
  }

  #draw(text: string, force = false): void {
    const now = (this.#options.now ?? Date.now)();
    if (!force && now - this.#lastDraw < 100) return;
    this.#lastDraw = now;
    const width = 110;
    this.#options.write(
      `\r${printable(text).slice(0, width).padEnd(this.#lineOpen ? width : 0)}`,
    );
    this.#lineOpen = true;
  }

  /** End the bar line, if one is showing. */
  finish(): void {
    if (this.#lineOpen) this.#options.write("\n");
    this.#lineOpen = false;
  }

  #transfer(verb: string, name: string, bytes: number, total: number): void {
    const now = (this.#options.now ?? Date.now)();
    if (name !== this.#transferName) {
      this.#transferName = name;
      this.#transferStart = now;
    }
    if (!this.#options.tty) return;
    this.#draw(
      formatTransfer({ verb, name, bytes, total, elapsedMs: now - this.#transferStart }),
      bytes === total,
    );
  }

  /** Show one event. */
  show(event: SubmitEvent): void {
    if (this.#options.quiet) return;
    if (event.kind === "reconnect") return this.#alert(event.text);
    if (this.#options.alertsOnly) return;
    switch (event.kind) {
      case "upload":
        this.#transfer("uploading", event.name, event.bytes, event.total);
        break;
      case "download":
        this.#transfer("downloading", event.name, event.bytes, event.total);
        break;
      case "queued":
        this.line(`job ${event.jobId} queued`);
        break;
      case "started":
        this.line(`job ${event.jobId} running`);
        break;
      case "progress":
        if (event.percent !== undefined) this.#percent = event.percent;
        if (event.text !== undefined) this.#jobText = event.text;
        if (this.#options.tty) {
          const percent = this.#percent === undefined ? "" : `${this.#percent.toFixed(0)}% `;
          if (event.text !== undefined) this.line(`  | ${event.text}`);
          this.#draw(`recon ${percent}${this.#jobText}`, event.percent !== undefined);
        } else if (event.text !== undefined) {
          this.line(`  | ${event.text}`);
        } else if (event.percent !== undefined) {
          this.line(`  progress ${event.percent.toFixed(0)}%`);
        }
        break;
      case "status":
        this.line(this.#statusLine(event.job));
        break;
      case "notice":
        this.line(event.text);
        break;
    }
  }
}
