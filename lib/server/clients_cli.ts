/**
 * `recon-server clients add|list|revoke|rotate`: the client file (lib/server/
 * client_file.ts) from the command line. Reads the server's recon.opts only (a missing
 * one is an error, nothing is created) for CLIENT_KEYS_FILE, KEY_ROTATION_GRACE, the
 * job store's directory (`list`: last seen, jobs; `add`: jobs a name had before) and
 * SHARED_KEY, which is the client `default` and whose key id no client key may share.
 *
 * The edits take effect in a running server without a restart: it re-reads the file
 * within a second of a change. Only `add` and `rotate` print a key, on stdout, as the
 * lines to put in the client's recon.opts; `list` never shows one. Every command
 * refuses a client file the server would refuse (others can write it, or it belongs to
 * neither root nor the owner of recon.opts, who stands for the server's user since the
 * command usually runs as root) and warns of one others can read.
 *
 * @module
 */
import { parseCommandLine, warningText } from "../cli/entry.ts";
import { loadServerOpts, sharedKeyMaterial } from "../cli/support.ts";
import { isPlaceholderKey } from "../crypto/keys.ts";
import { errorMessage, ExitCode, UsageError } from "../errors.ts";
import type { LoadedOpts } from "../opts/mod.ts";
import { parseDuration } from "../opts/values.ts";
import { escapeControls } from "../printable.ts";
import { type ClientActivity, readClientActivity } from "./client_activity.ts";
import {
  addClient,
  type ClientFileCheck,
  clientKeysPath,
  readClientFile,
  revokeClient,
  rotateClient,
  type Rotation,
} from "./client_file.ts";
import {
  checkDestinations,
  checkFromPatterns,
  ClientFileError,
  type ClientKey,
  clientNameProblem,
  DEFAULT_CLIENT,
  formatTime,
} from "./client_keys.ts";
import { listEntries, listText } from "./clients_list.ts";
import { stateDirOf } from "./server.ts";

/** What the entrypoint lends the clients command. */
export interface ClientsContext {
  program: string;
  writeStdout: (text: string) => void;
  writeStderr: (text: string) => void;
  /** The time of an edit; default now. */
  now?: () => Date;
}

/** `recon-server clients --help`. */
export function clientsHelp(program: string): string {
  return `${program} clients: the client file, one key per client (scanner) like OpenSSH's
authorized_keys, so that each scanner has its own key, can be revoked alone, and
the jobs and the audit log name who sent what. A running ${program} reads the file
again within a second of a change; no restart.

Usage:
  ${program} clients add NAME [--admin] [--high-priority] [--from LIST]
                       [--deliver LIST] [--opts PATH]
  ${program} clients list [--json] [--opts PATH]
  ${program} clients revoke NAME [--opts PATH]
  ${program} clients rotate NAME [--grace DURATION] [--opts PATH]

Commands:
  add NAME         make a key for client NAME (1 to 63 characters: a-z, 0-9, '.',
                   '_', '-'), add it to the client file and print the lines for
                   that client's recon.opts (its SHARED_KEY). A name owns its jobs:
                   a NAME revoked before gets its old jobs back (add warns)
  list             every client: NAME, KEY ID, CREATED, LAST SEEN, JOBS, FLAGS, and
                   a line per old key that still works; never a key. LAST SEEN
                   names the key when it was not the current one
  revoke NAME      remove every key of NAME: a running server refuses it and closes
                   its sessions within a second; its queued jobs stay (an admin
                   client can cancel them)
  rotate NAME      a new key for NAME with the same flags, printed like add's; the
                   old one keeps working for KEY_ROTATION_GRACE (default 7d), so
                   its machines can be given the new key one by one

Options of add:
  --admin          may see, follow, fetch and cancel every client's jobs
  --high-priority  may submit with --priority high
  --from LIST      comma-separated addresses or CIDR blocks (10.0.0.5,10.0.1.0/24)
                   the key may connect from; default any (TRUSTEDIPS still applies)
  --deliver LIST   comma-separated destinations it may deliver to (PACS,RESEARCH)

Options of rotate:
  --grace DURATION how long the old keys keep working instead of KEY_ROTATION_GRACE:
                   90s, 30m, 12h, 7d; 0 stops them at once (a leaked key). Every
                   older key still retiring is cut to it too

Other options:
  --json           list: a JSON array, one object per client
  --opts PATH      the server's recon.opts (default ./recon.opts). CLIENT_KEYS_FILE
                   there names the client file (default recon-clients beside it)
  -h, --help       this help

SHARED_KEY in the server's recon.opts, while it is set, is the client "default" with
every right, as before clients existed; list shows it. To move a site to per-scanner
keys: add a client per scanner, put each one's SHARED_KEY in its recon.opts, then
remove SHARED_KEY from the server's recon.opts.

Run it as root or as the server's user: the file keeps its owner, group and mode
(a new one gets mode 0600 and the owner and group of recon.opts). A file the server
refuses is refused here too: one others can write, or owned by neither root nor the
owner of recon.opts. A malformed file is refused, naming its line; fix it by hand
first (a running server keeps the keys it read before meanwhile).

Exit codes: 0 done; 2 usage or configuration error (unknown or existing client,
malformed or unsafe client file, recon.opts missing).

Examples:
  ${program} clients add mr1 --high-priority --opts /etc/recon/recon.opts
  ${program} clients rotate mr1 --opts /etc/recon/recon.opts
  ${program} clients rotate mr1 --grace 0 --opts /etc/recon/recon.opts
  ${program} clients list --json --opts /etc/recon/recon.opts
`;
}

const COMMANDS = ["add", "list", "revoke", "rotate"];

/** Run `clients …` (the arguments after `clients`); returns the exit code. */
export async function clientsMain(argv: string[], context: ClientsContext): Promise<number> {
  const { program } = context;
  const command = `${program} clients`;
  const { values, positionals } = parseCommandLine(program, argv, {
    opts: { type: "string" },
    admin: { type: "boolean" },
    "high-priority": { type: "boolean" },
    from: { type: "string" },
    deliver: { type: "string" },
    grace: { type: "string" },
    json: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  }, { command });
  if (values.help) {
    context.writeStdout(clientsHelp(program));
    return ExitCode.OK;
  }
  const hint = `see '${command} --help'`;
  const [verb, ...names] = positionals;
  if (verb === undefined || !COMMANDS.includes(verb)) {
    throw new UsageError(
      verb === undefined
        ? `clients needs a command: ${COMMANDS.join(", ")}`
        : `unknown clients command ${JSON.stringify(verb)} (known: ${COMMANDS.join(", ")})`,
      { hint },
    );
  }
  const wanted = verb === "list" ? 0 : 1;
  if (names.length !== wanted) {
    throw new UsageError(
      wanted === 0 ? `clients list takes no NAME` : `clients ${verb} takes one NAME`,
      { hint: `${command} ${verb}${wanted === 0 ? " [--json]" : " NAME"} [--opts PATH]` },
    );
  }
  const addOnly = ["admin", "high-priority", "from", "deliver"] as const;
  for (const flag of addOnly) {
    if (values[flag] !== undefined && verb !== "add") {
      throw new UsageError(`--${flag} only goes with 'clients add'`, { hint });
    }
  }
  if (values.json && verb !== "list") {
    throw new UsageError("--json only goes with 'clients list'", { hint });
  }
  if (values.grace !== undefined && verb !== "rotate") {
    throw new UsageError("--grace only goes with 'clients rotate'", { hint });
  }
  const name = names[0];
  if (name !== undefined && name !== DEFAULT_CLIENT) {
    const problem = clientNameProblem(name);
    if (problem) throw new UsageError(problem, { hint });
  }
  // In the options' own names (the file's are from= and deliver=).
  const from = values.from === undefined
    ? undefined
    : usage(() => checkFromPatterns(list(values.from!), "--from"));
  const deliver = values.deliver === undefined
    ? undefined
    : usage(() => checkDestinations(list(values.deliver!), "--deliver"));
  const grace = values.grace === undefined ? undefined : parseGrace(values.grace);

  const loaded = await loadServerOpts(values.opts ?? "recon.opts");
  context.writeStderr(warningText(program, loaded.warnings));
  const site = await siteOf(loaded);
  const now = context.now?.() ?? new Date();
  const optsOwner = await ownerOf(loaded.path);
  const check: ClientFileCheck = {
    user: { uid: optsOwner.uid, gid: optsOwner.gid, name: "the owner of recon.opts" },
    warn: (text) => context.writeStderr(warningText(program, [text])),
  };
  const edit = { now, sharedKeyId: site.sharedKeyId, check };
  try {
    switch (verb) {
      case "add": {
        if (name === DEFAULT_CLIENT) {
          throw new UsageError(clientNameProblem(name)!, { hint: "pick another name" });
        }
        const key = await addClient(site.file, {
          ...edit,
          name,
          admin: values.admin,
          highPriority: values["high-priority"],
          from,
          deliver,
          newFileOwner: optsOwner,
        });
        context.writeStdout(optsLines(key, loaded));
        context.writeStderr(
          `${program}: wrote ${site.file} (client ${name} added); a running ${program} ` +
            "picks it up within a second\n",
        );
        context.writeStderr(warningText(program, await earlierJobs(name, loaded)));
        return ExitCode.OK;
      }
      case "rotate": {
        const seconds = grace ?? loaded.config.KEY_ROTATION_GRACE;
        const rotation = await rotateClient(site.file, name, { ...edit, graceSeconds: seconds });
        const graceText = grace === undefined
          ? `KEY_ROTATION_GRACE ${durationText(seconds)}`
          : `--grace ${durationText(seconds)}`;
        context.writeStdout(optsLines(rotation.current, loaded) + oldKeyLines(rotation, graceText));
        context.writeStderr(
          `${program}: wrote ${site.file} (client ${name}: new key id ${rotation.current.keyId}); ` +
            `a running ${program} picks it up within a second\n`,
        );
        return ExitCode.OK;
      }
      case "revoke": {
        const removed = await revokeClient(site.file, name, edit);
        const ids = removed.map((key) =>
          `key id ${key.keyId} (${
            key.expires === undefined ? "current" : `retiring, until ${key.expires}`
          })`
        );
        context.writeStdout(`revoked client ${name}: removed ${ids.join(", ")}\n`);
        context.writeStderr(
          `${program}: wrote ${site.file}; a running ${program} refuses ${name} and closes its ` +
            "sessions within a second (its queued jobs stay)\n",
        );
        return ExitCode.OK;
      }
      default: {
        const keys = await readClientFile(site.file, { sharedKeyId: site.sharedKeyId, check });
        const activity = await readClientActivity(stateDirOf(loaded.config));
        const entries = listEntries(keys, site.sharedKeyId, activity, now);
        context.writeStdout(
          values.json ? `${JSON.stringify(entries, null, 2)}\n` : listText(entries),
        );
        return ExitCode.OK;
      }
    }
  } catch (error) {
    if (!(error instanceof ClientFileError)) throw error;
    // Even an emergency revoke waits for the hand fix: an edit never guesses at a line.
    throw new ClientFileError(error.message, {
      line: error.line,
      hint: `fix or remove line ${error.line} by hand, then run this again; until then a ` +
        `running ${program} keeps the keys it last read`,
      cause: error,
    });
  }
}

/** `--grace`: a duration in seconds. */
function parseGrace(text: string): number {
  const seconds = parseDuration(text);
  if (seconds === undefined) {
    throw new UsageError(
      `--grace needs a duration like 90s, 30m, 12h, 7d or 0, got "${escapeControls(text)}"`,
      { hint: "0 stops the old keys at once" },
    );
  }
  return seconds;
}

/** A TypeError of a check as a UsageError. */
function usage<T>(check: () => T): T {
  try {
    return check();
  } catch (error) {
    if (error instanceof TypeError) throw new UsageError(error.message);
    throw error;
  }
}

/**
 * A warning when the job store holds jobs of `name` from before this `add`: the client
 * owns its jobs by name, so a new machine given a revoked machine's name could list and
 * fetch that machine's jobs and results.
 */
async function earlierJobs(name: string, loaded: LoadedOpts): Promise<string[]> {
  let known: ClientActivity | undefined;
  try {
    known = (await readClientActivity(stateDirOf(loaded.config))).get(name);
  } catch (error) {
    return [`could not look for earlier jobs of ${name} in the job store: ${errorMessage(error)}`];
  }
  if (!known || known.jobs === 0) return [];
  const seen = known.lastSeenAt === undefined
    ? ""
    : ` (last seen ${formatTime(new Date(known.lastSeenAt))}${
      known.lastAddress ? ` from ${known.lastAddress}` : ""
    }${known.lastKeyId ? ` with key id ${known.lastKeyId}` : ""})`;
  const jobs = `${known.jobs} job${known.jobs === 1 ? "" : "s"}`;
  return [
    `${name} had ${jobs} in the job store${seen}; the new key owns them and can list, fetch ` +
    `and cancel them: for a new machine, revoke ${name} and pick another name`,
  ];
}

/** What `rotate` prints after the key: until when each old key of the client works. */
function oldKeyLines(rotation: Rotation, graceText: string): string {
  const { previous, retiring, stopped, shortened } = rotation;
  const line = (key: ClientKey) => {
    const which = key.keyId === previous.keyId ? "old" : "older";
    const had = shortened.get(key.keyId);
    const works = stopped.includes(key) ? "no longer works" : `works until ${key.expires}`;
    const why = key.keyId === previous.keyId
      ? ` (${graceText})`
      : had === undefined
      ? ""
      : ` (${graceText}; it had until ${had})`;
    return `# the ${which} key (key id ${key.keyId}) ${works}${why}\n`;
  };
  const others = [...retiring, ...stopped].filter((key) => key.keyId !== previous.keyId);
  return [previous, ...others].map(line).join("");
}

/** The client file and SHARED_KEY's key id (when recon.opts sets one). */
async function siteOf(loaded: LoadedOpts): Promise<{ file: string; sharedKeyId?: string }> {
  const file = clientKeysPath(loaded.config, loaded.path);
  if (isPlaceholderKey(loaded.config.SHARED_KEY)) return { file };
  return { file, sharedKeyId: (await sharedKeyMaterial(loaded)).id };
}

/** Owner and group of recon.opts, given to a new client file. */
async function ownerOf(file: string): Promise<{ uid: number; gid: number; mode: number }> {
  const stat = await Deno.stat(file);
  return { uid: stat.uid ?? 0, gid: stat.gid ?? 0, mode: (stat.mode ?? 0o600) & 0o640 };
}

/** Seconds in the largest unit that divides them: 604800 → `7d`, 90 → `90s`. */
function durationText(seconds: number): string {
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]] as const) {
    if (seconds >= size && seconds % size === 0) return `${seconds / size}${unit}`;
  }
  return `${seconds}s`;
}

/** A comma-separated command-line list, entries trimmed. */
function list(text: string): string[] {
  return text === "" ? [] : text.split(",").map((entry) => entry.trim());
}

/** What `add` and `rotate` print: the lines for the client's recon.opts. */
function optsLines(key: ClientKey, loaded: LoadedOpts): string {
  const host = Deno.hostname();
  const listen = loaded.config.SERVER_HOST;
  // Listening on every address: the client needs one of them, the host name may do. Any
  // other address (loopback too, for a client on the box or through a tunnel) as is.
  const serverHost = ["", "0.0.0.0", "::", "[::]"].includes(listen) ? host : listen;
  return `# recon.opts lines for client ${key.name} (key id ${key.keyId}), made ${key.created} on ${host}\n` +
    `SHARED_KEY = ${key.key}\n` +
    "# and, unless its recon.opts has them already, where this server listens:\n" +
    `# SERVER_HOST = ${serverHost}\n` +
    `# SERVER_PORT = ${loaded.config.SERVER_PORT}\n`;
}
