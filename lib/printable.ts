/**
 * Text from elsewhere (the server, a reconstruction script, an unauthenticated peer)
 * made safe to print on a terminal.
 *
 * @module
 */

// deno-lint-ignore no-control-regex
const ESCAPE_SEQUENCE = /\u001b\[[0-9;?]*[ -/]*[@-~]/g;
// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g;

/**
 * `text` made safe for a terminal: escape sequences and other control characters
 * (which a hostile or broken peer or script could send) become "?"; newlines and tabs stay.
 */
export function printable(text: string): string {
  return text.replace(ESCAPE_SEQUENCE, "?").replace(CONTROL, "?");
}

const UNSAFE_IN_A_LINE =
  // deno-lint-ignore no-control-regex
  /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const SHORT_ESCAPES: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/**
 * `text` as one log line: every C0 and C1 control character (ESC, CR, LF, the 8-bit
 * CSI U+009B …), DEL, the Unicode line and paragraph separators and the bidirectional
 * controls become visible escapes (`\n`, `\x1b`, `\u2028`), so text from a peer, a
 * script, a file name or recon.opts can neither forge a log line nor drive the terminal
 * that shows the log. Everything else, backslashes included, stays as it is.
 */
export function escapeControls(text: string): string {
  return text.replace(UNSAFE_IN_A_LINE, (char) => {
    const code = char.charCodeAt(0);
    return SHORT_ESCAPES[char] ??
      (code < 0x100
        ? `\\x${code.toString(16).padStart(2, "0")}`
        : `\\u${code.toString(16).padStart(4, "0")}`);
  });
}
