/**
 * Who may talk to the server, before any handshake (docs/PROTOCOL.md §8.3, §9.4):
 * TRUSTEDIPS matching (IPv4, IPv6, IPv4-mapped IPv6, link-local IPv6 with its zone; a
 * client's `from=` in the client file also takes CIDR blocks),
 * caps on unauthenticated connections overall and per address, and slowing down (never
 * refusing) an address whose handshakes keep costing a key derivation for nothing.
 *
 * The rule, which later work (identities, metrics) builds on: a failed handshake never
 * refuses a later one. A wrong key shows up as an unknown key id, which costs the server
 * a table lookup, so it is not counted at all. Only a handshake that names one of our key
 * ids and then fails its proof made the server do X25519 and HKDF work; when an address
 * piles up LOCKOUT_FAILURES of those, each within LOCKOUT_SECONDS of the last, its
 * handshakes are spaced {@link SLOW_HANDSHAKE_INTERVAL_MS} apart until LOCKOUT_SECONDS
 * after its last one. A client holding the key is then served after a short wait, never
 * turned away.
 *
 * @module
 */
import { isIP } from "node:net";

/**
 * Spacing of the handshakes from a slowed address: at most ten key derivations a second
 * (about 0.5 ms of CPU each, measured), so about 0.5 % of a core per slowed address. Each
 * waiting connection holds one of the address's MAX_UNAUTHENTICATED_PER_IP slots, so the
 * longest wait is that cap times this interval (6.4 s with the default 64), within the
 * default HANDSHAKE_TIMEOUT.
 */
export const SLOW_HANDSHAKE_INTERVAL_MS = 100;

/**
 * Canonical form of an address: IPv4-mapped IPv6 becomes IPv4, IPv6 lower-cased and
 * expanded; a zone (`%eth0`, `%4`) is kept as written after the address (interface names
 * are case-sensitive).
 */
export function canonicalAddress(address: string): string {
  let text = address.trim();
  if (text.startsWith("[") && text.endsWith("]")) text = text.slice(1, -1);
  const at = text.indexOf("%");
  const zone = at >= 0 ? text.slice(at) : "";
  text = (at >= 0 ? text.slice(0, at) : text).toLowerCase();
  if (isIP(text) === 6) return expandIPv6(text) + zone;
  return text + zone;
}

/** Whether a canonical address is IPv6 link-local (fe80::/10), where a zone means something. */
function isLinkLocal(canonical: string): boolean {
  return /^fe[89ab][0-9a-f]:/.test(canonical);
}
function expandIPv6(text: string): string {
  let head = text;
  let tail = "";
  const ipv4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (ipv4) {
    const parts = ipv4[1].split(".").map(Number);
    tail = `${((parts[0] << 8) | parts[1]).toString(16)}:${
      ((parts[2] << 8) | parts[3]).toString(16)
    }`;
    head = text.slice(0, -ipv4[1].length) + tail;
  }
  const [left, right] = head.includes("::") ? head.split("::") : [head, undefined];
  const leftParts = left ? left.split(":") : [];
  const rightParts = right ? right.split(":") : [];
  const missing = 8 - leftParts.length - rightParts.length;
  const all = right === undefined ? leftParts : [
    ...leftParts,
    ...Array(missing).fill("0"),
    ...rightParts,
  ];
  const words = all.map((w) => parseInt(w || "0", 16));
  if (words.length === 8 && words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
    return `${words[6] >> 8}.${words[6] & 255}.${words[7] >> 8}.${words[7] & 255}`;
  }
  return words.map((w) => w.toString(16)).join(":");
}

/** The interface a connection arrived on: its name and its index (the numeric zone). */
export interface Zone {
  name: string;
  index: number;
}

/** What {@link arrivalZone} needs of `Deno.networkInterfaces()`. */
export interface InterfaceAddress {
  name: string;
  address: string;
  scopeid: number | null;
}

/**
 * The zone of a link-local peer, inferred from the server's own address on the
 * connection. Deno reports neither the peer's nor our own scope id (measured: a
 * connection to `fe80::…%eth0` shows `remoteAddr.hostname` without `%eth0`), but a
 * link-local address is only reachable on its own link, so a connection to one of our
 * link-local addresses arrived on the interface that holds it. Undefined (the zone is
 * unknown, and a zoned TRUSTEDIPS entry does not match) when the local address is not
 * link-local or is held by more than one interface.
 */
export function arrivalZone(
  localAddress: string,
  interfaces: readonly InterfaceAddress[],
): Zone | undefined {
  const local = canonicalAddress(localAddress).replace(/%.*$/, "");
  if (!isLinkLocal(local)) return undefined;
  const holders = interfaces.filter((i) =>
    isIP(i.address.replace(/%.*$/, "")) === 6 &&
    canonicalAddress(i.address).replace(/%.*$/, "") === local
  );
  const names = new Set(holders.map((i) => i.name));
  if (names.size !== 1) return undefined;
  return { name: holders[0].name, index: holders[0].scopeid ?? 0 };
}

/** Options of {@link TrustedAddresses}. */
export interface TrustedAddressesOptions {
  /**
   * Also take CIDR blocks (`10.0.1.0/24`, `2001:db8::/32`), as a client's `from=` does
   * (lib/server/client_keys.ts). TRUSTEDIPS takes single addresses only.
   */
  networks?: boolean;
  /** What an entry is called in messages; default `TRUSTEDIPS entry`. */
  label?: string;
}

/** A CIDR block: the network's address bytes (4 or 16) and its prefix length. */
interface Network {
  bytes: Uint8Array;
  bits: number;
}

/**
 * A TRUSTEDIPS list. Empty means every address may connect. A link-local entry with a
 * zone (`fe80::1%eth0` or `fe80::1%4`) matches that address only on that interface; one
 * without a zone matches the address on every interface. With `networks`, a CIDR block
 * matches every address in it (an IPv4-mapped IPv6 address as its IPv4 address).
 */
export class TrustedAddresses {
  #allowed = new Set<string>();
  /** Link-local address (canonical, no zone) → the zones it is allowed on. */
  #zoned = new Map<string, Set<string>>();
  #networks: Network[] = [];

  /** Throws TypeError naming an entry that is not an IP address, or a zone off link-local. */
  constructor(entries: readonly string[], options: TrustedAddressesOptions = {}) {
    const label = options.label ?? "TRUSTEDIPS entry";
    for (const entry of entries) {
      if (options.networks && entry.includes("/")) {
        this.#networks.push(parseNetwork(entry, label));
        continue;
      }
      const canonical = canonicalAddress(entry);
      const at = canonical.indexOf("%");
      const address = at >= 0 ? canonical.slice(0, at) : canonical;
      if (isIP(address) === 0) {
        throw new TypeError(`${label} ${JSON.stringify(entry)} is not an IP address`);
      }
      if (at < 0) {
        this.#allowed.add(address);
        continue;
      }
      const zone = canonical.slice(at + 1);
      if (!isLinkLocal(address) || !/^[A-Za-z0-9_.-]{1,15}$/.test(zone)) {
        throw new TypeError(
          `${label} ${
            JSON.stringify(entry)
          }: a zone (%interface) is only allowed on a link-local fe80:: address`,
        );
      }
      const zones = this.#zoned.get(address) ?? new Set();
      zones.add(zone);
      this.#zoned.set(address, zones);
    }
  }

  get restricted(): boolean {
    return this.#allowed.size > 0 || this.#zoned.size > 0 || this.#networks.length > 0;
  }

  /** Link-local entries without a zone (they match on every interface). */
  get unzonedLinkLocal(): string[] {
    return [...this.#allowed].filter(isLinkLocal);
  }

  /** Whether matching `address` needs the interface it arrived on ({@link arrivalZone}). */
  needsZone(address: string): boolean {
    return this.#zoned.has(canonicalAddress(address).replace(/%.*$/, ""));
  }

  /**
   * Whether `address` may connect. A zone written in `address` itself, else `arrivedOn`,
   * is compared with the zones of a link-local entry (by name or by index).
   */
  allows(address: string, arrivedOn?: Zone): boolean {
    if (!this.restricted) return true;
    const canonical = canonicalAddress(address);
    const at = canonical.indexOf("%");
    const bare = at >= 0 ? canonical.slice(0, at) : canonical;
    if (this.#allowed.has(bare)) return true;
    if (this.#networks.length > 0) {
      const bytes = addressBytes(bare);
      if (bytes && this.#networks.some((network) => inNetwork(bytes, network))) return true;
    }
    const zones = this.#zoned.get(bare);
    if (!zones) return false;
    const candidates = at >= 0
      ? [canonical.slice(at + 1)]
      : arrivedOn
      ? [arrivedOn.name, String(arrivedOn.index)]
      : [];
    return candidates.some((zone) => zones.has(zone));
  }
}

/** A CIDR block `ADDRESS/BITS` (no zone); TypeError naming the entry otherwise. */
function parseNetwork(entry: string, label: string): Network {
  const quoted = JSON.stringify(entry);
  const slash = entry.lastIndexOf("/");
  const written = entry.slice(0, slash).trim();
  const canonical = canonicalAddress(written);
  const bytes = canonical.includes("%") ? undefined : addressBytes(canonical);
  const digits = entry.slice(slash + 1).trim();
  if (!bytes || !/^\d{1,3}$/.test(digits)) {
    throw new TypeError(`${label} ${quoted} is not an IP address or CIDR block (ADDRESS/BITS)`);
  }
  // An IPv4-mapped network (::ffff:10.0.0.0/104) is the IPv4 network it maps.
  const mapped = isIP(written.replace(/^\[|\]$/g, "")) === 6 && bytes.length === 4;
  const bits = Number(digits) - (mapped ? 96 : 0);
  if (bits < 0 || bits > bytes.length * 8) {
    throw new TypeError(
      `${label} ${quoted}: the prefix length must be at most ${bytes.length * 8} for IPv${
        bytes.length === 4 ? 4 : 6
      }`,
    );
  }
  if (maskBytes(bytes, bits).some((byte, i) => byte !== bytes[i])) {
    throw new TypeError(`${label} ${quoted} has address bits set beyond its /${digits}`);
  }
  return { bytes, bits };
}

/** The 4 or 16 bytes of a canonical address without zone, or undefined. */
function addressBytes(canonical: string): Uint8Array | undefined {
  switch (isIP(canonical)) {
    case 4:
      return Uint8Array.from(canonical.split(".").map(Number));
    case 6: {
      const words = canonical.split(":").map((word) => parseInt(word, 16));
      if (words.length !== 8) return undefined;
      return Uint8Array.from(words.flatMap((word) => [word >> 8, word & 255]));
    }
  }
  return undefined;
}

/** `bytes` with every bit after the first `bits` cleared. */
function maskBytes(bytes: Uint8Array, bits: number): Uint8Array {
  return bytes.map((byte, i) => {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    return byte & ((0xff << (8 - keep)) & 0xff);
  });
}

/** Whether an address's bytes fall in `network` (same family, same first `bits` bits). */
function inNetwork(bytes: Uint8Array, network: Network): boolean {
  if (bytes.length !== network.bytes.length) return false;
  const masked = maskBytes(bytes, network.bits);
  return masked.every((byte, i) => byte === network.bytes[i]);
}

/** Limits for {@link AdmissionControl}. */
export interface AdmissionLimits {
  maxUnauthenticated: number;
  maxUnauthenticatedPerAddress: number;
  /** Key failures (LOCKOUT_FAILURES) after which an address is slowed down; 0 = never. */
  lockoutFailures: number;
  /** LOCKOUT_SECONDS: how far apart failures still add up, and how long slowing lasts. */
  lockoutSeconds: number;
  /** Spacing of a slowed address's handshakes; default {@link SLOW_HANDSHAKE_INTERVAL_MS}. */
  intervalMs?: number;
  now?: () => number;
}

/** Why a connection is not admitted, or undefined. Failed handshakes are never a reason. */
export type AdmissionRefusal = "busy" | "too many from this address";

interface Failures {
  count: number;
  last: number;
  /** When the next handshake of a slowed address may start. */
  nextTurn: number;
}

/**
 * Counts connections that have not finished the handshake, and key failures per
 * address. `admit()` before the handshake, then wait `delay()` ms, `release()` after the
 * handshake either way, and `recordKeyFailure()` when it failed after naming a known key id.
 */
export class AdmissionControl {
  #limits: Required<AdmissionLimits>;
  #pending = 0;
  #pendingByAddress = new Map<string, number>();
  #failures = new Map<string, Failures>();

  constructor(limits: AdmissionLimits) {
    this.#limits = { now: () => Date.now(), intervalMs: SLOW_HANDSHAKE_INTERVAL_MS, ...limits };
  }

  /** Admit a new unauthenticated connection, or say why not. */
  admit(address: string): AdmissionRefusal | undefined {
    const key = canonicalAddress(address);
    if (this.#pending >= this.#limits.maxUnauthenticated) return "busy";
    const mine = this.#pendingByAddress.get(key) ?? 0;
    if (mine >= this.#limits.maxUnauthenticatedPerAddress) return "too many from this address";
    this.#pending++;
    this.#pendingByAddress.set(key, mine + 1);
    return undefined;
  }

  /**
   * Milliseconds an admitted connection waits before its handshake starts: 0 unless the
   * address is slowed, else until its turn (which this call books).
   */
  delay(address: string): number {
    const entry = this.#failures.get(canonicalAddress(address));
    const now = this.#limits.now();
    if (!entry || !this.#slowed(entry, now)) return 0;
    const start = Math.max(now, entry.nextTurn);
    entry.nextTurn = start + this.#limits.intervalMs;
    return start - now;
  }

  /** The handshake ended (either way). */
  release(address: string): void {
    const key = canonicalAddress(address);
    this.#pending = Math.max(0, this.#pending - 1);
    const mine = (this.#pendingByAddress.get(key) ?? 1) - 1;
    if (mine <= 0) this.#pendingByAddress.delete(key);
    else this.#pendingByAddress.set(key, mine);
  }

  /**
   * Count a handshake that named a known key id and then failed (the server derived keys
   * for nothing). Returns true exactly when this failure starts slowing the address down
   * (so the caller logs once, not once per attempt).
   */
  recordKeyFailure(address: string): boolean {
    const key = canonicalAddress(address);
    const now = this.#limits.now();
    const entry = this.#failures.get(key) ?? { count: 0, last: 0, nextTurn: 0 };
    const wasSlowed = this.#slowed(entry, now);
    // Failures add up while each comes within LOCKOUT_SECONDS of the one before.
    if (now - entry.last > this.#limits.lockoutSeconds * 1000) entry.count = 0;
    entry.count++;
    entry.last = now;
    this.#failures.set(key, entry);
    if (this.#failures.size > 10_000) this.#prune(now);
    return !wasSlowed && this.#slowed(entry, now);
  }

  #slowed(entry: Failures, now: number): boolean {
    const limit = this.#limits.lockoutFailures;
    return limit > 0 && entry.count >= limit &&
      now - entry.last <= this.#limits.lockoutSeconds * 1000;
  }

  #prune(now: number): void {
    for (const [key, entry] of this.#failures) {
      if (now - entry.last > this.#limits.lockoutSeconds * 1000 && entry.nextTurn <= now) {
        this.#failures.delete(key);
      }
    }
  }
}
