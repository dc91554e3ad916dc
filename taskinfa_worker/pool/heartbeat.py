"""Heartbeats: the board's view of which workers are alive and what they do.

One loop per process, running beside the slots (also while agents run and during drain).
Each round sends one heartbeat for the process (``BOT_NAME``) and one per working slot
(``working`` with its task); a slot that went idle since the last round says so once. The
round's interval is the board's ``next_heartbeat_in`` stretched by the shared budget
(``budget.heartbeat_interval``), so 64 busy slots still fit in 100 requests a minute while
staying under the board's 120 s offline threshold.

Between rounds the slots speak for themselves, so the board never shows what is no longer
true: a slot says ``working`` the moment it claims and ``idle`` the moment its task ends
(a task shorter than a round would otherwise never show, and an ended one would show
"working" until the next round), and the process says ``idle`` for itself and every slot
not yet shown idle as it exits, rather than "working" until the board's 120 s run out. A
round skips a slot whose task ended while the round was under way, so it cannot undo the
slot's ``idle``.

A slot that ends a task and claims the next at once sends one heartbeat for both: "working"
on the new task. It says ``idle`` only when no next task came within ``SLOT_IDLE_AFTER``
(``worker_pool.py``), or when it stops claiming. The board's ``total_tasks_completed``
counter (no dashboard page shows it) counts a worker's working → idle changes, so it then
counts a slot's runs of a busy stretch as one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from loguru import logger

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.errors import BoardError
from taskinfa_worker.pool import budget
from taskinfa_worker.pool.identity import BeatRecord
from taskinfa_worker.pool.registry import RunningTasks

DEFAULT_SERVER_INTERVAL = 10.0


class HeartbeatLoop:
    def __init__(
        self,
        client: BoardClient,
        bot_name: str,
        running: RunningTasks,
        on_board_answer: Callable[[bool], None] = lambda _ok: None,
        record: BeatRecord | None = None,
    ) -> None:
        self._client = client
        self._bot_name = bot_name
        self._running = running
        self._on_board_answer = on_board_answer
        # The board's time of our process's beat, so a restart knows its own last beat.
        self._record = record
        self._server_interval = DEFAULT_SERVER_INTERVAL
        self._working_last_round: set[str] = set()
        self._shown_idle: set[str] = set()  # slots whose last heartbeat, answered, said idle
        # Slots whose last heartbeat, answered, said working, and on which task.
        self._shown_working: dict[str, str | None] = {}
        self.rounds = 0

    def interval(self) -> float:
        """The next round's interval: the board's, stretched for one process + busy slots."""
        return budget.heartbeat_interval(
            self._server_interval, 1 + len(self._running), self._client.limiter
        )

    async def beat(self) -> bool:
        """One round. False when the board has no heartbeat route."""
        working = {run.slot: run.task.id for run in self._running}
        gone_idle = self._working_last_round - working.keys()
        beats: list[tuple[str, str, str | None]] = [
            (self._bot_name, "working" if working else "idle", None),
            *((slot, "working", task_id) for slot, task_id in sorted(working.items())),
            *((slot, "idle", None) for slot in sorted(gone_idle)),
        ]
        for name, status, task_id in beats:
            if task_id is not None and task_id not in self._running:
                continue  # ended while this round ran: its slot already said idle
            answer = await self._send(name, status, task_id)
            if answer is False:
                return False
        self._working_last_round = set(working)
        self.rounds += 1
        return True

    async def slot_started(self, slot: str, task_id: str) -> None:
        """A slot claimed ``task_id``: the board shows it working now, not next round."""
        await self._send(slot, "working", task_id)

    def shows_working(self, slot: str) -> bool:
        """Whether the board took the slot's last heartbeat, and it said "working"."""
        return slot in self._shown_working

    def names_run(self, slot: str, task_id: str) -> bool:
        """Whether the board took the slot's last heartbeat, and it said "working" on
        ``task_id`` (the slot sends one at each claim)."""
        return slot in self._shown_working and self._shown_working[slot] == task_id

    async def slot_ended(self, slot: str) -> None:
        """A slot's task ended: the board shows the slot idle at once."""
        self._working_last_round.discard(slot)
        await self._send(slot, "idle", None)

    async def farewell(self, slots: Iterable[str]) -> None:
        """The process exits: it and its slots are idle, not working until they time out."""
        for name in (*sorted(set(slots) - self._shown_idle), self._bot_name):
            if await self._send(name, "idle", None) is False:
                return

    async def _send(self, name: str, status: str, task_id: str | None) -> bool | None:
        """One heartbeat. False when the board has no heartbeat route, None when it failed."""
        record = self._record if name == self._bot_name else None
        if record is not None:
            record.sending()
        try:
            answer = await self._client.heartbeat(name, status, task_id)
        except BoardError as exc:
            logger.warning("heartbeat for {} failed: {}", name, exc)
            return None
        if answer is None:
            return False
        self._on_board_answer(True)
        if status == "idle":
            self._shown_idle.add(name)
            self._shown_working.pop(name, None)
        else:
            self._shown_idle.discard(name)
            self._shown_working[name] = task_id
        if record is not None and answer.worker is not None:
            record.save(answer.worker.last_heartbeat)
        self._server_interval = max(1.0, answer.next_heartbeat_in)
        return True
