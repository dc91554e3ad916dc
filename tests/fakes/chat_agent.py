#!/usr/bin/env python3
"""A fake agent for the chat tests, run through the `command` agent.

    chat_agent.py --task {task_id} --workspace {workspace} --prompt {prompt}

It appends one JSON line to $FAKE_RECORD with what it was given and where it ran: its
argv, prompt, model (ANTHROPIC_MODEL), working directory and the branch checked out there.
A task's own run (no message to answer in the prompt) commits `work.txt`, after waiting
for $FAKE_GATE to exist when the task's title asks to "[hold]". An answer commits
`answer-<n>.txt` only when the message asks for a "[change]", waits for $FAKE_GATE to
exist when it asks to "[wait]", fails when it asks to "[fail]", exits 127 (a program it
runs is missing) when it asks for a "[missing]" tool, and prints its answer (which quotes
the message's first line) as the last line of its output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

MESSAGE_HEADING = "## The message to answer"


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def wait_for_gate() -> None:
    gate = Path(os.environ["FAKE_GATE"])
    while not gate.exists():
        time.sleep(0.05)


def main() -> int:
    argv = sys.argv[1:]
    task, tree, prompt = (
        argv[argv.index("--task") + 1],
        Path(argv[argv.index("--workspace") + 1]),
        argv[argv.index("--prompt") + 1],
    )
    branch = git("rev-parse", "--abbrev-ref", "HEAD", cwd=tree)
    record = {
        "task": task,
        "argv": argv,
        "prompt": prompt,
        "cwd": os.getcwd(),
        "branch": branch,
        "pid": os.getpid(),
        "model": os.environ.get("ANTHROPIC_MODEL"),
    }
    with open(os.environ["FAKE_RECORD"], "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")
    if MESSAGE_HEADING not in prompt:
        if "[hold]" in prompt:
            wait_for_gate()
        (tree / "work.txt").write_text(f"the work of {task}\n")
        git("add", "--all", cwd=tree)
        git("commit", "-q", "-m", "the task's work", cwd=tree)
        print("did the work")
        return 0
    message = prompt.split(MESSAGE_HEADING, 1)[1].split("## Rules", 1)[0]
    if "[wait]" in message:
        wait_for_gate()
    if "[missing]" in message:
        print("sh: 1: the-linter: not found", file=sys.stderr)
        return 127
    if "[fail]" in message:
        print("cannot answer that", file=sys.stderr)
        return 3
    if "[change]" in message:
        number = 1 + sum(1 for p in tree.iterdir() if p.name.startswith("answer-"))
        (tree / f"answer-{number}.txt").write_text("changed on request\n")
        git("add", "--all", cwd=tree)
        git("commit", "-q", "-m", "a change a person asked for", cwd=tree)
    first = next(line for line in message.splitlines()[3:] if line.strip())
    print(f"ANSWER to: {first.strip()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
