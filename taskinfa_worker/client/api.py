"""The board API client: the one object through which the process talks to the board.

One small method per endpoint of ``API.md``, each returning wire models. How a request
travels (rate limit, timeouts, safe retries, 429s, metrics) is ``transport.py``'s job; how a
claim is made sure of is ``claims.py``'s.

Real servers differ from the documented API (``API.md``, "Real servers differ"): where the
claim, heartbeat or comments route is missing the client notices once, logs it once and
carries on with the closest thing the server offers. The flags below record what was found.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import urlsplit

from loguru import logger
from pydantic import SecretStr

from taskinfa_worker.client import certain
from taskinfa_worker.client.chat import ChatApi
from taskinfa_worker.client.claims import CLAIM as CLAIM
from taskinfa_worker.client.claims import Claimer, route_missing
from taskinfa_worker.client.llm_config import LlmConfigApi
from taskinfa_worker.client.models import (
    Comment,
    CommentPage,
    Heartbeat,
    NextTask,
    Project,
    Task,
    TaskPage,
    WorkerList,
)
from taskinfa_worker.client.ratelimit import Lane, RateLimiter
from taskinfa_worker.client.sessions import SessionsApi
from taskinfa_worker.client.transport import DEFAULT_RETRY_MAX_TIME, BoardTransport
from taskinfa_worker.client.transport import MAX_BACKOFF as MAX_BACKOFF
from taskinfa_worker.client.transport import MAX_RATE_LIMITED as MAX_RATE_LIMITED
from taskinfa_worker.errors import BoardError, NotFoundError
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.settings import Settings

__all__ = ["DEFAULT_RETRY_MAX_TIME", "BoardClient", "Lane", "not_the_api"]

# completion_notes carries progress where the board has no comments; keep it readable.
MAX_NOTES: Final = 4000

# Endpoint templates: metrics and logs name these, never a raw id. (CLAIM is in claims.py.)
NEXT: Final = "/tasks/next"
TASKS: Final = "/tasks"
TASK: Final = "/tasks/{id}"
COMMENTS: Final = "/tasks/{id}/comments"
HEARTBEAT: Final = "/workers/heartbeat"
WORKERS: Final = "/workers"
TASK_LISTS: Final = "/task-lists"
TASK_LIST: Final = "/task-lists/{id}"


class BoardClient:
    """Async client of the board API (see ``API.md``). One per process; close it."""

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        rate_limit: int = 100,
        request_timeout: float = 30.0,
        metrics: Metrics | None = None,
        retry_max_time: Mapping[Lane, float] | None = None,
        limiter: RateLimiter | None = None,
        backoff_factor: float = 1.0,
    ) -> None:
        self._transport = BoardTransport(
            base_url,
            api_key,
            limiter=limiter if limiter is not None else RateLimiter(rate_limit),
            metrics=metrics,
            request_timeout=request_timeout,
            retry_max_time=retry_max_time,
            backoff_factor=backoff_factor,
        )
        self._claimer = Claimer(self._transport, self)
        self.claims_atomic: bool | None = None
        """None until known; False when the board has no claim route (PATCH fallback)."""
        self.workers_supported: bool | None = None
        """False when the board has no ``/workers/heartbeat`` route."""
        self.comments_supported: bool | None = None
        """False when the board has no ``/tasks/{id}/comments`` route."""
        self.sessions = SessionsApi(self._transport)
        """The current release's sessions and event feed (``sessions.py``)."""
        self.llm = LlmConfigApi(self._transport)
        """The current release's model choice (``llm_config.py``)."""
        self.chat = ChatApi(self._transport)
        """The current release's async chat: its pending messages (``chat.py``)."""

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None) -> BoardClient:
        """The client the settings describe."""
        return cls(
            settings.taskinfa_api_url,
            settings.taskinfa_api_key,
            rate_limit=settings.rate_limit,
            request_timeout=settings.request_timeout,
            metrics=metrics,
        )

    @property
    def base_url(self) -> str:
        """The board's API URL, without a trailing slash."""
        return self._transport.base_url

    @property
    def limiter(self) -> RateLimiter:
        """The token bucket every request of this client passes."""
        return self._transport.limiter

    @property
    def metrics(self) -> Metrics | None:
        """Where requests are counted, if anywhere."""
        return self._transport.metrics

    def __repr__(self) -> str:
        return (
            f"BoardClient(url={self._transport.shown_base!r}, "
            f"claims_atomic={self.claims_atomic}, limit={self.limiter.limit}/min)"
        )

    # --- lifecycle ------------------------------------------------------------------------
    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session. Idempotent; the client cannot be used afterwards."""
        await self._transport.aclose()

    # --- tasks ----------------------------------------------------------------------------
    async def next_task(
        self, task_list_id: str | None = None, *, lane: Lane = Lane.BACKGROUND
    ) -> NextTask:
        """The task the board would hand out next (read-only: it does not claim)."""
        params = {"task_list_id": task_list_id} if task_list_id else None
        answer = await self._transport.request("GET", NEXT, lane=lane, params=params, retry=True)
        self._transport.expect_ok(answer)
        return self._transport.decode(answer, NextTask)

    async def claim(self, task_id: str, bot_name: str) -> Task | None:
        """Claim a ``todo`` task for ``bot_name``; None when someone else has it.

        Never retried blindly: when the answer is lost the task is read back, and it is ours
        only if it is ``in_progress`` and assigned to ``bot_name``.
        """
        return await self._claimer.claim(task_id, bot_name)

    async def get_task(self, task_id: str, *, lane: Lane = Lane.NORMAL) -> Task | None:
        """The task as the board has it now; None when it was deleted."""
        answer = await self._transport.request("GET", TASK, task_id, lane=lane, retry=True)
        # Only the API itself saying "not found" means deleted. An HTML 404 comes from a
        # proxy or a wrong base URL, and reading it as "deleted" would stop running work.
        if answer.status == 410 or (answer.status == 404 and answer.error_message() is not None):
            return None
        self._transport.expect_ok(answer)
        return self._transport.decode(answer, Task, "task")

    async def update_task(self, task_id: str, *, lane: Lane = Lane.CRITICAL, **fields: Any) -> Task:
        """PATCH the task's ``fields`` (``assigned_to=None`` unassigns); returns the task."""
        answer = await self._transport.request(
            "PATCH", TASK, task_id, lane=lane, json=fields, retry=True
        )
        self._transport.expect_ok(answer)
        return self._transport.decode(answer, Task, "task")

    async def end_task(
        self, task_id: str, *, owner: str | None, lane: Lane = Lane.CRITICAL, **fields: Any
    ) -> Task | None:
        """PATCH an ending onto a task that is ``in_progress`` for ``owner``, until the board's
        state is known (``certain.py``).

        A PATCH is idempotent only while nobody else writes: if a first attempt landed but
        its answer was lost, the task may be back in ``todo`` and claimed again by the time
        a blind retry arrives, which would take it from its new worker. So every unknown
        outcome is read back, and when the task is no longer in progress for ``owner``
        nothing is sent again: the task as it is now is returned (None when deleted).
        """
        return await certain.end_task(
            self._transport,
            lambda: self.get_task(task_id, lane=lane),
            task_id,
            owner,
            fields,
            path=TASK,
            lane=lane,
            factor=self._transport.backoff_factor,
        )

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        task_list_id: str | None = None,
        assigned_to: str | None = None,
        priority: str | None = None,
        limit: int = 50,
        lane: Lane = Lane.BACKGROUND,
    ) -> TaskPage:
        """One page of tasks matching every filter given."""
        filters = {
            "status": status,
            "task_list_id": task_list_id,
            "assigned_to": assigned_to,
            "priority": priority,
        }
        params = {key: value for key, value in filters.items() if value is not None}
        params["limit"] = str(limit)
        answer = await self._transport.request("GET", TASKS, lane=lane, params=params, retry=True)
        self._transport.expect_ok(answer)
        return self._transport.decode(answer, TaskPage)

    async def create_task(self, title: str, task_list_id: str, **fields: Any) -> Task:
        """Add a task (people and tests do this). Not retried: it could be created twice."""
        body = {"title": title, "task_list_id": task_list_id, **fields}
        answer = await self._transport.request(
            "POST", TASKS, lane=Lane.NORMAL, json=body, retry=False
        )
        self._transport.expect_ok(answer)
        return self._transport.decode(answer, Task, "task")

    async def delete_task(self, task_id: str) -> None:
        """Delete a task (local board extension; tests play a person with it)."""
        answer = await self._transport.request(
            "DELETE", TASK, task_id, lane=Lane.NORMAL, retry=True
        )
        if answer.status in (404, 410):
            return  # gone already, perhaps by our own first attempt
        self._transport.expect_ok(answer)

    # --- comments -------------------------------------------------------------------------
    async def add_comment(
        self,
        task_id: str,
        *,
        author: str,
        content: str,
        comment_type: str,
        loop_number: int | None = None,
        lane: Lane = Lane.NORMAL,
        author_type: str = "bot",
    ) -> Comment | None:
        """Post a comment (the worker's own unless ``author_type`` says "user"). None when the
        board has no comments route: the content then goes to the task's
        ``completion_notes`` instead. Not retried (it would duplicate)."""
        if self.comments_supported is False:
            await self._comment_as_notes(task_id, author, content, comment_type, lane)
            return None
        body = _comment_body(author, author_type, content, comment_type, loop_number)
        answer = await self._transport.request(
            "POST", COMMENTS, task_id, lane=lane, json=body, retry=False
        )
        if answer.ok:
            self.comments_supported = True
            return self._transport.decode(answer, Comment, "comment")
        if await route_missing(answer, task_id, self):
            self._note_no_comments_route()
            await self._comment_as_notes(task_id, author, content, comment_type, lane)
            return None
        raise self._transport.error(answer)

    async def add_note(
        self,
        task_id: str,
        *,
        author: str,
        content: str,
        comment_type: str,
        loop_number: int | None = None,
    ) -> bool:
        """Post a note that explains an ending (summary, failure, release, stop) at least once
        and show it once (``certain.py``). False when the comments route kept failing or the
        board has none: the caller then puts the text into the ending's ``completion_notes``
        (one PATCH with the ending, rather than a note's PATCH the ending overwrites), or,
        on a task that is no longer ours, nowhere (its notes are a person's now)."""
        if self.comments_supported is None:
            # Learn first whether the route exists (a read: safe to retry, unlike the post).
            # A process's first note is often a recovery at start, before any other comment.
            # An unreadable answer teaches nothing: the post below then finds out.
            with contextlib.suppress(BoardError):
                await self.list_comments(task_id, limit=1)
        if self.comments_supported is False:
            return False
        body = _comment_body(author, "bot", content, comment_type, loop_number)
        posted = await certain.post_note(
            self._transport,
            lambda: self.list_comments(task_id, limit=certain.NOTES_LOOKED_AT),
            task_id,
            body,
            path=COMMENTS,
            lane=Lane.CRITICAL,
            factor=self._transport.backoff_factor,
        )
        return posted is not False

    async def list_comments(
        self, task_id: str, *, limit: int | None = None, offset: int | None = None
    ) -> CommentPage:
        """Comments of a task, newest first (empty where the board has no comments)."""
        if self.comments_supported is False:
            return CommentPage()
        params = {
            key: str(value)
            for key, value in (("limit", limit), ("offset", offset))
            if value is not None
        }
        answer = await self._transport.request(
            "GET", COMMENTS, task_id, lane=Lane.NORMAL, params=params or None, retry=True
        )
        if not answer.ok and await route_missing(answer, task_id, self):
            self._note_no_comments_route()
            return CommentPage()
        self._transport.expect_ok(answer)
        self.comments_supported = True
        return self._transport.decode(answer, CommentPage)

    # --- workers --------------------------------------------------------------------------
    async def heartbeat(
        self,
        worker_name: str,
        status: str,
        current_task_id: str | None = None,
        *,
        lane: Lane = Lane.BACKGROUND,
    ) -> Heartbeat | None:
        """Tell the board this worker is alive. None when the board has no heartbeat route."""
        if self.workers_supported is False:
            return None
        body: dict[str, Any] = {"worker_name": worker_name, "status": status}
        if current_task_id is not None:
            body["current_task_id"] = current_task_id
        answer = await self._transport.request("POST", HEARTBEAT, lane=lane, json=body, retry=True)
        if answer.status in (404, 405):
            self._note_no_workers_route()
            return None
        self._transport.expect_ok(answer)
        self.workers_supported = True
        return self._transport.decode(answer, Heartbeat)

    async def list_workers(self, *, lane: Lane = Lane.BACKGROUND) -> WorkerList | None:
        """Workers the board knows. None when the board has no workers route."""
        if self.workers_supported is False:
            return None
        answer = await self._transport.request("GET", WORKERS, lane=lane, retry=True)
        if answer.status in (404, 405):
            self._note_no_workers_route()
            return None
        self._transport.expect_ok(answer)
        return self._transport.decode(answer, WorkerList)

    # --- task lists -----------------------------------------------------------------------
    async def get_task_list(self, task_list_id: str) -> Project:
        """A task list (project): its repository and working directory."""
        answer = await self._transport.request(
            "GET", TASK_LIST, task_list_id, lane=Lane.NORMAL, retry=True
        )
        self._transport.expect_ok(answer)
        return self._transport.decode(answer, Project, "task_list")

    async def list_task_lists(self) -> list[Project]:
        """Every task list of the workspace."""
        answer = await self._transport.request("GET", TASK_LISTS, lane=Lane.NORMAL, retry=True)
        self._transport.expect_ok(answer)
        redact = self._transport.redact
        items = answer.json_field("task_lists", redact)
        if not isinstance(items, list):
            raise answer.malformed('"task_lists" is not a list', redact)
        return [answer.model(Project, item, redact) for item in items]

    async def create_task_list(self, name: str, **fields: Any) -> Project:
        """Add a task list. Not retried: it could be created twice."""
        answer = await self._transport.request(
            "POST", TASK_LISTS, lane=Lane.NORMAL, json={"name": name, **fields}, retry=False
        )
        self._transport.expect_ok(answer)
        return self._transport.decode(answer, Project, "task_list")

    # --- fallbacks for missing routes -----------------------------------------------------
    def _note_no_workers_route(self) -> None:
        if self.workers_supported is not False:
            # INFO: the current release has no /workers at all and shows agents by their
            # sessions; the pool says so at WARNING where nothing would show this worker.
            logger.info(
                "The board at {} has no /workers routes: no heartbeats are sent (the "
                "current release shows agents by their sessions instead).",
                self._transport.shown_base,
            )
        self.workers_supported = False

    def _note_no_comments_route(self) -> None:
        if self.comments_supported is not False:
            logger.warning(
                "The board at {} has no comments route: progress goes to the task's "
                "completion_notes instead.",
                self._transport.shown_base,
            )
        self.comments_supported = False

    async def _comment_as_notes(
        self, task_id: str, author: str, content: str, comment_type: str, lane: Lane
    ) -> None:
        notes = f"[{comment_type}] {author}: {content}"
        if len(notes) > MAX_NOTES:
            notes = notes[: MAX_NOTES - 1] + "…"
        await self.update_task(task_id, lane=lane, completion_notes=notes)


def not_the_api(exc: BoardError) -> str | None:
    """What to fix when the task list itself is not found: every board has ``GET /tasks``,
    so a 404 there means ``TASKINFA_API_URL`` names something else (most often the
    dashboard's address without ``/api``). None for any other error. The answer's body, a
    web page there, is left out."""
    if not isinstance(exc, NotFoundError) or not urlsplit(exc.url).path.endswith(TASKS):
        return None
    return (
        f"{exc.method} {exc.url} answered {exc.status}: TASKINFA_API_URL is not the board's"
        " API, which on a Taskinfa dashboard ends in /api (http://localhost:3000/api)"
    )


def _comment_body(
    author: str, author_type: str, content: str, comment_type: str, loop_number: int | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "author": author,
        "author_type": author_type,
        "content": content,
        "comment_type": comment_type,
    }
    if loop_number is not None:
        body["loop_number"] = loop_number
    return body
