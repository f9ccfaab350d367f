/**
 * Sending a DICOM file's data set as the file's own bytes (issue 18), for
 * lib/server/dicom_send.ts and dicom_association.ts: when the PACS accepted a file's transfer syntax, its request
 * carries a {@link FileDataSet}, and {@link sendPDataTF} (wrapped around dcmjs-dimse's own
 * P-DATA-TF sending) streams the file as PDUs, a megabyte at a time, in buffers reused from
 * file to file. The library would parse the file whole, encode it again and build two
 * growing buffers per PDU: several copies of every file in memory and ~10 ms of CPU per
 * 512 KiB image, where this keeps ~2 MiB whatever the file's size.
 *
 * @module
 */
import "./quiet_dcmjs.ts"; // first: it must wrap console.error before dcmjs loads
import dimse from "dcmjs-dimse";
import { Buffer } from "node:buffer";

type Request = dimse.requests.Request;

/** The parts of dcmjs-dimse's (undeclared) network object used here and by dicom_association.ts. */
export interface Network {
  socket?: {
    setNoDelay?(noDelay: boolean): unknown;
    destroy(): unknown;
    readonly destroyed?: boolean;
    /** `done` once the socket has taken `data` (or failed to). */
    write(data: Uint8Array, done?: () => void): boolean;
  };
  on(event: "abort", listener: (abort: { source: number; reason: number }) => void): unknown;
  /** Sends a DIMSE message (its command, then its data set) as P-DATA-TF PDUs. */
  _sendPDataTF?(command: Request, contextId: number, maxPduLength: number): void;
  statistics?: { addBytesSent?(bytes: number): void };
}

/** Where a file's data set is, as its start was read (lib/server/dicom_file.ts). */
export interface FileSource {
  path: string;
  sopClassUid: string;
  transferSyntaxUid: string;
  /** The byte after its file meta information. */
  dataSetOffset: number;
  size: number;
}

/**
 * What a sendInstances call (lib/server/dicom_send.ts) reads its files into and makes their P-DATA-TF PDUs
 * in, reused from file to file: fresh ones per file would be garbage that V8 collects late
 * (ArrayBuffers count only as external memory, collected after ~64 MB of them).
 */
export interface ReadBuffer {
  /** For {@link FileDataSet.getDenaturalizedDataset}: as large as the largest data set. */
  bytes: Uint8Array;
  /** For {@link sendPDataTF}: two slots of at most {@link STREAM_CHUNK} bytes of PDUs. */
  slots: Uint8Array[];
  /** The socket's write from each slot, until it has taken the bytes. */
  writes: (Promise<void> | undefined)[];
}

/** A fresh {@link ReadBuffer}. */
export function readBuffer(): ReadBuffer {
  return { bytes: new Uint8Array(0), slots: [], writes: [] };
}

/** The change that ends a send when a file is no longer what its start said. */
function fileChanged(expected: number, found: number | "cut short"): Error {
  return new Error(
    `a file changed while it was sent (${
      found === "cut short" ? "cut short" : `${expected} → ${found} bytes`
    })`,
  );
}

/**
 * A data set the library sends as the bytes of its file's data set, read when it is sent:
 * nothing parsed, nothing encoded again. Only for a presentation context whose transfer
 * syntax is the file's (no transcoding). {@link sendPDataTF} streams it; the library's
 * own path (getDenaturalizedDataset) reads it whole. A file whose size is no longer the
 * size its start was read with ends the association with that reason (which names no
 * file: the delivery's check of each file against the job store says which at the next
 * attempt).
 */
export class FileDataSet extends dimse.Dataset {
  constructor(readonly source: FileSource, readonly buffer: ReadBuffer) {
    super({}, source.transferSyntaxUid);
  }

  /** What the library sends when it makes the PDUs itself. */
  override getDenaturalizedDataset(): Buffer {
    // Synchronous, as the library calls it (its own reading is readFileSync too); it
    // copies the bytes into its PDUs before it returns.
    const { path, size: expected, dataSetOffset } = this.source;
    using file = Deno.openSync(path);
    const { size } = file.statSync();
    if (size !== expected) throw fileChanged(expected, size);
    const length = size - dataSetOffset;
    if (this.buffer.bytes.length < length) this.buffer.bytes = new Uint8Array(length);
    const bytes = this.buffer.bytes.subarray(0, length);
    file.seekSync(dataSetOffset, Deno.SeekMode.Start);
    for (let filled = 0; filled < length;) {
      const n = file.readSync(bytes.subarray(filled));
      if (n === null) throw fileChanged(expected, "cut short");
      filled += n;
    }
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  }
}

/** The largest PDU the library makes (dcmjs-dimse's cap on the peer's maximum). */
const PDU_CAP = 4 * 1024 * 1024;
/** A P-DATA-TF PDU's header and its one PDV item's header (PS3.8 §9.3.5). */
const PDU_HEADER = 6;
const PDV_HEADER = 6;
/** File bytes read and written at a time when a data set is streamed. */
const STREAM_CHUNK = 1024 * 1024;

/**
 * The library's P-DATA-TF sending, for a message whose data set is a {@link FileDataSet}:
 * its command goes as the library sends it; then the file's data set is streamed as PDUs
 * of at most `maxPduLength` (one PDV each, the last one flagged last), made
 * {@link STREAM_CHUNK} bytes of file at a time in two reused slots, each written at once
 * and reused once the socket has taken it. The library made two growing buffers per PDU
 * and held the whole file (several times over) while it wrote them. Returns before the
 * data set is sent: the library sends nothing else on the association until the PACS
 * answers, which it does only after the last byte. `events.progress` is told each time the
 * socket has taken a slot (the PACS is reading: its deadline can start again); a failure
 * (the file changed, cannot be read) goes to `events.fail` unless the socket is gone
 * already.
 */
export function sendPDataTF(
  network: Network,
  original: NonNullable<Network["_sendPDataTF"]>,
  command: Request,
  contextId: number,
  maxPduLength: number,
  events: { fail(error: unknown): void; progress(): void },
): void {
  const dataSet = command.getDataset();
  const socket = network.socket;
  if (!(dataSet instanceof FileDataSet) || socket === undefined) {
    return original.call(network, command, contextId, maxPduLength);
  }
  /** The command alone: the library sends no data set when the field is empty. */
  const sendCommand = () => {
    // (setDataset would also mark the command as having none)
    const holder = command as unknown as { dataset: unknown };
    holder.dataset = undefined;
    try {
      original.call(network, command, contextId, maxPduLength);
    } finally {
      holder.dataset = dataSet;
    }
  };
  const value = (maxPduLength === 0 ? PDU_CAP : Math.min(maxPduLength, PDU_CAP)) - PDV_HEADER;
  const { statistics } = network;
  streamDataSet(socket, dataSet, contextId, value, statistics, sendCommand, events.progress)
    .catch((error) => {
      if (!socket.destroyed) events.fail(error);
    });
}

/**
 * `sendCommand`, then the data set of `dataSet`'s file as P-DATA-TF PDUs carrying `value`
 * bytes each at most; `taken` each time the socket has taken a slot. The command goes in
 * the same turn as the first PDUs, once they are read, so that the two leave together.
 */
async function streamDataSet(
  socket: NonNullable<Network["socket"]>,
  dataSet: FileDataSet,
  contextId: number,
  value: number,
  statistics: Network["statistics"],
  sendCommand: () => void,
  taken: () => void,
): Promise<void> {
  const { path, size: expected, dataSetOffset } = dataSet.source;
  using file = await Deno.open(path);
  const { size } = await file.stat();
  if (size !== expected) throw fileChanged(expected, size);
  await file.seek(dataSetOffset, Deno.SeekMode.Start);
  const length = size - dataSetOffset;
  // Whole PDUs per chunk, so that only the data set's last PDU is short.
  const chunk = Math.max(1, Math.floor(STREAM_CHUNK / value)) * value;
  const { slots, writes } = dataSet.buffer;
  for (let sent = 0, turn = 0; sent < length; turn ^= 1) {
    const n = Math.min(chunk, length - sent);
    const pdus = Math.ceil(n / value);
    const total = n + pdus * (PDU_HEADER + PDV_HEADER);
    await writes[turn];
    if (socket.destroyed) return; // the association was stopped: its reason is recorded
    if (!slots[turn] || slots[turn].length < total) slots[turn] = new Uint8Array(total);
    const out = slots[turn];
    // The file's bytes go where the PDUs carry them; the headers are written around them.
    let at = 0;
    for (let i = 0; i < pdus; i++) {
      const m = Math.min(value, n - i * value);
      const into = out.subarray(at + PDU_HEADER + PDV_HEADER, at + PDU_HEADER + PDV_HEADER + m);
      for (let filled = 0; filled < m;) {
        const got = await file.read(into.subarray(filled));
        if (got === null) throw fileChanged(expected, "cut short");
        filled += got;
      }
      const view = new DataView(out.buffer, out.byteOffset + at, PDU_HEADER + PDV_HEADER);
      view.setUint8(0, 0x04); // P-DATA-TF
      view.setUint8(1, 0);
      view.setUint32(2, PDV_HEADER + m); // the PDU's length: its one PDV item
      view.setUint32(6, 2 + m); // the item's length: context ID, control header, value
      view.setUint8(10, contextId);
      // A data set fragment; the data set's last one says so.
      view.setUint8(11, sent + i * value + m === length ? 0x02 : 0x00);
      at += PDU_HEADER + PDV_HEADER + m;
    }
    if (socket.destroyed) return;
    if (sent === 0) sendCommand();
    const { promise, resolve } = Promise.withResolvers<void>();
    socket.write(Buffer.from(out.buffer, out.byteOffset, total), () => {
      resolve();
      taken();
    });
    writes[turn] = promise;
    statistics?.addBytesSent?.(total);
    sent += n;
  }
}
