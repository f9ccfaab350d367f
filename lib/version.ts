/**
 * The recon version, from deno.json (compiled into the binaries).
 *
 * @module
 */
import meta from "../deno.json" with { type: "json" };

/** e.g. "0.1.0". */
export const VERSION: string = meta.version;
