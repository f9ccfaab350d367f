/**
 * Drops one message from console.error: dcmjs's "Invalid vr type …" (it reads implicit
 * VR data sets, where OB/OW cannot be told apart, and says so on stderr for every
 * pixel data element). Everything else passes through unchanged.
 *
 * Must be imported before `dcmjs-dimse` (lib/server/dicom_*.ts do, first): dcmjs's
 * bundled loglevel binds console.error when it loads, so a filter set later is not seen.
 *
 * @module
 */
const original = console.error.bind(console);

/** The start of the one message dropped. */
export const DROPPED_PREFIX = "Invalid vr type";

console.error = (...data: unknown[]): void => {
  if (typeof data[0] === "string" && data[0].startsWith(DROPPED_PREFIX)) return;
  original(...data);
};
