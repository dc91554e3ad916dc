"""An agent's turn in a task's workspace, for a task's run and a chat answer alike.

Prepare the task's tree, run the agent in it (once more without resuming when the Claude
session to resume is gone), save its work, and always discard the tree. Every way this can
fail becomes a failed outcome; a failure that is the worker's own (the agent or git
missing, the workspace folder unusable, the network down) carries the fix in
``worker_fault``, so neither kind of run blames the task for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
from loguru import logger

from taskinfa_worker.agent import Agent, AgentJob, AgentOutcome
from taskinfa_worker.client.models import Project, Task
from taskinfa_worker.errors import AgentError, WorkerFault, WorkspaceError
from taskinfa_worker.workspace import Workspace, WorkspaceResult, Workspaces

WORKSPACE_FIX = "make WORKSPACE_DIR writable and give its disk free space"
NOT_SAVED = "The agent finished, but its work could not be saved: "

AgentTurn = Callable[[Workspace, bool], Awaitable[AgentOutcome]]
"""Runs the agent in the workspace; the flag says the run must start afresh (no resume)."""


def fault_outcome(reason: str, fix: str) -> AgentOutcome:
    """A failed run; the worker's fault when ``fix`` says what to do about it."""
    return AgentOutcome(success=False, reason=reason, worker_fault=fix)


async def run_agent(agent: Agent, job: AgentJob) -> AgentOutcome:
    """The agent's outcome; an agent that cannot even start is a failed outcome too."""
    try:
        return await agent.run(job)
    except AgentError as exc:
        fix = exc.fix if isinstance(exc, WorkerFault) else ""
        return fault_outcome(f"The agent could not start: {exc}", fix)


async def run_in_workspace(
    workspaces: Workspaces, task: Task, project: Project | None, turn: AgentTurn
) -> tuple[AgentOutcome, WorkspaceResult]:
    """The agent's turn in a fresh tree of ``task``, and what it left there."""
    try:
        workspace = await workspaces.prepare(task, project)
    except WorkerFault as exc:
        return fault_outcome(f"Workspace: {exc}", exc.fix), WorkspaceResult()
    except WorkspaceError as exc:
        return AgentOutcome(success=False, reason=f"Workspace: {exc}"), WorkspaceResult()
    except OSError as exc:
        # The workspace folder itself (permissions, a full or read-only disk).
        reason = f"Workspace: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
        return fault_outcome(reason, WORKSPACE_FIX), WorkspaceResult()
    try:
        outcome = await turn(workspace, False)
        if outcome.resume_not_found:
            logger.info("the Claude session to resume is gone; starting afresh")
            outcome = await turn(workspace, True)
        if not outcome.success:
            return outcome, WorkspaceResult()
        try:
            return outcome, await workspaces.finish(workspace, task)
        except WorkerFault as exc:
            return fault_outcome(f"{NOT_SAVED}{exc}", exc.fix), WorkspaceResult()
        except WorkspaceError as exc:
            failed = AgentOutcome(
                success=False, reason=f"{NOT_SAVED}{exc}", session_id=outcome.session_id
            )
            return failed, WorkspaceResult()
    finally:
        with anyio.CancelScope(shield=True):
            await workspaces.discard(workspace)
