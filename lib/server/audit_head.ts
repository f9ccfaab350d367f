/**
 * Where the audit log ends, as the job store records it (issue 14): the current log
 * file's name, the seq of its last line and that line's SHA-256. The audit log
 * (lib/server/audit_log.ts) sets it after each fsync'd write; `recon-server audit
 * --verify` compares the log's last line with it, so a cut or edited tail is detected
 * even though the chain inside the file is intact.
 *
 * @module
 */
import * as path from "node:path";
import type { DatabaseSync, SQLInputValue } from "node:sqlite";
import { readStoreFile, STORE_FILE } from "./store_file.ts";

type Row = Record<string, SQLInputValue>;

/** The audit log's last line as recorded. */
export interface AuditHead {
  /** Base name of the current log file, e.g. `audit.jsonl`. */
  file: string;
  /** The `seq` of its last line (0: nothing written yet). */
  seq: number;
  /** Hex SHA-256 of that line's bytes, without its newline. */
  hash: string;
}

/** The head recorded in `db`, if any. */
export function auditHeadIn(db: DatabaseSync): AuditHead | undefined {
  const row = db.prepare("SELECT file, seq, hash FROM audit_head WHERE id = 1").get() as
    | Row
    | undefined;
  if (!row) return undefined;
  return { file: String(row.file), seq: Number(row.seq), hash: String(row.hash) };
}

/** Record `head` in `db` (one statement, committed on return). */
export function setAuditHeadIn(db: DatabaseSync, head: AuditHead): void {
  db.prepare(
    `INSERT INTO audit_head (id, file, seq, hash) VALUES (1, ?, ?, ?)
     ON CONFLICT (id) DO UPDATE SET file = excluded.file, seq = excluded.seq, hash = excluded.hash`,
  ).run(head.file, head.seq, head.hash);
}

/**
 * The head recorded in the job store of `stateDir`, read from another process than the
 * server (read-only, without the lock); undefined when there is no store, or it has
 * recorded none.
 * @throws {StoreError} when the file there is no recon job store.
 */
export async function readAuditHead(stateDir: string): Promise<AuditHead | undefined> {
  const file = path.join(stateDir, STORE_FILE);
  try {
    Deno.statSync(file);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  return await readStoreFile(file, (db) => {
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE name = 'audit_head'").all();
    return tables.length === 0 ? undefined : auditHeadIn(db);
  });
}
