/**
 * Test support: a real job store in a temporary directory on a clock the test sets,
 * closed and removed with `await using`.
 *
 * @module
 */
import * as path from "node:path";
import { JobStore } from "../../lib/server/job_store.ts";

/** A store whose clock reads `start` until the test moves it with `at(ms)`. */
export async function clockedStore(start: number): Promise<
  { store: JobStore; at: (ms: number) => void } & AsyncDisposable
> {
  const dir = await Deno.makeTempDir({ prefix: "recon-clocked-store-" });
  let now = start;
  const store = JobStore.open(path.join(dir, "state"), { now: () => now });
  return {
    store,
    at: (ms) => void (now = ms),
    [Symbol.asyncDispose]: async () => {
      store.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}
