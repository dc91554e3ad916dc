"""Before an ending is written: is the task still ours? One read answers many endings.

A person's move (the task sent back to ``todo``, reassigned, deleted, moved to another
column) must never be overwritten by a run's ending. So each run reads its task back after
its agent stopped and before it writes the ending, and writes nothing if the task is no
longer in progress for its slot (``models.taken_away``).

That read used to be one ``GET /tasks/{id}`` per ending. Here one list of the tasks in
progress (``GET /tasks?status=in_progress``, up to 100) answers every ending that asked
before it was sent: at most one such read is under way at a time, and the endings that ask
meanwhile share the next one, and a read waits ``GATHER`` before it is sent for the
endings about to ask. A pool whose runs end together (a burst of short tasks, or endings
that wait together for the rate limiter, which is when requests are short) pays one read
for all of them; a pool whose runs end minutes apart still pays one per ending. A task not
on the list is read on its own (a request only when it is no longer ours, to say why, or
when more than a page of tasks is in progress).

The race, written down. A read answers for the moment the board served it, and the ending
follows it within one request's time; a person's move inside that window is overwritten,
as it was with the one GET (no release of the board offers a conditional write). What the
shared read must not do is answer for a moment before the run asked: then a move made
between that moment and the ending would be missed though the run had already stopped. So
a read answers only the endings that asked before it was sent, never one that asked while
it was under way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio

from taskinfa_worker.client.api import BoardClient, Lane
from taskinfa_worker.client.models import Task, TaskStatus
from taskinfa_worker.errors import BoardError, FatalError

PAGE_LIMIT = 100
# How long a read waits for other endings to join it: nothing beside a run of minutes, and
# in a burst of endings enough for many of them.
GATHER = 0.2


@dataclass
class _Read:
    """One list read and the endings waiting for it."""

    done: anyio.Event = field(default_factory=anyio.Event)
    found: dict[str, Task] = field(default_factory=dict)
    error: BoardError | FatalError | None = None
    answered: bool = False  # False when the read was cancelled before it was made


class OwnershipReads:
    """Reads tasks back before their endings, sharing one list read among the endings."""

    def __init__(self, client: BoardClient, gather: float = GATHER) -> None:
        self._client = client
        self._gather = gather
        self._next: _Read | None = None  # the read not yet sent: new askers join it
        self._sending = anyio.Lock()  # one read under way at a time
        self.list_reads = 0

    async def current(self, task_id: str) -> Task | None:
        """The task as the board has it after this call (None: deleted). Raises
        ``BoardError`` when the board could not be read."""
        while True:
            read = self._next
            if read is None:
                read = self._next = _Read()
                await self._send(read)
            else:
                await read.done.wait()
            if read.answered:
                break
            # Its sender was cancelled before the read was made: ask again.
        if read.error is not None:
            raise read.error
        task = read.found.get(task_id)
        if task is not None:
            return task
        return await self._client.get_task(task_id, lane=Lane.CRITICAL)

    async def _send(self, read: _Read) -> None:
        try:
            await anyio.sleep(self._gather)
            async with self._sending:
                # From here on, askers wait for the read after this one.
                if self._next is read:
                    self._next = None
                self.list_reads += 1
                try:
                    page = await self._client.list_tasks(
                        status=TaskStatus.IN_PROGRESS, limit=PAGE_LIMIT, lane=Lane.CRITICAL
                    )
                except (BoardError, FatalError) as exc:  # every waiter gets the answer
                    read.error = exc
                else:
                    read.found = {task.id: task for task in page.tasks}
                read.answered = True
        finally:
            if self._next is read:
                self._next = None
            read.done.set()
