"""The local board's HTTP API (``/api``, see API.md): aiohttp routes over a ``BoardStore``.

One middleware does what every real route does first: authenticate the caller (401), a
bearer key or a page session standing for one (``access.py``), count the request against
the key's sliding window (429; the page's change feed and sign-in are not counted), then
run the handler and turn any ``Problem`` into the real server's JSON error body. A path
with no route answers 404 with an HTML page before authentication, the way a Next.js
dashboard does; that is what the switches of ``profiles.BoardOptions`` produce for the
routes a real release lacks.
The kanban page's files (``/``, ``/static/*``) are public; ``page.py`` has their routes.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler
from loguru import logger

from taskinfa_worker.board import validation
from taskinfa_worker.board.access import SAFE_METHODS
from taskinfa_worker.board.agent_routes import LLM, RECORDS, add_agent_routes
from taskinfa_worker.board.agent_store import AgentRecords
from taskinfa_worker.board.llm_store import LlmRecords
from taskinfa_worker.board.page import PAGE, PAGE_ROUTES_UNLIMITED, add_page_routes, page_caller
from taskinfa_worker.board.problems import Conflict, Problem, TooLarge
from taskinfa_worker.board.profiles import BoardOptions
from taskinfa_worker.board.quota import Decision, SlidingWindowLimiter
from taskinfa_worker.board.store import BoardStore

API_PREFIX: Final = "/api"
MAX_BODY_BYTES: Final = 4 * 1024 * 1024
NEXT_HEARTBEAT_IN: Final = 10


STORE: Final = web.AppKey("store", BoardStore)
OPTIONS: Final = web.AppKey("options", BoardOptions)
LIMITER: Final = web.AppKey("limiter", SlidingWindowLimiter)


_NOT_FOUND_PAGE: Final = (
    "<!DOCTYPE html><html><head><title>404: This page could not be found.</title></head>"
    "<body><h1>404</h1><h2>This page could not be found.</h2></body></html>"
)


def create_app(store: BoardStore, options: BoardOptions | None = None) -> web.Application:
    """The board application. The caller owns ``store`` and closes it after the app."""
    options = options or BoardOptions()
    app = web.Application(middlewares=[_api_middleware], client_max_size=MAX_BODY_BYTES)
    app[STORE] = store
    app[OPTIONS] = options
    if options.rate_limit > 0:
        app[LIMITER] = SlidingWindowLimiter(
            options.rate_limit,
            clock=store.clock,
            reset_a_window_ahead=options.reset_a_minute_ahead,
        )

    r = app.router
    # /tasks/next (and pending-messages) before /tasks/{id}, or the pattern would take
    # "next" for a task id.
    r.add_get(f"{API_PREFIX}/tasks/next", _next_task)
    if options.agent_routes:
        app[RECORDS] = AgentRecords(store)
        app[LLM] = LlmRecords(store)
        add_agent_routes(app, API_PREFIX, _workspace, _body)
    r.add_get(f"{API_PREFIX}/tasks", _list_tasks)
    r.add_post(f"{API_PREFIX}/tasks", _create_task)
    r.add_get(f"{API_PREFIX}/tasks/{{task_id}}", _get_task)
    r.add_patch(f"{API_PREFIX}/tasks/{{task_id}}", _update_task)
    r.add_delete(f"{API_PREFIX}/tasks/{{task_id}}", _delete_task)
    if options.claim_route:
        r.add_post(f"{API_PREFIX}/tasks/{{task_id}}/claim", _claim_task)
    if options.comments_route:
        r.add_get(f"{API_PREFIX}/tasks/{{task_id}}/comments", _list_comments)
        r.add_post(f"{API_PREFIX}/tasks/{{task_id}}/comments", _add_comment)
    if options.heartbeat_route:
        r.add_post(f"{API_PREFIX}/workers/heartbeat", _heartbeat)
        r.add_get(f"{API_PREFIX}/workers", _list_workers)
    r.add_get(f"{API_PREFIX}/task-lists", _list_task_lists)
    r.add_post(f"{API_PREFIX}/task-lists", _create_task_list)
    r.add_get(f"{API_PREFIX}/task-lists/{{task_list_id}}", _get_task_list)
    add_page_routes(app, store, options)
    return app


# --- middleware ----------------------------------------------------------------------------
@web.middleware
async def _api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    missing = request.match_info.http_exception
    if missing is not None:
        return _no_route(missing)
    if not request.path.startswith(f"{API_PREFIX}/"):
        return await handler(request)  # the page's files: public, they hold no data
    try:
        caller = page_caller(request)
    except Problem as problem:
        return _problem(problem, headers={"WWW-Authenticate": "Bearer"})

    decision: Decision | None = None
    limiter = request.app.get(LIMITER)
    if limiter is not None and _rate_limited_route(request):
        decision = limiter.hit(caller.key_hash)
        if not decision.allowed:
            return _rate_limited(decision)

    response: web.StreamResponse
    try:
        response = await handler(request)
    except Problem as problem:
        response = _problem(problem)
    except Exception:
        # A 500 here is a board bug, never the client's input: log it with the traceback.
        logger.exception("local board: unexpected error on {} {}", request.method, request.path)
        response = web.json_response(
            {"error": "Internal server error", "category": "internal"}, status=500
        )
    if decision is not None:
        response.headers.update(decision.headers())
    if request.method not in SAFE_METHODS and response.status < 400:
        request.app[PAGE].feed.nudge()  # open pages hear of the write at once
    return response


# The routes the current release limits (and sends the headers on): tasks, projects and the
# agent's. Not /llm-config, which its orchestrator reads every cycle.
_LIMITED_ROUTES: Final = ("/tasks", "/task-lists", "/sessions", "/events")


def _rate_limited_route(request: web.Request) -> bool:
    if request.path in PAGE_ROUTES_UNLIMITED:
        return False
    if not request.app[OPTIONS].rate_limit_task_routes_only:
        return True
    return any(
        request.path == API_PREFIX + route or request.path.startswith(f"{API_PREFIX}{route}/")
        for route in _LIMITED_ROUTES
    )


def _no_route(missing: web.HTTPException) -> web.Response:
    if isinstance(missing, web.HTTPMethodNotAllowed):
        return web.json_response(
            {"error": f"Method {missing.method} not allowed", "category": "validation"},
            status=405,
            headers={"Allow": ", ".join(sorted(missing.allowed_methods))},
        )
    return web.Response(status=404, text=_NOT_FOUND_PAGE, content_type="text/html")


def _problem(problem: Problem, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(problem.body(), status=problem.status, headers=headers)


def _rate_limited(decision: Decision) -> web.Response:
    body = {
        "error": "Too many requests",
        "message": "Rate limit exceeded. Please try again later.",
        "retryAfter": decision.retry_after,
    }
    headers = {**decision.headers(), "Retry-After": str(decision.retry_after)}
    return web.json_response(body, status=429, headers=headers)


# --- helpers -------------------------------------------------------------------------------
def _store(request: web.Request) -> BoardStore:
    return request.app[STORE]


def _workspace(request: web.Request) -> str:
    # Looked up again rather than stored on the request: the middleware has already
    # accepted this caller, the lookup is a cached dict hit, and string request keys are
    # deprecated in newer aiohttp while RequestKey is missing from older ones.
    return page_caller(request).workspace


def _statuses(request: web.Request) -> tuple[str, ...]:
    return validation.task_statuses(request.app[OPTIONS].accept_blocked)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise TooLarge(f"Request body is larger than {MAX_BODY_BYTES} bytes") from None
    return validation.parse_object(raw)


# --- tasks ---------------------------------------------------------------------------------
async def _next_task(request: web.Request) -> web.Response:
    options = request.app[OPTIONS]
    # Real releases read no query parameter here: the filter is silently not applied.
    task_list_id = (
        validation.query_text(request.query, "task_list_id")
        if options.next_filters_task_list
        else None
    )
    found = _store(request).next_task(
        workspace_id=_workspace(request),
        task_list_id=task_list_id,
        skip_waiting=options.next_skips_waiting,
    )
    if found is None:
        return web.json_response({"task": None, "project": None, "message": "No tasks available"})
    task, project = found
    return web.json_response({"task": task, "project": project})


async def _claim_task(request: web.Request) -> web.Response:
    bot_name = validation.claim(await _body(request))
    try:
        task = _store(request).claim_task(
            request.match_info["task_id"],
            bot_name,
            workspace_id=_workspace(request),
            timestamps_once=request.app[OPTIONS].timestamps_once,
        )
    except Conflict as conflict:
        return web.json_response(
            {"success": False, "error": conflict.message, "category": conflict.category},
            status=409,
        )
    return web.json_response({"success": True, "task": task})


async def _get_task(request: web.Request) -> web.Response:
    task = _store(request).get_task(request.match_info["task_id"], workspace_id=_workspace(request))
    return web.json_response({"task": task})


async def _update_task(request: web.Request) -> web.Response:
    fields = validation.task_patch(await _body(request), _statuses(request))
    task = _store(request).update_task(
        request.match_info["task_id"],
        fields,
        workspace_id=_workspace(request),
        timestamps_once=request.app[OPTIONS].timestamps_once,
    )
    return web.json_response({"task": task})


async def _delete_task(request: web.Request) -> web.Response:
    _store(request).delete_task(request.match_info["task_id"], workspace_id=_workspace(request))
    return web.json_response({"success": True})


async def _list_tasks(request: web.Request) -> web.Response:
    query = request.query
    options = request.app[OPTIONS]
    offset = validation.query_int(query, "offset", default=0, minimum=0, maximum=10**9)
    tasks, total = _store(request).list_tasks(
        workspace_id=_workspace(request),
        status=validation.query_enum(query, "status", _statuses(request)),
        task_list_id=validation.query_text(query, "task_list_id"),
        assigned_to=validation.query_text(query, "assigned_to", validation.MAX_NAME),
        priority=validation.query_enum(query, "priority", validation.PRIORITIES),
        limit=validation.query_int(query, "limit", default=50, minimum=1, maximum=100),
        offset=offset if options.list_offset else 0,
        mark_blocked=options.list_marks_blocked,
    )
    # Both real releases send the page's length as the "total".
    return web.json_response(
        {"tasks": tasks, "total": total if options.exact_total else len(tasks)}
    )


async def _create_task(request: web.Request) -> web.Response:
    fields = validation.new_task(await _body(request), _statuses(request))
    fields.setdefault("status", request.app[OPTIONS].new_task_status)
    task = _store(request).create_task(workspace_id=_workspace(request), **fields)
    return web.json_response({"task": task}, status=201)


# --- comments ------------------------------------------------------------------------------
async def _add_comment(request: web.Request) -> web.Response:
    fields = validation.new_comment(await _body(request))
    comment = _store(request).add_comment(
        request.match_info["task_id"], workspace_id=_workspace(request), **fields
    )
    return web.json_response({"comment": comment}, status=201)


async def _list_comments(request: web.Request) -> web.Response:
    query = request.query
    comments, total = _store(request).list_comments(
        request.match_info["task_id"],
        workspace_id=_workspace(request),
        limit=validation.query_int(query, "limit", default=50, minimum=1, maximum=200),
        offset=validation.query_int(query, "offset", default=0, minimum=0, maximum=10**9),
    )
    exact = request.app[OPTIONS].exact_total
    return web.json_response({"comments": comments, "total": total if exact else len(comments)})


# --- workers -------------------------------------------------------------------------------
async def _heartbeat(request: web.Request) -> web.Response:
    fields = validation.heartbeat(await _body(request))
    worker = _store(request).heartbeat(workspace_id=_workspace(request), **fields)
    return web.json_response({"worker": worker, "next_heartbeat_in": NEXT_HEARTBEAT_IN})


async def _list_workers(request: web.Request) -> web.Response:
    workers, stats = _store(request).list_workers(workspace_id=_workspace(request))
    return web.json_response({"workers": workers, "stats": stats})


# --- task lists ----------------------------------------------------------------------------
async def _list_task_lists(request: web.Request) -> web.Response:
    task_lists = _store(request).list_task_lists(workspace_id=_workspace(request))
    return web.json_response({"task_lists": task_lists, "total": len(task_lists)})


async def _get_task_list(request: web.Request) -> web.Response:
    task_list = _store(request).get_task_list(
        request.match_info["task_list_id"], workspace_id=_workspace(request)
    )
    return web.json_response({"task_list": task_list})


async def _create_task_list(request: web.Request) -> web.Response:
    fields = validation.new_task_list(await _body(request))
    task_list = _store(request).create_task_list(workspace_id=_workspace(request), **fields)
    return web.json_response({"task_list": task_list}, status=201)
