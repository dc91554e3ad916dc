"""The current release's agent records: sessions, the event feed, pending chat, llm-config.

Kept apart from ``store.py`` (tasks, comments, workers) because only the ``v2`` profile
serves them; they share the store's connection and its transactions. A session's
``last_event_at`` moves whenever the session is written to or an event names it: it is what
the dashboard shows as the agent's last sign of life.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from typing import Any, Final

from taskinfa_worker.board.problems import NotFound
from taskinfa_worker.board.store import DEFAULT_WORKSPACE, BoardStore

SESSION_STATUSES: Final = ("active", "completed", "error", "stuck")
EVENT_TYPES: Final = (
    "session_start",
    "session_end",
    "task_claimed",
    "task_progress",
    "task_completed",
    "error",
    "stuck",
    "needs_input",
)
NOTIFYING_EVENTS: Final = frozenset({"error", "stuck", "needs_input", "task_completed"})
"""Events the real dashboard also sends to the workspace's Telegram chat."""
_GLOBAL: Final = ""


class AgentRecords:
    """Sessions, events and the LLM configuration of one board, over its store."""

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
    ) -> dict[str, Any]:
        session_id = f"session_{secrets.token_hex(8)}"
        now = self._store.now()
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO sessions (id, workspace_id, project_id, current_task_id, status, "
                "started_at, last_event_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (session_id, workspace_id, project_id, current_task_id, status, now, now),
            )
        return self.get_session(session_id, workspace_id=workspace_id)

    def update_session(
        self, session_id: str, fields: dict[str, Any], *, workspace_id: str = DEFAULT_WORKSPACE
    ) -> dict[str, Any]:
        """Apply validated fields; leaving ``active`` stamps ``ended_at``."""
        now = self._store.now()
        assignments = ["last_event_at = :now"]
        params: dict[str, Any] = {"now": now, "id": session_id, "ws": workspace_id}
        for name in ("status", "current_task_id", "summary"):
            if name in fields:
                assignments.append(f"{name} = :{name}")
                params[name] = fields[name]
        if "status" in fields:
            assignments.append("ended_at = CASE WHEN :status = 'active' THEN NULL ELSE :now END")
        with self._store.transaction() as db:
            changed = db.execute(
                # Assignments name fixed columns only; values are bound.
                f"UPDATE sessions SET {', '.join(assignments)} "  # noqa: S608
                "WHERE id = :id AND workspace_id = :ws",
                params,
            ).rowcount
        if changed != 1:
            raise NotFound("Session not found")
        return self.get_session(session_id, workspace_id=workspace_id)

    def get_session(
        self, session_id: str, *, workspace_id: str = DEFAULT_WORKSPACE
    ) -> dict[str, Any]:
        rows = self._store.rows(
            "SELECT * FROM sessions WHERE id = ? AND workspace_id = ?", (session_id, workspace_id)
        )
        if not rows:
            raise NotFound("Session not found")
        return dict(rows[0])

    def list_sessions(
        self, *, workspace_id: str = DEFAULT_WORKSPACE, status: str | None = None
    ) -> list[dict[str, Any]]:
        """Newest first, optionally only those in ``status``."""
        sql = "SELECT * FROM sessions WHERE workspace_id = ?"
        params: list[Any] = [workspace_id]
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        rows = self._store.rows(sql + " ORDER BY started_at DESC, rowid DESC", params)
        return [dict(row) for row in rows]

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
        """Record one event; an event of a session is that session's latest sign of life."""
        event_id = f"event_{secrets.token_hex(8)}"
        now = self._store.now()
        with self._store.transaction() as db:
            if session_id is not None:
                touched = db.execute(
                    "UPDATE sessions SET last_event_at = ? WHERE id = ? AND workspace_id = ?",
                    (now, session_id, workspace_id),
                ).rowcount
                if touched != 1:
                    raise NotFound("Session not found")
            db.execute(
                "INSERT INTO events (id, workspace_id, session_id, task_id, event_type, message, "
                "metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event_id,
                    workspace_id,
                    session_id,
                    task_id,
                    event_type,
                    message,
                    None if metadata is None else json.dumps(metadata),
                    now,
                ),
            )
        return {
            "id": event_id,
            "session_id": session_id,
            "task_id": task_id,
            "event_type": event_type,
            "message": message,
            "metadata": metadata,
            "notified": event_type in NOTIFYING_EVENTS,
            "created_at": now,
        }

    def list_events(self, *, workspace_id: str = DEFAULT_WORKSPACE) -> list[dict[str, Any]]:
        """The event feed, newest first."""
        rows = self._store.rows(
            "SELECT * FROM events WHERE workspace_id = ? ORDER BY created_at DESC, rowid DESC",
            (workspace_id,),
        )
        return [_event(row) for row in rows]

    # --- the dashboard's chat with the agent -----------------------------------------------
    def pending_messages(self, *, workspace_id: str = DEFAULT_WORKSPACE) -> list[dict[str, Any]]:
        """Tasks whose newest comment is a person's ``human_message``, oldest task first."""
        rows = self._store.rows(
            "SELECT t.id FROM tasks t WHERE t.workspace_id = ? AND ("
            "SELECT c.author_type || ':' || c.comment_type FROM comments c "
            "WHERE c.task_id = t.id ORDER BY c.created_at DESC, c.rowid DESC LIMIT 1"
            ") = 'user:human_message' ORDER BY t.created_at, t.rowid",
            (workspace_id,),
        )
        # The task shaping of store.py: labels and files as lists, no human assignee.
        return [self._store.get_task(row["id"], workspace_id=workspace_id) for row in rows]

    # --- llm-config ------------------------------------------------------------------------
    def add_llm_provider(
        self,
        name: str,
        auth_token: str,
        *,
        base_url: str | None = None,
        workspace_id: str = DEFAULT_WORKSPACE,
    ) -> str:
        """A provider as a person enters it in the dashboard; returns its id."""
        provider_id = f"llm_{secrets.token_hex(6)}"
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO llm_providers (id, workspace_id, name, base_url, auth_token, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (provider_id, workspace_id, name, base_url, auth_token, self._store.now()),
            )
        return provider_id

    def choose_llm_model(
        self,
        provider_id: str,
        model: str,
        *,
        task_list_id: str | None = None,
        workspace_id: str = DEFAULT_WORKSPACE,
    ) -> None:
        """The model for one project, or for the whole workspace when no project is named."""
        with self._store.transaction() as db:
            db.execute(
                "INSERT INTO llm_models (workspace_id, task_list_id, provider_id, model) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (workspace_id, task_list_id) DO UPDATE SET "
                "provider_id = excluded.provider_id, model = excluded.model",
                (workspace_id, task_list_id or _GLOBAL, provider_id, model),
            )

    def llm_config(self, *, workspace_id: str = DEFAULT_WORKSPACE) -> dict[str, Any]:
        """Providers (tokens included, as the real route sends them) and the model choices."""
        providers = self._store.rows(
            "SELECT id, name, base_url, auth_token FROM llm_providers WHERE workspace_id = ? "
            "ORDER BY created_at, rowid",
            (workspace_id,),
        )
        choices = self._store.rows(
            "SELECT task_list_id, provider_id, model FROM llm_models WHERE workspace_id = ? "
            "ORDER BY task_list_id",
            (workspace_id,),
        )
        global_choice = [dict(row) for row in choices if row["task_list_id"] == _GLOBAL]
        return {
            "providers": [dict(row) for row in providers],
            "global": {k: v for k, v in global_choice[0].items() if k != "task_list_id"}
            if global_choice
            else None,
            "projects": [dict(row) for row in choices if row["task_list_id"] != _GLOBAL],
        }


def _event(row: sqlite3.Row) -> dict[str, Any]:
    event = dict(row)
    event.pop("workspace_id")
    event["metadata"] = None if row["metadata"] is None else json.loads(row["metadata"])
    event["notified"] = row["event_type"] in NOTIFYING_EVENTS
    return event
