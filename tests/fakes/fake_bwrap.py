#!/usr/bin/env python3
"""bwrap's process structure without its namespaces: what a sweep sees of a sandboxed run.

    fake_bwrap.py [bwrap's options] --chdir <tree> -- <command> [args]

With ``--unshare-pid`` the real bwrap forks an init (pid 1 of the new PID namespace) that
runs the command and, once the command exits, tells bwrap its status: bwrap exits at once
with it, while its init is still ending. This does the same, and its init goes on for
``$FAKE_BWRAP_LINGER`` seconds after telling (the real one ends within milliseconds, too
soon to meet a sweep every time): a sweep then finds it alive, deterministically.
The init writes its pid to ``$FAKE_BWRAP_INIT_PID``. The other options are ignored.

Both processes bear this file's name, as bwrap's bear ``bwrap`` (``env`` in the ``#!`` line
would otherwise leave them named ``python3``).
"""

from __future__ import annotations

import ctypes
import os
import sys
import time

PR_SET_NAME = 15


def main() -> int:
    name = os.path.basename(sys.argv[0]).encode()
    ctypes.CDLL(None).prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)
    args = sys.argv[1:]
    command = args[args.index("--") + 1 :]
    tree = args[args.index("--chdir") + 1]
    linger = float(os.environ["FAKE_BWRAP_LINGER"])
    status_read, status_write = os.pipe()
    if os.fork() == 0:
        os.close(status_read)
        init(command, tree, linger, status_write)
    os.close(status_write)
    status = os.read(status_read, 1)
    return status[0] if status else 1


def init(command: list[str], tree: str, linger: float, status_write: int) -> None:
    with open(os.environ["FAKE_BWRAP_INIT_PID"], "w") as pid_file:
        pid_file.write(str(os.getpid()))
    agent = os.fork()
    if agent == 0:
        os.chdir(tree)
        os.execv(command[0], command)  # noqa: S606 - the argv bwrap would run, as bwrap does
    _, status = os.waitpid(agent, 0)
    os.write(status_write, bytes([os.waitstatus_to_exitcode(status) & 0xFF]))
    time.sleep(linger)  # still ending when bwrap's outer process has exited
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
