/**
 * The audit trail of jobs (issue 14): turns each committed change of the job store
 * (lib/server/job_store.ts onChange) into its audit event, so that every path that
 * changes a job (an upload, a rerun, the scheduler, a cancel, the sweeper, a restart's
 * recovery) is audited without each of them knowing the audit log exists:
 *
 * - receiving → queued: `job_submitted` with the inputs' names, sizes and SHA-256, the
 *   options and the priority (a job is submitted once every input is verified);
 * - queued → running: `job_started` with the attempt;
 * - → succeeded or failed: `job_finished` with the exit code, the duration and the
 *   outputs' sizes and SHA-256 (a failed upload is a job that failed from receiving);
 * - → cancelled: `job_cancelled`, by whom and why;
 * - succeeded → expired, and a failed job's kept inputs removed: `job_expired`.
 *
 * Deliveries (`job_delivered`, `job_fetched`) are audited by the session that sends
 * the results (lib/server/delivery.ts), the only place that knows who received them;
 * deliveries to a PACS (`job_delivered_pacs`, `delivery_failed`) by
 * lib/server/pacs_delivery.ts, which knows what each destination confirmed.
 *
 * @module
 */
import type { Logger } from "../log.ts";
import type { JobRecord, JobStore, StoreChange } from "./job_store.ts";

/** Where audit events go (lib/server/audit_log.ts AuditLog). */
export interface AuditSink {
  record(event: string, fields: Record<string, unknown>): Promise<void>;
}

/** The host part of a `host:port` peer (an IPv6 host keeps its colons). */
export function peerAddress(peer: string): string {
  const at = peer.lastIndexOf(":");
  const host = at > 0 ? peer.slice(0, at) : peer;
  return host.replace(/^\[(.*)\]$/, "$1");
}

/**
 * Audit every job change of `store` into `audit` until the returned function is called.
 * A failed write is logged: the job goes on (the audit log's own checks make the gap
 * visible to `recon-server audit --verify`).
 */
export function auditJobChanges(store: JobStore, audit: AuditSink, log: Logger): () => void {
  return store.onChange((change) => {
    const event = jobEvent(store, change);
    if (!event) return;
    audit.record(event.event, event.fields).catch((error) =>
      log.error(
        `audit log: cannot record ${event.event} of job ${change.job.id}: ${
          (error as Error).message
        }`,
      )
    );
  });
}

/** The audit event of one store change, if it is one the audit trail keeps. */
export function jobEvent(
  store: JobStore,
  { job, from, what }: StoreChange,
): { event: string; fields: Record<string, unknown> } | undefined {
  const base = { job: job.id, client: job.client };
  if (what === "inputs_removed") {
    return job.state === "failed"
      ? { event: "job_expired", fields: { ...base, what: "inputs" } }
      : undefined;
  }
  if (what !== "state" || from === job.state) return undefined;
  switch (job.state) {
    case "queued":
      if (from !== "receiving") return undefined; // back in the queue after a restart
      return {
        event: "job_submitted",
        fields: {
          ...base,
          address: peerAddress(job.peer),
          key_id: job.keyId,
          priority: job.priority,
          options: job.options,
          inputs: store.inputs(job.id).map((input) => ({
            name: input.name,
            size: input.size,
            sha256: input.sha256,
          })),
          ...(job.rerunOf ? { rerun_of: job.rerunOf } : {}),
        },
      };
    case "running":
      return {
        event: "job_started",
        fields: { ...base, attempt: job.attempts, executor: job.executor },
      };
    case "succeeded":
    case "failed":
      return { event: "job_finished", fields: { ...base, ...outcome(store, job) } };
    case "cancelled":
      return {
        event: "job_cancelled",
        fields: { ...base, by: job.cancelledBy ?? null, reason: job.reason ?? null, from },
      };
    case "expired":
      return { event: "job_expired", fields: { ...base, what: "results" } };
    default:
      return undefined;
  }
}

function outcome(store: JobStore, job: JobRecord): Record<string, unknown> {
  const duration = job.startedAt !== undefined && job.finishedAt !== undefined
    ? Math.round(job.finishedAt - job.startedAt) / 1000
    : null;
  return {
    state: job.state,
    exit_code: job.exitCode ?? null,
    duration_seconds: duration,
    ...(job.reason ? { reason: job.reason } : {}),
    outputs: store.outputs(job.id).map((output) => ({
      name: output.name,
      size: output.size,
      sha256: output.sha256,
    })),
  };
}
