#!/usr/bin/env python3
"""A fake agent for pool tests, run through the `command` agent.

    ledger_agent.py --task {task_id} --workspace {workspace} --prompt {prompt}

It appends `start <task> <pid>` and `stop <task> <pid> <how>` lines to $FAKE_LEDGER (one
small O_APPEND write each, so several worker processes can share the file) so that tests
can prove no task ran twice or in two slots at once. Its behaviour comes from markers in the
task title, which reaches it inside the prompt:
    [fail]    exit 1 with a message on stderr
    [gate]    wait until the file $FAKE_GATE exists (tests open the gate when ready)
    [hang]    sleep forever (until stopped)
    [chatty]  print a line every 50 ms forever (until stopped): activity for progress
    [garbage] print binary junk and very long lines, then succeed
A plain title writes result.txt into the workspace and succeeds.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path


def ledger(line: str) -> None:
    path = os.environ.get("FAKE_LEDGER")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", required=True)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--prompt", required=True)
    args = parser.parse_args()
    task, prompt = args.task, args.prompt
    pid = os.getpid()

    how = "crashed"

    def on_term(signum: int, _frame: object) -> None:
        # A second SIGTERM (the parent-death signal, then a sweep) may come while exiting;
        # the stop line is written once, by the `finally` below.
        nonlocal how
        if how == "crashed":
            how = f"signal-{signum}"
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    ledger(f"start {task} {pid}")
    try:
        status = work(task, prompt, Path(args.workspace))
        how = "ok" if status == 0 else "failed"
        return status
    finally:
        # Every way out writes its stop line, the unplanned ones too: a worker SIGKILLed
        # just after this agent started leaves its stdout without a reader, and the first
        # print then raises BrokenPipeError (a run without a stop line looks like a
        # duplicate run to the tests). A SIGTERM now must not cut the line short.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        ledger(f"stop {task} {pid} {how}")


def work(task: str, prompt: str, workspace: Path) -> int:
    """What the title's markers ask for; the exit status."""
    print(f"fake agent working on {task}", flush=True)
    if "[gate]" in prompt:
        gate = Path(os.environ["FAKE_GATE"])
        while not gate.exists():
            time.sleep(0.02)
    if "[hang]" in prompt:
        while True:
            time.sleep(1)
    if "[chatty]" in prompt:
        for step in range(1_000_000):
            print(f"fake agent step {step}", flush=True)
            time.sleep(0.05)
    if "[garbage]" in prompt:
        sys.stdout.buffer.write(b"\x00\xff\xfe garbage \x1b[31m\n" + b"x" * 300_000 + b"\n")
        sys.stdout.flush()
    if "[fail]" in prompt:
        print("fake agent: this task always fails", file=sys.stderr, flush=True)
        return 1
    (workspace / "result.txt").write_text(f"done {task}\n")
    print("wrote result.txt", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
