"""What the pool needs from a workspace manager: a tree per task, and what changed in it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from taskinfa_worker.client.models import Project, Task


@dataclass(frozen=True)
class Workspace:
    task_id: str
    path: Path  # the agent's working directory
    branch: str | None = None  # None for projects without a repository
    base_commit: str | None = None
    # The task's branch existed already (an earlier round): the tree starts from its tip.
    continues: bool = False


@dataclass(frozen=True)
class Delivery:
    """Where a round's commit went: always kept in the mirror, pushed when it could be."""

    branch: str
    commit: str
    kept_ref: str  # in the worker's mirror, a namespace its fetches never prune
    mirror: Path
    remote: str  # the project's repository URL (never with credentials)
    pushed: bool
    push_error: str | None = None  # why it was not pushed; None when pushing is off

    def show_command(self) -> str:
        """The command that shows the work on the worker's host."""
        return f"git -C {self.mirror} log --stat {self.kept_ref}"


@dataclass(frozen=True)
class WorkspaceResult:
    files_changed: list[str] = field(default_factory=list)
    branch_name: str | None = None  # set when the branch is on the project's repository
    commit: str | None = None
    pr_url: str | None = None
    delivery: Delivery | None = None


class Workspaces(Protocol):
    async def prepare(self, task: Task, project: Project | None) -> Workspace:
        """A fresh, isolated tree for the task (raises WorkspaceError / UnsafeInputError)."""
        ...

    async def finish(self, workspace: Workspace, task: Task) -> WorkspaceResult:
        """Commit (and push) what the agent left; report the changed files."""
        ...

    async def discard(self, workspace: Workspace) -> None:
        """Remove the task's tree (unless kept for debugging). Never raises."""
        ...

    async def prune_stale(self) -> None:
        """At start: remove trees left by a crash."""
        ...
