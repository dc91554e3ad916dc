"""Each mistake an operator can make at start, as they meet it: `taskinfa-worker run` in a
process against the local board, one sentence on stderr naming what to fix, no traceback,
no secret, and the exit status docs/reliability.md lists."""

from __future__ import annotations

import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from taskinfa_worker.errors import EXIT_AUTH, EXIT_CONFIG, EXIT_NAME_TAKEN, EXIT_PREFLIGHT
from taskinfa_worker.settings import Settings
from tests.pool.support import AGENT_COMMAND, WorkerProcess, wait_for

KEY = "tk_operator_test_key_0001"


def worker_env(board: Any, tmp_path: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    return {
        **base,
        "TASKINFA_API_URL": board.url,
        "TASKINFA_API_KEY": board.api_key,
        "BOT_NAME": "mistaken",
        "AGENT": "command",
        "AGENT_COMMAND": AGENT_COMMAND,
        "WORKSPACE_DIR": str(tmp_path / "workspace"),
        "LOG_DIR": str(tmp_path / "logs"),
        "LOG_FORMAT": "text",
        "POLL_INTERVAL": "0.05",
        "MAX_POLL_INTERVAL": "0.2",
        **extra,
    }


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


async def run(env: dict[str, str], *args: str, cwd: Path) -> Done:
    """`run --exit-when-idle` to its end, without blocking the board in this event loop."""
    argv = [sys.executable, "-m", "taskinfa_worker", "run", "--exit-when-idle", *args]
    with anyio.fail_after(120):
        done = await anyio.run_process(argv, env=env, cwd=cwd, check=False)
    return Done(done.returncode, done.stdout.decode(), done.stderr.decode())


def one_sentence(done: Done) -> str:
    """The one line an operator reads; nothing else on stderr, no secret anywhere."""
    assert "Traceback" not in done.stderr + done.stdout
    assert KEY not in done.stderr + done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("taskinfa-worker: ")
    return lines[0]


def busy_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@pytest.mark.parametrize(
    ("extra", "args", "status", "words"),
    [
        ({"LOG_DIR": "/proc/no-such-folder"}, [], EXIT_CONFIG, "LOG_DIR /proc/no-such-folder"),
        (
            {"WORKSPACE_DIR": "/proc/no-such-folder"},
            [],
            EXIT_PREFLIGHT,
            "workspace writable: /proc/no-such-folder",
        ),
        ({"AGENT_COMMAND": "/no/such/agent {prompt}"}, [], EXIT_PREFLIGHT, "/no/such/agent"),
        ({"PATH": "/no/such/bin"}, [], EXIT_PREFLIGHT, "git is not on PATH"),
        ({}, ["--agent", "nope"], EXIT_CONFIG, "argument --agent: invalid choice: 'nope'"),
        ({}, ["--env-file", "missing.env"], EXIT_CONFIG, "--env-file missing.env does not exist"),
    ],
    ids=["log-dir", "workspace-dir", "agent-missing", "git-missing", "bad-agent", "env-file"],
)
async def test_a_mistake_at_start_is_one_sentence_and_a_documented_status(
    board: Any, tmp_path: Path, extra: dict[str, str], args: list[str], status: int, words: str
) -> None:
    env = worker_env(board, tmp_path, **extra)
    if "PATH" in extra:
        env["PATH"] = extra["PATH"]
    done = await run(env, *args, cwd=tmp_path)
    assert done.returncode == status, done.stderr
    assert words in one_sentence(done)
    assert all(t["status"] == "todo" for t in board.store.list_tasks()[0])


async def test_an_unknown_setting_in_dotenv_says_did_you_mean(board: Any, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CONCURENCY=2\n")
    done = await run(worker_env(board, tmp_path), cwd=tmp_path)
    assert done.returncode == EXIT_CONFIG
    assert one_sentence(done).endswith(
        "Unknown setting CONCURENCY in .env; did you mean CONCURRENCY?"
    )


async def test_credentials_in_the_url_are_refused_without_echoing_them(
    board: Any, tmp_path: Path
) -> None:
    url = board.url.replace("http://", f"http://admin:{KEY}@")
    done = await run(worker_env(board, tmp_path, TASKINFA_API_URL=url), cwd=tmp_path)
    assert done.returncode == EXIT_CONFIG
    assert "TASKINFA_API_URL: must not contain credentials" in one_sentence(done)


async def test_a_health_port_in_use_names_the_setting(board: Any, tmp_path: Path) -> None:
    with busy_port() as sock:
        port = str(sock.getsockname()[1])
        env = worker_env(board, tmp_path, HEALTH_PORT=port, HEALTH_HOST="127.0.0.1")
        done = await run(env, cwd=tmp_path)
    assert done.returncode == EXIT_CONFIG
    assert f"HEALTH_PORT {port} on 127.0.0.1 cannot be used" in one_sentence(done)


async def test_a_refused_key_at_start_exits_3_without_a_traceback(
    board: Any, tmp_path: Path
) -> None:
    done = await run(worker_env(board, tmp_path, TASKINFA_API_KEY=KEY), cwd=tmp_path)
    assert done.returncode == EXIT_AUTH
    assert "Traceback" not in done.stderr
    assert KEY not in done.stderr
    assert "refused the API key" in done.stderr


@pytest.mark.slow
async def test_a_second_process_under_the_same_name_refuses_and_the_first_runs_on(
    board: Any, tmp_path: Path
) -> None:
    env = worker_env(board, tmp_path)
    first = WorkerProcess(env, [], tmp_path / "first.log")
    try:
        await wait_for(lambda: "starting" in first.output(), what="the first worker to start")
        done = await run(env, cwd=tmp_path)
        assert done.returncode == EXIT_NAME_TAKEN
        sentence = one_sentence(done)
        assert f"Another worker (pid {first.proc.pid}) already runs as BOT_NAME=mistaken" in (
            sentence
        )
        assert first.proc.poll() is None  # the first one is untouched
    finally:
        first.signal(signal.SIGTERM)
        assert await first.wait() == 0
    # Gone with its process: the name is free again.
    assert (await run(env, cwd=tmp_path)).returncode == 0


@pytest.mark.slow
async def test_a_namesake_elsewhere_with_a_fresh_heartbeat_is_refused(
    board: Any, tmp_path: Path
) -> None:
    # Another host is another LOG_DIR here: no shared lock, only the board's heartbeats.
    first = WorkerProcess(worker_env(board, tmp_path), [], tmp_path / "first.log")
    try:

        def beating() -> bool:
            return any(w["name"] == "mistaken" for w in board.store.list_workers()[0])

        await wait_for(beating, what="the first worker's heartbeat")
        elsewhere = worker_env(board, tmp_path, LOG_DIR=str(tmp_path / "other-host-logs"))
        done = await run(elsewhere, cwd=tmp_path)
        assert done.returncode == EXIT_NAME_TAKEN, done.stderr
        assert "Another live worker sends heartbeats as BOT_NAME=mistaken" in done.stderr
        assert "Traceback" not in done.stderr
        assert first.proc.poll() is None
    finally:
        first.signal(signal.SIGTERM)
        assert await first.wait() == 0


@pytest.mark.slow
async def test_sigterm_while_the_board_is_unreachable_at_start_exits_at_once(
    tmp_path: Path,
) -> None:
    class Unreachable:
        url = "http://127.0.0.1:9/api"
        api_key = KEY

    worker = WorkerProcess(worker_env(Unreachable(), tmp_path), [], tmp_path / "w.log")
    try:
        await wait_for(lambda: "not reachable" in worker.output() or "retry" in worker.output())
        worker.signal(signal.SIGTERM)
        # Far below the minutes a board request is retried for at start.
        assert await worker.wait(timeout=15) == 0, worker.output()[-2000:]
    finally:
        worker.kill()
    assert "stopped" in worker.output()
