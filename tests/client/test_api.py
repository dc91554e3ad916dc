"""BoardClient against the real local board over HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
from pydantic import SecretStr

from taskinfa_worker.client.api import MAX_NOTES, BoardClient, Lane
from taskinfa_worker.client.models import Task, TaskStatus
from taskinfa_worker.client.ratelimit import RateLimiter
from taskinfa_worker.errors import (
    AuthError,
    BadRequestError,
    NotFoundError,
    TransportError,
)
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.settings import Settings
from tests.board_support import BoardHandle, MakeBoard
from tests.client.virtual_time import ManualClock

FAST_RETRIES = {Lane.CRITICAL: 2.0, Lane.NORMAL: 2.0, Lane.BACKGROUND: 0.0}


def requests_counted(
    metrics: Metrics, endpoint: str | None = None, status: str | None = None
) -> int:
    """Requests the client counted, optionally for one endpoint template and status."""
    total = 0.0
    for metric in metrics.api_requests.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_total"):
                continue
            if endpoint is not None and sample.labels["endpoint"] != endpoint:
                continue
            if status is not None and sample.labels["status"] != status:
                continue
            total += sample.value
    return int(total)


def endpoints_counted(metrics: Metrics) -> set[str]:
    return {
        sample.labels["endpoint"]
        for metric in metrics.api_requests.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


@pytest.fixture
def make_client(metrics: Metrics) -> Callable[..., BoardClient]:
    """BoardClients with a generous local rate and short retry budgets (close them)."""

    def make(board: BoardHandle, api_key: str | None = None, **options: Any) -> BoardClient:
        options.setdefault("rate_limit", 100_000)
        options.setdefault("metrics", metrics)
        options.setdefault("retry_max_time", FAST_RETRIES)
        options.setdefault("backoff_factor", 0.01)
        return BoardClient(board.url, SecretStr(api_key or board.api_key), **options)

    return make


@pytest.fixture
async def client(
    board: BoardHandle, make_client: Callable[..., BoardClient]
) -> AsyncIterator[BoardClient]:
    async with make_client(board) as made:
        yield made


async def test_every_endpoint(client: BoardClient, metrics: Metrics) -> None:
    project = await client.create_task_list("Client Tests", repository_url="https://x.test/r.git")
    assert project.repository_url == "https://x.test/r.git"
    assert project.id in {p.id for p in await client.list_task_lists()}
    assert (await client.get_task_list(project.id)).name == "Client Tests"

    low = await client.create_task("low one", project.id, priority="low")
    urgent = await client.create_task("urgent one", project.id, priority="urgent", labels=["x"])
    assert urgent.labels == ["x"]

    found = await client.next_task(project.id)
    assert found.task is not None
    assert found.task.id == urgent.id
    assert found.project is not None
    assert found.project.id == project.id

    claimed = await client.claim(urgent.id, "bot-1")
    assert claimed is not None
    assert (claimed.status, claimed.assigned_to) == (TaskStatus.IN_PROGRESS, "bot-1")
    assert client.claims_atomic is True
    assert (await client.next_task(project.id)).task == (await client.get_task(low.id))

    updated = await client.update_task(
        urgent.id, status=TaskStatus.REVIEW, completion_notes="done", files_changed=["a.py"]
    )
    assert (updated.status, updated.completion_notes, updated.files_changed) == (
        "review",
        "done",
        ["a.py"],
    )
    released = await client.update_task(urgent.id, assigned_to=None, status=TaskStatus.TODO)
    assert released.assigned_to is None

    page = await client.list_tasks(status="todo", task_list_id=project.id, priority="low")
    assert [task.id for task in page.tasks] == [low.id]
    assert page.total == 1
    assert (await client.list_tasks(limit=1)).total >= 2

    comment = await client.add_comment(
        urgent.id, author="bot-1", content="working", comment_type="progress", loop_number=2
    )
    assert comment is not None
    assert (comment.content, comment.loop_number, comment.author_type) == ("working", 2, "bot")
    await client.add_comment(urgent.id, author="bot-1", content="second", comment_type="summary")
    comments = await client.list_comments(urgent.id, limit=1)
    assert comments.total == 2
    assert [c.content for c in comments.comments] == ["second"]
    assert (await client.list_comments(urgent.id, limit=1, offset=1)).comments[0].id == comment.id

    beat = await client.heartbeat("bot-1", "working", urgent.id)
    assert beat is not None
    assert beat.worker is not None
    assert (beat.worker.name, beat.worker.current_task_id) == ("bot-1", urgent.id)
    workers = await client.list_workers()
    assert workers is not None
    assert "bot-1" in {worker.name for worker in workers.workers}

    await client.delete_task(low.id)
    assert await client.get_task(low.id) is None
    await client.delete_task(low.id)  # deleting twice is fine: it is gone either way

    # Metrics name endpoint templates, never raw ids.
    assert endpoints_counted(metrics) == {
        "/task-lists",
        "/task-lists/{id}",
        "/tasks",
        "/tasks/next",
        "/tasks/{id}",
        "/tasks/{id}/claim",
        "/tasks/{id}/comments",
        "/workers/heartbeat",
        "/workers",
    }
    assert requests_counted(metrics, "/tasks/{id}/claim", "200") == 1
    assert requests_counted(metrics, "/tasks/{id}", "404") == 2  # the read and the 2nd delete


async def test_empty_queue_and_board_errors(client: BoardClient, board: BoardHandle) -> None:
    empty = await client.next_task()
    assert (empty.task, empty.project) == (None, None)

    task = Task.model_validate(board.create_task("t"))
    with pytest.raises(BadRequestError) as bad:
        await client.update_task(task.id, status="sideways")
    assert bad.value.status == 400
    with pytest.raises(NotFoundError):
        await client.get_task_list("no-such-list")
    with pytest.raises(NotFoundError):
        await client.update_task("task_missing", status="todo")
    # A claim of a task that is not there is a lost race, not an error.
    assert await client.claim("task_missing", "bot-1") is None
    # Ids are quoted: one cannot reach another route.
    assert await client.get_task("../tasks/next") is None
    await client.delete_task(task.id)
    with pytest.raises(NotFoundError):
        await client.add_comment(task.id, author="b", content="x", comment_type="progress")


async def test_refused_key_is_fatal_and_never_shown(
    board: BoardHandle, make_client: Callable[..., BoardClient], logs: list[str]
) -> None:
    wrong = "tk_wrong_key_0123456789abcdef"
    async with make_client(board, api_key=wrong) as client:
        for call in (client.next_task(), client.get_task("task_x"), client.claim("task_x", "b")):
            with pytest.raises(AuthError) as refused:
                await call
            message = str(refused.value)
            assert board.url in message
            assert "refused the API key" in message
            assert wrong not in message
            assert wrong not in repr(refused.value)
    assert logs, "expected the per-request debug lines"
    assert not any(wrong in line for line in logs)
    assert not any(board.api_key in line for line in logs)


async def test_claim_race_has_exactly_one_winner(client: BoardClient, board: BoardHandle) -> None:
    task = Task.model_validate(board.create_task("contested"))
    results = await asyncio.gather(*(client.claim(task.id, f"bot-{i}") for i in range(50)))
    winners = [result for result in results if result is not None]
    assert len(winners) == 1
    assert results.count(None) == 49
    assert board.store.get_task(task.id)["assigned_to"] == winners[0].assigned_to


async def test_claim_without_claim_route_patches_and_reads_back(
    make_board: MakeBoard,
    make_client: Callable[..., BoardClient],
    metrics: Metrics,
    logs: list[str],
) -> None:
    board = await make_board(claim_route=False)
    first = Task.model_validate(board.create_task("one"))
    second = Task.model_validate(board.create_task("two"))
    async with make_client(board) as client:
        claimed = await client.claim(first.id, "bot-1")
        assert claimed is not None
        assert (claimed.status, claimed.assigned_to) == ("in_progress", "bot-1")
        assert client.claims_atomic is False
        assert await client.claim(first.id, "bot-2") is None  # taken: no PATCH at all
        assert await client.claim(second.id, "bot-2") is not None
        assert await client.claim("task_missing", "bot-2") is None
    assert board.store.get_task(first.id)["assigned_to"] == "bot-1"
    # The missing route was met once, then not asked again.
    assert requests_counted(metrics, "/tasks/{id}/claim") == 1
    warnings = [line for line in logs if "NOT atomic" in line]
    assert len(warnings) == 1


async def test_board_without_heartbeat_route(
    make_board: MakeBoard,
    make_client: Callable[..., BoardClient],
    metrics: Metrics,
    logs: list[str],
) -> None:
    board = await make_board(heartbeat_route=False)
    async with make_client(board) as client:
        assert await client.heartbeat("bot-1", "idle") is None
        assert await client.heartbeat("bot-1", "working", "task_x") is None
        assert await client.list_workers() is None
        assert client.workers_supported is False
    assert requests_counted(metrics, "/workers/heartbeat") == 1
    assert requests_counted(metrics, "/workers") == 0
    assert len([line for line in logs if "no /workers routes: no heartbeats" in line]) == 1


async def test_board_without_comments_route_writes_completion_notes(
    make_board: MakeBoard,
    make_client: Callable[..., BoardClient],
    metrics: Metrics,
    logs: list[str],
) -> None:
    board = await make_board(comments_route=False)
    task = Task.model_validate(board.create_task("quiet"))
    async with make_client(board) as client:
        result = await client.add_comment(
            task.id, author="bot-1", content="step 1 done", comment_type="progress"
        )
        assert result is None
        assert client.comments_supported is False
        notes = board.store.get_task(task.id)["completion_notes"]
        assert "step 1 done" in notes
        assert "progress" in notes

        await client.add_comment(
            task.id, author="bot-1", content="y" * 50_000, comment_type="summary"
        )
        notes = board.store.get_task(task.id)["completion_notes"]
        assert notes.startswith("[summary] bot-1: yyy")
        assert len(notes) == MAX_NOTES

        assert (await client.list_comments(task.id)).comments == []
    assert requests_counted(metrics, "/tasks/{id}/comments") == 1
    assert len([line for line in logs if "no comments route" in line]) == 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_no_answer_is_retried_only_where_safe(metrics: Metrics) -> None:
    url = f"http://127.0.0.1:{_free_port()}/api"  # nothing listens there
    async with BoardClient(
        url,
        SecretStr("tk_test_nobody_listens"),
        metrics=metrics,
        rate_limit=100_000,
        retry_max_time={Lane.NORMAL: 0.3, Lane.BACKGROUND: 0},
        backoff_factor=0.01,
    ) as client:
        with pytest.raises(TransportError):
            await client.get_task("task_1")  # NORMAL: retried within its budget
        assert requests_counted(metrics, "/tasks/{id}", "0") >= 2
        with pytest.raises(TransportError):
            await client.create_task("t", "default")  # never retried
        assert requests_counted(metrics, "/tasks", "0") == 1
        with pytest.raises(TransportError):
            await client.next_task()  # BACKGROUND: one try
        assert requests_counted(metrics, "/tasks/next", "0") == 1


async def test_a_board_that_never_answers_times_out(metrics: Metrics) -> None:
    hung_up = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # reads the request, answers nothing, until the client hangs up
        finally:
            writer.close()
            await writer.wait_closed()
            hung_up.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with BoardClient(
            f"http://127.0.0.1:{port}/api",
            SecretStr("tk_test_silent_board"),
            request_timeout=0.2,
            metrics=metrics,
        ) as client:
            with pytest.raises(TransportError, match="no answer"):
                await client.next_task()
        assert requests_counted(metrics, "/tasks/next", "0") == 1
        await asyncio.wait_for(hung_up.wait(), 10)
    finally:
        server.close()
        await server.wait_closed()


async def test_from_settings(board: BoardHandle, metrics: Metrics) -> None:
    settings = Settings(
        _env_file=None,
        taskinfa_api_url=board.url + "/",
        taskinfa_api_key=board.api_key,
        rate_limit=42,
        request_timeout=7,
    )
    async with BoardClient.from_settings(settings, metrics) as client:
        assert client.base_url == board.url
        assert client.limiter.limit == 42
        assert (await client.next_task()).task is None
        assert board.api_key not in repr(client)
    assert requests_counted(metrics, "/tasks/next", "200") == 1


async def test_closed_client_refuses_requests(board: BoardHandle) -> None:
    client = BoardClient(board.url, SecretStr(board.api_key))
    await client.next_task()
    await client.aclose()
    await client.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await client.next_task()


async def _drive(clock: ManualClock, limiter: RateLimiter, active: Callable[[], int]) -> None:
    """Advance virtual time only when every caller is parked in the limiter.

    Then no request is on the wire, so the board (same virtual clock) sees each request at
    the instant the limiter let it go.
    """
    while active() > 0:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while limiter.waiting < active():
            assert loop.time() < deadline, "callers neither finished nor waited"
            await asyncio.sleep(0.001)
            if active() == 0:
                return
        assert clock.fire_next(), "callers wait but no timer is pending"
        await asyncio.sleep(0)


class DeafLimiter(RateLimiter):
    """A limiter that ignores the board's rate-limit headers: only its own bucket counts."""

    def observe(self, headers: Mapping[str, str], *, refused: bool = False) -> None:
        return None


@pytest.mark.parametrize(
    ("client_rate", "limiter_class", "expect_429"),
    [
        (60, RateLimiter, False),
        (60, DeafLimiter, False),  # the bucket alone suffices at the board's rate
        (90, RateLimiter, False),  # configured too fast: the board's headers slow it
        (90, DeafLimiter, True),  # control: the board does refuse a client too fast
    ],
    ids=["same-rate", "same-rate-bucket-only", "board-feedback", "control-too-fast"],
)
async def test_limiter_keeps_twenty_callers_inside_the_boards_sliding_window(
    make_board: MakeBoard,
    metrics: Metrics,
    client_rate: int,
    limiter_class: type[RateLimiter],
    expect_429: bool,
) -> None:
    clock = ManualClock()
    board = await make_board(rate_limit=60, clock=clock.wall)
    limiter = limiter_class(client_rate, clock=clock, wall_clock=clock.wall, sleep=clock.sleep)
    total = 150
    issued = 0
    running = 20
    failures: list[BaseException] = []

    async with BoardClient(
        board.url, SecretStr(board.api_key), limiter=limiter, metrics=metrics
    ) as client:

        async def caller(number: int) -> None:
            nonlocal issued, running
            lane = list(Lane)[number % 3]
            try:
                while issued < total:
                    issued += 1
                    try:
                        await client.next_task(lane=lane)
                    except Exception as exc:
                        failures.append(exc)
            finally:
                running -= 1

        callers = [asyncio.create_task(caller(n)) for n in range(20)]
        await _drive(clock, limiter, lambda: running)
        await asyncio.gather(*callers)

    rate_limited = requests_counted(metrics, "/tasks/next", "429")
    assert requests_counted(metrics, "/tasks/next", "200") + len(failures) == total
    # Several windows of virtual time went by, so the sliding window was really exercised.
    assert clock.now - 1000.0 > 120
    if expect_429:
        assert rate_limited > 0
        assert limiter.rate_limited_count == rate_limited
    else:
        assert rate_limited == 0
        if limiter_class is RateLimiter:
            assert limiter.limit == 60  # learned from X-RateLimit-Limit
        assert limiter.rate_limited_count == 0
        assert failures == []
        assert metrics.registry.get_sample_value("taskinfa_api_rate_limited_total") == 0
