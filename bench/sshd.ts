/**
 * A private sshd for the scp/ssh peers: its own config, throw-away host and user keys
 * in a temporary directory, listening on a free 127.0.0.1 port, stopped by PID.
 * Installs openssh-server with apt-get when sshd is missing and we are root; when it
 * cannot run, {@link startSshd} says why and the bench prints that in the scp rows.
 *
 * @module
 */
import * as path from "node:path";
import { freePort, sleep, stopProcess, track, waitForPort } from "./measure.ts";

const SSHD = "/usr/sbin/sshd";
const PRIVSEP_DIR = "/run/sshd";

/** A running private sshd. */
export interface Sshd {
  pid: number;
  port: number;
  user: string;
  /** OpenSSH version line. */
  version: string;
  /** Options for ssh (scp takes `-P port` instead of `-p port`, see {@link scpArgs}). */
  sshArgs: string[];
  scpArgs: string[];
  stop(): Promise<void>;
}

async function exists(file: string): Promise<boolean> {
  try {
    await Deno.stat(file);
    return true;
  } catch {
    return false;
  }
}

async function run(program: string, args: string[], timeoutMs = 300_000): Promise<
  { code: number; output: string }
> {
  const child = new Deno.Command(program, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { DEBIAN_FRONTEND: "noninteractive" },
  }).spawn();
  track(child, program);
  const timer = setTimeout(() => stopProcess(child), timeoutMs);
  const { code, stdout, stderr } = await child.output();
  clearTimeout(timer);
  const decoder = new TextDecoder();
  return { code, output: decoder.decode(stdout) + decoder.decode(stderr) };
}

/** Make sure /usr/sbin/sshd and scp exist; returns a reason when they cannot. */
export async function ensureOpenssh(log: (line: string) => void): Promise<string | undefined> {
  const scp = await run("sh", ["-c", "command -v scp && command -v ssh && command -v ssh-keygen"]);
  if (await exists(SSHD) && scp.code === 0) return undefined;
  if (Deno.uid() !== 0) {
    return "sshd or scp is missing and the bench is not root: apt-get install openssh-server openssh-client";
  }
  log("installing openssh-server and openssh-client with apt-get (once)");
  const update = await run("apt-get", ["update", "-qq"]);
  if (update.code !== 0) return `apt-get update failed: ${update.output.trim().slice(-300)}`;
  const install = await run("apt-get", [
    "install",
    "-y",
    "-qq",
    "--no-install-recommends",
    "openssh-server",
    "openssh-client",
  ]);
  if (install.code !== 0 || !(await exists(SSHD))) {
    return `apt-get install openssh-server failed: ${install.output.trim().slice(-300)}`;
  }
  return undefined;
}

/**
 * Start sshd in `dir` (which the caller removes), on the CPUs `cpus` only when given
 * (`taskset -c`; its per-connection processes inherit the set). Returns the server or
 * a string saying why it could not start.
 */
export async function startSshd(
  dir: string,
  log: (line: string) => void,
  cpus?: string,
): Promise<Sshd | string> {
  const missing = await ensureOpenssh(log);
  if (missing) return missing;
  await Deno.mkdir(dir, { recursive: true });
  // sshd refuses to start without its privilege-separation directory.
  if (!(await exists(PRIVSEP_DIR))) {
    try {
      await Deno.mkdir(PRIVSEP_DIR, { mode: 0o755 });
    } catch (error) {
      return `sshd needs ${PRIVSEP_DIR}, which cannot be created: ${(error as Error).message}`;
    }
  }
  const hostKey = path.join(dir, "host_ed25519");
  const userKey = path.join(dir, "user_ed25519");
  for (const key of [hostKey, userKey]) {
    const made = await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
    if (made.code !== 0) return `ssh-keygen failed: ${made.output.trim()}`;
  }
  const authorized = path.join(dir, "authorized_keys");
  await Deno.copyFile(`${userKey}.pub`, authorized);
  await Deno.chmod(authorized, 0o600);
  const sftpServer = (await exists("/usr/lib/openssh/sftp-server"))
    ? "/usr/lib/openssh/sftp-server"
    : "internal-sftp";
  const user = (await run("id", ["-un"])).output.trim();
  const versionRun = await run("ssh", ["-V"]);
  const version = versionRun.output.trim().split("\n")[0];

  for (let attempt = 1; attempt <= 3; attempt++) {
    const port = freePort();
    const config = path.join(dir, "sshd_config");
    await Deno.writeTextFile(
      config,
      [
        `Port ${port}`,
        "ListenAddress 127.0.0.1",
        `HostKey ${hostKey}`,
        `AuthorizedKeysFile ${authorized}`,
        `PidFile ${path.join(dir, "sshd.pid")}`,
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "MaxStartups 100:30:200",
        "MaxSessions 100",
        "LogLevel ERROR",
        `Subsystem sftp ${sftpServer}`,
        "",
      ].join("\n"),
    );
    const check = await run(SSHD, ["-t", "-f", config]);
    if (check.code !== 0) return `sshd -t rejected the config: ${check.output.trim()}`;
    const daemon = ["-D", "-e", "-f", config];
    const child = new Deno.Command(cpus ? "taskset" : SSHD, {
      args: cpus ? ["-c", cpus, SSHD, ...daemon] : daemon,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    track(child, "sshd");
    let errors = "";
    (async () => {
      const decoder = new TextDecoder();
      for await (const chunk of child.stderr) {
        errors = (errors + decoder.decode(chunk)).slice(-4000);
      }
    })().catch(() => {});
    let exited = false;
    child.status.then(() => (exited = true));
    try {
      await waitForPort(port, 5000);
    } catch {
      await stopProcess(child);
      if (attempt === 3) return `sshd did not start: ${errors.trim() || "no output"}`;
      continue;
    }
    if (exited) continue;
    const common = [
      "-F",
      "/dev/null",
      "-i",
      userKey,
      "-o",
      "IdentitiesOnly=yes",
      "-o",
      "BatchMode=yes",
      "-o",
      "StrictHostKeyChecking=no",
      "-o",
      "UserKnownHostsFile=/dev/null",
      "-o",
      "LogLevel=ERROR",
      "-o",
      "Compression=no",
      "-c",
      "aes128-gcm@openssh.com",
    ];
    const sshd: Sshd = {
      pid: child.pid,
      port,
      user,
      version,
      sshArgs: [...common, "-p", String(port)],
      scpArgs: [...common, "-q", "-P", String(port)],
      stop: () => stopProcess(child),
    };
    // One login proves the keys work before anything is timed.
    const probe = await run("ssh", [...sshd.sshArgs, `${user}@127.0.0.1`, "true"], 20_000);
    if (probe.code !== 0) {
      await sshd.stop();
      return `ssh login to the private sshd failed: ${probe.output.trim()} ${errors.trim()}`;
    }
    await sleep(100);
    return sshd;
  }
  return "sshd did not start";
}
