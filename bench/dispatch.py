"""Dispatch overhead: 1,000 tasks whose agent does nothing, 32 slots, one worker process.

    python -m bench.dispatch [--tasks 1000] [--slots 32] [--profiles full,v1,v2]

The agent is ``true``: every millisecond measured is the worker's own work per task (claim,
workspace folder, agent start and supervision, transcript, comments, review). The board's
rate limit is off and RATE_LIMIT=100000, so neither waits on a budget (the real board's
100 requests a minute would allow about 16 tasks a minute; see ``bench.budget``).

Reported: tasks per second (first claim to last review), the worker process's CPU per task
(user + system of the worker itself, psutil), the agents' CPU per task (the reaped
children), and beside them the board's own time: the wall and CPU time spent inside its
handlers, which bounds the throughput however fast the worker were (tasks / board time).
The same run is repeated on the local board's ``v1`` and ``v2`` profiles (the real releases:
no claim route; heartbeats but no comments; sessions and events instead of /workers), and
the requests each task spent there are reported per endpoint beside the headline's.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import psutil

from bench.harness import (
    PYTHON,
    BenchBoard,
    WorkerProcess,
    interrupt_on_sigterm,
    looks_for_work,
    per_endpoint,
    progress,
    wait_for,
    worker_env,
    write_result,
)

# The board with the claim route, then the real releases: the worker-era one (claims by
# PATCH and read-back, heartbeats, no comments) and the current one (no claim route, no
# /workers: sessions and events instead). The rate limit is off on all three.
PROFILES = ("full", "v1", "v2")
SETTINGS = {
    "agent_command": "true",
    "rate_limit": 100_000,
    "poll_interval": 0.2,
    "max_poll_interval": 0.5,
}


async def run(
    tmp: Path,
    tasks: int = 1000,
    slots: int = 32,
    profile: str = "full",
    *,
    cprofile: Path | None = None,
) -> dict[str, Any]:
    """``profile``: the local board's profile. ``cprofile``: run the worker under cProfile
    (``bench.profile_worker``) and write its statistics of the measured window to this file
    (its CPU figures are then inflated)."""
    board = await BenchBoard.start(tmp / "board", profile=profile)
    root = tmp / "w"
    env = worker_env(board, root, "dispatch", concurrency=slots, **SETTINGS)
    command = None if cprofile is None else [PYTHON, "-m", "bench.profile_worker", str(cprofile)]
    worker = WorkerProcess(env, root, command)
    bench_process = psutil.Process()
    try:
        await wait_for(
            lambda: any(looks_for_work(h) for h in board.hits),
            timeout=60,
            what="the worker to poll",
        )
        if cprofile is not None:
            worker.signal(signal.SIGUSR1)  # the profile's window starts here
        cpu_before = worker.ps.cpu_times()
        bench_before = bench_process.cpu_times()
        added = time.time()
        board.add_tasks(tasks, title="zero work")
        progress(f"dispatch: {tasks} tasks added for {slots} slots")
        last_report = time.monotonic()

        def done() -> bool:
            nonlocal last_report
            count = board.count("review")
            if time.monotonic() - last_report > 10:
                progress(f"dispatch: {count}/{tasks} in review")
                last_report = time.monotonic()
            return count == tasks

        await wait_for(done, timeout=600, what=f"{tasks} tasks in review", every=0.2)
        cpu_after = worker.ps.cpu_times()
        bench_after = bench_process.cpu_times()
        if cprofile is not None:
            worker.signal(signal.SIGUSR2)
            await wait_for(cprofile.exists, timeout=60, what="the profile", every=0.1)
    finally:
        worker.kill()
        await board.aclose()
    first_claim = min(h.end for h in board.claims().values())
    last_review = max(h.end for h in board.hits if h.task_status == "review")
    hits = board.between(added, last_review + 1e-3)
    seconds = last_review - first_claim
    worker_cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    agents_cpu = (cpu_after.children_user + cpu_after.children_system) - (
        cpu_before.children_user + cpu_before.children_system
    )
    board_wall = sum(h.wall for h in hits)
    board_cpu = sum(h.cpu for h in hits)
    bench_cpu = (bench_after.user + bench_after.system) - (bench_before.user + bench_before.system)
    by_endpoint = per_endpoint(hits)
    return {
        "profile": profile,
        "tasks": tasks,
        "slots": slots,
        "settings": SETTINGS,
        "seconds": seconds,
        "tasks_per_second": tasks / seconds,
        "worker_cpu_ms_per_task": worker_cpu * 1000 / tasks,
        "agents_cpu_ms_per_task": agents_cpu * 1000 / tasks,
        "requests": len(hits),
        "requests_per_task": len(hits) / tasks,
        "requests_by_endpoint": by_endpoint,
        "requests_per_task_by_endpoint": {
            endpoint: count / tasks for endpoint, count in by_endpoint.items()
        },
        "board_wall_ms_per_task": board_wall * 1000 / tasks,
        "board_cpu_ms_per_task": board_cpu * 1000 / tasks,
        "board_wall_ms_per_request": board_wall * 1000 / len(hits),
        "board_limit_tasks_per_second": tasks / board_wall,
        "bench_process_cpu_ms_per_task": bench_cpu * 1000 / tasks,
    }


def requests(result: dict[str, Any]) -> dict[str, Any]:
    """What one profile's run spent on requests, per task and per endpoint."""
    keys = ("tasks", "requests", "requests_per_task", "requests_per_task_by_endpoint")
    return {key: result[key] for key in keys}


async def run_profiles(
    tmp: Path, tasks: int = 1000, slots: int = 32, profiles: tuple[str, ...] = PROFILES
) -> dict[str, Any]:
    """The run on each profile; the first (the claim-route board) is the headline, every
    profile's requests beside it."""
    runs = {}
    for profile in profiles:
        runs[profile] = await run(tmp / profile, tasks, slots, profile)
        progress(f"dispatch ({profile}): {runs[profile]['requests_per_task']:.2f} requests/task")
    return {**next(iter(runs.values())), "profiles": {n: requests(r) for n, r in runs.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--profiles", default=",".join(PROFILES), help="board profiles, full first")
    args = parser.parse_args()
    interrupt_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="taskinfa-bench-dispatch-"))
    try:
        profiles = tuple(args.profiles.split(","))
        result = anyio.run(run_profiles, tmp, args.tasks, args.slots, profiles)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(write_result("dispatch", result))


if __name__ == "__main__":
    main()
