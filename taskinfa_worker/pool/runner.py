"""A task's life in a slot: claimed → started → workspace → agent → review or failure.

The agent and workspace run inside a cancel scope registered in ``running``; the pool's
cancellation watcher (a person moved the task) and the shutdown (second signal or drain
deadline) stop a task by cancelling that scope with a reason, and the runner then ends the
task accordingly: left as the person set it, or released to ``todo`` without an attempt.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

import anyio
from loguru import logger

from taskinfa_worker.agent import Agent, AgentJob, AgentOutcome
from taskinfa_worker.client.api import BoardClient, Lane
from taskinfa_worker.client.models import CommentType, Project, Task, why_not_held
from taskinfa_worker.errors import AgentError, AuthError, BoardError, WorkspaceError
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.pool import budget
from taskinfa_worker.pool.progress import ProgressReporter, failure_text, summary_text
from taskinfa_worker.pool.reporting import TaskReporter, server_has
from taskinfa_worker.pool.state import SlotState
from taskinfa_worker.settings import Settings
from taskinfa_worker.workspace import Workspace, WorkspaceResult, Workspaces


class Ending(Enum):
    COMPLETED = "completed"
    FAILED = "failed"
    RELEASED = "released"
    STOPPED_BY_BOARD = "stopped_by_board"
    AGENT_AUTH_FAILED = "agent_auth_failed"


class StopKind(Enum):
    BOARD = "board"  # a person moved, reassigned or deleted the task
    SHUTDOWN = "shutdown"  # drain deadline or second signal


@dataclass(frozen=True)
class Claimed:
    task: Task
    project: Project | None


@dataclass
class RunningTask:
    """A task in a slot, and the handle to stop it."""

    task: Task
    slot: str
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    stop_kind: StopKind | None = None
    stop_reason: str = ""

    def stop(self, kind: StopKind, reason: str) -> None:
        if self.stop_kind is None:  # the first reason is the true one
            self.stop_kind = kind
            self.stop_reason = reason
        self.scope.cancel()


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:100].strip(".")
    return name or "task"


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
        running: dict[str, RunningTask],
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._settings = settings
        self._client = client
        self._agent = agent
        self._workspaces = workspaces
        self._reporter = reporter
        self._metrics = metrics
        self._running = running
        self._on_change = on_change

    async def run(self, slot: SlotState, claimed: Claimed) -> Ending:
        task = claimed.task
        handle = RunningTask(task, slot.name)
        self._running[task.id] = handle
        slot.set("working", task.id, task.title)
        self._metrics.slots_busy.inc()
        self._on_change()
        started = time.monotonic()
        ending = Ending.FAILED
        try:
            with logger.contextualize(slot=slot.name, task_id=task.id):
                ending = await self._run(slot, claimed, handle)
                logger.info("task {} ended: {}", task.id, ending.value)
        finally:
            # Only our own entry: the dispatcher never claims a task we still run, but an
            # entry is never taken from another slot on a guess.
            if self._running.get(task.id) is handle:
                del self._running[task.id]
            slot.set("idle")
            self._metrics.slots_busy.dec()
            self._metrics.task_duration_seconds.labels(ending.value).observe(
                time.monotonic() - started
            )
            self._on_change()
        return ending

    async def _run(self, slot: SlotState, claimed: Claimed, handle: RunningTask) -> Ending:
        task = claimed.task
        attempt = task.error_count + 1
        logger.info("claimed {} ({!r}), attempt {}", task.id, task.title[:80], attempt)
        await self._reporter.comment(
            task.id,
            slot.name,
            f"Started by {slot.name} (attempt {attempt} of {self._settings.max_attempts}).",
            CommentType.PROGRESS,
            loop_number=task.loop_count + 1,
        )
        previous_error = await self._previous_error(task) if task.error_count else None
        outcome: AgentOutcome | None = None
        result = WorkspaceResult()
        with handle.scope:
            outcome, result = await self._work(slot, claimed, attempt, previous_error)
            if outcome.resume_not_found:
                logger.info("the Claude session to resume is gone; starting afresh")
                outcome, result = await self._work(slot, claimed, attempt, previous_error, True)

        if handle.stop_kind is StopKind.BOARD:
            return await self._stopped_by_board(task, slot.name, handle.stop_reason)
        if outcome is None or (handle.stop_kind is StopKind.SHUTDOWN and not outcome.success):
            await self._reporter.release(task, slot.name, handle.stop_reason)
            self._metrics.tasks_released.inc()
            return Ending.RELEASED
        if outcome.cost_usd:
            self._metrics.agent_cost_usd.inc(outcome.cost_usd)
        if not await self._still_ours(task, slot.name):
            return Ending.STOPPED_BY_BOARD
        if outcome.success:
            await self._report_success(task, slot.name, outcome, result)
            self._metrics.tasks_completed.inc()
            return Ending.COMPLETED
        await self._reporter.fail(
            task, slot.name, failure_text(outcome), session_id=outcome.session_id
        )
        self._metrics.tasks_failed.inc()
        return Ending.AGENT_AUTH_FAILED if outcome.auth_failed else Ending.FAILED

    async def _work(
        self,
        slot: SlotState,
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
        slot: SlotState,
        claimed: Claimed,
        workspace: Workspace,
        attempt: int,
        previous_error: str | None,
        fresh: bool,
    ) -> AgentOutcome:
        task = claimed.task
        progress = ProgressReporter(
            post=lambda text: self._post_progress(task, slot.name, text),
            interval=self._progress_interval,
        )
        job = AgentJob(
            task=task,
            project=claimed.project,
            workspace=workspace.path,
            branch=workspace.branch,
            slot=slot.name,
            attempt=attempt,
            transcript_path=self._transcript_path(task, attempt),
            previous_error=previous_error,
            resume_session_id=None if fresh or not task.error_count else task.claude_session_id,
            on_activity=progress.record,
        )
        async with anyio.create_task_group() as group:
            group.start_soon(progress.run)
            try:
                outcome = await self._agent.run(job)
            except AgentError as exc:
                outcome = AgentOutcome(success=False, reason=f"The agent could not start: {exc}")
            group.cancel_scope.cancel()
        return outcome

    async def _post_progress(self, task: Task, slot: str, text: str) -> None:
        await self._reporter.comment(
            task.id, slot, text, CommentType.PROGRESS, lane=Lane.BACKGROUND
        )

    def _progress_interval(self) -> float:
        return budget.progress_interval(
            self._settings.progress_interval, len(self._running), self._client.limiter
        )

    def _transcript_path(self, task: Task, attempt: int) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        folder = self._settings.bot_log_dir / _safe_name(task.id)
        return folder / f"attempt-{attempt}-{stamp}.jsonl"

    async def _previous_error(self, task: Task) -> str | None:
        """What failed last time, for the retry's prompt (the newest error comment)."""
        try:
            page = await self._client.list_comments(task.id, limit=20)
        except AuthError:
            raise
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
        except AuthError:
            raise
        except BoardError as exc:
            # Cannot tell: write the ending, the usual case is that nobody touched it.
            logger.warning("could not re-read {} before reporting: {}", task.id, exc)
            return True
        why = why_not_held(current, slot)
        if why is not None:
            logger.info("{} changed while it ran ({}); nothing reported", task.id, why)
            return False
        return True

    async def _report_success(
        self, task: Task, slot: str, outcome: AgentOutcome, result: WorkspaceResult
    ) -> None:
        summary = summary_text(outcome, result.files_changed)
        loop = task.loop_count + 1
        await self._reporter.comment(
            task.id, slot, summary, CommentType.SUMMARY, loop_number=loop, lane=Lane.CRITICAL
        )
        fields: dict[str, object] = {"files_changed": result.files_changed, "loop_count": loop}
        optional = {
            "branch_name": result.branch_name,
            "pr_url": result.pr_url,
            "claude_session_id": outcome.session_id,
        }
        for name, value in optional.items():
            if value and server_has(task, name):
                fields[name] = value
        await self._reporter.complete(task, slot, outcome.result_text or summary, **fields)

    async def _stopped_by_board(self, task: Task, slot: str, reason: str) -> Ending:
        logger.info("stopped {}: {}", task.id, reason)
        if "deleted" not in reason:
            await self._reporter.comment(
                task.id,
                slot,
                f"Stopped by {slot}: {reason} The agent was stopped; the task is left as set.",
                CommentType.PROGRESS,
                lane=Lane.CRITICAL,
            )
        return Ending.STOPPED_BY_BOARD
