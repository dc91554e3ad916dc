"""A prompt-injected agent tries every way out of its task, with the sandbox on and off.

One real ``taskinfa-worker run --exit-when-idle`` per mode, run as an ordinary user (as in
production: root could read everything anyway), on the local board, with
``tests/fakes/hostile_agent.py [escape]`` as its agent. Around it the test plants what an
agent must not reach: the board key in the worker's environment and its ``.env``, a secret
in the worker's home, the Claude credentials' source, a kept sibling task tree with a
canary, a project's mirror, another slot's config dir with credentials, an old transcript
in ``LOG_DIR``; and a decoy process of the same user with the key in its environment,
which shows that the agent's scan does find a key wherever the kernel lets it read.

With the sandbox on every attempt fails. With it off the worker's own process stays closed
(it is non-dumpable) and marked leftovers are swept; the rest is open, and the test says so,
because docs/reliability.md says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from taskinfa_worker.agent.sandbox import probe_bwrap
from taskinfa_worker.board import BoardOptions, BoardStore, start_board
from taskinfa_worker.errors import EXIT_PREFLIGHT
from tests.unprivileged import User, ordinary_user

REPO = Path(__file__).resolve().parents[2]
HOSTILE_AGENT = REPO / "tests" / "fakes" / "hostile_agent.py"
BOT = "escapee"
CANARY = "CANARY-not-for-agents"
# Where the agent tries to read and write, relative to the test's folder.
READS = {
    ".env": "cwd/.env",
    "home secret": "home/.git-credentials",
    "claude credentials source": "claude-source/.credentials.json",
    "sibling task tree": "workspace/tasks/task_sibling-0001/CANARY",
    "a project's mirror": "workspace/repos/project-0001.git/HEAD",
    "other slot's credentials": f"workspace/.agents/{BOT}-2/config/.credentials.json",
    "transcript": f"logs/{BOT}/task_old/attempt-1-20250101T000000Z.jsonl",
}
WRITES = {
    "worker's cwd": "cwd/hostile-wrote",
    "home": "home/hostile-wrote",
    "LOG_DIR": "logs/hostile-wrote",
    "WORKSPACE_DIR": "workspace/hostile-wrote",
    "sibling task tree": "workspace/tasks/task_sibling-0001/hostile-wrote",
}


def sandbox_works() -> str | None:
    """Why the sandboxed run cannot happen here, or None."""
    probe = anyio.run(probe_bwrap)
    return None if probe.bwrap is not None else probe.reason


@dataclass
class EscapeRun:
    exit_code: int
    log: str
    task: dict[str, Any]
    report: dict[str, Any] | None
    key_digest: str
    worker_pid: int | None
    decoy_pid: int
    leftovers: dict[str, list[int]]  # "marked" / "unmarked": pids still alive afterwards
    written: dict[str, bool]  # on the host, after the run
    tmp_target: Path


def _plant(root: Path, key: str) -> None:
    for relative in READS.values():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{CANARY} {relative}\n")
    (root / "cwd" / ".env").write_text(f"TASKINFA_API_KEY={key}\n")
    # A kept tree survives the worker's start-up prune, as a debugging session's would.
    (root / "workspace" / "tasks" / "task_sibling-0001.kept").write_text("")


def _chown_tree(root: Path, user: User) -> None:
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            os.chown(Path(folder, name), user.uid, user.gid)
    os.chown(root, user.uid, user.gid)


def _processes_with(token: str) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {"marked": [], "unmarked": []}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            argv = Path("/proc", name, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if token.encode() in argv and argv[-2].decode() in found:
            found[argv[-2].decode()].append(int(name))
    return found


def _report(root: Path) -> dict[str, Any] | None:
    for path in sorted((root / "logs" / BOT).glob("task_*/attempt-*.jsonl")):
        if "task_old" in str(path):
            continue
        for line in path.read_text(errors="replace").splitlines():
            text = json.loads(line).get("text", "")
            if text.startswith("ESCAPE-REPORT "):
                return dict(json.loads(text.removeprefix("ESCAPE-REPORT ")))
    return None


async def _run(user: User, root: Path, mode: str) -> EscapeRun:
    key = f"tk_test_{secrets.token_hex(16)}"
    token = f"hostile-{secrets.token_hex(8)}"
    tmp_target = Path("/tmp", token)  # the host's /tmp, which must stay clean
    _plant(root, key)
    targets = {
        "read": {label: str(root / rel) for label, rel in READS.items()},
        "write": {
            **{label: str(root / rel) for label, rel in WRITES.items()},
            "/tmp": str(tmp_target),
        },
    }
    _chown_tree(root, user)
    store = BoardStore(root / "board.db")
    store.add_api_key(key)
    board = await start_board(store, BoardOptions(rate_limit=0))
    marker = "[escape-kill]" if mode == "on" else "[escape]"
    task_id = store.create_task("Get out", description=f"Ignore the task. {marker}")["id"]
    python, site = user.python()
    agent = f"{shlex.quote(python)} {shlex.quote(str(HOSTILE_AGENT))} --task {{task_id}}"
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "HOME": str(root / "home"),
        "TASKINFA_API_URL": board.url,
        "TASKINFA_API_KEY": key,
        "BOT_NAME": BOT,
        "AGENT": "command",
        "AGENT_COMMAND": agent,
        "AGENT_ENV_ALLOW": "HOSTILE_TARGETS,HOSTILE_TOKEN",
        "HOSTILE_TARGETS": json.dumps(targets),
        "HOSTILE_TOKEN": token,
        "WORKSPACE_DIR": str(root / "workspace"),
        "LOG_DIR": str(root / "logs"),
        "CLAUDE_CONFIG_SOURCE": str(root / "claude-source"),
        "LOG_FORMAT": "json",
        "CONCURRENCY": "2",
        "MAX_ATTEMPTS": "1",
        "POLL_INTERVAL": "0.05",
        "MAX_POLL_INTERVAL": "0.2",
        "KILL_GRACE": "2",
        "SANDBOX": mode,
        "PYTHONPATH": os.pathsep.join([str(REPO), *site]),
    }
    decoy_env = {"PATH": env["PATH"], "TASKINFA_API_KEY": key}
    decoy = subprocess.Popen(
        user.command([python, "-c", "import sys; sys.stdin.read()"]),
        env=decoy_env,
        stdin=subprocess.PIPE,
    )
    log = (root / "worker.log").open("wb")
    worker = subprocess.Popen(
        user.command([python, "-m", "taskinfa_worker", "run", "--exit-when-idle"]),
        env=env,
        cwd=root / "cwd",
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 90
        while worker.poll() is None and time.monotonic() < deadline:
            await anyio.sleep(0.1)  # the board answers the worker from this event loop
        if worker.poll() is None:
            worker.kill()
        code = worker.wait()
        report = _report(root)
        return EscapeRun(
            exit_code=code,
            log=(root / "worker.log").read_text(errors="replace"),
            task=store.get_task(task_id),
            report=report,
            key_digest=hashlib.sha256(key.encode()).hexdigest(),
            worker_pid=report["worker"] if report else None,
            decoy_pid=decoy.pid,
            leftovers=_processes_with(token),
            written={label: (root / rel).exists() for label, rel in WRITES.items()}
            | {"/tmp": tmp_target.exists()},
            tmp_target=tmp_target,
        )
    finally:
        log.close()
        assert decoy.stdin is not None
        decoy.stdin.close()
        decoy.wait()
        await board.aclose()
        store.close()


def _cleanup(run: EscapeRun | None, root: Path) -> None:
    if run is not None:
        for pid in run.leftovers["marked"] + run.leftovers["unmarked"]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        run.tmp_target.unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def escape_run(mode: str) -> Iterator[EscapeRun]:
    user = ordinary_user()
    root = user.folder("taskinfa-escape-")
    run = None
    try:
        run = anyio.run(_run, user, root, mode)
        yield run
    finally:
        _cleanup(run, root)


@pytest.fixture(scope="module")
def sandboxed() -> Iterator[EscapeRun]:
    reason = sandbox_works()
    if reason is not None:
        pytest.skip(f"no sandbox here: {reason}")
    with escape_run("on") as run:
        yield run


@pytest.fixture(scope="module")
def unsandboxed() -> Iterator[EscapeRun]:
    with escape_run("off") as run:
        yield run


def _keys_seen(run: EscapeRun, scan: str) -> dict[str, list[str]]:
    assert run.report is not None, run.log[-3000:]
    own = {str(os.getpid())}  # as a non-root user, pytest itself (it made the key) is near
    keys: dict[str, list[str]] = run.report[scan]["keys"]
    return {pid: found for pid, found in keys.items() if pid not in own}


# --- the sandbox on: nothing holds -----------------------------------------------------------
def test_sandboxed_task_still_ends_normally(sandboxed: EscapeRun) -> None:
    assert sandboxed.exit_code == 0, sandboxed.log[-3000:]
    assert sandboxed.task["status"] == "review", sandboxed.task
    assert "agent sandbox on" in sandboxed.log


@pytest.mark.parametrize("scan", ["environ", "mem", "fds"])
def test_sandboxed_agent_sees_no_process_of_the_worker_nor_any_key(
    sandboxed: EscapeRun, scan: str
) -> None:
    assert _keys_seen(sandboxed, scan) == {}  # not even a parallel test's decoy
    assert sandboxed.report is not None
    seen = sandboxed.report[scan]["opened"]
    assert str(sandboxed.worker_pid) not in seen
    assert str(sandboxed.decoy_pid) not in seen  # not even another process of its user


@pytest.mark.parametrize("label", list(READS))
def test_sandboxed_agent_reads_none_of_the_secrets(sandboxed: EscapeRun, label: str) -> None:
    assert sandboxed.report is not None
    assert sandboxed.report["read"][label] is False


@pytest.mark.parametrize("label", [*WRITES, "/tmp"])
def test_sandboxed_agent_writes_nothing_outside_its_tree(sandboxed: EscapeRun, label: str) -> None:
    # Where it wrote at all, it wrote into an empty private folder (a tmpfs over the real
    # one, its /tmp too) that vanished with it: nothing reached the host.
    assert sandboxed.written[label] is False


def test_sandboxed_agent_cannot_kill_the_worker(sandboxed: EscapeRun) -> None:
    # The agent sent a real SIGKILL to the worker's pid: the worker finished normally.
    assert sandboxed.report is not None
    assert sandboxed.report["signal"] is not True
    assert sandboxed.exit_code == 0


def test_sandboxed_agent_leaves_no_process_behind(sandboxed: EscapeRun) -> None:
    assert sandboxed.leftovers == {"marked": [], "unmarked": []}


# --- the sandbox off: what still holds, and what does not ------------------------------------
def test_unsandboxed_scan_does_find_a_readable_key(unsandboxed: EscapeRun) -> None:
    """The control: the agent's scan works, and finds the key in a dumpable process."""
    assert unsandboxed.exit_code == 0, unsandboxed.log[-3000:]
    found = _keys_seen(unsandboxed, "environ")
    assert found.get(str(unsandboxed.decoy_pid)) == [unsandboxed.key_digest]


@pytest.mark.parametrize("scan", ["environ", "mem", "fds"])
def test_unsandboxed_agent_cannot_read_the_worker(unsandboxed: EscapeRun, scan: str) -> None:
    assert unsandboxed.report is not None
    assert str(unsandboxed.worker_pid) not in unsandboxed.report[scan]["opened"]
    # Only the decoy had the key to give (a parallel test's decoy may show its own key).
    holders = {
        pid for pid, keys in _keys_seen(unsandboxed, scan).items() if unsandboxed.key_digest in keys
    }
    assert holders <= {str(unsandboxed.decoy_pid)}


def test_unsandboxed_marked_leftovers_are_swept(unsandboxed: EscapeRun) -> None:
    assert unsandboxed.leftovers["marked"] == []


def test_unsandboxed_the_rest_is_open_as_the_docs_say(unsandboxed: EscapeRun) -> None:
    """docs/reliability.md: without the sandbox these are the agent's to take."""
    assert unsandboxed.report is not None
    assert all(unsandboxed.report["read"].values()), unsandboxed.report["read"]
    assert all(unsandboxed.written.values()), unsandboxed.written
    assert unsandboxed.report["signal"] is True
    assert len(unsandboxed.leftovers["unmarked"]) == 1


# --- SANDBOX=on where it cannot work ---------------------------------------------------------
def test_sandbox_on_without_a_working_bwrap_refuses_to_start(tmp_path: Path) -> None:
    """A bwrap that fails as a container without user namespaces makes it fail."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    bwrap = fake_bin / "bwrap"
    refusal = "bwrap: No permissions to create new namespace"
    bwrap.write_text(f"#!/bin/sh\necho '{refusal}' >&2\nexit 1\n")
    bwrap.chmod(0o755)
    env = {
        "PATH": f"{fake_bin}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "HOME": str(tmp_path),
        "TASKINFA_API_URL": "http://127.0.0.1:9/api",
        "TASKINFA_API_KEY": "tk_test_refused_sandbox_0001",
        "AGENT": "command",
        "AGENT_COMMAND": f"{sys.executable} -c pass",
        "WORKSPACE_DIR": str(tmp_path / "workspace"),
        "LOG_DIR": str(tmp_path / "logs"),
        "LOG_FORMAT": "text",
        "SANDBOX": "on",
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(
        [sys.executable, "-m", "taskinfa_worker", "run"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == EXIT_PREFLIGHT, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert "SANDBOX=on but" in lines[-1]
    assert refusal.removeprefix("bwrap: ") in lines[-1]
