"""The supervisor on small Python children: limits, stdin, pipes held by leftovers."""

from __future__ import annotations

import hashlib
import os
import sys
import textwrap
import uuid
from pathlib import Path

import anyio
import pytest

from taskinfa_worker.agent.process import (
    STDERR_TAIL_BYTES,
    Limits,
    ProcessEnd,
    ProcessRun,
    ProcessSpec,
    Supervisor,
)
from tests.agent.support import gone, state


def python(code: str, tmp_path: Path, stdin: bytes | None = None) -> ProcessSpec:
    marker = f"TASKINFA_AGENT_RUN={uuid.uuid4().hex}"
    env = {"PATH": os.environ["PATH"], marker.split("=")[0]: marker.split("=")[1]}
    return ProcessSpec(
        argv=[sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=tmp_path,
        marker=marker,
        stdin=stdin,
    )


async def supervise(
    spec: ProcessSpec, limits: Limits, *, result_word: bytes | None = None
) -> tuple[ProcessRun, list[bytes], list[bytes]]:
    out: list[bytes] = []
    err: list[bytes] = []

    def on_stdout(line: bytes) -> None:
        out.append(line)
        if result_word is not None and line == result_word:
            supervisor.result_seen()

    supervisor = Supervisor(spec, limits, on_stdout=on_stdout, on_stderr=err.append)
    return await supervisor.run(), out, err


LIMITS = Limits(timeout=30, stall_timeout=10, kill_grace=1)


async def test_exit_code_and_lines(tmp_path: Path) -> None:
    code = "import sys; print('a'); print('b', file=sys.stderr); sys.exit(4)"
    run, out, err = await supervise(python(code, tmp_path), LIMITS)
    assert (run.exit_code, run.ending, run.leftovers) == (4, ProcessEnd.EXITED, 0)
    assert out == [b"a"]
    assert err == [b"b"]
    assert run.stderr_tail == "b\n"


async def test_a_hung_process_after_its_result_gets_a_short_grace(tmp_path: Path) -> None:
    code = "import time; print('RESULT', flush=True); time.sleep(60)"
    limits = Limits(timeout=30, stall_timeout=30, kill_grace=1, result_grace=0.2)
    run, out, _ = await supervise(python(code, tmp_path), limits, result_word=b"RESULT")
    assert run.ending is ProcessEnd.AFTER_RESULT
    assert run.exit_code == -15
    assert out == [b"RESULT"]


async def test_large_stdin_is_fed_while_output_is_read(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024)
    code = """
        import hashlib, sys
        data = sys.stdin.buffer.read()
        print(len(data), hashlib.sha256(data).hexdigest())
    """
    run, out, _ = await supervise(python(code, tmp_path, stdin=data), LIMITS)
    assert run.exit_code == 0
    assert out == [f"{len(data)} {hashlib.sha256(data).hexdigest()}".encode()]


async def test_stdin_not_read_is_no_error(tmp_path: Path) -> None:
    run, _, _ = await supervise(python("pass", tmp_path, stdin=b"x" * 1_000_000), LIMITS)
    assert run.exit_code == 0


@pytest.mark.usefixtures("subreaper")
async def test_timeout_stops_the_whole_group(tmp_path: Path) -> None:
    code = """
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open("child.pid", "w").write(str(child.pid))
        while True:
            print("busy", flush=True)
            time.sleep(0.1)
    """
    run, _, _ = await supervise(
        python(code, tmp_path), Limits(timeout=1, stall_timeout=10, kill_grace=1)
    )
    assert run.ending is ProcessEnd.TIMEOUT
    child = int((tmp_path / "child.pid").read_text())
    assert gone(child), state(child)


async def test_leftover_holding_the_pipe_does_not_keep_the_run_open(tmp_path: Path) -> None:
    # The leader exits at once; its child keeps stdout open and sleeps. Without the sweep
    # the run would wait 60 s for EOF.
    code = """
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open("child.pid", "w").write(str(child.pid))
        print("leaving", flush=True)
    """
    with anyio.fail_after(15):
        run, out, _ = await supervise(python(code, tmp_path), LIMITS)
    assert run.ending is ProcessEnd.EXITED
    assert run.exit_code == 0
    assert run.leftovers == 1
    assert out == [b"leaving"]


async def test_stderr_tail_is_bounded(tmp_path: Path) -> None:
    code = """
        import sys
        for i in range(5000):
            print(f"line {i} " + "x" * 40, file=sys.stderr)
        print("y" * 100000, file=sys.stderr)
        print("the end", file=sys.stderr)
    """
    run, _, err = await supervise(python(code, tmp_path), LIMITS)
    assert len(err) == 5002
    assert len(run.stderr_tail) <= 2 * STDERR_TAIL_BYTES
    assert run.stderr_tail.endswith("the end\n")
