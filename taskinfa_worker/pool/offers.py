"""Which task to claim next, within the projects ``TASK_LIST_ID`` names.

``GET /tasks/next`` is asked first, because it applies the board's own rules (on the
current release it skips subtasks and tasks whose dependencies are not done). Its offer is
taken only when it belongs to an allowed project: no real release reads ``task_list_id``
there, so a worker limited to one project was offered, and ran, another project's task.
When the offer is outside the allowed projects, the todo tasks of each allowed project are
listed (``GET /tasks?status=todo&task_list_id=…`` filters on every release) and the first
in the board's order is offered: priority (urgent first), then ``order``, then the oldest.
An empty ``/tasks/next`` means no task is waiting anywhere, so nothing more is asked.

A failed task waits before its next attempt (``spacing.py``), but the board does not know
that and keeps offering it first. Such an offer is skipped the same way: the todo list is
read and the first task in the board's order that does not wait is offered, so a waiting
task holds up no other and nobody's order is changed. When every task waits, nothing is
offered and ``soonest_retry`` says when the first may be tried.

The fallback leaves out subtasks, and tasks the list marks ``is_blocked`` (the current
release: a dependency not yet done). The worker-era release's list does not say whether a
task waits on another, so there the fallback cannot see dependencies.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from loguru import logger

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.models import PRIORITY_RANK, NextTask, Project, Task
from taskinfa_worker.pool.spacing import RetrySpacing

LIST_LIMIT = 100
"""The most tasks one list request returns (the board's maximum)."""
_OLDEST = datetime.min.replace(tzinfo=UTC)


def board_order(task: Task) -> tuple[int, int, datetime]:
    """The order in which the board offers tasks: priority, then ``order``, then age."""
    created = task.created_at or _OLDEST
    return (PRIORITY_RANK.get(task.priority, len(PRIORITY_RANK)), task.order, created)


class Offers:
    """Finds the next task for this worker's projects (all projects when none is named)."""

    def __init__(
        self, client: BoardClient, task_list_ids: tuple[str, ...], spacing: RetrySpacing
    ) -> None:
        self._client = client
        self._allowed = task_list_ids
        self._spacing = spacing
        self._warned = False
        self._told: set[tuple[str, int]] = set()  # (task, failures) whose wait was logged
        self.soonest_retry: float | None = None
        """After ``next``: seconds until the first waiting task may be tried (None: none)."""

    def allows(self, task: Task) -> bool:
        """Whether this worker may take ``task`` (its project is one of ``TASK_LIST_ID``)."""
        return not self._allowed or task.task_list_id in self._allowed

    async def next(self) -> NextTask:
        """The task to claim next, with its project; both None when there is none."""
        self.soonest_retry = None
        # One project: ask with the filter, for boards that honour it (the local board).
        only = self._allowed[0] if len(self._allowed) == 1 else None
        offer = await self._client.next_task(only)
        if offer.task is None:
            return offer
        if not self.allows(offer.task):
            self._warn_once(offer.task)
        elif not self._must_wait(offer.task, datetime.now(UTC)):
            return offer
        return await self._listed()

    def _warn_once(self, task: Task) -> None:
        if self._warned:
            return
        self._warned = True
        logger.warning(
            "the board offered task {} of project {!r}, outside TASK_LIST_ID ({}): its "
            "/tasks/next ignores the filter, so work is found by listing each project's "
            "todo tasks instead",
            task.id,
            task.task_list_id,
            ", ".join(self._allowed),
        )

    def _must_wait(self, task: Task, now: datetime) -> bool:
        """Whether ``task`` is still waiting for its next attempt; keeps the soonest end."""
        wait = self._spacing.wait(task, now)
        if wait <= 0:
            return False
        if self.soonest_retry is None or wait < self.soonest_retry:
            self.soonest_retry = wait
        if (task.id, task.error_count) not in self._told:
            self._told.add((task.id, task.error_count))
            ready = time.strftime("%H:%M:%S", time.gmtime(time.time() + wait))
            logger.info(
                "task {} failed {} time(s): attempt {} waits until {} UTC (RETRY_BACKOFF); "
                "other tasks go first",
                task.id,
                task.error_count,
                task.error_count + 1,
                ready,
            )
        return True

    async def _listed(self) -> NextTask:
        candidates: list[Task] = []
        now = datetime.now(UTC)
        # No project named: one list of every project's todo tasks.
        for task_list_id in self._allowed or (None,):
            page = await self._client.list_tasks(
                status="todo", task_list_id=task_list_id, limit=LIST_LIMIT
            )
            candidates += [
                task
                for task in page.tasks
                # The filters are checked again: a board that ignored one must not
                # hand over another project's task, a taken one or a subtask.
                if task.status == "todo"
                and task.assigned_to is None
                and task.parent_task_id is None
                and not task.is_blocked
                and task.task_list_id is not None  # /tasks/next offers project tasks only
                and self.allows(task)
                and not self._must_wait(task, now)
            ]
        if not candidates:
            return NextTask()
        task = min(candidates, key=board_order)
        project: Project = await self._client.get_task_list(task.task_list_id or "")
        return NextTask(task=task, project=project)
