"""What a task's run costs on the board: the requests it sends, and what people still see.

Each test reads what the pool sent through a recording proxy, or what the board kept."""

from __future__ import annotations

from typing import Any

from tests.board_support import MakeBoard
from tests.pool.support import Scene, recording, running_pool, wait_for, worker_settings


def comments(board: Any, task_id: str) -> list[dict[str, Any]]:
    return board.store.list_comments(task_id, limit=100)[0]


async def test_a_short_run_posts_no_start_note_where_its_heartbeat_names_it(
    make_board: MakeBoard, scene: Scene
) -> None:
    board = await make_board()
    task = board.create_task("quick")
    settings = worker_settings(board.url, board.api_key, scene, exit_when_idle=True)
    async with running_pool(settings) as (pool, _):
        await wait_for(lambda: pool.state.draining, what="the pool to run out of work")
    notes = comments(board, task["id"])
    # The summary alone: the claim's heartbeat told the board who runs it meanwhile.
    assert [note["comment_type"] for note in notes] == ["summary"]
    assert board.store.get_task(task["id"])["status"] == "review"


async def test_a_run_that_goes_on_opens_its_first_progress_with_the_start_note(
    make_board: MakeBoard, scene: Scene
) -> None:
    board = await make_board()
    task = board.create_task("waits [gate]")
    # The agent prints nothing while it waits: the first comment comes anyway.
    settings = worker_settings(board.url, board.api_key, scene, progress_interval=0.3)
    async with running_pool(settings) as (pool, _):
        await wait_for(lambda: comments(board, task["id"]), what="a first comment")
        (first,) = comments(board, task["id"])
        assert first["content"].startswith("Started by tester-1 (attempt 1 of 3).")
        assert first["comment_type"] == "progress"
        scene.open_gate()
        await wait_for(lambda: pool.state.completed == 1, what="the task to end")
    notes = comments(board, task["id"])
    assert sum(note["content"].startswith("Started by") for note in notes) == 1


async def test_without_heartbeats_the_start_note_is_posted_at_once(
    make_board: MakeBoard, scene: Scene
) -> None:
    # The current release has no /workers: the note is all another worker's fence can see.
    board = await make_board(profile="v2")
    task = board.create_task("waits [gate]", status="todo")
    settings = worker_settings(board.url, board.api_key, scene, progress_interval=3600)
    async with running_pool(settings) as (pool, _):
        await wait_for(lambda: scene.starts(task["id"]), what="the agent to start")
        await wait_for(lambda: comments(board, task["id"]), what="the start note")
        (first,) = comments(board, task["id"])
        assert first["content"] == "Started by tester-1 (attempt 1 of 3)."
        scene.open_gate()
        await wait_for(lambda: pool.state.completed == 1, what="the task to end")


async def test_without_comments_the_ending_alone_carries_the_whole_summary(
    make_board: MakeBoard, scene: Scene
) -> None:
    # The worker-era release: people read completion_notes. The summary goes there with the
    # ending, in one PATCH, instead of a note's PATCH that the ending then overwrote.
    board = await make_board(profile="v1")
    task = board.create_task("quick")
    async with recording(board.url) as (url, seen):
        settings = worker_settings(url, board.api_key, scene, exit_when_idle=True)
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: pool.state.draining, what="the pool to run out of work")
    patches = [r.body for r in seen if r.endpoint == f"PATCH /tasks/{task['id']}"]
    assert [body.get("status") for body in patches] == ["in_progress", "review"]
    notes = board.store.get_task(task["id"])["completion_notes"]
    assert notes.startswith("Finished")
    assert "Files changed (1): result.txt" in notes
