"""The pool's request budget: idle requests per minute, and 64 busy slots under 100/min.

    python -m bench.budget

Everything here uses the DEFAULT intervals (the idle poll paced by its share of the key's
budget, about every 3.5 s on a key of its own; heartbeats every 10 s as the board asks,
cancellation checks 30 s, lease sweeps 150 s) and runs at once, each configuration on its
own board, so the whole part takes about four minutes:

- idle: pools of 1, 8, 32 and 64 slots (one process each), and the seed's layout of 8 and
  32 one-slot processes. Requests are counted at the board over the steady-state window
  from 75 s after the last process started to 185 s. Then one task is added to each board
  and its pickup time recorded (see also ``bench.latency``).
- busy: one pool of 64 slots whose agents sleep, against a board limited to 100 requests a
  minute (the real server's limit), with the default RATE_LIMIT=100. Reported: the ramp
  until all 64 run, requests per minute once they do (over 110 s, longer than one
  stretched heartbeat round), the most requests in any 60 s of the run, and every 429.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench.harness import (
    BenchBoard,
    Hit,
    WorkerProcess,
    interrupt_on_sigterm,
    max_in_window,
    per_endpoint,
    progress,
    wait_for,
    worker_env,
    write_result,
)
from taskinfa_worker.client.ratelimit import RateLimiter
from taskinfa_worker.pool import budget as worker_budget
from taskinfa_worker.settings import Settings

IDLE_WINDOW = (75.0, 185.0)  # seconds after the last process of a configuration started
# Seconds of the busy measurement once all 64 slots run. One heartbeat round takes ~40 s
# and they start ~100 s apart, so 110 s holds a round or parts of two: the rate counted is
# within ±30 % of the long-run rate (``--steady 240`` measures it well, in ~7 minutes).
STEADY = 110.0
BUSY_SLOTS = 64
BOARD_LIMIT = 100
IDLE_AGENT = "sleep 0.2"
BUSY_AGENT = "sleep 900"  # killed at the end; bounded anyway
IDLE_CONFIGS = (
    ("pool", 1, 1),
    ("pool", 1, 8),
    ("pool", 1, 32),
    ("pool", 1, 64),
    ("seed", 8, 1),
    ("seed", 32, 1),
)


async def _sleep_until(moment: float) -> None:
    await anyio.sleep(max(0.0, moment - time.time()))


class Started:
    """Prints READY on stdout once every configuration's processes run (``bench`` waits
    for it before the CPU-bound parts, so start-up does not disturb them)."""

    def __init__(self, expected: int) -> None:
        self._left = expected

    def one(self) -> None:
        self._left -= 1
        if self._left == 0:
            print("READY", flush=True)


async def _start(
    board: BenchBoard,
    root: Path,
    label: str,
    processes: int,
    slots: int,
    agent: str,
    workers: list[WorkerProcess],
) -> float:
    """Start the processes (into ``workers``); returns when the last one sent a heartbeat."""
    for i in range(processes):
        env = worker_env(board, root / f"w{i}", f"{label}-p{i}", concurrency=slots)
        env["AGENT_COMMAND"] = agent
        workers.append(WorkerProcess(env, root / f"w{i}"))
    names = {f"{label}-p{i}" for i in range(processes)}
    return await wait_for(
        lambda: names <= {h.who for h in board.hits if h.route.endswith("/heartbeat")},
        timeout=180,
        what=f"{label} to start",
        every=0.2,
    )


async def idle_config(
    tmp: Path,
    layout: str,
    processes: int,
    slots: int,
    out: list[dict[str, Any]],
    started: Started,
) -> None:
    label = f"idle-{layout}-{processes}x{slots}"
    # Rate limit off: this measures what the layout asks for; over 100/min a real board
    # would answer 429 and the count would measure the backoff instead.
    board = await BenchBoard.start(tmp / label / "board", rate_limit=0)
    workers: list[WorkerProcess] = []
    try:
        ready = await _start(board, tmp / label, label, processes, slots, IDLE_AGENT, workers)
        started.one()
        rss = sum(w.memory()[0] for w in workers)
        await _sleep_until(ready + IDLE_WINDOW[0])
        start = time.time()
        await _sleep_until(ready + IDLE_WINDOW[1])
        end = time.time()
        hits = board.between(start, end)
        created = time.time()
        board.add_tasks(1, title="pickup")
        picked = await wait_for(
            lambda: board.claims(), timeout=120, what=f"{label} to pick up a task", every=0.02
        )
        claim = next(iter(board.claims().values()))
        out.append(
            {
                "layout": layout,
                "processes": processes,
                "slots_per_process": slots,
                "slots": processes * slots,
                "window_seconds": end - start,
                "requests": len(hits),
                "requests_per_minute": len(hits) / ((end - start) / 60),
                "requests_by_endpoint": per_endpoint(hits),
                "rate_limited": sum(h.status == 429 for h in board.hits),
                "rss_workers_mib": rss,
                "pickup_seconds": claim.end - created,
                "pickup_observed": picked - created,
            }
        )
        progress(f"budget: {label} idle {out[-1]['requests_per_minute']:.1f} requests/min")
    finally:
        for worker in workers:
            worker.kill()
        await board.aclose()


def longest_heartbeat_gap(hits: list[Hit], full: float) -> float | None:
    """The longest silence of any name between two heartbeats, the later one after the
    last slot got busy (the board shows a worker offline after 120 s)."""
    beats: dict[str, list[float]] = {}
    for hit in hits:
        if hit.endpoint.endswith("/heartbeat") and hit.who:
            beats.setdefault(hit.who, []).append(hit.start)
    gaps = [
        later - earlier
        for times in beats.values()
        for earlier, later in itertools.pairwise(times)
        if later > full
    ]
    return max(gaps) if gaps else None


def expected_steady(slots: int) -> dict[str, float]:
    """Requests per minute the code's own intervals give once every slot is busy.

    One heartbeat round is 1 + slots requests every ``heartbeat_interval``; cancellation
    checks one request every ``watch_interval(CANCEL_CHECK_INTERVAL)``; lease sweeps two
    every ``watch_interval(LEASE_TIMEOUT / 2)`` (default settings, a 100/min limiter).
    """
    settings = Settings(_env_file=None, taskinfa_api_url="http://x/api", taskinfa_api_key="k")
    limiter = RateLimiter(settings.rate_limit)
    heartbeat = worker_budget.heartbeat_interval(10.0, 1 + slots, limiter)
    cancel = worker_budget.watch_interval(settings.cancel_check_interval, 1, limiter)
    lease = worker_budget.watch_interval(settings.lease_timeout / 2, 2, limiter)
    per_minute = (1 + slots) * 60 / heartbeat + 60 / cancel + 2 * 60 / lease
    return {
        "expected_heartbeat_interval": heartbeat,
        "expected_steady_per_minute": per_minute,
    }


async def busy(tmp: Path, out: dict[str, Any], started: Started, steady: float) -> None:
    label = f"busy-{BUSY_SLOTS}"
    board = await BenchBoard.start(tmp / label / "board", rate_limit=BOARD_LIMIT)
    board.add_tasks(BUSY_SLOTS, title="sleeping")
    workers: list[WorkerProcess] = []
    try:
        began = time.time()
        await _start(board, tmp / label, label, 1, BUSY_SLOTS, BUSY_AGENT, workers)
        started.one()
        worker = workers[0]
        full = await wait_for(
            lambda: board.count("in_progress") == BUSY_SLOTS,
            timeout=400,
            what=f"{BUSY_SLOTS} slots to be busy",
            every=0.2,
        )
        progress(f"budget: {BUSY_SLOTS} slots busy after {full - began:.0f} s")
        await anyio.sleep(steady)
        end = time.time()
        own, agents = worker.memory()
        steady_hits = board.between(full, end)
        everything = board.between(began, end)
        out.update(
            {
                "slots": BUSY_SLOTS,
                "board_limit_per_minute": BOARD_LIMIT,
                "worker_rate_limit": 100,
                "ramp_seconds": full - began,
                "ramp_requests": len(board.between(began, full)),
                "steady_seconds": end - full,
                "steady_requests": len(steady_hits),
                "steady_requests_per_minute": len(steady_hits) / ((end - full) / 60),
                "steady_by_endpoint": per_endpoint(steady_hits),
                "longest_heartbeat_gap": longest_heartbeat_gap(everything, full),
                **expected_steady(BUSY_SLOTS),
                "max_requests_in_60s": max_in_window(everything),
                "rate_limited": sum(h.status == 429 for h in everything),
                "requests": len(everything),
                "rss_worker_mib": own,
                "rss_agents_mib": agents,
                "request_times": [round(h.start - began, 3) for h in everything],
                "statuses": dict(board.statuses()),
            }
        )
        progress(
            f"budget: busy {out['steady_requests_per_minute']:.1f} requests/min, "
            f"max {out['max_requests_in_60s']} in 60 s, {out['rate_limited']} × 429"
        )
    finally:
        for worker in workers:
            worker.kill()
        await board.aclose()


async def run(tmp: Path, steady: float = STEADY) -> dict[str, Any]:
    idle: list[dict[str, Any]] = []
    busy_result: dict[str, Any] = {}
    started = Started(1 + len(IDLE_CONFIGS))
    async with anyio.create_task_group() as group:
        # The busy pool first: its ramp at 100 requests a minute is the longest step.
        group.start_soon(busy, tmp, busy_result, started, steady)
        for layout, processes, slots in IDLE_CONFIGS:
            group.start_soon(idle_config, tmp, layout, processes, slots, idle, started)
    idle.sort(key=lambda r: (r["layout"], r["slots"]))
    return {"idle_window": IDLE_WINDOW, "idle": idle, "busy": busy_result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steady", type=float, default=STEADY, help="seconds, all 64 busy")
    args = parser.parse_args()
    interrupt_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="taskinfa-bench-budget-"))
    try:
        result = anyio.run(run, tmp, args.steady)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(write_result("budget", result), file=sys.stderr)


if __name__ == "__main__":
    main()
