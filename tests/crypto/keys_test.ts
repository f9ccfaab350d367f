/**
 * Tests for lib/crypto/keys.ts: key format (checked against Python's `cryptography`),
 * decoding errors that never leak the key, and the public key id.
 */
import assert from "node:assert/strict";
import { decodeBase64Url, encodeBase64Url } from "../../lib/crypto/base64url.ts";
import { Fernet } from "../../lib/crypto/fernet.ts";
import {
  decodeKey,
  generateKey,
  isPlaceholderKey,
  KEY_TEXT_LENGTH,
  keyId,
  PLACEHOLDER_KEY,
} from "../../lib/crypto/keys.ts";
import { runPython } from "../support/python_oracle.ts";

const SPEC_SECRET = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=";

Deno.test("generateKey() returns 44 characters of urlsafe base64 that decode to 32 bytes", () => {
  for (let i = 0; i < 100; i++) {
    const key = generateKey();
    assert.equal(key.length, KEY_TEXT_LENGTH);
    assert.match(key, /^[A-Za-z0-9_-]{43}=$/);
    assert.equal(decodeKey(key).length, 32);
    assert.equal(encodeBase64Url(decodeKey(key)), key);
  }
});

Deno.test("generateKey() returns a different key every time", () => {
  const keys = new Set(Array.from({ length: 100 }, generateKey));
  assert.equal(keys.size, 100);
});

Deno.test("generateKey() makes keys that Python's Fernet accepts and that interoperate", async () => {
  const key = generateKey();
  const script = `
import json, sys
from cryptography.fernet import Fernet
job = json.load(sys.stdin)
f = Fernet(job["key"].encode())
print(json.dumps({"token": f.encrypt(b"recon").decode(), "generated": Fernet.generate_key().decode()}))
`;
  const result = await runPython(script, { key }) as { token: string; generated: string };
  const fernet = await Fernet.fromKey(key);
  assert.equal(new TextDecoder().decode(await fernet.decryptText(result.token)), "recon");
  // And the other way: a key Python generated is accepted here.
  assert.equal(decodeKey(result.generated).length, 32);
  assert.equal(result.generated.length, generateKey().length);
});

Deno.test("decodeKey() returns the 32 raw bytes of a key", () => {
  const raw = decodeKey(SPEC_SECRET);
  assert.deepEqual(raw, decodeBase64Url(SPEC_SECRET));
  assert.equal(raw.length, 32);
});

const BAD_KEYS: [string, string][] = [
  ["a key one character short", SPEC_SECRET.slice(1)],
  ["a key without its '=' padding", SPEC_SECRET.slice(0, 43)],
  ["a key with extra characters", SPEC_SECRET + "AAAA"],
  ["a key with a trailing newline", SPEC_SECRET.slice(0, 43) + "\n"],
  ["a key in the standard base64 alphabet", SPEC_SECRET.replaceAll("-", "+").replaceAll("_", "/")],
  ["a key with non-zero padding bits", SPEC_SECRET.slice(0, 42) + "f="],
  ["a key of 31 bytes", encodeBase64Url(new Uint8Array(31)) + "="],
  ["a key of 33 bytes", encodeBase64Url(new Uint8Array(33))],
  ["a hex key", "00".repeat(32)],
];

for (const [description, text] of BAD_KEYS) {
  Deno.test(`decodeKey() rejects ${description} with a clear TypeError`, () => {
    const error = (() => {
      try {
        decodeKey(text);
      } catch (e) {
        return e;
      }
      assert.fail("decodeKey() accepted a bad key");
    })();
    assert.ok(error instanceof TypeError, String(error));
    assert.match(error.message, /^SHARED_KEY must be 32 bytes of urlsafe base64 \(44 characters/);
  });
}

Deno.test("decodeKey() error messages never contain the key", () => {
  const key = generateKey();
  for (const text of [key.slice(0, 43), key + "A", key.replaceAll("-", "+").replace(/.$/, "%")]) {
    const message = (() => {
      try {
        decodeKey(text);
      } catch (e) {
        return (e as Error).message;
      }
      return "";
    })();
    assert.notEqual(message, "");
    assert.ok(!message.includes(key.slice(0, 12)), message);
  }
});

Deno.test("decodeKey() says the key is not set for the placeholder or an empty value", () => {
  for (const text of [PLACEHOLDER_KEY, "", "   "]) {
    assert.throws(() => decodeKey(text), { name: "TypeError", message: /SHARED_KEY is not set/ });
  }
});

Deno.test("isPlaceholderKey() recognises the placeholder and empty values only", () => {
  assert.equal(isPlaceholderKey("SET_YOUR_SHARED_KEY_HERE"), true);
  assert.equal(isPlaceholderKey(" SET_YOUR_SHARED_KEY_HERE "), true);
  assert.equal(isPlaceholderKey(""), true);
  assert.equal(isPlaceholderKey("  "), true);
  assert.equal(isPlaceholderKey(SPEC_SECRET), false);
  assert.equal(isPlaceholderKey(generateKey()), false);
  assert.equal(isPlaceholderKey("set_your_shared_key_here"), false);
});

Deno.test("keyId() matches HMAC-SHA256(key, 'recon key id v1') computed by Python's hmac", async () => {
  // Expected values from:
  //   hmac.new(key, b"recon key id v1", hashlib.sha256).hexdigest()[:16]
  assert.equal(await keyId(decodeKey(SPEC_SECRET)), "9064bef25230c4f0");
  const counting = new Uint8Array(32).map((_, i) => i);
  assert.equal(await keyId(counting), "7d96d1823a05cab3");
});

Deno.test("keyId() is stable and 16 lowercase hex characters", async () => {
  const raw = decodeKey(generateKey());
  const id = await keyId(raw);
  assert.match(id, /^[0-9a-f]{16}$/);
  assert.equal(await keyId(raw.slice()), id);
});

Deno.test("keyId() differs for different keys, even keys one bit apart", async () => {
  const raw = decodeKey(SPEC_SECRET);
  const ids = new Set<string>([await keyId(raw)]);
  for (let bit = 0; bit < 256; bit += 17) {
    const other = raw.slice();
    other[bit >> 3] ^= 1 << (bit & 7);
    ids.add(await keyId(other));
  }
  assert.equal(ids.size, 1 + Math.ceil(256 / 17));
});

Deno.test("keyId() does not reveal the key bytes", async () => {
  const raw = decodeKey(SPEC_SECRET);
  const id = await keyId(raw);
  const keyHex = raw.toHex();
  assert.ok(!keyHex.includes(id));
  assert.ok(!SPEC_SECRET.includes(id));
});

Deno.test("keyId() rejects anything but 32 raw bytes", async () => {
  await assert.rejects(keyId(new Uint8Array(31)), TypeError);
  await assert.rejects(keyId(new Uint8Array(0)), TypeError);
  // @ts-expect-error: a key's text form is a common mistake
  await assert.rejects(keyId(SPEC_SECRET), TypeError);
});
