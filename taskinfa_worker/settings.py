"""Every setting of the worker, in one pydantic-settings object built once by the CLI.

Sources, later wins: field defaults, the ``.env`` file, the environment, command-line flags
(the CLI passes flags in as init arguments). The environment variable of a setting is its
field name in upper case, so the seed's names (``TASKINFA_API_KEY``, ``BOT_NAME``, ...) keep
working unchanged. The CLI derives one ``--flag`` per field from the metadata here, so this
file is the single list of settings; ``docs/configuration.md`` is checked against it by a
test.

Secrets are ``SecretStr``: ``repr()`` and logs show ``**********``, and secrets get no
command-line flag (a flag would show the key in ``ps`` output).
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Longest slot suffix is "-256"; the board accepts worker names of at most 100 characters.
MAX_CONCURRENCY = 256
MAX_BOT_NAME = 100 - len(f"-{MAX_CONCURRENCY}")


def _default_bot_name() -> str:
    # The host name is unique per pod on Kubernetes and per container in compose.
    return socket.gethostname() or "taskinfa-worker"


def _split_list(value: Any) -> Any:
    """Accept ``a,b`` (env, flags) as well as a real list (init arguments, tests)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], NoDecode]


PushMode = Literal["auto", "on", "off"]
_PUSH_ALIASES = {"true": "on", "1": "on", "yes": "on", "false": "off", "0": "off", "no": "off"}


def _push_mode(value: Any) -> Any:
    """``PUSH=true`` and ``PUSH=false`` (the seed's values) still mean on and off."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        return _PUSH_ALIASES.get(value.strip().lower(), value.strip().lower())
    return value


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


PositiveSeconds = Annotated[float, AfterValidator(_positive)]


def setting(
    default: Any = ...,
    *,
    group: str,
    help: str,
    flag: bool = True,
    **kwargs: Any,
) -> Any:
    """A settings field with the metadata the CLI and the docs are generated from."""
    extra: JsonDict = {"group": group, "flag": flag}
    return Field(default, description=help, json_schema_extra=extra, **kwargs)


class Settings(BaseSettings):
    """The worker's configuration. Build it once (``load_settings``) and pass it down."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        # Never echo a rejected value back: it may be a key pasted into the wrong variable.
        hide_input_in_errors=True,
        # `FOO=` from compose or Kubernetes means "not set", not an empty value.
        env_ignore_empty=True,
        validate_default=True,
    )

    # --- Board -------------------------------------------------------------------------
    taskinfa_api_url: str = setting(
        group="Board",
        help="Base URL of the board API, e.g. http://localhost:3000/api.",
    )
    taskinfa_api_key: SecretStr = setting(
        group="Board", help="Board API key (tk_...). Environment or .env only.", flag=False
    )
    workspace_id: str = setting(
        "default", group="Board", help="Board workspace the key belongs to (shown in logs)."
    )
    task_list_id: str | None = setting(
        None,
        group="Board",
        help="Only take tasks from this task list (project), or these: a,b (default: all).",
    )
    rate_limit: int = setting(
        100,
        group="Board",
        help="Requests per minute this process may send (the board allows 100 per key).",
        ge=1,
        le=100_000,
    )
    request_timeout: PositiveSeconds = setting(
        30.0, group="Board", help="Seconds one board request may take."
    )

    # --- Pool --------------------------------------------------------------------------
    bot_name: str = setting(
        default_factory=_default_bot_name,
        group="Pool",
        help="Worker name; slots are named {BOT_NAME}-1..N. Default: the host name.",
    )
    concurrency: int = setting(
        1, group="Pool", help="Number of slots (tasks run at once).", ge=1, le=MAX_CONCURRENCY
    )
    poll_interval: PositiveSeconds = setting(
        2.0,
        group="Pool",
        help="Shortest time between polls while idle (seconds), and how long one read of the "
        "todo list feeds claims. Idle polls spend 18 percent of the key's budget, shared by "
        "every process on the key.",
    )
    max_poll_interval: PositiveSeconds = setting(
        60.0,
        group="Pool",
        help="Longest time between polls while idle (a small or crowded key, a board that "
        "cannot be asked).",
    )
    max_attempts: int = setting(
        3, group="Pool", help="Failures after which a task gets the failed status.", ge=1
    )
    retry_backoff: float = setting(
        60.0,
        group="Pool",
        help="Seconds a failed task waits before its next attempt, doubling per failure "
        "(0 = no wait).",
        ge=0,
    )
    retry_backoff_max: PositiveSeconds = setting(
        3600.0, group="Pool", help="The wait between attempts grows up to this many seconds."
    )
    cancel_check_interval: PositiveSeconds = setting(
        30.0, group="Pool", help="Seconds between checks that running tasks are still ours."
    )
    lease_timeout: PositiveSeconds = setting(
        300.0,
        group="Pool",
        help="A task whose worker sent no heartbeat (or whose session showed no sign of "
        "life) for this long is released.",
    )
    sessions: bool = setting(
        True,
        group="Pool",
        help="Show each run as a session with events where the board has /sessions and "
        "/events (the current release's dashboard).",
    )
    chat: bool = setting(
        True,
        group="Pool",
        help="Answer people's human_message comments on tasks a taskinfa-worker ran, in a "
        "free slot on the task's branch, where the board has /tasks/pending-messages (the "
        "current release's async chat). false: such messages are left alone.",
    )
    drain_timeout: float = setting(
        3600.0,
        group="Pool",
        help="After SIGTERM, seconds running tasks may go on before they are stopped.",
        ge=0,
    )
    exit_when_idle: bool = setting(
        False, group="Pool", help="Finish running tasks and exit 0 once the queue is empty."
    )
    max_tasks: int | None = setting(
        None, group="Pool", help="Exit after this many tasks have ended.", ge=1
    )

    # --- Agent -------------------------------------------------------------------------
    agent: Literal["claude", "command"] = setting(
        "claude", group="Agent", help="claude (Claude Code) or command (any other agent CLI)."
    )
    agent_command: str | None = setting(
        None,
        group="Agent",
        help="Command template for agent=command; {prompt}, {workspace}, {task_id} are "
        "replaced per argument (no shell).",
    )
    claude_bin: str = setting("claude", group="Agent", help="Claude Code executable.")
    model: str | None = setting(
        None,
        group="Agent",
        help="Model for Claude Code (--model); wins over the dashboard's model choice.",
    )
    max_turns: int = setting(50, group="Agent", help="Claude Code --max-turns.", ge=1)
    max_budget_usd: float | None = setting(
        None, group="Agent", help="Claude Code --max-budget-usd per task.", gt=0
    )
    permission_mode: str = setting(
        "bypassPermissions", group="Agent", help="Claude Code --permission-mode."
    )
    allowed_tools: CommaList = setting(
        default_factory=list, group="Agent", help="Comma-separated --allowedTools."
    )
    disallowed_tools: CommaList = setting(
        default_factory=list, group="Agent", help="Comma-separated --disallowedTools."
    )
    append_system_prompt: str | None = setting(
        None, group="Agent", help="Claude Code --append-system-prompt."
    )
    anthropic_api_key: SecretStr | None = setting(
        None,
        group="Agent",
        help="Anthropic API key for Claude Code (not passed when a dashboard provider applies).",
        flag=False,
    )
    anthropic_base_url: str | None = setting(
        None,
        group="Agent",
        help="Messages API endpoint for Claude Code (proxies, tests); set, the dashboard's "
        "choice of provider and model is not applied.",
    )
    claude_config_source: Path = setting(
        default_factory=lambda: Path.home() / ".claude",
        group="Agent",
        help="Read-only Claude config whose credentials each slot copies.",
    )
    agent_env_allow: CommaList = setting(
        default_factory=list,
        group="Agent",
        help="Extra environment variables passed to the agent (comma-separated names).",
    )
    agent_gets_board_key: bool = setting(
        False, group="Agent", help="Also pass TASKINFA_API_KEY to the agent."
    )
    task_timeout: PositiveSeconds = setting(
        3600.0, group="Agent", help="Wall-clock seconds one agent run may take."
    )
    stall_timeout: PositiveSeconds = setting(
        600.0, group="Agent", help="Seconds an agent may print nothing before it is stopped."
    )
    kill_grace: float = setting(
        10.0, group="Agent", help="Seconds between SIGTERM and SIGKILL.", ge=0
    )
    sandbox: Literal["auto", "on", "off"] = setting(
        "auto",
        group="Agent",
        help="Run each agent in a bubblewrap sandbox that sees only its own task tree and "
        "slot: auto (when bwrap works here, else one warning and none), on (refuse to start "
        "without it), off.",
    )
    progress_interval: PositiveSeconds = setting(
        60.0, group="Agent", help="At most one progress comment per this many seconds."
    )

    # --- Workspace ---------------------------------------------------------------------
    workspace_dir: Path = setting(
        Path("./workspace"), group="Workspace", help="Where repositories and task trees live."
    )
    commit: bool = setting(True, group="Workspace", help="Commit what the agent left uncommitted.")
    push: Annotated[PushMode, BeforeValidator(_push_mode)] = setting(
        "auto",
        group="Workspace",
        help="Push the task branch to the project's repository: auto (push; a refused push "
        "still goes to review, saying the work is kept in the worker's mirror), on (a "
        "refused push fails the attempt), off (keep it in the mirror only).",
    )
    pr_command: str | None = setting(
        None,
        group="Workspace",
        help="Command template that opens a pull request and prints its URL "
        "({branch}, {task_id}, {title}, {workspace}).",
    )
    keep_workspaces: bool = setting(
        False, group="Workspace", help="Keep task trees after the task ends (debugging)."
    )
    allow_local_repos: bool = setting(
        False, group="Workspace", help="Allow local-path repositories (tests, development)."
    )
    git_timeout: PositiveSeconds = setting(
        300.0, group="Workspace", help="Seconds one clone or fetch may take."
    )
    github_token: SecretStr | None = setting(
        None, group="Workspace", help="Token for HTTPS git access.", flag=False
    )
    # The board writes repository URLs; without this list a URL on the board could make the
    # worker send the token to any host.
    git_token_hosts: Annotated[list[str], NoDecode, BeforeValidator(_split_list)] = setting(
        default_factory=lambda: ["github.com"],
        group="Workspace",
        help="Comma-separated hosts GITHUB_TOKEN is sent to (https only).",
    )

    # --- Operations --------------------------------------------------------------------
    log_dir: Path = setting(
        Path("./logs"), group="Operations", help="Logs, transcripts and status.log go here."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = setting(
        "INFO", group="Operations", help="Least severe level that is logged."
    )
    log_format: Literal["auto", "text", "json"] = setting(
        "auto", group="Operations", help="text on a terminal, JSON lines otherwise (auto)."
    )
    health_port: int | None = setting(
        None,
        group="Operations",
        help="Serve /healthz, /readyz and /metrics on this port (off when unset).",
        ge=0,
        le=65535,
    )
    health_host: str = setting(
        "127.0.0.1",
        group="Operations",
        help=(
            "Address the health port listens on: this host only by default; the image sets "
            "0.0.0.0, for the kubelet's probes and Prometheus from outside the pod."
        ),
    )
    log_retention_mb: int = setting(
        512,
        group="Operations",
        help=(
            "Transcripts and rotated logs of this BOT_NAME are pruned, oldest first, to stay "
            "under this many MiB (half the 1 GiB logs volume of deploy/kubernetes)."
        ),
        ge=1,
    )
    log_retention_days: float = setting(
        14.0,
        group="Operations",
        help="Transcripts and rotated logs older than this many days are deleted.",
        gt=0,
    )
    log_retention_interval: float = setting(
        300.0,
        group="Operations",
        help="Seconds between two retention rounds while the worker runs.",
        gt=0,
    )
    status_titles: Literal["local", "all", "none"] = setting(
        "local",
        group="Operations",
        help=(
            "Who sees task titles in the health port's /status: local (loopback only, so "
            "`taskinfa-worker status` in the pod or container), all, or none."
        ),
    )

    # --- Validation ----------------------------------------------------------------------
    @field_validator("allowed_tools", "disallowed_tools", "agent_env_allow", mode="before")
    @classmethod
    def _comma_lists(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("task_list_id", mode="before")
    @classmethod
    def _task_lists(cls, value: Any) -> Any:
        # "a, b" and "a,b" name the same projects; "" or "," names none (all projects).
        if isinstance(value, str):
            return ",".join(dict.fromkeys(_split_list(value))) or None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("taskinfa_api_url", "anthropic_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("expected an http:// or https:// URL")
        if "@" in value.split("://", 1)[1].split("/", 1)[0]:
            # user:pass@host would be logged with every request; keys go in their settings.
            raise ValueError("must not contain credentials (user:pass@); remove them")
        return value.rstrip("/")

    @field_validator("taskinfa_api_key")
    @classmethod
    def _key_present(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("bot_name")
    @classmethod
    def _bot_name(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value) > MAX_BOT_NAME or not re.fullmatch(r"[A-Za-z0-9._-]+", value):
            raise ValueError(f"expected 1 to {MAX_BOT_NAME} letters, digits, '.', '_' or '-'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_poll_interval < self.poll_interval:
            raise ValueError("MAX_POLL_INTERVAL must be at least POLL_INTERVAL")
        if self.agent == "command" and not self.agent_command:
            raise ValueError("AGENT_COMMAND must be set when AGENT=command")
        return self

    # --- Derived -------------------------------------------------------------------------
    def slot_names(self) -> list[str]:
        """The worker names of the slots, as the board shows them."""
        return [f"{self.bot_name}-{i}" for i in range(1, self.concurrency + 1)]

    @property
    def task_list_ids(self) -> tuple[str, ...]:
        """The projects ``TASK_LIST_ID`` names; empty when the worker takes any project's."""
        return tuple(self.task_list_id.split(",")) if self.task_list_id else ()

    @property
    def bot_log_dir(self) -> Path:
        """``{LOG_DIR}/{BOT_NAME}``: the seed's per-bot logs folder."""
        return self.log_dir / self.bot_name

    @property
    def status_file(self) -> Path:
        return self.bot_log_dir / "status.log"


def env_var(field_name: str) -> str:
    """The environment variable that sets a field."""
    return field_name.upper()


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def field_group(field_name: str) -> str:
    extra = Settings.model_fields[field_name].json_schema_extra
    assert isinstance(extra, dict)
    return str(extra["group"])


def has_flag(field_name: str) -> bool:
    extra = Settings.model_fields[field_name].json_schema_extra
    assert isinstance(extra, dict)
    return bool(extra["flag"])


def is_secret(field_name: str) -> bool:
    annotation = str(Settings.model_fields[field_name].annotation)
    return "SecretStr" in annotation


def load_settings(overrides: dict[str, Any], env_file: Path | None = Path(".env")) -> Settings:
    """Build the settings; raises ``ConfigError`` with one plain sentence when invalid."""
    from pydantic import ValidationError

    from .errors import ConfigError

    env_path = env_file if env_file is not None and env_file.is_file() else None
    if env_path is not None:
        check_env_file(env_path)
    try:
        return Settings(_env_file=env_path, **overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def check_env_file(path: Path) -> None:
    """Refuse a ``.env`` line that sets no setting: a typo would silently be ignored."""
    from dotenv import dotenv_values

    from .errors import ConfigError

    known = [env_var(name) for name in Settings.model_fields]
    for key in dotenv_values(path):
        if key.upper() in known:
            continue
        close = difflib.get_close_matches(key.upper(), known, n=1)
        hint = f"; did you mean {close[0]}?" if close else "; see .env.example for the names."
        raise ConfigError(f"Unknown setting {key} in {path}{hint}")


def describe_validation_error(exc: Any) -> str:
    """One sentence naming the first bad setting and what it expects."""
    error = exc.errors()[0]
    location = [str(part) for part in error.get("loc", ()) if part != "__root__"]
    message = str(error.get("msg", "is invalid"))
    message = message.removeprefix("Value error, ")
    if not location:
        return f"Invalid settings: {message}."
    name = location[0]
    if error.get("type") == "missing":
        what = Settings.model_fields[name].description if name in Settings.model_fields else ""
        return f"Missing setting {env_var(name)}: {what}".rstrip()
    return f"Invalid setting {env_var(name)}: {message}."


def environment_snapshot() -> dict[str, str]:
    """The process environment, for code that must hand a filtered copy to a child."""
    return dict(os.environ)


def environment_view() -> Mapping[str, str]:
    """The process environment itself, read-only, for code that takes a few names from it
    at each use: a copy decodes every value, once per agent run."""
    return os.environ
