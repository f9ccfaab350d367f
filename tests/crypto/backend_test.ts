/**
 * Tests for lib/crypto/backend.ts and lib/crypto/openssl.ts beyond the Fernet suite that
 * tests/crypto/fernet_test.ts runs on each backend: tokens cross between the backends
 * byte for byte, both refuse the same hostile token for the same reason with the same
 * message, sessions with a different backend on each end work (ratchet included), and
 * the choice: `auto` (which opens libcrypto only for a large token), `openssl`,
 * `webcrypto`, a bad value, and a process without --allow-ffi (real child processes).
 */
import assert from "node:assert/strict";
import {
  CRYPTO_BACKEND_CHOICES,
  type CryptoBackend,
  loadCryptoBackend,
} from "../../lib/crypto/backend.ts";
import type { FernetCodec } from "../../lib/crypto/fernet_codec.ts";
import {
  InvalidTokenError,
  MIN_TOKEN_LENGTH,
  TOKEN_VERSION,
} from "../../lib/crypto/fernet_token.ts";
import { KeySchedule } from "../../lib/crypto/key_schedule.ts";
import { ConfigError } from "../../lib/errors.ts";
import { RECORD_HEADER_SIZE } from "../../lib/wire/record.ts";
import { channelPair } from "../support/channel_pair.ts";
import { randomBytes } from "../support/memory_duplex.ts";

const openssl = loadCryptoBackend("openssl");
const webcrypto = loadCryptoBackend("webcrypto");
const automatic = loadCryptoBackend("auto");
const PAIRS: [CryptoBackend, CryptoBackend][] = [
  [openssl, webcrypto],
  [webcrypto, openssl],
  [automatic, webcrypto],
  [webcrypto, automatic],
];
const SIZES = [0, 1, 15, 16, 17, 31, 32, 33, 1000, 65_536, 1024 * 1024 + 9, 4 * 1024 * 1024 + 9];
const MODULE = new URL("../../lib/crypto/backend.ts", import.meta.url).href;

function clock(seconds: number): () => number {
  return () => seconds;
}

async function codecs(key: Uint8Array): Promise<[FernetCodec, FernetCodec]> {
  return [await openssl.fernet(key), await webcrypto.fernet(key)];
}

/** What a decrypt did: the plaintext's length, or the refusal's class, reason and message. */
async function outcome(promise: Promise<Uint8Array>): Promise<string> {
  try {
    return `ok ${(await promise).length}`;
  } catch (error) {
    const reason = error instanceof InvalidTokenError ? error.reason : "-";
    return `${(error as Error).name} ${reason}: ${(error as Error).message}`;
  }
}

Deno.test("both backends make byte-identical tokens for the same key, time and IV", async () => {
  const key = randomBytes(32);
  const [ours, theirs] = await codecs(key);
  const iv = randomBytes(16);
  for (const size of SIZES) {
    const plaintext = randomBytes(size);
    for (const prefix of [0, 4]) {
      const options = { iv, now: clock(1_700_000_000 + size), prefix };
      assert.deepEqual(
        await ours.encrypt(plaintext, options),
        await theirs.encrypt(plaintext, options),
        `size ${size}, prefix ${prefix}`,
      );
    }
  }
});

for (const [maker, reader] of PAIRS) {
  Deno.test(`a token made by ${maker.name} opens with ${reader.name}, every size`, async () => {
    const key = randomBytes(32);
    const [make, read] = [await maker.fernet(key), await reader.fernet(key)];
    for (const size of SIZES) {
      const plaintext = randomBytes(size);
      const token = await make.encrypt(plaintext);
      assert.deepEqual(await read.decrypt(token, { ttl: 60 }), plaintext, `size ${size}`);
      assert.deepEqual(await read.decryptText(await make.encryptText(plaintext)), plaintext);
    }
  });
}

/** A token with any body behind a *valid* HMAC, so the check after the HMAC is what fails. */
async function signed(key: Uint8Array, body: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
  const hmacKey = await crypto.subtle.importKey(
    "raw",
    key.slice(0, 16),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = new Uint8Array(
    await crypto.subtle.sign("HMAC", hmacKey, body as Uint8Array<ArrayBuffer>),
  );
  const token = new Uint8Array(body.length + 32);
  token.set(body);
  token.set(mac, body.length);
  return token;
}

/** A token body whose ciphertext decrypts to `blocks` as they are (no padding added). */
async function rawBody(key: Uint8Array, blocks: Uint8Array, now = 1000): Promise<Uint8Array> {
  const aes = await crypto.subtle.importKey("raw", key.slice(16), "AES-CBC", false, ["encrypt"]);
  const iv = randomBytes(16);
  // WebCrypto pads: its ciphertext of `blocks` begins with the blocks' own ciphertext.
  const ciphertext = new Uint8Array(
    await crypto.subtle.encrypt({ name: "AES-CBC", iv }, aes, blocks as Uint8Array<ArrayBuffer>),
  ).subarray(0, blocks.length);
  const body = new Uint8Array(25 + blocks.length);
  body[0] = TOKEN_VERSION;
  new DataView(body.buffer).setBigUint64(1, BigInt(now));
  body.set(iv, 9);
  body.set(ciphertext, 25);
  return body;
}

Deno.test("both backends refuse every hostile token with the same reason and message", async () => {
  const key = randomBytes(32);
  const [ours, theirs] = await codecs(key);
  const good = await theirs.encrypt(randomBytes(40), { now: clock(1000) });
  const cases: [string, Uint8Array, { ttl?: number; now?: () => number; maxClockSkew?: number }][] =
    [];
  for (let length = 0; length < good.length; length += 7) {
    cases.push([`truncated to ${length}`, good.slice(0, length), {}]);
  }
  for (let offset = 0; offset < good.length; offset += 5) {
    const flipped = good.slice();
    flipped[offset] ^= 0x41;
    cases.push([`byte ${offset} flipped`, flipped, {}]);
  }
  const other = await webcrypto.fernet(randomBytes(32));
  cases.push(["another key's token", await other.encrypt(new Uint8Array(3)), {}]);
  cases.push(["expired", good, { ttl: 60, now: clock(1061) }]);
  cases.push(["from the future", good, { ttl: 60, now: clock(900) }]);
  cases.push(["beyond the skew", good, { maxClockSkew: 5, now: clock(990) }]);
  cases.push(["a negative ttl", good, { ttl: -1 }]);
  cases.push(["not a whole block", new Uint8Array(MIN_TOKEN_LENGTH + 1).fill(TOKEN_VERSION), {}]);
  const tails = [[0], [17], [0xff], [4, 5, 5, 5, 5], [5, 5, 0, 5, 5], [1, 2], [3, 3, 3]];
  for (const tail of tails) {
    for (const blocks of [1, 3]) {
      const plain = new Uint8Array(16 * blocks).fill(0x41);
      plain.set(tail, plain.length - tail.length);
      cases.push([
        `padding ${tail} in ${blocks} blocks`,
        await signed(key, await rawBody(key, plain)),
        {},
      ]);
    }
  }
  const version = await rawBody(key, new Uint8Array(16).fill(16));
  version[0] = 0x81;
  cases.push(["version 0x81 behind a valid HMAC", await signed(key, version), {}]);
  for (const [what, token, options] of cases) {
    const [a, b] = [
      await outcome(ours.decrypt(token, options)),
      await outcome(theirs.decrypt(token, options)),
    ];
    assert.equal(a, b, what);
  }
  const reasons = new Set<string>();
  for (const [, token, options] of cases) {
    reasons.add((await outcome(ours.decrypt(token, options))).split(":")[0]);
  }
  // The cases reach every check: a test that only saw "hmac" would prove little.
  for (
    const expected of ["too-short", "length", "version", "hmac", "expired", "future", "padding"]
  ) {
    assert.ok(
      [...reasons].some((reason) => reason === `InvalidTokenError ${expected}`),
      `no case failed with ${expected}: ${[...reasons].join(", ")}`,
    );
  }
  assert.ok(reasons.has("ok 13"), "the correctly padded control token opens");
  assert.ok(reasons.has("RangeError -"));
});

Deno.test("OpenSSL decrypts tokens whose buffers are views at an offset, and leaves them unchanged", async () => {
  const key = randomBytes(32);
  const [ours, theirs] = await codecs(key);
  const plaintext = randomBytes(100_001);
  const framed = await theirs.encrypt(plaintext, { prefix: 13 });
  const copy = framed.slice();
  assert.deepEqual(await ours.decrypt(framed.subarray(13)), plaintext);
  assert.deepEqual(framed, copy);
  const inner = new Uint8Array(plaintext.length + 20);
  inner.set(plaintext, 7);
  const view = inner.subarray(7, 7 + plaintext.length);
  assert.deepEqual(await theirs.decrypt(await ours.encrypt(view)), plaintext);
});

Deno.test("OpenSSL runs many tokens at once and each comes out right", async () => {
  const [ours, theirs] = await codecs(randomBytes(32));
  const items = Array.from({ length: 32 }, (_, i) => randomBytes(1000 * i + 5));
  const tokens = await Promise.all(items.map((item) => ours.encrypt(item)));
  const opened = await Promise.all(tokens.map((token) => ours.decrypt(token)));
  assert.deepEqual(opened, items);
  assert.deepEqual(await Promise.all(tokens.map((token) => theirs.decrypt(token))), items);
});

Deno.test("key schedules on different backends ratchet to the same keys", async () => {
  const key = randomBytes(32);
  const ours = new KeySchedule(key, 2, openssl);
  const theirs = new KeySchedule(key, 2, webcrypto);
  for (let seq = 0; seq < 9; seq++) {
    const [a, b] = await Promise.all([ours.keyFor(seq), theirs.keyFor(seq)]);
    assert.deepEqual(a.raw, b.raw);
    const token = await a.fernet.encrypt(new Uint8Array([seq]));
    assert.deepEqual(await b.fernet.decrypt(token), new Uint8Array([seq]));
  }
});

for (const [client, server] of PAIRS) {
  Deno.test(`a session with ${client.name} on the client and ${server.name} on the server carries records both ways across ratchets`, async () => {
    await using pair = await channelPair({ crypto: client, recordsPerKey: 3 }, {
      crypto: server,
      recordsPerKey: 3,
    });
    const sent: Uint8Array[] = [];
    for (let i = 0; i < 8; i++) {
      const payload = randomBytes(i * 70_001 + 1);
      sent.push(payload);
      const record = new Uint8Array(RECORD_HEADER_SIZE + payload.length);
      record.set(payload, RECORD_HEADER_SIZE);
      const [to, from] = i % 2 === 0 ? [pair.client, pair.server] : [pair.server, pair.client];
      const sending = to.sendData(record);
      const got = await from.receive();
      await sending;
      assert.equal(got.type, "data");
      assert.deepEqual(got.type === "data" ? got.bytes : undefined, payload, `record ${i}`);
    }
    await pair.client.send({ type: "hello", n: 1 });
    assert.deepEqual(await pair.server.receive(), {
      type: "message",
      message: { type: "hello", n: 1 },
    });
  });
}

Deno.test("loadCryptoBackend() names each backend, and auto is OpenSSL where it loads", () => {
  assert.deepEqual([...CRYPTO_BACKEND_CHOICES], ["auto", "openssl", "webcrypto"]);
  assert.equal(openssl.name, "openssl");
  assert.match(openssl.description, /^OpenSSL \d+\.\d+\.\d+\S* libcrypto \(nonblocking FFI\)$/);
  assert.equal(webcrypto.name, "webcrypto");
  assert.equal(webcrypto.description, "WebCrypto (CRYPTO_BACKEND = webcrypto)");
  assert.equal(automatic.name, "openssl");
  assert.equal(automatic.description, openssl.description);
  assert.equal(loadCryptoBackend("auto"), automatic, "loaded once");
  assert.equal(loadCryptoBackend("openssl"), openssl, "loaded once");
});

Deno.test("loadCryptoBackend() refuses an unknown value with a one-line ConfigError", () => {
  assert.throws(() => loadCryptoBackend("boringssl"), (error: Error) => {
    assert.ok(error instanceof ConfigError);
    assert.equal(
      error.message,
      'CRYPTO_BACKEND must be one of auto, openssl, webcrypto, got "boringssl"',
    );
    return true;
  });
});

/** Runs `code` (which imports the backend module) in a deno without --allow-ffi. */
function withoutFfi(code: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return inChild(code, []);
}

/** Runs `code` (which imports the backend module) in a child deno with `flags`. */
async function inChild(
  code: string,
  flags: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(
      script,
      `import * as backend from ${JSON.stringify(MODULE)};\n${code}`,
    );
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--quiet",
        "--no-prompt",
        "--no-config",
        `--allow-read=${script}`,
        ...flags,
        script,
      ],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder();
    return {
      code: output.code,
      stdout: text.decode(output.stdout),
      stderr: text.decode(output.stderr),
    };
  } finally {
    await Deno.remove(script);
  }
}

Deno.test("without --allow-ffi, auto falls back to WebCrypto and says why; its tokens still open here", async () => {
  const key = randomBytes(32);
  const run = await withoutFfi(`
const chosen = backend.loadCryptoBackend("auto");
const codec = await chosen.fernet(Uint8Array.fromHex("${key.toHex()}"));
console.log(JSON.stringify({ name: chosen.name, description: chosen.description,
  token: await codec.encryptText("from a process without ffi") }));
`);
  assert.equal(run.code, 0, run.stderr);
  const result = JSON.parse(run.stdout);
  assert.equal(result.name, "webcrypto");
  assert.equal(result.description, "WebCrypto (libcrypto not loaded: no --allow-ffi permission)");
  const plaintext = await (await openssl.fernet(key)).decryptText(result.token);
  assert.equal(new TextDecoder().decode(plaintext), "from a process without ffi");
});

Deno.test("auto opens libcrypto at the first large token, not for small ones, and its tokens are WebCrypto's", async () => {
  const key = randomBytes(32);
  const iv = randomBytes(16);
  const run = await inChild(
    `
const chosen = backend.loadCryptoBackend("auto");
const codec = await chosen.fernet(Uint8Array.fromHex("${key.toHex()}"));
const options = { iv: Uint8Array.fromHex("${iv.toHex()}"), now: () => 1700000000 };
const small = await codec.encrypt(new Uint8Array(1000).fill(7), options);
await codec.decrypt(small);
const afterSmall = backend.libCryptoOpened();
const large = await codec.encrypt(new Uint8Array(backend.LIBCRYPTO_MIN_BYTES).fill(9), options);
const afterLarge = backend.libCryptoOpened();
console.log(JSON.stringify({ afterSmall, afterLarge, small: small.toHex(), large: large.toHex() }));
`,
    ["--allow-ffi"],
  );
  assert.equal(run.code, 0, run.stderr);
  const result = JSON.parse(run.stdout);
  assert.equal(result.afterSmall, false, "a 1,000-byte token opened libcrypto");
  assert.equal(result.afterLarge, true, "a 64 KiB token did not open libcrypto");
  const reference = await webcrypto.fernet(key);
  const options = { iv, now: clock(1_700_000_000) };
  assert.equal(
    result.small,
    (await reference.encrypt(new Uint8Array(1000).fill(7), options)).toHex(),
  );
  assert.equal(
    result.large,
    (await reference.encrypt(new Uint8Array(64 * 1024).fill(9), options)).toHex(),
  );
});

Deno.test("without --allow-ffi, CRYPTO_BACKEND = openssl is a one-line ConfigError with a hint", async () => {
  const run = await withoutFfi(`
try {
  backend.loadCryptoBackend("openssl");
  console.log("loaded");
} catch (error) {
  console.log(JSON.stringify({ name: error.constructor.name, message: error.message, hint: error.hint }));
}
`);
  assert.equal(run.code, 0, run.stderr);
  const result = JSON.parse(run.stdout);
  assert.equal(result.name, "ConfigError");
  assert.equal(
    result.message,
    "CRYPTO_BACKEND = openssl, but libcrypto cannot be loaded: no --allow-ffi permission",
  );
  assert.match(result.hint, /^run it with --allow-ffi/);
  assert.doesNotMatch(
    result.hint,
    /apt-get/,
    "libcrypto is installed: only the permission is missing",
  );
  assert.ok(!result.message.includes("\n"));
});

Deno.test("encrypt() with output: OpenSSL builds the token in it (prefix zeroed), WebCrypto ignores it, both tokens alike", async () => {
  const key = randomBytes(32);
  const [ours, theirs] = await codecs(key);
  assert.equal(openssl.reusesBuffers, true);
  assert.equal(webcrypto.reusesBuffers, false);
  const iv = randomBytes(16);
  for (const size of [0, 5, 16, 1000, 1024 * 1024 + 9]) {
    const plaintext = randomBytes(size);
    const options = { iv, now: clock(1234), prefix: 4 };
    const expected = await theirs.encrypt(plaintext, options);
    const output = new Uint8Array(expected.length + 100).fill(0xee);
    const made = await ours.encrypt(plaintext, { ...options, output });
    assert.equal(made.buffer, output.buffer, `size ${size}: built in the given buffer`);
    assert.equal(made.byteOffset, 0);
    assert.deepEqual(made, expected, `size ${size}`);
    const ignored = await theirs.encrypt(plaintext, { ...options, output });
    assert.notEqual(ignored.buffer, output.buffer);
    assert.deepEqual(ignored, expected);
    // Too small: a buffer of its own, the given one untouched.
    const small = new Uint8Array(expected.length - 1).fill(0xee);
    const fresh = await ours.encrypt(plaintext, { ...options, output: small });
    assert.notEqual(fresh.buffer, small.buffer);
    assert.deepEqual(fresh, expected);
    assert.ok(small.every((byte) => byte === 0xee));
  }
});

Deno.test("decrypt() with inPlace: OpenSSL returns a view of the token's buffer, WebCrypto a buffer of its own, the same plaintext and refusals", async () => {
  const key = randomBytes(32);
  const [ours, theirs] = await codecs(key);
  for (const size of [0, 1, 15, 16, 17, 100_000, 1024 * 1024 + 9]) {
    const plaintext = randomBytes(size);
    const token = await theirs.encrypt(plaintext, { prefix: 4 });
    const framed = token.slice();
    const opened = await ours.decrypt(framed.subarray(4), { inPlace: true });
    assert.equal(opened.buffer, framed.buffer, `size ${size}`);
    assert.deepEqual(opened, plaintext, `size ${size}`);
    assert.deepEqual(framed.subarray(0, 4 + 25), token.subarray(0, 4 + 25), "header untouched");
    const copy = token.slice();
    const own = await theirs.decrypt(copy.subarray(4), { inPlace: true });
    assert.notEqual(own.buffer, copy.buffer);
    assert.deepEqual(own, plaintext);
  }
  const good = await ours.encrypt(randomBytes(40));
  const tampered = good.slice();
  tampered[30] ^= 1;
  assert.equal(
    await outcome(ours.decrypt(tampered.slice(), { inPlace: true })),
    await outcome(theirs.decrypt(tampered, { inPlace: true })),
  );
  const badPadding = new Uint8Array(32).fill(0x41);
  const body = await rawBody(key, badPadding);
  assert.equal(
    await outcome(ours.decrypt(await signed(key, body), { inPlace: true })),
    "InvalidTokenError padding: bad padding",
  );
});

Deno.test("a channel on OpenSSL reuses its DATA frame buffers and still delivers every byte, record sizes mixed", async () => {
  await using pair = await channelPair({ crypto: openssl, cryptoDepth: 2 }, { crypto: openssl });
  const chunk = pair.client.chunkSize;
  const sizes = [chunk, chunk, 1, chunk, chunk - 1, 4 * 1024 * 1024, chunk, 0, chunk, chunk];
  const payloads = sizes.map((size) => randomBytes(size));
  const sending = (async () => {
    const window: Promise<void>[] = [];
    for (const payload of payloads) {
      const record = new Uint8Array(RECORD_HEADER_SIZE + payload.length);
      record.set(payload, RECORD_HEADER_SIZE);
      window.push(pair.client.sendData(record));
      if (window.length >= 2) await window.shift();
    }
    await Promise.all(window);
  })();
  for (const [index, payload] of payloads.entries()) {
    const got = await pair.server.receive();
    assert.equal(got.type, "data");
    assert.deepEqual(got.type === "data" ? got.bytes : undefined, payload, `record ${index}`);
  }
  await sending;
});
