/**
 * DESTINATION_<NAME> lines and DEFAULT_DESTINATIONS: what a destination URL may say,
 * the one line that names the file, line and fix for what it may not, and the
 * delivery options' defaults.
 */
import assert from "node:assert/strict";
import { ConfigError } from "../../lib/errors.ts";
import {
  parseDestination,
  parseOpts,
  resolveConfigPaths,
  showConfigText,
} from "../../lib/opts/mod.ts";

Deno.test("a dicom:// URL: called AE title, host, port, calling AE title and timeout", () => {
  assert.deepEqual(
    parseDestination("pacs", "dicom://ORTHANC@pacs.local:4242?calling=RECON_MR1&timeout=12"),
    {
      name: "PACS",
      url: "dicom://ORTHANC@pacs.local:4242?calling=RECON_MR1&timeout=12",
      calledAet: "ORTHANC",
      host: "pacs.local",
      port: 4242,
      callingAet: "RECON_MR1",
      timeoutS: 12,
    },
  );
  const defaults = parseDestination("Archive", "dicom://ARCH@10.1.2.3");
  assert.equal(defaults.name, "ARCHIVE");
  assert.equal(defaults.port, 104);
  assert.equal(defaults.callingAet, "RECON");
  assert.equal(defaults.timeoutS, 30);
  assert.equal(parseDestination("v6", "dicom://PACS@[::1]:11112").host, "::1");
  assert.equal(parseDestination("sp", "dicom://MY%20PACS@h:1").calledAet, "MY PACS");
});

Deno.test("dicom+tls:// needs ca=; cert= and key= go together; relative files are resolved", () => {
  const tls = parseDestination(
    "secure",
    "dicom+tls://PACS@pacs:2762?ca=ca.pem&cert=/etc/recon/me.crt&key=/etc/recon/me.key",
    (file) => `/base/${file}`,
  );
  assert.deepEqual(tls.tls, {
    ca: "/base/ca.pem",
    cert: "/base//etc/recon/me.crt",
    key: "/base//etc/recon/me.key",
  });
  const cases: [string, RegExp][] = [
    ["dicom+tls://PACS@pacs:2762", /dicom\+tls needs ca=FILE/],
    ["dicom+tls://PACS@pacs:2762?ca=a.pem&cert=b.crt", /cert= and key= go together/],
    ["dicom://PACS@pacs:104?ca=a.pem", /ca=, cert= and key= are for dicom\+tls:\/\/ only/],
  ];
  for (const [url, message] of cases) {
    assert.throws(() => parseDestination("x", url), message, url);
  }
});

Deno.test("what a destination URL may not be, each one line", () => {
  const cases: [string, RegExp][] = [
    ["pacs.local:4242", /is not a URL|must start with dicom:\/\//],
    ["http://ORTHANC@pacs:4242", /must start with dicom:\/\/ or dicom\+tls:\/\/, got http:\/\//],
    ["dicom://pacs:4242", /names no called AE title/],
    ["dicom://A:secret@pacs:4242", /holds a password/],
    ["dicom://ORTHANC@pacs:4242/studies", /has a path/],
    ["dicom://ORTHANC@pacs:4242?timeout=0", /timeout=0 must be seconds from 1 to 3600/],
    ["dicom://ORTHANC@pacs:4242?timeout=soon", /timeout=soon must be seconds/],
    ["dicom://ORTHANC@pacs:4242?aet=X", /unknown setting "aet"/],
    [
      "dicom://ABCDEFGHIJKLMNOPQ@pacs:4242",
      /the called AE title "ABCDEFGHIJKLMNOPQ" is not an AE title/,
    ],
    ["dicom://ORTHANC@pacs:4242?calling=A%5CB", /calling= "A\\\\B" is not an AE title/],
  ];
  for (const [url, message] of cases) {
    assert.throws(() => parseDestination("x", url), message, url);
  }
});

Deno.test("recon.opts: DESTINATION_<NAME> lines, DEFAULT_DESTINATIONS and the delivery options", () => {
  const { config, warnings } = parseOpts(
    [
      "DESTINATION_PACS = dicom://ORTHANC@pacs.local:4242?calling=RECON",
      "DESTINATION_RESEARCH = dicom+tls://RES@res.local:2762?ca=certs/ca.pem",
      "DEFAULT_DESTINATIONS = pacs, PACS",
      "DELIVERY_RETRY_FOR = 2h",
      "ON_JOB_END = /usr/local/bin/notify",
      "HOOK_TIMEOUT = 30s",
    ].join("\n"),
  );
  assert.deepEqual(warnings, []);
  assert.deepEqual(Object.keys(config.DESTINATIONS), ["PACS", "RESEARCH"]);
  assert.deepEqual(config.DEFAULT_DESTINATIONS, ["PACS"]);
  assert.equal(config.DELIVERY_RETRY_FOR, 7200);
  assert.equal(config.HOOK_TIMEOUT, 30);
  assert.equal(config.ON_DELIVERY_FAILED, "");
  const resolved = resolveConfigPaths(config, "/etc/recon");
  assert.equal(resolved.DESTINATIONS.RESEARCH.tls?.ca, "/etc/recon/certs/ca.pem");
  assert.equal(
    config.DESTINATIONS.RESEARCH.tls?.ca,
    "certs/ca.pem",
    "the parsed config is not changed",
  );
  const text = showConfigText(resolved);
  assert.match(text, /^DEFAULT_DESTINATIONS = PACS$/m);
  assert.match(text, /^DESTINATION_PACS = dicom:\/\/ORTHANC@pacs\.local:4242\?calling=RECON$/m);
  // The defaults.
  const plain = parseOpts("").config;
  assert.deepEqual(plain.DESTINATIONS, {});
  assert.deepEqual(plain.DEFAULT_DESTINATIONS, []);
  assert.equal(plain.DELIVERY_RETRY_FOR, 86400);
  assert.equal(plain.HOOK_TIMEOUT, 60);
});

Deno.test("recon.opts: a bad destination or an unknown default names the line and the fix", () => {
  let error: ConfigError | undefined;
  try {
    parseOpts("DESTINATION_PACS = http://pacs");
  } catch (caught) {
    error = caught as ConfigError;
  }
  assert.ok(error instanceof ConfigError);
  assert.match(error.message, /^recon\.opts line 1: DESTINATION_PACS must start with dicom:\/\//);
  try {
    parseOpts("DESTINATION_PACS = dicom://A@h:1\nDEFAULT_DESTINATIONS = PACS,ARCHIVE");
    assert.fail("accepted");
  } catch (caught) {
    assert.ok(caught instanceof ConfigError);
    assert.equal(
      caught.message,
      "recon.opts line 2: DEFAULT_DESTINATIONS names ARCHIVE, but there is no DESTINATION_ARCHIVE line",
    );
    assert.equal(caught.hint, "the destinations are PACS");
  }
  try {
    parseOpts("DEFAULT_DESTINATIONS = PACS_1");
    assert.fail("accepted");
  } catch (caught) {
    assert.ok(caught instanceof ConfigError);
    assert.match(caught.message, /DEFAULT_DESTINATIONS must be a comma-separated list of names/);
  }
  // DESTINATION_ with an underscore in NAME is no destination: an unknown option.
  assert.throws(
    () => parseOpts("SERVER_PORT = 60000\nDESTINATION_MY_PACS = dicom://A@h:1"),
    /unknown option "DESTINATION_MY_PACS" \(the NAME of a DESTINATION_<NAME> line is letters and digits only, no _\)/,
  );
});
