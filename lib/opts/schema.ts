/**
 * The recon.opts options: their names, types, limits, defaults and documentation.
 *
 * One table ({@link OPTION_SPECS}) is the source of truth for the parser, the
 * `--show-config` output, `recon.opts.example` and `docs/CONFIGURATION.md`.
 *
 * @module
 */

import type { Destination } from "./destination.ts";
import { editDistance } from "../edit_distance.ts";
import { PLACEHOLDER_KEY } from "../crypto/keys.ts";

/**
 * The eleven legacy value lines that open every recon.opts, in file order.
 * They carry no names in the file: the n-th non-comment line is the n-th name.
 */
export const POSITIONAL_KEYS = [
  "SERVER_HOST",
  "SERVER_PORT",
  "USERNAME",
  "PASSWORD",
  "SSH_PORT",
  "MRRAW_PATH",
  "RECON_FILEPATH",
  "RECON_SCRIPT",
  "RECON_DICOM_DIR",
  "SCANNER_DICOM_DIR",
  "LOG_FILEPATH",
] as const;

/** The value the seed's default file carries; it is not a key. */
export const PLACEHOLDER_SHARED_KEY: string = PLACEHOLDER_KEY;

/** Largest number of seconds a timer can wait: setTimeout overflows above 2^31-1 ms. */
export const MAX_SECONDS = Math.floor((2 ** 31 - 1) / 1000);

const KiB = 1024;
const GiB = KiB * KiB * KiB;

/** Every option, typed. Paths are as written unless passed through `resolveConfigPaths`. */
export interface ReconConfig {
  SERVER_HOST: string;
  SERVER_PORT: number;
  USERNAME: string;
  PASSWORD: string;
  SSH_PORT: number;
  MRRAW_PATH: string;
  RECON_FILEPATH: string;
  RECON_SCRIPT: string;
  RECON_DICOM_DIR: string;
  SCANNER_DICOM_DIR: string;
  LOG_FILEPATH: string;
  SHARED_KEY: string;
  MAX_CONCURRENT_JOBS: number;
  TRUSTEDIPS: string[];
  CLIENT_WATCH_DIRECTORY: string;
  CLIENT_WATCH_PATTERN: string;
  CLIENT_DAEMON_POLL_INTERVAL: number;
  CLIENT_DAEMON_STABILITY_DELAY: number;
  CLIENT_DAEMON_GROUPING_TIMEOUT: number;
  CLIENT_DAEMON_RECON_OPTIONS_JSON: Record<string, unknown>;
  CLIENT_DEFAULT_PFILE_NAME: string;
  CLIENT_DEFAULT_PFILE_PATH: string;
  CLIENT_DOWNLOAD_DIR: string;
  CLIENT_MAX_RESULT_BYTES: number;
  JOB_TIMEOUT: number;
  MATLAB_COMMAND: string[];
  LEGACY_SHARED_OUTPUT: number;
  MAX_JOB_BYTES: number;
  DISK_FREE_MARGIN: number;
  VERIFY_AFTER_WRITE: string;
  IDLE_TIMEOUT: number;
  HANDSHAKE_TIMEOUT: number;
  CRYPTO_BACKEND: string;
  MAX_UNAUTHENTICATED: number;
  MAX_UNAUTHENTICATED_PER_IP: number;
  LOCKOUT_FAILURES: number;
  LOCKOUT_SECONDS: number;
  LOG_RETENTION: number;
  SHUTDOWN_GRACE: number;
  CLIENT_DAEMON_ON_COMPLETE: string;
  CLIENT_DAEMON_STATE_FILE: string;
  RECON_STATE_DIR: string;
  RESULT_RETENTION: number;
  FAILED_INPUT_RETENTION: number;
  UPLOAD_RESUME_WINDOW: number;
  JOB_MAX_ATTEMPTS: number;
  CLIENT_RECONNECT_TIMEOUT: number;
  CLIENT_KEYS_FILE: string;
  KEY_ROTATION_GRACE: number;
  AUDIT_LOG: string;
  AUDIT_ROTATE_BYTES: number;
  EXECUTOR: string;
  SLURM_SBATCH_ARGS: string[];
  SLURM_POLL_INTERVAL: number;
  HTTP_LISTEN: string;
  HTTP_TOKEN: string;
  HTTP_TLS_CERT: string;
  HTTP_TLS_KEY: string;
  DEFAULT_DESTINATIONS: string[];
  DELIVERY_RETRY_FOR: number;
  ON_JOB_END: string;
  ON_DELIVERY_FAILED: string;
  HOOK_TIMEOUT: number;
  /**
   * The `DESTINATION_<NAME>` lines, by NAME (upper case). Not an option of its own:
   * each line is one (lib/opts/destination.ts).
   */
  DESTINATIONS: Record<string, Destination>;
}

/** A recon.opts option name. */
export type OptionName = Exclude<keyof ReconConfig, "DESTINATIONS">;

/**
 * Which program reads an option: `client` is every `recon-client` mode, `watch`
 * only the scanner watch mode, `legacy` nothing (kept for old files).
 */
export type ReadBy = "server" | "client" | "both" | "watch" | "legacy";

/** How an option's text becomes a value. `path` options are resolved against the opts directory. */
export type OptionType =
  | { kind: "string" }
  | { kind: "choice"; values: readonly string[] }
  | { kind: "path" }
  | { kind: "int"; min: number; max: number }
  | { kind: "seconds"; min: number; exclusive?: boolean }
  | { kind: "duration"; min: number }
  | { kind: "bytes"; min: number }
  | { kind: "ips" }
  | { kind: "json" }
  | { kind: "argv" }
  | { kind: "names" };

/** Documentation of one option, for docs and `--show-config`. */
export interface OptionDoc {
  /** The default as a person writes it in recon.opts, or how an empty value is read. */
  default: string;
  readBy: ReadBy;
  description: string;
}

/** Type and documentation of one option. */
export interface OptionSpec extends OptionDoc {
  type: OptionType;
}

const PORT: OptionType = { kind: "int", min: 1, max: 65535 };
const COUNT: OptionType = { kind: "int", min: 1, max: Number.MAX_SAFE_INTEGER };
const str: OptionType = { kind: "string" };
const path: OptionType = { kind: "path" };

function seconds(min: number, exclusive = false): OptionType {
  return { kind: "seconds", min, exclusive };
}

/** Seconds, or a number with a unit: `90s`, `30m`, `12h`, `7d`. */
function duration(min: number): OptionType {
  return { kind: "duration", min };
}

/** Every option in the order recon.opts.example and `--show-config` list them. */
export const OPTION_SPECS: Readonly<Record<OptionName, Readonly<OptionSpec>>> = Object.freeze({
  SERVER_HOST: {
    type: str,
    default: "localhost",
    readBy: "both",
    description: "Host name or IP address of the recon server (line 1). Clients connect to it; " +
      "the server listens on it (0.0.0.0 listens on every interface).",
  },
  SERVER_PORT: {
    type: PORT,
    default: "60000",
    readBy: "both",
    description: "TCP port of the recon server (line 2).",
  },
  USERNAME: {
    type: str,
    default: "sdc",
    readBy: "legacy",
    description: "Scanner user name (line 3). Unused; kept so old files keep their shape.",
  },
  PASSWORD: {
    type: str,
    default: "adw2.0",
    readBy: "legacy",
    description: "Scanner password (line 4). Unused; redacted by --show-config.",
  },
  SSH_PORT: {
    type: PORT,
    default: "22",
    readBy: "legacy",
    description: "SSH port of the scanner (line 5). Unused.",
  },
  MRRAW_PATH: {
    type: str,
    default: "/usr/g/mrraw/",
    readBy: "legacy",
    description: "Scanner raw data directory (line 6). Unused: clients send their files.",
  },
  RECON_FILEPATH: {
    type: path,
    default: "/var/lib/recon/jobs",
    readBy: "server",
    description: "Directory under which the server creates each job's input directory " +
      "job_<uuid>_input/, and where it keeps the per-job logs (line 7). Created 0700 when " +
      "missing; the server refuses one another user can write or that it does not own.",
  },
  RECON_SCRIPT: {
    type: path,
    default: "default_recon_script.sh",
    readBy: "server",
    description: "Reconstruction program run for each job as RECON_SCRIPT <job_input_dir> " +
      "--key value …; a .m file runs through MATLAB_COMMAND (line 8).",
  },
  RECON_DICOM_DIR: {
    type: path,
    default: "/var/lib/recon/results",
    readBy: "server",
    description: "Directory where reconstructed DICOM files are collected and sent back " +
      "from (line 9). Created 0700 when missing; refused like RECON_FILEPATH.",
  },
  SCANNER_DICOM_DIR: {
    type: str,
    default: "/tmp/scanner_dicoms/",
    readBy: "legacy",
    description: "Scanner DICOM directory (line 10). Unused: results go to CLIENT_DOWNLOAD_DIR.",
  },
  LOG_FILEPATH: {
    type: path,
    default: "/var/log/recon/recon.log",
    readBy: "both",
    description: "Log file, appended to by both programs in addition to stderr (line 11). " +
      "The server creates its directory 0750 and refuses one another user can write; a " +
      "client not run as root uses recon-client.log in its state directory " +
      "($XDG_STATE_HOME/recon, else ~/.local/state/recon) instead of the default.",
  },
  SHARED_KEY: {
    type: str,
    default: "(none: must be set)",
    readBy: "both",
    description: "Fernet key (32 bytes, URL-safe base64, 44 characters) shared by the server " +
      "and every client. Generate with 'recon-server keygen'. Keep the file mode 0600.",
  },
  MAX_CONCURRENT_JOBS: {
    type: COUNT,
    default: "1",
    readBy: "server",
    description: "Number of jobs the server runs at the same time (1 = one after another).",
  },
  TRUSTEDIPS: {
    type: { kind: "ips" },
    default: "(empty: any address)",
    readBy: "server",
    description: "Comma-separated client IP addresses allowed to connect; other addresses are " +
      "refused before the handshake. Both TRUSTEDIPS = a,b and TRUSTEDIPS: a,b are accepted. " +
      "A link-local address with its interface (fe80::1%eth0 or fe80::1%4) matches only on " +
      "that interface; without one it matches on every interface.",
  },
  CLIENT_WATCH_DIRECTORY: {
    type: path,
    default: "(empty: watch mode needs it)",
    readBy: "watch",
    description: "Directory the watch mode scans for new scanner files.",
  },
  CLIENT_WATCH_PATTERN: {
    type: str,
    default: "*.7",
    readBy: "watch",
    description: "Glob pattern of the files the watch mode submits.",
  },
  CLIENT_DAEMON_POLL_INTERVAL: {
    type: seconds(0, true),
    default: "10",
    readBy: "watch",
    description: "Seconds between two scans of CLIENT_WATCH_DIRECTORY.",
  },
  CLIENT_DAEMON_STABILITY_DELAY: {
    type: seconds(0),
    default: "5",
    readBy: "watch",
    description: "Seconds a file's size and time must stay unchanged before it counts as " +
      "completely written.",
  },
  CLIENT_DAEMON_GROUPING_TIMEOUT: {
    type: seconds(0),
    default: "5",
    readBy: "watch",
    description: "Seconds to wait for more files of the same scan before submitting them " +
      "together as one job.",
  },
  CLIENT_DAEMON_RECON_OPTIONS_JSON: {
    type: { kind: "json" },
    default: "{}",
    readBy: "watch",
    description: "Reconstruction options (a JSON object on one line) sent with every job " +
      "the watch mode submits, like --recon-options.",
  },
  CLIENT_DEFAULT_PFILE_NAME: {
    type: str,
    default: "P00000.7",
    readBy: "client",
    description: "File name of the default P-file.",
  },
  CLIENT_DEFAULT_PFILE_PATH: {
    type: path,
    default: "/tmp/default_pfile_on_client/P00000.7",
    readBy: "client",
    description: "File submitted when recon-client is given no --files and no --directory.",
  },
  CLIENT_DOWNLOAD_DIR: {
    type: path,
    default: "client_downloads",
    readBy: "client",
    description: "Directory where the client saves the results it receives. A client not " +
      "run as root uses downloads in its state directory ($XDG_STATE_HOME/recon, else " +
      "~/.local/state/recon) instead of the default.",
  },
  CLIENT_MAX_RESULT_BYTES: {
    type: { kind: "bytes", min: 0 },
    default: "0",
    readBy: "client",
    description: "Largest total size of one job's results the client accepts (0 = no cap); " +
      "larger results, or more than CLIENT_DOWNLOAD_DIR has free, are refused before any " +
      "byte and stay on the server in RECON_DICOM_DIR/job_<id>_output.",
  },
  JOB_TIMEOUT: {
    type: seconds(0),
    default: "3600",
    readBy: "server",
    description: "Seconds a reconstruction may run before the server stops it and fails the " +
      "job; 0 = no limit.",
  },
  MATLAB_COMMAND: {
    type: { kind: "argv" },
    default: "matlab -batch",
    readBy: "server",
    description: "Command that runs a .m RECON_SCRIPT, split on whitespace into arguments " +
      "(no shell, no quoting); the Matlab call is appended as the last argument.",
  },
  LEGACY_SHARED_OUTPUT: {
    type: { kind: "int", min: 0, max: 1 },
    default: "0",
    readBy: "server",
    description: "1 = also send back the files a legacy script writes into RECON_DICOM_DIR " +
      "itself (new during its run); jobs then run one at a time, whatever " +
      "MAX_CONCURRENT_JOBS says. 0 = only RECON_OUTPUT_DIR is collected.",
  },
  MAX_JOB_BYTES: {
    type: { kind: "bytes", min: 1 },
    default: "64G",
    readBy: "server",
    description: "Largest total size of one job's input files; bigger jobs are refused " +
      "before any byte is sent. Plain bytes or K, M, G, T (powers of 1024).",
  },
  DISK_FREE_MARGIN: {
    type: { kind: "bytes", min: 0 },
    default: "1G",
    readBy: "server",
    description: "Free space the server keeps on the RECON_FILEPATH disk; a job that would " +
      "leave less is refused.",
  },
  VERIFY_AFTER_WRITE: {
    type: { kind: "choice", values: ["no", "yes"] },
    default: "no",
    readBy: "both",
    description: "yes = read every file back once it is written (the server its uploads, the " +
      "client its downloads) and check its size and SHA-256 against what the sender sent; a " +
      "mismatch fails the transfer and the file is discarded. no = the file is taken as it " +
      "arrived: every byte came authenticated and in order, and its SHA-256 is the sender's. " +
      "yes costs one more read of each file.",
  },
  IDLE_TIMEOUT: {
    type: seconds(0, true),
    default: "300",
    readBy: "both",
    description: "Seconds a connection may stay silent before it is closed.",
  },
  HANDSHAKE_TIMEOUT: {
    type: seconds(0, true),
    default: "10",
    readBy: "both",
    description: "Seconds allowed for the secure handshake after connecting.",
  },
  CRYPTO_BACKEND: {
    type: { kind: "choice", values: ["auto", "openssl", "webcrypto"] },
    default: "auto",
    readBy: "both",
    description: "What computes the encryption of every connection: openssl (OpenSSL's " +
      "libcrypto, libcrypto.so.3 or .so.1.1, through FFI; needs --allow-ffi, which the " +
      "installed programs have), webcrypto (the runtime's own), or auto (openssl when it " +
      "loads, else webcrypto). The tokens are the same either way, so each end chooses on " +
      "its own; openssl is faster, and fails the start when it cannot load.",
  },
  MAX_UNAUTHENTICATED: {
    type: COUNT,
    default: "256",
    readBy: "server",
    description: "Connections allowed in the handshake at the same time; more are refused.",
  },
  MAX_UNAUTHENTICATED_PER_IP: {
    type: COUNT,
    default: "64",
    readBy: "server",
    description:
      "Connections from one address allowed in the handshake at the same time (a scanner is one address; a handshake takes milliseconds).",
  },
  LOCKOUT_FAILURES: {
    type: { kind: "int", min: 0, max: Number.MAX_SAFE_INTEGER },
    default: "5",
    readBy: "server",
    description: "Failed handshakes that name the server's key id, from one address, after " +
      "which that address's handshakes are spaced 100 ms apart for LOCKOUT_SECONDS; 0 = never. " +
      "Nothing is refused for failed handshakes, and a wrong key (unknown key id) never counts.",
  },
  LOCKOUT_SECONDS: {
    type: seconds(0),
    default: "60",
    readBy: "server",
    description: "Seconds within which failed handshakes add up, and how long an address " +
      "stays slowed down after its last one.",
  },
  LOG_RETENTION: {
    type: { kind: "int", min: 0, max: 36500 },
    default: "30",
    readBy: "server",
    description: "Days the per-job logs RECON_FILEPATH/job_<id>.log are kept; older ones are " +
      "removed at start and then hourly. 0 = never removed.",
  },
  SHUTDOWN_GRACE: {
    type: seconds(0),
    default: "30",
    readBy: "server",
    description: "Seconds the server waits for running transfers and jobs on SIGTERM or " +
      "Ctrl-C before it stops them.",
  },
  CLIENT_DAEMON_ON_COMPLETE: {
    type: path,
    default: "(empty: none)",
    readBy: "watch",
    description:
      "Program run (without a shell) after each job the watch mode completes, as PROGRAM JOB_ID RESULT_DIR; its failure is logged, never fatal.",
  },
  CLIENT_DAEMON_STATE_FILE: {
    type: path,
    default: "(empty: recon-watch.sqlite next to recon.opts)",
    readBy: "watch",
    description: "SQLite file where the watch mode remembers which files it has submitted. " +
      "Empty, for a client not run as root: recon-watch.sqlite in its state directory " +
      "($XDG_STATE_HOME/recon, else ~/.local/state/recon).",
  },
  RECON_STATE_DIR: {
    type: path,
    default: "(empty: state/ beside RECON_FILEPATH)",
    readBy: "server",
    description: "Directory of the server's job store (jobs.sqlite): every job's state, " +
      "inputs, outputs and history. Empty: the directory state next to RECON_FILEPATH " +
      "(/var/lib/recon/state for the default RECON_FILEPATH).",
  },
  RESULT_RETENTION: {
    type: duration(0),
    default: "7d",
    readBy: "server",
    description: "How long a finished job's results stay on the server after it finished, " +
      "fetched or not (seconds, or with a unit: 90s, 30m, 12h, 7d); then they are removed " +
      "and the job is expired.",
  },
  FAILED_INPUT_RETENTION: {
    type: duration(0),
    default: "3d",
    readBy: "server",
    description: "How long a failed job's inputs stay, so that `recon-client rerun` can run " +
      "it again without another upload (seconds, or 90s, 30m, 12h, 7d).",
  },
  UPLOAD_RESUME_WINDOW: {
    type: duration(0),
    default: "1h",
    readBy: "server",
    description: "How long the server keeps a cut-off upload for its client to resume; then " +
      "the partial input is removed and the job fails (seconds, or 90s, 30m, 12h, 7d).",
  },
  JOB_MAX_ATTEMPTS: {
    type: { kind: "int", min: 1, max: 100 },
    default: "2",
    readBy: "server",
    description: "How many times in all a job is started when the server stops while it " +
      'runs; after the last, it fails with "the server stopped while it was running".',
  },
  CLIENT_RECONNECT_TIMEOUT: {
    type: duration(0),
    default: "3600",
    readBy: "client",
    description: "Seconds a client keeps reconnecting to follow a queued job after the " +
      "connection broke (seconds, or 90s, 30m, 12h, 7d); then it exits with code 5 and " +
      "prints the command that fetches the results later.",
  },
  CLIENT_KEYS_FILE: {
    type: path,
    default: "(empty: recon-clients beside recon.opts)",
    readBy: "server",
    description: "The server's client file: one line per client key (name, key id, key, " +
      "created, flags), managed with `recon-server clients add|list|revoke|rotate`. A " +
      "running server reads it again within a second of a change. SHARED_KEY, when set, " +
      "stays a client named default with admin rights.",
  },
  KEY_ROTATION_GRACE: {
    type: duration(0),
    default: "7d",
    readBy: "server",
    description: "How long a client's old key keeps working after `recon-server clients " +
      "rotate`, so its machines can be given the new key one by one (seconds, or 90s, " +
      "30m, 12h, 7d).",
  },
  AUDIT_LOG: {
    type: path,
    default: "(empty: audit.jsonl in RECON_STATE_DIR)",
    readBy: "server",
    description: "The audit log: append-only JSON Lines, each line fsync'd and chained to " +
      "the one before by its SHA-256 (who connected, which job came with which inputs, " +
      "what came back, who cancelled what, client keys added, rotated, revoked). Read it " +
      "with `recon-server audit`; check it with `recon-server audit --verify`.",
  },
  AUDIT_ROTATE_BYTES: {
    type: { kind: "bytes", min: 0 },
    default: "64M",
    readBy: "server",
    description: "Size at which the audit log is renamed to audit.jsonl.<time> and a new " +
      "one started, the chain carried over (bytes, or K/M/G; 0 = never). recon never " +
      "removes old audit files.",
  },
  EXECUTOR: {
    type: { kind: "choice", values: ["local", "slurm"] },
    default: "local",
    readBy: "server",
    description: "What runs RECON_SCRIPT: local (a process group on this box) or slurm " +
      "(each job submitted with sbatch; RECON_FILEPATH and RECON_DICOM_DIR must then be on " +
      "storage the compute nodes share). MAX_CONCURRENT_JOBS bounds the jobs in flight either way.",
  },
  SLURM_SBATCH_ARGS: {
    type: { kind: "argv" },
    default: "(empty)",
    readBy: "server",
    description: "Extra sbatch arguments for every job with EXECUTOR = slurm, e.g. " +
      "--partition=gpu --gres=gpu:1 (split at spaces; no shell).",
  },
  SLURM_POLL_INTERVAL: {
    type: duration(0.1),
    default: "1s",
    readBy: "server",
    description: "How often the server asks Slurm (scontrol) about each job it follows " +
      "(seconds, or with a unit: 0.5, 2s, 1m); a job's output and its end are read from " +
      "its files every 0.1 s whatever this is.",
  },
  HTTP_LISTEN: {
    type: str,
    default: "(empty: off)",
    readBy: "server",
    description: "HOST:PORT where the server also serves plain HTTP for monitoring: /metrics " +
      "(Prometheus), /healthz and a read-only status page at /, e.g. 127.0.0.1:9187 " +
      "([::1]:9187 for IPv6). An address other than loopback needs HTTP_TOKEN.",
  },
  HTTP_TOKEN: {
    type: str,
    default: "(empty: none)",
    readBy: "server",
    description: "When set, every HTTP request needs it: Authorization: Bearer TOKEN (a " +
      "browser may give it as the password of HTTP basic authentication). At least 16 " +
      "characters ('recon-server keygen' makes a good one). Redacted by --show-config.",
  },
  HTTP_TLS_CERT: {
    type: path,
    default: "(empty: plain HTTP)",
    readBy: "server",
    description: "PEM certificate (chain) for HTTP_LISTEN; with HTTP_TLS_KEY it is served " +
      "over HTTPS. Set both or neither.",
  },
  HTTP_TLS_KEY: {
    type: path,
    default: "(empty: plain HTTP)",
    readBy: "server",
    description: "PEM private key of HTTP_TLS_CERT. Keep it 0600 or 0640 like recon.opts.",
  },
  DEFAULT_DESTINATIONS: {
    type: { kind: "names" },
    default: "(empty: none)",
    readBy: "server",
    description: "Destinations every succeeded job's DICOM results are sent to, comma-separated " +
      "NAMEs of DESTINATION_<NAME> lines (DESTINATION_PACS = dicom://ORTHANC@pacs:4242). A job " +
      "adds others with 'recon-client --deliver NAME'.",
  },
  DELIVERY_RETRY_FOR: {
    type: duration(0),
    default: "24h",
    readBy: "server",
    description: "How long a delivery to a destination that is down or refusing is retried " +
      "(with backoff) before it is given up, logged, audited and ON_DELIVERY_FAILED runs.",
  },
  ON_JOB_END: {
    type: path,
    default: "(empty: none)",
    readBy: "server",
    description: "Program run (no shell) when a job succeeds, fails or is cancelled, with the " +
      "job id, state, client and result directory as arguments, without waiting for deliveries; " +
      "its failure is logged, never fatal.",
  },
  ON_DELIVERY_FAILED: {
    type: path,
    default: "(empty: none)",
    readBy: "server",
    description: "Program run (no shell) when a delivery is given up after DELIVERY_RETRY_FOR, " +
      "with the job id, the destination and the reason as arguments.",
  },
  HOOK_TIMEOUT: {
    type: duration(1),
    default: "60s",
    readBy: "server",
    description: "How long ON_JOB_END and ON_DELIVERY_FAILED may run before they are killed.",
  },
});

/** Every option name, in table order. */
export const OPTION_NAMES: readonly OptionName[] = Object.freeze(
  Object.keys(OPTION_SPECS) as OptionName[],
);

/** Documentation of every option: default text, who reads it, what it does. */
export const OPTION_DOCS: Readonly<Record<OptionName, Readonly<OptionDoc>>> = Object.freeze(
  Object.fromEntries(
    OPTION_NAMES.map((name) => {
      const { default: text, readBy, description } = OPTION_SPECS[name];
      return [name, Object.freeze({ default: text, readBy, description })];
    }),
  ) as Record<OptionName, OptionDoc>,
);

/** Whether `name` is a recon.opts option this version knows. */
export function isOptionName(name: string): name is OptionName {
  return Object.hasOwn(OPTION_SPECS, name);
}

/**
 * Names the seed's text uses for an option spelt differently here: its note on
 * legacy options calls SSH_PORT `SSHPORT`. A `KEY = VALUE` line with one of them
 * is accepted without a word and not used, like the legacy option itself, so a
 * file written from that text keeps starting.
 */
export const LEGACY_OPTION_NAMES: ReadonlyMap<string, OptionName> = new Map([
  ["SSHPORT", "SSH_PORT"],
]);

/**
 * The known option `name` is most likely a misspelling of, for a "did you mean"
 * hint: the closest by edit distance (ignoring case and `_`, so `TRUSTED_IPS`
 * finds TRUSTEDIPS), if it is within a quarter of the name's length (at least 1,
 * at most 3); `undefined` when nothing is that close or `name` is itself known.
 */
export function nearestOptionName(name: string): OptionName | undefined {
  const upper = name.toUpperCase();
  if (isOptionName(upper)) return upper === name ? undefined : upper;
  const squash = (text: string) => text.replaceAll("_", "");
  const limit = Math.max(1, Math.min(3, Math.floor(name.length / 4)));
  let best: { name: OptionName; distance: number } | undefined;
  for (const known of OPTION_NAMES) {
    const distance = squash(known) === squash(upper) ? 0 : editDistance(upper, known);
    if (distance <= limit && (best === undefined || distance < best.distance)) {
      best = { name: known, distance };
    }
  }
  return best?.name;
}

/** The value every option takes when recon.opts does not set it (or sets it empty). */
export const DEFAULTS: Readonly<ReconConfig> = deepFreeze({
  SERVER_HOST: "localhost",
  SERVER_PORT: 60000,
  USERNAME: "sdc",
  PASSWORD: "adw2.0",
  SSH_PORT: 22,
  MRRAW_PATH: "/usr/g/mrraw/",
  RECON_FILEPATH: "/var/lib/recon/jobs",
  RECON_SCRIPT: "default_recon_script.sh",
  RECON_DICOM_DIR: "/var/lib/recon/results",
  SCANNER_DICOM_DIR: "/tmp/scanner_dicoms/",
  LOG_FILEPATH: "/var/log/recon/recon.log",
  SHARED_KEY: "",
  MAX_CONCURRENT_JOBS: 1,
  TRUSTEDIPS: [],
  CLIENT_WATCH_DIRECTORY: "",
  CLIENT_WATCH_PATTERN: "*.7",
  CLIENT_DAEMON_POLL_INTERVAL: 10,
  CLIENT_DAEMON_STABILITY_DELAY: 5,
  CLIENT_DAEMON_GROUPING_TIMEOUT: 5,
  CLIENT_DAEMON_RECON_OPTIONS_JSON: {},
  CLIENT_DEFAULT_PFILE_NAME: "P00000.7",
  CLIENT_DEFAULT_PFILE_PATH: "/tmp/default_pfile_on_client/P00000.7",
  CLIENT_DOWNLOAD_DIR: "client_downloads",
  CLIENT_MAX_RESULT_BYTES: 0,
  JOB_TIMEOUT: 3600,
  MATLAB_COMMAND: ["matlab", "-batch"],
  LEGACY_SHARED_OUTPUT: 0,
  MAX_JOB_BYTES: 64 * GiB,
  DISK_FREE_MARGIN: GiB,
  VERIFY_AFTER_WRITE: "no",
  IDLE_TIMEOUT: 300,
  HANDSHAKE_TIMEOUT: 10,
  CRYPTO_BACKEND: "auto",
  MAX_UNAUTHENTICATED: 256,
  MAX_UNAUTHENTICATED_PER_IP: 64,
  LOCKOUT_FAILURES: 5,
  LOCKOUT_SECONDS: 60,
  LOG_RETENTION: 30,
  SHUTDOWN_GRACE: 30,
  CLIENT_DAEMON_ON_COMPLETE: "",
  CLIENT_DAEMON_STATE_FILE: "",
  RECON_STATE_DIR: "",
  RESULT_RETENTION: 7 * 86400,
  FAILED_INPUT_RETENTION: 3 * 86400,
  UPLOAD_RESUME_WINDOW: 3600,
  JOB_MAX_ATTEMPTS: 2,
  CLIENT_RECONNECT_TIMEOUT: 3600,
  CLIENT_KEYS_FILE: "",
  KEY_ROTATION_GRACE: 7 * 86400,
  AUDIT_LOG: "",
  AUDIT_ROTATE_BYTES: 64 * 1024 * 1024,
  EXECUTOR: "local",
  SLURM_SBATCH_ARGS: [],
  SLURM_POLL_INTERVAL: 1,
  HTTP_LISTEN: "",
  HTTP_TOKEN: "",
  HTTP_TLS_CERT: "",
  HTTP_TLS_KEY: "",
  DEFAULT_DESTINATIONS: [],
  DELIVERY_RETRY_FOR: 86400,
  ON_JOB_END: "",
  ON_DELIVERY_FAILED: "",
  HOOK_TIMEOUT: 60,
  DESTINATIONS: {},
});

/** A fresh, mutable copy of {@link DEFAULTS}. */
export function defaultConfig(): ReconConfig {
  return structuredClone(DEFAULTS) as ReconConfig;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object") {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}
