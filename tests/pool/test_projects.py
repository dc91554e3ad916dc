"""TASK_LIST_ID on every shape of server: a task of another project is never claimed, and
the projects named are worked in the board's order (priority, ``order``, age)."""

from __future__ import annotations

from tests.board_support import BoardHandle
from tests.pool.support import Scene, running_pool, wait_for, worker_settings


async def test_only_the_named_projects_are_worked_in_board_order(
    any_board: BoardHandle, scene: Scene
) -> None:
    board = any_board
    for name in ("Alpha", "Beta", "Gamma"):
        board.store.create_task_list(name)
    # Gamma's task comes first in the board's order: the real releases' /tasks/next
    # offers it whatever task_list_id says.
    other = board.create_task("other project", "gamma", priority="urgent")
    low = board.create_task("alpha low", "alpha", priority="low")
    second = board.create_task("beta high, later", "beta", priority="high", order=2)
    first = board.create_task("beta high, first", "beta", priority="high", order=1)
    medium = board.create_task("alpha medium", "alpha", priority="medium")
    settings = worker_settings(
        board.url,
        board.api_key,
        scene,
        concurrency=1,
        exit_when_idle=True,
        task_list_id=" alpha, beta ",
    )
    async with running_pool(settings) as (pool, _):
        await wait_for(lambda: pool.state.draining, what="the pool to find no more work")
    assert pool.state.completed == 4
    assert scene.starts() == [first["id"], second["id"], medium["id"], low["id"]]
    untouched = board.store.get_task(other["id"])
    assert (untouched["status"], untouched["assigned_to"]) == ("todo", None)


async def test_one_project_as_before(any_board: BoardHandle, scene: Scene) -> None:
    board = any_board
    board.store.create_task_list("Alpha")
    other = board.create_task("default project", "default", priority="urgent")
    ours = board.create_task("alpha", "alpha", priority="low")
    settings = worker_settings(
        board.url, board.api_key, scene, exit_when_idle=True, task_list_id="alpha"
    )
    async with running_pool(settings) as (pool, _):
        await wait_for(lambda: pool.state.draining, what="the pool to find no more work")
    assert scene.starts() == [ours["id"]]
    assert board.store.get_task(ours["id"])["status"] == "review"
    assert board.store.get_task(other["id"])["status"] == "todo"
