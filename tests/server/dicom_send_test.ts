/**
 * Tests for lib/server/dicom_send.ts against a real Orthanc (tests/support/orthanc.ts)
 * and series made by dcmtk (tests/support/dicom_series.ts): explicit and implicit VR
 * series stored with their SOP Instance UIDs; files that are not Part 10 or lack their
 * UIDs never reach the DICOM library; a per-file 0xA700; an unaccepted SOP class; a
 * wrong called AE title; a refused port; a silent listener; Orthanc killed mid-send;
 * TLS with a private CA (and the wrong CA); batches of MAX_INSTANCES_PER_ASSOCIATION;
 * C-ECHO; cancellation. Raw peers on loopback answer with an A-ABORT, a transient
 * A-ASSOCIATE-RJ, or a close, to check what those become.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { pathToFileURL } from "node:url";
import type { Destination } from "../../lib/opts/mod.ts";
import { isNotDicom, readDicomHeader, readDicomStart } from "../../lib/server/dicom_file.ts";
import {
  DATA_SET_START,
  echo,
  type Instance,
  MAX_INSTANCES_PER_ASSOCIATION,
  sendInstances,
} from "../../lib/server/dicom_send.ts";
import {
  abortMessage,
  rejectionMessage,
  statusText,
  storedStatus,
} from "../../lib/server/dicom_messages.ts";
import {
  EXPLICIT_VR_LE,
  IMPLICIT_VR_LE,
  makeSeries,
  type SeriesFile,
} from "../support/dicom_series.ts";
import { makeTestPki, Orthanc } from "../support/orthanc.ts";
import { delay, ROOT, run } from "../support/e2e.ts";

async function tempDir(): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "recon-dicom-send-" });
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

function destination(port: number, overrides: Partial<Destination> = {}): Destination {
  return {
    name: "PACS",
    url: `dicom://ORTHANC@127.0.0.1:${port}`,
    calledAet: "ORTHANC",
    host: "127.0.0.1",
    port,
    callingAet: "RECON",
    timeoutS: 10,
    ...overrides,
  };
}

function to(orthanc: Orthanc, overrides: Partial<Destination> = {}): Destination {
  return destination(orthanc.dicomPort, { calledAet: orthanc.aet, ...overrides });
}

/** The instances of files as the caller of sendInstances gets them: from their header. */
async function instancesOf(files: { path: string }[]): Promise<Instance[]> {
  return await Promise.all(files.map(async (file) => {
    const header = await readDicomHeader(file.path);
    if (isNotDicom(header)) throw new Error(`${file.path}: ${header.notDicom}`);
    return {
      path: file.path,
      sopClassUid: header.sopClassUid,
      sopInstanceUid: header.sopInstanceUid,
    };
  }));
}

async function storedUids(orthanc: Orthanc): Promise<string[]> {
  return (await orthanc.instances()).map((i) => i.sopInstanceUid).sort();
}

function uids(files: SeriesFile[]): string[] {
  return files.map((f) => f.sopInstanceUid).sort();
}

function oneLine(text: string | undefined): string {
  assert.ok(text !== undefined && text.length > 0 && !text.includes("\n"), `one line: ${text}`);
  return text;
}

/** A port nothing listens on (we bound it and let it go). */
function closedPort(): number {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  return (listener.addr as Deno.NetAddr).port;
}

/**
 * A TCP listener on a free loopback port that hands each connection to {@link handle}
 * and, when disposed, stops listening, closes every connection still in {@link conns}
 * and waits for the handlers.
 */
abstract class LoopbackServer implements AsyncDisposable {
  readonly #listener: Deno.Listener;
  readonly #tasks: Promise<void>[] = [];
  readonly #accepting: Promise<void>;
  /** Connections to close at dispose; a handler removes one it closed itself. */
  protected readonly conns = new Set<Deno.Conn>();
  connections = 0;

  constructor() {
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#accepting = this.#accept();
  }

  get port(): number {
    return (this.#listener.addr as Deno.NetAddr).port;
  }

  protected abstract handle(conn: Deno.Conn): Promise<void>;

  async #accept(): Promise<void> {
    try {
      for await (const conn of this.#listener) {
        this.connections++;
        this.conns.add(conn);
        this.#tasks.push(this.handle(conn));
      }
    } catch { /* listener closed */ }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#listener.close();
    await this.#accepting;
    for (const conn of [...this.conns]) {
      this.conns.delete(conn);
      try {
        conn.close();
      } catch { /* already closed */ }
    }
    await Promise.all(this.#tasks);
  }
}

/**
 * A loopback TCP peer for what Orthanc will not do: on each connection it waits for the
 * first bytes (the A-ASSOCIATE-RQ), then writes `reply` (if any) and closes when `close`,
 * else holds the connection silent until disposed.
 */
class RawPeer extends LoopbackServer {
  constructor(readonly reply: Uint8Array | undefined, readonly close: boolean) {
    super();
  }

  protected async handle(conn: Deno.Conn): Promise<void> {
    try {
      const buffer = new Uint8Array(65536);
      if (await conn.read(buffer) === null) return;
      if (this.reply) await conn.write(this.reply);
      if (this.close) {
        this.conns.delete(conn);
        conn.close();
        return;
      }
      while (await conn.read(buffer) !== null) { /* say nothing */ }
    } catch { /* closed by dispose */ }
  }
}

/** A-ASSOCIATE-RJ (PS3.8 §9.3.4): type 3, length 4, reserved, result, source, reason. */
function associateReject(result: number, source: number, reason: number): Uint8Array {
  return new Uint8Array([0x03, 0, 0, 0, 0, 4, 0, result, source, reason]);
}

/** A-ABORT (PS3.8 §9.3.8): type 7, length 4, two reserved, source, reason. */
function abortPdu(source: number, reason: number): Uint8Array {
  return new Uint8Array([0x07, 0, 0, 0, 0, 4, 0, 0, source, reason]);
}

/**
 * A TCP forwarder in front of Orthanc that counts connections: one connection per
 * association for our sender. With `pauseMs`, it waits that long after passing on each
 * read of ours (at most 64 KiB): a slow link.
 */
class CountingForwarder extends LoopbackServer {
  /** `onConnect` runs before a connection is forwarded (the association waits for it). */
  constructor(
    readonly targetPort: number,
    readonly onConnect?: () => Promise<void>,
    readonly pauseMs = 0,
  ) {
    super();
  }

  protected async handle(client: Deno.Conn): Promise<void> {
    let server: Deno.Conn | undefined;
    const closeBoth = () => {
      for (const conn of [client, server]) {
        if (conn === undefined || !this.conns.delete(conn)) continue;
        try {
          conn.close();
        } catch { /* already closed */ }
      }
    };
    try {
      await this.onConnect?.();
      server = await Deno.connect({ hostname: "127.0.0.1", port: this.targetPort });
      this.conns.add(server);
      const pump = async (from: Deno.Conn, into: Deno.Conn, pauseMs: number) => {
        const buffer = new Uint8Array(65536);
        try {
          while (true) {
            const n = await from.read(buffer);
            if (n === null) break;
            let at = 0;
            while (at < n) at += await into.write(buffer.subarray(at, n));
            if (pauseMs > 0) await delay(pauseMs);
          }
        } catch { /* closed */ }
        closeBoth();
      };
      await Promise.all([pump(client, server, this.pauseMs), pump(server, client, 0)]);
    } catch {
      closeBoth();
    }
  }
}

Deno.test("sendInstances() stores an explicit and an implicit VR series in Orthanc with their SOP Instance UIDs", async () => {
  await using tmp = await tempDir();
  await using orthanc = await Orthanc.start({ checkCalledAet: true });
  const explicit = await makeSeries(path.join(tmp.dir, "explicit"), 32, { syntax: "explicit" });
  const implicit = await makeSeries(path.join(tmp.dir, "implicit"), 32, { syntax: "implicit" });
  for (const files of [explicit, implicit]) {
    const started = performance.now();
    const report = await sendInstances(to(orthanc), await instancesOf(files));
    const ms = performance.now() - started;
    console.log(`32 files to Orthanc in ${ms.toFixed(0)} ms`);
    assert.equal(report.error, undefined);
    assert.equal(report.stores, 32);
    assert.deepEqual(
      report.results,
      files.map((f) => ({ path: f.path, arrived: true, status: 0, requested: true })),
    );
  }
  assert.deepEqual(await storedUids(orthanc), uids([...explicit, ...implicit]));
  const [first] = await orthanc.instances();
  const metadata = await orthanc.metadata(first.id);
  assert.equal(metadata.RemoteAET, "RECON");
  assert.equal(metadata.CalledAET, "ORTHANC");
  assert.equal(metadata.SopClassUid, explicit[0].sopClassUid);
  // Each arrived in its own transfer syntax: nothing was converted on the way.
  const implicitUids = new Set(uids(implicit));
  for (const instance of await orthanc.instances()) {
    const syntax = implicitUids.has(instance.sopInstanceUid) ? IMPLICIT_VR_LE : EXPLICIT_VR_LE;
    assert.equal((await orthanc.metadata(instance.id)).TransferSyntax, syntax);
  }
});

/** The file at `file` with `bytes` put into its data set at `at` bytes after its start. */
async function spliceDataSet(file: string, at: number, bytes: Uint8Array): Promise<void> {
  const start = await readDicomStart(file, new Uint8Array(64 * 1024));
  if (isNotDicom(start)) throw new Error(start.notDicom);
  const old = await Deno.readFile(file);
  const cut = start.dataSetOffset + at;
  const out = new Uint8Array(old.length + bytes.length);
  out.set(old.subarray(0, cut));
  out.set(bytes, cut);
  out.set(old.subarray(cut), cut + bytes.length);
  await Deno.writeFile(file, out);
}

/** The data set of a Part 10 file: what follows its file meta information. */
async function dataSetOf(bytes: Uint8Array): Promise<Uint8Array> {
  const file = await Deno.makeTempFile({ prefix: "recon-dataset-" });
  try {
    await Deno.writeFile(file, bytes);
    const start = await readDicomStart(file, new Uint8Array(64 * 1024));
    if (isNotDicom(start)) throw new Error(start.notDicom);
    return bytes.subarray(start.dataSetOffset);
  } finally {
    await Deno.remove(file);
  }
}

Deno.test("sendInstances() sends a file in the transfer syntax the PACS accepted as it is, over several PDUs: Orthanc stores its data set byte for byte, Latin-1 included", async () => {
  await using tmp = await tempDir();
  await using orthanc = await Orthanc.start();
  // 128 KiB of pixels: several P-DATA-TF PDUs per file at Orthanc's 16 KiB maximum PDU.
  const files = await makeSeries(tmp.dir, 2, { syntax: "explicit", size: 256 });
  // (0008,0005) Specific Character Set "ISO_IR 100" as the first element, and a Latin-1
  // name of the same length: the DICOM library would rewrite both as UTF-8.
  const latin1 = (text: string) => Uint8Array.from(text, (c) => c.charCodeAt(0));
  for (const file of files) {
    await spliceDataSet(
      file.path,
      0,
      Uint8Array.of(0x08, 0x00, 0x05, 0x00, 0x43, 0x53, 10, 0, ...latin1("ISO_IR 100")),
    );
    const bytes = await Deno.readFile(file.path);
    const name = new TextDecoder("latin1").decode(bytes).indexOf("Test^Phantom");
    bytes.set(latin1("T\xe9st^Ph\xe4ntom"), name);
    await Deno.writeFile(file.path, bytes);
  }
  const report = await sendInstances(to(orthanc), await instancesOf(files));
  assert.equal(report.error, undefined);
  assert.ok(report.results.every((r) => r.arrived), JSON.stringify(report.results));
  for (const stored of await orthanc.instances()) {
    const file = files.find((f) => f.sopInstanceUid === stored.sopInstanceUid)!;
    const response = await fetch(`${orthanc.url}/instances/${stored.id}/file`);
    const received = new Uint8Array(await response.arrayBuffer());
    assert.deepEqual(
      await dataSetOf(received),
      await dataSetOf(await Deno.readFile(file.path)),
      "the stored data set is the file's",
    );
    const tags = await orthanc.get<Record<string, string>>(
      `/instances/${stored.id}/tags?simplify`,
    );
    assert.equal(tags.SpecificCharacterSet, "ISO_IR 100");
    assert.equal(tags.PatientName, "T\xe9st^Ph\xe4ntom");
  }
});

Deno.test("sendInstances() sends a file whose SOP UIDs come after more than DATA_SET_START bytes of its data set", async () => {
  await using tmp = await tempDir();
  await using orthanc = await Orthanc.start();
  const files = await makeSeries(tmp.dir, 2, { syntax: "implicit" });
  // Implicit VR: (0008,0008) Image Type, first in the data set, made DATA_SET_START long.
  const values = "DERIVED\\SECONDARY\\".repeat(Math.ceil(DATA_SET_START / 19)).slice(
    0,
    DATA_SET_START,
  );
  const element = new Uint8Array(8 + values.length);
  const view = new DataView(element.buffer);
  view.setUint16(0, 0x0008, true);
  view.setUint16(2, 0x0008, true);
  view.setUint32(4, values.length, true);
  element.set(new TextEncoder().encode(values), 8);
  for (const file of files) {
    // The file's own (0008,0008) goes: a data set has each tag once.
    const bytes = await Deno.readFile(file.path);
    const start = await readDicomStart(file.path, new Uint8Array(64 * 1024));
    if (isNotDicom(start)) throw new Error(start.notDicom);
    const at = start.dataSetOffset;
    const own = 8 + new DataView(bytes.buffer).getUint32(at + 4, true);
    assert.equal(new DataView(bytes.buffer).getUint16(at + 2, true), 0x0008);
    await Deno.writeFile(
      file.path,
      new Uint8Array([...bytes.subarray(0, at), ...bytes.subarray(at + own)]),
    );
    await spliceDataSet(file.path, 0, element);
  }
  const report = await sendInstances(to(orthanc), await instancesOf(files));
  assert.equal(report.error, undefined);
  assert.ok(report.results.every((r) => r.arrived), JSON.stringify(report.results));
  assert.deepEqual(await storedUids(orthanc), uids(files));
});

Deno.test("sendInstances() never hands the library a file that is not Part 10 or lacks its UIDs", async () => {
  await using tmp = await tempDir();
  await using orthanc = await Orthanc.start();
  const good = await makeSeries(path.join(tmp.dir, "good"), 2, { syntax: "explicit" });
  // Meta information names a SOP class, the data set has none: the file that crashes
  // dcmjs-dimse with an uncatchable TypeError if it ever gets it.
  const [noClass] = await makeSeries(path.join(tmp.dir, "noclass"), 1, {
    syntax: "explicit",
    omit: ["SOPClassUID"],
  });
  const text = path.join(tmp.dir, "notes.dcm");
  await Deno.writeTextFile(text, "a text file with a .dcm name\n".repeat(10));
  const empty = path.join(tmp.dir, "empty.dcm");
  await Deno.writeFile(empty, new Uint8Array());
  // Part 10 whose meta information lacks (0002,0003): the first 300 bytes of a good file
  // with the element's tag renamed to a private one.
  const noInstance = path.join(tmp.dir, "noinstance.dcm");
  const bytes = await Deno.readFile(good[0].path);
  for (let at = 132; at + 4 < bytes.length; at++) {
    if (
      bytes[at] === 0x02 && bytes[at + 1] === 0 && bytes[at + 2] === 0x03 && bytes[at + 3] === 0
    ) {
      bytes[at + 2] = 0x77;
      break;
    }
  }
  await Deno.writeFile(noInstance, bytes);
  const missing = path.join(tmp.dir, "missing.dcm");
  const [goodA, goodB] = await instancesOf(good);
  const instances: Instance[] = [
    goodA,
    { path: text, sopClassUid: goodA.sopClassUid, sopInstanceUid: "2.25.1" },
    { path: empty, sopClassUid: goodA.sopClassUid, sopInstanceUid: "2.25.2" },
    { path: noInstance, sopClassUid: goodA.sopClassUid, sopInstanceUid: good[0].sopInstanceUid },
    {
      path: noClass.path,
      sopClassUid: noClass.sopClassUid,
      sopInstanceUid: noClass.sopInstanceUid,
    },
    { path: missing, sopClassUid: goodA.sopClassUid, sopInstanceUid: "2.25.3" },
    // The file is not the one the caller read: another instance now.
    { path: goodB.path, sopClassUid: goodB.sopClassUid, sopInstanceUid: "2.25.4" },
    { ...goodB },
  ];
  const report = await sendInstances(to(orthanc), instances);
  assert.equal(report.error, undefined);
  assert.equal(report.stores, 2);
  const [a, txt, emp, noInst, noCls, gone, changed, b] = report.results;
  assert.equal(a.arrived, true);
  assert.equal(b.arrived, true);
  for (const r of [txt, emp, noInst, noCls, gone, changed]) {
    assert.equal(r.arrived, false);
    assert.notEqual(r.requested, true, `${r.path} must never be sent`);
    assert.match(oneLine(r.reason), /^not sent: /);
  }
  assert.match(txt.reason!, /not a DICOM Part 10 file: no DICM marker at byte 128/);
  assert.match(emp.reason!, /not a DICOM Part 10 file: the file is empty/);
  assert.match(noInst.reason!, /no Media Storage SOP Instance UID \(0002,0003\)/);
  assert.match(noCls.reason!, /data set's SOP Class\/Instance UID \(0008,0016\/0018\) \(none\)/);
  assert.match(gone.reason!, /cannot read the file/);
  assert.match(changed.reason!, /the file changed: its header now names SOP instance/);
  assert.deepEqual(await storedUids(orthanc), uids(good));
});

Deno.test("sendInstances() reports a file Orthanc refuses with 0xA700 and stores the others", async () => {
  await using tmp = await tempDir();
  await using orthanc = await Orthanc.start();
  const good = await makeSeries(path.join(tmp.dir, "good"), 3, { syntax: "explicit" });
  const [bad] = await makeSeries(path.join(tmp.dir, "bad"), 1, {
    syntax: "explicit",
    omit: ["StudyInstanceUID"],
  });
  const report = await sendInstances(
    to(orthanc),
    await instancesOf([good[0], bad, good[1], good[2]]),
  );
  assert.equal(report.error, undefined);
  assert.equal(report.stores, 4);
  const refused = report.results[1];
  assert.equal(refused.arrived, false);
  assert.equal(refused.requested, true);
  assert.equal(refused.status, 0xa700);
  assert.match(
    oneLine(refused.reason),
    /^refused: C-STORE status 0xA700 \(refused: out of resources\)/,
  );
  assert.deepEqual(report.results.filter((r) => r.arrived).length, 3);
  assert.deepEqual(await storedUids(orthanc), uids(good));
});

Deno.test("sendInstances() reports per file a SOP class Orthanc accepts no presentation context for", async () => {
  await using tmp = await tempDir();
  await using orthanc = await Orthanc.start();
  const good = await makeSeries(path.join(tmp.dir, "good"), 2, { syntax: "explicit" });
  const odd = await makeSeries(path.join(tmp.dir, "odd"), 2, {
    syntax: "explicit",
    sopClassUid: "1.2.826.0.1.3680043.9.7133.77.1",
  });
  const report = await sendInstances(to(orthanc), await instancesOf([odd[0], ...good, odd[1]]));
  assert.equal(report.error, undefined);
  assert.equal(report.stores, 2);
  for (const r of [report.results[0], report.results[3]]) {
    assert.equal(r.arrived, false);
    assert.notEqual(r.requested, true);
    assert.match(
      oneLine(r.reason),
      /^not sent: destination PACS \(ORTHANC@127\.0\.0\.1:\d+\) accepted no presentation context for its SOP class 1\.2\.826\.0\.1\.3680043\.9\.7133\.77\.1$/,
    );
  }
  assert.deepEqual(await storedUids(orthanc), uids(good));
});

Deno.test("sendInstances() reports a wrong called AE title as a permanent rejection by the PACS and sends nothing", async () => {
  await using tmp = await tempDir();
  await using orthanc = await Orthanc.start({ checkCalledAet: true });
  const files = await makeSeries(tmp.dir, 3, { syntax: "explicit" });
  const report = await sendInstances(
    to(orthanc, { calledAet: "NOTORTHANC" }),
    await instancesOf(files),
  );
  assert.equal(
    oneLine(report.error),
    `destination PACS (NOTORTHANC@127.0.0.1:${orthanc.dicomPort}) rejected the association ` +
      `(permanent, by its DICOM application): the called AE title is not recognized; ` +
      `check the called AE title NOTORTHANC in DESTINATION_PACS`,
  );
  assert.equal(report.stores, 0);
  for (const r of report.results) {
    assert.equal(r.arrived, false);
    assert.equal(r.reason, `not sent: ${report.error}`);
  }
  assert.equal(await orthanc.count(), 0);
});

Deno.test("sendInstances() reports a refused connection at once", async () => {
  await using tmp = await tempDir();
  const files = await makeSeries(tmp.dir, 2, { syntax: "explicit" });
  const port = closedPort();
  const started = performance.now();
  const report = await sendInstances(destination(port), await instancesOf(files));
  assert.ok(performance.now() - started < 2000);
  assert.equal(
    oneLine(report.error),
    `destination PACS (ORTHANC@127.0.0.1:${port}): connection refused (is the PACS running, and is the port right?)`,
  );
  assert.equal(report.stores, 0);
  assert.deepEqual(
    report.results.map((r) => r.reason),
    files.map(() => `not sent: ${report.error}`),
  );
});

Deno.test("sendInstances() and echo() give up on a silent listener within the destination's timeout", async () => {
  await using tmp = await tempDir();
  const files = await makeSeries(tmp.dir, 2, { syntax: "explicit" });
  await using peer = new RawPeer(undefined, false);
  const dest = destination(peer.port, { timeoutS: 1 });
  let started = performance.now();
  const report = await sendInstances(dest, await instancesOf(files));
  let ms = performance.now() - started;
  assert.ok(ms >= 900 && ms < 1000 + 1500, `gave up after ${ms} ms`);
  assert.equal(
    oneLine(report.error),
    `destination PACS (ORTHANC@127.0.0.1:${peer.port}) did not answer the association request within 1 s`,
  );
  assert.equal(report.stores, 0);
  started = performance.now();
  assert.match(oneLine(await echo(dest)), /did not answer the association request within 1 s$/);
  ms = performance.now() - started;
  assert.ok(ms < 1000 + 1500, `echo gave up after ${ms} ms`);
  assert.equal(peer.connections, 2);
});

Deno.test("sendInstances() surfaces a peer's A-ABORT, a transient rejection and an early close in one line", async () => {
  await using tmp = await tempDir();
  const files = await instancesOf(await makeSeries(tmp.dir, 1, { syntax: "explicit" }));
  const cases: [Uint8Array | undefined, RegExp][] = [
    [abortPdu(2, 1), /\) aborted the association \(by its DICOM upper layer: unrecognized PDU\)$/],
    [
      abortPdu(0, 0),
      /\) aborted the association \(by its DICOM application: no reason given\); does the PACS know our AE title \S+ \(calling= in DESTINATION_\w+\)\?$/,
    ],
    [
      associateReject(2, 3, 1),
      /\) rejected the association \(transient, by its DICOM upper layer \(presentation\)\): temporary congestion$/,
    ],
    [
      associateReject(1, 1, 3),
      /\) rejected the association \(permanent, by its DICOM application\): our calling AE title is not recognized; register the AE title RECON at the PACS or set calling= in DESTINATION_PACS$/,
    ],
    [undefined, /\) closed the connection before accepting the association$/],
  ];
  for (const [reply, pattern] of cases) {
    await using peer = new RawPeer(reply, true);
    const started = performance.now();
    const report = await sendInstances(destination(peer.port, { timeoutS: 5 }), files);
    assert.ok(performance.now() - started < 3000);
    assert.match(oneLine(report.error), pattern);
    assert.equal(report.results[0].arrived, false);
    assert.equal(report.stores, 0);
  }
});

Deno.test("sendInstances() returns partial results when Orthanc is killed mid-send, and a retry of the rest completes", async () => {
  await using tmp = await tempDir();
  await using orthanc = await Orthanc.start();
  // 128 KiB images, so that the send takes long enough to be interrupted.
  const files = await makeSeries(tmp.dir, 120, { syntax: "explicit", size: 256 });
  const instances = await instancesOf(files);
  const sending = sendInstances(to(orthanc, { timeoutS: 5 }), instances);
  let killedAt = -1;
  const deadline = Date.now() + 60_000;
  while (killedAt < 0) {
    const stored = await orthanc.count();
    if (stored >= 10) {
      await orthanc.stop("SIGKILL");
      killedAt = stored;
    } else if (Date.now() > deadline) {
      await orthanc.stop("SIGKILL");
      throw new Error(
        `only ${stored} instances stored after 60 s: ${JSON.stringify(await sending)}`,
      );
    }
    await delay(5);
  }
  const started = performance.now();
  const report = await sending;
  assert.ok(performance.now() - started < 5000, "no hang after the kill");
  const arrived = report.results.filter((r) => r.arrived);
  assert.ok(killedAt >= 10);
  // The instance Orthanc stored as it was killed may not have been answered yet.
  assert.ok(
    arrived.length >= killedAt - 1 && arrived.length < 120,
    `${arrived.length} arrived, ${killedAt} stored`,
  );
  assert.match(oneLine(report.error), /^destination PACS \(ORTHANC@127\.0\.0\.1:\d+\) /);
  assert.ok(report.stores >= arrived.length && report.stores <= arrived.length + 1);
  for (const r of report.results) {
    if (!r.arrived) assert.match(oneLine(r.reason), /^(not sent|no C-STORE response): /);
  }
  // Only the first association was tried: the later ones are not sent at all.
  for (const r of report.results.slice(MAX_INSTANCES_PER_ASSOCIATION)) {
    assert.notEqual(r.requested, true);
  }
  // Every file the PACS confirmed is stored after its restart; send the rest again.
  await orthanc.restart();
  const stored = await storedUids(orthanc);
  for (const [i, r] of report.results.entries()) {
    if (r.arrived) assert.ok(stored.includes(files[i].sopInstanceUid), `${r.path} was confirmed`);
  }
  const rest = instances.filter((_, i) => !report.results[i].arrived);
  const retry = await sendInstances(to(orthanc), rest);
  assert.equal(retry.error, undefined);
  assert.ok(retry.results.every((r) => r.arrived));
  assert.deepEqual(await storedUids(orthanc), uids(files));
});

Deno.test("sendInstances() and echo() use DICOM TLS with a private CA, and refuse the wrong CA or a missing file", async () => {
  await using tmp = await tempDir();
  const pki = await makeTestPki(path.join(tmp.dir, "pki"));
  await using orthanc = await Orthanc.start({
    checkCalledAet: true,
    tls: { certificate: pki.serverCertificate, privateKey: pki.serverKey, trusted: pki.ca },
  });
  const files = await makeSeries(path.join(tmp.dir, "series"), 4, { syntax: "implicit" });
  const instances = await instancesOf(files);
  const tls = { ca: pki.ca, cert: pki.clientCertificate, key: pki.clientKey };
  assert.equal(await echo(to(orthanc, { tls })), undefined);
  const report = await sendInstances(to(orthanc, { tls }), instances);
  assert.equal(report.error, undefined);
  assert.ok(report.results.every((r) => r.arrived));
  assert.deepEqual(await storedUids(orthanc), uids(files));

  const wrong = await sendInstances(to(orthanc, { tls: { ...tls, ca: pki.otherCa } }), instances);
  assert.match(
    oneLine(wrong.error),
    /: TLS failed: .* \(check ca=, cert= and key= of DESTINATION_PACS\)$/,
  );
  assert.equal(wrong.stores, 0);
  assert.match(
    oneLine(await echo(to(orthanc, { tls: { ...tls, ca: pki.otherCa } }))),
    /TLS failed/,
  );

  // Plain TCP to a TLS port: no answer that makes sense, within the timeout.
  assert.match(
    oneLine(await echo(to(orthanc, { timeoutS: 2 }))),
    /(reset the connection \(.*\); if it expects DICOM TLS, use dicom\+tls:\/\/|closed the connection before accepting the association)$/,
  );

  const missing = path.join(tmp.dir, "nope", "ca.pem");
  const unread = await sendInstances(to(orthanc, { tls: { ...tls, ca: missing } }), instances);
  assert.match(
    oneLine(unread.error),
    new RegExp(
      `^destination PACS \\(.*\\): cannot read its TLS CA file ${missing}: .* \\(fix DESTINATION_PACS\\)$`,
    ),
  );
  assert.ok(unread.results.every((r) => r.reason === `not sent: ${unread.error}`));
  assert.match(
    oneLine(await echo(to(orthanc, { tls: { ...tls, key: missing } }))),
    /cannot read its TLS key/,
  );
  assert.equal(await orthanc.count(), 4);
});

Deno.test("sendInstances() sends 120 files over 3 associations of at most MAX_INSTANCES_PER_ASSOCIATION", async () => {
  await using tmp = await tempDir();
  await using orthanc = await Orthanc.start();
  await using forwarder = new CountingForwarder(orthanc.dicomPort);
  const files = await makeSeries(tmp.dir, 120, { syntax: "explicit" });
  const instances = await instancesOf(files);
  const started = performance.now();
  const report = await sendInstances(destination(forwarder.port), instances);
  console.log(
    `120 files to Orthanc (through a forwarder) in ${(performance.now() - started).toFixed(0)} ms`,
  );
  assert.equal(MAX_INSTANCES_PER_ASSOCIATION, 50);
  assert.equal(report.error, undefined);
  assert.equal(report.stores, 120);
  assert.equal(forwarder.connections, 3);
  assert.ok(report.results.every((r) => r.arrived));
  assert.deepEqual(await storedUids(orthanc), uids(files));
});

Deno.test("sendInstances() stops the association when a file's size changed after it was read, before its bytes went: one line naming no file", async () => {
  await using tmp = await tempDir();
  await using orthanc = await Orthanc.start();
  const files = await makeSeries(tmp.dir, 3, { syntax: "explicit", size: 64 });
  const instances = await instancesOf(files);
  const victim = files[1].path;
  const size = (await Deno.stat(victim)).size;
  // Cut short once sendInstances has read every file's start, when it connects.
  await using forwarder = new CountingForwarder(
    orthanc.dicomPort,
    () => Deno.truncate(victim, size - 100),
  );
  const report = await sendInstances(destination(forwarder.port), instances);
  assert.match(
    oneLine(report.error),
    new RegExp(`stopped: a file changed while it was sent \\(${size} → ${size - 100} bytes\\)$`),
  );
  assert.ok(!report.error!.includes(path.basename(victim)), "names no file");
  assert.deepEqual(report.results.map((r) => r.arrived), [true, false, false]);
  assert.match(report.results[1].reason!, /^no C-STORE response: .*a file changed/);
  assert.deepEqual(await storedUids(orthanc), [files[0].sopInstanceUid]);
});

Deno.test("sendInstances() does not give up on a PACS that takes a large file slowly for longer than its timeout", async () => {
  await using tmp = await tempDir();
  await using orthanc = await Orthanc.start();
  // 16 MiB at ~3 MB/s (64 KiB per 20 ms): ~5 s, against a timeout of 3 s. What the
  // system's socket buffers hold (a few MB here) still drains within the timeout.
  const files = await makeSeries(tmp.dir, 1, { syntax: "explicit", size: 2896 });
  await using slow = new CountingForwarder(orthanc.dicomPort, undefined, 20);
  const report = await sendInstances(
    destination(slow.port, { timeoutS: 3 }),
    await instancesOf(files),
  );
  assert.equal(report.error, undefined);
  assert.deepEqual(report.results.map((r) => r.arrived), [true]);
  assert.deepEqual(await storedUids(orthanc), uids(files));
});

Deno.test("echo() answers undefined from Orthanc and one line for a refused port or a wrong AE title", async () => {
  await using orthanc = await Orthanc.start({ checkCalledAet: true });
  assert.equal(await echo(to(orthanc)), undefined);
  const port = closedPort();
  assert.equal(
    await echo(destination(port)),
    `destination PACS (ORTHANC@127.0.0.1:${port}): connection refused (is the PACS running, and is the port right?)`,
  );
  assert.match(
    oneLine(await echo(to(orthanc, { calledAet: "OTHER" }))),
    /rejected the association \(permanent, by its DICOM application\): the called AE title is not recognized/,
  );
});

Deno.test("sendInstances() stops at once when its signal is aborted, and echo() with an aborted signal does not connect", async () => {
  await using tmp = await tempDir();
  await using peer = new RawPeer(undefined, false);
  const files = await instancesOf(await makeSeries(tmp.dir, 2, { syntax: "explicit" }));
  const controller = new AbortController();
  const sending = sendInstances(destination(peer.port, { timeoutS: 30 }), files, controller.signal);
  await delay(200);
  const started = performance.now();
  controller.abort();
  const report = await sending;
  assert.ok(performance.now() - started < 2500);
  assert.match(oneLine(report.error), /^sending to destination PACS \(.*\) was cancelled$/);
  assert.ok(report.results.every((r) => !r.arrived));
  assert.match(oneLine(await echo(destination(peer.port), controller.signal)), /was cancelled$/);
  assert.equal(peer.connections, 1);
});

Deno.test("sending an implicit VR series prints nothing on stderr but what others print (dcmjs's noise is dropped)", async () => {
  await using tmp = await tempDir();
  await using orthanc = await Orthanc.start();
  const files = await makeSeries(path.join(tmp.dir, "series"), 3, { syntax: "implicit" });
  const script = path.join(tmp.dir, "send.ts");
  const module = pathToFileURL(path.join(ROOT, "lib", "server", "dicom_send.ts")).href;
  await Deno.writeTextFile(
    script,
    `import { sendInstances } from ${JSON.stringify(module)};\n` +
      `const [port, ...instances] = Deno.args;\n` +
      `const report = await sendInstances({ name: "PACS", url: "", calledAet: "ORTHANC", host: "127.0.0.1",\n` +
      `  port: Number(port), callingAet: "RECON", timeoutS: 10 }, instances.map((i) => JSON.parse(i)));\n` +
      `console.error("other messages still pass");\n` +
      `console.log(JSON.stringify(report));\n`,
  );
  const result = await run(Deno.execPath(), [
    "run",
    "--quiet",
    "--allow-read",
    "--allow-net",
    `--config=${path.join(ROOT, "deno.json")}`,
    script,
    String(orthanc.dicomPort),
    ...(await instancesOf(files)).map((i) => JSON.stringify(i)),
  ], { timeoutMs: 60_000 });
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stderr, "other messages still pass\n");
  const report = JSON.parse(result.stdout);
  assert.equal(report.error, undefined);
  assert.equal(report.stores, 3);
  assert.deepEqual(await storedUids(orthanc), uids(files));
});

Deno.test("statusText() and storedStatus() name C-STORE statuses: success and warnings arrived, failures did not", () => {
  const cases: [number, boolean, string][] = [
    [0x0000, true, "0x0000"],
    [0xb000, true, "0xB000 (warning: coercion of data elements)"],
    [0xb007, true, "0xB007 (warning: data set does not match SOP class)"],
    [0xb123, true, "0xB123 (warning)"],
    [0x0001, true, "0x0001 (warning: requested optional attributes are not supported)"],
    [0xa700, false, "0xA700 (refused: out of resources)"],
    [0xa7ff, false, "0xA7FF (refused: out of resources)"],
    [0xa900, false, "0xA900 (error: data set does not match SOP class)"],
    [0xc001, false, "0xC001 (error: cannot understand)"],
    [0x0122, false, "0x0122 (SOP class not supported)"],
    [0x0124, false, "0x0124 (not authorized)"],
    [0x0110, false, "0x0110 (processing failure)"],
    [0xfe00, false, "0xFE00"],
  ];
  for (const [status, stored, text] of cases) {
    assert.equal(storedStatus(status), stored, statusText(status));
    assert.equal(statusText(status), text);
  }
});

Deno.test("rejectionMessage() and abortMessage() say permanent or transient, who and why, also for codes they do not know", () => {
  const dest = destination(104, { host: "pacs.example" });
  assert.equal(
    rejectionMessage(dest, { result: 1, source: 2, reason: 2 }),
    "destination PACS (ORTHANC@pacs.example:104) rejected the association " +
      "(permanent, by its DICOM upper layer (ACSE)): protocol version not supported",
  );
  assert.equal(
    rejectionMessage(dest, { result: 2, source: 3, reason: 2 }),
    "destination PACS (ORTHANC@pacs.example:104) rejected the association " +
      "(transient, by its DICOM upper layer (presentation)): local limit exceeded",
  );
  assert.equal(
    rejectionMessage(dest, { result: 1, source: 9, reason: 42 }),
    "destination PACS (ORTHANC@pacs.example:104) rejected the association (permanent, by source 9): reason 42",
  );
  assert.equal(
    abortMessage(dest, 2, 6),
    "destination PACS (ORTHANC@pacs.example:104) aborted the association " +
      "(by its DICOM upper layer: invalid PDU parameter value)",
  );
  assert.equal(
    abortMessage(dest, 1, 3),
    "destination PACS (ORTHANC@pacs.example:104) aborted the association (by source 1: no reason given)",
  );
  assert.equal(
    abortMessage(dest, 0, 0),
    "destination PACS (ORTHANC@pacs.example:104) aborted the association (by its DICOM application: " +
      "no reason given); does the PACS know our AE title RECON (calling= in DESTINATION_PACS)?",
  );
});
