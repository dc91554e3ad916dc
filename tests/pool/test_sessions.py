"""Runs as sessions of the current release's dashboard (v2): each run registers a session,
its events go out in order, and its end carries the outcome. Boards without the routes
(full, v1) run tasks as before."""

from __future__ import annotations

from typing import Any

import pytest

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.ratelimit import RateLimiter
from taskinfa_worker.pool import budget
from taskinfa_worker.settings import Settings
from tests.board_support import BoardHandle, MakeBoard
from tests.pool.support import Scene, running_pool, wait_for, worker_settings
from tests.pool.test_pool import add_tasks


def session_of(board: BoardHandle, task_id: str) -> dict[str, Any]:
    (session,) = [s for s in board.agent_records.list_sessions() if s["current_task_id"] == task_id]
    return session


def events_of(board: BoardHandle, session_id: str) -> list[str]:
    """The session's event types, oldest first, without the progress in between."""
    feed = board.agent_records.list_events(session_id=session_id, limit=100)
    return [e["event_type"] for e in reversed(feed) if e["event_type"] != "task_progress"]


async def test_a_run_is_a_session_with_its_events_and_its_outcome(
    make_board: MakeBoard, scene: Scene
) -> None:
    board = await make_board(profile="v2")
    settings = worker_settings(board.url, board.api_key, scene, concurrency=2, max_attempts=1)
    async with BoardClient.from_settings(settings) as client:
        (done,) = await add_tasks(client, 1, title="plain")
        (broken,) = await add_tasks(client, 1, title="broken [fail]")
        async with running_pool(settings) as (pool, _):
            await wait_for(
                lambda: pool.state.completed == 1 and pool.state.failed == 1, what="two endings"
            )
            await wait_for(
                lambda: not board.agent_records.list_sessions(status="active"),
                what="both sessions ended",
            )
    finished = session_of(board, done.id)
    assert (finished["status"], finished["project_id"]) == ("completed", "default")
    assert finished["summary"].endswith(f"ran {done.id}, completed; the task is in review.")
    # Shorter than a progress interval: the session and its outcome say it all.
    assert events_of(board, finished["id"]) == ["task_completed"]
    failed = session_of(board, broken.id)
    assert failed["status"] == "error"
    assert "the task needs a person" in failed["summary"]
    assert events_of(board, failed["id"]) == ["needs_input"]


async def test_a_live_run_shows_its_owner_and_progress_and_a_shutdown_ends_it(
    make_board: MakeBoard, scene: Scene
) -> None:
    board = await make_board(profile="v2")
    settings = worker_settings(board.url, board.api_key, scene, progress_interval=0.2)
    async with BoardClient.from_settings(settings) as client:
        (task,) = await add_tasks(client, 1, title="talkative [chatty]")
        async with running_pool(settings):

            def progressed() -> bool:
                feed = board.agent_records.list_events(task_id=task.id, event_type="task_progress")
                return bool(feed)

            await wait_for(progressed, what="a progress event")
            live = session_of(board, task.id)
            assert live["status"] == "active"
            assert live["summary"].startswith(f"taskinfa-worker tester-1 runs {task.id}: ")
            feed = board.agent_records.list_events(task_id=task.id)
            # The first progress tells of the claim too (the start note leads it), and the
            # next ones are plain progress.
            first, then = feed[-1], feed[-2]
            assert first["event_type"] == "task_claimed"
            assert first["message"].startswith(f"tester-1 claimed {task.id}: talkative")
            assert "Started by tester-1 (attempt 1 of 3).\n\nWorking" in first["message"]
            assert then["event_type"] == "task_progress"
            assert then["message"].startswith("Working")
            assert then["session_id"] == live["id"]
    ended = session_of(board, task.id)
    assert ended["status"] == "completed"
    assert "released" in ended["summary"]
    assert events_of(board, ended["id"]) == ["task_claimed", "session_end"]


async def test_sessions_can_be_turned_off(make_board: MakeBoard, scene: Scene) -> None:
    board = await make_board(profile="v2")
    settings = worker_settings(board.url, board.api_key, scene, sessions=False)
    async with BoardClient.from_settings(settings) as client:
        await add_tasks(client, 1, title="plain")
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: pool.state.completed == 1, what="the task done")
    assert board.agent_records.list_sessions() == []
    assert board.agent_records.list_events() == []


@pytest.mark.parametrize("profile", ["full", "v1"])
async def test_a_board_without_sessions_runs_tasks_as_before(
    make_board: MakeBoard, scene: Scene, profile: str
) -> None:
    board = await make_board(profile=profile)
    settings = worker_settings(board.url, board.api_key, scene, concurrency=2)
    async with BoardClient.from_settings(settings) as client:
        tasks = await add_tasks(client, 3, title="plain")
        async with running_pool(settings) as (pool, pool_client):
            await wait_for(lambda: pool.state.completed == 3, what="three tasks done")
            assert pool_client.sessions.supported is False
        for task in tasks:
            final = await client.get_task(task.id)
            assert final is not None
            assert final.status == "review"


def test_sixty_four_sessions_stay_inside_a_hundred_requests_a_minute() -> None:
    """The steady traffic of 64 busy slots on the current release (no heartbeats there):
    every session's keep-alive, progress comments with their events, takeaway checks and
    lease sweeps, and the polls (the chat's too), at the default settings, within the
    shares of the budget."""
    settings = Settings(
        _env_file=None, taskinfa_api_url="http://127.0.0.1/api", taskinfa_api_key="k"
    )
    limiter = RateLimiter(100)
    slots = 64
    keepalives = slots * 60 / budget.keepalive_interval(settings.lease_timeout)
    progress_every = budget.progress_interval(settings.progress_interval, slots, limiter, 2)
    progress = slots * 2 * 60 / progress_every
    takeaway = 60 / budget.watch_interval(settings.cancel_check_interval, 1, limiter)
    sweeps = 2 * 60 / budget.watch_interval(settings.lease_timeout / 2, 2, limiter)
    # The reserve stays free for claims, polls and endings (a run's session adds 4 there).
    loops = keepalives + progress + takeaway + sweeps
    # The polls, the chat's among them, stay inside their parts of the reserve.
    polls = 60 / budget.idle_poll_interval(settings.poll_interval, 3600, limiter)
    chat_polls = 60 / budget.chat_poll_interval(settings.poll_interval, limiter)
    reserved = budget.IDLE_POLL_SHARE + budget.CHAT_SHARE
    assert reserved < budget.RESERVE_SHARE
    assert polls + chat_polls <= reserved * limiter.rate_per_minute + 1e-9
    assert loops <= (1 - budget.RESERVE_SHARE) * limiter.rate_per_minute
    assert budget.keepalives_fit(slots, settings.lease_timeout, limiter)
    # A lease too short for that many keep-alives is detected (and logged by the pool).
    assert not budget.keepalives_fit(slots, 60.0, limiter)


async def test_a_key_in_a_title_never_reaches_the_sessions_or_the_feed(
    make_board: MakeBoard, scene: Scene
) -> None:
    board = await make_board(profile="v2")
    # Long enough for a first progress, whose claim event carries the title.
    settings = worker_settings(board.url, board.api_key, scene, progress_interval=0.2)
    async with BoardClient.from_settings(settings) as client:
        (task,) = await add_tasks(client, 1, title=f"use the key {board.api_key} please [gate]")
        async with running_pool(settings) as (pool, _):
            await wait_for(
                lambda: board.agent_records.list_events(event_type="task_claimed"),
                what="the claim event",
            )
            scene.open_gate()
            await wait_for(lambda: pool.state.completed == 1, what="the task done")
    session = session_of(board, task.id)
    texts = [session["summary"]] + [
        e["message"] for e in board.agent_records.list_events(session_id=session["id"])
    ]
    assert all(board.api_key not in text for text in texts), texts
    claimed = board.agent_records.list_events(event_type="task_claimed")
    assert "[REDACTED]" in claimed[0]["message"]


async def test_a_stalled_agent_is_stuck_and_a_failure_with_attempts_left_an_error(
    make_board: MakeBoard, scene: Scene
) -> None:
    board = await make_board(profile="v2")
    settings = worker_settings(
        board.url, board.api_key, scene, concurrency=2, max_attempts=2, stall_timeout=1.0
    )
    async with BoardClient.from_settings(settings) as client:
        (silent,) = await add_tasks(client, 1, title="silent [hang]")
        (broken,) = await add_tasks(client, 1, title="broken [fail]")
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: pool.state.failed >= 2, what="two failed attempts")
            await wait_for(
                lambda: (
                    {"stuck", "error"}
                    <= {e["event_type"] for e in board.agent_records.list_events(limit=100)}
                ),
                what="their events",
            )
    for task, ending in ((silent, "stuck"), (broken, "error")):
        feed = board.agent_records.list_events(task_id=task.id, limit=100)
        ended = next(e for e in feed if e["event_type"] == ending)
        assert board.agent_records.get_session(ended["session_id"])["status"] == "error"
