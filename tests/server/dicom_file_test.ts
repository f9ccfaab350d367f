/**
 * Tests for lib/server/dicom_file.ts: the Part 10 header of files dcmtk wrote (explicit
 * and implicit VR data sets), and hostile input: empty, not DICOM, truncated at every
 * offset, a flipped byte at every offset of the file meta information, lengths of
 * 0xFFFFFFFF and beyond the file, a meta group longer than MAX_META_LENGTH, missing
 * or malformed UIDs. Every refusal is one line; nothing throws but an unreadable path.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import {
  isNotDicom,
  MAX_META_LENGTH,
  parseDicomHeader,
  readDicomHeader,
} from "../../lib/server/dicom_file.ts";
import {
  EXPLICIT_VR_LE,
  IMPLICIT_VR_LE,
  makeSeries,
  SECONDARY_CAPTURE,
} from "../support/dicom_series.ts";

async function tempDir(): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "recon-dicom-file-" });
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

const LONG_VRS = new Set(["OB", "OW", "UN", "SQ", "UT"]);

/** One explicit VR little endian element of group 0002. */
function element(
  number: number,
  vr: string,
  value: Uint8Array | string,
  length?: number,
): Uint8Array {
  const bytes = typeof value === "string" ? new TextEncoder().encode(value) : value;
  const long = LONG_VRS.has(vr);
  const out = new Uint8Array((long ? 12 : 8) + bytes.length);
  const view = new DataView(out.buffer);
  view.setUint16(0, 0x0002, true);
  view.setUint16(2, number, true);
  out.set(new TextEncoder().encode(vr), 4);
  if (long) view.setUint32(8, length ?? bytes.length, true);
  else view.setUint16(6, length ?? bytes.length, true);
  out.set(bytes, long ? 12 : 8);
  return out;
}

/** A UI value padded to even length with NUL, as PS3.5 says. */
function ui(uid: string): string {
  return uid.length % 2 === 0 ? uid : `${uid}\0`;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Preamble, DICM, then the given elements and trailing bytes. */
function part10(...elements: Uint8Array[]): Uint8Array {
  return concat(new Uint8Array(128), new TextEncoder().encode("DICM"), ...elements);
}

const INSTANCE = "2.25.123456789";
/** A data set element of group 0008 (explicit VR), so the meta group visibly ends. */
const DATA_SET = new Uint8Array([
  0x08,
  0x00,
  0x05,
  0x00,
  0x43,
  0x53,
  0x0a,
  0x00,
  ...new TextEncoder().encode("ISO_IR 100"),
]);

function goodMeta(): Uint8Array[] {
  return [
    element(0x0001, "OB", new Uint8Array([0, 1])),
    element(0x0002, "UI", ui(SECONDARY_CAPTURE)),
    element(0x0003, "UI", ui(INSTANCE)),
    element(0x0010, "UI", ui(EXPLICIT_VR_LE)),
    element(0x0012, "UI", ui("1.2.3.4")),
  ];
}

function notDicom(result: ReturnType<typeof parseDicomHeader>, pattern: RegExp): void {
  assert.ok(isNotDicom(result), `expected a refusal, got ${JSON.stringify(result)}`);
  assert.match(result.notDicom, pattern);
  assert.ok(!result.notDicom.includes("\n"), "one line");
}

Deno.test("readDicomHeader() reads the UIDs and transfer syntax of explicit and implicit VR files from dcmtk", async () => {
  await using tmp = await tempDir();
  for (
    const [syntax, uid] of [["explicit", EXPLICIT_VR_LE], ["implicit", IMPLICIT_VR_LE]] as const
  ) {
    const files = await makeSeries(path.join(tmp.dir, syntax), 3, { syntax });
    for (const file of files) {
      assert.deepEqual(await readDicomHeader(file.path), {
        sopClassUid: SECONDARY_CAPTURE,
        sopInstanceUid: file.sopInstanceUid,
        transferSyntaxUid: uid,
      });
    }
  }
});

Deno.test("parseDicomHeader() reads hand-made meta information with a group length and NUL padding", () => {
  const meta = goodMeta();
  const length = meta.reduce((n, e) => n + e.length, 0);
  const groupLength = element(0x0000, "UL", new Uint8Array([length & 0xff, length >> 8, 0, 0]));
  const bytes = part10(groupLength, ...meta, DATA_SET);
  assert.deepEqual(parseDicomHeader(bytes, bytes.length), {
    sopClassUid: SECONDARY_CAPTURE,
    sopInstanceUid: INSTANCE,
    transferSyntaxUid: EXPLICIT_VR_LE,
  });
});

Deno.test("readDicomHeader() refuses an empty file, a text file and a raw data set in one line", async () => {
  await using tmp = await tempDir();
  const empty = path.join(tmp.dir, "empty");
  await Deno.writeFile(empty, new Uint8Array());
  notDicom(await readDicomHeader(empty), /^the file is empty$/);
  const text = path.join(tmp.dir, "notes.txt");
  await Deno.writeTextFile(text, "not a DICOM file\n".repeat(20));
  notDicom(await readDicomHeader(text), /no DICM marker at byte 128/);
  const short = path.join(tmp.dir, "short");
  await Deno.writeTextFile(short, "DICM");
  notDicom(await readDicomHeader(short), /only 4 bytes: too short/);
  // A data set without the Part 10 preamble (dump2dcm -F).
  const raw = path.join(tmp.dir, "raw.dcm");
  await Deno.writeFile(raw, concat(new Uint8Array(200).fill(0x41)));
  notDicom(await readDicomHeader(raw), /no DICM marker/);
});

Deno.test("readDicomHeader() throws for a path that cannot be read", async () => {
  await using tmp = await tempDir();
  await assert.rejects(readDicomHeader(path.join(tmp.dir, "missing.dcm")), Deno.errors.NotFound);
});

Deno.test("parseDicomHeader() refuses a file truncated at every offset of its header, and accepts it once the meta group is whole", async () => {
  await using tmp = await tempDir();
  const [file] = await makeSeries(tmp.dir, 1, { syntax: "implicit" });
  const bytes = await Deno.readFile(file.path);
  const groupLength = new DataView(bytes.buffer).getUint32(132 + 8, true);
  const metaEnd = 132 + 12 + groupLength;
  for (let n = 0; n <= metaEnd + 16; n++) {
    const result = parseDicomHeader(bytes.subarray(0, n), n);
    if (n === metaEnd || n >= metaEnd + 2) {
      assert.deepEqual(result, {
        sopClassUid: SECONDARY_CAPTURE,
        sopInstanceUid: file.sopInstanceUid,
        transferSyntaxUid: IMPLICIT_VR_LE,
      }, `at ${n}`);
    } else {
      assert.ok(isNotDicom(result), `truncated at ${n} must be refused`);
      assert.ok(!result.notDicom.includes("\n"));
    }
  }
  // Given only part of a longer file, it says the header was cut short, not the file.
  notDicom(parseDicomHeader(bytes.subarray(0, 150), bytes.length), /cut short at byte/);
});

Deno.test("parseDicomHeader() never throws on a flipped byte anywhere in the meta information", async () => {
  await using tmp = await tempDir();
  const [file] = await makeSeries(tmp.dir, 1, { syntax: "explicit" });
  const original = await Deno.readFile(file.path);
  for (let at = 0; at < 400; at++) {
    for (const mask of [0x01, 0x80, 0xff]) {
      const bytes = original.slice();
      bytes[at] ^= mask;
      const result = parseDicomHeader(bytes, bytes.length);
      if (isNotDicom(result)) {
        assert.ok(!result.notDicom.includes("\n"));
      } else {
        for (const uid of Object.values(result)) assert.match(uid, /^[0-9]+(\.[0-9]+)*$/);
      }
    }
  }
});

Deno.test("parseDicomHeader() names the UID that is missing from the meta information", () => {
  const [version, sopClass, sopInstance, syntax] = goodMeta();
  let bytes = part10(version, sopClass, syntax, DATA_SET);
  notDicom(
    parseDicomHeader(bytes, bytes.length),
    /^no Media Storage SOP Instance UID \(0002,0003\)/,
  );
  bytes = part10(version, sopInstance, syntax, DATA_SET);
  notDicom(parseDicomHeader(bytes, bytes.length), /^no Media Storage SOP Class UID \(0002,0002\)/);
  bytes = part10(version, sopClass, sopInstance, DATA_SET);
  notDicom(parseDicomHeader(bytes, bytes.length), /^no Transfer Syntax UID \(0002,0010\)/);
  // Meta information and nothing else: no data set, no UIDs.
  bytes = part10();
  notDicom(parseDicomHeader(bytes, bytes.length), /^no Media Storage SOP Class UID/);
});

Deno.test("parseDicomHeader() refuses malformed UIDs and a UID element of another VR", () => {
  const [version, , sopInstance, syntax] = goodMeta();
  for (const bad of ["1.2.abc", "1..2", ".1.2", "1.2.", "", "1.2.3\0\0x", "9".repeat(65)]) {
    const bytes = part10(version, element(0x0002, "UI", ui(bad)), sopInstance, syntax, DATA_SET);
    notDicom(
      parseDicomHeader(bytes, bytes.length),
      /SOP Class UID \(0002,0002\) is not a valid UID/,
    );
  }
  const bytes = part10(version, element(0x0002, "LO", ui(SECONDARY_CAPTURE)), sopInstance, syntax);
  notDicom(parseDicomHeader(bytes, bytes.length), /has VR LO, not UI/);
});

Deno.test("parseDicomHeader() refuses a meta element without an explicit VR", () => {
  const [version, sopClass, sopInstance, syntax] = goodMeta();
  // Implicit VR meta information (a non-conforming writer): the length's bytes read as a VR.
  const implicit = new Uint8Array([0x02, 0x00, 0x10, 0x00, 0x14, 0x00, 0x00, 0x00]);
  const bytes = part10(
    version,
    sopClass,
    sopInstance,
    implicit,
    new TextEncoder().encode(EXPLICIT_VR_LE + "\0"),
  );
  notDicom(parseDicomHeader(bytes, bytes.length), /\(0002,0010\) at byte \d+ has no explicit VR/);
  void syntax;
});

Deno.test("parseDicomHeader() checks lengths before using them: 0xFFFFFFFF, past the end, past MAX_META_LENGTH", () => {
  const [version, sopClass, sopInstance, syntax] = goodMeta();
  let bytes = part10(
    element(0x0001, "OB", new Uint8Array([0, 1]), 0xffffffff),
    sopClass,
    sopInstance,
    syntax,
  );
  notDicom(parseDicomHeader(bytes, bytes.length), /\(0002,0001\) has an undefined length/);
  bytes = part10(
    version,
    element(0x0100, "OB", new Uint8Array(4), 0xfffffff0),
    sopClass,
    sopInstance,
    syntax,
  );
  notDicom(
    parseDicomHeader(bytes, bytes.length),
    /the file ends at byte \d+, inside its file meta information/,
  );
  bytes = part10(version, sopClass, element(0x0003, "UI", ui(INSTANCE), 0xfff0), syntax);
  notDicom(parseDicomHeader(bytes, bytes.length), /the file ends at byte/);
});

Deno.test("readDicomHeader() reads no further than MAX_META_LENGTH into a huge meta group", async () => {
  await using tmp = await tempDir();
  const [version, sopClass, sopInstance, syntax] = goodMeta();
  const big = element(0x0100, "OB", new Uint8Array(MAX_META_LENGTH + 10));
  const file = path.join(tmp.dir, "big-meta.dcm");
  await Deno.writeFile(file, part10(version, sopClass, sopInstance, big, syntax, DATA_SET));
  notDicom(await readDicomHeader(file), new RegExp(`longer than ${MAX_META_LENGTH} bytes`));
  // Just under the limit is fine.
  const fits = element(0x0100, "OB", new Uint8Array(MAX_META_LENGTH - 200));
  await Deno.writeFile(file, part10(version, sopClass, sopInstance, fits, syntax, DATA_SET));
  assert.equal(isNotDicom(await readDicomHeader(file)), false);
});
