"""Settings: sources and their order, the seed's names, validation, secrets kept secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskinfa_worker.cli import build_parser
from taskinfa_worker.errors import ConfigError
from taskinfa_worker.settings import Settings, load_settings

REQUIRED = {"TASKINFA_API_URL": "http://127.0.0.1:3000/api", "TASKINFA_API_KEY": "tk_env_key_1"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No stray setting from the machine running the tests; no stray .env either."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


def set_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in {**REQUIRED, **values}.items():
        monkeypatch.setenv(name, value)


def test_seed_variable_names_work_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(
        monkeypatch,
        ANTHROPIC_API_KEY="sk-ant-seed-0001",
        BOT_NAME="Bot-John",
        WORKSPACE_ID="team-a",
    )
    settings = load_settings({}, env_file=None)
    assert settings.taskinfa_api_url == "http://127.0.0.1:3000/api"
    assert settings.taskinfa_api_key.get_secret_value() == "tk_env_key_1"
    assert settings.anthropic_api_key is not None
    assert settings.anthropic_api_key.get_secret_value() == "sk-ant-seed-0001"
    assert settings.bot_name == "Bot-John"
    assert settings.workspace_id == "team-a"
    assert settings.slot_names() == ["Bot-John-1"]


def test_sources_later_wins_defaults_dotenv_env_flags(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "TASKINFA_API_URL=http://dotenv:1/api\nTASKINFA_API_KEY=tk_dotenv\n"
        "CONCURRENCY=2\nPOLL_INTERVAL=7\nMAX_ATTEMPTS=5\n"
    )
    monkeypatch.setenv("CONCURRENCY", "3")
    monkeypatch.setenv("POLL_INTERVAL", "8")
    args = build_parser().parse_args(["run", "--concurrency", "4", "--env-file", str(env_file)])
    overrides = {n: getattr(args, n) for n in Settings.model_fields if hasattr(args, n)}
    settings = load_settings(overrides, env_file=env_file)
    assert settings.concurrency == 4  # flag beats env
    assert settings.poll_interval == 8  # env beats .env
    assert settings.max_attempts == 5  # .env beats the default
    assert settings.lease_timeout == 300  # default
    assert settings.taskinfa_api_key.get_secret_value() == "tk_dotenv"


def test_empty_environment_values_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, CONCURRENCY="", ANTHROPIC_API_KEY="")
    settings = load_settings({}, env_file=None)
    assert settings.concurrency == 1
    assert settings.anthropic_api_key is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"TASKINFA_API_KEY": ""}, "Missing setting TASKINFA_API_KEY"),
        ({"TASKINFA_API_URL": "ftp://board"}, "Invalid setting TASKINFA_API_URL: expected an"),
        ({"CONCURRENCY": "0"}, "Invalid setting CONCURRENCY: Input should be greater than"),
        ({"CONCURRENCY": "lots"}, "Invalid setting CONCURRENCY: Input should be a valid integer"),
        ({"POLL_INTERVAL": "-1"}, "Invalid setting POLL_INTERVAL: must be greater than 0"),
        ({"BOT_NAME": "bad name!"}, "Invalid setting BOT_NAME: expected 1 to"),
        ({"AGENT": "robot"}, "Invalid setting AGENT: Input should be 'claude' or 'command'"),
        ({"AGENT": "command"}, "AGENT_COMMAND must be set when AGENT=command"),
        ({"MAX_POLL_INTERVAL": "1"}, "MAX_POLL_INTERVAL must be at least POLL_INTERVAL"),
        ({"LOG_FORMAT": "xml"}, "Invalid setting LOG_FORMAT"),
    ],
)
def test_bad_settings_give_one_sentence(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    set_env(monkeypatch)
    for name, value in env.items():
        if value:
            monkeypatch.setenv(name, value)
        else:
            monkeypatch.delenv(name)
    with pytest.raises(ConfigError) as caught:
        load_settings({}, env_file=None)
    message = str(caught.value)
    assert expected in message, message
    assert "\n" not in message


def test_a_rejected_value_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key pasted into the wrong variable must not end up in the error message."""
    set_env(monkeypatch, CONCURRENCY="sk-ant-pasted-secret-0001")
    with pytest.raises(ConfigError) as caught:
        load_settings({}, env_file=None)
    assert "sk-ant-pasted" not in str(caught.value)


def test_secrets_stay_out_of_repr_and_help(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, ANTHROPIC_API_KEY="sk-ant-very-secret-0001", GITHUB_TOKEN="ghp_x" * 8)
    settings = load_settings({}, env_file=None)
    shown = repr(settings) + str(settings) + settings.model_dump_json()
    for secret in ("tk_env_key_1", "sk-ant-very-secret-0001", "ghp_x"):
        assert secret not in shown
    help_text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()  # type: ignore[union-attr]
    for secret in ("tk_env_key_1", "sk-ant-very-secret", "ghp_x"):
        assert secret not in help_text


def test_every_flag_names_its_env_var_in_help() -> None:
    run = build_parser()._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    for action in run._actions:
        flags = [o for o in action.option_strings if o.startswith("--")]
        if not flags or action.dest in ("help", "env_file"):
            continue
        assert f"env {action.dest.upper()}" in (action.help or ""), action.dest
    secret_flags = {"--taskinfa-api-key", "--anthropic-api-key", "--github-token"}
    assert not secret_flags & {o for a in run._actions for o in a.option_strings}


def test_task_list_id_names_one_or_several_projects() -> None:
    def projects(value: str | None) -> tuple[str, ...]:
        base = {"taskinfa_api_url": "http://127.0.0.1/api", "taskinfa_api_key": "tk_x"}
        return Settings(_env_file=None, **base, task_list_id=value).task_list_ids

    assert projects(None) == ()
    assert projects("alpha") == ("alpha",)
    assert projects(" alpha , beta,alpha,") == ("alpha", "beta")
    assert projects(" , ") == ()
