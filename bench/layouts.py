"""One process with N slots against N processes of one slot each (the seed's layout).

    python -m bench.layouts [--sizes 1,8,32]

For each N and layout: start the workers on an empty board and wait until every process
has sent its first heartbeat and is polling (idle memory is sampled then); add 10·N tasks
(at least 20) whose agent sleeps 0.2 s; wait until all are in review. Reported: summed
RSS of the worker processes and of their agents (idle, and the peak while busy), board
requests per completed task, tasks per second (first claim to last review).

Settings for this part (both layouts alike): board rate limit off and RATE_LIMIT=100000, so
neither layout waits on the budget; POLL_INTERVAL=0.2, MAX_POLL_INTERVAL=0.5, so a process
that is idle when the tasks arrive takes its first one within half a second. The idle
request rate with the default intervals is measured by ``bench.budget``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench.harness import (
    BenchBoard,
    MemorySampler,
    WorkerProcess,
    interrupt_on_sigterm,
    looks_for_work,
    per_endpoint,
    progress,
    wait_for,
    worker_env,
    write_result,
)

AGENT_SECONDS = 0.2
AGENT = f"sleep {AGENT_SECONDS}"
SETTINGS = {
    "agent_command": AGENT,
    "rate_limit": 100_000,
    "poll_interval": 0.2,
    "max_poll_interval": 0.5,
}


def task_count(slots: int) -> int:
    return max(20, 10 * slots)


async def run_layout(tmp: Path, processes: int, slots: int) -> dict[str, Any]:
    """``processes`` worker processes of ``slots`` slots each, on one board."""
    total = processes * slots
    name = f"{processes}x{slots}"
    board = await BenchBoard.start(tmp / name / "board")
    workers: list[WorkerProcess] = []
    try:
        for i in range(processes):
            root = tmp / name / f"w{i}"
            env = worker_env(board, root, f"{name}-p{i}", concurrency=slots, **SETTINGS)
            workers.append(WorkerProcess(env, root))
        names = {f"{name}-p{i}" for i in range(processes)}
        await wait_for(
            lambda: (
                names <= {h.who for h in board.hits if h.route.endswith("/heartbeat")}
                and sum(map(looks_for_work, board.hits)) >= processes
            ),
            timeout=120,
            what=f"{processes} worker processes to start",
        )
        sampler = MemorySampler(workers)
        idle_workers, idle_agents = sampler.sample()
        sampler.samples.clear()
        count = task_count(total)
        added = time.time()
        board.add_tasks(count, title="layout")
        async with anyio.create_task_group() as group:
            group.start_soon(sampler.run)
            await wait_for(
                lambda: board.count("review") == count,
                timeout=300,
                what=f"{count} tasks to reach review",
                every=0.1,
            )
            group.cancel_scope.cancel()
        claims = board.claims()
        first_claim = min(hit.end for hit in claims.values())
        reviews = [h.end for h in board.hits if h.task_status == "review"]
        last_review = max(reviews)
        hits = board.between(added, last_review + 1e-3)
        peak_workers, peak_agents, peak_total = sampler.peak()
        return {
            "processes": processes,
            "slots_per_process": slots,
            "slots": total,
            "tasks": count,
            "idle_rss_workers_mib": idle_workers,
            "idle_rss_agents_mib": idle_agents,
            "peak_rss_workers_mib": peak_workers,
            "peak_rss_agents_mib": peak_agents,
            "peak_rss_total_mib": peak_total,
            "requests": len(hits),
            "requests_per_task": len(hits) / count,
            "requests_by_endpoint": per_endpoint(hits),
            # Every process's first read offers the same first task: all but one lose it.
            "lost_claims": sum(h.route.endswith("/claim") and h.status == 409 for h in hits),
            "seconds": last_review - first_claim,
            "tasks_per_second": count / (last_review - first_claim),
            "worker_cpu_seconds": sum(w.cpu_seconds() for w in workers),
        }
    finally:
        for worker in workers:
            worker.kill()
        await board.aclose()


async def run(tmp: Path, sizes: tuple[int, ...] = (1, 8, 32)) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    for n in sizes:
        layouts = [("pool", 1, n)] if n == 1 else [("pool", 1, n), ("seed", n, 1)]
        for layout, processes, slots in layouts:
            progress(f"layouts: {layout} layout, {processes} process(es) × {slots} slot(s)")
            result = await run_layout(tmp, processes, slots)
            result["layout"] = layout
            results.append(result)
            progress(
                f"layouts: {result['tasks']} tasks at {result['tasks_per_second']:.1f}/s, "
                f"{result['requests_per_task']:.1f} requests/task, "
                f"peak {result['peak_rss_total_mib']:.0f} MiB"
            )
    return {"settings": SETTINGS, "agent": AGENT, "runs": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,8,32")
    args = parser.parse_args()
    interrupt_on_sigterm()
    sizes = tuple(int(part) for part in args.sizes.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="taskinfa-bench-layouts-"))
    try:
        result = anyio.run(run, tmp, sizes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(write_result("layouts", result))


if __name__ == "__main__":
    main()
