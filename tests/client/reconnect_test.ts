/**
 * Tests for lib/client/reconnect.ts: the waits (1 s doubling to 30 s, jitter), which
 * failures are worth a new connection, the bound CLIENT_RECONNECT_TIMEOUT sets from
 * the lost connection until the server is heard again, withReconnect() for the
 * commands that follow a job without a transfer, and a key the server no longer
 * accepts (its GOODBYE, its refusal when reconnecting). A fake clock: no test sleeps.
 */
import assert from "node:assert/strict";
import {
  ConnectionError,
  HandshakeError,
  InterruptedError,
  KeyRejectedError,
  ProtocolError,
  TimeoutError,
  TransferError,
  TruncatedFrameError,
} from "../../lib/errors.ts";
import type { Channel } from "../../lib/wire/channel.ts";
import {
  formatTimeout,
  formatWait,
  GaveUp,
  goodbyeError,
  isConnectionLoss,
  keyRefusedAfter,
  NEW_KEY_HINT,
  reconnectDelay,
  Reconnector,
  withReconnect,
} from "../../lib/client/reconnect.ts";
import { channelPair } from "../support/channel_pair.ts";
import { instantReconnect } from "./scripted_server.ts";

Deno.test("reconnectDelay() doubles from 1 s to a cap of 30 s, with jitter between half and all", () => {
  const at = (random: number) => (attempt: number) =>
    reconnectDelay(attempt, { random: () => random });
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 50].map(at(0.999999)), [
    1000,
    2000,
    4000,
    8000,
    16000,
    30000,
    30000,
    30000,
  ]);
  assert.deepEqual([1, 2, 6, 1000].map(at(0)), [500, 1000, 15000, 15000]);
  assert.equal(reconnectDelay(3, { baseMs: 10, capMs: 25, random: () => 0.5 }), 19);
});

Deno.test("formatWait() and formatTimeout() give short human durations", () => {
  assert.equal(formatWait(750), "0.8 s");
  assert.equal(formatWait(4000), "4 s");
  assert.equal(formatWait(22_500), "23 s");
  assert.equal(formatTimeout(60_000), "60 s");
  assert.equal(formatTimeout(30 * 60_000), "30 min");
  assert.equal(formatTimeout(3_600_000), "60 min");
  assert.equal(formatTimeout(7_200_000), "2 h");
  assert.equal(formatTimeout(5_400_000 * 2), "3 h");
});

Deno.test("isConnectionLoss() is true for a lost connection and false for what no retry can change", () => {
  const lost = [
    new ConnectionError("cannot connect to x:1: connection refused"),
    new TimeoutError("no data from the server for 300 s"),
    new HandshakeError("the server is busy: too many connections"),
    new HandshakeError("the server closed the connection without answering"),
    new TruncatedFrameError(
      "connection closed in the middle of a frame (1045354 of 1048649 bytes)",
    ),
    new TruncatedFrameError("connection closed in the middle of a frame header"),
  ];
  const final = [
    new ProtocolError("server sent an unknown message type"),
    new KeyRejectedError("the server does not accept key id 0123456789abcdef"),
    new HandshakeError(
      "version mismatch: the server speaks protocol version 2, this client speaks 3",
    ),
    new HandshakeError("the server could not prove it holds SHARED_KEY (key id 0123456789abcdef)"),
    new TransferError("SHA-256 mismatch"),
    new InterruptedError("interrupted"),
    new Error("bug"),
    "text",
  ];
  for (const error of lost) assert.equal(isConnectionLoss(error), true, String(error));
  for (const error of final) assert.equal(isConnectionLoss(error), false, String(error));
});

/** A connect function that fails with `failures` in turn, then gives `channel`. */
function failingConnect(failures: unknown[], channel?: Channel) {
  let calls = 0;
  return {
    calls: () => calls,
    connect: () => {
      const failure = failures[calls++];
      if (failure === undefined && channel) return Promise.resolve(channel);
      return Promise.reject(failure ?? new ConnectionError("connection refused"));
    },
  };
}

Deno.test("Reconnector.lost() waits, connects again until a session opens, and says so before each wait", async () => {
  await using pair = await channelPair();
  const hooks = instantReconnect();
  const attempts = failingConnect([
    new ConnectionError("cannot connect to h:1: connection refused"),
    new HandshakeError("the server is busy: try later"),
  ], pair.client);
  const reconnector = new Reconnector({ ...hooks, connect: attempts.connect, timeoutMs: 60_000 });
  const notices: string[] = [];
  const channel = await reconnector.lost(
    new ConnectionError("the server closed the connection without ending the session"),
    (text) => notices.push(text),
  );
  assert.equal(channel, pair.client);
  assert.equal(attempts.calls(), 3);
  assert.deepEqual(notices, [
    "connection lost: the server closed the connection without ending the session; reconnecting in 0.8 s…",
    "connection lost: cannot connect to h:1: connection refused; reconnecting in 1.5 s…",
    "connection lost: the server is busy: try later; reconnecting in 3 s…",
  ]);
  assert.deepEqual(hooks.slept, [750, 1500, 3000]);
});

Deno.test("Reconnector gives up when CLIENT_RECONNECT_TIMEOUT has passed since the connection was lost", async () => {
  const hooks = instantReconnect();
  const attempts = failingConnect([]);
  const reconnector = new Reconnector({ ...hooks, connect: attempts.connect, timeoutMs: 10_000 });
  const error = await reconnector.lost(new ConnectionError("lost"), () => {}).catch((e) => e);
  assert.ok(error instanceof GaveUp);
  assert.equal(error.timedOut, true);
  assert.match(error.message, /connection refused/);
  assert.equal(hooks.slept.reduce((sum, ms) => sum + ms, 0), 10_000, "never waits past the end");
  assert.equal(hooks.now(), 10_000);
});

Deno.test("Reconnector with a timeout of 0 gives up at once, without connecting", async () => {
  const attempts = failingConnect([]);
  const reconnector = new Reconnector({
    ...instantReconnect(),
    connect: attempts.connect,
    timeoutMs: 0,
  });
  const error = await reconnector.lost(new ConnectionError("lost"), () => {}).catch((e) => e);
  assert.ok(error instanceof GaveUp && error.timedOut);
  assert.equal(error.message, "lost");
  assert.equal(attempts.calls(), 0);
});

Deno.test("goodbyeError() is a lost connection, unless the server said the key was revoked", () => {
  const revoked = goodbyeError("this client's key was revoked", " while waiting for job J");
  assert.ok(revoked instanceof KeyRejectedError);
  assert.equal(isConnectionLoss(revoked), false, "a revoked key is not tried again");
  assert.equal(
    revoked.message,
    "the server ended the session while waiting for job J: this client's key was revoked",
  );
  assert.equal(revoked.hint, NEW_KEY_HINT);
  for (const reason of ["", "the server restarts (maintenance)", "This client's key was revoked"]) {
    const lost = goodbyeError(reason);
    assert.ok(!(lost instanceof KeyRejectedError), reason);
    assert.equal(isConnectionLoss(lost), true, `${reason}: made again`);
    assert.equal(lost.hint, undefined);
  }
  assert.equal(goodbyeError("").message, "the server ended the session");
  assert.equal(goodbyeError("bye").message, "the server ended the session: bye");
});

Deno.test("keyRefusedAfter() ends with the refusal, exit 3 and the new-key hint; other failures are not its business", () => {
  const refusal = new KeyRejectedError(
    "handshake with h:1 failed: the server does not accept key id x",
  );
  const error = keyRefusedAfter(
    "lost the connection while following job J",
    new GaveUp(refusal, false),
  );
  assert.ok(error instanceof ConnectionError);
  assert.equal(error.exitCode, 3);
  assert.equal(
    error.message,
    "lost the connection while following job J and could not reconnect: handshake with h:1 " +
      "failed: the server does not accept key id x",
  );
  assert.equal(error.hint, NEW_KEY_HINT);
  assert.equal(error.cause, refusal, "a watcher finds the refusal as the cause");
  assert.equal(
    keyRefusedAfter("lost", new GaveUp(new ConnectionError("refused"), true)),
    undefined,
  );
});

Deno.test("Reconnector stops at a failure no retry can change (a refused key)", async () => {
  const attempts = failingConnect([new KeyRejectedError("the server does not accept key id x")]);
  const reconnector = new Reconnector({
    ...instantReconnect(),
    connect: attempts.connect,
    timeoutMs: 3_600_000,
  });
  const error = await reconnector.lost(new ConnectionError("lost"), () => {}).catch((e) => e);
  assert.ok(error instanceof GaveUp);
  assert.equal(error.timedOut, false);
  assert.ok(error.last instanceof KeyRejectedError);
  assert.equal(attempts.calls(), 1);
});

Deno.test("Reconnector's clock runs until the server is heard again, and starts afresh for the next outage", async () => {
  await using pair = await channelPair();
  const hooks = instantReconnect();
  const attempts = failingConnect([new ConnectionError("refused")], pair.client);
  const reconnector = new Reconnector({ ...hooks, connect: attempts.connect, timeoutMs: 2_000 });
  await reconnector.lost(new ConnectionError("lost"), () => {});
  assert.equal(hooks.now(), 750 + 1250, "two waits used the whole two seconds");
  // The new session broke before the server answered: the same outage, no time left.
  const again = await reconnector.lost(new ConnectionError("lost again"), () => {}).catch((e) => e);
  assert.ok(again instanceof GaveUp && again.timedOut);
  // Once heard, a new outage has the whole timeout again.
  reconnector.heard();
  const later = failingConnect([], pair.client);
  const fresh = new Reconnector({ ...hooks, connect: later.connect, timeoutMs: 2_000 });
  fresh.heard();
  assert.equal(await fresh.lost(new ConnectionError("x"), () => {}), pair.client);
  assert.equal(reconnector.attempts, 0);
});

Deno.test("Reconnector.lost() ends with InterruptedError when its signal aborts during a wait", async () => {
  const controller = new AbortController();
  const reconnector = new Reconnector({
    connect: () => Promise.reject(new Error("must not connect")),
    timeoutMs: 60_000,
    sleep: (_ms, signal) => {
      controller.abort();
      return Promise.reject(signal?.aborted ? new InterruptedError("interrupted") : new Error());
    },
  });
  await assert.rejects(
    reconnector.lost(new ConnectionError("lost"), () => {}, controller.signal),
    InterruptedError,
  );
});

Deno.test("withReconnect() runs the session again on a new connection after a lost one", async () => {
  await using first = await channelPair();
  await using second = await channelPair();
  const sessions = [first.client, second.client];
  const notices: string[] = [];
  let runs = 0;
  const result = await withReconnect({
    connect: () => Promise.resolve(sessions.shift()!),
    reconnector: new Reconnector({
      ...instantReconnect(),
      connect: () => Promise.resolve(sessions.shift()!),
      timeoutMs: 60_000,
    }),
    session: (channel, heard) => {
      runs++;
      if (channel === first.client) throw new ConnectionError("reset");
      heard();
      return Promise.resolve("done");
    },
    notice: (text) => notices.push(text),
    interrupted: () => new InterruptedError("stopped"),
    gaveUp: (failure) => failure,
  });
  assert.equal(result, "done");
  assert.equal(runs, 2);
  assert.deepEqual(notices, ["connection lost: reset; reconnecting in 0.8 s…", "reconnected"]);
  assert.equal(first.client.closed, true);
  assert.equal(second.client.closed, true, "closed after the session");
});

Deno.test("withReconnect() without a reconnector ends with the first failure", async () => {
  await using pair = await channelPair();
  await assert.rejects(
    withReconnect({
      connect: () => Promise.resolve(pair.client),
      session: () => Promise.reject(new ConnectionError("reset")),
      notice: () => {},
      interrupted: () => new InterruptedError("stopped"),
      gaveUp: (failure) => failure,
    }),
    /reset/,
  );
});
