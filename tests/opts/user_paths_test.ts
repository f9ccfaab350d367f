/**
 * Tests for lib/opts/user_paths.ts: where a client not run as root keeps the files
 * recon.opts leaves at their defaults.
 */
import assert from "node:assert/strict";
import { applyUserDefaults, userStateDir } from "../../lib/opts/user_paths.ts";
import { defaultConfig } from "../../lib/opts/mod.ts";

Deno.test("userStateDir() is $XDG_STATE_HOME/recon, else ~/.local/state/recon", () => {
  assert.equal(userStateDir({ XDG_STATE_HOME: "/s", HOME: "/home/u" }), "/s/recon");
  assert.equal(userStateDir({ HOME: "/home/u" }), "/home/u/.local/state/recon");
  // The XDG spec: a relative XDG_STATE_HOME is ignored.
  assert.equal(
    userStateDir({ XDG_STATE_HOME: "rel", HOME: "/home/u" }),
    "/home/u/.local/state/recon",
  );
  assert.equal(userStateDir({ XDG_STATE_HOME: "", HOME: "" }), undefined);
  assert.equal(userStateDir({ HOME: "relative" }), undefined);
  assert.equal(userStateDir({}), undefined);
});

Deno.test("applyUserDefaults() moves a non-root client's default files, nothing else", () => {
  const config = defaultConfig();
  const user = { uid: 1000, env: { HOME: "/home/u" } };
  const { config: moved, stateDir } = applyUserDefaults(config, "client", user);
  assert.equal(stateDir, "/home/u/.local/state/recon");
  assert.equal(moved.LOG_FILEPATH, "/home/u/.local/state/recon/recon-client.log");
  assert.equal(moved.CLIENT_DOWNLOAD_DIR, "/home/u/.local/state/recon/downloads");
  assert.equal(moved.CLIENT_DAEMON_STATE_FILE, "/home/u/.local/state/recon/recon-watch.sqlite");
  assert.deepEqual(
    { ...moved, LOG_FILEPATH: "", CLIENT_DOWNLOAD_DIR: "", CLIENT_DAEMON_STATE_FILE: "" },
    { ...config, LOG_FILEPATH: "", CLIENT_DOWNLOAD_DIR: "", CLIENT_DAEMON_STATE_FILE: "" },
  );
  assert.equal(config.LOG_FILEPATH, "/var/log/recon/recon.log", "the input is not changed");

  for (
    const [role, uid, env] of [
      ["client", 0, { HOME: "/root" }],
      ["server", 1000, { HOME: "/home/u" }],
      ["client", 1000, {}],
    ] as const
  ) {
    const same = applyUserDefaults(config, role, { uid, env });
    assert.equal(same.config, config, `${role} ${uid}`);
    assert.equal(same.stateDir, undefined);
  }
  const set = {
    ...config,
    LOG_FILEPATH: "/x.log",
    CLIENT_DOWNLOAD_DIR: "d",
    CLIENT_DAEMON_STATE_FILE: "s",
  };
  assert.deepEqual(applyUserDefaults(set, "client", user), { config: set });
});
