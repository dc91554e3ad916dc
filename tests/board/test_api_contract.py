"""The local board over real HTTP: every route of API.md, auth, ordering, the atomic claim,
validation (never a 500), the rate limit, feature switches, liveness and persistence."""

from __future__ import annotations

import asyncio
import io
import json
import re
from typing import Any

import aiohttp
import pytest
from yarl import URL

from taskinfa_worker.board import validation
from taskinfa_worker.client.api import BoardClient
from tests.board.http import Reply, call, iso
from tests.board_support import BoardHandle, FakeClock, MakeBoard

SQLITE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


# --- every endpoint --------------------------------------------------------------------------
async def test_task_lifecycle_through_every_task_route(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    created = await call(
        http,
        board,
        "POST",
        "/tasks",
        {
            "title": "  Fix the login bug  ",
            "description": "Users cannot log in.",
            "priority": "high",
            "task_list_id": "default",
            "labels": ["bug"],
        },
    )
    assert created.status == 201, created
    task = created.body["task"]
    assert re.fullmatch(r"task_[0-9a-f]{16}", task["id"])
    assert task["title"] == "Fix the login bug"
    assert (task["status"], task["priority"], task["labels"]) == ("todo", "high", ["bug"])
    assert task["assigned_to"] is None
    assert task["files_changed"] == []
    assert SQLITE_TIME.match(task["created_at"])
    assert task["started_at"] is None
    assert task["completed_at"] is None

    nxt = await call(http, board, "GET", "/tasks/next")
    assert nxt.status == 200
    assert nxt.body["task"]["id"] == task["id"]
    assert nxt.body["project"] == {"id": "default", "name": "Default", "repository_url": None}

    claimed = await call(http, board, "POST", f"/tasks/{task['id']}/claim", {"bot_name": "w-1"})
    assert claimed.status == 200, claimed
    assert claimed.body["success"] is True
    assert claimed.body["task"]["assigned_to"] == "w-1"
    assert claimed.body["task"]["status"] == "in_progress"
    assert SQLITE_TIME.match(claimed.body["task"]["started_at"])

    got = await call(http, board, "GET", f"/tasks/{task['id']}")
    assert got.status == 200
    assert got.body["task"]["assigned_to"] == "w-1"

    patched = await call(
        http,
        board,
        "PATCH",
        f"/tasks/{task['id']}",
        {
            "status": "review",
            "completion_notes": "Fixed the session cookie.",
            "files_changed": ["app/login.py"],
            "loop_count": 2,
            "error_count": 1,
            "branch_name": "task/fix-login",
            "pr_url": "https://example.com/pr/1",
            "claude_session_id": "sess-1",
        },
    )
    assert patched.status == 200, patched
    after = patched.body["task"]
    assert after["status"] == "review"
    assert SQLITE_TIME.match(after["completed_at"])
    assert after["started_at"] == claimed.body["task"]["started_at"]
    assert after["files_changed"] == ["app/login.py"]
    assert (after["loop_count"], after["error_count"]) == (2, 1)
    assert (after["branch_name"], after["pr_url"]) == ("task/fix-login", "https://example.com/pr/1")
    assert after["claude_session_id"] == "sess-1"
    assert after["completion_notes"] == "Fixed the session cookie."

    unassigned = await call(http, board, "PATCH", f"/tasks/{task['id']}", {"assigned_to": None})
    assert unassigned.body["task"]["assigned_to"] is None

    deleted = await call(http, board, "DELETE", f"/tasks/{task['id']}")
    assert (deleted.status, deleted.body) == (200, {"success": True})
    gone = await call(http, board, "GET", f"/tasks/{task['id']}")
    assert gone.status == 404
    assert gone.body == {"error": "Task not found", "category": "not_found"}
    for method, body in (("PATCH", {"status": "done"}), ("DELETE", None)):
        again = await call(http, board, method, f"/tasks/{task['id']}", body)
        assert again.status == 404, (method, again)


async def test_list_tasks_filters_paginates_and_counts(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    board.store.create_task_list("Other")
    ids = [board.create_task(f"t{i}", order=i)["id"] for i in range(5)]
    board.create_task("urgent one", priority="urgent", order=10)
    board.create_task("backlog", status="backlog", order=11)
    board.create_task("elsewhere", "other")
    board.store.claim_task(ids[0], "w-1")

    everything = await call(http, board, "GET", "/tasks")
    assert everything.body["total"] == 8
    assert [t["title"] for t in everything.body["tasks"]][:3] == ["t0", "elsewhere", "t1"]

    page = await call(
        http, board, "GET", "/tasks", params={"status": "todo", "limit": "2", "offset": "1"}
    )
    assert page.body["total"] == 6
    assert [t["title"] for t in page.body["tasks"]] == ["t1", "t2"]

    mine = await call(http, board, "GET", "/tasks", params={"assigned_to": "w-1"})
    assert [t["id"] for t in mine.body["tasks"]] == [ids[0]]
    urgent = await call(http, board, "GET", "/tasks", params={"priority": "urgent"})
    assert [t["title"] for t in urgent.body["tasks"]] == ["urgent one"]
    other = await call(http, board, "GET", "/tasks", params={"task_list_id": "other"})
    assert [t["title"] for t in other.body["tasks"]] == ["elsewhere"]
    default_limit = await call(http, board, "GET", "/tasks")
    assert len(default_limit.body["tasks"]) == 8


async def test_default_page_size_is_50(board: BoardHandle, http: aiohttp.ClientSession) -> None:
    for i in range(60):
        board.create_task(f"t{i}")
    page = await call(http, board, "GET", "/tasks")
    assert (len(page.body["tasks"]), page.body["total"]) == (50, 60)
    full = await call(http, board, "GET", "/tasks", params={"limit": "100"})
    assert len(full.body["tasks"]) == 60


async def test_comments_newest_first_with_paging(
    make_board: MakeBoard, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    board = await make_board(clock=clock)
    task = board.create_task()
    for i in range(5):
        posted = await call(
            http,
            board,
            "POST",
            f"/tasks/{task['id']}/comments",
            {
                "author": "w-1",
                "author_type": "bot",
                "content": f"step {i}",
                "comment_type": "progress",
                "loop_number": i,
            },
        )
        assert posted.status == 201, posted
        comment = posted.body["comment"]
        assert re.fullmatch(r"cmt_[0-9a-f]{16}", comment["id"])
        assert (comment["task_id"], comment["loop_number"]) == (task["id"], i)
        if i < 3:
            clock.advance(1)  # the last two share a second: insertion order breaks the tie

    listed = await call(http, board, "GET", f"/tasks/{task['id']}/comments")
    assert listed.body["total"] == 5
    assert [c["content"] for c in listed.body["comments"]] == [f"step {i}" for i in (4, 3, 2, 1, 0)]
    page = await call(
        http, board, "GET", f"/tasks/{task['id']}/comments", params={"limit": "2", "offset": "1"}
    )
    assert (page.body["total"], [c["content"] for c in page.body["comments"]]) == (
        5,
        ["step 3", "step 2"],
    )

    question = await call(
        http,
        board,
        "POST",
        f"/tasks/{task['id']}/comments",
        {"author": "alice", "author_type": "user", "content": "why?", "comment_type": "question"},
    )
    assert question.body["comment"]["loop_number"] is None

    for method, body in (("GET", None), ("POST", COMMENT)):
        missing = await call(http, board, method, "/tasks/task_nope/comments", body)
        assert (missing.status, missing.body["category"]) == (404, "not_found")


async def test_task_lists(board: BoardHandle, http: aiohttp.ClientSession) -> None:
    initial = await call(http, board, "GET", "/task-lists")
    assert [t["id"] for t in initial.body["task_lists"]] == ["default"]

    created = await call(
        http,
        board,
        "POST",
        "/task-lists",
        {"name": "My Web App!", "repository_url": "https://github.com/acme/web.git"},
    )
    assert created.status == 201, created
    project = created.body["task_list"]
    assert project["id"] == "my-web-app"
    assert (project["name"], project["working_directory"]) == ("My Web App!", "/workspace")
    assert project["repository_url"] == "https://github.com/acme/web.git"

    got = await call(http, board, "GET", "/task-lists/my-web-app")
    assert got.body["task_list"] == project
    listed = await call(http, board, "GET", "/task-lists")
    assert {t["id"] for t in listed.body["task_lists"]} == {"default", "my-web-app"}

    again = await call(http, board, "POST", "/task-lists", {"name": "my web app"})
    assert again.status == 409
    assert again.body["category"] == "conflict"
    missing = await call(http, board, "GET", "/task-lists/nope")
    assert (missing.status, missing.body["category"]) == (404, "not_found")

    task = await call(
        http, board, "POST", "/tasks", {"title": "Build it", "task_list_id": "my-web-app"}
    )
    nxt = await call(http, board, "GET", "/tasks/next", params={"task_list_id": "my-web-app"})
    assert nxt.body["task"]["id"] == task.body["task"]["id"]
    assert nxt.body["project"]["repository_url"] == "https://github.com/acme/web.git"


async def test_heartbeats_and_offline_after_120_seconds(
    make_board: MakeBoard, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    board = await make_board(clock=clock)
    task = board.create_task()

    beat = await call(
        http,
        board,
        "POST",
        "/workers/heartbeat",
        {"worker_name": "w-1", "status": "working", "current_task_id": task["id"]},
    )
    assert beat.status == 200, beat
    assert beat.body["next_heartbeat_in"] == 10
    worker = beat.body["worker"]
    assert (worker["name"], worker["status"], worker["current_task_id"]) == (
        "w-1",
        "working",
        task["id"],
    )
    assert SQLITE_TIME.match(worker["last_heartbeat"])
    await call(http, board, "POST", "/workers/heartbeat", {"worker_name": "w-2", "status": "idle"})

    async def statuses() -> tuple[dict[str, str], dict[str, int]]:
        reply = await call(http, board, "GET", "/workers")
        assert reply.status == 200
        return {w["name"]: w["status"] for w in reply.body["workers"]}, reply.body["stats"]

    assert await statuses() == (
        {"w-1": "working", "w-2": "idle"},
        {"total": 2, "online": 2, "idle": 1, "working": 1, "offline": 0},
    )
    clock.advance(120)
    assert (await statuses())[0] == {"w-1": "working", "w-2": "idle"}
    clock.advance(1)
    assert await statuses() == (
        {"w-1": "offline", "w-2": "offline"},
        {"total": 2, "online": 0, "idle": 0, "working": 0, "offline": 2},
    )

    # Back to idle after working on a task: one completed task, and online again.
    back = await call(
        http, board, "POST", "/workers/heartbeat", {"worker_name": "w-1", "status": "idle"}
    )
    assert back.body["worker"]["total_tasks_completed"] == 1
    assert back.body["worker"]["current_task_id"] is None
    assert (await statuses())[0] == {"w-1": "idle", "w-2": "offline"}


# --- auth ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer tk_wrong"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "tk_test_no_scheme"},
    ],
    ids=["missing", "unknown-key", "empty", "basic", "no-scheme"],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/tasks/next"),
        ("GET", "/tasks"),
        ("POST", "/tasks/task_x/claim"),
        ("PATCH", "/tasks/task_x"),
        ("GET", "/workers"),
        ("GET", "/task-lists"),
    ],
)
async def test_bad_or_missing_key_is_401(
    board: BoardHandle,
    http: aiohttp.ClientSession,
    headers: dict[str, str],
    method: str,
    path: str,
) -> None:
    reply = await call(http, board, method, path, {"status": "todo"}, headers=headers)
    assert reply.status == 401, reply
    assert reply.body["category"] == "authentication"
    assert reply.body["error"]
    assert reply.headers["WWW-Authenticate"] == "Bearer"


async def test_key_is_compared_exactly(board: BoardHandle, http: aiohttp.ClientSession) -> None:
    for wrong in (board.api_key + "x", board.api_key[:-1], board.api_key.upper()):
        reply = await call(
            http, board, "GET", "/tasks", headers={"Authorization": f"Bearer {wrong}"}
        )
        assert reply.status == 401
    ok = await call(
        http, board, "GET", "/tasks", headers={"Authorization": f"bearer {board.api_key}"}
    )
    assert ok.status == 200


# --- /tasks/next ordering --------------------------------------------------------------------
async def test_next_orders_by_priority_then_order_then_age_and_never_claims(
    make_board: MakeBoard, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    board = await make_board(clock=clock)

    def task(title: str, **fields: Any) -> str:
        created = board.create_task(title, **fields)
        clock.advance(10)
        return str(created["id"])

    low = task("low", priority="low")
    medium_old = task("medium old")
    medium_new = task("medium new")
    clock.advance(-10)  # same second as "medium new": insertion order decides
    medium_same_second = task("medium same second")
    medium_first_in_column = task("medium order -1", order=-1)
    high = task("high", priority="high", order=5)
    urgent = task("urgent", priority="urgent", order=9)
    # Not offered: wrong status, already assigned.
    task("urgent backlog", priority="urgent", status="backlog")
    task("urgent in progress", priority="urgent", status="in_progress")
    task("urgent review", priority="urgent", status="review")
    task("urgent assigned", priority="urgent", assigned_to="someone")

    expected = [
        urgent,
        high,
        medium_first_in_column,
        medium_old,
        medium_new,
        medium_same_second,
        low,
    ]
    for task_id in expected:
        first = await call(http, board, "GET", "/tasks/next")
        second = await call(http, board, "GET", "/tasks/next")
        assert first.body["task"]["id"] == second.body["task"]["id"] == task_id
        assert first.body["task"]["status"] == "todo"
        assert first.body["task"]["assigned_to"] is None
        claimed = await call(http, board, "POST", f"/tasks/{task_id}/claim", {"bot_name": "w"})
        assert claimed.status == 200

    empty = await call(http, board, "GET", "/tasks/next")
    assert empty.body == {"task": None, "project": None, "message": "No tasks available"}


async def test_next_filters_by_task_list(board: BoardHandle, http: aiohttp.ClientSession) -> None:
    board.store.create_task_list("Side project", repository_url="https://example.com/side.git")
    side = board.create_task("side", "side-project", priority="urgent")
    main = board.create_task("main", priority="low")

    anywhere = await call(http, board, "GET", "/tasks/next")
    assert anywhere.body["task"]["id"] == side["id"]
    assert anywhere.body["project"] == {
        "id": "side-project",
        "name": "Side project",
        "repository_url": "https://example.com/side.git",
    }
    only_default = await call(http, board, "GET", "/tasks/next", params={"task_list_id": "default"})
    assert only_default.body["task"]["id"] == main["id"]
    unknown = await call(http, board, "GET", "/tasks/next", params={"task_list_id": "nope"})
    assert unknown.body["task"] is None


# --- claim -----------------------------------------------------------------------------------
async def test_fifty_concurrent_claims_have_exactly_one_winner(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    task = board.create_task()
    replies = await asyncio.gather(
        *(
            call(http, board, "POST", f"/tasks/{task['id']}/claim", {"bot_name": f"w-{i}"})
            for i in range(50)
        )
    )
    winners = [r for r in replies if r.status == 200]
    losers = [r for r in replies if r.status != 200]
    assert len(winners) == 1
    assert len(losers) == 49
    for loser in losers:
        assert loser.status == 409
        assert loser.body["success"] is False
        assert loser.body["error"] == "Task already claimed"
    winner = winners[0].body["task"]["assigned_to"]
    assert board.store.get_task(task["id"])["assigned_to"] == winner


async def test_claim_refuses_taken_or_unavailable_tasks(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    missing = await call(http, board, "POST", "/tasks/task_nope/claim", {"bot_name": "w"})
    assert (missing.status, missing.body["category"]) == (404, "not_found")
    for status in ("backlog", "in_progress", "review", "done", "blocked"):
        task = board.create_task(status=status)
        reply = await call(http, board, "POST", f"/tasks/{task['id']}/claim", {"bot_name": "w"})
        assert reply.status == 409, status
        assert board.store.get_task(task["id"])["status"] == status
    assigned = board.create_task(assigned_to="human")
    reply = await call(http, board, "POST", f"/tasks/{assigned['id']}/claim", {"bot_name": "w"})
    assert reply.status == 409
    assert board.store.get_task(assigned["id"])["assigned_to"] == "human"


async def test_released_task_can_be_claimed_again(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    task = board.create_task()
    path = f"/tasks/{task['id']}"
    assert (await call(http, board, "POST", f"{path}/claim", {"bot_name": "a"})).status == 200
    released = await call(http, board, "PATCH", path, {"status": "todo", "assigned_to": None})
    assert released.body["task"]["status"] == "todo"
    again = await call(http, board, "POST", f"{path}/claim", {"bot_name": "b"})
    assert (again.status, again.body["task"]["assigned_to"]) == (200, "b")


# --- PATCH semantics -------------------------------------------------------------------------
async def test_patch_status_timestamps(make_board: MakeBoard, http: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    board = await make_board(clock=clock)
    task = board.create_task(status="backlog")
    path = f"/tasks/{task['id']}"

    async def patch(**fields: Any) -> dict[str, Any]:
        clock.advance(60)
        reply = await call(http, board, "PATCH", path, fields)
        assert reply.status == 200, reply
        result: dict[str, Any] = reply.body["task"]
        return result

    todo = await patch(status="todo")
    assert (todo["started_at"], todo["completed_at"]) == (None, None)
    assert todo["updated_at"] > task["updated_at"]
    started = await patch(status="in_progress", assigned_to="w")
    assert started["started_at"] == started["updated_at"]
    same = await patch(status="in_progress", loop_count=1)
    assert same["started_at"] == started["started_at"]
    review = await patch(status="review")
    assert review["completed_at"] == review["updated_at"]
    assert review["started_at"] == started["started_at"]
    done = await patch(status="done")
    assert done["completed_at"] == review["completed_at"]
    rerun = await patch(status="in_progress")
    assert rerun["started_at"] == rerun["updated_at"]
    assert rerun["completed_at"] is None


async def test_patch_edits_and_clears_fields(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    task = board.create_task(description="old", labels=["a"])
    path = f"/tasks/{task['id']}"
    edited = await call(
        http,
        board,
        "PATCH",
        path,
        {"title": " New title ", "priority": "urgent", "labels": ["x", "y"], "description": "new"},
    )
    body = edited.body["task"]
    assert (body["title"], body["priority"], body["labels"], body["description"]) == (
        "New title",
        "urgent",
        ["x", "y"],
        "new",
    )
    cleared = await call(
        http,
        board,
        "PATCH",
        path,
        {"description": None, "completion_notes": "", "pr_url": None, "assigned_to": ""},
    )
    body = cleared.body["task"]
    assert (body["description"], body["completion_notes"], body["pr_url"], body["assigned_to"]) == (
        None,
        None,
        None,
        None,
    )
    # Priority changes move the task in /tasks/next.
    board.create_task("high", priority="high")
    nxt = await call(http, board, "GET", "/tasks/next")
    assert nxt.body["task"]["id"] == task["id"]


# --- validation: 400, never 500 --------------------------------------------------------------
NEW = {"title": "ok", "task_list_id": "default"}
COMMENT = {"author": "w", "author_type": "bot", "content": "c", "comment_type": "progress"}

BAD_REQUESTS: list[tuple[str, str, Any, str]] = [
    # Bodies that are not JSON objects.
    ("POST", "/tasks", b"{not json", "Malformed JSON"),
    ("POST", "/tasks", b"", "must be a JSON object"),
    ("POST", "/tasks", b"[1, 2]", "must be a JSON object"),
    ("POST", "/tasks", b'"text"', "must be a JSON object"),
    ("POST", "/tasks", b"null", "must be a JSON object"),
    ("POST", "/tasks", b'{"title": "ok", "task_list_id": "default", "order": NaN}', "Malformed"),
    ("POST", "/tasks", b"[" * 100_000 + b"]" * 100_000, "Malformed JSON"),
    ("POST", "/tasks", b'\xff\xfe{"title": 1}', "UTF-8"),
    ("PATCH", "/tasks/{task}", b'{"status": "done",}', "Malformed JSON"),
    ("POST", "/tasks/{task}/claim", b"{", "Malformed JSON"),
    ("POST", "/tasks/{task}/comments", b"nope", "Malformed JSON"),
    ("POST", "/workers/heartbeat", b"", "must be a JSON object"),
    ("POST", "/task-lists", b"{'name': 'x'}", "Malformed JSON"),
    # POST /tasks fields.
    ("POST", "/tasks", {"task_list_id": "default"}, "title is required"),
    ("POST", "/tasks", {"title": "ok"}, "task_list_id is required"),
    ("POST", "/tasks", {**NEW, "title": 5}, "title must be a string"),
    ("POST", "/tasks", {**NEW, "title": "x" * 501}, "title must be at most 500 characters"),
    ("POST", "/tasks", {**NEW, "title": "   "}, "title must not be empty"),
    ("POST", "/tasks", {**NEW, "description": "d" * 5001}, "at most 5000"),
    ("POST", "/tasks", {**NEW, "title": "a\x00b"}, "NUL"),
    ("POST", "/tasks", b'{"title": "\\ud800", "task_list_id": "default"}', "valid Unicode"),
    ("POST", "/tasks", {**NEW, "priority": "critical"}, "priority must be one of"),
    ("POST", "/tasks", {**NEW, "status": "started"}, "status must be one of"),
    ("POST", "/tasks", {**NEW, "labels": "bug"}, "labels must be a list"),
    ("POST", "/tasks", {**NEW, "labels": [1]}, "labels[0] must be a string"),
    ("POST", "/tasks", {**NEW, "order": "1"}, "order must be an integer"),
    ("POST", "/tasks", {**NEW, "task_list_id": "nope"}, "Task list not found"),
    ("POST", "/tasks", {**NEW, "colour": "red"}, "Unknown field(s): colour"),
    # PATCH /tasks/{id}.
    ("PATCH", "/tasks/{task}", {}, "No fields to update"),
    ("PATCH", "/tasks/{task}", {"status": "started"}, "status must be one of"),
    ("PATCH", "/tasks/{task}", {"status": None}, "status must be one of"),
    ("PATCH", "/tasks/{task}", {"status": 3}, "status must be one of"),
    ("PATCH", "/tasks/{task}", {"error_count": -1}, "error_count must be between"),
    ("PATCH", "/tasks/{task}", {"error_count": True}, "error_count must be an integer"),
    ("PATCH", "/tasks/{task}", {"loop_count": 1.5}, "loop_count must be an integer"),
    ("PATCH", "/tasks/{task}", {"loop_count": 10**30}, "loop_count must be between"),
    ("PATCH", "/tasks/{task}", {"files_changed": [None]}, "files_changed[0] must be a string"),
    ("PATCH", "/tasks/{task}", {"files_changed": "a.py"}, "files_changed must be a list"),
    ("PATCH", "/tasks/{task}", {"completion_notes": "x" * 50_001}, "at most 50000"),
    ("PATCH", "/tasks/{task}", {"description": "x" * 5001}, "at most 5000"),
    ("PATCH", "/tasks/{task}", {"title": ""}, "title must not be empty"),
    ("PATCH", "/tasks/{task}", {"title": None}, "title must be a string"),
    ("PATCH", "/tasks/{task}", {"assigned_to": 7}, "assigned_to must be a string"),
    ("PATCH", "/tasks/{task}", {"assigned_to": "x" * 101}, "at most 100"),
    ("PATCH", "/tasks/{task}", {"priority": "HIGH"}, "priority must be one of"),
    ("PATCH", "/tasks/{task}", {"claude_session_id": "a\x00"}, "NUL"),
    ("PATCH", "/tasks/{task}", {"labels": ["x"] * 51}, "at most 50 entries"),
    ("PATCH", "/tasks/{task}", {"completion_note": "typo"}, "Unknown field(s): completion_note"),
    # Claim, comments, heartbeat, task lists.
    ("POST", "/tasks/{task}/claim", {}, "bot_name is required"),
    ("POST", "/tasks/{task}/claim", {"bot_name": "x" * 101}, "at most 100"),
    ("POST", "/tasks/{task}/claim", {"bot_name": ["w"]}, "bot_name must be a string"),
    ("POST", "/tasks/{task}/comments", {**COMMENT, "author_type": "robot"}, "author_type must"),
    ("POST", "/tasks/{task}/comments", {**COMMENT, "author": None}, "author is required"),
    ("POST", "/tasks/{task}/comments", {**COMMENT, "comment_type": "note"}, "comment_type must"),
    ("POST", "/tasks/{task}/comments", {**COMMENT, "content": "  "}, "content must not be"),
    ("POST", "/tasks/{task}/comments", {**COMMENT, "content": "x" * 50_001}, "at most 50000"),
    ("POST", "/tasks/{task}/comments", {**COMMENT, "loop_number": "3"}, "must be an integer"),
    ("POST", "/workers/heartbeat", {"worker_name": "", "status": "idle"}, "must not be empty"),
    ("POST", "/workers/heartbeat", {"worker_name": "x" * 101, "status": "idle"}, "at most 100"),
    ("POST", "/workers/heartbeat", {"worker_name": "w", "status": "busy"}, "status must be one"),
    ("POST", "/workers/heartbeat", {"worker_name": "w"}, "status is required"),
    (
        "POST",
        "/workers/heartbeat",
        {"worker_name": "w", "status": "idle", "current_task_id": 5},
        "current_task_id must be a string",
    ),
    ("POST", "/task-lists", {}, "name is required"),
    ("POST", "/task-lists", {"name": "x" * 201}, "at most 200"),
    ("POST", "/task-lists", {"name": "ok", "repository_url": "u" * 501}, "at most 500"),
    ("POST", "/task-lists", {"name": "!!!"}, "letter or digit"),
    # Query strings.
    ("GET", "/tasks?limit=0", None, "limit must be between 1 and 100"),
    ("GET", "/tasks?limit=101", None, "limit must be between 1 and 100"),
    ("GET", "/tasks?limit=abc", None, "limit must be an integer"),
    ("GET", "/tasks?limit=--5", None, "limit must be an integer"),
    ("GET", "/tasks?limit=99999999999999999999999", None, "limit must be an integer"),
    ("GET", "/tasks?offset=-1", None, "offset must be between"),
    ("GET", "/tasks?status=started", None, "status must be one of"),
    ("GET", "/tasks?priority=x", None, "priority must be one of"),
    ("GET", "/tasks?task_list_id=a%00b", None, "NUL"),
    ("GET", "/tasks/{task}/comments?limit=1000", None, "limit must be between 1 and 200"),
    ("GET", "/tasks/next?task_list_id=a%00b", None, "NUL"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    BAD_REQUESTS,
    ids=[f"{i}-{m} {p}"[:60] for i, (m, p, _b, _msg) in enumerate(BAD_REQUESTS)],
)
async def test_bad_input_is_400_with_a_clear_message(
    board: BoardHandle,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    body: Any,
    message: str,
) -> None:
    task = board.create_task()
    url_path = path.replace("{task}", task["id"])
    headers = board.headers
    if "?" in url_path:
        # Send the query exactly as written (%00 must reach the server).
        url = URL(board.url + url_path, encoded=True)
        async with http.request(method, url, headers=headers) as response:
            reply = Reply(response.status, response.headers, await response.text())
    else:
        reply = await call(http, board, method, url_path, body)
    assert reply.status == 400, reply
    assert reply.body["category"] == "validation"
    assert message in reply.body["error"], reply.body
    # The task is untouched by a refused PATCH.
    assert board.store.get_task(task["id"]) == task


WEIRD_VALUES: list[Any] = [
    None,
    True,
    -1,
    0,
    1.5,
    2**70,
    "",
    "x" * 60_000,
    "\x00",
    "\ud800",
    [],
    [None],
    ["ok", 3],
    {},
    {"a": 1},
]


async def test_no_field_value_makes_a_500(board: BoardHandle, http: aiohttp.ClientSession) -> None:
    task = board.create_task()
    outcomes: set[int] = set()

    async def send(method: str, path: str, body: dict[str, Any]) -> None:
        # json.dumps escapes a lone surrogate as \ud800, just as a JS client would send it.
        raw = json.dumps(body).encode()
        reply = await call(http, board, method, path, raw)
        assert reply.status in (200, 201, 400), (method, path, body, reply)
        assert reply.is_json
        outcomes.add(reply.status)

    for value in WEIRD_VALUES:
        for field in sorted(validation.PATCH_FIELDS):
            await send("PATCH", f"/tasks/{task['id']}", {field: value})
        for field in ("title", "description", "priority", "task_list_id", "labels", "status"):
            await send("POST", "/tasks", {**NEW, field: value})
        for field in COMMENT:
            await send("POST", f"/tasks/{task['id']}/comments", {**COMMENT, field: value})
        await send("POST", f"/tasks/{task['id']}/claim", {"bot_name": value})
        await send("POST", "/workers/heartbeat", {"worker_name": value, "status": "idle"})
        await send("POST", "/task-lists", {"name": value})
    assert outcomes >= {200, 400}


@pytest.mark.parametrize(
    "path",
    [
        "/tasks/%ED%A0%80",
        "/tasks/%FF",
        "/tasks/%00",
        "/tasks/..%2F..%2Fetc",
        "/tasks/%ED%A0%80/comments",
        "/tasks/%00/claim",
        "/task-lists/%ED%A0%80",
        "/tasks?assigned_to=%ED%A0%80",
        "/tasks/next?task_list_id=%FF",
    ],
)
async def test_odd_ids_in_paths_and_queries_never_500(
    board: BoardHandle, http: aiohttp.ClientSession, path: str
) -> None:
    for method in ("GET", "PATCH", "DELETE", "POST"):
        url = URL(board.url + path, encoded=True)
        async with http.request(method, url, headers=board.headers, json=COMMENT) as response:
            assert response.status in (200, 400, 404, 405), (method, path, response.status)


async def test_oversized_body_is_413_json(board: BoardHandle, http: aiohttp.ClientSession) -> None:
    raw = json.dumps({**NEW, "description": "x" * 5_000_000}).encode()
    async with http.post(board.url + "/tasks", data=io.BytesIO(raw), headers=board.headers) as r:
        reply = Reply(r.status, r.headers, await r.text())
    assert reply.status == 413
    assert reply.body["category"] == "validation"


async def test_unknown_route_and_method(board: BoardHandle, http: aiohttp.ClientSession) -> None:
    # No route: the HTML 404 of a Next.js dashboard, answered before authentication.
    for headers in (board.headers, {}):
        reply = await call(http, board, "GET", "/nothing/here", headers=headers)
        assert reply.status == 404
        assert not reply.is_json
        assert "404" in reply.text
    wrong_method = await call(http, board, "PUT", "/tasks")
    assert wrong_method.status == 405
    assert "POST" in wrong_method.headers["Allow"]


# --- rate limit ------------------------------------------------------------------------------
async def test_rate_limit_sliding_window(
    make_board: MakeBoard, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    start = clock.now
    board = await make_board(rate_limit=3, clock=clock)

    first = await call(http, board, "GET", "/tasks")
    assert first.status == 200
    assert first.headers["X-RateLimit-Limit"] == "3"
    assert first.headers["X-RateLimit-Remaining"] == "2"
    assert first.headers["X-RateLimit-Reset"] == iso(start + 60)

    clock.advance(10)
    # 4xx answers count too; unauthenticated requests do not (they are not this key's).
    not_found = await call(http, board, "GET", "/tasks/task_nope")
    assert (not_found.status, not_found.headers["X-RateLimit-Remaining"]) == (404, "1")
    invalid = await call(http, board, "POST", "/tasks", {"title": 1})
    assert (invalid.status, invalid.headers["X-RateLimit-Remaining"]) == (400, "0")
    anonymous = await call(http, board, "GET", "/tasks", headers={})
    assert anonymous.status == 401
    assert "X-RateLimit-Remaining" not in anonymous.headers

    limited = await call(http, board, "GET", "/tasks")
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "50"  # the first request leaves the window at +60
    assert limited.body == {
        "error": "Too many requests",
        "message": "Rate limit exceeded. Please try again later.",
        "retryAfter": 50,
    }
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert limited.headers["X-RateLimit-Reset"] == iso(start + 60)

    clock.advance(49.5)
    almost = await call(http, board, "GET", "/tasks")
    assert (almost.status, almost.headers["Retry-After"]) == (429, "1")  # 0.5 s rounds up

    clock.advance(0.5)
    freed = await call(http, board, "GET", "/tasks")
    assert freed.status == 200
    assert freed.headers["X-RateLimit-Remaining"] == "0"
    assert freed.headers["X-RateLimit-Reset"] == iso(start + 70)

    # The window is per key: another key of the workspace has its own budget.
    board.store.add_api_key("tk_test_second_key")
    other = await call(
        http, board, "GET", "/tasks", headers={"Authorization": "Bearer tk_test_second_key"}
    )
    assert (other.status, other.headers["X-RateLimit-Remaining"]) == (200, "2")


async def test_rate_limit_off_sends_no_headers(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    for _ in range(120):
        reply = await call(http, board, "GET", "/tasks/next")
        assert reply.status == 200
    assert "X-RateLimit-Limit" not in reply.headers


# --- feature switches ------------------------------------------------------------------------
async def test_switches_emulate_real_dashboards(
    make_board: MakeBoard, http: aiohttp.ClientSession
) -> None:
    board = await make_board(
        claim_route=False, heartbeat_route=False, comments_route=False, accept_blocked=False
    )
    task = board.create_task()
    beat = {"worker_name": "w", "status": "idle"}
    for method, path, body in (
        ("POST", f"/tasks/{task['id']}/claim", {"bot_name": "w"}),
        ("POST", "/workers/heartbeat", beat),
        ("GET", "/workers", None),
        ("GET", f"/tasks/{task['id']}/comments", None),
        ("POST", f"/tasks/{task['id']}/comments", COMMENT),
    ):
        reply = await call(http, board, method, path, body)
        assert reply.status == 404, (method, path, reply)
        assert not reply.is_json
    blocked = await call(http, board, "PATCH", f"/tasks/{task['id']}", {"status": "blocked"})
    assert blocked.status == 400
    assert "status must be one of" in blocked.body["error"]
    assert "blocked" not in blocked.body["details"]["allowed"]
    listing = await call(http, board, "GET", "/tasks", params={"status": "blocked"})
    assert listing.status == 400

    # The claim of such a server is a PATCH; the rest of the API is all there.
    patched = await call(
        http, board, "PATCH", f"/tasks/{task['id']}", {"status": "in_progress", "assigned_to": "w"}
    )
    assert patched.body["task"]["assigned_to"] == "w"
    assert (await call(http, board, "GET", "/task-lists")).status == 200


async def test_blocked_is_accepted_by_default(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    task = board.create_task()
    reply = await call(http, board, "PATCH", f"/tasks/{task['id']}", {"status": "blocked"})
    assert (reply.status, reply.body["task"]["status"]) == (200, "blocked")
    listing = await call(http, board, "GET", "/tasks", params={"status": "blocked"})
    assert [t["id"] for t in listing.body["tasks"]] == [task["id"]]


# --- persistence -----------------------------------------------------------------------------
async def test_data_and_key_survive_a_restart(
    make_board: MakeBoard, http: aiohttp.ClientSession, tmp_path: Any
) -> None:
    db = tmp_path / "persist.db"
    first = await make_board(db_path=db, api_key="tk_test_persistent")
    task = first.create_task("keep me")
    await call(http, first, "POST", f"/tasks/{task['id']}/comments", COMMENT)
    await call(http, first, "POST", "/task-lists", {"name": "Kept"})
    await first.server.aclose()
    first.store.close()

    second = await make_board(db_path=db, api_key="tk_test_other")
    old_key = {"Authorization": "Bearer tk_test_persistent"}
    got = await call(http, second, "GET", f"/tasks/{task['id']}", headers=old_key)
    assert (got.status, got.body["task"]["title"]) == (200, "keep me")
    comments = await call(http, second, "GET", f"/tasks/{task['id']}/comments", headers=old_key)
    assert comments.body["total"] == 1
    lists = await call(http, second, "GET", "/task-lists")
    assert sorted(t["id"] for t in lists.body["task_lists"]) == ["default", "kept"]


async def test_stop_and_start_keep_port_and_data(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    task = board.create_task("survives")
    url = board.url
    await board.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await call(http, board, "GET", f"/tasks/{task['id']}")
    await board.start()
    assert board.url == url
    reply = await call(http, board, "GET", f"/tasks/{task['id']}")
    assert (reply.status, reply.body["task"]["title"]) == (200, "survives")


async def test_board_client_fixture_works_on_the_board(
    board: BoardHandle, board_client: BoardClient
) -> None:
    task = board.create_task("via the client")
    offered = await board_client.next_task()
    assert offered.task is not None
    assert offered.task.id == task["id"]
    claimed = await board_client.claim(task["id"], "w-1")
    assert claimed is not None
    assert claimed.assigned_to == "w-1"
    assert await board_client.claim(task["id"], "w-2") is None
