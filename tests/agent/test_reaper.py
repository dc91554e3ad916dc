"""The subreaper, the sweep of a run's leftovers, and the zombie janitor."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import anyio
import psutil
import pytest

from taskinfa_worker.agent import procfs, reaper
from taskinfa_worker.agent.reaper import (
    ZombieJanitor,
    become_subreaper,
    is_subreaper,
    read_proc,
    run_processes,
    scan,
    sweep_run,
)
from tests.agent.support import gone, state, wait_until_gone

# Starts a grandchild in its own session (with the inherited environment), prints its pid
# and exits, so that the grandchild re-parents to us. The grandchild ignores SIGTERM.
ORPHAN = """
    import os, signal, sys, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            linger = float(sys.argv[1])
            print(os.getpid(), flush=True)
            os.close(1)
            os.close(2)
            time.sleep(linger)
            os._exit(0)
        os._exit(0)
    os.wait()
"""


def orphan(env: dict[str, str], linger: float) -> int:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(ORPHAN), str(linger)],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return int(done.stdout.strip())


@pytest.mark.usefixtures("subreaper")
def test_subreaper_is_idempotent() -> None:
    assert become_subreaper()  # the fixture made it one already
    assert is_subreaper()


def test_read_proc_describes_a_process() -> None:
    me = read_proc(os.getpid())
    assert me is not None
    assert (me.ppid, me.pgid, me.sid) == (os.getppid(), os.getpgrp(), os.getsid(0))
    assert not me.zombie
    assert read_proc(2**22 + 12345) is None


@pytest.mark.usefixtures("subreaper")
async def test_sweep_kills_and_reaps_marked_orphans() -> None:
    marker = f"TASKINFA_AGENT_RUN={uuid.uuid4().hex}"
    unmarked = orphan({}, linger=30)
    victim = orphan({"TASKINFA_AGENT_RUN": marker.split("=")[1]}, linger=30)
    try:
        info = read_proc(victim)
        assert info is not None
        assert info.ppid == os.getpid()  # adopted by us, the subreaper
        found = run_processes(await anyio.to_thread.run_sync(scan), marker.encode(), -1)
        assert [p.pid for p in found] == [victim]

        # It ignores SIGTERM: the sweep must escalate to SIGKILL, then reap it.
        assert await sweep_run(marker.encode(), -1, grace=0.2) == 1
        assert gone(victim), state(victim)
        assert not gone(unmarked)
    finally:
        for pid in (unmarked, victim):
            if not gone(pid):
                os.kill(pid, 9)
                os.waitpid(pid, 0)


@pytest.mark.usefixtures("subreaper")
def test_janitor_reaps_old_orphan_zombies_and_leaves_young_ones() -> None:
    pid = orphan({}, linger=0)
    deadline = time.monotonic() + 10
    while state(pid) not in ("zombie", "gone") and time.monotonic() < deadline:
        time.sleep(0.02)
    janitor = ZombieJanitor(age=0.0, interval=0.0)
    janitor.tend()
    # Either this janitor or the process-wide one reaped it.
    assert wait_until_gone(pid, 10.0), state(pid)

    # A child whose owner will wait for it is not touched while it is young.
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(7)"])
    while state(child.pid) != "zombie":
        time.sleep(0.01)
    assert child.pid not in ZombieJanitor(age=60.0).tend()
    assert child.wait(timeout=5) == 7


async def test_sweep_without_marked_processes_finds_nothing() -> None:
    assert await sweep_run(f"TASKINFA_AGENT_RUN={uuid.uuid4().hex}".encode(), -1, grace=5) == 0


async def test_sweeps_that_ask_together_share_one_scan_and_never_an_older_one() -> None:
    # 256 runs ending at once used to scan /proc 256 times. A caller must still never get
    # a scan that began before it asked: it could miss a fork that happened just before.
    release = threading.Event()
    scans: list[int] = []

    def counting_scan() -> list[reaper.Seen]:
        scans.append(len(scans) + 1)
        if len(scans) == 1:
            release.wait(timeout=30)
        info = reaper.ProcInfo(pid=len(scans), ppid=1, pgid=1, sid=1, state="S", start=0)
        return [reaper.Seen(info)]

    shared = reaper.SharedScans(counting_scan, in_thread=lambda: True)
    results: list[int] = []

    async def ask() -> None:
        results.append((await shared.snapshot())[0].info.pid)

    async with anyio.create_task_group() as group:
        group.start_soon(ask)
        while not scans:  # the first scan is under way
            await anyio.sleep(0.01)
        for _ in range(50):
            group.start_soon(ask)
        for _ in range(10):
            await anyio.sleep(0)
        release.set()
    assert scans == [1, 2]
    assert sorted(results) == [1] + [2] * 50


# An orphan (re-parented to us) with a child of its own; both print their pids.
ORPHAN_WITH_CHILD = """
    import os, sys, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            if os.fork() == 0:
                print(os.getpid(), flush=True)
                os.close(1)
                os.close(2)
                time.sleep(30)
                os._exit(0)
            print(os.getpid(), flush=True)
            os.close(1)
            os.close(2)
            os.wait()
            os._exit(0)
        os._exit(0)
    os.wait()
"""


@pytest.mark.usefixtures("subreaper")
async def test_a_sweep_reads_the_workers_own_tree_not_the_machine() -> None:
    # Issue #17: a sweep per run used to read every process of the machine. As the
    # subreaper, the worker has every leftover below it, however deep.
    marker = f"TASKINFA_AGENT_RUN={uuid.uuid4().hex}"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(ORPHAN_WITH_CHILD)],
        env={"PATH": os.environ["PATH"], "TASKINFA_AGENT_RUN": marker.split("=")[1]},
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    orphan_pid, grandchild = sorted(int(pid) for pid in done.stdout.split())
    try:
        snapshot = await anyio.to_thread.run_sync(reaper.sweep_scan)
        seen = {s.info.pid for s in snapshot}
        ours = {p.pid for p in psutil.Process().children(recursive=True)}
        assert {orphan_pid, grandchild} <= seen
        assert seen <= ours  # nothing outside the worker's tree was read
        assert os.getppid() not in seen
        assert 1 not in seen

        assert await sweep_run(marker.encode(), -1, grace=0.2) == 2
        assert gone(orphan_pid), state(orphan_pid)
        assert gone(grandchild), state(grandchild)
    finally:
        for pid in (grandchild, orphan_pid):
            if not gone(pid):
                os.kill(pid, 9)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)


@pytest.mark.usefixtures("subreaper")
def test_the_tree_read_skips_what_runs_below_a_live_agent() -> None:
    # A live agent's own processes belong to its run; another run's sweep has no reason
    # to read them (256 agents running while one ends would mean reading all of them).
    agent = subprocess.Popen(
        ["sh", "-c", "sleep 30 & wait"], start_new_session=True, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not psutil.Process(agent.pid).children() and time.monotonic() < deadline:
            time.sleep(0.01)
        below = {p.pid for p in psutil.Process(agent.pid).children()}
        assert below
        whole = {s.info.pid for s in procfs.family()}
        pruned = {s.info.pid for s in procfs.family(prune={agent.pid})}
        assert below <= whole
        assert agent.pid in whole
        assert agent.pid not in pruned
        assert not below & pruned
    finally:
        os.killpg(agent.pid, 9)
        agent.wait(timeout=10)
