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
Everything exits 0 unless the marker says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", required=True)
    parser.add_argument("--prompt")
    args, extra = parser.parse_known_args()
    prompt = args.prompt
    if prompt is None:
        prompt = Path(os.environ["TASKINFA_PROMPT_FILE"]).read_text(encoding="utf-8")
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
