"""The current release's agent routes (``agent_routes`` option, the ``v2`` profile).

``/sessions`` and ``/events`` are how that dashboard shows agents and their activity;
``/tasks/pending-messages`` is its chat waiting for an answer, ``/llm-config`` the provider
and model people chose. Bodies are checked here (400 naming the field, never a 500), the
records kept by ``agent_store.AgentRecords``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from aiohttp import web

from taskinfa_worker.board import validation
from taskinfa_worker.board.agent_store import EVENT_TYPES, SESSION_STATUSES, AgentRecords
from taskinfa_worker.board.problems import Invalid

RECORDS: Final = web.AppKey("agent_records", AgentRecords)
MAX_SUMMARY: Final = 10_000
MAX_MESSAGE: Final = 10_000

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
        session = records().get_session(
            request.match_info["session_id"], workspace_id=workspace(request)
        )
        return web.json_response({"session": session})

    async def list_sessions(request: web.Request) -> web.Response:
        status = validation.query_enum(request.query, "status", SESSION_STATUSES)
        sessions = records().list_sessions(workspace_id=workspace(request), status=status)
        return web.json_response({"sessions": sessions})

    async def add_event(request: web.Request) -> web.Response:
        fields = _new_event(await body(request))
        event = records().add_event(workspace_id=workspace(request), **fields)
        return web.json_response({"event": event}, status=201)

    async def list_events(request: web.Request) -> web.Response:
        return web.json_response({"events": records().list_events(workspace_id=workspace(request))})

    async def pending_messages(request: web.Request) -> web.Response:
        tasks = records().pending_messages(workspace_id=workspace(request))
        return web.json_response({"tasks": tasks})

    async def llm_config(request: web.Request) -> web.Response:
        return web.json_response(records().llm_config(workspace_id=workspace(request)))

    r.add_post(f"{prefix}/sessions", create_session)
    r.add_get(f"{prefix}/sessions", list_sessions)
    r.add_get(f"{prefix}/sessions/{{session_id}}", get_session)
    r.add_patch(f"{prefix}/sessions/{{session_id}}", update_session)
    r.add_post(f"{prefix}/events", add_event)
    r.add_get(f"{prefix}/events", list_events)
    r.add_get(f"{prefix}/tasks/pending-messages", pending_messages)
    r.add_get(f"{prefix}/llm-config", llm_config)


# --- bodies --------------------------------------------------------------------------------
def _new_session(body: Mapping[str, Any]) -> dict[str, Any]:
    validation.known(body, {"project_id", "current_task_id", "status"})
    fields: dict[str, Any] = {}
    for name in ("project_id", "current_task_id"):
        if body.get(name) is not None:
            fields[name] = validation.text(body[name], name, validation.MAX_ID)
    if body.get("status") is not None:
        fields["status"] = validation.enum(body["status"], "status", SESSION_STATUSES)
    return fields


def _session_patch(body: Mapping[str, Any]) -> dict[str, Any]:
    validation.known(body, {"status", "current_task_id", "summary"})
    if not body:
        raise Invalid("No fields to update")
    fields: dict[str, Any] = {}
    if "status" in body:
        fields["status"] = validation.enum(body["status"], "status", SESSION_STATUSES)
    if "current_task_id" in body:
        current = body["current_task_id"]
        fields["current_task_id"] = (
            None if current is None else validation.text(current, "current_task_id", 200)
        )
    if "summary" in body:
        summary = body["summary"]
        fields["summary"] = (
            None if summary is None else validation.text(summary, "summary", MAX_SUMMARY, True)
        )
    return fields


def _new_event(body: Mapping[str, Any]) -> dict[str, Any]:
    validation.known(body, {"event_type", "session_id", "task_id", "message", "metadata"})
    event_type = body.get("event_type")
    if event_type is None:
        raise Invalid("event_type is required", {"field": "event_type"})
    fields: dict[str, Any] = {"event_type": validation.enum(event_type, "event_type", EVENT_TYPES)}
    for name, limit in (("session_id", 200), ("task_id", 200), ("message", MAX_MESSAGE)):
        if body.get(name) is not None:
            fields[name] = validation.text(body[name], name, limit)
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise Invalid("metadata must be an object", {"field": "metadata"})
        fields["metadata"] = metadata
    return fields
