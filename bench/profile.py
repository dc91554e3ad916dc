"""Where the worker's CPU goes: bench.dispatch's run with the worker under cProfile.

    python -m bench.profile [--tasks 1000] [--slots 32] [--top 15] [--stats FILE]

The same 1,000 tasks of agent ``true`` over 32 slots as ``bench.dispatch``, the worker run
by ``bench.profile_worker`` (every thread profiled, the measured window only). Written to
``bench/out/profile.json``: the functions that took the most time by themselves (self) and
with what they called (cumulative), and the self time summed per area (the worker's
packages, asyncio, aiohttp, loguru, pydantic, subprocess, ...), all in ms per task.

``bench/profile_before.json`` is the same summary of the code before issue #17's CPU work,
kept so the benchmark page can show before and after side by side. ``--stats FILE`` keeps
the raw statistics for a closer look (``python -m pstats FILE``).
"""

from __future__ import annotations

import argparse
import pstats
import shutil
import sysconfig
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio

from bench import dispatch
from bench.harness import ROOT, interrupt_on_sigterm, write_result

_SITE = Path(sysconfig.get_paths()["purelib"])
_STDLIB = Path(sysconfig.get_paths()["stdlib"])


def where(filename: str) -> str:
    """A function's file, short: relative to the repository, site-packages or the stdlib."""
    path = Path(filename)
    for base in (_SITE, ROOT, _STDLIB):  # the venv may live inside the repository
        if path.is_relative_to(base):
            return str(path.relative_to(base))
    return filename  # "~" for built-ins


def area(filename: str) -> str:
    """The area a function belongs to: a package of the worker, a library, or built-ins."""
    short = where(filename)
    parts = Path(short).parts
    if filename == "~" or not parts:
        return "built-ins (C: syscalls, json, re, ...)"
    if parts[0] == "taskinfa_worker":
        return "/".join(parts[:2]).removesuffix(".py") if len(parts) > 2 else "taskinfa_worker"
    return parts[0].removesuffix(".py")


def summarise(stats_file: Path, tasks: int, top: int) -> dict[str, Any]:
    stats = pstats.Stats(str(stats_file))
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    per_task = 1000 / tasks

    def name(func: tuple[str, int, str]) -> str:
        filename, line, function = func
        return function if filename == "~" else f"{where(filename)}:{line}({function})"

    rows = [
        {
            "function": name(func),
            "calls_per_task": nc / tasks,
            "self_ms_per_task": tt * per_task,
            "cumulative_ms_per_task": ct * per_task,
        }
        for func, (_cc, nc, tt, ct, _callers) in table.items()
    ]
    areas: dict[str, float] = defaultdict(float)
    for func, (_cc, _nc, tt, _ct, _callers) in table.items():
        areas[area(func[0])] += tt * per_task
    total = sum(areas.values())
    return {
        "tasks": tasks,
        "profiled_ms_per_task": total,
        "by_self": sorted(rows, key=lambda r: -r["self_ms_per_task"])[:top],
        "by_cumulative": sorted(rows, key=lambda r: -r["cumulative_ms_per_task"])[:top],
        "by_area": dict(sorted(areas.items(), key=lambda kv: -kv[1])),
    }


async def run(
    tmp: Path, tasks: int = 1000, slots: int = 32, top: int = 15, keep: Path | None = None
) -> dict[str, Any]:
    stats_file = tmp / "worker.pstats"
    measured = await dispatch.run(tmp, tasks, slots, cprofile=stats_file)
    if keep is not None:
        shutil.copyfile(stats_file, keep)
    result = summarise(stats_file, tasks, top)
    result["slots"] = slots
    result["worker_cpu_ms_per_task_profiled"] = measured["worker_cpu_ms_per_task"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=32)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--stats", type=Path, help="keep the raw pstats file here")
    args = parser.parse_args()
    interrupt_on_sigterm()
    tmp = Path(tempfile.mkdtemp(prefix="taskinfa-bench-profile-"))
    try:
        result = anyio.run(run, tmp, args.tasks, args.slots, args.top, args.stats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(write_result("profile", result))
    for name, ms in result["by_area"].items():
        print(f"{ms:8.3f} ms/task  {name}")


if __name__ == "__main__":
    main()
