#!/usr/bin/env python3
"""`make demo`: a local board, demo tasks, and the worker pool running them, on screen.

The first line is the board page's address (a one-time sign-in link): open it to watch the
cards move while the demo runs. Several slots work at once (each demo task takes a few
seconds, and the demo board has no rate limit, so nothing serialises them); the terminal
follows the board through the same change feed as the page.

Everything happens under ./.demo (git-ignored; $TASKINFA_DEMO_DIR elsewhere): the board's
SQLite file, a small git repository the tasks work on, workspaces and logs. The agent is
Claude Code when ANTHROPIC_API_KEY is set and the `claude` CLI is installed; otherwise the
example agent examples/demo_agent.py does real, small work in each task's git tree (through
the `command` agent), and the demo says so.

Ctrl-C once: the worker drains (running tasks finish). Twice: running tasks are released.
Either way the demo then ends, without its review round.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import anyio
from loguru import logger
from pydantic import SecretStr

from taskinfa_worker.agent.process import DEATHSIG_SHIM
from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.models import Task

ROOT = Path(__file__).resolve().parent.parent
DEMO = Path(os.environ.get("TASKINFA_DEMO_DIR", ROOT / ".demo"))  # tests give their own
API_KEY = "tk_demo_local_board_key_0001"
DEMO_TASKS = [
    ("Add a CONTRIBUTING guide", "high", "Explain how to run the tests and open a PR."),
    ("Document the config file", "medium", "List every option of config.ini with an example."),
    ("Write release notes for 1.2", "urgent", "Summarise the changes since 1.1."),
    ("Add a code of conduct", "low", "Adopt a short, friendly code of conduct."),
    ("Describe the architecture", "medium", "One page: modules and how data flows."),
    ("Add a FAQ", "low", "Five questions new users ask, with answers."),
    ("Write a security policy", "high", "How to report a vulnerability, and what happens next."),
    ("Add a changelog", "medium", "Start CHANGELOG.md in the Keep a Changelog format."),
]
SLOTS = 4
STEP_PAUSE = "1.0"  # seconds between the example agent's steps: a task takes about 5 s
COLUMNS = ("todo", "in_progress", "review", "blocked")


class CtrlC:
    """How many times Ctrl-C was pressed: the handler counts, main() decides what follows."""

    presses = 0


def say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"==> {text}", flush=True)


def git(*args: str, cwd: Path, show: bool = False) -> None:
    """Run git quietly, or with its output on screen (``show``: what a reviewer would see)."""
    done = subprocess.run(
        ["git", "-c", "user.name=Demo", "-c", "user.email=demo@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )
    if show:
        print("\n".join(f"   {line}" for line in done.stdout.rstrip().splitlines()), flush=True)


def make_repository() -> Path:
    """A bare 'origin' with one commit, standing in for the project's GitHub repository."""
    seed, origin = DEMO / "seed", DEMO / "demo-app.git"
    seed.mkdir(parents=True)
    (seed / "README.md").write_text("# demo-app\n\nA project the demo tasks work on.\n")
    git("init", "-q", "-b", "main", ".", cwd=seed)
    git("add", "README.md", cwd=seed)
    git("commit", "-q", "-m", "Initial commit", cwd=seed)
    git("clone", "-q", "--bare", str(seed), str(origin), cwd=DEMO)
    shutil.rmtree(seed)
    return origin


def find_claude() -> str | None:
    local = ROOT / ".cache/claude-code/node_modules/.bin/claude"
    return shutil.which("claude") or (str(local) if local.exists() else None)


def agent_settings() -> dict[str, str]:
    claude = find_claude()
    if os.environ.get("ANTHROPIC_API_KEY") and claude:
        say(f"Agent: Claude Code ({claude}), with your ANTHROPIC_API_KEY.")
        return {"AGENT": "claude", "CLAUDE_BIN": claude}
    say(
        "Agent: examples/demo_agent.py, a small example agent (no ANTHROPIC_API_KEY or no "
        "claude CLI). It writes and commits a file in each task's own git branch."
    )
    script = ROOT / "examples" / "demo_agent.py"
    return {
        "AGENT": "command",
        "AGENT_COMMAND": (
            f"{sys.executable} {script} --task-id {{task_id}} --workspace {{workspace}} "
            "--prompt {prompt}"
        ),
    }


def start_board() -> tuple[subprocess.Popen[str], str, str]:
    """The local board, its API URL and the page's one-time sign-in link."""
    board = subprocess.Popen(
        [
            # Through the worker's parent-death shim: the board is in a session of its own
            # (below), so a demo that is SIGKILLed (a test's timeout, a closed terminal)
            # would otherwise leave it running with nobody to stop it.
            *(sys.executable, "-I", "-S", str(DEATHSIG_SHIM), str(os.getpid())),
            sys.executable,
            "-m",
            "taskinfa_worker",
            "board",
            "--db",
            str(DEMO / "board.db"),
            "--port",
            "0",
            "--api-key",
            API_KEY,
            # Off, so the slots truly overlap: 100 requests a minute (a real dashboard's
            # limit) would let only a slot or two work at the demo's pace.
            "--rate-limit",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # Ctrl-C goes to the demo, which stops the board last
    )
    assert board.stdout is not None
    link = None
    for line in board.stdout:
        page = re.search(r"sign-in link\): (http://\S+)", line)
        if page:
            link = page.group(1)
        match = re.search(r"listening on (http://\S+/api)", line)
        if match and link:
            return board, match.group(1), link
    raise SystemExit("the local board did not start:\n" + (board.stdout.read() or ""))


def board_line(counts: dict[str, int]) -> str:
    return "   ".join(f"{name}: {counts.get(name, 0)}" for name in COLUMNS)


async def seed_tasks(client: BoardClient, origin: Path) -> None:
    project = await client.create_task_list(
        "Demo app", description="Demo project", repository_url=str(origin)
    )
    for title, priority, description in DEMO_TASKS:
        await client.create_task(
            title, project.id, description=description, priority=priority, status="todo"
        )
    say(f"Board: {len(DEMO_TASKS)} demo tasks in project '{project.name}'.")


async def watch(url: str, worker: subprocess.Popen[bytes]) -> int:
    """Print the board whenever a task moves, until the worker exits; return the most tasks
    seen in progress at once. Reads the page's change feed: no polling, no rate budget."""
    last: dict[str, str] = {}
    tasks: dict[str, dict[str, Any]] = {}  # the board's cards, kept up to date by the feed
    version, most = -1, 0
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        while True:
            exited = worker.poll() is not None
            wait = "0" if exited else "1"  # after the exit: one last look, without waiting
            params = {"since": str(version), "wait": wait}
            async with http.get(f"{url}/changes", params=params) as answer:
                view = await answer.json() if answer.status == 200 else None
            if view is not None:
                version = view["version"]
                # The feed sends the cards changed since our version (the whole board the
                # first time) and the ids of the tasks deleted.
                if view["whole"]:
                    tasks.clear()
                tasks.update({task["id"]: task for task in view["tasks"]})
                for task_id in view["removed"]:
                    tasks.pop(task_id, None)
                now = {task_id: task["status"] for task_id, task in tasks.items()}
                for task_id, status in now.items():
                    if task_id in last and last[task_id] != status:
                        task = tasks[task_id]
                        print(
                            f"   {task['title'][:40]:<40} {last[task_id]:>11} → {status:<11} "
                            f"{task['assigned_to'] or ''}"
                        )
                if now != last:
                    counts: dict[str, int] = {}
                    for status in now.values():
                        counts[status] = counts.get(status, 0) + 1
                    most = max(most, counts.get("in_progress", 0))
                    print(f"   [{board_line(counts)}]", flush=True)
                last = now
            if exited:
                return most


async def show_result(client: BoardClient) -> None:
    page = await client.list_tasks(limit=100)
    say("Final board:")
    for task in page.tasks:
        files = ", ".join(task.files_changed) or "-"
        who = task.assigned_to or "-"
        print(f"   {task.status:<11} {task.title[:40]:<40} by {who:<10} files: {files}")
        print(f"   {'':<11} branch: {task.branch_name or '(none)'}")
    first = page.tasks[0]
    comments = await client.list_comments(first.id)
    say(f"Comments on '{first.title}':")
    for comment in reversed(comments.comments):
        text = comment.content.strip().replace("\n", " ")
        print(f"   [{comment.comment_type}] {comment.author}: {text[:110]}")


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "taskinfa_worker", "run"),
            *("--concurrency", str(SLOTS), "--exit-when-idle"),
        ],
        env=env,  # same process group: Ctrl-C reaches the worker directly
        # Not the checkout: the agents' sandbox hides the worker's working directory, and
        # the demo agent is a script in the checkout (a .env there is not the demo's either).
        cwd=DEMO,
    )


def show_branches(origin: Path) -> None:
    """Where the work went: each task's branch, pushed to the project's repository."""
    say(f"Each task's work is on its own branch: git -C {origin} branch --list 'taskinfa/*'")
    git("--no-pager", "branch", "--list", "taskinfa/*", cwd=origin, show=True)
    listed = subprocess.run(
        ["git", "for-each-ref", "--count=1", "--format=%(refname:short)", "refs/heads/taskinfa/"],
        cwd=origin,
        capture_output=True,
        text=True,
        check=True,
    )
    branch = listed.stdout.strip()
    if branch:
        say(f"One of them: git -C {origin} log --stat -1 {branch}")
        git(
            "--no-pager",
            "log",
            "--stat",
            "-1",
            "--format=%h %s (%an)",
            branch,
            cwd=origin,
            show=True,
        )


async def send_back_with_an_answer(client: BoardClient) -> Task:
    """Play the reviewer: answer on one task and send it back to todo."""
    page = await client.list_tasks(status="review", limit=1)
    task = page.tasks[0]
    answer = "Thanks. Please also list what could go wrong."
    await client.add_comment(
        task.id, author="reviewer", content=answer, comment_type="progress", author_type="user"
    )
    await client.update_task(task.id, status="todo", assigned_to=None)
    say(f"A reviewer answers on '{task.title}' ({answer!r}) and moves it back to todo.")
    return task


async def main() -> int:
    board, url, link = start_board()
    say(f"Watch it live on the board's page (a one-time sign-in link): {link}")
    say(f"The local board (SQLite, 127.0.0.1) serves its API at {url}")
    worker: subprocess.Popen[bytes] | None = None
    try:
        async with BoardClient(url, SecretStr(API_KEY), rate_limit=600) as client:
            origin = make_repository()
            await seed_tasks(client, origin)
            env = {
                **os.environ,
                "TASKINFA_API_URL": url,
                "TASKINFA_API_KEY": API_KEY,
                "BOT_NAME": "demo",
                "WORKSPACE_DIR": str(DEMO / "workspace"),
                "LOG_DIR": str(DEMO / "logs"),
                "ALLOW_LOCAL_REPOS": "true",
                "POLL_INTERVAL": "0.5",
                "RATE_LIMIT": "600",
                "DEMO_AGENT_PAUSE": os.environ.get("DEMO_AGENT_PAUSE", STEP_PAUSE),
                "AGENT_ENV_ALLOW": "DEMO_AGENT_PAUSE",  # agents get an allow-listed environment
                "LOG_FORMAT": "text",
                "LOG_LEVEL": "WARNING",
                **agent_settings(),
            }
            say(f"Starting the worker: taskinfa-worker run --concurrency {SLOTS} --exit-when-idle")
            say("Ctrl-C once: the worker drains; twice: it releases running tasks to todo.")
            worker = start_worker(env)
            most = 0
            with contextlib.suppress(KeyboardInterrupt):
                most = await watch(url, worker)
            code = worker.wait()
            say(f"Up to {most} tasks were in progress at the same time ({SLOTS} slots).")
            await show_result(client)
            if code != 0:
                return code
            show_branches(origin)
            if CtrlC.presses:
                # Ctrl-C means "stop": a second worker taking the tasks left would not.
                say("Stopped by Ctrl-C: the review round and the tasks left in todo are skipped.")
                return code
            reviewed = await send_back_with_an_answer(client)
            say("The worker runs again and continues that task from its branch:")
            worker = start_worker(env)
            with contextlib.suppress(KeyboardInterrupt):
                await watch(url, worker)
            code = worker.wait()
            task = await client.get_task(reviewed.id)
            if task is not None and task.branch_name:
                say(
                    f"The task's branch now has both rounds: git -C {origin} log {task.branch_name}"
                )
                git("--no-pager", "log", "--format=%h %s", task.branch_name, cwd=origin, show=True)
            say(f"Worker exited with status {code}. Logs and transcripts: {DEMO / 'logs' / 'demo'}")
            say(f"The work: the branches above, in {origin}; the board's data: {DEMO / 'board.db'}")
            return code
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            worker.wait()
        board.send_signal(signal.SIGTERM)
        board.wait(timeout=10)


def run() -> int:
    """Ctrl-C reaches the worker itself (same process group): the first drains it, the
    second releases its running tasks. The demo keeps watching until the worker exits."""

    def note(_signum: int, _frame: object) -> None:
        CtrlC.presses += 1
        presses = CtrlC.presses
        action = "drains" if presses == 1 else "stops its agents and releases their tasks"
        print(f"\n   (Ctrl-C {presses}: the worker {action})", flush=True)
        if presses >= 3:
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, note)
    # Killed rather than interrupted (a timeout, a closed terminal): still stop the worker
    # and the board in main()'s finally, instead of leaving them running.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    logger.remove()  # the demo's own board client stays quiet; the board table is the show
    logger.add(sys.stderr, level="WARNING")
    if DEMO.exists():
        shutil.rmtree(DEMO)  # every demo starts from nothing
    DEMO.mkdir(parents=True)
    started = time.monotonic()
    code = anyio.run(main)
    say(f"Demo finished in {time.monotonic() - started:.0f} s.")
    return code


if __name__ == "__main__":
    raise SystemExit(run())
