/**
 * examples/prometheus/ as a site would use it, checked by promtool (Debian package
 * `prometheus`; the test fails without it): the scrape config and its commented https
 * variant pass `promtool check config` (with the token and CA files it names in place),
 * the alert rules pass `promtool check rules`, and their unit tests pass
 * `promtool test rules`. Every metric the rules use is one the server exports.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import { ROOT } from "./support/e2e.ts";
import { promtool } from "./support/metrics.ts";

const DIR = path.join(ROOT, "examples", "prometheus");
const HTTPS_START = "# --- https variant ---";
const HTTPS_END = "# --- end of the https variant ---";

/** prometheus.yml with the https variant uncommented and /etc/prometheus/ moved to `dir`. */
function siteConfig(text: string, dir: string): string {
  const lines = text.split("\n");
  const start = lines.findIndex((line) => line.includes(HTTPS_START));
  const end = lines.findIndex((line) => line.includes(HTTPS_END));
  assert.ok(start > 0 && end > start, "prometheus.yml marks its https variant");
  const variant = lines.slice(start + 1, end).map((line) => {
    assert.match(line, /^ {2}# /, "each line of the https variant is commented out once");
    return line.replace(/^ {2}# /, "  ");
  });
  return [...lines.slice(0, start), ...variant, ...lines.slice(end + 1)].join("\n")
    .replaceAll("/etc/prometheus/", `${dir}/`);
}

/** Run promtool in `cwd`; fails with its output unless it exits 0. */
async function expectPromtool(args: string[]): Promise<string> {
  const result = await promtool(args);
  assert.equal(result.code, 0, `promtool ${args.join(" ")}:\n${result.stdout}${result.stderr}`);
  return result.stdout + result.stderr;
}

Deno.test("examples/prometheus/prometheus.yml and its https variant pass promtool check config", async () => {
  const dir = await Deno.makeTempDir({ prefix: "recon-prometheus-" });
  try {
    const text = await Deno.readTextFile(path.join(DIR, "prometheus.yml"));
    await Deno.writeTextFile(path.join(dir, "recon_http_token"), "a-token-of-24-characters\n");
    await Deno.writeTextFile(path.join(dir, "recon_http_ca.pem"), "");
    await Deno.copyFile(path.join(DIR, "alerts.yml"), path.join(dir, "alerts.yml"));
    const config = siteConfig(text, dir);
    assert.match(config, /job_name: recon-https/);
    assert.match(config, /scheme: https/);
    await Deno.writeTextFile(path.join(dir, "prometheus.yml"), config);
    const out = await expectPromtool(["check", "config", path.join(dir, "prometheus.yml")]);
    assert.match(out, /SUCCESS: 3 rules found/, "the rule file it names is read");
    // As shipped (https commented out), with the token file in place.
    await Deno.writeTextFile(
      path.join(dir, "prometheus.yml"),
      text.replaceAll("/etc/prometheus/", `${dir}/`),
    );
    await expectPromtool(["check", "config", path.join(dir, "prometheus.yml")]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("examples/prometheus/alerts.yml passes promtool check rules and its unit tests", async () => {
  const out = await expectPromtool(["check", "rules", path.join(DIR, "alerts.yml")]);
  assert.match(out, /SUCCESS: 3 rules found/);
  const tested = await expectPromtool(["test", "rules", path.join(DIR, "alerts_test.yml")]);
  assert.match(tested, /SUCCESS/);
});

Deno.test("the alert rules use only metrics that lib/server/server_metrics.ts and delivery_metrics.ts define", async () => {
  const rules = await Deno.readTextFile(path.join(DIR, "alerts.yml"));
  const source = await Deno.readTextFile(path.join(ROOT, "lib", "server", "server_metrics.ts")) +
    await Deno.readTextFile(path.join(ROOT, "lib", "server", "delivery_metrics.ts"));
  const used = new Set(rules.match(/\brecon_[a-z_]+/g));
  assert.ok(used.size >= 3, [...used].join(", "));
  for (const name of used) assert.ok(source.includes(`"${name}"`), `${name} is not exported`);
});
