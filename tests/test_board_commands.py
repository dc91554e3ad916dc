"""`taskinfa-worker board add | list | move | comment` as a person runs them: a real process
against the local board over HTTP, with the board's URL and key in the environment."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from taskinfa_worker.board.llm_store import LlmRecords
from taskinfa_worker.settings import Settings
from tests.board_support import BoardHandle, MakeBoard


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


async def board_cli(board: BoardHandle, *args: str, cwd: Path, stdin: bytes = b"") -> Done:
    """Run `taskinfa-worker board ARGS` against ``board``; the event loop keeps serving it."""
    base = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env = {**base, "TASKINFA_API_URL": board.url, "TASKINFA_API_KEY": board.api_key}
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "taskinfa_worker", "board", *args),
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate(stdin)
    assert process.returncode is not None
    return Done(process.returncode, out.decode(), err.decode())


async def test_add_then_list_shows_the_task_in_its_column(
    board: BoardHandle, tmp_path: Path
) -> None:
    board.store.create_task_list("Website")
    added = await board_cli(
        board,
        *("add", "Fix the login form", "--description", "It rejects valid emails."),
        *("--priority", "high", "--project", "website"),
        cwd=tmp_path,
    )
    assert added.returncode == 0, added.stderr
    (task,) = board.store.list_tasks(status="todo")[0]
    assert added.stdout.strip() == f"Added {task['id']} to website (todo): Fix the login form"
    assert (task["description"], task["priority"], task["task_list_id"]) == (
        "It rejects valid emails.",
        "high",
        "website",
    )
    board.create_task("Ship it", status="review", assigned_to="tester-2")

    listed = await board_cli(board, "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    todo, review = lines.index("todo (1)"), lines.index("review (1)")
    assert todo < review  # the board's column order
    assert lines[todo + 1].split()[:2] == [task["id"], "high"]
    assert lines[todo + 1].endswith("Fix the login form")
    assert lines[review + 1].split()[2] == "tester-2"
    assert listed.stderr == ""  # no request log lines on a person's terminal


async def test_move_back_to_todo_frees_the_task_for_a_worker(
    board: BoardHandle, tmp_path: Path
) -> None:
    task = board.create_task("Rename the button", status="review", assigned_to="tester-1")
    moved = await board_cli(board, "move", task["id"], "todo", cwd=tmp_path)
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.strip() == f"Moved {task['id']} to todo: Rename the button"
    now = board.store.get_task(task["id"])
    assert (now["status"], now["assigned_to"]) == ("todo", None)
    # ... so the claim a worker makes takes it again.
    assert board.store.claim_task(task["id"], "tester-3")["assigned_to"] == "tester-3"

    done = await board_cli(board, "move", task["id"], "done", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert board.store.get_task(task["id"])["assigned_to"] == "tester-3"  # kept: not freed


async def test_comment_is_a_person_s_message_to_the_agent(
    board: BoardHandle, tmp_path: Path
) -> None:
    task = board.create_task("Rename the button", status="review")
    wrote = await board_cli(
        board, "comment", task["id"], "Call it Save, please.", "--author", "ana", cwd=tmp_path
    )
    assert wrote.returncode == 0, wrote.stderr
    comments, _ = board.store.list_comments(task["id"])
    assert [(c["author"], c["author_type"], c["comment_type"], c["content"]) for c in comments] == [
        ("ana", "user", "human_message", "Call it Save, please.")
    ]


async def test_comment_on_a_board_without_comments_lands_in_the_notes(
    make_board: MakeBoard, tmp_path: Path
) -> None:
    board = await make_board(profile="v1")
    task = board.create_task("Rename the button", status="review")
    wrote = await board_cli(
        board, "comment", task["id"], "Call it Save.", "--author", "ana", cwd=tmp_path
    )
    assert wrote.returncode == 0, wrote.stderr
    assert "notes" in wrote.stdout
    assert "Call it Save." in (board.store.get_task(task["id"])["completion_notes"] or "")


@pytest.mark.parametrize(
    ("args", "status", "sentence"),
    [
        (("move", "task_nope", "done"), 1, "answered 404: Task not found"),
        (("add", " "), 1, "answered 400: title must not be empty"),
        (("move", "task_nope", "finished"), 2, "invalid choice: 'finished'"),
    ],
)
async def test_bad_input_is_one_sentence(
    board: BoardHandle, tmp_path: Path, args: tuple[str, ...], status: int, sentence: str
) -> None:
    done = await board_cli(board, *args, cwd=tmp_path)
    assert done.returncode == status
    assert sentence in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr
    assert board.api_key not in done.stderr


async def test_a_refused_key_says_so_without_the_key(board: BoardHandle, tmp_path: Path) -> None:
    wrong = BoardHandle(
        board.url, "tk_wrong_key_00000001", board.store, board.options, board.db_path, board.server
    )
    done = await board_cli(wrong, "list", cwd=tmp_path)
    assert done.returncode == 3
    assert "refused the API key" in done.stderr
    assert "tk_wrong_key_00000001" not in done.stderr


async def test_a_newcomer_sets_a_provider_and_a_projects_model(
    make_board: MakeBoard, tmp_path: Path
) -> None:
    """The token goes in on stdin and never comes back out; the choice lands as the
    release's settings page would leave it, and ``llm`` shows it."""
    board = await make_board(profile="v2")
    token = "or-newcomer-0123456789abcdef"
    provider = await board_cli(
        board,
        *("provider", "openrouter", "--base-url", "https://openrouter.ai/api", "--token-stdin"),
        cwd=tmp_path,
        stdin=f"{token}\n".encode(),
    )
    assert provider.returncode == 0, provider.stderr
    assert provider.stdout.strip() == "Provider openrouter: https://openrouter.ai/api, token set"
    model = await board_cli(
        board, "model", "openrouter", "qwen/qwen3-coder", "--project", "default", cwd=tmp_path
    )
    assert model.returncode == 0, model.stderr
    assert (
        model.stdout.strip() == "task runs of project default use qwen/qwen3-coder on openrouter."
    )
    everyone = await board_cli(board, "model", "anthropic", cwd=tmp_path)
    assert "task runs of the workspace use the provider's default model" in everyone.stdout
    shown = await board_cli(board, "llm", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "Providers:",
        "  openrouter  https://openrouter.ai/api  token set",
        "Choices:",
        # The release's order: by kind of session, then as they were made.
        "  task  project default  openrouter  qwen/qwen3-coder",
        "  task  workspace  anthropic  (the provider's default)",
    ]
    for done in (provider, model, everyone, shown):
        assert token not in done.stdout + done.stderr
    (row,) = LlmRecords(board.store).config()["providers"]
    assert row["auth_token"] == token
    cleared = await board_cli(board, "model", "--clear", "--project", "default", cwd=tmp_path)
    assert cleared.stdout.strip() == "Cleared the task choice of project default."
    assert len(LlmRecords(board.store).config()["session_configs"]) == 1


async def test_a_model_choice_for_a_project_that_is_not_there_is_refused(
    make_board: MakeBoard, tmp_path: Path
) -> None:
    """A typo in --project would leave a choice no run ever follows, and say it worked."""
    board = await make_board(profile="v2")
    refused = await board_cli(
        board, "model", "ollama", "qwen3-coder", "--project", "websit", cwd=tmp_path
    )
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "taskinfa-worker: The board has no project websit: --project takes a task list id"
        " (GET /task-lists lists them); nothing was set."
    )
    assert LlmRecords(board.store).config()["session_configs"] == []
    board.store.create_task_list("Website")
    chosen = await board_cli(
        board, "model", "ollama", "qwen3-coder", "--project", "website", cwd=tmp_path
    )
    assert chosen.returncode == 0, chosen.stderr
    assert len(LlmRecords(board.store).config()["session_configs"]) == 1


@pytest.mark.parametrize("profile", ["full", "v1"])
async def test_model_choice_commands_on_a_board_without_it(
    make_board: MakeBoard, tmp_path: Path, profile: str
) -> None:
    """The default local board has no model choice either: a newcomer who tries it there is
    told what is missing and where it is, not shown the board's 404 page."""
    board = await make_board(profile=profile)
    shown = await board_cli(board, "llm", cwd=tmp_path)
    assert shown.returncode == 0
    assert "has no llm-config" in shown.stdout
    for args in (
        ("model", "ollama", "qwen3"),
        ("model", "--clear"),
        ("provider", "ollama", "--base-url", "http://127.0.0.1:11434"),
    ):
        refused = await board_cli(board, *args, cwd=tmp_path)
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            "taskinfa-worker: The board has no llm-config (a release before the model choice;"
            " the local board has it with --profile v2)."
        )
    unclear = await board_cli(board, "model", cwd=tmp_path)
    assert unclear.returncode == 2
    assert "needs a PROVIDER, or --clear" in unclear.stderr
