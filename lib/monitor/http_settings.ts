/**
 * The monitoring endpoint's settings from recon.opts (HTTP_LISTEN, HTTP_TOKEN,
 * HTTP_TLS_CERT, HTTP_TLS_KEY), checked before the server starts: a listen address
 * other than loopback without a token, half a TLS pair, a short token or a certificate
 * that cannot be read stops the start with one line saying what to change.
 *
 * @module
 */
import { ConfigError, errorMessage } from "../errors.ts";
import type { ReconConfig } from "../opts/mod.ts";
import { tlsContext } from "./http_connection.ts";

/** The shortest HTTP_TOKEN accepted: a guessable token protects nothing. */
export const MIN_TOKEN_LENGTH = 16;

/** Where and how the endpoint listens. */
export interface HttpSettings {
  hostname: string;
  port: number;
  token?: string;
  /** PEM text of HTTP_TLS_CERT and HTTP_TLS_KEY. */
  tls?: { cert: string; key: string };
  /** Worth a warning in the log, not worth refusing the start. */
  warnings: string[];
}

/** `HOST:PORT` or `[V6]:PORT` → its parts; undefined when it is neither. */
export function parseListen(text: string): { hostname: string; port: number } | undefined {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(text.trim());
  if (!match) return undefined;
  const port = Number(match[3]);
  if (port > 65535) return undefined;
  return { hostname: match[1] ?? match[2], port };
}

/** True for addresses only this host can reach: 127.0.0.0/8, ::1 and `localhost`. */
export function isLoopback(hostname: string): boolean {
  const name = hostname.toLowerCase();
  return name === "localhost" || name === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name) ||
    name === "0:0:0:0:0:0:0:1";
}

/**
 * The endpoint's settings, or undefined when HTTP_LISTEN is empty (off).
 * @throws {ConfigError} naming the option to fix.
 */
export async function httpSettings(config: ReconConfig): Promise<HttpSettings | undefined> {
  const listen = config.HTTP_LISTEN.trim();
  const { HTTP_TOKEN: token, HTTP_TLS_CERT: certFile, HTTP_TLS_KEY: keyFile } = config;
  if (listen === "") {
    const unused = (["HTTP_TOKEN", "HTTP_TLS_CERT", "HTTP_TLS_KEY"] as const)
      .filter((name) => config[name] !== "");
    if (unused.length > 0) {
      throw new ConfigError(`${unused.join(", ")} set but HTTP_LISTEN is empty`, {
        hint: "set HTTP_LISTEN (e.g. 127.0.0.1:9187) to serve /metrics, or remove them",
      });
    }
    return undefined;
  }
  const port = /:(\d+)$/.exec(listen)?.[1];
  if (port !== undefined && Number(port) > 65535) {
    throw new ConfigError(`HTTP_LISTEN ${listen}: port ${port} is out of range (1 to 65535)`, {
      hint: "pick a free port, e.g. 9187",
    });
  }
  const address = parseListen(listen);
  if (!address) {
    throw new ConfigError(`HTTP_LISTEN ${JSON.stringify(listen)} is not HOST:PORT`, {
      hint: "write it as 127.0.0.1:9187, [::1]:9187 or 0.0.0.0:9187",
    });
  }
  if (address.port !== 0 && address.port === config.SERVER_PORT) {
    throw new ConfigError(
      `HTTP_LISTEN ${listen} uses SERVER_PORT ${config.SERVER_PORT}, the port of the encrypted service`,
      { hint: "give the monitoring endpoint a port of its own, e.g. 9187" },
    );
  }
  if (token !== "" && token.length < MIN_TOKEN_LENGTH) {
    throw new ConfigError(
      `HTTP_TOKEN is ${token.length} characters; at least ${MIN_TOKEN_LENGTH} are needed`,
      { hint: "use a long random one, e.g. the output of 'recon-server keygen'" },
    );
  }
  if (token !== "" && !/^[\x21-\x7e]+$/.test(token)) {
    throw new ConfigError("HTTP_TOKEN may hold only visible ASCII characters, no spaces", {
      hint: "use the output of 'recon-server keygen'",
    });
  }
  if (token === "" && !isLoopback(address.hostname)) {
    throw new ConfigError(
      `HTTP_LISTEN ${listen} is not a loopback address (127.0.0.1, ::1, localhost), so other hosts may reach it, but HTTP_TOKEN is not set`,
      {
        hint: "set HTTP_TOKEN (e.g. the output of 'recon-server keygen') and give it to the " +
          "scraper, or listen on 127.0.0.1",
      },
    );
  }
  if ((certFile === "") !== (keyFile === "")) {
    const missing = certFile === "" ? "HTTP_TLS_CERT" : "HTTP_TLS_KEY";
    throw new ConfigError(
      `${missing} is not set: HTTPS needs both HTTP_TLS_CERT and HTTP_TLS_KEY`,
      {
        hint: `set ${missing}, or remove the other to serve plain HTTP`,
      },
    );
  }
  const settings: HttpSettings = { ...address, warnings: [] };
  if (token !== "") settings.token = token;
  if (certFile !== "") {
    const cert = await readPem("HTTP_TLS_CERT", certFile);
    const key = await readPem("HTTP_TLS_KEY", keyFile);
    try {
      tlsContext(cert, key);
    } catch (error) {
      throw new ConfigError(
        `HTTP_TLS_CERT ${certFile}, HTTP_TLS_KEY ${keyFile}: ${errorMessage(error)}`,
        {
          hint: "give the certificate and its own private key, both PEM",
        },
      );
    }
    settings.tls = { cert, key };
    const warning = await keyFileWarning(keyFile);
    if (warning) settings.warnings.push(warning);
  }
  return settings;
}

async function readPem(option: "HTTP_TLS_CERT" | "HTTP_TLS_KEY", file: string): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new ConfigError(`${option} ${file} does not exist`, { hint: `fix ${option}` });
    }
    throw new ConfigError(`cannot read ${option} ${file}: ${errorMessage(error)}`, {
      hint: `make ${file} readable by the user recon-server runs as, or fix ${option}`,
    });
  }
  if (!text.includes("-----BEGIN ")) {
    throw new ConfigError(`${option} ${file} is not a PEM file (no -----BEGIN line)`, {
      hint: "give the certificate and key in PEM form (openssl x509/pkey -outform PEM)",
    });
  }
  const holdsKey = /-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text);
  const holdsCertificate = text.includes("-----BEGIN CERTIFICATE-----");
  if (option === "HTTP_TLS_CERT" ? !holdsCertificate && holdsKey : !holdsKey && holdsCertificate) {
    const holds = option === "HTTP_TLS_CERT" ? "a private key" : "a certificate";
    throw new ConfigError(
      `${option} ${file} holds ${holds}, not ${
        option === "HTTP_TLS_CERT" ? "a certificate" : "a private key"
      }`,
      {
        hint: "are HTTP_TLS_CERT and HTTP_TLS_KEY swapped?",
      },
    );
  }
  return text;
}

/**
 * A warning when HTTP_TLS_KEY can be read by users other than its owner and group
 * (the same rule as recon.opts); undefined when it cannot be told or is fine.
 */
export async function keyFileWarning(file: string): Promise<string | undefined> {
  const mode = await Deno.stat(file).then((info) => info.mode, () => null);
  if (mode === null || (mode & 0o004) === 0) return undefined;
  return `HTTP_TLS_KEY ${file} can be read by every user (mode ${
    (mode & 0o777).toString(8).padStart(4, "0")
  }); run chmod 600 ${file}, or chmod 640 with the group of the user recon runs as`;
}
