"""Every ending and every note survives one fault on the wire.

A proxy of our own (``bench/chaos_proxy.py``) sits between the pool and the local board and
aims one fault at one request: a 5xx before the board acts, a connection dropped after it
acted, a 200 whose body is not JSON (after it acted), or a 429. Each test then asserts the
board's final state: the task ended once, with its note shown once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from bench.chaos_proxy import FaultProxy
from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.models import Comment
from tests.pool.support import Scene, running_pool, wait_for, worker_settings

FAULTS = ["error_before", "drop_after", "garbled_after", "rate_limit"]


def once(fault: str, method: str, path_end: str, needle: bytes) -> Callable[..., str | None]:
    """Aim ``fault`` at the first request that matches; every other request passes."""
    fired = False

    def aim(request_method: str, path: str, body: bytes) -> str | None:
        nonlocal fired
        if fired or request_method != method or not path.endswith(path_end):
            return None
        if needle not in body:
            return None
        fired = True
        return fault

    return aim


@asynccontextmanager
async def through_proxy(board: Any, aim: Callable[..., str | None]) -> AsyncIterator[str]:
    proxy = FaultProxy(board.url, aim=aim)
    try:
        yield await proxy.start()
    finally:
        await proxy.aclose()


async def notes_of(client: BoardClient, task_id: str, kind: str) -> list[Comment]:
    page = await client.list_comments(task_id, limit=100)
    return [c for c in page.comments if c.comment_type == kind]


async def settle(client: BoardClient, task_id: str, status: str) -> Any:
    async def reached() -> bool:
        return (await client.get_task(task_id)).status == status

    await wait_for(reached, what=f"{task_id} to reach {status}")
    return await client.get_task(task_id)


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize(
    ("target", "method", "path_end", "needle"),
    [
        ("ending", "PATCH", "", b'"review"'),
        ("summary", "POST", "/comments", b'"summary"'),
        ("claim", "POST", "/claim", b""),
    ],
)
async def test_a_fault_on_a_success_leaves_one_review_and_one_summary(
    board: Any,
    scene: Scene,
    fault: str,
    target: str,
    method: str,
    path_end: str,
    needle: bytes,
) -> None:
    async with through_proxy(board, once(fault, method, path_end, needle)) as url:
        settings = worker_settings(url, board.api_key, scene)
        async with running_pool(settings) as (pool, client):
            task = await client.create_task("plain work", "default")
            done = await settle(client, task.id, "review")
            await wait_for(lambda: pool.state.completed == 1, what="the pool to count it")
            summaries = await notes_of(client, task.id, "summary")
    assert done.assigned_to == "tester-1"
    assert len(summaries) == 1, [c.content for c in summaries]
    assert len(scene.starts(task.id)) == 1  # run once: nothing was thrown away and redone
    assert pool.state.failed == 0


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize(
    ("target", "method", "path_end", "needle"),
    [
        ("ending", "PATCH", "", b'"error_count"'),
        ("failure note", "POST", "/comments", b'"error"'),
    ],
)
async def test_a_fault_on_a_failure_counts_one_attempt_with_one_note(
    board: Any,
    scene: Scene,
    fault: str,
    target: str,
    method: str,
    path_end: str,
    needle: bytes,
) -> None:
    async with through_proxy(board, once(fault, method, path_end, needle)) as url:
        settings = worker_settings(url, board.api_key, scene, max_attempts=1)
        async with running_pool(settings) as (pool, client):
            task = await client.create_task("always fails [fail]", "default")
            failed = await settle(client, task.id, "blocked")
            await wait_for(lambda: pool.state.failed == 1, what="the pool to count it")
            errors = await notes_of(client, task.id, "error")
    assert failed.error_count == 1
    assert len(errors) == 1, [c.content for c in errors]
    assert errors[0].content.startswith("Failed:")
    assert (failed.completion_notes or "").startswith("Failed:")
