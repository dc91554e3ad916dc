"""BoardClient on answers a real server will not produce on demand (aioresponses).

Bodies that are HTML or cut short, exact sequences of 429s and 5xx, answers that never
arrive. Everything a real board can do is tested in ``test_api.py`` instead.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp
import pytest
from aioresponses import aioresponses
from pydantic import SecretStr

from taskinfa_worker.client.api import MAX_RATE_LIMITED, BoardClient, Lane
from taskinfa_worker.client.ratelimit import RateLimiter
from taskinfa_worker.errors import (
    ApiError,
    AuthError,
    MalformedResponseError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from taskinfa_worker.metrics import Metrics
from tests.client.virtual_time import ManualClock

BASE = "http://board.test/api"
KEY = "tk_mocked_secret_0123456789"
T = TypeVar("T")


def task_json(**fields: Any) -> dict[str, Any]:
    task = {"id": "task_1", "title": "A task", "status": "todo", "assigned_to": None}
    task.update(fields)
    return task


class _StreamWriterResponse(aiohttp.ClientResponse):
    """A ClientResponse that aioresponses 0.7.9 can build on aiohttp 3.14.

    aiohttp 3.14 made ``stream_writer`` a required argument and aioresponses does not pass
    it yet (pnuckowski/aioresponses#289). A mocked answer has no upload in flight, so all
    the response reads from the writer is an output size of 0.
    """

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


_NEEDS_STREAM_WRITER = "stream_writer" in inspect.signature(aiohttp.ClientResponse).parameters


class _Mocked(aioresponses):  # type: ignore[misc]
    def add(self, url: Any, method: str = "GET", *args: Any, **kwargs: Any) -> None:
        if _NEEDS_STREAM_WRITER:
            kwargs.setdefault("response_class", _StreamWriterResponse)
        super().add(url, method, *args, **kwargs)


@pytest.fixture
def mocked() -> Iterator[aioresponses]:
    with _Mocked() as mock:
        yield mock


@pytest.fixture
async def client(clock: ManualClock, metrics: Metrics) -> AsyncIterator[BoardClient]:
    limiter = RateLimiter(6000, clock=clock, wall_clock=clock.wall, sleep=clock.sleep)
    async with BoardClient(
        BASE,
        SecretStr(KEY),
        metrics=metrics,
        limiter=limiter,
        retry_max_time={Lane.CRITICAL: 0.5, Lane.NORMAL: 0.5, Lane.BACKGROUND: 0.0},
        backoff_factor=0.001,
    ) as made:
        yield made


def counted(metrics: Metrics, endpoint: str, status: str) -> int:
    value = metrics.registry.get_sample_value(
        "taskinfa_api_requests_total", {"endpoint": endpoint, "status": status}
    )
    return int(value or 0)


async def in_virtual_time(clock: ManualClock, limiter: RateLimiter, call: Awaitable[T]) -> T:
    """Run ``call``, moving virtual time whenever it waits in the limiter."""
    task = asyncio.ensure_future(call)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not task.done():
        assert loop.time() < deadline, "the call neither finished nor waited"
        if limiter.waiting:
            clock.fire_next()
        await asyncio.sleep(0.001)
    return task.result()


async def test_html_502_then_success_is_retried(
    client: BoardClient, mocked: aioresponses, metrics: Metrics
) -> None:
    page = "<html><body><h1>502 Bad Gateway</h1>\n<hr>nginx</body></html>"
    mocked.get(f"{BASE}/tasks/task_1", status=502, body=page, content_type="text/html")
    mocked.get(f"{BASE}/tasks/task_1", payload={"task": task_json()})
    task = await client.get_task("task_1")
    assert task is not None
    assert task.id == "task_1"
    assert counted(metrics, "/tasks/{id}", "502") == 1
    assert counted(metrics, "/tasks/{id}", "200") == 1


async def test_html_error_body_gives_a_short_clean_message(
    client: BoardClient, mocked: aioresponses, metrics: Metrics
) -> None:
    page = "<html>\x1b[31m\x00Bad\r\nGateway\x07" + "x" * 5000 + "</html>"
    mocked.post(f"{BASE}/tasks", status=502, body=page, content_type="text/html")
    with pytest.raises(ServerError) as failed:
        await client.create_task("t", "default")
    error = failed.value
    assert error.status == 502
    assert "<html>" in error.message
    assert "Bad Gateway" in error.message
    assert len(error.message) <= 210
    assert not any(ord(char) < 32 or 127 <= ord(char) < 160 for char in error.message)
    # A create is never retried: the board may have made the task.
    assert counted(metrics, "/tasks", "502") == 1


async def test_empty_500_on_a_background_read_is_one_clear_error(
    client: BoardClient, mocked: aioresponses, metrics: Metrics
) -> None:
    mocked.get(f"{BASE}/tasks/next", status=500, body=b"")
    with pytest.raises(ServerError) as failed:
        await client.next_task()
    assert failed.value.status == 500
    assert "empty body" in str(failed.value)
    assert counted(metrics, "/tasks/next", "500") == 1  # background: one try


@pytest.mark.parametrize(
    "body",
    [
        b'{"task": {"id": "task_1", "title": "A ta',  # cut short
        b"<html>OK</html>",  # not JSON
        b"",  # nothing
        b'[{"id": "task_1"}]',  # not an object
        b'{"tasks": []}',  # no "task"
        b'{"task": {"id": "task_1", "title": 5, "status": "todo"}}',  # wrong type
        b'{"task": {"id": "task_1", "title": "t", "status": "todo", "labels": 3}}',
        b'{"task": null}',
    ],
    ids=["truncated", "html", "empty", "array", "missing", "title-int", "labels-int", "null"],
)
async def test_unexpected_success_bodies_are_malformed(
    client: BoardClient, mocked: aioresponses, body: bytes
) -> None:
    mocked.patch(f"{BASE}/tasks/task_1", status=200, body=body)
    with pytest.raises(MalformedResponseError) as failed:
        await client.update_task("task_1", status="review")
    assert failed.value.status == 200
    assert len(str(failed.value)) < 600


async def test_429_seconds_then_429_date_then_503_then_200(
    client: BoardClient, mocked: aioresponses, clock: ManualClock, metrics: Metrics
) -> None:
    url = f"{BASE}/tasks/task_1"
    when = datetime.now(UTC) + timedelta(seconds=5)
    mocked.get(url, status=429, headers={"Retry-After": "1"}, payload={"error": "Too many"})
    mocked.get(url, status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    mocked.get(url, status=503, body="Service Unavailable")
    mocked.get(url, payload={"task": task_json(status="in_progress")})
    started = clock.now

    task = await in_virtual_time(clock, client.limiter, client.get_task("task_1"))

    assert task is not None
    assert task.status == "in_progress"
    assert client.limiter.rate_limited_count == 2
    assert metrics.registry.get_sample_value("taskinfa_api_rate_limited_total") == 2
    # Every 429 was waited out: one second, then until the date (4 to 5 s away).
    assert clock.now - started >= 1 + 3
    waited = metrics.registry.get_sample_value("taskinfa_rate_limit_wait_seconds_total")
    assert waited is not None
    assert waited >= 4
    for status, times in (("429", 2), ("503", 1), ("200", 1)):
        assert counted(metrics, "/tasks/{id}", status) == times


async def test_429_is_repeated_even_for_a_comment_but_a_5xx_is_not(
    client: BoardClient, mocked: aioresponses, clock: ManualClock, metrics: Metrics
) -> None:
    url = f"{BASE}/tasks/task_1/comments"
    comment = {"id": "cmt_1", "task_id": "task_1", "author": "b", "content": "hi"}
    # No Retry-After header: the body's retryAfter is the hint.
    mocked.post(url, status=429, payload={"error": "Too many requests", "retryAfter": 2})
    mocked.post(url, status=201, payload={"comment": comment})
    started = clock.now
    made = await in_virtual_time(
        clock,
        client.limiter,
        client.add_comment("task_1", author="b", content="hi", comment_type="progress"),
    )
    assert made is not None
    assert made.id == "cmt_1"
    assert clock.now - started >= 2

    mocked.post(url, status=503, payload={"error": "down"})
    with pytest.raises(ServerError):
        await in_virtual_time(
            clock,
            client.limiter,
            client.add_comment("task_1", author="b", content="again", comment_type="progress"),
        )
    assert counted(metrics, "/tasks/{id}/comments", "503") == 1


async def test_429_that_does_not_end_becomes_rate_limited_error(
    client: BoardClient, mocked: aioresponses, clock: ManualClock
) -> None:
    for _ in range(MAX_RATE_LIMITED + 1):
        mocked.get(f"{BASE}/workers", status=429, headers={"Retry-After": "1"})
    with pytest.raises(RateLimitedError) as failed:
        await in_virtual_time(clock, client.limiter, client.list_workers())
    assert failed.value.status == 429
    assert client.limiter.rate_limited_count == MAX_RATE_LIMITED + 1


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, {"error": "Invalid API key", "category": "authentication"}),
        (403, "<html>Forbidden</html>"),
    ],
)
async def test_refused_key_names_the_url_never_the_key(
    client: BoardClient, mocked: aioresponses, logs: list[str], status: int, body: Any
) -> None:
    if isinstance(body, dict):
        mocked.get(f"{BASE}/tasks/next", status=status, payload=body)
    else:
        mocked.get(f"{BASE}/tasks/next", status=status, body=body)
    with pytest.raises(AuthError) as refused:
        await client.next_task(lane=Lane.CRITICAL)
    assert f"{BASE}/tasks/next" in str(refused.value)
    assert "refused the API key" in str(refused.value)
    assert KEY not in str(refused.value)
    assert KEY not in repr(client)
    assert not any(KEY in line for line in logs)


async def test_a_key_echoed_by_the_server_is_masked(
    client: BoardClient, mocked: aioresponses
) -> None:
    mocked.get(f"{BASE}/task-lists", status=418, body=f"I am a teapot; you sent {KEY}")
    with pytest.raises(ApiError) as failed:
        await client.list_task_lists()
    assert failed.value.status == 418
    assert KEY not in str(failed.value)
    assert "teapot" in str(failed.value)


async def test_claim_with_lost_answer_is_confirmed_by_reading_back(
    client: BoardClient, mocked: aioresponses
) -> None:
    claim = f"{BASE}/tasks/task_1/claim"
    task = f"{BASE}/tasks/task_1"
    mocked.post(claim, exception=aiohttp.ServerDisconnectedError())
    mocked.get(task, payload={"task": task_json(status="in_progress", assigned_to="bot-1")})
    won = await client.claim("task_1", "bot-1")
    assert won is not None
    assert won.assigned_to == "bot-1"

    mocked.post(claim, status=503, body="")
    mocked.get(task, payload={"task": task_json(status="in_progress", assigned_to="bot-2")})
    assert await client.claim("task_1", "bot-1") is None

    # The claim itself is never sent twice.
    requests = [key for key in mocked.requests if key[0] == "POST"]
    assert sum(len(mocked.requests[key]) for key in requests) == 2


async def test_claim_timeout_then_unreadable_task_raises(
    client: BoardClient, mocked: aioresponses
) -> None:
    mocked.post(f"{BASE}/tasks/task_1/claim", exception=TimeoutError())
    # The read-back is critical and retried; the board stays away for all of it.
    mocked.get(f"{BASE}/tasks/task_1", exception=aiohttp.ClientConnectionError(), repeat=True)
    with pytest.raises(TransportError):
        await client.claim("task_1", "bot-1")
    reads = mocked.requests[("GET", aiohttp.client.URL(f"{BASE}/tasks/task_1"))]
    assert len(reads) >= 2  # retried within the critical budget, then given up


@pytest.mark.parametrize(
    ("status", "kwargs"),
    [
        (404, {"payload": {"error": "Not Found"}}),  # JSON, yet the task exists
        (405, {"body": ""}),
    ],
    ids=["json-404", "405"],
)
async def test_claim_route_missing_falls_back_to_patch(
    client: BoardClient, mocked: aioresponses, status: int, kwargs: dict[str, Any]
) -> None:
    task = f"{BASE}/tasks/task_1"
    mocked.post(f"{BASE}/tasks/task_1/claim", status=status, **kwargs)
    if status == 404:
        mocked.get(task, payload={"task": task_json()})  # tells route from task apart
    mocked.get(task, payload={"task": task_json()})
    mocked.patch(task, payload={"task": task_json(status="in_progress", assigned_to="bot-1")})
    mocked.get(task, payload={"task": task_json(status="in_progress", assigned_to="bot-1")})
    won = await client.claim("task_1", "bot-1")
    assert won is not None
    assert client.claims_atomic is False
    patches = mocked.requests[("PATCH", aiohttp.client.URL(task))]
    assert patches[0].kwargs["json"] == {"status": "in_progress", "assigned_to": "bot-1"}


async def test_heartbeat_405_means_no_route(client: BoardClient, mocked: aioresponses) -> None:
    mocked.post(f"{BASE}/workers/heartbeat", status=405, body="")
    assert await client.heartbeat("bot-1", "idle") is None
    assert client.workers_supported is False
    assert await client.heartbeat("bot-1", "idle") is None  # no request: none registered


async def test_html_404_on_a_task_is_not_read_as_deleted(
    client: BoardClient, mocked: aioresponses
) -> None:
    # A proxy's page or a wrong base URL must not look like "a person deleted the task".
    mocked.get(f"{BASE}/tasks/task_1", status=404, body="<html>Not Found</html>")
    with pytest.raises(NotFoundError):
        await client.get_task("task_1")
    mocked.get(f"{BASE}/tasks/task_1", status=404, payload={"error": "Task not found"})
    assert await client.get_task("task_1") is None


async def test_claim_accepted_with_an_unreadable_body_is_confirmed(
    client: BoardClient, mocked: aioresponses
) -> None:
    mocked.post(f"{BASE}/tasks/task_1/claim", status=200, body='{"success": true, "task": {')
    mocked.get(
        f"{BASE}/tasks/task_1",
        payload={"task": task_json(status="in_progress", assigned_to="bot-1")},
    )
    won = await client.claim("task_1", "bot-1")
    assert won is not None
    assert won.assigned_to == "bot-1"
