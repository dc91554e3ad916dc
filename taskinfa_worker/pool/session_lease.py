"""The lease where the board has no ``/workers``: a run's session is its sign of life.

The current release keeps no heartbeats, so a worker that died and came back under another
name (a Kubernetes pod) would leave its tasks ``in_progress`` for ever. Every run of this
worker there is a session whose summary starts with an owner mark (``sessions.py``: slot and
task) and whose ``last_event_at`` a keep-alive moves three times per lease. So a task
``in_progress`` is released (back to ``todo`` with a comment, the attempt counted as a
crash's) when:

- its newest active session with an owner mark names it and the slot it is assigned to (a
  task without one is a person's, or another tool's: never touched), and
- that session's last sign of life (``Session.last_sign_of_life``) and the task's claim are
  both older than the lease, and
- it is not held by this worker (our own runs, our own slot names).

The dead run's session is then ended as ``error``; so is a marked session silent past the
lease whose task is no longer in progress for its slot (its run ended without a word).
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from loguru import logger

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.models import Session, Task
from taskinfa_worker.client.sessions import LIST_LIMIT
from taskinfa_worker.errors import BoardError
from taskinfa_worker.pool.owner_mark import marked_owner
from taskinfa_worker.pool.recovery import age, claimed_at, in_progress_page
from taskinfa_worker.pool.reporting import TaskReporter


@dataclass(frozen=True)
class DeadRun:
    task: Task
    session: Session
    silent: float  # seconds since the session's last sign of life


_NEVER = datetime.min.replace(tzinfo=UTC)


def newest_sessions(sessions: Iterable[Session]) -> dict[tuple[str, str], Session]:
    """The newest session of each (slot, task) its owner mark names."""
    newest: dict[tuple[str, str], Session] = {}
    for session in sessions:
        owner = marked_owner(session.summary)
        if owner is None:
            continue
        known = newest.get(owner)
        if known is None or (known.started_at or _NEVER) < (session.started_at or _NEVER):
            newest[owner] = session
    return newest


def dead_runs(
    tasks: Iterable[Task],
    sessions: Iterable[Session],
    lease_timeout: float,
    now: datetime,
    *,
    running: Container[str] = (),
    own_slots: Container[str] = (),
) -> list[DeadRun]:
    """The tasks whose run's session went silent past the lease; never one this worker
    runs (``running``: task ids) or holds (``own_slots``)."""
    by_owner = newest_sessions(sessions)
    dead = []
    for task in tasks:
        if task.id in running or task.assigned_to is None or task.assigned_to in own_slots:
            continue
        session = by_owner.get((task.assigned_to, task.id))
        if session is None:
            continue  # no run of a worker: a person's task
        silent = age(session.last_sign_of_life, now)
        claimed_ago = age(claimed_at(task), now)
        if silent > lease_timeout and claimed_ago > lease_timeout:
            dead.append(DeadRun(task, session, silent))
    return dead


def stale_sessions(
    sessions: Iterable[Session], tasks: Iterable[Task], lease_timeout: float, now: datetime
) -> list[Session]:
    """Marked sessions silent past the lease whose task is no longer in progress for their
    slot: runs that ended without a word (a crash the restart recovered, a task a person
    took over from a dead worker). Only their sessions are left to end."""
    held = {(task.assigned_to, task.id) for task in tasks}
    return [
        session
        for session in sessions
        if (owner := marked_owner(session.summary)) is not None
        and owner not in held
        and age(session.last_sign_of_life, now) > lease_timeout
    ]


class SessionLease:
    """One round of the lease by sessions, for ``LeaseSweeper`` on a board without workers."""

    def __init__(
        self,
        client: BoardClient,
        reporter: TaskReporter,
        running: Container[str],
        own_slots: Container[str],
        lease_timeout: float,
        author: str,
    ) -> None:
        self._client = client
        self._reporter = reporter
        self._running = running
        self._own_slots = own_slots
        self._lease_timeout = lease_timeout
        self._author = author

    async def sweep(self) -> bool:
        """One round. False when the board has no sessions either (the lease then ends)."""
        try:
            sessions = await self._client.sessions.find(status="active")
            if sessions is None:
                return False
            tasks = (await in_progress_page(self._client)).tasks
            if len(sessions) >= LIST_LIMIT:
                sessions = sessions + await self._more_sessions(tasks)
        except BoardError as exc:
            logger.warning("lease check by sessions failed: {}", exc)
            return True
        now = datetime.now(UTC)
        dead = dead_runs(
            tasks,
            sessions,
            self._lease_timeout,
            now,
            running=self._running,
            own_slots=self._own_slots,
        )
        for run in dead:
            await self._release(run)
        released = {run.session.id for run in dead}
        for session in stale_sessions(sessions, tasks, self._lease_timeout, now):
            if session.id not in released:
                await self._end_stale(session)
        return True

    async def _more_sessions(self, tasks: list[Task]) -> list[Session]:
        # A full page (the release has no offset) may hide older sessions: ask per project.
        found: list[Session] = []
        for project in sorted({task.task_list_id for task in tasks if task.task_list_id}):
            found += await self._client.sessions.find(status="active", project_id=project) or []
        return found

    async def _end_stale(self, session: Session) -> None:
        try:
            await self._client.sessions.update(
                session.id,
                status="error",
                summary=f"{session.summary}\n\nIts worker went silent and the run is over; "
                f"{self._author} ended this session.",
            )
        except BoardError as exc:
            logger.warning("could not end the stale session {}: {}", session.id, exc)

    async def _release(self, dead: DeadRun) -> None:
        task = dead.task
        logger.warning(
            "lease of {} expired ({}'s session silent for {:.0f} s)",
            task.id,
            task.assigned_to,
            dead.silent,
        )
        why = (
            f"Its worker {task.assigned_to} showed no sign of life in its session for "
            f"{dead.silent:.0f} s (lease {self._lease_timeout:.0f} s); {self._author} released it."
        )
        try:
            await self._reporter.fail(task, self._author, why)
            await self._client.sessions.update(dead.session.id, status="error", summary=why)
        except BoardError as exc:
            logger.warning("could not release {}: {}", task.id, exc)
