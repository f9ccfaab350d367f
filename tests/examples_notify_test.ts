/**
 * The ON_JOB_END email example (examples/notify/mail-on-job-end.sh) with a fake
 * `sendmail` first on PATH that records its arguments and the message: the headers,
 * a subject naming job, state and client, the facts of each state, and never a file
 * name of the job or a cancel reason someone typed.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { fileURLToPath } from "node:url";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const SCRIPT = path.join(ROOT, "examples", "notify", "mail-on-job-end.sh");
const JOB = "2b1c6f0e-0d3a-4c1e-9f57-3a0e8d1c2b4a";

interface Mail {
  code: number;
  stderr: string;
  /** The mailer's arguments, one per line. */
  argv: string;
  /** What the mailer read on stdin. */
  message: string;
}

/**
 * Run the example as recon-server does (argv only, stdin closed) with a clean
 * environment whose PATH starts with a directory holding only a fake `mailer`
 * (`sendmail` or `mail`) that exits `exit`.
 */
async function mail(
  args: string[],
  env: Record<string, string>,
  options: { mailer?: "sendmail" | "mail"; exit?: number } = {},
): Promise<Mail> {
  const dir = await Deno.makeTempDir({ prefix: "recon-notify-" });
  try {
    const bin = path.join(dir, "bin");
    await Deno.mkdir(bin);
    await Deno.writeTextFile(
      path.join(bin, options.mailer ?? "sendmail"),
      `#!/bin/sh\nprintf '%s\\n' "$@" > '${dir}/argv'\ncat > '${dir}/stdin'\n` +
        `[ ${options.exit ?? 0} -eq 0 ] || echo 'fake: relay refused' >&2\nexit ${
          options.exit ?? 0
        }\n`,
      { mode: 0o755 },
    );
    const output = await new Deno.Command(SCRIPT, {
      args,
      clearEnv: true,
      env: { PATH: `${bin}:/usr/bin:/bin`, ...env },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const read = (name: string) => Deno.readTextFile(path.join(dir, name)).catch(() => "");
    return {
      code: output.code,
      stderr: new TextDecoder().decode(output.stderr),
      argv: await read("argv"),
      message: await read("stdin"),
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Header name → value of a message's header block (one line each). */
function headers(message: string): Map<string, string> {
  const block = message.slice(0, message.indexOf("\n\n"));
  return new Map(
    block.split("\n").map((line) => {
      const at = line.indexOf(": ");
      return [line.slice(0, at), line.slice(at + 2)];
    }),
  );
}

/** A result directory holding a file whose name identifies a patient. */
async function resultDir(): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "job_output_" });
  await Deno.writeTextFile(path.join(dir, "DOE_JOHN_19700101.dcm"), "DICM");
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

Deno.test("mail-on-job-end.sh mails a succeeded job through sendmail -t, without file names", async () => {
  await using results = await resultDir();
  const sent = await mail([JOB, "succeeded", "scanner1", results.dir], {
    RECON_JOB_ID: JOB,
    RECON_JOB_STATE: "succeeded",
    RECON_CLIENT: "scanner1",
    RECON_RESULT_DIR: results.dir,
    RECON_RESULT_COUNT: "33",
    RECON_EXIT_CODE: "0",
    RECON_REASON: "",
    RECON_NOTIFY_TO: "pacs-team@example.org,oncall@example.org",
    RECON_NOTIFY_FROM: "recon@example.org",
  });
  assert.equal(sent.code, 0, sent.stderr);
  assert.equal(sent.stderr, "");
  assert.equal(sent.argv, "-t\n-oi\n");
  const head = headers(sent.message);
  assert.deepEqual([...head.keys()], [
    "To",
    "From",
    "Subject",
    "Auto-Submitted",
    "Content-Type",
  ]);
  assert.equal(head.get("To"), "pacs-team@example.org,oncall@example.org");
  assert.equal(head.get("From"), "recon@example.org");
  assert.equal(head.get("Subject"), `recon: job ${JOB} succeeded (client scanner1)`);
  assert.equal(head.get("Auto-Submitted"), "auto-generated");
  assert.match(sent.message, /^Results: +33 file\(s\)$/m);
  assert.match(sent.message, /^Client: +scanner1$/m);
  assert.doesNotMatch(sent.message, /DOE|JOHN|\.dcm/, "no file name of the job");
  assert.ok(!sent.message.includes(results.dir), "no result directory either");
});

Deno.test("mail-on-job-end.sh mails a failed job's reason and exit code", async () => {
  const sent = await mail([JOB, "failed", "scanner1", ""], {
    RECON_RESULT_COUNT: "",
    RECON_EXIT_CODE: "3",
    RECON_REASON: "the reconstruction script exited with code 3",
  });
  assert.equal(sent.code, 0, sent.stderr);
  const head = headers(sent.message);
  assert.equal(head.get("To"), "root", "root by default");
  assert.equal(head.has("From"), false);
  assert.equal(head.get("Subject"), `recon: job ${JOB} failed (client scanner1)`);
  assert.match(sent.message, /^Reason: +the reconstruction script exited with code 3$/m);
  assert.match(sent.message, /^Exit code: +3$/m);
  assert.doesNotMatch(sent.message, /^Results:/m);
});

Deno.test("mail-on-job-end.sh leaves out a cancelled job's typed reason", async () => {
  const sent = await mail([JOB, "cancelled", "scanner1", ""], {
    RECON_REASON: "wrong patient: DOE JOHN",
  });
  assert.equal(sent.code, 0, sent.stderr);
  assert.equal(
    headers(sent.message).get("Subject"),
    `recon: job ${JOB} cancelled (client scanner1)`,
  );
  assert.doesNotMatch(sent.message, /DOE|JOHN|wrong patient/);
  assert.match(sent.message, /^Reason: +not included \(free text\)/m);
});

Deno.test("mail-on-job-end.sh keeps every header on one line", async () => {
  const sent = await mail([JOB, "failed", "scanner1\nBcc: someone@example.org", ""], {
    RECON_NOTIFY_TO: "team@example.org\r\nBcc: other@example.org",
  });
  assert.equal(sent.code, 0, sent.stderr);
  const head = headers(sent.message);
  assert.equal(head.has("Bcc"), false);
  assert.equal(head.get("To"), "team@example.orgBcc: other@example.org");
  assert.equal(
    head.get("Subject"),
    `recon: job ${JOB} failed (client scanner1Bcc: someone@example.org)`,
  );
});

Deno.test("mail-on-job-end.sh exits 1 with one line on stderr when sendmail fails", async () => {
  const sent = await mail([JOB, "failed", "scanner1", ""], {}, { exit: 75 });
  assert.equal(sent.code, 1);
  assert.equal(
    sent.stderr,
    "fake: relay refused\nmail-on-job-end: sendmail failed (exit 75); is the mail transfer agent configured?\n",
  );
});

Deno.test("mail-on-job-end.sh refuses bad usage with exit 2", async () => {
  const sent = await mail([JOB], {});
  assert.equal(sent.code, 2);
  assert.match(sent.stderr, /^mail-on-job-end: usage: /);
  assert.equal(sent.message, "");
});

Deno.test("mail-on-job-end.sh uses mail -s with RECON_MAILER = mail, one argument per recipient", async () => {
  const sent = await mail([JOB, "succeeded", "scanner1", "/x"], {
    RECON_RESULT_COUNT: "2",
    RECON_NOTIFY_TO: "a@example.org,b@example.org",
    RECON_MAILER: "mail",
  }, { mailer: "mail" });
  assert.equal(sent.code, 0, sent.stderr);
  assert.equal(
    sent.argv,
    `-s\nrecon: job ${JOB} succeeded (client scanner1)\na@example.org\nb@example.org\n`,
  );
  assert.match(sent.message, /^Job: +2b1c6f0e/);
  assert.match(sent.message, /^Results: +2 file\(s\)$/m);
  assert.doesNotMatch(sent.message, /^Subject:/m, "mail writes the headers itself");
});

Deno.test("mail-on-job-end.sh says so in one line when RECON_MAILER names another program", async () => {
  const sent = await mail([JOB, "failed", "scanner1", ""], { RECON_MAILER: "mutt" });
  assert.equal(sent.code, 2);
  assert.equal(sent.stderr, "mail-on-job-end: RECON_MAILER must be sendmail or mail, not 'mutt'\n");
});
