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
  | "object?";

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

type Schema = Record<string, Record<string, FieldSpec>>;

type FieldType<S extends FieldSpec> = S extends "string" ? string
  : S extends "string?" ? string | undefined
  : S extends "integer" | "file_count" | "result_count" ? number
  : S extends "integer?" | "number?" ? number | undefined
  : S extends "boolean?" ? boolean | undefined
  : S extends "integer|null" ? number | null
  : S extends "strings" ? string[]
  : S extends "files" ? FileEntry[]
  : S extends "files?" ? FileEntry[] | undefined
  : S extends "jobs" ? JobSummary[]
  : S extends "object?" ? Record<string, unknown> | undefined
  : never;

type MessagesOf<T extends Schema> = {
  [K in keyof T]: { type: K } & { [F in keyof T[K]]: FieldType<T[K][F]> };
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
}

/** Any message the client may send (protocol version 2). */
export type ClientMessage = MessagesOf<typeof TO_SERVER>;
/** Any message the server may send (protocol version 2). */
export type ServerMessage = MessagesOf<typeof TO_CLIENT>;
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

/**
 * Validate a message the client sent (the server calls this), by the rules of the
 * session's protocol version (default: the current one).
 */
export function parseClientMessage(value: unknown, version?: 2): ClientMessage;
export function parseClientMessage(value: unknown, version: 1): ClientMessageV1;
export function parseClientMessage(
  value: unknown,
  version: number,
): ClientMessage | ClientMessageV1;
export function parseClientMessage(
  value: unknown,
  version = 2,
): ClientMessage | ClientMessageV1 {
  return version === 1
    ? parseWith<ClientMessageV1>(TO_SERVER_V1, value, "client")
    : parseWith<ClientMessage>(TO_SERVER, value, "client");
}

/** Validate a message the server sent (the client calls this), by version as above. */
export function parseServerMessage(value: unknown, version?: 2): ServerMessage;
export function parseServerMessage(value: unknown, version: 1): ServerMessageV1;
export function parseServerMessage(
  value: unknown,
  version: number,
): ServerMessage | ServerMessageV1;
export function parseServerMessage(
  value: unknown,
  version = 2,
): ServerMessage | ServerMessageV1 {
  return version === 1
    ? parseWith<ServerMessageV1>(TO_CLIENT_V1, value, "server")
    : parseWith<ServerMessage>(TO_CLIENT, value, "server");
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
