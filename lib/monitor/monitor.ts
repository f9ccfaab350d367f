/**
 * The monitoring endpoint of a running server (HTTP_LISTEN): `/metrics` for
 * Prometheus, `/healthz` for a load balancer or a probe, and the read-only status
 * page at `/`. It reads the job store and the scheduler and changes nothing; it shows
 * job ids, client names, states, sizes, durations and failure reasons, never a key,
 * a file's contents or its name (docs/DEPLOY.md §11).
 *
 * @module
 */
import type { Logger } from "../log.ts";
import type { ReconConfig } from "../opts/mod.ts";
import type { ReconServer } from "../server/server.ts";
import { diskFree as statfsDiskFree } from "../server/session.ts";
import { healthProblems, type HealthSources, SlurmProbe } from "./health.ts";
import {
  type HttpRequest,
  type HttpResponse,
  type HttpServer,
  startHttpServer,
} from "./http_server.ts";
import { type HttpSettings, isLoopback } from "./http_settings.ts";
import { renderStatusPage } from "./status_page.ts";
import { statusView } from "./status_view.ts";

/** Inputs of {@link startMonitor}. */
export interface MonitorOptions {
  server: ReconServer;
  config: ReconConfig;
  settings: HttpSettings;
  log: Logger;
  /** Free bytes under a directory; default statfs (tests pretend). */
  diskFree?: (dir: string) => Promise<number>;
}

/** Listen on HTTP_LISTEN and serve the three pages until closed. */
export function startMonitor(options: MonitorOptions): HttpServer {
  const { server, config, settings, log } = options;
  const sources: HealthSources = {
    store: server.store,
    scheduler: server.scheduler,
    reconFilePath: config.RECON_FILEPATH,
    reconScript: config.RECON_SCRIPT,
    diskFreeMargin: config.DISK_FREE_MARGIN,
    diskFree: options.diskFree ?? statfsDiskFree,
    slurm: config.EXECUTOR === "slurm"
      ? new SlurmProbe({
        sbatchArgs: config.SLURM_SBATCH_ARGS,
        pollIntervalMs: config.SLURM_POLL_INTERVAL * 1000,
      })
      : undefined,
  };
  const http = startHttpServer({
    hostname: settings.hostname,
    port: settings.port,
    tls: settings.tls,
    token: settings.token,
    log,
    handler: (request) =>
      !settings.token && !hostAllowed(request.headers.get("host"), settings.hostname)
        ? misdirected(request.headers.get("host") ?? "")
        : route(request, server, config, sources),
  });
  log.info(
    `http: serving /metrics, /healthz and the status page on ${http.url}` +
      (settings.token ? " (HTTP_TOKEN required)" : ""),
  );
  for (const warning of settings.warnings) log.warn(warning);
  // What /healthz would say now, so that a box that starts unhealthy says so at once.
  healthProblems(sources).then(
    (problems) => problems.forEach((problem) => log.warn(`health: ${problem}`)),
    () => {},
  );
  return http;
}

/**
 * Without a token, the endpoint answers only requests addressed to this host by a
 * loopback name or HTTP_LISTEN's own: a web page that points a domain of its own at
 * 127.0.0.1 (DNS rebinding) cannot read it through a browser on the recon box.
 */
export function hostAllowed(host: string | null, listenHostname: string): boolean {
  if (host === null) return true; // HTTP/1.0 without Host: no browser sends that.
  const name = host.startsWith("[") ? host.slice(1, host.indexOf("]")) : host.replace(/:\d+$/, "");
  return isLoopback(name) || name.toLowerCase() === listenHostname.toLowerCase();
}

function misdirected(host: string): HttpResponse {
  return {
    status: 403,
    headers: { "Content-Type": "text/plain; charset=utf-8" },
    body:
      `requests for host ${
        JSON.stringify(host.slice(0, 100))
      } need HTTP_TOKEN (a guard against DNS rebinding): open the endpoint by its address, ` +
      "e.g. http://127.0.0.1:PORT/, or set HTTP_TOKEN\n",
  };
}

async function route(
  request: HttpRequest,
  server: ReconServer,
  config: ReconConfig,
  sources: HealthSources,
): Promise<HttpResponse> {
  switch (request.path) {
    case "/metrics":
      return {
        status: 200,
        headers: { "Content-Type": server.metrics.contentType },
        body: await server.metrics.render(),
      };
    case "/healthz": {
      const problems = await healthProblems(sources);
      return {
        status: problems.length === 0 ? 200 : 503,
        headers: { "Content-Type": "text/plain; charset=utf-8" },
        body: problems.length === 0 ? "ok\n" : problems.map((line) => `${line}\n`).join(""),
      };
    }
    case "/": {
      const view = await statusView(server, Date.now(), {
        config,
        diskFree: sources.diskFree,
        // The page's banner says what /healthz says.
        problems: await healthProblems(sources),
      });
      return {
        status: 200,
        headers: { "Content-Type": "text/html; charset=utf-8" },
        body: renderStatusPage(view),
      };
    }
    default:
      return {
        status: 404,
        headers: { "Content-Type": "text/plain; charset=utf-8" },
        body: `no page ${request.path}: this endpoint serves /metrics, /healthz and /\n`,
      };
  }
}
