/**
 * Named DICOM destinations of recon.opts: `DESTINATION_<NAME> = dicom://CALLED_AET@host:port
 * ?calling=OUR_AET&timeout=30` (or `dicom+tls://…&ca=…&cert=…&key=…`), where results are sent
 * with C-STORE (docs/DEPLOY.md §12). NAME is letters and digits, so every setting of a
 * destination stays on its one line; names compare case-insensitively and are kept upper case.
 * A client names a destination, never a host.
 *
 * @module
 */

/** Where and how to send: parsed from one `DESTINATION_<NAME>` line. */
export interface Destination {
  /** NAME, upper case. */
  name: string;
  /** The URL as written (it holds no secret: TLS material is named by file). */
  url: string;
  calledAet: string;
  host: string;
  port: number;
  callingAet: string;
  /** Seconds allowed to connect, to associate, and for each response. */
  timeoutS: number;
  /** `dicom+tls`: the CA that signed the PACS's certificate; our own certificate and key for mutual TLS. */
  tls?: { ca: string; cert?: string; key?: string };
}

/** `DESTINATION_PACS`: a destination's option name (upper case, as every option name). */
export const DESTINATION_KEY: RegExp = /^DESTINATION_([A-Z0-9]+)$/;
/** A destination name: letters and digits. */
export const DESTINATION_NAME: RegExp = /^[A-Za-z0-9]+$/;

/** Defaults of the URL's query. */
export const DEFAULT_CALLING_AET = "RECON";
export const DEFAULT_DICOM_TIMEOUT_S = 30;
/** The DICOM port IANA assigned, when the URL names none. */
export const DEFAULT_DICOM_PORT = 104;

/** Thrown with a reason the caller prefixes with file, line and option. */
export class DestinationError extends Error {
  readonly hint: string;
  constructor(message: string, hint: string) {
    super(message);
    this.hint = hint;
  }
}

const EXAMPLE = "dicom://ORTHANC@pacs.example.org:4242?calling=RECON&timeout=30";

/**
 * Parse one destination URL. Relative TLS file paths are resolved with `resolvePath`.
 * @throws {DestinationError} saying what is wrong with it.
 */
export function parseDestination(
  name: string,
  text: string,
  resolvePath: (file: string) => string = (file) => file,
): Destination {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new DestinationError(`is not a URL: ${JSON.stringify(text)}`, `write it as ${EXAMPLE}`);
  }
  const scheme = url.protocol.slice(0, -1);
  if (scheme !== "dicom" && scheme !== "dicom+tls") {
    throw new DestinationError(
      `must start with dicom:// or dicom+tls://, got ${scheme}://`,
      `write it as ${EXAMPLE}`,
    );
  }
  const calledAet = decodeURIComponent(url.username);
  if (calledAet === "") {
    throw new DestinationError(
      "names no called AE title (the PACS's) before @",
      `write it as ${EXAMPLE}`,
    );
  }
  checkAeTitle("the called AE title", calledAet);
  if (url.password !== "") {
    throw new DestinationError("holds a password: DICOM has none", `write it as ${EXAMPLE}`);
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1");
  if (host === "") throw new DestinationError("names no host", `write it as ${EXAMPLE}`);
  if (url.pathname !== "" && url.pathname !== "/") {
    throw new DestinationError(
      `has a path (${url.pathname}): DICOM has none`,
      `write it as ${EXAMPLE}`,
    );
  }
  const port = url.port === "" ? DEFAULT_DICOM_PORT : Number(url.port);
  const query = readQuery(url.searchParams);
  const destination: Destination = {
    name: name.toUpperCase(),
    url: text,
    calledAet,
    host,
    port,
    callingAet: query.calling ?? DEFAULT_CALLING_AET,
    timeoutS: query.timeout ?? DEFAULT_DICOM_TIMEOUT_S,
  };
  checkAeTitle("calling=", destination.callingAet);
  if (scheme === "dicom+tls") {
    if (query.ca === undefined) {
      throw new DestinationError(
        "dicom+tls needs ca=FILE, the CA certificate (PEM) that signed the PACS's certificate",
        "add &ca=/etc/recon/pacs-ca.pem (and cert= and key= when the PACS wants ours)",
      );
    }
    if ((query.cert === undefined) !== (query.key === undefined)) {
      throw new DestinationError(
        "cert= and key= go together (our certificate and its key, for a PACS that asks for one)",
        "give both, or neither",
      );
    }
    destination.tls = { ca: resolvePath(query.ca) };
    if (query.cert !== undefined) destination.tls.cert = resolvePath(query.cert);
    if (query.key !== undefined) destination.tls.key = resolvePath(query.key);
  } else if (query.ca ?? query.cert ?? query.key) {
    throw new DestinationError(
      "ca=, cert= and key= are for dicom+tls:// only",
      "write dicom+tls:// to use TLS, or remove them",
    );
  }
  return destination;
}

interface Query {
  calling?: string;
  timeout?: number;
  ca?: string;
  cert?: string;
  key?: string;
}

function readQuery(params: URLSearchParams): Query {
  const query: Query = {};
  for (const [key, value] of params) {
    switch (key) {
      case "calling":
        query.calling = value;
        break;
      case "timeout": {
        const seconds = /^\d+(\.\d+)?$/.test(value) ? Number(value) : NaN;
        if (!(seconds >= 1 && seconds <= 3600)) {
          throw new DestinationError(
            `timeout=${value} must be seconds from 1 to 3600`,
            "e.g. timeout=30",
          );
        }
        query.timeout = seconds;
        break;
      }
      case "ca":
      case "cert":
      case "key":
        if (value === "") throw new DestinationError(`${key}= names no file`, `give ${key}=FILE`);
        query[key] = value;
        break;
      default:
        throw new DestinationError(
          `unknown setting ${JSON.stringify(key)}`,
          "the settings are calling=, timeout=, and for dicom+tls ca=, cert=, key=",
        );
    }
  }
  return query;
}

/** An AE title: 1 to 16 characters of printable ASCII, no backslash, not only spaces. */
function checkAeTitle(what: string, title: string): void {
  if (
    title.length > 16 || !/^[\x20-\x7e]+$/.test(title) || title.includes("\\") ||
    title.trim() === ""
  ) {
    throw new DestinationError(
      `${what} ${
        JSON.stringify(title)
      } is not an AE title (1 to 16 printable characters, no backslash)`,
      "use the AE title the PACS administrator gave you",
    );
  }
}
