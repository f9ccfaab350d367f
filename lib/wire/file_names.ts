/**
 * File-name safety for both directions (docs/PROTOCOL.md §6.2 and §9): names a
 * client announces must be plain base names, and result paths the server sends must
 * be relative paths that stay under the download directory. Pure functions, no I/O.
 *
 * @module
 */
import * as path from "node:path";

/** Longest file name (bytes of UTF-8), as on common filesystems. */
export const MAX_NAME_BYTES = 255;
/** Deepest result path. */
export const MAX_RESULT_DEPTH = 16;

const encoder = new TextEncoder();
// deno-lint-ignore no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

/**
 * Why `name` is not an acceptable plain base name, or `undefined` when it is.
 * Refused: empty, `.`, `..`, `/`, `\`, NUL and control characters, a leading `-`
 * (it would read as an option to a script), longer than 255 bytes, and text that is
 * not well-formed Unicode: a lone surrogate becomes U+FFFD on disk, so `\ud800` and
 * `\udc00` would pass the duplicate check and then collide.
 */
export function baseNameProblem(name: string, options: { allowLeadingDash?: boolean } = {}):
  | string
  | undefined {
  if (name.length === 0) return "the name is empty";
  if (name === "." || name === "..") return `"${name}" is not a file name`;
  if (name.includes("/") || name.includes("\\")) return "the name contains a path separator";
  if (CONTROL.test(name)) return "the name contains NUL or a control character";
  if (!name.isWellFormed()) return "the name is not well-formed Unicode (a lone surrogate)";
  if (!options.allowLeadingDash && name.startsWith("-")) return "the name starts with '-'";
  if (encoder.encode(name).length > MAX_NAME_BYTES) return "the name is longer than 255 bytes";
  return undefined;
}

/**
 * Check the names of one job's files: each a plain base name, no duplicates (also
 * none that differ only in case, which would collide on case-insensitive disks).
 * Throws TypeError naming the first bad one.
 */
export function checkJobFileNames(names: readonly string[]): void {
  const seen = new Map<string, string>();
  for (const name of names) {
    const problem = baseNameProblem(name);
    if (problem) throw new TypeError(`file name ${JSON.stringify(name)} refused: ${problem}`);
    const folded = name.toLowerCase();
    const earlier = seen.get(folded);
    if (earlier !== undefined) {
      throw new TypeError(
        `file name ${JSON.stringify(name)} refused: it duplicates ${JSON.stringify(earlier)}`,
      );
    }
    seen.set(folded, name);
  }
}

/**
 * Why a result path sent by the server is unsafe, or `undefined`. It must be relative,
 * `/`-separated, with every segment a plain name; no drive letters, no `..`.
 */
export function resultPathProblem(relative: string): string | undefined {
  if (relative.length === 0) return "the path is empty";
  if (relative.startsWith("/") || relative.includes("\\")) return "the path is not relative";
  if (/^[A-Za-z]:/.test(relative)) return "the path names a drive";
  const segments = relative.split("/");
  if (segments.length > MAX_RESULT_DEPTH) return "the path is too deep";
  for (const segment of segments) {
    const problem = baseNameProblem(segment, { allowLeadingDash: true });
    if (problem) return `segment ${JSON.stringify(segment)}: ${problem}`;
  }
  return undefined;
}

/**
 * Join `relative` under `base` and prove the result stays inside `base`.
 * Throws TypeError otherwise.
 */
export function resolveInside(base: string, relative: string): string {
  const problem = resultPathProblem(relative);
  if (problem) throw new TypeError(`unsafe path ${JSON.stringify(relative)}: ${problem}`);
  const root = path.resolve(base);
  const target = path.resolve(root, relative);
  if (target === root || !target.startsWith(root + path.sep)) {
    throw new TypeError(`unsafe path ${JSON.stringify(relative)}: it leaves ${root}`);
  }
  return target;
}
