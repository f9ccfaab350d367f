/**
 * Tests for lib/crypto/fernet.ts, fernet_token.ts and base64url.ts: the fernet/spec vectors, hostile tokens (one failure
 * class per case), round trips, and interop with two independent implementations:
 * Python's `cryptography` (both directions, binary data) and the npm `fernet`
 * package (both directions, text only, since it decodes plaintext as UTF-8).
 */
import assert from "node:assert/strict";
import fernetNpm from "fernet";
import { decodeBase64Url, encodeBase64Url } from "../../lib/crypto/base64url.ts";
import {
  InvalidTokenError,
  type InvalidTokenReason,
  MIN_TOKEN_LENGTH,
  TOKEN_OVERHEAD,
  TOKEN_VERSION,
  tokenLength,
} from "../../lib/crypto/fernet_token.ts";
import { runPython } from "../support/python_oracle.ts";
import { loadCryptoBackend } from "../../lib/crypto/backend.ts";

// ---------------------------------------------------------------------------
// Vectors from https://github.com/fernet/spec at 20dead475f53f11d20592baf29ad697163afc0cd
// (generate.json, verify.json, invalid.json), inlined so the tests need no read permission.

const SPEC_SECRET = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";
const SPEC_TOKEN =
  "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==";

const SPEC_GENERATE = [
  {
    token: SPEC_TOKEN,
    now: "1985-10-26T01:20:00-07:00",
    iv: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
    src: "hello",
    secret: SPEC_SECRET,
  },
];

const SPEC_VERIFY = [
  {
    token: SPEC_TOKEN,
    now: "1985-10-26T01:20:01-07:00",
    ttl_sec: 60,
    src: "hello",
    secret: SPEC_SECRET,
  },
];

const SPEC_INVALID = [
  {
    desc: "incorrect mac",
    token:
      "gAAAAAAdwJ6xAAECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPAl1-szkFVzXTuGb4hR8AKtwcaX1YdykQUFBQUFBQUFBQQ==",
    now: "1985-10-26T01:20:01-07:00",
  },
  {
    desc: "too short",
    token: "gAAAAAAdwJ6xAAECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPA==",
    now: "1985-10-26T01:20:01-07:00",
  },
  {
    desc: "invalid base64",
    token:
      "%%%%%%%%%%%%%AECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPAl1-szkFVzXTuGb4hR8AKtwcaX1YdykRtfsH-p1YsUD2Q==",
    now: "1985-10-26T01:20:01-07:00",
  },
  {
    desc: "payload size not multiple of block size",
    token:
      "gAAAAAAdwJ6xAAECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPOm73QeoCk9uGib28Xe5vz6oxq5nmxbx_v7mrfyudzUm",
    now: "1985-10-26T01:20:01-07:00",
  },
  {
    desc: "payload padding error",
    token:
      "gAAAAAAdwJ6xAAECAwQFBgcICQoLDA0ODz4LEpdELGQAad7aNEHbf-JkLPIpuiYRLQ3RtXatOYREu2FWke6CnJNYIbkuKNqOhw==",
    now: "1985-10-26T01:20:01-07:00",
  },
  {
    desc: "far-future TS (unacceptable clock skew)",
    token:
      "gAAAAAAdwStRAAECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPAnja1xKYyhd-Y6mSkTOyTGJmw2Xc2a6kBd-iX9b_qXQcw==",
    now: "1985-10-26T01:20:01-07:00",
  },
  {
    desc: "expired TTL",
    token:
      "gAAAAAAdwJ6xAAECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPAl1-szkFVzXTuGb4hR8AKtwcaX1YdykRtfsH-p1YsUD2Q==",
    now: "1985-10-26T01:21:31-07:00",
  },
  {
    desc: "incorrect IV (causes padding error)",
    token:
      "gAAAAAAdwJ6xBQECAwQFBgcICQoLDA0OD3HkMATM5lFqGaerZ-fWPAkLhFLHpGtDBRLRTZeUfWgHSv49TF2AUEZ1TIvcZjK1zQ==",
    now: "1985-10-26T01:20:01-07:00",
  },
].map((vector) => ({ ...vector, ttl_sec: 60, secret: SPEC_SECRET }));

/**
 * The check each invalid vector must fail. Pinning the reason keeps one vector to one
 * failure class, so e.g. a length bug cannot hide behind an HMAC error. The spec's
 * "payload size" token is 72 bytes, so it is caught by the minimum length first.
 */
const SPEC_INVALID_REASON: Record<string, InvalidTokenReason> = {
  "incorrect mac": "hmac",
  "too short": "too-short",
  "invalid base64": "base64",
  "payload size not multiple of block size": "too-short",
  "payload padding error": "padding",
  "far-future TS (unacceptable clock skew)": "future",
  "expired TTL": "expired",
  "incorrect IV (causes padding error)": "padding",
};

// ---------------------------------------------------------------------------
// Helpers

const MIB = 1024 * 1024;
const SPEC_RAW_KEY = decodeBase64Url(SPEC_SECRET);
const SPEC_IV = new Uint8Array(SPEC_GENERATE[0].iv);
const SPEC_NOW = Date.parse(SPEC_GENERATE[0].now) / 1000;

function secondsOf(iso: string): number {
  return Date.parse(iso) / 1000;
}

function clock(seconds: number): () => number {
  return () => seconds;
}

/** Random bytes of any length (getRandomValues fills at most 64 KiB per call). */
function randomBytes(length: number): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(length);
  for (let offset = 0; offset < length; offset += 65536) {
    crypto.getRandomValues(bytes.subarray(offset, Math.min(length, offset + 65536)));
  }
  return bytes;
}

/** Awaits `promise` and asserts it failed with InvalidTokenError for `reason`. */
async function assertInvalid(
  promise: Promise<unknown>,
  reason: InvalidTokenReason,
  context = "",
): Promise<void> {
  let result: unknown;
  try {
    result = await promise;
  } catch (error) {
    assert.ok(
      error instanceof InvalidTokenError,
      `${context}: expected InvalidTokenError, got ${error}`,
    );
    assert.equal(error.name, "InvalidTokenError");
    assert.equal(error.reason, reason, `${context}: wrong check failed: ${error.message}`);
    return;
  }
  assert.fail(`${context}: expected InvalidTokenError (${reason}), got ${result}`);
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function timestampBytes(seconds: number): Uint8Array {
  const bytes = new Uint8Array(8);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(seconds));
  return bytes;
}

/**
 * A token built by hand and signed with the spec key's signing half: lets a test put
 * any version, timestamp or ciphertext behind a *valid* HMAC, so the check under test
 * is the one that fails.
 */
async function signedToken(
  parts: { version?: number; now?: number; iv?: Uint8Array; ciphertext: Uint8Array },
): Promise<Uint8Array<ArrayBuffer>> {
  const signingKey = await crypto.subtle.importKey(
    "raw",
    SPEC_RAW_KEY.slice(0, 16),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const body = concat(
    new Uint8Array([parts.version ?? TOKEN_VERSION]),
    timestampBytes(parts.now ?? SPEC_NOW),
    parts.iv ?? SPEC_IV,
    parts.ciphertext,
  );
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", signingKey, body));
  return concat(body, mac);
}

/**
 * One AES-CBC ciphertext block that decrypts (under the spec key and IV) to exactly
 * `block`, whatever its padding: the first block of WebCrypto's padded encryption.
 */
async function ciphertextBlockFor(block: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
  assert.equal(block.length, 16);
  const key = await crypto.subtle.importKey("raw", SPEC_RAW_KEY.slice(16), "AES-CBC", false, [
    "encrypt",
  ]);
  const ciphertext = await crypto.subtle.encrypt({ name: "AES-CBC", iv: SPEC_IV }, key, block);
  return new Uint8Array(ciphertext, 0, 16);
}

/** A 16-byte block of `fill` bytes ending in `tail`. */
function blockEndingIn(tail: number[], fill = 0x41): Uint8Array<ArrayBuffer> {
  const block = new Uint8Array(16).fill(fill);
  block.set(tail, 16 - tail.length);
  return block;
}

/** Both backends; `openssl` must load here (the tests run with --allow-ffi). */
const BACKENDS = [loadCryptoBackend("webcrypto"), loadCryptoBackend("openssl")];

// ---------------------------------------------------------------------------
// Python's cryptography as an oracle (tests/support/python_oracle.ts).

const PY_ENCRYPT = `
import base64, json, sys
from cryptography.fernet import Fernet
job = json.load(sys.stdin)
f = Fernet(job["key"].encode())
tokens = [f.encrypt(base64.urlsafe_b64decode(item)).decode() for item in job["items"]]
print(json.dumps(tokens))
`;

const PY_DECRYPT = `
import base64, json, sys
from cryptography.fernet import Fernet
job = json.load(sys.stdin)
f = Fernet(job["key"].encode())
plain = [base64.urlsafe_b64encode(f.decrypt(t.encode(), ttl=job["ttl"])).decode()
         for t in job["tokens"]]
print(json.dumps(plain))
`;

// _encrypt_from_parts is private API, but the only way to fix Python's IV for a
// byte-for-byte comparison; a rename in cryptography fails this test loudly.
const PY_ENCRYPT_FIXED = `
import base64, json, sys
from cryptography.fernet import Fernet
job = json.load(sys.stdin)
f = Fernet(job["key"].encode())
iv = base64.urlsafe_b64decode(job["iv"])
tokens = [f._encrypt_from_parts(base64.urlsafe_b64decode(item), job["now"], iv).decode()
          for item in job["items"]]
print(json.dumps(tokens))
`;

const PY_REJECTS = `
import json, sys
from cryptography.fernet import Fernet, InvalidToken
job = json.load(sys.stdin)
try:
    Fernet(job["key"].encode()).decrypt(job["token"].encode())
    print(json.dumps("accepted"))
except InvalidToken:
    print(json.dumps("rejected"))
`;

const INTEROP_SIZES = [0, 1, 15, 16, 17, 1000, 65_537, MIB + 3];

// ---------------------------------------------------------------------------
// Every test below runs on each backend (lib/crypto/backend.ts): the WebCrypto Fernet and
// OpenSSL's libcrypto through FFI must make the same tokens and refuse for the same reasons.

for (const backend of BACKENDS) {
  const test = (name: string, fn: () => Promise<void> | void) =>
    Deno.test(`[${backend.name}] ${name}`, fn);
  const fromKey = (key: string | Uint8Array) => backend.fernet(key);

  // ---------------------------------------------------------------------------
  // Spec vectors

  for (const [index, vector] of SPEC_GENERATE.entries()) {
    test(`encryptText() reproduces spec generate vector ${index} exactly`, async () => {
      const fernet = await fromKey(vector.secret);
      const options = { now: clock(secondsOf(vector.now)), iv: new Uint8Array(vector.iv) };
      assert.equal(await fernet.encryptText(vector.src, options), vector.token);
      const raw = await fernet.encrypt(new TextEncoder().encode(vector.src), options);
      assert.deepEqual(raw, decodeBase64Url(vector.token));
    });
  }

  for (const [index, vector] of SPEC_VERIFY.entries()) {
    test(`decryptText() accepts spec verify vector ${index} within its TTL`, async () => {
      const fernet = await fromKey(vector.secret);
      const plaintext = await fernet.decryptText(vector.token, {
        now: clock(secondsOf(vector.now)),
        ttl: vector.ttl_sec,
      });
      assert.equal(new TextDecoder().decode(plaintext), vector.src);
    });
  }

  for (const vector of SPEC_INVALID) {
    test(`decryptText() rejects spec invalid vector "${vector.desc}"`, async () => {
      const fernet = await fromKey(vector.secret);
      await assertInvalid(
        fernet.decryptText(vector.token, {
          now: clock(secondsOf(vector.now)),
          ttl: vector.ttl_sec,
        }),
        SPEC_INVALID_REASON[vector.desc],
        vector.desc,
      );
    });
  }

  // ---------------------------------------------------------------------------
  // Hostile tokens

  test("decrypt() rejects a token whose version byte is 0x81, even with a valid HMAC", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    const ciphertext = decodeBase64Url(SPEC_TOKEN).subarray(25, -32);
    const token = await signedToken({ version: 0x81, ciphertext });
    await assertInvalid(fernet.decrypt(token), "version");
    const error = await fernet.decrypt(token).catch((e) => e);
    assert.match(error.message, /bad version \(0x81/);
  });

  test("decrypt() rejects a 72-byte token as too short", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    await assertInvalid(fernet.decrypt(decodeBase64Url(SPEC_TOKEN).subarray(0, 72)), "too-short");
    await assertInvalid(fernet.decrypt(new Uint8Array(72).fill(TOKEN_VERSION)), "too-short");
  });

  test("decrypt() rejects an empty token", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    await assertInvalid(fernet.decrypt(new Uint8Array(0)), "too-short");
    await assertInvalid(fernet.decryptText(""), "too-short");
  });

  test("decrypt() rejects a token truncated at every offset", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    const token = decodeBase64Url(SPEC_TOKEN);
    for (let length = 0; length < token.length; length++) {
      const truncated = token.slice(0, length);
      await assertInvalid(fernet.decrypt(truncated), "too-short", `length ${length}`);
    }
    // Longer plaintexts: a cut inside the ciphertext or the HMAC.
    const long = await fernet.encrypt(randomBytes(100));
    for (let length = MIN_TOKEN_LENGTH; length < long.length; length++) {
      const expected = (length - TOKEN_OVERHEAD) % 16 === 0 ? "hmac" : "length";
      await assertInvalid(fernet.decrypt(long.slice(0, length)), expected, `length ${length}`);
    }
  });

  test("decrypt() rejects a token with a flipped byte at every offset", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    const token = decodeBase64Url(SPEC_TOKEN);
    assert.ok(await fernet.decrypt(token), "the unmodified token must decrypt");
    for (let offset = 0; offset < token.length; offset++) {
      for (const mask of [0x01, 0x80, 0xff]) {
        const corrupted = token.slice();
        corrupted[offset] ^= mask;
        const expected = offset === 0 ? "version" : "hmac";
        await assertInvalid(fernet.decrypt(corrupted), expected, `offset ${offset} ^ ${mask}`);
      }
    }
  });

  test("decrypt() rejects a valid token followed by trailing bytes", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    const token = decodeBase64Url(SPEC_TOKEN);
    await assertInvalid(fernet.decrypt(concat(token, new Uint8Array([0]))), "length");
    await assertInvalid(fernet.decrypt(concat(token, new Uint8Array(15))), "length");
    // A whole extra block has the right shape, so the HMAC must catch it.
    await assertInvalid(fernet.decrypt(concat(token, new Uint8Array(16))), "hmac");
    // The HMAC repeated: 32 more bytes, also block-aligned.
    await assertInvalid(fernet.decrypt(concat(token, token.subarray(-32))), "hmac");
  });

  test("decrypt() rejects a token whose HMAC is wrong (made with another key)", async () => {
    const ours = await fromKey(SPEC_SECRET);
    const theirs = await fromKey(randomBytes(32));
    const token = await theirs.encrypt(new TextEncoder().encode("hello"));
    await assertInvalid(ours.decrypt(token), "hmac");
    const error = await ours.decrypt(token).catch((e) => e);
    assert.match(error.message, /bad HMAC/);
  });

  test("decrypt() rejects a key whose halves are swapped", async () => {
    const swapped = concat(SPEC_RAW_KEY.subarray(16), SPEC_RAW_KEY.subarray(0, 16));
    const fernet = await fromKey(swapped);
    await assertInvalid(fernet.decryptText(SPEC_TOKEN), "hmac");
  });

  test("decrypt() checks the HMAC before the timestamp", async () => {
    // An expired token under another key must say "bad HMAC": only authenticated
    // timestamps may produce "token expired", which users read as a clock problem.
    const other = await fromKey(randomBytes(32));
    const token = await other.encrypt(new Uint8Array(3), { now: clock(1000) });
    const fernet = await fromKey(SPEC_SECRET);
    await assertInvalid(fernet.decrypt(token, { now: clock(1_000_000), ttl: 60 }), "hmac");
  });

  test("decrypt() accepts a hand-built token with correct padding (control for the padding tests)", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    const block = blockEndingIn([3, 3, 3]);
    const token = await signedToken({ ciphertext: await ciphertextBlockFor(block) });
    assert.deepEqual(await fernet.decrypt(token), block.subarray(0, 13));
    const full = await signedToken({
      ciphertext: await ciphertextBlockFor(new Uint8Array(16).fill(16)),
    });
    assert.deepEqual(await fernet.decrypt(full), new Uint8Array(0));
  });

  const BAD_PADDINGS: [string, number[]][] = [
    ["a last byte of 0", [0]],
    ["a last byte of 17", [17]],
    ["a last byte of 0xff", [0xff]],
    ["5 padding bytes where the first is 4", [4, 5, 5, 5, 5]],
    ["5 padding bytes where a middle one is 0", [5, 5, 0, 5, 5]],
    ["2 padding bytes where the first is 1", [1, 2]],
    ["16 padding bytes where the first is 15", [15, ...new Array(15).fill(16)]],
  ];

  for (const [description, tail] of BAD_PADDINGS) {
    test(`decrypt() rejects a validly signed token with ${description} of padding`, async () => {
      const fernet = await fromKey(SPEC_SECRET);
      const block = blockEndingIn(tail);
      const token = await signedToken({ ciphertext: await ciphertextBlockFor(block) });
      await assertInvalid(fernet.decrypt(token), "padding", description);
    });
  }

  test("decrypt() rejects bad padding in the last block of a multi-block token", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    const good = await fernet.encrypt(randomBytes(40), { iv: SPEC_IV, now: clock(SPEC_NOW) });
    const ciphertext = good.slice(25, -32);
    // Flipping a byte of the second-to-last ciphertext block flips the same byte of the
    // last plaintext block: turn the last padding byte (8) into 9.
    ciphertext[ciphertext.length - 17] ^= 8 ^ 9;
    await assertInvalid(fernet.decrypt(await signedToken({ ciphertext })), "padding");
  });

  // ---------------------------------------------------------------------------
  // Timestamps, TTL and clock skew

  test("decrypt() rejects a token older than the TTL and accepts one exactly at it", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    const token = await fernet.encrypt(new Uint8Array(1), { now: clock(10_000) });
    assert.deepEqual(
      await fernet.decrypt(token, { now: clock(10_060), ttl: 60 }),
      new Uint8Array(1),
    );
    await assertInvalid(fernet.decrypt(token, { now: clock(10_061), ttl: 60 }), "expired");
    const error = await fernet.decrypt(token, { now: clock(10_061), ttl: 60 }).catch((e) => e);
    assert.match(error.message, /token expired/);
  });

  test("decrypt() rejects a timestamp beyond the clock skew and accepts one at it", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    const token = await fernet.encrypt(new Uint8Array(1), { now: clock(10_060) });
    assert.ok(await fernet.decrypt(token, { now: clock(10_000), ttl: 600 }));
    await assertInvalid(fernet.decrypt(token, { now: clock(9_999), ttl: 600 }), "future");
    assert.ok(await fernet.decrypt(token, { now: clock(9_990), ttl: 600, maxClockSkew: 70 }));
    await assertInvalid(fernet.decrypt(token, { now: clock(10_050), maxClockSkew: 5 }), "future");
  });

  test("decrypt() without a TTL ignores the timestamp, as Python does", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    const past = await fernet.encrypt(new Uint8Array(1), { now: clock(0) });
    const future = await fernet.encrypt(new Uint8Array(1), { now: clock(2 ** 40) });
    assert.ok(await fernet.decrypt(past));
    assert.ok(await fernet.decrypt(future));
    assert.ok(await fernet.decrypt(future, { now: clock(1) }));
  });

  test("decrypt() rejects a negative or non-numeric TTL with RangeError", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    const token = decodeBase64Url(SPEC_TOKEN);
    await assert.rejects(fernet.decrypt(token, { ttl: -1 }), RangeError);
    await assert.rejects(fernet.decrypt(token, { ttl: Number.NaN }), RangeError);
    await assert.rejects(fernet.decrypt(token, { maxClockSkew: -1 }), RangeError);
  });

  test("timestampOf() reads the token's timestamp without verifying it", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    assert.equal(fernet.timestampOf(decodeBase64Url(SPEC_TOKEN)), SPEC_NOW);
    const big = 2 ** 40 + 12_345;
    assert.equal(
      fernet.timestampOf(await fernet.encrypt(new Uint8Array(0), { now: clock(big) })),
      big,
    );
    const forged = decodeBase64Url(SPEC_TOKEN);
    forged[8] ^= 1;
    assert.equal(fernet.timestampOf(forged), SPEC_NOW ^ 1);
    assert.throws(() => fernet.timestampOf(new Uint8Array(24)), InvalidTokenError);
  });

  test("encrypt() writes the clock's seconds as a 64-bit big-endian timestamp", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    for (const seconds of [0, 1, 0xffff_ffff, 0x1_0000_0000, Number.MAX_SAFE_INTEGER]) {
      const token = await fernet.encrypt(new Uint8Array(0), { now: clock(seconds) });
      assert.deepEqual(token.subarray(1, 9), timestampBytes(seconds), `${seconds}`);
    }
  });

  // ---------------------------------------------------------------------------
  // Round trips, lengths and options

  for (const size of [0, 1, 15, 16, 17, MIB, 4 * MIB + 1]) {
    test(`encrypt() then decrypt() round-trips ${size} random bytes`, async () => {
      const fernet = await fromKey(randomBytes(32));
      const plaintext = randomBytes(size);
      const token = await fernet.encrypt(plaintext);
      assert.equal(token.length, tokenLength(size));
      assert.equal(token[0], TOKEN_VERSION);
      assert.deepEqual(await fernet.decrypt(token, { ttl: 60 }), plaintext);
      const text = await fernet.encryptText(plaintext);
      assert.deepEqual(await fernet.decryptText(text), plaintext);
    });
  }

  test("encrypt() with a prefix reserves zeroed bytes before the token", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    const options = { now: clock(SPEC_NOW), iv: SPEC_IV };
    for (const size of [0, 5, 100, MIB]) {
      const plaintext = randomBytes(size).fill(0xaa, 0, Math.min(size, 200));
      const plain = await fernet.encrypt(plaintext, options);
      for (const prefix of [1, 4, 25, 100, 1000]) {
        const framed = await fernet.encrypt(plaintext, { ...options, prefix });
        assert.equal(framed.length, prefix + tokenLength(size));
        assert.deepEqual(framed.subarray(0, prefix), new Uint8Array(prefix), `prefix ${prefix}`);
        assert.deepEqual(framed.subarray(prefix), plain, `size ${size}, prefix ${prefix}`);
        assert.deepEqual(await fernet.decrypt(framed.subarray(prefix)), plaintext);
      }
    }
  });

  test("encrypt() uses a fresh random IV for every token", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    const plaintext = new Uint8Array(32);
    const ivs = new Set<string>();
    for (let i = 0; i < 50; i++) {
      const token = await fernet.encrypt(plaintext, { now: clock(SPEC_NOW) });
      ivs.add(encodeBase64Url(token.subarray(9, 25)));
    }
    assert.equal(ivs.size, 50);
  });

  test("encrypt() does not change its input", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    const plaintext = randomBytes(1000);
    const copy = plaintext.slice();
    await fernet.encrypt(plaintext, { prefix: 8 });
    assert.deepEqual(plaintext, copy);
  });

  test("encrypt() rejects a bad IV, prefix or clock", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    const data = new Uint8Array(1);
    await assert.rejects(fernet.encrypt(data, { iv: new Uint8Array(15) }), TypeError);
    await assert.rejects(fernet.encrypt(data, { prefix: -1 }), RangeError);
    await assert.rejects(fernet.encrypt(data, { prefix: 1.5 }), RangeError);
    await assert.rejects(fernet.encrypt(data, { now: clock(1.5) }), RangeError);
    await assert.rejects(fernet.encrypt(data, { now: clock(-1) }), RangeError);
  });

  test("tokenLength() gives the exact raw token length for a plaintext length", () => {
    assert.equal(TOKEN_OVERHEAD, 57);
    assert.equal(MIN_TOKEN_LENGTH, 73);
    assert.equal(tokenLength(0), 73);
    assert.equal(tokenLength(15), 73);
    assert.equal(tokenLength(16), 89);
    assert.equal(tokenLength(MIB), MIB + 16 + 57);
    assert.throws(() => tokenLength(-1), RangeError);
    assert.throws(() => tokenLength(0.5), RangeError);
  });

  test("encryptText() encodes a string plaintext as UTF-8", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    const text = "héllo ✓ 🙂";
    const token = await fernet.encryptText(text);
    assert.equal(new TextDecoder().decode(await fernet.decryptText(token)), text);
  });

  // ---------------------------------------------------------------------------
  // Base64

  test("decryptText() rejects non-canonical base64 (non-zero padding bits)", async () => {
    const fernet = await fromKey(SPEC_SECRET);
    // 73 bytes encode as "…X==": X carries 2 data bits and 4 unused bits. Setting an
    // unused bit keeps the bytes a lenient decoder would return, so only strictness catches it.
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const last = SPEC_TOKEN.length - 3;
    const altered = SPEC_TOKEN.slice(0, last) +
      alphabet[alphabet.indexOf(SPEC_TOKEN[last]) ^ 1] + SPEC_TOKEN.slice(last + 1);
    assert.notEqual(altered, SPEC_TOKEN);
    await assertInvalid(fernet.decryptText(altered), "base64");
    const error = await fernet.decryptText(altered).catch((e) => e);
    assert.match(error.message, /bad base64/);
  });

  const BAD_TEXT_TOKENS: [string, string][] = [
    ["without '=' padding", SPEC_TOKEN.replace(/=+$/, "")],
    ["with a trailing newline", SPEC_TOKEN + "\n"],
    ["with a leading space", " " + SPEC_TOKEN.slice(1)],
    ["with an inner space", SPEC_TOKEN.slice(0, 10) + " " + SPEC_TOKEN.slice(11)],
    [
      "in the standard alphabet ('+' and '/')",
      SPEC_TOKEN.replaceAll("-", "+").replaceAll("_", "/"),
    ],
    ["with a '.'", SPEC_TOKEN.slice(0, 10) + "." + SPEC_TOKEN.slice(11)],
    ["with a non-ASCII character", SPEC_TOKEN.slice(0, 10) + "é" + SPEC_TOKEN.slice(11)],
    ["with a NUL character", SPEC_TOKEN.slice(0, 10) + "\0" + SPEC_TOKEN.slice(11)],
    ["with '=' in the middle", SPEC_TOKEN.slice(0, 10) + "=" + SPEC_TOKEN.slice(11)],
    ["with three '=' of padding", SPEC_TOKEN.slice(0, -3) + "==="],
  ];

  for (const [description, text] of BAD_TEXT_TOKENS) {
    test(`decryptText() rejects a token ${description}`, async () => {
      const fernet = await fromKey(SPEC_SECRET);
      await assertInvalid(fernet.decryptText(text), "base64", description);
    });
  }

  test("decodeBase64Url() and encodeBase64Url() round-trip both ways", () => {
    for (let length = 0; length < 70; length++) {
      const bytes = randomBytes(length);
      const text = encodeBase64Url(bytes);
      assert.equal(text.length % 4, 0);
      assert.match(text, /^[A-Za-z0-9_-]*={0,2}$/);
      assert.deepEqual(decodeBase64Url(text), bytes);
      assert.equal(encodeBase64Url(decodeBase64Url(text)), text);
    }
    assert.equal(encodeBase64Url(new Uint8Array([0xfb, 0xff])), "-_8=");
  });

  test("decodeBase64Url() throws TypeError for bad input", () => {
    const bad = [
      "A",
      "AB=",
      "AB",
      "A===",
      "====",
      "AB+/",
      "AB\n=",
      "AQ=A",
      "AR==",
      "AAB=",
      "AA==AA==",
    ];
    for (const whitespace of ["\t", "\n", "\v", "\f", "\r", " ", "\u00a0"]) {
      bad.push(`AA${whitespace}A`);
    }
    for (const text of bad) {
      assert.throws(() => decodeBase64Url(text), TypeError, JSON.stringify(text));
    }
  });

  // ---------------------------------------------------------------------------
  // Keys

  test("fromKey() accepts the same key as text or raw bytes", async () => {
    const fromText = await fromKey(SPEC_SECRET);
    const fromBytes = await fromKey(SPEC_RAW_KEY);
    const options = { now: clock(SPEC_NOW), iv: SPEC_IV };
    assert.equal(await fromBytes.encryptText("hello", options), SPEC_TOKEN);
    assert.equal(await fromText.encryptText("hello", options), SPEC_TOKEN);
  });

  test("fromKey() rejects a malformed key with a TypeError that hides the key", async () => {
    const secretPart = SPEC_SECRET.slice(0, 20);
    const bad = [
      SPEC_SECRET.slice(0, 43),
      SPEC_SECRET + "AAAA",
      SPEC_SECRET.replaceAll("-", "+").replaceAll("_", "/"),
      SPEC_SECRET.slice(0, 42) + "f=", // non-zero padding bits
      encodeBase64Url(new Uint8Array(31)),
      "",
    ];
    for (const key of bad) {
      const error = await fromKey(key).catch((e) => e);
      assert.ok(error instanceof TypeError, `${key}: ${error}`);
      assert.match(error.message, /32 bytes/);
      assert.ok(!error.message.includes(secretPart), "the message must not contain the key");
    }
    await assert.rejects(fromKey(new Uint8Array(31)), TypeError);
    await assert.rejects(fromKey(new Uint8Array(33)), TypeError);
  });

  test("InvalidTokenError is an Error named InvalidTokenError", () => {
    const error = new InvalidTokenError("bad HMAC", { reason: "hmac" });
    assert.ok(error instanceof Error);
    assert.equal(error.name, "InvalidTokenError");
    assert.equal(error.reason, "hmac");
    assert.equal(String(error), "InvalidTokenError: bad HMAC");
  });

  // ---------------------------------------------------------------------------
  // Interop: Python cryptography

  test("decrypt() opens binary tokens made by Python's cryptography Fernet", async () => {
    const key = encodeBase64Url(randomBytes(32));
    const items = INTEROP_SIZES.map(randomBytes);
    const tokens = await runPython(PY_ENCRYPT, { key, items: items.map(encodeBase64Url) });
    assert.ok(Array.isArray(tokens) && tokens.length === items.length);
    const fernet = await fromKey(key);
    for (const [index, token] of (tokens as string[]).entries()) {
      assert.deepEqual(await fernet.decryptText(token, { ttl: 600 }), items[index]);
    }
  });

  test("Python's cryptography Fernet opens binary tokens made by encrypt()", async () => {
    const key = encodeBase64Url(randomBytes(32));
    const fernet = await fromKey(key);
    const items = INTEROP_SIZES.map(randomBytes);
    const tokens = await Promise.all(items.map((item) => fernet.encryptText(item)));
    const plain = await runPython(PY_DECRYPT, { key, tokens, ttl: 600 });
    assert.deepEqual(plain, items.map(encodeBase64Url));
  });

  test("encrypt() makes byte-identical tokens to Python for the same key, time and IV", async () => {
    const key = encodeBase64Url(randomBytes(32));
    const iv = randomBytes(16);
    const now = 1_700_000_000;
    const fernet = await fromKey(key);
    const items = INTEROP_SIZES.map(randomBytes);
    const ours = await Promise.all(
      items.map((item) => fernet.encryptText(item, { iv, now: clock(now) })),
    );
    const theirs = await runPython(PY_ENCRYPT_FIXED, {
      key,
      iv: encodeBase64Url(iv),
      now,
      items: items.map(encodeBase64Url),
    });
    assert.deepEqual(theirs, ours);
  });

  test("Python's cryptography rejects a token of ours that has one flipped byte", async () => {
    const key = encodeBase64Url(randomBytes(32));
    const fernet = await fromKey(key);
    const token = await fernet.encrypt(randomBytes(10));
    token[30] ^= 1;
    const script = PY_REJECTS;
    assert.equal(await runPython(script, { key, token: encodeBase64Url(token) }), "rejected");
  });

  // ---------------------------------------------------------------------------
  // Interop: npm fernet (text payloads only: it decodes plaintext as UTF-8)

  const NPM_MESSAGES = ["hello", "x", "héllo wörld ✓ 🙂", "a".repeat(16), "0123456789".repeat(500)];

  test("decryptText() opens text tokens made by the npm fernet package", async () => {
    const secret = new fernetNpm.Secret(SPEC_SECRET);
    const fernet = await fromKey(SPEC_SECRET);
    for (const message of NPM_MESSAGES) {
      const token: string = new fernetNpm.Token({ secret }).encode(message);
      const plaintext = await fernet.decryptText(token, { ttl: 600 });
      assert.equal(new TextDecoder().decode(plaintext), message);
    }
  });

  test("the npm fernet package opens text tokens made by encryptText()", async () => {
    const secret = new fernetNpm.Secret(SPEC_SECRET);
    const fernet = await fromKey(SPEC_SECRET);
    for (const message of NPM_MESSAGES) {
      const token = await fernet.encryptText(message);
      assert.equal(new fernetNpm.Token({ secret, token, ttl: 0 }).decode(), message);
    }
  });
}
