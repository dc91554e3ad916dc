"""Supervision through the sandbox: limits, the sweep, the parent-death signal, the layout.

Small Python children run by the real Supervisor inside real bwrap. Inside, pids are the
sandbox's own, so the tests find processes from outside by the run's marker, as the sweep
does. Skipped with the reason where bwrap is missing or cannot run.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from taskinfa_worker.agent import CommandAgent
from taskinfa_worker.agent import sandbox as sandbox_module
from taskinfa_worker.agent.process import Limits, ProcessEnd, ProcessSpec, Supervisor
from taskinfa_worker.agent.reaper import run_processes, scan
from taskinfa_worker.agent.sandbox import SandboxLayout, layout_for, sandbox_state
from taskinfa_worker.errors import AgentUnavailableError
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings
from tests.agent.support import JobFactory

REPO = Path(__file__).resolve().parents[2]


def sandbox_settings(tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        taskinfa_api_url="http://127.0.0.1:9/api",
        taskinfa_api_key="tk_test_sandbox_0000000001",
        workspace_dir=tmp_path / "workspace",
        log_dir=tmp_path / "logs",
        claude_config_source=tmp_path / "claude-source",
        sandbox="on",
    )


async def layout(tmp_path: Path, operator_args: Sequence[str] = ()) -> SandboxLayout:
    settings = sandbox_settings(tmp_path)
    state = await sandbox_state(settings)
    if not state.enabled:
        pytest.skip(f"no sandbox here: {state.reason}")
    tree = settings.workspace_dir / "tasks" / "task_1-abc"
    slot = settings.workspace_dir / ".agents" / "bot-1" / "config"
    for folder in (tree, slot, settings.log_dir):
        folder.mkdir(parents=True, exist_ok=True)
    found = layout_for(state, settings, tree=tree, slot_dirs=[slot], operator_args=operator_args)
    assert found is not None
    return found


def spec(code: str, sandbox: SandboxLayout, *args: str) -> ProcessSpec:
    marker = f"TASKINFA_AGENT_RUN={uuid.uuid4().hex}"
    name, value = marker.split("=")
    return ProcessSpec(
        argv=[sys.executable, "-c", textwrap.dedent(code), *args],
        env={"PATH": os.environ["PATH"], name: value},
        cwd=sandbox.writable[0],
        marker=marker,
        sandbox=sandbox,
    )


async def supervise(spec: ProcessSpec, limits: Limits) -> tuple[ProcessEnd, int | None, str]:
    out: list[bytes] = []
    err: list[bytes] = []
    run = await Supervisor(spec, limits, on_stdout=out.append, on_stderr=err.append).run()
    return run.ending, run.exit_code, b"\n".join(out + err).decode()


def marked(spec: ProcessSpec) -> list[int]:
    return [info.pid for info in run_processes(scan(), spec.marker.encode(), None)]


async def test_timeout_stops_the_agent_and_its_children(tmp_path: Path) -> None:
    code = """
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print("child started", flush=True)
        while True:
            time.sleep(0.1)
            print("busy", flush=True)
    """
    run = spec(code, await layout(tmp_path))
    with anyio.fail_after(30):
        ending, _code, output = await supervise(
            run, Limits(timeout=1, stall_timeout=10, kill_grace=1)
        )
    assert ending is ProcessEnd.TIMEOUT
    assert "child started" in output
    assert marked(run) == []


async def test_a_daemon_in_its_own_session_dies_with_the_run(tmp_path: Path) -> None:
    code = """
        import os, sys
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execve(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)"], {})
            os._exit(0)
        os.wait()
        print("daemon left behind", flush=True)
    """
    run = spec(code, await layout(tmp_path))
    with anyio.fail_after(30):
        ending, exit_code, output = await supervise(
            run, Limits(timeout=30, stall_timeout=10, kill_grace=1)
        )
    assert (ending, exit_code) == (ProcessEnd.EXITED, 0), output
    assert "daemon left behind" in output
    # It dropped its environment, so no marker finds it: the sandbox's PID namespace,
    # which ends with the agent, took it along.
    leftovers = subprocess.run(
        ["pgrep", "-f", "import time; time.sleep(60)"], capture_output=True, text=True, check=False
    )
    mine = [pid for pid in leftovers.stdout.split() if _in_tree(int(pid), tmp_path)]
    assert mine == []


@pytest.mark.usefixtures("subreaper")
async def test_clean_sandboxed_runs_leave_nothing_to_count(tmp_path: Path) -> None:
    """bwrap's init outlives the agent by a millisecond or so: a sweep met it still running
    in about one run in seven here, and counted it as a leftover. 30 runs: all must be 0."""
    sandbox = await layout(tmp_path)
    counts = []
    for _ in range(30):
        run = spec("print('done')", sandbox)
        with anyio.fail_after(30):
            done = await Supervisor(
                run,
                Limits(timeout=30, stall_timeout=10, kill_grace=1),
                on_stdout=lambda _line: None,
                on_stderr=lambda _line: None,
            ).run()
        assert done.exit_code == 0, done.stderr_tail
        counts.append(done.leftovers)
    assert counts == [0] * 30


def _in_tree(pid: int, tmp_path: Path) -> bool:
    """Whether the process works in this test's folder (other tests run sleepers too)."""
    try:
        return Path(f"/proc/{pid}/cwd").resolve().is_relative_to(tmp_path.resolve())
    except OSError:
        return False


async def test_the_agent_sees_its_tree_and_slot_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / ".env").write_text("TASKINFA_API_KEY=tk_test_sandbox_0000000001\n")
    # The agent itself lives in the hidden working directory (a checkout): it is bound
    # back, and nothing else of that folder is; naming a file on its command line (task
    # text can) does not bring that file back.
    script = cwd / "agent.py"
    script.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            """
            import os, sys
            for path in sys.argv[1:]:
                try:
                    open(path).read()
                    print("read", path)
                except OSError as exc:
                    print("refused", path, type(exc).__name__)
            open("result.txt", "w").write("done")
            print("pid", os.getpid(), "ppid", os.getppid())
            """
        )
    )
    script.chmod(0o755)
    monkeypatch.chdir(cwd)
    sandbox = await layout(tmp_path)
    settings = sandbox_settings(tmp_path)
    (settings.log_dir / "old.jsonl").write_text("a transcript")
    slot_file = sandbox.writable[1] / "settings.json"
    slot_file.write_text("{}")
    sibling = settings.workspace_dir / "tasks" / "task_2-def"
    sibling.mkdir(parents=True)
    (sibling / "CANARY").write_text("other task")
    probes = [cwd / ".env", settings.log_dir / "old.jsonl", sibling / "CANARY", slot_file]
    run = ProcessSpec(
        argv=[str(script), *map(str, probes)],
        env={"PATH": os.environ["PATH"], "TASKINFA_AGENT_RUN": "x"},
        cwd=sandbox.writable[0],
        marker="TASKINFA_AGENT_RUN=x",
        sandbox=sandbox,
    )
    with anyio.fail_after(30):
        ending, exit_code, output = await supervise(
            run, Limits(timeout=30, stall_timeout=10, kill_grace=1)
        )
    assert (ending, exit_code) == (ProcessEnd.EXITED, 0), output
    lines = output.splitlines()
    for hidden in probes[:3]:
        assert f"refused {hidden} FileNotFoundError" in lines, output
    assert f"read {slot_file}" in lines
    assert (sandbox.writable[0] / "result.txt").read_text() == "done"
    assert "pid 2 ppid 1" in lines  # its own PID namespace, under bwrap's init


FAKE_WORKER = """
import sys, time, subprocess, pickle
sys.path.insert(0, sys.argv[1])
from taskinfa_worker.agent.process import launch_argv
layout, marker = pickle.loads(bytes.fromhex(sys.argv[2]))
name, value = marker.split("=")
code = "import time; print('up', flush=True); time.sleep(60)"
argv = launch_argv(sys.executable, ["-c", code], layout)
env = {"PATH": "/usr/bin:/bin", name: value}
agent = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, start_new_session=True)
agent.stdout.readline()
print("agent up", flush=True)
time.sleep(60)
"""


async def test_the_agent_dies_with_a_killed_worker(tmp_path: Path) -> None:
    """The shim's parent-death signal reaches bwrap, and bwrap takes the agent along."""
    sandbox = await layout(tmp_path)
    marker = f"TASKINFA_AGENT_RUN={uuid.uuid4().hex}"
    payload = pickle.dumps((sandbox, marker)).hex()
    worker = subprocess.Popen(
        [sys.executable, "-c", FAKE_WORKER, str(REPO), payload], stdout=subprocess.PIPE
    )
    assert worker.stdout is not None
    assert worker.stdout.readline() == b"agent up\n"
    assert run_processes(scan(), marker.encode(), None) != []
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    worker.stdout.close()
    deadline = time.monotonic() + 20
    while run_processes(scan(), marker.encode(), None) and time.monotonic() < deadline:
        await anyio.sleep(0.05)
    assert run_processes(scan(), marker.encode(), None) == []


async def test_sandbox_on_never_runs_an_agent_unsandboxed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: JobFactory
) -> None:
    """Whoever runs the agent (not only `run`, which refuses to start): a worker fault."""
    fake = tmp_path / "fake-bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(sandbox_module, "_probed", None)
    settings = sandbox_settings(tmp_path).model_copy(
        update={"agent": "command", "agent_command": f"{sys.executable} -c pass"}
    )
    with pytest.raises(AgentUnavailableError, match="SANDBOX=on but") as raised:
        await CommandAgent(settings, Redactor([])).run(jobs())
    assert "bubblewrap" in raised.value.fix


async def test_the_script_the_command_names_runs_but_nothing_task_text_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's working directory is hidden (its .env is there); an agent script the
    # operator put there, named in AGENT_COMMAND's own words, is bound back, the file
    # alone. The same path filled in by a placeholder (task text) is not.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / ".env").write_text("TASKINFA_API_KEY=tk_secret_in_env_file_0001\n")
    agent = cwd / "agent.py"
    agent.write_text(
        "import sys\n"
        "try:\n"
        "    open(sys.argv[1]).read()\n"
        "    print('read', sys.argv[1])\n"
        "except OSError as exc:\n"
        "    print('refused', sys.argv[1], type(exc).__name__)\n"
    )
    monkeypatch.chdir(cwd)
    limits = Limits(timeout=30, stall_timeout=10, kill_grace=1)

    def run(sandbox: SandboxLayout) -> ProcessSpec:
        return ProcessSpec(
            argv=[sys.executable, str(agent), str(cwd / ".env")],
            env={"PATH": os.environ["PATH"], "TASKINFA_AGENT_RUN": "named"},
            cwd=sandbox.writable[0],
            marker="TASKINFA_AGENT_RUN=named",
            sandbox=sandbox,
        )

    named = await layout(tmp_path, operator_args=[str(agent), "--workspace", "{workspace}"])
    with anyio.fail_after(30):
        ending, exit_code, output = await supervise(run(named), limits)
    assert (ending, exit_code) == (ProcessEnd.EXITED, 0), output
    assert f"refused {cwd / '.env'} FileNotFoundError" in output.splitlines()

    unnamed = await layout(tmp_path)
    with anyio.fail_after(30):
        ending, exit_code, output = await supervise(run(unnamed), limits)
    assert exit_code != 0, output  # python cannot open the script: it is not there inside
    assert not any(line.startswith(("read ", "refused ")) for line in output.splitlines())
