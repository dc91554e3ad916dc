"""The current release's sessions and event feed (``/sessions``, ``/events``).

That dashboard shows agents only through them (API.md, "Real servers differ"). Earlier
releases lack the routes: the first answer that says so (404 or 405 where no session can be
"not found", or an HTML 404 anywhere) turns the feature off for the process, with one line
in the log, and every later call returns None without a request. Other failures raise the
usual ``BoardError``; callers treat all of it as a courtesy that never fails a task.

Creating a session and posting an event are not retried: a lost answer would repeat them,
and a second session or event is worse than a missing one. A PATCH and the reads are.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from loguru import logger

from taskinfa_worker.client.answer import Answer
from taskinfa_worker.client.models import Session, SessionList
from taskinfa_worker.client.ratelimit import Lane
from taskinfa_worker.client.transport import BoardTransport

SESSIONS: Final = "/sessions"
SESSION: Final = "/sessions/{id}"
EVENTS: Final = "/events"

MAX_SUMMARY: Final = 2000
MAX_MESSAGE: Final = 5000
LIST_LIMIT: Final = 100
"""The most sessions one list answers with (the release's cap; it has no offset)."""


def board_time(moment: datetime) -> str:
    """A time as the release stores its own: SQLite's ``YYYY-MM-DD HH:MM:SS``, UTC."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SessionsApi:
    """Typed calls of the sessions and events routes, over the client's transport."""

    def __init__(self, transport: BoardTransport) -> None:
        self._transport = transport
        self.supported: bool | None = None
        """None until known; False once the board showed it has no such routes."""

    async def create(
        self,
        *,
        project_id: str | None,
        task_id: str | None,
        summary: str,
        lane: Lane = Lane.NORMAL,
    ) -> Session | None:
        """A new ``active`` session; None when the board has no sessions."""
        if self.supported is False:
            return None
        body: dict[str, Any] = {"status": "active", "summary": _cut(summary, MAX_SUMMARY)}
        if project_id:
            body["project_id"] = project_id
        if task_id:
            body["current_task_id"] = task_id
        answer = await self._transport.request("POST", SESSIONS, lane=lane, json=body, retry=False)
        if self._missing(answer, names_a_session=False):
            return None
        return self._decoded(answer)

    async def update(
        self, session_id: str, *, lane: Lane = Lane.NORMAL, **fields: Any
    ) -> Session | None:
        """PATCH ``fields`` (status, current_task_id, summary, last_event_at) onto a session;
        None when it no longer exists or the board has no sessions."""
        if self.supported is False:
            return None
        if "summary" in fields and isinstance(fields["summary"], str):
            fields["summary"] = _cut(fields["summary"], MAX_SUMMARY)
        answer = await self._transport.request(
            "PATCH", SESSION, session_id, lane=lane, json=fields, retry=True
        )
        if self._missing(answer, names_a_session=True):
            return None
        if answer.status == 404:
            return None  # the API's "Session not found": someone removed it
        return self._decoded(answer)

    async def keep_alive(self, session_id: str, now: datetime) -> Session | None:
        """Say the session is alive: its ``last_event_at`` (and so ``updated_at``) is now."""
        return await self.update(session_id, last_event_at=board_time(now))

    async def event(
        self,
        event_type: str,
        *,
        session_id: str | None,
        task_id: str | None,
        message: str,
        metadata: dict[str, Any] | None = None,
        lane: Lane = Lane.BACKGROUND,
    ) -> bool:
        """Post one event to the feed; False when the board has no event feed."""
        if self.supported is False:
            return False
        body: dict[str, Any] = {"event_type": event_type, "message": _cut(message, MAX_MESSAGE)}
        for name, value in (("session_id", session_id), ("task_id", task_id)):
            if value:
                body[name] = value
        if metadata:
            body["metadata"] = metadata
        answer = await self._transport.request("POST", EVENTS, lane=lane, json=body, retry=False)
        if self._missing(answer, names_a_session=False):
            return False
        self._transport.expect_ok(answer)
        self.supported = True
        return True

    async def find(
        self,
        *,
        status: str | None = None,
        project_id: str | None = None,
        lane: Lane = Lane.BACKGROUND,
    ) -> list[Session] | None:
        """Up to ``LIST_LIMIT`` sessions, newest first; None when the board has none."""
        if self.supported is False:
            return None
        params = {"limit": str(LIST_LIMIT)}
        if status:
            params["status"] = status
        if project_id:
            params["project_id"] = project_id
        answer = await self._transport.request(
            "GET", SESSIONS, lane=lane, params=params, retry=True
        )
        if self._missing(answer, names_a_session=False):
            return None
        self._transport.expect_ok(answer)
        self.supported = True
        return self._transport.decode(answer, SessionList).sessions

    def _decoded(self, answer: Answer) -> Session:
        self._transport.expect_ok(answer)
        self.supported = True
        return self._transport.decode(answer, Session, "session")

    def _missing(self, answer: Answer, *, names_a_session: bool) -> bool:
        """Whether an answer says the routes are missing altogether (noted once).

        Where the request names no session, any 404 or 405 is the route missing; where it
        names one, a 404 with the API's own message is that session gone, not the route.
        """
        absent = answer.status == 405 or (
            answer.status == 404 and (not names_a_session or answer.error_message() is None)
        )
        if absent:
            self._note_missing()
        return absent

    def _note_missing(self) -> None:
        if self.supported is not False:
            logger.info(
                "The board at {} has no sessions or events routes: runs are not shown as "
                "sessions there.",
                self._transport.shown_base,
            )
        self.supported = False
