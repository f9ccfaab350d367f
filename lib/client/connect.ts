/**
 * Opening a secure session to the server, with errors that say what to check
 * (docs/PROTOCOL.md §2, README "Exit codes": 3).
 *
 * @module
 */
import { Channel, type ChannelOptions } from "../wire/channel.ts";
import { ConnectionError, errorMessage, ReconError } from "../errors.ts";
import type { ReconConfig } from "../opts/mod.ts";

/** Where and with which key. */
export interface ConnectOptions extends ChannelOptions {
  host: string;
  port: number;
  sharedKey: Uint8Array<ArrayBuffer>;
  keyId: string;
  /** TCP connect deadline (ms). Default 10 s. */
  connectTimeoutMs?: number;
}

/** The connection settings recon.opts gives (server address, key, timeouts). */
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
    onClockSkew,
  };
}

/** Connect and run the handshake. Throws ConnectionError/HandshakeError with a hint. */
export async function connectToServer(options: ConnectOptions): Promise<Channel> {
  const where = `${options.host}:${options.port}`;
  const hint = "is recon-server running there? check SERVER_HOST and SERVER_PORT in recon.opts";
  let timer: ReturnType<typeof setTimeout> | undefined;
  const connecting = Deno.connect({ hostname: options.host, port: options.port });
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new ConnectionError(`cannot connect to ${where}: timed out`, { hint })),
      options.connectTimeoutMs ?? 10_000,
    );
  });
  let conn: Deno.TcpConn;
  try {
    conn = await Promise.race([connecting, timeout]);
  } catch (error) {
    connecting.then((late) => late.close(), () => {});
    if (error instanceof ReconError) throw error;
    const reason = error instanceof Deno.errors.ConnectionRefused
      ? "connection refused"
      : errorMessage(error);
    throw new ConnectionError(`cannot connect to ${where}: ${reason}`, { hint, cause: error });
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
    if (error instanceof ReconError) {
      throw Object.assign(error, { message: `handshake with ${where} failed: ${error.message}` });
    }
    throw new ConnectionError(`handshake with ${where} failed: ${errorMessage(error)}`, {
      cause: error,
    });
  }
}
