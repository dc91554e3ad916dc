"""Virtual time for rate-limiter tests: a monotonic clock, a wall clock and a sleep that
only move when the test says so."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

WALL_START = 1_700_000_000.0


class ManualClock:
    """Virtual time: ``sleep`` parks on a timer that only ``advance`` or ``run`` fires."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL_START + (self.now - 1000.0)

    async def sleep(self, delay: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(delay, 0.0), next(self._seq), future))
        await future

    async def settle(self) -> None:
        # Let every runnable coroutine reach its next await; no wall-clock time passes.
        for _ in range(50):
            await asyncio.sleep(0)

    def _live_timers(self) -> list[tuple[float, int, asyncio.Future[None]]]:
        return [timer for timer in self._timers if not timer[2].done()]

    async def advance(self, seconds: float) -> None:
        """Move time forward, firing due timers in order."""
        target = self.now + seconds
        await self.settle()
        while True:
            self._timers = self._live_timers()
            heapq.heapify(self._timers)
            if not self._timers or self._timers[0][0] > target:
                break
            due, _, future = heapq.heappop(self._timers)
            self.now = max(self.now, due)
            future.set_result(None)
            await self.settle()
        self.now = target
        await self.settle()

    def fire_next(self) -> bool:
        """Jump to the earliest pending timer and fire it; False when none is pending."""
        self._timers = self._live_timers()
        heapq.heapify(self._timers)
        if not self._timers:
            return False
        due, _, future = heapq.heappop(self._timers)
        self.now = max(self.now, due)
        future.set_result(None)
        return True

    async def run_until(self, done: Callable[[], bool], limit: float = 10_000.0) -> None:
        """Jump from timer to timer until ``done()``; fail after ``limit`` virtual seconds."""
        deadline = self.now + limit
        await self.settle()
        while not done():
            self._timers = self._live_timers()
            heapq.heapify(self._timers)
            assert self._timers, "nothing left to wait for, but the condition is not met"
            due, _, future = heapq.heappop(self._timers)
            assert due <= deadline, "condition not met within the virtual time limit"
            self.now = max(self.now, due)
            future.set_result(None)
            await self.settle()
