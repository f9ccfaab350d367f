/**
 * recon-client: submits reconstruction jobs to a recon-server and fetches the
 * images, follows, lists, cancels and re-runs jobs by id, or asks the server for its
 * status and queue. See `recon-client --help`.
 *
 * This is the only client module that reads Deno.args, writes stdout or exits. The
 * command line is parsed in lib/client/args.ts and each mode runs in
 * lib/client/commands.ts (watch mode in lib/watch/cli.ts).
 *
 * @module
 */
import { GLOBAL_OPTIONS, parseClientArgs } from "./lib/client/args.ts";
import { runCommand } from "./lib/client/commands.ts";
import { failureDetails, failureJson } from "./lib/client/format.ts";
import { applyFlags, setUp } from "./lib/client/setup.ts";
import {
  keygenText,
  runMain,
  showConfigText,
  splitCommand,
  textWriter,
  versionText,
  warningText,
} from "./lib/cli/entry.ts";
import { loadConfig } from "./lib/cli/support.ts";
import { ExitCode } from "./lib/errors.ts";
import { watchMain } from "./lib/watch/cli.ts";

const PROGRAM = "recon-client";

const writeStdout = textWriter(Deno.stdout);
const writeStderr = textWriter(Deno.stderr, { ignoreErrors: true });

/** Print `text` on stdout; the mode succeeded. */
function print(text: string): number {
  writeStdout(text);
  return ExitCode.OK;
}

/** One path per mode: watch, --help, --version, keygen, --show-config, the rest. */
async function main(argv: string[], interrupt: AbortController): Promise<number> {
  const split = splitCommand(argv, ["watch"], GLOBAL_OPTIONS);
  if (split.command === "watch") {
    return await watchMain(split.argv, {
      program: PROGRAM,
      writeStdout,
      writeStderr,
      signal: interrupt.signal,
    });
  }
  const command = parseClientArgs(argv, PROGRAM);
  switch (command.kind) {
    case "help":
      return print(command.text);
    case "version":
      return print(versionText(PROGRAM));
    case "keygen":
      return print(keygenText());
  }
  const { global } = command;
  // --show-config only reads, and lists unknown options instead of stopping at the first.
  const showConfig = command.kind === "show-config";
  const loaded = await loadConfig(global.opts, "client", {
    allowUnknownOptions: global.allowUnknownOptions,
    showConfig,
  });
  applyFlags(loaded.config, global, "downloadDir" in command ? command.downloadDir : undefined);
  if (command.kind === "show-config") {
    writeStderr(warningText(PROGRAM, loaded.warnings));
    return print(await showConfigText(loaded.config, loaded.unknownOptions));
  }
  return await runCommand(command, await setUp(PROGRAM, loaded, global), {
    writeStdout,
    writeStderr,
    stderrIsTerminal: Deno.stderr.isTerminal(),
    stdoutIsTerminal: Deno.stdout.isTerminal(),
    signal: interrupt.signal,
    readStdin: () => new Response(Deno.stdin.readable).text(),
  });
}

if (import.meta.main) {
  const interrupt = new AbortController();
  let interrupts = 0;
  const onInterrupt = () => {
    interrupts++;
    if (interrupts > 1) {
      writeStderr(`\n${PROGRAM}: interrupted\n`);
      Deno.exit(ExitCode.INTERRUPTED);
    }
    interrupt.abort();
  };
  Deno.addSignalListener("SIGINT", onInterrupt);
  Deno.addSignalListener("SIGTERM", onInterrupt);
  const json = Deno.args.includes("--json");
  Deno.exit(
    await runMain(() => main(Deno.args, interrupt), {
      program: PROGRAM,
      writeStderr,
      details: failureDetails,
      onFailure: (error, exitCode) => {
        if (json) writeStdout(failureJson(error, exitCode));
      },
    }),
  );
}
