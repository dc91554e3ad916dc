"""`make demo` as a newcomer runs it: the page's address first, slots that overlap, each
task's work on a branch, and nothing left running when it ends by itself."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil

from taskinfa_worker.settings import Settings
from tests.agent.support import wait_until_gone
from tests.contained import run_contained

DEMO = Path(__file__).parents[1] / "examples" / "demo.py"


def test_the_demo_opens_on_the_page_overlaps_its_slots_and_leaves_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    base = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    # No Anthropic key: the example agent, with steps short enough for a test to wait on.
    base.pop("ANTHROPIC_API_KEY", None)
    env = {**base, "TASKINFA_DEMO_DIR": str(folder), "DEMO_AGENT_PAUSE": "0.5"}
    done = run_contained([sys.executable, str(DEMO)], env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert re.search(r"board's page .*: http://127\.0\.0\.1:\d+/\?login=\S+$", lines[0]), lines[0]
    overlap = re.search(r"Up to (\d+) tasks were in progress at the same time", done.stdout)
    assert overlap is not None, done.stdout
    assert int(overlap.group(1)) >= 2  # several slots truly at once
    # Every count of the board the demo prints holds all eight tasks: the feed sends what
    # changed, and the demo must keep the rest.
    counts = re.findall(
        r"\[todo: (\d+)\s+in_progress: (\d+)\s+review: (\d+)\s+blocked: (\d+)\]", done.stdout
    )
    assert counts, done.stdout
    assert {sum(map(int, line)) for line in counts} == {8}, done.stdout
    branches = re.findall(r"branch: (taskinfa/\S+)", done.stdout)
    assert len(branches) == 8  # every demo task delivered on a branch of its own
    listed = subprocess.run(
        ["git", "branch", "--list", "taskinfa/*", "--format=%(refname:short)"],
        cwd=folder / "demo-app.git",
        capture_output=True,
        text=True,
        check=True,
    )
    assert sorted(listed.stdout.split()) == sorted(branches)
    # Nothing the demo started is still running: no board, worker or agent on its folder.
    assert on_folder(folder) == []


def test_ctrl_c_ends_the_demo_after_the_drain(tmp_path: Path) -> None:
    """Ctrl-C in a terminal reaches the demo and its worker (one process group): the worker
    drains, and the demo stops there instead of starting a second worker on what is left."""
    folder = tmp_path / "demo"
    demo = start_demo(tmp_path, folder)
    try:
        assert demo.stdout is not None
        seen = []
        for line in demo.stdout:  # until the first claim: the worker handles signals now
            seen.append(line)
            if "todo → in_progress" in line:
                break
        os.killpg(demo.pid, signal.SIGINT)
        rest, _ = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    out = "".join(seen) + rest
    assert demo.returncode == 0, out
    assert "(Ctrl-C 1: the worker drains)" in out
    assert "Stopped by Ctrl-C" in out
    assert "The worker runs again" not in out
    assert re.search(r"^   todo ", out, re.MULTILINE), out  # the tasks not begun stay todo
    assert on_folder(folder) == []


def test_a_killed_demo_takes_its_board_along(tmp_path: Path) -> None:
    """A demo SIGKILLed while it runs (a timeout, a closed terminal) runs no cleanup; the
    board, in a session of its own so that Ctrl-C does not reach it, must still go."""
    folder = tmp_path / "demo"
    demo = start_demo(tmp_path, folder)
    try:
        assert demo.stdout is not None
        first = demo.stdout.readline()  # printed once the board answers
        assert "board's page" in first, first
        boards = on_folder(folder)
        assert boards, "the board should be running while the demo runs"
    finally:
        os.killpg(demo.pid, signal.SIGKILL)
        demo.wait()
        demo.stdout.close()
    assert all(wait_until_gone(pid, timeout=30) for pid in boards)


def on_folder(folder: Path) -> list[int]:
    """Processes whose command line names the demo's folder (board, worker, agents)."""
    return [
        p.info["pid"]
        for p in psutil.process_iter(["pid", "cmdline"])
        if any(str(folder) in part for part in (p.info["cmdline"] or []))
    ]


def start_demo(cwd: Path, folder: Path) -> subprocess.Popen[str]:
    """The demo in a session of its own (as a terminal would run it), its output piped."""
    env = {**os.environ, "TASKINFA_DEMO_DIR": str(folder), "DEMO_AGENT_PAUSE": "0.5"}
    env.pop("ANTHROPIC_API_KEY", None)
    return subprocess.Popen(
        [sys.executable, str(DEMO)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
