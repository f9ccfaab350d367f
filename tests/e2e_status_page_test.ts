/**
 * End to end, the status page (issue 16): a real `bin/recon-server` with HTTP_LISTEN on
 * 127.0.0.1 (port 0) holding a failed job, a running job that printed `PROGRESS 37`
 * and a queued one, its page `/` loaded in headless Chromium (Debian package
 * `chromium`; the test fails without it):
 *
 * - `--dump-dom` shows the running job with its progress, the queue and the failed
 *   job, and no input file name;
 * - `--screenshot` saves `test-artifacts/status_page.png` (1280 × 900) for people to
 *   look at;
 * - with `--blink-settings=scriptEnabled=false` the page renders the same (and a
 *   probe page shows that no script runs). Chromium's `--dump-dom` and `--screenshot`
 *   print nothing then (they read the page with a script), so this load goes through
 *   the DevTools protocol: the DOM is read with `DOM.getOuterHTML`, which runs no
 *   script, and `test-artifacts/status_page_no_script.png` is saved;
 * - once released, both jobs are listed as succeeded;
 * - the server has a DICOM destination on a closed loopback port (issue 17): a job
 *   that succeeded at once with a DICOM result is in the Deliveries section as
 *   retrying, with the connection's error, in the Deliveries card and as `PACS
 *   retrying 0/1` among the finished jobs, and its result's name is nowhere.
 *
 * Every Chromium is stopped by PID (SIGKILL) when it takes too long.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { makeSeries } from "./support/dicom_series.ts";
import { E2EServer, ROOT, tempDir, UUID, waitFor } from "./support/e2e.ts";

/** Where Chromium is looked for: CHROMIUM, else on PATH. */
const CHROMIUM = Deno.env.get("CHROMIUM") ?? "chromium";
/** The screenshots this test leaves for people to look at (test-artifacts/ is git-ignored). */
const ARTIFACTS = path.join(ROOT, "test-artifacts");
const SCREENSHOT = path.join(ARTIFACTS, "status_page.png");
const SCREENSHOT_NO_SCRIPT = path.join(ARTIFACTS, "status_page_no_script.png");
/** A name that must never reach the page (it could be a patient's). */
const SECRET_NAME = "PATIENT_DOE_JOHN_1961.7";
/** How long one Chromium run may take before it is killed. */
const CHROMIUM_TIMEOUT_MS = 60_000;

/**
 * Runs its job until the file `release` beside it exists (at most 120 s), after
 * printing `PROGRESS 37`; with `--fail CODE` it fails at once instead, with `--dicom 1`
 * it succeeds at once with the DICOM file `result.dcm` beside it as its result.
 */
const STATUS_PAGE_SCRIPT = `#!/bin/sh
set -eu
shift
out=\${RECON_OUTPUT_DIR:?RECON_OUTPUT_DIR is not set}
here=$(dirname "$0")
while [ "$#" -ge 2 ]; do
	case $1 in
	--fail) echo "failing on purpose" >&2; exit "$2" ;;
	--dicom) cp "$here/result.dcm" "$out/PATIENT_DOE_JOHN_image.dcm"; exit 0 ;;
	esac
	shift 2
done
echo "PROGRESS 37"
i=0
while [ ! -e "$here/release" ]; do
	i=$((i + 1))
	[ "$i" -le 2400 ] || { echo "gave up waiting for $here/release" >&2; exit 9; }
	sleep 0.05
done
printf 'image\\n' >"$out/image_0001.dcm"
`;

/** The common flags: headless, no sandbox (root in a container), a profile of its own. */
function chromiumArgs(profile: string, args: string[]): string[] {
  return [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    `--user-data-dir=${profile}`,
    ...args,
  ];
}

/** Start Chromium; fails with the install command when it is missing. */
function spawnChromium(args: string[], stdout: "piped" | "null"): Deno.ChildProcess {
  try {
    return new Deno.Command(CHROMIUM, { args, stdin: "null", stdout, stderr: "piped" }).spawn();
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(
        "chromium is not installed: apt-get install chromium (or run scripts/ensure-test-deps)",
      );
    }
    throw error;
  }
}

/** Chromium's stderr without the D-Bus complaints of a machine without a session bus. */
function chromiumLog(stderr: string): string {
  return stderr.split("\n").filter((line) => !/dbus|^\s*$/.test(line)).join("\n").slice(-3000);
}

/** Kill `child` by PID (SIGKILL) after `ms`; returns the function that cancels it. */
function killAfter(child: Deno.ChildProcess, ms: number, onKill: () => void): () => void {
  const timer = setTimeout(() => {
    onKill();
    try {
      Deno.kill(child.pid, "SIGKILL");
    } catch { /* exited meanwhile */ }
  }, ms);
  return () => clearTimeout(timer);
}

/** Run headless Chromium with `args` to its end; returns its stdout. */
async function chromium(args: string[]): Promise<string> {
  await using profile = await tempDir("recon_chromium_");
  const child = spawnChromium(chromiumArgs(profile.path, args), "piped");
  let timedOut = false;
  const cancel = killAfter(child, CHROMIUM_TIMEOUT_MS, () => (timedOut = true));
  try {
    const output = await child.output();
    const stderr = new TextDecoder().decode(output.stderr);
    assert.ok(
      !timedOut,
      `chromium ${args.join(" ")} took over ${CHROMIUM_TIMEOUT_MS} ms; killed it:
${chromiumLog(stderr)}`,
    );
    assert.equal(output.code, 0, `chromium ${args.join(" ")} failed:\n${chromiumLog(stderr)}`);
    return new TextDecoder().decode(output.stdout);
  } finally {
    cancel();
  }
}

/** The page's DOM as Chromium builds it (`--dump-dom`). */
async function dumpDom(url: string): Promise<string> {
  const dom = await chromium(["--dump-dom", url]);
  assert.match(dom, /<html/, `chromium --dump-dom ${url} printed no document:\n${dom}`);
  return dom;
}

/** A DevTools protocol connection (flattened sessions) over Chromium's WebSocket. */
class DevTools {
  #ws: WebSocket;
  #next = 1;
  #pending = new Map<number, { resolve: (r: unknown) => void; reject: (e: Error) => void }>();
  #waiters: { test: (m: CdpMessage) => boolean; resolve: (m: CdpMessage) => void }[] = [];
  #closed: Promise<void>;
  #gone?: Error;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.onmessage = (event) => {
      const message = JSON.parse(event.data) as CdpMessage;
      if (message.id !== undefined) {
        const pending = this.#pending.get(message.id);
        this.#pending.delete(message.id);
        if (message.error) pending?.reject(new Error(message.error.message));
        else pending?.resolve(message.result);
        return;
      }
      const index = this.#waiters.findIndex((waiter) => waiter.test(message));
      if (index >= 0) this.#waiters.splice(index, 1)[0].resolve(message);
    };
    this.#closed = new Promise((resolve) => {
      ws.onclose = () => {
        this.#gone = new Error("chromium closed its DevTools connection");
        for (const pending of this.#pending.values()) pending.reject(this.#gone);
        this.#pending.clear();
        resolve();
      };
    });
  }

  static async connect(url: string): Promise<DevTools> {
    const ws = new WebSocket(url);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error(`cannot connect to chromium's DevTools at ${url}`));
    });
    return new DevTools(ws);
  }

  /** Call `method`; resolves with its result. */
  send<T>(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<T> {
    if (this.#gone) return Promise.reject(this.#gone);
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (r: unknown) => void, reject });
      this.#ws.send(JSON.stringify({ id, method, params, sessionId }));
    });
  }

  /** The next event matching `test` (register before causing it). */
  event(test: (message: CdpMessage) => boolean): Promise<CdpMessage> {
    return new Promise((resolve) => this.#waiters.push({ test, resolve }));
  }

  async close(): Promise<void> {
    if (this.#ws.readyState !== WebSocket.CLOSED) this.#ws.close();
    await this.#closed;
  }
}

interface CdpMessage {
  id?: number;
  method?: string;
  sessionId?: string;
  result?: unknown;
  error?: { message: string };
}

/** Decode base64 (a screenshot from the DevTools protocol). */
function fromBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (char) => char.charCodeAt(0));
}

/**
 * Load `url` in Chromium started with `--blink-settings=scriptEnabled=false`, after a
 * probe page whose script would change its text: returns the probe's DOM, the page's
 * DOM and a screenshot of the page, all read over the DevTools protocol (no script).
 */
async function loadWithoutScript(
  url: string,
): Promise<{ probe: string; dom: string; png: Uint8Array }> {
  await using profile = await tempDir("recon_chromium_");
  const child = spawnChromium(
    chromiumArgs(profile.path, [
      "--blink-settings=scriptEnabled=false",
      "--remote-debugging-port=0",
      "--remote-allow-origins=*",
      "--window-size=1280,900",
      "about:blank",
    ]),
    "null",
  );
  let timedOut = false;
  const cancel = killAfter(child, CHROMIUM_TIMEOUT_MS, () => (timedOut = true));
  let stderr = "";
  let exited = false;
  const status = child.status.then((value) => {
    exited = true;
    return value;
  });
  const reading = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) stderr += chunk;
  })();
  let devtools: DevTools | undefined;
  try {
    const endpoint = await waitFor("chromium's DevTools endpoint", () => {
      if (timedOut) throw new Error(`chromium took over ${CHROMIUM_TIMEOUT_MS} ms; killed it`);
      if (exited) throw new Error("chromium exited before it listened for DevTools");
      return /DevTools listening on (ws:\/\/\S+)/.exec(stderr)?.[1];
    }, { timeoutMs: CHROMIUM_TIMEOUT_MS });
    devtools = await DevTools.connect(endpoint);
    const { targetId } = await devtools.send<{ targetId: string }>("Target.createTarget", {
      url: "about:blank",
    });
    const { sessionId } = await devtools.send<{ sessionId: string }>("Target.attachToTarget", {
      targetId,
      flatten: true,
    });
    const tab = devtools;
    await tab.send("Page.enable", {}, sessionId);
    await tab.send("Emulation.setDeviceMetricsOverride", {
      width: 1280,
      height: 900,
      deviceScaleFactor: 1,
      mobile: false,
    }, sessionId);
    const load = async (address: string) => {
      const loaded = tab.event((m) =>
        m.method === "Page.loadEventFired" && m.sessionId === sessionId
      );
      await tab.send("Page.navigate", { url: address }, sessionId);
      await loaded;
      const { root } = await tab.send<{ root: { nodeId: number } }>(
        "DOM.getDocument",
        { depth: -1 },
        sessionId,
      );
      const { outerHTML } = await tab.send<{ outerHTML: string }>(
        "DOM.getOuterHTML",
        { nodeId: root.nodeId },
        sessionId,
      );
      return outerHTML;
    };
    const probe = await load(
      `data:text/html,<p id="probe">static</p><script>document.getElementById("probe").textContent = "a script ran"</script>`,
    );
    const dom = await load(url);
    const { data } = await tab.send<{ data: string }>(
      "Page.captureScreenshot",
      { format: "png" },
      sessionId,
    );
    await devtools.send("Browser.close").catch(() => {});
    return { probe, dom, png: fromBase64(data) };
  } catch (error) {
    throw new Error(`${(error as Error).message}\nchromium's log:\n${chromiumLog(stderr)}`);
  } finally {
    await devtools?.close();
    // Browser.close ends it; a Chromium that does not is killed by the timer.
    await status;
    cancel();
    await reading;
  }
}

/** The text of the `<section id="ID">` in `dom`, tags removed and spaces collapsed. */
function sectionText(dom: string, id: string): string {
  const match = new RegExp(`<section id="${id}">([\\s\\S]*?)</section>`).exec(dom);
  assert.ok(match, `the page has a section ${id}:\n${dom.slice(0, 3000)}`);
  return match[1].replace(/<[^>]*>/g, " ").replace(/\s+/g, " ");
}

/** What every load of the page must show: the four jobs where they belong. */
function checkPage(
  dom: string,
  jobs: { failed: string; delivering: string; running: string; queued: string },
): void {
  assert.match(dom, /<title>recon · /);
  const running = sectionText(dom, "running");
  assert.match(running, new RegExp(`${jobs.running} .*37%`), `the running job and its progress`);
  assert.match(dom, /aria-valuenow="37"><span style="width:37\.0%">/);
  assert.match(sectionText(dom, "queue"), new RegExp(`1 ${jobs.queued} \\S+ low`));
  assert.match(sectionText(dom, "finished"), new RegExp(`${jobs.failed} \\S+ failed`));
  assert.match(sectionText(dom, "chart"), /hour \(UTC\).*jobs finished.*input queued/);
  assert.match(
    sectionText(dom, "deliveries"),
    new RegExp(`${jobs.delivering} PACS retrying 0/1 (\\([^)]*\\) )?\\d+ \\d\\d:\\d\\d:\\d\\d \\S`),
    "the delivery to the closed port is retried, its error shown",
  );
  assert.match(sectionText(dom, "finished"), new RegExp(`${jobs.delivering} .*PACS retrying 0/1`));
  assert.match(dom, /<div class="card tone-warn"><div class="label">Deliveries<\/div>/);
  assert.ok(!dom.includes(SECRET_NAME), "no input file name on the page");
  assert.ok(!dom.includes("PATIENT"), "no part of an input file name on the page");
}

/** Width and height from a PNG's IHDR chunk. */
function pngSize(bytes: Uint8Array): { width: number; height: number } {
  const signature = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  assert.deepEqual([...bytes.subarray(0, 8)], signature, "the screenshot is a PNG");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { width: view.getUint32(16), height: view.getUint32(20) };
}

Deno.test("the status page in headless Chromium shows a running job with its progress, the queue and a failed job, without file names and without JavaScript", async () => {
  await using files = await tempDir("recon_status_page_");
  const script = path.join(files.path, "recon.sh");
  await Deno.writeTextFile(script, STATUS_PAGE_SCRIPT, { mode: 0o755 });
  const [dicom] = await makeSeries(path.join(files.path, "series"), 1, { syntax: "explicit" });
  await Deno.copyFile(dicom.path, path.join(files.path, "result.dcm"));
  // A loopback port nobody listens on: every delivery attempt is refused at once.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closedPort = listener.addr.port;
  listener.close();
  await using server = await E2EServer.start({
    script,
    options: {
      HTTP_LISTEN: "127.0.0.1:0",
      MAX_CONCURRENT_JOBS: 1,
      DISK_FREE_MARGIN: 0,
      DESTINATION_PACS: `dicom://NOBODY@127.0.0.1:${closedPort}?timeout=5`,
      DEFAULT_DESTINATIONS: "PACS",
    },
  });
  const url = `${server.httpUrl}/`;
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
  const input = path.join(files.path, SECRET_NAME);
  await Deno.writeTextFile(input, "raw k-space of one scan\n");
  const detached = async (args: string[]) => {
    const result = await server.client(["--files", input, "--detach", ...args]);
    assert.equal(result.code, 0, `--detach failed:\n${result.stderr}`);
    assert.match(result.stdout, new RegExp(`^${UUID.source}\n$`));
    return result.stdout.trim();
  };
  const failed = await detached(["--recon-options", JSON.stringify({ fail: 3 })]);
  await server.waitForLog(new RegExp(`job ${failed}: failed`));
  const delivering = await detached(["--recon-options", JSON.stringify({ dicom: 1 })]);
  await server.waitForLog(new RegExp(`job ${delivering}: succeeded`));
  const running = await detached([]);
  const queued = await detached(["--priority", "low"]);
  const jobs = { failed, delivering, running, queued };
  await waitFor("the page to show PROGRESS 37 and the delivery retrying", async () => {
    const response = await fetch(url);
    const html = await response.text();
    return response.status === 200 && html.includes("<b>37%</b>") &&
      html.includes("PACS retrying 0/1");
  }, { timeoutMs: 30_000, intervalMs: 200 });

  checkPage(await dumpDom(url), jobs);

  await Deno.mkdir(ARTIFACTS, { recursive: true });
  await Deno.remove(SCREENSHOT).catch(() => {});
  await chromium([
    `--screenshot=${SCREENSHOT}`,
    "--window-size=1280,900",
    "--hide-scrollbars",
    url,
  ]);
  const png = await Deno.readFile(SCREENSHOT);
  assert.deepEqual(pngSize(png), { width: 1280, height: 900 });
  assert.ok(png.length > 20_000, `the screenshot has content (${png.length} bytes)`);

  const noScript = await loadWithoutScript(url);
  assert.match(noScript.probe, /<p id="probe">static<\/p>/, "no script runs in this Chromium");
  checkPage(noScript.dom, jobs);
  await Deno.writeFile(SCREENSHOT_NO_SCRIPT, noScript.png);
  assert.deepEqual(pngSize(noScript.png), { width: 1280, height: 900 });
  assert.ok(noScript.png.length > 20_000, "the page renders without script");

  // Released, both jobs finish; the page lists them beside the failed one.
  await Deno.writeTextFile(path.join(files.path, "release"), "");
  await waitFor("both jobs to finish", async () => {
    const html = await (await fetch(url)).text();
    const finished = sectionText(html, "finished");
    return finished.includes(`${running} `) && finished.includes(`${queued} `) &&
      sectionText(html, "running").includes("No job is running.");
  }, { timeoutMs: 30_000, intervalMs: 200 });
  const dom = await dumpDom(url);
  const finished = sectionText(dom, "finished");
  for (const id of [running, queued]) assert.match(finished, new RegExp(`${id} \\S+ succeeded`));
  assert.match(finished, new RegExp(`${failed} \\S+ failed`));
  assert.match(sectionText(dom, "queue"), /The queue is empty\./);
  assert.ok(!dom.includes("PATIENT"), "no input file name once the jobs are done");
});
