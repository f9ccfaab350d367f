/**
 * recon-server: accepts jobs from recon-client, runs the site's reconstruction
 * script on them, and sends the images back. See `recon-server --help`.
 *
 * This is the only server module that reads Deno.args, writes stdout or exits.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { describeError, loadConfig, sharedKeyMaterial } from "./lib/cli/support.ts";
import { ConfigError, errorMessage, ExitCode, UsageError } from "./lib/errors.ts";
import { decodeKey, generateKey, keyId } from "./lib/crypto/keys.ts";
import { log, setupLogging, shutdownLogging } from "./lib/log.ts";
import { showConfigJson } from "./lib/opts/mod.ts";
import { ReconServer } from "./lib/server/server.ts";
import { VERSION } from "./lib/version.ts";

const PROGRAM = "recon-server";

const HELP = `${PROGRAM} ${VERSION}: the recon box side of recon. Accepts encrypted jobs from
recon-client, queues them, runs RECON_SCRIPT on each (at most MAX_CONCURRENT_JOBS at
a time) and sends the results back.

Usage:
  ${PROGRAM} [--opts PATH] [--host HOST] [--port PORT] [--debug]
  ${PROGRAM} --show-config [--opts PATH]
  ${PROGRAM} keygen

Options:
  --opts PATH     recon.opts to use (default ./recon.opts). When it is missing a
                  default file is written there (mode 0600) with a new SHARED_KEY;
                  copy that key into every client's recon.opts.
  --host HOST     listen address (overrides SERVER_HOST; 0.0.0.0 for all)
  --port PORT     listen port (overrides SERVER_PORT; 0 picks a free port)
  --debug         debug logging
  --show-config   print the effective configuration as JSON (key redacted) and exit
  -h, --help      this help
  -V, --version   print the version

Commands:
  keygen          print a new SHARED_KEY (32 random bytes, urlsafe base64) and exit

Signals: SIGINT or SIGTERM stop accepting connections, cancel queued jobs, let
running jobs finish within SHUTDOWN_GRACE seconds, then exit 0. A second signal
stops at once (exit 1).

Exit codes: 0 clean shutdown, 1 stopped by a second signal, 2 usage or
configuration error (including RECON_FILEPATH or RECON_DICOM_DIR not writable),
3 cannot listen.

Example:
  ${PROGRAM} keygen              # put the key in recon.opts on both machines
  ${PROGRAM} --opts /etc/recon/recon.opts
`;

const encoder = new TextEncoder();

function writeStdout(text: string): void {
  const bytes = encoder.encode(text);
  let written = 0;
  while (written < bytes.length) written += Deno.stdout.writeSync(bytes.subarray(written));
}

function writeStderr(text: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(text));
  } catch { /* stderr closed */ }
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        opts: { type: "string" },
        host: { type: "string" },
        port: { type: "string" },
        debug: { type: "boolean" },
        "show-config": { type: "boolean" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message, { hint: `see '${PROGRAM} --help'` });
  }
  const { values, positionals } = parsed;
  if (values.help) {
    writeStdout(HELP);
    return ExitCode.OK;
  }
  if (values.version) {
    writeStdout(`${PROGRAM} ${VERSION}\n`);
    return ExitCode.OK;
  }
  if (positionals.length > 0) {
    if (positionals[0] === "keygen" && positionals.length === 1) {
      writeStdout(`${generateKey()}\n`);
      return ExitCode.OK;
    }
    throw new UsageError(`unexpected argument "${positionals[0]}"`, {
      hint: `see '${PROGRAM} --help'`,
    });
  }
  const loaded = await loadConfig(values.opts ?? "recon.opts", "server");
  const { config } = loaded;
  if (values.host !== undefined) config.SERVER_HOST = values.host;
  if (values.port !== undefined) {
    const port = Number(values.port);
    if (!/^\d+$/.test(values.port) || port > 65535) {
      throw new UsageError(`--port must be a number from 0 to 65535, got "${values.port}"`);
    }
    config.SERVER_PORT = port;
  }
  if (values["show-config"]) {
    let id: string | undefined;
    try {
      id = await keyId(decodeKey(config.SHARED_KEY));
    } catch { /* no usable key: shown without an id */ }
    writeStdout(`${showConfigJson(config, id)}\n`);
    return ExitCode.OK;
  }
  await setupLogging({
    program: PROGRAM,
    level: values.debug ? "debug" : "info",
    filePath: config.LOG_FILEPATH || undefined,
  });
  const logger = log(PROGRAM);
  // Last line of defence: a bug in one session must not take every queued job down.
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    logger.error(`internal error, still serving: ${errorMessage(event.reason)}`);
  });
  for (const warning of loaded.warnings) logger.warn(warning);
  if (loaded.created) {
    logger.warn(
      `wrote a new ${loaded.path} with a fresh SHARED_KEY; copy that SHARED_KEY line into recon.opts on every client`,
    );
  }
  const key = await sharedKeyMaterial(loaded);
  let server: ReconServer;
  try {
    server = await ReconServer.start({
      config,
      keys: new Map([[key.id, key.raw]]),
      log: logger,
    });
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    const reason = error instanceof Deno.errors.AddrInUse
      ? "the address is already in use (another recon-server?)"
      : (error as Error).message;
    logger.error(`cannot listen on ${config.SERVER_HOST}:${config.SERVER_PORT}: ${reason}`);
    return ExitCode.CONNECTION;
  }
  // Handle signals before announcing "listening": whoever waits for that line may
  // send SIGTERM at once, and it must get the graceful shutdown, not the default exit.
  let signals = 0;
  const stopped = new Promise<string>((resolve) => {
    const onSignal = (name: string) => () => {
      signals++;
      if (signals > 1) {
        // A second signal: the operator does not want to wait for the grace period.
        logger.warn(`${name} again: stopping now without waiting for running jobs`);
        Deno.exit(ExitCode.JOB_FAILED);
      }
      resolve(name);
    };
    Deno.addSignalListener("SIGINT", onSignal("SIGINT"));
    Deno.addSignalListener("SIGTERM", onSignal("SIGTERM"));
  });
  logger.info(
    `${PROGRAM} ${VERSION} listening on ${server.addr.hostname}:${server.addr.port} (key id ${key.id}, MAX_CONCURRENT_JOBS ${config.MAX_CONCURRENT_JOBS}, RECON_SCRIPT ${config.RECON_SCRIPT})`,
  );
  if (config.TRUSTEDIPS.length === 0) {
    logger.info("TRUSTEDIPS is empty: any address that holds SHARED_KEY may connect");
  }
  const signal = await stopped;
  logger.info(`${signal}: shutting down (grace ${config.SHUTDOWN_GRACE} s)`);
  await server.shutdown(`the server is shutting down (${signal})`);
  logger.info("shutdown complete");
  return ExitCode.OK;
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main(Deno.args);
  } catch (error) {
    const { lines, exitCode } = describeError(PROGRAM, error);
    writeStderr(`${lines.join("\n")}\n`);
    code = exitCode;
  }
  await shutdownLogging();
  Deno.exit(code);
}
