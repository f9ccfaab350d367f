/**
 * Control messages (docs/PROTOCOL.md §4): their types and their validation, in one
 * place, one schema table per direction and protocol version. Everything that arrives
 * from the peer goes through {@link parseClientMessage} or {@link parseServerMessage}
 * before any other code looks at it: unknown type, missing or mistyped field,
 * oversized strings, arrays or counts, deep nesting and `__proto__`-style keys are
 * protocol errors.
 *
 * Version 2 (the current one) never lists a job's files in one message: a submission
 * announces its count and then one `input_file` per file, and results are announced
 * by count and total size, then named one `result_file` at a time (§4.6). Version 1
 * (lists inside `submit_recon_job`, `job_queued`, `dicom_transfer_start`,
 * `recon_complete`) stays for clients not yet upgraded.
 *
 * Version 3 also names the server's DICOM destinations (PROTOCOL.md §6.11): a
 * submission may ask for some (`deliver`), `redeliver_job` sends a job's results
 * again, and JobInfo reports each destination's delivery (DeliverySummary).
 *
 * @module
 */
import { ProtocolError } from "../errors.ts";

/** Deepest nesting accepted in a control message. */
export const MAX_MESSAGE_DEPTH = 8;
/** Most input files in one job; also most results to a version 1 client. */
export const MAX_FILES_PER_JOB = 10_000;
/** Most result files of one job delivered to a version 2 client. */
export const MAX_RESULT_FILES = 100_000;
/** Longest string field. */
export const MAX_STRING_LENGTH = 64 * 1024;
/** Longest array of any kind (a queue listing can be longer than one job's files). */
export const MAX_ARRAY_LENGTH = 100_000;
/** A job id: a lower-case UUID, safe to use as a directory name. */
export const JOB_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/**
 * A destination's name as a client writes it: letters and digits, compared
 * case-insensitively (PROTOCOL.md §6.11); at most 32, as the server's client file allows.
 */
export const DESTINATION_NAME_PATTERN = /^[A-Za-z0-9]{1,32}$/;
/** Most destinations one `deliver` or `to` may name. */
export const MAX_DESTINATIONS = 16;

type FieldSpec =
  | "job_id"
  | "job_id?"
  | "string"
  | "string?"
  | "integer"
  | "integer?"
  | "number?"
  | "boolean?"
  | "integer|null"
  | "strings"
  | "file_count"
  | "result_count"
  | "files"
  | "files?"
  | "jobs"
  | "object?"
  | "priority"
  | "priority?"
  | "state"
  | "state?"
  | "job_info"
  | "job_infos"
  | "destinations?"
  | "strings?"
  | "delivery_state"
  | "deliveries?";

const FILE_FIELDS: Record<string, FieldSpec> = {
  name: "string",
  size: "integer",
  original_path_on_client: "string?",
  sha256: "string?",
};

const JOB_FIELDS: Record<string, FieldSpec> = {
  job_id: "job_id",
  status: "string",
  primary_file: "string",
  file_count: "integer",
  submitted_at: "string",
  input_dir: "string",
  started_at: "string?",
  percent: "number?",
  priority: "priority?",
  queue_position: "integer?",
  client: "string?",
  executor: "string?",
  executor_ref: "string?",
};

/** Job priorities, highest first (PROTOCOL.md §6.3). */
export const PRIORITIES = ["high", "normal", "low"] as const;
/** A job's priority. */
export type Priority = (typeof PRIORITIES)[number];

/** A job's states (PROTOCOL.md §6.6): receiving → queued → running → final → expired. */
export const JOB_STATES = [
  "receiving",
  "queued",
  "running",
  "succeeded",
  "failed",
  "cancelled",
  "expired",
] as const;
/** A job's state. */
export type JobState = (typeof JOB_STATES)[number];
/** The states a job ends in (before it expires). */
export const FINAL_STATES: readonly JobState[] = ["succeeded", "failed", "cancelled"];

/**
 * GOODBYE's reason when the server closes a session because it no longer accepts the
 * session's key: its client was revoked, its grace period after a rotation ended, or
 * its client may no longer connect from this address (PROTOCOL.md §6.10).
 */
export const KEY_REVOKED_REASON = "this client's key was revoked";

/** The states of a job's delivery to one destination (PROTOCOL.md §6.11). */
export const DELIVERY_STATES = ["pending", "sending", "delivered", "failed"] as const;
/** A delivery's state. */
export type DeliveryState = (typeof DELIVERY_STATES)[number];

/** One destination's delivery of a job's results, in JobInfo's `deliveries`. */
const DELIVERY_FIELDS: Record<string, FieldSpec> = {
  destination: "string",
  state: "delivery_state",
  files_total: "integer",
  files_sent: "integer",
  files_skipped: "integer",
  files_failed: "integer",
  attempts: "integer",
  last_error: "string?",
  next_attempt_at: "string?",
  finished_at: "string?",
};

/** One job as `job_status` and `job_list` describe it (version 3). */
const JOB_INFO_FIELDS: Record<string, FieldSpec> = {
  job_id: "job_id",
  state: "state",
  priority: "priority",
  queue_position: "integer?",
  submitted_at: "string",
  started_at: "string?",
  finished_at: "string?",
  file_count: "integer",
  input_bytes: "integer",
  primary_file: "string?",
  attempts: "integer",
  exit_code: "integer?",
  reason: "string?",
  cancelled_by: "string?",
  result_count: "integer?",
  result_bytes: "integer?",
  delivered_at: "string?",
  results_expire_at: "string?",
  inputs_expire_at: "string?",
  rerun_of: "job_id?",
  percent: "number?",
  client: "string?",
  executor: "string?",
  executor_ref: "string?",
  deliveries: "deliveries?",
};

/** Messages the client sends in protocol version 1. */
const TO_SERVER_V1 = {
  submit_recon_job: { files: "files", client_recon_options_json: "string" },
  get_server_status: {},
  get_queue_details: {},
  dicom_transfer_ack: { job_id: "job_id", status: "string" },
  results_received: { job_id: "job_id" },
  cancel_job: { job_id: "job_id?", reason: "string?" },
  error: { reason: "string" },
} as const satisfies Record<string, Record<string, FieldSpec>>;

/** Messages the server sends in protocol version 1. */
const TO_CLIENT_V1 = {
  request_file: { job_id: "job_id", name: "string", original_path_on_client: "string?" },
  job_queued: { job_id: "job_id", files_received: "integer", files: "files?" },
  job_started: { job_id: "job_id" },
  job_progress: { job_id: "job_id", text: "string?", percent: "number?" },
  dicom_transfer_start: {
    job_id: "job_id",
    count: "integer",
    files: "files",
    skipped: "integer?",
  },
  result_file: { job_id: "job_id", name: "string", size: "integer" },
  recon_complete: { job_id: "job_id", files: "files" },
  job_failed: {
    job_id: "job_id",
    reason: "string",
    exit_code: "integer|null",
    stderr_tail: "strings",
  },
  server_status_response: {
    version: "string",
    uptime_seconds: "integer",
    max_concurrent_jobs: "integer",
    active_workers: "integer",
    queue_length: "integer",
    jobs_completed: "integer",
    jobs_failed: "integer",
  },
  queue_details_response: { jobs: "jobs" },
  error: { reason: "string", kind: "string?" },
  server_shutting_down: { reason: "string" },
} as const satisfies Record<string, Record<string, FieldSpec>>;

/** Version 2: no message lists a job's files (PROTOCOL.md §4.6). */
const TO_SERVER = {
  ...TO_SERVER_V1,
  submit_recon_job: { file_count: "file_count", client_recon_options_json: "string" },
  input_file: { name: "string", size: "integer", original_path_on_client: "string?" },
} as const satisfies Record<string, Record<string, FieldSpec>>;

const TO_CLIENT = {
  ...TO_CLIENT_V1,
  job_queued: { job_id: "job_id", files_received: "integer" },
  dicom_transfer_start: {
    job_id: "job_id",
    count: "result_count",
    total_size: "integer",
    skipped: "integer?",
  },
  recon_complete: { job_id: "job_id", count: "result_count" },
} as const satisfies Record<string, Record<string, FieldSpec>>;

/**
 * Version 3: jobs outlive their sessions (PROTOCOL.md §6.6–§6.9). A session can
 * resume an upload, follow, fetch, list, cancel and re-run jobs by id, and read a
 * job's log; `request_file` and `result_file` may start at an offset.
 */
const TO_SERVER_V3 = {
  ...TO_SERVER,
  submit_recon_job: {
    file_count: "file_count",
    client_recon_options_json: "string",
    priority: "priority?",
    deliver: "destinations?",
  },
  resume_upload: { job_id: "job_id" },
  follow_job: { job_id: "job_id", deliver: "boolean?" },
  dicom_transfer_ack: {
    job_id: "job_id",
    status: "string",
    resume_index: "integer?",
    resume_offset: "integer?",
  },
  list_jobs: { state: "state?", cursor: "string?", limit: "integer?", all_clients: "boolean?" },
  cancel_job: { job_id: "job_id?", reason: "string?" },
  get_job_log: { job_id: "job_id", offset: "integer?" },
  rerun_job: { job_id: "job_id", client_recon_options_json: "string?", priority: "priority?" },
  redeliver_job: { job_id: "job_id", to: "destinations?" },
} as const satisfies Record<string, Record<string, FieldSpec>>;

const TO_CLIENT_V3 = {
  ...TO_CLIENT,
  request_file: {
    job_id: "job_id",
    name: "string",
    original_path_on_client: "string?",
    offset: "integer?",
  },
  result_file: { job_id: "job_id", name: "string", size: "integer", offset: "integer?" },
  job_status: { job: "job_info" },
  job_list: { jobs: "job_infos", cursor: "string?" },
  job_log: {
    job_id: "job_id",
    offset: "integer",
    next_offset: "integer",
    text: "string",
    final: "boolean?",
  },
  queue_details_response: { jobs: "jobs" },
  server_status_response: {
    ...TO_CLIENT.server_status_response,
    jobs_cancelled: "integer?",
    queued_high: "integer?",
    queued_normal: "integer?",
    queued_low: "integer?",
    kept_input_bytes: "integer?",
    kept_result_bytes: "integer?",
    disk_free_bytes: "integer?",
    disk_free_margin: "integer?",
    client: "string?",
    admin: "boolean?",
    executor: "string?",
    executor_problem: "string?",
    crypto: "string?",
    destinations: "strings?",
    default_destinations: "strings?",
  },
} as const satisfies Record<string, Record<string, FieldSpec>>;

type Schema = Record<string, Record<string, FieldSpec>>;

type FieldType<S extends FieldSpec> = S extends "string" | "job_id" ? string
  : S extends "string?" | "job_id?" ? string | undefined
  : S extends "integer" | "file_count" | "result_count" ? number
  : S extends "integer?" | "number?" ? number | undefined
  : S extends "boolean?" ? boolean | undefined
  : S extends "integer|null" ? number | null
  : S extends "strings" ? string[]
  : S extends "files" ? FileEntry[]
  : S extends "files?" ? FileEntry[] | undefined
  : S extends "jobs" ? JobSummary[]
  : S extends "object?" ? Record<string, unknown> | undefined
  : S extends "priority" ? Priority
  : S extends "priority?" ? Priority | undefined
  : S extends "state" ? JobState
  : S extends "state?" ? JobState | undefined
  : S extends "job_info" ? JobInfo
  : S extends "job_infos" ? JobInfo[]
  : S extends "destinations?" | "strings?" ? string[] | undefined
  : S extends "delivery_state" ? DeliveryState
  : S extends "deliveries?" ? DeliverySummary[] | undefined
  : never;

type OptionalFields<M> = { [F in keyof M]: M[F] extends `${string}?` ? F : never }[keyof M];
type Fields<M extends Record<string, FieldSpec>> =
  & { [F in Exclude<keyof M, OptionalFields<M>>]: FieldType<M[F]> }
  & { [F in OptionalFields<M>]?: FieldType<M[F]> };

type MessagesOf<T extends Schema> = {
  [K in keyof T]: { type: K } & Fields<T[K]>;
}[keyof T];

/** A file as announced, requested or delivered. */
export interface FileEntry {
  name: string;
  size: number;
  original_path_on_client?: string;
  sha256?: string;
}

/** One job in `queue_details_response`. */
export interface JobSummary {
  job_id: string;
  status: string;
  primary_file: string;
  file_count: number;
  submitted_at: string;
  input_dir: string;
  started_at?: string;
  percent?: number;
  /** Version 3: the job's priority and its place in the queue (1 = next). */
  priority?: Priority;
  queue_position?: number;
  /** The submitting client's name (PROTOCOL.md §6.10). */
  client?: string;
  /** Where it runs when not on the server's host: `slurm` (PROTOCOL.md §6.4). */
  executor?: string;
  /** The executor's name for the run: the Slurm job id. */
  executor_ref?: string;
}

/**
 * One destination's delivery of a job's results (PROTOCOL.md §6.11): counts of the
 * job's DICOM result files, times as ISO 8601 UTC.
 */
export interface DeliverySummary {
  /** The destination's name, upper case. */
  destination: string;
  state: DeliveryState;
  /** The results to send: its DICOM files (every result until an attempt looked at them). */
  files_total: number;
  /** Stored by the destination. */
  files_sent: number;
  /** Results that are not DICOM files, not sent. */
  files_skipped: number;
  /** Refused by the destination in the last attempt. */
  files_failed: number;
  /** Attempts made so far. */
  attempts: number;
  /** Why the last attempt did not deliver everything, one line. */
  last_error?: string;
  /** When a `pending` delivery is tried next. */
  next_attempt_at?: string;
  /** When it was delivered or given up. */
  finished_at?: string;
}

/** One job in `job_status` and `job_list` (version 3, PROTOCOL.md §4.1). */
export interface JobInfo {
  job_id: string;
  state: JobState;
  priority: Priority;
  queue_position?: number;
  submitted_at: string;
  started_at?: string;
  finished_at?: string;
  file_count: number;
  input_bytes: number;
  primary_file?: string;
  attempts: number;
  exit_code?: number;
  reason?: string;
  cancelled_by?: string;
  result_count?: number;
  result_bytes?: number;
  delivered_at?: string;
  results_expire_at?: string;
  inputs_expire_at?: string;
  rerun_of?: string;
  percent?: number;
  /** The submitting client's name (PROTOCOL.md §6.10). */
  client?: string;
  /** What ran or runs it when not this box: `slurm` (PROTOCOL.md §6.4); absent: local. */
  executor?: string;
  /** The executor's name for it: the Slurm job id. */
  executor_ref?: string;
  /** Where its results go besides its client: one per destination (§6.11). */
  deliveries?: DeliverySummary[];
}

/** Any message the client may send (protocol version 3, the current one). */
export type ClientMessage = MessagesOf<typeof TO_SERVER_V3>;
/** Any message the server may send (protocol version 3). */
export type ServerMessage = MessagesOf<typeof TO_CLIENT_V3>;
/** Any message a version 2 client may send. */
export type ClientMessageV2 = MessagesOf<typeof TO_SERVER>;
/** Any message a server may send to a version 2 client. */
export type ServerMessageV2 = MessagesOf<typeof TO_CLIENT>;
/** Any message a version 1 client may send. */
export type ClientMessageV1 = MessagesOf<typeof TO_SERVER_V1>;
/** Any message a server may send to a version 1 client. */
export type ServerMessageV1 = MessagesOf<typeof TO_CLIENT_V1>;
/** Narrow a message union by type. */
export type MessageOf<M extends { type: unknown }, T> = Extract<M, { type: T }>;

const FORBIDDEN_KEYS = new Set(["__proto__", "constructor", "prototype"]);

function checkShape(value: unknown, depth: number, path: string): void {
  if (depth > MAX_MESSAGE_DEPTH) throw new ProtocolError(`message nested too deeply at ${path}`);
  if (typeof value === "string" && value.length > MAX_STRING_LENGTH) {
    throw new ProtocolError(`string too long at ${path}`);
  }
  if (Array.isArray(value)) {
    if (value.length > MAX_ARRAY_LENGTH) throw new ProtocolError(`array too long at ${path}`);
    value.forEach((item, i) => checkShape(item, depth + 1, `${path}[${i}]`));
  } else if (value !== null && typeof value === "object") {
    for (const key of Object.keys(value)) {
      if (FORBIDDEN_KEYS.has(key)) throw new ProtocolError(`forbidden key "${key}" at ${path}`);
      checkShape((value as Record<string, unknown>)[key], depth + 1, `${path}.${key}`);
    }
  }
}

function checkField(spec: FieldSpec, value: unknown, where: string): void {
  const optional = spec.endsWith("?");
  if (value === undefined) {
    if (optional) return;
    throw new ProtocolError(`${where} is missing`);
  }
  const base = spec.replace("?", "");
  const fail = (expected: string): never => {
    throw new ProtocolError(`${where} must be ${expected}`);
  };
  switch (base) {
    case "string":
      if (typeof value !== "string") fail("a string");
      break;
    case "job_id":
      if (typeof value !== "string" || !JOB_ID_PATTERN.test(value)) fail("a job id (a UUID)");
      break;
    case "integer":
      if (!Number.isSafeInteger(value) || (value as number) < 0) fail("a non-negative integer");
      break;
    case "file_count":
      if (!Number.isSafeInteger(value) || (value as number) < 0) fail("a non-negative integer");
      if ((value as number) > MAX_FILES_PER_JOB) fail(`at most ${MAX_FILES_PER_JOB}`);
      break;
    case "result_count":
      if (!Number.isSafeInteger(value) || (value as number) < 0) fail("a non-negative integer");
      if ((value as number) > MAX_RESULT_FILES) fail(`at most ${MAX_RESULT_FILES}`);
      break;
    case "integer|null":
      if (value !== null && !Number.isSafeInteger(value)) fail("an integer or null");
      break;
    case "number":
      if (typeof value !== "number" || !Number.isFinite(value)) fail("a number");
      break;
    case "boolean":
      if (typeof value !== "boolean") fail("a boolean");
      break;
    case "strings":
      if (!Array.isArray(value) || value.some((v) => typeof v !== "string")) {
        fail("an array of strings");
      }
      break;
    case "files":
      if (!Array.isArray(value)) fail("an array of files");
      if ((value as unknown[]).length > MAX_FILES_PER_JOB) {
        fail(`at most ${MAX_FILES_PER_JOB} files`);
      }
      (value as unknown[]).forEach((file, i) => checkObject(FILE_FIELDS, file, `${where}[${i}]`));
      break;
    case "jobs":
      if (!Array.isArray(value)) fail("an array of jobs");
      (value as unknown[]).forEach((job, i) => checkObject(JOB_FIELDS, job, `${where}[${i}]`));
      break;
    case "object":
      if (value === null || typeof value !== "object" || Array.isArray(value)) fail("an object");
      break;
    case "priority":
      if (!(PRIORITIES as readonly unknown[]).includes(value)) {
        fail(PRIORITIES.join(", ") + " or absent");
      }
      break;
    case "state":
      if (!(JOB_STATES as readonly unknown[]).includes(value)) {
        fail(`one of ${JOB_STATES.join(", ")}`);
      }
      break;
    case "job_info":
      checkObject(JOB_INFO_FIELDS, value, where);
      break;
    case "job_infos":
      if (!Array.isArray(value)) fail("an array of jobs");
      (value as unknown[]).forEach((job, i) => checkObject(JOB_INFO_FIELDS, job, `${where}[${i}]`));
      break;
    case "destinations":
      if (
        !Array.isArray(value) || value.length === 0 || value.length > MAX_DESTINATIONS ||
        value.some((name) => typeof name !== "string" || !DESTINATION_NAME_PATTERN.test(name))
      ) {
        fail(`an array of 1 to ${MAX_DESTINATIONS} destination names (1 to 32 letters and digits)`);
      }
      break;
    case "delivery_state":
      if (!(DELIVERY_STATES as readonly unknown[]).includes(value)) {
        fail(`one of ${DELIVERY_STATES.join(", ")}`);
      }
      break;
    case "deliveries":
      if (!Array.isArray(value)) fail("an array of deliveries");
      (value as unknown[]).forEach((item, i) =>
        checkObject(DELIVERY_FIELDS, item, `${where}[${i}]`)
      );
      break;
  }
}

function checkObject(fields: Record<string, FieldSpec>, value: unknown, where: string): void {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new ProtocolError(`${where} must be an object`);
  }
  for (const [name, spec] of Object.entries(fields)) {
    checkField(spec, (value as Record<string, unknown>)[name], `${where}.${name}`);
  }
}

function parseWith<M>(schema: Schema, value: unknown, sender: string): M {
  checkShape(value, 0, "message");
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new ProtocolError(`${sender} sent a message that is not a JSON object`);
  }
  const type = (value as { type?: unknown }).type;
  if (typeof type !== "string" || !Object.hasOwn(schema, type)) {
    throw new ProtocolError(`${sender} sent an unknown message type ${JSON.stringify(type)}`);
  }
  checkObject(schema[type], value, type);
  return value as M;
}

const CLIENT_SCHEMAS: Record<number, Schema> = { 1: TO_SERVER_V1, 2: TO_SERVER, 3: TO_SERVER_V3 };
const SERVER_SCHEMAS: Record<number, Schema> = { 1: TO_CLIENT_V1, 2: TO_CLIENT, 3: TO_CLIENT_V3 };

/** The schema of `version`; an unknown version is a programming error, not the peer's. */
function schemaOf(schemas: Record<number, Schema>, version: number): Schema {
  const schema = schemas[version];
  if (!schema) throw new RangeError(`no message schema for protocol version ${version}`);
  return schema;
}

/**
 * Validate a message the client sent (the server calls this), by the rules of the
 * session's protocol version (default: the current one).
 */
export function parseClientMessage(value: unknown, version?: 3): ClientMessage;
export function parseClientMessage(value: unknown, version: 2): ClientMessageV2;
export function parseClientMessage(value: unknown, version: 1): ClientMessageV1;
export function parseClientMessage(
  value: unknown,
  version: number,
): ClientMessage | ClientMessageV2 | ClientMessageV1;
export function parseClientMessage(
  value: unknown,
  version = 3,
): ClientMessage | ClientMessageV2 | ClientMessageV1 {
  return parseWith(schemaOf(CLIENT_SCHEMAS, version), value, "client");
}

/** Validate a message the server sent (the client calls this), by version as above. */
export function parseServerMessage(value: unknown, version?: 3): ServerMessage;
export function parseServerMessage(value: unknown, version: 2): ServerMessageV2;
export function parseServerMessage(value: unknown, version: 1): ServerMessageV1;
export function parseServerMessage(
  value: unknown,
  version: number,
): ServerMessage | ServerMessageV2 | ServerMessageV1;
export function parseServerMessage(
  value: unknown,
  version = 3,
): ServerMessage | ServerMessageV2 | ServerMessageV1 {
  return parseWith(schemaOf(SERVER_SCHEMAS, version), value, "server");
}

/** Pattern every recon option key must match (it becomes `--key` in argv). */
export const OPTION_KEY_PATTERN = /^[A-Za-z][A-Za-z0-9_]*$/;

/** Recon options: a flat object of strings, numbers and booleans. */
export type ReconOptions = Record<string, string | number | boolean>;

/**
 * Parse and check `client_recon_options_json` (or `--recon-options`): a JSON object
 * whose keys match OPTION_KEY_PATTERN and whose values are strings, finite numbers or
 * booleans. Throws TypeError with the reason.
 */
export function parseReconOptions(json: string): ReconOptions {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch (error) {
    throw new TypeError(`recon options are not valid JSON: ${(error as Error).message}`);
  }
  return checkReconOptions(value);
}

/** The checks of {@link parseReconOptions} on an already parsed value. */
export function checkReconOptions(value: unknown): ReconOptions {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new TypeError('recon options must be a JSON object like {"key": "value"}');
  }
  const options: ReconOptions = {};
  for (const [key, item] of Object.entries(value)) {
    if (!OPTION_KEY_PATTERN.test(key) || key.length > 64) {
      throw new TypeError(
        `recon option key ${JSON.stringify(key)} must be a letter followed by letters, digits or _`,
      );
    }
    if (
      typeof item !== "string" && typeof item !== "boolean" &&
      !(typeof item === "number" && Number.isFinite(item))
    ) {
      throw new TypeError(`recon option "${key}" must be a string, number or boolean`);
    }
    // deno-lint-ignore no-control-regex
    if (typeof item === "string" && (item.length > 4096 || /[\u0000-\u001f\u007f]/.test(item))) {
      throw new TypeError(
        `recon option "${key}" is longer than 4096 characters or contains a control character`,
      );
    }
    Object.defineProperty(options, key, { value: item, enumerable: true, writable: true });
  }
  return options;
}
