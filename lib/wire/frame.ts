/**
 * Framing (docs/PROTOCOL.md §1): every frame is a u32 big-endian length followed by
 * that many bytes. Lengths are checked against the caller's limit before anything is
 * allocated; the owner bounds how long a read may wait (lib/wire/deadline.ts).
 *
 * This module only moves bytes; what a frame holds is the channel's business.
 *
 * @module
 */
import { ProtocolError, TruncatedFrameError } from "../errors.ts";

/** Size of the length prefix. */
export const FRAME_HEADER_SIZE = 4;

/** Anything we can read frames from: a `Deno.Conn` or an in-memory stream end. */
export interface ByteReader {
  read(buffer: Uint8Array<ArrayBuffer>): Promise<number | null>;
}

/** Anything we can write frames to. */
export interface ByteWriter {
  write(bytes: Uint8Array<ArrayBuffer>): Promise<number>;
}

/** Options for {@link FrameReader}. */
export interface FrameReaderOptions {
  /** Largest frame accepted; may be changed later (e.g. after the handshake). */
  maxFrameSize: number;
}

const BUFFER_SIZE = 64 * 1024;

/**
 * Reads length-prefixed frames. Small frames are served from one 64 KiB buffer; a
 * large frame is read straight into its own allocation, so a 1 MiB record costs one
 * copy at most.
 */
export class FrameReader {
  #source: ByteReader;
  #buffer = new Uint8Array(BUFFER_SIZE);
  #start = 0;
  #end = 0;
  #maxFrameSize: number;
  #failed: Error | undefined;

  constructor(source: ByteReader, options: FrameReaderOptions) {
    this.#source = source;
    this.#maxFrameSize = options.maxFrameSize;
  }

  /** Change the frame size limit (raised once the peer is authenticated). */
  set maxFrameSize(limit: number) {
    this.#maxFrameSize = limit;
  }

  get maxFrameSize(): number {
    return this.#maxFrameSize;
  }

  async #fill(): Promise<number | null> {
    if (this.#start === this.#end) this.#start = this.#end = 0;
    else if (this.#end === this.#buffer.length) {
      this.#buffer.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    const n = await this.#source.read(this.#buffer.subarray(this.#end));
    if (n === null) return null;
    this.#end += n;
    return n;
  }

  /**
   * The next frame's payload, or `null` when the peer closed cleanly between frames.
   * A stream that failed stays failed.
   */
  async read(): Promise<Uint8Array<ArrayBuffer> | null> {
    if (this.#failed) throw this.#failed;
    try {
      return await this.#read();
    } catch (error) {
      this.#failed = error as Error;
      throw error;
    }
  }

  async #read(): Promise<Uint8Array<ArrayBuffer> | null> {
    while (this.#end - this.#start < FRAME_HEADER_SIZE) {
      const n = await this.#fill();
      if (n === null) {
        if (this.#end === this.#start) return null;
        throw new TruncatedFrameError("connection closed in the middle of a frame header");
      }
    }
    const view = new DataView(this.#buffer.buffer, this.#start, FRAME_HEADER_SIZE);
    const length = view.getUint32(0);
    // Check the length against the limit before allocating anything for it.
    if (length === 0 || length > this.#maxFrameSize) {
      throw new ProtocolError(
        `frame length ${length} is outside the allowed range 1..${this.#maxFrameSize}`,
      );
    }
    this.#start += FRAME_HEADER_SIZE;
    const buffered = this.#end - this.#start;
    if (buffered >= length) {
      const frame = this.#buffer.slice(this.#start, this.#start + length);
      this.#start += length;
      return frame;
    }
    const frame = new Uint8Array(length);
    frame.set(this.#buffer.subarray(this.#start, this.#end));
    this.#start = this.#end = 0;
    let filled = buffered;
    while (filled < length) {
      const n = await this.#source.read(frame.subarray(filled));
      if (n === null) {
        throw new TruncatedFrameError(
          `connection closed in the middle of a frame (${filled} of ${length} bytes)`,
        );
      }
      filled += n;
    }
    return frame;
  }
}

/** Write all of `bytes`, looping over short writes. */
export async function writeAll(sink: ByteWriter, bytes: Uint8Array<ArrayBuffer>): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await sink.write(bytes.subarray(written));
}

/**
 * Fill in the length prefix of a buffer that reserved {@link FRAME_HEADER_SIZE}
 * leading bytes for it, and return the whole frame.
 */
export function sealFrame(buffer: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
  new DataView(buffer.buffer, buffer.byteOffset, FRAME_HEADER_SIZE).setUint32(
    0,
    buffer.length - FRAME_HEADER_SIZE,
  );
  return buffer;
}

/** A frame holding a copy of `payload`. */
export function encodeFrame(payload: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
  const frame = new Uint8Array(FRAME_HEADER_SIZE + payload.length);
  frame.set(payload, FRAME_HEADER_SIZE);
  return sealFrame(frame);
}
