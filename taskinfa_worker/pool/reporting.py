"""The one place that writes what a task's run tells the board: its start and its ending.

The task runner, crash recovery and the lease sweep all write through here, so the rules
live once:
- every comment is redacted and trimmed;
- the texts of the endings (summary, failure, stop, release) are written here, and so are
  the optional fields that depend on what the server sends back (``server_has``);
- a failure counts an attempt and sends the task back to ``todo`` until ``max_attempts``,
  then to the failed status (``blocked`` where the board accepts it, else ``review`` with
  notes starting "Failed:"); a release (shutdown, or a fault of the worker rather than the
  task) counts nothing;
- endings go in the CRITICAL lane through ``BoardClient.end_task``, retried for minutes so
  that a board down for a while still gets them, but never sent again onto a task that
  has meanwhile left its owner: a lost answer must not take the task from the next worker
  that claimed it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loguru import logger

from taskinfa_worker.agent.job import AgentOutcome
from taskinfa_worker.agent.prompt import fence
from taskinfa_worker.client.api import BoardClient, Lane
from taskinfa_worker.client.models import CommentType, Task, TaskStatus
from taskinfa_worker.errors import BadRequestError, BoardError
from taskinfa_worker.pool.progress import listed
from taskinfa_worker.pool.registry import StopKind
from taskinfa_worker.pool.spacing import FAILED, RetrySpacing
from taskinfa_worker.redact import Redactor
from taskinfa_worker.workspace.protocol import Delivery, WorkspaceResult

# How a run's notes start: the handover fence (handover.py) reads a run's start and its end
# from them.
STARTED = "Started by "
STOPPED = "Stopped by "
RELEASED = "Released: "
FINISHED = "Finished"
ATTEMPT_FAILED = "Attempt failed: "
# Every note a run of a taskinfa-worker may leave (a short run leaves no start note: it
# opens the first progress comment): how the async chat tells the tasks it ran.
RUN_NOTES = (STARTED, STOPPED, RELEASED, FINISHED, ATTEMPT_FAILED)
COMMENT_LIMIT = 4000
NOTES_LIMIT = 4000
# The final result text in the summary comment; the transcript has all of it.
RESULT_CHARS = 3000
# The end of stderr in an error comment.
STDERR_LINES = 15
STDERR_CHARS = 1500
FILES_IN_SUMMARY = 30


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

    def __init__(
        self,
        client: BoardClient,
        redactor: Redactor,
        max_attempts: int,
        spacing: RetrySpacing | None = None,
    ) -> None:
        self._client = client
        self._redact = redactor
        self._max_attempts = max_attempts
        self._spacing = spacing or RetrySpacing(0, 1, max_attempts)
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
        except BoardError as exc:
            logger.warning("comment on {} not posted: {}", task_id, exc)
            return False
        return True

    async def note(
        self,
        task: Task,
        author: str,
        content: str,
        comment_type: str,
        *,
        loop_number: int | None = None,
    ) -> bool:
        """Post a note that explains an ending: at least once, shown once (the client reads
        back an unknown outcome). False when it is not a comment on the board (no comments
        route, or it kept failing): the caller then carries its text in the ending's
        ``completion_notes``, which people read on the boards without comments."""
        text = board_text(self._redact(content), COMMENT_LIMIT)
        try:
            return await self._client.add_note(
                task.id,
                author=author,
                content=text,
                comment_type=comment_type,
                loop_number=loop_number,
            )
        except BoardError as exc:  # a refusal (400, 404): the note has no place on the board
            logger.warning("note on {} not posted: {}", task.id, exc)
            return False

    def started_text(self, author: str, attempt: int) -> str:
        """The note that opens a run (the handover fence looks for its first words)."""
        return f"{STARTED}{author} (attempt {attempt} of {self._max_attempts})."

    async def started(self, task: Task, author: str, attempt: int) -> None:
        await self.comment(
            task.id,
            author,
            self.started_text(author, attempt),
            CommentType.PROGRESS,
            loop_number=task.loop_count + 1,
        )

    async def progress(self, task: Task, author: str, text: str) -> None:
        await self.comment(task.id, author, text, CommentType.PROGRESS, lane=Lane.BACKGROUND)

    async def succeeded(
        self, task: Task, author: str, outcome: AgentOutcome, result: WorkspaceResult
    ) -> None:
        """The summary comment, then review with what the server can store of the result."""
        summary = summary_text(outcome, result.files_changed, delivery=result.delivery)
        loop = task.loop_count + 1
        posted = await self.note(task, author, summary, CommentType.SUMMARY, loop_number=loop)
        # Without its summary comment, the notes carry the summary (it holds the result).
        notes = outcome.result_text if posted and outcome.result_text else summary
        if result.delivery is not None and result.delivery.push_error is not None:
            # Review, because the work is done; but nobody may take it for pushed.
            unpushed = delivery_text(result.delivery)
            await self.note(task, author, unpushed, CommentType.ERROR, loop_number=loop)
            notes = f"{unpushed}\n\n{notes}"
        fields: dict[str, object] = {"files_changed": result.files_changed, "loop_count": loop}
        optional = {
            "branch_name": result.branch_name,
            "pr_url": result.pr_url,
            "claude_session_id": outcome.session_id,
        }
        for name, value in optional.items():
            if value and server_has(task, name):
                fields[name] = value
        await self.complete(task, author, notes, **fields)

    async def stopped(self, task: Task, author: str, kind: StopKind, reason: str) -> None:
        """A person took the task away: say why the agent stopped, unless it is gone."""
        logger.info("stopped {}: {}", task.id, reason)
        if kind is StopKind.DELETED:
            return  # nothing left to comment on
        # Never into completion_notes, even on a board without comments: the task is a
        # person's now, and so are its notes.
        await self.note(
            task,
            author,
            f"{STOPPED}{author}: {reason} The agent was stopped; the task is left as set.",
            CommentType.PROGRESS,
        )

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
        wait = 0.0 if final else self._spacing.delay(attempt)
        if wait:
            then += f"; the next attempt waits at least {wait:g} s (RETRY_BACKOFF)"
        suffix = f"Attempt {attempt} of {self._max_attempts}: {then}."
        text = f"{FAILED}{reason}\n\n{suffix}"
        posted = await self.note(
            task, author, text, CommentType.ERROR, loop_number=task.loop_count + 1
        )
        # The notes say it too, so the next attempt learns why even if the comment was lost
        # (and spacing.py reads their first word); all of it where there is no comment.
        notes = f"{FAILED}{reason}" if posted else text
        fields: dict[str, Any] = {
            "error_count": attempt,
            "completion_notes": board_text(self._redact(notes), NOTES_LIMIT),
        }
        if session_id and server_has(task, "claude_session_id"):
            fields["claude_session_id"] = session_id  # the retry resumes the session
        if not final:
            fields.update(status=TaskStatus.TODO, assigned_to=None)
        else:
            fields["status"] = TaskStatus.BLOCKED if self._blocked_accepted else TaskStatus.REVIEW
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

    async def agent_failed(self, task: Task, author: str, outcome: AgentOutcome) -> str:
        """Count the failed attempt of a run, with the failure comment written from it."""
        return await self.fail(task, author, failure_text(outcome), session_id=outcome.session_id)

    async def worker_fault(self, task: Task, author: str, outcome: AgentOutcome) -> None:
        """The worker, not the task, failed: say so and what to fix; no attempt counted."""
        reason = outcome.reason.strip().rstrip(".")
        await self.release(
            task,
            author,
            f"the worker {author} is at fault, not the task: {reason}. "
            f"To fix on the worker: {outcome.worker_fault}. The worker stops claiming for a while.",
        )

    async def release(self, task: Task, author: str, why: str) -> None:
        """Hand a task back to todo, unassigned, without counting an attempt."""
        text = f"{RELEASED}{why} No attempt was counted; the task is back in todo."
        fields: dict[str, Any] = {"status": TaskStatus.TODO, "assigned_to": None}
        if not await self.note(task, author, text, CommentType.PROGRESS):
            fields["completion_notes"] = board_text(self._redact(text), NOTES_LIMIT)
        await self._client.end_task(task.id, owner=task.assigned_to, **fields)


def _identity(text: str) -> str:
    return text


NO_CHANGES = "No changes: the agent changed no file, so there is nothing to review."


def summary_text(
    outcome: AgentOutcome,
    files_changed: Sequence[str],
    *,
    delivery: Delivery | None = None,
    redactor: Redactor | None = None,
) -> str:
    """The summary comment of a successful run: what happened, and where the work is."""
    facts = _facts(outcome)
    header = FINISHED + (f": {facts}." if facts else ".")
    parts = [header]
    result = outcome.result_text.strip()
    if result:
        parts.append(_trim_start(result, RESULT_CHARS))
    if files_changed:
        parts.append(
            f"Files changed ({len(files_changed)}): {listed(files_changed, FILES_IN_SUMMARY)}"
        )
    else:
        parts.append(NO_CHANGES)
    if delivery is not None:
        parts.append(delivery_text(delivery))
    return (redactor or _identity)("\n\n".join(parts))


def delivery_text(delivery: Delivery) -> str:
    """Where the work is: the branch and commit, pushed or not, and how to see it."""
    where = f"Branch {delivery.branch} at commit {delivery.commit[:12]}"
    kept = f"It is kept in the worker's mirror; on the worker's host: {delivery.show_command()}"
    if delivery.pushed:
        return f"{where}, pushed to {delivery.remote}."
    if delivery.push_error is None:
        return f"{where}, not pushed (PUSH=off). {kept}"
    return f"{where}, NOT pushed: {delivery.push_error}. {kept}"


def failure_text(outcome: AgentOutcome, *, redactor: Redactor | None = None) -> str:
    """The error comment of a failed run: why, exit code, the end of stderr."""
    reason = outcome.reason.strip() or "The agent failed without saying why."
    parts = [f"{ATTEMPT_FAILED}{reason}"]
    facts = []
    if outcome.exit_code is not None:
        facts.append(f"exit code {outcome.exit_code}")
    if stats := _facts(outcome):
        facts.append(stats)
    if facts:
        parts.append("(" + ", ".join(facts) + ")")
    tail = _tail(outcome.stderr_tail)
    if tail:
        parts.append("End of stderr:\n" + fence(tail))
    return (redactor or _identity)("\n\n".join(parts))


def format_duration(milliseconds: int) -> str:
    seconds = max(0, round(milliseconds / 1000))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _facts(outcome: AgentOutcome) -> str:
    facts = []
    if outcome.duration_ms is not None:
        facts.append(format_duration(outcome.duration_ms))
    if outcome.num_turns is not None:
        facts.append(f"{outcome.num_turns} turn" + ("" if outcome.num_turns == 1 else "s"))
    if outcome.cost_usd is not None:
        facts.append(f"${outcome.cost_usd:.2f}")
    return ", ".join(facts)


def _trim_start(text: str, limit: int) -> str:
    """The beginning of ``text``, cut at a line end when one is near the limit."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    newline = cut.rfind("\n")
    if newline > limit * 0.7:
        cut = cut[:newline]
    return cut.rstrip() + f"\n… ({len(text) - len(cut)} more characters in the transcript)"


def _tail(text: str) -> str:
    """The last lines of ``text`` (the end is what explains a failure)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    tail = "\n".join(lines[-STDERR_LINES:])
    return tail if len(tail) <= STDERR_CHARS else "…" + tail[-STDERR_CHARS:]
