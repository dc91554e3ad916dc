"""Dispatch overhead: 1,000 tasks whose agent does nothing, 32 slots, one worker process.

    python -m bench.dispatch [--tasks 1000] [--slots 32]

The agent is ``true``: every millisecond measured is the worker's own work per task (claim,
workspace folder, agent start and supervision, transcript, comments, review). The board's
rate limit is off and RATE_LIMIT=100000, so neither waits on a budget (the real board's
100 requests a minute would allow about 16 tasks a minute; see ``bench.budget``).

Reported: tasks per second (first claim to last review), the worker process's CPU per task
(user + system of the worker itself, psutil), the agents' CPU per task (the reaped
children), and beside them the board's own time: the wall and CPU time spent inside its
handlers, which bounds the throughput however fast the worker were (tasks / board time).
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
    per_endpoint,
    progress,
    wait_for,
    worker_env,
    write_result,
)

SETTINGS = {
    "agent_command": "true",
    "rate_limit": 100_000,
    "poll_interval": 0.2,
    "max_poll_interval": 0.5,
}


async def run(
    tmp: Path, tasks: int = 1000, slots: int = 32, *, profile: Path | None = None
) -> dict[str, Any]:
    """``profile``: run the worker under cProfile (``bench.profile_worker``) and write its
    statistics of the measured window to this file (its CPU figures are then inflated)."""
    board = await BenchBoard.start(tmp / "board")
    root = tmp / "w"
    env = worker_env(board, root, "dispatch", concurrency=slots, **SETTINGS)
    command = None if profile is None else [PYTHON, "-m", "bench.profile_worker", str(profile)]
    worker = WorkerProcess(env, root, command)
    bench_process = psutil.Process()
    try:
        await wait_for(
            lambda: any(h.route.endswith("/tasks/next") for h in board.hits),
            timeout=60,
            what="the worker to poll",
        )
        if profile is not None:
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
        if profile is not None:
            worker.signal(signal.SIGUSR2)
            await wait_for(profile.exists, timeout=60, what="the profile", every=0.1)
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
    return {
        "tasks": tasks,
        "slots": slots,
        "settings": SETTINGS,
        "seconds": seconds,
        "tasks_per_second": tasks / seconds,
        "worker_cpu_ms_per_task": worker_cpu * 1000 / tasks,
        "agents_cpu_ms_per_task": agents_cpu * 1000 / tasks,
        "requests": len(hits),
        "requests_per_task": len(hits) / tasks,
        "requests_by_endpoint": per_endpoint(hits),
        "board_wall_ms_per_task": board_wall * 1000 / tasks,
        "board_cpu_ms_per_task": board_cpu * 1000 / tasks,
        "board_wall_ms_per_request": board_wall * 1000 / len(hits),
        "board_limit_tasks_per_second": tasks / board_wall,
        "bench_process_cpu_ms_per_task": bench_cpu * 1000 / tasks,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=32)
    args = parser.parse_args()
    interrupt_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="taskinfa-bench-dispatch-"))
    try:
        result = anyio.run(run, tmp, args.tasks, args.slots)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(write_result("dispatch", result))


if __name__ == "__main__":
    main()
