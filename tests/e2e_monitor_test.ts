/**
 * End to end (bin/recon-server as a real process, HTTP over real sockets): the
 * monitoring endpoint of HTTP_LISTEN. /healthz says ok, then 503 with the disk line
 * when DISK_FREE_MARGIN is crossed; HTTP_TOKEN guards every page (Bearer, or basic
 * auth for a browser); requests without it, with a wrong one, with oversized headers,
 * or that send their headers slowly are refused while a job runs and finishes as if
 * nothing happened; HTTPS with HTTP_TLS_CERT/KEY; and the start is refused in one line
 * for an address other hosts can reach without a token, or one already in use.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { E2EServer, run, SERVER_BIN, tempDir, testdata, writeRandomFile } from "./support/e2e.ts";

const TOKEN = "monitor-test-token-0123456789";

/** One GET; the body as text. */
async function get(
  url: string,
  headers: Record<string, string> = {},
  client?: Deno.HttpClient,
): Promise<{ status: number; body: string; headers: Headers }> {
  const response = await fetch(url, { headers, client, signal: AbortSignal.timeout(20_000) });
  return { status: response.status, body: await response.text(), headers: response.headers };
}

/** Raw bytes over TCP; what comes back until the server closes (bounded). */
async function raw(url: string, request: string, sendMs = 0): Promise<string> {
  const { hostname, port } = new URL(url);
  const conn = await Deno.connect({ hostname, port: Number(port) });
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  const timer = setTimeout(() => conn.close(), 30_000);
  try {
    const bytes = new TextEncoder().encode(request);
    if (sendMs === 0) await conn.write(bytes);
    else {
      // A client that dribbles its request line and never finishes its headers.
      for (const byte of bytes.subarray(0, 20)) {
        await conn.write(Uint8Array.of(byte)).catch(() => {});
        await new Promise((resolve) => setTimeout(resolve, sendMs));
      }
    }
    const buffer = new Uint8Array(4096);
    while (true) {
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) break;
      chunks.push(buffer.slice(0, n));
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer or the server */ }
  }
  return new TextDecoder().decode(await new Blob(chunks).bytes());
}

Deno.test("/healthz: ok, then 503 naming the disk when DISK_FREE_MARGIN is crossed", async () => {
  const script = testdata("e2e_recon.sh");
  {
    await using server = await E2EServer.start({
      script,
      options: { HTTP_LISTEN: "127.0.0.1:0" },
    });
    const health = await get(`${server.httpUrl}/healthz`);
    assert.equal(health.status, 200);
    assert.equal(health.body, "ok\n");
    assert.equal(health.headers.get("content-type"), "text/plain; charset=utf-8");
    const missing = await get(`${server.httpUrl}/nothing-here`);
    assert.equal(missing.status, 404);
    // Without a token only this host's own names are answered (DNS rebinding).
    const port = new URL(server.httpUrl).port;
    const rebound = await raw(
      server.httpUrl,
      `GET /metrics HTTP/1.1\r\nHost: attacker.example:${port}\r\n\r\n`,
    );
    assert.match(rebound, /^HTTP\/1\.1 403 /);
    assert.match(rebound, /requests for host "attacker\.example:\d+" need HTTP_TOKEN/);
    assert.ok(!rebound.includes("recon_jobs"), rebound);
    const local = await raw(
      server.httpUrl,
      `GET /healthz HTTP/1.1\r\nHost: localhost:${port}\r\n\r\n`,
    );
    assert.match(local, /^HTTP\/1\.1 200 [^]*\r\n\r\nok\n$/);
  }
  // A margin no disk here has: the probe says so in one line, and the page shows it too.
  await using server = await E2EServer.start({
    script,
    options: { HTTP_LISTEN: "127.0.0.1:0", DISK_FREE_MARGIN: "900T" },
  });
  const health = await get(`${server.httpUrl}/healthz`);
  assert.equal(health.status, 503);
  const lines = health.body.trimEnd().split("\n");
  assert.equal(lines.length, 1, health.body);
  assert.match(
    lines[0],
    new RegExp(
      `^disk: .* free under RECON_FILEPATH ${server.reconFilePath}, less than DISK_FREE_MARGIN 900 TiB: new jobs are refused$`,
    ),
  );
  // A box that starts unhealthy says so in its log at once.
  await server.waitForLog(/WARN .*health: disk: .* less than DISK_FREE_MARGIN 900 TiB/, 5000);
  const page = await get(`${server.httpUrl}/`);
  assert.equal(page.status, 200);
  assert.ok(page.body.includes("DISK_FREE_MARGIN 900 TiB"), "the page shows the problem");
});

Deno.test("HTTP_TOKEN: refused without it, with a wrong one, oversized or slow; a job runs on undisturbed", async () => {
  await using server = await E2EServer.start({
    script: testdata("e2e_recon.sh"),
    options: { HTTP_LISTEN: "127.0.0.1:0", HTTP_TOKEN: TOKEN },
  });
  const url = server.httpUrl;
  assert.match(server.log, /http: serving .* \(HTTP_TOKEN required\)/);
  assert.ok(!server.log.includes(TOKEN), "the token is never logged");
  await using files = await tempDir();
  const input = path.join(files.path, "P12345.7");
  await writeRandomFile(input, 8 * 1024 * 1024);
  // A job that runs for a few seconds while the endpoint is abused.
  const client = server.spawnClient([
    "--files",
    input,
    "--recon-options",
    JSON.stringify({ sleep: 3 }),
    "--json",
  ]);
  await server.waitForLog(/job \S+: running /);

  for (const page of ["/metrics", "/healthz", "/"]) {
    const none = await get(`${url}${page}`);
    assert.equal(none.status, 401, page);
    assert.match(none.headers.get("www-authenticate") ?? "", /Bearer/);
    assert.ok(!none.body.includes("recon_"), "nothing leaks without the token");
    assert.equal((await get(`${url}${page}`, { Authorization: "Bearer wrong-token" })).status, 401);
  }
  assert.equal((await get(`${url}/metrics`, { Authorization: `Bearer ${TOKEN}` })).status, 200);
  const basic = `Basic ${btoa(`prometheus:${TOKEN}`)}`;
  assert.equal((await get(`${url}/healthz`, { Authorization: basic })).status, 200);

  const huge = await raw(
    url,
    `GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(64 * 1024)}\r\n\r\n`,
  );
  assert.match(huge, /^HTTP\/1\.1 431 /);
  // Headers that never finish are cut off (408) instead of holding a connection forever.
  const slowStarted = Date.now();
  const slow = raw(url, `GET /metrics HTTP/1.1\r\nAuthorization: Bearer ${TOKEN}\r\n`, 400);
  // Meanwhile the endpoint serves others.
  assert.equal((await get(`${url}/healthz`, { Authorization: `Bearer ${TOKEN}` })).status, 200);
  // (The 408 may be lost to a reset when it arrives while the client still writes; the
  // connection was closed by the server either way, long before raw()'s own 30 s.)
  assert.match(await slow, /^(HTTP\/1\.1 408 |$)/);
  assert.ok(Date.now() - slowStarted < 20_000, "the server closed the slow connection");

  const result = await client.result();
  assert.equal(result.code, 0, result.stderr);
  const report = JSON.parse(result.stdout) as { state?: string; files: unknown[] };
  assert.ok(report.files.length > 0);
  const metrics = await get(`${url}/metrics`, { Authorization: `Bearer ${TOKEN}` });
  assert.match(metrics.body, /^recon_jobs_finished_total\{state="succeeded"\} 1$/m);
  assert.ok(!metrics.body.includes("P12345"), "no file name in /metrics");
  const page = await get(`${url}/`, { Authorization: `Bearer ${TOKEN}` });
  assert.ok(!page.body.includes("P12345"), "no file name on the status page");
  assert.ok(!server.log.includes(TOKEN), "the token is never logged");
});

Deno.test("HTTPS with HTTP_TLS_CERT and HTTP_TLS_KEY", async () => {
  await using dir = await tempDir();
  const cert = path.join(dir.path, "cert.pem");
  const key = path.join(dir.path, "key.pem");
  // A private CA and a server certificate it signed, as a site's own PKI would issue.
  const ca = path.join(dir.path, "ca.pem");
  const caKey = path.join(dir.path, "ca.key");
  const request = path.join(dir.path, "server.csr");
  const extensions = path.join(dir.path, "server.ext");
  await Deno.writeTextFile(extensions, "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  for (
    const args of [
      ["req", "-x509", ...ec, "-keyout", caKey, "-out", ca, "-days", "1", "-subj", "/CN=test CA"],
      ["req", ...ec, "-keyout", key, "-out", request, "-subj", "/CN=localhost"],
      [
        "x509",
        "-req",
        "-in",
        request,
        "-CA",
        ca,
        "-CAkey",
        caKey,
        "-CAcreateserial",
        "-out",
        cert,
        "-days",
        "1",
        "-extfile",
        extensions,
      ],
    ]
  ) {
    const openssl = await run("openssl", args);
    assert.equal(openssl.code, 0, openssl.stderr);
  }
  await using server = await E2EServer.start({
    script: testdata("e2e_recon.sh"),
    options: {
      HTTP_LISTEN: "127.0.0.1:0",
      HTTP_TOKEN: TOKEN,
      HTTP_TLS_CERT: cert,
      HTTP_TLS_KEY: key,
    },
  });
  assert.match(server.httpUrl, /^https:\/\/127\.0\.0\.1:\d+$/);
  const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(ca)] });
  try {
    const health = await get(
      `${server.httpUrl}/healthz`,
      { Authorization: `Bearer ${TOKEN}` },
      client,
    );
    assert.equal(health.status, 200);
    assert.equal(health.body, "ok\n");
    // Plain HTTP to the HTTPS port gets nothing useful, and the log says why.
    const plain = await raw(
      server.httpUrl.replace("https", "http"),
      "GET /healthz HTTP/1.1\r\n\r\n",
    );
    assert.ok(!plain.includes("ok\n"), plain);
    await server.waitForLog(
      /TLS handshake failed: .*a plain http:\/\/ client on this https endpoint/,
      5000,
    );
  } finally {
    client.close();
  }
});

Deno.test("the start is refused in one line: no token off loopback; HTTP_LISTEN in use (exit 3)", async () => {
  await using dir = await tempDir();
  const opts = path.join(dir.path, "recon.opts");
  const write = (extra: string) =>
    Deno.writeTextFile(
      opts,
      [
        `SHARED_KEY = ${"A".repeat(43)}=`,
        `RECON_FILEPATH = ${path.join(dir.path, "jobs")}`,
        `RECON_DICOM_DIR = ${path.join(dir.path, "results")}`,
        `RECON_SCRIPT = ${testdata("e2e_recon.sh")}`,
        `LOG_FILEPATH = ${path.join(dir.path, "recon.log")}`,
        extra,
      ].join("\n") + "\n",
      { mode: 0o600 },
    );
  await write("HTTP_LISTEN = 0.0.0.0:0");
  const open = await run(SERVER_BIN, ["--opts", opts, "--port", "0", "--host", "127.0.0.1"], {
    timeoutMs: 30_000,
  });
  assert.equal(open.code, 2, open.stderr);
  assert.match(
    open.stderr,
    /HTTP_LISTEN 0\.0\.0\.0:0 is not a loopback address .* but HTTP_TOKEN is not set/,
  );
  assert.equal(open.stderr.trim().split("\n").filter((line) => /error/.test(line)).length, 1);

  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    await write(`HTTP_LISTEN = 127.0.0.1:${(taken.addr as Deno.NetAddr).port}`);
    const busy = await run(SERVER_BIN, ["--opts", opts, "--port", "0", "--host", "127.0.0.1"], {
      timeoutMs: 30_000,
    });
    assert.equal(busy.code, 3, busy.stderr);
    assert.match(
      busy.stderr,
      /cannot serve HTTP_LISTEN 127\.0\.0\.1:\d+: the address is already in use \(another recon-server or exporter\?\)/,
    );
  } finally {
    taken.close();
  }
});
