/**
 * The recon.opts written when none exists, and the text of `recon.opts.example`:
 * one source, so the file a user gets and the example they read are the same
 * (tests/opts/file_test.ts fails when the example drifts). It lives in the code
 * because a `deno compile`d binary cannot read the repository at run time.
 *
 * It keeps the seed's shape (eleven positional lines, then `KEY = VALUE`) so it
 * reads like the files users already have; options other than the seed's are
 * shown commented out at their defaults.
 *
 * @module
 */

/** Text of a new recon.opts (`\n` line endings, SHARED_KEY still the placeholder). */
export const DEFAULT_OPTS_TEXT: string =
  `# recon.opts: configuration of recon-server (on the recon box) and recon-client
# (on the scanner). Reference: docs/CONFIGURATION.md. Lines starting with # are
# comments; a # after whitespace ends a value. Relative paths are relative to this
# file's directory. Keep this file private: it holds SHARED_KEY. Mode 0600 owned by
# the user the program runs as, or 0640 with that user's own group (docs/DEPLOY.md).
#
# SERVER_HOST is where the server listens and where the client connects. One file
# can serve both sides when that is one name (a host name or address of the recon
# box), or write one file for each side:
#   on the recon box: SERVER_HOST = the address to listen on (0.0.0.0 = every
#     interface), plus the server options (RECON_SCRIPT, MAX_CONCURRENT_JOBS, ...);
#   on the scanner: SERVER_HOST = the recon box's host name or address, plus the
#     client options (CLIENT_...).
# Both files need the same SERVER_PORT and SHARED_KEY. Each program ignores the
# other's options; an option neither knows (a misspelt name) stops it from
# starting unless it is started with --allow-unknown-options.
#
# The first eleven value lines are positional: their order gives their meaning, so
# keep all eleven, legacy ones included, in this order in each file.
#
# 1 SERVER_HOST: Where the server listens and clients connect (e.g., localhost,
#   recon.example.org, 192.168.1.100)
localhost
# 2 SERVER_PORT: TCP port the server listens on and clients connect to
60000
# 3 USERNAME: Username for scanner authentication (legacy, not used)
sdc
# 4 PASSWORD: Password for scanner authentication (legacy, not used)
adw2.0
# 5 SSH_PORT: SSH port of the scanner (legacy, not used)
22
# 6 MRRAW_PATH: Scanner raw data directory (legacy, not used: clients send their files)
/usr/g/mrraw/
# 7 RECON_FILEPATH: Server directory under which each job gets job_<uuid>_input/
#   and its log (created 0700; refused if another user can write it or a parent)
/var/lib/recon/jobs
# 8 RECON_SCRIPT: Reconstruction program on the server (e.g., /opt/scripts/recon.sh,
#   bart_recon.sh or recon.m); it runs as RECON_SCRIPT <job_input_dir> --key value ...
default_recon_script.sh
# 9 RECON_DICOM_DIR: Server directory where reconstructed DICOMs are collected
/var/lib/recon/results
# 10 SCANNER_DICOM_DIR: Scanner's DICOM directory (legacy, not used)
/tmp/scanner_dicoms/
# 11 LOG_FILEPATH: Log file for server and client (in addition to stderr); a client
#   not run as root uses ~/.local/state/recon/recon-client.log instead of this default
/var/log/recon/recon.log
# --- Secure Transfer Options ---
# SHARED_KEY: The Fernet key that encrypts and authenticates every connection.
# Generate one with: recon-server keygen
# (recon-server puts a fresh one here when it creates this file.)
# This key MUST be identical in recon.opts on the server and on every client.
SHARED_KEY = SET_YOUR_SHARED_KEY_HERE
# VERIFY_AFTER_WRITE: yes = read each received file back and check its SHA-256 (the server
# its uploads, the client its downloads); costs one more read of each file.
# VERIFY_AFTER_WRITE = no
# --- Server Options (recon-server) ---
# MAX_CONCURRENT_JOBS: Number of jobs run at the same time (1 = one after another).
MAX_CONCURRENT_JOBS = 1
# TRUSTEDIPS: Comma-separated client IP addresses allowed to connect (a link-local
# fe80::1%eth0 only on that interface).
# Example: #TRUSTEDIPS: 192.168.1.101,192.168.1.102
# If commented out or empty, the server accepts connections from any address.
#TRUSTEDIPS: 127.0.0.1,::1
# JOB_TIMEOUT: Seconds a reconstruction may run before it is stopped (0 = no limit).
# JOB_TIMEOUT = 3600
# MATLAB_COMMAND: Command that runs a .m RECON_SCRIPT (split on spaces, no shell).
# MATLAB_COMMAND = matlab -batch
# LEGACY_SHARED_OUTPUT: 1 = also return files a legacy script writes into RECON_DICOM_DIR
# itself; runs one job at a time (see examples/README.md). 0 = only RECON_OUTPUT_DIR.
# LEGACY_SHARED_OUTPUT = 0
# MAX_JOB_BYTES: Largest total input size of one job (bytes, or K/M/G/T: 512M, 64G).
# MAX_JOB_BYTES = 64G
# DISK_FREE_MARGIN: Free space to keep on the RECON_FILEPATH disk; bigger jobs are refused.
# DISK_FREE_MARGIN = 1G
# LOG_RETENTION: Days the per-job logs job_<id>.log are kept (0 = forever).
# LOG_RETENTION = 30
# SHUTDOWN_GRACE: Seconds to let running work finish on SIGTERM or Ctrl-C.
# SHUTDOWN_GRACE = 30
# --- Durable Jobs (server) ---
# RECON_STATE_DIR: The job store (jobs.sqlite). Empty: state/ beside RECON_FILEPATH.
# RECON_STATE_DIR =
# RESULT_RETENTION: How long results stay after a job finished (3600, 90s, 30m, 12h, 7d).
# RESULT_RETENTION = 7d
# FAILED_INPUT_RETENTION: How long a failed job's inputs stay for 'recon-client rerun'.
# FAILED_INPUT_RETENTION = 3d
# UPLOAD_RESUME_WINDOW: How long a cut-off upload waits for its client to resume it.
# UPLOAD_RESUME_WINDOW = 1h
# JOB_MAX_ATTEMPTS: Times a job is started in all when the server stops while it runs.
# JOB_MAX_ATTEMPTS = 2
# --- Identities and Audit (server) ---
# CLIENT_KEYS_FILE: One key per client ('recon-server clients add NAME'). Empty: recon-clients here.
# CLIENT_KEYS_FILE =
# KEY_ROTATION_GRACE: How long an old key works after 'recon-server clients rotate'.
# KEY_ROTATION_GRACE = 7d
# AUDIT_LOG: Append-only, hash-chained audit log. Empty: audit.jsonl in RECON_STATE_DIR.
# AUDIT_LOG =
# AUDIT_ROTATE_BYTES: Size at which the audit log starts a new file (0 = never).
# AUDIT_ROTATE_BYTES = 64M
# --- Slurm (server) ---
# EXECUTOR: local, or slurm to submit each job with sbatch (RECON_FILEPATH, RECON_DICOM_DIR shared).
# EXECUTOR = local
# SLURM_SBATCH_ARGS: Extra sbatch arguments, e.g. --partition=gpu --gres=gpu:1
# SLURM_SBATCH_ARGS =
# SLURM_POLL_INTERVAL: How often the server asks Slurm (scontrol) about each job it follows.
# SLURM_POLL_INTERVAL = 1s
# --- Monitoring (server) ---
# HTTP_LISTEN: HOST:PORT for /metrics, /healthz and the status page, e.g. 127.0.0.1:9187.
# HTTP_LISTEN =
# HTTP_TOKEN: Needed by every HTTP request when set (Authorization: Bearer TOKEN).
# HTTP_TOKEN =
# HTTP_TLS_CERT: PEM certificate; with HTTP_TLS_KEY the endpoint speaks HTTPS.
# HTTP_TLS_CERT =
# HTTP_TLS_KEY: PEM private key of HTTP_TLS_CERT.
# HTTP_TLS_KEY =
# --- Delivery and Notifications (server) ---
# DESTINATION_<NAME>: a DICOM destination, e.g. DESTINATION_PACS = dicom://ORTHANC@pacs:4242?calling=RECON
# DEFAULT_DESTINATIONS: Destinations every succeeded job's DICOM results are sent to (PACS,RESEARCH).
# DEFAULT_DESTINATIONS =
# DELIVERY_RETRY_FOR: How long a delivery to a destination that is down is retried.
# DELIVERY_RETRY_FOR = 24h
# ON_JOB_END: Program run with JOB_ID STATE CLIENT RESULT_DIR when a job ends.
# ON_JOB_END =
# ON_DELIVERY_FAILED: Program run with JOB_ID DESTINATION REASON when a delivery is given up.
# ON_DELIVERY_FAILED =
# HOOK_TIMEOUT: How long ON_JOB_END and ON_DELIVERY_FAILED may run.
# HOOK_TIMEOUT = 60s
# --- Connection Limits (server; IDLE_TIMEOUT, HANDSHAKE_TIMEOUT, CRYPTO_BACKEND also client) ---
# IDLE_TIMEOUT: Seconds a connection may stay silent before it is closed.
# IDLE_TIMEOUT = 300
# HANDSHAKE_TIMEOUT: Seconds allowed for the secure handshake.
# HANDSHAKE_TIMEOUT = 10
# CRYPTO_BACKEND: auto, openssl (libcrypto through FFI, faster) or webcrypto; same tokens either way.
# CRYPTO_BACKEND = auto
# MAX_UNAUTHENTICATED: Connections allowed in the handshake at the same time.
# MAX_UNAUTHENTICATED = 256
# MAX_UNAUTHENTICATED_PER_IP: The same, per client address.
# MAX_UNAUTHENTICATED_PER_IP = 64
# LOCKOUT_FAILURES: Failed handshakes naming our key id after which an address is slowed
# down, never refused (0 = never; a wrong key does not count).
# LOCKOUT_FAILURES = 5
# LOCKOUT_SECONDS: How long failures add up, and how long an address stays slowed down.
# LOCKOUT_SECONDS = 60
# --- Watch Mode Options (recon-client watch mode) ---
# CLIENT_WATCH_DIRECTORY: Directory watched for new scanner files.
# CLIENT_WATCH_DIRECTORY = /data/scanner/incoming
# CLIENT_WATCH_PATTERN: Glob pattern of the files to submit.
# CLIENT_WATCH_PATTERN = *.7
# CLIENT_DAEMON_POLL_INTERVAL: Seconds between two scans of the directory.
# CLIENT_DAEMON_POLL_INTERVAL = 10
# CLIENT_DAEMON_STABILITY_DELAY: Seconds a file must stay unchanged before it is submitted.
# CLIENT_DAEMON_STABILITY_DELAY = 5
# CLIENT_DAEMON_GROUPING_TIMEOUT: Seconds to wait for more files of the same scan.
# CLIENT_DAEMON_GROUPING_TIMEOUT = 5
# CLIENT_DAEMON_RECON_OPTIONS_JSON: Recon options (a JSON object on one line) for every job.
# CLIENT_DAEMON_RECON_OPTIONS_JSON = {}
# CLIENT_DAEMON_ON_COMPLETE: Program run after each completed job (empty = none).
# CLIENT_DAEMON_ON_COMPLETE = /usr/local/bin/recon-done
# CLIENT_DAEMON_STATE_FILE: Where the watch mode remembers submitted files
# (empty = recon-watch.sqlite next to this file; for a client not run as root, in
# ~/.local/state/recon).
# CLIENT_DAEMON_STATE_FILE = recon-watch.sqlite
# --- Client Options (recon-client) ---
# CLIENT_DEFAULT_PFILE_NAME: File name of the default P-file.
CLIENT_DEFAULT_PFILE_NAME = P00000.7
# CLIENT_DEFAULT_PFILE_PATH: File submitted when no --files and no --directory are given.
CLIENT_DEFAULT_PFILE_PATH = /tmp/default_pfile_on_client/P00000.7
# CLIENT_DOWNLOAD_DIR: Where the client saves received results (relative to this file;
# a client not run as root uses ~/.local/state/recon/downloads instead of this default).
CLIENT_DOWNLOAD_DIR = client_downloads
# CLIENT_MAX_RESULT_BYTES: Largest total size of one job's results the client accepts
# (0 = no cap; results that do not fit the free space are refused in any case).
# CLIENT_MAX_RESULT_BYTES = 0
# CLIENT_RECONNECT_TIMEOUT: How long a client keeps reconnecting to a queued job after the
# connection broke (3600, 30m, 2h); then it exits 5 and says how to fetch the results.
# CLIENT_RECONNECT_TIMEOUT = 3600
`;
