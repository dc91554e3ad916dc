"""Noticing that a person took a running task away: moved, reassigned or deleted.

Every ``cancel_check_interval`` (jittered, stretched by the budget) one list request reads
all ``in_progress`` tasks and compares them with the tasks this process runs. Only the
tasks missing from that page, or assigned to someone else, are read one by one, so the
check costs one request per round whatever the number of busy slots, plus one per task
that really changed.
"""

from __future__ import annotations

from loguru import logger

from taskinfa_worker.client.api import BoardClient, Lane
from taskinfa_worker.client.models import Task, TaskStatus, taken_away
from taskinfa_worker.errors import BoardError
from taskinfa_worker.pool import budget
from taskinfa_worker.pool.registry import RunningTasks, StopKind

PAGE_LIMIT = 100


class TakeawayWatcher:
    """Stops the agent of every running task a person took away."""

    def __init__(self, client: BoardClient, running: RunningTasks, interval: float) -> None:
        self._client = client
        self._running = running
        self._interval = interval

    def interval(self) -> float:
        return budget.watch_interval(self._interval, 1, self._client.limiter)

    async def check(self) -> bool:
        """One round: stop every running task that is no longer ours."""
        ours = list(self._running)
        if not ours:
            return True
        try:
            page = await self._client.list_tasks(
                status=TaskStatus.IN_PROGRESS, limit=PAGE_LIMIT, lane=Lane.BACKGROUND
            )
        except BoardError as exc:
            logger.warning("takeaway check failed: {}", exc)
            return True
        listed = {task.id: task for task in page.tasks}
        for run in ours:
            task_id = run.task.id
            seen = listed.get(task_id)
            if seen is not None and taken_away(seen, run.slot) is None:
                continue
            if seen is None:
                # Off the page: moved, deleted, or only beyond the page. Read it to be sure.
                readable, seen = await self._read(task_id)
                if not readable:
                    continue
            away = taken_away(seen, run.slot)
            if away and self._running.get(task_id) is run:  # not a newer run of it
                logger.info("stopping {} in {}: {}", task_id, run.slot, away.reason)
                run.stop(StopKind.DELETED if away.deleted else StopKind.BOARD, away.reason)
        return True

    async def _read(self, task_id: str) -> tuple[bool, Task | None]:
        """(True, task or None if deleted), or (False, None) when it could not be read."""
        try:
            return True, await self._client.get_task(task_id, lane=Lane.BACKGROUND)
        except BoardError as exc:
            logger.warning("could not re-read {}: {}", task_id, exc)
            return False, None
