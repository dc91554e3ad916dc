"""Supervision claims checked against the real Claude Code CLI (offline, scripted API).

The fake CLI shows the mechanics; these show that the real one behaves as the supervisor
assumes: its Bash tool's setsid'd background processes carry the run's marker and are
swept, and a prompt too long for an argument is accepted on stdin.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import anyio
import pytest

from taskinfa_worker.agent import ClaudeAgent
from taskinfa_worker.agent.sandbox import sandbox_state
from taskinfa_worker.redact import Redactor
from tests.agent.real_cli import REAL_CLI, real_cli_job, real_cli_settings
from tests.agent.scripted_messages_api import ScriptedMessagesAPI, ToolUse, Turn, serve
from tests.agent.support import gone, state, transcript_lines

pytestmark = REAL_CLI


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
        job = real_cli_job(tmp_path, "Real CLI", "Start a background process.")
        agent = ClaudeAgent(real_cli_settings(tmp_path, api, key), Redactor([key]))
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
        job = real_cli_job(tmp_path, "Real CLI", description)
        agent = ClaudeAgent(real_cli_settings(tmp_path, api, key), Redactor([key]))
        with anyio.fail_after(90):
            outcome = await agent.run(job)
        sent = str(api.main_requests[0].body)

    assert outcome.success, outcome
    assert outcome.result_text == "Read it all."
    assert transcript_lines(job)[0]["prompt_on_stdin"] is True
    assert "THE-END-OF-THE-DESCRIPTION" in sent


async def test_the_real_cli_works_inside_the_sandbox_and_sees_only_its_task(
    tmp_path: Path,
) -> None:
    """Node, the CLI's config dir and temporary folders all work through bwrap, while the
    worker's checkout (pytest's working directory) is an empty folder to its Bash tool."""
    key = f"sk-ant-test-{secrets.token_hex(16)}"
    checkout = Path.cwd() / "pyproject.toml"
    command = (
        f"echo inside > done.txt; cat {checkout} >/dev/null 2>&1 && echo VIS''IBLE || echo HID''DEN"
    )
    async with serve(ScriptedMessagesAPI()) as api:
        api.api_key = key
        api.add(
            Turn(tool_uses=(ToolUse("Bash", {"command": command, "description": "probe"}),)),
            Turn(text="Looked around."),
        )
        job = real_cli_job(tmp_path, "Real CLI", "Look around.")
        settings = real_cli_settings(tmp_path, api, key, sandbox="on")
        state = await sandbox_state(settings)
        if not state.enabled:
            pytest.skip(f"no sandbox here: {state.reason}")
        agent = ClaudeAgent(settings, Redactor([key]))
        with anyio.fail_after(90):
            outcome = await agent.run(job)
        tool_result = str(api.main_requests[-1].body)

    assert outcome.success, outcome
    assert (job.workspace / "done.txt").read_text() == "inside\n"
    # The quotes keep the words out of the command's own text, which the request repeats.
    assert "HIDDEN" in tool_result
    assert "VISIBLE" not in tool_result
