/**
 * Opening a secure session to the server, with errors that say what to check
 * (docs/PROTOCOL.md §2, README "Exit codes": 3).
 *
 * @module
 */
import { Channel, type ChannelOptions } from "../wire/channel.ts";
import { ConnectionError, errorMessage, ReconError, TimeoutError } from "../errors.ts";
import type { ReconConfig } from "../opts/mod.ts";
import { loadCryptoBackend } from "../crypto/backend.ts";

/** Where and with which key. */
export interface ConnectOptions extends ChannelOptions {
  host: string;
  port: number;
  sharedKey: Uint8Array<ArrayBuffer>;
  keyId: string;
  /** TCP connect deadline (ms). Default 10 s. */
  connectTimeoutMs?: number;
}

/**
 * The connection settings recon.opts gives (server address, key, timeouts, crypto
 * backend). Throws ConfigError for CRYPTO_BACKEND = openssl when libcrypto cannot load.
 */
export function connectOptionsFrom(
  config: ReconConfig,
  key: { raw: Uint8Array<ArrayBuffer>; id: string },
  onClockSkew: (seconds: number) => void,
): ConnectOptions {
  return {
    host: config.SERVER_HOST,
    port: config.SERVER_PORT,
    sharedKey: key.raw,
    keyId: key.id,
    idleTimeoutMs: config.IDLE_TIMEOUT * 1000,
    handshakeTimeoutMs: config.HANDSHAKE_TIMEOUT * 1000,
    crypto: loadCryptoBackend(config.CRYPTO_BACKEND),
    onClockSkew,
  };
}

/**
 * A failed TCP connect as a ConnectionError that says what to check: an unknown host
 * name points at SERVER_HOST, anything else (refused, unreachable) at whether
 * recon-server runs at SERVER_HOST:SERVER_PORT.
 */
export function connectFailure(error: unknown, host: string, port: number): ConnectionError {
  const where = `${host}:${port}`;
  const text = errorMessage(error);
  if (/lookup address|name or service not known|nodename nor servname/i.test(text)) {
    return new ConnectionError(`cannot connect to ${where}: unknown host name ${host}`, {
      hint: "check SERVER_HOST in recon.opts (or --host): a name this machine can resolve, " +
        "or an IP address",
      cause: error,
    });
  }
  const reason = error instanceof Deno.errors.ConnectionRefused ? "connection refused" : text;
  return new ConnectionError(`cannot connect to ${where}: ${reason}`, {
    hint: "is recon-server running there? check SERVER_HOST and SERVER_PORT in recon.opts",
    cause: error,
  });
}

/** Connect and run the handshake. Throws ConnectionError/HandshakeError with a hint. */
export async function connectToServer(options: ConnectOptions): Promise<Channel> {
  const where = `${options.host}:${options.port}`;
  const connectMs = options.connectTimeoutMs ?? 10_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const connecting = Deno.connect({ hostname: options.host, port: options.port });
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new ConnectionError(`cannot connect to ${where}: no answer in ${seconds(connectMs)}`, {
            hint: `is ${options.host} up and reachable (no firewall dropping port ` +
              `${options.port})? check SERVER_HOST and SERVER_PORT in recon.opts`,
          }),
        ),
      connectMs,
    );
  });
  let conn: Deno.TcpConn;
  try {
    conn = await Promise.race([connecting, timeout]);
  } catch (error) {
    connecting.then((late) => late.close(), () => {});
    if (error instanceof ReconError) throw error;
    throw connectFailure(error, options.host, options.port);
  } finally {
    clearTimeout(timer);
  }
  try {
    conn.setNoDelay(true);
    return await Channel.connect(conn, { peerName: "server", ...options });
  } catch (error) {
    try {
      conn.close();
    } catch { /* closed by the handshake */ }
    if (error instanceof TimeoutError) {
      // Something listens there but says nothing: another service on SERVER_PORT, a
      // proxy, or a server so loaded it cannot answer within HANDSHAKE_TIMEOUT.
      const waited = seconds(options.handshakeTimeoutMs ?? 10_000);
      throw new TimeoutError(`handshake with ${where} failed: no answer in ${waited}`, {
        hint: `something at ${where} accepted the connection but did not answer as a ` +
          "recon-server; check SERVER_PORT (and SERVER_HOST) in recon.opts",
        cause: error,
      });
    }
    if (error instanceof ReconError) {
      throw Object.assign(error, { message: `handshake with ${where} failed: ${error.message}` });
    }
    throw new ConnectionError(`handshake with ${where} failed: ${errorMessage(error)}`, {
      cause: error,
    });
  }
}

/** "10 s", "0.5 s". */
function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}
