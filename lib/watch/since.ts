/**
 * `recon-client watch --since TIME` (docs/WATCH.md §2 "The first start"): the time
 * from which files already in the directory at the first start are sent. Pure: the
 * clock is passed in.
 *
 * Accepted: an ISO 8601 date (`2026-11-20`, local midnight), a date and time
 * (`2026-11-20T08:30`, `2026-11-20 08:30:00`, local time unless it ends in `Z` or an
 * offset such as `+01:00`), or a time ago: `90m`, `12h`, `7d`.
 *
 * @module
 */
import { UsageError } from "../errors.ts";

const DATE = /^(\d{4})-(\d{2})-(\d{2})$/;
const DATE_TIME = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?(Z|[+-]\d{2}:\d{2})?$/i;
const AGO = /^(\d{1,6})(m|h|d)$/;
const UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/**
 * The instant `text` names.
 * @throws {UsageError} for anything else, or a time in the future.
 */
export function parseSince(text: string, now: Date = new Date()): Date {
  const value = text.trim();
  let when: Date | undefined;
  const date = DATE.exec(value);
  const ago = AGO.exec(value);
  if (date) {
    const [year, month, day] = date.slice(1).map(Number);
    when = new Date(year, month - 1, day);
    // new Date() rolls 2026-02-31 over into March: refuse a day that does not exist.
    if (when.getMonth() !== month - 1 || when.getDate() !== day) when = undefined;
  } else if (DATE_TIME.test(value)) {
    when = new Date(value.replace(" ", "T"));
  } else if (ago) {
    when = new Date(now.getTime() - Number(ago[1]) * UNIT_MS[ago[2] as keyof typeof UNIT_MS]);
  }
  if (when === undefined || Number.isNaN(when.getTime())) {
    throw new UsageError(`--since "${text}" is not a date, a date and time, or a time ago`, {
      hint: "for example --since 2026-11-20, --since '2026-11-20 08:30', --since 12h or --since 7d",
    });
  }
  if (when.getTime() > now.getTime()) {
    throw new UsageError(`--since ${text} is in the future (${when.toISOString()})`, {
      hint: "give the time from which the files already there are to be sent",
    });
  }
  return when;
}
