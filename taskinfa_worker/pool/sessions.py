"""Each run as a session of the current release's dashboard, with its events.

That dashboard shows agents only through sessions and an event feed. ``RunSessions`` owns
the live sessions of this process, one per running slot:

- a claim begins one (``POST /sessions`` naming the task and its project, with an owner
  mark in the summary: this worker's slot and the task): that is how the dashboard and
  another worker's handover fence see the run from its first moment;
- progress posts an event with each progress comment (the same throttled cadence, whose
  interval counts the event: ``budget.progress_interval``): the run's first one is its
  ``task_claimed``, with the claim and the progress in one message, the others
  ``task_progress``. A run shorter than a progress interval sends no claim event: its
  session and its outcome's event say it all;
- a keep-alive round PATCHes ``last_event_at`` of every live session that showed no other
  sign within ``budget.keepalive_interval`` (a third of the lease), because on a board
  without ``/workers`` another worker trusts that sign to tell a live run from a dead one
  (``session_lease.py``);
- the end posts the outcome's event (``task_completed``, ``error``, ``stuck`` for a stalled
  agent, ``needs_input`` when the task is out of attempts) and PATCHes the session to
  ``completed`` or ``error`` with the outcome as its summary.

All of it is a courtesy: a failed request is one warning, never a failed task, and a board
without the routes turns the feature off after its first answer (``client/sessions.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from loguru import logger

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.models import Task
from taskinfa_worker.client.ratelimit import Lane
from taskinfa_worker.errors import BoardError
from taskinfa_worker.pool import budget
from taskinfa_worker.pool.owner_mark import owner_mark
from taskinfa_worker.pool.runner import Ended, TaskEnding
from taskinfa_worker.redact import Redactor


@dataclass(frozen=True)
class SessionEnd:
    """What the dashboard hears when a run ends."""

    event_type: str
    status: str  # the session's last status: completed or error
    summary: str


def session_end(slot: str, task: Task, ended: Ended | None) -> SessionEnd:
    """The event and final status of a run that ended as ``ended`` (None: unknown)."""
    if ended is None:
        return SessionEnd("error", "error", f"{slot}: the run's ending could not be reported.")
    why = f": {ended.reason}" if ended.reason else ""
    summary = f"{slot} ran {task.id}, {ended.ending.value}{why}"
    if ended.ending is TaskEnding.COMPLETED:
        return SessionEnd("task_completed", "completed", f"{summary}; the task is in review.")
    if ended.ending in (TaskEnding.RELEASED, TaskEnding.STOPPED_BY_BOARD):
        # Not an error of the run: a shutdown, or a person who took the task.
        return SessionEnd("session_end", "completed", summary)
    if ended.gave_up:
        return SessionEnd("needs_input", "error", f"{summary}; the task needs a person.")
    if ended.stalled:
        return SessionEnd("stuck", "error", summary)
    return SessionEnd("error", "error", summary)


@dataclass
class LiveSession:
    id: str
    task: Task
    last_sign: float  # when (monotonic) the board last heard of it
    claim: str | None = None  # the claim's words, until the first progress event says them


class RunSessions:
    """The sessions of this process's running slots."""

    def __init__(
        self,
        client: BoardClient,
        lease_timeout: float,
        redactor: Redactor,
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        # Titles, progress and failure reasons may carry a key someone pasted or an agent
        # printed: every text is masked as the comments are.
        self._redact = redactor
        self._lease_timeout = lease_timeout
        self._enabled = enabled
        self._clock = clock
        self._live: dict[str, LiveSession] = {}  # by slot
        self._warned_budget = False

    @property
    def active(self) -> bool:
        """Whether runs may still become sessions (on, and not known to be unsupported)."""
        return self._enabled and self._client.sessions.supported is not False

    def requests_per_progress(self) -> int:
        """Requests a progress update adds besides its comment: one event, if any."""
        return 1 if self.active else 0

    def interval(self) -> float:
        """The keep-alive round's period."""
        return budget.keepalive_interval(self._lease_timeout)

    async def begin(self, slot: str, task: Task) -> None:
        """A claimed task's run becomes a session, and the feed hears of the claim."""
        if not self.active:
            return
        claim = f"{slot} claimed {task.id}: {task.title}"
        try:
            if await self._open(slot, task, owner_mark(slot, task.id), claim):
                self._check_budget()
        except BoardError as exc:
            logger.warning("session of {} not begun: {}", task.id, exc)

    async def _open(self, slot: str, task: Task, summary: str, claim: str | None) -> bool:
        """A session of ``task`` for ``slot``, its summary ``summary: title``; False on a
        board that turned out to have no sessions."""
        session = await self._client.sessions.create(
            project_id=task.task_list_id,
            task_id=task.id,
            summary=self._redact(f"{summary}: {task.title}"),
        )
        if session is None:
            return False
        self._live[slot] = LiveSession(session.id, task, self._clock(), claim)
        return True

    def names_run(self, slot: str, task_id: str) -> bool:
        """Whether the slot's run of ``task_id`` is a session on the board (its owner mark
        names the task)."""
        live = self._live.get(slot)
        return live is not None and live.task.id == task_id

    async def begin_answer(self, slot: str, task: Task) -> None:
        """An answer to a person's message (``answering.py``) as a session of its own. No
        owner mark: the task is not in progress, so no lease may ever take it from it."""
        if not self.active:
            return
        doing = f"{slot} answers a message on {task.id}"
        try:
            if await self._open(slot, task, f"taskinfa-worker {doing}", None):
                await self._event(slot, "session_start", doing)
        except BoardError as exc:
            logger.warning("session of the answer on {} not begun: {}", task.id, exc)

    async def end_answer(self, slot: str, answered: bool, summary: str) -> None:
        """The answer's session ends: completed when the person got an answer."""
        closing = (
            SessionEnd("session_end", "completed", summary)
            if answered
            else SessionEnd("error", "error", summary)
        )
        live = self._live.pop(slot, None)
        if live is not None:
            await self._close(live, closing)

    async def progress(self, slot: str, text: str) -> None:
        """One progress event, sent with the progress comment of the same text; the first
        one of a run also tells of its claim."""
        live = self._live.get(slot)
        if live is not None and live.claim is not None:
            claim, live.claim = live.claim, None
            await self._event(slot, "task_claimed", f"{claim}\n\n{text}")
            return
        await self._event(slot, "task_progress", text)

    async def end(self, slot: str, ended: Ended | None) -> None:
        """The outcome's event, then the session's end with the outcome as its summary."""
        live = self._live.pop(slot, None)
        if live is not None:
            await self._close(live, session_end(slot, live.task, ended))

    async def _close(self, live: LiveSession, closing: SessionEnd) -> None:
        summary = self._redact(closing.summary)
        try:
            await self._client.sessions.event(
                closing.event_type,
                session_id=live.id,
                task_id=live.task.id,
                message=summary,
                lane=Lane.NORMAL,
            )
            await self._client.sessions.update(live.id, status=closing.status, summary=summary)
        except BoardError as exc:
            logger.warning("session of {} not ended: {}", live.task.id, exc)

    async def keep_alive(self) -> bool:
        """One round: a sign of life for each session quiet for half an interval. False
        once the board has shown it has no sessions (the loop then ends)."""
        if not self.active:
            return False
        due = self._clock() - self.interval() / 2
        for live in list(self._live.values()):
            if live.last_sign > due:
                continue
            try:
                await self._client.sessions.keep_alive(live.id, datetime.now(UTC))
            except BoardError as exc:
                logger.warning("session of {} not kept alive: {}", live.task.id, exc)
                continue
            live.last_sign = self._clock()
        return True

    async def _event(self, slot: str, event_type: str, message: str) -> None:
        live = self._live.get(slot)
        if live is None:
            return
        try:
            await self._client.sessions.event(
                event_type, session_id=live.id, task_id=live.task.id, message=self._redact(message)
            )
        except BoardError as exc:
            logger.warning("{} event of {} not posted: {}", event_type, live.task.id, exc)
            return
        live.last_sign = self._clock()

    def _check_budget(self) -> None:
        """Say once when the lease is too short for this many sessions' keep-alives."""
        if self._warned_budget:
            return
        limiter = self._client.limiter
        heartbeats = self._client.workers_supported is True
        if not budget.keepalives_fit(len(self._live), self._lease_timeout, limiter, heartbeats):
            self._warned_budget = True
            logger.warning(
                "{} sessions' keep-alives every {:.0f} s (a third of LEASE_TIMEOUT) take more "
                "than their share of {:.0f} requests a minute; raise LEASE_TIMEOUT",
                len(self._live),
                self.interval(),
                limiter.rate_per_minute,
            )
