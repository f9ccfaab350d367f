/**
 * Who may talk to the server, before any handshake (docs/PROTOCOL.md §8):
 * TRUSTEDIPS matching (IPv4, IPv6 and IPv4-mapped IPv6), caps on unauthenticated
 * connections overall and per address, and a temporary lockout for an address that
 * keeps failing the handshake (seed 003's account lockout, applied to addresses).
 *
 * @module
 */
import { isIP } from "node:net";

/** Canonical form of an address: IPv4-mapped IPv6 becomes IPv4, IPv6 lower-cased and expanded. */
export function canonicalAddress(address: string): string {
  let text = address.trim().toLowerCase();
  if (text.startsWith("[") && text.endsWith("]")) text = text.slice(1, -1);
  const zone = text.indexOf("%");
  if (zone >= 0) text = text.slice(0, zone);
  if (isIP(text) === 6) return expandIPv6(text);
  return text;
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

/** A TRUSTEDIPS list. Empty means every address may connect. */
export class TrustedAddresses {
  #allowed: Set<string>;

  /** Throws TypeError naming an entry that is not an IP address. */
  constructor(entries: readonly string[]) {
    this.#allowed = new Set();
    for (const entry of entries) {
      const canonical = canonicalAddress(entry);
      if (isIP(canonical) === 0) {
        throw new TypeError(`TRUSTEDIPS entry ${JSON.stringify(entry)} is not an IP address`);
      }
      this.#allowed.add(canonical);
    }
  }

  get restricted(): boolean {
    return this.#allowed.size > 0;
  }

  allows(address: string): boolean {
    return this.#allowed.size === 0 || this.#allowed.has(canonicalAddress(address));
  }
}

/** Limits for {@link AdmissionControl}. */
export interface AdmissionLimits {
  maxUnauthenticated: number;
  maxUnauthenticatedPerAddress: number;
  lockoutFailures: number;
  lockoutSeconds: number;
  now?: () => number;
}

/** Why a connection is not admitted, or undefined. */
export type AdmissionRefusal = "busy" | "too many from this address" | "locked out";

/**
 * Counts connections that have not finished the handshake and handshake failures per
 * address. `admit()` before the handshake, `release()` after it either way,
 * `recordFailure()` / `recordSuccess()` with the outcome.
 */
export class AdmissionControl {
  #limits: Required<AdmissionLimits>;
  #pending = 0;
  #pendingByAddress = new Map<string, number>();
  #failures = new Map<string, { count: number; lockedUntil: number; last: number }>();

  constructor(limits: AdmissionLimits) {
    this.#limits = { now: () => Date.now(), ...limits };
  }

  /** Admit a new unauthenticated connection, or say why not. */
  admit(address: string): AdmissionRefusal | undefined {
    const key = canonicalAddress(address);
    const failure = this.#failures.get(key);
    if (failure && failure.lockedUntil > this.#limits.now()) return "locked out";
    if (this.#pending >= this.#limits.maxUnauthenticated) return "busy";
    const mine = this.#pendingByAddress.get(key) ?? 0;
    if (mine >= this.#limits.maxUnauthenticatedPerAddress) return "too many from this address";
    this.#pending++;
    this.#pendingByAddress.set(key, mine + 1);
    return undefined;
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
   * Count a failed handshake. Returns true exactly when this failure starts a lockout
   * (so the caller logs once per lockout, not once per attempt).
   */
  recordFailure(address: string): boolean {
    const key = canonicalAddress(address);
    const now = this.#limits.now();
    const entry = this.#failures.get(key) ?? { count: 0, lockedUntil: 0, last: 0 };
    const window = this.#limits.lockoutSeconds * 1000;
    // Failures count within LOCKOUT_SECONDS of each other; an old lockout is over.
    if ((entry.lockedUntil && entry.lockedUntil <= now) || now - entry.last > window) {
      entry.count = 0;
      entry.lockedUntil = 0;
    }
    entry.last = now;
    entry.count++;
    let started = false;
    // LOCKOUT_FAILURES = 0 means never lock out.
    const limit = this.#limits.lockoutFailures;
    if (limit > 0 && entry.count >= limit && entry.lockedUntil <= now) {
      entry.lockedUntil = now + this.#limits.lockoutSeconds * 1000;
      started = true;
    }
    this.#failures.set(key, entry);
    if (this.#failures.size > 10_000) this.#prune(now);
    return started;
  }

  /** A good handshake clears the address's failures. */
  recordSuccess(address: string): void {
    this.#failures.delete(canonicalAddress(address));
  }

  #prune(now: number): void {
    for (const [key, entry] of this.#failures) {
      if (entry.lockedUntil <= now && now - entry.last > this.#limits.lockoutSeconds * 1000) {
        this.#failures.delete(key);
      }
    }
  }
}
