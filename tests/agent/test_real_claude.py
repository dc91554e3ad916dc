"""The real Claude Code CLI, run offline against the scripted Messages API.

These tests use the pinned CLI that ``make claude-cli`` installs into ``.cache/claude-code``
and skip when it is missing (no npm). The scripted API plays the model: it asks the CLI to
write a file, then says it is done, so the whole chain (argv, environment, stream-json
parsing, workspace, board reporting) meets the real program and not a fake of it.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import SecretStr

from taskinfa_worker.agent import Activity, AgentJob, AgentOutcome, make_agent
from taskinfa_worker.board.llm_store import LlmRecords
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings
from tests.agent.real_cli import CLAUDE_BIN, REAL_CLI, real_cli_job, real_cli_settings
from tests.agent.scripted_messages_api import (
    ScriptedMessagesAPI,
    serve,
    working_directory,
    write_file_script,
)
from tests.board_support import BoardHandle, MakeBoard

pytestmark = REAL_CLI

# The CLI retries a refused key like a transient error: 11 requests over ~3 minutes with its
# defaults. The worker caps its retries (CLAUDE_CODE_MAX_RETRIES=3), so at most 4 requests
# and a few seconds; more than that is the retry storm these tests guard against.
MAX_REQUESTS_ON_AUTH_FAILURE = 4
TASK_DESCRIPTION = "Create hello.txt containing the word hello."


def anthropic_key() -> str:
    # Shaped like a real key, so the redactor's shape rule would also catch it.
    return f"sk-ant-test-{secrets.token_hex(16)}"


@pytest.fixture
async def scripted_api() -> AsyncIterator[ScriptedMessagesAPI]:
    api = ScriptedMessagesAPI()
    async with serve(api):
        yield api


# --- agent level ----------------------------------------------------------------------------


async def run_agent(settings: Settings, job: AgentJob, key: str) -> AgentOutcome:
    agent = make_agent(settings, Redactor([settings.taskinfa_api_key, SecretStr(key)]))
    with anyio.fail_after(90):
        return await agent.run(job)


async def test_real_cli_writes_the_file_and_reports_turns_and_cost(
    tmp_path: Path, scripted_api: ScriptedMessagesAPI
) -> None:
    key = anthropic_key()
    scripted_api.api_key = key  # a request without the configured key gets a 401
    scripted_api.add(*write_file_script())
    activities: list[Activity] = []
    job = real_cli_job(tmp_path, "Write hello.txt", TASK_DESCRIPTION, activities.append)

    outcome = await run_agent(real_cli_settings(tmp_path, scripted_api, key), job, key)

    assert outcome.success, outcome
    assert (job.workspace / "hello.txt").read_text() == "hello"
    assert outcome.exit_code == 0
    assert outcome.num_turns == 2
    assert outcome.cost_usd is not None
    assert outcome.cost_usd > 0
    assert outcome.session_id
    assert outcome.result_text == "Done: wrote hello.txt"
    # Two model turns, nothing refused, and the CLI ran in the workspace with the task.
    assert [(r.kind, r.status) for r in scripted_api.message_requests] == [("main", 200)] * 2
    first = scripted_api.main_requests[0].body
    assert working_directory(first) == str(job.workspace)
    assert TASK_DESCRIPTION in str(first["messages"])
    assert any(a.tool == "Write" and a.files == ("hello.txt",) for a in activities), activities
    transcript = job.transcript_path.read_text()
    assert '"type":"result"' in transcript.replace(" ", "")
    assert key not in transcript


async def test_real_cli_with_a_refused_key_fails_fast_as_an_auth_failure(
    tmp_path: Path, scripted_api: ScriptedMessagesAPI
) -> None:
    key = anthropic_key()
    scripted_api.api_key = anthropic_key()  # not the key the worker was given
    scripted_api.add(*write_file_script())
    job = real_cli_job(tmp_path, "Write hello.txt", TASK_DESCRIPTION)

    outcome = await run_agent(real_cli_settings(tmp_path, scripted_api, key), job, key)

    assert not outcome.success
    assert outcome.auth_failed, outcome
    assert re.search(r"401|api key|auth", outcome.reason, re.IGNORECASE), outcome.reason
    assert key not in outcome.reason
    assert key not in outcome.stderr_tail
    requests = scripted_api.message_requests
    assert 1 <= len(requests) <= MAX_REQUESTS_ON_AUTH_FAILURE, f"{len(requests)} requests"
    assert all(r.status == 401 for r in requests)
    assert not (job.workspace / "hello.txt").exists()


# --- worker level: `taskinfa-worker run` as an operator starts it ----------------------------


class Worker:
    """``taskinfa-worker run`` in a child process; its output goes to a log file."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc = proc
        self.log = log

    @classmethod
    async def start(cls, env: dict[str, str], args: list[str], log: Path) -> Worker:
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "taskinfa_worker",
                "run",
                *args,
                env={**os.environ, **env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        return cls(proc, log)

    async def wait(self, timeout: float) -> int:
        try:
            with anyio.fail_after(timeout):
                return await self.proc.wait()
        except TimeoutError:
            message = f"worker still running after {timeout} s:\n{self.output()}"
            raise AssertionError(message) from None

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it will not go; always reaped."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                with anyio.fail_after(30):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
async def worker_runs(tmp_path: Path) -> AsyncIterator[list[Worker]]:
    """Workers a test started; stopped and reaped after it, whatever happened."""
    workers: list[Worker] = []
    yield workers
    for worker in workers:
        await worker.stop()


def worker_env(
    board: BoardHandle, api: ScriptedMessagesAPI, key: str, root: Path
) -> dict[str, str]:
    return {
        "TASKINFA_API_URL": board.url,
        "TASKINFA_API_KEY": board.api_key,
        "ANTHROPIC_API_KEY": key,
        "ANTHROPIC_BASE_URL": api.url,
        "WORKSPACE_DIR": str(root / "workspace"),
        "LOG_DIR": str(root / "logs"),
        "CLAUDE_CONFIG_SOURCE": str(root / "no-claude-config"),
        "BOT_NAME": "tester",
        "KEEP_WORKSPACES": "true",
        "RATE_LIMIT": "6000",
        "LOG_FORMAT": "text",
    }


WORKER_ARGS = [
    "--concurrency",
    "1",
    "--exit-when-idle",
    "--agent",
    "claude",
    "--claude-bin",
    str(CLAUDE_BIN),
    "--poll-interval",
    "0.1",
    "--max-turns",
    "5",
]


def comments(board: BoardHandle, task_id: str) -> list[dict[str, Any]]:
    rows, _total = board.store.list_comments(task_id, limit=100)
    return list(reversed(rows))  # oldest first


def assert_no_secret(
    key: str, root: Path, worker: Worker, board: BoardHandle, task_id: str
) -> None:
    """The Anthropic key is in no log, transcript, status file or board comment."""
    assert key not in worker.output()
    for path in (root / "logs").rglob("*"):
        if path.is_file():
            assert key not in path.read_text(errors="replace"), path
    for comment in comments(board, task_id):
        assert key not in comment["content"]


async def test_worker_runs_the_real_cli_and_moves_the_task_to_review(
    tmp_path: Path,
    make_board: MakeBoard,
    scripted_api: ScriptedMessagesAPI,
    worker_runs: list[Worker],
) -> None:
    board = await make_board()
    task = board.create_task("Write hello.txt", description=TASK_DESCRIPTION)
    key = anthropic_key()
    scripted_api.api_key = key
    scripted_api.add(*write_file_script())
    env = worker_env(board, scripted_api, key, tmp_path)

    worker = await Worker.start(env, WORKER_ARGS, tmp_path / "worker.log")
    worker_runs.append(worker)
    assert await worker.wait(timeout=90) == 0, worker.output()

    final = board.store.get_task(task["id"])
    assert final["status"] == "review", (final, worker.output())
    written = list((tmp_path / "workspace").rglob("hello.txt"))
    assert [p.read_text() for p in written] == ["hello"], written
    assert working_directory(scripted_api.main_requests[0].body) == str(written[0].parent)
    assert len(scripted_api.message_requests) == 2
    summaries = [c for c in comments(board, task["id"]) if c["comment_type"] == "summary"]
    assert len(summaries) == 1, comments(board, task["id"])
    summary = summaries[0]["content"]
    assert re.search(r"\b2 turns\b", summary), summary
    assert "$0.0112" in summary or "$0.01" in summary, summary
    assert final["files_changed"] == ["hello.txt"]
    assert_no_secret(key, tmp_path, worker, board, task["id"])


async def test_worker_with_a_refused_key_reports_it_without_a_retry_storm(
    tmp_path: Path,
    make_board: MakeBoard,
    scripted_api: ScriptedMessagesAPI,
    worker_runs: list[Worker],
) -> None:
    board = await make_board()
    task = board.create_task("Write hello.txt", description=TASK_DESCRIPTION)
    key = anthropic_key()
    scripted_api.api_key = anthropic_key()  # the worker's key is refused
    scripted_api.add(*write_file_script())
    env = worker_env(board, scripted_api, key, tmp_path)

    worker = await Worker.start(env, WORKER_ARGS, tmp_path / "worker.log")
    worker_runs.append(worker)

    # Every task would fail the same way: with --exit-when-idle the pool stops claiming and
    # exits, with its own status so a batch job or CI notices, instead of running the queue
    # into the refused key.
    assert await worker.wait(timeout=60) == 4

    # The worker's fault, not the task's: released with the reason, no attempt counted.
    notes = comments(board, task["id"])
    assert not [c for c in notes if c["comment_type"] == "error"], notes
    released = [c["content"] for c in notes if c["content"].startswith("Released:")]
    assert len(released) == 1, notes
    assert "is at fault, not the task" in released[0]
    assert re.search(r"401|api key|credentials", released[0], re.IGNORECASE), released
    requests = scripted_api.message_requests
    assert 1 <= len(requests) <= MAX_REQUESTS_ON_AUTH_FAILURE, f"{len(requests)} requests"
    assert not list((tmp_path / "workspace").rglob("hello.txt"))
    final = board.store.get_task(task["id"])
    assert (final["status"], final["error_count"]) == ("todo", 0), final
    assert_no_secret(key, tmp_path, worker, board, task["id"])


async def test_the_dashboards_provider_and_model_reach_the_real_cli(
    tmp_path: Path,
    make_board: MakeBoard,
    scripted_api: ScriptedMessagesAPI,
    worker_runs: list[Worker],
) -> None:
    """The strongest proof of the model choice: on the current release's board, the
    project's choice sends the real CLI's requests to the provider's base URL, with the
    provider's token as a bearer token (the operator's key, another one, is not sent: the
    scripted API would refuse it) and the chosen model in every request."""
    board = await make_board(profile="v2")
    team_token = f"team-provider-{secrets.token_hex(16)}"
    records = LlmRecords(board.store)
    records.set_provider("litellm", base_url=scripted_api.url, auth_token=team_token)
    records.set_choice("task", "litellm", "team-chosen-model", task_list_id="default")
    task = board.create_task("Write hello.txt", description=TASK_DESCRIPTION, status="todo")
    scripted_api.api_key = team_token
    scripted_api.add(*write_file_script())
    operator_key = anthropic_key()
    env = worker_env(board, scripted_api, operator_key, tmp_path)
    # The operator fixed no endpoint of their own: the dashboard's provider applies.
    del env["ANTHROPIC_BASE_URL"]

    worker = await Worker.start(env, WORKER_ARGS, tmp_path / "worker.log")
    worker_runs.append(worker)
    assert await worker.wait(timeout=90) == 0, worker.output()

    assert board.store.get_task(task["id"])["status"] == "review", worker.output()
    assert len(scripted_api.main_requests) == 2
    assert not [r for r in scripted_api.requests if r.kind == "rejected"]
    for request in scripted_api.message_requests:
        assert request.model == "team-chosen-model"
        assert "authorization" in request.headers
        assert "x-api-key" not in request.headers
    assert_no_secret(team_token, tmp_path, worker, board, task["id"])
    assert_no_secret(operator_key, tmp_path, worker, board, task["id"])
