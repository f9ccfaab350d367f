/**
 * Where a client not run as root keeps its files when recon.opts leaves them at
 * their defaults: its own state directory (`$XDG_STATE_HOME/recon`, else
 * `~/.local/state/recon`), never a shared one such as /tmp or /var/log that another
 * local user could prepare for it. Pure: the caller passes the uid and environment.
 *
 * @module
 */
import { isAbsolute, join } from "node:path";
import { DEFAULTS, type ReconConfig } from "./schema.ts";

/** Who runs the program: its uid and the environment variables read here. */
export interface ProgramUser {
  uid: number;
  env: { XDG_STATE_HOME?: string; HOME?: string };
}

/**
 * The user's state directory for recon: `$XDG_STATE_HOME/recon` when that is an
 * absolute path (the XDG spec ignores a relative one), else `$HOME/.local/state/recon`;
 * undefined without an absolute HOME.
 */
export function userStateDir(env: ProgramUser["env"]): string | undefined {
  const xdg = env.XDG_STATE_HOME;
  if (xdg && isAbsolute(xdg)) return join(xdg, "recon");
  const home = env.HOME;
  if (home && isAbsolute(home)) return join(home, ".local", "state", "recon");
  return undefined;
}

/** The options a non-root client moves into its state directory, and the file names there. */
const CLIENT_FILES = {
  LOG_FILEPATH: "recon-client.log",
  CLIENT_DOWNLOAD_DIR: "downloads",
  CLIENT_DAEMON_STATE_FILE: "recon-watch.sqlite",
} as const;

/**
 * For a client run by a user other than root: a copy of `config` in which each of
 * LOG_FILEPATH, CLIENT_DOWNLOAD_DIR and CLIENT_DAEMON_STATE_FILE still at its default
 * value (as written, before paths are resolved) points into the user's state
 * directory, and that directory; `config` itself and no directory otherwise (root,
 * the server, no HOME, or every one of them set to something else).
 */
export function applyUserDefaults(
  config: ReconConfig,
  role: "server" | "client",
  user: ProgramUser,
): { config: ReconConfig; stateDir?: string } {
  if (role !== "client" || user.uid === 0) return { config };
  const stateDir = userStateDir(user.env);
  if (stateDir === undefined) return { config };
  const copy = structuredClone(config);
  let moved = false;
  for (const [option, name] of Object.entries(CLIENT_FILES)) {
    const key = option as keyof typeof CLIENT_FILES;
    if (copy[key] === DEFAULTS[key]) {
      copy[key] = join(stateDir, name);
      moved = true;
    }
  }
  return moved ? { config: copy, stateDir } : { config };
}
