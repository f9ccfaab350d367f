/**
 * The deliveries to DICOM destinations on the status page (issue 17), rendered from
 * the view of lib/monitor/status_delivery_view.ts for lib/monitor/status_page.ts: a
 * card counting them by state (red when one was given up in the last 24 hours), a
 * section listing those that need attention, and a finished job's deliveries in one
 * short cell each (`PACS 32/32 ✓`, `PACS retrying 12/32`, `PACS failed 12/32`).
 * Every text is escaped; a last error had the job's file names blanked out of it
 * before it reached the view.
 *
 * @module
 */
import type { DeliveryState } from "../server/delivery_store.ts";
import {
  type AttentionDeliveryView,
  type DeliveriesView,
  DELIVERY_ATTENTION_LIMIT,
  type DeliveryView,
} from "./status_delivery_view.ts";
import { card, escapeHtml, htmlTable, jobId, section, state, utcTime } from "./status_format.ts";

/** The page's CSS for deliveries (state pills and a finished job's cells). */
export const DELIVERY_CSS = `
.state.delivered{background:#ebfbee;color:#2b8a3e}
.state.pending,.state.sending{background:#e7f5ff;color:#1864ab}
.state.retrying{background:#fff4e6;color:#d9480f}
.dlv{display:block;font-size:12px;font-weight:600}
.dlv.delivered{color:#2b8a3e}.dlv.failed{color:#c92a2a}.dlv.retrying{color:#e8590c}
.dlv.pending,.dlv.sending{color:#1864ab}
#deliveries td.wrap{min-width:240px}
.note{display:block;font-size:12px;color:var(--muted)}
`;

/** What a delivery is doing, in a word: `retrying` is pending after a failed attempt. */
function stateWord(delivery: DeliveryView): DeliveryState | "retrying" {
  return delivery.state === "pending" && delivery.attempts > 0 ? "retrying" : delivery.state;
}

/** DICOM files stored of those to send: `12/32`. */
function stored(delivery: DeliveryView): string {
  return `${delivery.filesSent}/${delivery.filesTotal}`;
}

/**
 * One delivery of a finished job in a short cell: `PACS 32/32 ✓`, `PACS sending 12/32`,
 * `PACS pending`, `PACS retrying 12/32`, `PACS failed 12/32`.
 */
export function deliveryCell(delivery: DeliveryView): string {
  const word = stateWord(delivery);
  const text = word === "delivered"
    ? `${delivery.destination} ${stored(delivery)} ✓`
    : word === "pending"
    ? `${delivery.destination} pending`
    : `${delivery.destination} ${word} ${stored(delivery)}`;
  return `<span class="dlv ${word}">${escapeHtml(text)}</span>`;
}

/** Every delivery of a finished job, one a line; empty when it has none. */
export function deliveryCells(deliveries: DeliveryView[] | undefined): string {
  return (deliveries ?? []).map(deliveryCell).join("");
}

/**
 * The card: deliveries delivered, in progress (pending or sending) and failed; red, its
 * figure the failed ones, when one was given up in the last 24 hours; orange while one
 * is being retried.
 */
export function deliveriesCard(view: DeliveriesView): string {
  const { counts } = view;
  const active = counts.pending + counts.sending;
  if (view.failedRecently > 0) {
    return card(
      "Deliveries",
      `${view.failedRecently} <small>failed</small>`,
      `in the last 24 h<br>${counts.delivered} delivered · ${active} in progress`,
      "bad",
    );
  }
  const retrying = view.attention.some((delivery) => stateWord(delivery) === "retrying");
  return card(
    "Deliveries",
    `${counts.delivered} <small>delivered</small>`,
    `${active} in progress · ${counts.failed} failed<br>to ${
      escapeHtml(view.destinations.join(", "))
    }`,
    retrying ? "warn" : "",
  );
}

function attentionRows(deliveries: AttentionDeliveryView[], now: number): string[][] {
  return deliveries.map((delivery) => {
    const note = [
      delivery.filesFailed > 0 ? `${delivery.filesFailed} not stored` : "",
      delivery.filesSkipped > 0 ? `${delivery.filesSkipped} skipped` : "",
    ].filter(Boolean).join(" · ");
    return [
      jobId(delivery.jobId),
      escapeHtml(delivery.destination),
      state(stateWord(delivery)),
      escapeHtml(stored(delivery)) +
      (note === "" ? "" : ` <span class="note">(${escapeHtml(note)})</span>`),
      String(delivery.attempts),
      delivery.nextAttemptAt === undefined ? "" : utcTime(delivery.nextAttemptAt, now),
      delivery.state === "failed" && delivery.finishedAt !== undefined
        ? utcTime(delivery.finishedAt, now)
        : "",
      delivery.lastError === undefined
        ? ""
        : `<span class="reason">${escapeHtml(delivery.lastError)}</span>`,
    ];
  });
}

/** The section of deliveries that need attention: pending, sending, given up lately. */
export function deliveriesSection(view: DeliveriesView, now: number): string {
  const { attention } = view;
  const count = attention.length === 0
    ? `to ${view.destinations.join(", ")}`
    : attention.length >= DELIVERY_ATTENTION_LIMIT
    ? `the newest ${attention.length} that need attention`
    : `${attention.length} need${attention.length === 1 ? "s" : ""} attention`;
  return section(
    "deliveries",
    "Deliveries",
    count,
    htmlTable(
      [
        "Job",
        "Destination",
        "State",
        "Files stored",
        ["Attempts", "num"],
        "Next attempt",
        "Given up",
        ["Last error", "wrap"],
      ],
      attentionRows(attention, now),
      "No delivery is waiting, and none was given up in the last 24 hours.",
    ),
  );
}
