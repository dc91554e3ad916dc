"""CommandAgent: any command-line agent from a template, with task text kept as data."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from taskinfa_worker.agent import CommandAgent
from taskinfa_worker.agent.command import fill_template, parse_template
from taskinfa_worker.agent.job import AgentJob, AgentOutcome
from taskinfa_worker.agent.prompt import build_prompt
from taskinfa_worker.errors import AgentError, ConfigError
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings
from tests.agent.support import JobFactory, agent_settings, transcript_lines

PY = shlex.quote(sys.executable)
DEMO_AGENT = Path(__file__).parents[2] / "examples" / "demo_agent.py"
# Prints its arguments as one JSON line and its environment as another.
ECHO = (
    "import json, os, sys; print(json.dumps(sys.argv[1:])); "
    "print(json.dumps({k: v for k, v in os.environ.items()}))"
)


async def run(settings: Settings, job: AgentJob, **env: str) -> AgentOutcome:
    redactor = Redactor([settings.taskinfa_api_key])
    agent = CommandAgent(settings, redactor, parent_env={**os.environ, **env})
    return await agent.run(job)


def command_settings(tmp_path: Path, template: str, **overrides: object) -> Settings:
    return agent_settings(tmp_path, agent="command", agent_command=template, **overrides)


def outputs(job: AgentJob) -> list[str]:
    return [
        line["text"]
        for line in transcript_lines(job)
        if line["type"] == "taskinfa_output" and line["stream"] == "stdout"
    ]


def test_placeholders_are_replaced_per_argument_in_one_pass() -> None:
    argv = parse_template("agent --dir={workspace} --id {task_id} -- {prompt}")
    values = {"prompt": "a {workspace} b", "workspace": "/w s", "task_id": "{prompt}"}
    assert fill_template(argv, values) == [
        "agent",
        "--dir=/w s",
        "--id",
        "{prompt}",
        "--",
        "a {workspace} b",
    ]


@pytest.mark.parametrize("template", ["", "   ", "agent 'unclosed"])
def test_bad_templates_are_config_errors(tmp_path: Path, template: str) -> None:
    with pytest.raises(ConfigError, match="AGENT_COMMAND"):
        parse_template(template)


async def test_task_text_stays_inside_its_argument(tmp_path: Path, jobs: JobFactory) -> None:
    canary = tmp_path / "canary"
    title = f"'; touch {canary}; echo ' $(touch {canary}) {{workspace}} --evil"
    job = jobs(title, description=f"`touch {canary}` && rm -rf /")
    template = f"{PY} -c {shlex.quote(ECHO)} --task {{task_id}} --prompt {{prompt}} {{workspace}}"
    outcome = await run(command_settings(tmp_path, template), job)

    assert outcome.success, outcome.reason
    argv = json.loads(outputs(job)[0])
    assert argv == ["--task", job.task.id, "--prompt", build_prompt(job), str(job.workspace)]
    assert not canary.exists()


async def test_environment_and_prompt_file(tmp_path: Path, jobs: JobFactory) -> None:
    job = jobs()
    settings = command_settings(tmp_path, f"{PY} -c {shlex.quote(ECHO)}")
    outcome = await run(settings, job)
    assert outcome.success, outcome.reason
    env = json.loads(outputs(job)[1])
    assert env["TASKINFA_TASK_ID"] == job.task.id
    assert env["TASKINFA_WORKSPACE"] == str(job.workspace)
    assert Path(env["TASKINFA_PROMPT_FILE"]).read_text() == build_prompt(job)
    assert "TASKINFA_API_KEY" not in env
    assert env["CLAUDE_CONFIG_DIR"].endswith("/bot-1/config")


async def test_output_is_the_transcript_and_the_result(tmp_path: Path, jobs: JobFactory) -> None:
    script = "import sys\nfor i in range(60): print('line', i)\nprint('oops', file=sys.stderr)"
    job = jobs()
    outcome = await run(command_settings(tmp_path, f"{PY} -c {shlex.quote(script)}"), job)
    assert outcome.success
    assert outcome.result_text.endswith("oops") or outcome.result_text.endswith("line 59")
    assert "line 0\n" not in outcome.result_text  # only the tail
    assert len(outputs(job)) == 60
    assert any(a.text == "line 59" for a in jobs.activities)


async def test_nonzero_exit_fails_with_the_tail(tmp_path: Path, jobs: JobFactory) -> None:
    script = "import sys; print('tried hard'); print('it broke', file=sys.stderr); sys.exit(3)"
    outcome = await run(command_settings(tmp_path, f"{PY} -c {shlex.quote(script)}"), jobs())
    assert not outcome.success
    assert outcome.exit_code == 3
    assert "exited with code 3" in outcome.reason
    assert "it broke" in outcome.stderr_tail
    assert "tried hard" in outcome.result_text


async def test_silent_command_is_stopped(tmp_path: Path, jobs: JobFactory) -> None:
    script = "import time; time.sleep(60)"
    settings = command_settings(
        tmp_path, f"{PY} -c {shlex.quote(script)}", stall_timeout=0.5, kill_grace=0.5
    )
    outcome = await run(settings, jobs())
    assert not outcome.success
    assert "STALL_TIMEOUT=0.5s" in outcome.reason


async def test_prompt_too_long_for_an_argument(tmp_path: Path, jobs: JobFactory) -> None:
    job = jobs(description="word " * 40_000)
    with pytest.raises(AgentError, match="TASKINFA_PROMPT_FILE"):
        await run(command_settings(tmp_path, "agent {prompt}"), job)


async def test_demo_agent_commits_its_notes(tmp_path: Path, jobs: JobFactory) -> None:
    job = jobs("Write the release notes", description="- list the fixes\n- thank people")
    subprocess.run(["git", "init", "-q", "-b", job.branch or "main"], cwd=job.workspace, check=True)
    template = (
        f"{PY} {shlex.quote(str(DEMO_AGENT))} --task-id {{task_id}} "
        "--workspace {workspace} --prompt {prompt}"
    )
    settings = command_settings(tmp_path, template, agent_env_allow="DEMO_AGENT_PAUSE")
    outcome = await run(settings, job, DEMO_AGENT_PAUSE="0")

    assert outcome.success, outcome.stderr_tail
    notes = (job.workspace / "NOTES" / f"{job.task.id}.md").read_text()
    assert notes.startswith("# Write the release notes")
    assert "- [ ] list the fixes" in notes
    log = subprocess.run(
        ["git", "log", "--name-only", "--format=%s"],
        cwd=job.workspace,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Add notes for: Write the release notes" in log
    assert f"NOTES/{job.task.id}.md" in log
    assert "Wrote notes for 'Write the release notes'" in outcome.result_text
