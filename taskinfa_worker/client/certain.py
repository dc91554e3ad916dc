"""Writes whose outcome must be known: a task's ending, and the note that explains it.

Such a write can fail in ways that leave the board's state unknown: no answer (the board
may have acted), a 5xx or a lasting 429 (it may not have), a success whose body cannot be
read (it did), a 409. None of these is taken as an answer. Each leads to a read-back:

- an ending is written again only while the read-back shows the task still in progress
  for its owner (not ended, not taken by anyone else); otherwise the task as it now is
  comes back. It keeps trying for as long as the worker lives: a task must not stay
  ``in_progress`` with no agent because the board was away for a while;
- a note (summary, failure, release, stop) is posted again only when the task's newest
  comments do not already have it, so a lost answer never shows the same note twice. A
  note is given a bounded number of rounds; the caller then puts its text elsewhere.

Only a definite refusal (400, 404) ends a write early, and a refused key stops everything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import anyio
from loguru import logger

from taskinfa_worker.client.models import Comment, CommentPage, Task, held_by
from taskinfa_worker.client.ratelimit import Lane
from taskinfa_worker.client.transport import MAX_BACKOFF, BoardTransport
from taskinfa_worker.errors import BoardError, MalformedResponseError

FIRST_DELAY: Final = 1.0
NOTE_ROUNDS: Final = 6  # about a minute of trying with the default pacing
NOTES_LOOKED_AT: Final = 20


class _Pacing:
    """Exponential, capped delays between rounds (``factor`` shrinks them in tests)."""

    def __init__(self, factor: float) -> None:
        self._next = FIRST_DELAY * factor
        self._cap = MAX_BACKOFF * factor

    async def wait(self) -> None:
        await anyio.sleep(self._next)
        self._next = min(self._next * 2, self._cap)


async def end_task(
    transport: BoardTransport,
    read: Callable[[], Awaitable[Task | None]],
    task_id: str,
    owner: str | None,
    fields: dict[str, Any],
    *,
    path: str,
    lane: Lane,
    factor: float,
) -> Task | None:
    """PATCH ``fields`` onto a task in progress for ``owner`` until the board's state is
    known; the task as the board has it afterwards (None when it was deleted)."""
    pacing = _Pacing(factor)
    while True:
        why = await _try_write(transport, task_id, fields, path=path, lane=lane)
        if isinstance(why, Task) or why is None:
            return why
        logger.warning("{}: ending not confirmed ({}); reading the task back", task_id, why)
        current = await _read_until_known(read, task_id, pacing)
        if not held_by(current, owner):
            # Ended (our write landed) or taken by someone else: nothing is sent again.
            return current
        await pacing.wait()


async def _try_write(
    transport: BoardTransport, task_id: str, fields: dict[str, Any], *, path: str, lane: Lane
) -> Task | str | None:
    """The task after the write, None when it is gone, or why the outcome is unknown."""
    try:
        answer = await transport.request(
            "PATCH", path, task_id, lane=lane, json=fields, retry=False
        )
    except BoardError as exc:  # no answer, 5xx, a 429 that outlasted the waits
        return str(exc)
    if answer.status in (404, 410):
        return None
    if answer.status == 409:
        return "409 conflict"
    transport.expect_ok(answer)  # any other refusal is an answer: the caller decides
    try:
        return transport.decode(answer, Task, "task")
    except MalformedResponseError as exc:
        return str(exc)  # a success we cannot read: the board acted, read what it did


async def _read_until_known(
    read: Callable[[], Awaitable[Task | None]], task_id: str, pacing: _Pacing
) -> Task | None:
    while True:
        try:
            return await read()
        except BoardError as exc:
            logger.warning("{}: cannot read the task back yet ({})", task_id, exc)
            await pacing.wait()


async def post_note(
    transport: BoardTransport,
    recent: Callable[[], Awaitable[CommentPage]],
    task_id: str,
    body: dict[str, Any],
    *,
    path: str,
    lane: Lane,
    factor: float,
) -> Comment | bool:
    """Post a comment at least once and show it once. The comment (or True when its answer
    could not be read but the board has it); False after ``NOTE_ROUNDS`` failed rounds."""
    pacing = _Pacing(factor)
    maybe_posted = False
    for _ in range(NOTE_ROUNDS):
        if maybe_posted:
            present = await _note_present(recent, body)
            if present:
                return True
            if present is None:  # cannot tell yet: posting now could show it twice
                await pacing.wait()
                continue
        try:
            answer = await transport.request(
                "POST", path, task_id, lane=lane, json=body, retry=False
            )
        except BoardError as exc:
            maybe_posted = True
            logger.warning("{}: note not confirmed ({}); looking for it", task_id, exc)
            await pacing.wait()
            continue
        transport.expect_ok(answer)  # a refusal (400, 404) is an answer
        try:
            return transport.decode(answer, Comment, "comment")
        except MalformedResponseError:
            return True  # stored: a success status, whatever the body says
    return False


async def _note_present(
    recent: Callable[[], Awaitable[CommentPage]], body: dict[str, Any]
) -> bool | None:
    """Whether the board shows the note among the task's newest comments; None: unknown."""
    try:
        page = await recent()
    except BoardError:
        return None
    return any(c.author == body["author"] and c.content == body["content"] for c in page.comments)
