/**
 * Tests for lib/crypto/crypto_pool.ts: tokens made on worker threads are ordinary Fernet
 * tokens, and failures come back as the same error classes.
 */
import { receiveStream, sendStream } from "../../lib/wire/transfer.ts";
import assert from "node:assert/strict";
import { CryptoPool, cryptoWorkersFromEnv } from "../../lib/crypto/crypto_pool.ts";
import { Fernet, InvalidTokenError } from "../../lib/crypto/fernet.ts";
import { decodeKey, generateKey } from "../../lib/crypto/keys.ts";

Deno.test("CryptoPool encrypts tokens that Fernet decrypts and decrypts Fernet's tokens", async () => {
  const pool = new CryptoPool({ size: 2 });
  try {
    const key = decodeKey(generateKey());
    const fernet = await Fernet.fromKey(key);
    const sizes = [0, 1, 16, 65_536, 1_048_577];
    const plaintexts = sizes.map((n) => {
      const bytes = new Uint8Array(n);
      for (let i = 0; i < n; i += 65_536) crypto.getRandomValues(bytes.subarray(i, i + 65_536));
      return bytes;
    });
    const tokens = await Promise.all(
      plaintexts.map((p) => pool.encrypt(key, p.slice(), { prefix: 4, now: 1_700_000_000 })),
    );
    for (const [i, token] of tokens.entries()) {
      assert.deepEqual(token.subarray(0, 4), new Uint8Array(4));
      assert.equal(fernet.timestampOf(token.subarray(4)), 1_700_000_000);
      assert.deepEqual(await fernet.decrypt(token.subarray(4)), plaintexts[i]);
    }
    for (const plaintext of plaintexts) {
      const token = await fernet.encrypt(plaintext);
      const { plaintext: back, timestamp } = await pool.decrypt(key, token);
      assert.deepEqual(back, plaintext);
      assert.ok(timestamp > 1_700_000_000);
    }
  } finally {
    pool.close();
  }
});

Deno.test("CryptoPool.decrypt() rejects a tampered token with InvalidTokenError", async () => {
  const pool = new CryptoPool({ size: 1 });
  try {
    const key = decodeKey(generateKey());
    const token = await (await Fernet.fromKey(key)).encrypt(new Uint8Array(100));
    token[40] ^= 1;
    await assert.rejects(pool.decrypt(key, token), InvalidTokenError);
    const other = decodeKey(generateKey());
    const good = await (await Fernet.fromKey(key)).encrypt(new Uint8Array(100));
    await assert.rejects(pool.decrypt(other, good), InvalidTokenError);
  } finally {
    pool.close();
  }
});

Deno.test("CryptoPool fails pending and later work once closed", async () => {
  const pool = new CryptoPool({ size: 1 });
  pool.close();
  await assert.rejects(pool.encrypt(new Uint8Array(32), new Uint8Array(10)), /closed/);
});

Deno.test("cryptoWorkersFromEnv() reads RECON_CRYPTO_WORKERS and rejects nonsense", () => {
  const saved = Deno.env.get("RECON_CRYPTO_WORKERS");
  try {
    Deno.env.set("RECON_CRYPTO_WORKERS", "0");
    assert.equal(cryptoWorkersFromEnv(), 0);
    Deno.env.set("RECON_CRYPTO_WORKERS", "3");
    assert.equal(cryptoWorkersFromEnv(), 3);
    Deno.env.set("RECON_CRYPTO_WORKERS", "-1");
    assert.throws(() => cryptoWorkersFromEnv(), RangeError);
    Deno.env.delete("RECON_CRYPTO_WORKERS");
    assert.equal(cryptoWorkersFromEnv(), 0, "off unless asked for");
  } finally {
    if (saved === undefined) Deno.env.delete("RECON_CRYPTO_WORKERS");
    else Deno.env.set("RECON_CRYPTO_WORKERS", saved);
  }
});

Deno.test("a file sent through a channel with crypto pools on both ends arrives intact", async () => {
  const { channelPair } = await import("../support/channel_pair.ts");
  const pool = new CryptoPool({ size: 2 });
  try {
    await using pair = await channelPair({ cryptoPool: pool, recordsPerKey: 3 });
    const size = 5 * 1024 * 1024 + 7;
    const data = new Uint8Array(size);
    for (let i = 0; i < size; i += 65_536) crypto.getRandomValues(data.subarray(i, i + 65_536));
    let offset = 0;
    const source = {
      read(buffer: Uint8Array): Promise<number | null> {
        if (offset >= size) return Promise.resolve(null);
        const n = Math.min(buffer.length, size - offset);
        buffer.set(data.subarray(offset, offset + n));
        offset += n;
        return Promise.resolve(n);
      },
    };
    const received = new Uint8Array(size);
    let at = 0;
    const sink = {
      write(bytes: Uint8Array): Promise<number> {
        received.set(bytes, at);
        at += bytes.length;
        return Promise.resolve(bytes.length);
      },
    };
    const [sent, got] = await Promise.all([
      sendStream(pair.client, source, size),
      receiveStream(pair.server, sink, size),
    ]);
    assert.equal(sent.sha256, got.sha256);
    assert.deepEqual(received, data);
  } finally {
    pool.close();
  }
});
