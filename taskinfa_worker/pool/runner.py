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
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import anyio
from loguru import logger

from taskinfa_worker.agent import Agent, AgentJob, AgentOutcome
from taskinfa_worker.client.answer import excerpt
from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.models import Task, TaskStatus, taken_away
from taskinfa_worker.errors import (
    AuthError,
    BoardError,
)
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.pool import budget
from taskinfa_worker.pool.handover import wait_for_handover
from taskinfa_worker.pool.history import TaskHistory, came_back, read_history
from taskinfa_worker.pool.model_choice import ModelChoices
from taskinfa_worker.pool.ownership import OwnershipReads
from taskinfa_worker.pool.progress import ProgressReporter
from taskinfa_worker.pool.registry import Claimed, RunningTask, RunningTasks, StopKind
from taskinfa_worker.pool.reporting import TaskReporter
from taskinfa_worker.pool.retention import transcript_path
from taskinfa_worker.pool.workspace_run import fault_outcome, run_agent, run_in_workspace
from taskinfa_worker.settings import Settings
from taskinfa_worker.workspace import Workspace, WorkspaceResult, Workspaces


class TaskEnding(Enum):
    """How a task's run in a slot ended, as the pool counts it."""

    COMPLETED = "completed"
    FAILED = "failed"
    RELEASED = "released"
    STOPPED_BY_BOARD = "stopped_by_board"
    # The worker, not the task, failed (agent missing, its key refused, git, disk, network):
    # the task went back to todo without an attempt, and the pool stops claiming a while.
    WORKER_FAULT = "worker_fault"


# Endings an operator should look at; the rest are logged at INFO.
_WARN_ENDINGS = {TaskEnding.FAILED: "WARNING", TaskEnding.WORKER_FAULT: "ERROR"}
BOARD_FIX = "read the board's log for this request; check TASKINFA_API_URL and the board's release"


@dataclass(frozen=True)
class Ended:
    """A task's run in a slot, as the pool counts it and the log line tells it."""

    ending: TaskEnding
    reason: str = ""
    gave_up: bool = False  # a failure that used the last attempt: the task needs a person
    stalled: bool = False  # the agent was stopped for printing nothing (STALL_TIMEOUT)
    # What the run read of the task's comments at its start, for a run that got as far as
    # its ending: a person's message written since is answered next (``chat.after_run``).
    history: TaskHistory | None = None


class ProgressEvents(Protocol):
    """Where progress goes besides the task's comments (``sessions.RunSessions``)."""

    def requests_per_progress(self) -> int: ...

    async def progress(self, slot: str, text: str) -> None: ...


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
        events: ProgressEvents,
        models: ModelChoices,
        board_names_run: Callable[[str, str], bool] = lambda _slot, _task_id: False,
    ) -> None:
        self._settings = settings
        self._models = models
        self._events = events
        # Whether the board shows the slot's run on its task since the claim (the slot's
        # heartbeat, the run's session): then no start note is needed before the agent.
        self._board_names_run = board_names_run
        self._client = client
        self._agent = agent
        self._workspaces = workspaces
        self._reporter = reporter
        self._metrics = metrics
        self._running = running
        self._ownership = OwnershipReads(client)

    async def run(self, slot: str, claimed: Claimed) -> Ended:
        task = claimed.task
        handle = self._running.add(task, slot)
        started = time.monotonic()
        # What the log line says when the run is cut short (a refused key, a third signal):
        # never a failure of the task's.
        ended = Ended(TaskEnding.WORKER_FAULT, "the worker stopped before the ending was written")
        try:
            with logger.contextualize(slot=slot, task_id=task.id):
                try:
                    ended = await self._run(slot, claimed, handle)
                except BoardError as exc:
                    ended = await self._board_failed(task, slot, exc)
        finally:
            self._running.remove(handle)
            duration = time.monotonic() - started
            self._metrics.task_duration_seconds.labels(ended.ending.value).observe(duration)
            self._log_ending(task, slot, ended, duration)
        return ended

    def _log_ending(self, task: Task, slot: str, ended: Ended, duration: float) -> None:
        """One line per ending: what, which attempt, how long, and why (3 a.m. material)."""
        level = _WARN_ENDINGS.get(ended.ending, "INFO")
        why = " ".join(ended.reason.split())[:300]
        logger.bind(slot=slot, task_id=task.id).log(
            level,
            "task {} ended: {} ◆ attempt {} of {} ◆ {:.1f} s{}",
            task.id,
            ended.ending.value,
            task.error_count + 1,
            self._settings.max_attempts,
            duration,
            f" ◆ {why}" if why else "",
        )

    async def _run(self, slot: str, claimed: Claimed, handle: RunningTask) -> Ended:
        task = claimed.task
        attempt = task.error_count + 1
        logger.info("claimed {} ({!r}), attempt {}", task.id, task.title[:80], attempt)
        outcome: AgentOutcome | None = None
        result = WorkspaceResult()
        history: TaskHistory | None = None
        with handle.scope:
            # Before our own start note, which would otherwise be the newest unended run.
            handover = await wait_for_handover(self._client, claimed.offered, self._settings, slot)
            if handover.waited:
                self._metrics.handover_wait_seconds.inc(handover.waited)
            opening: str | None = self._reporter.started_text(slot, attempt)
            if not self._board_names_run(slot, task.id):
                # Where the slot's heartbeat or the run's session names the task (both sent
                # at the claim), another worker's fence sees the run by it, and the start
                # note waits for the first progress comment; elsewhere the note is what the
                # fence sees.
                await self._reporter.started(task, slot, attempt)
                opening = None
            # One read of the comments serves the fence and the history.
            history = await read_history(self._client, task, handover.comments)

            async def turn(workspace: Workspace, fresh: bool) -> AgentOutcome:
                return await self._run_agent(
                    slot, claimed, workspace, attempt, history, fresh, opening
                )

            outcome, result = await run_in_workspace(self._workspaces, task, claimed.project, turn)

        if handle.stop_kind in (StopKind.BOARD, StopKind.DELETED):
            assert handle.stop_kind is not None
            await self._reporter.stopped(task, slot, handle.stop_kind, handle.stop_reason)
            return Ended(TaskEnding.STOPPED_BY_BOARD, handle.stop_reason)
        if outcome is None or (handle.stop_kind is StopKind.SHUTDOWN and not outcome.success):
            await self._reporter.release(task, slot, handle.stop_reason)
            self._metrics.tasks_released.inc()
            return Ended(TaskEnding.RELEASED, handle.stop_reason)
        if outcome.cost_usd:
            self._metrics.agent_cost_usd.inc(outcome.cost_usd)
        if not await self._still_ours(task, slot):
            return Ended(TaskEnding.STOPPED_BY_BOARD, "the task was changed on the board")
        if outcome.success:
            await self._reporter.succeeded(task, slot, outcome, result)
            self._metrics.tasks_completed.inc()
            return Ended(TaskEnding.COMPLETED, history=history)
        if outcome.worker_fault:
            await self._reporter.worker_fault(task, slot, outcome)
            self._metrics.tasks_released.inc()
            return Ended(TaskEnding.WORKER_FAULT, f"{outcome.reason} (fix: {outcome.worker_fault})")
        status = await self._reporter.agent_failed(task, slot, outcome)
        self._metrics.tasks_failed.inc()
        gave_up = status != TaskStatus.TODO
        return Ended(
            TaskEnding.FAILED,
            f"{outcome.reason} (now {status})",
            gave_up,
            outcome.stalled,
            history=history,
        )

    async def _board_failed(self, task: Task, slot: str, exc: BoardError) -> Ended:
        """The board refused or failed a write of this run, past the client's retries (an
        ending is retried until the board's state is known, so this is an answer no retry
        changes). The board's fault or the worker's, never the task's: no attempt counted."""
        reason = f"the board did not take a write of this run ({excerpt(str(exc))})"
        outcome = fault_outcome(reason, BOARD_FIX)
        try:
            await self._reporter.worker_fault(task, slot, outcome)
        except BoardError as again:
            # Left in progress: our restart's recovery (or the lease) ends it.
            logger.error("{} stays in progress: its release failed too ({})", task.id, again)
        else:
            self._metrics.tasks_released.inc()
        return Ended(TaskEnding.WORKER_FAULT, f"{reason} (fix: {BOARD_FIX})")

    async def _run_agent(
        self,
        slot: str,
        claimed: Claimed,
        workspace: Workspace,
        attempt: int,
        history: TaskHistory,
        fresh: bool,
        opening: str | None,
    ) -> AgentOutcome:
        task = claimed.task

        async def post(text: str) -> None:
            await self._reporter.progress(task, slot, text)
            await self._events.progress(slot, text)

        # The start note, where it is deferred, opens the first progress comment.
        progress = ProgressReporter(post=post, interval=self._progress_interval, opening=opening)
        project_id = claimed.project.id if claimed.project is not None else task.task_list_id
        route = await self._models.route_for(project_id)
        if route.origin:
            logger.info(
                "model {} via {} ({}'s choice on the dashboard)",
                route.model or "(the provider's default)",
                route.provider,
                route.origin,
            )
        job = AgentJob(
            task=task,
            project=claimed.project,
            workspace=workspace.path,
            branch=workspace.branch,
            slot=slot,
            attempt=attempt,
            transcript_path=transcript_path(
                self._settings.bot_log_dir, task.id, f"attempt-{attempt}"
            ),
            previous_error=history.previous_error,
            messages=history.people,
            continues=workspace.continues,
            # The session of the last run, where the agent can resume it (same slot and
            # host); when it cannot, the fresh run has the history in its prompt.
            resume_session_id=None if fresh or not came_back(task) else task.claude_session_id,
            route=route,
            on_activity=progress.record,
        )
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(progress.run)
                outcome = await run_agent(self._agent, job)
                group.cancel_scope.cancel()
        except* AuthError as refused:
            # A progress comment met the refused key: the agent was stopped with the group,
            # and the pool stops on the error itself, not on a group of one.
            raise refused.exceptions[0] from None
        return outcome

    def _progress_interval(self) -> float:
        return budget.progress_interval(
            self._settings.progress_interval,
            len(self._running),
            self._client.limiter,
            1 + self._events.requests_per_progress(),
        )

    async def _still_ours(self, task: Task, slot: str) -> bool:
        """Read the task back before writing its ending over a person's change (one read
        shared by the endings that ask together: ``ownership.py``)."""
        try:
            current = await self._ownership.current(task.id)
        except BoardError as exc:
            # Cannot tell: write the ending, the usual case is that nobody touched it.
            logger.warning("could not re-read {} before reporting: {}", task.id, exc)
            return True
        away = taken_away(current, slot)
        if away is not None:
            logger.info("{} changed while it ran ({}); nothing reported", task.id, away.reason)
            return False
        return True
