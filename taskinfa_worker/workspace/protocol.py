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


@dataclass(frozen=True)
class WorkspaceResult:
    files_changed: list[str] = field(default_factory=list)
    branch_name: str | None = None
    commit: str | None = None
    pr_url: str | None = None


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
