"""Attempts are spaced: a task that failed waits before anyone tries it again.

A failure sends the task back to ``todo`` with ``error_count`` raised and its notes starting
"Failed: " (``reporting.fail``). Its next attempt may start ``RETRY_BACKOFF`` seconds after
that failure, doubling with each further failure, capped at ``RETRY_BACKOFF_MAX``. Without a
wait, a task that fails at once would use up its attempts within seconds, before a flaky
dependency (a registry, a test service) has had a chance to come back.

The wait is read from what the board holds, never from this process's memory, so every
replica keeps it, a restarted worker too: the failure's time is the task's ``updated_at``
(every release sets it on each change), the number of failures its ``error_count``. Only a
task whose last ending was a failure waits: its ``completion_notes`` start with "Failed: ".
A task a person sent back after a success has a summary there, and one at or past
``MAX_ATTEMPTS`` in ``todo`` was unblocked by a person: neither waits, a person's word is
not delayed. A person's edit of a waiting task (its ``updated_at``) starts the wait again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from taskinfa_worker.client.models import Task
from taskinfa_worker.settings import Settings

FAILED = "Failed: "
"""How a failed task's notes and error comment start: ``reporting`` writes it, we read it."""

TIMESTAMP_SLACK = 1.0
"""Boards stamp ``updated_at`` in whole seconds (SQLite ``datetime('now')``): the failure
may have been written up to a second after its stamp, so the wait is a second longer."""


class RetrySpacing:
    """When a failed task may be tried again: ``base`` seconds, doubling, at most ``cap``."""

    def __init__(self, base: float, cap: float, max_attempts: int) -> None:
        self._base = base
        self._cap = cap
        self._max_attempts = max_attempts

    @classmethod
    def from_settings(cls, settings: Settings) -> RetrySpacing:
        return cls(settings.retry_backoff, settings.retry_backoff_max, settings.max_attempts)

    def delay(self, failures: int) -> float:
        """Seconds between the ``failures``-th failure and the next attempt."""
        if self._base <= 0 or failures <= 0:
            return 0.0
        # The exponent is bounded so a huge error_count cannot overflow the float.
        return float(min(self._base * 2 ** min(failures - 1, 64), self._cap))

    def waits(self, task: Task) -> bool:
        """Whether ``task`` is in ``todo`` because its last attempt failed, attempts left."""
        return (
            0 < task.error_count < self._max_attempts
            and task.updated_at is not None
            and (task.completion_notes or "").startswith(FAILED)
            and self.delay(task.error_count) > 0
        )

    def ready_at(self, task: Task) -> datetime | None:
        """When the next attempt of ``task`` may start; None when it need not wait."""
        if not self.waits(task) or task.updated_at is None:
            return None
        return task.updated_at + timedelta(seconds=self.delay(task.error_count) + TIMESTAMP_SLACK)

    def wait(self, task: Task, now: datetime) -> float:
        """Seconds from ``now`` until ``task`` may be claimed; 0 when it may be now."""
        ready = self.ready_at(task)
        return 0.0 if ready is None else max(0.0, (ready - now).total_seconds())
