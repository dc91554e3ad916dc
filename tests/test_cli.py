"""The command line as an operator meets it: a process, its exit status, its words."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from taskinfa_worker.settings import Settings
from tests.deployfiles import ROOT


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    return subprocess.run(
        [sys.executable, "-m", "taskinfa_worker", *args],
        env={**base, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_missing_key_exits_2_with_one_plain_sentence(tmp_path: Path) -> None:
    done = run_cli("run", env={"TASKINFA_API_URL": "http://127.0.0.1:9/api"}, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "taskinfa-worker: Missing setting TASKINFA_API_KEY: Board API key (tk_...). "
        "Environment or .env only."
    ]
    assert "Traceback" not in done.stderr


def test_invalid_flag_value_exits_2_naming_the_setting(tmp_path: Path) -> None:
    env = {"TASKINFA_API_URL": "http://127.0.0.1:9/api", "TASKINFA_API_KEY": "tk_cli_test_0001"}
    done = run_cli("run", "--concurrency", "1000", env=env, cwd=tmp_path)
    assert done.returncode == 2
    assert "Invalid setting CONCURRENCY" in done.stderr
    assert "Traceback" not in done.stderr
    assert "tk_cli_test_0001" not in done.stderr + done.stdout


def test_dotenv_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TASKINFA_API_URL=http://127.0.0.1:9/api\nCONCURRENCY=zero\n")
    done = run_cli("run", cwd=tmp_path)
    assert done.returncode == 2
    assert "Missing setting TASKINFA_API_KEY" in done.stderr or "CONCURRENCY" in done.stderr


def test_help_lists_every_flag_with_its_env_var(tmp_path: Path) -> None:
    done = run_cli("run", "--help", env={"COLUMNS": "400"}, cwd=tmp_path)
    assert done.returncode == 0
    for flag, env in (
        ("--concurrency", "CONCURRENCY"),
        ("--drain-timeout", "DRAIN_TIMEOUT"),
        ("--claude-bin", "CLAUDE_BIN"),
        ("--workspace-dir", "WORKSPACE_DIR"),
    ):
        assert flag in done.stdout
        assert f"env {env}" in done.stdout


@pytest.mark.parametrize(
    "entry",
    [
        ["-m", "taskinfa_worker"],
        ["-c", "from taskinfa_worker.cli import main; raise SystemExit(main())"],
    ],
)
def test_module_and_console_entry_points(tmp_path: Path, entry: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, *entry, "--version"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("taskinfa-worker 0.")


def help_entries(text: str) -> dict[str, tuple[str, str]]:
    """{flag: (env var, default)} of every option whose help names its env var."""
    entries: list[str] = []
    for line in text.splitlines():
        if re.match(r"^  -", line):
            entries.append(line)
        elif entries and line.startswith("    "):
            entries[-1] += " " + line.strip()
    found = {}
    for entry in entries:
        match = re.search(r"\[env ([A-Z0-9_]+); default: ([^\]]*)\]$", entry)
        if match:
            flag = entry.split()[0].rstrip(",")
            found[flag] = (match.group(1), match.group(2))
    return found


def documented_flags() -> dict[str, tuple[str, str]]:
    """{flag: (env var, default)} from docs/configuration.md."""
    found = {}
    for line in (ROOT / "docs" / "configuration.md").read_text().splitlines():
        match = re.match(r"^\| `([A-Z0-9_]+)` \| `(--[a-z0-9-]+)` \| (.+?) \| ", line)
        if match:
            found[match.group(2)] = (match.group(1), match.group(3).strip("`"))
    return found


@pytest.mark.parametrize("command", ["run", "check", "status"])
def test_help_and_the_configuration_page_agree(tmp_path: Path, command: str) -> None:
    done = run_cli(command, "--help", env={"COLUMNS": "200"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    shown = help_entries(done.stdout)
    documented = documented_flags()
    assert len(documented) > 40
    assert sorted(shown) == sorted(documented)  # the same flags, none missing on either side
    for flag, (env, default) in documented.items():
        assert shown[flag][0] == env, flag
        assert shown[flag][1] == default, flag
