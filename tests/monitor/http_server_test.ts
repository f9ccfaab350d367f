/**
 * Tests for lib/monitor/http_server.ts over real sockets on 127.0.0.1: answers and the
 * headers every answer carries, HEAD, 404 from the handler, 405, malformed requests,
 * request bodies, 431 for an oversized head (at the exact limit too), 408 for a head that
 * is slow or trickles in, the connection cap, the token (Bearer, Basic, wrong, missing;
 * never logged; a flood logged once), handler failures and slowness, TLS with a
 * self-signed certificate made by openssl, listen failures, and close() with hung clients
 * and a hung handler. Waits are bounded and generous; nothing asserts speed.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { ConfigError } from "../../lib/errors.ts";
import {
  DEFAULT_HTTP_LIMITS,
  type HttpRequest,
  type HttpResponse,
  type HttpServer,
  type HttpServerOptions,
  startHttpServer,
} from "../../lib/monitor/http_server.ts";
import { memoryLog } from "../support/memory_log.ts";

const TOKEN = "monitor-token-0123456789abcdef";
/** Longest any single step may take before the test fails instead of hanging. */
const STEP_MS = 20_000;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** `promise`, or a failure naming `what` after `ms`: a hang fails the test. */
async function bounded<T>(promise: Promise<T>, what: string, ms = STEP_MS): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

interface TestServer {
  server: HttpServer;
  lines: string[];
  requests: HttpRequest[];
}

/** A server on 127.0.0.1:0 whose handler answers `/` and 404s the rest, unless overridden. */
function serve(options: Partial<HttpServerOptions> = {}): TestServer {
  const { lines, log } = memoryLog();
  const requests: HttpRequest[] = [];
  const server = startHttpServer({
    hostname: "127.0.0.1",
    port: 0,
    log,
    handler: (request): HttpResponse => {
      requests.push(request);
      if (request.path === "/") return { status: 200, body: "hello\n" };
      return { status: 404, body: `no page ${request.path}\n` };
    },
    ...options,
  });
  return { server, lines, requests };
}

async function connect(server: HttpServer): Promise<Deno.TcpConn> {
  return await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
}

async function writeAll(conn: Deno.Conn, data: string | Uint8Array): Promise<void> {
  const bytes = typeof data === "string" ? encoder.encode(data) : data;
  for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
}

/** Everything the server sends until it closes (a reset fails the test). */
async function readToEnd(conn: Deno.Conn): Promise<string> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(16_384);
  while (true) {
    const count = await bounded(conn.read(buffer), "reading the response");
    if (count === null) break;
    chunks.push(buffer.slice(0, count));
  }
  return decoder.decode(new Uint8Array(chunks.flatMap((chunk) => [...chunk])));
}

/** Send `request` on a new connection and return all the server answers. */
async function exchange(server: HttpServer, request: string | Uint8Array): Promise<string> {
  const conn = await connect(server);
  try {
    await writeAll(conn, request);
    return await readToEnd(conn);
  } finally {
    conn.close();
  }
}

/** A raw response's status, headers and body. */
function parseResponse(raw: string): { status: number; headers: Headers; body: string } {
  const end = raw.indexOf("\r\n\r\n");
  assert.ok(end > 0, `no response head in ${JSON.stringify(raw)}`);
  const [statusLine, ...fields] = raw.slice(0, end).split("\r\n");
  const match = /^HTTP\/1\.1 (\d{3}) /.exec(statusLine);
  assert.ok(match, `bad status line ${JSON.stringify(statusLine)}`);
  const headers = new Headers(fields.map((line) => {
    const colon = line.indexOf(":");
    return [line.slice(0, colon), line.slice(colon + 1).trim()] as [string, string];
  }));
  return { status: Number(match[1]), headers, body: raw.slice(end + 4) };
}

async function get(
  url: string,
  init: RequestInit & { client?: Deno.HttpClient } = {},
): Promise<[Response, string]> {
  const response = await bounded(fetch(url, init), `GET ${url}`);
  return [response, await response.text()];
}

/** Whether the peer ended the connection (end of stream or a reset) within STEP_MS. */
async function closedByPeer(conn: Deno.Conn): Promise<boolean> {
  const buffer = new Uint8Array(4096);
  try {
    while (await bounded(conn.read(buffer), "waiting for the server to close") !== null) {
      // a response (a 408, say) before the end
    }
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.ConnectionReset) return true;
    throw error;
  }
}

function assertEveryResponseHeader(headers: Headers, bodyLength: number): void {
  assert.equal(headers.get("content-length"), String(bodyLength));
  assert.equal(headers.get("cache-control"), "no-store");
  assert.equal(headers.get("x-content-type-options"), "nosniff");
  assert.equal(headers.get("connection"), "close");
}

// ---------------------------------------------------------------------------
// Answers

Deno.test("startHttpServer() answers a GET with the handler's response and the fixed headers", async () => {
  const { server, requests } = serve();
  try {
    assert.equal(server.url, `http://127.0.0.1:${server.addr.port}/`);
    const [response, body] = await get(server.url, { headers: { "X-Probe": "yes" } });
    assert.equal(response.status, 200);
    assert.equal(body, "hello\n");
    assert.equal(response.headers.get("content-type"), "text/plain; charset=utf-8");
    assertEveryResponseHeader(response.headers, 6);
    assert.equal(requests.length, 1);
    assert.equal(requests[0].method, "GET");
    assert.equal(requests[0].path, "/");
    assert.equal(requests[0].remote, "127.0.0.1");
    assert.equal(requests[0].headers.get("x-probe"), "yes");
  } finally {
    await server.close();
  }
});

Deno.test("startHttpServer() gives the handler the resolved path and the query", async () => {
  const { server, requests } = serve();
  try {
    const raw = await exchange(server, "GET /a/../metrics?x=1&name=two%20words HTTP/1.1\r\n\r\n");
    assert.equal(parseResponse(raw).status, 404);
    assert.equal(requests[0].path, "/metrics");
    assert.equal(requests[0].query.get("x"), "1");
    assert.equal(requests[0].query.get("name"), "two words");
    // A target like //host/x stays a path.
    await exchange(server, "GET //evil.example/x HTTP/1.1\r\n\r\n");
    assert.equal(requests[1].path, "//evil.example/x");
  } finally {
    await server.close();
  }
});

Deno.test("startHttpServer() passes the handler's 404 on", async () => {
  const { server } = serve();
  try {
    const [response, body] = await get(`${server.url}missing`);
    assert.equal(response.status, 404);
    assert.equal(body, "no page /missing\n");
    assertEveryResponseHeader(response.headers, body.length);
  } finally {
    await server.close();
  }
});

Deno.test("startHttpServer() keeps the handler's Content-Type and a byte body, but not its Content-Length or Cache-Control", async () => {
  const { server } = serve({
    handler: () => ({
      status: 200,
      headers: {
        "Content-Type": "application/octet-stream",
        "content-length": "999",
        "Cache-Control": "max-age=3600",
        "X-Extra": "kept",
      },
      body: new Uint8Array([1, 2, 3]),
    }),
  });
  try {
    const response = await bounded(fetch(server.url), "GET");
    const body = new Uint8Array(await response.arrayBuffer());
    assert.deepEqual([...body], [1, 2, 3]);
    assert.equal(response.headers.get("content-type"), "application/octet-stream");
    assert.equal(response.headers.get("x-extra"), "kept");
    assertEveryResponseHeader(response.headers, 3);
  } finally {
    await server.close();
  }
});

Deno.test("startHttpServer() answers HEAD with the head only, with the GET's Content-Length", async () => {
  const { server } = serve();
  try {
    const raw = await exchange(server, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    const { status, headers, body } = parseResponse(raw);
    assert.equal(status, 200);
    assert.equal(headers.get("content-length"), "6");
    assert.equal(body, "");
  } finally {
    await server.close();
  }
});

Deno.test("startHttpServer() accepts a head whose lines end in a bare LF", async () => {
  const { server } = serve();
  try {
    const raw = await exchange(server, "GET / HTTP/1.0\nHost: x\n\n");
    assert.equal(parseResponse(raw).status, 200);
  } finally {
    await server.close();
  }
});

// ---------------------------------------------------------------------------
// Refusals

Deno.test("startHttpServer() answers other methods 405 with Allow, without asking the handler", async () => {
  const { server, requests } = serve();
  try {
    for (const method of ["POST", "PUT", "DELETE", "OPTIONS", "TRACE", "get"]) {
      const raw = await exchange(server, `${method} / HTTP/1.1\r\nContent-Length: 0\r\n\r\n`);
      const { status, headers, body } = parseResponse(raw);
      assert.equal(status, 405, method);
      assert.equal(headers.get("allow"), "GET, HEAD");
      assert.match(body, /^405 Method Not Allowed: .*only GET and HEAD\n$/);
      assertEveryResponseHeader(headers, encoder.encode(body).length);
    }
    assert.equal(requests.length, 0);
  } finally {
    await server.close();
  }
});

const MALFORMED: [string, string][] = [
  ["garbage", "GARBAGE\r\n\r\n"],
  ["an empty request line", "\r\n\r\n"],
  ["HTTP/2.0", "GET / HTTP/2.0\r\n\r\n"],
  ["no version", "GET /\r\n\r\n"],
  ["an absolute-form target", "GET http://example.com/ HTTP/1.1\r\n\r\n"],
  ["an asterisk target", "OPTIONS * HTTP/1.1\r\n\r\n"],
  ["two spaces", "GET  / HTTP/1.1\r\n\r\n"],
  ["a fourth word", "GET / HTTP/1.1 extra\r\n\r\n"],
  ["a tab in the target", "GET /a\tb HTTP/1.1\r\n\r\n"],
  ["a header without a colon", "GET / HTTP/1.1\r\nNoColon\r\n\r\n"],
  ["a space before the colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n"],
  ["an empty header name", "GET / HTTP/1.1\r\n: x\r\n\r\n"],
  ["a folded header line", "GET / HTTP/1.1\r\nX-A: 1\r\n  folded\r\n\r\n"],
  ["a NUL in a header value", "GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n"],
  ["a bare CR in a header value", "GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n"],
  ["a request body", "GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"],
  ["a bad Content-Length", "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"],
  ["two Content-Lengths", "GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"],
  ["a chunked body", "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
];

Deno.test("startHttpServer() answers 400 to a malformed request and never asks the handler", async () => {
  const { server, requests, lines } = serve();
  try {
    for (const [name, request] of MALFORMED) {
      const { status, body } = parseResponse(await exchange(server, request));
      assert.equal(status, 400, name);
      assert.match(body, /^400 Bad Request: [^\n]+\n$/, name);
    }
    assert.equal(requests.length, 0);
    assert.ok(
      lines.some((line) => line.startsWith("debug http: 127.0.0.1: refused")),
      lines.join("\n"),
    );
  } finally {
    await server.close();
  }
});

Deno.test("startHttpServer() accepts a head of exactly maxHeaderBytes and answers 431 to one byte more", async () => {
  const maxHeaderBytes = 1024;
  const { server, requests } = serve({ limits: { maxHeaderBytes } });
  const headOf = (size: number) => {
    const start = "GET / HTTP/1.1\r\nX-Pad: ";
    return `${start}${"a".repeat(size - start.length - 4)}\r\n\r\n`;
  };
  try {
    assert.equal(headOf(maxHeaderBytes).length, maxHeaderBytes);
    assert.equal(parseResponse(await exchange(server, headOf(maxHeaderBytes))).status, 200);
    const { status, body } = parseResponse(await exchange(server, headOf(maxHeaderBytes + 1)));
    assert.equal(status, 431);
    assert.equal(
      body,
      "431 Request Header Fields Too Large: the request head is larger than 1024 bytes\n",
    );
    assert.equal(requests.length, 1);
  } finally {
    await server.close();
  }
});

Deno.test("startHttpServer() answers 431 to a 20 KB head with the default limits", async () => {
  const { server } = serve();
  try {
    assert.equal(DEFAULT_HTTP_LIMITS.maxHeaderBytes, 8192);
    const request = `GET / HTTP/1.1\r\nX-Big: ${"b".repeat(20_000)}\r\n\r\n`;
    assert.equal(parseResponse(await exchange(server, request)).status, 431);
  } finally {
    await server.close();
  }
});

Deno.test("startHttpServer() answers 408 when the head is not complete within headerTimeoutMs", async () => {
  const { server, lines, requests } = serve({ limits: { headerTimeoutMs: 300 } });
  try {
    // Part of a head, then nothing.
    let { status, body } = parseResponse(await exchange(server, "GET / HTTP/1.1\r\nHost: x\r\n"));
    assert.equal(status, 408);
    assert.equal(body, "408 Request Timeout: the request head did not arrive within 300 ms\n");
    // Nothing at all.
    const conn = await connect(server);
    try {
      ({ status } = parseResponse(await readToEnd(conn)));
      assert.equal(status, 408);
    } finally {
      conn.close();
    }
    assert.equal(requests.length, 0);
    assert.ok(lines.some((line) => /^debug http: 127\.0\.0\.1: refused .*408/.test(line)));
  } finally {
    await server.close();
  }
});

Deno.test("startHttpServer() answers 408 to a head that trickles in: the deadline is for the whole head", async () => {
  const { server } = serve({ limits: { headerTimeoutMs: 500 } });
  const conn = await connect(server);
  let trickling = true;
  // One byte every 50 ms: each read is quick, but the head would take 400 s to fill 8 KiB.
  const trickle = (async () => {
    await writeAll(conn, "GET / HTTP/1.1\r\nX-Slow: ");
    while (trickling) {
      await writeAll(conn, "a");
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })().catch(() => {/* the server closed: writing fails */});
  try {
    assert.equal(parseResponse(await readToEnd(conn)).status, 408);
  } finally {
    trickling = false;
    await trickle;
    conn.close();
    await server.close();
  }
});

Deno.test("startHttpServer() serves a client while another sends its head slowly", async () => {
  const { server } = serve({ limits: { headerTimeoutMs: 60_000 } });
  const slow = await connect(server);
  try {
    await writeAll(slow, "GET / HTTP/1.1\r\nHo");
    for (let i = 0; i < 3; i++) {
      const [response, body] = await get(server.url);
      assert.equal(response.status, 200);
      assert.equal(body, "hello\n");
    }
    // The slow client is still waited for: it finishes its head and gets its answer.
    await writeAll(slow, "st: x\r\n\r\n");
    assert.equal(parseResponse(await readToEnd(slow)).status, 200);
  } finally {
    slow.close();
    await server.close();
  }
});

Deno.test("startHttpServer() answers 503 and closes when maxConnections are open, and serves again once one closes", async () => {
  const { server, lines } = serve({ limits: { maxConnections: 2, headerTimeoutMs: 60_000 } });
  const idle = [await connect(server), await connect(server)];
  try {
    // Accepted in order: the two idle connections are counted before this one.
    const { status, headers, body } = parseResponse(
      await exchange(server, "GET / HTTP/1.1\r\n\r\n"),
    );
    assert.equal(status, 503);
    assert.equal(headers.get("retry-after"), "1");
    assert.equal(
      body,
      "503 Service Unavailable: more than 2 connections are open; try again shortly\n",
    );
    assert.ok(lines.some((line) => /^warn http: 127\.0\.0\.1: refused .*503/.test(line)));
    idle.pop()!.close();
    // The server notices the close on its own time: ask until it answers (bounded).
    const deadline = Date.now() + STEP_MS;
    let answered = 0;
    while (answered !== 200 && Date.now() < deadline) {
      answered = parseResponse(await exchange(server, "GET / HTTP/1.1\r\n\r\n")).status;
      if (answered !== 200) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(answered, 200);
  } finally {
    for (const conn of idle) conn.close();
    await server.close();
  }
});

// ---------------------------------------------------------------------------
// Token

Deno.test("startHttpServer() with a token refuses a request without it or with a wrong one", async () => {
  const { server, requests, lines } = serve({ token: TOKEN });
  const basic = (credentials: string) => `Basic ${btoa(credentials)}`;
  const refused = [
    undefined,
    "",
    `Bearer ${TOKEN}x`,
    `Bearer ${TOKEN.slice(0, -1)}`,
    `Bearer`,
    `Bearer ${TOKEN} extra`,
    `Token ${TOKEN}`,
    TOKEN,
    basic(`${TOKEN}:wrong`),
    basic(TOKEN),
    basic(`user:${TOKEN}x`),
    "Basic !!!not-base64!!!",
  ];
  try {
    for (const authorization of refused) {
      const headers: Record<string, string> = authorization === undefined
        ? {}
        : { Authorization: authorization };
      const [response, body] = await get(server.url, { headers });
      assert.equal(response.status, 401, String(authorization));
      assert.equal(
        response.headers.get("www-authenticate"),
        'Bearer realm="recon", Basic realm="recon"',
      );
      assert.match(body, /^401 Unauthorized: [^\n]+\n$/);
      assertEveryResponseHeader(response.headers, body.length);
    }
    // The token is checked before the method: a stranger learns nothing else.
    const { status } = parseResponse(await exchange(server, "POST / HTTP/1.1\r\n\r\n"));
    assert.equal(status, 401);
    assert.equal(requests.length, 0);
    assert.ok(!lines.join("\n").includes(TOKEN.slice(0, 12)), lines.join("\n"));
  } finally {
    await server.close();
  }
});

Deno.test("startHttpServer() with a token serves Bearer TOKEN and Basic with TOKEN as the password", async () => {
  const { server, lines } = serve({ token: TOKEN });
  try {
    for (
      const authorization of [
        `Bearer ${TOKEN}`,
        `bearer ${TOKEN}`,
        `Basic ${btoa(`prometheus:${TOKEN}`)}`,
        `Basic ${btoa(`:${TOKEN}`)}`,
        `basic ${btoa(`any:${TOKEN}`)}`,
      ]
    ) {
      const [response, body] = await get(server.url, { headers: { Authorization: authorization } });
      assert.equal(response.status, 200, authorization);
      assert.equal(body, "hello\n");
    }
    // A token containing a colon still works as a Basic password (split at the first one).
    const colon = serve({ token: "abc:def:0123456789" });
    try {
      const headers = { Authorization: `Basic ${btoa("user:abc:def:0123456789")}` };
      assert.equal((await get(colon.server.url, { headers }))[0].status, 200);
    } finally {
      await colon.server.close();
    }
    assert.ok(!lines.join("\n").includes(TOKEN.slice(0, 12)));
  } finally {
    await server.close();
  }
});

Deno.test("startHttpServer() logs a flood of refused requests a few times, not once each", async () => {
  const { server, lines } = serve({ token: TOKEN });
  try {
    for (let i = 0; i < 30; i++) {
      const headers = { Authorization: `Bearer wrong-${i}` };
      assert.equal((await get(server.url, { headers }))[0].status, 401);
    }
    const warnings = lines.filter((line) => line.includes("401"));
    // One line a minute per address; two if the loop happened to cross a minute.
    assert.ok(warnings.length >= 1 && warnings.length <= 2, lines.join("\n"));
    assert.match(warnings[0], /^warn http: 127\.0\.0\.1: refused GET \/: 401 Unauthorized/);
    assert.ok(!lines.join("\n").includes("wrong-"), lines.join("\n"));
  } finally {
    await server.close();
  }
});

// ---------------------------------------------------------------------------
// Handler failures

Deno.test("startHttpServer() answers 500 in one line when the handler fails, and logs why", async () => {
  const failures: [string, () => HttpResponse | Promise<HttpResponse>][] = [
    ["throws", () => {
      throw new Error("store closed\nsecond line");
    }],
    ["rejects", () => Promise.reject(new Error("render failed"))],
    ["splits the head", () => ({ status: 200, headers: { "X-A": "a\r\nSet-Cookie: x=1" } })],
    ["bad header name", () => ({ status: 200, headers: { "Bad Name": "x" } })],
    ["bad status", () => ({ status: 99 })],
  ];
  for (const [name, handler] of failures) {
    const { server, lines } = serve({ handler });
    try {
      const [response, body] = await get(server.url);
      assert.equal(response.status, 500, name);
      assert.equal(
        body,
        "500 Internal Server Error: the page failed; the recon-server log says why\n",
      );
      assert.ok(!response.headers.has("set-cookie"));
      assertEveryResponseHeader(response.headers, body.length);
      assert.ok(lines.some((line) => line.startsWith("error http: 127.0.0.1: GET /: ")), name);
    } finally {
      await server.close();
    }
  }
});

Deno.test("startHttpServer() answers 503 when the handler takes longer than responseTimeoutMs", async () => {
  let release = () => {};
  const hung = new Promise<HttpResponse>((resolve) => {
    release = () => resolve({ status: 200, body: "late\n" });
  });
  const { server, lines } = serve({ handler: () => hung, limits: { responseTimeoutMs: 200 } });
  try {
    const [response, body] = await get(server.url);
    assert.equal(response.status, 503);
    assert.equal(body, "503 Service Unavailable: the answer took longer than 200 ms; try again\n");
    assert.ok(lines.some((line) => /^warn http: .*no answer within 200 ms/.test(line)));
  } finally {
    release();
    await server.close();
  }
});

// ---------------------------------------------------------------------------
// TLS

/** A self-signed certificate for 127.0.0.1 and its key, made by openssl in a temporary directory. */
async function selfSigned(): Promise<{ cert: string; key: string }> {
  const dir = await Deno.makeTempDir({ prefix: "recon-http-tls-" });
  try {
    const output = await new Deno.Command("openssl", {
      args: [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost",
        // A leaf, not a CA: rustls refuses a CA certificate as the server's own.
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-addext",
        "extendedKeyUsage=serverAuth",
        "-keyout",
        path.join(dir, "key.pem"),
        "-out",
        path.join(dir, "cert.pem"),
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.ok(output.success, `openssl failed: ${decoder.decode(output.stderr)}`);
    return {
      cert: await Deno.readTextFile(path.join(dir, "cert.pem")),
      key: await Deno.readTextFile(path.join(dir, "key.pem")),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("startHttpServer() with tls serves HTTPS with a self-signed certificate", async () => {
  const tls = await selfSigned();
  const { server } = serve({ tls, token: TOKEN });
  const client = Deno.createHttpClient({ caCerts: [tls.cert] });
  try {
    assert.equal(server.url, `https://127.0.0.1:${server.addr.port}/`);
    const headers = { Authorization: `Bearer ${TOKEN}` };
    const [response, body] = await get(server.url, { client, headers });
    assert.equal(response.status, 200);
    assert.equal(body, "hello\n");
    assertEveryResponseHeader(response.headers, 6);
    const [missing] = await get(`${server.url}nope`, { client, headers });
    assert.equal(missing.status, 404);
  } finally {
    client.close();
    await server.close();
  }
});

Deno.test("startHttpServer() with tls serves others while a client never starts its handshake, then drops it", async () => {
  const tls = await selfSigned();
  const { server } = serve({ tls, limits: { headerTimeoutMs: 1000 } });
  const client = Deno.createHttpClient({ caCerts: [tls.cert] });
  const silent = await connect(server);
  try {
    const [response] = await get(server.url, { client });
    assert.equal(response.status, 200);
    assert.ok(await closedByPeer(silent));
  } finally {
    silent.close();
    client.close();
    await server.close();
  }
});

Deno.test("startHttpServer() with tls answers 408, 431 and 401 over TLS", async () => {
  const tls = await selfSigned();
  const { server } = serve({ tls, token: TOKEN, limits: { headerTimeoutMs: 500 } });
  const exchangeTls = async (request: string) => {
    const conn = await Deno.connectTls({
      hostname: "127.0.0.1",
      port: server.addr.port,
      caCerts: [tls.cert],
    });
    try {
      await writeAll(conn, request);
      return parseResponse(await readToEnd(conn));
    } finally {
      conn.close();
    }
  };
  try {
    assert.equal((await exchangeTls("GET / HTTP/1.1\r\nHost: x\r\n")).status, 408);
    const big = `GET / HTTP/1.1\r\nX-Big: ${"b".repeat(20_000)}\r\n\r\n`;
    assert.equal((await exchangeTls(big)).status, 431);
    const refused = await exchangeTls("GET / HTTP/1.1\r\n\r\n");
    assert.equal(refused.status, 401);
    assert.ok(refused.headers.has("www-authenticate"));
    const ok = await exchangeTls(`HEAD / HTTP/1.1\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`);
    assert.equal(ok.status, 200);
    assert.equal(ok.body, "");
  } finally {
    await server.close();
  }
});

Deno.test("startHttpServer() with tls closes a plain-HTTP client and goes on serving", async () => {
  const tls = await selfSigned();
  const { server, requests } = serve({ tls });
  const client = Deno.createHttpClient({ caCerts: [tls.cert] });
  try {
    const conn = await connect(server);
    try {
      await writeAll(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
      assert.ok(await closedByPeer(conn));
    } finally {
      conn.close();
    }
    assert.equal(requests.length, 0);
    assert.equal((await get(server.url, { client }))[0].status, 200);
  } finally {
    client.close();
    await server.close();
  }
});

// ---------------------------------------------------------------------------
// Starting and closing

Deno.test("startHttpServer() throws a one-line ConfigError when it cannot listen", async () => {
  const { server } = serve();
  try {
    const port = server.addr.port;
    const { log } = memoryLog();
    assert.throws(
      () => startHttpServer({ hostname: "127.0.0.1", port, log, handler: () => ({ status: 200 }) }),
      (error: unknown) =>
        error instanceof ConfigError && !error.message.includes("\n") &&
        error.message.startsWith(`cannot serve HTTP on 127.0.0.1:${port}: `),
    );
  } finally {
    await server.close();
  }
});

Deno.test("startHttpServer() throws a one-line ConfigError for a TLS certificate or key it cannot use", async () => {
  const good = await selfSigned();
  const other = await selfSigned();
  const { log } = memoryLog();
  const cases: [string, { cert: string; key: string }, RegExp][] = [
    ["garbage certificate", { cert: "not a certificate", key: good.key }, /not a PEM certificate/],
    [
      "garbage key",
      { cert: good.cert, key: "-----BEGIN PRIVATE KEY-----\nAAAA\n" },
      /not a PEM private key/,
    ],
    ["key and certificate swapped", { cert: good.key, key: good.cert }, /not a PEM certificate/],
    ["another certificate's key", { cert: good.cert, key: other.key }, /does not belong/],
  ];
  for (const [name, tls, reason] of cases) {
    assert.throws(
      () =>
        startHttpServer({
          hostname: "127.0.0.1",
          port: 0,
          log,
          tls,
          handler: () => ({ status: 200 }),
        }),
      (error: unknown) =>
        error instanceof ConfigError && !error.message.includes("\n") &&
        error.message.startsWith("cannot serve HTTPS on 127.0.0.1:0: ") &&
        reason.test(error.message) &&
        !error.message.includes(good.key.slice(40, 80)),
      name,
    );
  }
});

Deno.test("startHttpServer() refuses limits that are not positive integers and an empty token", () => {
  const { log } = memoryLog();
  const handler = () => ({ status: 200 });
  for (
    const limits of [
      { maxHeaderBytes: 0 },
      { headerTimeoutMs: -1 },
      { maxConnections: 1.5 },
      { responseTimeoutMs: Number.NaN },
    ]
  ) {
    assert.throws(
      () => startHttpServer({ hostname: "127.0.0.1", port: 0, log, handler, limits }),
      RangeError,
      JSON.stringify(limits),
    );
  }
  assert.throws(
    () => startHttpServer({ hostname: "127.0.0.1", port: 0, log, handler, token: "" }),
    TypeError,
  );
});

Deno.test("close() ends hung clients and a hung handler, and stops accepting", async () => {
  let called = () => {};
  const handlerCalled = new Promise<void>((resolve) => (called = resolve));
  const { server } = serve({
    limits: { headerTimeoutMs: 60_000, responseTimeoutMs: 60_000 },
    handler: () => {
      called();
      return new Promise<HttpResponse>(() => {/* never answers */});
    },
  });
  const port = server.addr.port;
  const silent = await connect(server);
  const partial = await connect(server);
  const waiting = await connect(server);
  try {
    await writeAll(partial, "GET / HTTP/1.1\r\nHost");
    await writeAll(waiting, "GET / HTTP/1.1\r\n\r\n");
    await bounded(handlerCalled, "the handler being called");
    await bounded(server.close(), "close()");
    for (const conn of [silent, partial, waiting]) assert.ok(await closedByPeer(conn));
    await assert.rejects(
      () => Deno.connect({ hostname: "127.0.0.1", port }),
      Deno.errors.ConnectionRefused,
    );
    await bounded(server.close(), "a second close()");
  } finally {
    for (const conn of [silent, partial, waiting]) conn.close();
  }
});
