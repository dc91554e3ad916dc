"""The worker pool: N slots in one process, and how it starts and stops.

    run()
    ├── startup: prune stale workspaces, recover our own tasks left in progress
    ├── background (one task group): the upkeep loops (heartbeats, takeaway checks, lease
    │   sweeps), signals and the drain deadline
    └── slots 1..N: claim (dispatcher) → run the task (runner) → again, until told to stop

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
from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.errors import EXIT_AUTH, AuthError, BoardError
from taskinfa_worker.logs import LOG_FILE_NAME
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.pool.dispatcher import Dispatcher
from taskinfa_worker.pool.heartbeat import HeartbeatLoop
from taskinfa_worker.pool.periodic import Upkeep, run_upkeep
from taskinfa_worker.pool.recovery import LeaseSweeper, recover_own_tasks
from taskinfa_worker.pool.registry import RunningTasks, StopKind
from taskinfa_worker.pool.reporting import TaskReporter
from taskinfa_worker.pool.retention import LogRetention
from taskinfa_worker.pool.runner import TaskEnding, TaskRunner
from taskinfa_worker.pool.state import PoolState, SlotState
from taskinfa_worker.pool.takeaway import TakeawayWatcher
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings
from taskinfa_worker.workspace import Workspaces

EXIT_OK = 0
EXIT_AGENT_AUTH = 4  # the agent's key was refused and --exit-when-idle gave up
EXIT_IMMEDIATE = 130

# After the agent's own API key is refused, no slot claims for this long (doubling on each
# repeat): every task would fail the same way, and a person has to fix the key.
AGENT_AUTH_PAUSE = 300.0
AGENT_AUTH_PAUSE_MAX = 3600.0


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
        self._reporter = TaskReporter(client, redactor, settings.max_attempts)
        self._runner = TaskRunner(
            settings, client, agent, workspaces, self._reporter, metrics, self.running
        )
        self._dispatcher = Dispatcher(settings, client, self.running, on_done=self.drain)
        self._signals = 0
        self._stopping = False
        self._draining = anyio.Event()  # the pool is built inside the event loop
        self._agent_auth_pause = AGENT_AUTH_PAUSE
        self.exit_code = EXIT_OK
        metrics.slots_total.set(settings.concurrency)

    def __repr__(self) -> str:
        s = self.state
        return (
            f"<WorkerPool {s.bot_name} slots={len(s.slots)} busy={s.busy} "
            f"completed={s.completed} failed={s.failed} released={s.released}"
            f"{' draining' if s.draining else ''}>"
        )

    def _counters(self) -> str:
        s = self.state
        return f"{s.completed} completed ◆ {s.failed} failed ◆ {s.released} released"

    # --- Stopping ------------------------------------------------------------------------
    def drain(self) -> None:
        """Tier 1: stop claiming; running tasks go on until the drain deadline."""
        if self.state.draining:
            return
        self.state.draining = True
        self._draining.set()
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

    def _fatal(self, exc: AuthError) -> None:
        logger.error("{}", exc)
        self.exit_code = EXIT_AUTH
        self.state.board_ready = False
        self.stop_now("the worker stopped because the board refused its key.")

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
        except AuthError as exc:
            self._fatal(exc)
        uptime = time.time() - self.state.started_at
        logger.info(
            "taskinfa-worker {} stopped ◆ {} ◆ up {:.0f} s", s.bot_name, self._counters(), uptime
        )
        return self.exit_code

    def _upkeep(self, heartbeats: HeartbeatLoop) -> list[Upkeep]:
        """The loops that run beside the slots, for as long as the pool runs."""
        s = self.settings
        watcher = TakeawayWatcher(self.client, self.running, s.cancel_check_interval)
        sweeper = LeaseSweeper(
            self.client, self._reporter, self.running, s.lease_timeout, s.bot_name
        )
        retention = LogRetention(
            s.bot_log_dir,
            self.running,
            live={s.bot_log_dir / LOG_FILE_NAME, s.status_file},
            max_bytes=s.log_retention_mb * 1024 * 1024,
            max_age=s.log_retention_days * 86400,
            interval=s.log_retention_interval,
        )
        return [
            Upkeep(
                "heartbeats",
                heartbeats.beat,
                heartbeats.interval,
                "the board has no heartbeat route: heartbeats stop",
            ),
            Upkeep("takeaway checks", watcher.check, watcher.interval, "takeaway checks stop"),
            Upkeep(
                "lease sweeps",
                sweeper.sweep,
                sweeper.interval,
                "the board lists no workers: lease checks stop",
            ),
            Upkeep("log retention", retention.prune, retention.interval, "retention stops"),
        ]

    async def _run(self) -> None:
        s = self.settings
        heartbeats = HeartbeatLoop(self.client, s.bot_name, self.running, self._board_answered)
        async with anyio.create_task_group() as background:
            if self._handle_signals:
                background.start_soon(self._watch_signals)
            await self._startup()
            # The process is known to the board before any slot claims: a slot that dies
            # before its own first heartbeat is then still covered by the lease.
            with contextlib.suppress(BoardError):
                await heartbeats.beat()
            for loop in self._upkeep(heartbeats):
                background.start_soon(self._guarded, run_upkeep, loop)
            background.start_soon(self._guarded, self._drain_deadline)
            async with anyio.create_task_group() as slots:
                for slot in self.state.slots:
                    slots.start_soon(self._slot_loop, slot.name)
            background.cancel_scope.cancel()

    async def _startup(self) -> None:
        """Clean up after a previous run; waits for the board rather than giving up."""
        leftovers = await sweep_leftovers(
            OWNER_VAR.encode(), self.settings.bot_name, self.settings.kill_grace
        )
        if leftovers:
            logger.warning("stopped {} agent process(es) left by an earlier run", leftovers)
        await self._workspaces.prune_stale()
        delay = self.settings.poll_interval
        while not self.state.draining:
            try:
                recovered = await recover_own_tasks(
                    self.client, self._reporter, self.settings.slot_names(), self.settings.bot_name
                )
            except BoardError as exc:
                logger.warning(
                    "the board is not reachable yet ({}); retrying in {:.0f} s", exc, delay
                )
                with anyio.move_on_after(delay):
                    await self._draining.wait()
                delay = min(delay * 2, self.settings.max_poll_interval)
                continue
            self.state.board_ready = True
            if recovered:
                logger.info("recovered {} task(s) left in progress by a previous run", recovered)
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
        while not self.state.draining:
            try:
                claimed = await self._dispatcher.claim(slot)
                if claimed is None:
                    return
                self.metrics.tasks_claimed.inc()
                ending = await self._runner.run(slot, claimed)
            except AuthError as exc:
                self._fatal(exc)
                return
            except BoardError as exc:
                # The runner's endings are retried by the client for minutes; past that the
                # task stays in progress and the lease or our restart recovers it.
                logger.error("{} could not report a task's ending: {}", slot, exc)
                continue
            self._count(ending)
            self._dispatcher.task_ended()
            if ending is TaskEnding.AGENT_AUTH_FAILED:
                await self._pause_after_agent_auth_failure()

    def _count(self, ending: TaskEnding) -> None:
        if ending is TaskEnding.COMPLETED:
            self.state.completed += 1
        elif ending in (TaskEnding.FAILED, TaskEnding.AGENT_AUTH_FAILED):
            self.state.failed += 1
        elif ending is TaskEnding.RELEASED:
            self.state.released += 1
        self._on_change()

    async def _pause_after_agent_auth_failure(self) -> None:
        if self.settings.exit_when_idle:
            logger.error("the agent's API key was refused: no more claims (--exit-when-idle)")
            self.exit_code = EXIT_AGENT_AUTH
            self.drain()
            return
        pause = self._agent_auth_pause
        self._agent_auth_pause = min(pause * 2, AGENT_AUTH_PAUSE_MAX)
        logger.error(
            "the agent's API key was refused (ANTHROPIC_API_KEY or ~/.claude): no slot claims "
            "for {:.0f} s",
            pause,
        )
        self._dispatcher.pause(pause)
