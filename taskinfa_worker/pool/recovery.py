"""Nothing stays ``in_progress`` forever after a crash or SIGKILL.

Two nets:
- At start, tasks ``in_progress`` assigned to this process's own slot names are from a
  previous life of this process (same ``BOT_NAME``): they are failed with an attempt
  counted, since the run may have been what killed the process.
- The lease: any running worker releases a task ``in_progress`` whose worker is known to the
  board (it sent heartbeats) but has been silent for ``lease_timeout``, and whose claim is
  older than that too (so a fresh claim is never taken before its first heartbeat). A task
  assigned to a name the board does not know as a worker belongs to a person: never touched.
  Where the board has no ``/workers`` (the current release), the runs' sessions stand in
  for heartbeats (``session_lease.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Container, Mapping
from datetime import UTC, datetime

from loguru import logger

from taskinfa_worker.client.api import BoardClient, Lane
from taskinfa_worker.client.models import Task, TaskPage, TaskStatus, Worker
from taskinfa_worker.errors import BoardError
from taskinfa_worker.pool import budget
from taskinfa_worker.pool.reporting import TaskReporter

PAGE_LIMIT = 100


async def in_progress_page(client: BoardClient, assigned_to: str | None = None) -> TaskPage:
    return await client.list_tasks(
        status=TaskStatus.IN_PROGRESS, assigned_to=assigned_to, limit=PAGE_LIMIT, lane=Lane.NORMAL
    )


async def recover_own_tasks(
    client: BoardClient, reporter: TaskReporter, slot_names: Collection[str], bot_name: str
) -> int:
    """Fail (attempt counted) the tasks a previous run of this process left in progress."""
    names = set(slot_names)
    page = await in_progress_page(client)
    tasks = [task for task in page.tasks if task.assigned_to in names]
    if len(page.tasks) >= PAGE_LIMIT:
        # A full page may hide more (real boards send the page's length as "total", and
        # the worker-era one has no offset): ask per slot name instead.
        tasks = [
            task for name in sorted(names) for task in (await in_progress_page(client, name)).tasks
        ]
    for task in tasks:
        assert task.assigned_to is not None
        logger.warning("recovering {} left in progress by {}", task.id, task.assigned_to)
        await reporter.fail(
            task,
            task.assigned_to,
            f"{bot_name} stopped unexpectedly (crash, SIGKILL or a lost node) while "
            "this task ran; it was recovered when the worker started again.",
        )
    return len(tasks)


def age(moment: datetime | None, now: datetime) -> float:
    """Seconds since ``moment``; infinite when it never happened."""
    if moment is None:
        return float("inf")
    return (now - moment).total_seconds()


def claimed_at(task: Task) -> datetime | None:
    """When the task's current run was claimed, as near as the board tells: its last
    change. Not ``started_at``: the real releases set that only at the first start, so for
    a re-run it is long past and a run claimed a moment ago would look old."""
    return task.updated_at or task.started_at


def owning_worker(assigned_to: str | None, by_name: Mapping[str, Worker]) -> Worker | None:
    """The worker a task's assignee is, or the process a slot name ``{BOT_NAME}-{i}`` is of.

    A slot that claimed its task and died before its first heartbeat is unknown to the
    board, but its process heartbeats before any slot claims (the pool sees to that), so
    the process's heartbeat tells whether anyone still works on the task.
    """
    if not assigned_to:
        return None
    worker = by_name.get(assigned_to)
    if worker is not None:
        return worker
    process, dash, index = assigned_to.rpartition("-")
    return by_name.get(process) if dash and index.isdigit() else None


def expired_leases(
    tasks: list[Task],
    workers: list[Worker],
    lease_timeout: float,
    now: datetime,
    skip: Container[str] = (),
) -> list[tuple[Task, float]]:
    """Tasks whose known worker is silent past the lease, with the silence in seconds."""
    by_name = {worker.name: worker for worker in workers}
    expired = []
    for task in tasks:
        worker = owning_worker(task.assigned_to, by_name)
        if worker is None or task.id in skip:
            continue  # a person's assignment, or our own running task
        silent = age(worker.last_heartbeat, now)
        claimed_ago = age(claimed_at(task), now)
        if silent > lease_timeout and claimed_ago > lease_timeout:
            expired.append((task, silent))
    return expired


class LeaseSweeper:
    def __init__(
        self,
        client: BoardClient,
        reporter: TaskReporter,
        running: Container[str],
        lease_timeout: float,
        author: str,
        without_workers: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self._client = client
        self._reporter = reporter
        self._running = running
        self._lease_timeout = lease_timeout
        self._author = author
        # The round to run instead where the board lists no workers (the sessions' lease).
        self._without_workers = without_workers

    def interval(self) -> float:
        # Two requests a round (workers, then tasks in progress), twice per lease.
        return budget.watch_interval(self._lease_timeout / 2, 2, self._client.limiter)

    async def sweep(self) -> bool:
        """One round. False when the board can neither list workers nor stand in for them."""
        try:
            workers = await self._client.list_workers()
            if workers is None:
                return self._without_workers is not None and await self._without_workers()
            tasks = (await in_progress_page(self._client)).tasks
        except BoardError as exc:
            logger.warning("lease check failed: {}", exc)
            return True
        now = datetime.now(UTC)
        for task, silent in expired_leases(
            tasks, workers.workers, self._lease_timeout, now, skip=self._running
        ):
            logger.warning(
                "lease of {} expired ({} silent for {:.0f} s)", task.id, task.assigned_to, silent
            )
            try:
                await self._reporter.fail(
                    task,
                    self._author,
                    f"Its worker {task.assigned_to} sent no heartbeat for {silent:.0f} s "
                    f"(lease {self._lease_timeout:.0f} s); {self._author} released it.",
                )
            except BoardError as exc:
                logger.warning("could not release {}: {}", task.id, exc)
        return True
