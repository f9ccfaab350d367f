/**
 * What the job store knows of each client (issue 14): when and from where it last
 * completed a handshake, how many jobs it submitted, and the client keys the server
 * last knew (so that changes made to the client file while the server was down are
 * audited at its next start). The server writes through {@link ClientRecords} on its
 * open store; `recon-server clients list` reads with {@link readClientActivity} from
 * another process, read-only and without the store's lock.
 *
 * @module
 */
import * as path from "node:path";
import type { DatabaseSync, SQLInputValue } from "node:sqlite";
import { readStoreFile, STORE_FILE } from "./store_file.ts";

type Row = Record<string, SQLInputValue>;

/** One client's activity. */
export interface ClientActivity {
  /** When it last completed a handshake (ms since the epoch). */
  lastSeenAt?: number;
  /** The address it came from then. */
  lastAddress?: string;
  /** Key id it used then. */
  lastKeyId?: string;
  /** Jobs it submitted that the store still holds. */
  jobs: number;
}

/** One client key as the server last knew it (see lib/server/client_keys.ts). */
export interface KnownKey {
  keyId: string;
  client: string;
  /** The key's flags as written in the client file, e.g. `admin,high-priority`. */
  flags: string;
  /** For a retiring key, until when it works (ISO). */
  expires?: string;
}

/** The client tables of an open store (schema version 2 and later). */
export class ClientRecords {
  #db: DatabaseSync;
  constructor(db: DatabaseSync) {
    this.#db = db;
  }

  /** `client` completed a handshake with `keyId` from `address` at `at`. */
  seen(client: string, keyId: string, address: string, at: number): void {
    this.#db.prepare(
      `INSERT INTO client_seen (client, key_id, address, seen_at) VALUES (?, ?, ?, ?)
       ON CONFLICT (client) DO UPDATE SET key_id = excluded.key_id,
         address = excluded.address, seen_at = excluded.seen_at`,
    ).run(client, keyId, address, at);
  }

  /** Every client's activity, by name (clients never seen but with jobs included). */
  activity(): Map<string, ClientActivity> {
    return activityOf(this.#db);
  }

  /** The client keys the server last knew, by key id. */
  snapshot(): Map<string, KnownKey> {
    const rows = this.#db.prepare("SELECT key_id, client, flags, expires FROM client_snapshot")
      .all() as Row[];
    return new Map(rows.map((row) => [String(row.key_id), {
      keyId: String(row.key_id),
      client: String(row.client),
      flags: String(row.flags),
      ...(row.expires === null ? {} : { expires: String(row.expires) }),
    }]));
  }

  /** Replace the snapshot with `keys`, in one transaction. */
  setSnapshot(keys: Iterable<KnownKey>): void {
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      this.#db.exec("DELETE FROM client_snapshot");
      const insert = this.#db.prepare(
        "INSERT INTO client_snapshot (key_id, client, flags, expires) VALUES (?, ?, ?, ?)",
      );
      for (const key of keys) insert.run(key.keyId, key.client, key.flags, key.expires ?? null);
      this.#db.exec("COMMIT");
    } catch (error) {
      this.#db.exec("ROLLBACK");
      throw error;
    }
  }
}

function activityOf(db: DatabaseSync): Map<string, ClientActivity> {
  const result = new Map<string, ClientActivity>();
  const jobs = db.prepare("SELECT client, COUNT(*) AS n FROM jobs GROUP BY client").all() as Row[];
  for (const row of jobs) result.set(String(row.client), { jobs: Number(row.n) });
  const seen = db.prepare("SELECT client, key_id, address, seen_at FROM client_seen")
    .all() as Row[];
  for (const row of seen) {
    const name = String(row.client);
    result.set(name, {
      jobs: result.get(name)?.jobs ?? 0,
      lastSeenAt: Number(row.seen_at),
      lastAddress: String(row.address),
      lastKeyId: String(row.key_id),
    });
  }
  return result;
}

/**
 * Every client's activity from the job store in `stateDir`, read from another process
 * than the server (read-only, without the lock). No store there yet: an empty map.
 * @throws {StoreError} when the file there is no recon job store.
 */
export async function readClientActivity(stateDir: string): Promise<Map<string, ClientActivity>> {
  const file = path.join(stateDir, STORE_FILE);
  try {
    Deno.statSync(file);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return new Map();
    throw error;
  }
  return await readStoreFile(file, (db) => {
    // A store not yet migrated to version 2 (an older server's) has no client tables.
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE name = 'client_seen'").all();
    if (tables.length === 0) {
      const n = db.prepare("SELECT COUNT(*) AS n FROM jobs").get() as Row;
      return new Map([["default", { jobs: Number(n.n) }]]);
    }
    return activityOf(db);
  });
}
