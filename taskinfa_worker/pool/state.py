"""The pool's live state, owned by the pool and read by health, metrics and status.

Plain mutable data on the event loop thread: the pool writes it, readers only read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

SlotStatus = Literal["idle", "working"]


@dataclass
class SlotState:
    name: str
    status: SlotStatus = "idle"
    task_id: str | None = None
    task_title: str | None = None
    since: float = field(default_factory=time.time)  # wall clock, for people

    def set(self, status: SlotStatus, task_id: str | None = None, title: str | None = None) -> None:
        self.status = status
        self.task_id = task_id
        self.task_title = title
        self.since = time.time()


@dataclass
class PoolState:
    bot_name: str
    slots: list[SlotState]
    started_at: float = field(default_factory=time.time)
    draining: bool = False
    # The board answered with our key at least once and has not refused it since.
    board_ready: bool = False
    # Runs by how they ended ("failed" counts attempts: one task may fail several times).
    completed: int = 0
    failed: int = 0
    released: int = 0
    worker_faults: int = 0
    # The tasks (ids) this process ran, whatever the number of runs each took.
    tasks: set[str] = field(default_factory=set)
    # Failures that used a task's last attempt.
    gave_up: int = 0
    # Set while claims are paused after a fault of this worker: what is wrong and the fix.
    worker_fault: str | None = None

    @property
    def busy(self) -> int:
        return sum(1 for slot in self.slots if slot.status != "idle")
