"""Attempts are spaced: a failed task waits RETRY_BACKOFF before anyone tries it again,
while the tasks behind it run, on every board profile and across worker processes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.models import Task
from taskinfa_worker.pool.offers import Offers
from taskinfa_worker.pool.spacing import RetrySpacing
from tests.board_support import BoardHandle, MakeBoard
from tests.pool.support import Scene, WorkerProcess, process_env


def runs(scene: Scene, task_id: str) -> list[tuple[str, float]]:
    """(start|stop, time) of the agent runs of one task, from the ledger, in order."""
    return [(e[0], float(e[-1])) for e in scene.entries() if e[1] == task_id]


@pytest.mark.slow
async def test_another_replica_leaves_a_failed_task_waiting_and_runs_the_next_one(
    any_board: BoardHandle, scene: Scene
) -> None:
    board = any_board
    # Long enough that no process can reach the end of the wait during the test.
    env = process_env(board.url, board.api_key, scene, RETRY_BACKOFF="600", MAX_ATTEMPTS="3")
    async with BoardClient(board.url, SecretStr(board.api_key)) as client:
        flaky = await client.create_task(
            "flaky [fail]", "default", priority="urgent", status="todo"
        )
        other = await client.create_task("other", "default", priority="low", status="todo")
        # One replica fails the task once and exits: the wait is in no process's memory.
        first = WorkerProcess({**env, "BOT_NAME": "first"}, ["--max-tasks", "1"], scene.root / "1")
        assert await first.wait() == 0, first.output()[-3000:]
        # Another one finds the failed task first in the board's order, and passes it over.
        second = WorkerProcess(
            {**env, "BOT_NAME": "second"}, ["--max-tasks", "1"], scene.root / "2"
        )
        assert await second.wait() == 0, second.output()[-3000:]
        waiting = await client.get_task(flaky.id)
        done = await client.get_task(other.id)
        notes = [c.content for c in (await client.list_comments(flaky.id, limit=100)).comments]
    assert waiting is not None
    assert done is not None
    assert [kind for kind, _ in runs(scene, flaky.id)] == ["start", "stop"]  # one attempt
    assert (waiting.status, waiting.error_count, waiting.assigned_to) == ("todo", 1, None)
    assert (waiting.priority, waiting.order) == (flaky.priority, flaky.order)  # order kept
    assert done.status == "review"
    assert "attempt 2 waits until" in second.output()
    if board.options.comments_route:
        (failure,) = [n for n in notes if n.startswith("Failed:")]
        assert "the next attempt waits at least 600 s (RETRY_BACKOFF)" in failure


@pytest.mark.slow
async def test_each_attempt_starts_no_earlier_than_its_growing_wait(
    any_board: BoardHandle, scene: Scene
) -> None:
    board = any_board
    backoff = 1.5
    env = process_env(board.url, board.api_key, scene, RETRY_BACKOFF=str(backoff), MAX_ATTEMPTS="3")
    async with BoardClient(board.url, SecretStr(board.api_key)) as client:
        flaky = await client.create_task("flaky [fail]", "default", status="todo")
        # The queue holds a waiting task: --exit-when-idle waits for it rather than exit.
        worker = WorkerProcess(
            {**env, "BOT_NAME": "spaced"}, ["--exit-when-idle"], scene.root / "w"
        )
        assert await worker.wait() == 0, worker.output()[-3000:]
        final = await client.get_task(flaky.id)
    assert final is not None
    assert final.error_count == 3
    assert final.status in ("blocked", "review")  # review where the board refuses blocked
    times = runs(scene, flaky.id)
    assert [kind for kind, _ in times] == ["start", "stop"] * 3
    assert times[2][1] - times[1][1] >= backoff  # after the 1st failure: RETRY_BACKOFF
    assert times[4][1] - times[3][1] >= 2 * backoff  # after the 2nd: twice as long


def failed_task(failures: int, notes: str, ago: float) -> Task:
    updated = datetime.now(UTC) - timedelta(seconds=ago)
    return Task(
        id="task_1",
        title="t",
        status="todo",
        error_count=failures,
        completion_notes=notes,
        updated_at=updated,
    )


def test_the_wait_doubles_per_failure_up_to_the_cap() -> None:
    spacing = RetrySpacing(60, 200, max_attempts=10)
    assert [spacing.delay(n) for n in range(5)] == [0, 60, 120, 200, 200]
    assert spacing.delay(10_000) == 200  # no overflow on a huge error_count
    assert RetrySpacing(0, 200, max_attempts=10).delay(3) == 0  # RETRY_BACKOFF=0: no wait


@pytest.mark.parametrize(
    ("failures", "notes", "waits"),
    [
        (1, "Failed: the agent exited with code 1", True),
        (2, "Failed: the agent exited with code 1", True),
        # A person sent it back after a success: their word is not delayed.
        (1, "Finished: 3 turns.", False),
        # A person unblocked it (at MAX_ATTEMPTS): not delayed either.
        (3, "Failed: the agent exited with code 1", False),
        (0, "", False),
    ],
    ids=["first-failure", "second-failure", "sent-back-after-success", "unblocked", "fresh"],
)
def test_only_a_task_whose_last_attempt_failed_waits(
    failures: int, notes: str, waits: bool
) -> None:
    spacing = RetrySpacing(60, 3600, max_attempts=3)
    task = failed_task(failures, notes, ago=10)
    assert (spacing.wait(task, datetime.now(UTC)) > 0) is waits
    # Long after the failure, nothing waits.
    assert spacing.wait(failed_task(failures, notes, ago=10_000), datetime.now(UTC)) == 0


def failed_once(board: BoardHandle, title: str, priority: str) -> str:
    """A todo task whose last attempt just failed, as the worker leaves one."""
    task = board.create_task(title, priority=priority)
    board.store.update_task(task["id"], {"error_count": 1, "completion_notes": "Failed: boom"})
    return str(task["id"])


async def test_a_waiting_offer_gives_way_to_the_next_in_board_order(
    any_board: BoardHandle,
) -> None:
    board = any_board
    failed_once(board, "flaky", "urgent")
    second = board.create_task("second", priority="high")
    board.create_task("third", priority="low")
    async with BoardClient(board.url, SecretStr(board.api_key)) as client:
        offers = Offers(client, (), RetrySpacing(600, 3600, max_attempts=3))
        offer = await offers.next()
    assert offer.task is not None
    assert offer.task.id == second["id"]
    assert offer.project is not None
    assert offer.project.id == "default"


async def test_only_waiting_tasks_offer_nothing_and_say_when_the_first_is_due(
    any_board: BoardHandle,
) -> None:
    failed_once(any_board, "flaky", "urgent")
    async with BoardClient(any_board.url, SecretStr(any_board.api_key)) as client:
        offers = Offers(client, (), RetrySpacing(600, 3600, max_attempts=3))
        offer = await offers.next()
    assert offer.task is None
    assert offers.soonest_retry is not None
    assert 590 < offers.soonest_retry <= 601


async def test_the_way_around_a_waiting_task_respects_dependencies_on_the_current_release(
    make_board: MakeBoard,
) -> None:
    board = await make_board(profile="v2")
    failed_once(board, "flaky", "urgent")
    unfinished = board.create_task("not done yet", status="review")
    waits = board.create_task("needs the other one", priority="high")
    board.store.add_dependency(waits["id"], unfinished["id"])
    free = board.create_task("free", priority="low")
    async with BoardClient(board.url, SecretStr(board.api_key)) as client:
        offer = await Offers(client, (), RetrySpacing(600, 3600, max_attempts=3)).next()
    assert offer.task is not None
    assert offer.task.id == free["id"]  # not the one /tasks/next would skip, nor the flaky one
