"""The sweep of a sandboxed run: bwrap's own init, still ending after the agent, is no
leftover; what the agent left behind still is.

Real bwrap's init ends within milliseconds of the agent, so a sweep meets it only now and
then; ``fake_bwrap.py`` has bwrap's process structure and an init that lingers for as long
as the test says, so that every sweep meets it. No namespaces: it runs anywhere.
"""

from __future__ import annotations

import os
import sys
import textwrap
import uuid
from pathlib import Path

import anyio
import pytest

from taskinfa_worker.agent import reaper
from taskinfa_worker.agent.process import Limits, ProcessRun, ProcessSpec, Supervisor
from taskinfa_worker.agent.sandbox import SandboxLayout
from tests.agent.support import FAKES, gone, state

FAKE_BWRAP = FAKES / "fake_bwrap.py"
LIMITS = Limits(timeout=30, stall_timeout=10, kill_grace=1)
# Leaves a sleeper behind (its pid in sleeper.pid) and exits.
LEAVES_A_SLEEPER = """
    import subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    open("sleeper.pid", "w").write(str(child.pid))
"""

pytestmark = pytest.mark.usefixtures("subreaper")


def sandboxed(code: str, tmp_path: Path, linger: float) -> ProcessSpec:
    """``code`` run by the fake bwrap, whose init lingers ``linger`` s after the agent."""
    marker = f"TASKINFA_AGENT_RUN={uuid.uuid4().hex}"
    name, value = marker.split("=")
    env = {
        "PATH": os.environ["PATH"],
        name: value,
        "FAKE_BWRAP_LINGER": str(linger),
        "FAKE_BWRAP_INIT_PID": str(tmp_path / "init.pid"),
    }
    return ProcessSpec(
        argv=[sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=tmp_path,
        marker=marker,
        sandbox=SandboxLayout(str(FAKE_BWRAP), hidden=(), writable=(tmp_path,)),
    )


async def supervise(spec: ProcessSpec) -> ProcessRun:
    with anyio.fail_after(60):
        run = await Supervisor(
            spec, LIMITS, on_stdout=lambda _line: None, on_stderr=lambda _line: None
        ).run()
    assert run.exit_code == 0, run.stderr_tail
    return run


def pid_in(path: Path) -> int:
    return int(path.read_text())


async def test_the_sandboxs_init_ending_after_the_agent_is_no_leftover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The init ends 0.5 s after the agent; the sweep may wait far longer for it.
    monkeypatch.setattr(reaper, "SANDBOX_EXIT_WAIT", 30.0)
    run = await supervise(sandboxed("print('done')", tmp_path, linger=0.5))
    assert run.leftovers == 0
    init = pid_in(tmp_path / "init.pid")
    assert gone(init), state(init)  # ended on its own, and reaped


async def test_what_the_agent_left_in_the_sandbox_is_still_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reaper, "SANDBOX_EXIT_WAIT", 30.0)
    run = await supervise(sandboxed(LEAVES_A_SLEEPER, tmp_path, linger=0.5))
    assert run.leftovers == 1  # the sleeper, not the init
    sleeper = pid_in(tmp_path / "sleeper.pid")
    assert gone(sleeper), state(sleeper)
    init = pid_in(tmp_path / "init.pid")
    assert gone(init), state(init)


async def test_a_sandbox_process_that_does_not_end_is_stopped_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The moment is bounded: a process named like bwrap that stays (an agent may name
    itself so) is a leftover like any other."""
    monkeypatch.setattr(reaper, "SANDBOX_EXIT_WAIT", 0.2)
    run = await supervise(sandboxed("print('done')", tmp_path, linger=60))
    assert run.leftovers == 1
    init = pid_in(tmp_path / "init.pid")
    assert gone(init), state(init)
