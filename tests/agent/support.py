"""Helpers for the agent tests: settings around the fake Claude Code, jobs, process checks."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from taskinfa_worker.agent import Activity, AgentJob
from taskinfa_worker.client.models import Project, Task
from taskinfa_worker.settings import Settings

FAKES = Path(__file__).parents[1] / "fakes"
FAKE_CLAUDE = FAKES / "fake_claude.py"


def agent_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for one test: the fake CLI, small bounds, folders in ``tmp_path``."""
    values: dict[str, Any] = {
        "taskinfa_api_url": "http://127.0.0.1:9/api",
        "taskinfa_api_key": "tk_test_boardkey123",
        "claude_bin": str(FAKE_CLAUDE),
        "stall_timeout": 10.0,
        "task_timeout": 60.0,
        "kill_grace": 2.0,
        "workspace_dir": tmp_path / "workspaces",
        "log_dir": tmp_path / "logs",
        "claude_config_source": tmp_path / "claude-config-source",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@dataclass
class JobFactory:
    tmp_path: Path
    activities: list[Activity] = field(default_factory=list)
    count: int = 0

    def __call__(
        self,
        title: str = "Fix the thing FAKE_MODE=success",
        *,
        description: str | None = "Please fix it.",
        slot: str = "bot-1",
        **fields: Any,
    ) -> AgentJob:
        self.count += 1
        workspace = self.tmp_path / f"ws-{self.count}"
        workspace.mkdir(parents=True, exist_ok=True)
        task = Task(
            id=f"task-{self.count}",
            title=title,
            description=description,
            status="in_progress",
            priority="high",
            labels=["backend"],
        )
        values: dict[str, Any] = {
            "task": task,
            "project": Project(id="p1", name="Demo project"),
            "workspace": workspace,
            "branch": f"taskinfa/task-{self.count}",
            "slot": slot,
            "attempt": 1,
            "transcript_path": self.tmp_path / "logs" / task.id / "attempt-1.jsonl",
            "on_activity": self.activities.append,
        }
        values.update(fields)
        return AgentJob(**values)


def recorded(job: AgentJob, name: str) -> Any:
    """What the fake CLI recorded about its run (argv, env, stdin), or its prompt text."""
    path = job.workspace / ".fake_claude" / name
    return path.read_text() if name.endswith(".txt") else json.loads(path.read_text())


def transcript_lines(job: AgentJob) -> list[dict[str, Any]]:
    return [json.loads(line) for line in job.transcript_path.read_text().splitlines()]


def gone(pid: int) -> bool:
    """The process no longer exists at all: not running and not a zombie either."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def state(pid: int) -> str:
    try:
        return psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return "gone"


def wait_until_gone(pid: int, timeout: float) -> bool:
    """Poll until the pid is gone (a janitor reaps in the background)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return gone(pid)


def processes_with_env(entry: str) -> list[int]:
    """Live processes whose environment holds ``NAME=value``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        name, _, value = entry.partition("=")
        if env.get(name) == value:
            found.append(proc.pid)
    return found
