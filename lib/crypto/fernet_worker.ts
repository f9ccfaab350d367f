/**
 * Worker side of the crypto pool (lib/crypto/crypto_pool.ts): encrypts and decrypts large
 * records with lib/crypto/fernet.ts off the main thread, so that a process uses more than
 * one core (WebCrypto runs on the calling thread in Deno).
 *
 * Messages: `{ id, op: "encrypt" | "decrypt", key, data, prefix?, now? }` in,
 * `{ id, data, timestamp? }` or `{ id, error }` out; buffers are transferred, not copied.
 *
 * @module
 */
/// <reference lib="deno.worker" />
import { Fernet, InvalidTokenError } from "./fernet.ts";
import { releaseBuffer } from "../buffers.ts";

/** A request from the pool. */
export interface CryptoRequest {
  id: number;
  op: "encrypt" | "decrypt" | "forget";
  /** The 32-byte Fernet key. */
  key: Uint8Array;
  data: Uint8Array;
  prefix?: number;
  now?: number;
}

/** The answer to one request. */
export type CryptoResponse =
  | { id: number; data: Uint8Array<ArrayBuffer>; timestamp?: number }
  | { id: number; error: { invalidToken: boolean; message: string } };

// Few keys, and forgotten when their session ends: a worker should not become a
// store of old session keys (forward secrecy).
const MAX_CACHED_KEYS = 4;

function keyName(key: Uint8Array): string {
  return Array.from(key, (b) => b.toString(16).padStart(2, "0")).join("");
}
const keys = new Map<string, Promise<Fernet>>();

function fernetFor(key: Uint8Array): Promise<Fernet> {
  const id = keyName(key);
  let fernet = keys.get(id);
  if (!fernet) {
    if (keys.size >= MAX_CACHED_KEYS) keys.delete(keys.keys().next().value!);
    fernet = Fernet.fromKey(key);
    keys.set(id, fernet);
  }
  return fernet;
}

async function handle(request: CryptoRequest): Promise<CryptoResponse> {
  const fernet = await fernetFor(request.key);
  if (request.op === "encrypt") {
    const now = request.now;
    const data = await fernet.encrypt(request.data, {
      prefix: request.prefix,
      now: now === undefined ? undefined : () => now,
    });
    return { id: request.id, data };
  }
  const data = await fernet.decrypt(request.data);
  return { id: request.id, data, timestamp: fernet.timestampOf(request.data) };
}

self.onmessage = async (event: MessageEvent<CryptoRequest>) => {
  const request = event.data;
  if (request.op === "forget") {
    keys.delete(keyName(request.key));
    return;
  }
  let response: CryptoResponse;
  try {
    response = await handle(request);
    releaseBuffer(request.data);
  } catch (error) {
    response = {
      id: request.id,
      error: {
        invalidToken: error instanceof InvalidTokenError,
        message: (error as Error).message,
      },
    };
  }
  if ("data" in response) self.postMessage(response, [response.data.buffer]);
  else self.postMessage(response);
};
