"""The worker pool: N slots in one process, and how it starts and stops.

    run()
    ├── startup: prune stale workspaces, recover our own tasks left in progress
    ├── background (one task group): the upkeep loops (heartbeats, session keep-alives,
    │   takeaway checks, lease sweeps, chat polls), signals and the drain deadline
    └── slots 1..N: claim (dispatcher) → run the task (runner), or answer a person's
        message (answering) → again, until told to stop

Stopping comes in tiers (signal handlers only count signals; the pool decides):
1st SIGTERM/SIGINT, --exit-when-idle or --max-tasks: stop claiming, let running tasks
finish, for up to --drain-timeout; at that deadline or on the 2nd signal, stop the agents
and release their tasks to todo without counting an attempt; the 3rd signal exits at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from loguru import logger

from taskinfa_worker.agent import Agent
from taskinfa_worker.agent.environment import OWNER_VAR, owner_entry
from taskinfa_worker.agent.reaper import kill_owned_now, sweep_leftovers
from taskinfa_worker.client.api import BoardClient, not_the_api
from taskinfa_worker.errors import EXIT_WORKER_FAULT, AuthError, BoardError, FatalError
from taskinfa_worker.logs import LOG_FILE_NAME
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.pool.answering import AnswerEnd, ChatAnswers
from taskinfa_worker.pool.chat import ChatClaims, ChatDesk, ChatTurn
from taskinfa_worker.pool.dispatcher import Dispatcher
from taskinfa_worker.pool.heartbeat import HeartbeatLoop
from taskinfa_worker.pool.identity import BeatRecord, ensure_name_free
from taskinfa_worker.pool.model_choice import ModelChoices
from taskinfa_worker.pool.periodic import Upkeep, run_upkeep
from taskinfa_worker.pool.recovery import LeaseSweeper, recover_own_tasks
from taskinfa_worker.pool.registry import Claimed, RunningTasks, StopKind
from taskinfa_worker.pool.reporting import TaskReporter
from taskinfa_worker.pool.retention import LogRetention
from taskinfa_worker.pool.runner import Ended, TaskEnding, TaskRunner
from taskinfa_worker.pool.session_lease import SessionLease
from taskinfa_worker.pool.sessions import RunSessions
from taskinfa_worker.pool.spacing import RetrySpacing
from taskinfa_worker.pool.state import PoolState, SlotState
from taskinfa_worker.pool.takeaway import TakeawayWatcher
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings
from taskinfa_worker.workspace import Workspaces

EXIT_OK = 0
EXIT_IMMEDIATE = 130

# After a fault of the worker (the agent's key refused, the agent or git missing, the disk
# or the network failing), no slot claims for this long, doubling on each repeat: every task
# would fail the same way until a person fixes the worker (or the network comes back).
WORKER_FAULT_PAUSE = 60.0
WORKER_FAULT_PAUSE_MAX = 3600.0
# The longest a slot waits to tell the board it is idle before it looks for work again.
SLOT_BEAT_TIMEOUT = 5.0
# A slot whose task ended and that has claimed no next one after this long shows as idle.
SLOT_IDLE_AFTER = 3.0
CHAT_CLAIMS = "chat-claims"  # in the bot's log folder: messages being answered (chat.py)


class WorkerPool:
    """Runs ``settings.concurrency`` slots against one board client."""

    def __init__(
        self,
        settings: Settings,
        client: BoardClient,
        agent: Agent,
        workspaces: Workspaces,
        *,
        metrics: Metrics,
        redactor: Redactor,
        handle_signals: bool = True,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.state = PoolState(settings.bot_name, [SlotState(n) for n in settings.slot_names()])
        self.running = RunningTasks(self.state, metrics, on_change)
        self._workspaces = workspaces
        self.metrics = metrics
        self._handle_signals = handle_signals
        self._on_change = on_change
        self._reporter = TaskReporter(
            client, redactor, settings.max_attempts, RetrySpacing.from_settings(settings)
        )
        self._sessions = RunSessions(
            client, settings.lease_timeout, redactor, enabled=settings.sessions
        )
        # One cache of the dashboard's model choice for every kind of run of this process.
        self._models = ModelChoices(settings, client.llm, redactor)
        self._runner = TaskRunner(
            settings,
            client,
            agent,
            workspaces,
            self._reporter,
            metrics,
            self.running,
            self._sessions,
            self._models,
            lambda slot, task_id: (
                self._heartbeats.names_run(slot, task_id) or self._sessions.names_run(slot, task_id)
            ),
        )
        self._chat = ChatDesk(
            client,
            ChatClaims(settings.bot_log_dir / CHAT_CLAIMS),
            enabled=settings.chat,
            poll_floor=settings.poll_interval,
            busy=lambda task_id: task_id in self.running,
            on_found=lambda: self._dispatcher.task_ended(),
        )
        self._answers = ChatAnswers(
            settings, client, agent, workspaces, self._reporter, self._chat, self._models
        )
        self._dispatcher = Dispatcher(
            settings,
            client,
            self.running,
            on_done=self.drain,
            chat=self._chat if settings.chat else None,
        )
        self._signals = 0
        self._stopping = False
        self._draining = anyio.Event()  # the pool is built inside the event loop
        # Start-up's board requests are retried for minutes; a signal must not wait for them.
        self._startup_scope = anyio.CancelScope()
        self._fault_pause = WORKER_FAULT_PAUSE
        self._beats = BeatRecord(settings.bot_log_dir / "last-heartbeat")
        self._heartbeats = HeartbeatLoop(
            client, settings.bot_name, self.running, self._board_answered, self._beats
        )
        self.exit_code = EXIT_OK
        metrics.slots_total.set(settings.concurrency)

    def __repr__(self) -> str:
        s = self.state
        return (
            f"<WorkerPool {s.bot_name} slots={len(s.slots)} busy={s.busy} "
            f"completed={s.completed} failed={s.failed} released={s.released}"
            f"{' draining' if s.draining else ''}>"
        )

    @property
    def heartbeat_rounds(self) -> int:
        """Rounds of the heartbeat loop so far (the slots' own heartbeats not counted)."""
        return self._heartbeats.rounds

    def _counters(self) -> str:
        """Tasks and runs apart: one task may take several attempts."""
        s = self.state
        runs = s.completed + s.failed + s.released + s.worker_faults
        return (
            f"{_count(len(s.tasks), 'task')} in {_count(runs, 'run')}: {s.completed} completed, "
            f"{s.failed} failed ({s.gave_up} out of attempts), {s.released} released, "
            f"{_count(s.worker_faults, 'worker fault')}"
        )

    # --- Stopping ------------------------------------------------------------------------
    def drain(self) -> None:
        """Tier 1: stop claiming; running tasks go on until the drain deadline."""
        if self.state.draining:
            return
        self.state.draining = True
        self._draining.set()
        self._startup_scope.cancel()
        self._dispatcher.close()
        self._on_change()
        if self.running:
            logger.info(
                "draining: no new claims; {} running task(s) may go on for up to {:.0f} s",
                len(self.running),
                self.settings.drain_timeout,
            )

    def stop_now(self, why: str) -> None:
        """Tier 2: stop the agents and release their tasks."""
        self.drain()
        if self._stopping:
            return
        self._stopping = True
        self.running.stop_all(StopKind.SHUTDOWN, why)
        self._answers.stop_all()

    def _fatal(self, exc: FatalError) -> None:
        logger.error("{}", exc)
        self.exit_code = exc.exit_status
        self.state.board_ready = False
        self.stop_now(f"the worker stopped: {exc}")

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                self._signals += 1
                name = signal.Signals(signum).name
                if self._signals == 1:
                    logger.info("{}: draining (again to stop the agents, 3rd to exit)", name)
                    self.drain()
                elif self._signals == 2:
                    logger.info("{} again: stopping agents and releasing their tasks", name)
                    self.stop_now("the worker was stopped (second signal) while it ran.")
                else:
                    killed = kill_owned_now(owner_entry(self.settings))
                    logger.warning(
                        "{} a third time: exiting at once, {} agent process(es) killed ◆ {}",
                        name,
                        killed,
                        self._counters(),
                    )
                    sys.stderr.flush()
                    os._exit(EXIT_IMMEDIATE)

    async def _drain_deadline(self) -> None:
        await self._draining.wait()
        await anyio.sleep(self.settings.drain_timeout)
        if self.running:
            logger.warning("drain deadline reached: stopping {} agent(s)", len(self.running))
        self.stop_now(
            f"the worker shut down and the drain deadline ({self.settings.drain_timeout:.0f} s)"
            " passed while it ran."
        )

    # --- Running -------------------------------------------------------------------------
    async def run(self) -> int:
        s = self.settings
        logger.info(
            "taskinfa-worker {} starting ◆ {} slot(s) ◆ board {} ◆ agent {}",
            s.bot_name,
            s.concurrency,
            s.taskinfa_api_url,
            s.agent,
        )
        try:
            await self._run()
        except* FatalError as group:
            # Raised in a task group, the error arrives wrapped; the operator gets its sentence.
            self._fatal(_first(group))
        uptime = time.time() - self.state.started_at
        logger.info(
            "taskinfa-worker {} stopped ◆ {} ◆ up {:.0f} s", s.bot_name, self._counters(), uptime
        )
        return self.exit_code

    def _upkeep(self, heartbeats: HeartbeatLoop) -> list[Upkeep]:
        """The loops that run beside the slots, for as long as the pool runs."""
        s = self.settings
        watcher = TakeawayWatcher(self.client, self.running, s.cancel_check_interval)
        by_sessions = SessionLease(
            self.client,
            self._reporter,
            self.running,
            set(s.slot_names()),
            s.lease_timeout,
            s.bot_name,
        )
        sweeper = LeaseSweeper(
            self.client,
            self._reporter,
            self.running,
            s.lease_timeout,
            s.bot_name,
            without_workers=by_sessions.sweep,
        )
        retention = LogRetention(
            s.bot_log_dir,
            self.running,
            live={s.bot_log_dir / LOG_FILE_NAME, s.status_file},
            max_bytes=s.log_retention_mb * 1024 * 1024,
            max_age=s.log_retention_days * 86400,
            interval=s.log_retention_interval,
        )
        loops = [
            Upkeep(
                "heartbeats",
                heartbeats.beat,
                heartbeats.interval,
                "the board has no heartbeat route: heartbeats stop; "
                + (
                    "the dashboard sees this worker through its runs' sessions"
                    if s.sessions
                    else "with SESSIONS off, the dashboard does not see this worker"
                ),
            ),
            Upkeep("takeaway checks", watcher.check, watcher.interval, "takeaway checks stop"),
            Upkeep(
                "lease sweeps",
                sweeper.sweep,
                sweeper.interval,
                "the board lists neither workers nor sessions: lease checks stop",
            ),
            Upkeep("log retention", retention.prune, retention.interval, "retention stops"),
        ]
        if self._sessions.active:
            loops.append(
                Upkeep(
                    "session keep-alives",
                    self._sessions.keep_alive,
                    self._sessions.interval,
                    "",  # the client said it once already: the board has no sessions
                )
            )
        if self._chat.active:
            loops.append(
                Upkeep("chat polls", self._chat.poll, self._chat.interval, "")  # said by client
            )
        return loops

    async def _run(self) -> None:
        heartbeats = self._heartbeats
        async with anyio.create_task_group() as background:
            if self._handle_signals:
                background.start_soon(self._watch_signals)
            await self._startup()
            with self._startup_scope:
                await self._meet_the_board()
                # The process is known to the board before any slot claims: a slot that
                # dies before its own first heartbeat is then still covered by the lease.
                with contextlib.suppress(BoardError):
                    await heartbeats.beat()
            for loop in self._upkeep(heartbeats):
                background.start_soon(self._guarded, run_upkeep, loop)
            background.start_soon(self._guarded, self._drain_deadline)
            async with anyio.create_task_group() as slots:
                for slot in self.state.slots:
                    slots.start_soon(self._slot_loop, slot.name)
            # A courtesy to the board: a refused key was reported where it was first met.
            with anyio.CancelScope(shield=True), contextlib.suppress(BoardError, AuthError):
                with anyio.move_on_after(self.settings.request_timeout):
                    await heartbeats.farewell(slot.name for slot in self.state.slots)
            background.cancel_scope.cancel()

    async def _startup(self) -> None:
        """Clean up after a previous run; waits for the board rather than giving up."""
        leftovers = await sweep_leftovers(
            OWNER_VAR.encode(), self.settings.bot_name, self.settings.kill_grace
        )
        if leftovers:
            logger.warning("stopped {} agent process(es) left by an earlier run", leftovers)
        await self._workspaces.prune_stale()

    async def _meet_the_board(self) -> None:
        """Our name is free, our previous life's tasks recovered; waits for the board."""
        delay = self.settings.poll_interval
        while not self.state.draining:
            try:
                # Before recovery: another live process under our name would see its running
                # tasks failed as a crash's leftovers.
                await ensure_name_free(self.client, self.settings.bot_name, self._beats)
                recovered = await recover_own_tasks(
                    self.client, self._reporter, self.settings.slot_names(), self.settings.bot_name
                )
            except BoardError as exc:
                wrong_url = not_the_api(exc)
                if wrong_url is not None:
                    logger.error(
                        "the board's API is not there ({}); retrying in {:.0f} s", wrong_url, delay
                    )
                else:
                    logger.warning(
                        "the board is not reachable yet ({}); retrying in {:.0f} s", exc, delay
                    )
                with anyio.move_on_after(delay):
                    await self._draining.wait()
                delay = min(delay * 2, self.settings.max_poll_interval)
                continue
            self.state.board_ready = True
            self._on_change()  # the status file exists from the start, busy or not
            if recovered:
                logger.info("recovered {} task(s) left in progress by a previous run", recovered)
            lost = await self._chat.recover(self.settings.bot_name)
            if lost:
                logger.info("told {} person(s) their message's answer was lost at a crash", lost)
            return

    async def _guarded(self, loop: Callable[..., Awaitable[None]], *args: Any) -> None:
        """Background loops end the pool on a refused key; no other error is dropped."""
        try:
            await loop(*args)
        except AuthError as exc:
            self._fatal(exc)

    def _board_answered(self, ok: bool) -> None:
        self.state.board_ready = ok

    async def _slot_loop(self, slot: str) -> None:
        try:
            await self._slot_claims(slot)
        finally:
            # The slot stops claiming: idle on the board now, not working on its last task.
            if self._heartbeats.shows_working(slot):
                with anyio.CancelScope(shield=True), contextlib.suppress(AuthError):
                    with anyio.move_on_after(SLOT_BEAT_TIMEOUT):
                        await self._heartbeats.slot_ended(slot)

    async def _slot_claims(self, slot: str) -> None:
        while not self.state.draining:
            try:
                if not await self._take_turn(slot):
                    return
            except AuthError as exc:
                self._fatal(exc)
                return
            except BoardError as exc:
                # The runner makes the board's failures a worker fault of their own and the
                # heartbeats log theirs; this keeps a future one from ending the process.
                logger.error("{} met a board error outside a task's run: {}", slot, exc)

    async def _take_turn(self, slot: str) -> bool:
        """One claim and what it brings (a task's run, or an answer); False once the pool
        stops claiming."""
        claimed = await self._next_claim(slot)
        if claimed is None:
            return False
        if isinstance(claimed, ChatTurn):
            await self._answer(slot, claimed)
            return True
        self.metrics.tasks_claimed.inc()
        self.state.tasks.add(claimed.task.id)
        await self._heartbeats.slot_started(slot, claimed.task.id)
        await self._sessions.begin(slot, claimed.task)
        ended: Ended | None = None
        try:
            ended = await self._runner.run(slot, claimed)
        finally:
            # Never in place of the runner's own exception: a refused key meets the next
            # claim anyway.
            with anyio.CancelScope(shield=True), contextlib.suppress(AuthError):
                with anyio.move_on_after(SLOT_BEAT_TIMEOUT):
                    await self._sessions.end(slot, ended)
        self._count(ended)
        self._dispatcher.task_ended()
        if ended.ending is TaskEnding.WORKER_FAULT:
            self._pause_after_worker_fault(ended.reason)
        elif ended.ending in (TaskEnding.COMPLETED, TaskEnding.FAILED):
            self._worker_works()
        await self._answer_what_the_run_missed(slot, claimed.task.id, ended)
        return True

    async def _answer_what_the_run_missed(self, slot: str, task_id: str, ended: Ended) -> None:
        """A person's message written while the task ran here, answered in the same slot
        before it claims again: nobody else sees it (the run's summary came after it). A
        task back in ``todo`` needs none: its next run has the message in its prompt."""
        answerable = ended.ending is TaskEnding.COMPLETED or ended.gave_up
        if ended.history is None or not answerable or self.state.draining:
            return
        turn = await self._chat.after_run(slot, task_id, ended.history)
        if turn is not None:
            await self._answer(slot, turn)

    async def _next_claim(self, slot: str) -> Claimed | ChatTurn | None:
        """The slot's next task. A slot the board still shows working on its last task
        says idle only if no next task comes within ``SLOT_IDLE_AFTER``: one that claims at
        once goes from "working" on one task to "working" on the next in one heartbeat."""
        if not self._heartbeats.shows_working(slot):
            return await self._dispatcher.claim(slot)
        async with anyio.create_task_group() as group:
            group.start_soon(self._idle_later, slot)
            claimed = await self._dispatcher.claim(slot)
            group.cancel_scope.cancel()
        return claimed

    async def _idle_later(self, slot: str) -> None:
        await anyio.sleep(SLOT_IDLE_AFTER)
        with contextlib.suppress(AuthError):  # the next claim meets a refused key too
            await self._heartbeats.slot_ended(slot)

    async def _answer(self, slot: str, turn: ChatTurn) -> None:
        """A person's message answered in ``slot``, which shows as working meanwhile (the
        status file and /status say on what), and in the dashboard as a session."""
        if self._heartbeats.shows_working(slot):
            # Not on its last task any more (an answer is no task's run).
            await self._heartbeats.slot_ended(slot)
        state = next(s for s in self.state.slots if s.name == slot)
        state.set("working", turn.task.id, f"answering a message on: {turn.task.title}")
        self._on_change()
        await self._sessions.begin_answer(slot, turn.task)
        end = AnswerEnd(False, f"{slot}: the answer's ending could not be reported.")
        try:
            end = await self._answers.answer(slot, turn)
        finally:
            state.set("idle")
            self._on_change()
            with anyio.CancelScope(shield=True), contextlib.suppress(AuthError):
                with anyio.move_on_after(SLOT_BEAT_TIMEOUT):
                    await self._sessions.end_answer(slot, end.answered, end.line)
        if end.worker_fault:
            # The next answer or task would fail the same way: as after a task's run.
            self.state.worker_faults += 1
            self._pause_after_worker_fault(end.worker_fault)
        elif end.answered:
            self._worker_works()

    def _count(self, ended: Ended) -> None:
        s = self.state
        if ended.ending is TaskEnding.COMPLETED:
            s.completed += 1
        elif ended.ending is TaskEnding.FAILED:
            s.failed += 1
            s.gave_up += ended.gave_up
        elif ended.ending is TaskEnding.RELEASED:
            s.released += 1
        elif ended.ending is TaskEnding.WORKER_FAULT:
            s.worker_faults += 1
        self._on_change()

    def _pause_after_worker_fault(self, reason: str) -> None:
        """Stop claiming: the next task would fail the same way, through no fault of its own."""
        already = self.state.worker_fault is not None and self._dispatcher.paused
        self.state.worker_fault = reason
        self._on_change()
        if self.settings.exit_when_idle:
            logger.error("a worker fault stopped the claims (--exit-when-idle): exiting")
            self.exit_code = EXIT_WORKER_FAULT
            self.drain()
            return
        if already:
            return  # several slots met the same fault at once: one pause, one doubling
        pause = self._fault_pause
        self._fault_pause = min(pause * 2, WORKER_FAULT_PAUSE_MAX)
        logger.error("a worker fault stopped the claims: trying again in {:.0f} s", pause)
        self._dispatcher.pause(pause)

    def _worker_works(self) -> None:
        """A run got as far as the task's own work: whatever was wrong with us is fixed."""
        if self.state.worker_fault is not None:
            logger.info("the worker fault is over: {} ran its task", self.state.bot_name)
            self.state.worker_fault = None
            self._on_change()
        self._fault_pause = WORKER_FAULT_PAUSE


def _first(group: BaseExceptionGroup[FatalError]) -> FatalError:
    """The first fatal error in a (possibly nested) exception group."""
    first = group.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
