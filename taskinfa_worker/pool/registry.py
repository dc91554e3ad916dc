"""The tasks this process runs right now, and the handle that stops each one.

One collection owns the fact "slot S runs task T". The runner adds a task when its slot
starts it and removes it when the slot lets go; the dispatcher, the heartbeats, the takeaway
watcher and the lease sweep only read it; the shutdown stops everything in it. Each change
keeps the slot's state (what health and the status file show) and the busy-slot gauge in
step, so no reader can see one without the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum

import anyio

from taskinfa_worker.client.models import Project, Task
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.pool.state import PoolState, SlotState


class StopKind(Enum):
    """Why a running task was stopped from outside its slot."""

    BOARD = "board"  # a person moved or reassigned the task
    DELETED = "deleted"  # a person deleted the task
    SHUTDOWN = "shutdown"  # drain deadline, second signal, or a fatal error


@dataclass(frozen=True)
class Claimed:
    """A task the dispatcher claimed for a slot, with its project when the board sent it."""

    task: Task
    project: Project | None
    # The task as the board offered it, before the claim changed it: says whether an
    # earlier run of it may still be alive (handover.py).
    offered: Task | None = None


@dataclass
class RunningTask:
    """A task in a slot, and the handle to stop it."""

    task: Task
    slot: str
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    stop_kind: StopKind | None = None
    stop_reason: str = ""

    def stop(self, kind: StopKind, reason: str) -> None:
        if self.stop_kind is None:  # the first reason is the true one
            self.stop_kind = kind
            self.stop_reason = reason
        self.scope.cancel()


class RunningTasks:
    """The running tasks by task id (add, remove, stop all, len, iteration)."""

    def __init__(
        self, state: PoolState, metrics: Metrics, on_change: Callable[[], None] = lambda: None
    ) -> None:
        self._slots: dict[str, SlotState] = {slot.name: slot for slot in state.slots}
        self._by_task: dict[str, RunningTask] = {}
        self._metrics = metrics
        self._on_change = on_change

    def add(self, task: Task, slot: str) -> RunningTask:
        """Register ``task`` as running in ``slot``; the slot shows it as working."""
        if task.id in self._by_task:
            # The dispatcher never claims a task we still run; two runs would fight.
            raise RuntimeError(f"{task.id} is already running in {self._by_task[task.id].slot}")
        run = RunningTask(task, slot)
        self._by_task[task.id] = run
        self._slots[slot].set("working", task.id, task.title)
        self._metrics.slots_busy.inc()
        self._on_change()
        return run

    def remove(self, run: RunningTask) -> None:
        """The slot let go of ``run``: forget it (only that entry) and show the slot idle."""
        if self._by_task.get(run.task.id) is run:
            del self._by_task[run.task.id]
            self._slots[run.slot].set("idle")
            self._metrics.slots_busy.dec()
            self._on_change()

    def stop_all(self, kind: StopKind, reason: str) -> None:
        for run in list(self._by_task.values()):
            run.stop(kind, reason)

    def get(self, task_id: str) -> RunningTask | None:
        return self._by_task.get(task_id)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._by_task

    def __len__(self) -> int:
        return len(self._by_task)

    def __iter__(self) -> Iterator[RunningTask]:
        # A snapshot: readers await between items, and slots come and go meanwhile.
        return iter(list(self._by_task.values()))
