/**
 * Test support for the durable-job end-to-end tests (tests/e2e_durable_test.ts,
 * issue 13): a recon script that records each start and can be held, failed or made
 * to leave a child behind; a TCP relay that cuts a connection once after a number of
 * bytes and counts every byte sent to the server; the jobs as `recon-client jobs
 * --json` lists them; and whether a process is still alive.
 *
 * ```ts
 * await using files = await tempDir();
 * const script = await writeDurableScript(files.path);
 * await using server = await E2EServer.start({ script });
 * await using relay = new CuttingRelay(server.port, { cutAfter: 100e6 });
 * ```
 *
 * @module
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import type { JobInfo } from "../../lib/wire/protocol.ts";
import type { E2EServer, RunResult } from "./e2e.ts";

/**
 * The tests' RECON_SCRIPT. Every run appends `$RECON_JOB_ID` to `starts.log` beside the
 * script and prints `durable script started job <id>` on stdout, then:
 *   --wait_for FILE   waits (at most 60 s) until FILE exists
 *   --sleep SECONDS   sleeps
 *   --require NAME    fails (exit 3, "no --NAME given" on stderr) unless --NAME is also
 *                     given (a job a re-run with better options fixes)
 *   --spawn FILE      starts `sleep 300` in the background, writes "<own pid> <its pid>"
 *                     to FILE and waits for it (a job only a cancel ends)
 *   --copy 1          also copies every input to copy_<name>
 * and writes `sums.txt` (`<sha256>  <name>` for every input, sorted by name) as its
 * result. Options it does not know are ignored.
 */
const DURABLE_RECON_SCRIPT = `#!/bin/sh
set -eu
indir=$1
shift
out=\${RECON_OUTPUT_DIR:?RECON_OUTPUT_DIR is not set}
here=$(dirname "$0")
wait_for=
sleep_s=
require=
spawn=
copy=
given=" "
while [ "$#" -ge 2 ]; do
	case $1 in
	--wait_for) wait_for=$2 ;;
	--sleep) sleep_s=$2 ;;
	--require) require=$2 ;;
	--spawn) spawn=$2 ;;
	--copy) copy=$2 ;;
	esac
	given="$given$1 "
	shift 2
done
printf '%s\\n' "$RECON_JOB_ID" >>"$here/starts.log"
echo "durable script started job $RECON_JOB_ID"
if [ -n "$wait_for" ]; then
	i=0
	while [ ! -e "$wait_for" ]; do
		i=$((i + 1))
		if [ "$i" -gt 1200 ]; then
			echo "durable script: gave up waiting for $wait_for" >&2
			exit 9
		fi
		sleep 0.05
	done
fi
[ -z "$sleep_s" ] || sleep "$sleep_s"
if [ -n "$require" ]; then
	case $given in
	*" --$require "*) ;;
	*) echo "no --$require given" >&2; exit 3 ;;
	esac
fi
if [ -n "$spawn" ]; then
	sleep 300 &
	printf '%s %s\\n' "$$" "$!" >"$spawn"
	wait
fi
for f in "$indir"/*; do
	[ -f "$f" ] || continue
	name=\${f##*/}
	printf '%s  %s\\n' "$(sha256sum <"$f" | cut -d ' ' -f 1)" "$name" >>"$out/sums.txt"
	[ -z "$copy" ] || cp -- "$f" "$out/copy_$name"
done
echo "durable script finished job $RECON_JOB_ID"
`;

/** Write the durable tests' recon script into `dir` (as `recon.sh`); returns its path. */
export async function writeDurableScript(dir: string): Promise<string> {
  const file = path.join(dir, "recon.sh");
  await Deno.writeTextFile(file, DURABLE_RECON_SCRIPT, { mode: 0o755 });
  return file;
}

/** Job ids in the order the script started them (`starts.log` beside the script). */
export async function startedJobs(scriptDir: string): Promise<string[]> {
  const text = await Deno.readTextFile(path.join(scriptDir, "starts.log")).catch((error) => {
    if (error instanceof Deno.errors.NotFound) return "";
    throw error;
  });
  return text.split("\n").filter(Boolean);
}

/** The `sums.txt` line the script writes for an input with this SHA-256 and name. */
export function sumsLine(sha256: string, name: string): string {
  return `${sha256}  ${name}\n`;
}

/** One job of `recon-client jobs --json`: the protocol's JobInfo (docs/PROTOCOL.md §6.9). */
export type ListedJob = JobInfo;

/** The jobs in `recon-client jobs --json` output; fails the test when it is not that. */
export function parseJobs(result: RunResult): ListedJob[] {
  assert.equal(result.code, 0, `recon-client jobs --json failed:\n${result.stderr}`);
  const document = JSON.parse(result.stdout);
  const jobs = Array.isArray(document) ? document : document.jobs;
  assert.ok(Array.isArray(jobs), `no job list in:\n${result.stdout}`);
  return jobs;
}

/** `recon-client jobs --json` against `server` (or another port), parsed. */
export async function listJobs(server: E2EServer): Promise<ListedJob[]> {
  return parseJobs(await server.client(["jobs", "--json"]));
}

/** One job from {@link listJobs}; fails when the server does not list it. */
export async function jobInfo(server: E2EServer, id: string): Promise<ListedJob> {
  const job = (await listJobs(server)).find((entry) => entry.job_id === id);
  assert.ok(job, `recon-client jobs --json does not list job ${id}`);
  return job;
}

/**
 * True while process `pid` exists and is not a zombie (a stopped process whose parent
 * has not reaped it yet is as good as gone).
 */
export async function processAlive(pid: number): Promise<boolean> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    // "pid (comm) S …": the state follows the last ")" (comm may contain one).
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** Send SIGKILL to each pid that still exists (cleanup after a failed test). */
export function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }
}

/** Options of {@link CuttingRelay}. */
export interface CuttingRelayOptions {
  /**
   * Once this many bytes (over all connections) have passed from the client to the
   * server, the connection carrying them is closed on both sides, once.
   */
  cutAfter?: number;
  /** The same for bytes from the server to the client (a download cut off). */
  cutDownloadAfter?: number;
}

/**
 * A TCP relay on 127.0.0.1 to `targetPort` that accepts any number of connections,
 * counts the bytes each way over all of them, and can cut the connection that carries
 * byte number `cutAfter` client → server, or `cutDownloadAfter` server → client
 * (closing both of its sockets), once. A client pointed at {@link port} reconnects
 * through it to the same server.
 */
export class CuttingRelay implements AsyncDisposable {
  readonly port: number;
  /** Bytes passed from clients to the server, over every connection. */
  toServer = 0;
  /** Bytes passed from the server to clients. */
  toClient = 0;
  /** Connections accepted so far. */
  connections = 0;
  /** True once the cut happened. */
  cut = false;
  readonly #cutAfter: { toServer: number; toClient: number };
  readonly #listener: Deno.TcpListener;
  readonly #conns = new Set<Deno.Conn>();
  readonly #tasks: Promise<void>[] = [];
  readonly #accepting: Promise<void>;

  constructor(targetPort: number, options: CuttingRelayOptions = {}) {
    this.#cutAfter = {
      toServer: options.cutAfter ?? Infinity,
      toClient: options.cutDownloadAfter ?? Infinity,
    };
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#listener = listener;
    this.port = listener.addr.port;
    this.#accepting = (async () => {
      try {
        for await (const client of listener) {
          this.connections++;
          this.#tasks.push(this.#relay(client, targetPort));
        }
      } catch { /* listener closed */ }
    })();
  }

  async #relay(client: Deno.Conn, targetPort: number): Promise<void> {
    this.#conns.add(client);
    let server: Deno.Conn;
    try {
      server = await Deno.connect({ hostname: "127.0.0.1", port: targetPort });
    } catch {
      this.#close(client);
      return;
    }
    this.#conns.add(server);
    const closeBoth = () => {
      this.#close(client);
      this.#close(server);
    };
    const pump = async (from: Deno.Conn, to: Deno.Conn, toServer: boolean) => {
      const buffer = new Uint8Array(256 * 1024);
      try {
        while (true) {
          let read = await from.read(buffer);
          if (read === null) break;
          const direction = toServer ? "toServer" : "toClient";
          let cutNow = false;
          if (!this.cut && this[direction] + read >= this.#cutAfter[direction]) {
            // Pass exactly up to the cut, then drop the connection.
            read = this.#cutAfter[direction] - this[direction];
            this.cut = true;
            cutNow = true;
          }
          let written = 0;
          while (written < read) written += await to.write(buffer.subarray(written, read));
          this[direction] += read;
          if (cutNow) break;
        }
      } catch { /* one side went away */ }
      closeBoth();
    };
    await Promise.all([pump(client, server, true), pump(server, client, false)]);
  }

  #close(conn: Deno.Conn): void {
    try {
      conn.close();
    } catch { /* closed */ }
    this.#conns.delete(conn);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#accepting;
    for (const conn of [...this.#conns]) this.#close(conn);
    await Promise.all(this.#tasks);
  }
}
