/**
 * The clients a running server accepts (issue 14): SHARED_KEY from recon.opts as the
 * client `default` (admin, every right), and every key of the client file
 * (CLIENT_KEYS_FILE, lib/server/client_keys.ts), read at start and again within a second
 * of any change, without a restart. The handshake looks key ids up through
 * {@link ClientRegistry.keysFor}: an unknown key id, a revoked key, a retiring key past
 * its `expires=` and a key used from an address its `from=` does not list are all the
 * same "key not accepted" (docs/PROTOCOL.md §2.7, §9.8), so a stranger learns no names.
 *
 * A file that fails to parse is reported (file and line) and the last good set stays;
 * at start it stops the server. Each change is compared with what the server knew
 * before (the job store's client snapshot, so changes made while it was down count
 * too) and reported as audit events (client added, rotated, revoked, changed, a retiring
 * key retired); the server then closes the open sessions whose key is no longer accepted
 * from their address.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import { ConfigError, errorMessage } from "../errors.ts";
import { TrustedAddresses } from "./access.ts";
import { clientFileAccess } from "./client_file.ts";
import type { KnownKey } from "./client_activity.ts";
import {
  type ClientKey,
  DEFAULT_CLIENT,
  formatClientFlags,
  parseClientFile,
} from "./client_keys.ts";

/** How often the client file is looked at (its size, mtime and inode): twice a second. */
export const CLIENT_FILE_POLL_MS = 500;

/** Who a session is: the client and the key it used. */
export interface ClientIdentity {
  name: string;
  keyId: string;
  admin: boolean;
  /** May submit with priority `high`. */
  highPriority: boolean;
  /** Destinations it may name in `--deliver` (upper case); undefined: any (SHARED_KEY). */
  deliver?: readonly string[];
}

/** One accepted key with its rules. */
interface Entry {
  identity: ClientIdentity;
  raw: Uint8Array<ArrayBuffer>;
  /** `from=`; undefined: any address. */
  from?: TrustedAddresses;
  /** Retiring key: accepted until then (ms since the epoch). */
  expiresAt?: number;
  known: KnownKey;
}

/** What a key id is now from an address: accepted (its entry), or why not. */
type Lookup = { entry: Entry } | { refusal?: string; client?: string };

/** An audit event about the client keys: `client_added`, `client_rotated`, … */
export interface ClientEvent {
  event: string;
  fields: Record<string, unknown>;
}

/** Inputs of {@link ClientRegistry.open}. */
export interface ClientRegistryOptions {
  /** SHARED_KEY of recon.opts, when set: the client `default`. */
  sharedKey?: { raw: Uint8Array<ArrayBuffer>; id: string };
  /** CLIENT_KEYS_FILE; a missing file holds no client. */
  file: string;
  log: Logger;
  /** The clients the server last knew (job store snapshot); empty on a first start. */
  known: ReadonlyMap<string, KnownKey>;
  /** Told each change, after the new set is in force. */
  onChange: (events: ClientEvent[], current: KnownKey[]) => void;
  now?: () => number;
  pollMs?: number;
}

/** The live set of client keys. */
export class ClientRegistry {
  #entries = new Map<string, Entry>();
  #options: ClientRegistryOptions;
  #now: () => number;
  #known: Map<string, KnownKey>;
  #stamp = "";
  #timer?: ReturnType<typeof setInterval>;
  #polling = false;
  /** The retiring keys already reported as retired. */
  #retired = new Set<string>();
  /** Keys revoked since this start (key id → client), so that their use is named. */
  #revoked = new Map<string, string>();

  private constructor(options: ClientRegistryOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#known = new Map(options.known);
  }

  /**
   * Read SHARED_KEY and the client file, report what changed since the snapshot, and
   * start watching the file.
   * @throws {ConfigError} a malformed client file (`file:line: what`), or no key at all.
   */
  static async open(options: ClientRegistryOptions): Promise<ClientRegistry> {
    const registry = new ClientRegistry(options);
    const keys = await registry.#read();
    if (keys === undefined) throw new Error("unreachable: the first read has no last good set");
    if (keys.length === 0 && !options.sharedKey) {
      throw new ConfigError(
        `no client key: SHARED_KEY is not set in recon.opts and ${options.file} holds no client`,
        {
          hint:
            "set SHARED_KEY (recon-server keygen) or add a client with 'recon-server clients add NAME'",
        },
      );
    }
    registry.#install(keys);
    registry.#timer = setInterval(() => registry.poll(), options.pollMs ?? CLIENT_FILE_POLL_MS);
    Deno.unrefTimer(registry.#timer);
    return registry;
  }

  /** Stop watching the file. */
  close(): void {
    clearInterval(this.#timer);
  }

  /** How many clients (names) are accepted now. */
  get clientCount(): number {
    return new Set([...this.#entries.values()].map((entry) => entry.identity.name)).size;
  }

  /**
   * The key table one connection's handshake looks its key id up in: only the keys
   * accepted now from `address` (`arrivedOn` for a zoned link-local `from=` entry).
   * `lastRefusal` says why a key id that exists was not accepted (for the log and the
   * audit only; the client hears "key not accepted" as for any unknown key id).
   */
  keysFor(address: string): ConnectionKeys {
    return new ConnectionKeys((id) => this.#lookup(id, address));
  }

  /** The client `keyId` belongs to, or belonged to when it was revoked since this start. */
  clientOf(keyId: string): string | undefined {
    return this.#entries.get(keyId)?.identity.name ?? this.#revoked.get(keyId);
  }

  /** The identity behind `keyId` if that key is accepted now from `address`. */
  identify(keyId: string, address: string): ClientIdentity | undefined {
    const found = this.#lookup(keyId, address);
    return "entry" in found ? found.entry.identity : undefined;
  }

  #lookup(keyId: string, address: string): Lookup {
    const entry = this.#entries.get(keyId);
    if (!entry) {
      const revoked = this.#revoked.get(keyId);
      return revoked === undefined
        ? {}
        : { refusal: `client ${revoked}'s key ${keyId} was revoked`, client: revoked };
    }
    const { name } = entry.identity;
    if (entry.expiresAt !== undefined && entry.expiresAt <= this.#now()) {
      return {
        refusal: `client ${name}'s old key ${keyId} retired after its rotation`,
        client: name,
      };
    }
    if (entry.from && !entry.from.allows(address)) {
      return {
        refusal: `client ${name}'s key ${keyId} is not accepted from ${address} (from=)`,
        client: name,
      };
    }
    return { entry };
  }

  /** Look at the file now (the timer does this twice a second). */
  async poll(): Promise<void> {
    if (this.#polling) return;
    this.#polling = true;
    try {
      const keys = await this.#read();
      if (keys !== undefined) this.#install(keys);
      else this.#retireByTime();
    } finally {
      this.#polling = false;
    }
  }

  /** The file's keys when it changed since the last read; undefined when it did not or is malformed. */
  async #read(): Promise<ClientKey[] | undefined> {
    const { file, log } = this.#options;
    const first = this.#stamp === "";
    if (file === "") {
      // No client file configured (a test's bare config): SHARED_KEY only.
      if (!first) return undefined;
      this.#stamp = "none";
      return [];
    }
    const keep = `keeping the ${this.clientCount} client(s) read before`;
    let stamp = "missing";
    let text = "";
    try {
      const info = await Deno.stat(file);
      stamp = `${info.ino}:${info.size}:${info.mtime?.getTime()}:${info.mode}:${info.uid}`;
      if (stamp === this.#stamp) return undefined;
      this.#stamp = stamp;
      const access = clientFileAccess(file, info, { uid: Deno.uid(), gid: Deno.gid() });
      if (access.refuse) {
        if (first) throw new ConfigError(`CLIENT_KEYS_FILE ${access.refuse}`);
        log.error(`CLIENT_KEYS_FILE ${access.refuse}; ${keep} until it is fixed`);
        return undefined;
      }
      if (access.warn) log.warn(`CLIENT_KEYS_FILE ${access.warn}`);
      text = await Deno.readTextFile(file);
    } catch (error) {
      if (error instanceof ConfigError) throw error;
      if (!(error instanceof Deno.errors.NotFound)) {
        const problem = `cannot read CLIENT_KEYS_FILE ${file}: ${errorMessage(error)}`;
        if (first) throw new ConfigError(problem);
        log.error(`${problem}; ${keep}`);
        return undefined;
      }
      if (stamp === this.#stamp) return undefined;
      const wasThere = !first && this.#stamp !== "missing";
      this.#stamp = stamp;
      if (wasThere) {
        // A file that vanished (a backup tool, a wrong mv) revokes nobody: emptying it does.
        log.error(
          `CLIENT_KEYS_FILE ${file} is gone; ${keep} until it is back (to revoke every client, leave the file empty)`,
        );
        return undefined;
      }
    }
    try {
      const keys = await parseClientFile(text, file, { sharedKeyId: this.#options.sharedKey?.id });
      if (!first) log.info(`read CLIENT_KEYS_FILE ${file} again: ${keys.length} key(s)`);
      return keys;
    } catch (error) {
      if (first) throw error;
      log.error(`${errorMessage(error)}; ${keep} until it is fixed`);
      return undefined;
    }
  }

  /** Put `keys` (and SHARED_KEY) in force and report how they differ from before. */
  #install(keys: ClientKey[]): void {
    const entries = new Map<string, Entry>();
    const shared = this.#options.sharedKey;
    if (shared) {
      const identity = {
        name: DEFAULT_CLIENT,
        keyId: shared.id,
        admin: true,
        highPriority: true,
      };
      entries.set(shared.id, {
        identity,
        raw: shared.raw,
        known: { keyId: shared.id, client: DEFAULT_CLIENT, flags: "admin,high-priority" },
      });
    }
    for (const key of keys) {
      const expiresAt = key.expires === undefined ? undefined : Date.parse(key.expires);
      entries.set(key.keyId, {
        identity: {
          name: key.name,
          keyId: key.keyId,
          admin: key.admin,
          highPriority: key.highPriority,
          deliver: key.deliver,
        },
        raw: key.raw,
        from: key.from.length > 0
          ? new TrustedAddresses(key.from, { networks: true, label: "from= entry" })
          : undefined,
        expiresAt,
        known: {
          keyId: key.keyId,
          client: key.name,
          flags: formatClientFlags({ ...key, expires: undefined }),
          ...(key.expires === undefined ? {} : { expires: key.expires }),
        },
      });
    }
    this.#entries = entries;
    const current = [...entries.values()].map((entry) => entry.known);
    const events = diffClients(this.#known, current, this.#now());
    this.#known = new Map(current.map((key) => [key.keyId, key]));
    for (const event of events) {
      if (event.event === "client_revoked") {
        for (const id of event.fields.key_ids as string[]) {
          this.#retired.delete(id);
          this.#revoked.set(id, String(event.fields.client));
        }
      }
    }
    for (const id of entries.keys()) this.#revoked.delete(id);
    this.#options.onChange([...events, ...this.#retiredNow()], current);
  }

  /** Report retiring keys whose time ran out (their sessions are then closed). */
  #retireByTime(): void {
    const events = this.#retiredNow();
    if (events.length > 0) this.#options.onChange(events, [...this.#known.values()]);
  }

  #retiredNow(): ClientEvent[] {
    const events: ClientEvent[] = [];
    const now = this.#now();
    for (const entry of this.#entries.values()) {
      const id = entry.identity.keyId;
      if (entry.expiresAt === undefined || entry.expiresAt > now || this.#retired.has(id)) continue;
      this.#retired.add(id);
      events.push({
        event: "client_key_retired",
        fields: { client: entry.identity.name, key_id: id, expired: entry.known.expires },
      });
    }
    return events;
  }
}

/**
 * The audit events that take the clients from `before` to `after` (both keyed by key
 * id): a new name is added; a name whose current key changed while its old key stays
 * as a retiring one is rotated (a new current key without that is a rotation with no
 * grace); a name that is gone is revoked, as is a retiring key removed before its
 * time (one removed after it had retired is no event: its retirement was); a current
 * key whose flags changed is changed.
 */
export function diffClients(
  before: ReadonlyMap<string, KnownKey>,
  after: readonly KnownKey[],
  now: number,
): ClientEvent[] {
  const events: ClientEvent[] = [];
  const byName = (keys: Iterable<KnownKey>) => {
    const names = new Map<string, KnownKey[]>();
    for (const key of keys) names.set(key.client, [...names.get(key.client) ?? [], key]);
    return names;
  };
  const old = byName(before.values());
  const fresh = byName(after);
  const currentOf = (keys: KnownKey[] | undefined) => keys?.find((key) => !key.expires);
  for (const [name, keys] of fresh) {
    const current = currentOf(keys)!;
    const previous = old.get(name);
    if (!previous) {
      events.push({
        event: "client_added",
        fields: { client: name, key_id: current.keyId, flags: current.flags },
      });
      continue;
    }
    const previousCurrent = currentOf(previous);
    if (previousCurrent?.keyId !== current.keyId) {
      events.push({
        event: "client_rotated",
        fields: {
          client: name,
          key_id: current.keyId,
          retiring: keys.filter((key) => key.expires).map((key) => ({
            key_id: key.keyId,
            expires: key.expires,
          })),
        },
      });
    } else if (previousCurrent.flags !== current.flags) {
      events.push({
        event: "client_changed",
        fields: { client: name, key_id: current.keyId, flags: current.flags },
      });
    }
    const stillThere = new Set(keys.map((key) => key.keyId));
    const retired = (key: KnownKey) => key.expires !== undefined && Date.parse(key.expires) <= now;
    const removed = previous.filter((key) =>
      !stillThere.has(key.keyId) && key.keyId !== previousCurrent?.keyId && !retired(key)
    );
    if (removed.length > 0) {
      events.push({
        event: "client_revoked",
        fields: { client: name, key_ids: removed.map((key) => key.keyId) },
      });
    }
  }
  for (const [name, keys] of old) {
    if (fresh.has(name)) continue;
    events.push({
      event: "client_revoked",
      fields: { client: name, key_ids: keys.map((key) => key.keyId) },
    });
  }
  return events;
}

/**
 * The key table of one handshake (lib/wire/handshake.ts serverHandshake calls `get`):
 * answers only for keys accepted from the connection's address, and remembers which
 * key id it answered for (a hit means the handshake goes on to derive session keys,
 * the one costly step before authentication) and why it refused one that exists.
 */
export class ConnectionKeys extends Map<string, Uint8Array<ArrayBuffer>> {
  /** The key id the handshake found. */
  named?: string;
  /** Why an existing key id was not accepted, for the log and the audit. */
  refusal?: string;
  /** The client whose key that was. */
  refusedClient?: string;
  #lookup: (id: string) => Lookup;

  constructor(lookup: (id: string) => Lookup) {
    super();
    this.#lookup = lookup;
  }

  override get(id: string): Uint8Array<ArrayBuffer> | undefined {
    const found = this.#lookup(id);
    if ("entry" in found) {
      this.named = id;
      return found.entry.raw;
    }
    this.refusal = found.refusal;
    this.refusedClient = found.client;
    return undefined;
  }

  override has(id: string): boolean {
    return "entry" in this.#lookup(id);
  }
}
