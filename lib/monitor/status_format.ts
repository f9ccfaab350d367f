/**
 * Text and HTML helpers of the status page (lib/monitor/status_page.ts) and its chart
 * (lib/monitor/status_chart.ts): escaping, sizes, durations, UTC times, tables, sections,
 * cards and the small marks (job ids, priorities, states).
 *
 * @module
 */
import { escapeControls } from "../printable.ts";

/** `text` safe in HTML text and in a double- or single-quoted attribute. */
export function escapeHtml(text: string): string {
  return escapeControls(text).replace(/[&<>"']/g, (char) => HTML_ESCAPES[char]);
}

const HTML_ESCAPES: Record<string, string> = {
  "&": "&amp;",
  "<": "&lt;",
  ">": "&gt;",
  '"': "&quot;",
  "'": "&#39;",
};

/** Bytes with binary units (as recon.opts sizes): `512 B`, `1.5 KiB`, `42 GiB`. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = Math.abs(bytes);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  const digits = unit === 0 || value >= 10 ? 0 : 1;
  return `${bytes < 0 ? "-" : ""}${value.toFixed(digits)} ${units[unit]}`;
}

/** A duration for people: `45 s`, `12 min 5 s`, `3 h 12 min`, `2 d 4 h`. */
export function formatDuration(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return seconds % 60 ? `${minutes} min ${seconds % 60} s` : `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return minutes % 60 ? `${hours} h ${minutes % 60} min` : `${hours} h`;
  const days = Math.floor(hours / 24);
  return hours % 24 ? `${days} d ${hours % 24} h` : `${days} d`;
}

/** Two digits. */
export const pad = (n: number): string => String(n).padStart(2, "0");

/** `HH:MM:SS` on the day of `now` (UTC), else `YYYY-MM-DD HH:MM`, in a `<time>`. */
export function utcTime(ms: number, now: number): string {
  const date = new Date(ms);
  const iso = date.toISOString();
  const sameDay = iso.slice(0, 10) === new Date(now).toISOString().slice(0, 10);
  const text = sameDay
    ? `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())}`
    : `${iso.slice(0, 10)} ${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}`;
  return `<time datetime="${iso}" title="${iso}">${text}</time>`;
}

/** `HH:00` of `ms` in UTC. */
export function hourLabel(ms: number): string {
  return `${pad(new Date(ms).getUTCHours())}:00`;
}

/**
 * A table; a header given as `[text, class]` puts the class (`num`: right-aligned,
 * `wrap`: the column that takes the spare width and wraps) on its column. With no rows,
 * a line saying `empty` instead.
 */
export function htmlTable(
  headers: (string | [string, "num" | "wrap"])[],
  rows: string[][],
  empty: string,
): string {
  if (rows.length === 0) return `<p class="empty">${escapeHtml(empty)}</p>`;
  const classes = headers.map((header) => Array.isArray(header) ? ` class="${header[1]}"` : "");
  const head = headers.map((header, i) =>
    `<th${classes[i]}>${Array.isArray(header) ? header[0] : header}</th>`
  ).join("");
  const body = rows.map((cells) =>
    `<tr>${cells.map((cell, i) => `<td${classes[i]}>${cell}</td>`).join("")}</tr>`
  ).join("\n");
  return `<table>\n<thead><tr>${head}</tr></thead>\n<tbody>\n${body}\n</tbody>\n</table>`;
}

/** A `<section>` with its heading and, when not empty, a count beside it. */
export function section(id: string, title: string, count: string, body: string): string {
  const counted = count === "" ? "" : ` <span class="count">${escapeHtml(count)}</span>`;
  return `<section id="${id}">\n<h2>${escapeHtml(title)}${counted}</h2>\n${body}\n</section>`;
}

/** One summary card; `value` and `sub` are HTML, `tone` `bad` (red) or `warn` (orange). */
export function card(label: string, value: string, sub: string, tone = ""): string {
  return `<div class="card${tone ? ` tone-${tone}` : ""}"><div class="label">${
    escapeHtml(label)
  }</div>` +
    `<div class="value">${value}</div><div class="sub">${sub}</div></div>`;
}

/** A job id, in monospace. */
export function jobId(id: string): string {
  return `<span class="id">${escapeHtml(id)}</span>`;
}

export function priority(value: string): string {
  return `<span class="prio ${escapeHtml(value)}">${escapeHtml(value)}</span>`;
}

/** A state as a coloured pill (its class is the state, `label` its text). */
export function state(value: string, label = value): string {
  return `<span class="state ${escapeHtml(value)}">${escapeHtml(label)}</span>`;
}
