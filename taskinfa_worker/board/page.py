"""The kanban page: its static files, the sign-in routes, and the change feed it polls.

``/`` and ``/static/*`` are public (they hold no data); everything the page shows comes from
``/api`` with the same authentication as the worker's requests (``access.py``). The page's
one read is ``GET /api/changes?since=V``: it waits (up to ``wait`` seconds) until the board's
version moves past ``V``, then answers with what changed since ``V`` (the cards changed, the
ids of the tasks deleted; the projects and workers whole), or the whole board when ``V`` is
-1; 204 when nothing moved. Each answer is built once however many pages ask it. Its actions
use the documented routes (``POST /api/tasks``, ``PATCH /api/tasks/{id}``,
``POST /api/tasks/{id}/comments``).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web

from taskinfa_worker.board import validation
from taskinfa_worker.board.access import SESSION_COOKIE, Caller, PageAccess, set_session_cookie
from taskinfa_worker.board.changes import ChangeFeed
from taskinfa_worker.board.profiles import BoardOptions
from taskinfa_worker.board.store import BoardStore

CHANGES_PATH: Final = "/api/changes"
SESSION_PATH: Final = "/api/session"
PAGE_ROUTES_UNLIMITED: Final = frozenset({CHANGES_PATH, SESSION_PATH})
"""The page's own reads and sign-in: kept out of the key's rate budget, which is the pool's."""
MAX_WAIT: Final = 60
DEFAULT_WAIT: Final = 25
BUILD_EVERY: Final = 0.5
"""Seconds between two board versions the pages are answered at (the page redraws at most
once a second)."""
CARD_FIELDS: Final = (
    *("id", "task_list_id", "title", "status", "priority", "assigned_to", "error_count"),
    *("started_at", "completed_at", "updated_at", "branch_name", "pr_url", "comment_count"),
    *("order", "created_at"),
)
"""What a card shows, and where it goes (``order``, ``created_at`` and ``seq``: board order);
the rest (description, notes, files) is read when a card is opened."""
PAGE_TASKS: Final = 1000
"""The most tasks the page shows. A larger board is sent whole on every change: which cards
fall within the first thousand is the board's to say."""
LINKED_HOSTS: Final = ("github.com", "gitlab.com")
"""Hosts whose repositories show a branch at ``<repository>/tree/<branch>``."""
_CONTENT_TYPES: Final = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}
_CSP: Final = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"


@dataclass(frozen=True)
class View:
    """One built answer of the feed, as JSON and gzipped (compressed once, not per page)."""

    body: bytes
    gzipped: bytes


@dataclass
class Answers:
    """The answers at one board version, one per version the pages asked from."""

    version: int
    started: float
    """Monotonic seconds when the pages were first answered at this version."""
    by_since: dict[int, View] = field(default_factory=dict)

    def fresh(self) -> bool:
        return self.left() > 0

    def left(self) -> float:
        return BUILD_EVERY - (time.monotonic() - self.started)


@dataclass
class PageState:
    """What the page's routes share: the data, the sign-ins, the feed, the built answers."""

    store: BoardStore
    options: BoardOptions
    access: PageAccess = field(default_factory=PageAccess)
    feed: ChangeFeed = field(init=False)
    answers: dict[str, Answers] = field(default_factory=dict)
    """Per workspace, the answers at the newest version the pages were answered at."""
    assets: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.feed = ChangeFeed(self.store.version)


PAGE: Final = web.AppKey("page", PageState)


def add_page_routes(app: web.Application, store: BoardStore, options: BoardOptions) -> None:
    """The page and its routes, on an app whose middleware authenticates ``/api``."""
    app[PAGE] = PageState(store, options, assets=_load_assets())

    async def close_feed(app: web.Application) -> None:
        await app[PAGE].feed.aclose()

    app.on_shutdown.append(close_feed)
    app.router.add_get("/", _index)
    app.router.add_get("/static/{name}", _asset)
    app.router.add_get(CHANGES_PATH, _changes)
    app.router.add_post(SESSION_PATH, _open_session)
    app.router.add_delete(SESSION_PATH, _close_session)


def _load_assets() -> dict[str, bytes]:
    # Read once from the installed package (the files ship in the wheel): a handful of
    # kilobytes served from memory, no build step and nothing fetched at run time.
    folder = resources.files("taskinfa_worker.board") / "static"
    return {item.name: item.read_bytes() for item in folder.iterdir() if item.is_file()}


def _served(app: web.Application, name: str) -> web.Response:
    body = app[PAGE].assets.get(name)
    suffix = name[name.rfind(".") :] if "." in name else ""
    if body is None or suffix not in _CONTENT_TYPES:
        raise web.HTTPNotFound()
    return web.Response(
        body=body,
        content_type=_CONTENT_TYPES[suffix],
        charset="utf-8",
        headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"},
    )


async def _index(request: web.Request) -> web.StreamResponse:
    token = request.query.get("login")
    if token is None:
        return _served(request.app, "index.html")
    # Spent or not, the token leaves the address bar (and the history) at once.
    session = request.app[PAGE].access.spend_login(token)
    if session is None:
        raise web.HTTPSeeOther("/?login=spent")
    response = web.HTTPSeeOther("/")
    set_session_cookie(response, session)
    raise response


async def _asset(request: web.Request) -> web.Response:
    return _served(request.app, request.match_info["name"])


async def _open_session(request: web.Request) -> web.Response:
    """The page sends the key once as a bearer (checked by the middleware) for a cookie."""
    caller = page_caller(request)
    response = web.json_response({"success": True})
    set_session_cookie(response, request.app[PAGE].access.open_session(caller.key_hash))
    return response


async def _close_session(request: web.Request) -> web.Response:
    session = request.cookies.get(SESSION_COOKIE)
    if session is not None:
        request.app[PAGE].access.close_session(session)
    response = web.json_response({"success": True})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def _changes(request: web.Request) -> web.Response:
    query = request.query
    since = validation.query_int(query, "since", default=-1, minimum=-1, maximum=2**62)
    wait = validation.query_int(query, "wait", default=DEFAULT_WAIT, minimum=0, maximum=MAX_WAIT)
    workspace = page_caller(request).workspace
    version = await request.app[PAGE].feed.wait_past(since, float(wait))
    if version == since:
        return web.Response(status=204)
    view = await _answer(request.app, workspace, since, version)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        return web.Response(
            body=view.gzipped,
            content_type="application/json",
            headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"},
        )
    return web.Response(body=view.body, content_type="application/json")


def page_caller(request: web.Request) -> Caller:
    """The caller the middleware accepted (looked up again: a dict hit)."""
    page = request.app[PAGE]
    return page.access.caller(request, page.store)


async def _answer(app: web.Application, workspace: str, since: int, version: int) -> View:
    """What changed since ``since``, at ``version`` or a later one. A new version is taken up
    at most every ``BUILD_EVERY`` seconds, so however many pages ask and however fast the
    pool writes, they are answered at few versions and share the answers (a page that has
    the newest waits for the next)."""
    page = app[PAGE]
    while True:
        answers = page.answers.get(workspace)
        if answers is None or (answers.version != version and not answers.fresh()):
            answers = Answers(page.store.version(), time.monotonic())
            page.answers[workspace] = answers
        if answers.version != since:
            break
        await asyncio.sleep(answers.left())
        version = page.store.version()
    view = answers.by_since.get(since)
    if view is None:
        changes = board_changes(page.store, page.options, workspace, since, answers.version)
        body = json.dumps(changes).encode()
        view = View(body, gzip.compress(body, compresslevel=5))
        answers.by_since[since] = view
    return view


def board_changes(
    store: BoardStore, options: BoardOptions, workspace: str, since: int, version: int
) -> dict[str, Any]:
    """What the page draws that changed after ``since``, at ``version`` (or a little later,
    never earlier: a card changed meanwhile is sent again next time). ``whole``: every card
    is there, and the page forgets those it had."""
    # -1 is a page's first ask; a version ahead of the board's is another file's (replaced).
    whole = since < 0 or since > version
    changed_after = None if whole else since
    cards, total = store.list_cards(
        CARD_FIELDS, workspace_id=workspace, limit=PAGE_TASKS, changed_after=changed_after
    )
    if total > PAGE_TASKS and not whole:
        whole = True
        cards, total = store.list_cards(CARD_FIELDS, workspace_id=workspace, limit=PAGE_TASKS)
    removed = [] if whole else store.removed_since(since, workspace_id=workspace)
    projects = {p["id"]: p for p in store.list_task_lists(workspace_id=workspace)}
    workers = store.list_workers(workspace_id=workspace)[0] if options.heartbeat_route else None
    # A card's links come from its project: projects are only ever added (the board changes
    # none), so a card the page keeps keeps the right ones.
    for card in cards:
        repository = (projects.get(card["task_list_id"]) or {}).get("repository_url")
        card["show_work"] = show_work_command(card["branch_name"], repository)
        card["branch_url"] = branch_url(card["branch_name"], repository)
    return {
        "version": version,
        "whole": whole,
        "now": store.now(),
        "statuses": list(validation.task_statuses(options.accept_blocked)),
        "new_task_status": options.new_task_status,
        "comments": options.comments_route,
        "tasks": cards,
        "removed": removed,
        "total": total,
        "projects": [
            {"id": p["id"], "name": p["name"], "repository_url": p["repository_url"]}
            for p in projects.values()
        ],
        "workers": workers,
    }


def show_work_command(branch: str | None, repository: str | None) -> str | None:
    """The ``git`` command that shows a task's branch, from wherever one is."""
    if not branch:
        return None
    if not repository:
        return f"git log --stat {branch}"
    local = repository.removeprefix("file://")
    if local.startswith("/"):
        return f"git -C {local} log --stat {branch}"
    return f"git fetch {repository} {branch} && git log --stat FETCH_HEAD"


def branch_url(branch: str | None, repository: str | None) -> str | None:
    """A web address of the branch, for hosts known to have one."""
    if not branch or not repository:
        return None
    parts = urlsplit(repository)
    if parts.scheme != "https" or parts.hostname not in LINKED_HOSTS:
        return None
    return f"{repository.removesuffix('.git').rstrip('/')}/tree/{branch}"
