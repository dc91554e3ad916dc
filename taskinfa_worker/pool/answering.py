"""One answer to a person's message, in one slot (``chat.py`` decides which and who).

The answer continues the task's work: a tree of the task's branch (as a review round
does), its Claude session resumed where it can be (``claude_session_id``, as a task's next
round does; gone, it starts afresh with the conversation in the prompt), and the message
with the conversation before it in the prompt. Then:

- the agent changed nothing: its answer is posted as a ``summary`` comment naming the
  message, and the task stays where the person left it (only its ``claude_session_id``
  moves on, so the next answer resumes this one);
- the agent changed code: the work is delivered as a task's round is (committed, kept in
  the mirror, pushed), and the task goes to ``review`` with the usual summary;
- the agent failed, or the worker stopped while it ran: an ``error`` comment naming the
  message says so. The message is never tried again on its own: the person asks again.

While the agent answers, the task is read every ``CANCEL_CHECK_INTERVAL`` (stretched by
the budget, as the takeaway check is): a person who moves it out of its column (to
``todo``, where any worker may claim it, or anywhere else) or deletes it stops the answer,
and nothing of it is delivered. Another worker's handover fence waits for that stop: it
takes the answer's claim for a run's start note and its error note for the run's end.
"""

from __future__ import annotations

from dataclasses import dataclass

import anyio
from loguru import logger

from taskinfa_worker.agent import Agent, AgentJob, AgentOutcome
from taskinfa_worker.client.api import BoardClient, Lane
from taskinfa_worker.client.llm_config import MESSAGE_SESSION
from taskinfa_worker.client.models import CommentType
from taskinfa_worker.errors import BoardError
from taskinfa_worker.pool import budget
from taskinfa_worker.pool.chat import ChatDesk, ChatTurn, reference
from taskinfa_worker.pool.model_choice import ModelChoices
from taskinfa_worker.pool.reporting import TaskReporter, server_has
from taskinfa_worker.pool.retention import transcript_path
from taskinfa_worker.pool.runner import BOARD_FIX
from taskinfa_worker.pool.workspace_run import fault_outcome, run_agent, run_in_workspace
from taskinfa_worker.settings import Settings
from taskinfa_worker.workspace import Workspace, WorkspaceResult, Workspaces

NO_ANSWER = "The agent finished without a word of answer."
STOPPED = "The worker stopped while answering this message; nothing was changed. Ask again."
MOVED = (
    "The task left {column} while this message was answered (it is {status} now): the answer "
    "was stopped and nothing was changed."
)
DELETED = "the task was deleted"
WORKER_AT_FAULT = (
    "The worker {slot} could not answer this message, through its own fault, not the task's "
    "({why}); nothing was changed. Ask again once its operator has fixed it."
)
ENDING_TIMEOUT = 30.0  # seconds a stopped answer's last comment may take


@dataclass(frozen=True)
class AnswerEnd:
    """How an answer ended, for the pool's counts and the answer's session."""

    answered: bool  # the person got an answer
    line: str  # how it went, in a line
    worker_fault: str = ""  # the worker's own fault and its fix, when that stopped it


class ChatAnswers:
    """Answers the turns the desk hands out; one instance serves every slot."""

    def __init__(
        self,
        settings: Settings,
        client: BoardClient,
        agent: Agent,
        workspaces: Workspaces,
        reporter: TaskReporter,
        desk: ChatDesk,
        models: ModelChoices,
    ) -> None:
        self._settings = settings
        self._models = models
        self._client = client
        self._agent = agent
        self._workspaces = workspaces
        self._reporter = reporter
        self._desk = desk
        self._scopes: set[anyio.CancelScope] = set()
        self._stopped = False

    def stop_all(self) -> None:
        """Stop every answer in progress, and any taken up from now on (the pool is
        shutting down: a claim still settling must not start an agent after this)."""
        self._stopped = True
        for scope in self._scopes:
            scope.cancel()

    async def answer(self, slot: str, turn: ChatTurn) -> AnswerEnd:
        """Answer ``turn`` in ``slot``; whatever happens, the board hears how it ended."""
        task = turn.task
        with logger.contextualize(slot=slot, task_id=task.id):
            scope = anyio.CancelScope()
            if self._stopped:
                scope.cancel()  # the claim is settled with the stop note, nothing runs
            self._scopes.add(scope)
            outcome: AgentOutcome | None = None
            result = WorkspaceResult()
            moved: list[str] = []  # where a person moved the task while it was answered
            try:
                with scope:
                    async with anyio.create_task_group() as group:
                        group.start_soon(self._watch, turn, scope, moved)
                        outcome, result = await self._work(slot, turn)
                        group.cancel_scope.cancel()
            finally:
                self._scopes.discard(scope)
                with anyio.CancelScope(shield=True), anyio.move_on_after(ENDING_TIMEOUT):
                    await self._report(slot, turn, outcome, result, moved[0] if moved else None)
        answered = outcome is not None and outcome.success
        how = "answered" if answered else "could not answer"
        reason = "" if answered or outcome is None else outcome.reason
        line = f"{slot} {how} {turn.message.author}'s message on {task.id}"
        fault = "" if outcome is None else outcome.worker_fault
        return AnswerEnd(
            answered,
            f"{line}: {reason}" if reason else line,
            f"{reason} (fix: {fault})" if fault else "",
        )

    async def _watch(self, turn: ChatTurn, scope: anyio.CancelScope, moved: list[str]) -> None:
        """Stop the answer once a person moved its task out of its column or deleted it."""
        while True:
            interval = budget.watch_interval(
                self._settings.cancel_check_interval, 1, self._client.limiter
            )
            await anyio.sleep(budget.jittered(interval))
            try:
                now = await self._client.get_task(turn.task.id, lane=Lane.BACKGROUND)
            except BoardError as exc:
                logger.warning("the answer's check of {} failed: {}", turn.task.id, exc)
                continue
            if now is None or now.status != turn.task.status:
                moved.append(DELETED if now is None else now.status)
                logger.info("{}: {}; the answer stops", turn.task.id, moved[0])
                scope.cancel()
                return

    async def _report(
        self,
        slot: str,
        turn: ChatTurn,
        outcome: AgentOutcome | None,
        result: WorkspaceResult,
        moved: str | None = None,
    ) -> None:
        task, ref = turn.task, reference(turn.message.id)
        try:
            if moved == DELETED:
                pass  # a deleted task takes no comment
            elif moved is not None:
                text = f"{MOVED.format(column=task.status, status=moved)}\n\n{ref}"
                await self._reporter.note(task, slot, text, CommentType.ERROR)
            elif outcome is None:
                await self._reporter.note(task, slot, f"{STOPPED}\n\n{ref}", CommentType.ERROR)
            elif outcome.worker_fault:
                why = outcome.reason.strip().rstrip(".")
                text = f"{WORKER_AT_FAULT.format(slot=slot, why=why)}\n\n{ref}"
                await self._reporter.note(task, slot, text, CommentType.ERROR)
            elif not outcome.success:
                why = outcome.reason.strip() or "the agent failed without saying why"
                text = f"Could not answer this message: {why}\n\n{ref}"
                await self._reporter.note(task, slot, text, CommentType.ERROR)
            elif result.commit or result.files_changed:
                # Code changed: delivered and sent to review as any round of the task is.
                await self._reporter.succeeded(task, slot, outcome, result)
            else:
                text = f"{outcome.result_text.strip() or NO_ANSWER}\n\n{ref}"
                await self._reporter.note(task, slot, text, CommentType.SUMMARY)
                if outcome.session_id and server_has(task, "claude_session_id"):
                    await self._client.update_task(task.id, claude_session_id=outcome.session_id)
        except BoardError as exc:
            logger.warning("the answer on {} was not reported: {}", task.id, exc)
            return
        finally:
            self._desk.answered(turn)
        how = "failed" if outcome is None or not outcome.success else "answered"
        logger.info("{}: the message {} {}", task.id, turn.message.id, how)

    async def _work(self, slot: str, turn: ChatTurn) -> tuple[AgentOutcome, WorkspaceResult]:
        task = turn.task
        project_id = task.task_list_id
        try:
            project = await self._client.get_task_list(project_id) if project_id else None
        except BoardError as exc:
            # The board's fault, not the task's: as a task's run counts the board's failures.
            reason = f"the task's project was not read: {exc}"
            return fault_outcome(reason, BOARD_FIX), WorkspaceResult()
        # The dashboard's choice for answers to messages, as its own orchestrator applies it.
        route = await self._models.route_for(project_id, MESSAGE_SESSION)

        async def run(workspace: Workspace, fresh: bool) -> AgentOutcome:
            job = AgentJob(
                task=task,
                project=project,
                workspace=workspace.path,
                branch=workspace.branch,
                slot=slot,
                attempt=task.error_count + 1,
                transcript_path=transcript_path(
                    self._settings.bot_log_dir, task.id, f"answer-{turn.message.id}"
                ),
                messages=turn.before,
                question=turn.message,
                continues=workspace.continues,
                resume_session_id=None if fresh else task.claude_session_id,
                route=route,
            )
            return await run_agent(self._agent, job)

        return await run_in_workspace(self._workspaces, task, project, run)
