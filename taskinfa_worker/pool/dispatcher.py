"""Finding and claiming work: one poller per process, only for a free slot.

Free slots line up on one lock; the slot holding it is the process's only poller. It asks
for the next task of its projects (``offers.py``: one read of each project's todo list
feeds the claims of the next ``poll_interval`` seconds, in the board's order), claims what
it gets and hands the lock on, so a busy queue is drained one claim at a time with no
claim made ahead of a free slot, and an empty queue costs one jittered poll per interval
whatever the number of slots. The interval is the process's part of the key's idle-poll
budget (``budget.idle_poll_interval``: a share of the rate, divided among the processes on
the key by their part of its traffic), between ``poll_interval`` and ``max_poll_interval``;
a board that cannot be asked doubles it each time, up to ``max_poll_interval``. The poller
wakes at once when any task ends, because an ending often puts work back (a retry) or
frees the slot that should take the next task. A failed task waiting for its next attempt
(``spacing.py``) is passed over for the next task in the board's order; when only waiting
tasks are left, the poller sleeps until the first of them may be tried, and the queue does
not count as empty for ``--exit-when-idle``.

A person's message waiting for an answer (``chat.py``) goes before the next task: the
person is waiting, and the answer is short. The poller picks it, so a message too is taken
only for a free slot (the chat's poll wakes the poller when it finds one); but it takes it
up after handing the lock on, since taking one waits ``chat.SETTLE`` seconds for rival
claims, and the next free slot should not wait that long for its task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import anyio
from loguru import logger

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.errors import BoardError
from taskinfa_worker.pool.budget import idle_poll_interval, jittered
from taskinfa_worker.pool.chat import ChatDesk, ChatTurn
from taskinfa_worker.pool.offers import Offers
from taskinfa_worker.pool.registry import Claimed, RunningTasks
from taskinfa_worker.pool.spacing import RetrySpacing
from taskinfa_worker.settings import Settings

# A lost claim moves on at once; this many in a row means the board keeps offering tasks we
# cannot have (e.g. a non-atomic server under contention), so wait one interval.
MAX_LOST_IN_A_ROW = 5


class Miss(Enum):
    """Why one look for work claimed nothing."""

    EMPTY = "empty"  # the board offered no task
    CLOSED = "closed"  # claiming stopped while we asked
    OURS = "ours"  # the offer is a task one of our slots still ends
    LOST = "lost"  # another worker claimed it first
    ERROR = "error"  # the board could not be asked


@dataclass(frozen=True)
class WaitingMessage:
    """A task with a person's message waiting, for the slot to take up after the lock."""

    task_id: str


class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        client: BoardClient,
        running: RunningTasks,
        *,
        on_done: Callable[[], None],
        chat: ChatDesk | None = None,
    ) -> None:
        self._settings = settings
        self._client = client
        self._offers = Offers(
            client,
            settings.task_list_ids,
            RetrySpacing.from_settings(settings),
            fresh_for=settings.poll_interval,
        )
        self._running = running
        self._on_done = on_done
        self._chat = chat
        self._paused_until = 0.0
        self._lock = anyio.Lock()
        self._failures = 0  # board errors in a row: the idle wait doubles with each
        self._wake = anyio.Event()
        self._closed = False
        self.claimed = 0

    def close(self) -> None:
        """Stop claiming: waiting slots get None at once."""
        self._closed = True
        self._wake.set()

    def pause(self, seconds: float) -> None:
        """No claims for a while (a worker fault: every task would fail the same way)."""
        self._paused_until = time.monotonic() + seconds

    @property
    def paused(self) -> bool:
        return self._paused_until > time.monotonic()

    def task_ended(self) -> None:
        self._wake.set()

    def _limit_reached(self) -> bool:
        limit = self._settings.max_tasks
        return limit is not None and self.claimed >= limit

    async def claim(self, slot_name: str) -> Claimed | ChatTurn | None:
        """The next task (or message to answer) for this slot, or None when the pool stops
        claiming."""
        while True:
            async with self._lock:
                found = await self._claim_in_turn(slot_name)
            if not isinstance(found, WaitingMessage):
                return found
            assert self._chat is not None
            turn = await self._chat.take_up(slot_name, found.task_id)
            if turn is not None:
                return turn

    async def _claim_in_turn(self, slot_name: str) -> Claimed | WaitingMessage | None:
        """What this slot, holding the lock, gets: a task claimed, a message to take up."""
        lost_in_a_row = 0
        while not self._closed:
            if self._limit_reached():
                logger.info("claimed {} tasks (--max-tasks): no more claims", self.claimed)
                self._on_done()
                break
            if self._paused_until > time.monotonic():
                await self._sleep(self._paused_until - time.monotonic())
                continue
            if self._chat is not None and (task_id := self._chat.next_waiting()):
                return WaitingMessage(task_id)
            claimed = await self._try_once(slot_name)
            self._failures = self._failures + 1 if claimed is Miss.ERROR else 0
            if isinstance(claimed, Claimed):
                self.claimed += 1
                return claimed
            if claimed is Miss.LOST and lost_in_a_row < MAX_LOST_IN_A_ROW:
                lost_in_a_row += 1
                continue
            lost_in_a_row = 0
            retry_in = self._offers.soonest_retry if claimed is Miss.EMPTY else None
            if (
                claimed is Miss.EMPTY
                and retry_in is None
                and self._settings.exit_when_idle
                and not self._running
            ):
                logger.info("the queue is empty and no slot is busy (--exit-when-idle)")
                self._on_done()
                break
            await self._idle_wait(retry_in)
        return None

    async def _try_once(self, slot_name: str) -> Claimed | Miss:
        try:
            offer = await self._offers.next(skip=self._running)
            if offer.task is None:
                return Miss.EMPTY
            if self._closed:
                return Miss.CLOSED  # a signal came while we asked: drain means no new claims
            if offer.task.id in self._running:
                # Back in todo while one of our slots still ends it (a person moved it, or
                # our own ending's answer was lost): claim it once that slot has let go,
                # never twice at once. The slot's end wakes us.
                return Miss.OURS
            task = await self._client.claim(offer.task.id, slot_name)
        except BoardError as exc:
            logger.warning("looking for work failed: {}", exc)
            return Miss.ERROR
        if task is None:
            logger.debug("lost the claim on {} to another worker", offer.task.id)
            self._offers.forget()  # the board moved on since the list was read
            return Miss.LOST
        return Claimed(task, offer.project, offered=offer.task)

    async def _idle_wait(self, retry_in: float | None = None) -> None:
        """One paced idle interval, or less when a waiting task is due sooner."""
        settings = self._settings
        wait = idle_poll_interval(
            settings.poll_interval, settings.max_poll_interval, self._client.limiter
        )
        if self._failures:
            wait = min(wait * 2 ** min(self._failures, 16), settings.max_poll_interval)
        wait = jittered(wait)
        await self._sleep(wait if retry_in is None else min(wait, retry_in))

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when a task ends or claiming stops."""
        self._wake = anyio.Event()
        if self._closed:
            return
        with anyio.move_on_after(seconds):
            await self._wake.wait()
