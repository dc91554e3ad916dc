"""The board API client: the one object through which the process talks to the board.

Every request passes the shared ``RateLimiter`` in its lane, is timed out on its own, counted
by endpoint and status, and retried only when repeating it is safe: reads, PATCHes and
heartbeats are retried on connection errors, timeouts and 5xx within a per-lane time
budget; comments, creations and claims never are, because the board may have done them
already. A 429 was not processed by the board, so it is waited out and repeated for every
method.

Real servers differ from the documented API (``API.md``, "Real servers differ"): where the
claim, heartbeat or comments route is missing the client notices once, logs it once and
carries on with the closest thing the server offers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote

import aiohttp
import backoff
from loguru import logger
from multidict import CIMultiDict
from pydantic import SecretStr

from taskinfa_worker import __version__
from taskinfa_worker.errors import (
    ApiError,
    MalformedResponseError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from taskinfa_worker.http_errors import Answer, excerpt
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.models import (
    Comment,
    CommentPage,
    Heartbeat,
    NextTask,
    Project,
    Task,
    TaskPage,
    TaskStatus,
    WorkerList,
)
from taskinfa_worker.ratelimit import Lane, RateLimiter, parse_retry_after
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings

__all__ = ["DEFAULT_RETRY_MAX_TIME", "BoardClient", "Lane"]

DEFAULT_RETRY_MAX_TIME: Final[Mapping[Lane, float]] = {
    # Finishing a task must survive the board being away for minutes.
    Lane.CRITICAL: 600.0,
    Lane.NORMAL: 60.0,
    # Background loops try again next cycle anyway: one attempt.
    Lane.BACKGROUND: 0.0,
}
MAX_BACKOFF: Final = 30.0
# 429s one call waits out before it gives up with RateLimitedError.
MAX_RATE_LIMITED: Final = 5
# completion_notes carries progress where the board has no comments; keep it readable.
MAX_NOTES: Final = 4000

# Endpoint templates: metrics and logs name these, never a raw id.
NEXT: Final = "/tasks/next"
TASKS: Final = "/tasks"
TASK: Final = "/tasks/{id}"
CLAIM: Final = "/tasks/{id}/claim"
COMMENTS: Final = "/tasks/{id}/comments"
HEARTBEAT: Final = "/workers/heartbeat"
WORKERS: Final = "/workers"
TASK_LISTS: Final = "/task-lists"
TASK_LIST: Final = "/task-lists/{id}"


def _path(template: str, ident: str) -> str:
    # Ids come from the board; quoting keeps one from reaching another route ("../").
    return template.replace("{id}", quote(ident, safe=""))


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
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._redact = Redactor([api_key])
        self._shown_base = self._redact(self.base_url)
        self.limiter = limiter if limiter is not None else RateLimiter(rate_limit)
        self.metrics = metrics
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._retry_max_time = {**DEFAULT_RETRY_MAX_TIME, **(retry_max_time or {})}
        self._backoff_factor = backoff_factor
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self.claims_atomic: bool | None = None
        """None until known; False when the board has no claim route (PATCH fallback)."""
        self.workers_supported: bool | None = None
        """False when the board has no ``/workers/heartbeat`` route."""
        self.comments_supported: bool | None = None
        """False when the board has no ``/tasks/{id}/comments`` route."""

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

    def __repr__(self) -> str:
        return (
            f"BoardClient(url={self._shown_base!r}, claims_atomic={self.claims_atomic}, "
            f"limit={self.limiter.limit}/min)"
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
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("BoardClient is closed")
        if self._session is None:
            # Made on first use, inside the running loop, so that the client itself can be
            # built from synchronous code (the CLI).
            self._session = aiohttp.ClientSession(
                headers={
                    "Authorization": f"Bearer {self._api_key.get_secret_value()}",
                    "Accept": "application/json",
                    "User-Agent": f"taskinfa-worker/{__version__}",
                },
                timeout=self._timeout,
            )
        return self._session

    # --- tasks ----------------------------------------------------------------------------
    async def next_task(
        self, task_list_id: str | None = None, *, lane: Lane = Lane.BACKGROUND
    ) -> NextTask:
        """The task the board would hand out next (read-only: it does not claim)."""
        params = {"task_list_id": task_list_id} if task_list_id else None
        answer = await self._request("GET", NEXT, NEXT, lane=lane, params=params, retry=True)
        self._expect_ok(answer)
        return answer.model(NextTask, answer.json_object(self._redact), self._redact)

    async def claim(self, task_id: str, bot_name: str) -> Task | None:
        """Claim a ``todo`` task for ``bot_name``; None when someone else has it.

        Never retried blindly: when the answer is lost the task is read back, and it is ours
        only if it is ``in_progress`` and assigned to ``bot_name``.
        """
        if self.claims_atomic is False:
            return await self._claim_by_patch(task_id, bot_name)
        try:
            answer = await self._request(
                "POST",
                CLAIM,
                _path(CLAIM, task_id),
                lane=Lane.NORMAL,
                json={"bot_name": bot_name},
                retry=False,
            )
        except (TransportError, ServerError) as exc:
            logger.warning(
                "Claim of task {} got no clear answer ({}); reading it back", task_id, exc
            )
            return await self._confirm_claim(task_id, bot_name)
        if answer.ok:
            self.claims_atomic = True
            try:
                return self._task_of(answer)
            except MalformedResponseError:
                # The claim went through, but we cannot see for whom: ask the task.
                return await self._confirm_claim(task_id, bot_name)
        if answer.status == 409:
            self.claims_atomic = True
            return None
        if await self._route_missing(answer, task_id):
            self._note_no_claim_route()
            return await self._claim_by_patch(task_id, bot_name)
        if answer.status in (404, 410):
            return None  # deleted before we got to it: lost like any other race
        raise answer.error(self._redact)

    async def get_task(self, task_id: str, *, lane: Lane = Lane.NORMAL) -> Task | None:
        """The task as the board has it now; None when it was deleted."""
        answer = await self._request("GET", TASK, _path(TASK, task_id), lane=lane, retry=True)
        # Only the API itself saying "not found" means deleted. An HTML 404 comes from a
        # proxy or a wrong base URL, and reading it as "deleted" would stop running work.
        if answer.status == 410 or (answer.status == 404 and answer.error_message() is not None):
            return None
        self._expect_ok(answer)
        return self._task_of(answer)

    async def update_task(self, task_id: str, *, lane: Lane = Lane.CRITICAL, **fields: Any) -> Task:
        """PATCH the task's ``fields`` (``assigned_to=None`` unassigns); returns the task."""
        answer = await self._request(
            "PATCH", TASK, _path(TASK, task_id), lane=lane, json=fields, retry=True
        )
        self._expect_ok(answer)
        return self._task_of(answer)

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
        answer = await self._request("GET", TASKS, TASKS, lane=lane, params=params, retry=True)
        self._expect_ok(answer)
        return answer.model(TaskPage, answer.json_object(self._redact), self._redact)

    async def create_task(self, title: str, task_list_id: str, **fields: Any) -> Task:
        """Add a task (people and tests do this). Not retried: it could be created twice."""
        body = {"title": title, "task_list_id": task_list_id, **fields}
        answer = await self._request("POST", TASKS, TASKS, lane=Lane.NORMAL, json=body, retry=False)
        self._expect_ok(answer)
        return self._task_of(answer)

    async def delete_task(self, task_id: str) -> None:
        """Delete a task (local board extension; tests play a person with it)."""
        answer = await self._request(
            "DELETE", TASK, _path(TASK, task_id), lane=Lane.NORMAL, retry=True
        )
        if answer.status in (404, 410):
            return  # gone already, perhaps by our own first attempt
        self._expect_ok(answer)

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
    ) -> Comment | None:
        """Post a bot comment. None when the board has no comments route: the content then
        goes to the task's ``completion_notes`` instead. Not retried (it would duplicate)."""
        if self.comments_supported is False:
            await self._comment_as_notes(task_id, author, content, comment_type, lane)
            return None
        body: dict[str, Any] = {
            "author": author,
            "author_type": "bot",
            "content": content,
            "comment_type": comment_type,
        }
        if loop_number is not None:
            body["loop_number"] = loop_number
        answer = await self._request(
            "POST", COMMENTS, _path(COMMENTS, task_id), lane=lane, json=body, retry=False
        )
        if answer.ok:
            self.comments_supported = True
            comment = answer.json_field("comment", self._redact)
            return answer.model(Comment, comment, self._redact)
        if await self._route_missing(answer, task_id):
            self._note_no_comments_route()
            await self._comment_as_notes(task_id, author, content, comment_type, lane)
            return None
        raise answer.error(self._redact)

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
        answer = await self._request(
            "GET",
            COMMENTS,
            _path(COMMENTS, task_id),
            lane=Lane.NORMAL,
            params=params or None,
            retry=True,
        )
        if not answer.ok and await self._route_missing(answer, task_id):
            self._note_no_comments_route()
            return CommentPage()
        self._expect_ok(answer)
        return answer.model(CommentPage, answer.json_object(self._redact), self._redact)

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
        answer = await self._request("POST", HEARTBEAT, HEARTBEAT, lane=lane, json=body, retry=True)
        if answer.status in (404, 405):
            self._note_no_workers_route()
            return None
        self._expect_ok(answer)
        self.workers_supported = True
        return answer.model(Heartbeat, answer.json_object(self._redact), self._redact)

    async def list_workers(self, *, lane: Lane = Lane.BACKGROUND) -> WorkerList | None:
        """Workers the board knows. None when the board has no workers route."""
        if self.workers_supported is False:
            return None
        answer = await self._request("GET", WORKERS, WORKERS, lane=lane, retry=True)
        if answer.status in (404, 405):
            self._note_no_workers_route()
            return None
        self._expect_ok(answer)
        return answer.model(WorkerList, answer.json_object(self._redact), self._redact)

    # --- task lists -----------------------------------------------------------------------
    async def get_task_list(self, task_list_id: str) -> Project:
        """A task list (project): its repository and working directory."""
        answer = await self._request(
            "GET", TASK_LIST, _path(TASK_LIST, task_list_id), lane=Lane.NORMAL, retry=True
        )
        self._expect_ok(answer)
        return answer.model(Project, answer.json_field("task_list", self._redact), self._redact)

    async def list_task_lists(self) -> list[Project]:
        """Every task list of the workspace."""
        answer = await self._request("GET", TASK_LISTS, TASK_LISTS, lane=Lane.NORMAL, retry=True)
        self._expect_ok(answer)
        items = answer.json_field("task_lists", self._redact)
        if not isinstance(items, list):
            raise answer.malformed('"task_lists" is not a list', self._redact)
        return [answer.model(Project, item, self._redact) for item in items]

    async def create_task_list(self, name: str, **fields: Any) -> Project:
        """Add a task list. Not retried: it could be created twice."""
        answer = await self._request(
            "POST",
            TASK_LISTS,
            TASK_LISTS,
            lane=Lane.NORMAL,
            json={"name": name, **fields},
            retry=False,
        )
        self._expect_ok(answer)
        return answer.model(Project, answer.json_field("task_list", self._redact), self._redact)

    # --- claim fallback -------------------------------------------------------------------
    async def _claim_by_patch(self, task_id: str, bot_name: str) -> Task | None:
        # Boards without the claim route: take the task with a PATCH if it looks free,
        # then read it back. Two workers can still both write; the read-back (and the pool's
        # later ownership checks) tell the loser.
        task = await self.get_task(task_id, lane=Lane.NORMAL)
        if task is None or task.status != TaskStatus.TODO or task.assigned_to:
            return None
        try:
            answer = await self._request(
                "PATCH",
                TASK,
                _path(TASK, task_id),
                lane=Lane.NORMAL,
                json={"status": TaskStatus.IN_PROGRESS, "assigned_to": bot_name},
                retry=True,
            )
        except (TransportError, ServerError) as exc:
            logger.warning(
                "Claim of task {} got no clear answer ({}); reading it back", task_id, exc
            )
        else:
            if answer.status in (404, 410):
                return None
            self._expect_ok(answer)
        return await self._confirm_claim(task_id, bot_name)

    async def _confirm_claim(self, task_id: str, bot_name: str) -> Task | None:
        # A claim whose outcome is unknown leaves a task nobody works on; this read matters
        # as much as finishing one.
        task = await self.get_task(task_id, lane=Lane.CRITICAL)
        mine = task is not None and task.status == TaskStatus.IN_PROGRESS
        return task if mine and task is not None and task.assigned_to == bot_name else None

    async def _route_missing(self, answer: Answer, task_id: str) -> bool:
        """Whether a 404/405 means the route is missing rather than the task."""
        if answer.status == 405:
            return True
        if answer.status != 404:
            return False
        if answer.error_message() is None:
            return True  # HTML or empty: the server's page for an unknown route
        # A JSON 404 may be the API saying "task not found" or a JSON "no such route";
        # the task itself tells them apart.
        return await self.get_task(task_id, lane=Lane.NORMAL) is not None

    def _note_no_claim_route(self) -> None:
        if self.claims_atomic is not False:
            logger.warning(
                "The board at {} has no claim route (POST /tasks/{{id}}/claim): claiming with "
                "PATCH and reading the task back. Claims are NOT atomic on this server; two "
                "workers may take the same task.",
                self._shown_base,
            )
        self.claims_atomic = False

    def _note_no_workers_route(self) -> None:
        if self.workers_supported is not False:
            logger.warning(
                "The board at {} has no /workers/heartbeat route: heartbeats are not sent.",
                self._shown_base,
            )
        self.workers_supported = False

    def _note_no_comments_route(self) -> None:
        if self.comments_supported is not False:
            logger.warning(
                "The board at {} has no comments route: progress goes to the task's "
                "completion_notes instead.",
                self._shown_base,
            )
        self.comments_supported = False

    async def _comment_as_notes(
        self, task_id: str, author: str, content: str, comment_type: str, lane: Lane
    ) -> None:
        notes = f"[{comment_type}] {author}: {content}"
        if len(notes) > MAX_NOTES:
            notes = notes[: MAX_NOTES - 1] + "…"
        await self.update_task(task_id, lane=lane, completion_notes=notes)

    # --- transport ------------------------------------------------------------------------
    def _task_of(self, answer: Answer) -> Task:
        return answer.model(Task, answer.json_field("task", self._redact), self._redact)

    def _expect_ok(self, answer: Answer) -> None:
        if not answer.ok:
            raise answer.error(self._redact)

    async def _request(
        self,
        method: str,
        template: str,
        path: str,
        *,
        lane: Lane,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        retry: bool,
    ) -> Answer:
        """Send one request; 5xx raise ServerError, other statuses come back as answers.

        With ``retry`` (safe requests only) transport errors, 5xx and lasting 429s are
        retried with exponential backoff and jitter for the lane's time budget.
        """

        async def attempt() -> Answer:
            answer = await self._send(method, template, path, lane, json, params)
            if answer.status >= 500:
                raise answer.error(self._redact)
            return answer

        budget = self._retry_max_time.get(lane, 0.0) if retry else 0.0
        if budget <= 0:
            return await attempt()
        retrying = backoff.on_exception(
            backoff.expo,
            # RateLimitedError: a 429 storm that outlasted the waits in _send; a task's
            # final update keeps trying for the rest of its budget.
            (TransportError, ServerError, RateLimitedError),
            max_time=budget,
            jitter=backoff.full_jitter,
            logger=None,
            on_backoff=self._log_retry,
            factor=self._backoff_factor,
            max_value=MAX_BACKOFF,
        )(attempt)
        answer: Answer = await retrying()
        return answer

    @staticmethod
    def _log_retry(details: Mapping[str, Any]) -> None:
        logger.warning(
            "Board request failed ({}); retry {} in {:.1f} s",
            details.get("exception"),
            details.get("tries"),
            details.get("wait", 0.0),
        )

    async def _send(
        self,
        method: str,
        template: str,
        path: str,
        lane: Lane,
        json: Any,
        params: Mapping[str, str] | None,
    ) -> Answer:
        """One request through the rate limiter, with 429s waited out and repeated."""
        session = self._http()
        url = self.base_url + path
        shown_url = self._shown_base + path
        rate_limited = 0
        while True:
            waited = await self.limiter.acquire(lane)
            if waited > 0 and self.metrics is not None:
                self.metrics.rate_limit_wait_seconds.inc(waited)
            started = time.perf_counter()
            try:
                async with session.request(method, url, json=json, params=params) as response:
                    body = await response.read()
                    answer = Answer(
                        method, shown_url, response.status, body, CIMultiDict(response.headers)
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._record(method, template, 0, started)
                reason = self._redact(excerpt(str(exc))) or type(exc).__name__
                raise TransportError(f"{method} {shown_url}: no answer ({reason})") from exc
            self._record(method, template, answer.status, started)
            self.limiter.observe(answer.headers)
            if answer.status != 429:
                if answer.status in (401, 403):
                    raise answer.error(self._redact)
                return answer
            rate_limited += 1
            if self.metrics is not None:
                self.metrics.api_rate_limited.inc()
            self.limiter.on_rate_limited(self._retry_after(answer))
            if rate_limited > MAX_RATE_LIMITED:
                error = answer.error(self._redact)
                assert isinstance(error, RateLimitedError)
                raise error

    def _retry_after(self, answer: Answer) -> float | None:
        seconds = parse_retry_after(answer.headers.get("Retry-After"), time.time())
        if seconds is not None:
            return seconds
        try:
            hint = answer.json_object(self._redact).get("retryAfter")
        except ApiError:
            return None
        if isinstance(hint, int | float) and not isinstance(hint, bool):
            return parse_retry_after(str(hint), time.time())
        return None

    def _record(self, method: str, template: str, status: int, started: float) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        if self.metrics is not None:
            self.metrics.api_requests.labels(endpoint=template, status=str(status)).inc()
        logger.debug("board {} {} -> {} in {:.0f} ms", method, template, status, elapsed_ms)
