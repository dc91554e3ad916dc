"""Recovery at start on boards whose ``total`` is the page's length (both real releases):
a task of this process beyond the first page of in-progress tasks is still recovered."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.pool.recovery import PAGE_LIMIT, recover_own_tasks
from taskinfa_worker.pool.reporting import TaskReporter
from taskinfa_worker.redact import Redactor
from tests.board_support import MakeBoard


@pytest.mark.parametrize("profile", ["full", "v1", "v2"])
async def test_own_task_beyond_the_first_page_is_recovered(
    make_board: MakeBoard, profile: str
) -> None:
    board = await make_board(profile=profile)
    for n in range(PAGE_LIMIT):
        board.create_task(f"someone's {n}", status="in_progress", assigned_to="other-1", order=n)
    ours = board.create_task("ours", status="in_progress", assigned_to="tester-2", order=PAGE_LIMIT)
    async with BoardClient(board.url, SecretStr(board.api_key), rate_limit=10_000) as client:
        reporter = TaskReporter(client, Redactor(), 3)
        recovered = await recover_own_tasks(client, reporter, ["tester-1", "tester-2"], "tester")
    assert recovered == 1
    task = board.store.get_task(ours["id"])
    assert (task["status"], task["assigned_to"], task["error_count"]) == ("todo", None, 1)
    others = board.store.list_tasks(status="in_progress", assigned_to="other-1", limit=100)[0]
    assert len(others) == PAGE_LIMIT
