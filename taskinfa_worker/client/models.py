"""Wire models of the board API (``../shared/API.md``).

Lenient on input, because real servers differ: unknown fields are ignored, timestamps come
as SQLite ``YYYY-MM-DD HH:MM:SS`` (UTC, no zone) or ISO 8601, and a status this worker does
not know is kept as a plain string rather than failing the whole response.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class TaskStatus:
    """The statuses the worker acts on. Others (from newer servers) pass through as text."""

    BACKLOG: Final = "backlog"
    TODO: Final = "todo"
    IN_PROGRESS: Final = "in_progress"
    REVIEW: Final = "review"
    DONE: Final = "done"
    BLOCKED: Final = "blocked"


PRIORITY_RANK: Final = {"urgent": 0, "high": 1, "medium": 2, "low": 3}


def _parse_timestamp(value: Any) -> Any:
    """Both timestamp formats become aware UTC datetimes; naive ones are UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, int | float):
        try:
            parsed = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError) as exc:
            # pydantic turns only ValueError into a validation error; 1e300 must not crash.
            raise ValueError(f"timestamp out of range: {value!r}") from exc
    elif isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        parsed = datetime.fromisoformat(text)
    else:
        return value  # let pydantic report the wrong type
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


Timestamp = Annotated[datetime | None, BeforeValidator(_parse_timestamp)]


def _none_as_empty(value: Any) -> Any:
    return [] if value is None else value


def _none_as_zero(value: Any) -> Any:
    return 0 if value is None else value


StrList = Annotated[list[str], BeforeValidator(_none_as_empty)]
Count = Annotated[int, BeforeValidator(_none_as_zero)]


class WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Task(WireModel):
    id: str
    workspace_id: str | None = None
    task_list_id: str | None = None
    title: str
    description: str | None = None
    status: str
    priority: str = "medium"
    labels: StrList = Field(default_factory=list)
    assigned_to: str | None = None
    assignee: str | None = None
    order: Count = 0
    loop_count: Count = 0
    error_count: Count = 0
    files_changed: StrList = Field(default_factory=list)
    completion_notes: str | None = None
    created_at: Timestamp = None
    updated_at: Timestamp = None
    started_at: Timestamp = None
    completed_at: Timestamp = None
    parent_task_id: str | None = None
    pr_url: str | None = None
    branch_name: str | None = None
    claude_session_id: str | None = None
    # The current release's list answers: the task waits on a dependency not yet done.
    is_blocked: bool = False


@dataclass(frozen=True)
class TakenAway:
    """Why a task is no longer in progress for its owner: a sentence for comments and logs,
    and whether the task is gone altogether (then there is nothing left to comment on)."""

    reason: str
    deleted: bool = False


def taken_away(task: Task | None, owner: str | None) -> TakenAway | None:
    """Why a task is not (any more) in progress for ``owner``, or None when it is.

    The one test of "is this task still ours": used before an ending is written, by the
    takeaway watcher, and to confirm a claim or a lost write by reading the task back.
    """
    if task is None:
        return TakenAway("the task was deleted on the board.", deleted=True)
    if task.status != TaskStatus.IN_PROGRESS:
        return TakenAway(f"the task was moved to '{task.status}' on the board.")
    if task.assigned_to != owner:
        who = task.assigned_to or "nobody"
        return TakenAway(f"the task was reassigned to {who} on the board.")
    return None


def held_by(task: Task | None, owner: str | None) -> bool:
    """Whether ``task`` is in progress and assigned to ``owner``."""
    return taken_away(task, owner) is None


class Project(WireModel):
    """A task list. ``/tasks/next`` sends only id, name and repository_url."""

    id: str
    name: str = ""
    description: str | None = None
    repository_url: str | None = None
    working_directory: str | None = "/workspace"
    is_initialized: bool | None = None


class Comment(WireModel):
    id: str
    task_id: str
    author: str
    author_type: str = "bot"
    content: str
    comment_type: str = "progress"
    loop_number: int | None = None
    created_at: Timestamp = None


def newest_first(comments: Sequence[Comment]) -> list[Comment]:
    """Comments newest first, whatever order the server sent (stable for equal times)."""
    return sorted(
        comments, key=lambda c: c.created_at.timestamp() if c.created_at else 0.0, reverse=True
    )


class Worker(WireModel):
    id: str | None = None
    name: str
    status: str = "offline"
    current_task_id: str | None = None
    last_heartbeat: Timestamp = None
    total_tasks_completed: Count = 0


class NextTask(WireModel):
    """Answer of ``GET /tasks/next``: both are None when the queue is empty."""

    task: Task | None = None
    project: Project | None = None


class Heartbeat(WireModel):
    worker: Worker | None = None
    next_heartbeat_in: float = 10.0


class TaskPage(WireModel):
    tasks: list[Task] = Field(default_factory=list)
    total: Count = 0


class CommentPage(WireModel):
    comments: list[Comment] = Field(default_factory=list)
    total: Count = 0


class WorkerList(WireModel):
    workers: list[Worker] = Field(default_factory=list)
    stats: dict[str, Any] = Field(default_factory=dict)


class Session(WireModel):
    """An agent's session on the current release (``/sessions``): how its dashboard shows
    agents at work, and, without ``/workers``, the only sign of a worker's life it keeps."""

    id: str
    project_id: str | None = None
    current_task_id: str | None = None
    status: str = "active"
    summary: str | None = None
    started_at: Timestamp = None
    last_event_at: Timestamp = None
    updated_at: Timestamp = None

    @property
    def last_sign_of_life(self) -> datetime | None:
        """The later of its last event and its last change (a keep-alive moves both)."""
        moments = [m for m in (self.last_event_at, self.updated_at, self.started_at) if m]
        return max(moments) if moments else None


class SessionList(WireModel):
    sessions: list[Session] = Field(default_factory=list)


class CommentType:
    PROGRESS: Final = "progress"
    QUESTION: Final = "question"
    SUMMARY: Final = "summary"
    ERROR: Final = "error"
