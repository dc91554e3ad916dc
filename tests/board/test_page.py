"""The kanban page's server side over real HTTP: its files, who may read the board through
it (key, one-time link, session cookie), and the change feed every open page waits on."""

from __future__ import annotations

import asyncio
from http.cookies import SimpleCookie

import aiohttp

from taskinfa_worker.board.store import hash_key
from tests.board_support import BoardHandle, MakeBoard


def page_of(board: BoardHandle) -> str:
    return board.server.page


async def signed_in_cookie(http: aiohttp.ClientSession, board: BoardHandle) -> dict[str, str]:
    """Follow a fresh one-time link; the session cookie it set, as a request header."""
    link = board.server.login_link(hash_key(board.api_key))
    async with http.get(link, allow_redirects=False) as response:
        assert response.status == 303
        assert response.headers["Location"] == "/"
        cookie = SimpleCookie(response.headers["Set-Cookie"])
    (morsel,) = cookie.values()
    return {"Cookie": f"{morsel.key}={morsel.value}"}


async def test_the_page_and_its_files_are_served_to_anyone(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    async with http.get(page_of(board)) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        html = await response.text()
    assert '<script src="/static/board.js"' in html
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    for name, kind in (("board.js", "text/javascript"), ("board.css", "text/css")):
        async with http.get(f"{page_of(board)}static/{name}") as response:
            assert (response.status, response.content_type) == (200, kind)
    async with http.get(f"{page_of(board)}static/nothing.js") as response:
        assert response.status == 404


async def test_without_key_or_session_the_api_says_401(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    board.create_task("Secret plans")
    for path in ("/changes", "/tasks"):
        async with http.get(f"{board.url}{path}") as response:
            assert response.status == 401
            assert "Secret plans" not in await response.text()
    forged = {"Cookie": "taskinfa_board_session=made-up"}
    async with http.get(f"{board.url}/changes", headers=forged) as response:
        assert response.status == 401


async def test_the_one_time_link_sets_a_strict_http_only_cookie_and_is_spent(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    link = board.server.login_link(hash_key(board.api_key))
    async with http.get(link, allow_redirects=False) as response:
        assert response.status == 303
        set_cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie
    assert "SameSite=Strict" in set_cookie
    async with http.get(link, allow_redirects=False) as again:
        assert again.status == 303
        assert again.headers["Location"] == "/?login=spent"
        assert "Set-Cookie" not in again.headers


async def test_a_session_reads_and_acts_like_the_key(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    cookie = await signed_in_cookie(http, board)
    origin = {"Origin": page_of(board).rstrip("/")}
    body = {"title": "From the page", "task_list_id": "default", "status": "todo"}
    async with http.post(f"{board.url}/tasks", json=body, headers={**cookie, **origin}) as made:
        assert made.status == 201
    # The same validation as the worker's requests: an unknown field is refused.
    bad = {**body, "owner": "me"}
    async with http.post(f"{board.url}/tasks", json=bad, headers={**cookie, **origin}) as refused:
        assert refused.status == 400
    async with http.get(f"{board.url}/changes", headers=cookie) as response:
        assert response.status == 200
        view = await response.json()
    assert [task["title"] for task in view["tasks"]] == ["From the page"]


async def test_another_site_cannot_act_with_the_session(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    cookie = await signed_in_cookie(http, board)
    body = {"title": "Forged", "task_list_id": "default"}
    other = {**cookie, "Origin": "http://evil.example"}
    async with http.post(f"{board.url}/tasks", json=body, headers=other) as response:
        assert response.status == 401
    assert board.store.list_tasks()[1] == 0


async def test_typing_the_key_once_opens_a_session_and_revoking_the_key_ends_it(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{board.url}/session", headers=board.headers) as response:
        assert response.status == 200
        (morsel,) = SimpleCookie(response.headers["Set-Cookie"]).values()
    cookie = {"Cookie": f"{morsel.key}={morsel.value}"}
    async with http.get(f"{board.url}/changes", headers=cookie) as response:
        assert response.status == 200
    board.store.revoke_api_key(board.api_key)
    async with http.get(f"{board.url}/changes", headers=cookie) as response:
        assert response.status == 401


async def test_a_waiting_page_hears_of_a_change_and_an_idle_wait_ends_empty(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{board.url}/changes", headers=board.headers) as response:
        version = (await response.json())["version"]
    async with http.get(
        f"{board.url}/changes?since={version}&wait=0", headers=board.headers
    ) as idle:
        assert idle.status == 204

    async def wait_for_change() -> dict[str, object]:
        async with http.get(
            f"{board.url}/changes?since={version}&wait=60", headers=board.headers
        ) as answer:
            assert answer.status == 200
            view: dict[str, object] = await answer.json()
            return view

    pages = [asyncio.create_task(wait_for_change()) for _ in range(20)]
    await asyncio.sleep(0)  # let them start; the change below may come before or after
    # Written straight to the file, as another process would: no request nudges the feed.
    task = board.create_task("Appears live", status="todo")
    views = await asyncio.wait_for(asyncio.gather(*pages), timeout=30)
    for view in views:
        assert view["version"] != version
        assert [t["id"] for t in view["tasks"]] == [task["id"]]  # type: ignore[attr-defined]


async def test_the_feed_is_not_counted_against_the_key_s_rate_limit(
    make_board: MakeBoard, http: aiohttp.ClientSession
) -> None:
    board = await make_board(rate_limit=3)
    for _ in range(10):
        async with http.get(f"{board.url}/changes?wait=0", headers=board.headers) as response:
            assert response.status == 200
    async with http.get(f"{board.url}/tasks", headers=board.headers) as response:
        assert response.status == 200  # the worker's budget is untouched
        assert response.headers["X-RateLimit-Remaining"] == "2"


async def test_the_view_shows_where_the_work_is(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    board.store.create_task_list("Site", repository_url="https://github.com/acme/site.git")
    board.store.create_task_list("Local", repository_url="/srv/git/app.git")
    board.create_task("Remote", "site", status="review")
    board.create_task("On disk", "local", status="review")
    for task in board.store.list_tasks()[0]:
        board.store.update_task(task["id"], {"branch_name": f"taskinfa/{task['id']}-x"})
    async with http.get(f"{board.url}/changes", headers=board.headers) as response:
        view = await response.json()
    by_title = {task["title"]: task for task in view["tasks"]}
    remote, local = by_title["Remote"], by_title["On disk"]
    assert remote["branch_url"] == f"https://github.com/acme/site/tree/{remote['branch_name']}"
    assert remote["show_work"] == (
        f"git fetch https://github.com/acme/site.git {remote['branch_name']} "
        "&& git log --stat FETCH_HEAD"
    )
    assert local["branch_url"] is None
    assert (remote["comment_count"], local["comment_count"]) == (0, 0)
    board.store.add_comment(remote["id"], author="tester-1", content="50%", comment_type="progress")
    async with http.get(f"{board.url}/changes?since={view['version']}", headers=board.headers) as r:
        again = {task["title"]: task for task in (await r.json())["tasks"]}
    assert again["Remote"]["comment_count"] == 1
    assert local["show_work"] == f"git -C /srv/git/app.git log --stat {local['branch_name']}"


async def test_a_page_is_sent_what_changed_since_its_version(
    board: BoardHandle, http: aiohttp.ClientSession
) -> None:
    kept, moved, deleted = (board.create_task(title)["id"] for title in ("Kept", "Moved", "Gone"))
    async with http.get(f"{board.url}/changes", headers=board.headers) as response:
        first = await response.json()
    assert first["whole"] is True
    assert [task["id"] for task in first["tasks"]] == [kept, moved, deleted]
    board.store.update_task(moved, {"status": "review"})
    board.store.delete_task(deleted)
    since = f"{board.url}/changes?since={first['version']}"
    async with http.get(since, headers=board.headers) as response:
        changes = await response.json()
    # Only the card that changed travels; the one deleted is named, the one kept is not sent.
    assert changes["whole"] is False
    assert [(task["id"], task["status"]) for task in changes["tasks"]] == [(moved, "review")]
    assert changes["removed"] == [deleted]
    assert changes["total"] == 2
    board.store.add_comment(kept, author="tester-1", content="50%", comment_type="progress")
    async with http.get(
        f"{board.url}/changes?since={changes['version']}", headers=board.headers
    ) as response:
        commented = await response.json()
    assert [(task["id"], task["comment_count"]) for task in commented["tasks"]] == [(kept, 1)]
    assert commented["removed"] == []
