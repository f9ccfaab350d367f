#!/usr/bin/env python3
"""Run one command and report its wall time, CPU time and peak RSS, measured exactly.

    python3 bench/rusage.py REPORT_FILE -- COMMAND [ARG...]

The command's stdin, stdout and stderr are this process's own. When it ends,
REPORT_FILE gets one JSON object:

    {"wall_s": ..., "user_s": ..., "sys_s": ..., "maxrss_kib": ..., "exit_code": ..., "signal": ...}

- wall_s runs from just before the fork to the return of wait4(), so this wrapper's
  own start-up (Python's ~20 ms) is not counted.
- user_s, sys_s and maxrss_kib come from wait4()'s rusage: the command itself plus
  every descendant it waited for (scp's ssh, a shell's children), read by the kernel
  when the process is reaped, so nothing is lost between samples. maxrss is the
  largest peak RSS (VmHWM) of any one process in that tree, in KiB.

The command dies with this wrapper (PR_SET_PDEATHSIG), and SIGTERM/SIGINT sent to
the wrapper are passed on to it, so the benchmark can stop it by this wrapper's PID.
"""
import ctypes
import json
import os
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        print("usage: rusage.py REPORT_FILE -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    report, command = sys.argv[1], sys.argv[3:]
    start = time.perf_counter()
    child = subprocess.Popen(command, preexec_fn=_die_with_parent, close_fds=True)

    def forward(signum, _frame):
        try:
            os.kill(child.pid, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        try:
            _, status, usage = os.wait4(child.pid, 0)
            break
        except InterruptedError:
            continue
    wall = time.perf_counter() - start
    result = {
        "wall_s": round(wall, 6),
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        "maxrss_kib": usage.ru_maxrss,
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
    }
    with open(report, "w", encoding="utf-8") as out:
        json.dump(result, out)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return 128 + os.WTERMSIG(status)


if __name__ == "__main__":
    sys.exit(main())
