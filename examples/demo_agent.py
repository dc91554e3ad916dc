#!/usr/bin/env python3
"""DEMO agent for ``make demo``: a stand-in for Claude Code that does small, real work.

Run through the ``command`` agent (the command is one line):

    AGENT=command
    AGENT_COMMAND="$CHECKOUT/.venv/bin/python $CHECKOUT/examples/demo_agent.py
                   --task-id {task_id} --workspace {workspace} --prompt {prompt}"

(absolute paths: the agent runs in its task's tree, and the sandbox hides the worker's
working directory)

It reads the task's title and description from the prompt the worker built (or from
``$TASKINFA_PROMPT_FILE``), writes ``NOTES/<task id>.md`` in the workspace with notes derived
from them (and from what people answered in review, when the task comes back), and commits
that file when the workspace is a git repository. Asked to answer a person's message (the
dashboard's chat), it answers in words and changes nothing, unless the message says
"notes", when it adds the message to the notes as a review answer would. It prints a few
lines of progress (the worker turns them into progress comments) and exits 0. It calls no
model: it is an example, not an agent you would want working on your code. Standard
library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

# Seconds between steps, so that a demo shows progress as it happens.
STEP_PAUSE = float(os.environ.get("DEMO_AGENT_PAUSE", "0.3"))


def say(line: str) -> None:
    print(f"[demo-agent] {line}", flush=True)
    time.sleep(STEP_PAUSE)


def title_of(prompt: str) -> str:
    """The title: the prompt has it as a JSON string on a ``Title:`` line."""
    match = re.search(r"^Title: (.*)$", prompt, re.MULTILINE)
    if not match:
        return "(untitled)"
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return match.group(1)
    return str(value)


def description_of(prompt: str) -> str:
    """The description: the fenced block after the ``Description:`` line."""
    match = re.search(r"^Description:\n(`{3,})text\n(.*?)\n\1$", prompt, re.MULTILINE | re.DOTALL)
    return match.group(2) if match else ""


def messages_of(prompt: str) -> list[str]:
    """What people wrote on the task since the last run (the worker quotes each in a fence)."""
    _, found, section = prompt.partition("## What people wrote on the task since the last run")
    if not found:
        return []
    section = section.split("\n## ", 1)[0]
    return [m.group(2) for m in re.finditer(r"^(`{3,})text\n(.*?)\n\1$", section, re.M | re.S)]


def question_of(prompt: str) -> str | None:
    """The person's message to answer, when the worker asks for an answer (the chat)."""
    _, found, section = prompt.partition("## The message to answer")
    if not found:
        return None
    match = re.search(r"^(`{3,})text\n(.*?)\n\1$", section, re.M | re.S)
    return match.group(2) if match else ""


def safe_name(task_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", task_id).strip(".") or "task"


def notes(task_id: str, title: str, description: str, answers: list[str]) -> str:
    words = re.findall(r"[A-Za-z][A-Za-z'-]+", f"{title} {description}")
    keywords = sorted({w.lower() for w in words if len(w) > 4})[:12]
    checklist = [line.strip(" -*\t") for line in description.splitlines() if line.strip()]
    lines = [
        f"# {title}",
        "",
        f"Task `{task_id}`, handled by the taskinfa-worker demo agent.",
        "",
        "## What was asked",
        "",
        description.strip() or "(no description)",
        "",
        "## Plan",
        "",
        *(f"- [ ] {item}" for item in checklist[:10]),
        *([] if checklist else ["- [ ] Clarify the task with its author"]),
        "",
        "## Keywords",
        "",
        ", ".join(keywords) or "(none)",
        "",
    ]
    if answers:
        lines += ["## From the review", "", *(f"> {answer}" for answer in answers), ""]
    return "\n".join(lines)


def git(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=workspace, capture_output=True, text=True, check=False
    )


def commit(workspace: Path, path: Path, title: str) -> bool:
    inside = git(workspace, "rev-parse", "--is-inside-work-tree")
    if inside.returncode != 0 or inside.stdout.strip() != "true":
        say("the workspace is not a git repository: leaving the file uncommitted")
        return False
    identity: list[str] = []
    if not git(workspace, "config", "user.email").stdout.strip():
        identity = ["-c", "user.name=Taskinfa demo agent", "-c", "user.email=demo@example.invalid"]
    relative = str(path.relative_to(workspace))
    added = git(workspace, "add", "--", relative)
    if added.returncode != 0:
        say(f"git add failed: {added.stderr.strip()}")
        return False
    message = f"Add notes for: {title[:60]}"
    done = git(workspace, *identity, "commit", "-q", "-m", message, "--", relative)
    if done.returncode != 0:
        say(f"git commit failed: {done.stderr.strip() or done.stdout.strip()}")
        return False
    say(f"committed {relative}")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-id", default=os.environ.get("TASKINFA_TASK_ID", "task"))
    parser.add_argument("--workspace", default=os.environ.get("TASKINFA_WORKSPACE", "."))
    parser.add_argument("--prompt", default=None)
    args = parser.parse_args()
    prompt = args.prompt
    if prompt is None:
        prompt_file = os.environ.get("TASKINFA_PROMPT_FILE")
        prompt = Path(prompt_file).read_text(encoding="utf-8") if prompt_file else ""

    workspace = Path(args.workspace).resolve()
    title = title_of(prompt)
    description = description_of(prompt)
    say(f"reading task {args.task_id}: {title}")
    say(f"the description has {len(description.split())} words")

    question = question_of(prompt)
    if question is not None and "notes" not in question.lower():
        say("a person asked a question: answering, changing nothing")
        print(f"You asked: {question.strip()[:200]!r}. The notes of '{title}' stand as they are.")
        return 0
    answers = messages_of(prompt) if question is None else [question]
    if answers:
        say(f"the review answered: {answers[-1][:60]}")
    path = workspace / "NOTES" / f"{safe_name(args.task_id)}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = path.read_text(encoding="utf-8") if path.exists() else ""
    answers = [line[2:] for line in previous.splitlines() if line.startswith("> ")] + answers
    path.write_text(notes(args.task_id, title, description, answers), encoding="utf-8")
    say(f"wrote {path.relative_to(workspace)}")

    commit(workspace, path, title)
    say("done")
    print(f"Wrote notes for '{title}' to {path.relative_to(workspace)}.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
