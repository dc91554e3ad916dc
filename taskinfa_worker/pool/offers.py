"""Which task to claim next, within the projects ``TASK_LIST_ID`` names.

``GET /tasks/next`` is asked first, because it applies the board's own rules (on the
current release it skips subtasks and tasks whose dependencies are not done). Its offer is
taken only when it belongs to an allowed project: no real release reads ``task_list_id``
there, so a worker limited to one project was offered, and ran, another project's task.
When the offer is outside the allowed projects, the todo tasks of each allowed project are
listed (``GET /tasks?status=todo&task_list_id=…`` filters on every release) and the first
in the board's order is offered: priority (urgent first), then ``order``, then the oldest.
An empty ``/tasks/next`` means no task is waiting anywhere, so nothing more is asked.

The fallback cannot see dependencies (the list route does not say whether a task waits),
so it leaves out subtasks, the part of the rule it can see.
"""

from __future__ import annotations

from datetime import UTC, datetime

from loguru import logger

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.models import PRIORITY_RANK, NextTask, Project, Task

LIST_LIMIT = 100
"""The most tasks one list request returns (the board's maximum)."""
_OLDEST = datetime.min.replace(tzinfo=UTC)


def board_order(task: Task) -> tuple[int, int, datetime]:
    """The order in which the board offers tasks: priority, then ``order``, then age."""
    created = task.created_at or _OLDEST
    return (PRIORITY_RANK.get(task.priority, len(PRIORITY_RANK)), task.order, created)


class Offers:
    """Finds the next task for this worker's projects (all projects when none is named)."""

    def __init__(self, client: BoardClient, task_list_ids: tuple[str, ...]) -> None:
        self._client = client
        self._allowed = task_list_ids
        self._warned = False

    def allows(self, task: Task) -> bool:
        """Whether this worker may take ``task`` (its project is one of ``TASK_LIST_ID``)."""
        return not self._allowed or task.task_list_id in self._allowed

    async def next(self) -> NextTask:
        """The task to claim next, with its project; both None when there is none."""
        # One project: ask with the filter, for boards that honour it (the local board).
        only = self._allowed[0] if len(self._allowed) == 1 else None
        offer = await self._client.next_task(only)
        if offer.task is None or self.allows(offer.task):
            return offer
        if not self._warned:
            self._warned = True
            logger.warning(
                "the board offered task {} of project {!r}, outside TASK_LIST_ID ({}): its "
                "/tasks/next ignores the filter, so work is found by listing each project's "
                "todo tasks instead",
                offer.task.id,
                offer.task.task_list_id,
                ", ".join(self._allowed),
            )
        return await self._listed()

    async def _listed(self) -> NextTask:
        candidates: list[Task] = []
        for task_list_id in self._allowed:
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
                and self.allows(task)
            ]
        if not candidates:
            return NextTask()
        task = min(candidates, key=board_order)
        project: Project = await self._client.get_task_list(task.task_list_id or "")
        return NextTask(task=task, project=project)
