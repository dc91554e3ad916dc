"""Supervision claims checked against the real Claude Code CLI (offline, scripted API).

The fake CLI shows the mechanics; these show that the real one behaves as the supervisor
assumes: its Bash tool's setsid'd background processes carry the run's marker and are
swept, and a prompt too long for an argument is accepted on stdin.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import anyio
import pytest

from taskinfa_worker.agent import AgentJob, ClaudeAgent
from taskinfa_worker.models import Task
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings
from tests.agent_support import gone, state, subreaper, transcript_lines
from tests.scripted_messages_api import ScriptedMessagesAPI, ToolUse, Turn, serve

__all__ = ["subreaper"]  # the fixture, imported for pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CLAUDE_BIN = REPO_ROOT / ".cache" / "claude-code" / "node_modules" / ".bin" / "claude"

pytestmark = [
    pytest.mark.real_claude,
    pytest.mark.skipif(
        not os.access(CLAUDE_BIN, os.X_OK),
        reason="real Claude Code CLI not installed (`make claude-cli` installs it; needs npm)",
    ),
]


def settings_for(tmp_path: Path, api: ScriptedMessagesAPI, key: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "taskinfa_api_url": "http://127.0.0.1:9/api",
        "taskinfa_api_key": "tk_test_boardkey123",
        "claude_bin": str(CLAUDE_BIN),
        "anthropic_api_key": key,
        "anthropic_base_url": api.url,
        "claude_config_source": tmp_path / "no-claude-config",
        "max_turns": 5,
        "workspace_dir": tmp_path / "workspaces",
        "stall_timeout": 60.0,
        "task_timeout": 90.0,
        "kill_grace": 2.0,
        **extra,
    }
    return Settings(_env_file=None, **values)


def job_for(tmp_path: Path, description: str) -> AgentJob:
    workspace = tmp_path / "workspaces" / "task_real"
    workspace.mkdir(parents=True)
    return AgentJob(
        task=Task(id="task_real", title="Real CLI", description=description, status="todo"),
        project=None,
        workspace=workspace,
        branch=None,
        slot="tester-1",
        attempt=1,
        transcript_path=tmp_path / "logs" / "task_real.jsonl",
    )


@pytest.mark.usefixtures("subreaper")
async def test_background_process_of_the_bash_tool_is_swept(tmp_path: Path) -> None:
    key = f"sk-ant-test-{secrets.token_hex(16)}"
    # setsid: its own session, out of reach of a signal to the CLI's process group.
    command = (
        "setsid sh -c 'echo $$ > {cwd}/bg.pid; exec sleep 300' "
        ">/dev/null 2>&1 </dev/null & sleep 0.5; echo started"
    )
    async with serve(ScriptedMessagesAPI()) as api:
        api.api_key = key
        api.add(
            Turn(tool_uses=(ToolUse("Bash", {"command": command, "description": "bg"}),)),
            Turn(text="Started a background sleeper."),
        )
        job = job_for(tmp_path, "Start a background process.")
        agent = ClaudeAgent(settings_for(tmp_path, api, key), Redactor([key]))
        with anyio.fail_after(90):
            outcome = await agent.run(job)

    assert outcome.success, outcome
    background = int((job.workspace / "bg.pid").read_text())
    assert gone(background), state(background)
    assert transcript_lines(job)[-1]["leftovers"] >= 1


async def test_long_prompt_reaches_the_model_through_stdin(tmp_path: Path) -> None:
    key = f"sk-ant-test-{secrets.token_hex(16)}"
    description = "Background material. " * 7000 + "THE-END-OF-THE-DESCRIPTION"
    async with serve(ScriptedMessagesAPI()) as api:
        api.api_key = key
        api.add(Turn(text="Read it all."))
        job = job_for(tmp_path, description)
        agent = ClaudeAgent(settings_for(tmp_path, api, key), Redactor([key]))
        with anyio.fail_after(90):
            outcome = await agent.run(job)
        sent = str(api.main_requests[0].body)

    assert outcome.success, outcome
    assert outcome.result_text == "Read it all."
    assert transcript_lines(job)[0]["prompt_on_stdin"] is True
    assert "THE-END-OF-THE-DESCRIPTION" in sent
