/**
 * recon-client's `--help` texts: the main one and one per job command (`recon-client
 * fetch --help`). `watch --help` lives with watch mode (lib/watch/cli.ts).
 *
 * @module
 */
import { VERSION } from "../version.ts";

/** The job commands (besides `watch` and `keygen`). */
export const JOB_COMMANDS = [
  "jobs",
  "wait",
  "fetch",
  "cancel",
  "logs",
  "rerun",
  "redeliver",
] as const;
/** A job command. */
export type JobCommand = (typeof JOB_COMMANDS)[number];

const GLOBAL_HELP = `General (these may also come before the command):
  --opts PATH             recon.opts to use (default ./recon.opts)
  --host HOST             override SERVER_HOST
  --port PORT             override SERVER_PORT
  --json                  print one JSON document on stdout instead of text
  --quiet                 no progress or messages on stderr, only errors
  --debug                 debug logging (also names this client's encryption code)
  --allow-unknown-options accept recon.opts options neither program knows
  -h, --help              this help`;

/** The main `--help`. */
export function mainHelp(program: string): string {
  return `${program} ${VERSION}: send raw scan files to a recon-server, run the site's
reconstruction there, and receive the images (DICOM). Everything on the wire is
encrypted with the SHARED_KEY from recon.opts. Jobs live on the server: a lost
connection is made again, and a job's results can be fetched later by its id.

Usage:
  ${program} [--files FILE... | --files - | --directory DIR [--pattern GLOB]]
             [--recon-options JSON] [--priority P] [--deliver NAME[,NAME]]
             [--detach | --no-download] [options]
  ${program} --server-status [--json]
  ${program} --view-queue [--json]
  ${program} jobs [--state STATE] [--all-clients] [--json]
  ${program} wait JOB_ID...
  ${program} fetch JOB_ID [--download-dir DIR]
  ${program} cancel JOB_ID... [--reason TEXT]
  ${program} logs JOB_ID [--follow]
  ${program} rerun JOB_ID [--recon-options JSON] [--priority P]
             [--detach | --no-download]
  ${program} redeliver JOB_ID [--to NAME[,NAME]]
  ${program} watch [--watch-dir DIR] [--pattern GLOB] [--status | --retry FILE|JOB_ID]
  ${program} keygen

With no files, submits CLIENT_DEFAULT_PFILE_PATH from recon.opts. Each command has
its own --help (${program} fetch --help).

Submitting:
  --files FILE...         input files (the first is the primary file); "-" reads
                          paths from stdin, one per line
  --directory DIR         send the files in DIR that match --pattern
  --pattern GLOB          glob for --directory (default "*"), e.g. "*.7"
  --recon-options JSON    options for the reconstruction script, a JSON object;
                          each becomes "--key value" on the script's command line
  --priority P            high, normal (default) or low: high jobs run first, low
                          ones only when no normal or high job waits
  --detach                return once the job is queued: print its job id on
                          stdout and exit 0; '${program} fetch JOB_ID' gets the
                          results later
  --download-dir DIR      where results go (default CLIENT_DOWNLOAD_DIR); each job
                          gets DIR/<job_id>/
  --deliver NAME[,NAME]   the server sends the job's DICOM results to these of its
                          destinations (a PACS, an archive) too, besides those it
                          sends every job's to; --server-status lists them
  --no-download           fetch no results: wait for the job to end, print its
                          state and its deliveries, exit as for a job (0 when it
                          succeeded); the results stay on the server

If the connection breaks once the server has named the job, the client connects
again (waits of 1 s doubling to 30 s) and goes on: the upload resumes with the bytes
the server lacks, the waiting resumes, and so does a download cut off in the middle.
After CLIENT_RECONNECT_TIMEOUT (recon.opts, default 1 h) it gives up with exit code 5
and prints the command that fetches the results later. A key the server stopped
accepting (revoked) ends it at once with exit code 3. Ctrl-C cancels the job.

Jobs on the server (see '${program} COMMAND --help'):
  jobs                    list this client's jobs on the server: state, priority,
                          queue position, times, sizes, exit code and reason, when
                          results expire (--all-clients: every client's, admin only)
  wait JOB_ID...          wait until the jobs end; one line per job
  fetch JOB_ID            wait for a job if need be and download its results,
                          verified; again later resumes or finds them in place
  cancel JOB_ID...        cancel queued or running jobs
  logs JOB_ID             the script's output (--follow: until the job ends)
  rerun JOB_ID            run a failed job again from its kept inputs
  redeliver JOB_ID        send a succeeded job's results to its destinations
                          again (--to: to these)

Querying:
  --server-status         uptime, version, workers, queue by priority, jobs
                          done/failed, disk kept for inputs and results, free disk,
                          which client the server takes this one for, where
                          jobs run (executor: local or slurm, and what keeps it
                          from taking jobs when something does), the
                          destinations --deliver may name, and what computes
                          the server's encryption (crypto: OpenSSL or WebCrypto)
  --view-queue            running and queued jobs, with priority and position
                          (another client's without its file names: "(client NAME)")
                          and the Slurm job id of a job run on Slurm

General (the ones marked * may also come before a command, as in
${program} --opts /etc/recon/recon.opts watch --status):
  --opts PATH           * recon.opts to use (default ./recon.opts; created when missing)
  --host HOST           * override SERVER_HOST
  --port PORT           * override SERVER_PORT
  --json                * print one JSON document on stdout instead of text
  --quiet                 no progress or messages on stderr, only errors
  --debug               * debug logging
  --show-config           print the effective configuration as JSON (key redacted),
                          with any recon.opts lines naming no option
  --allow-unknown-options
                        * accept recon.opts options neither program knows, with a
                          warning
  -h, --help              this help
  -V, --version           print the version

Output: stdout lists the downloaded result files, one path per line, so
  ${program} --files scan.7 | xargs dcmdump
works. Progress and messages go to stderr (a progress bar on a terminal), and so
does a warning when the server did not send some of the files the script wrote
(links, special files, names a client refuses; its log says which).

Exit codes:
  0    success (also when the server skipped some of the script's files: a
       warning on stderr and "skipped" in --json say how many)
  1    the job failed on the server (the reason and the script's last stderr lines
       are printed), the server refused it, or it has no such job (unknown,
       expired, or refused: one line in the server's words)
  2    usage or configuration error (bad flag, bad recon.opts, missing file)
  3    connection or handshake error (server down, wrong SHARED_KEY, refused),
       also an upload that could not be resumed within CLIENT_RECONNECT_TIMEOUT,
       and a key the server stopped accepting while a job was under way (revoked)
  4    transfer error (size or SHA-256 mismatch, disk full, file changed)
  5    the job is on the server but the connection was lost and could not be
       made again within CLIENT_RECONNECT_TIMEOUT; the job id and the command
       that fetches its results later are printed
  130  interrupted (Ctrl-C); a job is cancelled on the server, except by fetch,
       wait and logs, which only stop following it

Examples:
  ${program} --files /path/to/P00000.7 /path/to/calibration.dat \\
      --recon-options '{"option1": "value1", "num_slices": 128}'
  ${program} --directory /path/to/scan_data/ --pattern "*.dcm" \\
      --recon-options '{"custom_script_param": true}'
  id=$(${program} --files scan.7 --priority low --detach)
  ${program} fetch "$id"
  ${program} jobs --state failed
  ${program} --files scan.7 --deliver PACS --no-download
  ${program} redeliver "$id" --to PACS
  ${program} --server-status
  ${program} --view-queue --json
  find /scans/today -name '*.7' | ${program} --files -
`;
}

const COMMAND_HELP: Record<JobCommand, (program: string) => string> = {
  jobs: (program) =>
    `${program} jobs: this client's jobs on the server, oldest first.

Usage:
  ${program} jobs [--state STATE] [--all-clients] [--json] [options]

For each job: id, state (receiving, queued, running, succeeded, failed, cancelled,
expired), priority, position in the queue, when it was submitted, started and
finished (UTC), input files and bytes, the script's exit code, result files and
bytes, when its results expire (a failed job: until when it can be rerun, "inputs"),
and the reason it ended as it did (and who cancelled it). The server lists the jobs
of the client whose key this is (the client named "default" for SHARED_KEY); a
CLIENT column names who submitted each job when they are more than one client's,
a SLURM column the Slurm job id of each job the server ran on Slurm, and a DELIVERY
column where the server sends a job's DICOM results, when any job has such a
destination: "PACS 32/32" (32 of its 32 DICOM files stored there), "PACS sending
12/32", "PACS pending" (not tried yet), "PACS retrying 12/32" (an attempt failed; it
tries again), "PACS failed 12/32" (it gave up: '${program} redeliver JOB_ID').

  --state STATE           only jobs in STATE
  --all-clients           every client's jobs, with a CLIENT column; only an admin
                          client may ask (the server refuses anyone else: exit 1)
  --json                  {"jobs": [...]}, every job as the server describes it
                          (with its "client", "executor_ref": the Slurm job id, and
                          "deliveries": each destination's state and file counts)
`,
  wait: (program) =>
    `${program} wait: wait until jobs end, without taking their results.

Usage:
  ${program} wait JOB_ID... [options]

Waits for the jobs in the order given and prints one line for each once it has
ended: its final state, when, and its results or the reason it failed. A lost connection is made again, as for a submission.
Ctrl-C stops waiting; the jobs go on.

Exit codes: 0 when every job succeeded; 1 when any failed, was cancelled, expired or
is unknown; 3 when the server stopped accepting this client's key; 5 when the server
could not be reached again within CLIENT_RECONNECT_TIMEOUT.

  --json                  {"jobs": [...]}, each job as it ended
`,
  fetch: (program) =>
    `${program} fetch: download a job's results.

Usage:
  ${program} fetch JOB_ID [--download-dir DIR] [options]

Waits for the job if it is still queued or running (Ctrl-C stops waiting; the job
goes on), then receives its results into DIR/<job_id>/, each checked against its
SHA-256, and prints their paths, one per line. Results stay on the server until
RESULT_RETENTION after the job finished, so a fetch can be repeated: files already
in place and verified are not sent again, a download cut off resumes where it
stopped, and a file that is there but differs is never overwritten (an error says
which). A failed or cancelled job prints its reason and exits 1; so does an expired
or unknown one.

  --download-dir DIR      where results go (default CLIENT_DOWNLOAD_DIR)
  --json                  {"job_id", "status", "result_dir", "files", "skipped"}
`,
  cancel: (program) =>
    `${program} cancel: cancel jobs on the server.

Usage:
  ${program} cancel JOB_ID... [--reason TEXT] [options]

A job still uploading or queued is removed with its inputs; a running job's script
and every process it started are stopped first. Prints each job's final state, one
line per job. The server records the reason and who cancelled it. A job that has
ended already cannot be cancelled: one line says so, and the exit code is 1.

  --reason TEXT           recorded with the job (default "cancelled with recon-client")
  --json                  {"jobs": [...]}, each job as it ended
`,
  logs: (program) =>
    `${program} logs: a job's log, the output of its script.

Usage:
  ${program} logs JOB_ID [--follow] [options]

Prints the log on stdout as the server keeps it (on a terminal, control characters
are shown as ?).

  -f, --follow            keep printing what the script writes until the job ends
                          (Ctrl-C stops following; the job goes on)
`,
  rerun: (program) =>
    `${program} rerun: run a failed job again, without another upload.

Usage:
  ${program} rerun JOB_ID [--recon-options JSON] [--priority P]
             [--detach | --no-download] [options]

The server keeps a failed job's inputs for FAILED_INPUT_RETENTION; rerun starts a new
job from them (the failed one gives them up) with the old options and priority
unless new ones are given, then waits and downloads its results like a submission (Ctrl-C cancels
the new job).

  --recon-options JSON    new options for the script (default: the failed job's)
  --priority P            high, normal or low (default: the failed job's)
  --detach                return once the new job is queued; print its id
  --no-download           wait for the new job's end and print it and where its
                          results go (the server's destinations); fetch nothing
  --download-dir DIR      where results go (default CLIENT_DOWNLOAD_DIR)
  --json                  the new job's results as one JSON document
`,
  redeliver: (program) =>
    `${program} redeliver: send a job's results to the server's destinations again.

Usage:
  ${program} redeliver JOB_ID [--to NAME[,NAME]] [options]

The server sends a succeeded job's DICOM results to a PACS or archive it knows by
name (its DESTINATION_<NAME> settings). Each delivery is retried for a while when the
destination is down; one that gave up, or images deleted at the destination, can be
sent again: every DICOM file of the job is sent once more (a PACS keeps one copy of
each). The results must still be on the server (RESULT_RETENTION). Prints where the
job's results go now, one line per destination; '${program} jobs' shows how it goes.

Refused, in one line from the server (exit code 1): a job that did not succeed or
whose results expired, a destination the server does not have or this client may
not name, a server without destinations.

  --to NAME[,NAME]        only to these destinations, and to them even when the
                          job was not sent there before (default: every
                          destination the job's results went to)
  --json                  {"job_id", "deliveries": [...], "job": {...}}
`,
};

/** `recon-client COMMAND --help`. */
export function commandHelp(command: JobCommand, program: string): string {
  return `${COMMAND_HELP[command](program)}\n${GLOBAL_HELP}\n`;
}
