"""The current release's async chat: ``GET /tasks/pending-messages``.

The route lists the tasks whose newest comment is a person's ``human_message`` (API.md,
"Real servers differ"). Earlier releases lack it; there the path falls to
``/tasks/{id}`` and answers 404 ("Task not found" for the id ``pending-messages``), or the
server answers 405 or an HTML page. Any of these turns the feature off for the process
with one line in the log, and later calls return None without a request.
"""

from __future__ import annotations

from typing import Final

from loguru import logger

from taskinfa_worker.client.models import Task, TaskPage
from taskinfa_worker.client.ratelimit import Lane
from taskinfa_worker.client.transport import BoardTransport

PENDING_MESSAGES: Final = "/tasks/pending-messages"


class ChatApi:
    """The chat's one read, over the client's transport."""

    def __init__(self, transport: BoardTransport) -> None:
        self._transport = transport
        self.supported: bool | None = None
        """None until known; False once the board showed it has no such route."""

    async def pending(self, *, lane: Lane = Lane.BACKGROUND) -> list[Task] | None:
        """Tasks waiting for an answer, in the board's order (a task may come twice: the
        release lists one row per newest comment); None when the board has no chat."""
        if self.supported is False:
            return None
        answer = await self._transport.request("GET", PENDING_MESSAGES, lane=lane, retry=True)
        if answer.status in (404, 405):
            self._note_missing()
            return None
        self._transport.expect_ok(answer)
        self.supported = True
        return self._transport.decode(answer, TaskPage).tasks

    def _note_missing(self) -> None:
        if self.supported is not False:
            logger.info(
                "The board at {} has no /tasks/pending-messages (an earlier release): "
                "people's messages on tasks are not answered there.",
                self._transport.shown_base,
            )
        self.supported = False
