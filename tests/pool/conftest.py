"""Fixtures of the pool tests: a scene (folders, fake agent, ledger) in ``tmp_path``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pool.support import Scene


@pytest.fixture
def scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Scene:
    scene = Scene(tmp_path)
    for name, value in scene.agent_env().items():
        monkeypatch.setenv(name, value)
    return scene
