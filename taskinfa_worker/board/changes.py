"""The change feed behind the page's live updates: wait until the board's version moves.

Every open page holds one long-poll (``GET /api/changes?since=V``). However many pages wait,
one watcher reads the version (a one-row read) while anyone waits, and wakes them all when
it moves; with nobody waiting nothing is read. A write through this server nudges the
watcher, so a page hears of it at once; writes from elsewhere (another process on the same
file) are seen at the next check, a fraction of a second later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Final

CHECK_EVERY: Final = 0.2
"""Seconds between version reads while some page waits."""


class ChangeFeed:
    """Waiters for a version other than the one they have. Lives in one event loop."""

    def __init__(self, read_version: Callable[[], int], check_every: float = CHECK_EVERY) -> None:
        self._read = read_version
        self._check_every = check_every
        self._moved = asyncio.Event()
        self._nudged = asyncio.Event()
        self._waiting = 0
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False

    def nudge(self) -> None:
        """Something was written here: look at the version now rather than at the next check."""
        self._nudged.set()

    async def wait_past(self, since: int, timeout: float) -> int:
        """The current version, as soon as it differs from ``since`` or after ``timeout``."""
        current = self._read()
        if current != since or self._closed:
            return current
        self._waiting += 1
        self._ensure_watcher()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    while current == since and not self._closed:
                        await self._moved.wait()
                        current = self._read()
        finally:
            self._waiting -= 1
        return current

    async def aclose(self) -> None:
        """Answer every waiter now (the server is stopping) and stop the watcher."""
        self._closed = True
        self._wake()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    def _ensure_watcher(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name="board change feed")

    async def _watch(self) -> None:
        # None: the first read wakes everyone, so a change between a waiter's own read and
        # this watcher's start is not missed (waiters that see no change wait again).
        last: int | None = None
        while self._waiting and not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._check_every):
                    await self._nudged.wait()
            self._nudged.clear()
            version = self._read()
            if version != last:
                last = version
                self._wake()

    def _wake(self) -> None:
        # Waiters hold the old event; a fresh one is for the next change.
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()
