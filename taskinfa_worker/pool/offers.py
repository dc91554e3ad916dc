"""Which task to claim next, within the projects ``TASK_LIST_ID`` names.

Work is found by listing the ``todo`` tasks of each allowed project (``GET /tasks?status=
todo&task_list_id=…``, which filters on every release; no real ``/tasks/next`` reads
``task_list_id``), and one such read feeds every claim for ``fresh_for`` seconds: the
candidates wait in a queue in the board's order, so several free slots (a pool starting,
a burst of endings) claim one after the other without asking the board again. The queue is
dropped when a claim is lost (the board has moved on) and when it is older than
``fresh_for`` (the shortest idle poll: a task added or raised meanwhile is found as soon as
a poll would have found it).

The board's order is kept: priority (urgent first), then ``order``, then the oldest; the
rules of ``/tasks/next`` are applied to the list: no subtask, none the list marks
``is_blocked`` (the current release: a dependency not yet done), only project tasks, only
unassigned ones. The worker-era release's list does not say whether a task waits on
another (nor does its ``/tasks/next`` skip such tasks).

A list holds at most 100 tasks, ordered by ``order`` and age only (no release sorts it by
priority). A page shorter than that is the whole queue. A full page may miss a more urgent
task beyond it, so then ``/tasks/next`` is asked for the head of the board's order (the
highest priority waiting anywhere), and only the page's tasks of that same priority are
queued, up to the last place every full page reached: within one priority the board's order
is the list's, so those are exactly the board's next tasks.

A failed task waits before its next attempt (``spacing.py``), but the board does not know
that and keeps offering it first. Such a task is passed over for the next one in the board's
order, so a waiting task holds up no other and nobody's order is changed. When every task
waits, nothing is offered and ``soonest_retry`` says when the first may be tried.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container
from datetime import UTC, datetime

from loguru import logger

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.models import PRIORITY_RANK, NextTask, Project, Task
from taskinfa_worker.pool.spacing import RetrySpacing

LIST_LIMIT = 100
"""The most tasks one list request returns (the board's maximum)."""
_OLDEST = datetime.min.replace(tzinfo=UTC)
_NOTHING: frozenset[str] = frozenset()


def board_order(task: Task) -> tuple[int, int, datetime]:
    """The order in which the board offers tasks: priority, then ``order``, then age."""
    created = task.created_at or _OLDEST
    return (PRIORITY_RANK.get(task.priority, len(PRIORITY_RANK)), task.order, created)


def list_order(task: Task) -> tuple[int, datetime]:
    """The order of a list answer: ``order``, then age."""
    return (task.order, task.created_at or _OLDEST)


class Offers:
    """Finds the next task for this worker's projects (all projects when none is named)."""

    def __init__(
        self,
        client: BoardClient,
        task_list_ids: tuple[str, ...],
        spacing: RetrySpacing,
        *,
        fresh_for: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._allowed = task_list_ids
        self._spacing = spacing
        self._fresh_for = fresh_for
        self._clock = clock
        self._queue: list[Task] = []  # in the board's order
        self._projects: dict[str, Project] = {}  # of the queue's read
        self._read_at = 0.0
        self._told: set[tuple[str, int]] = set()  # (task, failures) whose wait was logged
        self.soonest_retry: float | None = None
        """After ``next``: seconds until the first waiting task may be tried (None: none)."""
        self.list_reads = 0

    def allows(self, task: Task) -> bool:
        """Whether this worker may take ``task`` (its project is one of ``TASK_LIST_ID``)."""
        return not self._allowed or task.task_list_id in self._allowed

    def forget(self) -> None:
        """Drop the queue (a claim was lost: the board has moved on since it was read)."""
        self._queue.clear()

    async def next(self, skip: Container[str] = _NOTHING) -> NextTask:
        """The task to claim next, with its project; both None when there is none.
        ``skip``: tasks not to offer from the queue (this process still runs them)."""
        if self._queue and self._clock() - self._read_at <= self._fresh_for:
            offer = await self._from_queue(skip)
            if offer is not None:
                return offer
        self._queue.clear()
        self.soonest_retry = None
        return await self._read(skip)

    async def _from_queue(self, skip: Container[str]) -> NextTask | None:
        while self._queue:
            task = self._queue.pop(0)
            if task.id not in skip:
                return NextTask(task=task, project=await self._project(task))
        return None

    async def _read(self, skip: Container[str]) -> NextTask:
        """Read the todo lists and queue what they show in the board's order."""
        self._read_at = self._clock()
        self._projects = {}
        self.list_reads += 1
        now = datetime.now(UTC)
        candidates: list[Task] = []
        # Where a full page stops: tasks past it in the list's order may hide beyond it.
        cutoff: tuple[int, datetime] | None = None
        for task_list_id in self._allowed or (None,):  # no project named: one list of all
            page = await self._client.list_tasks(
                status="todo", task_list_id=task_list_id, limit=LIST_LIMIT
            )
            candidates += [task for task in page.tasks if self._may_take(task, now)]
            if len(page.tasks) >= LIST_LIMIT:
                last = max(map(list_order, page.tasks))
                cutoff = last if cutoff is None else min(cutoff, last)
        candidates.sort(key=board_order)
        if cutoff is not None:
            candidates = await self._within_reach(candidates, cutoff)
        self._queue = candidates
        offer = await self._from_queue(skip)
        return offer if offer is not None else NextTask()

    async def _within_reach(
        self, candidates: list[Task], cutoff: tuple[int, datetime]
    ) -> list[Task]:
        """The candidates of a full page that are surely the board's next ones: those of the
        head's priority, up to the cutoff. With none of them on the page, the page's first
        alone (the board's next may be beyond the page; this is the best the lists show)."""
        # One project: asked with the filter, for boards that honour it (the local board).
        only = self._allowed[0] if len(self._allowed) == 1 else None
        offer = await self._client.next_task(only)
        head = offer.task
        if head is None:
            return []  # nothing waits anywhere: the list was read a moment too early
        if offer.project is not None:  # what the claims of the head's project need
            self._projects.setdefault(offer.project.id, offer.project)
        sure = [
            task
            for task in candidates
            if task.priority == head.priority and list_order(task) <= cutoff
        ]
        if all(task.id != head.id for task in sure) and self._may_take(head, datetime.now(UTC)):
            sure.insert(0, head)  # the board's next, from beyond the page
        return sure or candidates[:1]

    def _may_take(self, task: Task, now: datetime) -> bool:
        """``/tasks/next``'s rules, ``TASK_LIST_ID``, and the wait after a failure."""
        # The filters are checked again: a board that ignored one must not hand over
        # another project's task, a taken one or a subtask.
        return (
            task.status == "todo"
            and task.assigned_to is None
            and task.parent_task_id is None
            and not task.is_blocked
            and task.task_list_id is not None  # /tasks/next offers project tasks only
            and self.allows(task)
            and not self._must_wait(task, now)
        )

    async def _project(self, task: Task) -> Project:
        """The task's project, read once per list read."""
        task_list_id = task.task_list_id or ""
        project = self._projects.get(task_list_id)
        if project is None:
            project = await self._client.get_task_list(task_list_id)
            self._projects[task_list_id] = project
        return project

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
