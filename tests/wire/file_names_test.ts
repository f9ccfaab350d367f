/**
 * Tests for lib/wire/file_names.ts: base names a client may announce, result paths a server
 * may send, and a property-style loop proving resolveInside() never leaves its base.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import {
  baseNameProblem,
  checkJobFileNames,
  MAX_NAME_BYTES,
  MAX_RESULT_DEPTH,
  resolveInside,
  resultPathProblem,
} from "../../lib/wire/file_names.ts";
import { seededRandom } from "../support/memory_duplex.ts";

Deno.test("baseNameProblem() accepts ordinary file names", () => {
  for (
    const name of [
      "P12345.7",
      "scan data.h5",
      "ÜBER.dat",
      "a",
      "..a",
      "a..",
      ".hidden",
      "x-1",
      "日本.raw",
    ]
  ) {
    assert.equal(baseNameProblem(name), undefined, name);
  }
  assert.equal(baseNameProblem("a".repeat(MAX_NAME_BYTES)), undefined);
});

const BAD_NAMES: [string, string, RegExp][] = [
  ["empty", "", /empty/],
  ["'.'", ".", /not a file name/],
  ["'..'", "..", /not a file name/],
  ["a slash", "a/b", /path separator/],
  ["a leading slash", "/etc", /path separator/],
  ["a backslash", "a\\b", /path separator/],
  ["a Windows traversal", "..\\..\\x", /path separator/],
  ["NUL", "a\u0000b", /NUL or a control character/],
  ["a newline", "a\nb", /control character/],
  ["a tab", "\tname", /control character/],
  ["an escape", "a\u001b[31m", /control character/],
  ["DEL", "a\u007f", /control character/],
  ["a leading dash", "-rf", /starts with '-'/],
  ["256 ASCII bytes", "a".repeat(256), /longer than 255 bytes/],
  ["256 bytes of two-byte characters", "é".repeat(128), /longer than 255 bytes/],
];

for (const [what, name, pattern] of BAD_NAMES) {
  Deno.test(`baseNameProblem() refuses ${what}`, () => {
    const problem = baseNameProblem(name);
    assert.ok(problem, JSON.stringify(name));
    assert.match(problem, pattern);
  });
}

Deno.test("baseNameProblem() allows a leading dash only when asked", () => {
  assert.equal(baseNameProblem("-x", { allowLeadingDash: true }), undefined);
  assert.ok(baseNameProblem("-x"));
});

Deno.test("checkJobFileNames() accepts distinct plain names", () => {
  checkJobFileNames([]);
  checkJobFileNames(["P1.7", "P2.7", "ref.dat"]);
});

Deno.test("checkJobFileNames() refuses a duplicate name", () => {
  assert.throws(
    () => checkJobFileNames(["P1.7", "x", "P1.7"]),
    (error: unknown) => error instanceof TypeError && /duplicates "P1.7"/.test(error.message),
  );
});

Deno.test("checkJobFileNames() refuses names that differ only in case", () => {
  assert.throws(
    () => checkJobFileNames(["Scan.7", "SCAN.7"]),
    /file name "SCAN.7" refused: it duplicates "Scan.7"/,
  );
});

Deno.test("checkJobFileNames() names the first bad name", () => {
  assert.throws(
    () => checkJobFileNames(["ok", "../evil", "-x"]),
    /file name "..\/evil" refused: the name contains a path separator/,
  );
});

Deno.test("resultPathProblem() accepts relative paths of plain segments", () => {
  for (const p of ["a", "dicom/IM0001.dcm", "series 1/-odd name/x", "a/b/c/d"]) {
    assert.equal(resultPathProblem(p), undefined, p);
  }
  assert.equal(resultPathProblem(Array(MAX_RESULT_DEPTH).fill("d").join("/")), undefined);
});

const BAD_RESULT_PATHS: [string, RegExp][] = [
  ["", /empty/],
  ["/etc/passwd", /not relative/],
  ["//server/share", /not relative/],
  ["../x", /segment "\.\."/],
  ["a/../../x", /segment "\.\."/],
  ["a/..", /segment "\.\."/],
  ["./a", /segment "\."/],
  ["a//b", /segment "": the name is empty/],
  ["a/", /segment ""/],
  ["C:x", /names a drive/],
  ["c:/windows", /names a drive/],
  ["a\\b", /not relative/],
  ["..\\x", /not relative/],
  ["a/b\u0000c", /NUL/],
  ["a/\nb", /control/],
  [Array(MAX_RESULT_DEPTH + 1).fill("d").join("/"), /too deep/],
  ["a/" + "x".repeat(256), /longer than 255 bytes/],
];

for (const [relative, pattern] of BAD_RESULT_PATHS) {
  Deno.test(`resultPathProblem() and resolveInside() refuse ${JSON.stringify(relative.slice(0, 40))}`, () => {
    const problem = resultPathProblem(relative);
    assert.ok(problem);
    assert.match(problem, pattern);
    assert.throws(
      () => resolveInside("/srv/downloads", relative),
      (error: unknown) => error instanceof TypeError && /unsafe path/.test(error.message),
    );
  });
}

Deno.test("resolveInside() joins a safe path under the base", () => {
  assert.equal(resolveInside("/srv/downloads", "job/IM1.dcm"), "/srv/downloads/job/IM1.dcm");
  assert.equal(resolveInside("/srv/downloads/", "x"), "/srv/downloads/x");
  assert.equal(resolveInside("/srv/./downloads/../downloads", "x"), "/srv/downloads/x");
});

Deno.test("resolveInside() never returns a path outside its base for 2000 random paths", () => {
  const random = seededRandom(20261123);
  const segments = [
    "..",
    ".",
    "a",
    "",
    "/",
    "b c",
    "\\",
    "C:",
    "-x",
    "...",
    "a\u0000",
    "%2e%2e",
    "~",
  ];
  const bases = ["/srv/downloads", "/srv/downloads/", "/", "/tmp/a b", "relative/base"];
  let accepted = 0;
  for (let i = 0; i < 2000; i++) {
    const count = 1 + Math.floor(random() * 6);
    const parts = Array.from(
      { length: count },
      () => segments[Math.floor(random() * segments.length)],
    );
    const relative = parts.join(random() < 0.7 ? "/" : "");
    const base = bases[i % bases.length];
    let target: string;
    try {
      target = resolveInside(base, relative);
    } catch (error) {
      assert.ok(error instanceof TypeError, `${relative}: ${error}`);
      continue;
    }
    accepted++;
    const root = path.resolve(base);
    const inside = path.relative(root, target);
    assert.ok(
      inside !== "" && inside !== ".." && !inside.startsWith("../") && !path.isAbsolute(inside),
      `${JSON.stringify(relative)} under ${base} resolved to ${target}`,
    );
    assert.ok(target.startsWith(root === "/" ? "/" : root + "/"));
    assert.equal(resultPathProblem(relative), undefined);
    assert.ok(!relative.split("/").includes(".."));
  }
  assert.ok(
    accepted > 100 && accepted < 2000,
    `${accepted} accepted: the loop tests both outcomes`,
  );
});

Deno.test("baseNameProblem() refuses C1 control characters, which some terminals obey", () => {
  for (const c of ["\u0080", "\u0085", "\u009b", "\u009f"]) {
    assert.match(baseNameProblem(`scan${c}.7`) ?? "", /control character/);
    assert.match(resultPathProblem(`series/img${c}.dcm`) ?? "", /control character/);
  }
  assert.equal(baseNameProblem("scan\u00a0.7"), undefined, "a no-break space is printable");
});

Deno.test("names that are not well-formed Unicode are refused in both directions", async () => {
  // Both lone surrogates become U+FFFD on disk: distinct names, one file.
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(path.join(dir, "a\ud800"), "1");
    await assert.rejects(
      Deno.writeTextFile(path.join(dir, "a\udc00"), "2", { createNew: true }),
      Deno.errors.AlreadyExists,
      "the collision this rule prevents",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  for (const name of ["a\ud800", "a\udc00", "\udc00\ud800", "x\ud83d"]) {
    assert.match(baseNameProblem(name) ?? "", /not well-formed Unicode/, JSON.stringify(name));
    assert.match(resultPathProblem(`dir/${name}`) ?? "", /not well-formed Unicode/);
  }
  assert.throws(() => checkJobFileNames(["a\ud800", "a\udc00"]), /not well-formed Unicode/);
  // A surrogate pair is a well-formed character.
  assert.equal(baseNameProblem("scan\ud83d\ude00.dat"), undefined);
});
