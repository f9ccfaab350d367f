/**
 * scripts/orthanc-local (the PACS of `make demo DEMO_PACS=1`): `up DIR` starts a real
 * Orthanc on free loopback ports that answers REST and takes a C-STORE from
 * dcmtk's storescu; `down DIR` stops it by its recorded PID, and a second `down` says
 * nothing was running.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { ROOT, run, tempDir } from "./support/e2e.ts";
import { makeSeries } from "./support/dicom_series.ts";

const SCRIPT = path.join(ROOT, "scripts", "orthanc-local");

Deno.test("orthanc-local up starts a PACS that stores what storescu sends; down stops it", async () => {
  await using dir = await tempDir();
  const up = await run(SCRIPT, ["up", dir.path], { timeoutMs: 60_000 });
  assert.equal(up.code, 0, up.stderr);
  const match = /^orthanc-local: up pid=(\d+) dicom=(\d+) http=(\d+) aet=ORTHANC$/m.exec(up.stdout);
  assert.ok(match, up.stdout);
  const [, pid, dicom, http] = match;
  try {
    const system = await (await fetch(`http://127.0.0.1:${http}/system`)).json();
    assert.equal(system.DicomAet, "ORTHANC");
    const series = await makeSeries(dir.path, 3, { syntax: "explicit" });
    const sent = await run("storescu", [
      "-aet",
      "RECONDEMO",
      "-aec",
      "ORTHANC",
      "127.0.0.1",
      dicom,
      ...series.map((file) => file.path),
    ]);
    assert.equal(sent.code, 0, `storescu (apt-get install dcmtk): ${sent.stderr}`);
    const stats = await (await fetch(`http://127.0.0.1:${http}/statistics`)).json();
    assert.equal(stats.CountInstances, 3);
  } finally {
    const down = await run(SCRIPT, ["down", dir.path]);
    assert.equal(down.code, 0, down.stderr);
    assert.equal(down.stdout.trim(), `orthanc-local: down (pid ${pid})`);
  }
  let alive = true;
  try {
    Deno.kill(Number(pid), "SIGCONT");
  } catch {
    alive = false;
  }
  assert.equal(alive, false, "Orthanc is gone");
  const again = await run(SCRIPT, ["down", dir.path]);
  assert.equal(again.stdout.trim(), "orthanc-local: down (nothing was running)");
  const usage = await run(SCRIPT, ["start"]);
  assert.equal(usage.code, 1);
  assert.match(usage.stderr, /usage: scripts\/orthanc-local up\|down DIR/);
});
