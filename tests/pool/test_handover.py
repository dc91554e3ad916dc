"""The handover fence's reading of a task: did its last run end?"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from taskinfa_worker.client.models import Comment, Task
from taskinfa_worker.pool.handover import may_still_run, unended_run

START = datetime(2026, 1, 1, tzinfo=UTC)


def note(minute: int, author: str, content: str, kind: str = "progress") -> Comment:
    person = author == "Dana"
    return Comment(
        id=f"c{minute}",
        task_id="t",
        author=author,
        author_type="user" if person else "bot",
        content=content,
        comment_type=kind,
        created_at=START + timedelta(minutes=minute),
    )


def test_a_start_without_an_ending_is_an_unended_run_of_its_slot() -> None:
    started = [note(1, "alpha-1", "Started by alpha-1 (attempt 1 of 3).")]
    assert unended_run(started) == "alpha-1"
    # A person's comment afterwards does not end a run.
    assert unended_run([*started, note(2, "Dana", "How is it going?")]) == "alpha-1"


def test_every_kind_of_ending_ends_the_run() -> None:
    start = note(1, "alpha-1", "Started by alpha-1 (attempt 1 of 3).")
    for ending in (
        note(2, "alpha-1", "Finished.", "summary"),
        note(2, "alpha-1", "Failed: boom", "error"),
        note(2, "alpha-1", "Released: shutdown. No attempt was counted."),
        note(2, "alpha-1", "Stopped by alpha-1: the task was moved to 'todo'."),
        note(2, "sweeper", "Failed: Its worker alpha-1 sent no heartbeat", "error"),
    ):
        assert unended_run([ending, start]) is None, ending.content
    # The newest start counts: an ended first run, then a second start without an end.
    second = note(3, "beta-1", "Started by beta-1 (attempt 2 of 3).")
    assert unended_run([start, note(2, "alpha-1", "Failed: x", "error"), second]) == "beta-1"


def test_any_task_that_was_ever_started_or_came_back_may_still_run() -> None:
    task = Task(id="t", title="x", status="todo")
    assert not may_still_run(task)  # never started: no fence, no request
    assert not may_still_run(None)
    started = task.model_copy(update={"started_at": START})
    assert may_still_run(started)
    # Real boards keep the first completed_at: it says nothing about the latest run.
    assert may_still_run(started.model_copy(update={"completed_at": START + timedelta(1)}))
    # A board that leaves started_at out: the counted runs say the task ran before.
    assert may_still_run(task.model_copy(update={"loop_count": 1}))
    assert may_still_run(task.model_copy(update={"error_count": 1}))
