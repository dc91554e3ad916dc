"""Fixtures of the pool tests: a scene (folders, fake agent, ledger) in ``tmp_path``, and
``any_board``, the local board once per profile (full, v1, v2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.board_support import BoardHandle, MakeBoard
from tests.pool.support import Scene


@pytest.fixture
def scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Scene:
    scene = Scene(tmp_path)
    for name, value in scene.agent_env().items():
        monkeypatch.setenv(name, value)
    return scene


@pytest.fixture(params=["full", "v1", "v2"])
async def any_board(request: pytest.FixtureRequest, make_board: MakeBoard) -> BoardHandle:
    """The local board as each release behaves: the documented one, the worker-era release
    and the current one. A test using it runs once per profile; use it for behaviour that
    depends on the shape of the server, the others keep the one ``board``."""
    return await make_board(profile=request.param)
