"""Exec shim: run a command so that it gets SIGTERM when the worker dies.

    python -I deathsig.py <worker pid> <command> [args...]

A SIGKILLed worker cannot stop its agents, and they run in sessions of their own, so they
would go on working on tasks that another worker's lease hands to a new run. The kernel's
parent-death signal (Linux ``PR_SET_PDEATHSIG``) stops the agent with its worker. It is set
here, in the child between fork and exec, rather than with ``preexec_fn``: the worker has
threads, and Python code between fork and exec in a threaded parent may deadlock.

Run as a file (not ``-m``), so that starting an agent costs a bare interpreter, not an
import of the worker package. Processes that leave the agent's session (Bash-tool children)
are not covered; the restarted worker's sweep finds those by their marker.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
EXIT_CANNOT_RUN = 127


def main(argv: list[str]) -> int:
    worker, command = int(argv[1]), argv[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != worker:
        return EXIT_CANNOT_RUN  # the worker died before the signal was armed
    try:
        os.execvp(command[0], command)  # noqa: S606 - an argv list, never a shell
    except OSError as exc:
        print(f"cannot start {command[0]!r}: {exc.strerror}", file=sys.stderr)
    return EXIT_CANNOT_RUN


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
