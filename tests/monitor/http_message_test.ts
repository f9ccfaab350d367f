/**
 * Tests for lib/monitor/http_message.ts, the bytes of the monitoring endpoint's HTTP:
 * the end of a request head found wherever a chunk boundary falls, request heads parsed
 * and refused, the token in Bearer and Basic form (a non-ASCII token too), and responses
 * that always carry the fixed headers and cannot be split by a header value.
 */
import assert from "node:assert/strict";
import {
  authorized,
  encodeResponse,
  findHeadEnd,
  type HttpRequest,
  parseRequestHead,
  plainResponse,
  tokenDigest,
} from "../../lib/monitor/http_message.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Latin-1 bytes of `text`, as a client sends header bytes. */
function latin1(text: string): Uint8Array {
  return Uint8Array.from(text, (char) => char.charCodeAt(0));
}

Deno.test("findHeadEnd() finds the end wherever the previous chunk ended", () => {
  for (const head of ["GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET / HTTP/1.1\nHost: x\n\n"]) {
    const bytes = encoder.encode(`${head}trailing body bytes`);
    for (let split = 0; split <= head.length; split++) {
      // Bytes up to `split` came earlier without the end; the caller looks again from split - 3.
      assert.equal(
        findHeadEnd(bytes, Math.max(0, split - 3), bytes.length),
        head.length,
        `${split}`,
      );
    }
  }
});

Deno.test("findHeadEnd() is -1 while the empty line has not arrived", () => {
  const head = encoder.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  for (let length = 0; length < head.length; length++) {
    assert.equal(findHeadEnd(head, 0, length), -1, `${length}`);
  }
  assert.equal(findHeadEnd(encoder.encode("\r\n\r"), 0, 3), -1);
});

Deno.test("parseRequestHead() reads the method, path, query and headers", () => {
  const head = "GET /a/./b/../metrics?name=x%20y&n=1 HTTP/1.1\r\nHost: box\r\n" +
    "X-Twice: 1\r\nX-Twice: 2\r\nX-Spaces:   padded   \r\n\r\n";
  const request = parseRequestHead(encoder.encode(head), "10.0.0.9") as HttpRequest;
  assert.equal(typeof request, "object");
  assert.equal(request.method, "GET");
  assert.equal(request.path, "/a/metrics");
  assert.equal(request.query.get("name"), "x y");
  assert.equal(request.headers.get("host"), "box");
  assert.equal(request.headers.get("x-twice"), "1, 2");
  assert.equal(request.headers.get("x-spaces"), "padded");
  assert.equal(request.remote, "10.0.0.9");
});

Deno.test("parseRequestHead() keeps a header value's bytes above 0x7f as Latin-1", () => {
  const request = parseRequestHead(latin1("GET / HTTP/1.1\r\nX-Name: caf\xe9\r\n\r\n"), "::1");
  assert.equal((request as HttpRequest).headers.get("x-name"), "caf\xe9");
});

Deno.test("parseRequestHead() refuses a head that is not a request, saying why", () => {
  for (
    const head of [
      "",
      "GET / HTTP/1.1\r\n",
      "GET / HTTP/1.1\r\n\r\nextra",
      "GET /caf\xe9 HTTP/1.1\r\n\r\n",
      "GET /a b HTTP/1.1\r\n\r\n",
      "G(T / HTTP/1.1\r\n\r\n",
      "GET / HTTP/1.2\r\n\r\n",
      "GET / http/1.1\r\n\r\n",
      "GET / HTTP/1.1\r\nX-A\x7f: 1\r\n\r\n",
      "GET / HTTP/1.1\r\nX-A: \x1b[31m\r\n\r\n",
    ]
  ) {
    const result = parseRequestHead(latin1(head), "127.0.0.1");
    assert.equal(typeof result, "string", JSON.stringify(head));
  }
});

Deno.test("authorized() accepts the token as Bearer or as the Basic password only", () => {
  const token = "0123456789abcdef-token";
  const digest = tokenDigest(token);
  const basic = (credentials: string) => `Basic ${btoa(credentials)}`;
  for (
    const header of [
      `Bearer ${token}`,
      `BEARER ${token}  `,
      basic(`u:${token}`),
      basic(`:${token}`),
    ]
  ) {
    assert.ok(authorized(header, digest), header);
  }
  for (
    const header of [
      null,
      "",
      token,
      `Bearer  `,
      `Bearer ${token}x`,
      `Bearer x${token}`,
      `Bearer ${token.toUpperCase()}`,
      `Digest ${token}`,
      basic(`${token}:u`),
      basic(token),
      `Basic ${token}`,
      `Basic ${btoa(`u:${token}`)}=`,
    ]
  ) {
    assert.ok(!authorized(header, digest), String(header));
  }
});

Deno.test("authorized() compares a non-ASCII token's UTF-8 bytes", () => {
  const token = "clé-secrète-0123456789";
  const digest = tokenDigest(token);
  const utf8 = String.fromCharCode(...encoder.encode(token));
  // What parseRequestHead makes of `Authorization: Bearer <UTF-8 bytes>`:
  assert.ok(authorized(`Bearer ${utf8}`, digest));
  assert.ok(authorized(`Basic ${btoa(`u:${utf8}`)}`, digest));
  assert.ok(!authorized(`Bearer ${token}`, digest));
});

Deno.test("encodeResponse() adds the fixed headers, which the response cannot change", () => {
  const bytes = encodeResponse({
    status: 200,
    headers: {
      "content-length": "1",
      "Cache-Control": "public",
      Connection: "keep-alive",
      "X-Content-Type-Options": "none",
      "Content-Type": "text/html; charset=utf-8",
    },
    body: "café\n",
  }, true);
  const [head, body] = decoder.decode(bytes).split("\r\n\r\n");
  assert.equal(body, "café\n");
  const lines = head.split("\r\n");
  assert.equal(lines[0], "HTTP/1.1 200 OK");
  assert.deepEqual(lines.slice(1).sort(), [
    "Cache-Control: no-store",
    "Connection: close",
    "Content-Length: 6",
    "Content-Type: text/html; charset=utf-8",
    "X-Content-Type-Options: nosniff",
  ]);
});

Deno.test("encodeResponse() without the body keeps the body's Content-Length", () => {
  const text = decoder.decode(encodeResponse({ status: 404, body: new Uint8Array(10) }, false));
  assert.match(text, /^HTTP\/1\.1 404 Not Found\r\n/);
  assert.match(text, /\r\nContent-Length: 10\r\n/);
  assert.ok(text.endsWith("\r\n\r\n"));
});

Deno.test("encodeResponse() refuses a header that would split the response, and a bad status", () => {
  const bad: Record<string, string>[] = [
    { "X-A": "1\r\nSet-Cookie: a=b" },
    { "X-A": "1\nX-B: 2" },
    { "X-A": "caf\u00e9" },
    { "X A": "1" },
    { "X-A:": "1" },
    { "": "1" },
  ];
  for (const headers of bad) {
    assert.throws(() => encodeResponse({ status: 200, headers }, true), TypeError);
  }
  for (const status of [0, 99, 199, 600, 200.5, Number.NaN]) {
    assert.throws(() => encodeResponse({ status }, true), RangeError, String(status));
  }
});

Deno.test("plainResponse() is one line: status, reason and text", () => {
  assert.deepEqual(plainResponse(408, "too slow"), {
    status: 408,
    headers: {},
    body: "408 Request Timeout: too slow\n",
  });
});
