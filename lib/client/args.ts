/**
 * recon-client's command line (README "Using it"; `recon-client --help`): the
 * submission and query flags, and the job commands `jobs`, `wait`, `fetch`, `cancel`,
 * `logs`, `rerun` and `redeliver`, each with its own options and `--help`. Global options may come
 * before a command as well as after it (`recon-client --opts X fetch ID`). `watch`
 * parses its own (lib/watch/cli.ts). No I/O: argv in, a {@link Command} out, or a
 * UsageError.
 *
 * @module
 */
import * as path from "node:path";
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import { nearestFlag, parseCommandLine, splitCommand } from "../cli/entry.ts";
import { UsageError } from "../errors.ts";
import {
  DESTINATION_NAME_PATTERN,
  JOB_ID_PATTERN,
  JOB_STATES,
  type JobState,
  MAX_DESTINATIONS,
  PRIORITIES,
  type Priority,
} from "../wire/protocol.ts";
import { commandHelp, JOB_COMMANDS, type JobCommand, mainHelp } from "./help.ts";

export { JOB_COMMANDS, type JobCommand };

/** Options every mode that talks to a server takes. */
export interface GlobalArgs {
  /** recon.opts, as given (default ./recon.opts). */
  opts: string;
  /** True when `--opts` was given (a later command line repeats it). */
  optsGiven: boolean;
  host?: string;
  port?: string;
  json: boolean;
  quiet: boolean;
  debug: boolean;
  allowUnknownOptions: boolean;
}

/** Submitting (`--files`, `--directory`, or CLIENT_DEFAULT_PFILE_PATH). */
export interface SubmitArgs {
  kind: "submit";
  global: GlobalArgs;
  files: string[];
  filesGiven: boolean;
  directory?: string;
  pattern: string;
  reconOptions?: string;
  downloadDir?: string;
  priority?: Priority;
  detach: boolean;
  /** `--deliver`: destinations on the server the results go to as well (upper case). */
  deliver?: string[];
  /** `--no-download`: follow the job to its end, fetch no results. */
  noDownload: boolean;
}

/** What the command line asks for. */
export type Command =
  | { kind: "help"; text: string }
  | { kind: "version" }
  | { kind: "keygen" }
  | { kind: "show-config"; global: GlobalArgs }
  | { kind: "status"; global: GlobalArgs }
  | { kind: "queue"; global: GlobalArgs }
  | SubmitArgs
  | { kind: "jobs"; global: GlobalArgs; state?: JobState; allClients: boolean }
  | { kind: "wait"; global: GlobalArgs; jobIds: string[] }
  | { kind: "fetch"; global: GlobalArgs; jobId: string; downloadDir?: string }
  | { kind: "cancel"; global: GlobalArgs; jobIds: string[]; reason?: string }
  | { kind: "logs"; global: GlobalArgs; jobId: string; follow: boolean }
  | {
    kind: "rerun";
    global: GlobalArgs;
    jobId: string;
    reconOptions?: string;
    priority?: Priority;
    detach: boolean;
    downloadDir?: string;
    noDownload: boolean;
  }
  | { kind: "redeliver"; global: GlobalArgs; jobId: string; to?: string[] };

/**
 * Options that may also come before the `watch` command (`recon-client --opts X watch
 * --status`), as with git or kubectl; true when the option takes a value.
 */
export const GLOBAL_OPTIONS: Readonly<Record<string, boolean>> = {
  opts: true,
  host: true,
  port: true,
  json: false,
  debug: false,
  "allow-unknown-options": false,
};

/** Before a job command `--quiet` may come too (watch has no use for it). */
const JOB_GLOBAL_OPTIONS: Readonly<Record<string, boolean>> = { ...GLOBAL_OPTIONS, quiet: false };

const GLOBAL_FLAGS = {
  opts: { type: "string" },
  host: { type: "string" },
  port: { type: "string" },
  json: { type: "boolean" },
  quiet: { type: "boolean" },
  debug: { type: "boolean" },
  "allow-unknown-options": { type: "boolean" },
  help: { type: "boolean", short: "h" },
} as const;

/** The command line of a submission and the queries (no command). */
const CLIENT_OPTIONS = {
  ...GLOBAL_FLAGS,
  files: { type: "string", multiple: true },
  directory: { type: "string" },
  pattern: { type: "string" },
  "recon-options": { type: "string" },
  priority: { type: "string" },
  detach: { type: "boolean" },
  deliver: { type: "string", multiple: true },
  "no-download": { type: "boolean" },
  "server-status": { type: "boolean" },
  "view-queue": { type: "boolean" },
  "download-dir": { type: "string" },
  "show-config": { type: "boolean" },
  version: { type: "boolean", short: "V" },
} as const;

/** Each job command's own options, besides the global ones. */
const COMMAND_OPTIONS = {
  jobs: { state: { type: "string" }, "all-clients": { type: "boolean" } },
  wait: {},
  fetch: { "download-dir": { type: "string" } },
  cancel: { reason: { type: "string" } },
  logs: { follow: { type: "boolean", short: "f" } },
  rerun: {
    "recon-options": { type: "string" },
    priority: { type: "string" },
    detach: { type: "boolean" },
    "download-dir": { type: "string" },
    "no-download": { type: "boolean" },
  },
  redeliver: { to: { type: "string", multiple: true } },
} as const satisfies Record<JobCommand, ParseArgsOptionsConfig>;

function globalsFrom(values: Record<string, unknown>): GlobalArgs {
  return {
    opts: (values.opts as string | undefined) ?? "recon.opts",
    optsGiven: values.opts !== undefined,
    host: values.host as string | undefined,
    port: values.port as string | undefined,
    json: (values.json as boolean | undefined) ?? false,
    quiet: (values.quiet as boolean | undefined) ?? false,
    debug: (values.debug as boolean | undefined) ?? false,
    allowUnknownOptions: (values["allow-unknown-options"] as boolean | undefined) ?? false,
  };
}

/**
 * A job id as typed (any case; the server's are lower-case UUIDs), or a UsageError that
 * says what one looks like and where to find them.
 */
export function parseJobId(text: string, program: string): string {
  const id = text.trim().toLowerCase();
  if (!JOB_ID_PATTERN.test(id)) {
    throw new UsageError(`"${text}" is not a job id`, {
      hint: `a job id is a UUID like 0b7f0f2e-3c1a-4b5e-9d2f-6a7b8c9d0e1f; ` +
        `'${program} jobs' lists the server's jobs`,
    });
  }
  return id;
}

/** `--priority`: high, normal or low. */
export function parsePriority(text: string | undefined): Priority | undefined {
  if (text === undefined) return undefined;
  const value = text.toLowerCase();
  if (!(PRIORITIES as readonly string[]).includes(value)) {
    throw new UsageError(`--priority must be one of ${PRIORITIES.join(", ")}, got "${text}"`, {
      hint: "high runs first; low runs only when no normal or high job waits",
    });
  }
  return value as Priority;
}

/**
 * `--deliver` / `--to`: destination names, comma-separated and/or repeated
 * (`--deliver PACS,RESEARCH`, `--deliver PACS --deliver RESEARCH`), upper case, each
 * once; undefined when the option was not given.
 */
export function parseDestinations(
  texts: readonly string[] | undefined,
  option: string,
): string[] | undefined {
  if (texts === undefined) return undefined;
  const names = texts.flatMap((text) => text.split(",")).map((name) => name.trim());
  const bad = names.find((name) => !DESTINATION_NAME_PATTERN.test(name));
  if (bad !== undefined) {
    throw new UsageError(
      bad === ""
        ? `${option} needs destination names, e.g. ${option} PACS,RESEARCH`
        : `${option}: "${bad}" is not a destination name (1 to 32 letters and digits)`,
      { hint: "the server's destinations are in 'recon-client --server-status'" },
    );
  }
  const unique = [...new Set(names.map((name) => name.toUpperCase()))];
  if (unique.length > MAX_DESTINATIONS) {
    throw new UsageError(
      `${option} names ${unique.length} destinations; at most ${MAX_DESTINATIONS}`,
    );
  }
  return unique;
}

/** `--no-download`, which neither `--detach` nor `--download-dir` goes with. */
function checkNoDownload(values: Record<string, unknown>): boolean {
  const noDownload = values["no-download"] === true;
  if (noDownload && values.detach) {
    throw new UsageError("use either --detach or --no-download, not both", {
      hint: "--detach returns once the job is queued; --no-download waits for its end",
    });
  }
  if (noDownload && values["download-dir"] !== undefined) {
    throw new UsageError("--download-dir has no use with --no-download: nothing is downloaded");
  }
  return noDownload;
}

/** `--state`: one of the job states, with a guess for a slip. */
export function parseState(text: string | undefined): JobState | undefined {
  if (text === undefined) return undefined;
  const value = text.toLowerCase();
  if (!(JOB_STATES as readonly string[]).includes(value)) {
    const nearest = nearestFlag(value, JOB_STATES);
    throw new UsageError(
      `--state must be one of ${JOB_STATES.join(", ")}, got "${text}"` +
        (nearest ? ` (did you mean ${nearest}?)` : ""),
    );
  }
  return value as JobState;
}

/**
 * The command that is misplaced, after an option that is not global: the first
 * argument that is neither an option nor its value is a command, and no --files
 * before it makes it a file name.
 */
function misplacedCommand(argv: string[]): string | undefined {
  const { tokens } = parseArgs({
    args: argv,
    options: CLIENT_OPTIONS,
    allowPositionals: true,
    strict: false,
    tokens: true,
  });
  const first = tokens.find((token) => token.kind === "positional");
  if (!first || tokens.some((token) => token.kind === "option" && token.name === "files")) {
    return undefined;
  }
  const value = first.value;
  return value === "watch" || (JOB_COMMANDS as readonly string[]).includes(value)
    ? value
    : undefined;
}

/** Parse everything but `watch` (which client.ts hands to lib/watch/cli.ts first). */
export function parseClientArgs(argv: string[], program: string): Command {
  const split = splitCommand(argv, JOB_COMMANDS, JOB_GLOBAL_OPTIONS);
  if (split.command !== undefined) {
    return parseJobCommand(split.command as JobCommand, split.argv, program);
  }
  const misplaced = misplacedCommand(argv);
  if (misplaced !== undefined) {
    const globals = misplaced === "watch" ? GLOBAL_OPTIONS : JOB_GLOBAL_OPTIONS;
    throw new UsageError(`"${misplaced}" must come first, or after global options only`, {
      hint: `global options are ${
        Object.keys(globals).map((name) => `--${name}`).join(", ")
      }; the rest go after "${misplaced}" (see '${program} ${misplaced} --help')`,
    });
  }
  return parseMain(argv, program);
}

function parseMain(argv: string[], program: string): Command {
  const { values, positionals } = parseCommandLine(program, argv, CLIENT_OPTIONS);
  if (values.help) return { kind: "help", text: mainHelp(program) };
  if (values.version) return { kind: "version" };
  const files = [...(values.files ?? [])];
  if (files.length > 0) files.push(...positionals);
  else if (positionals[0] === "keygen" && positionals.length === 1) return { kind: "keygen" };
  else if (positionals.length > 0) {
    throw new UsageError(`unexpected argument "${positionals[0]}"`, {
      hint: `input files go after --files; see '${program} --help'`,
    });
  }
  const global = globalsFrom(values);
  const submitting = files.length > 0 || values.directory !== undefined;
  const modes = [submitting, values["server-status"], values["view-queue"]].filter(Boolean);
  if (modes.length > 1) {
    throw new UsageError("choose one of --files/--directory, --server-status, --view-queue");
  }
  if (files.length > 0 && values.directory !== undefined) {
    throw new UsageError("use either --files or --directory, not both");
  }
  if (values.pattern !== undefined && values.directory === undefined) {
    throw new UsageError("--pattern needs --directory");
  }
  const submitOnly = (["priority", "detach", "recon-options", "deliver", "no-download"] as const)
    .find((name) => values[name] !== undefined);
  if (values["show-config"]) return { kind: "show-config", global };
  if (values["server-status"] || values["view-queue"]) {
    if (submitOnly) throw new UsageError(`--${submitOnly} goes with submitting a job`);
    return { kind: values["server-status"] ? "status" : "queue", global };
  }
  const noDownload = checkNoDownload(values);
  return {
    kind: "submit",
    global,
    files,
    filesGiven: files.length > 0,
    directory: values.directory,
    pattern: values.pattern ?? "*",
    reconOptions: values["recon-options"],
    downloadDir: values["download-dir"],
    priority: parsePriority(values.priority),
    detach: values.detach ?? false,
    deliver: parseDestinations(values.deliver, "--deliver"),
    noDownload,
  };
}

function parseJobCommand(name: JobCommand, argv: string[], program: string): Command {
  const { values, positionals } = parseCommandLine(program, argv, {
    ...GLOBAL_FLAGS,
    ...COMMAND_OPTIONS[name],
  }, { command: `${program} ${name}` }) as {
    values: Record<string, string | boolean | string[] | undefined>;
    positionals: string[];
  };
  if (values.help) return { kind: "help", text: commandHelp(name, program) };
  const global = globalsFrom(values);
  const ids = positionals.map((text) => parseJobId(text, program));
  const one = (): string => {
    if (ids.length !== 1) {
      throw new UsageError(
        ids.length === 0 ? `${name} needs a job id` : `${name} takes one job id`,
        { hint: `see '${program} ${name} --help'` },
      );
    }
    return ids[0];
  };
  const some = (): string[] => {
    if (ids.length === 0) {
      throw new UsageError(`${name} needs at least one job id`, {
        hint: `see '${program} ${name} --help'`,
      });
    }
    return [...new Set(ids)];
  };
  const text = (key: string) => values[key] as string | undefined;
  switch (name) {
    case "jobs":
      if (ids.length > 0) {
        throw new UsageError(`unexpected argument "${positionals[0]}"`, {
          hint: `'${program} jobs' lists every job; --state narrows it`,
        });
      }
      return {
        kind: "jobs",
        global,
        state: parseState(text("state")),
        allClients: values["all-clients"] === true,
      };
    case "wait":
      return { kind: "wait", global, jobIds: some() };
    case "fetch":
      return { kind: "fetch", global, jobId: one(), downloadDir: text("download-dir") };
    case "cancel":
      return { kind: "cancel", global, jobIds: some(), reason: text("reason") };
    case "logs":
      return { kind: "logs", global, jobId: one(), follow: values.follow === true };
    case "rerun":
      return {
        kind: "rerun",
        global,
        jobId: one(),
        reconOptions: text("recon-options"),
        priority: parsePriority(text("priority")),
        detach: values.detach === true,
        downloadDir: text("download-dir"),
        noDownload: checkNoDownload(values),
      };
    case "redeliver":
      return {
        kind: "redeliver",
        global,
        jobId: one(),
        to: parseDestinations(values.to as string[] | undefined, "--to"),
      };
  }
}

/** `word` quoted for a POSIX shell when it needs it. */
export function shellQuote(word: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/**
 * The command line of a later `fetch` or `cancel` of `jobId`, with the `--opts`,
 * `--host` and `--port` this run was given (paths made absolute, so it works from any
 * directory) and, for fetch, its `--download-dir`.
 */
export function laterCommand(
  program: string,
  global: GlobalArgs,
  subcommand: "fetch" | "cancel",
  jobId: string,
  downloadDir?: string,
): string {
  const words = [subcommand, jobId];
  if (subcommand === "fetch" && downloadDir !== undefined) {
    words.push("--download-dir", path.resolve(downloadDir));
  }
  return commandLine(program, global, words);
}

/**
 * `program` with the `--opts` (made absolute, so it works from any directory),
 * `--host` and `--port` this run was given, then `words`, quoted for a shell.
 */
export function commandLine(program: string, global: GlobalArgs, words: string[]): string {
  const line = [program];
  if (global.optsGiven) line.push("--opts", path.resolve(global.opts));
  if (global.host !== undefined) line.push("--host", global.host);
  if (global.port !== undefined) line.push("--port", global.port);
  return [...line, ...words].map(shellQuote).join(" ");
}
