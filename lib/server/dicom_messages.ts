/**
 * One-line messages for what a DICOM peer did (lib/server/dicom_send.ts and dicom_association.ts use them): an
 * A-ASSOCIATE-RJ with its meaning (permanent or transient, who, why: PS3.8 Table 9-21),
 * an A-ABORT (PS3.8 Table 9-26), a network error of dcmjs-dimse, and C-STORE statuses
 * (PS3.7 Annex C, PS3.4 Table B.2-1). Each names the destination and, where there is
 * one, what to change. No I/O.
 *
 * @module
 */
import type { Destination } from "../opts/mod.ts";

/** `destination PACS (ORTHANC@pacs.example:104)`, for messages. */
export function describe(destination: Destination): string {
  return `destination ${destination.name} (${destination.calledAet}@${destination.host}:${destination.port})`;
}

// PS3.8 Table 9-21 (A-ASSOCIATE-RJ): source, then reason by source.
const REJECT_SOURCES: Record<number, string> = {
  1: "its DICOM application",
  2: "its DICOM upper layer (ACSE)",
  3: "its DICOM upper layer (presentation)",
};
const REJECT_REASONS: Record<string, string> = {
  "1/1": "no reason given",
  "1/2": "application context name not supported",
  "1/3": "our calling AE title is not recognized",
  "1/7": "the called AE title is not recognized",
  "2/1": "no reason given",
  "2/2": "protocol version not supported",
  "3/1": "temporary congestion",
  "3/2": "local limit exceeded",
};
const REJECT_HINTS: Record<string, (d: Destination) => string> = {
  "1/3": (d) =>
    `; register the AE title ${d.callingAet} at the PACS or set calling= in DESTINATION_${d.name}`,
  "1/7": (d) => `; check the called AE title ${d.calledAet} in DESTINATION_${d.name}`,
};

/** One line for an A-ASSOCIATE-RJ. */
export function rejectionMessage(
  destination: Destination,
  rejection: { result: number; source: number; reason: number },
): string {
  const key = `${rejection.source}/${rejection.reason}`;
  const kind = rejection.result === 2 ? "transient" : "permanent";
  const by = REJECT_SOURCES[rejection.source] ?? `source ${rejection.source}`;
  const why = REJECT_REASONS[key] ?? `reason ${rejection.reason}`;
  return `${describe(destination)} rejected the association (${kind}, by ${by}): ${why}` +
    (REJECT_HINTS[key]?.(destination) ?? "");
}

// PS3.8 Table 9-26 (A-ABORT): source 0 service user, 2 service provider.
const ABORT_REASONS: Record<number, string> = {
  0: "reason not specified",
  1: "unrecognized PDU",
  2: "unexpected PDU",
  4: "unrecognized PDU parameter",
  5: "unexpected PDU parameter",
  6: "invalid PDU parameter value",
};

/** One line for an A-ABORT the peer sent. */
export function abortMessage(destination: Destination, source: number, reason: number): string {
  const by = source === 0
    ? "its DICOM application"
    : source === 2
    ? "its DICOM upper layer"
    : `source ${source}`;
  const why = source === 2 ? (ABORT_REASONS[reason] ?? `reason ${reason}`) : "no reason given";
  // A PACS that refuses an unknown calling AE title often aborts rather than rejects.
  const hint = source === 0
    ? `; does the PACS know our AE title ${destination.callingAet} (calling= in DESTINATION_${destination.name})?`
    : "";
  return `${describe(destination)} aborted the association (by ${by}: ${why})${hint}`;
}

/** One line for the library's network error (its message starts with `AET -> `). */
export function networkMessage(
  destination: Destination,
  error: Error,
  associated: boolean,
): string {
  const message = error.message.replace(/^.*? -> (Connection error: )?/, "");
  const where = describe(destination);
  if (/ECONNREFUSED/.test(message)) {
    return `${where}: connection refused (is the PACS running, and is the port right?)`;
  }
  if (/ENOTFOUND|EAI_AGAIN|EAI_NONAME|getaddrinfo|failed to lookup/i.test(message)) {
    return `${where}: host ${destination.host} not found (${message})`;
  }
  if (/EHOSTUNREACH|ENETUNREACH/.test(message)) {
    return `${where}: host unreachable (${message})`;
  }
  if (/ECONNRESET|EPIPE/.test(message)) {
    // A DICOM TLS port resets a plain association request.
    const hint = associated || destination.tls ? "" : "; if it expects DICOM TLS, use dicom+tls://";
    return `${where} reset the connection (${message})${hint}`;
  }
  if (
    /certificate|self.signed|CERT_|verify|Hostname|IP address|SSL|TLS|handshake|alert/i.test(
      message,
    )
  ) {
    return `${where}: TLS failed: ${message} (check ca=, cert= and key= of DESTINATION_${destination.name})`;
  }
  return `${where}: network error: ${message}`;
}

// PS3.7 Annex C and PS3.4 Table B.2-1: the C-STORE statuses with a name.
const STATUS_NAMES: Record<number, string> = {
  0x0001: "warning: requested optional attributes are not supported",
  0x0107: "warning: attribute list error",
  0x0116: "warning: attribute value out of range",
  0xb000: "warning: coercion of data elements",
  0xb006: "warning: elements discarded",
  0xb007: "warning: data set does not match SOP class",
  0x0110: "processing failure",
  0x0117: "invalid SOP instance",
  0x0122: "SOP class not supported",
  0x0124: "not authorized",
  0x0210: "duplicate invocation",
  0x0211: "unrecognized operation",
  0x0212: "mistyped argument",
  0x0213: "resource limitation",
};

/** Whether a C-STORE status means stored: success or a warning (PS3.7 Annex C). */
export function storedStatus(status: number): boolean {
  return status === 0 || status === 0x0001 || status === 0x0107 || status === 0x0116 ||
    (status & 0xf000) === 0xb000;
}

/** `0xA700 (refused: out of resources)`. */
export function statusText(status: number): string {
  const hex = `0x${status.toString(16).toUpperCase().padStart(4, "0")}`;
  const name = STATUS_NAMES[status] ??
    ((status & 0xff00) === 0xa700
      ? "refused: out of resources"
      : (status & 0xff00) === 0xa900
      ? "error: data set does not match SOP class"
      : (status & 0xf000) === 0xc000
      ? "error: cannot understand"
      : (status & 0xf000) === 0xb000
      ? "warning"
      : undefined);
  return name === undefined ? hex : `${hex} (${name})`;
}
