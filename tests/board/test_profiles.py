"""The board's profiles over real HTTP: ``v1`` and ``v2`` behave as the real releases do
(API.md, "Real servers differ"), ``full`` as documented, and a switch overrides a profile."""

from __future__ import annotations

import aiohttp
import pytest

from taskinfa_worker.board import options_for
from taskinfa_worker.board.store import format_timestamp
from tests.board.http import call, iso
from tests.board_support import BoardHandle, FakeClock, MakeBoard

COMMENT = {"author": "w", "author_type": "bot", "content": "c", "comment_type": "progress"}


def test_switches_override_a_profile() -> None:
    assert options_for("v2", rate_limit=3).rate_limit == 3
    assert options_for("v2", rate_limit=3).claim_route is False
    with pytest.raises(ValueError, match="unknown board profile 'v3'"):
        options_for("v3")


@pytest.mark.parametrize(
    ("profile", "claim", "workers", "comments"),
    [("full", 200, 200, 201), ("v1", 404, 200, 404), ("v2", 404, 404, 201)],
)
async def test_routes_of_each_release(
    make_board: MakeBoard,
    http: aiohttp.ClientSession,
    profile: str,
    claim: int,
    workers: int,
    comments: int,
) -> None:
    board = await make_board(profile=profile)
    task = board.create_task()
    beat = {"worker_name": "w", "status": "idle"}
    claimed = await call(http, board, "POST", f"/tasks/{task['id']}/claim", {"bot_name": "w"})
    assert claimed.status == claim
    assert (await call(http, board, "POST", "/workers/heartbeat", beat)).status == workers
    assert (await call(http, board, "GET", "/workers")).status == workers
    added = await call(http, board, "POST", f"/tasks/{task['id']}/comments", COMMENT)
    assert added.status == comments
    blocked = await call(http, board, "PATCH", f"/tasks/{task['id']}", {"status": "blocked"})
    assert blocked.status == (200 if profile == "full" else 400)
    sessions = await call(http, board, "GET", "/sessions")
    assert sessions.status == (200 if profile == "v2" else 404)


async def test_v2_comments_need_author_and_author_type(
    make_board: MakeBoard, http: aiohttp.ClientSession
) -> None:
    board = await make_board(profile="v2")
    task = board.create_task()
    for missing in ("author", "author_type"):
        body = {k: v for k, v in COMMENT.items() if k != missing}
        reply = await call(http, board, "POST", f"/tasks/{task['id']}/comments", body)
        assert reply.status == 400
        assert reply.body["error"] == f"{missing} is required"


@pytest.mark.parametrize("profile", ["v1", "v2"])
async def test_real_releases_ignore_task_list_id_on_next(
    make_board: MakeBoard, http: aiohttp.ClientSession, profile: str
) -> None:
    board = await make_board(profile=profile)
    board.store.create_task_list("Other")
    theirs = board.create_task("theirs", "other", priority="urgent")
    board.create_task("ours", "default")
    offered = await call(http, board, "GET", "/tasks/next", params={"task_list_id": "default"})
    assert offered.body["task"]["id"] == theirs["id"]
    # The list route does filter, on both releases.
    listed = await call(
        http, board, "GET", "/tasks", params={"status": "todo", "task_list_id": "default"}
    )
    assert [t["title"] for t in listed.body["tasks"]] == ["ours"]


async def test_full_honours_task_list_id_on_next(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    board.store.create_task_list("Other")
    board.create_task("theirs", "other", priority="urgent")
    ours = board.create_task("ours", "default")
    offered = await call(http, board, "GET", "/tasks/next", params={"task_list_id": "default"})
    assert offered.body["task"]["id"] == ours["id"]


@pytest.mark.parametrize(("profile", "total"), [("full", 5), ("v1", 2), ("v2", 2)])
async def test_total_is_the_page_length_on_real_releases(
    make_board: MakeBoard, http: aiohttp.ClientSession, profile: str, total: int
) -> None:
    board = await make_board(profile=profile)
    for n in range(5):
        board.create_task(f"t{n}")
    page = await call(http, board, "GET", "/tasks", params={"limit": "2"})
    assert (len(page.body["tasks"]), page.body["total"]) == (2, total)


@pytest.mark.parametrize(("profile", "second"), [("full", "t2"), ("v1", "t0"), ("v2", "t2")])
async def test_offset_is_ignored_on_the_worker_era_release(
    make_board: MakeBoard, http: aiohttp.ClientSession, profile: str, second: str
) -> None:
    board = await make_board(profile=profile)
    for n in range(4):
        board.create_task(f"t{n}", order=n)
    page = await call(http, board, "GET", "/tasks", params={"limit": "2", "offset": "2"})
    assert page.body["tasks"][0]["title"] == second


@pytest.mark.parametrize(
    ("profile", "status"), [("full", "todo"), ("v1", "todo"), ("v2", "backlog")]
)
async def test_new_tasks_start_in_backlog_on_v2(
    make_board: MakeBoard, http: aiohttp.ClientSession, profile: str, status: str
) -> None:
    board = await make_board(profile=profile)
    created = await call(http, board, "POST", "/tasks", {"title": "x", "task_list_id": "default"})
    assert created.body["task"]["status"] == status
    told = {"title": "y", "task_list_id": "default", "status": "todo"}
    assert (await call(http, board, "POST", "/tasks", told)).body["task"]["status"] == "todo"
    offered = await call(http, board, "GET", "/tasks/next")
    assert offered.body["task"]["title"] == ("x" if status == "todo" else "y")


async def test_v2_next_skips_subtasks_and_waiting_tasks(
    make_board: MakeBoard, http: aiohttp.ClientSession
) -> None:
    board = await make_board(profile="v2")
    first = board.create_task("first", priority="low", status="review")
    board.create_task("subtask", priority="urgent", parent_task_id=first["id"])
    waiting = board.create_task("waiting", priority="high")
    board.store.add_dependency(waiting["id"], first["id"])
    free = board.create_task("free", priority="low")

    offered = await call(http, board, "GET", "/tasks/next")
    assert offered.body["task"]["id"] == free["id"]
    board.store.update_task(first["id"], {"status": "done"})
    offered = await call(http, board, "GET", "/tasks/next")
    assert offered.body["task"]["id"] == waiting["id"]


async def test_full_offers_subtasks_and_ignores_dependencies(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    first = board.create_task("first", status="review")
    waiting = board.create_task("waiting", priority="high")
    board.store.add_dependency(waiting["id"], first["id"])
    offered = await call(http, board, "GET", "/tasks/next")
    assert offered.body["task"]["id"] == waiting["id"]


async def test_v2_rate_limit_counts_task_routes_and_resets_a_minute_ahead(
    make_board: MakeBoard, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    board = await make_board(profile="v2", rate_limit=2, clock=clock)
    first = await call(http, board, "GET", "/tasks")
    assert first.headers["X-RateLimit-Reset"] == iso(clock.now + 60)
    clock.advance(30)
    second = await call(http, board, "GET", "/tasks/next")
    # A minute from now, not from the first request: what the real release always sends.
    assert second.headers["X-RateLimit-Reset"] == iso(clock.now + 60)
    # The one route of the release that is not counted.
    other_route = await call(http, board, "GET", "/llm-config")
    assert other_route.status == 200
    assert "X-RateLimit-Limit" not in other_route.headers
    limited = await call(http, board, "GET", "/tasks")
    assert (limited.status, limited.headers["Retry-After"]) == (429, "60")


async def test_v1_sends_no_rate_limit_headers(
    make_board: MakeBoard, http: aiohttp.ClientSession
) -> None:
    # The profile itself turns the limit off; the fixture's "off" is not what is tested.
    board = await make_board(profile="v1", rate_limit=options_for("v1").rate_limit)
    for _ in range(110):
        reply = await call(http, board, "GET", "/tasks")
        assert reply.status == 200
    assert "X-RateLimit-Limit" not in reply.headers


async def test_v2_sessions_as_the_release_keeps_them(
    make_board: MakeBoard, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    board = await make_board(profile="v2", clock=clock)
    task = board.create_task("Fix the login")
    body = {"project_id": "default", "current_task_id": task["id"], "summary": "w-1 on it"}
    created = await call(http, board, "POST", "/sessions", body)
    assert created.status == 201
    session = created.body["session"]
    assert session["id"].startswith("ses_")
    assert (session["status"], session["summary"]) == ("active", "w-1 on it")
    assert session["last_event_at"] == session["updated_at"] == board.store.now()
    assert "ended_at" not in session
    long = {"summary": "x" * 2001}
    assert (await call(http, board, "POST", "/sessions", long)).status == 400

    path = f"/sessions/{session['id']}"
    clock.advance(90)
    # An empty PATCH is no error and changes nothing, not even updated_at.
    unchanged = await call(http, board, "PATCH", path, {})
    assert (unchanged.status, unchanged.body["session"]) == (200, session)
    # last_event_at is stored as sent; updated_at is the board's clock.
    sent = "2020-01-01 00:00:00"
    patched = await call(http, board, "PATCH", path, {"last_event_at": sent, "status": "idle"})
    assert patched.body["session"]["last_event_at"] == sent
    assert patched.body["session"]["status"] == "idle"
    assert patched.body["session"]["updated_at"] == board.store.now()
    missing = await call(http, board, "PATCH", "/sessions/ses_nobody", {"status": "error"})
    assert (missing.status, missing.body["error"]) == (404, "Session not found")

    listed = await call(http, board, "GET", "/sessions", params={"status": "idle"})
    (row,) = listed.body["sessions"]
    assert (row["project_name"], row["current_task_title"]) == ("Default", "Fix the login")
    assert listed.body["stats"] == {"active": 0, "idle": 1, "stuck": 0, "completed": 0, "error": 0}


@pytest.mark.parametrize(
    ("event_type", "status"),
    [
        ("task_progress", "active"),
        ("stuck", "stuck"),
        ("needs_input", "stuck"),
        ("error", "error"),
        ("session_end", "completed"),
    ],
)
async def test_v2_an_event_is_its_sessions_sign_of_life_and_may_change_its_status(
    make_board: MakeBoard, http: aiohttp.ClientSession, event_type: str, status: str
) -> None:
    clock = FakeClock()
    board = await make_board(profile="v2", clock=clock)
    session = (await call(http, board, "POST", "/sessions", {})).body["session"]
    clock.advance(90)
    event = {"event_type": event_type, "session_id": session["id"], "message": "m"}
    posted = await call(http, board, "POST", "/events", event)
    assert posted.status == 201
    assert posted.body["event"]["id"].startswith("evt_")
    assert posted.body["event"]["metadata"] == {}
    assert "notified" not in posted.body["event"]
    detail = await call(http, board, "GET", f"/sessions/{session['id']}")
    assert detail.body["session"]["status"] == status
    assert detail.body["session"]["last_event_at"] == board.store.now()
    assert detail.body["session"]["updated_at"] == board.store.now()
    assert [e["event_type"] for e in detail.body["events"]] == [event_type]


async def test_v2_event_feed(make_board: MakeBoard, http: aiohttp.ClientSession) -> None:
    board = await make_board(profile="v2")
    task = board.create_task()
    session = (await call(http, board, "POST", "/sessions", {})).body["session"]
    for event_type in ("session_start", "task_claimed", "notification"):
        event = {"event_type": event_type, "session_id": session["id"], "task_id": task["id"]}
        assert (await call(http, board, "POST", "/events", event)).status == 201
    # An unknown session is no error: the event is stored (and, as there, never listed).
    ghost = {"event_type": "task_progress", "session_id": "ses_gone"}
    assert (await call(http, board, "POST", "/events", ghost)).status == 201
    assert (await call(http, board, "POST", "/events", {"event_type": "stuck"})).status == 201
    bad = await call(http, board, "POST", "/events", {"event_type": "task_started"})
    assert bad.status == 400
    too_long = {"event_type": "error", "message": "x" * 5001}
    assert (await call(http, board, "POST", "/events", too_long)).status == 400

    feed = await call(http, board, "GET", "/events")
    assert [e["event_type"] for e in feed.body["events"]] == [
        "stuck",
        "notification",
        "task_claimed",
        "session_start",
    ]
    assert feed.body["total"] == 4
    ofsession = await call(
        http, board, "GET", "/events", params={"session_id": session["id"], "limit": "2"}
    )
    assert [e["event_type"] for e in ofsession.body["events"]] == ["notification", "task_claimed"]
    assert ofsession.body["total"] == 2  # the page's length, as on the release
    claimed = await call(http, board, "GET", "/events", params={"event_type": "task_claimed"})
    assert [e["task_id"] for e in claimed.body["events"]] == [task["id"]]


async def test_v2_agent_routes_count_against_the_budget(
    make_board: MakeBoard, http: aiohttp.ClientSession
) -> None:
    board = await make_board(profile="v2", rate_limit=2)
    first = await call(http, board, "POST", "/sessions", {})
    assert first.headers["X-RateLimit-Limit"] == "2"
    assert (await call(http, board, "POST", "/events", {"event_type": "stuck"})).status == 201
    limited = await call(http, board, "GET", "/tasks")
    assert limited.status == 429


async def test_v2_pending_messages_are_tasks_waiting_for_the_agent(
    make_board: MakeBoard, http: aiohttp.ClientSession
) -> None:
    clock = FakeClock()
    board = await make_board(profile="v2", clock=clock)
    asked, answered, quiet = (board.create_task(t) for t in ("asked", "answered", "quiet"))
    person = {"author": "ana", "author_type": "user", "comment_type": "human_message"}
    for task in (asked, answered):
        board.store.add_comment(task["id"], content="please add tests", **person)
    clock.advance(1)
    board.store.add_comment(
        answered["id"], author="bot", author_type="bot", content="done", comment_type="progress"
    )
    board.store.add_comment(quiet["id"], author="ana", content="note", comment_type="comment")
    pending = await call(http, board, "GET", "/tasks/pending-messages")
    assert [t["id"] for t in pending.body["tasks"]] == [asked["id"]]


async def test_v2_pending_messages_follow_the_release_query_oldest_message_first(
    make_board: MakeBoard, http: aiohttp.ClientSession
) -> None:
    """As the release's handler: oldest waiting message first (not oldest task), and the
    newest comment is judged by its stamp alone, which counts seconds: a worker's reply in
    the message's second does not hide it, and two messages in one second list the task
    twice."""
    clock = FakeClock()
    board = await make_board(profile="v2", clock=clock)
    older, newer = board.create_task("older task"), board.create_task("newer task")
    person = {"author": "ana", "author_type": "user", "comment_type": "human_message"}
    clock.advance(1)
    board.store.add_comment(newer["id"], content="first", **person)
    board.store.add_comment(newer["id"], content="again", **person)
    clock.advance(1)
    board.store.add_comment(older["id"], content="later", **person)
    board.store.add_comment(
        older["id"], author="bot", author_type="bot", content="on it", comment_type="progress"
    )
    pending = await call(http, board, "GET", "/tasks/pending-messages")
    assert [t["id"] for t in pending.body["tasks"]] == [newer["id"], newer["id"], older["id"]]


async def test_v2_llm_config_answers_rows_as_the_release_keeps_them(
    make_board: MakeBoard, http: aiohttp.ClientSession
) -> None:
    """Set through the settings page's routes, answered as the release's GET does: every
    provider row with its token in plain text (by name), every choice (by kind)."""
    board = await make_board(profile="v2")
    proxy = {"provider": "litellm", "base_url": "http://127.0.0.1:9", "auth_token": "sk-secret"}
    set_provider = await call(http, board, "PATCH", "/llm-config/providers", proxy)
    assert set_provider.status == 200
    await call(http, board, "PATCH", "/llm-config/providers", {"provider": "anthropic"})
    message = {"session_type": "message", "provider": "anthropic", "model": "m-chat"}
    for choice in (
        {"session_type": "task", "provider": "anthropic", "model": "m-global"},
        {"session_type": "task", "provider": "litellm", "model": "m-b", "task_list_id": "default"},
        message,
    ):
        assert (await call(http, board, "PATCH", "/llm-config/session", choice)).status == 200
    config = (await call(http, board, "GET", "/llm-config")).body
    assert [(p["provider"], p["base_url"], p["auth_token"]) for p in config["providers"]] == [
        ("anthropic", None, None),
        ("litellm", "http://127.0.0.1:9", "sk-secret"),
    ]
    assert set(config["providers"][1]) == {
        "id",
        "workspace_id",
        "provider",
        "base_url",
        "auth_token",
        "created_at",
        "updated_at",
    }
    assert config["providers"][1]["id"].startswith("llmp_")
    assert [
        (c["session_type"], c["task_list_id"], c["provider"], c["model"])
        for c in config["session_configs"]
    ] == [
        ("message", None, "anthropic", "m-chat"),
        ("task", None, "anthropic", "m-global"),
        ("task", "default", "litellm", "m-b"),
    ]
    assert config["session_configs"][0]["id"].startswith("llmsc_")


async def test_v2_llm_config_updates_in_place(
    make_board: MakeBoard, http: aiohttp.ClientSession
) -> None:
    """A provider set again keeps the fields not sent; a choice set again is replaced, and
    a deleted one is gone (one row per provider, one per kind and project)."""
    board = await make_board(profile="v2")
    first = {"provider": "ollama", "base_url": "http://127.0.0.1:11434", "auth_token": "t1"}
    await call(http, board, "PATCH", "/llm-config/providers", first)
    renewed = {"provider": "ollama", "auth_token": "t2"}
    row = (await call(http, board, "PATCH", "/llm-config/providers", renewed)).body["provider"]
    assert (row["base_url"], row["auth_token"]) == ("http://127.0.0.1:11434", "t2")
    global_choice = {"session_type": "task", "provider": "ollama", "model": "a"}
    await call(http, board, "PATCH", "/llm-config/session", global_choice)
    replaced = {**global_choice, "model": None}
    await call(http, board, "PATCH", "/llm-config/session", replaced)
    config = (await call(http, board, "GET", "/llm-config")).body
    assert len(config["providers"]) == 1
    assert [(c["task_list_id"], c["model"]) for c in config["session_configs"]] == [(None, None)]
    gone = await call(http, board, "DELETE", "/llm-config/session", {"session_type": "task"})
    assert gone.body == {"deleted": True}
    assert (await call(http, board, "GET", "/llm-config")).body["session_configs"] == []


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/llm-config/providers", {"provider": "gpt"}, "provider"),
        ("/llm-config/providers", {"base_url": "http://x"}, "provider"),
        ("/llm-config/providers", {"provider": "custom", "auth_token": 7}, "auth_token"),
        ("/llm-config/session", {"session_type": "chat", "provider": "anthropic"}, "session_type"),
        ("/llm-config/session", {"session_type": "task"}, "provider"),
    ],
)
async def test_v2_llm_config_refuses_bad_settings(
    make_board: MakeBoard, http: aiohttp.ClientSession, path: str, body: object, field: str
) -> None:
    board = await make_board(profile="v2")
    refused = await call(http, board, "PATCH", path, body)
    assert refused.status == 400
    assert refused.body["details"]["field"] == field
    assert (await call(http, board, "GET", "/llm-config")).body == {
        "providers": [],
        "session_configs": [],
    }


async def test_v2_limits_projects_but_not_the_model_choice(
    make_board: MakeBoard, http: aiohttp.ClientSession
) -> None:
    """As the release: ``/task-lists`` counts against the key's minute and says so in its
    headers; ``/llm-config``, which its orchestrator reads every cycle, does not."""
    board = await make_board(profile="v2", rate_limit=2)
    listed = await call(http, board, "GET", "/task-lists")
    assert listed.headers["X-RateLimit-Remaining"] == "1"
    assert (await call(http, board, "GET", "/task-lists/default")).status == 200
    assert (await call(http, board, "GET", "/task-lists")).status == 429
    for _ in range(3):
        config = await call(http, board, "GET", "/llm-config")
        assert config.status == 200
        assert "X-RateLimit-Limit" not in config.headers


@pytest.mark.parametrize(("profile", "moves"), [("full", True), ("v1", False), ("v2", False)])
async def test_real_releases_set_started_and_completed_only_the_first_time(
    make_board: MakeBoard, http: aiohttp.ClientSession, profile: str, moves: bool
) -> None:
    # The real PATCH handler writes COALESCE(started_at, now): a task that reached review and
    # was sent back keeps its first timestamps, so completed_at > started_at from then on.
    clock = FakeClock()
    board = await make_board(profile=profile, clock=clock)
    task_path = f"/tasks/{board.create_task()['id']}"

    async def move(status: str) -> dict[str, str | None]:
        clock.advance(60)
        reply = await call(http, board, "PATCH", task_path, {"status": status})
        assert reply.status == 200, reply
        return dict(reply.body["task"])

    first = await move("in_progress")
    assert first["started_at"] == format_timestamp(clock.now)
    reviewed = await move("review")
    assert reviewed["completed_at"] == format_timestamp(clock.now)
    await move("todo")
    again = await move("in_progress")
    if moves:  # as API.md documents: the second run has its own start, no completion yet
        assert (again["started_at"], again["completed_at"]) == (format_timestamp(clock.now), None)
    else:
        assert (again["started_at"], again["completed_at"]) == (
            first["started_at"],
            reviewed["completed_at"],
        )
        assert (await move("done"))["completed_at"] == reviewed["completed_at"]


async def test_a_claim_keeps_the_first_start_where_timestamps_are_set_once(
    make_board: MakeBoard, http: aiohttp.ClientSession
) -> None:
    # No real release has the claim route; a board that adds it keeps the same timestamps.
    clock = FakeClock()
    board = await make_board(claim_route=True, timestamps_once=True, clock=clock)
    task = board.create_task()
    claim = f"/tasks/{task['id']}/claim"
    first = await call(http, board, "POST", claim, {"bot_name": "w"})
    await call(http, board, "PATCH", f"/tasks/{task['id']}", {"status": "review"})
    await call(
        http, board, "PATCH", f"/tasks/{task['id']}", {"status": "todo", "assigned_to": None}
    )
    clock.advance(60)
    second = await call(http, board, "POST", claim, {"bot_name": "w"})
    assert second.status == 200, second
    assert second.body["task"]["started_at"] == first.body["task"]["started_at"]
    assert second.body["task"]["completed_at"] is not None
