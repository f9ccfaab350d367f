/**
 * Records (docs/PROTOCOL.md §3): the plaintext inside every Fernet token after the
 * handshake, `seq (u64 BE) | type (u8) | payload`. Encoding and strict parsing, no I/O.
 *
 * @module
 */
import { ProtocolError } from "../errors.ts";
import { tokenLength } from "../crypto/fernet_token.ts";

/** Record types (PROTOCOL.md §3.2). */
export const RecordType = {
  MESSAGE: 0x01,
  DATA: 0x02,
  FILE_END: 0x03,
  GOODBYE: 0x04,
  PING: 0x05,
} as const;
/** seq (8) + type (1). */
export const RECORD_HEADER_SIZE = 9;
/** Largest record payload: file chunks and control messages are at most this. */
export const MAX_RECORD_PAYLOAD = 4 * 1024 * 1024;
/** Largest frame after authentication: one token carrying the largest record. */
export const MAX_FRAME_SIZE = tokenLength(RECORD_HEADER_SIZE + MAX_RECORD_PAYLOAD);
/** Largest control message (JSON bytes). */
export const MAX_MESSAGE_SIZE = 1024 * 1024;
/** FILE_END payload: size (u64) + SHA-256 (32). */
export const FILE_END_SIZE = 40;
/** A parsed record, as {@link Channel.receive} yields it (PINGs are not). */
export type Incoming =
  | { type: "message"; message: unknown }
  | { type: "data"; bytes: Uint8Array<ArrayBuffer> }
  | { type: "file_end"; size: number; sha256: string }
  | { type: "goodbye"; reason: string };

const decoder = new TextDecoder("utf-8", { fatal: true });

/** Fill in the header of a record buffer that reserved RECORD_HEADER_SIZE bytes for it. */
export function writeRecordHeader(
  record: Uint8Array<ArrayBuffer>,
  seq: number,
  type: number,
): void {
  const view = new DataView(record.buffer, record.byteOffset, RECORD_HEADER_SIZE);
  view.setBigUint64(0, BigInt(seq));
  view.setUint8(8, type);
}

/** A FILE_END record body (header space reserved): size and SHA-256 of the file. */
export function encodeFileEnd(size: number, sha256: Uint8Array): Uint8Array<ArrayBuffer> {
  const record = new Uint8Array(RECORD_HEADER_SIZE + FILE_END_SIZE);
  new DataView(record.buffer).setBigUint64(RECORD_HEADER_SIZE, BigInt(size));
  record.set(sha256, RECORD_HEADER_SIZE + 8);
  return record;
}

/**
 * Parse a decrypted record that must carry sequence number `expectedSeq`. Returns
 * `undefined` for a PING; throws ProtocolError for anything malformed or out of order.
 */
export function parseRecord(
  record: Uint8Array<ArrayBuffer>,
  expectedSeq: number,
): Incoming | undefined {
  const fail = (message: string): never => {
    throw new ProtocolError(message);
  };
  if (record.length < RECORD_HEADER_SIZE) fail("record shorter than its header");
  const view = new DataView(record.buffer, record.byteOffset, record.length);
  const seq = view.getBigUint64(0);
  if (seq !== BigInt(expectedSeq)) {
    fail(`out-of-sequence record: expected ${expectedSeq}, got ${seq}`);
  }
  const payload = record.subarray(RECORD_HEADER_SIZE);
  switch (record[8]) {
    case RecordType.MESSAGE: {
      if (payload.length > MAX_MESSAGE_SIZE) fail(`control message of ${payload.length} bytes`);
      let message: unknown;
      try {
        message = JSON.parse(decoder.decode(payload));
      } catch {
        fail("control message is not valid UTF-8 JSON");
      }
      return { type: "message", message };
    }
    case RecordType.DATA:
      return { type: "data", bytes: payload };
    case RecordType.FILE_END: {
      if (payload.length !== FILE_END_SIZE) fail("FILE_END record has the wrong length");
      const size = Number(view.getBigUint64(RECORD_HEADER_SIZE));
      return { type: "file_end", size, sha256: payload.subarray(8).toHex() };
    }
    case RecordType.GOODBYE: {
      let reason = "";
      try {
        reason = decoder.decode(payload).slice(0, 500);
      } catch { /* a reason is optional */ }
      return { type: "goodbye", reason };
    }
    case RecordType.PING:
      if (payload.length !== 0) fail("PING record with a payload");
      return undefined;
    default:
      return fail(`unknown record type ${record[8]}`);
  }
}
