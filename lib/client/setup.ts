/**
 * What recon-client's commands set up before they talk to the server (README
 * "Using it"): recon.opts with the command line's overrides, logging, the key, the
 * connect function; and the local checks a submission or a fetch makes before it
 * connects (input files, `--recon-options`, a writable download directory), so that a
 * problem found after a long upload does not strand results on the server.
 *
 * @module
 */
import * as path from "node:path";
import { parsePort } from "../cli/entry.ts";
import { sharedKeyMaterial } from "../cli/support.ts";
import { UsageError } from "../errors.ts";
import { log, type Logger, setupLogging } from "../log.ts";
import type { LoadedOpts, ReconConfig } from "../opts/mod.ts";
import type { Channel } from "../wire/channel.ts";
import { parseReconOptions, type ReconOptions } from "../wire/protocol.ts";
import type { GlobalArgs, SubmitArgs } from "./args.ts";
import { connectOptionsFrom, connectToServer } from "./connect.ts";
import {
  describeFiles,
  fileErrorReason,
  filesMatching,
  type LocalFile,
  pathsFromLines,
} from "./files.ts";

/** What every mode that talks to the server has set up: config, logging, the key. */
export interface Setup {
  program: string;
  loaded: LoadedOpts;
  config: ReconConfig;
  logger: Logger;
  key: { raw: Uint8Array<ArrayBuffer>; id: string };
  /** Opens a session with the server (connect and handshake). */
  connect: () => Promise<Channel>;
}

/** `--host`, `--port` and `--download-dir` over recon.opts. */
export function applyFlags(
  config: ReconConfig,
  global: GlobalArgs,
  downloadDir?: string,
): void {
  if (global.host !== undefined) config.SERVER_HOST = global.host;
  if (global.port !== undefined) config.SERVER_PORT = parsePort(global.port);
  if (downloadDir !== undefined) config.CLIENT_DOWNLOAD_DIR = path.resolve(downloadDir);
}

/** Logging, the key and the connect function for a command. */
export async function setUp(
  program: string,
  loaded: LoadedOpts,
  global: GlobalArgs,
): Promise<Setup> {
  const { config } = loaded;
  await setupLogging({
    program,
    level: global.debug ? "debug" : "info",
    stderrLevel: global.debug ? "debug" : "warning",
    filePath: config.LOG_FILEPATH || undefined,
  });
  const logger = log(program);
  for (const warning of loaded.warnings) logger.warn(warning);
  const key = await sharedKeyMaterial(loaded);
  let skewWarned = false;
  const options = connectOptionsFrom(config, key, (seconds) => {
    // Once per run: a client that reconnects would say it at every session.
    if (skewWarned) return;
    skewWarned = true;
    logger.warn(`the server's clock differs from ours by ${seconds} s; check NTP`);
  });
  logger.debug(`crypto: ${options.crypto!.description}`);
  return { program, loaded, config, logger, key, connect: () => connectToServer(options) };
}

/** One request in a session of its own; a failure cuts the session. */
export async function ask<T>(setup: Setup, request: (channel: Channel) => Promise<T>): Promise<T> {
  const channel = await setup.connect();
  try {
    const answer = await request(channel);
    await channel.close();
    return answer;
  } catch (error) {
    channel.abort();
    throw error;
  }
}

async function inputPaths(
  args: SubmitArgs,
  defaultPfile: string,
  readStdin: () => Promise<string>,
): Promise<string[]> {
  if (args.directory !== undefined) return await filesMatching(args.directory, args.pattern);
  if (args.filesGiven) {
    if (args.files.includes("-")) {
      if (args.files.length > 1) throw new UsageError('"--files -" cannot be mixed with paths');
      const paths = pathsFromLines(await readStdin());
      if (paths.length === 0) throw new UsageError("no file paths on stdin");
      return paths;
    }
    return args.files;
  }
  // recon.opts cannot make it empty: an empty value means the default path.
  return [defaultPfile];
}

/**
 * The files to send, checked. Without --files or --directory that is
 * CLIENT_DEFAULT_PFILE_PATH, and a problem with it says so: the user named no file.
 */
export async function inputFiles(
  args: SubmitArgs,
  setup: Setup,
  readStdin: () => Promise<string>,
): Promise<LocalFile[]> {
  const { loaded, program } = setup;
  const defaultPfile = loaded.config.CLIENT_DEFAULT_PFILE_PATH;
  const paths = await inputPaths(args, defaultPfile, readStdin);
  if (args.filesGiven || args.directory !== undefined) return await describeFiles(paths);
  let reason: string | undefined;
  try {
    if (!(await Deno.stat(defaultPfile)).isFile) reason = "not a regular file";
  } catch (error) {
    reason = fileErrorReason(error);
  }
  if (reason !== undefined) {
    throw new UsageError(
      `no input files given, and the default CLIENT_DEFAULT_PFILE_PATH ${defaultPfile} ` +
        `cannot be used: ${reason}`,
      {
        hint: `name the files: ${program} --files FILE... (or --directory DIR); ` +
          `or set CLIENT_DEFAULT_PFILE_PATH in ${loaded.path}`,
      },
    );
  }
  return await describeFiles(paths);
}

/**
 * The job's options: `--recon-options` or none (the old job's, for a rerun).
 * CLIENT_DAEMON_RECON_OPTIONS_JSON is for the jobs watch mode sends (README), never
 * for a one-off submission.
 */
export function reconOptionsFrom(text: string | undefined): ReconOptions | undefined {
  if (text === undefined) return undefined;
  try {
    return parseReconOptions(text);
  } catch (error) {
    throw new UsageError(`--recon-options: ${(error as Error).message}`, {
      hint: `for example --recon-options '{"num_slices": 128, "algorithm": "fft"}'`,
    });
  }
}

/**
 * Make sure results can be saved before anything is sent: finding out after a long
 * upload and reconstruction would strand the results on the server. Nothing is
 * created here, so that a job or fetch the server refuses leaves no directory behind:
 * a directory still missing must be one we can create (its nearest existing ancestor
 * takes a file), and the results' side creates it when they come (delivery.ts).
 */
export async function checkDownloadDir(
  dir: string,
  given: string | undefined,
  optsPath: string,
): Promise<void> {
  let reason: string | undefined;
  let cause: unknown;
  try {
    let existing = path.resolve(dir);
    let info: Deno.FileInfo | undefined;
    while (!info) {
      try {
        info = await Deno.stat(existing);
      } catch (error) {
        const parent = path.dirname(existing);
        if (!(error instanceof Deno.errors.NotFound) || parent === existing) throw error;
        existing = parent;
      }
    }
    // Below a regular file stat says NotADirectory, not NotFound: only `dir` gets here.
    if (!info.isDirectory) reason = "not a directory";
    else {
      const probe = await Deno.makeTempFile({ dir: existing, prefix: ".recon-write-test-" });
      await Deno.remove(probe);
    }
  } catch (error) {
    reason = fileErrorReason(error);
    cause = error;
  }
  if (reason !== undefined) {
    const what = given === undefined
      ? `CLIENT_DOWNLOAD_DIR ${dir} (from ${optsPath})`
      : `--download-dir ${given}`;
    throw new UsageError(`cannot write results to ${what}: ${reason}`, {
      hint: given === undefined
        ? `set CLIENT_DOWNLOAD_DIR in ${optsPath}, or pass --download-dir, to a directory you can write`
        : "choose a directory you can write",
      cause,
    });
  }
}
