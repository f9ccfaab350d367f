/**
 * Tests for lib/wire/protocol.ts: every message type of the three protocol versions accepted
 * in a valid form, and the hostile shapes refused one failure class at a time (unknown
 * type, missing and mistyped fields, prototype keys, nesting, sizes, counts); recon
 * option checks; and no version 2 message growing with a job's file count.
 */
import assert from "node:assert/strict";
import { ProtocolError } from "../../lib/errors.ts";
import {
  checkReconOptions,
  JOB_ID_PATTERN,
  MAX_ARRAY_LENGTH,
  MAX_DESTINATIONS,
  MAX_FILES_PER_JOB,
  MAX_MESSAGE_DEPTH,
  MAX_RESULT_FILES,
  MAX_STRING_LENGTH,
  parseClientMessage,
  parseReconOptions,
  parseServerMessage,
} from "../../lib/wire/protocol.ts";

const J = "0b7f0f2e-3c1a-4b5e-9d2f-6a7b8c9d0e1f";
const FILE = { name: "P12345.7", size: 1024, original_path_on_client: "/data/P12345.7" };
const JOB = {
  job_id: J,
  status: "processing",
  primary_file: "P12345.7",
  file_count: 2,
  submitted_at: "2026-11-23T15:22:28Z",
  input_dir: "/tmp/recon/job",
  started_at: "2026-11-23T15:22:30Z",
  percent: 12.5,
};

/** Client messages the same in both versions. */
const CLIENT_COMMON: Record<string, unknown>[] = [
  { type: "get_server_status" },
  { type: "get_queue_details" },
  { type: "dicom_transfer_ack", job_id: J, status: "ok" },
  { type: "results_received", job_id: J },
  { type: "cancel_job" },
  { type: "cancel_job", job_id: J, reason: "user pressed Ctrl-C" },
  { type: "error", reason: "disk full" },
];

const CLIENT_MESSAGES: Record<string, unknown>[] = [
  { type: "submit_recon_job", file_count: 2, client_recon_options_json: "{}" },
  { type: "input_file", ...FILE },
  { type: "input_file", name: "b.dat", size: 0 },
  ...CLIENT_COMMON,
];

const CLIENT_MESSAGES_V1: Record<string, unknown>[] = [
  {
    type: "submit_recon_job",
    files: [FILE, { name: "b.dat", size: 0 }],
    client_recon_options_json: "{}",
  },
  ...CLIENT_COMMON,
];

/** Server messages the same in both versions. */
const SERVER_COMMON: Record<string, unknown>[] = [
  { type: "request_file", job_id: J, name: "P1.7" },
  { type: "request_file", job_id: J, name: "P1.7", original_path_on_client: "/x/P1.7" },
  { type: "job_started", job_id: J },
  { type: "job_progress", job_id: J },
  { type: "job_progress", job_id: J, text: "slice 3/40", percent: 7.5 },
  { type: "result_file", job_id: J, name: "dicom/IM0001.dcm", size: 5 },
  { type: "job_failed", job_id: J, reason: "exit 1", exit_code: 1, stderr_tail: ["oops"] },
  { type: "job_failed", job_id: J, reason: "killed", exit_code: null, stderr_tail: [] },
  {
    type: "server_status_response",
    version: "0.1.0",
    uptime_seconds: 5,
    max_concurrent_jobs: 1,
    active_workers: 0,
    queue_length: 0,
    jobs_completed: 3,
    jobs_failed: 1,
  },
  {
    type: "queue_details_response",
    jobs: [JOB, { ...JOB, started_at: undefined, percent: undefined }],
  },
  { type: "error", reason: "no" },
  { type: "error", reason: "no", kind: "refused" },
  { type: "server_shutting_down", reason: "maintenance" },
];

const SERVER_MESSAGES: Record<string, unknown>[] = [
  ...SERVER_COMMON,
  { type: "job_queued", job_id: J, files_received: 1 },
  { type: "dicom_transfer_start", job_id: J, count: 2, total_size: 10 },
  { type: "recon_complete", job_id: J, count: 2 },
];

const SERVER_MESSAGES_V1: Record<string, unknown>[] = [
  ...SERVER_COMMON,
  { type: "job_queued", job_id: J, files_received: 1 },
  { type: "job_queued", job_id: J, files_received: 1, files: [FILE] },
  { type: "dicom_transfer_start", job_id: J, count: 1, files: [{ ...FILE, sha256: "ab" }] },
  { type: "recon_complete", job_id: J, files: [] },
];

/** Round-trip through JSON, as a message arrives off the wire. */
function wire(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value));
}

Deno.test("parseClientMessage() accepts a valid example of every client message type", () => {
  const types = new Set<string>();
  for (const message of CLIENT_MESSAGES) {
    const parsed = parseClientMessage(wire(message));
    assert.deepEqual(parsed, wire(message));
    types.add(parsed.type);
  }
  assert.equal(types.size, 8);
  const typesV1 = new Set<string>();
  for (const message of CLIENT_MESSAGES_V1) {
    const parsed = parseClientMessage(wire(message), 1);
    assert.deepEqual(parsed, wire(message));
    typesV1.add(parsed.type);
  }
  assert.equal(typesV1.size, 7);
});

Deno.test("parseServerMessage() accepts a valid example of every server message type", () => {
  for (const [version, messages] of [[2, SERVER_MESSAGES], [1, SERVER_MESSAGES_V1]] as const) {
    const types = new Set<string>();
    for (const message of messages) {
      const parsed = parseServerMessage(wire(message), version);
      assert.deepEqual(parsed, wire(message));
      types.add(parsed.type);
    }
    assert.equal(types.size, 12, `version ${version}`);
  }
});

Deno.test("each version refuses the other's form of the messages that changed", () => {
  assert.throws(
    () => parseClientMessage(wire(CLIENT_MESSAGES_V1[0])),
    /submit_recon_job\.file_count is missing/,
  );
  assert.throws(() => parseClientMessage(wire(CLIENT_MESSAGES[0]), 1), /files is missing/);
  assert.throws(() => parseClientMessage(wire(CLIENT_MESSAGES[1]), 1), /unknown message type/);
  assert.throws(
    () => parseServerMessage({ type: "dicom_transfer_start", job_id: J, count: 1, files: [] }),
    /total_size is missing/,
  );
  assert.throws(
    () => parseServerMessage({ type: "recon_complete", job_id: J, count: 1 }, 1),
    /files is missing/,
  );
});

/** A name of `bytes` UTF-8 bytes that JSON escapes as much as a file name allows. */
function worstName(bytes: number): string {
  // `"` is escaped to two bytes; it is legal in a file name.
  return '"'.repeat(bytes);
}

Deno.test("no version 2 control message grows with the number of files", () => {
  // The largest version 2 messages that name a file carry one name and one client path.
  const path = "/" + "p".repeat(MAX_STRING_LENGTH - 1);
  const biggest = [
    { type: "input_file", name: worstName(255), size: 2 ** 53 - 1, original_path_on_client: path },
    { type: "request_file", job_id: J, name: worstName(255), original_path_on_client: path },
    { type: "result_file", job_id: J, name: worstName(16 * 256 - 1), size: 2 ** 53 - 1 },
  ];
  for (const message of biggest) {
    const bytes = new TextEncoder().encode(JSON.stringify(message)).length;
    assert.ok(bytes < 140_000, `${message.type}: ${bytes} bytes`);
  }
  // The counts are bounded by the schema, not by a list.
  parseClientMessage({
    type: "submit_recon_job",
    file_count: MAX_FILES_PER_JOB,
    client_recon_options_json: "{}",
  });
  parseServerMessage({
    type: "dicom_transfer_start",
    job_id: J,
    count: MAX_RESULT_FILES,
    total_size: 2 ** 53 - 1,
  });
});

Deno.test("dicom_transfer_start may say how many results were skipped, as a non-negative integer", () => {
  const start = { type: "dicom_transfer_start", job_id: J, count: 2, total_size: 10 };
  assert.equal(parseServerMessage({ ...start, skipped: 3 }).type, "dicom_transfer_start");
  const v1 = { type: "dicom_transfer_start", job_id: J, count: 0, files: [] };
  assert.equal(parseServerMessage({ ...v1, skipped: 3 }, 1).type, "dicom_transfer_start");
  for (const skipped of [-1, 1.5, "3", null, 2 ** 53]) {
    assert.throws(
      () => parseServerMessage({ ...start, skipped }),
      /dicom_transfer_start\.skipped must be a non-negative integer/,
      JSON.stringify(skipped),
    );
  }
});

Deno.test("a message is valid in one direction only", () => {
  assert.throws(() => parseServerMessage({ type: "get_server_status" }), /unknown message type/);
  assert.throws(
    () => parseClientMessage({ type: "job_started", job_id: J }),
    /client sent an unknown message type "job_started"/,
  );
});

Deno.test("parse*Message() refuse a value that is not a JSON object", () => {
  for (const value of [null, undefined, 1, "text", true, [], [{ type: "get_server_status" }]]) {
    assert.throws(() => parseClientMessage(value), ProtocolError, JSON.stringify(value));
    assert.throws(() => parseServerMessage(value), ProtocolError, JSON.stringify(value));
  }
});

Deno.test("parse*Message() refuse an unknown, missing or non-string type", () => {
  const types = [
    "launch_missiles",
    "",
    "GET_SERVER_STATUS",
    "toString",
    "hasOwnProperty",
    "constructor",
    "__proto__",
    5,
    null,
    ["get_server_status"],
  ];
  for (const type of types) {
    assert.throws(
      () => parseClientMessage({ type }),
      (error: unknown) =>
        error instanceof ProtocolError && /unknown message type/.test(error.message),
      JSON.stringify(type),
    );
  }
  assert.throws(() => parseClientMessage({}), /unknown message type undefined/);
});

Deno.test("parseClientMessage() names a missing field", () => {
  assert.throws(
    () => parseClientMessage({ type: "dicom_transfer_ack", job_id: J }),
    (error: unknown) =>
      error instanceof ProtocolError && error.message === "dicom_transfer_ack.status is missing",
  );
  assert.throws(
    () =>
      parseClientMessage({
        type: "submit_recon_job",
        files: [{ size: 1 }],
        client_recon_options_json: "{}",
      }, 1),
    /submit_recon_job\.files\[0\]\.name is missing/,
  );
  assert.throws(() => parseClientMessage({ type: "input_file", size: 1 }), /input_file\.name/);
});

const MISTYPED: [string, Record<string, unknown>, RegExp][] = [
  ["a number for a string", { type: "error", reason: 5 }, /error\.reason must be a string/],
  ["null for a string", { type: "error", reason: null }, /must be a string/],
  [
    "a negative size",
    { type: "result_file", job_id: J, name: "n", size: -1 },
    /size must be a non-negative integer/,
  ],
  [
    "a fractional size",
    { type: "result_file", job_id: J, name: "n", size: 1.5 },
    /non-negative integer/,
  ],
  [
    "a size beyond 2^53",
    { type: "result_file", job_id: J, name: "n", size: 2 ** 53 },
    /non-negative integer/,
  ],
  [
    "a size as a string",
    { type: "result_file", job_id: J, name: "n", size: "5" },
    /non-negative integer/,
  ],
  [
    "an exit code that is a string",
    { type: "job_failed", job_id: J, reason: "r", exit_code: "1", stderr_tail: [] },
    /exit_code must be an integer or null/,
  ],
  [
    "a stderr tail holding a number",
    { type: "job_failed", job_id: J, reason: "r", exit_code: 1, stderr_tail: ["a", 2] },
    /stderr_tail must be an array of strings/,
  ],
  [
    "a percent that is a string",
    { type: "job_progress", job_id: J, percent: "50" },
    /percent must be a number/,
  ],
  [
    "a percent that is not finite",
    { type: "job_progress", job_id: J, percent: Infinity },
    /percent must be a number/,
  ],
  [
    "files that is an object",
    { type: "recon_complete", job_id: J, files: { name: "a", size: 1 } },
    /files must be an array of files/,
  ],
  [
    "a file entry that is a string",
    { type: "recon_complete", job_id: J, files: ["a"] },
    /files\[0\] must be an object/,
  ],
  [
    "a file entry that is an array",
    { type: "recon_complete", job_id: J, files: [["a", 1]] },
    /files\[0\] must be an object/,
  ],
  [
    "a job without an id",
    { type: "queue_details_response", jobs: [{ ...JOB, job_id: undefined }] },
    /jobs\[0\]\.job_id is missing/,
  ],
  [
    "an optional field of the wrong type",
    { type: "request_file", job_id: J, name: "n", original_path_on_client: 7 },
    /original_path_on_client must be a string/,
  ],
];

for (const [what, message, pattern] of MISTYPED) {
  Deno.test(`parseServerMessage() refuses ${what}`, () => {
    // `files` lists exist in version 1 only.
    const version = "files" in message ? 1 : 2;
    assert.throws(
      () => parseServerMessage(message, version),
      (error: unknown) => error instanceof ProtocolError && pattern.test(error.message),
    );
  });
}

Deno.test("parse*Message() refuse __proto__, constructor and prototype keys anywhere", () => {
  const texts = [
    '{"type":"get_server_status","__proto__":{"polluted":true}}',
    '{"type":"get_server_status","constructor":{"prototype":{"polluted":true}}}',
    '{"type":"get_server_status","prototype":1}',
    '{"type":"input_file","name":"a","size":1,"x":[{"__proto__":{"size":5}}]}',
    '{"type":"cancel_job","reason":"x","extra":{"deep":[{"__proto__":null}]}}',
  ];
  for (const text of texts) {
    const value = JSON.parse(text);
    assert.throws(
      () => parseClientMessage(value),
      (error: unknown) => error instanceof ProtocolError && /forbidden key/.test(error.message),
      text,
    );
  }
  assert.equal(({} as Record<string, unknown>).polluted, undefined, "nothing was polluted");
});

function nested(depth: number): unknown {
  let value: unknown = "leaf";
  for (let i = 0; i < depth; i++) value = { inner: value };
  return value;
}

Deno.test("parse*Message() refuse nesting deeper than MAX_MESSAGE_DEPTH", () => {
  // depth counts from the message itself (0); `extra` is at depth 1.
  const ok = { type: "cancel_job", extra: nested(MAX_MESSAGE_DEPTH - 1) };
  parseClientMessage(ok);
  const deep = { type: "cancel_job", extra: nested(MAX_MESSAGE_DEPTH) };
  assert.throws(() => parseClientMessage(deep), /nested too deeply/);
  // Deep arrays too, and absurd depth is refused without exhausting the stack.
  const text = "[".repeat(50_000) + "]".repeat(50_000);
  assert.throws(
    () => parseClientMessage({ type: "cancel_job", extra: JSON.parse(text) }),
    /nested too deeply/,
  );
});

Deno.test("parse*Message() refuse a string longer than MAX_STRING_LENGTH", () => {
  parseServerMessage({ type: "error", reason: "x".repeat(MAX_STRING_LENGTH) });
  assert.throws(
    () => parseServerMessage({ type: "error", reason: "x".repeat(MAX_STRING_LENGTH + 1) }),
    (error: unknown) =>
      error instanceof ProtocolError && /string too long at message.reason/.test(error.message),
  );
  // Also in a field the schema does not know and inside arrays.
  assert.throws(
    () =>
      parseClientMessage({ type: "get_server_status", junk: ["x".repeat(MAX_STRING_LENGTH + 1)] }),
    /string too long at message\.junk\[0\]/,
  );
});

Deno.test("parse*Message() refuse more than MAX_FILES_PER_JOB files (version 1 lists)", () => {
  const files = Array.from(
    { length: MAX_FILES_PER_JOB + 1 },
    (_, i) => ({ name: `f${i}`, size: 1 }),
  );
  assert.throws(
    () =>
      parseClientMessage({ type: "submit_recon_job", files, client_recon_options_json: "{}" }, 1),
    (error: unknown) =>
      error instanceof ProtocolError &&
      new RegExp(`files must be at most ${MAX_FILES_PER_JOB} files`).test(error.message),
  );
  parseClientMessage({
    type: "submit_recon_job",
    files: files.slice(0, MAX_FILES_PER_JOB),
    client_recon_options_json: "{}",
  }, 1);
});

Deno.test("parse*Message() refuse a count above MAX_FILES_PER_JOB or MAX_RESULT_FILES (version 2)", () => {
  assert.throws(
    () =>
      parseClientMessage({
        type: "submit_recon_job",
        file_count: MAX_FILES_PER_JOB + 1,
        client_recon_options_json: "{}",
      }),
    new RegExp(`file_count must be at most ${MAX_FILES_PER_JOB}$`),
  );
  for (const count of [-1, 1.5, "3"]) {
    assert.throws(
      () =>
        parseClientMessage({
          type: "submit_recon_job",
          file_count: count,
          client_recon_options_json: "{}",
        }),
      /file_count must be a non-negative integer/,
    );
  }
  assert.throws(
    () =>
      parseServerMessage({
        type: "dicom_transfer_start",
        job_id: J,
        count: MAX_RESULT_FILES + 1,
        total_size: 1,
      }),
    new RegExp(`count must be at most ${MAX_RESULT_FILES}$`),
  );
  assert.throws(
    () => parseServerMessage({ type: "recon_complete", job_id: J, count: MAX_RESULT_FILES + 1 }),
    /recon_complete\.count must be at most/,
  );
});

Deno.test("parse*Message() refuse any array longer than MAX_ARRAY_LENGTH", () => {
  const junk = new Array(MAX_ARRAY_LENGTH + 1).fill(0);
  assert.throws(
    () => parseClientMessage({ type: "get_server_status", junk }),
    /array too long at message\.junk/,
  );
});

const BAD_JOB_IDS = [
  "",
  "j",
  "../../etc",
  "0b7f0f2e-3c1a-4b5e-9d2f-6a7b8c9d0e1f/..",
  "0B7F0F2E-3C1A-4B5E-9D2F-6A7B8C9D0E1F",
  " 0b7f0f2e-3c1a-4b5e-9d2f-6a7b8c9d0e1f",
  "0b7f0f2e-3c1a-4b5e-9d2f-6a7b8c9d0e1f\n",
  "0b7f0f2e3c1a4b5e9d2f6a7b8c9d0e1f",
  5,
  null,
];

Deno.test("parse*Message() refuse a job id that is not a lower-case UUID", () => {
  assert.ok(JOB_ID_PATTERN.test(J));
  for (const job_id of BAD_JOB_IDS) {
    const what = JSON.stringify(job_id);
    assert.throws(
      () => parseServerMessage({ type: "job_started", job_id }),
      (error: unknown) =>
        error instanceof ProtocolError && /job_started\.job_id/.test(error.message),
      what,
    );
    assert.throws(
      () => parseClientMessage({ type: "results_received", job_id }),
      ProtocolError,
      what,
    );
    assert.throws(
      () => parseServerMessage({ type: "queue_details_response", jobs: [{ ...JOB, job_id }] }),
      ProtocolError,
      what,
    );
  }
  // Optional where the schema says so, but checked when present.
  parseClientMessage({ type: "cancel_job", reason: "r" });
  assert.throws(() => parseClientMessage({ type: "cancel_job", job_id: "../x" }), ProtocolError);
});

Deno.test("parseReconOptions() accepts a flat object of strings, numbers and booleans", () => {
  const options = parseReconOptions(
    '{"iterations": 5, "mode": "fast", "coil_combine": true, "lambda": 0.01, "x_1": ""}',
  );
  assert.deepEqual({ ...options }, {
    iterations: 5,
    mode: "fast",
    coil_combine: true,
    lambda: 0.01,
    x_1: "",
  });
  assert.deepEqual({ ...parseReconOptions("{}") }, {});
});

Deno.test("parseReconOptions() refuses text that is not a JSON object", () => {
  for (const text of ["", "nope", "[]", '["a"]', "null", "5", '"x"', "true", "{"]) {
    assert.throws(() => parseReconOptions(text), TypeError, text);
  }
  assert.throws(() => parseReconOptions("{"), /not valid JSON/);
  assert.throws(() => parseReconOptions("[]"), /must be a JSON object/);
});

Deno.test("parseReconOptions() refuses keys that could become something other than --key", () => {
  const keys = [
    "../x",
    "-x",
    "--x",
    "a b",
    "",
    "1a",
    "_a",
    "a-b",
    "a=b",
    "a;b",
    "a\u0000",
    "é",
    "x".repeat(65),
    "__proto__",
  ];
  for (const key of keys) {
    assert.throws(
      () => parseReconOptions(JSON.stringify({ [key]: "v" })),
      (error: unknown) => error instanceof TypeError && /recon option key/.test(error.message),
      JSON.stringify(key),
    );
  }
  parseReconOptions(JSON.stringify({ ["x".repeat(64)]: 1 }));
});

Deno.test("parseReconOptions() refuses values that are not scalars", () => {
  for (const value of [null, [], [1], {}, { a: 1 }]) {
    assert.throws(
      () => parseReconOptions(JSON.stringify({ key: value })),
      /recon option "key" must be a string, number or boolean/,
      JSON.stringify(value),
    );
  }
  for (const value of [Infinity, NaN, undefined, () => 1, Symbol("s"), 1n]) {
    assert.throws(() => checkReconOptions({ key: value }), TypeError, String(value));
  }
});

Deno.test("parseReconOptions() refuses a value with NUL or control characters or too long", () => {
  for (const value of ["a\u0000b", "a\nb", "\r", "a\u001b[1m", "\u007f"]) {
    assert.throws(
      () => parseReconOptions(JSON.stringify({ key: value })),
      /contains a control character/,
      JSON.stringify(value),
    );
  }
  assert.throws(
    () => parseReconOptions(JSON.stringify({ key: "x".repeat(4097) })),
    /longer than 4096 characters/,
  );
  parseReconOptions(JSON.stringify({ key: "x".repeat(4096) }));
});

Deno.test("parseReconOptions() keeps a constructor key as plain data, polluting nothing", () => {
  const options = parseReconOptions('{"constructor": "x", "toString": "y"}');
  assert.equal(Object.getOwnPropertyDescriptor(options, "constructor")?.value, "x");
  assert.deepEqual(Object.keys(options), ["constructor", "toString"]);
  assert.equal(typeof ({} as { toString: unknown }).toString, "function");
});

/** One job as version 3's job_status and job_list carry it. */
const JOB_INFO = {
  job_id: J,
  state: "succeeded",
  priority: "high",
  submitted_at: "2026-12-01T10:00:00.000Z",
  started_at: "2026-12-01T10:00:01.000Z",
  finished_at: "2026-12-01T10:00:09.000Z",
  file_count: 2,
  input_bytes: 1024,
  primary_file: "P12345.7",
  attempts: 1,
  exit_code: 0,
  result_count: 40,
  result_bytes: 5_000_000,
  results_expire_at: "2026-12-08T10:00:09.000Z",
};

const CLIENT_MESSAGES_V3: Record<string, unknown>[] = [
  { type: "submit_recon_job", file_count: 1, client_recon_options_json: "{}", priority: "low" },
  { type: "resume_upload", job_id: J },
  { type: "follow_job", job_id: J },
  { type: "follow_job", job_id: J, deliver: true },
  { type: "dicom_transfer_ack", job_id: J, status: "ready", resume_index: 3, resume_offset: 9 },
  { type: "list_jobs" },
  { type: "list_jobs", state: "queued", cursor: "42", limit: 500 },
  { type: "cancel_job", job_id: J, reason: "wrong protocol" },
  { type: "get_job_log", job_id: J, offset: 65536 },
  { type: "rerun_job", job_id: J },
  { type: "rerun_job", job_id: J, client_recon_options_json: '{"iter": 3}', priority: "high" },
  { type: "submit_recon_job", file_count: 1, client_recon_options_json: "{}", deliver: ["PACS"] },
  { type: "redeliver_job", job_id: J },
  { type: "redeliver_job", job_id: J, to: ["pacs", "Research2"] },
];

/** A job delivered to one destination and being retried at another. */
const DELIVERIES = [
  {
    destination: "PACS",
    state: "delivered",
    files_total: 40,
    files_sent: 39,
    files_skipped: 1,
    files_failed: 0,
    attempts: 1,
    finished_at: "2026-12-01T10:00:12.000Z",
  },
  {
    destination: "RESEARCH",
    state: "pending",
    files_total: 40,
    files_sent: 0,
    files_skipped: 1,
    files_failed: 0,
    attempts: 2,
    last_error: "connection refused by 10.0.0.5:104",
    next_attempt_at: "2026-12-01T10:01:12.000Z",
  },
];

const SERVER_MESSAGES_V3: Record<string, unknown>[] = [
  { type: "request_file", job_id: J, name: "P1.7", offset: 1048576 },
  { type: "result_file", job_id: J, name: "IM1.dcm", size: 5, offset: 2 },
  { type: "job_status", job: JOB_INFO },
  { type: "job_status", job: { ...JOB_INFO, state: "queued", queue_position: 1 } },
  { type: "job_list", jobs: [JOB_INFO], cursor: "17" },
  { type: "job_list", jobs: [] },
  { type: "job_status", job: { ...JOB_INFO, deliveries: DELIVERIES } },
  { type: "job_list", jobs: [{ ...JOB_INFO, deliveries: [] }] },
  { type: "job_log", job_id: J, offset: 0, next_offset: 12, text: "iteration 1\n", final: true },
  {
    type: "server_status_response",
    version: "0.1.0",
    uptime_seconds: 5,
    max_concurrent_jobs: 1,
    active_workers: 0,
    queue_length: 3,
    jobs_completed: 3,
    jobs_failed: 1,
    jobs_cancelled: 0,
    queued_high: 1,
    queued_normal: 1,
    queued_low: 1,
    kept_input_bytes: 10,
    kept_result_bytes: 20,
    disk_free_bytes: 1e9,
    disk_free_margin: 1e6,
    destinations: ["PACS", "RESEARCH"],
    default_destinations: ["PACS"],
  },
  { type: "queue_details_response", jobs: [{ ...JOB, priority: "normal", queue_position: 2 }] },
];

Deno.test("version 3 accepts every message it adds, and version 2 refuses them", () => {
  for (const message of CLIENT_MESSAGES_V3) {
    assert.deepEqual(parseClientMessage(wire(message), 3), wire(message));
  }
  for (const message of SERVER_MESSAGES_V3) {
    assert.deepEqual(parseServerMessage(wire(message), 3), wire(message));
  }
  const v3Types = [
    "resume_upload",
    "follow_job",
    "list_jobs",
    "get_job_log",
    "rerun_job",
    "redeliver_job",
  ];
  for (const type of v3Types) {
    const message = CLIENT_MESSAGES_V3.find((m) => m.type === type)!;
    assert.throws(() => parseClientMessage(wire(message), 2), /unknown message type/, type);
  }
  for (const type of ["job_status", "job_list", "job_log"]) {
    const message = SERVER_MESSAGES_V3.find((m) => m.type === type)!;
    assert.throws(() => parseServerMessage(wire(message), 2), /unknown message type/, type);
  }
});

Deno.test("version 3 refuses an unknown priority or state and an incomplete job", () => {
  assert.throws(
    () =>
      parseClientMessage({
        type: "submit_recon_job",
        file_count: 1,
        client_recon_options_json: "{}",
        priority: "urgent",
      }),
    /submit_recon_job\.priority must be high, normal, low or absent/,
  );
  assert.throws(
    () => parseClientMessage({ type: "list_jobs", state: "processing" }),
    /list_jobs\.state must be one of receiving, queued, running/,
  );
  const { attempts: _, ...withoutAttempts } = JOB_INFO;
  assert.throws(
    () => parseServerMessage({ type: "job_status", job: withoutAttempts }),
    /job_status\.job\.attempts is missing/,
  );
  assert.throws(
    () => parseServerMessage({ type: "job_status", job: { ...JOB_INFO, state: "done" } }),
    /job_status\.job\.state must be one of/,
  );
});

Deno.test("deliver and to name 1 to MAX_DESTINATIONS destinations of letters and digits", () => {
  const submit = { type: "submit_recon_job", file_count: 1, client_recon_options_json: "{}" };
  const many = Array.from({ length: MAX_DESTINATIONS }, (_, i) => `D${i}`);
  assert.deepEqual(parseClientMessage({ ...submit, deliver: many }), { ...submit, deliver: many });
  const bad: unknown[] = [
    [],
    [...many, "ONE"],
    ["PACS", ""],
    ["PACS_1"],
    ["A".repeat(33)],
    ["../x"],
    ["PACS", 1],
    "PACS",
    null,
    { 0: "PACS" },
  ];
  for (const deliver of bad) {
    assert.throws(
      () => parseClientMessage({ ...submit, deliver }),
      /submit_recon_job\.deliver must be an array of 1 to 16 destination names/,
      JSON.stringify(deliver),
    );
    assert.throws(
      () => parseClientMessage({ type: "redeliver_job", job_id: J, to: deliver }),
      /redeliver_job\.to must be an array of 1 to 16 destination names/,
      JSON.stringify(deliver),
    );
  }
  assert.throws(
    () => parseClientMessage({ type: "redeliver_job", job_id: "PACS" }),
    /redeliver_job\.job_id must be a job id/,
  );
  // Versions 1 and 2 ignore members they do not list: `deliver` is not theirs to check.
  const v2 = { type: "submit_recon_job", file_count: 1, client_recon_options_json: "{}" };
  assert.deepEqual(parseClientMessage({ ...v2, deliver: 5 }, 2), { ...v2, deliver: 5 });
});

Deno.test("a job's deliveries are checked member by member", () => {
  const job = (delivery: Record<string, unknown>) => ({
    type: "job_status",
    job: { ...JOB_INFO, deliveries: [delivery] },
  });
  const [delivered] = DELIVERIES;
  const { files_sent: _, ...withoutSent } = delivered;
  const cases: [Record<string, unknown>, RegExp][] = [
    [withoutSent, /deliveries\[0\]\.files_sent is missing/],
    [{ ...delivered, state: "done" }, /deliveries\[0\]\.state must be one of pending, sending/],
    [{ ...delivered, attempts: -1 }, /attempts must be a non-negative integer/],
    [{ ...delivered, destination: 7 }, /destination must be a string/],
    [{ ...delivered, last_error: ["x"] }, /last_error must be a string/],
  ];
  for (const [delivery, pattern] of cases) {
    assert.throws(() => parseServerMessage(job(delivery)), pattern, JSON.stringify(delivery));
  }
  assert.throws(
    () => parseServerMessage({ type: "job_status", job: { ...JOB_INFO, deliveries: {} } }),
    /job_status\.job\.deliveries must be an array of deliveries/,
  );
  assert.throws(
    () =>
      parseServerMessage({
        type: "server_status_response",
        ...SERVER_MESSAGES_V3.find((m) => m.type === "server_status_response"),
        destinations: "PACS",
      }),
    /server_status_response\.destinations must be an array of strings/,
  );
});
