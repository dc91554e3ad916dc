"""The board's per-key sliding-window rate limit (100 requests per 60 s on real servers).

Each key keeps the times of its admitted requests within the window. A request is admitted
while fewer than ``limit`` remain in it; a refused request is not recorded (as on the real
server, which deletes the entry it just inserted), so a client that waits as told gets in.
``retry_after`` is the true time until the oldest admitted request leaves the window,
unless the limiter is told to say what the current release says: a reset one full window
ahead of now, whatever the window holds (``reset_a_window_ahead``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from taskinfa_worker.board.store import Clock


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether one request may pass, and what the rate-limit headers say."""

    allowed: bool
    limit: int
    remaining: int
    reset_at: float
    """Epoch seconds when the oldest request in the window leaves it (a slot frees)."""
    retry_after: int
    """Whole seconds to wait before retrying (at least 1); 0 when allowed."""

    def headers(self) -> dict[str, str]:
        """``X-RateLimit-*``; the reset is an ISO timestamp, as the real server sends it."""
        reset = datetime.fromtimestamp(self.reset_at, UTC).isoformat(timespec="milliseconds")
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": reset.replace("+00:00", "Z"),
        }


class SlidingWindowLimiter:
    """At most ``limit`` requests per key in any ``window`` seconds."""

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        clock: Clock = time.time,
        *,
        reset_a_window_ahead: bool = False,
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.window = window
        self._clock = clock
        self._reset_a_window_ahead = reset_a_window_ahead
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str) -> Decision:
        """Count one request for ``key`` if it fits in the window."""
        now = self._clock()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            reset_at = self._reset_at(hits[0], now)
            wait = max(1, math.ceil(reset_at - now))
            return Decision(False, self.limit, 0, reset_at, wait)
        hits.append(now)
        return Decision(True, self.limit, self.limit - len(hits), self._reset_at(hits[0], now), 0)

    def _reset_at(self, oldest: float, now: float) -> float:
        return now + self.window if self._reset_a_window_ahead else oldest + self.window
