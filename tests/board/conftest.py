"""Fixtures of the local board's tests: a store on a fake clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from taskinfa_worker.board.store import BoardStore
from tests.board_support import FakeClock


@pytest.fixture
def store(tmp_path: Path) -> Iterator[BoardStore]:
    with BoardStore(tmp_path / "board.db", clock=FakeClock()) as opened:
        yield opened
