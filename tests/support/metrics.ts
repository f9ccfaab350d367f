/**
 * Test support for the Prometheus side: read samples out of `/metrics` text, and run
 * `promtool` (Debian package `prometheus`), which a test needs and so fails without.
 *
 * @module
 */
import assert from "node:assert/strict";
import { run, type RunResult } from "./e2e.ts";

/** Where promtool is looked for: PROMTOOL, else on PATH. */
const PROMTOOL = Deno.env.get("PROMTOOL") ?? "promtool";

/**
 * The samples of an exposition text, by series as written (`name{label="v",…}` or
 * `name`), e.g. `samples.get('recon_jobs_finished_total{state="failed"}')`.
 */
export function parseSamples(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

/** The value of series `series` in `samples`; fails the test when it is missing. */
export function sample(samples: Map<string, number>, series: string): number {
  const value = samples.get(series);
  assert.ok(value !== undefined, `no sample ${series} in:\n${[...samples.keys()].join("\n")}`);
  return value;
}

/** Run `promtool args…` (with `stdin`); fails with the install command when it is missing. */
export async function promtool(args: string[], stdin?: string): Promise<RunResult> {
  try {
    return await run(PROMTOOL, args, { stdin, timeoutMs: 60_000 });
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      throw new Error(
        "promtool is not installed: apt-get install prometheus (or run scripts/ensure-test-deps)",
      );
    }
    throw error;
  }
}

/** `promtool check metrics` on `text`; fails with what promtool said. */
export async function checkMetrics(text: string): Promise<void> {
  const result = await promtool(["check", "metrics"], text);
  assert.equal(
    result.code,
    0,
    `promtool check metrics failed:\n${result.stdout}${result.stderr}\n--- metrics:\n${text}`,
  );
}
