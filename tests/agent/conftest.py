"""Fixtures of the agent tests: a subreaper for the test, and jobs in ``tmp_path``."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import pytest

from taskinfa_worker.agent import become_subreaper
from taskinfa_worker.agent.reaper import PR_SET_CHILD_SUBREAPER
from tests.agent.support import JobFactory


@pytest.fixture
def subreaper() -> Iterator[None]:
    """This process is a child subreaper for the test only, as the worker is for its life.

    Other tests in the same xdist worker expect orphans to go to PID 1 (e.g. checks that no
    git process is left below the test process), so the flag is cleared afterwards.
    """
    assert become_subreaper()
    try:
        yield
    finally:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.fixture
def jobs(tmp_path: Path) -> JobFactory:
    return JobFactory(tmp_path)
