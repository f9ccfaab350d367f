/**
 * The mutual, transcript-bound handshake (docs/PROTOCOL.md §2).
 *
 * Both sides prove they hold SHARED_KEY without sending it, agree on fresh
 * per-session keys through an ephemeral X25519 exchange (forward secrecy: a later
 * leak of SHARED_KEY does not open recorded sessions), and bind everything to the
 * transcript, so a recorded session replayed to a new connection fails at the
 * client's confirmation and the server keeps no state for it.
 *
 * ```
 * C -> S  ClientHello  magic "RECN" | version | 0x01 | key id (8) | nonce (32) | X25519 (32)
 * S -> C  ServerHello  magic "RECN" | version | 0x02 | key id (8) | nonce (32) | X25519 (32) | confirm (32)
 * C -> S  ClientFinish magic "RECN" | version | 0x03 | confirm (32)
 * S -> C  Refusal      magic "RECN" | version | 0x7f | code (1) | UTF-8 text
 * ```
 *
 * @module
 */
import { HandshakeError, KeyRejectedError, ProtocolError } from "../errors.ts";

/** The protocol version this build's client offers (the newest it speaks). */
export const PROTOCOL_VERSION = 3;
/**
 * Versions this build's server accepts: the client's offer, when listed, is the
 * session's version (PROTOCOL.md §2.7). Version 1 stays for clients not yet upgraded.
 */
export const SUPPORTED_VERSIONS: readonly number[] = [1, 2, PROTOCOL_VERSION];
/** "RECN". */
export const MAGIC = new Uint8Array([0x52, 0x45, 0x43, 0x4e]);
/** Largest frame accepted before the peer is authenticated. */
export const MAX_HANDSHAKE_FRAME_SIZE = 256;

export const HelloType = {
  CLIENT_HELLO: 0x01,
  SERVER_HELLO: 0x02,
  CLIENT_FINISH: 0x03,
  REFUSAL: 0x7f,
} as const;

/** Codes carried by a Refusal. Before authentication the server says nothing more specific. */
export const RefusalCode = {
  UNSUPPORTED_VERSION: 1,
  KEY_NOT_ACCEPTED: 2,
  REFUSED: 3,
  BUSY: 4,
} as const;

const HEADER = 6;
const KEY_ID_SIZE = 8;
const NONCE_SIZE = 32;
const PUBLIC_KEY_SIZE = 32;
const MAC_SIZE = 32;
const CLIENT_HELLO_SIZE = HEADER + KEY_ID_SIZE + NONCE_SIZE + PUBLIC_KEY_SIZE;
const SERVER_HELLO_SIZE = CLIENT_HELLO_SIZE + MAC_SIZE;
const CLIENT_FINISH_SIZE = HEADER + MAC_SIZE;
const encoder = new TextEncoder();
const SESSION_INFO = encoder.encode("recon v1 session keys");

/** How the handshake reads and writes whole frames. */
export interface HandshakeIo {
  readFrame(): Promise<Uint8Array<ArrayBuffer> | null>;
  writeFrame(payload: Uint8Array<ArrayBuffer>): Promise<void>;
}

/** What a successful handshake yields. */
export interface SessionKeys {
  /** Fernet key (32 bytes) for what this side sends. */
  sendKey: Uint8Array<ArrayBuffer>;
  /** Fernet key (32 bytes) for what this side receives. */
  receiveKey: Uint8Array<ArrayBuffer>;
  /** Key id (16 hex chars) of the SHARED_KEY used. */
  keyId: string;
  /** The session's protocol version: the client's offer, which the server accepted. */
  version: number;
}

/** Test hooks: a fixed version to offer (an older client; never from the CLI). */
export interface ClientHandshakeOptions {
  version?: number;
}

/** Test hooks: the versions to accept (an older server). */
export interface ServerHandshakeOptions {
  versions?: readonly number[];
}

function fromHex(text: string): Uint8Array<ArrayBuffer> {
  if (!/^[0-9a-f]{16}$/.test(text)) throw new TypeError(`bad key id "${text}"`);
  return Uint8Array.fromHex(text);
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function header(type: number, version = PROTOCOL_VERSION): Uint8Array<ArrayBuffer> {
  return concat(MAGIC, new Uint8Array([version, type]));
}

/** Encode a Refusal frame payload; its version byte is the newest version the server speaks. */
export function encodeRefusal(
  code: number,
  text: string,
  version = PROTOCOL_VERSION,
): Uint8Array<ArrayBuffer> {
  return concat(header(HelloType.REFUSAL, version), new Uint8Array([code]), encoder.encode(text))
    .subarray(0, MAX_HANDSHAKE_FRAME_SIZE);
}

interface ParsedHeader {
  version: number;
  type: number;
}

function parseHeader(frame: Uint8Array<ArrayBuffer>, what: string): ParsedHeader {
  if (frame.length < HEADER || MAGIC.some((b, i) => frame[i] !== b)) {
    throw new ProtocolError(`${what} is not a recon handshake message (bad magic)`);
  }
  return { version: frame[4], type: frame[5] };
}

function refusalError(
  frame: Uint8Array<ArrayBuffer>,
  keyId: string,
  offeredVersion: number,
): HandshakeError {
  const code = frame[HEADER];
  const text = new TextDecoder().decode(frame.subarray(HEADER + 1));
  if (code === RefusalCode.KEY_NOT_ACCEPTED) {
    return new KeyRejectedError(`the server does not accept key id ${keyId}`, {
      // Refusal 2 is the same for every reason (§2.7), so the hint names them all.
      hint: "check SHARED_KEY in recon.opts: the server does not know this key, or it was " +
        "revoked or replaced, or it may not be used from this address; the server's log " +
        "says which",
    });
  }
  if (code === RefusalCode.UNSUPPORTED_VERSION) {
    // The Refusal's version byte is the newest version the server speaks (§2.9).
    const serverVersion = frame[4];
    return new HandshakeError(
      `version mismatch: the server speaks protocol version ${serverVersion}, this client speaks ${offeredVersion}`,
      {
        hint: serverVersion < offeredVersion
          ? "upgrade recon-server on the recon box: a newer server also serves older clients"
          : `install the same recon version on the client and the server (the server said: ${text})`,
      },
    );
  }
  if (code === RefusalCode.BUSY) {
    return new HandshakeError(`the server is busy: ${text}`, {
      hint: "wait a minute and try again; the server log says why",
    });
  }
  return new HandshakeError(`the server refused the handshake: ${text || "refused"}`, {
    hint: "check SHARED_KEY and the server log",
  });
}

async function importHmac(raw: Uint8Array<ArrayBuffer>): Promise<CryptoKey> {
  return await crypto.subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
    "verify",
  ]);
}

async function newEphemeral(): Promise<
  { pair: CryptoKeyPair; publicRaw: Uint8Array<ArrayBuffer> }
> {
  const pair = await crypto.subtle.generateKey({ name: "X25519" }, false, [
    "deriveBits",
  ]) as CryptoKeyPair;
  const publicRaw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { pair, publicRaw };
}

interface Derived {
  clientToServer: Uint8Array<ArrayBuffer>;
  serverToClient: Uint8Array<ArrayBuffer>;
  serverConfirm: CryptoKey;
  clientConfirm: CryptoKey;
  transcript: Uint8Array<ArrayBuffer>;
}

/**
 * HKDF-SHA256 over SHARED_KEY ‖ X25519 secret, salted with the transcript hash, into
 * two Fernet keys and two confirmation keys. The raw SHARED_KEY never encrypts traffic.
 */
async function deriveSession(
  sharedKey: Uint8Array<ArrayBuffer>,
  ownPrivate: CryptoKey,
  peerPublicRaw: Uint8Array<ArrayBuffer>,
  clientHello: Uint8Array<ArrayBuffer>,
  serverHelloBody: Uint8Array<ArrayBuffer>,
): Promise<Derived> {
  let secret: Uint8Array<ArrayBuffer>;
  try {
    const peer = await crypto.subtle.importKey("raw", peerPublicRaw, { name: "X25519" }, false, []);
    secret = new Uint8Array(
      await crypto.subtle.deriveBits({ name: "X25519", public: peer }, ownPrivate, 256),
    );
  } catch (error) {
    // Includes low-order points, which WebCrypto rejects (all-zero shared secret).
    throw new ProtocolError("peer sent an unusable X25519 public key", { cause: error });
  }
  const transcript = new Uint8Array(
    await crypto.subtle.digest("SHA-256", concat(clientHello, serverHelloBody)),
  );
  const ikm = await crypto.subtle.importKey("raw", concat(sharedKey, secret), "HKDF", false, [
    "deriveBits",
  ]);
  const okm = new Uint8Array(
    await crypto.subtle.deriveBits(
      { name: "HKDF", hash: "SHA-256", salt: transcript, info: SESSION_INFO },
      ikm,
      128 * 8,
    ),
  );
  secret.fill(0);
  return {
    clientToServer: okm.slice(0, 32),
    serverToClient: okm.slice(32, 64),
    serverConfirm: await importHmac(okm.subarray(64, 96)),
    clientConfirm: await importHmac(okm.subarray(96, 128)),
    transcript,
  };
}

async function expectFrame(io: HandshakeIo, what: string): Promise<Uint8Array<ArrayBuffer>> {
  const frame = await io.readFrame();
  if (frame === null) throw new HandshakeError(`connection closed before the ${what}`);
  return frame;
}

/**
 * Client side. Resolves with the session keys once the server has proved it holds
 * the key and our confirmation is sent.
 */
export async function clientHandshake(
  io: HandshakeIo,
  sharedKey: Uint8Array<ArrayBuffer>,
  keyId: string,
  options: ClientHandshakeOptions = {},
): Promise<SessionKeys> {
  const { pair, publicRaw } = await newEphemeral();
  const nonce = crypto.getRandomValues(new Uint8Array(NONCE_SIZE));
  const version = options.version ?? PROTOCOL_VERSION;
  const hello = concat(
    header(HelloType.CLIENT_HELLO, version),
    fromHex(keyId),
    nonce,
    publicRaw,
  );
  await io.writeFrame(hello);

  const reply = await expectFrame(io, "server's hello").catch((error) => {
    if (error instanceof ProtocolError) {
      throw new HandshakeError(`the answer is not a recon handshake (${error.message})`, {
        cause: error,
        hint: "is SERVER_HOST:SERVER_PORT a recon-server, and of this version?",
      });
    }
    // A server closes without a word when TRUSTEDIPS does not list us.
    throw new HandshakeError(
      error instanceof HandshakeError
        ? "the server closed the connection without answering"
        : `the server closed the connection during the handshake (${error.message})`,
      { cause: error, hint: "is this address in the server's TRUSTEDIPS? the server log says why" },
    );
  });
  const { type } = parseHeader(reply, "the server's reply");
  if (type === HelloType.REFUSAL) throw refusalError(reply, keyId, version);
  if (type !== HelloType.SERVER_HELLO || reply.length !== SERVER_HELLO_SIZE) {
    throw new ProtocolError("the server's hello is malformed");
  }
  const serverHelloBody = reply.subarray(0, CLIENT_HELLO_SIZE);
  const serverPublic = reply.subarray(HEADER + KEY_ID_SIZE + NONCE_SIZE, CLIENT_HELLO_SIZE);
  const derived = await deriveSession(
    sharedKey,
    pair.privateKey,
    serverPublic,
    hello,
    serverHelloBody,
  );
  const proof = reply.subarray(CLIENT_HELLO_SIZE);
  const serverProved = await crypto.subtle.verify(
    "HMAC",
    derived.serverConfirm,
    proof,
    derived.transcript,
  );
  if (!serverProved) {
    throw new HandshakeError(`the server could not prove it holds SHARED_KEY (key id ${keyId})`, {
      hint:
        "the server's SHARED_KEY differs from ours, or something in between altered the handshake",
    });
  }
  const confirm = new Uint8Array(
    await crypto.subtle.sign("HMAC", derived.clientConfirm, derived.transcript),
  );
  await io.writeFrame(concat(header(HelloType.CLIENT_FINISH, version), confirm));
  return { sendKey: derived.clientToServer, receiveKey: derived.serverToClient, keyId, version };
}

/** Why the server refused a handshake: for its log and lockout accounting. */
export class HandshakeRefused extends HandshakeError {
  readonly stage: string;
  readonly keyId?: string;
  constructor(stage: string, message: string, keyId?: string) {
    super(message);
    this.stage = stage;
    this.keyId = keyId;
  }
}

/**
 * Server side. `keys` maps key id → SHARED_KEY bytes (several during a key rotation).
 * Sends the appropriate Refusal itself and throws {@link HandshakeRefused}; creates no
 * state for the client until its confirmation checks.
 */
export async function serverHandshake(
  io: HandshakeIo,
  keys: ReadonlyMap<string, Uint8Array<ArrayBuffer>>,
  options: ServerHandshakeOptions = {},
): Promise<SessionKeys> {
  const versions = options.versions ?? SUPPORTED_VERSIONS;
  const newest = Math.max(...versions);
  const hello = await io.readFrame();
  if (hello === null) throw new HandshakeRefused("hello", "closed before sending a hello");
  let parsed: ParsedHeader;
  try {
    parsed = parseHeader(hello, "first frame");
  } catch {
    throw new HandshakeRefused("hello", "first frame is not a recon hello (bad magic)");
  }
  if (!versions.includes(parsed.version)) {
    await io.writeFrame(
      encodeRefusal(
        RefusalCode.UNSUPPORTED_VERSION,
        `unsupported protocol version ${parsed.version}; this server speaks version${
          versions.length > 1 ? "s" : ""
        } ${versions.join(", ")}`,
        newest,
      ),
    ).catch(() => {});
    throw new HandshakeRefused("hello", `unsupported protocol version ${parsed.version}`);
  }
  if (parsed.type !== HelloType.CLIENT_HELLO || hello.length !== CLIENT_HELLO_SIZE) {
    await io.writeFrame(encodeRefusal(RefusalCode.REFUSED, "refused", newest)).catch(() => {});
    throw new HandshakeRefused("hello", "malformed client hello");
  }
  const keyId = hello.subarray(HEADER, HEADER + KEY_ID_SIZE).toHex();
  const sharedKey = keys.get(keyId);
  if (!sharedKey) {
    await io.writeFrame(encodeRefusal(RefusalCode.KEY_NOT_ACCEPTED, "key not accepted", newest))
      .catch(() => {});
    throw new HandshakeRefused("hello", `unknown key id ${keyId}`, keyId);
  }
  const clientPublic = hello.subarray(HEADER + KEY_ID_SIZE + NONCE_SIZE);
  const { pair, publicRaw } = await newEphemeral();
  const nonce = crypto.getRandomValues(new Uint8Array(NONCE_SIZE));
  // The ServerHello echoes the client's version: it is the session's (and in the transcript).
  const body = concat(
    header(HelloType.SERVER_HELLO, parsed.version),
    fromHex(keyId),
    nonce,
    publicRaw,
  );
  let derived: Derived;
  try {
    derived = await deriveSession(sharedKey, pair.privateKey, clientPublic, hello, body);
  } catch {
    await io.writeFrame(encodeRefusal(RefusalCode.REFUSED, "refused", newest)).catch(() => {});
    throw new HandshakeRefused("hello", "client sent an unusable X25519 public key", keyId);
  }
  const proof = new Uint8Array(
    await crypto.subtle.sign("HMAC", derived.serverConfirm, derived.transcript),
  );
  await io.writeFrame(concat(body, proof));

  const finish = await io.readFrame();
  if (finish === null) {
    throw new HandshakeRefused(
      "confirm",
      "closed before confirming (client rejected our proof: wrong key?)",
      keyId,
    );
  }
  let finishHeader: ParsedHeader | undefined;
  try {
    finishHeader = parseHeader(finish, "confirmation");
  } catch { /* handled below */ }
  // The confirmation MAC covers the transcript, not this header: check every header byte.
  const ok = finishHeader?.type === HelloType.CLIENT_FINISH &&
    finishHeader.version === parsed.version &&
    finish.length === CLIENT_FINISH_SIZE &&
    await crypto.subtle.verify(
      "HMAC",
      derived.clientConfirm,
      finish.subarray(HEADER),
      derived.transcript,
    );
  if (!ok) {
    await io.writeFrame(encodeRefusal(RefusalCode.REFUSED, "refused", newest)).catch(() => {});
    throw new HandshakeRefused("confirm", "client confirmation did not verify (replay?)", keyId);
  }
  return {
    sendKey: derived.serverToClient,
    receiveKey: derived.clientToServer,
    keyId,
    version: parsed.version,
  };
}
