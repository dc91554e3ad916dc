"""Claiming a task: the one request whose outcome must never be guessed.

A claim is never retried blindly, because the board may have done it already. When its
answer is lost or unreadable the task is read back, and it is ours only if it is
``in_progress`` and assigned to us. Boards without ``POST /tasks/{id}/claim`` (``API.md``,
"Real servers differ") are claimed with a PATCH and the same read-back; that is not atomic,
which is logged once.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

from loguru import logger

from taskinfa_worker.client.answer import Answer
from taskinfa_worker.client.models import Task, TaskStatus, held_by
from taskinfa_worker.client.ratelimit import Lane
from taskinfa_worker.client.transport import BoardTransport
from taskinfa_worker.errors import (
    MalformedResponseError,
    NotFoundError,
    ServerError,
    TransportError,
)

__all__ = ["CLAIM", "Claimer", "TaskBoard", "route_missing"]

CLAIM: Final = "/tasks/{id}/claim"


class TaskBoard(Protocol):
    """What claiming needs of the client besides the transport (``BoardClient`` is one)."""

    claims_atomic: bool | None

    async def get_task(self, task_id: str, *, lane: Lane = ...) -> Task | None: ...

    async def update_task(self, task_id: str, *, lane: Lane = ..., **fields: Any) -> Task: ...


async def route_missing(answer: Answer, task_id: str, board: TaskBoard) -> bool:
    """Whether a 404/405 for a route of ``task_id`` means the route is missing, not the task."""
    if answer.status == 405:
        return True
    if answer.status != 404:
        return False
    if answer.error_message() is None:
        return True  # HTML or empty: the server's page for an unknown route
    # A JSON 404 may be the API saying "task not found" or a JSON "no such route";
    # the task itself tells them apart.
    return await board.get_task(task_id, lane=Lane.NORMAL) is not None


class Claimer:
    """Claims tasks for ``board`` and keeps its ``claims_atomic`` flag up to date."""

    def __init__(self, transport: BoardTransport, board: TaskBoard) -> None:
        self._transport = transport
        self._board = board

    async def claim(self, task_id: str, bot_name: str) -> Task | None:
        """Claim a ``todo`` task for ``bot_name``; None when someone else has it."""
        if self._board.claims_atomic is False:
            return await self._claim_by_patch(task_id, bot_name)
        try:
            answer = await self._transport.request(
                "POST",
                CLAIM,
                task_id,
                lane=Lane.NORMAL,
                json={"bot_name": bot_name},
                retry=False,
            )
        except (TransportError, ServerError) as exc:
            logger.warning(
                "Claim of task {} got no clear answer ({}); reading it back", task_id, exc
            )
            return await self._confirm_claim(task_id, bot_name)
        if answer.ok:
            self._board.claims_atomic = True
            try:
                return self._transport.decode(answer, Task, "task")
            except MalformedResponseError:
                # The claim went through, but we cannot see for whom: ask the task.
                return await self._confirm_claim(task_id, bot_name)
        if answer.status == 409:
            self._board.claims_atomic = True
            return None
        if await route_missing(answer, task_id, self._board):
            self._note_no_claim_route()
            return await self._claim_by_patch(task_id, bot_name)
        if answer.status in (404, 410):
            return None  # deleted before we got to it: lost like any other race
        raise self._transport.error(answer)

    async def _claim_by_patch(self, task_id: str, bot_name: str) -> Task | None:
        # Boards without the claim route: take the task with a PATCH if it looks free,
        # then read it back. Two workers can still both write; the read-back (and the pool's
        # later ownership checks) tell the loser.
        task = await self._board.get_task(task_id, lane=Lane.NORMAL)
        if task is None or task.status != TaskStatus.TODO or task.assigned_to:
            return None
        try:
            await self._board.update_task(
                task_id,
                lane=Lane.NORMAL,
                status=TaskStatus.IN_PROGRESS,
                assigned_to=bot_name,
            )
        except NotFoundError:
            return None  # 404/410: deleted meanwhile
        except (TransportError, ServerError) as exc:
            logger.warning(
                "Claim of task {} got no clear answer ({}); reading it back", task_id, exc
            )
        except MalformedResponseError:
            pass  # the write went through; the read-back says for whom
        return await self._confirm_claim(task_id, bot_name)

    async def _confirm_claim(self, task_id: str, bot_name: str) -> Task | None:
        # A claim whose outcome is unknown leaves a task nobody works on; this read matters
        # as much as finishing one.
        task = await self._board.get_task(task_id, lane=Lane.CRITICAL)
        return task if held_by(task, bot_name) else None

    def _note_no_claim_route(self) -> None:
        if self._board.claims_atomic is not False:
            logger.warning(
                "The board at {} has no claim route (POST /tasks/{{id}}/claim): claiming with "
                "PATCH and reading the task back. Claims are NOT atomic on this server; two "
                "workers may take the same task.",
                self._transport.shown_base,
            )
        self._board.claims_atomic = False
