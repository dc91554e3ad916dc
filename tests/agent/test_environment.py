"""The agent's environment (an allow-list) and its per-slot folders."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from taskinfa_worker.agent.environment import (
    MARKER_VAR,
    MAX_SOCKET_DIR,
    agent_environment,
    prepare_runtime,
    quick_to_prepare,
    slot_folder_name,
)
from tests.agent.support import agent_settings


def test_only_allowed_names_are_inherited(tmp_path: Path) -> None:
    settings = agent_settings(tmp_path, agent_env_allow=["EXTRA"])
    runtime = prepare_runtime(settings, "bot-1")
    parent = {
        "PATH": "/bin",
        "HOME": "/home/x",
        "LC_TIME": "C",
        "EXTRA": "1",
        "AWS_SECRET_ACCESS_KEY": "no",
        "TASKINFA_API_KEY": "tk_nope_nope_nope",
        "GIT_WORK_TREE": "/elsewhere",
        "PYTHONPATH": "/evil",
    }
    env = agent_environment(settings, runtime, marker="m1", parent=parent)
    assert {"PATH", "HOME", "LC_TIME", "EXTRA"} <= env.keys()
    assert not {"AWS_SECRET_ACCESS_KEY", "TASKINFA_API_KEY", "GIT_WORK_TREE", "PYTHONPATH"} & (
        env.keys()
    )
    assert "ANTHROPIC_API_KEY" not in env  # not configured
    assert env[MARKER_VAR] == "m1"
    assert env["GIT_TERMINAL_PROMPT"] == "0"


def test_cli_timeouts_follow_the_stall_timeout(tmp_path: Path) -> None:
    runtime = prepare_runtime(agent_settings(tmp_path), "bot-1")
    slow = agent_environment(
        agent_settings(tmp_path, stall_timeout=600), runtime, marker="m", parent={}
    )
    assert slow["API_TIMEOUT_MS"] == "540000"
    assert slow["CLAUDE_BYTE_STREAM_IDLE_TIMEOUT_MS"] == "300000"
    assert slow["PATH"] == os.defpath
    fast = agent_environment(
        agent_settings(tmp_path, stall_timeout=1), runtime, marker="m", parent={}
    )
    assert fast["API_TIMEOUT_MS"] == fast["CLAUDE_BYTE_STREAM_IDLE_TIMEOUT_MS"] == "10000"
    # An operator who allow-listed a value keeps it.
    tuned = agent_environment(
        agent_settings(tmp_path, agent_env_allow=["CLAUDE_CODE_MAX_RETRIES"]),
        runtime,
        marker="m",
        parent={"CLAUDE_CODE_MAX_RETRIES": "0"},
    )
    assert tuned["CLAUDE_CODE_MAX_RETRIES"] == "0"


def test_credentials_are_copied_only_when_newer(tmp_path: Path) -> None:
    source = tmp_path / "claude-config-source"
    source.mkdir()
    creds = source / ".credentials.json"
    creds.write_text("v1")
    settings = agent_settings(tmp_path)
    runtime = prepare_runtime(settings, "bot-1")
    copy = runtime.config_dir / ".credentials.json"
    assert copy.read_text() == "v1"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert stat.S_IMODE(runtime.config_dir.stat().st_mode) == 0o700

    # The CLI refreshed its own token: an older source must not overwrite it.
    copy.write_text("refreshed")
    os.utime(creds, (1, 1))
    prepare_runtime(settings, "bot-1")
    assert copy.read_text() == "refreshed"
    # A newer source (the operator logged in again) wins.
    creds.write_text("v2")
    os.utime(creds, (copy.stat().st_mtime + 10, copy.stat().st_mtime + 10))
    prepare_runtime(settings, "bot-1")
    assert copy.read_text() == "v2"
    assert creds.read_text() == "v2"  # the source is never written


def test_temporary_folder_is_emptied_and_private(tmp_path: Path) -> None:
    settings = agent_settings(tmp_path)
    runtime = prepare_runtime(settings, "bot-1")
    (runtime.tmp_dir / "left-over").write_text("x")
    (runtime.config_dir / "keep").write_text("x")
    again = prepare_runtime(settings, "bot-1")
    assert list(again.tmp_dir.iterdir()) == []
    assert (again.config_dir / "keep").exists()
    other = prepare_runtime(settings, "bot-2")
    assert other.config_dir != again.config_dir


def test_folders_a_run_left_in_the_temporary_folder_go_too(tmp_path: Path) -> None:
    # The usual leftover (a prompt file) is cleared on the loop; a tree of them is work
    # for a thread, and is cleared all the same.
    settings = agent_settings(tmp_path)
    runtime = prepare_runtime(settings, "bot-1")
    (runtime.tmp_dir / "prompt.md").write_text("x")
    assert quick_to_prepare(runtime)
    nested = runtime.tmp_dir / "cache" / "deep"
    nested.mkdir(parents=True)
    (nested / "file").write_text("x")
    assert not quick_to_prepare(runtime)
    again = prepare_runtime(settings, "bot-1")
    assert list(again.tmp_dir.iterdir()) == []
    assert stat.S_IMODE(again.tmp_dir.stat().st_mode) == 0o700


def test_long_paths_move_sockets_to_a_short_folder(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    settings = agent_settings(tmp_path, workspace_dir=deep)
    runtime = prepare_runtime(settings, "bot-1")
    assert runtime.config_dir.is_relative_to(deep.resolve())
    assert len(str(runtime.run_dir)) <= MAX_SOCKET_DIR
    assert runtime.tmp_dir.is_dir()


def test_slot_folder_names_are_safe() -> None:
    assert slot_folder_name("bot-1") == "bot-1"
    assert "/" not in slot_folder_name("../../etc")
    assert slot_folder_name("..") != slot_folder_name("_")
    assert slot_folder_name("a/b") != slot_folder_name("a_b")
