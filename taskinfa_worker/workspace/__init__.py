"""Per-task git workspaces: a mirror per project, a private clone per task."""

from __future__ import annotations

from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings
from taskinfa_worker.workspace.manager import GitWorkspaces
from taskinfa_worker.workspace.protocol import Workspace, WorkspaceResult, Workspaces


def make_workspaces(settings: Settings, redactor: Redactor) -> Workspaces:
    """The workspace manager the pool uses."""
    return GitWorkspaces(settings, redactor)


__all__ = ["GitWorkspaces", "Workspace", "WorkspaceResult", "Workspaces", "make_workspaces"]
