/**
 * Tests for lib/client/connect.ts: each way of not reaching a recon-server gets a
 * message that says where, and a hint that says what to check.
 */
import assert from "node:assert/strict";
import { connectFailure, connectToServer } from "../../lib/client/connect.ts";
import { ConnectionError, ExitCode, TimeoutError } from "../../lib/errors.ts";
import { testKey } from "../support/channel_pair.ts";

Deno.test("connectToServer() to a port that accepts but never answers fails at the handshake deadline, pointing at SERVER_PORT", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  const held: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const conn of listener) held.push(conn);
  })();
  const key = await testKey();
  const started = performance.now();
  try {
    await assert.rejects(
      connectToServer({
        host: "127.0.0.1",
        port,
        sharedKey: key.raw,
        keyId: key.id,
        handshakeTimeoutMs: 300,
      }),
      (error: unknown) => {
        assert.ok(error instanceof TimeoutError, String(error));
        assert.equal(error.message, `handshake with 127.0.0.1:${port} failed: no answer in 0.3 s`);
        assert.equal(
          error.hint,
          `something at 127.0.0.1:${port} accepted the connection but did not answer as a ` +
            "recon-server; check SERVER_PORT (and SERVER_HOST) in recon.opts",
        );
        assert.equal(error.exitCode, ExitCode.CONNECTION);
        return true;
      },
    );
    const ms = performance.now() - started;
    assert.ok(ms >= 250 && ms < 5000, `took ${ms} ms`);
  } finally {
    listener.close();
    await accepting;
    for (const conn of held) conn.close();
  }
});

Deno.test("connectToServer() to a closed port says connection refused and asks whether recon-server runs there", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr;
  listener.close();
  const key = await testKey();
  await assert.rejects(
    connectToServer({ host: "127.0.0.1", port, sharedKey: key.raw, keyId: key.id }),
    (error: unknown) =>
      error instanceof ConnectionError &&
      error.message === `cannot connect to 127.0.0.1:${port}: connection refused` &&
      error.hint ===
        "is recon-server running there? check SERVER_HOST and SERVER_PORT in recon.opts",
  );
});

Deno.test("connectFailure() names SERVER_HOST for a host name that does not resolve", () => {
  for (
    const text of [
      "failed to lookup address information: Name or service not known",
      "failed to lookup address information: nodename nor servname provided, or not known",
    ]
  ) {
    const error = connectFailure(new Error(text), "scanner-recon.lan", 60000);
    assert.equal(
      error.message,
      "cannot connect to scanner-recon.lan:60000: unknown host name scanner-recon.lan",
    );
    assert.match(error.hint ?? "", /^check SERVER_HOST in recon\.opts \(or --host\)/);
    assert.equal(error.exitCode, ExitCode.CONNECTION);
  }
  const other = connectFailure(new Error("Network is unreachable (os error 101)"), "10.0.0.9", 1);
  assert.equal(
    other.message,
    "cannot connect to 10.0.0.9:1: Network is unreachable (os error 101)",
  );
  assert.match(other.hint ?? "", /is recon-server running there\?/);
});
