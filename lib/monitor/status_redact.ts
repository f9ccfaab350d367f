/**
 * File names and directories blanked out of text the status page shows (issue 16):
 * a failure reason or a delivery's last error is text from elsewhere (an error
 * message, a PACS's answer) that may name a job's files, and a file name may carry
 * patient data. lib/monitor/status_view.ts and status_delivery_view.ts redact such text
 * here before anything renders it.
 *
 * @module
 */
import type { JobRecord, JobStore } from "../server/job_store.ts";

/** What to blank out of a text: directories and file names. */
export interface Secrets {
  paths: string[];
  names: string[];
}

/**
 * `text` with every occurrence of `paths` replaced by `<path>` and of `names` by
 * `<file>`, longest first (a path holds names). Names shorter than 3 characters are
 * left: blanking out every "a" or "7" would garble the reason, and such names carry no
 * patient data.
 */
export function redact(text: string, hide: Secrets): string {
  const rules = [
    ...hide.paths.filter((p) => p.length > 1).map((p) => [p, "<path>"] as const),
    ...hide.names.filter((n) => n.length >= 3).map((n) => [n, "<file>"] as const),
  ].sort((a, b) => b[0].length - a[0].length);
  let result = text;
  for (const [secret, placeholder] of rules) result = result.split(secret).join(placeholder);
  return result;
}

/**
 * What to blank out of a text about job `record`: its directories and log, `hidden`
 * (RECON_FILEPATH, RECON_DICOM_DIR), and the names of its inputs (as sent and as they
 * were on the client) and of its results; a name in a directory also by its last part.
 */
export function jobSecrets(store: JobStore, record: JobRecord, hidden: string[]): Secrets {
  const names = [
    record.primaryFile,
    ...store.inputs(record.id).flatMap((input) => [input.name, input.originalPath ?? ""]),
    ...store.outputs(record.id).map((output) => output.name),
  ];
  return {
    paths: [record.inputDir, record.outputDir, record.logPath, ...hidden],
    names: names.flatMap((name) => [name, name.split(/[\\/]/).at(-1) ?? ""]),
  };
}
