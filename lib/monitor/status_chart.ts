/**
 * The status page's chart of the last 24 hours (issue 16), as inline SVG that needs no
 * script: jobs finished per hour by state as stacked bars on the left axis, input bytes
 * queued per hour as a line on the right axis, hours labelled below in UTC, each figure
 * also a `<title>` (a tooltip) and, folded under the chart, a table.
 *
 * @module
 */
import { escapeHtml, formatBytes, hourLabel, htmlTable } from "./status_format.ts";
import type { HourView } from "./status_view.ts";

const COLORS = {
  succeeded: "#2f9e44",
  failed: "#e03131",
  cancelled: "#adb5bd",
  bytes: "#1971c2",
};

/** A round upper bound and step for an axis from 0 to at least `max`, about 4 steps. */
export function niceScale(max: number, steps = 4): { top: number; step: number } {
  if (!(max > 0)) return { top: steps, step: 1 };
  const raw = max / steps;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw)!;
  return { top: Math.ceil(max / step) * step, step };
}

/** A whole-number axis (job counts): steps of at least 1. */
function countScale(max: number): { top: number; step: number } {
  const { top, step } = niceScale(max);
  if (step >= 1 && Number.isInteger(step)) return { top, step };
  const whole = Math.max(1, Math.ceil(step));
  return { top: Math.max(whole, Math.ceil(max / whole) * whole), step: whole };
}

/** A bytes axis in one binary unit chosen from its maximum. */
function bytesScale(max: number): { top: number; step: number; unit: string; divisor: number } {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let unit = 0;
  while (max >= 1024 ** (unit + 1) && unit < units.length - 1) unit++;
  const divisor = 1024 ** unit;
  const { top, step } = niceScale(max / divisor);
  return { top: top * divisor, step: step * divisor, unit: units[unit], divisor };
}

/** Numbers in an SVG attribute: at most 1 decimal. */
const n = (value: number) => String(Math.round(value * 10) / 10);

/**
 * The 24-hour chart: jobs finished per hour as stacked bars (left axis), input bytes
 * queued per hour as a line (right axis), hour labels below; every figure also in a
 * `<title>` (a tooltip without script) and in the table below the chart.
 */
export function renderChart(hours: HourView[]): string {
  const width = 1000;
  const height = 270;
  const left = 52;
  const right = 74;
  const top = 36;
  const bottom = 44;
  const plotW = width - left - right;
  const plotH = height - top - bottom;
  const slotW = plotW / Math.max(1, hours.length);
  const barW = Math.max(2, slotW * 0.64);
  const maxJobs = Math.max(0, ...hours.map((h) => h.succeeded + h.failed + h.cancelled));
  const maxBytes = Math.max(0, ...hours.map((h) => h.inputBytes));
  const jobs = countScale(maxJobs);
  const bytes = bytesScale(maxBytes);
  const yJobs = (value: number) => top + plotH - (value / jobs.top) * plotH;
  const yBytes = (value: number) => top + plotH - (value / bytes.top) * plotH;
  const parts: string[] = [];

  // Grid and the left axis (jobs).
  for (let value = 0; value <= jobs.top + 1e-9; value += jobs.step) {
    const y = yJobs(value);
    parts.push(
      `<line x1="${left}" x2="${width - right}" y1="${n(y)}" y2="${n(y)}" class="grid"/>`,
      `<text x="${left - 8}" y="${n(y + 4)}" text-anchor="end">${n(value)}</text>`,
    );
  }
  // The right axis (bytes), at the same heights.
  for (let value = 0; value <= bytes.top + 1e-9; value += bytes.step) {
    parts.push(
      `<text x="${width - right + 8}" y="${n(yBytes(value) + 4)}" text-anchor="start">${
        escapeHtml(`${n(value / bytes.divisor)} ${bytes.unit}`)
      }</text>`,
    );
  }
  // Stacked bars.
  hours.forEach((hour, i) => {
    const x = left + i * slotW + (slotW - barW) / 2;
    const span = `${hourLabel(hour.start)}–${hourLabel(hour.start + 3_600_000)} UTC`;
    let base = 0;
    for (const kind of ["succeeded", "failed", "cancelled"] as const) {
      const count = hour[kind];
      if (count === 0) continue;
      const y1 = yJobs(base + count);
      const h = yJobs(base) - y1;
      parts.push(
        `<rect x="${n(x)}" y="${n(y1)}" width="${n(barW)}" height="${n(h)}" fill="${
          COLORS[kind]
        }"><title>${span}: ${count} ${kind}</title></rect>`,
      );
      base += count;
    }
    if (i % 3 === 0 || i === hours.length - 1) {
      const label = i === hours.length - 1 ? "now" : hourLabel(hour.start);
      parts.push(
        `<text x="${n(left + i * slotW + slotW / 2)}" y="${
          top + plotH + 16
        }" text-anchor="middle">${label}</text>`,
      );
    }
  });
  // The throughput line.
  if (maxBytes > 0) {
    const points = hours.map((hour, i) =>
      `${n(left + i * slotW + slotW / 2)},${n(yBytes(hour.inputBytes))}`
    );
    parts.push(
      `<polyline points="${
        points.join(" ")
      }" fill="none" stroke="${COLORS.bytes}" stroke-width="2" stroke-linejoin="round"/>`,
    );
    hours.forEach((hour, i) => {
      if (hour.inputBytes === 0) return;
      parts.push(
        `<circle cx="${n(left + i * slotW + slotW / 2)}" cy="${
          n(yBytes(hour.inputBytes))
        }" r="3" fill="${COLORS.bytes}"><title>${hourLabel(hour.start)} UTC: ${
          escapeHtml(formatBytes(hour.inputBytes))
        } queued</title></circle>`,
      );
    });
  }
  if (maxJobs === 0 && maxBytes === 0) {
    parts.push(
      `<text x="${n(left + plotW / 2)}" y="${
        n(top + plotH / 2)
      }" text-anchor="middle" class="none">No job finished or queued in the last 24 hours</text>`,
    );
  }
  // Axes, their titles and the legend.
  parts.push(
    `<line x1="${left}" x2="${width - right}" y1="${top + plotH}" y2="${
      top + plotH
    }" class="axis"/>`,
    `<text x="${left + plotW / 2}" y="${
      height - 6
    }" text-anchor="middle" class="title">hour (UTC)</text>`,
    `<text transform="translate(14 ${
      n(top + plotH / 2)
    }) rotate(-90)" text-anchor="middle" class="title">jobs finished</text>`,
    `<text transform="translate(${width - 10} ${
      n(top + plotH / 2)
    }) rotate(90)" text-anchor="middle" class="title">input queued</text>`,
  );
  const legend = [
    ["succeeded", COLORS.succeeded, "rect"],
    ["failed", COLORS.failed, "rect"],
    ["cancelled", COLORS.cancelled, "rect"],
    ["input bytes queued", COLORS.bytes, "line"],
  ] as const;
  let x = left;
  for (const [label, color, shape] of legend) {
    parts.push(
      shape === "rect"
        ? `<rect x="${x}" y="10" width="12" height="12" fill="${color}"/>`
        : `<line x1="${x}" x2="${
          x + 14
        }" y1="16" y2="16" stroke="${color}" stroke-width="2"/><circle cx="${
          x + 7
        }" cy="16" r="3" fill="${color}"/>`,
      `<text x="${x + 18}" y="20">${label}</text>`,
    );
    x += 18 + label.length * 6.6 + 20;
  }
  return `<svg class="chart" viewBox="0 0 ${width} ${height}" role="img" ` +
    `aria-label="Jobs finished per hour by state and input bytes queued per hour, last 24 hours" ` +
    `xmlns="http://www.w3.org/2000/svg">\n${parts.join("\n")}\n</svg>`;
}

/** The chart's figures as a table, folded under the chart. */
export function chartFigures(hours: HourView[]): string {
  const rows = [...hours].reverse().map((hour) => [
    `${hourLabel(hour.start)}–${hourLabel(hour.start + 3_600_000)}`,
    String(hour.succeeded),
    String(hour.failed),
    String(hour.cancelled),
    escapeHtml(formatBytes(hour.inputBytes)),
  ]);
  return `<details><summary>Figures per hour</summary>\n${
    htmlTable(
      [
        "Hour (UTC)",
        ["Succeeded", "num"],
        ["Failed", "num"],
        ["Cancelled", "num"],
        ["Input queued", "num"],
      ],
      rows,
      "",
    )
  }\n</details>`;
}
