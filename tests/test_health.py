"""The health port over real HTTP on 127.0.0.1 (port 0)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from taskinfa_worker.errors import PreflightError
from taskinfa_worker.health import HealthServer, serve_health, shows_titles
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.pool.state import PoolState, SlotState
from taskinfa_worker.settings import Settings
from taskinfa_worker.status_file import render, snapshot


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "taskinfa_api_url": "http://127.0.0.1:9/api",
        "taskinfa_api_key": "tk_test_key_123456",
        "bot_name": "bot",
        "log_dir": tmp_path,
        "health_host": "127.0.0.1",
        "health_port": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def make_state() -> PoolState:
    state = PoolState("bot", [SlotState("bot-1"), SlotState("bot-2")])
    state.slots[0].set("working", "task_1", "Fix the login bug")
    return state


async def test_off_when_no_port_is_set(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, health_port=None)
    async with serve_health(settings, make_state(), Metrics()) as server:
        assert server is None


async def test_port_zero_binds_a_free_port_and_stop_closes_it(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with serve_health(make_settings(tmp_path), make_state(), Metrics()) as server:
        assert server is not None
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
        async with http.get(server.url + "/healthz") as response:
            assert response.status == 200
            assert await response.text() == "ok\n"
        url = server.url
    with pytest.raises(aiohttp.ClientConnectionError):
        async with http.get(url + "/healthz"):
            pass


async def test_a_busy_port_fails_at_start(tmp_path: Path) -> None:
    state, metrics = make_state(), Metrics()
    async with serve_health(make_settings(tmp_path), state, metrics) as first:
        assert first is not None
        taken = make_settings(tmp_path, health_port=first.port)
        with pytest.raises(PreflightError, match=r"HEALTH_PORT .* cannot be used .*in use"):
            async with serve_health(taken, state, metrics):
                pass


async def test_readyz_follows_board_and_drain(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    state = make_state()
    async with serve_health(make_settings(tmp_path), state, Metrics()) as server:
        assert server is not None

        async def readyz() -> tuple[int, str]:
            async with http.get(server.url + "/readyz") as response:
                return response.status, await response.text()

        status, text = await readyz()
        assert status == 503
        assert "board not ready" in text
        state.board_ready = True
        assert await readyz() == (200, "ready\n")
        state.draining = True
        status, text = await readyz()
        assert status == 503
        assert "draining" in text
        # Liveness is unaffected by the drain.
        async with http.get(server.url + "/healthz") as response:
            assert response.status == 200


async def test_metrics_in_prometheus_text_format(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    metrics = Metrics()
    metrics.tasks_completed.inc(3)
    async with serve_health(make_settings(tmp_path), make_state(), metrics) as server:
        assert server is not None
        async with http.get(server.url + "/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            body = await response.text()
    assert "taskinfa_tasks_completed_total 3.0" in body
    # Slot gauges are taken from the state at scrape time.
    assert "taskinfa_slots 2.0" in body
    assert "taskinfa_slots_busy 1.0" in body


async def test_status_is_the_pool_state_as_json(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    state = make_state()
    state.completed = 5
    async with serve_health(make_settings(tmp_path), state, Metrics()) as server:
        assert server is not None
        async with http.get(server.url + "/status") as response:
            assert response.status == 200
            data = await response.json()
    assert data["bot_name"] == "bot"
    assert data["completed"] == 5
    assert data["busy"] == 1
    assert [slot["name"] for slot in data["slots"]] == ["bot-1", "bot-2"]
    assert data["slots"][0]["task_id"] == "task_1"
    assert data["slots"][0]["task_title"] == "Fix the login bug"
    assert data["slots"][1]["status"] == "idle"
    # The status command renders this exactly like the status file.
    assert render(data) == render(snapshot(state, now=data["updated_at"]))


async def test_start_stop_pair_without_the_context_manager(
    http: aiohttp.ClientSession,
) -> None:
    server = HealthServer(make_state(), Metrics(), host="127.0.0.1", port=0)
    await server.start()
    try:
        async with http.get(server.url + "/healthz") as response:
            assert response.status == 200
    finally:
        await server.stop()
    await server.stop()  # idempotent


@pytest.mark.parametrize(("policy", "shown"), [("local", True), ("all", True), ("none", False)])
async def test_status_titles_follow_the_setting_for_a_loopback_client(
    tmp_path: Path, http: aiohttp.ClientSession, policy: str, shown: bool
) -> None:
    settings = make_settings(tmp_path, status_titles=policy)
    async with serve_health(settings, make_state(), Metrics()) as server:
        assert server is not None
        async with http.get(server.url + "/status") as response:
            data = await response.json()
    title = data["slots"][0]["task_title"]
    assert title == ("Fix the login bug" if shown else None)
    assert data["slots"][0]["task_id"] == "task_1"  # ids stay: they are what operators grep


def test_titles_are_not_shown_beyond_the_pod_by_default() -> None:
    assert Settings.model_fields["status_titles"].default == "local"
    # The kubelet, Prometheus or another pod: a peer on the pod network.
    for remote in ["10.0.3.7", "192.0.2.10", "2001:db8::5", "::ffff:10.0.3.7", None, "unix"]:
        assert not shows_titles("local", remote), remote
    for remote in ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"]:
        assert shows_titles("local", remote), remote
    assert shows_titles("all", "10.0.3.7")
    assert not shows_titles("none", "127.0.0.1")


def test_a_bad_status_titles_value_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="status_titles"):
        make_settings(tmp_path, status_titles="everyone")
