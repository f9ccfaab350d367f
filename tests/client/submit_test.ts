/**
 * Tests for lib/client/submit.ts beyond the end-to-end ones: an interrupt that comes
 * before the job is even sent.
 */
import assert from "node:assert/strict";
import { submitJob } from "../../lib/client/submit.ts";
import { InterruptedError } from "../../lib/errors.ts";
import { channelPair } from "../support/channel_pair.ts";

Deno.test("submitJob() with an already interrupted signal sends nothing and says interrupted", async () => {
  await using pair = await channelPair();
  const controller = new AbortController();
  controller.abort();
  await assert.rejects(
    submitJob({
      channel: pair.client,
      files: [{ path: "/nonexistent/P00001.7", name: "P00001.7", size: 3 }],
      options: {},
      downloadDir: "/nonexistent",
      signal: controller.signal,
    }),
    InterruptedError,
  );
  // Nothing reached the server: the next thing it sees is our goodbye.
  await pair.client.close();
  assert.equal((await pair.server.receive()).type, "goodbye");
});
