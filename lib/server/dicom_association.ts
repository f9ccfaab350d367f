/**
 * One DICOM association with a configured {@link Destination}, for lib/server/dicom_send.ts
 * (C-STORE and C-ECHO): connect, optionally over TLS (PS3.15 Annex B.1), propose
 * presentation contexts (PS3.8 §9.3.2.2), send the given requests one after the other,
 * release, and say in one line how it ended if not well.
 *
 * The DICOM upper layer is dcmjs-dimse 0.3.3. Its defects met here, and what this module
 * does about each (all were seen against Orthanc 1.10):
 * - it never sets TCP_NODELAY, costing 40–90 ms per instance: we set it on its socket;
 * - its timeouts only end() the socket, so against a silent peer nothing ever closes: we
 *   keep our own deadline (the destination's timeout, re-armed by every answer and by
 *   every megabyte of a streamed file the PACS takes) and destroy the socket;
 * - a peer's A-ABORT is not surfaced: we listen for it on its network object;
 * - a request whose SOP class the peer did not accept is skipped silently: we check each
 *   one when the association is accepted and return them ({@link AssociationOutcome});
 * - it parses every file whole and encodes its data set again to send it (several copies
 *   of the file in memory, ~10 ms of CPU per 512 KiB image), and proposes implicit and
 *   explicit VR in one context, converting every file in the syntax the PACS did not pick:
 *   we propose each file's own syntax in a context of its own, and when the PACS accepted
 *   it, the data set goes out as the file's bytes ({@link FileDataSet}), as storescu
 *   sends it, streamed a megabyte at a time ({@link sendPDataTF}); else the library
 *   converts it.
 *
 * Nothing here throws for network trouble; the wording (what a rejection, an abort or a
 * status means) is lib/server/dicom_messages.ts.
 *
 * @module
 */
import "./quiet_dcmjs.ts"; // first: it must wrap console.error before dcmjs loads
import dimse from "dcmjs-dimse";
import type { Destination } from "../opts/mod.ts";
import { errorMessage } from "../errors.ts";
import {
  FileDataSet,
  type FileSource,
  type Network,
  type ReadBuffer,
  sendPDataTF,
} from "./dicom_stream.ts";
import { abortMessage, describe, networkMessage, rejectionMessage } from "./dicom_messages.ts";

dimse.log.setLevel("silent");

/** How long to wait for the socket to close after we destroyed it. */
const CLOSE_GRACE_MS = 2000;

/** A DIMSE request of the library: C-STORE or C-ECHO here. */
export type Request = dimse.requests.Request;
/** The library's C-STORE request. */
export type CStoreRequest = dimse.requests.CStoreRequest;
/** The destination's TLS files, as the library takes them. */
export type SecurityOptions = { ca: string; cert?: string; key?: string; rejectUnauthorized: true };

/**
 * The destination's TLS files, read now (so that a renewed certificate is used without a
 * restart), or one line saying which one could not be read.
 */
export async function readSecurity(
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

/** What one association is to do: {@link associate}. */
export interface AssociationPlan {
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

/** How one association ended: {@link associate}. */
export interface AssociationOutcome {
  error?: string;
  /** Requests whose SOP class the peer accepted no presentation context for. */
  unaccepted: Set<Request>;
}

/**
 * One association: connect, associate, send `requests` one after the other, release.
 * Resolves once the socket is closed (bounded), never rejects. The destination's timeout
 * bounds the wait for each step: connecting, the association's answer, each response.
 */
export function associate(plan: AssociationPlan): Promise<AssociationOutcome> {
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
