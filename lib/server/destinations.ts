/**
 * The DICOM destinations a session may name (docs/PROTOCOL.md §6.11): a submission's
 * `deliver` and `redeliver_job`'s `to` are checked against the server's
 * `DESTINATION_<NAME>` lines and the client's `deliver=` list (lib/server/client_keys.ts;
 * SHARED_KEY's client `default` may name any); a new job goes to DEFAULT_DESTINATIONS
 * and then to the ones it asked for. Sending is lib/server/pacs_delivery.ts's work.
 * A name the server does not have, or this client may not use, is refused in one line
 * that says which names there are.
 *
 * @module
 */
import type { ClientMessage, MessageOf } from "../wire/protocol.ts";
import type { JobRecord } from "./job_store.ts";
import { Refusal } from "./refusal.ts";
import { findJob, type SessionContext } from "./session_context.ts";

/** The server's destinations (upper case); none when the session was given none. */
export function serverDestinations(context: SessionContext): readonly string[] {
  return context.destinations ?? [];
}

/**
 * The destinations this session's client may name (`--server-status` lists them): every
 * one for an admin or a client without a `deliver=` list (SHARED_KEY's `default`), else
 * DEFAULT_DESTINATIONS and those on its list, in the server's order.
 */
export function namableDestinations(context: SessionContext): string[] {
  const all = serverDestinations(context);
  const { admin, deliver } = context.client;
  if (admin || deliver === undefined) return [...all];
  const defaults = defaultDestinations(context);
  return all.filter((name) => defaults.includes(name) || deliver.includes(name));
}

/** DEFAULT_DESTINATIONS: where every job's results go. */
export function defaultDestinations(context: SessionContext): readonly string[] {
  return context.defaultDestinations ?? [];
}

/** `names` upper case, each once, in order. */
function unique(names: readonly string[]): string[] {
  return [...new Set(names.map((name) => name.toUpperCase()))];
}

/** The refusal for a server without destinations: what to leave out. */
function noDestinations(what: string): Refusal {
  return new Refusal(
    `this server has no DICOM destinations (no DESTINATION_<NAME> in its recon.opts); ${what}`,
  );
}

/**
 * Check names the session's client asked for: each must be one of the server's
 * destinations and, unless it is in `given` (where the job goes anyway: the defaults,
 * or for a redelivery the job's own), on the client's `deliver=` list.
 */
function checkNames(
  names: readonly string[],
  given: readonly string[],
  context: SessionContext,
  without: string,
): string[] {
  const configured = serverDestinations(context);
  if (configured.length === 0) throw noDestinations(without);
  const asked = unique(names);
  const unknown = asked.find((name) => !configured.includes(name));
  if (unknown !== undefined) {
    throw new Refusal(
      `no destination "${unknown}" on this server; the destinations are ${configured.join(", ")}`,
    );
  }
  const { name: client, deliver: allowed } = context.client;
  const denied = allowed === undefined
    ? undefined
    : asked.find((name) => !given.includes(name) && !allowed.includes(name));
  if (denied !== undefined) {
    throw new Refusal(
      `client ${client} may not deliver to ${denied} (` +
        (allowed!.length > 0
          ? `its deliver= list is ${allowed!.join(", ")}`
          : "its line in the server's client file has no deliver= list") +
        "); ask the server's administrator",
    );
  }
  return asked;
}

/**
 * Where a new job's results go: DEFAULT_DESTINATIONS, then the names its submission
 * asked for (`deliver`, version 3), upper case and each once. Throws a {@link Refusal}
 * for a name the server does not have or this client may not use.
 */
export function jobDestinations(
  requested: readonly string[] | undefined,
  context: SessionContext,
): string[] {
  const defaults = defaultDestinations(context);
  if (requested === undefined || requested.length === 0) return [...defaults];
  const asked = checkNames(requested, defaults, context, "submit without --deliver");
  return unique([...defaults, ...asked]);
}

/**
 * Where a re-run's results go: the server's defaults now, and the failed job's other
 * destinations that the server still has.
 */
export function rerunDestinations(old: JobRecord, context: SessionContext): string[] {
  const configured = serverDestinations(context);
  const kept = old.deliverTo.filter((name) => configured.includes(name));
  return unique([...defaultDestinations(context), ...kept]);
}

/**
 * `redeliver_job`: send a succeeded job's results again, to `to` or to every
 * destination the job had, when the session's client may act on the job and name the
 * destinations. Resolves with the job as it is now (its deliveries reset).
 */
export function redeliverJob(
  message: MessageOf<ClientMessage, "redeliver_job">,
  context: SessionContext,
): JobRecord {
  const id = message.job_id;
  const found = findJob(context, id);
  const job = context.sweeper.settle(found);
  const configured = serverDestinations(context);
  const redeliver = context.redeliver;
  if (configured.length === 0 || !redeliver) {
    throw noDestinations("there is nothing to deliver to");
  }
  if (job.state === "expired" || (job.state === "succeeded" && job.resultsRemoved)) {
    throw new Refusal(
      `job ${id} expired, its results were removed (RESULT_RETENTION); there is nothing to send`,
      "expired",
    );
  }
  if (job.state !== "succeeded") {
    throw new Refusal(
      `job ${id} is ${job.state}; only a succeeded job's results can be delivered again`,
    );
  }
  const own = unique([
    ...job.deliverTo,
    ...context.store.deliveries.ofJob(id).map((d) => d.destination),
  ]);
  let to: string[];
  if (message.to !== undefined) {
    to = checkNames(message.to, own, context, "there is nothing to deliver to");
  } else {
    to = own.filter((name) => configured.includes(name));
    if (to.length === 0) {
      throw new Refusal(
        `job ${id} has no destination this server still has; name one with --to (${
          configured.join(", ")
        })`,
      );
    }
  }
  context.log.info(
    `${context.peer}: job ${id}: delivery again to ${to.join(", ")} asked by ${context.by}`,
  );
  redeliver(id, to);
  return context.store.get(id) ?? job;
}
