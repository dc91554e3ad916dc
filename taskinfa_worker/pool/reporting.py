"""The one place that writes a task's ending to the board: done, failed, released.

The task runner, crash recovery and the lease sweep all end tasks through here, so the
rules live once:
- every comment is redacted and trimmed;
- a failure counts an attempt and sends the task back to ``todo`` until ``max_attempts``,
  then to the failed status (``blocked`` where the board accepts it, else ``review`` with
  notes starting "Failed:"); a release (shutdown) counts nothing;
- endings go in the CRITICAL lane through ``BoardClient.end_task``, retried for minutes so
  that a board down for a while still gets them, but never sent again onto a task that
  has meanwhile left its owner: a lost answer must not take the task from the next worker
  that claimed it.
"""

from __future__ import annotations

from typing import Any

from loguru import logger

from taskinfa_worker.client.api import BoardClient, Lane
from taskinfa_worker.client.models import CommentType, Task, TaskStatus
from taskinfa_worker.errors import AuthError, BadRequestError, BoardError
from taskinfa_worker.redact import Redactor

COMMENT_LIMIT = 4000
NOTES_LIMIT = 4000


def trim(text: str, limit: int) -> str:
    """Keep the head and the tail of long text: the tail is where errors are."""
    if len(text) <= limit:
        return text
    head = limit // 3
    tail = limit - head - 30
    return f"{text[:head]}\n… [{len(text) - head - tail} characters cut] …\n{text[-tail:]}"


def board_text(text: str, limit: int) -> str:
    """Text a board will store: no NUL characters (agents print binary junk; PostgreSQL and
    the local board refuse NUL with a 400, and a refused ending would leave the task in
    progress), and trimmed to ``limit``."""
    return trim(text.replace("\x00", "\ufffd"), limit)


def server_has(task: Task, field: str) -> bool:
    """Whether the board sent this (later-release) field, so it will accept it back."""
    return field in task.model_fields_set


class TaskReporter:
    """Writes comments and final states for the tasks of one process."""

    def __init__(self, client: BoardClient, redactor: Redactor, max_attempts: int) -> None:
        self._client = client
        self._redact = redactor
        self._max_attempts = max_attempts
        # Real dashboards reject `blocked` as a PATCH status; learn that once.
        self._blocked_accepted = True

    async def comment(
        self,
        task_id: str,
        author: str,
        content: str,
        comment_type: str,
        *,
        loop_number: int | None = None,
        lane: Lane = Lane.NORMAL,
    ) -> bool:
        """Post a comment; a comment that cannot be posted is logged, never fatal."""
        text = board_text(self._redact(content), COMMENT_LIMIT)
        try:
            await self._client.add_comment(
                task_id,
                author=author,
                content=text,
                comment_type=comment_type,
                loop_number=loop_number,
                lane=lane,
            )
        except AuthError:
            raise
        except BoardError as exc:
            logger.warning("comment on {} not posted: {}", task_id, exc)
            return False
        return True

    async def complete(self, task: Task, author: str, notes: str, **fields: Any) -> None:
        """Move a finished task to review, keeping it assigned to the slot that did it."""
        ending: dict[str, Any] = {"status": TaskStatus.REVIEW, "assigned_to": author}
        try:
            await self._client.end_task(
                task.id,
                owner=task.assigned_to,
                completion_notes=board_text(self._redact(notes), NOTES_LIMIT),
                **ending,
                **fields,
            )
        except BadRequestError as exc:
            # A board that refuses some field (its own limits, a field it does not know)
            # must still get the ending: a task left in progress is worse than thin notes.
            logger.warning(
                "{}: the board refused the ending's details ({}); sending less",
                task.id,
                exc.message,
            )
            await self._client.end_task(
                task.id,
                owner=task.assigned_to,
                completion_notes=board_text(
                    f"Done; the board refused the full notes ({exc.message}).", NOTES_LIMIT
                ),
                **ending,
            )

    async def fail(
        self, task: Task, author: str, reason: str, *, session_id: str | None = None
    ) -> str:
        """Count a failed attempt: error comment, then todo or the failed status.

        Returns the status the task was given.
        """
        attempt = task.error_count + 1
        final = attempt >= self._max_attempts
        then = "no more attempts, the task needs a person" if final else "back to todo"
        suffix = f"Attempt {attempt} of {self._max_attempts}: {then}."
        await self.comment(
            task.id,
            author,
            f"Failed: {reason}\n\n{suffix}",
            CommentType.ERROR,
            loop_number=task.loop_count + 1,
            lane=Lane.CRITICAL,
        )
        fields: dict[str, Any] = {"error_count": attempt}
        if session_id and server_has(task, "claude_session_id"):
            fields["claude_session_id"] = session_id  # the retry resumes the session
        if not final:
            fields.update(status=TaskStatus.TODO, assigned_to=None)
        else:
            fields.update(
                status=TaskStatus.BLOCKED if self._blocked_accepted else TaskStatus.REVIEW,
                completion_notes=board_text(self._redact(f"Failed: {reason}"), NOTES_LIMIT),
            )
        try:
            await self._client.end_task(task.id, owner=task.assigned_to, **fields)
        except BadRequestError:
            if fields["status"] != TaskStatus.BLOCKED:
                raise
            logger.info("the board refuses status 'blocked'; failed tasks go to review")
            self._blocked_accepted = False
            fields["status"] = TaskStatus.REVIEW
            await self._client.end_task(task.id, owner=task.assigned_to, **fields)
        return str(fields["status"])

    async def release(self, task: Task, author: str, why: str) -> None:
        """Hand a task back to todo, unassigned, without counting an attempt."""
        await self.comment(
            task.id,
            author,
            f"Released: {why} No attempt was counted; the task is back in todo.",
            CommentType.PROGRESS,
            lane=Lane.CRITICAL,
        )
        await self._client.end_task(
            task.id, owner=task.assigned_to, status=TaskStatus.TODO, assigned_to=None
        )
