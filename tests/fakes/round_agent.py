#!/usr/bin/env python3
"""A fake agent for the delivery tests, run through the `command` agent.

    round_agent.py --task {task_id} --workspace {workspace} --prompt {prompt}

It appends one JSON line to $FAKE_RECORD with what it found (the files in its tree, its
prompt), so tests can see what a round started from and what it was told. Then it writes
`round-<n>.txt` (n = one more than the round files already there) and commits it, unless
the title says [nochange].
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", required=True)
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--prompt", required=True)
    args = parser.parse_args()
    tree = Path(args.workspace)
    files = sorted(p.name for p in tree.iterdir() if p.name != ".git")
    record = {"task": args.task, "files": files, "prompt": args.prompt}
    with open(os.environ["FAKE_RECORD"], "a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")
    if "[nochange]" in args.prompt:
        print("nothing to do")
        return 0
    number = 1 + sum(1 for name in files if name.startswith("round-"))
    (tree / f"round-{number}.txt").write_text(f"round {number} of {args.task}\n")
    subprocess.run(["git", "add", "--all"], cwd=tree, check=True)
    subprocess.run(["git", "commit", "-q", "-m", f"round {number}"], cwd=tree, check=True)
    print(f"wrote round-{number}.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
