"""The shared rate limiter, in virtual time: no test here sleeps on the wall clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from taskinfa_worker.client.ratelimit import (
    DEFAULT_RETRY_AFTER,
    MAX_PAUSE,
    WINDOW_SLACK,
    Lane,
    RateLimiter,
    parse_reset,
    parse_retry_after,
)
from taskinfa_worker.pool.budget import (
    HEARTBEAT_CEILING,
    HEARTBEAT_SHARE,
    IDLE_POLL_SHARE,
    heartbeat_interval,
    idle_poll_interval,
    stretched,
)
from tests.client.virtual_time import WALL_START, ManualClock


def make_limiter(clock: ManualClock, rate: int = 100, window: float = 60.0) -> RateLimiter:
    return RateLimiter(rate, window=window, clock=clock, wall_clock=clock.wall, sleep=clock.sleep)


def test_bucket_is_sized_for_a_sliding_window(clock: ManualClock) -> None:
    limiter = make_limiter(clock, 100)
    assert limiter.capacity == 10
    assert limiter.background_reserve == 3
    # The refill is what is left of the limit after the burst, over the window plus slack.
    assert limiter.rate_per_minute == pytest.approx(90 * 60 / (60 + WINDOW_SLACK))
    assert limiter.tokens == pytest.approx(10)

    tiny = make_limiter(clock, 1)
    assert tiny.capacity == 1
    assert tiny.rate_per_minute > 0


async def test_greedy_callers_never_exceed_the_limit_in_any_sliding_window(
    clock: ManualClock,
) -> None:
    limiter = make_limiter(clock, 100)
    grants: list[float] = []
    stop = False

    async def greedy() -> None:
        while not stop:
            await limiter.acquire(Lane.NORMAL)
            grants.append(clock.now)

    workers = [asyncio.create_task(greedy()) for _ in range(20)]
    await clock.run_until(lambda: clock.now >= 1000.0 + 600)
    stop = True
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)

    # Whatever window the server looks at, even one a second longer (requests delayed on
    # the way), it never holds more than the limit.
    for start in grants:
        in_window = sum(1 for t in grants if start <= t < start + 60 + WINDOW_SLACK)
        assert in_window <= 100
    # And the budget is used, not wasted: over ten minutes nearly the whole limit flowed.
    assert len(grants) >= 10 * 88


async def test_waiters_are_served_by_lane_then_first_come(clock: ManualClock) -> None:
    limiter = make_limiter(clock, 100)
    while limiter.tokens >= 1:
        await limiter.acquire(Lane.CRITICAL)
    order: list[str] = []

    async def take(name: str, lane: Lane) -> None:
        await limiter.acquire(lane)
        order.append(name)

    tasks = []
    for name, lane in [
        ("b1", Lane.BACKGROUND),
        ("n1", Lane.NORMAL),
        ("c1", Lane.CRITICAL),
        ("n2", Lane.NORMAL),
        ("c2", Lane.CRITICAL),
        ("b2", Lane.BACKGROUND),
    ]:
        tasks.append(asyncio.create_task(take(name, lane)))
        await clock.settle()
    await clock.run_until(lambda: len(order) == 6)
    await asyncio.gather(*tasks)
    assert order == ["c1", "c2", "n1", "n2", "b1", "b2"]


async def test_background_leaves_a_reserve_for_the_other_lanes(clock: ManualClock) -> None:
    limiter = make_limiter(clock, 100)
    for _ in range(limiter.capacity - limiter.background_reserve):
        assert await limiter.acquire(Lane.BACKGROUND) == 0.0
    background = asyncio.create_task(limiter.acquire(Lane.BACKGROUND))
    await clock.settle()
    assert not background.done()
    # The reserve is there for critical and normal work, at once.
    for _ in range(limiter.background_reserve):
        assert await limiter.acquire(Lane.CRITICAL) == 0.0
    await clock.run_until(background.done)
    assert background.result() > 0
    assert limiter.total_wait_seconds == pytest.approx(background.result())


async def test_a_cancelled_waiter_neither_loses_nor_leaks_a_token(clock: ManualClock) -> None:
    limiter = make_limiter(clock, 61)  # refill: 55 per 61 s, one token every ~1.11 s
    while limiter.tokens >= 1:
        await limiter.acquire()
    first = asyncio.create_task(limiter.acquire())
    second = asyncio.create_task(limiter.acquire())
    third = asyncio.create_task(limiter.acquire())
    await clock.settle()
    first.cancel()  # the head, asleep on the timer
    await clock.settle()
    third.cancel()  # one in the queue
    await clock.settle()
    assert limiter.waiting == 1
    await clock.run_until(second.done)
    # The second waiter got the first token the bucket produced, not a later one.
    assert second.result() == pytest.approx(61 / 55, rel=1e-3)
    assert limiter.tokens == pytest.approx(0, abs=1e-6)
    assert first.cancelled()
    assert third.cancelled()
    assert limiter.waiting == 0
    # Cancelled waiters add nothing to the wait total.
    assert limiter.total_wait_seconds == pytest.approx(second.result())


async def test_remaining_header_caps_tokens_and_reset_blocks(clock: ManualClock) -> None:
    limiter = make_limiter(clock, 100)
    limiter.observe({"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "2"})
    assert limiter.tokens == pytest.approx(2)

    reset = datetime.fromtimestamp(clock.wall() + 30, UTC).isoformat().replace("+00:00", "Z")
    limiter.observe({"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset})
    assert limiter.tokens == 0
    assert limiter.paused_for() == pytest.approx(30, abs=1e-3)
    waiter = asyncio.create_task(limiter.acquire(Lane.CRITICAL))
    await clock.advance(29.9)
    assert not waiter.done()
    await clock.run_until(waiter.done)
    assert waiter.result() >= 30


async def test_reset_as_epoch_seconds_and_a_lower_advertised_limit(clock: ManualClock) -> None:
    limiter = make_limiter(clock, 100)
    limiter.observe(
        {
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(clock.wall() + 12)),
        }
    )
    assert limiter.limit == 50
    assert limiter.capacity == 5
    assert limiter.paused_for() == pytest.approx(12, abs=1.0)
    # Headers that are missing or garbage change nothing.
    limiter.observe({"X-RateLimit-Remaining": "lots"})
    limiter.observe({})
    assert limiter.limit == 50


def test_reset_far_away_is_the_clocks_disagreeing(clock: ManualClock) -> None:
    limiter = make_limiter(clock, 100)
    # The board's clock runs an hour ahead of ours: still wait at most one window.
    far = datetime.fromtimestamp(clock.wall() + 3600, UTC).isoformat()
    limiter.observe({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": far})
    assert limiter.paused_for() == pytest.approx(60)


async def test_429_pauses_every_caller_and_lowers_the_rate(clock: ManualClock) -> None:
    limiter = make_limiter(clock, 100)
    before = limiter.rate_per_minute
    assert limiter.on_rate_limited(5.0) == 5.0
    assert limiter.rate_limited_count == 1
    assert limiter.rate_per_minute < before
    callers = [asyncio.create_task(limiter.acquire(lane)) for lane in Lane]
    await clock.advance(4.99)
    assert not any(caller.done() for caller in callers)
    await clock.run_until(lambda: all(caller.done() for caller in callers))
    assert all(caller.result() >= 5.0 for caller in callers)

    # Windows without another 429 win the rate back.
    await clock.advance(60 * 5)
    assert limiter.tokens > 0
    assert limiter.rate_per_minute == pytest.approx(before)


def test_429_without_a_hint_and_absurd_hints_are_bounded(clock: ManualClock) -> None:
    limiter = make_limiter(clock, 100)
    assert limiter.on_rate_limited(None) == DEFAULT_RETRY_AFTER
    assert limiter.on_rate_limited(10_000_000.0) == MAX_PAUSE
    assert limiter.paused_for() == pytest.approx(MAX_PAUSE)


def test_parse_retry_after_seconds_and_http_dates() -> None:
    now = WALL_START
    assert parse_retry_after("1", now) == 1.0
    assert parse_retry_after(" 2.5 ", now) == 2.5
    when = datetime.fromtimestamp(now, UTC) + timedelta(seconds=7)
    assert parse_retry_after(format_datetime(when, usegmt=True), now) == pytest.approx(7)
    assert parse_retry_after("-3", now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("", now) is None
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("nan", now) is None


def test_parse_reset_accepts_every_shape() -> None:
    now = WALL_START
    iso = datetime.fromtimestamp(now + 20, UTC)
    assert parse_reset(iso.isoformat(), now) == pytest.approx(20)
    assert parse_reset(iso.strftime("%Y-%m-%dT%H:%M:%S.000Z"), now) == pytest.approx(20)
    assert parse_reset(iso.strftime("%Y-%m-%d %H:%M:%S"), now) == pytest.approx(20)
    assert parse_reset(str(now + 20), now) == pytest.approx(20)
    assert parse_reset(str(int((now + 20) * 1000)), now) == pytest.approx(20)
    assert parse_reset("20", now) == 20.0
    assert parse_reset(str(now - 100), now) == 0.0
    assert parse_reset("tomorrow", now) is None
    assert parse_reset(None, now) is None


def test_stretched_keeps_a_job_inside_its_share_of_the_learned_rate(clock: ManualClock) -> None:
    limiter = make_limiter(clock, 100)
    per_second = limiter.rate_per_minute / 60
    # 20 heartbeats per cycle with a 10 % share need longer than the 5 s base interval.
    assert stretched(5.0, 20, 0.1, limiter) == pytest.approx(20 / (0.1 * per_second))
    assert stretched(60.0, 1, 0.5, limiter) == 60.0
    assert stretched(5.0, 0, 0.5, limiter) == 5.0


def test_invalid_construction() -> None:
    with pytest.raises(ValueError, match="rate_per_minute"):
        RateLimiter(0)
    with pytest.raises(ValueError, match="window"):
        RateLimiter(10, window=0)


class SlidingWindowKey:
    """The board's side of one key: requests counted over a sliding window, as a header."""

    def __init__(self, clock: ManualClock, limit: int = 100, window: float = 60.0) -> None:
        self.clock, self.limit, self.window = clock, limit, window
        self.times: list[float] = []

    def answer(self) -> dict[str, str]:
        now = self.clock()
        self.times.append(now)
        used = sum(1 for t in self.times if t > now - self.window)
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.limit - used),
        }

    def per_minute(self, start: float, end: float) -> float:
        return sum(1 for t in self.times if start <= t < end) * 60.0 / (end - start)


async def idle_replicas(clock: ManualClock, replicas: int, minutes: float) -> tuple[float, float]:
    """Idle processes polling one key with the paced interval: (requests a minute on the key
    over the last half of the run, one process's own share as it sees it at the end)."""
    key = SlidingWindowKey(clock)
    limiters = [make_limiter(clock, 100) for _ in range(replicas)]

    async def poll_forever(limiter: RateLimiter, offset: float) -> None:
        await clock.sleep(offset)
        while True:
            await limiter.acquire(Lane.BACKGROUND)
            limiter.observe(key.answer())
            await clock.sleep(idle_poll_interval(0.5, 60.0, limiter))

    pollers = [
        asyncio.create_task(poll_forever(limiter, 1.7 * i)) for i, limiter in enumerate(limiters)
    ]
    start = clock()
    await clock.advance(minutes * 60)
    for poller in pollers:
        poller.cancel()
    await clock.settle()
    return key.per_minute(start + minutes * 30, clock()), limiters[0].own_share()


async def test_ten_idle_replicas_on_one_key_poll_as_often_together_as_one_alone(
    clock: ManualClock,
) -> None:
    # The board's X-RateLimit-Remaining counts every process on the key; each process
    # takes its part of the idle-poll share by its part of that count.
    alone, alone_share = await idle_replicas(clock, 1, 10)
    together, one_of_ten = await idle_replicas(clock, 10, 10)
    assert alone_share == 1.0
    assert one_of_ten < 0.5  # it knows it is not alone
    expected = make_limiter(clock).rate_per_minute * IDLE_POLL_SHARE
    assert alone == pytest.approx(expected, rel=0.1)
    assert together == pytest.approx(alone, rel=0.35)


def test_without_the_board_s_count_a_process_assumes_it_is_alone(clock: ManualClock) -> None:
    limiter = make_limiter(clock)
    assert limiter.own_share() == 1.0
    limiter.observe({"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "40"})
    assert limiter.own_share() == pytest.approx(1 / 60)  # 60 used, none of them ours
    clock.now += 61  # what the board said is older than a window: no longer known
    assert limiter.own_share() == 1.0


async def test_the_loops_stretch_by_the_share_of_the_key_a_process_has(
    clock: ManualClock,
) -> None:
    # Ten idle replicas on one key each heartbeating as if alone spent 75 of its 100
    # requests a minute; each now takes its part of every loop's share.
    alone = make_limiter(clock)
    shared = make_limiter(clock)
    for _ in range(9):  # nine requests of this process in the window...
        assert await shared.acquire(Lane.NORMAL) == 0
    shared.observe({"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "10"})  # ...of 90
    assert shared.own_share() == pytest.approx(0.1)
    slots = 4
    alone_interval = heartbeat_interval(1.0, 1 + slots, alone)
    assert alone_interval == pytest.approx(
        (1 + slots) / (alone.rate_per_minute / 60 * HEARTBEAT_SHARE)
    )
    assert heartbeat_interval(1.0, 1 + slots, shared) == pytest.approx(10 * alone_interval)
    assert heartbeat_interval(10.0, 64, shared) == HEARTBEAT_CEILING  # never past the ceiling
    assert stretched(5.0, 4, 0.2, shared) == pytest.approx(10 * stretched(5.0, 4, 0.2, alone))
