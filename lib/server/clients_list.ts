/**
 * `recon-server clients list`: every client with its key id, when its key was made, its
 * last handshake (and with which key, when not its current one), its jobs and flags,
 * and the old keys that still work; as a table or as JSON. Never a key.
 *
 * @module
 */
import type { ClientActivity } from "./client_activity.ts";
import { type ClientKey, DEFAULT_CLIENT, formatClientFlags, formatTime } from "./client_keys.ts";

/** One client in `clients list --json`. Never a key. */
export interface ClientListEntry {
  name: string;
  /** The current key's id. */
  key_id: string;
  /** When the current key was made; null for `default` (SHARED_KEY). */
  created: string | null;
  /** Its last completed handshake (ISO), if any. */
  last_seen?: string;
  last_address?: string;
  /**
   * The key id of that handshake: `key_id`, one of `retiring`, or a former key (revoked
   * or expired; e.g. another machine's before the name was given again).
   */
  last_key_id?: string;
  /** Jobs of it that the job store holds. */
  jobs: number;
  admin: boolean;
  high_priority: boolean;
  from: string[];
  deliver: string[];
  /** Its old keys that still work, each until `expires`. */
  retiring: { key_id: string; expires: string }[];
}

/** `list`: `default` first (when SHARED_KEY is set), then the file's clients in order. */
export function listEntries(
  keys: readonly ClientKey[],
  sharedKeyId: string | undefined,
  activity: ReadonlyMap<string, ClientActivity>,
  now: Date,
): ClientListEntry[] {
  const entries: ClientListEntry[] = [];
  const seen = (name: string) => {
    const known = activity.get(name);
    return {
      ...(known?.lastSeenAt === undefined
        ? {}
        : { last_seen: formatTime(new Date(known.lastSeenAt)) }),
      ...(known?.lastAddress === undefined ? {} : { last_address: known.lastAddress }),
      ...(known?.lastKeyId === undefined ? {} : { last_key_id: known.lastKeyId }),
      jobs: known?.jobs ?? 0,
    };
  };
  if (sharedKeyId !== undefined) {
    entries.push({
      name: DEFAULT_CLIENT,
      key_id: sharedKeyId,
      created: null,
      ...seen(DEFAULT_CLIENT),
      admin: true,
      high_priority: true,
      from: [],
      deliver: [],
      retiring: [],
    });
  }
  for (const key of keys) {
    if (key.expires !== undefined) continue;
    entries.push({
      name: key.name,
      key_id: key.keyId,
      created: key.created,
      ...seen(key.name),
      admin: key.admin,
      high_priority: key.highPriority,
      from: key.from,
      deliver: key.deliver,
      retiring: keys
        .filter((old) =>
          old.name === key.name && old.expires !== undefined &&
          Date.parse(old.expires) > now.getTime()
        )
        .map((old) => ({ key_id: old.keyId, expires: old.expires! })),
    });
  }
  return entries;
}

/** `list` as a table, a line under a client per old key that still works. */
export function listText(entries: readonly ClientListEntry[]): string {
  if (entries.length === 0) {
    return "no clients: SHARED_KEY is not set and the client file has none " +
      "(add one with 'recon-server clients add NAME')\n";
  }
  const rows: string[][] = [];
  for (const entry of entries) {
    const lastSeen = entry.last_seen === undefined
      ? "never"
      : `${entry.last_seen}${entry.last_address ? ` from ${entry.last_address}` : ""}${
        lastKeyNote(entry)
      }`;
    const flags = formatClientFlags({
      admin: entry.admin,
      highPriority: entry.high_priority,
      from: entry.from,
      deliver: entry.deliver,
    });
    rows.push([
      entry.name,
      entry.key_id,
      entry.created ?? "-",
      lastSeen,
      String(entry.jobs),
      flags || "-",
    ]);
    for (const old of entry.retiring) {
      rows.push(["", old.key_id, `expires ${old.expires}`, "", "", ""]);
    }
  }
  return table(["NAME", "KEY ID", "CREATED", "LAST SEEN", "JOBS", "FLAGS"], rows);
}

/**
 * Which key LAST SEEN was with, unless the current one: a retiring key (its machine
 * has not been given the new key yet), or a former one (revoked or expired: activity
 * of whoever had the name before, not of the current key).
 */
function lastKeyNote(entry: ClientListEntry): string {
  const id = entry.last_key_id;
  if (id === undefined || id === entry.key_id) return "";
  if (entry.retiring.some((old) => old.key_id === id)) return ` (retiring key ${id})`;
  return ` (former key ${id})`;
}

/** Rows of cells as a table whose columns line up, with no trailing spaces. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [header, ...rows]
    .map((row) => row.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd() + "\n")
    .join("");
}
