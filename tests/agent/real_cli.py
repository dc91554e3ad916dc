"""What tests of the real Claude Code CLI share: where it is, when to skip, how to run it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from taskinfa_worker.agent import Activity, AgentJob
from taskinfa_worker.client.models import Task
from taskinfa_worker.settings import Settings
from tests.agent.scripted_messages_api import ScriptedMessagesAPI

REPO_ROOT = Path(__file__).resolve().parents[2]
CLAUDE_BIN = REPO_ROOT / ".cache" / "claude-code" / "node_modules" / ".bin" / "claude"

# `pytestmark = REAL_CLI` in a test module: marked, and skipped with the reason without npm.
REAL_CLI = [
    pytest.mark.real_claude,
    pytest.mark.skipif(
        not os.access(CLAUDE_BIN, os.X_OK),
        reason=f"real Claude Code CLI not installed at {CLAUDE_BIN.relative_to(REPO_ROOT)} "
        "(`make claude-cli` installs it; it needs npm)",
    ),
]


def real_cli_settings(tmp_path: Path, api: ScriptedMessagesAPI, key: str, **extra: Any) -> Settings:
    """Settings that run the real CLI against the scripted Messages API, offline."""
    values: dict[str, Any] = {
        "taskinfa_api_url": "http://127.0.0.1:9/api",
        "taskinfa_api_key": "tk_test_boardkey123",
        "claude_bin": str(CLAUDE_BIN),
        "anthropic_api_key": key,
        "anthropic_base_url": api.url,
        # Not the machine's ~/.claude: the test must not depend on (or touch) a login there.
        "claude_config_source": tmp_path / "no-claude-config",
        "max_turns": 5,
        "workspace_dir": tmp_path / "workspaces",
        "log_dir": tmp_path / "logs",
        "stall_timeout": 60.0,
        "task_timeout": 90.0,
        "kill_grace": 2.0,
        **extra,
    }
    return Settings(_env_file=None, **values)


def real_cli_job(
    tmp_path: Path,
    title: str,
    description: str,
    on_activity: Callable[[Activity], None] = lambda _activity: None,
) -> AgentJob:
    """One job in a fresh workspace folder under ``tmp_path``."""
    workspace = tmp_path / "workspaces" / "task_real"
    workspace.mkdir(parents=True)
    task = Task(id="task_real", title=title, description=description, status="in_progress")
    return AgentJob(
        task=task,
        project=None,
        workspace=workspace,
        branch=None,
        slot="tester-1",
        attempt=1,
        transcript_path=tmp_path / "logs" / "task_real.jsonl",
        on_activity=on_activity,
    )
