"""The sessions and events calls against the local board over HTTP on 127.0.0.1: the
current release's shape (v2), and the earlier ones that lack the routes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.metrics import Metrics
from tests.board_support import BoardHandle, MakeBoard
from tests.client.test_api import FAST_RETRIES, requests_counted


@pytest.fixture
def make_client(metrics: Metrics) -> Callable[..., BoardClient]:
    def make(board: BoardHandle) -> BoardClient:
        return BoardClient(
            board.url,
            SecretStr(board.api_key),
            rate_limit=100_000,
            metrics=metrics,
            retry_max_time=FAST_RETRIES,
            backoff_factor=0.01,
        )

    return make


async def test_a_session_its_events_and_its_end_on_the_current_release(
    make_board: MakeBoard, make_client: Callable[..., BoardClient]
) -> None:
    board = await make_board(profile="v2")
    task = board.create_task("Fix the login")
    async with make_client(board) as client:
        sessions = client.sessions
        session = await sessions.create(project_id="default", task_id=task["id"], summary="s")
        assert session is not None
        assert sessions.supported is True
        assert await sessions.event(
            "task_claimed", session_id=session.id, task_id=task["id"], message="claimed"
        )
        alive = await sessions.keep_alive(session.id, datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
        assert alive is not None
        assert alive.last_event_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
        assert alive.last_sign_of_life == alive.last_event_at
        active = await sessions.find(status="active")
        assert [s.id for s in active or []] == [session.id]
        ended = await sessions.update(session.id, status="error", summary="x" * 5000)
        assert ended is not None
        assert (ended.status, len(ended.summary or "")) == ("error", 2000)
        assert await sessions.update("ses_gone", status="error") is None
    feed = board.agent_records.list_events(session_id=session.id)
    assert [e["event_type"] for e in feed] == ["task_claimed"]


@pytest.mark.parametrize("profile", ["full", "v1"])
async def test_without_the_routes_the_feature_turns_off_after_one_request(
    make_board: MakeBoard,
    make_client: Callable[..., BoardClient],
    metrics: Metrics,
    logs: list[str],
    profile: str,
) -> None:
    board = await make_board(profile=profile)
    async with make_client(board) as client:
        sessions = client.sessions
        assert await sessions.create(project_id=None, task_id="task_x", summary="s") is None
        assert sessions.supported is False
        assert not await sessions.event("task_claimed", session_id=None, task_id=None, message="")
        assert await sessions.update("ses_x", status="error") is None
        assert await sessions.find(status="active") is None
    assert requests_counted(metrics) == 1
    assert sum("no sessions or events routes" in line for line in logs) == 1
