"""The dashboard's model choice on the local board's v2 profile, end to end: a project's
choice (then the workspace's) reaches Claude Code's arguments and environment, the worker's
own MODEL wins, the provider's token reaches the agent in one variable and nowhere else,
and a board without the route (v1) runs as before."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from loguru import logger
from prometheus_client import generate_latest

from taskinfa_worker.board.llm_store import LlmRecords
from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.pool.model_choice import MAX_AGE, ModelChoices
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings
from tests.agent.support import FAKE_CLAUDE
from tests.board_support import BoardHandle, MakeBoard
from tests.pool.support import (
    Scene,
    WorkerProcess,
    forward,
    process_env,
    running_pool,
    serving,
    wait_for,
    worker_settings,
)

TEAM_TOKEN = f"or-team-{secrets.token_hex(16)}"
"""Of no well-known shape on purpose: only the learned value can mask it."""
OPERATOR_KEY = f"operator-{secrets.token_hex(16)}"
PROVIDER_URL = "http://127.0.0.1:9/team-proxy"


def choose(board: BoardHandle, *, project: str | None, model: str | None) -> None:
    LlmRecords(board.store).set_choice("task", "litellm", model, task_list_id=project)


def team_provider(board: BoardHandle, **fields: Any) -> None:
    values = {"base_url": PROVIDER_URL, "auth_token": TEAM_TOKEN, **fields}
    LlmRecords(board.store).set_provider("litellm", **values)


def runs(record_dir: Path) -> list[tuple[list[str], dict[str, str]]]:
    """What each run of the fake Claude Code was given: its argv and environment."""
    found = []
    for folder in sorted(record_dir.iterdir()):
        argv = json.loads((folder / "argv.json").read_text())
        env = json.loads((folder / "env.json").read_text())
        found.append((argv, env))
    return found


def model_of(argv: list[str]) -> str | None:
    return argv[argv.index("--model") + 1] if "--model" in argv else None


def claude_settings(board: BoardHandle, scene: Scene, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "agent": "claude",
        "claude_bin": str(FAKE_CLAUDE),
        "claude_config_source": scene.root / "claude-config-source",
        "agent_env_allow": ["FAKE_CLAUDE_RECORD"],
        "anthropic_api_key": OPERATOR_KEY,
        "exit_when_idle": True,
        **overrides,
    }
    return worker_settings(board.url, board.api_key, scene, **values)


@pytest.fixture
def record_dir(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = scene.root / "claude-runs"
    folder.mkdir()
    monkeypatch.setenv("FAKE_CLAUDE_RECORD", str(folder))
    return folder


async def test_a_hostile_agent_on_the_teams_provider_leaks_its_token_nowhere(
    make_board: MakeBoard, scene: Scene, record_dir: Path
) -> None:
    """A worker process as an operator runs it. The project's choice and the workspace's
    reach the two runs; the agent, which prints its whole environment, has the token in
    ANTHROPIC_AUTH_TOKEN only, and no log, comment, transcript or status file shows it."""
    board = await make_board(profile="v2")
    board.store.create_task_list("web")
    team_provider(board)
    choose(board, project="web", model="team-model-web")
    choose(board, project=None, model="team-model-all")
    web = board.create_task("Ship the page FAKE_MODE=echo_env", "web", status="todo")
    other = board.create_task("Tidy up FAKE_MODE=echo_env", status="todo")
    env = process_env(
        board.url,
        board.api_key,
        scene,
        AGENT="claude",
        CLAUDE_BIN=str(FAKE_CLAUDE),
        CLAUDE_CONFIG_SOURCE=str(scene.root / "claude-config-source"),
        AGENT_ENV_ALLOW="FAKE_CLAUDE_RECORD",
        FAKE_CLAUDE_RECORD=str(record_dir),
        ANTHROPIC_API_KEY=OPERATOR_KEY,
        EXIT_WHEN_IDLE="true",
        BOT_NAME="modeler",
        LOG_LEVEL="DEBUG",
    )
    worker = WorkerProcess(env, [], scene.root / "worker.out")
    try:
        assert await worker.wait(120) == 0, worker.output()
    finally:
        worker.kill()

    by_task = {}
    for argv, agent_env in runs(record_dir):
        prompt = " ".join(argv)
        task_id = web["id"] if web["id"] in prompt else other["id"]
        by_task[task_id] = (argv, agent_env)
    assert model_of(by_task[web["id"]][0]) == "team-model-web"
    assert model_of(by_task[other["id"]][0]) == "team-model-all"
    for _argv, agent_env in by_task.values():
        assert agent_env["ANTHROPIC_BASE_URL"] == PROVIDER_URL
        assert agent_env["ANTHROPIC_AUTH_TOKEN"] == TEAM_TOKEN
        # One credential: the operator's key stays behind when the team's provider applies.
        assert "ANTHROPIC_API_KEY" not in agent_env
        holders = [name for name, value in agent_env.items() if TEAM_TOKEN in value]
        assert holders == ["ANTHROPIC_AUTH_TOKEN"]

    for task in (web, other):
        assert board.store.get_task(task["id"])["status"] == "review"
        comments, _ = board.store.list_comments(task["id"], limit=200)
        assert comments, "the run left no comment to check"
        for comment in comments:
            assert TEAM_TOKEN not in comment["content"]
            assert OPERATOR_KEY not in comment["content"]
        assert TEAM_TOKEN not in json.dumps(board.store.get_task(task["id"]))
    logs = scene.root / "logs"
    transcripts = list(logs.rglob("attempt-*.jsonl"))
    assert len(transcripts) == 2
    # The agent printed it: the transcripts have the mask where the token was.
    assert all("[REDACTED]" in path.read_text() for path in transcripts)
    written = [path for path in logs.rglob("*") if path.is_file()]
    assert (logs / "modeler" / "status.log").exists()
    written.append(worker.log)
    for path in written:
        assert TEAM_TOKEN not in path.read_text(errors="replace"), path
    assert "team-model-web via litellm (project web's choice" in worker.output()
    for event in board.agent_records.list_events(limit=100):
        assert TEAM_TOKEN not in json.dumps(event)


async def test_the_workers_own_model_wins_over_the_dashboards(
    make_board: MakeBoard, scene: Scene, record_dir: Path
) -> None:
    board = await make_board(profile="v2")
    team_provider(board)
    choose(board, project="default", model="team-model")
    board.create_task("Work FAKE_MODE=success", status="todo")
    settings = claude_settings(board, scene, model="operator-model")
    async with running_pool(settings) as (pool, _client):
        await wait_for(lambda: pool.state.completed == 1, what="the run")
    ((argv, agent_env),) = runs(record_dir)
    assert model_of(argv) == "operator-model"
    assert agent_env["ANTHROPIC_MODEL"] == "operator-model"
    # The provider is still the team's: MODEL names the model, not the endpoint.
    assert agent_env["ANTHROPIC_AUTH_TOKEN"] == TEAM_TOKEN


async def test_the_workers_own_endpoint_keeps_the_dashboards_choice_out(
    make_board: MakeBoard, scene: Scene, record_dir: Path
) -> None:
    board = await make_board(profile="v2")
    team_provider(board)
    choose(board, project=None, model="team-model")
    board.create_task("Work FAKE_MODE=success", status="todo")
    settings = claude_settings(board, scene, anthropic_base_url="http://127.0.0.1:9/own")
    async with running_pool(settings) as (pool, _client):
        await wait_for(lambda: pool.state.completed == 1, what="the run")
    ((argv, agent_env),) = runs(record_dir)
    assert model_of(argv) is None
    assert agent_env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9/own"
    assert agent_env["ANTHROPIC_API_KEY"] == OPERATOR_KEY
    assert "ANTHROPIC_AUTH_TOKEN" not in agent_env


async def test_an_anthropic_choice_sets_the_model_and_keeps_the_operators_key(
    make_board: MakeBoard, scene: Scene, record_dir: Path
) -> None:
    board = await make_board(profile="v2")
    LlmRecords(board.store).set_choice("task", "anthropic", "claude-team-pick")
    board.create_task("Work FAKE_MODE=success", status="todo")
    async with running_pool(claude_settings(board, scene)) as (pool, _client):
        await wait_for(lambda: pool.state.completed == 1, what="the run")
    ((argv, agent_env),) = runs(record_dir)
    assert model_of(argv) == "claude-team-pick"
    assert agent_env["ANTHROPIC_API_KEY"] == OPERATOR_KEY
    assert not {"ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"} & agent_env.keys()


async def test_a_choice_naming_a_missing_provider_runs_on_the_workers_own_settings(
    make_board: MakeBoard, scene: Scene, record_dir: Path
) -> None:
    board = await make_board(profile="v2")
    choose(board, project=None, model="team-model")  # litellm, never configured
    for title in ("one", "two"):
        board.create_task(f"{title} FAKE_MODE=success", status="todo")
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(m.record["message"]), level="WARNING")
    try:
        async with running_pool(claude_settings(board, scene)) as (pool, _client):
            await wait_for(lambda: pool.state.completed == 2, what="both runs")
    finally:
        logger.remove(sink)
    for argv, agent_env in runs(record_dir):
        assert model_of(argv) is None
        assert agent_env["ANTHROPIC_API_KEY"] == OPERATOR_KEY
        assert "ANTHROPIC_AUTH_TOKEN" not in agent_env
    said = [w for w in warnings if "names provider 'litellm', which is not configured" in w]
    assert len(said) == 1, warnings  # once, not once per run


async def test_a_board_without_llm_config_runs_as_before(
    make_board: MakeBoard, scene: Scene, record_dir: Path
) -> None:
    board = await make_board(profile="v1")
    board.create_task("Work FAKE_MODE=success", status="todo")
    settings = claude_settings(board, scene)
    async with running_pool(settings) as (pool, client):
        await wait_for(lambda: pool.state.completed == 1, what="the run")
        assert client.llm.supported is False
    ((argv, agent_env),) = runs(record_dir)
    assert model_of(argv) is None
    assert agent_env["ANTHROPIC_API_KEY"] == OPERATOR_KEY
    assert not {"ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL", "ANTHROPIC_MODEL"} & agent_env.keys()


async def test_many_runs_read_the_choice_once(
    make_board: MakeBoard, scene: Scene, record_dir: Path
) -> None:
    """Four runs starting together share one read of /llm-config (it is cached a minute)."""
    board = await make_board(profile="v2")
    team_provider(board)
    choose(board, project=None, model="team-model")
    for i in range(4):
        board.create_task(f"t{i} FAKE_MODE=success", status="todo")
    settings = claude_settings(board, scene, concurrency=4)
    async with running_pool(settings) as (pool, client):
        await wait_for(lambda: pool.state.completed == 4, what="four runs")
        assert client.metrics is not None
        sent = client.metrics.registry.get_sample_value(
            "taskinfa_api_requests_total", {"endpoint": "/llm-config", "status": "200"}
        )
        exposed = generate_latest(client.metrics.registry).decode()
    assert "/llm-config" in exposed
    assert TEAM_TOKEN not in exposed
    assert sent == 1
    assert {model_of(argv) for argv, _env in runs(record_dir)} == {"team-model"}


async def test_a_failed_or_malformed_read_keeps_the_last_good_choice(make_board: MakeBoard) -> None:
    """Between the pool and the board, a proxy that breaks /llm-config on demand: the runs
    that start meanwhile keep the choice read before (a WARNING says so), and a run never
    fails for it. A malformed answer with no good one before runs on the worker's own."""
    board = await make_board(profile="v2")
    team_provider(board)
    choose(board, project=None, model="team-model")
    breakage: list[tuple[int, bytes]] = []
    upstream = board.url.removesuffix("/api")

    async def proxy(request: web.Request) -> web.Response:
        body = await request.read()
        if breakage and request.path.endswith("/llm-config"):
            status, broken = breakage[0]
            return web.Response(status=status, body=broken, content_type="application/json")
        status, answer, content_type = await forward(upstream, request, body)
        return web.Response(status=status, body=answer, content_type=content_type.split(";")[0])

    now = [0.0]
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(m.record["message"]), level="WARNING")
    try:
        async with serving(proxy) as url:
            settings = Settings(
                _env_file=None, taskinfa_api_url=url, taskinfa_api_key=board.api_key
            )
            async with BoardClient.from_settings(settings) as client:
                redactor = Redactor([])
                choices = ModelChoices(settings, client.llm, redactor, clock=lambda: now[0])
                assert (await choices.route_for("default")).model == "team-model"
                assert redactor(f"say {TEAM_TOKEN}") == "say [REDACTED]"
                breakage.append((503, b'{"error": "down"}'))
                now[0] += MAX_AGE
                kept = await choices.route_for("default")
                assert (kept.model, kept.provider) == ("team-model", "litellm")
            async with BoardClient.from_settings(settings) as fresh_client:
                breakage[0] = (200, f'{{"providers": "{TEAM_TOKEN}"}}'.encode())
                first = ModelChoices(settings, fresh_client.llm, Redactor([]))
                own = await first.route_for("default")
                assert (own.model, own.provider, own.auth_token) == (None, None, None)
    finally:
        logger.remove(sink)
    assert any("using the last one read" in w for w in warnings), warnings
    assert any("LlmConfig providers" in w and w.endswith("using none") for w in warnings)
    assert not any(TEAM_TOKEN in w for w in warnings)
