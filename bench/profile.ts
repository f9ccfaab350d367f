/**
 * Where the time goes in a big upload and a big result download: runs server.ts and
 * client.ts with `deno run --cpu-prof` (the JS main thread of each), reads per-thread
 * CPU of both processes from /proc (the threads Deno runs WebCrypto and I/O on), and,
 * when `perf` is installed, records a native profile of each process (every thread,
 * kernel included). Prints a summary of each; keeps the raw files in --out.
 *
 *     deno run -A bench/profile.ts [--size-mib 1024] [--out bench/work/profile] [--no-perf]
 *                                  [--no-cpu-prof]
 *
 * Profiling slows things down (the JS profiler samples every ~1 ms; perf at 999 Hz),
 * so the MB/s printed here is not the benchmark's: use bench/run.ts for that.
 */
import * as path from "node:path";
import { parseArgs } from "node:util";
import { formatSummary, summarise } from "./cpuprofile_top.ts";
import {
  BENCH_DIR,
  ensureProcAccess,
  makeFile,
  ROOT,
  stopAll,
  stopProcess,
  track,
} from "./measure.ts";
import { ReconServerProcess } from "./recon_server.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "size-mib": { type: "string", default: "1024" },
    out: { type: "string", default: path.join(BENCH_DIR, "work", "profile") },
    "no-perf": { type: "boolean", default: false },
    "no-cpu-prof": { type: "boolean", default: false },
    top: { type: "string", default: "15" },
  },
});
const SIZE = Number(values["size-mib"]) * 1024 * 1024;
const OUT = path.resolve(values.out);
const TOP = Number(values.top);
/** --no-cpu-prof: perf alone, so the JS profiler's own thread does not show in it. */
const JS_PROFILE = !values["no-cpu-prof"];
const PERMISSIONS = (await Deno.readTextFile(path.join(ROOT, "bin", "permissions"))).trim()
  .split(/\s+/);
await ensureProcAccess();
const hasPerf = !values["no-perf"] &&
  (await new Deno.Command("sh", { args: ["-c", "command -v perf"], stdout: "null" }).output())
      .code === 0;

/** CPU seconds per thread name, sampled from /proc/PID/task every 100 ms (last value kept). */
class ThreadSampler {
  #threads = new Map<string, { comm: string; seconds: number }>();
  #timer: ReturnType<typeof setInterval>;
  constructor(readonly pid: number) {
    this.#timer = setInterval(() => this.sample(), 100);
  }
  sample(): void {
    let tasks: string[];
    try {
      tasks = [...Deno.readDirSync(`/proc/${this.pid}/task`)].map((e) => e.name);
    } catch {
      return;
    }
    for (const tid of tasks) {
      try {
        const text = Deno.readTextFileSync(`/proc/${this.pid}/task/${tid}/stat`);
        const comm = text.slice(text.indexOf("(") + 1, text.lastIndexOf(")"));
        const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
        const seconds = (Number(fields[11]) + Number(fields[12])) / 100;
        this.#threads.set(tid, { comm, seconds });
      } catch { /* thread ended */ }
    }
  }
  stop(): string {
    this.sample();
    clearInterval(this.#timer);
    const byName = new Map<string, { seconds: number; count: number }>();
    for (const { comm, seconds } of this.#threads.values()) {
      const entry = byName.get(comm) ?? { seconds: 0, count: 0 };
      entry.seconds += seconds;
      entry.count++;
      byName.set(comm, entry);
    }
    const total = [...byName.values()].reduce((sum, e) => sum + e.seconds, 0);
    return [...byName.entries()]
      .sort((a, b) => b[1].seconds - a[1].seconds)
      .map(([name, e]) =>
        `    ${e.seconds.toFixed(2).padStart(6)} s  ${
          ((e.seconds / total) * 100).toFixed(0).padStart(3)
        }%  ${name}${e.count > 1 ? ` (${e.count} threads)` : ""}`
      )
      .join("\n") + `\n    ${total.toFixed(2).padStart(6)} s  total (user+sys, all threads)`;
  }
}

/**
 * System-wide perf (root): `perf record -p` only follows the threads that exist when it
 * attaches, and Deno starts its blocking-pool threads (where WebCrypto runs) on demand.
 * The report is filtered by PID afterwards.
 */
async function perfStart(file: string): Promise<Deno.ChildProcess | undefined> {
  if (!hasPerf) return undefined;
  const child = new Deno.Command("perf", {
    args: ["record", "-q", "-a", "-F", "999", "-o", file],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  track(child, "perf");
  await new Promise((resolve) => setTimeout(resolve, 300));
  return child;
}

async function perfStop(child: Deno.ChildProcess | undefined): Promise<void> {
  if (!child) return;
  try {
    child.kill("SIGINT");
  } catch { /* gone */ }
  const timer = setTimeout(() => stopProcess(child, 0), 20_000);
  await child.status;
  clearTimeout(timer);
}

interface PerfLine {
  samples: number;
  comm: string;
  dso: string;
  sym: string;
}

/** Native code in the deno binary named by the instructions around it (it is stripped). */
async function classifyDenoAddresses(
  binary: string,
  offsets: number[],
): Promise<Map<number, string>> {
  const classes = new Map<number, string>();
  // perf gives file offsets for a stripped PIE; objdump wants virtual addresses.
  const segments = new TextDecoder().decode(
    (await new Deno.Command("readelf", { args: ["-lW", binary], stdout: "piped" }).output())
      .stdout,
  ).split("\n").filter((line) => line.trim().startsWith("LOAD")).map((line) => {
    const [, offset, vaddr, , filesz] = line.trim().split(/\s+/);
    return { offset: Number(offset), vaddr: Number(vaddr), size: Number(filesz) };
  });
  const pages = new Map<number, number[]>();
  for (const offset of offsets) {
    const page = Math.floor(offset / 4096) * 4096;
    pages.set(page, [...(pages.get(page) ?? []), offset]);
  }
  for (const [page, inPage] of pages) {
    const segment = segments.find((s) => page >= s.offset && page < s.offset + s.size);
    if (!segment) continue;
    const shift = segment.vaddr - segment.offset;
    const out = await new Deno.Command("objdump", {
      args: [
        "-d",
        "--no-show-raw-insn",
        `--start-address=0x${(page + shift - 256).toString(16)}`,
        `--stop-address=0x${(page + shift + 4096 + 256).toString(16)}`,
        binary,
      ],
      stdout: "piped",
      stderr: "null",
    }).output();
    const instructions = new TextDecoder().decode(out.stdout).split("\n").map((line) => {
      const match = /^\s*([0-9a-f]+):\s+(\S+)/.exec(line);
      return match ? { at: parseInt(match[1], 16) - shift, op: match[2] } : undefined;
    }).filter((x) => x !== undefined);
    for (const offset of inPage) {
      const near = instructions.filter((i) => Math.abs(i.at - offset) <= 160).map((i) => i.op);
      const has = (prefix: string) => near.some((op) => op.startsWith(prefix));
      classes.set(
        offset,
        has("sha256") || has("sha1")
          ? "SHA-256 (SHA-NI): file hash and HMAC"
          : has("aesenc") || has("vaesenc")
          ? "AES-CBC encrypt (AES-NI)"
          : has("aesdec") || has("vaesdec")
          ? "AES-CBC decrypt (AES-NI)"
          : "deno: other native code (V8, runtime)",
      );
    }
  }
  return classes;
}

function kernelClass(sym: string): string {
  if (/copy_folio_from_iter|filemap|folio|iomap|ext4|xfs|generic_perform_write/.test(sym)) {
    return "kernel: file write into the page cache";
  }
  if (/filemap_read|copy_page_to_iter|page_cache/.test(sym)) return "kernel: file read";
  if (
    /_copy_to_iter|_copy_from_iter|copy_user|tcp|skb|sock|inet|ip_|net_|__dev_queue|loopback/.test(
      sym,
    )
  ) {
    return "kernel: socket I/O and copies";
  }
  if (
    /clear_page|page_fault|alloc_pages|freelist|memcg|lru|mmap|munmap|unmap|zap_|free_pages|madvise/
      .test(sym)
  ) {
    return "kernel: memory (page faults, zeroing, freeing)";
  }
  if (/finish_task_switch|schedule|futex|spin_unlock|wake|epoll|select|irq/.test(sym)) {
    return "kernel: scheduling, wake-ups, epoll";
  }
  return "kernel: other";
}

/** perf's flat profile of one process, grouped into what the time was spent on. */
async function perfTop(file: string, title: string, pid: number): Promise<string> {
  try {
    await Deno.stat(file);
  } catch {
    return `${title}: no perf data`;
  }
  const out = await new Deno.Command("perf", {
    args: [
      "report",
      "-i",
      file,
      "--pid",
      String(pid),
      "--stdio",
      "-n",
      "--no-children",
      "--sort",
      "comm,dso,sym",
    ],
    stdout: "piped",
    stderr: "null",
  }).output();
  const lines: PerfLine[] = [];
  for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
    const match = /^\s*[\d.]+%\s+(\d+)\s+(.+?)\s{2,}(\S+)\s+\[[.k]\]\s+(.+?)\s*$/.exec(line);
    if (match) {
      lines.push({
        samples: Number(match[1]),
        comm: match[2].trim(),
        dso: match[3],
        sym: match[4],
      });
    }
  }
  const total = lines.reduce((sum, l) => sum + l.samples, 0);
  if (total === 0) return `${title}: perf recorded nothing`;
  const binary = Deno.execPath();
  const denoOffsets = lines.filter((l) => l.dso === "deno" && /^0x[0-9a-f]+$/.test(l.sym))
    .map((l) => parseInt(l.sym, 16));
  const denoClasses = await classifyDenoAddresses(binary, [...new Set(denoOffsets)]);
  const groups = new Map<string, { samples: number; threads: Map<string, number> }>();
  for (const line of lines) {
    let group: string;
    if (line.dso === "[kernel.kallsyms]") group = kernelClass(line.sym);
    else if (line.dso === "deno") {
      group = /^0x/.test(line.sym)
        ? denoClasses.get(parseInt(line.sym, 16)) ?? "deno: other native code (V8, runtime)"
        : "deno: other native code (V8, runtime)";
    } else if (line.dso.startsWith("libc")) {
      group = /mem(move|cpy)/.test(line.sym)
        ? "libc memcpy/memmove"
        : /memset/.test(line.sym)
        ? "libc memset (zero-filling new buffers)"
        : /malloc|free|realloc|calloc|_int_/.test(line.sym)
        ? "libc malloc/free"
        : "libc other";
    } else if (line.dso.startsWith("perf-") || line.dso.includes("[JIT]")) {
      group = "JIT-compiled JavaScript";
    } else group = `${line.dso}`;
    const entry = groups.get(group) ?? { samples: 0, threads: new Map() };
    entry.samples += line.samples;
    const thread = line.comm.replace(/-\d+$/, "-N");
    entry.threads.set(thread, (entry.threads.get(thread) ?? 0) + line.samples);
    groups.set(group, entry);
  }
  const rows = [...groups.entries()].sort((a, b) => b[1].samples - a[1].samples).slice(0, TOP)
    .map(([group, entry]) => {
      const threads = [...entry.threads.entries()].sort((a, b) => b[1] - a[1]).slice(0, 3)
        .map(([t, n]) => `${t} ${((n / entry.samples) * 100).toFixed(0)}%`).join(", ");
      return `  ${(entry.samples / 999).toFixed(2).padStart(6)} s  ${
        ((entry.samples / total) * 100).toFixed(1).padStart(5)
      }%  ${group}  [${threads}]`;
    });
  return `${title} (perf at 999 Hz, every thread, kernel included; ${
    (total / 999).toFixed(2)
  } CPU s sampled):\n${rows.join("\n")}`;
}

/** Every .cpuprofile in `dir`: the main thread's and one per Web Worker. */
async function profiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.name.endsWith(".cpuprofile")) files.push(path.join(dir, entry.name));
  }
  if (files.length === 0) throw new Error(`no .cpuprofile in ${dir}`);
  return files.sort();
}

async function summariseAll(side: string, dir: string): Promise<string> {
  const parts: string[] = [];
  for (const file of await profiles(dir)) {
    const thread = /\.(worker-\d+)\.cpuprofile$/.exec(file)?.[1] ?? "main thread";
    parts.push(
      formatSummary(
        `${side} JS ${thread} (${path.relative(ROOT, file)})`,
        await summarise(file),
        TOP,
      ),
    );
  }
  return parts.join("\n\n");
}

async function profileOne(direction: "upload" | "download", work: string): Promise<string> {
  const outDir = path.join(OUT, direction);
  await Deno.remove(outDir, { recursive: true }).catch(() => {});
  await Deno.mkdir(outDir, { recursive: true });
  const src = path.join(work, "source.bin");
  const tiny = path.join(work, "tiny.bin");
  const script = direction === "upload"
    ? path.join(ROOT, "examples", "noop_recon.sh")
    : path.join(BENCH_DIR, "big_result_recon.sh");
  const server = await ReconServerProcess.start({
    dir: path.join(work, direction),
    script,
    denoFlags: JS_PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${path.join(outDir, "server")}`] : [],
  });
  const serverThreads = new ThreadSampler(server.pid);
  const perfFile = path.join(outDir, "perf.data");
  const perf = await perfStart(perfFile);
  const dl = path.join(work, "dl");
  await Deno.remove(dl, { recursive: true }).catch(() => {});
  const clientArgs = [
    "run",
    "--quiet",
    "--config",
    path.join(ROOT, "deno.json"),
    ...(JS_PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${path.join(outDir, "client")}`] : []),
    ...PERMISSIONS,
    path.join(ROOT, "client.ts"),
    "--opts",
    server.opts,
    "--host",
    "127.0.0.1",
    "--port",
    String(server.port),
    "--download-dir",
    dl,
    "--quiet",
    ...(direction === "upload" ? ["--files", src] : [
      "--files",
      tiny,
      "--recon-options",
      JSON.stringify({ source: src, timing: path.join(work, "timing.txt") }),
    ]),
  ];
  const start = performance.now();
  const client = new Deno.Command(Deno.execPath(), {
    args: clientArgs,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  track(client, "recon-client (profiled)");
  const clientThreads = new ThreadSampler(client.pid);
  const { code, stderr } = await client.output();
  const seconds = (performance.now() - start) / 1000;
  const clientCpu = clientThreads.stop();
  if (code !== 0) {
    await server.stop();
    throw new Error(`client failed: ${new TextDecoder().decode(stderr)}`);
  }
  await new Promise((resolve) => setTimeout(resolve, 500));
  const serverCpu = serverThreads.stop();
  await perfStop(perf);
  await server.stop("SIGINT"); // writes the server's .cpuprofile
  await Deno.remove(dl, { recursive: true }).catch(() => {});
  const [sender, receiver] = direction === "upload" ? ["client", "server"] : ["server", "client"];
  return [
    `=== ${direction}: ${(SIZE / 2 ** 20).toFixed(0)} MiB in ${
      seconds.toFixed(2)
    } s with profilers on (${
      (SIZE / 1e6 / seconds).toFixed(0)
    } MB/s); the ${sender} sends, the ${receiver} receives`,
    `  client threads (CPU s, from /proc/PID/task; sampled every 100 ms):\n${clientCpu}`,
    `  server threads (whole server life, start-up included):\n${serverCpu}`,
    JS_PROFILE ? await summariseAll("client", path.join(outDir, "client")) : "",
    JS_PROFILE ? await summariseAll("server", path.join(outDir, "server")) : "",
    await perfTop(perfFile, "client", client.pid),
    await perfTop(perfFile, "server", server.pid),
  ].filter((part) => part).join("\n\n");
}

const work = await Deno.makeTempDir({ prefix: "recon-profile-" });
try {
  await makeFile(path.join(work, "source.bin"), SIZE);
  await Deno.writeFile(path.join(work, "tiny.bin"), new Uint8Array(1000));
  for (const direction of ["upload", "download"] as const) {
    console.log(await profileOne(direction, work));
    console.log();
  }
  console.log(`raw profiles kept in ${OUT} (open .cpuprofile files in Chrome DevTools)`);
} finally {
  await stopAll();
  await Deno.remove(work, { recursive: true }).catch(() => {});
}
