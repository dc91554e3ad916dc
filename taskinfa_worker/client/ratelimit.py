"""The one rate limiter every board request of the process goes through.

The board allows ``limit`` requests per API key in a *sliding* 60 s window. A plain token
bucket of capacity B refilling at ``limit`` per minute could send B + limit requests in one
window, so the bucket here keeps a small burst (10 % of the limit) and refills only the
rest, ``(limit - B)`` per window. Stretched by one second of slack for the time a request
spends between leaving the bucket and reaching the server, a single process at the board's
own limit never sees a 429.

Other processes may share the key, so the limiter also listens to the board: it never holds
more tokens than ``X-RateLimit-Remaining`` says are left, waits for ``X-RateLimit-Reset``
when none are, and on a 429 pauses every caller until ``Retry-After`` has passed and lowers
its own rate for a while (it learns that the budget is shared).

Every pause is visible: each 429 is one WARNING line, and a pause longer than
``LONG_PAUSE`` for the board's budget (``X-RateLimit-Remaining: 0`` until its reset) or for
this process's own share (``RATE_LIMIT``) one INFO line, each with its length and cause;
``on_pause`` (the transport wires it to ``/metrics``) hears every one of them.

Waiters are served strictly by lane (critical, normal, background), then first come first
served. Background requests leave a few tokens for the other lanes, so a heartbeat never
delays the request that finishes a task.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import IntEnum, StrEnum
from typing import Any, Final

from loguru import logger

WINDOW: Final = 60.0
# Seconds a request may take from leaving the bucket to being counted by the server. The
# refill is spread over window + slack, so jitter on the way cannot squeeze one window's
# worth of requests into less than the server's window.
WINDOW_SLACK: Final = 1.0
BURST_SHARE: Final = 0.1
# Share of the burst that background requests leave for the other lanes.
BACKGROUND_RESERVE_SHARE: Final = 0.3
# Pause after a 429 that says nothing about when to come back.
DEFAULT_RETRY_AFTER: Final = 10.0
# Longest pause any header can impose; a broken clock or header must not stop the worker.
MAX_PAUSE: Final = 600.0
# After a 429 the rate drops to this share of what it was, never below MIN_FACTOR of the
# limit, and climbs back by RECOVERY_STEP per window without another 429.
DECREASE: Final = 0.7
MIN_FACTOR: Final = 0.1
RECOVERY_STEP: Final = 0.1
# A wait longer than this is a pause a person should see in the log (and metrics count).
LONG_PAUSE: Final = 5.0
_MIN_WAIT: Final = 0.001
_EPS: Final = 1e-9


class Lane(IntEnum):
    """Request priority inside the shared rate budget (lower value goes first)."""

    CRITICAL = 0  # finishing, failing, releasing a task
    NORMAL = 1  # claims, comments, reads needed for work
    BACKGROUND = 2  # heartbeats, cancellation checks, idle polls


Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class PauseCause(StrEnum):
    """Why board requests paused (the ``cause`` label of the pause metric)."""

    RATE_LIMITED = "429"  # the board refused a request
    BOARD_BUDGET = "board_budget"  # the board said the key's window is used up
    OWN_BUDGET = "own_budget"  # this process's RATE_LIMIT share is spent


OnPause = Callable[[PauseCause, float], None]


@dataclass(order=True)
class _Waiter:
    lane: int
    seq: int


class RateLimiter:
    """A token bucket shared by every caller, tuned so a sliding-window server never says 429.

    ``clock`` (monotonic seconds), ``wall_clock`` (epoch seconds, for reset timestamps) and
    ``sleep`` are injectable so tests run in virtual time.
    """

    def __init__(
        self,
        rate_per_minute: int = 100,
        *,
        window: float = WINDOW,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        sleep: Sleep = asyncio.sleep,
        on_pause: OnPause | None = None,
    ) -> None:
        if rate_per_minute < 1:
            raise ValueError("rate_per_minute must be at least 1")
        if window <= 0:
            raise ValueError("window must be positive")
        self._configured = rate_per_minute
        self._window = window
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self.on_pause = on_pause
        """Told of every pause that is logged: its cause and its length in seconds."""
        self._server_limit: int | None = None
        self._factor = 1.0
        self._factor_changed = clock()
        self._limit = rate_per_minute
        self._capacity = 1
        self._refill_per_second = 0.0
        self._reserve = 0
        self._tokens = 0.0
        self._apply_limit()
        self._tokens = float(self._capacity)
        self._last = clock()
        self._blocked_until = -math.inf
        self._queue: list[_Waiter] = []
        self._seq = itertools.count()
        self._changed = asyncio.Event()
        self.rate_limited_count = 0
        """How many 429 answers were reported through ``on_rate_limited``."""
        self.total_wait_seconds = 0.0
        """Seconds callers spent in ``acquire`` altogether."""
        # When this process's requests of the last window left, and what the board last
        # said the key had used of its window (when, and how many): together, the share
        # of the key's traffic that is ours (``own_share``).
        self._sent: collections.deque[float] = collections.deque()
        self._key_used: tuple[float, int] | None = None

    # --- what the pool reads ------------------------------------------------------------
    @property
    def limit(self) -> int:
        """Requests per window this process currently allows itself."""
        return self._limit

    @property
    def rate_per_minute(self) -> float:
        """Sustained requests per minute: the learned limit minus the burst, slack included.

        This is what the pool can count on over time; it drops after 429s and when the board
        advertises a lower ``X-RateLimit-Limit`` than configured.
        """
        return self._refill_per_second * 60.0

    @property
    def capacity(self) -> int:
        """Burst size: tokens the bucket holds when full."""
        return self._capacity

    @property
    def background_reserve(self) -> int:
        """Tokens background requests leave for the critical and normal lanes."""
        return self._reserve

    @property
    def tokens(self) -> float:
        """Tokens available now (fractional while refilling)."""
        self._refill(self._clock())
        return self._tokens

    @property
    def waiting(self) -> int:
        """Callers waiting in ``acquire``."""
        return len(self._queue)

    def own_share(self) -> float:
        """The share of the key's recent requests that are this process's (0 < share ≤ 1).

        From the board's ``X-RateLimit-Remaining`` (the key's window: every process on the
        key) against this process's own count over the same window. 1 where the board says
        nothing, or said it more than a window ago: alone, as far as anyone can tell.
        """
        if self._key_used is None:
            return 1.0
        at, used = self._key_used
        if self._clock() - at > self._window:
            return 1.0
        own = self._sent_between(at - self._window, at)
        if used <= own or used <= 0:
            return 1.0
        return max(own, 1) / used

    def _sent_between(self, start: float, end: float) -> int:
        return bisect.bisect_right(self._sent, end) - bisect.bisect_right(self._sent, start)

    def paused_for(self) -> float:
        """Seconds until requests may flow again after a 429 or an exhausted budget."""
        return max(0.0, self._blocked_until - self._clock())

    # --- taking tokens ------------------------------------------------------------------
    async def acquire(self, lane: Lane = Lane.NORMAL) -> float:
        """Wait for a token in ``lane``; returns the seconds waited.

        Cancel-safe: a token is taken only by the waiter that returns, in the same step, so
        a cancelled waiter neither loses nor leaks one, and the next waiter is woken.
        """
        start = self._clock()
        if (not self._queue or self._queue[0].lane > lane) and self._try_take(lane, start):
            return 0.0
        waiter = _Waiter(int(lane), next(self._seq))
        bisect.insort(self._queue, waiter)
        try:
            while True:
                now = self._clock()
                changed = self._changed
                if self._queue[0] is waiter:
                    if self._try_take(lane, now):
                        self._queue.pop(0)
                        self._notify()
                        waited = max(0.0, now - start)
                        self.total_wait_seconds += waited
                        return waited
                    # Only the head sleeps on time; the others wait for it to move on.
                    delay = self._delay(lane, now)
                    if delay >= LONG_PAUSE and now >= self._blocked_until:
                        # A block was logged where it began; this is the bucket's own wait.
                        self._paused(
                            PauseCause.OWN_BUDGET,
                            delay,
                            "Waiting {:.1f} s for this process's board request budget "
                            "(at most {} requests per minute, {} waiting)",
                            delay,
                            self._limit,
                            len(self._queue),
                        )
                    await self._sleep(delay)
                else:
                    await changed.wait()
        except BaseException:
            was_head = bool(self._queue) and self._queue[0] is waiter
            if waiter in self._queue:
                self._queue.remove(waiter)
            if was_head:
                self._notify()
            raise

    # --- what the board said ------------------------------------------------------------
    def observe(self, headers: Mapping[str, str], *, refused: bool = False) -> None:
        """Learn from ``X-RateLimit-*`` headers of any answer (missing headers are fine).

        ``refused``: the answer is a 429, whose own line (``on_rate_limited``) tells the
        pause; the used-up budget it also shows is not logged a second time.
        """
        now = self._clock()
        limit = _int_header(headers, "X-RateLimit-Limit")
        if limit is not None and limit > 0 and limit != self._server_limit:
            self._server_limit = limit
            self._refill(now)
            self._apply_limit()
        remaining = _int_header(headers, "X-RateLimit-Remaining")
        if remaining is None:
            return
        key_limit = self._server_limit if self._server_limit is not None else self._configured
        self._key_used = (now, max(0, key_limit - remaining))
        self._refill(now)
        # Other processes may spend the same key: never count on more than the board has.
        self._tokens = min(self._tokens, float(max(0, remaining)))
        if remaining <= 0:
            reset_in = parse_reset(_header(headers, "X-RateLimit-Reset"), self._wall_clock())
            if reset_in is not None and reset_in > 0:
                # A window frees within one window length; more than that is the two
                # clocks disagreeing, which must not stall the worker.
                pause = min(reset_in, self._window)
                extends = now + pause > self._blocked_until + 1.0
                self._block(now + pause)
                if extends and pause >= LONG_PAUSE and not refused:
                    self._paused(
                        PauseCause.BOARD_BUDGET,
                        pause,
                        "Board request budget used up (X-RateLimit-Remaining: 0): pausing "
                        "board requests for {:.1f} s, until the board's X-RateLimit-Reset",
                        pause,
                    )

    def on_rate_limited(self, retry_after: float | None) -> float:
        """A 429 arrived: pause every caller for ``retry_after`` seconds; returns the pause."""
        now = self._clock()
        self.rate_limited_count += 1
        pause = DEFAULT_RETRY_AFTER if retry_after is None else retry_after
        pause = min(max(pause, 0.0), MAX_PAUSE)
        self._refill(now)
        self._factor = max(MIN_FACTOR, self._factor * DECREASE)
        self._factor_changed = now
        self._apply_limit()
        self._block(now + pause)
        # Every 429 is logged, even one that lands inside a pause already running: each is
        # a request the board refused, and a second one means the key is shared or the
        # pause was too short.
        self._paused(
            PauseCause.RATE_LIMITED,
            pause,
            "Board answered 429 Too Many Requests ({}): pausing board requests for {:.1f} s, "
            "now at most {} requests per minute",
            "no Retry-After" if retry_after is None else f"Retry-After {retry_after:g} s",
            pause,
            self._limit,
            level="WARNING",
        )
        return pause

    def _paused(
        self, cause: PauseCause, seconds: float, message: str, *args: Any, level: str = "INFO"
    ) -> None:
        logger.log(level, message, *args)
        if self.on_pause is not None:
            self.on_pause(cause, seconds)

    # --- internals ----------------------------------------------------------------------
    def _apply_limit(self) -> None:
        base = self._configured
        if self._server_limit is not None:
            base = min(base, self._server_limit)
        limit = max(1, math.floor(base * self._factor + _EPS))
        self._limit = limit
        # At least one token, and at least one request per window left for the refill.
        capacity = max(1, min(limit - 1, round(limit * BURST_SHARE)))
        refill = max(limit - capacity, 1)
        self._capacity = capacity
        self._refill_per_second = refill / (self._window + WINDOW_SLACK)
        self._reserve = math.floor(capacity * BACKGROUND_RESERVE_SHARE)
        self._tokens = min(self._tokens, float(capacity))

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(
                float(self._capacity), self._tokens + (now - self._last) * self._refill_per_second
            )
            self._last = now
        if self._factor < 1.0 and now - self._factor_changed >= self._window:
            # A whole window without a 429: win back some of the rate given up.
            steps = math.floor((now - self._factor_changed) / self._window)
            self._factor = min(1.0, self._factor + RECOVERY_STEP * steps)
            self._factor_changed = now
            self._apply_limit()

    def _block(self, until: float) -> None:
        self._blocked_until = max(self._blocked_until, until)
        # Nothing accrues while blocked: the bucket restarts empty, not with a burst that
        # would run straight into the board's still-full window.
        self._tokens = 0.0
        self._last = max(self._last, self._blocked_until)

    def _needed(self, lane: Lane) -> float:
        return 1.0 + (self._reserve if lane is Lane.BACKGROUND else 0)

    def _try_take(self, lane: Lane, now: float) -> bool:
        self._refill(now)
        if now < self._blocked_until:
            return False
        if self._tokens + _EPS < self._needed(lane):
            return False
        self._tokens -= 1.0
        self._sent.append(now)
        while self._sent and self._sent[0] < now - 2 * self._window:
            self._sent.popleft()
        return True

    def _delay(self, lane: Lane, now: float) -> float:
        start = max(now, self._last, self._blocked_until)
        missing = max(0.0, self._needed(lane) - self._tokens)
        return max(start + missing / self._refill_per_second - now, _MIN_WAIT)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in headers.items():
            if key.lower() == lowered:
                return candidate
    return value


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    value = _header(headers, name)
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return math.floor(number) if math.isfinite(number) else None


def _clamp(seconds: float) -> float | None:
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_PAUSE)


def parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return _clamp(float(text))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _clamp(when.timestamp() - now_wall)


def parse_reset(value: str | None, now_wall: float) -> float | None:
    """Seconds until ``X-RateLimit-Reset``.

    Real servers send an ISO timestamp, the docs say epoch seconds; some servers send
    epoch milliseconds or seconds from now. All are accepted.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if number > 1e12:  # epoch milliseconds
            return _clamp(number / 1000.0 - now_wall)
        if number > 1e9:  # epoch seconds
            return _clamp(number - now_wall)
        return _clamp(number)  # seconds from now
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return _clamp(when.timestamp() - now_wall)
