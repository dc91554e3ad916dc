"""Wire models: lenient where real servers differ, strict where it matters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from taskinfa_worker.client.models import NextTask, Task

BASE = {"id": "task_1", "title": "T", "status": "todo"}


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-11-24 01:02:03",
        "2026-11-24T01:02:03Z",
        "2026-11-24T01:02:03+00:00",
        "2026-11-24T02:02:03+01:00",
    ],
)
def test_both_timestamp_formats_become_the_same_utc_moment(stamp: str) -> None:
    task = Task.model_validate({**BASE, "created_at": stamp})
    assert task.created_at == datetime(2026, 11, 24, 1, 2, 3, tzinfo=UTC)


def test_unknown_fields_are_ignored_and_unknown_statuses_kept() -> None:
    task = Task.model_validate(
        {**BASE, "status": "waiting_for_qa", "subtask_count": 3, "is_blocked": True}
    )
    assert task.status == "waiting_for_qa"
    assert not hasattr(task, "subtask_count")


def test_nulls_where_lists_and_counts_are_expected() -> None:
    task = Task.model_validate({**BASE, "labels": None, "files_changed": None, "error_count": None})
    assert (task.labels, task.files_changed, task.error_count) == ([], [], 0)


def test_later_release_fields_are_known_only_when_the_server_sent_them() -> None:
    early = Task.model_validate(BASE)
    later = Task.model_validate({**BASE, "claude_session_id": None})
    assert "claude_session_id" not in early.model_fields_set
    assert "claude_session_id" in later.model_fields_set


def test_an_empty_queue_answer_parses() -> None:
    empty = NextTask.model_validate({"task": None, "project": None, "message": "No tasks"})
    assert empty.task is None


def test_wrong_types_are_an_error_not_a_guess() -> None:
    with pytest.raises(ValidationError):
        Task.model_validate({**BASE, "title": {"not": "text"}})
