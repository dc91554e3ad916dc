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

import anyio
from loguru import logger

from taskinfa_worker.agent import Agent, AgentJob, AgentOutcome
from taskinfa_worker.client.api import BoardClient, Lane
from taskinfa_worker.client.models import CommentType, Project
from taskinfa_worker.errors import AgentError, BoardError, WorkspaceError
from taskinfa_worker.pool import budget
from taskinfa_worker.pool.chat import ChatDesk, ChatTurn, reference
from taskinfa_worker.pool.reporting import TaskReporter, server_has
from taskinfa_worker.pool.retention import transcript_path
from taskinfa_worker.settings import Settings
from taskinfa_worker.workspace import Workspace, WorkspaceResult, Workspaces

NO_ANSWER = "The agent finished without a word of answer."
STOPPED = "The worker stopped while answering this message; nothing was changed. Ask again."
MOVED = (
    "The task left {column} while this message was answered (it is {status} now): the answer "
    "was stopped and nothing was changed."
)
DELETED = "the task was deleted"
ENDING_TIMEOUT = 30.0  # seconds a stopped answer's last comment may take


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
    ) -> None:
        self._settings = settings
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

    async def answer(self, slot: str, turn: ChatTurn) -> tuple[bool, str]:
        """Answer ``turn`` in ``slot``; whatever happens, the board hears how it ended.
        Returns whether the person got an answer, and how it went in a line (for the
        answer's session)."""
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
        reason = "" if answered or outcome is None else f": {outcome.reason}"
        return answered, f"{slot} {how} {turn.message.author}'s message on {task.id}{reason}"

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
        try:
            project = await self._project(task.task_list_id)
            workspace = await self._workspaces.prepare(task, project)
        except (WorkspaceError, BoardError, OSError) as exc:
            return AgentOutcome(success=False, reason=f"Workspace: {exc}"), WorkspaceResult()
        try:
            outcome = await self._run_agent(slot, turn, project, workspace, resume=True)
            if outcome.resume_not_found:
                logger.info("the Claude session to resume is gone; answering afresh")
                outcome = await self._run_agent(slot, turn, project, workspace, resume=False)
            if not outcome.success:
                return outcome, WorkspaceResult()
            try:
                return outcome, await self._workspaces.finish(workspace, task)
            except WorkspaceError as exc:
                reason = f"the agent answered, but its work could not be saved: {exc}"
                return AgentOutcome(success=False, reason=reason), WorkspaceResult()
        finally:
            with anyio.CancelScope(shield=True):
                await self._workspaces.discard(workspace)

    async def _project(self, task_list_id: str | None) -> Project | None:
        if not task_list_id:
            return None
        return await self._client.get_task_list(task_list_id)

    async def _run_agent(
        self,
        slot: str,
        turn: ChatTurn,
        project: Project | None,
        workspace: Workspace,
        *,
        resume: bool,
    ) -> AgentOutcome:
        task = turn.task
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
            resume_session_id=task.claude_session_id if resume else None,
        )
        try:
            return await self._agent.run(job)
        except AgentError as exc:
            return AgentOutcome(success=False, reason=f"the agent could not start: {exc}")
