"""``taskinfa-worker run`` under cProfile, every thread included (used by bench.profile).

    python -m bench.profile_worker STATS_FILE      (settings from the environment, as the CLI)

The worker's own CPU is spent on the event loop's thread and in anyio's worker threads
(folder preparation, file writes), so one profiler per thread is started as each thread
first runs Python code, and all of them are merged into one ``pstats`` file. SIGUSR1
forgets what was counted so far (imports, preflight, the first poll) and SIGUSR2 writes
the statistics to STATS_FILE, so that only the measured window is counted.

cProfile is deterministic (it counts every call, not samples), which is what a before and
after comparison wants on a shared machine; it also makes every call slower, so its
milliseconds are for comparing with each other, not with the unprofiled CPU per task.
"""

from __future__ import annotations

import cProfile
import marshal
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio

from taskinfa_worker.app import run_worker
from taskinfa_worker.settings import load_settings


class ThreadProfiles:
    """One ``cProfile.Profile`` per thread from the thread's first call; merged at the end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._profiles: list[cProfile.Profile] = []

    def _start_here(self, *_: Any) -> None:
        # Each thread's own CPU time, not the wall clock: a worker thread waiting for work,
        # or the loop waiting in its selector, costs nothing and must count nothing.
        profile = cProfile.Profile(time.thread_time_ns, 1e-9)
        with self._lock:
            self._profiles.append(profile)
        profile.enable()  # replaces this thread's profile hook with cProfile's own

    def install(self) -> None:
        """Profile this thread, and every thread started from now on (anyio's workers are
        started on demand and live on, so they must be caught from their first call)."""
        threading.setprofile(self._start_here)
        self._start_here()

    def clear(self) -> None:
        """Forget everything counted so far (the start-up), in every thread."""
        with self._lock:
            for profile in self._profiles:
                profile.clear()

    def write(self, path: Path) -> None:
        """The merged statistics of every thread, in ``pstats`` format (``pstats.Stats``
        reads the file)."""
        merged: dict[Any, Any] = {}
        with self._lock:
            profiles = list(self._profiles)
        for profile in profiles:
            # A snapshot, not disable(): disable() would act on the calling thread only.
            profile.snapshot_stats()
            for func, (cc, nc, tt, ct, callers) in profile.stats.items():
                if func not in merged:
                    merged[func] = (cc, nc, tt, ct, dict(callers))
                    continue
                cc0, nc0, tt0, ct0, callers0 = merged[func]
                for caller, value in callers.items():
                    old = callers0.get(caller)
                    callers0[caller] = value if old is None else _add(old, value)
                merged[func] = (cc0 + cc, nc0 + nc, tt0 + tt, ct0 + ct, callers0)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(marshal.dumps(merged))
        partial.replace(path)  # whoever waits for the file never reads half of it


def _add(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(x + y for x, y in zip(a, b, strict=True))


async def main(stats_file: Path) -> int:
    profiles = ThreadProfiles()
    profiles.install()
    # SIGUSR1: the measured window starts; SIGUSR2: it ends (the drain is not counted).
    signal.signal(signal.SIGUSR1, lambda signum, frame: profiles.clear())
    signal.signal(signal.SIGUSR2, lambda signum, frame: profiles.write(stats_file))
    settings = load_settings({}, env_file=None)
    return await run_worker(settings)


if __name__ == "__main__":
    sys.exit(anyio.run(main, Path(sys.argv[1])))
