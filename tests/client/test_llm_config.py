"""The llm-config routes through BoardClient: the local board's v2 profile over real HTTP for
the answers it gives, mocked answers for the broken ones a real server will not give on
demand; and ``resolve``, the precedence of the worker's settings over the dashboard's."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aioresponses import aioresponses
from pydantic import SecretStr

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.llm_config import LlmChoice, LlmConfig, LlmProvider
from taskinfa_worker.errors import MalformedResponseError
from taskinfa_worker.pool.model_choice import own_endpoint, resolve
from taskinfa_worker.settings import Settings
from tests.board_support import MakeBoard
from tests.client.test_api_mocked import BASE, client, mocked

__all__ = ["client", "mocked"]  # fixtures, used by name

TOKEN = "team-token-0f9e8d7c6b5a"


async def test_settings_set_through_the_client_read_back(make_board: MakeBoard) -> None:
    board = await make_board(profile="v2")
    async with BoardClient(board.url, SecretStr(board.api_key)) as board_client:
        api = board_client.llm
        await api.set_provider("ollama", base_url="http://127.0.0.1:11434", auth_token=None)
        await api.set_choice("ollama", "qwen3-coder", project_id="default")
        await api.set_choice("anthropic", None)
        config = await api.read()
        assert config is not None
        assert api.supported is True
        assert config.choice_for("default", "task") == LlmChoice(
            session_type="task", provider="ollama", model="qwen3-coder", task_list_id="default"
        )
        fallback = config.choice_for("elsewhere", "task")
        assert fallback is not None
        assert fallback.provider == "anthropic"
        assert config.choice_for("default", "message") is None
        await api.clear_choice(project_id="default")
        cleared = await api.read()
        assert cleared is not None
        global_choice = cleared.choice_for("default", "task")
        assert global_choice is not None
        assert global_choice.task_list_id is None


async def test_a_board_without_the_route_is_asked_once(make_board: MakeBoard) -> None:
    board = await make_board(profile="v1")
    async with BoardClient(board.url, SecretStr(board.api_key)) as board_client:
        assert await board_client.llm.read() is None
        assert board_client.llm.supported is False
        assert await board_client.llm.read() is None


@pytest.mark.parametrize(
    "body",
    [
        # Cut short: not JSON, and the token is in what arrived.
        f'{{"providers": [{{"provider": "litellm", "auth_token": "{TOKEN}"',
        json.dumps({"providers": TOKEN, "session_configs": []}),
        json.dumps({"providers": [{"provider": 7, "auth_token": TOKEN}], "session_configs": []}),
        json.dumps([{"auth_token": TOKEN}]),
    ],
)
async def test_a_malformed_answer_is_an_error_that_quotes_none_of_it(
    client: BoardClient, mocked: aioresponses, body: str
) -> None:
    mocked.get(f"{BASE}/llm-config", status=200, body=body)
    with pytest.raises(MalformedResponseError) as raised:
        await client.llm.read()
    assert TOKEN not in str(raised.value)
    assert "llm-config" in str(raised.value)


def settings_with(**values: Any) -> Settings:
    base = {"taskinfa_api_url": "http://127.0.0.1:9/api", "taskinfa_api_key": "tk_x_12345678"}
    return Settings(_env_file=None, workspace_dir=Path("/nonexistent"), **base, **values)


def config_with(*choices: LlmChoice, providers: tuple[LlmProvider, ...] = ()) -> LlmConfig:
    return LlmConfig(providers=list(providers), session_configs=list(choices))


PROXY = LlmProvider(provider="litellm", base_url="http://proxy:4000", auth_token=SecretStr(TOKEN))
PROJECT = LlmChoice(session_type="task", provider="litellm", model="m-web", task_list_id="web")
GLOBAL = LlmChoice(session_type="task", provider="anthropic", model="m-all")


def test_the_projects_choice_then_the_workspaces_then_none() -> None:
    settings = settings_with()
    config = config_with(PROJECT, GLOBAL, providers=(PROXY,))
    route, problem = resolve(settings, config, "web", "task")
    assert (route.model, route.base_url, route.provider, route.origin) == (
        "m-web",
        "http://proxy:4000",
        "litellm",
        "project web",
    )
    assert route.auth_token is not None
    assert route.auth_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(route)
    assert problem is None
    other, _ = resolve(settings, config, "api", "task")
    assert (other.model, other.auth_token, other.origin) == ("m-all", None, "the workspace")
    nothing, _ = resolve(settings, config_with(PROJECT, providers=(PROXY,)), "api", "task")
    assert nothing.model is None
    assert nothing.origin == ""
    assert resolve(settings, None, "web", "task")[0].origin == ""


def test_the_operators_own_model_is_kept() -> None:
    config = config_with(PROJECT, providers=(PROXY,))
    route, _ = resolve(settings_with(model="own"), config, "web", "task")
    assert (route.model, route.provider) == ("own", "litellm")
    # ANTHROPIC_MODEL passed through by name is the operator's model as well.
    passed, _ = resolve(settings_with(agent_env_allow=["ANTHROPIC_MODEL"]), config, "web", "task")
    assert passed.model is None
    assert passed.provider == "litellm"


def test_a_keyless_local_provider_gets_its_name_as_the_credential() -> None:
    local = LlmProvider(provider="ollama", base_url="http://127.0.0.1:11434")
    choice = LlmChoice(session_type="task", provider="ollama", model="qwen3-coder")
    route, _ = resolve(settings_with(), config_with(choice, providers=(local,)), None, "task")
    assert route.auth_token is not None
    assert route.auth_token.get_secret_value() == "ollama"


@pytest.mark.parametrize(
    ("providers", "lacks"),
    [((), "is not configured"), ((LlmProvider(provider="litellm"),), "has no base URL")],
)
def test_a_choice_that_cannot_be_followed_says_why(
    providers: tuple[LlmProvider, ...], lacks: str
) -> None:
    route, problem = resolve(
        settings_with(model="own"), config_with(PROJECT, providers=providers), "web", "task"
    )
    assert (route.model, route.auth_token, route.origin) == ("own", None, "")
    assert problem is not None
    assert lacks in problem
    assert "project web" in problem


def test_the_operators_own_endpoint_is_any_of_its_settings_or_passed_variables() -> None:
    assert not own_endpoint(settings_with())
    assert own_endpoint(settings_with(anthropic_base_url="http://127.0.0.1:9"))
    for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
        assert own_endpoint(settings_with(agent_env_allow=[name]))
