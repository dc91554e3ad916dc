"""Heartbeats that tell the truth, on the worker-era release (the ``v1`` profile), the one
with ``/workers``: every slot that ran a task shows, idle once its task ended, and the
process is idle once it exited."""

from __future__ import annotations

from typing import Any

from tests.board_support import BoardHandle, MakeBoard
from tests.pool.support import Scene, recording, running_pool, wait_for, worker_settings


def workers(board: BoardHandle) -> dict[str, dict[str, Any]]:
    return {worker["name"]: worker for worker in board.store.list_workers()[0]}


async def test_short_tasks_show_and_the_process_says_idle_at_exit(
    make_board: MakeBoard, scene: Scene
) -> None:
    board = await make_board(profile="v1")
    tasks = [board.create_task(f"quick {n}") for n in range(2)]
    settings = worker_settings(board.url, board.api_key, scene, concurrency=2, exit_when_idle=True)
    async with running_pool(settings) as (pool, _):
        await wait_for(lambda: pool.state.draining, what="the pool to run out of work")
    assert sorted(scene.starts()) == sorted(task["id"] for task in tasks)
    shown = workers(board)
    slots = {board.store.get_task(task["id"])["assigned_to"] for task in tasks}
    # Each task took far less than a heartbeat round, and its slot still showed working on
    # it and then idle: the board counts that change as one completed task.
    assert sum(shown[slot]["total_tasks_completed"] for slot in slots) == 2
    assert {name: worker["status"] for name, worker in shown.items()} == dict.fromkeys(
        ["tester", "tester-1", "tester-2"], "idle"
    )
    assert all(worker["current_task_id"] is None for worker in shown.values())


async def test_a_slot_is_idle_soon_after_its_task_ends(make_board: MakeBoard, scene: Scene) -> None:
    board = await make_board(profile="v1")
    gated = board.create_task("waits [gate]")
    settings = worker_settings(board.url, board.api_key, scene, concurrency=1)
    async with running_pool(settings) as (pool, _):
        await wait_for(
            lambda: workers(board).get("tester-1", {}).get("current_task_id") == gated["id"],
            what="the slot to show its task",
        )
        scene.open_gate()
        await wait_for(lambda: pool.state.completed == 1, what="the task to end")
        rounds = pool.heartbeat_rounds
        # No next task came: the slot itself says idle (within SLOT_IDLE_AFTER), not a
        # later round of the heartbeat loop.
        await wait_for(lambda: workers(board)["tester-1"]["status"] == "idle", what="idle")
        assert pool.heartbeat_rounds == rounds


async def test_a_slot_that_claims_at_once_goes_from_task_to_task_with_one_heartbeat(
    make_board: MakeBoard, scene: Scene
) -> None:
    board = await make_board(profile="v1")
    tasks = [board.create_task(f"quick {n}") for n in range(3)]
    async with recording(board.url) as (url, seen):
        settings = worker_settings(url, board.api_key, scene, concurrency=1, exit_when_idle=True)
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: pool.state.draining, what="the pool to run out of work")
    beats = [
        (request.body["status"], request.body.get("current_task_id"))
        for request in seen
        if request.endpoint == "POST /workers/heartbeat"
        and request.body["worker_name"] == "tester-1"
    ]
    # Working on each task in turn, idle once at the end: no "idle" between two tasks.
    assert beats == [*(("working", task["id"]) for task in tasks), ("idle", None)]
    assert workers(board)["tester-1"]["status"] == "idle"
