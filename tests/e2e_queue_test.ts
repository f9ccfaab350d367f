/**
 * End to end, the queue: with MAX_CONCURRENT_JOBS = 2 and four jobs held in their
 * script, `--server-status` and `--view-queue` (text and `--json`) show two running
 * and two waiting, and the script's own start/end timestamps show that never more
 * than two ran at once.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { type ClientProcess, E2EServer, testdata, UUID, waitFor } from "./support/e2e.ts";

/** Largest number of jobs running at the same time, from "start|end <ns> <id>" lines. */
function maxOverlap(timeline: string): { max: number; starts: number; ends: number } {
  const events = timeline.trim().split("\n").map((line) => {
    const [kind, ns] = line.split(" ");
    return { kind, at: BigInt(ns) };
  });
  // Ends sort before starts at the same instant: touching runs do not overlap.
  events.sort((a, b) =>
    a.at < b.at ? -1 : a.at > b.at ? 1 : a.kind === b.kind ? 0 : a.kind === "end" ? -1 : 1
  );
  let running = 0;
  let max = 0;
  for (const event of events) {
    running += event.kind === "start" ? 1 : -1;
    max = Math.max(max, running);
  }
  return {
    max,
    starts: events.filter((e) => e.kind === "start").length,
    ends: events.filter((e) => e.kind === "end").length,
  };
}

Deno.test("MAX_CONCURRENT_JOBS = 2 runs four jobs two at a time; status and queue show them", async (t) => {
  await using server = await E2EServer.start({
    script: testdata("e2e_recon.sh"),
    options: { MAX_CONCURRENT_JOBS: 2 },
  });
  const timeline = path.join(server.dir, "timeline.txt");
  const release = path.join(server.dir, "release");
  const scans = path.join(server.dir, "scans");
  await Deno.mkdir(scans);
  const clients: ClientProcess[] = [];
  try {
    for (let i = 1; i <= 4; i++) {
      const primary = path.join(scans, `P0000${i}.7`);
      const calibration = path.join(scans, `cal${i}.dat`);
      await Deno.writeTextFile(primary, `scan ${i}`);
      await Deno.writeTextFile(calibration, `calibration ${i}`);
      const options = { timeline, wait_for: release, sleep: "0.3" };
      clients.push(server.spawnClient([
        "--files",
        primary,
        calibration,
        "--recon-options",
        JSON.stringify(options),
      ]));
    }
    // Every job is queued and two of them are held in their script.
    const ids = await Promise.all(
      clients.map(async (c) =>
        (await c.waitForStderr(new RegExp(`job (${UUID.source}) queued`)))[1]
      ),
    );
    await waitFor("two jobs to start", async () => {
      const text = await Deno.readTextFile(timeline).catch(() => "");
      return text.split("\n").filter((line) => line.startsWith("start")).length >= 2;
    });

    await t.step("--server-status shows 2 active workers and 2 queued jobs", async () => {
      const [human, json] = await Promise.all([
        server.client(["--server-status"]),
        server.client(["--server-status", "--json"]),
      ]);
      assert.equal(human.code, 0, human.stderr);
      assert.match(human.stdout, /^max concurrent jobs: 2$/m);
      assert.match(human.stdout, /^active workers:\s+2$/m);
      assert.match(human.stdout, /^queued jobs:\s+2$/m);
      assert.match(human.stdout, /^uptime:\s+\S/m);
      assert.equal(json.code, 0, json.stderr);
      const status = JSON.parse(json.stdout);
      assert.equal(status.max_concurrent_jobs, 2);
      assert.equal(status.active_workers, 2);
      assert.equal(status.queue_length, 2);
      assert.equal(status.jobs_completed, 0);
      assert.equal(status.jobs_failed, 0);
      assert.ok(Number.isInteger(status.uptime_seconds) && status.uptime_seconds >= 0);
    });

    await t.step(
      "--view-queue lists the jobs: running first, with primary file and count",
      async () => {
        const [human, json] = await Promise.all([
          server.client(["--view-queue"]),
          server.client(["--view-queue", "--json"]),
        ]);
        assert.equal(json.code, 0, json.stderr);
        const { jobs } = JSON.parse(json.stdout);
        assert.equal(jobs.length, 4);
        assert.deepEqual(
          jobs.map((job: { status: string }) => job.status),
          ["running", "running", "queued", "queued"],
        );
        assert.deepEqual(
          jobs.map((job: { job_id: string }) => job.job_id).sort(),
          [...ids].sort(),
        );
        for (const job of jobs) {
          const index = ids.indexOf(job.job_id) + 1;
          assert.equal(job.primary_file, `P0000${index}.7`, "the first file given is the primary");
          assert.equal(job.file_count, 2);
          assert.equal(job.input_dir, `job_${job.job_id}_input`);
          assert.ok(!Number.isNaN(Date.parse(job.submitted_at)), job.submitted_at);
          assert.match(job.submitted_at, /Z$/, "submitted time is UTC");
        }

        assert.equal(human.code, 0, human.stderr);
        const [header, ...rows] = human.stdout.trimEnd().split("\n");
        assert.match(
          header,
          /^JOB ID\s+STATUS\s+PRIORITY\s+POS\s+PRIMARY FILE\s+FILES\s+SUBMITTED \(UTC\)\s+INPUT DIR$/,
        );
        assert.equal(rows.length, 4);
        for (const job of jobs) {
          const row = rows.find((line) => line.startsWith(job.job_id));
          assert.ok(row, `a row for ${job.job_id}`);
          const cells = row.split(/\s{2,}/);
          assert.equal(cells[1].split(" ")[0], job.status);
          assert.equal(cells[2], "normal");
          assert.equal(cells[3], job.status === "queued" ? String(job.queue_position) : "-");
          assert.equal(cells[4], job.primary_file);
          assert.equal(cells[5], "2");
          assert.equal(cells[7], `job_${job.job_id}_input`);
        }
      },
    );

    await t.step("the four jobs complete and never more than two ran at once", async () => {
      await Deno.writeTextFile(release, "");
      const results = await Promise.all(clients.map((c) => c.result()));
      for (const result of results) assert.equal(result.code, 0, result.stderr);
      const overlap = maxOverlap(await Deno.readTextFile(timeline));
      assert.equal(overlap.starts, 4);
      assert.equal(overlap.ends, 4);
      assert.equal(overlap.max, 2, "exactly two jobs ran at the same time");
      const status = JSON.parse((await server.client(["--server-status", "--json"])).stdout);
      assert.equal(status.jobs_completed, 4);
      assert.equal(status.active_workers, 0);
      assert.equal(status.queue_length, 0);
      const queue = await server.client(["--view-queue"]);
      assert.equal(queue.stdout, "the queue is empty\n");
    });
  } finally {
    await Deno.writeTextFile(release, "");
    for (const client of clients) await client[Symbol.asyncDispose]();
  }
  await server.waitForNoJobDirs();
});
