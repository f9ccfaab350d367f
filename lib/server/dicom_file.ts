/**
 * The DICOM Part 10 file header (PS3.10 §7.1): a 128-byte preamble, the four bytes
 * `DICM`, then the file meta information, group 0002, always explicit VR little endian
 * whatever the data set's transfer syntax. From it {@link readDicomHeader} takes what a
 * C-STORE needs before any DICOM library sees the file: the SOP class and instance UIDs
 * (0002,0002 and 0002,0003) and the transfer syntax (0002,0010).
 *
 * Why our own reader: dcmjs-dimse crashes the process with an uncatchable TypeError on a
 * file without a SOP class UID and reads every file whole, so a file is only handed to it
 * once this small, bounded reader has said it is Part 10 with both UIDs. Anything else
 * comes back as `{ notDicom }`, one line saying why.
 *
 * @module
 */

/** What a C-STORE of the file needs from its file meta information. */
export interface DicomHeader {
  /** Media Storage SOP Class UID (0002,0002). */
  sopClassUid: string;
  /** Media Storage SOP Instance UID (0002,0003). */
  sopInstanceUid: string;
  /** Transfer Syntax UID (0002,0010) of the data set that follows. */
  transferSyntaxUid: string;
}

/** Why a file is not a DICOM Part 10 file we can send: one line. */
export interface NotDicom {
  notDicom: string;
}

/** Bytes before `DICM`. */
export const PREAMBLE_LENGTH = 128;
/**
 * The most file meta information read: real headers are a few hundred bytes; a longer
 * one (private elements in group 0002) is refused rather than read without bound.
 */
export const MAX_META_LENGTH = 64 * 1024;

/** Explicit VRs whose length is 4 bytes after 2 reserved ones (PS3.5 Table 7.1-1). */
const LONG_VRS = new Set("OB OD OF OL OV OW SQ SV UC UN UR UT UV".split(" "));
/** Every other explicit VR (2-byte length). */
const SHORT_VRS = new Set(
  "AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US".split(" "),
);
/**
 * PS3.5 §9.1: digits and dots, at most 64 characters, no empty component. Leading zeros,
 * which the standard forbids but some devices write, are let through: the PACS decides.
 */
const UID = /^[0-9]+(\.[0-9]+)*$/;
const WANTED: Record<number, [keyof DicomHeader, string]> = {
  0x0002: ["sopClassUid", "Media Storage SOP Class UID (0002,0002)"],
  0x0003: ["sopInstanceUid", "Media Storage SOP Instance UID (0002,0003)"],
  0x0010: ["transferSyntaxUid", "Transfer Syntax UID (0002,0010)"],
};

const latin1 = new TextDecoder("latin1");

function tag(element: number): string {
  return `(0002,${element.toString(16).padStart(4, "0").toUpperCase()})`;
}

/**
 * Parse the start of a file: `bytes` holds its first bytes (at least up to the end of
 * group 0002 when the file has that many) and `fileSize` its whole size, which tells a
 * file cut short from a header longer than what was read. No I/O.
 */
export function parseDicomHeader(bytes: Uint8Array, fileSize: number): DicomHeader | NotDicom {
  const parsed = parseMeta(bytes, fileSize);
  return "notDicom" in parsed ? parsed : parsed.header;
}

/** {@link parseDicomHeader}, and where the data set starts (the byte after group 0002). */
function parseMeta(
  bytes: Uint8Array,
  fileSize: number,
): { header: DicomHeader; dataSetOffset: number } | NotDicom {
  if (fileSize === 0) return { notDicom: "the file is empty" };
  if (bytes.length < PREAMBLE_LENGTH + 4) {
    return { notDicom: `only ${fileSize} bytes: too short for a DICOM Part 10 header` };
  }
  if (latin1.decode(bytes.subarray(PREAMBLE_LENGTH, PREAMBLE_LENGTH + 4)) !== "DICM") {
    return { notDicom: "no DICM marker at byte 128: not a DICOM Part 10 file" };
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const found: Partial<DicomHeader> = {};
  const end = Math.min(bytes.length, PREAMBLE_LENGTH + 4 + MAX_META_LENGTH);
  const cut = (at: number): NotDicom =>
    bytes.length >= fileSize
      ? { notDicom: `the file ends at byte ${fileSize}, inside its file meta information` }
      : at >= PREAMBLE_LENGTH + 4 + MAX_META_LENGTH
      ? { notDicom: `its file meta information is longer than ${MAX_META_LENGTH} bytes` }
      : { notDicom: `its file meta information was cut short at byte ${at}` };
  let at = PREAMBLE_LENGTH + 4;
  /** Where group 0002 ends by its group length (0002,0000), when it has one. */
  let groupEnd: number | undefined;
  while (true) {
    if (at + 2 > end) {
      // Nothing after group 0002 (no data set): only when the group length agrees.
      if (at === fileSize && (groupEnd === undefined || at >= groupEnd)) break;
      return cut(at);
    }
    if (view.getUint16(at, true) !== 0x0002) break; // the data set starts
    if (at + 8 > end) return cut(at);
    const element = view.getUint16(at + 2, true);
    const vr = latin1.decode(bytes.subarray(at + 4, at + 6));
    let header: number;
    let length: number;
    if (LONG_VRS.has(vr)) {
      if (at + 12 > end) return cut(at);
      header = 12;
      length = view.getUint32(at + 8, true);
    } else if (SHORT_VRS.has(vr)) {
      header = 8;
      length = view.getUint16(at + 6, true);
    } else {
      return {
        notDicom: `file meta element ${tag(element)} at byte ${at} has no explicit VR ` +
          `(${JSON.stringify(vr)}): damaged file meta information`,
      };
    }
    if (length === 0xffffffff) {
      return { notDicom: `file meta element ${tag(element)} has an undefined length` };
    }
    // Check the length against what may be read before using it.
    if (at + header + length > end) return cut(at + header + length);
    if (element === 0x0000 && vr === "UL" && length === 4) {
      groupEnd = at + header + length + view.getUint32(at + header, true);
    }
    const wanted = WANTED[element];
    if (wanted !== undefined) {
      const [key, name] = wanted;
      if (vr !== "UI") return { notDicom: `${name} has VR ${vr}, not UI` };
      const value = latin1.decode(bytes.subarray(at + header, at + header + length))
        .replace(/[\0 ]+$/, "");
      if (value.length > 64 || !UID.test(value)) {
        return { notDicom: `${name} is not a valid UID: ${JSON.stringify(value.slice(0, 70))}` };
      }
      found[key] = value;
    }
    at += header + length;
  }
  for (const [key, name] of Object.values(WANTED)) {
    if (found[key] === undefined) return { notDicom: `no ${name} in its file meta information` };
  }
  return { header: found as DicomHeader, dataSetOffset: at };
}

/** Bytes {@link readDicomHeader} reads at most: the preamble, `DICM`, the longest meta group. */
const HEADER_READ_LENGTH = PREAMBLE_LENGTH + 4 + MAX_META_LENGTH + 8;
/**
 * Read buffers of {@link readDicomHeader}, kept for the next file: a fresh 64 KiB one per
 * file is garbage V8 collects late (ArrayBuffers count only as external memory), which
 * showed as server RSS when a delivery checked 120 files twice.
 */
const headerBuffers: Uint8Array[] = [];
const KEPT_HEADER_BUFFERS = 4;

/**
 * The Part 10 header of the file at `path`, or why it is not one. Reads at most the
 * preamble and {@link MAX_META_LENGTH} bytes of file meta information, never the data
 * set. Throws (Deno's errors) when the file cannot be opened or read.
 */
export async function readDicomHeader(path: string): Promise<DicomHeader | NotDicom> {
  const buffer = headerBuffers.pop() ?? new Uint8Array(HEADER_READ_LENGTH);
  try {
    const start = await readDicomStart(path, buffer);
    return "notDicom" in start ? start : start.header;
  } finally {
    if (headerBuffers.length < KEPT_HEADER_BUFFERS) headerBuffers.push(buffer);
  }
}

/** A file's Part 10 header and the first bytes of its data set, from {@link readDicomStart}. */
export interface DicomStart {
  header: DicomHeader;
  /**
   * The data set's first bytes, as many as `buffer` held after the header (a view of
   * it: valid until the caller reuses the buffer).
   */
  dataSet: Uint8Array;
  /** Where the data set starts in the file: the byte after the file meta information. */
  dataSetOffset: number;
  /** The file's size when it was read. */
  size: number;
}

/**
 * Read the file at `path` from its start into `buffer` (as much as fits) and parse its
 * Part 10 header: the header and the beginning of its data set, or why it is not Part 10.
 * A `buffer` shorter than the preamble and {@link MAX_META_LENGTH} may refuse a long
 * meta group as cut short. Throws (Deno's errors) when the file cannot be opened or read.
 */
export async function readDicomStart(
  path: string,
  buffer: Uint8Array,
): Promise<DicomStart | NotDicom> {
  using file = await Deno.open(path, { read: true });
  const { size } = await file.stat();
  const wanted = buffer.subarray(0, Math.min(size, buffer.length));
  let filled = 0;
  while (filled < wanted.length) {
    const n = await file.read(wanted.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  const bytes = wanted.subarray(0, filled);
  const parsed = parseMeta(bytes, filled < wanted.length ? filled : size);
  if ("notDicom" in parsed) return parsed;
  const { header, dataSetOffset } = parsed;
  return { header, dataSet: bytes.subarray(dataSetOffset), dataSetOffset, size };
}

/** Narrowing helper: true when {@link readDicomHeader} or {@link readDicomStart} said the file is not Part 10. */
export function isNotDicom<T extends object>(header: T | NotDicom): header is NotDicom {
  return "notDicom" in header;
}
