/**
 * The HTTP/1.1 messages of the monitoring endpoint (lib/monitor/http_server.ts), as bytes:
 * where a request head ends, what it says, whether it carries the token, and the bytes
 * of a response with the headers every response has. No I/O here.
 *
 * Strict on purpose: an origin-form target (`/path?query`), HTTP/1.0 or 1.1, header
 * names that are tokens, no control characters, no obsolete line folding. Lines may end
 * in CRLF or a bare LF (RFC 9112 §2.2 lets a server accept either).
 *
 * @module
 */
import { createHash, timingSafeEqual } from "node:crypto";

/** A request the handler answers (method GET or HEAD, authorized when a token is set). */
export interface HttpRequest {
  method: string;
  /** The target's path as a WHATWG URL parses it: dot segments resolved, %-escapes kept. */
  path: string;
  query: URLSearchParams;
  headers: Headers;
  /** The client's IP address (no port). */
  remote: string;
}

/** An answer; Content-Type defaults to text/plain. */
export interface HttpResponse {
  status: number;
  headers?: Record<string, string>;
  body?: string | Uint8Array;
}

/** What a 401 answers with, so that a browser offers to log in (Basic). */
export const AUTH_CHALLENGE = { "WWW-Authenticate": 'Bearer realm="recon", Basic realm="recon"' };

const TOKEN_CHARS = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// deno-lint-ignore no-control-regex
const CONTROL_CHARS = /[\x00-\x08\x0a-\x1f\x7f]/;
const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  401: "Unauthorized",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  503: "Service Unavailable",
};
const encoder = new TextEncoder();

/**
 * The index just past the empty line that ends a request head in bytes[0, to), or -1.
 * Looks from `from` on (a caller that appends chunks passes where the last one began
 * less 3, so that a line end split between chunks is found).
 */
export function findHeadEnd(bytes: Uint8Array, from: number, to: number): number {
  for (let i = Math.max(from, 1); i < to; i++) {
    if (bytes[i] !== 0x0a) continue;
    if (bytes[i - 1] === 0x0a || (bytes[i - 1] === 0x0d && i >= 2 && bytes[i - 2] === 0x0a)) {
      return i + 1;
    }
  }
  return -1;
}

/**
 * The request in a complete head (up to and including its empty line), or why it is
 * not one, for a 400. Bytes are read as Latin-1, as HTTP/1.1 header values are.
 */
export function parseRequestHead(bytes: Uint8Array, remote: string): HttpRequest | string {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  const lines = text.split(/\r?\n/);
  if (lines.length < 3 || lines.pop() !== "" || lines.pop() !== "") {
    return "the request head does not end with an empty line";
  }
  const [method, target, version, extra] = (lines.shift() ?? "").split(" ");
  if (
    extra !== undefined || !TOKEN_CHARS.test(method) || !/^\/[\x21-\x7e]*$/.test(target ?? "") ||
    !/^HTTP\/1\.[01]$/.test(version)
  ) return "the request line is not `GET /path HTTP/1.1`";
  const headers = new Headers();
  for (const line of lines) {
    const colon = line.indexOf(":");
    const value = line.slice(colon + 1).trim();
    if (colon <= 0 || !TOKEN_CHARS.test(line.slice(0, colon)) || CONTROL_CHARS.test(value)) {
      return "a header line is not `Name: value`";
    }
    headers.append(line.slice(0, colon), value);
  }
  let url: URL;
  try {
    // The prefix keeps a target like `//host/x` a path, never an authority.
    url = new URL(`http://recon.invalid${target}`);
  } catch {
    return "the request target is not a valid path";
  }
  return { method, path: url.pathname, query: url.searchParams, headers, remote };
}

/** The digest {@link authorized} compares against. */
export function tokenDigest(token: string): Uint8Array {
  return sha256(encoder.encode(token));
}

/**
 * Whether an Authorization header carries the token: `Bearer TOKEN`, or `Basic` with
 * base64(`anything:TOKEN`) so that a browser can open the page. The token's UTF-8 bytes
 * are what must arrive (the header as bytes, or the Basic password's bytes).
 */
export function authorized(header: string | null, digest: Uint8Array): boolean {
  const match = /^(\S+) +(\S+) *$/.exec(header ?? "");
  if (!match) return false;
  const [, scheme, credentials] = match;
  let offered: string;
  if (/^bearer$/i.test(scheme)) offered = credentials;
  else if (/^basic$/i.test(scheme)) {
    let decoded: string;
    try {
      decoded = atob(credentials);
    } catch {
      return false;
    }
    const colon = decoded.indexOf(":");
    if (colon < 0) return false;
    offered = decoded.slice(colon + 1);
  } else return false;
  // Both strings hold one byte per character (parseRequestHead reads Latin-1, atob
  // returns bytes). Digests have one length, so comparing them takes the same time
  // whatever was offered and says nothing about the token's length.
  return timingSafeEqual(sha256(Uint8Array.from(offered, (char) => char.charCodeAt(0))), digest);
}

function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(createHash("sha256").update(bytes).digest());
}

/** A one-line text/plain response: `STATUS Reason: text`. */
export function plainResponse(
  status: number,
  text: string,
  headers: Record<string, string> = {},
): HttpResponse {
  return { status, headers, body: `${status} ${REASONS[status] ?? "Error"}: ${text}\n` };
}

/**
 * A response's bytes (the head only when `withBody` is false, as for HEAD), with
 * Content-Length, `Cache-Control: no-store`, `X-Content-Type-Options: nosniff` and
 * `Connection: close`, which the response's own headers cannot change. Throws a
 * TypeError or RangeError for a status outside 200–599 or a header that would break
 * the head (a CR or LF in a value: response splitting).
 */
export function encodeResponse(response: HttpResponse, withBody: boolean): Uint8Array {
  const { status } = response;
  if (!Number.isInteger(status) || status < 200 || status > 599) {
    throw new RangeError(`the handler answered status ${status}, not 200 to 599`);
  }
  const body = typeof response.body === "string"
    ? encoder.encode(response.body)
    : response.body ?? new Uint8Array();
  const fields = new Map([["content-type", "Content-Type: text/plain; charset=utf-8"]]);
  const fixed = {
    "Content-Length": String(body.length),
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    Connection: "close",
  };
  const all = [...Object.entries(response.headers ?? {}), ...Object.entries(fixed)];
  for (const [name, value] of all) {
    if (!TOKEN_CHARS.test(name) || !/^[\t\x20-\x7e]*$/.test(value)) {
      throw new TypeError(`the response header ${JSON.stringify(name)} is not valid`);
    }
    fields.set(name.toLowerCase(), `${name}: ${value}`);
  }
  const head = encoder.encode(
    `HTTP/1.1 ${status} ${REASONS[status] ?? ""}\r\n${[...fields.values()].join("\r\n")}\r\n\r\n`,
  );
  if (!withBody) return head;
  const bytes = new Uint8Array(head.length + body.length);
  bytes.set(head);
  bytes.set(body, head.length);
  return bytes;
}
