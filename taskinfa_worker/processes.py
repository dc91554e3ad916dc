"""Child processes, one way: argument lists, their own session, bounded, always reaped.

Every child the worker starts runs in its own session (``start_new_session``), so that
stopping it stops its whole process group (git's ``git-remote-https``, ``ssh`` and
``pack-objects``; an agent's tools). ``run_process`` runs a short-lived child to its end,
shaped like trio's ``run_process``: on a timeout or a cancellation the group is killed and
the child reaped under a shield, so the cancellation that caused the kill cannot interrupt
it and no zombie, pipe or lock holder is left behind. The agent's supervisor
(``agent/process.py``) signals and reaps its long-running child with the same helpers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc


def watch_children_with_pidfd() -> bool:
    """Have asyncio learn of child exits through pidfds instead of a thread per child.

    Python 3.11's default watcher starts a thread for every child, blocked in ``waitpid``:
    with 256 agents that is 256 threads, each woken GIL and all when its child exits. A
    pidfd is one more file in the event loop's selector. It needs Linux 5.3 and a runtime
    that allows ``pidfd_open`` (older seccomp profiles refuse it); elsewhere the default
    stays. Python 3.12 chooses pidfds by itself. Call it from inside the running loop.
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)
    return True


@dataclass(frozen=True)
class Completed:
    """A child that ran to its end (a non-zero status is a result, not an error)."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes


def signal_group(process: anyio.abc.Process, signum: signal.Signals) -> None:
    """Signal the child's process group (the child leads it: see ``start_new_session``)."""
    # Only while the leader is not reaped: until then its pid names our group and cannot
    # have been reused by anyone else.
    if process.returncode is not None:
        return
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass
    except PermissionError:
        process.send_signal(signum)


async def kill_and_reap(process: anyio.abc.Process) -> None:
    """SIGKILL the child's group and reap it; finishes even when the caller is cancelled."""
    with anyio.CancelScope(shield=True):
        signal_group(process, signal.SIGKILL)
        await process.aclose()  # closes the pipes, then waits for the exit status


async def run_process(
    argv: Sequence[str],
    *,
    cwd: Path | None,
    env: Mapping[str, str],
    timeout: float,
    stdin: bytes | None = None,
) -> Completed:
    """Run ``argv`` to its end within ``timeout`` seconds, with stdout and stderr captured.

    Raises ``TimeoutError`` when it ran too long (it was killed) and ``OSError`` when the
    program cannot be started (catch ``TimeoutError`` first: it is an ``OSError``); a
    cancellation kills it too before it propagates.
    """
    process = await anyio.open_process(
        list(argv),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
    )
    try:
        with anyio.fail_after(timeout):
            stdout, stderr = await _communicate(process, stdin)
            returncode = await process.wait()
    except BaseException:
        await kill_and_reap(process)
        raise
    await process.aclose()
    return Completed(tuple(argv), returncode, stdout, stderr)


async def _communicate(process: anyio.abc.Process, stdin: bytes | None) -> tuple[bytes, bytes]:
    """Feed stdin and read stdout and stderr to their ends, all at once (no pipe fills up)."""
    stdout = bytearray()
    stderr = bytearray()

    async def read(stream: anyio.abc.ByteReceiveStream | None, into: bytearray) -> None:
        if stream is not None:
            async for chunk in stream:
                into += chunk

    async def feed(stream: anyio.abc.ByteSendStream | None, data: bytes) -> None:
        if stream is None:
            return
        try:
            await stream.send(data)
            await stream.aclose()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass  # the child exited without reading it all: its status says the rest

    async with anyio.create_task_group() as group:
        group.start_soon(read, process.stdout, stdout)
        group.start_soon(read, process.stderr, stderr)
        if stdin is not None:
            group.start_soon(feed, process.stdin, stdin)
    return bytes(stdout), bytes(stderr)
