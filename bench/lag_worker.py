"""``taskinfa-worker run`` with an event-loop lag probe beside the pool (used by bench.scale).

    python -m bench.lag_worker LAG_FILE      (settings from the environment, as the CLI)

The probe asks the loop to wake it every 10 ms and records how late it woke: that lateness
is what every other coroutine of the worker (heartbeats, stream readers, claims) waits on
top of its own work. Samples ``[epoch, lag seconds]`` are written to LAG_FILE as JSON when
the worker exits (it drains on SIGTERM like the real one).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import anyio

from taskinfa_worker.app import run_worker
from taskinfa_worker.settings import load_settings

PERIOD = 0.01


async def probe(samples: list[tuple[float, float]]) -> None:
    while True:
        before = time.perf_counter()
        await anyio.sleep(PERIOD)
        samples.append((time.time(), time.perf_counter() - before - PERIOD))


async def main(lag_file: Path) -> int:
    settings = load_settings({}, env_file=None)
    samples: list[tuple[float, float]] = []
    async with anyio.create_task_group() as group:
        group.start_soon(probe, samples)
        code = await run_worker(settings)
        group.cancel_scope.cancel()
    lag_file.write_text(json.dumps(samples))
    return code


if __name__ == "__main__":
    sys.exit(anyio.run(main, Path(sys.argv[1])))
