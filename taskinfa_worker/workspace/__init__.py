"""Per-task git workspaces."""

from taskinfa_worker.workspace.base import Workspace, WorkspaceResult, Workspaces

__all__ = ["Workspace", "WorkspaceResult", "Workspaces"]
