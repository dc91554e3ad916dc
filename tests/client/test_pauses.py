"""Rate-limit pauses are visible: against the current release's limit (the ``v2`` profile,
with a small limit and virtual time), each pause for the budget and each 429 is one log
line with its length and cause, and ``/metrics`` counts them by cause."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import aiohttp
from pydantic import SecretStr

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.ratelimit import RateLimiter
from taskinfa_worker.metrics import Metrics
from tests.board_support import MakeBoard
from tests.client.virtual_time import ManualClock

T = TypeVar("T")
LIMIT = 5


async def in_virtual_time(clock: ManualClock, limiter: RateLimiter, call: Awaitable[T]) -> T:
    """Run ``call``, moving virtual time only while it is parked in the limiter."""
    task = asyncio.ensure_future(call)
    loop = asyncio.get_running_loop()
    while not task.done():
        deadline = loop.time() + 10
        while limiter.waiting == 0 and not task.done():
            assert loop.time() < deadline, "the call neither finished nor waited"
            await asyncio.sleep(0.001)
        if not task.done():
            assert clock.fire_next(), "the call waits but no timer is pending"
            await asyncio.sleep(0)
    return task.result()


def pauses(metrics: Metrics, cause: str) -> float:
    value = metrics.registry.get_sample_value("taskinfa_rate_limit_pauses_total", {"cause": cause})
    return value or 0.0


async def test_a_used_up_budget_is_one_info_line_and_counted(
    make_board: MakeBoard, clock: ManualClock, metrics: Metrics, logs: list[str]
) -> None:
    board = await make_board(profile="v2", rate_limit=LIMIT, clock=clock.wall)
    limiter = RateLimiter(100, clock=clock, wall_clock=clock.wall, sleep=clock.sleep)
    async with BoardClient(
        board.url, SecretStr(board.api_key), limiter=limiter, metrics=metrics
    ) as client:
        for _ in range(LIMIT + 1):
            await in_virtual_time(clock, limiter, client.next_task())
    budget = [line.strip() for line in logs if "Board request budget used up" in line]
    # The reset is always a minute ahead on this release: the pause is the whole minute.
    assert budget == [
        "Board request budget used up (X-RateLimit-Remaining: 0): pausing board requests "
        "for 60.0 s, until the board's X-RateLimit-Reset"
    ]
    assert pauses(metrics, "board_budget") == 1
    # Learning the board's limit of 5 a minute, the process spaced its own requests: each
    # wait longer than a few seconds is a line too, with the rate it keeps to.
    own = [line for line in logs if line.startswith("Waiting ")]
    assert own
    assert all("at most 5 requests per minute" in line for line in own)
    assert pauses(metrics, "own_budget") == len(own)
    assert pauses(metrics, "429") == 0


async def test_every_429_is_one_warning_line_and_counted(
    make_board: MakeBoard,
    clock: ManualClock,
    metrics: Metrics,
    logs: list[str],
    http: aiohttp.ClientSession,
) -> None:
    board = await make_board(profile="v2", rate_limit=LIMIT, clock=clock.wall)
    # Another process with the same key spends the whole window first.
    for _ in range(LIMIT):
        async with http.get(f"{board.url}/tasks", headers=board.headers) as response:
            assert response.status == 200
    limiter = RateLimiter(100, clock=clock, wall_clock=clock.wall, sleep=clock.sleep)
    async with BoardClient(
        board.url, SecretStr(board.api_key), limiter=limiter, metrics=metrics
    ) as client:
        offer = await in_virtual_time(clock, limiter, client.next_task())
    assert offer.task is None  # answered once the board's window moved on
    refused = [line.strip() for line in logs if line.startswith("Board answered 429")]
    assert len(refused) == 1
    assert refused[0].startswith(
        "Board answered 429 Too Many Requests (Retry-After 60 s): pausing board requests "
        "for 60.0 s, now at most "
    )
    # The used-up budget the 429's headers also show is that same pause, not a second line.
    assert not [line for line in logs if "budget used up" in line]
    assert pauses(metrics, "429") == 1
    assert metrics.registry.get_sample_value("taskinfa_api_rate_limited_total") == 1
    # The wait behind the 429's pause is that pause, not a second line.
    assert not [line for line in logs if line.startswith("Waiting ")]
