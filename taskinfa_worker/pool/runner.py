"""A task's life in a slot: claimed → started → workspace → agent → review or failure.

Control flow only: what the board hears is ``reporting``'s, the running tasks are the
registry's. The agent and workspace run inside the cancel scope of the task's registry
entry; the takeaway watcher (a person moved the task) and the shutdown (second signal,
drain deadline, a refused key) stop a task by cancelling that scope with a reason, and the
runner then ends the task accordingly: left as the person set it, or released to ``todo``
without an attempt.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

import anyio
from loguru import logger

from taskinfa_worker.agent import Agent, AgentJob, AgentOutcome
from taskinfa_worker.client.api import BoardClient, Lane
from taskinfa_worker.client.models import CommentType, Task, taken_away
from taskinfa_worker.errors import AgentError, AuthError, BoardError, WorkspaceError
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.pool import budget
from taskinfa_worker.pool.progress import ProgressReporter
from taskinfa_worker.pool.registry import Claimed, RunningTask, RunningTasks, StopKind
from taskinfa_worker.pool.reporting import TaskReporter
from taskinfa_worker.pool.retention import transcript_folder
from taskinfa_worker.settings import Settings
from taskinfa_worker.workspace import Workspace, WorkspaceResult, Workspaces


class TaskEnding(Enum):
    """How a task's run in a slot ended, as the pool counts it."""

    COMPLETED = "completed"
    FAILED = "failed"
    RELEASED = "released"
    STOPPED_BY_BOARD = "stopped_by_board"
    AGENT_AUTH_FAILED = "agent_auth_failed"


class TaskRunner:
    """Runs claimed tasks to their end; one instance serves every slot."""

    def __init__(
        self,
        settings: Settings,
        client: BoardClient,
        agent: Agent,
        workspaces: Workspaces,
        reporter: TaskReporter,
        metrics: Metrics,
        running: RunningTasks,
    ) -> None:
        self._settings = settings
        self._client = client
        self._agent = agent
        self._workspaces = workspaces
        self._reporter = reporter
        self._metrics = metrics
        self._running = running

    async def run(self, slot: str, claimed: Claimed) -> TaskEnding:
        task = claimed.task
        handle = self._running.add(task, slot)
        started = time.monotonic()
        ending = TaskEnding.FAILED
        try:
            with logger.contextualize(slot=slot, task_id=task.id):
                ending = await self._run(slot, claimed, handle)
                logger.info("task {} ended: {}", task.id, ending.value)
        finally:
            self._running.remove(handle)
            self._metrics.task_duration_seconds.labels(ending.value).observe(
                time.monotonic() - started
            )
        return ending

    async def _run(self, slot: str, claimed: Claimed, handle: RunningTask) -> TaskEnding:
        task = claimed.task
        attempt = task.error_count + 1
        logger.info("claimed {} ({!r}), attempt {}", task.id, task.title[:80], attempt)
        await self._reporter.started(task, slot, attempt)
        previous_error = await self._previous_error(task) if task.error_count else None
        outcome: AgentOutcome | None = None
        result = WorkspaceResult()
        with handle.scope:
            outcome, result = await self._work(slot, claimed, attempt, previous_error)
            if outcome.resume_not_found:
                logger.info("the Claude session to resume is gone; starting afresh")
                outcome, result = await self._work(slot, claimed, attempt, previous_error, True)

        if handle.stop_kind in (StopKind.BOARD, StopKind.DELETED):
            assert handle.stop_kind is not None
            await self._reporter.stopped(task, slot, handle.stop_kind, handle.stop_reason)
            return TaskEnding.STOPPED_BY_BOARD
        if outcome is None or (handle.stop_kind is StopKind.SHUTDOWN and not outcome.success):
            await self._reporter.release(task, slot, handle.stop_reason)
            self._metrics.tasks_released.inc()
            return TaskEnding.RELEASED
        if outcome.cost_usd:
            self._metrics.agent_cost_usd.inc(outcome.cost_usd)
        if not await self._still_ours(task, slot):
            return TaskEnding.STOPPED_BY_BOARD
        if outcome.success:
            await self._reporter.succeeded(task, slot, outcome, result)
            self._metrics.tasks_completed.inc()
            return TaskEnding.COMPLETED
        await self._reporter.agent_failed(task, slot, outcome)
        self._metrics.tasks_failed.inc()
        return TaskEnding.AGENT_AUTH_FAILED if outcome.auth_failed else TaskEnding.FAILED

    async def _work(
        self,
        slot: str,
        claimed: Claimed,
        attempt: int,
        previous_error: str | None,
        fresh: bool = False,
    ) -> tuple[AgentOutcome, WorkspaceResult]:
        """Workspace and agent; every way this can fail becomes a failed outcome."""
        task = claimed.task
        try:
            workspace = await self._workspaces.prepare(task, claimed.project)
        except WorkspaceError as exc:
            return AgentOutcome(success=False, reason=f"Workspace: {exc}"), WorkspaceResult()
        try:
            outcome = await self._run_agent(
                slot, claimed, workspace, attempt, previous_error, fresh
            )
            if not outcome.success:
                return outcome, WorkspaceResult()
            try:
                return outcome, await self._workspaces.finish(workspace, task)
            except WorkspaceError as exc:
                failed = AgentOutcome(
                    success=False,
                    reason=f"The agent finished, but its work could not be saved: {exc}",
                    session_id=outcome.session_id,
                )
                return failed, WorkspaceResult()
        finally:
            with anyio.CancelScope(shield=True):
                await self._workspaces.discard(workspace)

    async def _run_agent(
        self,
        slot: str,
        claimed: Claimed,
        workspace: Workspace,
        attempt: int,
        previous_error: str | None,
        fresh: bool,
    ) -> AgentOutcome:
        task = claimed.task
        progress = ProgressReporter(
            post=lambda text: self._reporter.progress(task, slot, text),
            interval=self._progress_interval,
        )
        job = AgentJob(
            task=task,
            project=claimed.project,
            workspace=workspace.path,
            branch=workspace.branch,
            slot=slot,
            attempt=attempt,
            transcript_path=self._transcript_path(task, attempt),
            previous_error=previous_error,
            resume_session_id=None if fresh or not task.error_count else task.claude_session_id,
            on_activity=progress.record,
        )
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(progress.run)
                try:
                    outcome = await self._agent.run(job)
                except AgentError as exc:
                    outcome = AgentOutcome(
                        success=False, reason=f"The agent could not start: {exc}"
                    )
                group.cancel_scope.cancel()
        except* AuthError as refused:
            # A progress comment met the refused key: the agent was stopped with the group,
            # and the pool stops on the error itself, not on a group of one.
            raise refused.exceptions[0] from None
        return outcome

    def _progress_interval(self) -> float:
        return budget.progress_interval(
            self._settings.progress_interval, len(self._running), self._client.limiter
        )

    def _transcript_path(self, task: Task, attempt: int) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        folder = transcript_folder(self._settings.bot_log_dir, task.id)
        return folder / f"attempt-{attempt}-{stamp}.jsonl"

    async def _previous_error(self, task: Task) -> str | None:
        """What failed last time, for the retry's prompt (the newest error comment)."""
        try:
            page = await self._client.list_comments(task.id, limit=20)
        except BoardError as exc:
            logger.debug("previous error of {} not read: {}", task.id, exc)
            return None
        for comment in page.comments:
            if comment.comment_type == CommentType.ERROR:
                return comment.content
        return None

    async def _still_ours(self, task: Task, slot: str) -> bool:
        """Read the task back before writing its ending over a person's change."""
        try:
            current = await self._client.get_task(task.id, lane=Lane.CRITICAL)
        except BoardError as exc:
            # Cannot tell: write the ending, the usual case is that nobody touched it.
            logger.warning("could not re-read {} before reporting: {}", task.id, exc)
            return True
        away = taken_away(current, slot)
        if away is not None:
            logger.info("{} changed while it ran ({}); nothing reported", task.id, away.reason)
            return False
        return True
