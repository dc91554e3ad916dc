"""Scale: 256 slots in one process, every agent running at once.

    python -m bench.scale [--slots 256]

The worker is ``bench.lag_worker``: the real ``run_worker`` plus a probe that measures how
late the event loop wakes a 10 ms sleep. Each agent is a shell loop that prints a line every
second until a gate file appears, so all 256 run at once and talk to the worker (256 output
lines a second) for as long as the benchmark wants. Phases:

    ramp    start → all 256 tasks in progress (claims one at a time, 256 agent starts)
    steady  20 s with every slot busy
    finish  the gate opens → all 256 in review (256 endings at once)

Reported per phase: loop lag p50 / p99 / max; in the steady phase, the RSS of the worker
and the summed RSS of its agents. Board rate limit off and RATE_LIMIT=100000: at the real
100 requests a minute the ramp alone would take about 8 minutes (see ``bench.budget``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
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
    progress,
    summary,
    wait_for,
    worker_env,
    write_result,
)

STEADY = 20.0


def gate_agent(gate: Path) -> str:
    loop = f"while [ ! -e {shlex.quote(str(gate))} ]; do echo tick; sleep 1; done"
    return f"sh -c {shlex.quote(loop)}"


def agents(worker: WorkerProcess) -> int:
    """Agents running: the worker's direct children (each shell loop's sleep is below)."""
    try:
        return len(worker.ps.children())
    except psutil.Error:
        return 0


def lag_ms(samples: list[list[float]], start: float, end: float) -> dict[str, float]:
    values = [lag * 1000 for moment, lag in samples if start <= moment < end]
    return summary(values)


async def run(tmp: Path, slots: int = 256) -> dict[str, Any]:
    board = await BenchBoard.start(tmp / "board")
    board.add_tasks(slots, title="scale")
    root = tmp / "w"
    gate = tmp / "gate"
    lag_file = tmp / "lag.json"
    env = worker_env(
        board,
        root,
        "scale",
        concurrency=slots,
        agent_command=gate_agent(gate),
        rate_limit=100_000,
    )
    worker = WorkerProcess(env, root, [PYTHON, "-m", "bench.lag_worker", str(lag_file)])
    try:
        began = time.time()
        full = await wait_for(
            lambda: board.count("in_progress") == slots and agents(worker) == slots,
            timeout=180,
            what=f"{slots} agents running",
            every=0.2,
        )
        progress(f"scale: {slots} slots busy after {full - began:.1f} s")
        rss_samples = []
        steady_end = full + STEADY
        while time.time() < steady_end:
            rss_samples.append(worker.memory())
            await anyio.sleep(1.0)
        agents_alive = agents(worker)
        gate.touch()
        opened = time.time()
        done = await wait_for(
            lambda: board.count("review") == slots, timeout=180, what="all in review", every=0.2
        )
        progress(f"scale: {slots} endings took {done - opened:.1f} s")
        code = await worker.stop(timeout=60)
    finally:
        worker.kill()
        await board.aclose()
    samples = json.loads(lag_file.read_text()) if lag_file.exists() else []
    worker_rss = max(own for own, _ in rss_samples)
    agents_rss = max(agents for _, agents in rss_samples)
    return {
        "slots": slots,
        "exit_code": code,
        "ramp_seconds": full - began,
        "finish_seconds": done - opened,
        "agents_alive_in_steady": agents_alive,
        "rss_worker_mib": worker_rss,
        "rss_agents_mib": agents_rss,
        "rss_agent_each_mib": agents_rss / slots,
        "lag_ms": {
            "ramp": lag_ms(samples, began, full),
            "steady": lag_ms(samples, full, steady_end),
            "finish": lag_ms(samples, opened, done),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=256)
    args = parser.parse_args()
    interrupt_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="taskinfa-bench-scale-"))
    try:
        result = anyio.run(run, tmp, args.slots)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(write_result("scale", result))


if __name__ == "__main__":
    main()
