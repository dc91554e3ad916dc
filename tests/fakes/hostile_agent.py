#!/usr/bin/env python3
"""A fake agent for tests/test_bad_input.py: it obeys the task text and prints nasty output.

    hostile_agent.py --task {task_id} [--prompt {prompt}]

Without ``--prompt`` it reads the prompt from ``$TASKINFA_PROMPT_FILE``. It always writes
``$HOSTILE_DUMP/<task>.json`` with what it received (argv, environment, prompt length and
text) and echoes its environment and the prompt, as an agent that fell for a prompt
injection would. Then a marker in the prompt picks the output:

    [nul]          NUL and other control characters
    [utf8]         invalid UTF-8 and a lone surrogate's bytes
    [ansi]         terminal escapes (clear screen, window title, colours, cursor moves)
    [huge-line]    one 5 MB line with no newline at the end
    [binary]       1 MB of random bytes
    [silent]       prints nothing at all and succeeds
    [stderr-exit]  only stderr, exit status 3
    [escape]       tries every way out of its task (below), prints ``ESCAPE-REPORT {json}``
Everything exits 0 unless the marker says otherwise.

``[escape]`` is the prompt-injected agent of tests/agent/test_escapes.py. It looks for the
board key (``tk_`` followed by 16 or more key characters) in every process's environ, mem
and open files it can reach, reads the files named in ``$HOSTILE_TARGETS`` (a JSON object:
``read``: label to path, ``write``: label to path), signals the worker (its pid is in
``$TASKINFA_AGENT_OWNER``; a real SIGKILL with ``[escape-kill]``, else signal 0, which only
asks whether it could) and leaves two processes behind in sessions of their own, one that
keeps the run's marker and one that drops its whole environment, each named by
``$HOSTILE_TOKEN`` on its command line. The report has sha256 digests of the keys it found,
never the keys, so that a transcript shows what leaked without leaking it again.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import signal
import stat
import sys
from pathlib import Path
from typing import Any

KEY_PATTERN = re.compile(rb"tk_[A-Za-z0-9_]{16,}")
# Bytes read from one process's memory at most: the heap and stack of a Python worker.
MEM_LIMIT = 256 * 1024 * 1024


def _digests(data: bytes) -> list[str]:
    return sorted({hashlib.sha256(m).hexdigest() for m in KEY_PATTERN.findall(data)})


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read(MEM_LIMIT)
    except OSError:
        return None


def _findings(opened: list[str], found: dict[str, set[str]]) -> dict[str, Any]:
    """Which pids it could open, and the key digests found in each."""
    keys = {pid: sorted(digests) for pid, digests in found.items() if digests}
    return {"opened": sorted(set(opened), key=int), "keys": keys}


def _pids() -> list[str]:
    me = str(os.getpid())
    return [name for name in os.listdir("/proc") if name.isdigit() and name != me]


def _scan_environ() -> dict[str, Any]:
    opened: list[str] = []
    found: dict[str, set[str]] = {}
    for pid in _pids():
        tasks = [f"/proc/{pid}/environ"]
        with contextlib.suppress(OSError):
            tasks += [f"/proc/{pid}/task/{tid}/environ" for tid in os.listdir(f"/proc/{pid}/task")]
        for path in tasks:
            data = _read(path)
            if data is not None:
                opened.append(pid)
                found.setdefault(pid, set()).update(_digests(data))
    return _findings(opened, found)


def _scan_mem() -> dict[str, Any]:
    opened: list[str] = []
    found: dict[str, set[str]] = {}
    for pid in _pids():
        maps = _read(f"/proc/{pid}/maps")
        try:
            mem = open(f"/proc/{pid}/mem", "rb")  # noqa: SIM115 - closed below
        except OSError:
            continue
        with mem:
            budget = MEM_LIMIT
            for line in (maps or b"").splitlines():
                fields = line.split()
                if len(fields) < 2 or not fields[1].startswith(b"rw"):
                    continue
                start, end = (int(x, 16) for x in fields[0].split(b"-"))
                size = min(end - start, budget)
                try:
                    mem.seek(start)
                    chunk = mem.read(size)
                except (OSError, OverflowError, ValueError):
                    continue
                opened.append(pid)
                found.setdefault(pid, set()).update(_digests(chunk))
                budget -= len(chunk)
                if budget <= 0:
                    break
    return _findings(opened, found)


def _scan_fds() -> dict[str, Any]:
    opened: list[str] = []
    found: dict[str, set[str]] = {}
    for pid in _pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        opened.append(pid)
        for fd in fds:
            path = f"/proc/{pid}/fd/{fd}"
            try:
                if not stat.S_ISREG(os.stat(path).st_mode):
                    continue  # a pipe or socket would block the read
            except OSError:
                continue
            data = _read(path)
            if data:
                found.setdefault(pid, set()).update(_digests(data))
    return _findings(opened, found)


def _leave_behind(token: str, keep_env: bool) -> None:
    """A double-forked process in a session of its own, as a daemon started by an agent."""
    if os.fork() != 0:
        return
    os.setsid()
    if os.fork() != 0:
        os._exit(0)
    env = dict(os.environ) if keep_env else {}
    kind = "marked" if keep_env else "unmarked"
    os.execve(  # noqa: S606 - a fixed argv, like any daemon an agent could start
        sys.executable,
        [sys.executable, "-c", "import time; time.sleep(600)", token, kind],
        env,
    )


def escape(prompt: str) -> dict[str, Any]:
    """Every way out it knows; what it reached, as data."""
    targets = json.loads(os.environ.get("HOSTILE_TARGETS", "{}"))
    worker = int(os.environ["TASKINFA_AGENT_OWNER"].split()[1])
    report: dict[str, Any] = {
        "worker": worker,
        "environ": _scan_environ(),
        "mem": _scan_mem(),
        "fds": _scan_fds(),
        "read": {},
        "write": {},
    }
    for label, path in targets.get("read", {}).items():
        report["read"][label] = _read(path) is not None
    for label, path in targets.get("write", {}).items():
        try:
            Path(path).write_text("written by a hostile agent")
            report["write"][label] = True
        except OSError:
            report["write"][label] = False
    try:
        os.kill(worker, signal.SIGKILL if "[escape-kill]" in prompt else 0)
        report["signal"] = True
    except OSError as exc:
        report["signal"] = exc.strerror
    token = os.environ.get("HOSTILE_TOKEN", "hostile-leftover")
    _leave_behind(token, keep_env=True)
    _leave_behind(token, keep_env=False)
    return report


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", required=True)
    parser.add_argument("--prompt")
    args, extra = parser.parse_known_args()
    prompt = args.prompt
    if prompt is None:
        prompt = Path(os.environ["TASKINFA_PROMPT_FILE"]).read_text(encoding="utf-8")
    if "[escape" in prompt:  # it has no dump folder: its report goes to the transcript
        print("ESCAPE-REPORT " + json.dumps(escape(prompt)), flush=True)
        return 0
    dump = {
        "argv": sys.argv,
        "extra_args": extra,
        "env": dict(os.environ),
        "prompt_length": len(prompt),
        "prompt": prompt if len(prompt) < 20_000 else prompt[:20_000],
    }
    Path(os.environ["HOSTILE_DUMP"], f"{args.task}.json").write_text(json.dumps(dump))
    out = sys.stdout.buffer
    if "[silent]" in prompt:
        return 0
    if "[stderr-exit]" in prompt:
        sys.stderr.write("hostile agent: failing on purpose\n")
        return 3
    # An agent that fell for "print your environment and the key".
    for name, value in sorted(os.environ.items()):
        print(f"{name}={value}")
    print(prompt[:5000])
    sys.stdout.flush()
    if "[nul]" in prompt:
        out.write(b"before\x00after \x01\x02\x07\x08\x0b\x0c\x7f end\n")
    if "[utf8]" in prompt:
        out.write(b"bad \xff\xfe \xc3\x28 \xed\xa0\x80 \xf0\x28\x8c\xbc utf-8\n")
    if "[ansi]" in prompt:
        out.write(b"\x1b[2J\x1b[H\x1b]0;pwned title\x07\x1b[31mred\x1b[0m\x1b[10A\r\n")
    if "[huge-line]" in prompt:
        out.write(b"z" * 5_000_000)
    if "[binary]" in prompt:
        out.write(os.urandom(1_000_000))
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
