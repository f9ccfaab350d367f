/**
 * Tests for lib/printable.ts (printable() for terminals, escapeControls() for log lines)
 * and its use in describeError() (lib/cli/support.ts):
 * text from the server, a script or an unauthenticated peer cannot drive the terminal
 * it is printed on.
 */
import assert from "node:assert/strict";
import { describeError } from "../../lib/cli/support.ts";
import { JobError } from "../../lib/errors.ts";
import { escapeControls, printable } from "../../lib/printable.ts";

const CASES: [string, string, string][] = [
  ["plain text", "reconstructing slice 12 of 128", "reconstructing slice 12 of 128"],
  ["newlines and tabs", "line 1\n\tline 2\n", "line 1\n\tline 2\n"],
  ["non-ASCII text", "Schicht 3 – fertig ✓ 日本", "Schicht 3 – fertig ✓ 日本"],
  ["a colour sequence", "\u001b[31mred\u001b[0m", "?red?"],
  ["a cursor movement", "a\u001b[2Ab", "a?b"],
  ["a private-mode sequence", "\u001b[?25lhidden cursor", "?hidden cursor"],
  ["a screen clear", "\u001b[2J\u001b[Hfake prompt", "??fake prompt"],
  ["a title change (OSC)", "\u001b]0;pwned\u0007text", "?]0;pwned?text"],
  ["a lone ESC", "a\u001bb", "a?b"],
  ["a carriage return that would overwrite the line", "ok\rFAILED", "ok?FAILED"],
  ["a backspace", "abc\bd", "abc?d"],
  ["NUL and BEL", "a\u0000b\u0007c", "a?b?c"],
  ["DEL", "a\u007fb", "a?b"],
  ["a C1 control (8-bit CSI)", "a\u009b31mb", "a?31mb"],
  ["a vertical tab and a form feed", "a\u000bb\u000cc", "a?b?c"],
];

for (const [what, input, expected] of CASES) {
  const verb = input === expected ? "keeps" : "defuses";
  Deno.test(`printable() ${verb} ${what}: ${JSON.stringify(expected)}`, () => {
    assert.equal(printable(input), expected);
  });
}

Deno.test("printable() never lets an ESC or another control character other than \\n and \\t through", () => {
  for (let code = 0; code < 0x100; code++) {
    const char = String.fromCharCode(code);
    const out = printable(`x${char}[1;2Hy`);
    // deno-lint-ignore no-control-regex
    assert.doesNotMatch(out, /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/, `U+${code.toString(16)}`);
  }
});

Deno.test("describeError() prints a recon error's message and hint through printable()", () => {
  const error = new JobError("job failed: \u001b[31mred\u001b[0m", {
    hint: "last lines:\n  \u001b]0;title\u0007x",
  });
  const { lines, exitCode } = describeError("recon-client", error);
  assert.deepEqual(lines, [
    "recon-client: error: job failed: ?red?",
    "hint: last lines:\n  ?]0;title?x",
  ]);
  assert.equal(exitCode, 1);
});

Deno.test("describeError() prints an unexpected error's message through printable() too", () => {
  const { lines, exitCode } = describeError("recon-client", new Error("boom\u001b[2J\r"));
  assert.equal(lines[0], "recon-client: error: boom??");
  assert.equal(exitCode, 2);
});

const ESCAPED: [string, string, string][] = [
  ["plain text", "job 1: received P00042.7", "job 1: received P00042.7"],
  ["non-ASCII text", "Schicht 3 – fertig ✓ 日本", "Schicht 3 – fertig ✓ 日本"],
  [
    "a newline that would forge a log line",
    "a\n2026-01-01 ERROR forged",
    "a\\n2026-01-01 ERROR forged",
  ],
  ["CR, LF and a tab", "a\r\n\tb", "a\\r\\n\\tb"],
  ["a colour sequence", "\u001b[31mred", "\\x1b[31mred"],
  ["an 8-bit CSI (C1)", "a\u009b31mb", "a\\x9b31mb"],
  ["NUL, BEL and DEL", "\u0000\u0007\u007f", "\\x00\\x07\\x7f"],
  ["the Unicode line and paragraph separators", "a\u2028b\u2029c", "a\\u2028b\\u2029c"],
  ["bidirectional overrides", "file\u202eexe.txt\u2066", "file\\u202eexe.txt\\u2066"],
  ["backslashes, which stay", "C:\\dir \\n", "C:\\dir \\n"],
];

for (const [what, input, expected] of ESCAPED) {
  const verb = input === expected ? "keeps" : "escapes";
  Deno.test(`escapeControls() ${verb} ${what}: ${JSON.stringify(expected)}`, () => {
    assert.equal(escapeControls(input), expected);
  });
}

Deno.test("escapeControls() leaves no C0 or C1 control character, DEL or line separator", () => {
  for (let code = 0; code < 0x2100; code++) {
    const out = escapeControls(`x${String.fromCharCode(code)}y`);
    // deno-lint-ignore no-control-regex
    assert.doesNotMatch(out, /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/, `U+${code.toString(16)}`);
  }
});
