/**
 * Sending DICOM files to a PACS (issue 17): C-STORE (PS3.4 Annex B) of Part 10 files over
 * associations with one configured {@link Destination}, optionally over TLS (PS3.15
 * Annex B.1), and C-ECHO (PS3.7 §9.1.5) to check that a destination answers.
 *
 * The DICOM upper layer is dcmjs-dimse 0.3.3. Its defects, and what this module does
 * about each (all were seen against Orthanc 1.10):
 * - it never sets TCP_NODELAY, costing 40–90 ms per instance: we set it on its socket;
 * - its timeouts only end() the socket, so against a silent peer nothing ever closes: we
 *   keep our own deadline (the destination's timeout, re-armed by every answer and by
 *   every megabyte of a streamed file the PACS takes) and destroy the socket;
 * - a peer's A-ABORT is not surfaced: we listen for it on its network object;
 * - a request whose SOP class the peer did not accept is skipped silently: we check each
 *   one when the association is accepted and say so per file;
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
 * - it parses every file whole and encodes its data set again to send it (several copies
 *   of the file in memory, ~10 ms of CPU per 512 KiB image), and proposes implicit and
 *   explicit VR in one context, converting every file in the syntax the PACS did not pick:
 *   we propose each file's own syntax in a context of its own, and when the PACS accepted
 *   it, the data set goes out as the file's bytes ({@link FileDataSet}), as storescu
 *   sends it, streamed a megabyte at a time ({@link sendPDataTF}); else the library
 *   converts it;
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
import {
  FileDataSet,
  type FileSource,
  type Network,
  type ReadBuffer,
  readBuffer,
  sendPDataTF,
} from "./dicom_stream.ts";
import {
  abortMessage,
  describe,
  networkMessage,
  rejectionMessage,
  statusText,
  storedStatus,
} from "./dicom_messages.ts";

dimse.log.setLevel("silent");

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
/** How long to wait for the socket to close after we destroyed it. */
const CLOSE_GRACE_MS = 2000;

type Request = dimse.requests.Request;
type CStoreRequest = dimse.requests.CStoreRequest;
type SecurityOptions = { ca: string; cert?: string; key?: string; rejectUnauthorized: true };

/**
 * The destination's TLS files, read now (so that a renewed certificate is used without a
 * restart), or one line saying which one could not be read.
 */
async function readSecurity(
  destination: Destination,
): Promise<SecurityOptions | string | undefined> {
  const tls = destination.tls;
  if (tls === undefined) return undefined;
  const read = async (what: string, file: string) => {
    try {
      return await Deno.readTextFile(file);
    } catch (error) {
      throw new Error(
        `${describe(destination)}: cannot read its TLS ${what} ${file}: ${errorMessage(error)} ` +
          `(fix DESTINATION_${destination.name})`,
      );
    }
  };
  try {
    return {
      ca: await read("CA file", tls.ca),
      ...(tls.cert === undefined ? {} : { cert: await read("certificate", tls.cert) }),
      ...(tls.key === undefined ? {} : { key: await read("key", tls.key) }),
      rejectUnauthorized: true,
    };
  } catch (error) {
    return errorMessage(error);
  }
}

interface AssociationPlan {
  destination: Destination;
  security: SecurityOptions | undefined;
  requests: Request[];
  /**
   * Requests whose file may go out as its own bytes, when its transfer syntax is
   * accepted, and what those files are read into.
   */
  files?: { sources: Map<Request, FileSource>; buffer: ReadBuffer };
  signal?: AbortSignal;
}

const IMPLICIT_VR_LE = "1.2.840.10008.1.2";
const EXPLICIT_VR_LE = "1.2.840.10008.1.2.1";
/** Presentation contexts one association may propose (PS3.8 §9.3.2.2: odd IDs 1–255). */
const MAX_CONTEXTS = 128;

/**
 * The (SOP class, transfer syntax) pairs of the plan's files in implicit or explicit VR
 * little endian, each to be proposed in a context of its own. The library proposes one
 * context per SOP class with both (the PACS picks one: Orthanc explicit) and converts
 * every file in the other; its own context lets the PACS take the file as it is. (A file
 * in another syntax gets a context of its own from the library.) None when they would
 * not fit beside the library's contexts.
 */
function ownSyntaxes(plan: AssociationPlan): [string, string][] {
  const sources = [...plan.files?.sources.values() ?? []];
  if (sources.length === 0) return [];
  /** What the library proposes at most: a context per SOP class, one per other syntax. */
  const classes = new Set(
    plan.requests.map((request) => (request as CStoreRequest).getAffectedSopClassUid()),
  );
  const others = new Set<string>();
  const own = new Map<string, [string, string]>();
  for (const { sopClassUid, transferSyntaxUid } of sources) {
    const key = `${sopClassUid} ${transferSyntaxUid}`;
    if (transferSyntaxUid === IMPLICIT_VR_LE || transferSyntaxUid === EXPLICIT_VR_LE) {
      own.set(key, [sopClassUid, transferSyntaxUid]);
    } else others.add(key);
  }
  return classes.size + others.size + own.size <= MAX_CONTEXTS ? [...own.values()] : [];
}

interface AssociationOutcome {
  error?: string;
  /** Requests whose SOP class the peer accepted no presentation context for. */
  unaccepted: Set<Request>;
}

/**
 * One association: connect, associate, send `requests` one after the other, release.
 * Resolves once the socket is closed (bounded), never rejects. The destination's timeout
 * bounds the wait for each step: connecting, the association's answer, each response.
 */
function associate(plan: AssociationPlan): Promise<AssociationOutcome> {
  const { destination, signal } = plan;
  const where = describe(destination);
  const timeoutMs = destination.timeoutS * 1000;
  const unaccepted = new Set<Request>();
  if (signal?.aborted) {
    return Promise.resolve({ error: `sending to ${where} was cancelled`, unaccepted });
  }
  const client = new dimse.Client();
  for (const request of plan.requests) client.addRequest(request);
  for (const [sopClassUid, syntax] of ownSyntaxes(plan)) {
    client.addAdditionalPresentationContext(
      new dimse.association.PresentationContext(0, sopClassUid, syntax),
      true,
    );
  }
  return new Promise((resolve) => {
    let stage: "connecting" | "associating" | "transferring" | "released" = "connecting";
    let expected = 0;
    let answered = 0;
    let error: string | undefined;
    let stopping = false;
    let resolved = false;
    /** The library's network object: set by send(), gone once the socket closed. */
    const network = () => (client as unknown as { network?: Network }).network;
    let idle: ReturnType<typeof setTimeout> | undefined;
    let grace: ReturnType<typeof setTimeout> | undefined;

    const done = () => {
      if (resolved) return;
      resolved = true;
      clearTimeout(grace);
      resolve({ error, unaccepted });
    };
    /** Stop here: note why (the first stop wins), destroy the socket, wait for its close. */
    const stop = (why?: string) => {
      if (stopping) return; // what comes after we stopped (a late error) changes nothing
      stopping = true;
      error = why;
      clearTimeout(idle);
      signal?.removeEventListener("abort", onAbort);
      try {
        network()?.socket?.destroy();
      } catch { /* already gone */ }
      grace = setTimeout(done, CLOSE_GRACE_MS);
    };
    const onTimeout = () => {
      const s = destination.timeoutS;
      stop(
        stage === "connecting"
          ? `${where}: no connection within ${s} s`
          : stage === "associating"
          ? `${where} did not answer the association request within ${s} s`
          : `${where} sent no response for ${s} s (after ${answered} of ${expected})`,
      );
    };
    /** (Re)start the wait for the peer's next step. */
    const arm = () => {
      clearTimeout(idle);
      if (!stopping) idle = setTimeout(onTimeout, timeoutMs);
    };
    const onAbort = () => {
      try {
        client.abort();
      } catch { /* no association yet */ }
      stop(`sending to ${where} was cancelled`);
    };

    client.on("connected", () => {
      stage = "associating";
      arm();
    });
    client.on("associationAccepted", (association: dimse.association.Association) => {
      stage = "transferring";
      for (const request of plan.requests) {
        if (association.getAcceptedPresentationContextFromRequest(request) === undefined) {
          unaccepted.add(request);
        }
      }
      expected = plan.requests.length - unaccepted.size;
      for (const [request, file] of plan.files?.sources ?? []) {
        const context = association.getAcceptedPresentationContextFromRequest(request);
        if (context?.getAcceptedTransferSyntaxUid() !== file.transferSyntaxUid) continue;
        // The library's whole-file load is not needed: the file's bytes go out as they are.
        Object.assign(request, { needsFullDatasetLoading: false });
        request.setDataset(new FileDataSet(file, plan.files!.buffer));
      }
      arm();
    });
    for (const request of plan.requests) {
      request.on("response", () => {
        answered++;
        arm();
      });
    }
    client.on(
      "associationRejected",
      (rejection: { result: number; source: number; reason: number }) => {
        stop(rejectionMessage(destination, rejection));
      },
    );
    client.on("associationReleased", () => {
      stage = "released";
      stop();
    });
    client.on("networkError", (e: Error) => {
      stop(networkMessage(destination, e, stage === "transferring" || stage === "released"));
    });
    client.on("closed", () => {
      if (!stopping) {
        if (stage === "connecting" || stage === "associating") {
          stop(`${where} closed the connection before accepting the association`);
        } else if (answered < expected) {
          stop(
            `${where} closed the connection after ${answered} of ${expected} responses, ` +
              `before the association was released`,
          );
        } else stop();
      }
      done();
    });

    signal?.addEventListener("abort", onAbort, { once: true });
    arm();
    try {
      client.send(
        destination.host,
        destination.port,
        destination.callingAet,
        destination.calledAet,
        {
          // Ours is the deadline that counts; the library's (which only end() the socket)
          // are set later so that they never fire first.
          connectTimeout: timeoutMs + 5000,
          associationTimeout: timeoutMs + 5000,
          pduTimeout: timeoutMs + 5000,
          associationLingerTimeout: 0,
          ...(plan.security === undefined ? {} : { securityOptions: plan.security }),
        },
      );
    } catch (e) {
      stop(`${where}: could not start the association: ${errorMessage(e)}`);
      done();
      return;
    }
    // Created synchronously by send().
    network()?.socket?.setNoDelay?.(true);
    const net = network();
    const original = net?._sendPDataTF;
    if (net && typeof original === "function" && plan.files) {
      net._sendPDataTF = (command, contextId, maxPduLength) =>
        sendPDataTF(net, original, command, contextId, maxPduLength, {
          fail: (error) => stop(`sending to ${where} stopped: ${errorMessage(error)}`),
          // The PACS is taking a large file: its deadline starts again.
          progress: () => arm(),
        });
    }
    network()?.on("abort", ({ source, reason }) => stop(abortMessage(destination, source, reason)));
  });
}

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
