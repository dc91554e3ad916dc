"""The work reaches the reviewer, and the reviewer's answer reaches the next round.

A bare repository on disk stands in for the project's GitHub repository; the pool runs
against the local board with the default PUSH setting unless a test says otherwise.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.models import Comment, Task
from tests.agent.support import FAKE_CLAUDE
from tests.pool.support import Scene, running_pool, wait_for, worker_settings
from tests.workspace.support import make_origin, sh

ROUND_AGENT = Path(__file__).parents[1] / "fakes" / "round_agent.py"
COMMAND = (
    f"{shlex.quote(sys.executable)} {shlex.quote(str(ROUND_AGENT))} "
    "--task {task_id} --workspace {workspace} --prompt {prompt}"
)


def delivery_settings(board: Any, scene: Scene, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "agent_command": COMMAND,
        "agent_env_allow": ["FAKE_RECORD"],
        "allow_local_repos": True,
    }
    values.update(overrides)
    return worker_settings(board.url, board.api_key, scene, **values)


@pytest.fixture
def record(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = scene.root / "record.jsonl"
    monkeypatch.setenv("FAKE_RECORD", str(path))
    return path


def rounds(record: Path) -> list[dict[str, Any]]:
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


async def project_task(client: BoardClient, origin: Path, title: str) -> Task:
    project = await client.create_task_list("App", repository_url=str(origin))
    return await client.create_task(title, project.id, description="Add a feature.")


async def in_review(client: BoardClient, task: Task) -> Task:
    async def reviewed() -> bool:
        return (await client.get_task(task.id)).status == "review"

    await wait_for(reviewed, what=f"{task.id} in review")
    return await client.get_task(task.id)


async def comments_of(client: BoardClient, task_id: str) -> list[Comment]:
    return list(reversed((await client.list_comments(task_id, limit=100)).comments))


def mirror_of(scene: Scene) -> Path:
    (mirror,) = (scene.root / "workspace" / "repos").glob("*.git")
    return mirror


async def test_default_settings_put_the_commit_on_the_remote_and_name_the_branch(
    board: Any, scene: Scene, record: Path
) -> None:
    origin = make_origin(scene.root, {"README.md": "app\n"})
    settings = delivery_settings(board, scene)
    assert settings.push == "auto"
    async with running_pool(settings) as (_pool, client):
        task = await project_task(client, origin, "Add the feature")
        done = await in_review(client, task)
        notes = await comments_of(client, task.id)
    assert done.branch_name is not None
    assert done.branch_name.startswith(f"taskinfa/{task.id}-")
    assert sh("show", f"{done.branch_name}:round-1.txt", cwd=origin) == f"round 1 of {task.id}\n"
    summary = next(c for c in notes if c.comment_type == "summary")
    tip = sh("rev-parse", done.branch_name, cwd=origin).strip()
    assert f"Branch {done.branch_name} at commit {tip[:12]}, pushed to {origin}." in summary.content
    # Kept in the mirror too, where no fetch prunes it.
    kept = sh("rev-parse", f"refs/taskinfa/{done.branch_name}", cwd=mirror_of(scene)).strip()
    assert kept == tip


async def test_a_refused_push_goes_to_review_saying_so_and_the_commit_is_kept(
    board: Any, scene: Scene, record: Path
) -> None:
    origin = make_origin(scene.root, {"README.md": "app\n"})
    sh("config", "receive.maxInputSize", "1", cwd=origin)  # every push is refused
    async with running_pool(delivery_settings(board, scene)) as (_pool, client):
        task = await project_task(client, origin, "Add the feature")
        done = await in_review(client, task)
        notes = await comments_of(client, task.id)
    assert not done.branch_name  # nothing on the remote: the board must not say otherwise
    assert sh("branch", "--list", "taskinfa/*", cwd=origin) == ""
    assert done.completion_notes is not None
    assert "NOT pushed" in done.completion_notes
    error = next(c for c in notes if c.comment_type == "error")
    assert "NOT pushed" in error.content
    assert "pack exceeds maximum allowed size" in error.content
    # The exact command of the comment shows the agent's commit on the worker's host.
    command = error.content.split("on the worker's host: ", 1)[1].split()
    assert command[:2] == ["git", "-C"]
    shown = sh(*command[3:], cwd=Path(command[2]))
    assert "round-1.txt" in shown


async def test_push_on_and_refused_fails_the_attempt_and_the_retry_keeps_the_work(
    board: Any, scene: Scene, record: Path
) -> None:
    origin = make_origin(scene.root, {"README.md": "app\n"})
    sh("config", "receive.maxInputSize", "1", cwd=origin)
    settings = delivery_settings(board, scene, push="on", max_attempts=2)
    async with running_pool(settings) as (pool, client):
        task = await project_task(client, origin, "Add the feature")
        await wait_for(lambda: pool.state.failed == 2, what="two failed attempts")
        failed = await client.get_task(task.id)
        notes = await comments_of(client, task.id)
    assert failed.status == "blocked"
    # The second attempt started from the first one's commit, kept in the mirror.
    first, second = rounds(record)
    assert "round-1.txt" not in first["files"]
    assert "round-1.txt" in second["files"]
    errors = [c for c in notes if c.comment_type == "error"]
    assert all("kept in the worker's mirror" in c.content for c in errors)


async def test_a_person_sends_it_back_and_the_next_round_continues_with_the_answer(
    board: Any, scene: Scene, record: Path
) -> None:
    origin = make_origin(scene.root, {"README.md": "app\n"})
    async with running_pool(delivery_settings(board, scene)) as (_pool, client):
        task = await project_task(client, origin, "Add the feature")
        first = await in_review(client, task)
        board.store.add_comment(
            task.id,
            author="Dana",
            author_type="user",
            content="Looks good; also handle the empty case.",
            comment_type="progress",
        )
        await client.update_task(task.id, status="todo", assigned_to=None)
        await wait_for(lambda: len(rounds(record)) == 2, what="the second round")
        second = await in_review(client, task)
    first_round, second_round = rounds(record)
    assert "round-1.txt" not in first_round["files"]
    assert "round-1.txt" in second_round["files"]  # it started from its own branch
    assert "also handle the empty case." in second_round["prompt"]
    assert "Dana" in second_round["prompt"]
    assert "also handle the empty case." not in first_round["prompt"]
    assert second.branch_name == first.branch_name
    assert second.loop_count == 2
    assert sh("show", f"{second.branch_name}:round-1.txt", cwd=origin)
    assert sh("show", f"{second.branch_name}:round-2.txt", cwd=origin)


async def test_a_task_with_no_changes_says_so_plainly(
    board: Any, scene: Scene, record: Path
) -> None:
    origin = make_origin(scene.root, {"README.md": "app\n"})
    async with running_pool(delivery_settings(board, scene)) as (_pool, client):
        task = await project_task(client, origin, "Check the feature [nochange]")
        done = await in_review(client, task)
        notes = await comments_of(client, task.id)
    assert not done.branch_name
    assert done.files_changed == []
    summary = next(c for c in notes if c.comment_type == "summary")
    assert "No changes: the agent changed no file" in summary.content
    assert "Branch" not in summary.content
    assert sh("branch", "--list", "taskinfa/*", cwd=origin) == ""


async def test_a_session_that_cannot_be_resumed_falls_back_to_a_fresh_run(
    board: Any, scene: Scene
) -> None:
    settings = worker_settings(
        board.url,
        board.api_key,
        scene,
        agent="claude",
        claude_bin=str(FAKE_CLAUDE),
        claude_config_source=scene.root / "claude-config-source",
    )
    created = board.create_task("Go on FAKE_MODE=resume_missing", status="todo")
    # It ran before (one round to review and back) in a session this slot does not have.
    board.store.update_task(created["id"], {"loop_count": 1, "claude_session_id": "gone-1"})
    async with running_pool(settings) as (_pool, client):
        task = await client.get_task(created["id"])
        done = await in_review(client, task)
    assert done.loop_count == 2
    assert done.claude_session_id not in (None, "gone-1")  # the fresh run's own session
