"""What a task's run costs on the board: the requests it sends, and what people still see.

Each test reads what the pool sent through a recording proxy, or what the board kept."""

from __future__ import annotations

from typing import Any

import anyio
from aiohttp import web
from pydantic import SecretStr

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.pool.handover import wait_for_handover
from taskinfa_worker.pool.offers import LIST_LIMIT, Offers
from taskinfa_worker.pool.spacing import RetrySpacing
from tests.board_support import BoardHandle, MakeBoard
from tests.pool.support import (
    Scene,
    forward,
    recording,
    running_pool,
    serving,
    wait_for,
    worker_settings,
)


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


async def test_without_heartbeats_or_sessions_the_start_note_is_posted_at_once(
    make_board: MakeBoard, scene: Scene
) -> None:
    # The current release has no /workers, and sessions are off here: the note is all
    # another worker's fence can see.
    board = await make_board(profile="v2")
    task = board.create_task("waits [gate]", status="todo")
    settings = worker_settings(
        board.url, board.api_key, scene, progress_interval=3600, sessions=False
    )
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


def spacing() -> RetrySpacing:
    return RetrySpacing(0, 1, max_attempts=3)


async def test_one_read_of_the_todo_list_feeds_several_claims_in_board_order(
    any_board: BoardHandle,
) -> None:
    board = any_board
    low = board.create_task("low", priority="low")
    urgent = board.create_task("urgent", priority="urgent")
    second = board.create_task("high, later", priority="high", order=2)
    first = board.create_task("high, first", priority="high", order=1)
    async with BoardClient(board.url, SecretStr(board.api_key)) as client:
        offers = Offers(client, (), spacing(), fresh_for=60)
        offered = [(await offers.next()).task for _ in range(4)]
        assert offers.list_reads == 1
        assert [task.id if task else None for task in offered] == [
            urgent["id"],
            first["id"],
            second["id"],
            low["id"],
        ]
        # Queued work is offered only while it is fresh, and never a task we still run.
        offers = Offers(client, (), spacing(), fresh_for=60)
        head = await offers.next(skip={urgent["id"]})
        assert head.task is not None
        assert head.task.id == first["id"]
        offers.forget()  # a lost claim: the board moved on
        await offers.next()
        assert offers.list_reads == 2


async def test_a_full_page_still_yields_the_most_urgent_task_beyond_it(
    make_board: MakeBoard,
) -> None:
    board = await make_board()
    for n in range(LIST_LIMIT):
        board.create_task(f"filler {n}", priority="low", order=n)
    # Past the first page of a list ordered by `order`, but first in the board's order.
    urgent = board.create_task("urgent, last in the list", priority="urgent", order=10_000)
    async with BoardClient(board.url, SecretStr(board.api_key)) as client:
        offers = Offers(client, (), spacing(), fresh_for=60)
        offer = await offers.next()
        assert offer.task is not None
        assert offer.task.id == urgent["id"]
        assert await client.claim(urgent["id"], "bot-1") is not None
        # The page's low tasks were not queued as the board's next ones (another urgent
        # task may hide beyond the page): the next offer reads again.
        then = await offers.next()
        assert offers.list_reads == 2
        assert then.task is not None
        assert then.task.priority == "low"


async def test_free_slots_claim_from_one_read(make_board: MakeBoard, scene: Scene) -> None:
    board = await make_board()
    tasks = [board.create_task(f"waits {n} [gate]") for n in range(4)]
    async with recording(board.url) as (url, seen):
        settings = worker_settings(
            url, board.api_key, scene, concurrency=4, poll_interval=30, max_poll_interval=60
        )
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: len(pool.running) == 4, what="four claims")
            looks = [r for r in seen if r.endpoint in ("GET /tasks/next", "GET /tasks")]
            todo_reads = [r for r in looks if r.query.get("status") == "todo"]
            assert (len(todo_reads), len(looks) - len(todo_reads)) == (1, 1)  # + the recovery
            scene.open_gate()
            await wait_for(lambda: pool.state.completed == 4, what="the tasks to end")
    assert {r.path for r in seen if r.method == "POST" and r.path.endswith("/claim")} == {
        f"/tasks/{task['id']}/claim" for task in tasks
    }


async def test_a_run_whose_claim_heartbeat_failed_posts_its_start_note_at_once(
    make_board: MakeBoard, scene: Scene
) -> None:
    # The board never showed the slot on its task: the note is what another worker's
    # fence can see.
    board = await make_board()
    task = board.create_task("waits [gate]")
    upstream = board.url.removesuffix("/api")

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path.endswith("/heartbeat") and b'"tester-1"' in body:
            return web.Response(status=503, text="<h1>503</h1>", content_type="text/html")
        status, payload, content_type = await forward(upstream, request, body)
        return web.Response(status=status, body=payload, headers={"Content-Type": content_type})

    async with serving(handle) as url:
        settings = worker_settings(url, board.api_key, scene, progress_interval=3600)
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: scene.starts(task["id"]), what="the agent to start")
            await wait_for(lambda: comments(board, task["id"]), what="the start note")
            (first,) = comments(board, task["id"])
            assert first["content"] == "Started by tester-1 (attempt 1 of 3)."
            scene.open_gate()
            await wait_for(lambda: pool.state.completed == 1, what="the task to end")


async def test_a_persons_move_after_the_agent_ended_is_never_written_over(
    make_board: MakeBoard, scene: Scene
) -> None:
    board = await make_board()
    task = board.create_task("quick")
    upstream = board.url.removesuffix("/api")
    moved = anyio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        # The read before the ending (the takeaway check does not run in this test): a
        # person moves the task just before the board answers it.
        before_ending = request.method == "GET" and (
            request.path == f"/api/tasks/{task['id']}"
            or request.query.get("status") == "in_progress"
        )
        if before_ending and scene.starts(task["id"]) and not moved.is_set():
            board.store.update_task(
                task["id"], {"status": "backlog", "assigned_to": None, "completion_notes": "Dana"}
            )
            moved.set()
        status, payload, content_type = await forward(upstream, request, body)
        return web.Response(status=status, body=payload, headers={"Content-Type": content_type})

    async with serving(handle) as url:
        settings = worker_settings(url, board.api_key, scene, cancel_check_interval=3600)
        async with running_pool(settings) as (pool, _):
            await wait_for(moved.is_set, what="the person's move")
            await wait_for(lambda: not pool.running, what="the run to end")
    final = board.store.get_task(task["id"])
    assert (final["status"], final["assigned_to"], final["completion_notes"]) == (
        "backlog",
        None,
        "Dana",
    )
    assert comments(board, task["id"]) == []  # no summary on a task that is not ours


async def test_the_fence_costs_a_new_task_nothing_and_a_rerun_one_read_of_who_runs_what(
    any_board: BoardHandle, scene: Scene
) -> None:
    board = any_board
    async with recording(board.url) as (url, seen):
        settings = worker_settings(url, board.api_key, scene)
        async with BoardClient.from_settings(settings) as client:
            new = await client.create_task("new", "default", status="todo")
            ran = await client.create_task("ran before", "default", status="todo")
            for status in ("in_progress", "review", "todo"):  # reached review, sent back
                await client.update_task(ran.id, status=status)
            # A worker that has been up a while knows which of these routes its board has.
            await client.list_comments(ran.id)
            await client.list_workers()
            offered_new, offered_ran = await client.get_task(new.id), await client.get_task(ran.id)
            seen.clear()
            assert (await wait_for_handover(client, offered_new, settings, "me")).comments is None
            assert seen == []
            handover = await wait_for_handover(client, offered_ran, settings, "me")
    assert handover.comments is not None  # the run's history reuses this read
    who_runs_what = "GET /sessions" if board.options.agent_routes else "GET /workers"
    comments_read = [f"GET /tasks/{ran.id}/comments"] if board.options.comments_route else []
    assert [r.endpoint for r in seen] == [*comments_read, who_runs_what]
