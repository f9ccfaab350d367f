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
