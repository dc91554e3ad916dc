"""ClaudeAgent end to end against a fake Claude Code executable (tests/fakes/fake_claude.py).

Each test runs the real supervisor: a real child process, real pipes, real signals.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import anyio
import pytest
from pydantic import SecretStr

from taskinfa_worker.agent import (
    ClaudeAgent,
    CommandAgent,
    make_agent,
)
from taskinfa_worker.agent.environment import MARKER_VAR
from taskinfa_worker.agent.job import AgentJob, AgentOutcome
from taskinfa_worker.agent.prompt import build_prompt
from taskinfa_worker.errors import AgentError
from taskinfa_worker.redact import MASK, Redactor
from taskinfa_worker.settings import Settings
from tests.agent.support import (
    JobFactory,
    agent_settings,
    gone,
    processes_with_env,
    recorded,
    state,
    transcript_lines,
    wait_until_gone,
)

PARENT_ENV = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(Path.home())}


async def run(settings: Settings, job: AgentJob, **env: str) -> AgentOutcome:
    redactor = Redactor([settings.taskinfa_api_key, settings.anthropic_api_key])
    agent = ClaudeAgent(settings, redactor, parent_env={**PARENT_ENV, **env})
    return await agent.run(job)


def test_package_exports() -> None:
    import taskinfa_worker.agent as package

    assert sorted(package.__all__) == [
        "Activity",
        "Agent",
        "AgentJob",
        "AgentOutcome",
        "ClaudeAgent",
        "CommandAgent",
        "ModelRoute",
        "become_subreaper",
        "make_agent",
    ]
    assert all(hasattr(package, name) for name in package.__all__)


def test_factory_picks_the_implementation(tmp_path: Path) -> None:
    redactor = Redactor()
    assert isinstance(make_agent(agent_settings(tmp_path), redactor), ClaudeAgent)
    command = agent_settings(tmp_path, agent="command", agent_command="echo {prompt}")
    assert isinstance(make_agent(command, redactor), CommandAgent)
    assert make_agent(agent_settings(tmp_path), redactor).name == "claude"


async def test_success_reports_the_result_and_the_activity(
    tmp_path: Path, jobs: JobFactory
) -> None:
    job = jobs()
    outcome = await run(agent_settings(tmp_path), job)

    assert outcome.success, outcome
    assert outcome.result_text == "All done: edited src/app.py and the tests pass."
    assert (outcome.exit_code, outcome.num_turns, outcome.cost_usd) == (0, 3, 0.0123)
    assert outcome.duration_ms == 1234
    assert outcome.session_id
    assert not outcome.auth_failed
    tools = [(a.tool, a.files) for a in jobs.activities if a.tool]
    assert tools == [("Read", ("README.md",)), ("Edit", ("src/app.py",)), ("Bash", ())]
    assert any(a.text and "look at the project" in a.text for a in jobs.activities)

    argv = recorded(job, "argv.json")
    prompt = build_prompt(job)
    assert argv[1:] == [
        "-p",
        prompt,
        "--output-format",
        "stream-json",
        "--verbose",
        "--max-turns",
        "50",
        "--permission-mode",
        "bypassPermissions",
    ]
    assert recorded(job, "stdin.json")["devnull"] is True
    assert recorded(job, "stdin.json")["prompt_source"] == "argv"

    lines = transcript_lines(job)
    kinds = [line["type"] for line in lines]
    assert kinds[0] == "taskinfa_start"
    assert kinds[-1] == "taskinfa_end"
    assert "system" in kinds
    assert "result" in kinds
    assert "assistant" in kinds
    assert lines[-1]["success"] is True


async def test_optional_flags_reach_the_command_line(tmp_path: Path, jobs: JobFactory) -> None:
    settings = agent_settings(
        tmp_path,
        model="claude-test",
        max_turns=7,
        max_budget_usd=1.5,
        permission_mode="acceptEdits",
        allowed_tools="Read,Edit",
        disallowed_tools=["Bash(rm:*)"],
        append_system_prompt="Be brief.",
    )
    job = jobs(resume_session_id="sess-123")
    assert (await run(settings, job)).success

    argv = recorded(job, "argv.json")
    assert argv[3:6] == ["--output-format", "stream-json", "--verbose"]
    flags = dict(zip(argv[6::2], argv[7::2], strict=False))
    assert flags == {
        "--max-turns": "7",
        "--permission-mode": "acceptEdits",
        "--model": "claude-test",
        "--max-budget-usd": "1.5",
        "--allowedTools": "Read,Edit",
        "--disallowedTools": "Bash(rm:*)",
        "--append-system-prompt": "Be brief.",
        "--resume": "sess-123",
    }


async def test_is_error_fails_with_the_errors(tmp_path: Path, jobs: JobFactory) -> None:
    outcome = await run(agent_settings(tmp_path), jobs("FAKE_MODE=is_error"))
    assert not outcome.success
    assert outcome.exit_code == 1
    assert "Tool execution exploded" in outcome.reason
    assert not outcome.auth_failed
    assert not outcome.resume_not_found


async def test_max_turns_says_so(tmp_path: Path, jobs: JobFactory) -> None:
    outcome = await run(agent_settings(tmp_path, max_turns=7), jobs("FAKE_MODE=max_turns"))
    assert not outcome.success
    assert "7 turns" in outcome.reason
    assert "MAX_TURNS=7" in outcome.reason


@pytest.mark.parametrize("mode", ["auth_fail", "auth_401"])
async def test_auth_failure_is_flagged(tmp_path: Path, jobs: JobFactory, mode: str) -> None:
    outcome = await run(agent_settings(tmp_path), jobs(f"FAKE_MODE={mode}"))
    assert not outcome.success
    assert outcome.auth_failed
    assert "credentials were refused" in outcome.reason


async def test_resume_of_a_missing_session_is_flagged(tmp_path: Path, jobs: JobFactory) -> None:
    outcome = await run(
        agent_settings(tmp_path), jobs("FAKE_MODE=resume_missing", resume_session_id="gone-1")
    )
    assert not outcome.success
    assert outcome.resume_not_found
    assert "No conversation found" in outcome.reason
    fresh = await run(agent_settings(tmp_path), jobs("FAKE_MODE=resume_missing"))
    assert fresh.success
    assert not fresh.resume_not_found


async def test_exit_without_a_result_is_a_failure(tmp_path: Path, jobs: JobFactory) -> None:
    outcome = await run(agent_settings(tmp_path), jobs("FAKE_MODE=no_result"))
    assert not outcome.success
    assert outcome.exit_code == 0
    assert "without a result" in outcome.reason
    assert "stream closed unexpectedly" in outcome.reason


async def test_crash_reports_the_signal_and_stderr(tmp_path: Path, jobs: JobFactory) -> None:
    outcome = await run(agent_settings(tmp_path), jobs("FAKE_MODE=crash"))
    assert not outcome.success
    assert outcome.exit_code == -11
    assert "signal 11" in outcome.reason
    assert "TypeError" in outcome.stderr_tail


async def test_silent_hang_is_stopped_by_the_stall_timeout(
    tmp_path: Path, jobs: JobFactory
) -> None:
    job = jobs("FAKE_MODE=hang")
    outcome = await run(agent_settings(tmp_path, stall_timeout=1.0), job)
    assert not outcome.success
    assert "STALL_TIMEOUT=1s" in outcome.reason
    assert outcome.exit_code == -15
    assert gone(int(recorded(job, "pid")))
    assert transcript_lines(job)[-1]["ending"] == "stall"


async def test_output_keeps_a_run_alive_past_the_stall_timeout(
    tmp_path: Path, jobs: JobFactory
) -> None:
    settings = agent_settings(tmp_path, stall_timeout=1.0)
    outcome = await run(settings, jobs("FAKE_MODE=slow FAKE_SECONDS=2"))
    assert outcome.success, outcome.reason
    assert sum(1 for a in jobs.activities if a.tool == "Grep") >= 5


async def test_task_timeout_stops_a_busy_run(tmp_path: Path, jobs: JobFactory) -> None:
    settings = agent_settings(tmp_path, task_timeout=1.0, stall_timeout=5.0)
    outcome = await run(settings, jobs("FAKE_MODE=slow FAKE_SECONDS=30"))
    assert not outcome.success
    assert "TASK_TIMEOUT=1s" in outcome.reason


async def test_hang_after_result_counts_as_the_result(tmp_path: Path, jobs: JobFactory) -> None:
    job = jobs("FAKE_MODE=hang_after_result")
    outcome = await run(agent_settings(tmp_path, stall_timeout=1.0), job)
    assert outcome.success, outcome.reason
    assert outcome.result_text == "Finished, but I will not exit."
    assert outcome.exit_code == -15
    assert gone(int(recorded(job, "pid")))


async def test_a_20_mb_line_is_parsed(tmp_path: Path, jobs: JobFactory) -> None:
    job = jobs("FAKE_MODE=huge_line")
    outcome = await run(agent_settings(tmp_path), job)
    assert outcome.success, outcome.reason
    assert outcome.result_text == f"Read a file of {20 * 1024 * 1024} bytes."
    assert [a.tool for a in jobs.activities if a.tool] == ["Read"]
    assert job.transcript_path.stat().st_size > 20 * 1024 * 1024


async def test_sigterm_ignored_means_sigkill(tmp_path: Path, jobs: JobFactory) -> None:
    job = jobs("FAKE_MODE=ignore_sigterm")
    outcome = await run(agent_settings(tmp_path, stall_timeout=1.0, kill_grace=0.3), job)
    assert not outcome.success
    assert outcome.exit_code == -9
    assert gone(int(recorded(job, "pid")))


@pytest.mark.usefixtures("subreaper")
async def test_setsid_grandchild_does_not_outlive_the_run(tmp_path: Path, jobs: JobFactory) -> None:
    job = jobs("FAKE_MODE=setsid_grandchild")
    outcome = await run(agent_settings(tmp_path), job)
    assert outcome.success, outcome.reason
    grandchild = int(recorded(job, "grandchild.pid"))
    # Killed and reaped before run() returned: not running, and not a zombie either.
    assert gone(grandchild), state(grandchild)
    marker = recorded(job, "env.json")[MARKER_VAR]
    assert processes_with_env(f"{MARKER_VAR}={marker}") == []
    assert transcript_lines(job)[-1]["leftovers"] == 1


@pytest.mark.usefixtures("subreaper")
async def test_orphan_that_exits_on_its_own_is_reaped(tmp_path: Path, jobs: JobFactory) -> None:
    job = jobs("FAKE_MODE=orphan_exits")
    outcome = await run(agent_settings(tmp_path), job)
    assert outcome.success, outcome.reason
    grandchild = int(recorded(job, "grandchild.pid"))
    # It died as our child while the run went on; the janitor thread reaps the zombie.
    assert await anyio.to_thread.run_sync(wait_until_gone, grandchild, 15.0), state(grandchild)


@pytest.mark.usefixtures("subreaper")
async def test_cancelling_the_run_stops_and_reaps_the_tree(
    tmp_path: Path, jobs: JobFactory
) -> None:
    job = jobs("FAKE_MODE=grandchild_hang")
    pid_file = job.workspace / ".fake_claude" / "grandchild.pid"
    outcome: AgentOutcome | None = None

    async def agent() -> None:
        nonlocal outcome
        outcome = await run(agent_settings(tmp_path, kill_grace=1.0), job)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(agent)
            while not (pid_file.exists() and pid_file.read_text()):
                await anyio.sleep(0.02)
            group.cancel_scope.cancel()

    assert outcome is None  # cancelled, not finished
    assert gone(int(recorded(job, "pid")))
    grandchild = int(pid_file.read_text())
    assert gone(grandchild), state(grandchild)
    assert transcript_lines(job)[-1]["ending"] == "cancelled"


async def test_garbage_output_is_tolerated(tmp_path: Path, jobs: JobFactory) -> None:
    job = jobs("FAKE_MODE=garbage")
    outcome = await run(agent_settings(tmp_path), job)
    assert outcome.success, outcome.reason
    assert outcome.num_turns is None  # "x" is not a number
    unparsed = [line["text"] for line in transcript_lines(job) if line["type"] == "taskinfa_stdout"]
    assert "this is not json" in unparsed
    assert "trailing junk without newline" in unparsed
    assert any("binary" in text for text in unparsed)


async def test_task_text_cannot_add_arguments_or_reach_a_shell(
    tmp_path: Path, jobs: JobFactory
) -> None:
    canary = tmp_path / "canary"
    title = f'"; touch {canary}; echo " --dangerously-skip-permissions $(touch {canary})'
    description = f"`touch {canary}`\n--permission-mode bypassPermissions\n```\n--model evil"
    job = jobs(title, description=description)
    outcome = await run(agent_settings(tmp_path), job)
    assert outcome.success, outcome.reason

    argv = recorded(job, "argv.json")
    assert len(argv) == 10  # bin, -p, prompt and the 7 fixed option words
    assert argv[2] == build_prompt(job)
    assert title.replace('"', '\\"') in argv[2]
    assert "--dangerously-skip-permissions" not in argv
    assert argv.count("--permission-mode") == 1
    assert "--model" not in argv
    assert not canary.exists()


async def test_environment_is_an_allow_list(tmp_path: Path, jobs: JobFactory) -> None:
    source = tmp_path / "claude-config-source"
    source.mkdir()
    (source / ".credentials.json").write_text('{"token": "oauth"}')
    (source / "projects").mkdir()  # sessions of the source are not copied
    settings = agent_settings(
        tmp_path,
        anthropic_api_key="sk-ant-testkey-123456789",
        anthropic_base_url="http://127.0.0.1:9/messages",
        agent_env_allow="FAKE_EXTRA,TASKINFA_API_KEY",
    )
    parent = {
        "TASKINFA_API_KEY": "tk_parent_secret_value",
        "GITHUB_TOKEN": "ghp_notforagents",
        "SOME_SECRET": "nope",
        "FAKE_EXTRA": "yes",
        "GIT_DIR": "/elsewhere/.git",
        "LC_ALL": "C.UTF-8",
        "GIT_AUTHOR_NAME": "Bot",
    }
    one, two = jobs(slot="bot-1"), jobs(slot="bot-2")
    assert (await run(settings, one, **parent)).success
    assert (await run(settings, two, **parent)).success

    env = recorded(one, "env.json")
    for absent in ("TASKINFA_API_KEY", "GITHUB_TOKEN", "SOME_SECRET", "GIT_DIR"):
        assert absent not in env
    assert env["FAKE_EXTRA"] == "yes"
    assert env["LC_ALL"] == "C.UTF-8"
    assert env["GIT_AUTHOR_NAME"] == "Bot"
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-testkey-123456789"
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9/messages"
    for flag in (
        "DISABLE_AUTOUPDATER",
        "DISABLE_TELEMETRY",
        "DISABLE_ERROR_REPORTING",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
    ):
        assert env[flag] == "1"
    assert env["CLAUDE_CODE_MAX_RETRIES"] == "3"
    assert int(env["API_TIMEOUT_MS"]) >= 10_000
    if os.geteuid() == 0:
        assert env["IS_SANDBOX"] == "1"

    config = Path(env["CLAUDE_CONFIG_DIR"])
    other = Path(recorded(two, "env.json")["CLAUDE_CONFIG_DIR"])
    assert config != other
    assert config.is_relative_to(settings.workspace_dir.resolve() / ".agents")
    assert (config / ".credentials.json").read_text() == '{"token": "oauth"}'
    assert stat.S_IMODE((config / ".credentials.json").stat().st_mode) == 0o600
    assert not (config / "projects").exists()
    assert env["TMPDIR"] == env["CLAUDE_CODE_TMPDIR"] != recorded(two, "env.json")["TMPDIR"]
    assert env["XDG_RUNTIME_DIR"] != recorded(two, "env.json")["XDG_RUNTIME_DIR"]
    assert env[MARKER_VAR] != recorded(two, "env.json")[MARKER_VAR]


async def test_board_key_only_when_asked(tmp_path: Path, jobs: JobFactory) -> None:
    settings = agent_settings(tmp_path, agent_gets_board_key=True)
    job = jobs()
    assert (await run(settings, job, TASKINFA_API_KEY="tk_parent_secret_value")).success
    env = recorded(job, "env.json")
    assert env["TASKINFA_API_KEY"] == "tk_test_boardkey123"
    assert env["TASKINFA_API_URL"] == "http://127.0.0.1:9/api"


async def test_long_prompt_goes_in_on_stdin(tmp_path: Path, jobs: JobFactory) -> None:
    description = "A very long specification. " * 6000  # ~160 KB, over one argument's limit
    job = jobs(description=description)
    outcome = await run(agent_settings(tmp_path), job)
    assert outcome.success, outcome.reason
    argv = recorded(job, "argv.json")
    assert argv[1:5] == ["-p", "--input-format", "stream-json", "--output-format"]
    assert all(len(arg) < 1000 for arg in argv)
    assert recorded(job, "stdin.json")["prompt_source"] == "stdin"
    assert recorded(job, "prompt.txt") == build_prompt(job)


async def test_secrets_never_reach_the_transcript_or_outcome(
    tmp_path: Path, jobs: JobFactory
) -> None:
    settings = agent_settings(tmp_path, anthropic_api_key=SecretStr("sk-ant-verysecret-abcdef"))
    job = jobs("FAKE_MODE=success FAKE_SAY=sk-ant-verysecret-abcdef")
    outcome = await run(settings, job)
    assert outcome.success
    text = job.transcript_path.read_text()
    assert "sk-ant-verysecret-abcdef" not in text
    assert MASK in text


async def test_missing_executable_raises_agent_error(tmp_path: Path, jobs: JobFactory) -> None:
    settings = agent_settings(tmp_path, claude_bin=str(tmp_path / "no-such-claude"))
    with pytest.raises(AgentError, match="cannot start"):
        await run(settings, jobs())


async def test_missing_workspace_raises_agent_error(tmp_path: Path, jobs: JobFactory) -> None:
    job = jobs()
    job.workspace.rmdir()
    with pytest.raises(AgentError, match=str(job.workspace)):
        await run(agent_settings(tmp_path), job)


async def test_unusable_runtime_folder_raises_agent_error(tmp_path: Path, jobs: JobFactory) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(AgentError, match="agent's folders"):
        await run(agent_settings(tmp_path, workspace_dir=blocker), jobs())
