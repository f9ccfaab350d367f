/**
 * Test support: a small DICOM series made with dcmtk's dump2dcm (no mocks, no fixtures
 * in the tree). Each file is a DICOM Part 10 Secondary Capture image (or another SOP
 * class) with patient, study, series and instance attributes and a small 16-bit image;
 * every file of a call shares one study and one series, with fresh UIDs (2.25.<random>).
 *
 * ```ts
 * const files = await makeSeries(dir, 32, { syntax: "implicit" });
 * // files[i].path, files[i].sopInstanceUid
 * ```
 *
 * Options leave attributes out to make files a PACS refuses (no StudyInstanceUID: Orthanc
 * answers 0xA700) or that must never reach a DICOM library (no SOPClassUID in the data
 * set). Fails, saying to install dcmtk, when dump2dcm is missing.
 *
 * @module
 */
import * as path from "node:path";
import { run } from "./e2e.ts";

/** Secondary Capture Image Storage. */
export const SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7";
/** MR Image Storage. */
export const MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4";
export const EXPLICIT_VR_LE = "1.2.840.10008.1.2.1";
export const IMPLICIT_VR_LE = "1.2.840.10008.1.2";

/** Attributes {@link makeSeries} can leave out of the data set. */
export type OmittedAttribute = "SOPClassUID" | "StudyInstanceUID" | "SeriesInstanceUID";

/** Options of {@link makeSeries}. */
export interface SeriesOptions {
  /** The data set's transfer syntax: explicit or implicit VR little endian. */
  syntax: "explicit" | "implicit";
  /** SOP class UID (default {@link SECONDARY_CAPTURE}). */
  sopClassUid?: string;
  /** Left out of the data set (the file meta information keeps its two UIDs). */
  omit?: OmittedAttribute[];
  /** Rows and columns of the image (default 8: 128 bytes of pixel data). */
  size?: number;
  /** File names are PREFIX-0001.dcm … (default "img"). */
  prefix?: string;
}

/** One file made. */
export interface SeriesFile {
  path: string;
  sopInstanceUid: string;
  sopClassUid: string;
  studyInstanceUid: string;
  seriesInstanceUid: string;
}

/** A fresh UID under the 2.25 root (PS3.5 §B.2): a random 128-bit number. */
export function newUid(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  let value = 0n;
  for (const byte of bytes) value = (value << 8n) | BigInt(byte);
  return `2.25.${value}`;
}

const DUMP2DCM = "dump2dcm";
const PARALLEL = 8;

/** The image: `size`² 16-bit little endian pixels, a different pattern per number. */
function pixels(number: number, size: number): Uint8Array {
  const bytes = new Uint8Array(size * size * 2);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < size * size; i++) view.setUint16(i * 2, (i * 7 + number * 13) % 4096, true);
  return bytes;
}

/** dump2dcm's input: one attribute a line; the pixel data is read from `pixelFile`. */
function dump(file: SeriesFile, number: number, options: SeriesOptions, pixelFile: string): string {
  const size = options.size ?? 8;
  const omit = new Set(options.omit ?? []);
  const lines = [
    `(0002,0002) UI [${file.sopClassUid}]`,
    `(0002,0003) UI [${file.sopInstanceUid}]`,
    `(0008,0008) CS [DERIVED\\SECONDARY]`,
    omit.has("SOPClassUID") ? "" : `(0008,0016) UI [${file.sopClassUid}]`,
    `(0008,0018) UI [${file.sopInstanceUid}]`,
    `(0008,0020) DA [20250101]`,
    `(0008,0030) TM [120000]`,
    `(0008,0050) SH [RECONTEST]`,
    `(0008,0060) CS [${file.sopClassUid === MR_IMAGE ? "MR" : "OT"}]`,
    `(0008,0064) CS [WSD]`,
    `(0008,0070) LO [recon tests]`,
    `(0008,103e) LO [recon test series]`,
    `(0010,0010) PN [Test^Phantom]`,
    `(0010,0020) LO [RECONTEST]`,
    omit.has("StudyInstanceUID") ? "" : `(0020,000d) UI [${file.studyInstanceUid}]`,
    omit.has("SeriesInstanceUID") ? "" : `(0020,000e) UI [${file.seriesInstanceUid}]`,
    `(0020,0010) SH [1]`,
    `(0020,0011) IS [1]`,
    `(0020,0013) IS [${number}]`,
    `(0028,0002) US 1`,
    `(0028,0004) CS [MONOCHROME2]`,
    `(0028,0010) US ${size}`,
    `(0028,0011) US ${size}`,
    `(0028,0100) US 16`,
    `(0028,0101) US 12`,
    `(0028,0102) US 11`,
    `(0028,0103) US 0`,
    `(7fe0,0010) OW =${pixelFile}`,
  ];
  return lines.filter((line) => line !== "").join("\n") + "\n";
}

/**
 * `count` DICOM files of one new series in `dir` (created when missing), numbered from 1,
 * in order. Runs dump2dcm (a few at once); throws with its stderr when one fails.
 */
export async function makeSeries(
  dir: string,
  count: number,
  options: SeriesOptions,
): Promise<SeriesFile[]> {
  await Deno.mkdir(dir, { recursive: true });
  const studyInstanceUid = newUid();
  const seriesInstanceUid = newUid();
  const prefix = options.prefix ?? "img";
  const files: SeriesFile[] = Array.from({ length: count }, (_, i) => ({
    path: path.join(dir, `${prefix}-${String(i + 1).padStart(4, "0")}.dcm`),
    sopInstanceUid: newUid(),
    sopClassUid: options.sopClassUid ?? SECONDARY_CAPTURE,
    studyInstanceUid,
    seriesInstanceUid,
  }));
  const work = await Deno.makeTempDir({ prefix: "recon-dump-" });
  try {
    let next = 0;
    const worker = async () => {
      while (next < files.length) {
        const index = next++;
        const dumpFile = path.join(work, `${index}.dump`);
        const pixelFile = path.join(work, `${index}.raw`);
        await Deno.writeFile(pixelFile, pixels(index + 1, options.size ?? 8));
        await Deno.writeTextFile(dumpFile, dump(files[index], index + 1, options, pixelFile));
        const xfer = options.syntax === "implicit" ? "+ti" : "+te";
        let result;
        try {
          result = await run(DUMP2DCM, [xfer, dumpFile, files[index].path], { timeoutMs: 30_000 });
        } catch (error) {
          if (error instanceof Deno.errors.NotFound) {
            throw new Error("dump2dcm not found: install dcmtk (apt-get install dcmtk)");
          }
          throw error;
        }
        // dump2dcm exits 0 after some errors (a line too long): check the file is there.
        const made = await Deno.stat(files[index].path).then(() => true, () => false);
        if (result.code !== 0 || !made) {
          throw new Error(
            `dump2dcm failed (exit ${result.code}) for ${files[index].path}: ${result.stderr}`,
          );
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARALLEL, count) }, worker));
  } finally {
    await Deno.remove(work, { recursive: true });
  }
  return files;
}
