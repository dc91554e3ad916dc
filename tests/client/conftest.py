"""Fixtures of the client tests: virtual time, a metrics registry, the log lines."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from loguru import logger

from taskinfa_worker.metrics import Metrics
from tests.client.virtual_time import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """Every loguru line (DEBUG and up) written during the test."""
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG", format="{message}")
    yield lines
    logger.remove(sink)
