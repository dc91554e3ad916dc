"""The current release's agent records: sessions, the event feed, pending chat.

Kept apart from ``store.py`` (tasks, comments, workers) because only the ``v2`` profile
serves them; they share the store's connection and its transactions (as does
``llm_store.py``, the model choice). As on the release: a
session's ``last_event_at`` moves when an event names the session, or when a PATCH sends one
(stored as sent); ``updated_at`` moves on every change. An event may name a session that does
not exist: it is stored, and changes nothing.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from datetime import UTC, datetime
from typing import Any, Final

from taskinfa_worker.board.problems import NotFound
from taskinfa_worker.board.store import DEFAULT_WORKSPACE, BoardStore

SESSION_STATUSES: Final = ("active", "idle", "stuck", "completed", "error")
EVENT_TYPES: Final = (
    "task_claimed",
    "task_progress",
    "task_completed",
    "stuck",
    "needs_input",
    "error",
    "session_start",
    "session_end",
    "notification",
)
NOTIFYING_EVENTS: Final = frozenset({"error", "stuck", "needs_input", "task_completed"})
"""Events the real dashboard also sends to the workspace's Telegram chat."""
STATUS_AFTER_EVENT: Final = {
    "stuck": "stuck",
    "needs_input": "stuck",
    "error": "error",
    "session_end": "completed",
}
"""What an event does to the status of the session it names (the release's rule)."""
SESSION_EVENTS_SHOWN: Final = 20
"""``GET /sessions/{id}`` shows this many of the session's newest events."""
_SELECT_SESSION: Final = (
    "SELECT s.*, tl.name AS project_name, t.title AS current_task_title FROM sessions s "
    "LEFT JOIN task_lists tl ON tl.workspace_id = s.workspace_id AND tl.id = s.project_id "
    "LEFT JOIN tasks t ON t.id = s.current_task_id WHERE s.workspace_id = ?"
)
# Events of a session of this workspace, or of none; one naming an unknown session is kept
# but never listed, as on the real release.
_SELECT_EVENTS: Final = (
    "SELECT e.* FROM session_events e LEFT JOIN sessions s ON s.id = e.session_id "
    "WHERE e.workspace_id = ? AND (e.session_id IS NULL OR s.workspace_id = e.workspace_id)"
)


class AgentRecords:
    """Sessions and events of one board, over its store."""

    def __init__(self, store: BoardStore) -> None:
        self._store = store

    # --- sessions --------------------------------------------------------------------------
    def create_session(
        self,
        *,
        workspace_id: str = DEFAULT_WORKSPACE,
        project_id: str | None = None,
        current_task_id: str | None = None,
        status: str = "active",
        summary: str | None = None,
    ) -> dict[str, Any]:
        session_id = f"ses_{secrets.token_urlsafe(15)}"
        now = self._store.now()
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO sessions (id, workspace_id, project_id, current_task_id, status, "
                "summary, started_at, last_event_at, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, workspace_id, project_id, current_task_id, status, summary)
                + (now,) * 4,
            )
        return self._session_row(session_id)

    def update_session(
        self, session_id: str, fields: dict[str, Any], *, workspace_id: str = DEFAULT_WORKSPACE
    ) -> dict[str, Any]:
        """Apply validated fields; ``last_event_at`` is stored as sent, ``updated_at`` moves
        on any change, and no field at all leaves the session as it is."""
        assignments = [f"{name} = :{name}" for name in _SESSION_PATCHABLE if name in fields]
        params: dict[str, Any] = {**fields, "id": session_id, "ws": workspace_id}
        with self._store.transaction() as db:
            found = db.execute(
                "SELECT 1 FROM sessions WHERE id = :id AND workspace_id = :ws", params
            ).fetchone()
            if found is None:
                raise NotFound("Session not found")
            if assignments:
                params["now"] = self._store.now()
                db.execute(
                    # Assignments name fixed columns only; values are bound.
                    f"UPDATE sessions SET {', '.join(assignments)}, updated_at = :now "  # noqa: S608
                    "WHERE id = :id AND workspace_id = :ws",
                    params,
                )
        return self._session_row(session_id)

    def get_session(
        self, session_id: str, *, workspace_id: str = DEFAULT_WORKSPACE
    ) -> dict[str, Any]:
        """The session with its project's name and its task's title."""
        rows = self._store.rows(_SELECT_SESSION + " AND s.id = ?", (workspace_id, session_id))
        if not rows:
            raise NotFound("Session not found")
        return _session(rows[0])

    def list_sessions(
        self,
        *,
        workspace_id: str = DEFAULT_WORKSPACE,
        status: str | None = None,
        project_id: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Newest first, optionally only those in ``status`` or of ``project_id``."""
        sql = _SELECT_SESSION
        params: list[Any] = [workspace_id]
        for column, value in (("s.status", status), ("s.project_id", project_id)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        rows = self._store.rows(sql + " ORDER BY s.started_at DESC LIMIT ?", [*params, limit])
        return [_session(row) for row in rows]

    def session_stats(self, *, workspace_id: str = DEFAULT_WORKSPACE) -> dict[str, int]:
        """How many sessions of the workspace are in each status."""
        rows = self._store.rows(
            "SELECT status, COUNT(*) AS n FROM sessions WHERE workspace_id = ? GROUP BY status",
            (workspace_id,),
        )
        counts = {row["status"]: row["n"] for row in rows}
        return {status: counts.get(status, 0) for status in SESSION_STATUSES}

    def _session_row(self, session_id: str) -> dict[str, Any]:
        # What POST and PATCH answer: the row itself, without the names the lists join in.
        return _session(self._store.rows("SELECT * FROM sessions WHERE id = ?", (session_id,))[0])

    # --- events ----------------------------------------------------------------------------
    def add_event(
        self,
        event_type: str,
        *,
        workspace_id: str = DEFAULT_WORKSPACE,
        session_id: str | None = None,
        task_id: str | None = None,
        message: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Record one event. The session it names (if it exists: an unknown one is no error)
        hears of it: its last sign of life, and its status for stalls, errors and ends."""
        event_id = f"evt_{secrets.token_urlsafe(15)}"
        now = self._store.now()
        metadata = {} if metadata is None else metadata
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO session_events (id, workspace_id, session_id, task_id, event_type, "
                "message, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event_id,
                    workspace_id,
                    session_id,
                    task_id,
                    event_type,
                    message,
                    json.dumps(metadata),
                    now,
                ),
            )
            if session_id is not None:
                status = STATUS_AFTER_EVENT.get(event_type)
                db.execute(
                    "UPDATE sessions SET last_event_at = :now, updated_at = :now, "
                    "status = COALESCE(:status, status) WHERE id = :id AND workspace_id = :ws",
                    {"now": now, "status": status, "id": session_id, "ws": workspace_id},
                )
        return {
            "id": event_id,
            "session_id": session_id,
            "task_id": task_id,
            "event_type": event_type,
            "message": message,
            "metadata": metadata,
            # The release answers with the time of its own clock, in ISO form.
            "created_at": iso_timestamp(self._store.clock()),
        }

    def list_events(
        self,
        *,
        workspace_id: str = DEFAULT_WORKSPACE,
        session_id: str | None = None,
        task_id: str | None = None,
        event_type: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """The event feed, newest first, optionally of one session, task or type."""
        sql = _SELECT_EVENTS
        params: list[Any] = [workspace_id]
        for column, value in (
            ("e.session_id", session_id),
            ("e.task_id", task_id),
            ("e.event_type", event_type),
        ):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        rows = self._store.rows(
            sql + " ORDER BY e.created_at DESC, e.rowid DESC LIMIT ?", [*params, limit]
        )
        return [_event(row) for row in rows]

    # --- the dashboard's chat with the agent -----------------------------------------------
    def pending_messages(self, *, workspace_id: str = DEFAULT_WORKSPACE) -> list[dict[str, Any]]:
        """Tasks whose newest comment is a person's ``human_message``, oldest message first.

        As the release's query: "newest" is by ``created_at`` only, which counts seconds, so
        a task is listed when any of the comments stamped in its newest second is such a
        message (a worker's reply in the same second does not hide it), and once per such
        message."""
        rows = self._store.rows(
            "SELECT t.id FROM tasks t JOIN comments c ON c.task_id = t.id "
            "WHERE t.workspace_id = ? AND c.author_type = 'user' "
            "AND c.comment_type = 'human_message' AND c.created_at = ("
            "SELECT MAX(c2.created_at) FROM comments c2 WHERE c2.task_id = t.id"
            ") ORDER BY c.created_at, c.rowid",
            (workspace_id,),
        )
        # The task shaping of store.py: labels and files as lists, no human assignee.
        return [self._store.get_task(row["id"], workspace_id=workspace_id) for row in rows]


_SESSION_PATCHABLE: Final = ("status", "current_task_id", "summary", "last_event_at")


def _session(row: sqlite3.Row) -> dict[str, Any]:
    return dict(row)


def iso_timestamp(epoch: float) -> str:
    """``2026-01-02T03:04:05.678Z``: what JavaScript's ``toISOString`` gives."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _event(row: sqlite3.Row) -> dict[str, Any]:
    event = dict(row)
    event.pop("workspace_id")
    event["metadata"] = json.loads(row["metadata"]) if row["metadata"] else {}
    return event
