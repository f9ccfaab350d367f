/**
 * `recon-server clients add|list|revoke|rotate`: the client file (lib/server/
 * client_file.ts) from the command line. Reads the server's recon.opts only (a missing
 * one is an error, nothing is created) for CLIENT_KEYS_FILE, KEY_ROTATION_GRACE, the
 * job store's directory (`list`: last seen, jobs) and SHARED_KEY, which is the client
 * `default` and whose key id no client key may share.
 *
 * The edits take effect in a running server without a restart: it re-reads the file
 * within a second of a change. Only `add` and `rotate` print a key, on stdout, as the
 * lines to put in the client's recon.opts; `list` never shows one.
 *
 * @module
 */
import { parseCommandLine, warningText } from "../cli/entry.ts";
import { sharedKeyMaterial } from "../cli/support.ts";
import { generateKey, isPlaceholderKey } from "../crypto/keys.ts";
import { ExitCode, UsageError } from "../errors.ts";
import { type LoadedOpts, loadOpts } from "../opts/mod.ts";
import { type ClientActivity, readClientActivity } from "./client_activity.ts";
import {
  addClient,
  clientKeysPath,
  readClientFile,
  revokeClient,
  rotateClient,
} from "./client_file.ts";
import {
  type ClientKey,
  clientNameProblem,
  DEFAULT_CLIENT,
  formatClientFlags,
  formatTime,
} from "./client_keys.ts";
import { stateDirOf } from "./server.ts";

/** What the entrypoint lends the clients command. */
export interface ClientsContext {
  program: string;
  writeStdout: (text: string) => void;
  writeStderr: (text: string) => void;
  /** The time of an edit; default now. */
  now?: () => Date;
}

/** One client in `clients list --json`. Never a key. */
export interface ClientListEntry {
  name: string;
  /** The current key's id. */
  key_id: string;
  /** When the current key was made; null for `default` (SHARED_KEY). */
  created: string | null;
  /** Its last completed handshake (ISO), if any. */
  last_seen?: string;
  last_address?: string;
  /** Jobs of it that the job store holds. */
  jobs: number;
  admin: boolean;
  high_priority: boolean;
  from: string[];
  deliver: string[];
  /** Its old keys that still work, each until `expires`. */
  retiring: { key_id: string; expires: string }[];
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
  ${program} clients rotate NAME [--opts PATH]

Commands:
  add NAME         make a key for client NAME (1 to 63 characters: a-z, 0-9, '.',
                   '_', '-'), add it to the client file and print the lines for
                   that client's recon.opts (its SHARED_KEY)
  list             every client: NAME, KEY ID, CREATED, LAST SEEN, JOBS, FLAGS, and
                   a line per old key that still works; never a key
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
(a new one gets mode 0600 and the owner and group of recon.opts). A malformed file
is refused, naming its line; fix it by hand first.

Exit codes: 0 done; 2 usage or configuration error (unknown or existing client,
malformed client file, recon.opts missing).

Examples:
  ${program} clients add mr1 --high-priority --opts /etc/recon/recon.opts
  ${program} clients rotate mr1 --opts /etc/recon/recon.opts
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
  const name = names[0];
  if (name !== undefined && name !== DEFAULT_CLIENT) {
    const problem = clientNameProblem(name);
    if (problem) throw new UsageError(problem, { hint });
  }

  const loaded = await loadOpts(values.opts ?? "recon.opts", {
    role: "server",
    createIfMissing: false,
    allowUnknownOptions: true,
    generateKey,
  });
  context.writeStderr(warningText(program, loaded.warnings));
  const site = await siteOf(loaded);
  const now = context.now?.() ?? new Date();
  switch (verb) {
    case "add": {
      if (name === DEFAULT_CLIENT) {
        throw new UsageError(clientNameProblem(name)!, { hint: "pick another name" });
      }
      const key = await addClient(site.file, {
        name,
        admin: values.admin,
        highPriority: values["high-priority"],
        from: values.from === undefined ? undefined : list(values.from),
        deliver: values.deliver === undefined ? undefined : list(values.deliver),
        now,
        sharedKeyId: site.sharedKeyId,
        newFileOwner: await ownerOf(loaded.path),
      });
      context.writeStdout(optsLines(key, loaded));
      context.writeStderr(
        `${program}: wrote ${site.file} (client ${name} added); a running ${program} ` +
          "picks it up within a second\n",
      );
      return ExitCode.OK;
    }
    case "rotate": {
      const grace = loaded.config.KEY_ROTATION_GRACE;
      const { current, previous, retiring } = await rotateClient(site.file, name, {
        graceSeconds: grace,
        now,
        sharedKeyId: site.sharedKeyId,
      });
      const graceText = `KEY_ROTATION_GRACE ${durationText(grace)}`;
      const works = retiring.map((key) =>
        `# the ${key.keyId === previous.keyId ? "old" : "older"} key (key id ${key.keyId}) ` +
        `works until ${key.expires}${key.keyId === previous.keyId ? ` (${graceText})` : ""}\n`
      );
      if (!retiring.some((key) => key.keyId === previous.keyId)) {
        works.unshift(`# the old key (key id ${previous.keyId}) no longer works (${graceText})\n`);
      }
      context.writeStdout(optsLines(current, loaded) + works.join(""));
      context.writeStderr(
        `${program}: wrote ${site.file} (client ${name}: new key id ${current.keyId}); ` +
          `a running ${program} picks it up within a second\n`,
      );
      return ExitCode.OK;
    }
    case "revoke": {
      const removed = await revokeClient(site.file, name, {
        now,
        sharedKeyId: site.sharedKeyId,
      });
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
      const keys = await readClientFile(site.file, { sharedKeyId: site.sharedKeyId });
      const activity = await readClientActivity(stateDirOf(loaded.config));
      const entries = listEntries(keys, site.sharedKeyId, activity, now);
      context.writeStdout(
        values.json ? `${JSON.stringify(entries, null, 2)}\n` : listText(entries),
      );
      return ExitCode.OK;
    }
  }
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
  // Listening on every address (or only on loopback): the client needs a name.
  const anyOrLoopback = ["", "0.0.0.0", "::", "[::]", "localhost", "127.0.0.1", "::1"];
  const serverHost = anyOrLoopback.includes(listen) ? host : listen;
  return `# recon.opts lines for client ${key.name} (key id ${key.keyId}), made ${key.created} on ${host}\n` +
    `SHARED_KEY = ${key.key}\n` +
    "# and, unless its recon.opts has them already, where this server listens:\n" +
    `# SERVER_HOST = ${serverHost}\n` +
    `# SERVER_PORT = ${loaded.config.SERVER_PORT}\n`;
}

/** `list`: `default` first (when SHARED_KEY is set), then the file's clients in order. */
function listEntries(
  keys: readonly ClientKey[],
  sharedKeyId: string | undefined,
  activity: ReadonlyMap<string, ClientActivity>,
  now: Date,
): ClientListEntry[] {
  const entries: ClientListEntry[] = [];
  const seen = (name: string) => {
    const known = activity.get(name);
    return {
      ...(known?.lastSeenAt === undefined
        ? {}
        : { last_seen: formatTime(new Date(known.lastSeenAt)) }),
      ...(known?.lastAddress === undefined ? {} : { last_address: known.lastAddress }),
      jobs: known?.jobs ?? 0,
    };
  };
  if (sharedKeyId !== undefined) {
    entries.push({
      name: DEFAULT_CLIENT,
      key_id: sharedKeyId,
      created: null,
      ...seen(DEFAULT_CLIENT),
      admin: true,
      high_priority: true,
      from: [],
      deliver: [],
      retiring: [],
    });
  }
  for (const key of keys) {
    if (key.expires !== undefined) continue;
    entries.push({
      name: key.name,
      key_id: key.keyId,
      created: key.created,
      ...seen(key.name),
      admin: key.admin,
      high_priority: key.highPriority,
      from: key.from,
      deliver: key.deliver,
      retiring: keys
        .filter((old) =>
          old.name === key.name && old.expires !== undefined &&
          Date.parse(old.expires) > now.getTime()
        )
        .map((old) => ({ key_id: old.keyId, expires: old.expires! })),
    });
  }
  return entries;
}

/** `list` as a table, a line under a client per old key that still works. */
function listText(entries: readonly ClientListEntry[]): string {
  if (entries.length === 0) {
    return "no clients: SHARED_KEY is not set and the client file has none " +
      "(add one with 'recon-server clients add NAME')\n";
  }
  const rows: string[][] = [];
  for (const entry of entries) {
    const lastSeen = entry.last_seen === undefined
      ? "never"
      : `${entry.last_seen}${entry.last_address ? ` from ${entry.last_address}` : ""}`;
    const flags = formatClientFlags({
      admin: entry.admin,
      highPriority: entry.high_priority,
      from: entry.from,
      deliver: entry.deliver,
    });
    rows.push([
      entry.name,
      entry.key_id,
      entry.created ?? "-",
      lastSeen,
      String(entry.jobs),
      flags || "-",
    ]);
    for (const old of entry.retiring) {
      rows.push(["", old.key_id, `expires ${old.expires}`, "", "", ""]);
    }
  }
  return table(["NAME", "KEY ID", "CREATED", "LAST SEEN", "JOBS", "FLAGS"], rows);
}

/** Rows of cells as a table whose columns line up, with no trailing spaces. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [header, ...rows]
    .map((row) => row.map((cell, i) => cell.padEnd(widths[i])).join("  ").trimEnd() + "\n")
    .join("");
}
