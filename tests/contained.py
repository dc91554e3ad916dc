"""Running a whole program from a test so that nothing it starts outlives the test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

# Under the suite's per-test timeout (120 s), so that the program's own output reaches the
# report instead of pytest-timeout's stack dump.
TIMEOUT = 100.0


def run_contained(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float = TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a session of its own, then kill that session's process group,
    whatever happened (a timeout, a failure, a background job its traps did not stop)."""
    child = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)
