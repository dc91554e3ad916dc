"""A restarted worker stops agents of its dead earlier life, never those of a live worker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from taskinfa_worker.agent.environment import OWNER_VAR
from taskinfa_worker.agent.reaper import identity, orphaned_agents, scan, sweep_leftovers

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def start_agent(owner: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, OWNER_VAR: owner}
    return subprocess.Popen(SLEEPER, env=env, start_new_session=True)


@pytest.fixture
def dead_identity() -> str:
    """The identity of a process that has exited: a worker killed with SIGKILL."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    who = identity(gone.pid)
    gone.wait()
    assert who is not None
    return who


async def test_only_agents_of_a_dead_worker_with_the_same_name_are_swept(
    dead_identity: str,
) -> None:
    live_owner = identity(os.getpid())
    orphan = start_agent(f"botA {dead_identity}")
    of_live_worker = start_agent(f"botA {live_owner}")
    other_name = start_agent(f"botB {dead_identity}")
    try:
        found = {info.pid for info in orphaned_agents(scan(), OWNER_VAR.encode(), "botA")}
        assert found == {orphan.pid}
        assert await sweep_leftovers(OWNER_VAR.encode(), "botA", grace=2.0) == 1
        assert orphan.wait(timeout=10) is not None
        assert of_live_worker.poll() is None
        assert other_name.poll() is None
    finally:
        for proc in (orphan, of_live_worker, other_name):
            proc.kill()
            proc.wait()
