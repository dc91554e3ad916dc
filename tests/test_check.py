"""`taskinfa-worker check` and `status` against the local board, with a fake `claude`."""

from __future__ import annotations

import io
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from taskinfa_worker import check
from taskinfa_worker.agent import sandbox
from taskinfa_worker.board.llm_store import LlmRecords
from taskinfa_worker.check import run_checks, show_status
from taskinfa_worker.health import serve_health
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.pool.state import PoolState, SlotState
from taskinfa_worker.settings import Settings
from taskinfa_worker.status_file import StatusFile
from tests.board_support import BoardHandle, MakeBoard

ANTHROPIC_KEY = "sk-ant-api03-check-test-0123456789"


def script(path: Path, body: str) -> Path:
    """An executable Python script (a fake CLI)."""
    path.write_text(f"#!{sys.executable}\n{body}\n")
    path.chmod(0o755)
    return path


def fake_claude(
    tmp_path: Path, body: str = "print('2.1.330 (Claude Code)')", name: str = "claude"
) -> Path:
    return script(tmp_path / name, "import sys\n" + body)


def make_settings(tmp_path: Path, board: BoardHandle | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "taskinfa_api_url": board.url if board else "http://127.0.0.1:9/api",
        "taskinfa_api_key": board.api_key if board else "tk_nobody_listens_here",
        "anthropic_api_key": ANTHROPIC_KEY,
        "bot_name": "checker",
        "workspace_dir": tmp_path / "workspace",
        "log_dir": tmp_path / "logs",
        "request_timeout": 10,
    }
    values.update(overrides)
    if "claude_bin" not in values:
        values["claude_bin"] = str(fake_claude(tmp_path))
    return Settings(_env_file=None, **values)


async def checks(settings: Settings) -> tuple[int, dict[str, str]]:
    """Run the checks; return the exit status and {label: whole line}."""
    out = io.StringIO()
    status = await run_checks(settings, out=out)
    text = out.getvalue()
    for secret in (settings.taskinfa_api_key.get_secret_value(), ANTHROPIC_KEY):
        assert secret not in text
    lines = text.splitlines()
    by_label = {}
    for line in lines[:-1]:
        outcome, _, rest = line.partition("  ")
        assert outcome.strip() in {"ok", "warn", "skip", "FAIL"}, line
        by_label[rest.strip().split(" (")[0].split(":")[0]] = line
    assert lines[-1].endswith(("checks passed", "checks failed"))
    return status, by_label


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_everything_in_place_passes(tmp_path: Path, board: BoardHandle) -> None:
    board.create_task("one")
    board.create_task("two")
    settings = make_settings(tmp_path, board)
    status, lines = await checks(settings)
    assert status == 0, lines
    assert lines["settings valid"].startswith("ok    settings valid (BOT_NAME=checker")
    assert lines["board reachable"] == f"ok    board reachable ({board.url})"
    assert lines["board key accepted"].endswith("2 tasks in todo)")
    assert lines["claim route present"] == "ok    claim route present (claims are atomic)"
    claude_line = lines["claude CLI 2.1.330"]
    assert claude_line == f"ok    claude CLI 2.1.330 (Claude Code) ({settings.claude_bin})"
    assert lines["Claude credentials"] == "ok    Claude credentials (ANTHROPIC_API_KEY)"
    assert next(line for label, line in lines.items() if label.startswith("git version"))
    assert lines["workspace writable"].startswith("ok    workspace writable (")
    assert lines["log dir writable"] == f"ok    log dir writable ({tmp_path / 'logs' / 'checker'})"
    # The folders exist now, and the probe files are gone.
    assert list((tmp_path / "workspace").iterdir()) == []
    # The claim probe claimed nothing.
    assert all(task["status"] == "todo" for task in board.store.list_tasks()[0])


async def test_a_refused_key_fails_but_the_board_is_reachable(
    tmp_path: Path, board: BoardHandle
) -> None:
    settings = make_settings(tmp_path, board, taskinfa_api_key="tk_wrong_key_0123456789")
    status, lines = await checks(settings)
    assert status == 1
    assert lines["board reachable"].startswith("ok    ")
    assert lines["board key accepted"].startswith("FAIL  board key accepted: ")
    assert "401" in lines["board key accepted"]
    assert lines["claim route"].startswith("skip  ")
    # The rest is still checked, so one run shows every problem.
    assert lines["workspace writable"].startswith("ok    ")


async def test_an_unreachable_board_fails(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/api"
    status, lines = await checks(make_settings(tmp_path, taskinfa_api_url=url))
    assert status == 1
    assert lines["board reachable"].startswith(f"FAIL  board reachable: {url}: ")
    assert lines["board key accepted"].startswith("skip  ")


async def test_the_dashboard_address_without_api_says_what_to_fix(
    tmp_path: Path, board: BoardHandle
) -> None:
    """The most likely first mistake: the address of the dashboard's page, not its API.
    The board answers 404 with a web page; the line names the setting, not the page."""
    root = board.url.removesuffix("/api")
    status, lines = await checks(make_settings(tmp_path, board, taskinfa_api_url=root))
    assert status == 1
    assert lines["board reachable"] == f"ok    board reachable ({root})"
    assert lines["board key accepted"] == (
        f"FAIL  board key accepted: cannot tell: GET {root}/tasks answered 404: TASKINFA_API_URL"
        " is not the board's API, which on a Taskinfa dashboard ends in /api"
        " (http://localhost:3000/api)"
    )


async def test_a_board_without_the_claim_route_warns_only(
    tmp_path: Path, make_board: MakeBoard
) -> None:
    board = await make_board(claim_route=False)
    status, lines = await checks(make_settings(tmp_path, board))
    assert status == 0
    line = lines["claim route missing"]
    assert line.startswith("warn  claim route missing (POST /tasks/{id}/claim answered 404)")
    assert "not atomic" in line


async def test_a_missing_claude_fails(tmp_path: Path, board: BoardHandle) -> None:
    missing = str(tmp_path / "no-such-claude")
    status, lines = await checks(make_settings(tmp_path, board, claude_bin=missing))
    assert status == 1
    assert lines["claude CLI found"].startswith(f"FAIL  claude CLI found: {missing} is not")


async def test_a_failing_claude_fails_with_its_error(tmp_path: Path, board: BoardHandle) -> None:
    broken = fake_claude(
        tmp_path, "sys.stderr.write('cannot load config\\n'); sys.exit(3)", name="broken"
    )
    status, lines = await checks(make_settings(tmp_path, board, claude_bin=str(broken)))
    assert status == 1
    assert lines["claude CLI runs"].endswith("--version: exit status 3: cannot load config")


async def test_a_hanging_claude_is_stopped_at_the_timeout(
    tmp_path: Path, board: BoardHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(check, "VERSION_TIMEOUT", 0.5)
    hanging = fake_claude(tmp_path, "import time\ntime.sleep(600)", name="hanging")
    status, lines = await checks(make_settings(tmp_path, board, claude_bin=str(hanging)))
    assert status == 1
    assert lines["claude CLI runs"].endswith("no answer within 0.5 s")
    # Killed and reaped, not left behind.
    left = [
        child
        for child in psutil.Process().children(recursive=True)
        if str(hanging) in " ".join(child.cmdline())
    ]
    assert left == []


async def test_the_claude_check_gets_no_secrets(
    tmp_path: Path, board: BoardHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("TASKINFA_API_KEY", board.api_key)
    dump = tmp_path / "env.txt"
    spy = fake_claude(
        tmp_path,
        f"import os\nopen({str(dump)!r}, 'w').write(repr(dict(os.environ)))\nprint('1.0')",
        name="spy",
    )
    status, _ = await checks(make_settings(tmp_path, board, claude_bin=str(spy)))
    assert status == 0
    seen = dump.read_text()
    assert ANTHROPIC_KEY not in seen
    assert board.api_key not in seen


async def test_agent_command_checks_its_executable_instead_of_claude(
    tmp_path: Path, board: BoardHandle
) -> None:
    tool = script(tmp_path / "my-agent", "print('hi')")
    settings = make_settings(
        tmp_path,
        board,
        agent="command",
        agent_command=f"{tool} --prompt {{prompt}}",
        claude_bin=str(tmp_path / "absent"),
    )
    status, lines = await checks(settings)
    assert status == 0
    assert lines["claude CLI"] == "skip  claude CLI (AGENT=command)"
    assert lines["agent command found"] == f"ok    agent command found ({tool})"
    assert "Claude credentials" not in lines

    settings = make_settings(
        tmp_path, board, agent="command", agent_command="no-such-agent-tool {prompt}"
    )
    status, lines = await checks(settings)
    assert status == 1
    assert lines["agent command found"].startswith("FAIL  agent command found: no-such-agent")


async def test_missing_credentials_warn(tmp_path: Path, board: BoardHandle) -> None:
    settings = make_settings(
        tmp_path, board, anthropic_api_key=None, claude_config_source=tmp_path / "claude-cfg"
    )
    status, lines = await checks(settings)
    assert status == 0
    assert lines["Claude credentials"].startswith("warn  Claude credentials: no ANTHROPIC")
    (tmp_path / "claude-cfg").mkdir()
    (tmp_path / "claude-cfg" / ".credentials.json").write_text("{}")
    status, lines = await checks(settings)
    assert lines["Claude credentials"].startswith("ok    Claude credentials (")


async def test_unwritable_folders_fail(tmp_path: Path, board: BoardHandle) -> None:
    # A regular file where a folder should be: fails even for root, unlike chmod.
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    settings = make_settings(
        tmp_path, board, workspace_dir=blocker / "workspace", log_dir=blocker / "logs"
    )
    status, lines = await checks(settings)
    assert status == 1
    assert lines["workspace writable"].startswith(f"FAIL  workspace writable: {blocker}")
    assert lines["log dir writable"].startswith(f"FAIL  log dir writable: {blocker}")


async def test_the_health_port_is_checked_and_a_taken_one_only_warns(
    tmp_path: Path, board: BoardHandle
) -> None:
    port = free_port()
    settings = make_settings(tmp_path, board, health_host="127.0.0.1", health_port=port)
    status, lines = await checks(settings)
    assert status == 0
    assert lines["health port free"] == f"ok    health port free (127.0.0.1:{port})"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        status, lines = await checks(settings)
    # `check` may run beside the worker that holds the port (`run` refuses it instead).
    assert status == 0
    assert lines["health port free"].startswith(
        f"warn  health port free: HEALTH_PORT {port} on 127.0.0.1 cannot be used "
        "(Address already in use)"
    )


# --- status -----------------------------------------------------------------------------------
def busy_state() -> PoolState:
    state = PoolState("checker", [SlotState("checker-1"), SlotState("checker-2")])
    state.slots[1].set("working", "task_42", "Write the docs")
    return state


async def test_status_from_the_health_port(tmp_path: Path) -> None:
    state = busy_state()
    serving = make_settings(tmp_path, health_host="127.0.0.1", health_port=0)
    async with serve_health(serving, state, Metrics()) as server:
        assert server is not None
        reader = make_settings(tmp_path, health_port=server.port, health_host="0.0.0.0")
        out = io.StringIO()
        assert await show_status(reader, out=out) == 0
    text = out.getvalue()
    assert re.search(
        r"^checker-2 +working +task_42 +since \S+ \(for [^)]+\) +Write the docs$", text, re.M
    )
    assert text.rstrip().endswith(f"# from http://127.0.0.1:{server.port}/status")


async def test_status_falls_back_to_the_file(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, health_port=free_port())
    StatusFile(settings.status_file).write(busy_state())
    out = io.StringIO()
    assert await show_status(settings, out=out) == 0
    text = out.getvalue()
    assert re.search(
        r"^checker-2 +working +task_42 +since \S+ \(for [^)]+\) +Write the docs$", text, re.M
    )
    assert "did not answer" in text.splitlines()[-1]
    assert f"from {settings.status_file}, written " in text.splitlines()[-1]


async def test_status_without_any_source_fails(tmp_path: Path) -> None:
    out = io.StringIO()
    assert await show_status(make_settings(tmp_path), out=out) == 1
    assert "no status file at" in out.getvalue()


@pytest.mark.parametrize("profile", ["v1", "v2"])
async def test_todo_count_does_not_trust_total(
    tmp_path: Path, make_board: MakeBoard, profile: str
) -> None:
    # Real boards send the page's length as "total": a count read from a one-task page
    # said "1 task in todo" with 8 waiting.
    board = await make_board(profile=profile)
    for n in range(8):
        board.create_task(f"t{n}")
    status, lines = await checks(make_settings(tmp_path, board))
    assert status == 0, lines
    assert lines["board key accepted"].endswith("(workspace default: 8 tasks in todo)")


def test_a_full_page_is_counted_as_at_least_that_many() -> None:
    assert check.todo_count([]) == "0 tasks"
    assert check.todo_count([object()]) == "1 task"
    assert check.todo_count([object()] * check.COUNT_LIMIT) == "100 or more tasks"


@pytest.mark.parametrize(
    ("profile", "sessions", "expected"),
    [
        ("v2", True, "ok    sessions (0 active: each run shows in the dashboard as a session)"),
        ("v2", False, "warn  sessions off (SESSIONS=false on a board with sessions"),
        ("v1", True, "ok    no sessions route (not the current release"),
        ("full", True, "ok    no sessions route (not the current release"),
    ],
)
async def test_sessions_are_reported_as_the_board_has_them(
    tmp_path: Path, make_board: MakeBoard, profile: str, sessions: bool, expected: str
) -> None:
    board = await make_board(profile=profile)
    status, lines = await checks(make_settings(tmp_path, board, sessions=sessions))
    assert status == 0, lines
    label = expected[6:].split(" (")[0]
    assert lines[label].startswith(expected), lines


@pytest.mark.parametrize(
    ("profile", "chat", "expected"),
    [
        ("v2", True, "ok    chat on (0 waiting: people's messages on tasks are answered)"),
        ("v2", False, "ok    chat off (CHAT=false: people's messages"),
        ("v1", True, "ok    no chat route (an earlier release"),
    ],
)
async def test_the_check_says_whether_chat_is_on(
    tmp_path: Path, make_board: MakeBoard, profile: str, chat: bool, expected: str
) -> None:
    board = await make_board(profile=profile)
    status, lines = await checks(make_settings(tmp_path, board, chat=chat))
    assert status == 0, lines
    label = expected[6:].split(" (")[0]
    assert lines[label].startswith(expected), lines


def failing_bwrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bwrap that fails as in a container without user namespaces, probed afresh."""
    folder = tmp_path / "fake-bin"
    folder.mkdir()
    fake = script(
        folder / "bwrap", "import sys\nsys.exit('bwrap: No permissions to create new namespace')"
    )
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.setattr(sandbox, "_probed", None)


@pytest.mark.parametrize(
    ("mode", "outcome", "words"),
    [
        ("off", "ok  ", "agent sandbox off: SANDBOX=off"),
        ("auto", "warn", "agent sandbox off: SANDBOX=auto: "),
        ("on", "FAIL", "agent sandbox off: SANDBOX=on but "),
    ],
)
async def test_the_sandbox_line_says_which_is_in_force_and_why(
    tmp_path: Path,
    board: BoardHandle,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    outcome: str,
    words: str,
) -> None:
    failing_bwrap(tmp_path, monkeypatch)
    status, lines = await checks(make_settings(tmp_path, board, sandbox=mode))
    line = lines["agent sandbox off"]
    assert line.startswith(f"{outcome}  {words}"), line
    if mode != "off":
        assert "No permissions to create new namespace" in line
        assert "user namespaces" in line  # and what the runtime must allow
    assert status == (1 if mode == "on" else 0)


async def test_a_working_sandbox_is_said_to_be_on(tmp_path: Path, board: BoardHandle) -> None:
    probe = await sandbox.probe_bwrap()
    if probe.bwrap is None:
        pytest.skip(f"no sandbox here: {probe.reason}")
    _status, lines = await checks(make_settings(tmp_path, board, sandbox="auto"))
    assert lines["agent sandbox on"].startswith("ok    agent sandbox on: SANDBOX=auto: ")


async def test_the_model_choice_is_reported_without_its_tokens(
    tmp_path: Path, make_board: MakeBoard
) -> None:
    board = await make_board(profile="v2")
    records = LlmRecords(board.store)
    token = "team-check-token-5e4d3c2b1a"
    records.set_provider("litellm", base_url="http://127.0.0.1:4000", auth_token=token)
    records.set_choice("task", "anthropic", "claude-team")
    records.set_choice("task", "litellm", "proxy-model", task_list_id="default")
    out = io.StringIO()
    assert await run_checks(make_settings(tmp_path, board, model="own-model"), out=out) == 0
    assert token not in out.getvalue()
    status, lines = await checks(make_settings(tmp_path, board))
    assert status == 0, lines
    assert lines["model choice"] == (
        "ok    model choice (the workspace: claude-team on anthropic; 1 project choice(s))"
    )
    assert "MODEL=own-model wins over their models" in out.getvalue()
    # A choice the worker cannot follow is said, and only warned about.
    records.set_choice("task", "ollama", "qwen3", task_list_id="default")
    status, lines = await checks(make_settings(tmp_path, board))
    assert status == 0
    assert lines["model choice"].startswith("warn  model choice")
    assert "names provider 'ollama', which is not configured" in lines["model choice"]


@pytest.mark.parametrize(
    ("profile", "overrides", "expected"),
    [
        ("v1", {}, "ok    no llm-config route (not the current release"),
        ("v2", {"anthropic_base_url": "http://127.0.0.1:9"}, "ok    model choice (ANTHROPIC_BASE"),
    ],
)
async def test_no_model_choice_where_none_applies(
    tmp_path: Path, make_board: MakeBoard, profile: str, overrides: dict[str, Any], expected: str
) -> None:
    board = await make_board(profile=profile)
    _status, lines = await checks(make_settings(tmp_path, board, **overrides))
    label = expected[6:].split(" (")[0]
    assert lines[label].startswith(expected), lines
