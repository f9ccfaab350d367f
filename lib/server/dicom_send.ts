/**
 * Sending DICOM files to a PACS (issue 17): C-STORE (PS3.4 Annex B) of Part 10 files over
 * associations with one configured {@link Destination}, and C-ECHO (PS3.7 §9.1.5) to
 * check that a destination answers. Each association (TLS, presentation contexts, our
 * deadline, each file sent as its own bytes) is lib/server/dicom_association.ts.
 *
 * The DICOM upper layer is dcmjs-dimse 0.3.3. Its defects met here, and what this module
 * does about each (all were seen against Orthanc 1.10; the association's are in
 * lib/server/dicom_association.ts):
 * - a file without a SOP class UID crashes the process with a TypeError nobody can catch:
 *   every file's header is read by lib/server/dicom_file.ts before the library sees it,
 *   and its data set's UIDs are compared with that header;
 * - it holds every request of an association until the association ends, each with its
 *   whole file parsed: a request's data set is dropped once its answer came, and at most
 *   {@link MAX_INSTANCES_PER_ASSOCIATION} files go over one association;
 * - a request made from a path reads the whole file at once to find its UIDs, for every
 *   file of the association before the first is sent: we read the start of each file
 *   ourselves and give the library a request that loads its file when it is sent (one
 *   file at a time), falling back to the library's own reading when the UIDs are not in
 *   the first {@link DATA_SET_START} bytes of the data set;
 * - dcmjs prints "Invalid vr type" for implicit VR files: lib/server/quiet_dcmjs.ts,
 *   imported first, drops that message.
 * A truncated file would be sent zero-padded and stored by the library: the caller checks
 * each file against what the job store recorded before it calls us, and a file streamed
 * here must keep the size its start was read with.
 *
 * Nothing here throws for network trouble: association-level problems come back as one
 * line in {@link SendReport.error}, per-file outcomes in {@link SendReport.results}; the
 * wording (what a rejection, an abort or a status means) is lib/server/dicom_messages.ts.
 *
 * @module
 */
import "./quiet_dcmjs.ts"; // first: it must wrap console.error before dcmjs loads
import dimse from "dcmjs-dimse";
import { Buffer } from "node:buffer";
import type { Destination } from "../opts/mod.ts";
import { errorMessage } from "../errors.ts";
import {
  type DicomStart,
  isNotDicom,
  MAX_META_LENGTH,
  PREAMBLE_LENGTH,
  readDicomHeader,
  readDicomStart,
} from "./dicom_file.ts";
import { type FileSource, readBuffer } from "./dicom_stream.ts";
import { describe, statusText, storedStatus } from "./dicom_messages.ts";
import { associate, type CStoreRequest, readSecurity, type Request } from "./dicom_association.ts";

/** One file to store, with the UIDs its header was read with (lib/server/dicom_file.ts). */
export interface Instance {
  path: string;
  sopClassUid: string;
  sopInstanceUid: string;
}

/** What became of one {@link Instance}, in the order given. */
export interface InstanceResult {
  path: string;
  /** The PACS confirmed it: C-STORE status success or warning. */
  arrived: boolean;
  /** The C-STORE response status, when one came. */
  status?: number;
  /** Why it did not arrive (one line), or the warning it arrived with. */
  reason?: string;
  /** A C-STORE request was sent for it (whether or not an answer came). */
  requested?: boolean;
}

/** The outcome of {@link sendInstances}. */
export interface SendReport {
  /**
   * Association-level trouble, one line: rejected (why, permanent or transient), refused
   * connection, timeout, aborted, closed early, TLS, cancelled.
   */
  error?: string;
  results: InstanceResult[];
  /** C-STORE requests made. */
  stores: number;
}

/** Files sent over one association at most (the library keeps each request until its end). */
export const MAX_INSTANCES_PER_ASSOCIATION = 50;
/**
 * Bytes of a data set read to find its SOP Class and Instance UIDs (0008,0016 and
 * 0008,0018), which come early: only group 0008's first elements are before them.
 */
export const DATA_SET_START = 64 * 1024;

/** The header check before the library sees a file: a reason it must not, or undefined. */
async function headerProblem(instance: Instance): Promise<string | undefined> {
  let header;
  try {
    header = await readDicomHeader(instance.path);
  } catch (error) {
    return `not sent: cannot read the file: ${errorMessage(error)}`;
  }
  if (isNotDicom(header)) return `not sent: not a DICOM Part 10 file: ${header.notDicom}`;
  if (
    header.sopClassUid !== instance.sopClassUid || header.sopInstanceUid !== instance.sopInstanceUid
  ) {
    return `not sent: the file changed: its header now names SOP instance ${header.sopInstanceUid} ` +
      `of class ${header.sopClassUid}`;
  }
  return undefined;
}

/**
 * The library's request for a file, or why there is none. Its data set must name the
 * header's UIDs (a file whose data set lacks them is what crashes the library later).
 * `start` is the file's header and the beginning of its data set: when the UIDs are
 * found there, the request carries only those first elements and the library reads the
 * whole file when it sends it; else the library reads the file now, up to the SOP
 * Instance UID, and that decides.
 */
function storeRequest(instance: Instance, start?: DicomStart): CStoreRequest | string {
  let request;
  try {
    request = (start && requestFromStart(instance, start)) ??
      new dimse.requests.CStoreRequest(instance.path);
  } catch (error) {
    return `not sent: the DICOM library cannot read it: ${errorMessage(error)}`;
  }
  const sopClassUid = request.getAffectedSopClassUid();
  const sopInstanceUid = request.getAffectedSopInstanceUid();
  if (sopClassUid !== instance.sopClassUid || sopInstanceUid !== instance.sopInstanceUid) {
    return `not sent: its data set's SOP Class/Instance UID (0008,0016/0018) ` +
      `${sopClassUid ?? "(none)"} / ${
        sopInstanceUid ?? "(none)"
      } differs from its file meta information`;
  }
  return request;
}

/**
 * A request whose data set is the file's first elements, up to its SOP Instance UID, read
 * from `start`, and which the library loads whole when it sends it (what it does for a
 * request made from a path: dcmjs-dimse 0.3.3's `needsFullDatasetLoading` and
 * `datasetOrFile`). Undefined when those elements do not name the instance's UIDs.
 */
function requestFromStart(instance: Instance, start: DicomStart): CStoreRequest | undefined {
  const bytes = Buffer.from(start.dataSet.buffer, start.dataSet.byteOffset, start.dataSet.length);
  // Copied by the library; read errors (a data set cut by DATA_SET_START) end the read.
  const first = new dimse.Dataset(bytes, start.header.transferSyntaxUid, {
    untilTag: "00080018",
    includeUntilTagValue: true,
  });
  if (
    first.getElement("SOPClassUID") !== instance.sopClassUid ||
    first.getElement("SOPInstanceUID") !== instance.sopInstanceUid
  ) return undefined;
  const request = new dimse.requests.CStoreRequest(first);
  Object.assign(request, { needsFullDatasetLoading: true, datasetOrFile: instance.path });
  return request;
}

/** Bytes {@link sendInstances} reads from the start of each file: header and data set start. */
const START_LENGTH = PREAMBLE_LENGTH + 4 + MAX_META_LENGTH + 8 + DATA_SET_START;

/**
 * Store `instances` at `destination`: at most {@link MAX_INSTANCES_PER_ASSOCIATION} per
 * association, one association after the other. Each file's header is read again first;
 * one that is not Part 10 or no longer has the given UIDs is never handed to the library.
 * After an association-level error the remaining associations are not tried. Results are
 * in the order of `instances`. Never throws for network trouble.
 */
export async function sendInstances(
  destination: Destination,
  instances: Instance[],
  signal?: AbortSignal,
): Promise<SendReport> {
  const results: InstanceResult[] = instances.map((i) => ({ path: i.path, arrived: false }));
  const report: SendReport = { results, stores: 0 };
  const security = await readSecurity(destination);
  if (typeof security === "string") {
    for (const result of results) result.reason = `not sent: ${security}`;
    return { ...report, error: security };
  }
  const ready: number[] = [];
  /** Reused for every file: one fresh buffer per file would be garbage V8 collects late. */
  const startBuffer = new Uint8Array(START_LENGTH);
  const buffers = readBuffer();
  for (const [index, instance] of instances.entries()) {
    const problem = await headerProblem(instance);
    if (problem === undefined) ready.push(index);
    else results[index].reason = problem;
  }
  for (let start = 0; start < ready.length; start += MAX_INSTANCES_PER_ASSOCIATION) {
    const batch = ready.slice(start, start + MAX_INSTANCES_PER_ASSOCIATION);
    if (report.error !== undefined) {
      for (const index of batch) results[index].reason = `not sent: ${report.error}`;
      continue;
    }
    const requests = new Map<CStoreRequest, number>();
    const sources = new Map<Request, FileSource>();
    for (const index of batch) {
      const read = await readDicomStart(instances[index].path, startBuffer).catch(() => undefined);
      const head = read === undefined || isNotDicom(read) ? undefined : read;
      const request = storeRequest(instances[index], head);
      if (typeof request === "string") {
        results[index].reason = request;
        continue;
      }
      requests.set(request, index);
      if (head !== undefined) {
        const { header: { transferSyntaxUid, sopClassUid }, dataSetOffset, size } = head;
        sources.set(request, {
          path: instances[index].path,
          sopClassUid,
          transferSyntaxUid,
          dataSetOffset,
          size,
        });
      }
      const result = results[index];
      // What the request holds until the association ends, once its file was sent.
      const small = request.getDataset();
      request.on("response", (response: dimse.responses.CStoreResponse) => {
        // The library keeps every request of the association (and the whole file it
        // loaded to send it) until the association ends: keep only the first elements.
        if (small) request.setDataset(small);
        const status = response.getStatus();
        const comment = response.getErrorComment?.();
        result.status = status;
        result.arrived = storedStatus(status);
        if (status !== 0) {
          result.reason = `${result.arrived ? "stored with" : "refused: C-STORE status"} ` +
            `${statusText(status)}${comment ? `: ${comment}` : ""}`;
        }
      });
    }
    if (requests.size === 0) continue;
    const outcome = await associate({
      destination,
      security,
      requests: [...requests.keys()],
      files: { sources, buffer: buffers },
      signal,
    });
    report.error = outcome.error;
    for (const [request, index] of requests) {
      const result = results[index];
      // The library gives a request its message ID when it sends it.
      result.requested = request.getMessageId() !== undefined;
      if (result.requested) report.stores++;
      if (outcome.unaccepted.has(request)) {
        result.reason = `not sent: ${describe(destination)} accepted no presentation context ` +
          `for its SOP class ${instances[index].sopClassUid}`;
      } else if (result.status === undefined) {
        result.reason = result.requested
          ? `no C-STORE response: ${outcome.error ?? "the association ended first"}`
          : `not sent: ${outcome.error ?? "the association ended first"}`;
      }
    }
  }
  return report;
}

/**
 * C-ECHO (verification) of `destination`: undefined when it answered with success, else
 * one line saying what went wrong. For startup and health checks; never throws for
 * network trouble.
 */
export async function echo(
  destination: Destination,
  signal?: AbortSignal,
): Promise<string | undefined> {
  const security = await readSecurity(destination);
  if (typeof security === "string") return security;
  const request = new dimse.requests.CEchoRequest();
  let status: number | undefined;
  request.on("response", (response: dimse.responses.CEchoResponse) => {
    status = response.getStatus();
  });
  const outcome = await associate({ destination, security, requests: [request], signal });
  if (outcome.error !== undefined) return outcome.error;
  const where = describe(destination);
  if (outcome.unaccepted.size > 0) {
    return `${where} does not accept C-ECHO (verification SOP class)`;
  }
  if (status === undefined) return `${where} sent no C-ECHO response`;
  if (status !== 0) return `${where} answered C-ECHO with status ${statusText(status)}`;
  return undefined;
}
