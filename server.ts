/**
 * recon-server: accepts jobs from recon-client, runs the site's reconstruction
 * script on them, and sends the images back. See `recon-server --help`.
 *
 * This is the only server module that reads Deno.args, writes stdout or exits.
 *
 * @module
 */
import {
  keygenText,
  parseCommandLine,
  parsePort,
  runMain,
  showConfigText,
  splitCommand,
  textWriter,
  versionText,
  warningText,
} from "./lib/cli/entry.ts";
import {
  clientsWithoutSharedKey,
  loadConfig,
  loadServerOpts,
  sharedKeyMaterial,
} from "./lib/cli/support.ts";
import { ConfigError, errorMessage, ExitCode, UsageError } from "./lib/errors.ts";
import { log, type Logger, setupLogging } from "./lib/log.ts";
import type { LoadedOpts, ReconConfig } from "./lib/opts/mod.ts";
import { auditCommand } from "./lib/server/audit_cli.ts";
import { clientsMain } from "./lib/server/clients_cli.ts";
import { backupJobStore } from "./lib/server/job_store.ts";
import { startLogSweeper } from "./lib/server/log_retention.ts";
import { releaseOwnerFile } from "./lib/server/recovery.ts";
import { ReconServer } from "./lib/server/server.ts";
import { type HttpSettings, httpSettings } from "./lib/monitor/http_settings.ts";
import { startMonitor } from "./lib/monitor/monitor.ts";
import type { HttpServer } from "./lib/monitor/http_server.ts";
import { prepareServerPaths } from "./lib/server/strict_paths.ts";
import { VERSION } from "./lib/version.ts";

const PROGRAM = "recon-server";

const HELP = `${PROGRAM} ${VERSION}: the recon box side of recon. Accepts encrypted jobs from
recon-client, queues them, runs RECON_SCRIPT on each (at most MAX_CONCURRENT_JOBS at
a time) and sends the results back.

Usage:
  ${PROGRAM} [--opts PATH] [--host HOST] [--port PORT] [--debug]
            [--allow-unknown-options]
  ${PROGRAM} --show-config [--opts PATH]
  ${PROGRAM} keygen
  ${PROGRAM} backup [--opts PATH] FILE
  ${PROGRAM} clients add|list|revoke|rotate ... [--opts PATH]
  ${PROGRAM} audit [--opts PATH] [--job ID] [--client NAME] [--since TIME] [--json]
  ${PROGRAM} audit --verify [--from-seq N] [--opts PATH] [--json]

Options:
  --opts PATH     recon.opts to use (default ./recon.opts). When it is missing a
                  default file is written there (mode 0600) with a new SHARED_KEY;
                  copy that key into every client's recon.opts.
  --host HOST     listen address (overrides SERVER_HOST; 0.0.0.0 for all)
  --port PORT     listen port (overrides SERVER_PORT; 0 picks a free port)
  --debug         debug logging
  --allow-unknown-options
                  accept recon.opts options neither program knows, with a warning
  --show-config   print the effective configuration as JSON (key redacted), with
                  any recon.opts lines naming no option, and exit; only reads
                  (a missing recon.opts is an error)
  -h, --help      this help
  -V, --version   print the version

Commands:
  keygen          print a new SHARED_KEY (32 random bytes, urlsafe base64) and exit
  backup FILE     copy the job store (jobs.sqlite in RECON_STATE_DIR) to FILE, which
                  must not exist: one consistent snapshot, also while the server runs
                  (it is not stopped or locked out). Run it as the server's user.
                  Prints "backed up N jobs to FILE (schema V)". To restore: stop the
                  server, copy FILE over jobs.sqlite, remove jobs.sqlite-wal and
                  jobs.sqlite-shm, start the server.
  clients ...     one key per client (scanner): add NAME, list, revoke NAME,
                  rotate NAME, in CLIENT_KEYS_FILE (recon-clients beside
                  recon.opts); a running server picks a change up within a
                  second. See '${PROGRAM} clients --help'.
  audit           print the audit log (AUDIT_LOG: who connected, which job came with
                  which inputs, what came back, client keys changed), filtered by
                  job, client or time; --verify checks its SHA-256 chain and its end
                  against the job store and says where it breaks (exit 1). See
                  '${PROGRAM} audit --help'.

Executors: RECON_SCRIPT runs here (EXECUTOR = local, the default) or, with
EXECUTOR = slurm, as one Slurm job per job (sbatch with SLURM_SBATCH_ARGS; Slurm's
commands and SLURM_CONF as for any Slurm client). With slurm the server checks at
start that sbatch runs and the partition exists, and refuses to start otherwise; a
shutdown leaves running Slurm jobs running, and the next start follows them again
(docs/DEPLOY.md §10).

Monitoring: with HTTP_LISTEN = HOST:PORT (e.g. 127.0.0.1:9187) the server also
serves plain HTTP there: /metrics (Prometheus), /healthz (200 "ok", or 503 and one
line per problem) and a read-only status page at /. No key, file content or file
name is shown. An address other than loopback needs HTTP_TOKEN (Authorization:
Bearer TOKEN); HTTP_TLS_CERT and HTTP_TLS_KEY serve it over HTTPS (docs/DEPLOY.md §11).

Delivery: DESTINATION_<NAME> = dicom://CALLED_AET@host:port?calling=OUR_AET lines
name PACS destinations; every succeeded job's DICOM results go to DEFAULT_DESTINATIONS
(and those a client asks for with --deliver) by C-STORE, retried for
DELIVERY_RETRY_FOR while a destination is down. ON_JOB_END runs a program when a job
ends, ON_DELIVERY_FAILED when a delivery is given up (docs/DEPLOY.md §12).

Signals: SIGINT or SIGTERM stop accepting connections, let running jobs finish
within SHUTDOWN_GRACE seconds (then stop them and queue them again, without using
up an attempt), then exit 0. Queued jobs and cut-off uploads stay in the job store
(RECON_STATE_DIR) and go on at the next start. A second signal stops at once
(exit 1).

Exit codes: 0 clean shutdown (or a command done), 1 stopped by a second signal,
2 usage or configuration error (including RECON_FILEPATH, RECON_DICOM_DIR or the
directory of LOG_FILEPATH not writable, or writable by another user, and a job store
that cannot be used or backed up, and HTTP_LISTEN settings that cannot be used),
3 cannot listen (SERVER_PORT or HTTP_LISTEN); audit --verify: 1 the audit log
is broken (2 when it or the job store cannot be read).

Example:
  ${PROGRAM} keygen              # put the key in recon.opts on both machines
  ${PROGRAM} --opts /etc/recon/recon.opts
  ${PROGRAM} backup --opts /etc/recon/recon.opts /var/backups/recon-jobs.sqlite
`;

const writeStdout = textWriter(Deno.stdout);
const writeStderr = textWriter(Deno.stderr, { ignoreErrors: true });

/** Print `text` on stdout; the command succeeded. */
function print(text: string): number {
  writeStdout(text);
  return ExitCode.OK;
}

async function main(argv: string[]): Promise<number> {
  const split = splitCommand(argv, ["clients"], { opts: true });
  if (split.command === "clients") {
    return await clientsMain(split.argv, { program: PROGRAM, writeStdout, writeStderr });
  }
  const audit = splitCommand(argv, ["audit"], { opts: true });
  if (audit.command === "audit") {
    return await auditCommand(audit.argv, { stdout: writeStdout, stderr: writeStderr });
  }
  const { values, positionals } = parseCommandLine(PROGRAM, argv, {
    opts: { type: "string" },
    host: { type: "string" },
    port: { type: "string" },
    debug: { type: "boolean" },
    "show-config": { type: "boolean" },
    "allow-unknown-options": { type: "boolean" },
    help: { type: "boolean", short: "h" },
    version: { type: "boolean", short: "V" },
  });
  if (values.help) return print(HELP);
  if (values.version) return print(versionText(PROGRAM));
  if (positionals.length > 0) {
    if (positionals[0] === "keygen" && positionals.length === 1) return print(keygenText());
    if (positionals[0] === "backup") {
      if (positionals.length !== 2) {
        throw new UsageError("backup takes one FILE, the copy to write", {
          hint: `${PROGRAM} backup [--opts PATH] FILE`,
        });
      }
      return await backup(values.opts ?? "recon.opts", positionals[1]);
    }
    throw new UsageError(`unexpected argument "${positionals[0]}"`, {
      hint: `see '${PROGRAM} --help'`,
    });
  }
  // --show-config only reads, and lists unknown options instead of stopping at the first.
  const showConfig = values["show-config"] ?? false;
  const loaded = await loadConfig(values.opts ?? "recon.opts", "server", {
    allowUnknownOptions: values["allow-unknown-options"],
    showConfig,
  });
  const { config } = loaded;
  if (values.host !== undefined) config.SERVER_HOST = values.host;
  if (values.port !== undefined) config.SERVER_PORT = parsePort(values.port, 0);
  if (showConfig) {
    writeStderr(warningText(PROGRAM, loaded.warnings));
    return print(await showConfigText(config, loaded.unknownOptions));
  }
  return await serve(loaded, values.debug ?? false);
}

/**
 * `backup FILE`: a consistent copy of the job store named by recon.opts
 * (RECON_STATE_DIR), taken from this process while the server may run: the store is
 * read without its lock (lib/server/store_file.ts). Only reads recon.opts: a missing
 * one is an error, an option neither program knows a warning.
 */
async function backup(optsPath: string, file: string): Promise<number> {
  const loaded = await loadServerOpts(optsPath);
  writeStderr(warningText(PROGRAM, loaded.warnings));
  const report = await backupJobStore(loaded.config.RECON_STATE_DIR, file);
  const jobs = `${report.jobs} job${report.jobs === 1 ? "" : "s"}`;
  return print(`backed up ${jobs} to ${file} (schema ${report.schemaVersion})\n`);
}

/** Serve until SIGINT or SIGTERM, then shut down gracefully. */
async function serve(loaded: LoadedOpts, debug: boolean): Promise<number> {
  const { config } = loaded;
  // Before the log file is opened: its directory is one of those checked.
  await prepareServerPaths(config);
  const logger = await startLogging(loaded, debug);
  const key = await serverSharedKey(loaded);
  // Checked before the server starts: a monitoring endpoint open to the network without
  // a token, or half a TLS pair, stops the start.
  const http = await httpSettings(config);
  const server = await listen(config, key, logger);
  if (!server) return ExitCode.CONNECTION;
  const monitor = http ? await startMonitorOrStop(server, config, http, logger) : undefined;
  if (monitor === null) return ExitCode.CONNECTION;
  // Handle signals before announcing "listening": whoever waits for that line may
  // send SIGTERM at once, and it must get the graceful shutdown, not the default exit.
  const stopped = stopSignal(logger);
  logger.info(
    `${PROGRAM} ${VERSION} listening on ${server.addr.hostname}:${server.addr.port} (${
      clientsText(key, server.clients.clientCount)
    }, MAX_CONCURRENT_JOBS ${config.MAX_CONCURRENT_JOBS}, RECON_SCRIPT ${config.RECON_SCRIPT})`,
  );
  if (config.TRUSTEDIPS.length === 0) {
    logger.info("TRUSTEDIPS is empty: any address that holds a client key may connect");
  }
  if (config.VERIFY_AFTER_WRITE === "yes") {
    logger.info("VERIFY_AFTER_WRITE: each uploaded file is read back and checked once written");
  }
  const sweeper = startLogSweeper({
    dir: config.RECON_FILEPATH,
    days: config.LOG_RETENTION,
    log: logger,
  });
  const signal = await stopped;
  await sweeper.stop();
  logger.info(`${signal}: shutting down (grace ${config.SHUTDOWN_GRACE} s)`);
  await monitor?.close();
  await server.shutdown(`the server is shutting down (${signal})`);
  await releaseOwnerFile(config.RECON_FILEPATH);
  logger.info("shutdown complete");
  return ExitCode.OK;
}

async function startLogging(loaded: LoadedOpts, debug: boolean): Promise<Logger> {
  await setupLogging({
    program: PROGRAM,
    level: debug ? "debug" : "info",
    filePath: loaded.config.LOG_FILEPATH || undefined,
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
  return logger;
}

type SharedKey = { raw: Uint8Array<ArrayBuffer>; id: string };

/**
 * SHARED_KEY of the server's recon.opts: the client `default`. It may be left out once
 * CLIENT_KEYS_FILE holds the clients; without either, the error is the one a site that
 * never added a client has always seen (set SHARED_KEY).
 */
async function serverSharedKey(loaded: LoadedOpts): Promise<SharedKey | undefined> {
  // The registry says so if the client file holds no client either.
  if (await clientsWithoutSharedKey(loaded)) return undefined;
  try {
    return await sharedKeyMaterial(loaded);
  } catch (error) {
    if (!(error instanceof ConfigError) || loaded.config.SHARED_KEY !== "") throw error;
    throw new ConfigError(error.message, {
      hint: `${error.hint}; or give each client its own key with 'recon-server clients add NAME'`,
    });
  }
}

/** "key id X" with SHARED_KEY alone, else how many clients and SHARED_KEY's id. */
function clientsText(key: SharedKey | undefined, clients: number): string {
  if (key && clients === 1) return `key id ${key.id}`;
  const shared = key ? `, SHARED_KEY as client default (key id ${key.id})` : "";
  return `${clients} client${clients === 1 ? "" : "s"}${shared}`;
}

/** Start listening; a listen failure is logged and gives undefined (exit 3). */
async function listen(
  config: ReconConfig,
  key: SharedKey | undefined,
  logger: Logger,
): Promise<ReconServer | undefined> {
  try {
    return await ReconServer.start({
      config,
      sharedKey: key,
      log: logger,
    });
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    const reason = error instanceof Deno.errors.AddrInUse
      ? "the address is already in use (another recon-server?)"
      : (error as Error).message;
    logger.error(`cannot listen on ${config.SERVER_HOST}:${config.SERVER_PORT}: ${reason}`);
    return undefined;
  }
}

/**
 * The monitoring endpoint (HTTP_LISTEN); when it cannot listen, the server that has
 * just started is stopped again and null says so (exit 3): a site that asked for
 * monitoring must not get a recon box nobody can see.
 */
async function startMonitorOrStop(
  server: ReconServer,
  config: ReconConfig,
  settings: HttpSettings,
  logger: Logger,
): Promise<HttpServer | null> {
  try {
    return startMonitor({ server, config, settings, log: logger });
  } catch (error) {
    const cause = error instanceof Error ? error.cause ?? error : error;
    const reason = cause instanceof Deno.errors.AddrInUse
      ? "the address is already in use (another recon-server or exporter?)"
      : cause instanceof Deno.errors.AddrNotAvailable
      ? `${settings.hostname} is not an address of this host: use one of its addresses, 127.0.0.1 or 0.0.0.0`
      : errorMessage(cause).replace(/\s+/g, " ");
    logger.error(`cannot serve HTTP_LISTEN ${config.HTTP_LISTEN}: ${reason}`);
    await server.shutdown("HTTP_LISTEN could not be served");
    return null;
  }
}

/** The name of the first SIGINT or SIGTERM; a second one exits at once (exit 1). */
function stopSignal(logger: Logger): Promise<string> {
  let signals = 0;
  return new Promise<string>((resolve) => {
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
}

if (import.meta.main) {
  Deno.exit(await runMain(() => main(Deno.args), { program: PROGRAM, writeStderr }));
}
