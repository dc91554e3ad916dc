"""Pickup latency: how long a task waits for a claim, idle and busy.

    python -m bench.latency --part fast       # busy (both poll settings), idle with small poll
    python -m bench.latency --part idle-default   # about 3.5 minutes, mostly waiting
    python -m bench.latency --part replicas       # 10 idle workers on one key, ~3 minutes

Times are the board's own (``BenchBoard`` records when each answer left it):

- idle: a task is created (straight in the store) while the worker waits for its next poll;
  latency = its claim answered − its creation. With the default settings (a poll paced by
  the key's budget, about every 4.5 s alone on a key) the worker has been idle for 85 s + a
  random 0–60 s first; with the small poll (POLL_INTERVAL=0.5, MAX_POLL_INTERVAL=2) 5 s +
  0–3 s.
- replicas: ten idle one-slot workers share one key of a board limited to 100 requests a
  minute (it sends X-RateLimit-Remaining); tasks arrive one at a time at random moments;
  latency as for idle, and the key's request rate over the idle stretches, against one
  worker alone on such a key.
- busy: every slot is busy and the queue is not empty; latency = the claim of a slot's next
  task answered − the review PATCH of its previous task answered (the slot frees), for a
  4-slot pool running 40 tasks of 0.3 s, with each poll setting, and RATE_LIMIT=100000 on
  a board without a limit, so this is the dispatcher's own delay. A third run keeps the
  default RATE_LIMIT=100 against a board limited to 100/min: tasks this short need more
  requests than the budget has, and the latency is then the wait for the budget.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from bench.harness import (
    BenchBoard,
    WorkerProcess,
    interrupt_on_sigterm,
    progress,
    summary,
    wait_for,
    worker_env,
    write_result,
)

SMALL_POLL = {"poll_interval": 0.5, "max_poll_interval": 2.0}
DEFAULT_POLL: dict[str, float] = {}
AGENT = "sleep 0.2"
IDLE_DEFAULT_WORKERS = 10
IDLE_DEFAULT_SETTLE = 85.0  # long idle: any start-up effect on the poll is over
IDLE_SMALL_WORKERS = 6
IDLE_SMALL_ROUNDS = 3
IDLE_SMALL_SETTLE = 5.0
BUSY_SLOTS = 4
BUSY_TASKS = 40
BUSY_TASKS_BUDGET_BOUND = 12
BUSY_AGENT = "sleep 0.3"
UNLIMITED = {"rate_limit": 100_000}
REPLICAS = 10
REPLICA_ROUNDS = 10
REPLICA_SETTLE = 20.0  # from start until the poll intervals have settled on the key's share
REPLICA_GAP = (4.0, 16.0)  # between a task's review and the next task's arrival


async def pickup(board: BenchBoard, round_: int) -> float:
    """Add one task now; seconds until its claim was answered. Returns once it is in
    review (the ``round_ + 1``-th), so the next round starts from an idle board."""
    created = time.time()
    (task_id,) = board.add_tasks(1, title=f"pickup {round_}")
    await wait_for(lambda: task_id in board.claims(), timeout=120, what="a claim", every=0.02)
    latency = board.claims()[task_id].end - created
    await wait_for(lambda: board.count("review") == round_ + 1, 120, "the review")
    return latency


async def _idle_worker(
    tmp: Path,
    label: str,
    poll: dict[str, float],
    rounds: int,
    settle: float,
    spread: float,
    rng: random.Random,
    out: list[float],
) -> None:
    board = await BenchBoard.start(tmp / label / "board")
    root = tmp / label / "w"
    env = worker_env(board, root, label, concurrency=1, agent_command=AGENT, **poll)
    worker = WorkerProcess(env, root)
    try:
        await wait_for(lambda: board.hits, timeout=120, what=f"{label} to start")
        for round_ in range(rounds):
            await anyio.sleep(settle + rng.uniform(0, spread))
            out.append(await pickup(board, round_))
    finally:
        worker.kill()
        await board.aclose()


async def idle(
    tmp: Path, poll: dict[str, float], workers: int, rounds: int, settle: float, spread: float
) -> list[float]:
    rng = random.Random(7)  # arrival times, not secrets
    samples: list[float] = []
    name = "small" if poll else "default"
    async with anyio.create_task_group() as group:
        for i in range(workers):
            group.start_soon(
                _idle_worker,
                tmp,
                f"idle-{name}-{i}",
                poll,
                rounds,
                settle,
                spread,
                random.Random(rng.random()),
                samples,
            )
    return samples


async def replicas(tmp: Path, workers: int, rounds: int) -> dict[str, Any]:
    """``workers`` idle one-slot workers on one key: pickup latency and the key's rate."""
    label = f"replicas-{workers}"
    board = await BenchBoard.start(tmp / label / "board", rate_limit=100)
    procs = []
    rng = random.Random(11)  # arrival times, not secrets
    samples: list[float] = []
    idle_requests: Counter[str] = Counter()
    idle_seconds = 0.0
    try:
        for i in range(workers):
            root = tmp / label / f"w{i}"
            env = worker_env(board, root, f"{label}-{i}", concurrency=1, agent_command=AGENT)
            procs.append(WorkerProcess(env, root))
        await anyio.sleep(REPLICA_SETTLE)
        for round_ in range(rounds):
            quiet_from = time.time()
            await anyio.sleep(rng.uniform(*REPLICA_GAP))
            created = time.time()
            idle_requests.update(hit.route for hit in board.between(quiet_from, created))
            idle_seconds += created - quiet_from
            samples.append(await pickup(board, round_))
    finally:
        for proc in procs:
            proc.kill()
        await board.aclose()
    return {
        "workers": workers,
        "pickup": summary(samples),
        "samples": samples,
        "idle_requests_per_minute": sum(idle_requests.values()) * 60.0 / max(idle_seconds, 1e-9),
        "idle_requests_by_route_per_minute": {
            route: count * 60.0 / max(idle_seconds, 1e-9) for route, count in idle_requests.items()
        },
    }


async def busy(
    tmp: Path, label: str, settings: dict[str, float], tasks: int, board_limit: int = 0
) -> list[float]:
    board = await BenchBoard.start(tmp / label / "board", rate_limit=board_limit)
    board.add_tasks(tasks, title="busy")
    root = tmp / label / "w"
    env = worker_env(
        board, root, label, concurrency=BUSY_SLOTS, agent_command=BUSY_AGENT, **settings
    )
    worker = WorkerProcess(env, root)
    try:
        await wait_for(lambda: board.count("review") == tasks, timeout=180, what="the busy run")
    finally:
        worker.kill()
        await board.aclose()
    # Per slot, in time order: the review of one task, then the claim of the next.
    freed: dict[str, float] = {}
    samples: list[float] = []
    for hit in sorted(board.hits, key=lambda h: h.end):
        if hit.who is None:
            continue
        if hit.task_status == "review":
            freed[hit.who] = hit.end
        elif hit.route.endswith("/claim") and hit.who in freed:
            # Only while work was waiting: the queue is never empty before the last claim.
            samples.append(hit.end - freed.pop(hit.who))
    return samples


async def run(tmp: Path, part: str) -> dict[str, Any]:
    if part == "replicas":
        progress(f"latency: one worker, then {REPLICAS} idle workers, on one key (~4 minutes)")
        alone = await replicas(tmp, 1, REPLICA_ROUNDS)
        together = await replicas(tmp, REPLICAS, REPLICA_ROUNDS)
        return {"replicas_alone": alone, "replicas_together": together}
    if part == "idle-default":
        progress("latency: idle pickup with the default poll (about 3.5 minutes)")
        samples = await idle(tmp, DEFAULT_POLL, IDLE_DEFAULT_WORKERS, 1, IDLE_DEFAULT_SETTLE, 60.0)
        return {"idle_default": summary(samples), "idle_default_samples": samples}
    progress("latency: busy pickup, default poll")
    busy_default = await busy(tmp, "busy-default", {**DEFAULT_POLL, **UNLIMITED}, BUSY_TASKS)
    progress("latency: busy pickup, small poll")
    busy_small = await busy(tmp, "busy-small", {**SMALL_POLL, **UNLIMITED}, BUSY_TASKS)
    progress("latency: busy pickup at the default RATE_LIMIT=100 (about a minute)")
    busy_budget = await busy(tmp, "busy-budget", DEFAULT_POLL, BUSY_TASKS_BUDGET_BOUND, 100)
    progress("latency: idle pickup, small poll")
    idle_small = await idle(
        tmp, SMALL_POLL, IDLE_SMALL_WORKERS, IDLE_SMALL_ROUNDS, IDLE_SMALL_SETTLE, 3.0
    )
    return {
        "small_poll": SMALL_POLL,
        "busy_default": summary(busy_default),
        "busy_small": summary(busy_small),
        "busy_budget_bound": summary(busy_budget),
        "idle_small": summary(idle_small),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["fast", "idle-default", "replicas"], default="fast")
    args = parser.parse_args()
    interrupt_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="taskinfa-bench-latency-"))
    try:
        result = anyio.run(run, tmp, args.part)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(write_result(f"latency-{args.part}", result))


if __name__ == "__main__":
    main()
