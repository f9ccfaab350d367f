/**
 * What the person at the terminal sees while a job runs: a one-line progress bar on
 * a TTY (upload, job progress, download), plain lines otherwise, nothing with
 * `--quiet`. Everything goes to stderr; stdout is kept for results.
 *
 * @module
 */
import { printable } from "../printable.ts";
import type { SubmitEvent } from "./submit.ts";

/** Where the display writes (stderr in the program, a buffer in tests). */
export interface DisplayOptions {
  write: (text: string) => void;
  tty: boolean;
  quiet: boolean;
  /** Clock in ms, for rates. */
  now?: () => number;
}

function mib(bytes: number): string {
  return (bytes / 1048576).toFixed(1);
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

  /** Print a full line (closing any bar first). */
  line(text: string): void {
    if (this.#options.quiet) return;
    this.finish();
    this.#options.write(`${printable(text)}\n`);
  }

  #draw(text: string, force = false): void {
    const now = (this.#options.now ?? Date.now)();
    if (!force && now - this.#lastDraw < 100) return;
    this.#lastDraw = now;
    const width = 100;
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
    const fraction = total > 0 ? bytes / total : 1;
    const filled = Math.round(fraction * 20);
    const seconds = Math.max((now - this.#transferStart) / 1000, 0.001);
    const rate = bytes / 1e6 / seconds;
    this.#draw(
      `${verb} ${name} [${"#".repeat(filled)}${"-".repeat(20 - filled)}] ${
        (fraction * 100).toFixed(0)
      }% ${mib(bytes)}/${mib(total)} MiB ${rate.toFixed(0)} MB/s`,
      bytes === total,
    );
  }

  /** Show one event. */
  show(event: SubmitEvent): void {
    if (this.#options.quiet) return;
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
      case "notice":
        this.line(event.text);
        break;
    }
  }
}
