/**
 * A minimal HTTP/1.1 server for the monitoring endpoint (HTTP_LISTEN), over TCP or TLS.
 *
 * Deno.serve is not used: it keeps a connection whose client sends its headers slowly
 * open for over 70 s, with no setting to stop it. This one is small and strict, since
 * the port may face an untrusted network: one request per connection, GET and HEAD
 * only, no request body, a bounded request head that must arrive within a deadline, a
 * cap on open connections, an optional token compared in constant time, and refusals
 * logged with throttling so that a flood costs a few log lines a minute. The bytes of
 * requests and responses are in http_message.ts, deadlines and TLS in http_connection.ts.
 *
 * @module
 */
import type { SecureContext } from "node:tls";
import { ConfigError, errorMessage } from "../errors.ts";
import { type Logger, LogThrottle } from "../log.ts";
import { Connection, LATE, tlsContext, within } from "./http_connection.ts";
import {
  AUTH_CHALLENGE,
  authorized,
  encodeResponse,
  findHeadEnd,
  type HttpRequest,
  type HttpResponse,
  parseRequestHead,
  plainResponse as plain,
  tokenDigest,
} from "./http_message.ts";

export type { HttpRequest, HttpResponse };

/** Bounds on what one client may cost. */
export interface HttpLimits {
  /** Largest request head (request line and headers) in bytes; larger → 431. */
  maxHeaderBytes?: number;
  /** Time from accepting a connection until its request head is complete; later → 408. */
  headerTimeoutMs?: number;
  /** Connections served at once; one more is answered 503 and closed. */
  maxConnections?: number;
  /** Time for the handler to answer and the response to be written; a late answer → 503. */
  responseTimeoutMs?: number;
}

/** The limits used where {@link HttpServerOptions.limits} says nothing. */
export const DEFAULT_HTTP_LIMITS: Readonly<Required<HttpLimits>> = {
  maxHeaderBytes: 8192,
  headerTimeoutMs: 5000,
  maxConnections: 16,
  responseTimeoutMs: 10_000,
};

/** Options of {@link startHttpServer}. */
export interface HttpServerOptions {
  hostname: string;
  /** 0: any free port. */
  port: number;
  /** PEM text of the certificate chain and its key (the caller reads the files). */
  tls?: { cert: string; key: string };
  /** When set, every request needs `Authorization: Bearer TOKEN` or Basic with TOKEN as password. */
  token?: string;
  /** Answers a GET or HEAD (for HEAD its body is dropped); may throw (→ 500). */
  handler: (request: HttpRequest) => Promise<HttpResponse> | HttpResponse;
  /** Refusals (throttled) and handler failures go here; the token never does. */
  log: Logger;
  limits?: HttpLimits;
}

/** A running server. */
export interface HttpServer {
  readonly addr: Deno.NetAddr;
  /** `http://HOST:PORT/` or `https://…`. */
  readonly url: string;
  /** Stop accepting, close open connections, resolve when all are done. */
  close(): Promise<void>;
}

/** A refusal, or an answer when the handler used up its time, may take this long to write
 * (a TLS handshake included) before the connection is closed. */
const REFUSAL_WRITE_MS = 1000;
const PAGE_FAILED = "the page failed; the recon-server log says why";

/**
 * Listen and serve until closed. Throws a one-line ConfigError when it cannot listen or
 * cannot use the TLS certificate and key, a RangeError for a limit that is not a positive
 * integer, and a TypeError for an empty token.
 */
export function startHttpServer(options: HttpServerOptions): HttpServer {
  const limits = { ...DEFAULT_HTTP_LIMITS, ...options.limits };
  for (const [name, value] of Object.entries(limits)) {
    if (!Number.isInteger(value) || value <= 0) {
      throw new RangeError(`HTTP limit ${name} must be a positive integer, not ${value}`);
    }
  }
  if (options.token === "") throw new TypeError("the HTTP token must not be empty");
  const { hostname, port, tls } = options;
  let context: SecureContext | undefined;
  let listener: Deno.Listener;
  try {
    if (tls) context = tlsContext(tls.cert, tls.key);
    listener = Deno.listen({ hostname, port });
  } catch (error) {
    const why = errorMessage(error).replace(/\s+/g, " ");
    const what = tls ? "HTTPS" : "HTTP";
    throw new ConfigError(`cannot serve ${what} on ${hostname}:${port}: ${why}`, { cause: error });
  }
  return new MonitorHttpServer(listener, options, limits, context);
}

/** What to send back on a connection. */
interface Reply {
  response: HttpResponse;
  /** Answering HEAD: the head only. */
  head?: boolean;
  /** `METHOD /path`, for the log. */
  what?: string;
  /** Written by then, or the connection is closed (at least REFUSAL_WRITE_MS from now). */
  deadline?: number;
}

class MonitorHttpServer implements HttpServer {
  readonly addr: Deno.NetAddr;
  readonly url: string;
  #listener: Deno.Listener;
  #options: HttpServerOptions;
  #limits: Required<HttpLimits>;
  #tokenDigest?: Uint8Array;
  #tls?: SecureContext;
  #stopping = new AbortController();
  #throttle = new LogThrottle({ windowMs: 60_000, maxLines: 100 });
  #open = new Set<Connection>();
  #tasks = new Set<Promise<void>>();
  #serving = 0;
  #refusing = 0;
  #acceptLoop: Promise<void>;
  #closed?: Promise<void>;

  constructor(
    listener: Deno.Listener,
    options: HttpServerOptions,
    limits: Required<HttpLimits>,
    tls: SecureContext | undefined,
  ) {
    this.#listener = listener;
    this.#tls = tls;
    this.#options = options;
    this.#limits = limits;
    if (options.token !== undefined) this.#tokenDigest = tokenDigest(options.token);
    this.addr = listener.addr as Deno.NetAddr;
    const host = this.addr.hostname.includes(":") ? `[${this.addr.hostname}]` : this.addr.hostname;
    this.url = `${options.tls ? "https" : "http"}://${host}:${this.addr.port}/`;
    this.#acceptLoop = this.#accept();
  }

  close(): Promise<void> {
    return this.#closed ??= (async () => {
      this.#stopping.abort();
      try {
        this.#listener.close();
      } catch { /* closed */ }
      await this.#acceptLoop;
      for (const connection of this.#open) connection.close();
      await Promise.all(this.#tasks);
    })();
  }

  async #accept(): Promise<void> {
    const { maxConnections } = this.#limits;
    while (!this.#stopping.signal.aborted) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#stopping.signal.aborted || error instanceof Deno.errors.BadResource) return;
        this.#note("error", "accept", "", `accept failed: ${errorMessage(error)}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      const remote = (conn.remoteAddr as Deno.NetAddr).hostname;
      const refused = this.#serving >= maxConnections;
      if (refused && this.#refusing >= maxConnections) {
        // A flood: even a 503 costs a write (maybe a TLS handshake) each, so just close.
        conn.close();
        this.#note("warn", "503", remote, `closed a connection: ${maxConnections} are open`);
        continue;
      }
      const connection = new Connection(conn, this.#tls, this.#stopping.signal);
      if (refused) this.#refusing++;
      else this.#serving++;
      this.#open.add(connection);
      const task: Promise<void> = this.#serve(connection, remote, refused)
        .catch((error) => this.#note("error", "task", remote, errorMessage(error)))
        .finally(() => {
          if (refused) this.#refusing--;
          else this.#serving--;
          this.#open.delete(connection);
          this.#tasks.delete(task);
        });
      this.#tasks.add(task);
    }
  }

  async #serve(connection: Connection, remote: string, refused: boolean): Promise<void> {
    const { maxConnections } = this.#limits;
    const busy = `more than ${maxConnections} connections are open; try again shortly`;
    const reply = refused
      ? this.#refused(remote, { response: plain(503, busy, { "Retry-After": "1" }) })
      : await this.#handle(connection, remote);
    if (!reply || this.#stopping.signal.aborted) {
      if (connection.tlsError && !this.#stopping.signal.aborted) {
        this.#note(
          "warn",
          "tls",
          remote,
          `TLS handshake failed: ${errorMessage(connection.tlsError)} ` +
            "(a plain http:// client on this https endpoint, or one that does not trust HTTP_TLS_CERT?)",
        );
      }
      return await connection.close();
    }
    let bytes: Uint8Array;
    try {
      bytes = encodeResponse(reply.response, !reply.head);
    } catch (error) {
      this.#note("error", "500", remote, `${reply.what}: ${errorMessage(error)}`);
      bytes = encodeResponse(plain(500, PAGE_FAILED), !reply.head);
    }
    await connection.write(bytes, Math.max(reply.deadline ?? 0, Date.now() + REFUSAL_WRITE_MS));
    await connection.finish();
  }

  /** Read a request head, check it, ask the handler; undefined when the client left. */
  async #handle(connection: Connection, remote: string): Promise<Reply | undefined> {
    const { headerTimeoutMs, maxHeaderBytes, responseTimeoutMs } = this.#limits;
    const headDeadline = Date.now() + headerTimeoutMs;
    const bytes = new Uint8Array(maxHeaderBytes);
    let filled = 0;
    let end = -1;
    while (end < 0) {
      const chunk = await connection.read(headDeadline);
      if (chunk === null) return undefined;
      if (chunk === LATE) {
        const text = `the request head did not arrive within ${headerTimeoutMs} ms`;
        return this.#refused(remote, { response: plain(408, text) });
      }
      const take = Math.min(chunk.length, maxHeaderBytes - filled);
      bytes.set(chunk.subarray(0, take), filled);
      end = findHeadEnd(bytes, Math.max(0, filled - 3), filled + take);
      filled += take;
      if (end < 0 && filled === maxHeaderBytes) {
        const text = `the request head is larger than ${maxHeaderBytes} bytes`;
        return this.#refused(remote, { response: plain(431, text) });
      }
    }
    const request = parseRequestHead(bytes.subarray(0, end), remote);
    if (typeof request === "string") {
      return this.#refused(remote, { response: plain(400, request) });
    }
    const head = request.method === "HEAD";
    const what = `${request.method} ${request.path.slice(0, 100)}`;
    const refusal = this.#policy(request);
    if (refusal) return this.#refused(remote, { response: refusal, head, what });
    const deadline = Date.now() + responseTimeoutMs;
    const outcome = await within(
      Promise.resolve().then(() => this.#options.handler(request)).then(
        (response) => ({ response }),
        (error: unknown) => ({ error }),
      ),
      deadline,
      this.#stopping.signal,
    );
    if (outcome === LATE) {
      if (this.#stopping.signal.aborted) return undefined;
      this.#note("warn", "late", remote, `${what}: no answer within ${responseTimeoutMs} ms (503)`);
      const text = `the answer took longer than ${responseTimeoutMs} ms; try again`;
      return { response: plain(503, text), head, what };
    }
    if ("error" in outcome) {
      this.#note("error", "500", remote, `${what}: ${errorMessage(outcome.error)}`);
      return { response: plain(500, PAGE_FAILED), head, what };
    }
    return { response: outcome.response, head, what, deadline };
  }

  /** The refusal a well-formed request gets (401, 405, or 400 for a body), if any. */
  #policy({ method, headers }: HttpRequest): HttpResponse | undefined {
    if (this.#tokenDigest && !authorized(headers.get("authorization"), this.#tokenDigest)) {
      return plain(401, "send the HTTP_TOKEN as `Authorization: Bearer TOKEN`", AUTH_CHALLENGE);
    }
    if (method !== "GET" && method !== "HEAD") {
      return plain(405, `${method} is not served, only GET and HEAD`, { Allow: "GET, HEAD" });
    }
    if (headers.has("transfer-encoding") || !/^0?$/.test(headers.get("content-length") ?? "")) {
      return plain(400, "a request body is not accepted (GET and HEAD have none)");
    }
  }

  /** Log a refusal (401 and 503 as warnings, the rest for debugging) and return it. */
  #refused(remote: string, reply: Reply): Reply {
    const { status, body } = reply.response;
    const level = status === 401 || status === 503 ? "warn" : "debug";
    this.#note(level, String(status), remote, `refused ${reply.what ?? "a request"}: ${body}`);
    return reply;
  }

  /** One line per kind of event and address a minute, 100 a minute in all (LogThrottle). */
  #note(level: "debug" | "warn" | "error", kind: string, remote: string, message: string): void {
    const verdict = this.#throttle.pass(`${kind} ${remote}`);
    if (verdict === undefined) return;
    if (verdict === "cap") {
      this.#options.log.warn(
        "http: over 100 refusals this minute; not logging more until it is over",
      );
      return;
    }
    const held = verdict.held > 0 ? ` (and ${verdict.held} more like it since its last line)` : "";
    this.#options.log[level](`http: ${remote ? `${remote}: ` : ""}${message.trim()}${held}`);
  }
}
