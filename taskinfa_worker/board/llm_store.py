"""The current release's model choice (``/llm-config``): providers, and who uses which.

As the release keeps it: a workspace has at most one row per provider (its base URL and
auth token, the token stored and answered in plain text), and one choice of provider and
model per kind of session (``task`` for a task's run, ``message`` for the chat, ...), either
for one project or, with no project, for the whole workspace. Setting a provider again
changes only the fields given; setting a choice again replaces its provider and model.
Answers are the rows as stored, in the release's order: providers by name, choices by kind.
"""

from __future__ import annotations

import secrets
from typing import Any, Final

from taskinfa_worker.board.store import DEFAULT_WORKSPACE, BoardStore

UNCHANGED: Final[Any] = object()
"""A provider field not given: an update leaves it as it is (a new row gets NULL)."""


def _new_id(prefix: str) -> str:
    # The release's ids are a prefix and a 21-character nanoid.
    return f"{prefix}_{secrets.token_urlsafe(16)[:21]}"


class LlmRecords:
    """The providers and model choices of one board, over its store."""

    def __init__(self, store: BoardStore) -> None:
        self._store = store

    def set_provider(
        self,
        provider: str,
        *,
        base_url: str | None = UNCHANGED,
        auth_token: str | None = UNCHANGED,
        workspace_id: str = DEFAULT_WORKSPACE,
    ) -> dict[str, Any]:
        """Create or update the workspace's row of ``provider``; returns the row."""
        now = self._store.now()
        given = {
            name: value
            for name, value in (("base_url", base_url), ("auth_token", auth_token))
            if value is not UNCHANGED
        }
        with self._store.transaction() as db:
            found = db.execute(
                "SELECT id FROM llm_providers WHERE workspace_id = ? AND provider = ?",
                (workspace_id, provider),
            ).fetchone()
            if found is None:
                db.execute(
                    "INSERT INTO llm_providers (id, workspace_id, provider, base_url, auth_token, "
                    "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        _new_id("llmp"),
                        workspace_id,
                        provider,
                        given.get("base_url"),
                        given.get("auth_token"),
                        now,
                        now,
                    ),
                )
            else:
                assignments = "".join(f"{name} = :{name}, " for name in given)
                db.execute(
                    # Assignments name fixed columns only; values are bound.
                    f"UPDATE llm_providers SET {assignments}updated_at = :now "  # noqa: S608
                    "WHERE id = :id",
                    {**given, "now": now, "id": found["id"]},
                )
        return dict(
            self._store.rows(
                "SELECT * FROM llm_providers WHERE workspace_id = ? AND provider = ?",
                (workspace_id, provider),
            )[0]
        )

    def set_choice(
        self,
        session_type: str,
        provider: str,
        model: str | None = None,
        *,
        task_list_id: str | None = None,
        workspace_id: str = DEFAULT_WORKSPACE,
    ) -> dict[str, Any]:
        """The provider and model (None: the provider's default) for one kind of session, of
        one project or of the workspace; returns the row."""
        now = self._store.now()
        with self._store.transaction() as db:
            found = db.execute(
                "SELECT id FROM llm_session_config WHERE workspace_id = ? AND session_type = ? "
                "AND task_list_id IS ?",
                (workspace_id, session_type, task_list_id),
            ).fetchone()
            if found is None:
                choice_id = _new_id("llmsc")
                db.execute(
                    "INSERT INTO llm_session_config (id, workspace_id, task_list_id, "
                    "session_type, provider, model, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (choice_id, workspace_id, task_list_id, session_type, provider, model)
                    + (now,) * 2,
                )
            else:
                choice_id = found["id"]
                db.execute(
                    "UPDATE llm_session_config SET provider = ?, model = ?, updated_at = ? "
                    "WHERE id = ?",
                    (provider, model, now, choice_id),
                )
        return dict(
            self._store.rows("SELECT * FROM llm_session_config WHERE id = ?", (choice_id,))[0]
        )

    def clear_choice(
        self,
        session_type: str,
        *,
        task_list_id: str | None = None,
        workspace_id: str = DEFAULT_WORKSPACE,
    ) -> None:
        """Forget one choice (none there is no error, as on the release)."""
        with self._store.transaction() as db:
            db.execute(
                "DELETE FROM llm_session_config WHERE workspace_id = ? AND session_type = ? "
                "AND task_list_id IS ?",
                (workspace_id, session_type, task_list_id),
            )

    def config(self, *, workspace_id: str = DEFAULT_WORKSPACE) -> dict[str, Any]:
        """``{"providers": [...], "session_configs": [...]}``, the rows as stored."""
        providers = self._store.rows(
            "SELECT * FROM llm_providers WHERE workspace_id = ? ORDER BY provider",
            (workspace_id,),
        )
        choices = self._store.rows(
            "SELECT * FROM llm_session_config WHERE workspace_id = ? ORDER BY session_type, rowid",
            (workspace_id,),
        )
        return {
            "providers": [dict(row) for row in providers],
            "session_configs": [dict(row) for row in choices],
        }
