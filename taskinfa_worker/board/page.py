"""The kanban page: its static files, the sign-in routes, and the change feed it polls.

``/`` and ``/static/*`` are public (they hold no data); everything the page shows comes from
``/api`` with the same authentication as the worker's requests (``access.py``). The page's
one read is ``GET /api/changes?since=V``: it waits (up to ``wait`` seconds) until the board's
version moves past ``V``, then answers with the whole board at the new version, built once
per version however many pages ask; 204 when nothing moved. Its actions use the documented
routes (``POST /api/tasks``, ``PATCH /api/tasks/{id}``, ``POST /api/tasks/{id}/comments``).
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
"""Seconds between two builds of the board view (the page redraws at most once a second)."""
CARD_FIELDS: Final = (
    *("id", "task_list_id", "title", "status", "priority", "assigned_to", "error_count"),
    *("started_at", "completed_at", "updated_at", "branch_name", "pr_url"),
)
"""What a card shows; the rest (description, notes, files) is read when a card is opened."""
PAGE_TASKS: Final = 1000
"""The most tasks the page shows (the newest stay visible on a board that grew larger)."""
LINKED_HOSTS: Final = ("github.com", "gitlab.com")
"""Hosts whose repositories show a branch at ``<repository>/tree/<branch>``."""
_CONTENT_TYPES: Final = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}
_CSP: Final = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"


@dataclass(frozen=True)
class View:
    """One built board view: when (monotonic), at which version, as JSON and gzipped."""

    built_at: float
    version: int
    body: bytes
    gzipped: bytes


@dataclass
class PageState:
    """What the page's routes share: the data, the sign-ins, the feed, the built answers."""

    store: BoardStore
    options: BoardOptions
    access: PageAccess = field(default_factory=PageAccess)
    feed: ChangeFeed = field(init=False)
    snapshots: dict[str, View] = field(default_factory=dict)
    """Per workspace, the last board view built."""
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
    view = await _snapshot(request.app, workspace, since, version)
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


async def _snapshot(app: web.Application, workspace: str, since: int, version: int) -> View:
    """The board view for a page that has ``since``: built at most every ``BUILD_EVERY``
    seconds however many pages ask, so a busy pool's stream of writes costs the board a
    bounded amount of work (a page that has the latest view waits for the next build)."""
    page = app[PAGE]
    cached = page.snapshots.get(workspace)
    if cached is not None:
        fresh = time.monotonic() - cached.built_at < BUILD_EVERY
        if cached.version == version or (fresh and cached.version != since):
            return cached
        if fresh:
            await asyncio.sleep(BUILD_EVERY - (time.monotonic() - cached.built_at))
            version = page.store.version()
    body = json.dumps(board_view(page.store, page.options, workspace, version)).encode()
    # Compressed once here, not once per page: every page then takes a few kilobytes.
    view = View(time.monotonic(), version, body, gzip.compress(body, compresslevel=5))
    page.snapshots[workspace] = view
    return view


def board_view(
    store: BoardStore, options: BoardOptions, workspace: str, version: int
) -> dict[str, Any]:
    """Everything the page draws, at ``version`` (or a little later, never earlier)."""
    cards, total = store.list_cards(CARD_FIELDS, workspace_id=workspace, limit=PAGE_TASKS)
    projects = {p["id"]: p for p in store.list_task_lists(workspace_id=workspace)}
    workers = store.list_workers(workspace_id=workspace)[0] if options.heartbeat_route else None
    comments = store.comment_counts(workspace_id=workspace)
    for card in cards:
        repository = (projects.get(card["task_list_id"]) or {}).get("repository_url")
        card["comments"] = comments.get(card["id"], 0)  # an open card rereads when it moves
        card["show_work"] = show_work_command(card["branch_name"], repository)
        card["branch_url"] = branch_url(card["branch_name"], repository)
    return {
        "version": version,
        "now": store.now(),
        "statuses": list(validation.task_statuses(options.accept_blocked)),
        "new_task_status": options.new_task_status,
        "comments": options.comments_route,
        "tasks": cards,
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
