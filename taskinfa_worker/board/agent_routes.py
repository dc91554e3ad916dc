"""The current release's agent routes (``agent_routes`` option, the ``v2`` profile).

``/sessions`` and ``/events`` are how that dashboard shows agents and their activity;
``/tasks/pending-messages`` is its chat waiting for an answer, ``/llm-config`` the provider
and model people chose (set with ``PATCH /llm-config/providers`` and ``/llm-config/session``,
as its settings page does). Bodies are checked here (400 naming the field, never a 500),
the records kept by ``agent_store.AgentRecords`` and ``llm_store.LlmRecords``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from aiohttp import web

from taskinfa_worker.board import validation
from taskinfa_worker.board.agent_store import (
    EVENT_TYPES,
    SESSION_EVENTS_SHOWN,
    SESSION_STATUSES,
    AgentRecords,
)
from taskinfa_worker.board.llm_store import UNCHANGED, LlmRecords
from taskinfa_worker.board.problems import Invalid
from taskinfa_worker.client.llm_config import PROVIDERS, SESSION_TYPES

RECORDS: Final = web.AppKey("agent_records", AgentRecords)
LLM: Final = web.AppKey("llm_records", LlmRecords)
MAX_URL: Final = 500
MAX_TOKEN: Final = 2_000
MAX_MODEL: Final = 200
MAX_SUMMARY: Final = 2_000
MAX_MESSAGE: Final = 5_000
MAX_TIMESTAMP: Final = 100
LIST_LIMIT: Final = 100
"""The most rows one list of sessions or events answers with (more asked is this many)."""

Workspace = Callable[[web.Request], str]
Body = Callable[[web.Request], Any]


def add_agent_routes(app: web.Application, prefix: str, workspace: Workspace, body: Body) -> None:
    """Register the routes. Call before ``/tasks/{task_id}``, whose pattern would match
    ``pending-messages`` as a task id."""
    r = app.router

    def records() -> AgentRecords:
        return app[RECORDS]

    async def create_session(request: web.Request) -> web.Response:
        fields = _new_session(await body(request))
        session = records().create_session(workspace_id=workspace(request), **fields)
        return web.json_response({"session": session}, status=201)

    async def update_session(request: web.Request) -> web.Response:
        fields = _session_patch(await body(request))
        session = records().update_session(
            request.match_info["session_id"], fields, workspace_id=workspace(request)
        )
        return web.json_response({"session": session})

    async def get_session(request: web.Request) -> web.Response:
        ws = workspace(request)
        session_id = request.match_info["session_id"]
        session = records().get_session(session_id, workspace_id=ws)
        events = records().list_events(
            workspace_id=ws, session_id=session_id, limit=SESSION_EVENTS_SHOWN
        )
        return web.json_response({"session": session, "events": events})

    async def list_sessions(request: web.Request) -> web.Response:
        ws = workspace(request)
        sessions = records().list_sessions(
            workspace_id=ws,
            status=validation.query_enum(request.query, "status", SESSION_STATUSES),
            project_id=validation.query_text(request.query, "project_id"),
            limit=_limit(request),
        )
        stats = records().session_stats(workspace_id=ws)
        return web.json_response({"sessions": sessions, "stats": stats})

    async def add_event(request: web.Request) -> web.Response:
        fields = _new_event(await body(request))
        event = records().add_event(workspace_id=workspace(request), **fields)
        return web.json_response({"event": event}, status=201)

    async def list_events(request: web.Request) -> web.Response:
        events = records().list_events(
            workspace_id=workspace(request),
            session_id=validation.query_text(request.query, "session_id"),
            task_id=validation.query_text(request.query, "task_id"),
            event_type=validation.query_text(request.query, "event_type"),
            limit=_limit(request),
        )
        # "total" is the page's length, as on the release.
        return web.json_response({"events": events, "total": len(events)})

    async def pending_messages(request: web.Request) -> web.Response:
        tasks = records().pending_messages(workspace_id=workspace(request))
        return web.json_response({"tasks": tasks})

    async def llm_config(request: web.Request) -> web.Response:
        return web.json_response(app[LLM].config(workspace_id=workspace(request)))

    async def set_llm_provider(request: web.Request) -> web.Response:
        fields = _llm_provider(await body(request))
        row = app[LLM].set_provider(workspace_id=workspace(request), **fields)
        return web.json_response({"provider": row})

    async def set_llm_choice(request: web.Request) -> web.Response:
        fields = _llm_choice(await body(request), with_provider=True)
        row = app[LLM].set_choice(workspace_id=workspace(request), **fields)
        return web.json_response({"session_config": row})

    async def clear_llm_choice(request: web.Request) -> web.Response:
        fields = _llm_choice(await body(request), with_provider=False)
        app[LLM].clear_choice(workspace_id=workspace(request), **fields)
        return web.json_response({"deleted": True})

    r.add_post(f"{prefix}/sessions", create_session)
    r.add_get(f"{prefix}/sessions", list_sessions)
    r.add_get(f"{prefix}/sessions/{{session_id}}", get_session)
    r.add_patch(f"{prefix}/sessions/{{session_id}}", update_session)
    r.add_post(f"{prefix}/events", add_event)
    r.add_get(f"{prefix}/events", list_events)
    r.add_get(f"{prefix}/tasks/pending-messages", pending_messages)
    r.add_get(f"{prefix}/llm-config", llm_config)
    r.add_patch(f"{prefix}/llm-config/providers", set_llm_provider)
    r.add_patch(f"{prefix}/llm-config/session", set_llm_choice)
    r.add_delete(f"{prefix}/llm-config/session", clear_llm_choice)


# --- queries and bodies ----------------------------------------------------------------------
def _limit(request: web.Request) -> int:
    # The release takes any number and answers with at most LIST_LIMIT rows.
    asked = validation.query_int(request.query, "limit", default=50, minimum=1, maximum=10**9)
    return min(asked, LIST_LIMIT)


def _new_session(body: Mapping[str, Any]) -> dict[str, Any]:
    validation.known(body, {"project_id", "current_task_id", "status", "summary"})
    fields: dict[str, Any] = {}
    for name in ("project_id", "current_task_id"):
        if body.get(name) is not None:
            fields[name] = validation.text(body[name], name, validation.MAX_ID)
    if body.get("status") is not None:
        fields["status"] = validation.enum(body["status"], "status", SESSION_STATUSES)
    if body.get("summary") is not None:
        fields["summary"] = validation.text(body["summary"], "summary", MAX_SUMMARY, True) or None
    return fields


def _session_patch(body: Mapping[str, Any]) -> dict[str, Any]:
    """The fields to change; none at all is no error (the session comes back unchanged)."""
    validation.known(body, {"status", "current_task_id", "summary", "last_event_at"})
    fields: dict[str, Any] = {}
    if "status" in body:
        fields["status"] = validation.enum(body["status"], "status", SESSION_STATUSES)
    for name, limit in (
        ("current_task_id", validation.MAX_ID),
        ("summary", MAX_SUMMARY),
        ("last_event_at", MAX_TIMESTAMP),
    ):
        if name in body:
            value = body[name]
            given = None if value is None else validation.text(value, name, limit, True)
            fields[name] = given or None  # an empty text clears the field, as null does
    return fields


def _new_event(body: Mapping[str, Any]) -> dict[str, Any]:
    validation.known(body, {"event_type", "session_id", "task_id", "message", "metadata"})
    event_type = body.get("event_type")
    if event_type is None:
        raise Invalid("event_type is required", {"field": "event_type"})
    fields: dict[str, Any] = {"event_type": validation.enum(event_type, "event_type", EVENT_TYPES)}
    for name, limit in (
        ("session_id", validation.MAX_ID),
        ("task_id", validation.MAX_ID),
        ("message", MAX_MESSAGE),
    ):
        if body.get(name) is not None:
            fields[name] = validation.text(body[name], name, limit)
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise Invalid("metadata must be an object", {"field": "metadata"})
        fields["metadata"] = metadata
    return fields


def _llm_provider(body: Mapping[str, Any]) -> dict[str, Any]:
    """A provider's fields; one left out stays as it is, a null clears it (the release's)."""
    validation.known(body, {"provider", "base_url", "auth_token"})
    fields: dict[str, Any] = {"provider": _required_enum(body, "provider", PROVIDERS)}
    for name, limit in (("base_url", MAX_URL), ("auth_token", MAX_TOKEN)):
        value = body.get(name, UNCHANGED)
        if value is not UNCHANGED and value is not None:
            # An empty text is what the settings page sends for "none": stored as null.
            value = validation.text(value, name, limit, allow_empty=True) or None
        fields[name] = value
    return fields


def _llm_choice(body: Mapping[str, Any], *, with_provider: bool) -> dict[str, Any]:
    """Which choice (kind of session, project or null for the workspace) and, to set one,
    its provider and model (null: the provider's default)."""
    allowed = {"task_list_id", "session_type"} | ({"provider", "model"} if with_provider else set())
    validation.known(body, allowed)
    fields: dict[str, Any] = {
        "session_type": _required_enum(body, "session_type", SESSION_TYPES),
        "task_list_id": None,
    }
    if body.get("task_list_id") is not None:
        project = validation.text(body["task_list_id"], "task_list_id", validation.MAX_ID)
        fields["task_list_id"] = project
    if with_provider:
        fields["provider"] = _required_enum(body, "provider", PROVIDERS)
        model = body.get("model")
        fields["model"] = (
            None if model is None else validation.text(model, "model", MAX_MODEL, True) or None
        )
    return fields


def _required_enum(body: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = body.get(name)
    if value is None:
        raise Invalid(f"{name} is required; one of {', '.join(allowed)}", {"field": name})
    return validation.enum(value, name, allowed)
