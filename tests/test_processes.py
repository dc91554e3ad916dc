"""How the worker learns that its children exited."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import threading, anyio
    from taskinfa_worker.processes import watch_children_with_pidfd

    async def main():
        print("pidfd" if watch_children_with_pidfd() else "threads")
        children = [await anyio.open_process(["sleep", "0.2"]) for _ in range(8)]
        waiters = {t.name for t in threading.enumerate() if "waitpid-" in t.name}
        print(len(waiters), [await child.wait() for child in children])

    anyio.run(main)
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="pidfds are Linux's")
def test_children_are_watched_without_a_thread_each() -> None:
    # With 256 agents, Python 3.11's default watcher keeps 256 threads blocked in waitpid,
    # each woken (and taking the GIL) when its child exits.
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    how, counts = done.stdout.splitlines()
    if how == "threads":
        pytest.skip("this kernel or runtime refuses pidfd_open; the default watcher stays")
    assert counts == "0 [0, 0, 0, 0, 0, 0, 0, 0]"
