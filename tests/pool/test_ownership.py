"""The read before an ending: shared by the endings that ask together, never answering
for a moment before an ending asked (real HTTP, the local board)."""

from __future__ import annotations

import anyio
from aiohttp import web
from pydantic import SecretStr

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.models import Task, taken_away
from taskinfa_worker.pool.ownership import OwnershipReads
from tests.board_support import MakeBoard
from tests.pool.support import forward, serving


async def test_endings_that_ask_together_share_one_read(make_board: MakeBoard) -> None:
    board = await make_board()
    tasks = [
        board.create_task(f"t{n}", status="in_progress", assigned_to=f"bot-{n}") for n in range(3)
    ]
    board.store.update_task(tasks[2]["id"], {"status": "todo", "assigned_to": None})  # a person
    board.store.delete_task(tasks[1]["id"])
    answers: dict[str, Task | None] = {}
    async with BoardClient(board.url, SecretStr(board.api_key)) as client:
        reads = OwnershipReads(client)

        async def ask(task_id: str) -> None:
            answers[task_id] = await reads.current(task_id)

        async with anyio.create_task_group() as group:
            for task in tasks:
                group.start_soon(ask, task["id"])
    assert reads.list_reads == 1
    still, deleted, moved = (answers[task["id"]] for task in tasks)
    assert taken_away(still, "bot-0") is None
    assert deleted is None
    away = taken_away(moved, "bot-2")
    assert away is not None
    assert "todo" in away.reason


async def test_a_read_under_way_does_not_answer_an_ending_that_asked_after_it_was_sent(
    make_board: MakeBoard,
) -> None:
    board = await make_board()
    task = board.create_task("t", status="in_progress", assigned_to="bot-1")
    served = anyio.Event()
    hold = anyio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        status, payload, content_type = await forward(board.url.removesuffix("/api"), request, body)
        if request.path == "/api/tasks" and not served.is_set():
            served.set()  # the board has answered; its answer is held back a while
            await hold.wait()
        return web.Response(status=status, body=payload, headers={"Content-Type": content_type})

    async with serving(handle) as url, BoardClient(url, SecretStr(board.api_key)) as client:
        reads = OwnershipReads(client, gather=0.0)
        answers: list[Task | None] = []

        async def ask() -> None:
            answers.append(await reads.current(task["id"]))

        async with anyio.create_task_group() as group:
            group.start_soon(ask)
            await served.wait()
            # A person moves the task after the first read was made, then a run ends.
            board.store.update_task(task["id"], {"status": "todo", "assigned_to": None})
            group.start_soon(ask)
            await anyio.wait_all_tasks_blocked()
            hold.set()
    first, second = answers
    assert taken_away(first, "bot-1") is None
    assert taken_away(second, "bot-1") is not None
    assert reads.list_reads == 2
