"""Shared fixtures: the local board, served over real HTTP on 127.0.0.1, and an HTTP session.

``make_board(profile=..., **switches)`` starts a board (its own SQLite file in
``tmp_path``, a random port, a known ``tk_test_`` key) that behaves as that release
(``full``, ``v1``, ``v2``; switches override the profile) and closes every board it made
at teardown; ``board`` is one with the defaults, and ``board_client`` a ``BoardClient`` on
it. The rate limit is off unless a test asks for it, whatever the profile, so tests never
meet a 429 by accident. Pass a ``FakeClock`` as
``clock`` to move the board's time (timestamps, worker liveness, rate-limit window)
without sleeping. Every test runs with ``SANDBOX=off`` unless it sets it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from taskinfa_worker.board import BoardStore, options_for, start_board
from taskinfa_worker.board.store import Clock
from taskinfa_worker.client.api import BoardClient
from tests.board_support import BoardHandle, MakeBoard


@pytest.fixture(autouse=True)
def _no_sandbox_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Agents run unsandboxed in tests, whether or not bwrap works on the machine: the
    sandbox has tests of its own (tests/agent/test_sandbox*.py) that set SANDBOX, and the
    rest must behave the same everywhere (their fakes write outside their trees)."""
    monkeypatch.setenv("SANDBOX", "off")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest.fixture
async def make_board(tmp_path: Path) -> AsyncIterator[MakeBoard]:
    """Factory of local boards; every board it made is stopped and closed afterwards."""
    made: list[BoardHandle] = []

    async def make(
        *,
        profile: str = "full",
        rate_limit: int = 0,
        api_key: str | None = None,
        clock: Clock | None = None,
        db_path: Path | None = None,
        **switches: Any,
    ) -> BoardHandle:
        key = api_key or f"tk_test_{secrets.token_hex(12)}"
        path = db_path or tmp_path / f"board-{len(made)}.db"
        store = BoardStore(path, clock=clock or time.time)
        options = options_for(profile, rate_limit=rate_limit, **switches)
        try:
            store.add_api_key(key)
            server = await start_board(store, options)
        except BaseException:
            store.close()
            raise
        handle = BoardHandle(server.url, key, store, options, path, server)
        made.append(handle)
        return handle

    yield make
    for handle in reversed(made):
        await handle.server.aclose()
        handle.store.close()


@pytest.fixture
async def board(make_board: MakeBoard) -> BoardHandle:
    """A local board with default options and the rate limit off."""
    return await make_board()


@pytest.fixture
async def board_client(board: BoardHandle) -> AsyncIterator[BoardClient]:
    """A BoardClient on ``board``, closed after the test."""
    # The board's own limit is off in tests; a generous client budget keeps tests that
    # send more than 100 requests from waiting on the client's token bucket.
    async with BoardClient(board.url, SecretStr(board.api_key), rate_limit=10_000) as client:
        yield client
