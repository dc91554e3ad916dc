"""Board test helpers: a clock tests can move, the handle of a running local board, and the
type of the ``make_board`` factory fixture (``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from taskinfa_worker.board import BoardOptions, BoardStore, RunningBoard, start_board
from taskinfa_worker.board.agent_store import AgentRecords
from taskinfa_worker.board.store import Clock


@dataclass
class FakeClock:
    """A board clock that moves only when told to (epoch seconds)."""

    now: float = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class BoardHandle:
    """A running local board. ``store`` is the live store, for fast test setup."""

    url: str  # ends in /api
    api_key: str
    store: BoardStore
    options: BoardOptions
    db_path: Path
    server: RunningBoard = field(repr=False)

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header of this board's key."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def create_task(
        self, title: str = "A task", task_list_id: str = "default", **fields: Any
    ) -> dict[str, Any]:
        """Add a task straight to the store (no HTTP, no rate budget)."""
        return self.store.create_task(title, task_list_id, **fields)

    @property
    def agent_records(self) -> AgentRecords:
        """The current release's sessions and events, straight from the store."""
        return AgentRecords(self.store)

    async def stop(self) -> None:
        """Stop answering HTTP (connections are refused); the data stays."""
        await self.server.aclose()

    async def start(self) -> None:
        """Serve again after ``stop()``: same port, same database, same key."""
        self.server = await start_board(self.store, self.options, port=self.server.port)
        assert self.server.url == self.url


class MakeBoard(Protocol):
    def __call__(
        self,
        *,
        profile: str = "full",
        rate_limit: int = 0,
        api_key: str | None = None,
        clock: Clock | None = None,
        db_path: Path | None = None,
        **switches: Any,
    ) -> Awaitable[BoardHandle]: ...
