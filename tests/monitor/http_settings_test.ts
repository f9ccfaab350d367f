/**
 * HTTP_LISTEN and friends are checked before the server starts: what is accepted, and
 * the one line that names the option to fix for everything that is not.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { ConfigError } from "../../lib/errors.ts";
import { defaultConfig, type ReconConfig } from "../../lib/opts/mod.ts";
import {
  httpSettings,
  isLoopback,
  MIN_TOKEN_LENGTH,
  parseListen,
} from "../../lib/monitor/http_settings.ts";

const TOKEN = "x".repeat(MIN_TOKEN_LENGTH);

function config(settings: Partial<ReconConfig>): ReconConfig {
  return { ...defaultConfig(), ...settings };
}

async function refusal(settings: Partial<ReconConfig>): Promise<ConfigError> {
  const error = await httpSettings(config(settings)).then(
    () => assert.fail("accepted"),
    (error) => error,
  );
  assert.ok(error instanceof ConfigError, String(error));
  assert.ok(!error.message.includes("\n"), error.message);
  return error;
}

Deno.test("HTTP_LISTEN: HOST:PORT and [V6]:PORT parse; other shapes do not", () => {
  assert.deepEqual(parseListen("127.0.0.1:9187"), { hostname: "127.0.0.1", port: 9187 });
  assert.deepEqual(parseListen(" localhost:0 "), { hostname: "localhost", port: 0 });
  assert.deepEqual(parseListen("[::1]:9187"), { hostname: "::1", port: 9187 });
  assert.deepEqual(parseListen("0.0.0.0:80"), { hostname: "0.0.0.0", port: 80 });
  for (
    const bad of ["9187", "127.0.0.1", "::1:9187", "host:99999", "a b:1", "http://x:1", ":9187"]
  ) {
    assert.equal(parseListen(bad), undefined, bad);
  }
});

Deno.test("loopback is 127/8, ::1 and localhost; 0.0.0.0 and :: are every interface", () => {
  for (const name of ["127.0.0.1", "127.1.2.3", "::1", "localhost", "LOCALHOST"]) {
    assert.ok(isLoopback(name), name);
  }
  for (const name of ["0.0.0.0", "::", "10.0.0.5", "recon.example.org", "128.0.0.1"]) {
    assert.ok(!isLoopback(name), name);
  }
});

Deno.test("HTTP_LISTEN empty: off, and a token or TLS file without it is a mistake", async () => {
  assert.equal(await httpSettings(config({})), undefined);
  const error = await refusal({ HTTP_TOKEN: TOKEN });
  assert.match(error.message, /HTTP_TOKEN set but HTTP_LISTEN is empty/);
});

Deno.test("loopback without a token is served; with one the token is kept", async () => {
  assert.deepEqual(await httpSettings(config({ HTTP_LISTEN: "127.0.0.1:9187" })), {
    hostname: "127.0.0.1",
    port: 9187,
    warnings: [],
  });
  const settings = await httpSettings(config({ HTTP_LISTEN: "[::1]:0", HTTP_TOKEN: TOKEN }));
  assert.equal(settings?.token, TOKEN);
});

Deno.test("an address other hosts can reach needs HTTP_TOKEN", async () => {
  const error = await refusal({ HTTP_LISTEN: "0.0.0.0:9187" });
  assert.match(
    error.message,
    /is not a loopback address \(127\.0\.0\.1, ::1, localhost\), so other hosts may reach it, but HTTP_TOKEN is not set/,
  );
  assert.match(error.hint ?? "", /keygen/);
  const settings = await httpSettings(config({ HTTP_LISTEN: "0.0.0.0:9187", HTTP_TOKEN: TOKEN }));
  assert.equal(settings?.hostname, "0.0.0.0");
});

Deno.test("a short token, a malformed address and half a TLS pair are refused", async () => {
  assert.match(
    (await refusal({ HTTP_LISTEN: "127.0.0.1:1", HTTP_TOKEN: "short" })).message,
    /HTTP_TOKEN is 5 characters; at least 16/,
  );
  assert.match(
    (await refusal({ HTTP_LISTEN: "127.0.0.1:1", HTTP_TOKEN: `${TOKEN} ${TOKEN}` })).message,
    /HTTP_TOKEN may hold only visible ASCII characters, no spaces/,
  );
  assert.match(
    (await refusal({ HTTP_LISTEN: "127.0.0.1:70000" })).message,
    /HTTP_LISTEN 127\.0\.0\.1:70000: port 70000 is out of range \(1 to 65535\)/,
  );
  assert.match(
    (await refusal({ HTTP_LISTEN: "127.0.0.1:60000", SERVER_PORT: 60000 })).message,
    /HTTP_LISTEN 127\.0\.0\.1:60000 uses SERVER_PORT 60000, the port of the encrypted service/,
  );
  assert.match(
    (await refusal({ HTTP_LISTEN: "9187" })).message,
    /HTTP_LISTEN "9187" is not HOST:PORT/,
  );
  assert.match(
    (await refusal({ HTTP_LISTEN: "127.0.0.1:1", HTTP_TLS_CERT: "/x.pem" })).message,
    /HTTP_TLS_KEY is not set/,
  );
});

Deno.test("TLS files are read as PEM; unreadable or not PEM names the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cert = path.join(dir, "cert.pem");
    const key = path.join(dir, "key.pem");
    await Deno.writeTextFile(
      cert,
      "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
    );
    await Deno.writeTextFile(key, "not a key\n");
    const base = { HTTP_LISTEN: "127.0.0.1:0", HTTP_TLS_CERT: cert };
    assert.match(
      (await refusal({ ...base, HTTP_TLS_KEY: key })).message,
      new RegExp(`HTTP_TLS_KEY ${key} is not a PEM file`),
    );
    assert.match(
      (await refusal({ ...base, HTTP_TLS_KEY: path.join(dir, "missing.pem") })).message,
      /HTTP_TLS_KEY .*missing\.pem does not exist/,
    );
    await Deno.writeTextFile(key, "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n");
    assert.match(
      (await refusal({ ...base, HTTP_TLS_KEY: key })).message,
      /HTTP_TLS_CERT .*: the TLS certificate is not a PEM certificate/,
    );
    // A real pair, and a key from another pair.
    const other = path.join(dir, "other.pem");
    for (const [out, keyOut] of [[cert, key], [path.join(dir, "other.crt"), other]]) {
      const openssl = await new Deno.Command("openssl", {
        args: [
          "req",
          "-x509",
          "-newkey",
          "ec",
          "-pkeyopt",
          "ec_paramgen_curve:prime256v1",
          "-nodes",
          "-keyout",
          keyOut,
          "-out",
          out,
          "-days",
          "1",
          "-subj",
          "/CN=localhost",
        ],
        stderr: "piped",
      }).output();
      assert.equal(openssl.code, 0, new TextDecoder().decode(openssl.stderr));
    }
    assert.match(
      (await refusal({ ...base, HTTP_TLS_KEY: other })).message,
      /the TLS key does not belong to the TLS certificate/,
    );
    const swapped = await refusal({ ...base, HTTP_TLS_CERT: key, HTTP_TLS_KEY: cert });
    assert.match(
      swapped.message,
      /HTTP_TLS_CERT .*key\.pem holds a private key, not a certificate/,
    );
    assert.match(swapped.hint ?? "", /swapped/);
    assert.equal(
      (await refusal({ ...base, HTTP_TLS_KEY: path.join(dir, "nothing.pem") })).message,
      `HTTP_TLS_KEY ${path.join(dir, "nothing.pem")} does not exist`,
    );
    await Deno.chmod(key, 0o600);
    const settings = await httpSettings(config({ ...base, HTTP_TLS_KEY: key }));
    assert.deepEqual(settings?.warnings, []);
    await Deno.chmod(key, 0o644);
    const open = await httpSettings(config({ ...base, HTTP_TLS_KEY: key }));
    assert.deepEqual(open?.warnings, [
      `HTTP_TLS_KEY ${key} can be read by every user (mode 0644); run chmod 600 ${key}, or chmod 640 with the group of the user recon runs as`,
    ]);
    assert.match(settings?.tls?.cert ?? "", /BEGIN CERTIFICATE/);
    assert.match(settings?.tls?.key ?? "", /BEGIN PRIVATE KEY/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
