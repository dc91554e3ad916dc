"""The worker's memory is closed to its agents: the process makes itself non-dumpable.

Agents run as the worker's user, and the kernel lets a process read another process of its
own user: ``/proc/<pid>/environ`` (where ``TASKINFA_API_KEY`` sits when it came from the
environment), ``/proc/<pid>/mem`` (every secret the settings hold) and ``/proc/<pid>/fd``
(the ``.env`` the worker read, its sockets). A prompt-injected agent would need no more
than ``cat``. A non-dumpable process (Linux ``PR_SET_DUMPABLE`` = 0) has those files owned
by root and refuses ptrace-style access to everyone without ``CAP_SYS_PTRACE``, its own
user included.

The flag is reset by ``execve``, so the agents, git and the other children the worker starts
are ordinary dumpable processes: the run-marker sweep can still read their environment.
It also means no core dump of the worker is written (it would hold the same secrets).
"""

from __future__ import annotations

import ctypes
import sys

from loguru import logger

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3


def make_non_dumpable() -> bool:
    """Close this process's ``/proc`` files to its own user; True when in effect.

    Call once, first thing at start. A no-op (with a debug line) where there is no
    ``prctl``: other systems keep their own rules for reading a process's memory.
    """
    if not sys.platform.startswith("linux"):
        logger.debug("PR_SET_DUMPABLE is Linux only: the worker stays dumpable on {}", sys.platform)
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
            logger.warning("cannot make the worker non-dumpable: errno {}", ctypes.get_errno())
            return False
    except (OSError, AttributeError) as exc:
        logger.warning("cannot make the worker non-dumpable: {}", exc)
        return False
    return True


def is_dumpable() -> bool:
    """Whether this process is dumpable (always True where the flag does not exist)."""
    if not sys.platform.startswith("linux"):
        return True
    try:
        return bool(ctypes.CDLL(None, use_errno=True).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0))
    except (OSError, AttributeError):
        return True
