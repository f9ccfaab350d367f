/**
 * Test support: a real Orthanc PACS (issue 17), as a plain process in a temporary
 * directory with its own storage, index, log and free loopback ports (HTTP for its REST
 * API, DICOM for C-STORE), with TCP_NODELAY=1. No mocks: a test that needs Orthanc and
 * cannot start it fails, saying `apt-get install orthanc` when it is missing.
 *
 * ```ts
 * await using orthanc = await Orthanc.start({ checkCalledAet: true });
 * // send to 127.0.0.1:orthanc.dicomPort, called AE title orthanc.aet
 * assert.equal(await orthanc.count(), 32);
 * ```
 *
 * {@link makeTestPki} makes a private CA with openssl, for DICOM TLS tests.
 * Orthanc is stopped by its PID only (`stop`, `await using`); its DICOM port binds
 * 0.0.0.0 (Orthanc has no option for the address), its HTTP port answers loopback only.
 *
 * @module
 */
import * as path from "node:path";
import { delay, run } from "./e2e.ts";

/** Where Debian's orthanc package puts the server. */
export const ORTHANC_BIN = "/usr/sbin/Orthanc";

/** DICOM TLS of Orthanc: PEM files. */
export interface OrthancTls {
  /** Orthanc's certificate and key. */
  certificate: string;
  privateKey: string;
  /** The CAs whose certificates Orthanc trusts from its peers. */
  trusted: string;
  /** Whether a peer must present a certificate (mutual TLS; default true). */
  remoteCertificateRequired?: boolean;
}

/** Options of {@link Orthanc.start}. */
export interface OrthancOptions {
  /** Orthanc's AE title (default ORTHANC). */
  aet?: string;
  /** Reject associations called with another AE title (default false). */
  checkCalledAet?: boolean;
  /** DICOM over TLS instead of plain TCP. */
  tls?: OrthancTls;
}

/** One stored instance, from `GET /instances?expand`. */
export interface OrthancInstance {
  /** Orthanc's own id, for `/instances/{id}/…`. */
  id: string;
  sopInstanceUid: string;
  instanceNumber?: string;
  /** Orthanc's id of its series. */
  parentSeries: string;
}

/** What Orthanc recorded about how an instance arrived (`/instances/{id}/metadata?expand`). */
export interface OrthancMetadata {
  /** The SOP class UID. */
  SopClassUid?: string;
  /** Transfer syntax of the stored file. */
  TransferSyntax?: string;
  /** The calling AE title of the association it arrived on. */
  RemoteAET?: string;
  CalledAET?: string;
  [key: string]: string | undefined;
}

const READY_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;
const START_ATTEMPTS = 3;

function freePort(): number {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return (listener.addr as Deno.NetAddr).port;
}

async function orthancBinary(): Promise<string> {
  try {
    await Deno.stat(ORTHANC_BIN);
    return ORTHANC_BIN;
  } catch {
    throw new Error(`Orthanc is not installed (no ${ORTHANC_BIN}): apt-get install orthanc`);
  }
}

/** A running Orthanc; {@link restart} brings it back on the same ports and storage. */
export class Orthanc implements AsyncDisposable {
  /** Its directory: orthanc.json, orthanc.log, storage/, index/. */
  readonly dir: string;
  readonly aet: string;
  #dicomPort: number;
  #httpPort: number;
  readonly #options: OrthancOptions;
  readonly #binary: string;
  #child: Deno.ChildProcess | undefined;
  #status: Promise<Deno.CommandStatus> | undefined;

  private constructor(dir: string, binary: string, options: OrthancOptions) {
    this.dir = dir;
    this.#binary = binary;
    this.#options = options;
    this.aet = options.aet ?? "ORTHANC";
    this.#dicomPort = 0;
    this.#httpPort = 0;
  }

  /** Start an Orthanc on free loopback ports; resolves once its REST API and DICOM port answer. */
  static async start(options: OrthancOptions = {}): Promise<Orthanc> {
    const binary = await orthancBinary();
    const dir = await Deno.makeTempDir({ prefix: "recon-orthanc-" });
    const orthanc = new Orthanc(dir, binary, options);
    try {
      for (let attempt = 1;; attempt++) {
        // Another test may take a port between our probe and Orthanc's bind: try anew.
        orthanc.#dicomPort = freePort();
        orthanc.#httpPort = freePort();
        try {
          await orthanc.#launch();
          return orthanc;
        } catch (error) {
          if (attempt >= START_ATTEMPTS) throw error;
        }
      }
    } catch (error) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw error;
    }
  }

  /** Its DICOM (C-STORE, C-ECHO) port on 127.0.0.1. */
  get dicomPort(): number {
    return this.#dicomPort;
  }

  get httpPort(): number {
    return this.#httpPort;
  }

  /** REST base, e.g. `http://127.0.0.1:8042`. */
  get url(): string {
    return `http://127.0.0.1:${this.#httpPort}`;
  }

  /** Its PID while it runs. */
  get pid(): number | undefined {
    return this.#child?.pid;
  }

  /** Its log file. */
  get logFile(): string {
    return path.join(this.dir, "orthanc.log");
  }

  /** The end of its log, for failure messages. */
  async logTail(chars = 3000): Promise<string> {
    const text = await Deno.readTextFile(this.logFile).catch(() => "");
    return text.slice(-chars);
  }

  #config(): Record<string, unknown> {
    const tls = this.#options.tls;
    return {
      Name: "recon-test",
      StorageDirectory: path.join(this.dir, "storage"),
      IndexDirectory: path.join(this.dir, "index"),
      Plugins: [],
      LuaScripts: [],
      HttpServerEnabled: true,
      HttpPort: this.#httpPort,
      RemoteAccessAllowed: false,
      AuthenticationEnabled: false,
      DicomServerEnabled: true,
      DicomAet: this.aet,
      DicomPort: this.#dicomPort,
      DicomCheckCalledAet: this.#options.checkCalledAet ?? false,
      DicomAlwaysAllowStore: true,
      DicomAlwaysAllowEcho: true,
      ConcurrentJobs: 1,
      SaveJobs: false,
      StorageCompression: false,
      OrthancExplorerEnabled: false,
      WebDavEnabled: false,
      ...(tls === undefined ? {} : {
        DicomTlsEnabled: true,
        DicomTlsCertificate: tls.certificate,
        DicomTlsPrivateKey: tls.privateKey,
        DicomTlsTrustedCertificates: tls.trusted,
        DicomTlsRemoteCertificateRequired: tls.remoteCertificateRequired ?? true,
      }),
    };
  }

  async #launch(): Promise<void> {
    const config = path.join(this.dir, "orthanc.json");
    await Deno.writeTextFile(config, JSON.stringify(this.#config(), null, 1));
    const child = new Deno.Command(this.#binary, {
      args: [`--logfile=${this.logFile}`, config],
      env: { TCP_NODELAY: "1" },
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    this.#child = child;
    let exited: Deno.CommandStatus | undefined;
    this.#status = child.status.then((status) => (exited = status));
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!(await this.#answers())) {
      if (exited !== undefined || Date.now() > deadline) {
        if (exited === undefined) await this.stop("SIGKILL");
        this.#child = undefined;
        throw new Error(
          `Orthanc ${
            exited === undefined
              ? `did not answer within ${READY_TIMEOUT_MS} ms`
              : `exited (code ${exited.code}) while starting`
          } (ports ${this.#dicomPort}, ${this.#httpPort}); end of ${this.logFile}:\n${await this
            .logTail()}`,
        );
      }
      await delay(20);
    }
  }

  /** True when GET /system is 200 and the DICOM port takes a connection. */
  async #answers(): Promise<boolean> {
    try {
      const response = await fetch(`${this.url}/system`);
      await response.body?.cancel();
      if (response.status !== 200) return false;
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: this.#dicomPort });
      conn.close();
      return true;
    } catch {
      return false;
    }
  }

  /** GET a REST path; throws with the status and body unless 200. */
  async get<T>(route: string): Promise<T> {
    const response = await fetch(`${this.url}${route}`);
    const text = await response.text();
    if (response.status !== 200) {
      throw new Error(`Orthanc GET ${route}: HTTP ${response.status} ${text.slice(0, 300)}`);
    }
    return JSON.parse(text) as T;
  }

  /** Every stored instance. */
  async instances(): Promise<OrthancInstance[]> {
    const list = await this.get<
      { ID: string; ParentSeries: string; MainDicomTags: Record<string, string> }[]
    >("/instances?expand");
    return list.map((i) => ({
      id: i.ID,
      sopInstanceUid: i.MainDicomTags.SOPInstanceUID,
      instanceNumber: i.MainDicomTags.InstanceNumber,
      parentSeries: i.ParentSeries,
    }));
  }

  /** How an instance arrived: SOP class, transfer syntax, calling and called AE titles. */
  metadata(id: string): Promise<OrthancMetadata> {
    return this.get<OrthancMetadata>(`/instances/${id}/metadata?expand`);
  }

  /** How many instances it stores. */
  async count(): Promise<number> {
    return (await this.get<{ CountInstances: number }>("/statistics")).CountInstances;
  }

  /**
   * Stop it by PID and wait until it has exited. SIGTERM (1–3 s) falls back to SIGKILL
   * after 10 s; SIGKILL is a crash in the middle of whatever it was doing.
   */
  async stop(signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<void> {
    const child = this.#child;
    const status = this.#status;
    if (child === undefined || status === undefined) return;
    try {
      child.kill(signal);
    } catch { /* already exited */ }
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* already exited */ }
    }, STOP_TIMEOUT_MS);
    try {
      await status;
    } finally {
      clearTimeout(timer);
      this.#child = undefined;
      this.#status = undefined;
    }
  }

  /** Stop it (when it runs) and start it again: same ports, same storage. */
  async restart(): Promise<void> {
    await this.stop();
    await this.#launch();
  }

  /** Kill it and remove its directory. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop("SIGKILL");
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** PEM files of a private test PKI made by {@link makeTestPki}. */
export interface TestPki {
  /** The CA certificate that signed the server and client certificates. */
  ca: string;
  /** Server certificate (CN orthanc, for IP 127.0.0.1 and localhost) and its key. */
  serverCertificate: string;
  serverKey: string;
  /** Client certificate (CN recon) and its key, for mutual TLS. */
  clientCertificate: string;
  clientKey: string;
  /** Another CA's certificate, which signed nothing here: trusting it must fail. */
  otherCa: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  let result;
  try {
    result = await run("openssl", args, { cwd, timeoutMs: 60_000 });
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error("openssl not found: apt-get install openssl");
    }
    throw error;
  }
  if (result.code !== 0) {
    throw new Error(
      `openssl ${args.slice(0, 2).join(" ")} failed (exit ${result.code}): ${result.stderr}`,
    );
  }
}

/** A private CA, a server and a client certificate signed by it, and an unrelated CA, in `dir`. */
export async function makeTestPki(dir: string): Promise<TestPki> {
  await Deno.mkdir(dir, { recursive: true });
  const file = (name: string) => path.join(dir, name);
  const makeCa = (name: string) =>
    openssl([
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.crt`,
      "-days",
      "2",
      "-subj",
      `/CN=recon test ${name}`,
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    ], dir);
  const makeLeaf = async (name: string, cn: string, usage: string, serial: string) => {
    await openssl([
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.csr`,
      "-subj",
      `/CN=${cn}`,
    ], dir);
    await Deno.writeTextFile(
      file(`${name}.ext`),
      `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n` +
        `extendedKeyUsage=${usage}\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n`,
    );
    await openssl([
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-set_serial",
      serial,
      "-days",
      "2",
      "-extfile",
      `${name}.ext`,
      "-out",
      `${name}.crt`,
    ], dir);
  };
  await Promise.all([makeCa("ca"), makeCa("other-ca")]);
  await Promise.all([
    makeLeaf("server", "orthanc", "serverAuth,clientAuth", "1001"),
    makeLeaf("client", "recon", "clientAuth,serverAuth", "1002"),
  ]);
  return {
    ca: file("ca.crt"),
    serverCertificate: file("server.crt"),
    serverKey: file("server.key"),
    clientCertificate: file("client.crt"),
    clientKey: file("client.key"),
    otherCa: file("other-ca.crt"),
  };
}
