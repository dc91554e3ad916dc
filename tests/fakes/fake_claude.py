#!/usr/bin/env python3
"""A stand-in for Claude Code's headless mode (``claude -p ... --output-format stream-json
--verbose``), for the agent tests. Standard library only.

It speaks the stream-json format of ``CLAUDE_CODE.md`` (system/init, assistant, user,
result). Its behaviour is the first ``FAKE_MODE=<mode>`` found in the prompt (task text
reaches it there), else ``$FAKE_CLAUDE_MODE``, else ``success``:

    success            init, text, Read/Edit/Bash tool calls, a successful result, exit 0
    write_file         writes FAKE_FILE=<name> (default fake_output.txt) in its cwd
    is_error           result is_error with subtype error_during_execution, exit 1
    max_turns          result error_max_turns with an errors list, exit 1
    auth_fail          "Not logged in · Please run /login": is_error, subtype success, exit 1
    auth_401           a synthetic API error message and api_error_status 401, exit 1
    resume_missing     with --resume: "No conversation found ..." on stderr, exit 1
    no_result          init and some text, then exit 0 without a result line
    crash              a stack trace on stderr, then killed by SIGSEGV
    hang               init, then silence forever
    hang_after_result  a successful result, then silence forever
    huge_line          a 20 MB tool_result line (FAKE_SIZE=<bytes>), then a result
    slow               an event every 0.2 s for FAKE_SECONDS=<s> (default 2), then a result
    ignore_sigterm     ignores SIGTERM, prints init, silence forever
    setsid_grandchild  leaves a grandchild in its own session (sleeping, holding stdout),
                       writes its pid to .fake_claude/grandchild.pid, then succeeds
    grandchild_hang    the same grandchild, then silence forever (for cancellation)
    orphan_exits       leaves a setsid grandchild that exits 0.3 s after its parent died
                       (a zombie for whoever adopted it), waits 1 s, then succeeds
    garbage            junk lines, unknown events, odd types, binary bytes, then success
    echo_env           prints its whole environment as text and as its result (what a
                       prompt-injected agent does with secrets), then succeeds

Every run records what it was given in ``.fake_claude/`` of its cwd: ``argv.json``,
``env.json``, ``prompt.txt``, ``pid`` and ``stdin.json`` (whether stdin was /dev/null,
and where the prompt came from), so that tests can check the command line and environment.
``FAKE_SAY=<word>`` in the prompt makes the success mode say that word (redaction tests).
With ``$FAKE_CLAUDE_RECORD`` set, the records go to ``$FAKE_CLAUDE_RECORD/<pid>/`` instead,
outside the task's tree (pool tests, whose trees are committed and removed).
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import stat
import sys
import time
import uuid
from pathlib import Path
from typing import Any

SESSION = str(uuid.uuid4())
RECORD = Path(".fake_claude")


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def init(cwd: str) -> None:
    emit(
        {
            "type": "system",
            "subtype": "init",
            "session_id": SESSION,
            "cwd": cwd,
            "model": "fake-model",
            "tools": ["Read", "Write", "Edit", "Bash"],
            "permissionMode": "bypassPermissions",
            "claude_code_version": "0.0.0-fake",
        }
    )


def text(words: str) -> None:
    emit(
        {
            "type": "assistant",
            "session_id": SESSION,
            "message": {"role": "assistant", "content": [{"type": "text", "text": words}]},
        }
    )


def tool(name: str, tool_input: dict[str, Any], output: str = "ok") -> None:
    tool_id = "toolu_" + uuid.uuid4().hex[:12]
    emit(
        {
            "type": "assistant",
            "session_id": SESSION,
            "message": {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": tool_id, "name": name, "input": tool_input}],
            },
        }
    )
    emit(
        {
            "type": "user",
            "session_id": SESSION,
            "message": {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": output}],
            },
        }
    )


def result(
    *,
    is_error: bool = False,
    subtype: str = "success",
    text_: str | None = "Done: the fake did its work.",
    errors: list[str] | None = None,
    turns: int = 3,
    status: int | None = None,
) -> None:
    event: dict[str, Any] = {
        "type": "result",
        "subtype": subtype,
        "is_error": is_error,
        "num_turns": turns,
        "duration_ms": 1234,
        "duration_api_ms": 1000,
        "total_cost_usd": 0.0123,
        "usage": {"input_tokens": 10, "output_tokens": 20},
        "permission_denials": [],
        "session_id": SESSION,
        "some_future_field": {"nested": True},
    }
    if text_ is not None:
        event["result"] = text_
    if errors is not None:
        event["errors"] = errors
    if status is not None:
        event["api_error_status"] = status
    emit(event)


def sleep_forever() -> None:
    while True:
        time.sleep(3600)


def parse_args(argv: list[str]) -> tuple[dict[str, str | bool], list[str]]:
    with_value = {
        "--output-format",
        "--input-format",
        "--max-turns",
        "--permission-mode",
        "--model",
        "--max-budget-usd",
        "--allowedTools",
        "--disallowedTools",
        "--append-system-prompt",
        "--resume",
    }
    options: dict[str, str | bool] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in with_value:
            options[arg] = argv[i + 1]
            i += 2
            continue
        if arg.startswith("-"):
            options[arg] = True
        else:
            positional.append(arg)
        i += 1
    return options, positional


def stdin_is_devnull() -> bool:
    try:
        mode = os.fstat(0)
    except OSError:
        return False
    return stat.S_ISCHR(mode.st_mode) and mode.st_rdev == os.stat(os.devnull).st_rdev


def read_prompt(options: dict[str, str | bool], positional: list[str]) -> tuple[str, str]:
    if options.get("--input-format") == "stream-json":
        prompt = ""
        for line in sys.stdin:
            message = json.loads(line)
            for block in message["message"]["content"]:
                if block.get("type") == "text":
                    prompt += block["text"]
        return prompt, "stdin"
    return (positional[0] if positional else ""), "argv"


def record(options: dict[str, str | bool], prompt: str, source: str, devnull: bool) -> None:
    global RECORD
    elsewhere = os.environ.get("FAKE_CLAUDE_RECORD")
    if elsewhere:
        RECORD = Path(elsewhere, str(os.getpid()))
    RECORD.mkdir(parents=True, exist_ok=True)
    (RECORD / "argv.json").write_text(json.dumps(sys.argv))
    (RECORD / "env.json").write_text(json.dumps(dict(os.environ)))
    (RECORD / "prompt.txt").write_text(prompt)
    (RECORD / "pid").write_text(str(os.getpid()))
    (RECORD / "stdin.json").write_text(
        json.dumps({"devnull": devnull, "prompt_source": source, "options": options})
    )


def leave_grandchild(*, linger: float | None) -> None:
    """Fork a child that starts a new session and forks the grandchild, then exits."""
    pid_file = RECORD / "grandchild.pid"
    middle = os.fork()
    if middle == 0:
        os.setsid()
        if os.fork() == 0:
            pid_file.write_text(str(os.getpid()))
            if linger is not None:
                time.sleep(linger)
                os._exit(0)
            sleep_forever()
        os._exit(0)
    os.waitpid(middle, 0)
    while not pid_file.exists() or not pid_file.read_text():
        time.sleep(0.01)


def main() -> int:
    options, positional = parse_args(sys.argv[1:])
    if options.get("--output-format") == "stream-json" and not options.get("--verbose"):
        err("Error: When using --print, --output-format=stream-json requires --verbose")
        return 1
    devnull = stdin_is_devnull()
    prompt, source = read_prompt(options, positional)
    record(options, prompt, source, devnull)
    found = re.search(r"FAKE_MODE=([a-z_0-9]+)", prompt)
    mode = found.group(1) if found else os.environ.get("FAKE_CLAUDE_MODE", "success")
    cwd = os.getcwd()

    def param(name: str, default: str) -> str:
        match = re.search(rf"{name}=([A-Za-z0-9_.\-]+)", prompt)
        return match.group(1) if match else default

    if mode == "resume_missing" and options.get("--resume"):
        err(f"No conversation found with session ID: {options['--resume']}")
        return 1
    if mode == "ignore_sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    init(cwd)

    if mode in ("success", "resume_missing"):
        text(f"I'll look at the project first. {param('FAKE_SAY', '')}".strip())
        tool("Read", {"file_path": os.path.join(cwd, "README.md")})
        tool("Edit", {"file_path": os.path.join(cwd, "src", "app.py"), "old_string": "a"})
        tool("Bash", {"command": "pytest -q"}, "3 passed")
        result(text_="All done: edited src/app.py and the tests pass.")
        return 0
    if mode == "echo_env":
        shown = "\n".join(f"{name}={value}" for name, value in sorted(os.environ.items()))
        text(f"My environment:\n{shown}")
        result(text_=f"Done. For the record:\n{shown}")
        return 0
    if mode == "write_file":
        name = param("FAKE_FILE", "fake_output.txt")
        path = Path(cwd, name)
        path.write_text(f"written by fake claude for a prompt of {len(prompt)} chars\n")
        tool("Write", {"file_path": str(path), "content": "..."})
        result(text_=f"Wrote {name}.")
        return 0
    if mode == "is_error":
        result(
            is_error=True,
            subtype="error_during_execution",
            text_=None,
            errors=["Tool execution exploded", "second line"],
        )
        return 1
    if mode == "max_turns":
        result(
            is_error=True,
            subtype="error_max_turns",
            text_=None,
            errors=["Reached maximum number of turns (7)"],
            turns=7,
        )
        return 1
    if mode == "auth_fail":
        result(is_error=True, text_="Not logged in · Please run /login", turns=1)
        return 1
    if mode == "auth_401":
        emit(
            {
                "type": "assistant",
                "session_id": SESSION,
                "error": "authentication_failed",
                "is_api_error_message": True,
                "message": {
                    "model": "<synthetic>",
                    "role": "assistant",
                    "content": [{"type": "text", "text": "Invalid API key · Fix external API key"}],
                },
            }
        )
        result(is_error=True, text_="Invalid API key · Fix external API key", status=401)
        return 1
    if mode == "no_result":
        text("Starting, but I will vanish.")
        err("Error: stream closed unexpectedly")
        return 0
    if mode == "crash":
        err("TypeError: Cannot read properties of undefined (reading 'content')")
        err("    at fake (file:///fake/cli.js:1:1)")
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGSEGV)
        return 99
    if mode in ("hang", "ignore_sigterm"):
        sleep_forever()
    if mode == "hang_after_result":
        result(text_="Finished, but I will not exit.")
        sleep_forever()
    if mode == "huge_line":
        size = int(param("FAKE_SIZE", str(20 * 1024 * 1024)))
        tool("Read", {"file_path": os.path.join(cwd, "big.bin")}, "x" * size)
        result(text_=f"Read a file of {size} bytes.")
        return 0
    if mode == "slow":
        seconds = float(param("FAKE_SECONDS", "2"))
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            tool("Grep", {"pattern": "x", "path": cwd})
            time.sleep(0.2)
        result(text_="Slow but steady.")
        return 0
    if mode == "grandchild_hang":
        leave_grandchild(linger=None)
        sleep_forever()
    if mode in ("setsid_grandchild", "orphan_exits"):
        leave_grandchild(linger=0.3 if mode == "orphan_exits" else None)
        if mode == "orphan_exits":
            # Stay alive while the orphan dies: it must become the worker's zombie.
            time.sleep(1.0)
        result(text_="Left something running.")
        return 0
    if mode == "garbage":
        sys.stdout.write('this is not json\n{broken json\n[1, 2, 3]\n"a string"\n\n')
        sys.stdout.flush()
        sys.stdout.buffer.write(b"\xff\xfe\x00 binary \x1b[31m junk\r\n")
        emit({"type": "weird_future_event", "payload": [1, 2]})
        emit({"type": "assistant", "message": "not a dict"})
        emit({"type": "assistant", "message": {"content": "not a list"}})
        emit({"type": "assistant", "message": {"content": [42, {"type": "tool_use"}]}})
        emit({"type": "system", "subtype": "api_retry", "error": {"message": "overloaded"}})
        emit({"type": "result", "subtype": "success", "is_error": False, "num_turns": "x"})
        sys.stdout.write("trailing junk without newline")
        sys.stdout.flush()
        return 0
    err(f"fake claude: unknown mode {mode!r}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
