/**
 * Tests for lib/fs_safety.ts: directories another user can write or owns are found
 * (naming the path and a fix), a root-owned sticky parent such as /tmp is accepted,
 * and files are never written through a symbolic link. The tests run as root, so
 * "another user" is uid 65534 (nobody) set with chown.
 */
import assert from "node:assert/strict";
import * as path from "node:path";
import {
  checkDirToCreate,
  checkPrivateDir,
  checkPrivateFile,
  openAppendNoFollow,
  writeFileNoFollow,
} from "../lib/fs_safety.ts";

const NOBODY = 65534;

async function tempDir(): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "recon-fs-safety-" });
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

Deno.test("checkPrivateDir() accepts a 0700 directory of ours inside the sticky /tmp", async () => {
  await using tmp = await tempDir();
  assert.equal((await Deno.stat(path.dirname(tmp.dir))).mode! & 0o1000, 0o1000, "sticky /tmp");
  assert.equal(await checkPrivateDir(tmp.dir, { uid: Deno.uid()! }), undefined);
  const inner = path.join(tmp.dir, "a", "b");
  await Deno.mkdir(inner, { recursive: true, mode: 0o755 });
  assert.equal(await checkPrivateDir(inner), undefined);
});

Deno.test("checkPrivateDir() refuses a directory others can write, naming it and the fix", async () => {
  await using tmp = await tempDir();
  for (const mode of [0o777, 0o770, 0o702]) {
    await Deno.chmod(tmp.dir, mode);
    const problem = await checkPrivateDir(tmp.dir);
    assert.ok(problem, `mode ${mode.toString(8)}`);
    assert.equal(problem.path, tmp.dir);
    assert.match(problem.problem, /writable by other users \(mode \d{4}\)/);
    assert.match(problem.fix, new RegExp(`chmod go-w ${tmp.dir}`));
  }
});

Deno.test("checkPrivateDir() refuses a root-owned sticky directory such as /tmp but never suggests changing it", async () => {
  for (const uid of [0, 1000]) {
    const problem = await checkPrivateDir("/tmp", { uid });
    assert.ok(problem, `uid ${uid}`);
    assert.equal(problem.path, "/tmp");
    assert.equal(problem.shared, true);
    assert.match(problem.problem, /^is a shared directory \(mode 1777\)/);
    assert.doesNotMatch(problem.fix, /chmod|chown/);
  }
  await using tmp = await tempDir();
  await Deno.chmod(tmp.dir, 0o1777); // root's, as /tmp is, when the tests run as root
  const problem = await checkPrivateDir(tmp.dir, { uid: 0 });
  assert.equal(problem?.shared, true);
  assert.doesNotMatch(problem!.fix, /chmod|chown/);
});

Deno.test("checkPrivateDir() never suggests changing a parent, and names root once for uid 0", async () => {
  await using tmp = await tempDir();
  const parent = path.join(tmp.dir, "parent");
  const dir = path.join(parent, "jobs");
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await Deno.chmod(parent, 0o777);
  const open = await checkPrivateDir(dir, { uid: 0 });
  assert.equal(open?.shared, true);
  assert.equal(open?.fix, "choose a directory whose parents only root can write");
  await Deno.chmod(parent, 0o755);
  await Deno.chown(parent, NOBODY, NOBODY);
  const theirs = await checkPrivateDir(dir, { uid: 0 });
  assert.equal(theirs?.shared, true);
  assert.equal(theirs?.fix, "choose a directory whose parents belong to root");
});

Deno.test("checkDirToCreate() checks a missing directory's nearest existing ancestor, creating nothing", async () => {
  await using tmp = await tempDir();
  const dir = path.join(tmp.dir, "open", "a", "b");
  assert.equal(await checkDirToCreate(dir), undefined, "under our own 0700 directory");
  await Deno.mkdir(path.join(tmp.dir, "open"), { mode: 0o777 });
  await Deno.chmod(path.join(tmp.dir, "open"), 0o777);
  const problem = await checkDirToCreate(dir);
  assert.equal(problem?.path, path.join(tmp.dir, "open"));
  assert.match(problem!.problem, /writable by other users \(mode 0777\)/);
  await assert.rejects(Deno.lstat(path.join(tmp.dir, "open", "a")), Deno.errors.NotFound);
  // An existing directory is checked as checkPrivateDir does; a file on the way is no refusal here.
  assert.equal(
    (await checkDirToCreate(path.join(tmp.dir, "open")))?.path,
    path.join(tmp.dir, "open"),
  );
  await Deno.writeTextFile(path.join(tmp.dir, "file"), "");
  assert.equal(await checkDirToCreate(path.join(tmp.dir, "file", "x")), undefined);
});

Deno.test("checkPrivateDir() refuses a directory owned by another user", async () => {
  await using tmp = await tempDir();
  const dir = path.join(tmp.dir, "theirs");
  await Deno.mkdir(dir, { mode: 0o700 });
  await Deno.chown(dir, NOBODY, NOBODY);
  const problem = await checkPrivateDir(dir);
  assert.ok(problem);
  assert.equal(problem.path, dir);
  assert.match(problem.problem, new RegExp(`owned by uid ${NOBODY}`));
  assert.match(problem.fix, /chown 0 /);
});

Deno.test("checkPrivateDir() refuses a parent another user owns or can write (not sticky)", async () => {
  await using tmp = await tempDir();
  const parent = path.join(tmp.dir, "parent");
  const dir = path.join(parent, "jobs");
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await Deno.chmod(parent, 0o777);
  let problem = await checkPrivateDir(dir);
  assert.equal(problem?.path, parent);
  assert.match(problem!.problem, /writable by other users \(mode 0777\), who could replace/);

  await Deno.chmod(parent, 0o755);
  await Deno.chown(parent, NOBODY, NOBODY);
  problem = await checkPrivateDir(dir);
  assert.equal(problem?.path, parent);
  assert.match(problem!.problem, new RegExp(`owned by uid ${NOBODY}`));

  // A sticky world-writable parent owned by someone else is no /tmp.
  await Deno.chmod(parent, 0o1777);
  assert.equal((await checkPrivateDir(dir))?.path, parent);
  // Owned by root and sticky, it is one.
  await Deno.chown(parent, 0, 0);
  assert.equal(await checkPrivateDir(dir), undefined);
});

Deno.test("checkPrivateDir() accepts a root parent only a system group may also write (Ubuntu's /var/log)", async () => {
  await using tmp = await tempDir();
  const parent = path.join(tmp.dir, "log");
  const dir = path.join(parent, "recon");
  await Deno.mkdir(dir, { recursive: true, mode: 0o750 });
  await Deno.chmod(dir, 0o750);
  await Deno.chmod(parent, 0o775);
  // root:syslog 0775 on Ubuntu; syslog is a system group (gid below 1000).
  await Deno.chown(parent, 0, 104);
  assert.equal(await checkPrivateDir(dir), undefined);
  // A people's group (gid 1000 and up) that may write the parent could swap recon/.
  await Deno.chown(parent, 0, 1000);
  assert.match((await checkPrivateDir(dir))!.problem, /writable by other users \(mode 0775\)/);
  // Nor when everyone may write it, whatever the group.
  await Deno.chown(parent, 0, 104);
  await Deno.chmod(parent, 0o777);
  assert.equal((await checkPrivateDir(dir))?.path, parent);
  // The directory itself stays private to the program's user: no group write.
  await Deno.chmod(parent, 0o775);
  await Deno.chmod(dir, 0o770);
  assert.equal((await checkPrivateDir(dir))?.path, dir);
});

Deno.test("checkPrivateDir() checks where a symbolic link leads, and who owns the link", async () => {
  await using tmp = await tempDir();
  const target = path.join(tmp.dir, "target");
  await Deno.mkdir(target, { mode: 0o777 });
  await Deno.chmod(target, 0o777);
  const link = path.join(tmp.dir, "link");
  await Deno.symlink(target, link);
  assert.equal((await checkPrivateDir(link))?.path, target, "the target is writable by all");

  await Deno.chmod(target, 0o700);
  assert.equal(await checkPrivateDir(link), undefined);
  // A link another user owns can be pointed elsewhere by them at any time.
  await Deno.remove(link);
  await Deno.symlink(target, link);
  await new Deno.Command("chown", { args: ["-h", `${NOBODY}`, link] }).output();
  const problem = await checkPrivateDir(link);
  assert.equal(problem?.path, link);
  assert.match(problem!.problem, /symbolic link owned by uid 65534/);
});

Deno.test("checkPrivateDir() refuses a path that is a file, and throws NotFound for a missing one", async () => {
  await using tmp = await tempDir();
  const file = path.join(tmp.dir, "file");
  await Deno.writeTextFile(file, "");
  assert.match((await checkPrivateDir(file))!.problem, /is not a directory/);
  await assert.rejects(checkPrivateDir(path.join(tmp.dir, "missing")), Deno.errors.NotFound);
});

Deno.test("checkPrivateFile() refuses a link, a file of another user or one others can write", async () => {
  await using tmp = await tempDir();
  const file = path.join(tmp.dir, "recon.log");
  assert.equal(await checkPrivateFile(file), undefined, "a missing file is fine");
  await Deno.writeTextFile(file, "", { mode: 0o640 });
  assert.equal(await checkPrivateFile(file), undefined);
  await Deno.chmod(file, 0o666);
  assert.match((await checkPrivateFile(file))!.problem, /writable by other users \(mode 0666\)/);
  await Deno.chmod(file, 0o640);
  await Deno.chown(file, NOBODY, NOBODY);
  assert.match((await checkPrivateFile(file))!.problem, /owned by uid 65534/);
  await Deno.remove(file);
  await Deno.symlink("/etc/passwd", file);
  assert.deepEqual(await checkPrivateFile(file), {
    path: file,
    problem: "is a symbolic link",
    fix: `remove ${file}`,
  });
  await Deno.remove(file);
  await Deno.mkdir(file);
  assert.match((await checkPrivateFile(file))!.problem, /not a regular file/);
});

Deno.test("writeFileNoFollow() replaces a planted symbolic link and leaves its target alone", async () => {
  await using tmp = await tempDir();
  const victim = path.join(tmp.dir, "victim");
  await Deno.writeTextFile(victim, "precious\n");
  const pidFile = path.join(tmp.dir, ".recon-server.pid");
  await Deno.symlink(victim, pidFile);
  await writeFileNoFollow(pidFile, "123\n", 0o644);
  assert.equal(await Deno.readTextFile(victim), "precious\n");
  const info = await Deno.lstat(pidFile);
  assert.ok(info.isFile && !info.isSymlink);
  assert.equal(info.mode! & 0o777, 0o644);
  assert.equal(await Deno.readTextFile(pidFile), "123\n");
  // An existing regular file is replaced, not appended to.
  await writeFileNoFollow(pidFile, "456\n");
  assert.equal(await Deno.readTextFile(pidFile), "456\n");
});

Deno.test("openAppendNoFollow() refuses a symbolic link and appends to a regular file", async () => {
  await using tmp = await tempDir();
  const victim = path.join(tmp.dir, "victim");
  await Deno.writeTextFile(victim, "precious\n");
  const log = path.join(tmp.dir, "job.log");
  await Deno.symlink(victim, log);
  await assert.rejects(openAppendNoFollow(log), /ELOOP/);
  assert.equal(await Deno.readTextFile(victim), "precious\n");
  await Deno.remove(log);
  for (const line of ["one\n", "two\n"]) {
    const handle = await openAppendNoFollow(log);
    await handle.writeFile(line);
    await handle.close();
  }
  assert.equal(await Deno.readTextFile(log), "one\ntwo\n");
  assert.equal((await Deno.stat(log)).mode! & 0o777, 0o640);
});
