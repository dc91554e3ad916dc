"""``make bench``: every part, about five minutes on two cores, then the report.

The three long parts are mostly waiting (heartbeats every 10 s, idle polls), so they run
in the background as their own processes, each with its own boards: ``bench.budget``,
``bench.latency --part idle-default`` and ``--part replicas``. Once their workers have
started, the CPU-bound parts run one after the other in this process: layouts, dispatch
and its profile, busy and small-poll latency, scale, the stream-json reader, the agent
sandbox's cost. The open pages' part waits for the background parts to end (its figure is
a few milliseconds of the pool's request latency). Then ``bench.report`` prints the tables
and writes docs/benchmarks.md and docs/benchmarks.png.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

from bench import (
    dispatch,
    latency,
    layouts,
    pages,
    profile,
    report,
    sandbox,
    scale,
    stream_reader,
)
from bench.harness import OUT, PYTHON, ROOT, progress, write_result

BACKGROUND_TIMEOUT = 480.0


def background(module: str, *args: str, pipe: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-m", module, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE if pipe else subprocess.DEVNULL,
        text=True,
    )


def wait_ready(proc: subprocess.Popen[str]) -> None:
    """Until the budget part prints READY (its ~60 worker processes have started)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.strip() == "READY":
            return
    raise SystemExit(f"bench.budget ended before its workers started (exit {proc.wait()})")


async def foreground(tmp: Path) -> None:
    parts = (
        ("layouts", lambda: layouts.run(tmp / "layouts")),
        ("dispatch", lambda: dispatch.run_profiles(tmp / "dispatch")),
        ("profile", lambda: profile.run(tmp / "profile")),
        ("latency-fast", lambda: latency.run(tmp / "latency", "fast")),
        ("scale", lambda: scale.run(tmp / "scale")),
        ("stream", lambda: stream_reader.run(tmp / "stream")),
        ("sandbox", lambda: sandbox.run(tmp / "sandbox")),
    )
    await run_parts(parts)


async def quiet(tmp: Path) -> None:
    """Parts whose figure is a latency the background parts' ~60 workers would blur: the
    open pages' effect on the pool's requests is a few milliseconds."""
    await run_parts((("pages", lambda: pages.run(tmp / "pages")),))


async def run_parts(parts: tuple[tuple[str, Callable[[], Awaitable[dict[str, Any]]]], ...]) -> None:
    for name, part in parts:
        started = time.monotonic()
        write_result(name, await part())
        progress(f"{name} done in {time.monotonic() - started:.0f} s")


def main() -> int:
    began = time.monotonic()
    OUT.mkdir(parents=True, exist_ok=True)
    for name in (
        "layouts",
        "budget",
        "dispatch",
        "profile",
        "latency-fast",
        "latency-idle-default",
        "latency-replicas",
        "scale",
        "stream",
        "pages",
        "sandbox",
        "run",
    ):
        (OUT / f"{name}.json").unlink(missing_ok=True)  # chaos results stay
    progress("background: bench.budget (~4.5 min) and idle pickup latency (~3.5 min)")
    budget = background("bench.budget", pipe=True)
    idle = background("bench.latency", "--part", "idle-default")
    replicas = background("bench.latency", "--part", "replicas")
    tmp = Path(tempfile.mkdtemp(prefix="taskinfa-bench-"))
    try:
        wait_ready(budget)
        progress("background workers started; measuring the CPU-bound parts meanwhile")
        anyio.run(foreground, tmp)
        progress("waiting for the background parts")
        codes = [proc.wait(timeout=BACKGROUND_TIMEOUT) for proc in (budget, idle, replicas)]
        anyio.run(quiet, tmp)
    finally:
        for proc in (budget, idle, replicas):
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.monotonic() - began
    write_result("run", {"seconds": seconds})
    text = report.write(seconds)
    print(text)
    progress(f"wrote docs/benchmarks.md and docs/benchmarks.png in {seconds / 60:.1f} minutes")
    if any(codes):
        print(f"background parts failed: exit codes {codes}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
