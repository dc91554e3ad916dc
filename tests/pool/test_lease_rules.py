"""Which tasks a lease takes back, as pure rules: a re-run claimed a moment ago is never
taken, however old the task's first start (the real releases keep ``started_at`` from the
first run: every PATCH handler sets it with COALESCE)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from taskinfa_worker.client.models import Session, Task, Worker
from taskinfa_worker.pool.owner_mark import owner_mark
from taskinfa_worker.pool.recovery import expired_leases
from taskinfa_worker.pool.session_lease import dead_runs

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
LEASE = 300.0
SILENT = NOW - timedelta(seconds=LEASE * 2)  # the owner's last sign of life


def rerun(claimed_seconds_ago: float) -> Task:
    """A task first started a day ago, claimed again ``claimed_seconds_ago``."""
    return Task(
        id="task_1",
        title="x",
        status="in_progress",
        assigned_to="alpha-1",
        started_at=NOW - timedelta(days=1),
        updated_at=NOW - timedelta(seconds=claimed_seconds_ago),
    )


def test_the_workers_lease_spares_a_rerun_claimed_a_moment_ago() -> None:
    owner = Worker(name="alpha", status="idle", last_heartbeat=SILENT)
    assert expired_leases([rerun(5)], [owner], LEASE, NOW) == []
    ((task, silent),) = expired_leases([rerun(LEASE + 60)], [owner], LEASE, NOW)
    assert (task.id, silent) == ("task_1", LEASE * 2)


def test_the_sessions_lease_spares_a_rerun_claimed_a_moment_ago() -> None:
    session = Session(
        id="s1",
        current_task_id="task_1",
        summary=owner_mark("alpha-1", "task_1"),
        started_at=SILENT,
        last_event_at=SILENT,
    )
    assert dead_runs([rerun(5)], [session], LEASE, NOW) == []
    (dead,) = dead_runs([rerun(LEASE + 60)], [session], LEASE, NOW)
    assert dead.task.id == "task_1"
