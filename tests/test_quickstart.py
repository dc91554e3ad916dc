"""docs/quickstart.md followed literally: the commands of its review round trip, cut out of
the page and run in bash as a reader would paste them, against the local board and the
example command agent (no Anthropic key). Only the scratch folder and the board's port are
swapped for ones of this test's own, so that it can run beside another copy of itself."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
from pathlib import Path

from taskinfa_worker.settings import Settings
from tests.contained import run_contained
from tests.deployfiles import ROOT

QUICKSTART = ROOT / "docs" / "quickstart.md"
SECTION = "## 3. The review round trip"
SCRATCH = "/tmp/roundtrip"
PORT = "3000"


def round_trip_commands() -> str:
    """Every bash block of the round-trip section, in order, as one script."""
    text = QUICKSTART.read_text()
    assert SECTION in text, f"{QUICKSTART.name} has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 2, blocks  # the first run, then the answer and the second run
    return "\n".join(blocks)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_review_round_trip_runs_as_written(tmp_path: Path) -> None:
    commands = round_trip_commands()
    assert SCRATCH in commands
    assert f"--port {PORT}" in commands
    scratch = tmp_path / "roundtrip"
    port = str(free_port())
    script = commands.replace(SCRATCH, str(scratch)).replace(f":{PORT}/", f":{port}/")
    script = script.replace(f"--port {PORT}", f"--port {port}")
    # A reader's shell has none of the worker's settings set; a failing command fails the
    # test, and the board started in the background never outlives it.
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    wrapped = f"set -eu -o pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}"
    done = run_contained(["bash", "-c", wrapped], env=env, cwd=ROOT)  # "From the repository's root"
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]

    with sqlite3.connect(scratch / "board.db") as db:
        ((status, branch, error_count),) = db.execute(
            "SELECT status, branch_name, error_count FROM tasks"
        ).fetchall()
    assert (status, error_count) == ("review", 0)
    assert branch.startswith("taskinfa/")
    # The work is on that branch of the project's repository: two runs, two commits.
    log = subprocess.run(
        ["git", "-C", str(scratch / "app.git"), "log", "--format=%s", f"main..{branch}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(log) == 2, log
    assert branch in done.stdout  # the page's `git branch --list` showed it to the reader
    # The second run had the reviewer's answer (the example agent quotes it in its notes).
    answered = subprocess.run(
        ["git", "-C", str(scratch / "app.git"), "grep", "-q", "Also say goodbye.", branch],
        check=False,
    )
    assert answered.returncode == 0
