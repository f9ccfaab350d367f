/**
 * One connection of the monitoring endpoint (lib/monitor/http_server.ts), plain TCP or
 * TLS: reads and writes that end at a deadline or when the server closes, and a close
 * that lingers so the client gets to read the answer.
 *
 * TLS runs over our own TCP connection (node:tls), not Deno.listenTls. In Deno 2.9,
 * closing a Deno.TlsConn whose client never finished its handshake leaves the socket
 * open until the client acts (rustls-tokio-stream's handshake task holds it), so a
 * client that connects and stays silent would keep a file descriptor for as long as
 * it likes. Closing our own TCP connection always frees it.
 *
 * @module
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { Duplex } from "node:stream";
import { createSecureContext, type SecureContext, TLSSocket } from "node:tls";
import { errorMessage } from "../errors.ts";

/** What a read or wait returns when its deadline passed or the server is closing. */
export const LATE = Symbol("late");

/** After answering, read and drop what the client still sends for this long (or this
 * much): closing with unread bytes would reset the connection, and the client could lose
 * the answer it has not read yet. */
const LINGER_MS = 1000;
const LINGER_MAX_BYTES = 65_536;
/** How long close() waits for a read in progress to end (it ends at once in practice). */
const CLOSE_WAIT_MS = 1000;

/** The byte stream under a connection. */
interface Transport {
  /** The next bytes, or null at the end; rejects when the connection fails. */
  read(): Promise<Uint8Array | null>;
  write(bytes: Uint8Array): Promise<void>;
  closeWrite(): Promise<void>;
  /** Free the socket now. */
  close(): void;
}

/**
 * A TLS server context for PEM text; throws a TypeError saying what is wrong when the
 * certificate or the key cannot be read or the key does not belong to the certificate.
 */
export function tlsContext(cert: string, key: string): SecureContext {
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(cert);
  } catch (error) {
    throw new TypeError(`the TLS certificate is not a PEM certificate (${errorMessage(error)})`);
  }
  let privateKey: ReturnType<typeof createPrivateKey>;
  try {
    privateKey = createPrivateKey(key);
  } catch (error) {
    throw new TypeError(`the TLS key is not a PEM private key (${errorMessage(error)})`);
  }
  if (!certificate.checkPrivateKey(privateKey)) {
    throw new TypeError("the TLS key does not belong to the TLS certificate");
  }
  return createSecureContext({ cert, key });
}

/** Reads and writes of one accepted connection, each bounded by a deadline and `signal`. */
export class Connection {
  #transport: Transport;
  #signal: AbortSignal;
  /** A read that outlived its deadline, reused by the next read so no bytes are lost. */
  #pending?: Promise<Uint8Array | null>;

  /** Why the TLS layer failed (a failed handshake), for the log. */
  tlsError?: Error;

  /** `tls` set: the client speaks TLS on `conn`; `signal`: the server is closing. */
  constructor(conn: Deno.Conn, tls: SecureContext | undefined, signal: AbortSignal) {
    this.#transport = tls
      ? tlsTransport(conn, tls, (error) => this.tlsError ??= error)
      : tcpTransport(conn);
    this.#signal = signal;
  }

  /** The next bytes, null at the end (or on an error), LATE after `deadline` (epoch ms). */
  async read(deadline: number): Promise<Uint8Array | null | typeof LATE> {
    this.#pending ??= this.#transport.read().catch(() => null);
    const chunk = await within(this.#pending, deadline, this.#signal);
    if (chunk !== LATE) this.#pending = undefined;
    return chunk;
  }

  /** Write all of `bytes` by `deadline`, or close the connection. */
  async write(bytes: Uint8Array, deadline: number): Promise<void> {
    const writing = this.#transport.write(bytes).catch(() => {});
    if (await within(writing, deadline, this.#signal) === LATE) await this.close();
  }

  /** Half-close, drop what the client still sends (bounded), then close. */
  async finish(): Promise<void> {
    const deadline = Date.now() + LINGER_MS;
    await within(this.#transport.closeWrite().catch(() => {}), deadline, this.#signal);
    for (let dropped = 0; dropped < LINGER_MAX_BYTES;) {
      const chunk = await this.read(deadline);
      if (chunk === null || chunk === LATE) break;
      dropped += chunk.length;
    }
    await this.close();
  }

  /** Close now; resolves once a read in progress has ended. */
  async close(): Promise<void> {
    this.#transport.close();
    if (this.#pending) await within(this.#pending, Date.now() + CLOSE_WAIT_MS, NEVER);
  }
}

const NEVER = new AbortController().signal;

/** `promise`'s value, or LATE if `deadline` (epoch ms) passes or `signal` aborts first. */
export function within<T>(
  promise: Promise<T>,
  deadline: number,
  signal: AbortSignal,
): Promise<T | typeof LATE> {
  return new Promise((resolve) => {
    const settle = (value: T | typeof LATE) => {
      clearTimeout(timer);
      signal.removeEventListener("abort", late);
      resolve(value);
    };
    const late = () => settle(LATE);
    const timer = setTimeout(late, Math.max(0, deadline - Date.now()));
    signal.addEventListener("abort", late);
    if (signal.aborted) late();
    promise.then(settle);
  });
}

function tcpTransport(conn: Deno.Conn): Transport {
  const buffer = new Uint8Array(16_384);
  return {
    read: async () => {
      const count = await conn.read(buffer);
      return count === null ? null : buffer.slice(0, count);
    },
    write: async (bytes) => {
      for (let done = 0; done < bytes.length;) done += await conn.write(bytes.subarray(done));
    },
    closeWrite: () => conn.closeWrite(),
    close: () => {
      try {
        conn.close();
      } catch { /* closed already */ }
    },
  };
}

function tlsTransport(
  conn: Deno.Conn,
  context: SecureContext,
  onError: (error: Error) => void,
): Transport {
  const tcp = tcpTransport(conn);
  const duplex = new Duplex({
    read() {
      tcp.read().then((chunk) => this.push(chunk), (error) => this.destroy(error));
    },
    write(chunk, _encoding, callback) {
      tcp.write(chunk).then(() => callback(), callback);
    },
    final(callback) {
      tcp.closeWrite().then(() => callback(), callback);
    },
    destroy(error, callback) {
      tcp.close();
      callback(error);
    },
  });
  const socket = new TLSSocket(duplex, { isServer: true, secureContext: context });
  // A failed handshake: noted for the log; the next read or write fails.
  socket.on("error", onError);
  const chunks = socket[Symbol.asyncIterator]();
  return {
    read: async () => {
      const next = await chunks.next();
      return next.done ? null : next.value;
    },
    write: (bytes) =>
      new Promise((resolve, reject) =>
        socket.write(bytes, (error) => error ? reject(error) : resolve())
      ),
    closeWrite: () => new Promise((resolve) => socket.end(() => resolve())),
    close: () => {
      socket.destroy();
      tcp.close();
    },
  };
}
