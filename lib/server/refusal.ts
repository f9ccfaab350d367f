/**
 * A request the server turns down with an `error` message (docs/PROTOCOL.md §4.3):
 * its `kind` tells the client what happened (`refused`, `not_found`, `expired`) and
 * the message is the one line it shows. The session stays at top level.
 *
 * @module
 */

/** The `kind` of an `error` answer that leaves the session at top level. */
export type RefusalKind = "refused" | "not_found" | "expired";

/** A refusal the client is told about with `error {kind, reason}`. */
export class Refusal extends Error {
  readonly kind: RefusalKind;
  constructor(message: string, kind: RefusalKind = "refused") {
    super(message);
    this.name = "Refusal";
    this.kind = kind;
  }
}

/** A time from the job store (ms since the epoch) as the protocol writes it: ISO 8601 UTC. */
export function utc(ms: number): string {
  return new Date(ms).toISOString();
}

/** `error {kind: "not_found"}` for an id the store does not hold. */
export function unknownJob(id: string): Refusal {
  return new Refusal(`no job ${id} on this server`, "not_found");
}
