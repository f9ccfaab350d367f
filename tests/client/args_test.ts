/**
 * Tests for lib/client/args.ts: the job commands and their options, global options
 * before a command, job ids in any case, --priority and --state with their slips, a
 * misplaced command, and the later `fetch` command line a lost job prints.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import {
  type Command,
  type GlobalArgs,
  laterCommand,
  parseClientArgs,
  parseJobId,
  shellQuote,
} from "../../lib/client/args.ts";
import { UsageError } from "../../lib/errors.ts";

const ID = "0b7f0f2e-3c1a-4b5e-9d2f-6a7b8c9d0e1f";
const ID2 = "5d0c7e8f-1a2b-4c3d-8e9f-0a1b2c3d4e5f";

function parse(...argv: string[]): Command {
  return parseClientArgs(argv, "recon-client");
}

function usage(argv: string[], message: RegExp | string, hint?: RegExp): void {
  assert.throws(() => parse(...argv), (error: unknown) => {
    assert.ok(error instanceof UsageError, `${argv.join(" ")}: ${error}`);
    if (typeof message === "string") assert.equal(error.message, message);
    else assert.match(error.message, message);
    if (hint) assert.match(error.hint ?? "", hint);
    return true;
  });
}

const DEFAULTS: GlobalArgs = {
  opts: "recon.opts",
  optsGiven: false,
  host: undefined,
  port: undefined,
  json: false,
  quiet: false,
  debug: false,
  allowUnknownOptions: false,
};

Deno.test("parseClientArgs() reads each job command with its own options", () => {
  assert.deepEqual(parse("jobs", "--state", "Failed", "--json"), {
    kind: "jobs",
    global: { ...DEFAULTS, json: true },
    state: "failed",
    allClients: false,
  });
  assert.deepEqual(parse("--json", "jobs", "--all-clients"), {
    kind: "jobs",
    global: { ...DEFAULTS, json: true },
    state: undefined,
    allClients: true,
  });
  assert.deepEqual(parse("wait", ID, ID2.toUpperCase(), ID), {
    kind: "wait",
    global: DEFAULTS,
    jobIds: [ID, ID2],
  });
  assert.deepEqual(parse("fetch", ID, "--download-dir", "out"), {
    kind: "fetch",
    global: DEFAULTS,
    jobId: ID,
    downloadDir: "out",
  });
  assert.deepEqual(parse("cancel", ID, "--reason", "wrong protocol"), {
    kind: "cancel",
    global: DEFAULTS,
    jobIds: [ID],
    reason: "wrong protocol",
  });
  assert.deepEqual(parse("logs", "-f", ID), {
    kind: "logs",
    global: DEFAULTS,
    jobId: ID,
    follow: true,
  });
  assert.deepEqual(
    parse("rerun", ID, "--recon-options", '{"a": 1}', "--priority", "high", "--detach"),
    {
      kind: "rerun",
      global: DEFAULTS,
      jobId: ID,
      reconOptions: '{"a": 1}',
      priority: "high",
      detach: true,
      downloadDir: undefined,
      noDownload: false,
    },
  );
  assert.deepEqual(parse("redeliver", ID, "--to", "pacs,Research", "--to", "PACS"), {
    kind: "redeliver",
    global: DEFAULTS,
    jobId: ID,
    to: ["PACS", "RESEARCH"],
  });
  assert.deepEqual(parse("redeliver", ID.toUpperCase(), "--json"), {
    kind: "redeliver",
    global: { ...DEFAULTS, json: true },
    jobId: ID,
    to: undefined,
  });
  const rerun = parse("rerun", ID, "--no-download");
  assert.equal(rerun.kind === "rerun" && rerun.noDownload, true);
});

Deno.test("global options may come before a job command, --quiet too", () => {
  const command = parse("--opts", "/etc/r.opts", "--port", "9", "--quiet", "fetch", ID, "--json");
  assert.equal(command.kind, "fetch");
  assert.deepEqual((command as { global: GlobalArgs }).global, {
    ...DEFAULTS,
    opts: "/etc/r.opts",
    optsGiven: true,
    port: "9",
    quiet: true,
    json: true,
  });
});

Deno.test("a submission takes --priority and --detach; queries refuse them", () => {
  const command = parse("--files", "a.7", "b.dat", "--priority", "LOW", "--detach");
  assert.equal(command.kind, "submit");
  assert.deepEqual(command.kind === "submit" && [command.files, command.priority, command.detach], [
    ["a.7", "b.dat"],
    "low",
    true,
  ]);
  usage(["--files", "a.7", "--priority", "urgent"], /^--priority must be one of high, normal, low/);
  usage(["--server-status", "--detach"], "--detach goes with submitting a job");
  assert.equal(parse("--view-queue", "--json").kind, "queue");
  assert.equal(parse("keygen").kind, "keygen");
  assert.equal(parse("--help").kind, "help");
});

Deno.test("a submission takes --deliver NAME[,NAME] and --no-download; what does not go with them is refused", () => {
  const command = parse("--files", "a.7", "--deliver", "pacs, Research", "--deliver", "PACS");
  assert.equal(command.kind, "submit");
  assert.deepEqual(command.kind === "submit" && [command.deliver, command.noDownload], [
    ["PACS", "RESEARCH"],
    false,
  ]);
  const plain = parse("--files", "a.7", "--no-download");
  assert.deepEqual(plain.kind === "submit" && [plain.deliver, plain.noDownload], [
    undefined,
    true,
  ]);
  usage(
    ["--files", "a.7", "--deliver", "PACS_1"],
    '--deliver: "PACS_1" is not a destination name (1 to 32 letters and digits)',
    /--server-status/,
  );
  usage(
    ["--files", "a.7", "--deliver", ""],
    "--deliver needs destination names, e.g. --deliver PACS,RESEARCH",
  );
  usage(["--files", "a.7", "--deliver", "PACS,"], /^--deliver needs destination names/);
  usage(["--files", "a.7", "--deliver", "A".repeat(33)], /is not a destination name/);
  const many = Array.from({ length: 17 }, (_, i) => `D${i}`).join(",");
  usage(["--files", "a.7", "--deliver", many], "--deliver names 17 destinations; at most 16");
  usage(
    ["--files", "a.7", "--no-download", "--detach"],
    "use either --detach or --no-download, not both",
    /--no-download waits for its end/,
  );
  usage(
    ["--files", "a.7", "--no-download", "--download-dir", "x"],
    "--download-dir has no use with --no-download: nothing is downloaded",
  );
  usage(["--server-status", "--deliver", "PACS"], "--deliver goes with submitting a job");
  usage(["--view-queue", "--no-download"], "--no-download goes with submitting a job");
  usage(["redeliver"], "redeliver needs a job id");
  usage(
    ["redeliver", ID, "--to", "x-y"],
    '--to: "x-y" is not a destination name (1 to 32 letters and digits)',
  );
  usage(
    ["rerun", ID, "--no-download", "--detach"],
    "use either --detach or --no-download, not both",
  );
});

Deno.test("job commands refuse what is not a job id, a missing one, and extra ones", () => {
  usage(
    ["fetch", "abc"],
    '"abc" is not a job id',
    /^a job id is a UUID like .*'recon-client jobs'/,
  );
  usage(["fetch"], "fetch needs a job id", /recon-client fetch --help/);
  usage(["fetch", ID, ID2], "fetch takes one job id");
  usage(["wait"], "wait needs at least one job id");
  usage(["jobs", ID], `unexpected argument "${ID}"`);
  usage(["jobs", "--state", "runing"], /got "runing" \(did you mean running\?\)$/);
  usage(["logs", ID, "--folow"], "unknown option --folow (did you mean --follow?)", /logs --help/);
});

Deno.test("a job command after a non-global option is misplaced, and says which options are global", () => {
  usage(
    ["--files-from", "x", "fetch", ID],
    /unknown option|must come first/,
  );
  usage(
    ["--download-dir", "x", "fetch", ID],
    '"fetch" must come first, or after global options only',
    /--quiet; the rest go after "fetch"/,
  );
  // After --files, "fetch" is a file name.
  const command = parse("--files", "a.7", "fetch");
  assert.equal(command.kind === "submit" && command.files.join(" "), "a.7 fetch");
});

Deno.test("each job command has its own --help", () => {
  for (const name of ["jobs", "wait", "fetch", "cancel", "logs", "rerun", "redeliver"]) {
    const command = parse(name, "--help");
    assert.equal(command.kind, "help");
    const text = (command as { text: string }).text;
    assert.ok(text.startsWith(`recon-client ${name}: `), text);
    assert.match(text, /^ {2}--opts PATH/m);
  }
  const main = parse("-h");
  assert.match((main as { text: string }).text, /^ {2}5 {4}the job is on the server/m);
});

Deno.test("parseJobId() accepts any case and spaces around, and gives the server's form", () => {
  assert.equal(parseJobId(` ${ID.toUpperCase()}\n`, "recon-client"), ID);
});

Deno.test("laterCommand() repeats --opts (absolute), --host, --port and --download-dir, quoted for a shell", () => {
  const global: GlobalArgs = {
    ...DEFAULTS,
    opts: "conf/my recon.opts",
    optsGiven: true,
    host: "recon-box",
    port: "60001",
  };
  assert.equal(
    laterCommand("recon-client", global, "fetch", ID, "out dir"),
    `recon-client --opts '${path.resolve("conf/my recon.opts")}' --host recon-box --port 60001 ` +
      `fetch ${ID} --download-dir '${path.resolve("out dir")}'`,
  );
  assert.equal(
    laterCommand("recon-client", DEFAULTS, "cancel", ID, "x"),
    `recon-client cancel ${ID}`,
  );
  assert.equal(shellQuote("it's"), `'it'\\''s'`);
  assert.equal(shellQuote("/a/b-c_d.opts"), "/a/b-c_d.opts");
});
