"""Errors the local board answers with: each maps to one HTTP status and JSON error body.

The store and the validators raise these; the app turns them into the body real Taskinfa
servers send, ``{"error": "<message>", "category": "<kind>", "details": {...}?}``. They are
board-internal: the worker's own errors live in ``taskinfa_worker.errors``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class Problem(Exception):
    """A request the board refuses. ``status`` and ``category`` follow the real server."""

    status: ClassVar[int] = 500
    category: ClassVar[str] = "internal"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        body: dict[str, Any] = {"error": self.message, "category": self.category}
        if self.details:
            body["details"] = self.details
        return body


class Invalid(Problem):
    """400: the request's content is not acceptable."""

    status = 400
    category = "validation"


class Unauthenticated(Problem):
    """401: no API key, or one the board does not know."""

    status = 401
    category = "authentication"


class NotFound(Problem):
    """404: the task, task list or route does not exist in this workspace."""

    status = 404
    category = "not_found"


class Conflict(Problem):
    """409: the resource is held or already exists."""

    status = 409
    category = "conflict"


class TooLarge(Problem):
    """413: the body is larger than the board reads."""

    status = 413
    category = "validation"
