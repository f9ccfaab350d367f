/**
 * The recon server: opens the job store (before it touches any directory: a store it
 * cannot use stops the start), puts right what the last server left
 * (lib/server/recovery.ts), runs the queue (lib/server/scheduler.ts), the retention
 * sweeper (lib/server/sweeper.ts) and the deliveries to DICOM destinations
 * (lib/server/pacs_delivery.ts), listens, screens each connection (TRUSTEDIPS,
 * unauthenticated connection caps, slowing down addresses that waste key derivations)
 * before any handshake, runs the handshake, serves each authenticated session, and
 * shuts down gracefully: queued jobs stay queued, running ones get SHUTDOWN_GRACE and
 * are then queued again (docs/PROTOCOL.md §6, §7.5, §8).
 *
 * @module
 */
import * as path from "node:path";
import type { Channel } from "../wire/channel.ts";
import { Channel as SecureChannel } from "../wire/channel.ts";
import { ConfigError, errorMessage, HandshakeError, TimeoutError } from "../errors.ts";
import { encodeFrame, writeAll } from "../wire/frame.ts";
import { encodeRefusal, HandshakeRefused, RefusalCode } from "../wire/handshake.ts";
import { type Logger, LogThrottle } from "../log.ts";
import type { ReconConfig } from "../opts/mod.ts";
import {
  AdmissionControl,
  arrivalZone,
  SLOW_HANDSHAKE_INTERVAL_MS,
  TrustedAddresses,
  type Zone,
} from "./access.ts";
import { JobStore } from "./job_store.ts";
import { AuditLog } from "./audit_log.ts";
import { auditLogPath } from "./audit_read.ts";
import { auditJobChanges } from "./audit_jobs.ts";
import { type ClientEvent, type ClientIdentity, ClientRegistry } from "./client_registry.ts";
import { VERSION } from "../version.ts";
import { loadCryptoBackend, setDefaultCryptoBackend } from "../crypto/backend.ts";
import { KEY_REVOKED_REASON } from "../wire/protocol.ts";
import { JobHooks } from "./job_hooks.ts";
import { JobLeases } from "./job_leases.ts";
import { recoverAfterCrash } from "./recovery.ts";
import { PacsDeliverer } from "./pacs_delivery.ts";
import { Scheduler } from "./scheduler.ts";
import {
  admissionRefusalReason,
  handshakeFailureReason,
  type RefusalReason,
  ServerMetrics,
} from "./server_metrics.ts";
import { diskFree, serveSession } from "./session.ts";
import { Sweeper } from "./sweeper.ts";
import { checkScript, localExecutor } from "./worker.ts";
import { SlurmLauncher } from "./slurm_executor.ts";
import { checkSlurm, type SlurmSettings } from "./slurm.ts";

/** Inputs of {@link ReconServer.start}. */
export interface ServerOptions {
  config: ReconConfig;
  /**
   * SHARED_KEY of recon.opts, when set: the client `default`. The other clients come
   * from CLIENT_KEYS_FILE (lib/server/client_registry.ts).
   */
  sharedKey?: { raw: Uint8Array<ArrayBuffer>; id: string };
  log: Logger;
  /** SIGTERM → SIGKILL grace for scripts (ms). */
  killGraceMs?: number;
  /** Free bytes on the file system that holds a directory; default statfs (tests pretend). */
  diskFree?: (dir: string) => Promise<number>;
  /** The clock (ms since the epoch) of the store, the sweeper and retention; default Date.now. */
  now?: () => number;
}

/** RECON_STATE_DIR, or its default: `state` beside RECON_FILEPATH. */
export function stateDirOf(config: ReconConfig): string {
  return config.RECON_STATE_DIR !== ""
    ? config.RECON_STATE_DIR
    : path.join(path.dirname(path.resolve(config.RECON_FILEPATH)), "state");
}

interface Tracked {
  channel?: Channel;
  /** The client the session authenticated as, and from where. */
  client?: ClientIdentity;
  address?: string;
  busy?: boolean;
  conn: Deno.Conn;
  done: Promise<void>;
}

/** A running server. */
export class ReconServer {
  readonly addr: Deno.NetAddr;
  readonly store: JobStore;
  readonly scheduler: Scheduler;
  readonly sweeper: Sweeper;
  readonly leases: JobLeases;
  readonly audit: AuditLog;
  readonly clients: ClientRegistry;
  /** What `/metrics` shows (lib/server/server_metrics.ts). */
  readonly metrics: ServerMetrics;
  /** Sends succeeded jobs' results to their DICOM destinations (lib/server/pacs_delivery.ts). */
  readonly deliverer: PacsDeliverer;
  /** ON_JOB_END (run for every job that ends) and ON_DELIVERY_FAILED (lib/server/job_hooks.ts). */
  readonly hooks: JobHooks;
  #listener: Deno.Listener;
  #options: ServerOptions;
  #trusted: TrustedAddresses;
  #admission: AdmissionControl;
  #connections = new Set<Tracked>();
  #shuttingDown = false;
  #shutdownReason = "";
  #startedAt = Date.now();
  #acceptLoop: Promise<void>;
  /** Refusals and failed handshakes: one line per address a minute, 100 a minute overall. */
  #throttle = new LogThrottle({ windowMs: 60_000, maxLines: 100 });
  #stopping = new AbortController();
  #stopAuditingJobs: () => void;
  #stopHooks: () => void;

  private constructor(
    listener: Deno.Listener,
    options: ServerOptions,
    parts: {
      store: JobStore;
      leases: JobLeases;
      audit: AuditLog;
      clients: ClientRegistry;
      stopAuditingJobs: () => void;
      hooks: JobHooks;
      stopHooks: () => void;
    },
  ) {
    const { config, log } = options;
    const { store, leases } = parts;
    this.#listener = listener;
    this.#options = options;
    this.store = store;
    this.leases = leases;
    this.audit = parts.audit;
    this.clients = parts.clients;
    this.#stopAuditingJobs = parts.stopAuditingJobs;
    this.hooks = parts.hooks;
    this.#stopHooks = parts.stopHooks;
    this.addr = listener.addr as Deno.NetAddr;
    this.#trusted = new TrustedAddresses(config.TRUSTEDIPS);
    this.#admission = new AdmissionControl({
      maxUnauthenticated: config.MAX_UNAUTHENTICATED,
      maxUnauthenticatedPerAddress: config.MAX_UNAUTHENTICATED_PER_IP,
      lockoutFailures: config.LOCKOUT_FAILURES,
      lockoutSeconds: config.LOCKOUT_SECONDS,
    });
    for (const address of this.#trusted.unzonedLinkLocal) {
      log.warn(
        `TRUSTEDIPS: link-local ${address} has no zone, so it is trusted on every interface; write it as ${address}%<interface> to trust it on one`,
      );
    }
    // A shared RECON_DICOM_DIR tells no job's files from another's: one job at a time.
    const legacySharedOutput = config.LEGACY_SHARED_OUTPUT === 1;
    if (legacySharedOutput && config.MAX_CONCURRENT_JOBS > 1) {
      log.warn(
        `LEGACY_SHARED_OUTPUT = 1: jobs run one at a time (MAX_CONCURRENT_JOBS = ${config.MAX_CONCURRENT_JOBS} is not used)`,
      );
    }
    // EXECUTOR = slurm: the same worker, its command submitted to Slurm and followed.
    const slurm = config.EXECUTOR === "slurm"
      ? new SlurmLauncher({
        ...slurmSettings(config),
        store,
        reconFilePath: config.RECON_FILEPATH,
        jobTimeout: config.JOB_TIMEOUT,
        log,
      })
      : undefined;
    const executor = localExecutor(store, {
      launcher: slurm,
      reconScript: config.RECON_SCRIPT,
      reconDicomDir: config.RECON_DICOM_DIR,
      matlabCommand: config.MATLAB_COMMAND,
      jobTimeout: config.JOB_TIMEOUT,
      legacySharedOutput,
      killGraceMs: options.killGraceMs,
      resultRetention: config.RESULT_RETENTION,
      failedInputRetention: config.FAILED_INPUT_RETENTION,
      now: options.now,
    }, log);
    if (slurm) {
      // A Slurm job a shutdown left running writes on into its output: keep it.
      const discard = executor.discard;
      executor.discard = (job) => slurm.detached(job) ? Promise.resolve() : discard(job);
    }
    this.scheduler = new Scheduler({
      store,
      maxWorkers: legacySharedOutput ? 1 : config.MAX_CONCURRENT_JOBS,
      executor,
      leases,
      log,
    });
    this.metrics = new ServerMetrics({
      store,
      scheduler: this.scheduler,
      leases,
      reconFilePath: config.RECON_FILEPATH,
      diskFreeMargin: config.DISK_FREE_MARGIN,
      diskFree: options.diskFree ?? diskFree,
      executor: config.EXECUTOR,
      version: VERSION,
      destinations: Object.keys(config.DESTINATIONS),
      now: options.now,
    });
    this.sweeper = new Sweeper({
      store,
      leases,
      log,
      resultRetention: config.RESULT_RETENTION,
      failedInputRetention: config.FAILED_INPUT_RETENTION,
      uploadResumeWindow: config.UPLOAD_RESUME_WINDOW,
      now: options.now,
    });
    this.deliverer = new PacsDeliverer({
      store,
      destinations: config.DESTINATIONS,
      retryFor: config.DELIVERY_RETRY_FOR,
      log,
      audit: parts.audit,
      leases,
      onDeliveryFailed: (job, destination, reason) =>
        this.hooks.deliveryFailed(job, destination, reason),
      onAttemptEnd: (destination, attempt) => this.metrics.deliveryAttempted(destination, attempt),
      now: options.now,
    });
    this.sweeper.start();
    this.scheduler.start();
    this.hooks.release();
    this.deliverer.start();
    this.#acceptLoop = this.#accept();
  }

  /**
   * Open the job store, put right what the last server left, and listen on
   * SERVER_HOST:SERVER_PORT (port 0 picks a free one).
   * @throws {StoreError} when the job store cannot be used; nothing was touched then.
   */
  static async start(options: ServerOptions): Promise<ReconServer> {
    const { config, log } = options;
    // The sessions' crypto backend (CRYPTO_BACKEND): `openssl` that cannot load stops the start.
    const backend = loadCryptoBackend(config.CRYPTO_BACKEND);
    // First: a store that is damaged, newer or in use stops the start before any
    // directory is touched (lib/server/store_file.ts says which file and why).
    const store = JobStore.open(stateDirOf(config), { now: options.now });
    setDefaultCryptoBackend(backend);
    log.info(`crypto: ${backend.description}`);
    let audit: AuditLog | undefined;
    let clients: ClientRegistry | undefined;
    let stopAuditingJobs = () => {};
    // ON_JOB_END for every job that ends from here on, those the recovery below fails
    // included; held until the server runs: the recovery stops every process that
    // carries the RECON_JOB_ID of a job it settles, a hook's too.
    const hooks = new JobHooks({
      onJobEnd: config.ON_JOB_END || undefined,
      onDeliveryFailed: config.ON_DELIVERY_FAILED || undefined,
      timeoutMs: config.HOOK_TIMEOUT * 1000,
      log,
      held: true,
    });
    const stopHooks = hooks.follow(store);
    try {
      audit = await AuditLog.open({
        path: auditLogPath(config, stateDirOf(config)),
        rotateBytes: config.AUDIT_ROTATE_BYTES,
        head: store,
        log,
        now: options.now,
      });
      // From here on every job change is audited, those of the recovery below included.
      stopAuditingJobs = auditJobChanges(store, audit, log);
      const auditLog = audit;
      // The sessions to close on a change exist once the server does.
      const started: { server?: ReconServer } = {};
      clients = await ClientRegistry.open({
        sharedKey: options.sharedKey,
        file: config.CLIENT_KEYS_FILE,
        log,
        known: store.clients.snapshot(),
        now: options.now,
        onChange: (events, current) => {
          store.clients.setSnapshot(current);
          for (const event of events) {
            log.info(`clients: ${describeClientEvent(event)}`);
            auditLog.record(event.event, event.fields).catch((error) =>
              log.error(`audit log: cannot record ${event.event}: ${errorMessage(error)}`)
            );
          }
          started.server?.closeRefusedSessions();
        },
      });
      for (
        const [option, dir] of [
          ["RECON_FILEPATH", config.RECON_FILEPATH],
          ["RECON_DICOM_DIR", config.RECON_DICOM_DIR],
        ]
      ) {
        try {
          await Deno.mkdir(dir, { recursive: true });
        } catch (error) {
          throw new ConfigError(`cannot create ${option} ${dir}: ${errorMessage(error)}`, {
            hint: `set ${option} in recon.opts to a directory the server can write`,
          });
        }
      }
      // The retentions of this start hold for jobs that finished before it too.
      const retimed = store.applyRetention({
        resultsMs: config.RESULT_RETENTION * 1000,
        failedInputsMs: config.FAILED_INPUT_RETENTION * 1000,
      });
      if (retimed > 0) {
        log.info(
          `${retimed} finished job(s) now expire by RESULT_RETENTION ${config.RESULT_RETENTION} s / FAILED_INPUT_RETENTION ${config.FAILED_INPUT_RETENTION} s`,
        );
      }
      const leases = new JobLeases();
      try {
        await recoverAfterCrash({
          reconFilePath: config.RECON_FILEPATH,
          reconDicomDir: config.RECON_DICOM_DIR,
          store,
          leases,
          jobMaxAttempts: config.JOB_MAX_ATTEMPTS,
          failedInputRetention: config.FAILED_INPUT_RETENTION,
          uploadResumeWindow: config.UPLOAD_RESUME_WINDOW,
          log,
          now: options.now,
        });
      } catch (error) {
        throw new ConfigError(
          `cannot clean up RECON_FILEPATH ${config.RECON_FILEPATH}: ${errorMessage(error)}`,
        );
      }
      if (config.EXECUTOR === "slurm") await checkSlurmExecutor(config);
      for (const problem of await deliveryProblems(config)) log.warn(problem);
      const scriptProblem = await checkScript(config.RECON_SCRIPT);
      if (scriptProblem) {
        log.error(`${scriptProblem}: every job will be refused until it is fixed`);
      }
      for (const problem of await hooks.problems()) log.warn(problem);
      const listener = Deno.listen({ hostname: config.SERVER_HOST, port: config.SERVER_PORT });
      const server = new ReconServer(listener, options, {
        store,
        leases,
        audit,
        clients,
        stopAuditingJobs,
        hooks,
        stopHooks,
      });
      started.server = server;
      await audit.record("server_started", {
        version: VERSION,
        host: hostName(),
        pid: Deno.pid,
        address: `${server.addr.hostname}:${server.addr.port}`,
        clients: clients.clientCount,
      });
      return server;
    } catch (error) {
      clients?.close();
      stopAuditingJobs();
      stopHooks();
      await hooks.close(0);
      await audit?.close().catch(() => {});
      store.close();
      throw error;
    }
  }

  /**
   * Close the sessions whose key is no longer accepted from their address (revoked,
   * retired after a rotation, or a `from=` that no longer lists it); their jobs stay.
   */
  closeRefusedSessions(): void {
    for (const tracked of this.#connections) {
      const { channel, client, address } = tracked;
      if (!channel || !client || address === undefined) continue;
      if (this.clients.identify(client.keyId, address)) continue;
      this.#options.log.warn(
        `${address}: closing the session of client ${client.name}: its key ${client.keyId} is no longer accepted`,
      );
      channel.close(KEY_REVOKED_REASON).catch(() => {});
    }
  }

  async #accept(): Promise<void> {
    while (true) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#shuttingDown) return;
        if (error instanceof Deno.errors.BadResource) return;
        this.#options.log.error(`accept failed: ${errorMessage(error)}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      conn = this.metrics.countBytes(conn);
      this.metrics.connectionOpened();
      // Small records (handshake, control messages) must not wait for delayed ACKs.
      try {
        (conn as Deno.TcpConn).setNoDelay?.(true);
      } catch { /* not a TCP socket */ }
      const tracked: Tracked = { conn, done: Promise.resolve() };
      tracked.done = this.#handle(tracked).finally(() => {
        this.#connections.delete(tracked);
        this.metrics.connectionClosed();
      });
      this.#connections.add(tracked);
    }
  }

  /**
   * A warning about an unauthenticated address, at most once a minute per address (and
   * 100 a minute overall), with the number of similar lines held back since the last one.
   */
  #logThrottled(address: string, message: string): void {
    const verdict = this.#throttle.pass(address);
    if (verdict === undefined) return;
    if (verdict === "cap") {
      this.#options.log.warn(
        "more than 100 addresses refused or failed the handshake this minute; not logging more until the minute is over",
      );
      return;
    }
    const held = verdict.held > 0
      ? ` (${verdict.held} more from this address since its last line; logged once a minute per address)`
      : "";
    this.#options.log.warn(`${message}${held}`);
  }

  /** The interface a link-local peer arrived on, when a zoned TRUSTEDIPS entry asks. */
  #zoneOf(conn: Deno.Conn, address: string): Zone | undefined {
    if (!this.#trusted.needsZone(address)) return undefined;
    try {
      return arrivalZone((conn.localAddr as Deno.NetAddr).hostname, Deno.networkInterfaces());
    } catch {
      return undefined; // no --allow-sys: the zone is unknown and a zoned entry does not match
    }
  }

  /** Wait `ms` unless the server starts shutting down first. */
  #wait(ms: number): Promise<void> {
    const signal = this.#stopping.signal;
    return new Promise((resolve) => {
      if (signal.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done);
    });
  }

  async #handle(tracked: Tracked): Promise<void> {
    const { conn } = tracked;
    const { config, log } = this.#options;
    const remote = conn.remoteAddr as Deno.NetAddr;
    const peer = `${remote.hostname}:${remote.port}`;
    const refuseBusy = async (reason: RefusalReason) => {
      this.metrics.connectionRefused(reason);
      await writeAll(conn, encodeFrame(encodeRefusal(RefusalCode.BUSY, "try again later")))
        .catch(() => {});
      conn.close();
    };
    if (!this.#trusted.allows(remote.hostname, this.#zoneOf(conn, remote.hostname))) {
      this.#logThrottled(
        remote.hostname,
        `${peer}: refused: ${remote.hostname} is not in TRUSTEDIPS`,
      );
      this.audit.refused(remote.hostname, "not in TRUSTEDIPS");
      this.metrics.connectionRefused("not_trusted");
      conn.close();
      return;
    }
    const refusal = this.#shuttingDown ? "busy" : this.#admission.admit(remote.hostname);
    if (refusal) {
      this.#logThrottled(remote.hostname, `${peer}: refused: ${refusal}`);
      this.audit.refused(remote.hostname, refusal);
      await refuseBusy(this.#shuttingDown ? "shutting_down" : admissionRefusalReason(refusal));
      return;
    }
    // An address that keeps wasting key derivations waits its turn; it is never refused
    // for it (access.ts). The wait counts against HANDSHAKE_TIMEOUT.
    const delay = this.#admission.delay(remote.hostname);
    const handshakeMs = config.HANDSHAKE_TIMEOUT * 1000 - delay;
    if (delay > 0) await this.#wait(delay);
    if (handshakeMs <= 0 || this.#shuttingDown) {
      this.#admission.release(remote.hostname);
      await refuseBusy(this.#shuttingDown ? "shutting_down" : "busy");
      return;
    }
    // The handshake looks the client's key id up in `keys`, which holds only the keys
    // accepted from this address now; a hit means it goes on to derive session keys
    // (X25519, HKDF), the only costly step before authentication.
    const keys = this.clients.keysFor(remote.hostname);
    let channel: Channel;
    try {
      channel = await SecureChannel.accept(conn, {
        keys,
        peerName: "client",
        handshakeTimeoutMs: handshakeMs,
        idleTimeoutMs: config.IDLE_TIMEOUT * 1000,
        onClockSkew: (seconds) =>
          log.warn(`${peer}: the client's clock differs from ours by ${seconds} s`),
      });
    } catch (error) {
      this.#admission.release(remote.hostname);
      this.metrics.handshakeFailed(handshakeFailureReason(error, keys));
      const stage = error instanceof HandshakeRefused ? error.stage : "handshake";
      // Name the key id once: some refusals already say it ("unknown key id X").
      const keyId = error instanceof HandshakeRefused && error.keyId &&
          !error.message.includes(error.keyId)
        ? ` key id ${error.keyId}`
        : "";
      const why = keys.refusal ??
        (error instanceof TimeoutError || error instanceof HandshakeError
          ? error.message
          : `bad frame: ${errorMessage(error)}`);
      this.#logThrottled(remote.hostname, `${peer}: handshake failed at ${stage}:${keyId} ${why}`);
      this.audit.handshakeFailed(
        remote.hostname,
        `${stage}: ${why}`,
        error instanceof HandshakeRefused ? error.keyId : undefined,
        keys.refusedClient,
      );
      // Only a handshake that made us derive keys counts: a wrong key (an unknown key id),
      // a port scanner or garbage cost nothing, and never slow anyone down.
      if (keys.named !== undefined && this.#admission.recordKeyFailure(remote.hostname)) {
        log.warn(
          `${remote.hostname}: ${config.LOCKOUT_FAILURES} handshakes named our key id ${keys.named} but failed; slowing its handshakes to one per ${SLOW_HANDSHAKE_INTERVAL_MS} ms for ${config.LOCKOUT_SECONDS} s (a client that holds its key is still served)`,
        );
      }
      try {
        conn.close();
      } catch { /* closed by the handshake's deadline */ }
      return;
    }
    this.#admission.release(remote.hostname);
    // Revoked between its key lookup and now: not served.
    const client = this.clients.identify(channel.keyId, remote.hostname);
    if (!client) {
      this.metrics.handshakeFailed("key_refused");
      this.audit.handshakeFailed(
        remote.hostname,
        "key revoked during the handshake",
        channel.keyId,
        this.clients.clientOf(channel.keyId),
      );
      await channel.close(KEY_REVOKED_REASON);
      return;
    }
    tracked.channel = channel;
    tracked.client = client;
    tracked.address = remote.hostname;
    this.store.clientSeen(client.name, client.keyId, remote.hostname);
    this.audit.record("handshake_ok", {
      client: client.name,
      key_id: client.keyId,
      address: remote.hostname,
    }).catch((error) => log.error(`audit log: cannot record handshake_ok: ${errorMessage(error)}`));
    log.debug(`${peer}: session started (client ${client.name}, key id ${channel.keyId})`);
    this.metrics.sessionOpened();
    try {
      await serveSession(channel, {
        store: this.store,
        scheduler: this.scheduler,
        sweeper: this.sweeper,
        leases: this.leases,
        reconFilePath: config.RECON_FILEPATH,
        reconDicomDir: config.RECON_DICOM_DIR,
        maxJobBytes: config.MAX_JOB_BYTES,
        diskFreeMargin: config.DISK_FREE_MARGIN,
        verifyAfterWrite: config.VERIFY_AFTER_WRITE === "yes",
        uploadResumeWindow: config.UPLOAD_RESUME_WINDOW,
        startedAt: this.#startedAt,
        log,
        peer,
        by: `${client.name} at ${peer}`,
        client,
        audit: this.audit,
        executor: config.EXECUTOR,
        shuttingDown: () => this.#shuttingDown,
        diskFree: this.#options.diskFree ?? diskFree,
        now: this.#options.now ?? Date.now,
        reconScript: config.RECON_SCRIPT,
        destinations: Object.keys(config.DESTINATIONS).sort(),
        defaultDestinations: config.DEFAULT_DESTINATIONS,
        redeliver: (jobId, to) => this.deliverer.redeliver(jobId, to),
        setBusy: (busy) => {
          tracked.busy = busy;
          if (!busy && this.#shuttingDown) channel.close(this.#shutdownReason);
        },
      });
      await channel.close();
      log.debug(`${peer}: session ended`);
    } catch (error) {
      const level = this.#shuttingDown ? "info" : "warn";
      log[level](`${peer}: session ended: ${errorMessage(error)}`);
      channel.abort();
    } finally {
      this.metrics.sessionClosed();
    }
  }

  /**
   * Graceful stop (PROTOCOL.md §7.5): no new connections or jobs, tell connected
   * clients; queued jobs stay queued in the store; running jobs get SHUTDOWN_GRACE
   * seconds to finish, then are stopped and queued again without using up an attempt;
   * sessions get the rest of the grace period to deliver; then everything is closed,
   * the job store last.
   */
  async shutdown(reason = "the server is shutting down"): Promise<void> {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    this.#shutdownReason = reason;
    this.#stopping.abort();
    const { config, log } = this.#options;
    const deadline = Date.now() + config.SHUTDOWN_GRACE * 1000;
    this.#listener.close();
    await this.#acceptLoop;
    for (const tracked of this.#connections) {
      if (tracked.channel && !tracked.busy) tracked.channel.close(reason);
      else tracked.channel?.send({ type: "server_shutting_down", reason }).catch(() => {});
    }
    this.scheduler.close();
    // Sends to a PACS stop now: what was not confirmed goes again at the next start.
    const deliveriesStopped = this.deliverer.close();
    const queued = this.store.queued().length;
    if (queued > 0) log.info(`shutdown: ${queued} queued job(s) stay queued for the next start`);
    const remaining = () => Math.max(0, deadline - Date.now());
    const timer = (ms: number) => {
      let id: ReturnType<typeof setTimeout> | undefined;
      const promise = new Promise<"timeout">((
        resolve,
      ) => (id = setTimeout(resolve, ms, "timeout")));
      return { promise, cancel: () => clearTimeout(id) };
    };
    let wait = timer(remaining());
    if (await Promise.race([this.scheduler.idle(), wait.promise]) === "timeout") {
      log.warn(
        `shutdown: stopping ${this.scheduler.activeWorkers} running job(s) after the grace period; they are queued again for the next start`,
      );
      await this.scheduler.stopRunning(`${reason}: the job did not finish within SHUTDOWN_GRACE`);
    }
    wait.cancel();
    // Sessions following a job that is not final now are told and closed: the job
    // waits in the store for the next start.
    this.scheduler.closeSubscriptions(`${reason}; the job stays queued for the next start`);
    wait = timer(Math.max(remaining(), 1000));
    const sessions = Promise.all([...this.#connections].map((t) => t.done));
    for (const tracked of this.#connections) {
      // Handshakes in progress end now; sessions delivering results get the rest of the grace.
      if (!tracked.channel) {
        try {
          tracked.conn.close();
        } catch { /* closed */ }
      }
    }
    await Promise.race([sessions, wait.promise]);
    wait.cancel();
    // The grace period is over: whoever is still connected is cut off now (a close
    // could wait on a client that stopped reading).
    for (const tracked of this.#connections) {
      tracked.channel?.abort();
      try {
        tracked.conn.close();
      } catch { /* closed */ }
    }
    await sessions;
    await this.sweeper.stop();
    await deliveriesStopped;
    // Hooks still running get what is left of the grace period (at least 2 s).
    this.#stopHooks();
    await this.hooks.close(Math.max(remaining(), 2000));
    this.clients.close();
    this.audit.flushCounts();
    await this.audit.record("server_stopped", { reason }).catch((error) =>
      log.error(`audit log: cannot record server_stopped: ${errorMessage(error)}`)
    );
    this.#stopAuditingJobs();
    this.metrics.close();
    await this.audit.close().catch((error) =>
      log.error(`audit log: cannot close it: ${errorMessage(error)}`)
    );
    this.store.close();
  }
}

/**
 * What will make deliveries fail, said at the start rather than a day of retries later:
 * a destination's TLS file that cannot be read, and results that expire before a
 * delivery stops being retried.
 */
async function deliveryProblems(config: ReconConfig): Promise<string[]> {
  const problems: string[] = [];
  for (const destination of Object.values(config.DESTINATIONS)) {
    const tls = destination.tls;
    if (!tls) continue;
    for (const [what, file] of [["ca", tls.ca], ["cert", tls.cert], ["key", tls.key]]) {
      if (file === undefined) continue;
      try {
        await Deno.open(file).then((opened) => opened.close());
      } catch (error) {
        problems.push(
          `DESTINATION_${destination.name}: cannot read its ${what}= file ${file} (${
            error instanceof Deno.errors.NotFound ? "no such file" : errorMessage(error)
          }): deliveries there will fail until it can`,
        );
      }
    }
  }
  const destinations = Object.keys(config.DESTINATIONS).length > 0;
  if (destinations && config.RESULT_RETENTION < config.DELIVERY_RETRY_FOR) {
    problems.push(
      `RESULT_RETENTION (${config.RESULT_RETENTION} s) is shorter than DELIVERY_RETRY_FOR ` +
        `(${config.DELIVERY_RETRY_FOR} s): a delivery still being retried when a job's results ` +
        "expire fails; make RESULT_RETENTION the longer",
    );
  }
  return problems;
}

/** One line for the server log about a change of the client keys. */
function describeClientEvent({ event, fields }: ClientEvent): string {
  const what = event.replace(/^client_/, "").replace(/_/g, " ");
  const keys = fields.key_id ?? (fields.key_ids as string[] | undefined)?.join(", ");
  return `${fields.client}: ${what}${keys ? ` (key id ${keys})` : ""}`;
}

/** This host's name for the audit log, or "unknown" without --allow-sys. */
function hostName(): string {
  try {
    return Deno.hostname();
  } catch {
    return "unknown";
  }
}

/** The Slurm settings of recon.opts (EXECUTOR = slurm). */
function slurmSettings(config: ReconConfig): SlurmSettings {
  return {
    sbatchArgs: config.SLURM_SBATCH_ARGS,
    pollIntervalMs: config.SLURM_POLL_INTERVAL * 1000,
  };
}

/**
 * EXECUTOR = slurm starts only when Slurm can take jobs: sbatch runs and the partition
 * exists (else one line says what is missing), and not with LEGACY_SHARED_OUTPUT (a job
 * on a compute node cannot be told from another in a shared RECON_DICOM_DIR, and its
 * snapshot does not survive a restart).
 */
async function checkSlurmExecutor(config: ReconConfig): Promise<void> {
  if (config.LEGACY_SHARED_OUTPUT === 1) {
    throw new ConfigError("EXECUTOR = slurm cannot be used with LEGACY_SHARED_OUTPUT = 1", {
      hint: "let the script write into RECON_OUTPUT_DIR and set LEGACY_SHARED_OUTPUT = 0",
    });
  }
  const problem = await checkSlurm(slurmSettings(config));
  if (problem) {
    throw new ConfigError(`EXECUTOR = slurm: ${problem}`, {
      hint: "this box needs Slurm's client commands (sbatch, scontrol, scancel), munge, and " +
        "SLURM_CONF naming the cluster; fix that or SLURM_SBATCH_ARGS, or set EXECUTOR = local",
    });
  }
}
