"""setup_logging: formats, slot/task fields, redaction on every sink, stdlib interception."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from taskinfa_worker.logs import LOG_FILE_NAME, setup_logging
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings

BOARD_KEY = "tk_live_4f9a8b7c6d5e4f3a"
ANTHROPIC_KEY = "sk-ant-api03-abcdefghijklmnop"
UNKNOWN_SHAPE = "github_pat_11ABCDEFG0123456789abcdefghij"  # never configured, caught by shape


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """setup_logging reconfigures process-wide state; put it back for the next test."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    access_level = logging.getLogger("aiohttp.access").level
    yield
    logger.remove()  # closes the log file
    logger.configure(patcher=lambda record: None, extra={})
    logger.add(sys.__stderr__)
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(access_level)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "taskinfa_api_url": "http://127.0.0.1:3000/api",
        "taskinfa_api_key": BOARD_KEY,
        "anthropic_api_key": ANTHROPIC_KEY,
        "bot_name": "bot",
        "log_dir": tmp_path / "logs",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


def redactor_for(settings: Settings) -> Redactor:
    return Redactor([settings.taskinfa_api_key, settings.anthropic_api_key])


def log_file(settings: Settings) -> Path:
    return settings.log_dir / settings.bot_name / LOG_FILE_NAME


def log_mistakes() -> None:
    """Every way a key could reach a log line."""
    logger.info("calling the board with key {}", BOARD_KEY)
    logger.bind(slot="bot-1", task_id="task_9", header=f"Bearer {BOARD_KEY}").warning(
        "agent printed {}", ANTHROPIC_KEY
    )
    logger.info("the agent echoed {}", UNKNOWN_SHAPE)
    try:
        raise RuntimeError(f"request failed: Authorization: Bearer {BOARD_KEY}")
    except RuntimeError:
        logger.exception("board request failed")
    logging.getLogger("aiohttp.client").error("stdlib saw %s", ANTHROPIC_KEY)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_key_logged_by_mistake_is_redacted_on_stderr_and_in_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    settings = make_settings(tmp_path, log_format=log_format)
    setup_logging(settings, redactor_for(settings))
    log_mistakes()
    stderr = capsys.readouterr().err
    written = log_file(settings).read_text()
    for output in (stderr, written):
        for secret in (BOARD_KEY, ANTHROPIC_KEY, UNKNOWN_SHAPE):
            assert secret not in output
        assert output.count("[REDACTED]") >= 6
        assert "board request failed" in output
        assert "RuntimeError: request failed" in output  # the traceback itself is kept
        assert "stdlib saw" in output


def test_json_lines_parse_and_carry_slot_and_task(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, log_format="json")
    setup_logging(settings, redactor_for(settings))
    logger.bind(slot="bot-2", task_id="task_abc").info("claimed {}", "Fix {the} bug")
    with logger.contextualize(slot="bot-3", task_id="task_def"):
        logger.info("inside a task")
    logger.info("pool started")
    for output in (capsys.readouterr().err, log_file(settings).read_text()):
        lines = [json.loads(line) for line in output.splitlines()]
        assert [line["message"] for line in lines] == [
            "claimed Fix {the} bug",
            "inside a task",
            "pool started",
        ]
        assert (lines[0]["slot"], lines[0]["task_id"]) == ("bot-2", "task_abc")
        assert (lines[1]["slot"], lines[1]["task_id"]) == ("bot-3", "task_def")
        assert "slot" not in lines[2]
        assert lines[0]["level"] == "INFO"
        assert lines[0]["time"].endswith("+00:00")
        # Internal helper keys never leak into the output.
        assert not [key for line in lines for key in line if key.startswith("_")]


def test_text_lines_show_slot_and_task(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path, log_format="text")
    setup_logging(settings, redactor_for(settings))
    logger.bind(slot="bot-1", task_id="task_1").info("claimed")
    logger.bind(slot="bot-1").info("idle")
    logger.info("started")
    lines = capsys.readouterr().err.splitlines()
    pid = os.getpid()
    assert lines[0].endswith(f"INFO    {pid} bot [bot-1 task_1] claimed")
    assert lines[1].endswith(f"INFO    {pid} bot [bot-1] idle")
    assert lines[2].endswith(f"INFO    {pid} bot started")
    assert "\x1b[" not in "\n".join(lines)  # no colours when stderr is not a terminal


def test_auto_is_json_when_stderr_is_not_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(tmp_path, log_format="auto")
    setup_logging(settings, redactor_for(settings))
    logger.info("hello")
    (line,) = capsys.readouterr().err.splitlines()
    assert json.loads(line)["message"] == "hello"


def test_level_filters_both_sinks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings(tmp_path, log_format="text", log_level="warning")
    setup_logging(settings, redactor_for(settings))
    logger.info("not shown")
    logging.getLogger("aiohttp.server").info("not shown either")
    logger.warning("shown")
    assert "not shown" not in capsys.readouterr().err
    written = log_file(settings).read_text()
    assert "not shown" not in written
    assert "shown" in written


def test_calling_again_replaces_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = make_settings(tmp_path, log_format="text", bot_name="first")
    setup_logging(first, redactor_for(first))
    second = make_settings(tmp_path, log_format="json", bot_name="second")
    setup_logging(second, redactor_for(second))
    logger.info("once")
    (line,) = capsys.readouterr().err.splitlines()
    assert json.loads(line)["message"] == "once"
    assert log_file(first).read_text() == ""
    assert "once" in log_file(second).read_text()


_WRITER = """
import json, os, sys
from pathlib import Path
from loguru import logger
from taskinfa_worker.logs import setup_logging
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings
settings = Settings(
    _env_file=None,
    taskinfa_api_url="http://127.0.0.1:3000/api",
    taskinfa_api_key="tk_live_4f9a8b7c6d5e4f3a",
    bot_name="bot",
    log_dir=Path(sys.argv[1]),
    log_format=sys.argv[2],
)
setup_logging(settings, Redactor([]))
logger.info("hello from {}", os.getpid())
print(os.getpid())
"""


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_two_processes_sharing_a_folder_are_told_apart_by_pid_and_worker(
    tmp_path: Path, log_format: str
) -> None:
    # Two real processes with the same LOG_DIR and BOT_NAME append to one worker.log.
    logs = tmp_path / "logs"
    pids = []
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", _WRITER, str(logs), log_format],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        pids.append(int(done.stdout.strip()))
    lines = (logs / "bot" / LOG_FILE_NAME).read_text().splitlines()
    assert len(lines) == 2
    for pid, line in zip(pids, lines, strict=True):
        if log_format == "json":
            parsed = json.loads(line)
            assert (parsed["pid"], parsed["worker"]) == (pid, "bot")
        else:
            # "<date> <time> <level> <pid> <worker> <message>"
            assert line.split()[3:6] == [str(pid), "bot", "hello"], line
