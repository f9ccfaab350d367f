/**
 * Tests for lib/printable.ts and its use in describeError() (lib/cli/support.ts):
 * text from the server, a script or an unauthenticated peer cannot drive the terminal
 * it is printed on.
 */
import assert from "node:assert/strict";
import { describeError } from "../../lib/cli/support.ts";
import { JobError } from "../../lib/errors.ts";
import { printable } from "../../lib/printable.ts";

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
