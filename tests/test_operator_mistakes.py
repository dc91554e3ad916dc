"""Each mistake an operator can make at start, as they meet it: `taskinfa-worker run` in a
process against the local board, one sentence on stderr naming what to fix, no traceback,
no secret, and the exit status docs/reliability.md lists: each test looks its row up in that
table, and every row is met by a test."""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from taskinfa_worker.settings import Settings
from tests.deployfiles import ROOT
from tests.pool.support import AGENT_COMMAND, WorkerProcess, wait_for

KEY = "tk_operator_test_key_0001"
RELIABILITY = ROOT / "docs" / "reliability.md"
# Rows met by a test elsewhere, where the pool runs in the test's event loop.
MET_ELSEWHERE = {
    # tests/pool/test_worker_faults.py
    "agent executable vanishes while running, agent key refused, repository host unreachable, "
    "board refuses a run's ending",
}


def documented(mistake: str) -> tuple[str, str]:
    """What docs/reliability.md says the worker says, and its exit status, for a mistake."""
    section = RELIABILITY.read_text().split("## Operator mistakes", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 3:
            rows[cells[0]] = (cells[1], cells[2])
    assert mistake in rows, f"docs/reliability.md has no row {mistake!r}"
    return rows[mistake]


def documented_status(mistake: str) -> int:
    return int(documented(mistake)[1])


def documented_words(mistake: str) -> list[str]:
    """The literal parts of the documented sentence (between the … and /x placeholders)."""
    said = documented(mistake)[0]
    quoted = re.findall(r"`([^`]+)`", said)
    assert quoted, said
    parts = re.split(r"…|/x|\bx\b|\bN\b|8080", quoted[0])
    return [part.strip(" ;().") for part in parts if len(part.strip(" ;().")) > 3]


def as_documented(done: Done, mistake: str) -> str:
    """The documented exit status and sentence (one line, no traceback); the sentence."""
    assert done.returncode == documented_status(mistake), done.stderr
    sentence = one_sentence(done)
    for part in documented_words(mistake):
        assert part in sentence, f"docs/reliability.md says {part!r}; the worker said {sentence}"
    return sentence


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
    ("mistake", "extra", "args", "words"),
    [
        (
            "`LOG_DIR` not writable",
            {"LOG_DIR": "/proc/no-such-folder"},
            [],
            "LOG_DIR /proc/no-such-folder",
        ),
        (
            "`WORKSPACE_DIR` not writable",
            {"WORKSPACE_DIR": "/proc/no-such-folder"},
            [],
            "workspace writable: /proc/no-such-folder",
        ),
        (
            "`AGENT_COMMAND`'s executable missing",
            {"AGENT_COMMAND": "/no/such/agent {prompt}"},
            [],
            "/no/such/agent",
        ),
        (
            "`AGENT=claude` and no `claude` (`CLAUDE_BIN`) on `PATH`",
            {"AGENT": "claude", "CLAUDE_BIN": "/no/such/claude"},
            [],
            "/no/such/claude",
        ),
        (
            "a value a setting cannot take (`CONCURRENCY=0`)",
            {"CONCURRENCY": "0"},
            [],
            "CONCURRENCY",
        ),
        ("git not installed", {"PATH": "/no/such/bin"}, [], "git is not on PATH"),
        ("`--agent nope`", {}, ["--agent", "nope"], "argument --agent: invalid choice: 'nope'"),
        (
            "`--env-file` that does not exist",
            {},
            ["--env-file", "missing.env"],
            "--env-file missing.env does not exist",
        ),
    ],
    ids=[
        "log-dir",
        "workspace-dir",
        "agent-missing",
        "claude-missing",
        "bad-value",
        "git-missing",
        "bad-agent",
        "env-file",
    ],
)
async def test_a_mistake_at_start_is_one_sentence_and_a_documented_status(
    board: Any,
    tmp_path: Path,
    mistake: str,
    extra: dict[str, str],
    args: list[str],
    words: str,
) -> None:
    env = worker_env(board, tmp_path, **extra)
    if "PATH" in extra:
        env["PATH"] = extra["PATH"]
    done = await run(env, *args, cwd=tmp_path)
    assert words in as_documented(done, mistake)
    assert all(t["status"] == "todo" for t in board.store.list_tasks()[0])


async def test_an_unknown_setting_in_dotenv_says_did_you_mean(board: Any, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CONCURENCY=2\n")
    done = await run(worker_env(board, tmp_path), cwd=tmp_path)
    assert as_documented(done, "unknown name in `.env`").endswith(
        "Unknown setting CONCURENCY in .env; did you mean CONCURRENCY?"
    )


async def test_credentials_in_the_url_are_refused_without_echoing_them(
    board: Any, tmp_path: Path
) -> None:
    url = board.url.replace("http://", f"http://admin:{KEY}@")
    done = await run(worker_env(board, tmp_path, TASKINFA_API_URL=url), cwd=tmp_path)
    sentence = as_documented(done, "`user:pass@` in `TASKINFA_API_URL`")
    assert "TASKINFA_API_URL: must not contain credentials" in sentence
    assert "admin" not in sentence  # the URL is not echoed


async def test_a_health_port_in_use_names_the_setting(board: Any, tmp_path: Path) -> None:
    with busy_port() as sock:
        port = str(sock.getsockname()[1])
        env = worker_env(board, tmp_path, HEALTH_PORT=port, HEALTH_HOST="127.0.0.1")
        done = await run(env, cwd=tmp_path)
    sentence = as_documented(done, "`HEALTH_PORT` in use")
    assert f"HEALTH_PORT {port} on 127.0.0.1 cannot be used" in sentence
    assert "Start-up check failed: health port free" in sentence
    # Refused before anything was claimed.
    assert all(t["status"] == "todo" for t in board.store.list_tasks()[0])


async def test_a_refused_key_at_start_exits_3_without_a_traceback(
    board: Any, tmp_path: Path
) -> None:
    done = await run(worker_env(board, tmp_path, TASKINFA_API_KEY=KEY), cwd=tmp_path)
    assert done.returncode == documented_status(
        "board refuses `TASKINFA_API_KEY` (at start or later)"
    )
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
        sentence = as_documented(done, "second process, same `BOT_NAME` and `LOG_DIR`")
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
        status = documented_status("same `BOT_NAME` on another host, both live")
        assert done.returncode == status, done.stderr
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
        status = documented_status("SIGTERM while the board is unreachable at start")
        assert await worker.wait(timeout=15) == status, worker.output()[-2000:]
    finally:
        worker.kill()
    assert "stopped" in worker.output()


@pytest.mark.slow
async def test_the_dashboard_address_without_api_names_the_setting(
    board: Any, tmp_path: Path
) -> None:
    """Not "not reachable yet" with the board's 404 page: the board answered, and what to
    fix is the URL. It still retries (the setting may be fixed by a restart of the board's
    proxy), so the operator reads the line and stops it."""
    mistake = "`TASKINFA_API_URL` without `/api` (the dashboard's own address)"
    root = board.url.removesuffix("/api")
    worker = WorkerProcess(
        worker_env(board, tmp_path, TASKINFA_API_URL=root), [], tmp_path / "w.log"
    )
    try:
        await wait_for(lambda: "retrying in" in worker.output())
        worker.signal(signal.SIGTERM)
        assert await worker.wait(timeout=15) == documented_status(mistake)
    finally:
        worker.kill()
    said = next(line for line in worker.output().splitlines() if "retrying in" in line)
    for part in documented_words(mistake):
        assert part in said, f"docs/reliability.md says {part!r}; the worker said {said}"
    assert "<html" not in worker.output().lower()
    assert board.api_key not in worker.output()


def test_every_mistake_in_the_table_is_met_by_a_test() -> None:
    section = RELIABILITY.read_text().split("## Operator mistakes", 1)[1].split("\n## ", 1)[0]
    rows = [
        line.strip().strip("|").split("|")[0].strip()
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith(("| Mistake", "|---"))
    ]
    assert len(rows) >= 10
    # Each test above names the row it looks up: a row missing from this file is untested.
    source = Path(__file__).read_text()
    missing = [row for row in rows if f'"{row}"' not in source and row not in MET_ELSEWHERE]
    assert not missing, f"rows of docs/reliability.md that no test meets: {missing}"
