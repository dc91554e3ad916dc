"""The kanban page in a real browser (headless Chromium) while a real pool runs its cards.

The pool runs the fake ledger agent (``tests/pool/support.py``) against the local board over
HTTP on 127.0.0.1; the browser signs in with the one-time link or the key, and everything it
sees and does goes through the page's own script. Skipped, with the reason, where Chromium
is not installed. With ``TASKINFA_PAGE_SCREENSHOT=<file.png>`` the first test also saves a
screenshot of the page there. (``docs/board.png`` was taken with ``tests/board/browser.py``
on the page of a running ``make demo``.)
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taskinfa_worker.board.store import hash_key
from tests.board.browser import Page, chromium, chromium_path
from tests.board_support import BoardHandle
from tests.pool.support import Scene, running_pool, wait_for, worker_settings

CHROMIUM = chromium_path()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)"
)


@pytest.fixture
def scene(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Scene:
    scene = Scene(tmp_path / "scene")
    scene.root.mkdir()
    for name, value in scene.agent_env().items():
        monkeypatch.setenv(name, value)
    return scene


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Page]:
    assert CHROMIUM is not None
    async with chromium(CHROMIUM, tmp_path / "chromium-profile") as tab:
        yield tab


def card_in(column: str, task_id: str) -> str:
    """JavaScript: whether the task's card is in the column."""
    return f"!!document.querySelector('#column-{column} [data-task-id={json.dumps(task_id)}]')"


async def signed_in(page: Page, board: BoardHandle) -> None:
    await page.goto(board.server.login_link(hash_key(board.api_key)))
    await page.wait_for("location.search === '' && shown('board') && !shown('sign-in')")


async def test_a_card_moves_from_todo_to_review_while_the_pool_runs(
    board: BoardHandle, scene: Scene, page: Page
) -> None:
    task = board.create_task("Write the greeting [gate]", priority="high")
    await signed_in(page, board)
    await page.wait_for(card_in("todo", task["id"]), what="the card in To do")

    settings = worker_settings(board.url, board.api_key, scene, concurrency=2)
    async with running_pool(settings):
        await page.wait_for(card_in("in_progress", task["id"]), what="the card in progress")
        card = f"document.querySelector('[data-task-id={json.dumps(task['id'])}]')"
        assert await page.wait_for(f"{card}.querySelector('.assignee')?.textContent") == (
            "@tester-1"
        )
        await page.wait_for(
            "[...document.querySelectorAll('#workers .working')]"
            ".some(w => w.textContent.startsWith('tester-1'))",
            what="the workers panel to show the busy slot",
        )
        scene.open_gate()
        await page.wait_for(card_in("review", task["id"]), what="the card in Review")
        shot = os.environ.get("TASKINFA_PAGE_SCREENSHOT")
        if shot:
            await page.screenshot(Path(shot))


async def test_a_deleted_card_leaves_and_a_card_given_a_later_order_moves_down(
    board: BoardHandle, page: Page
) -> None:
    # The page is sent only what changed: it must drop what was deleted and put a changed
    # card back in board order among the cards it kept.
    first, second, third = (board.create_task(title)["id"] for title in ("One", "Two", "Three"))
    await signed_in(page, board)
    in_todo = "[...document.querySelectorAll('#column-todo .card')].map(c => c.dataset.taskId)"
    await page.wait_for(f"{in_todo}.join() === {json.dumps(f'{first},{second},{third}')}")
    board.store.update_task(first, {"order": 5})
    board.store.delete_task(second)
    await page.wait_for(
        f"{in_todo}.join() === {json.dumps(f'{third},{first}')}",
        what="Two gone, One after Three",
    )
    assert await page.evaluate("document.querySelector('#column-todo h2').textContent") == (
        "To do (2)"
    )


async def test_the_key_prompt_then_a_task_added_through_the_form_is_picked_up(
    board: BoardHandle, scene: Scene, page: Page
) -> None:
    await page.goto(board.server.page)
    await page.wait_for("shown('sign-in')", what="the key prompt")
    assert await page.evaluate("shown('add-open')") is False  # no form without a key
    assert await page.evaluate("shown('board')") is False
    await page.evaluate(
        f"document.getElementById('key').value = {json.dumps(board.api_key)};"
        "document.getElementById('sign-in-form').requestSubmit()"
    )
    await page.wait_for(
        "shown('board') && !shown('sign-in') && shown('add-open')", what="the board after the key"
    )

    settings = worker_settings(board.url, board.api_key, scene, concurrency=2)
    async with running_pool(settings):
        await page.evaluate(
            "document.getElementById('add-open').click();"
            "const form = document.getElementById('add-form');"
            "form.elements.title.value = 'Added from the page';"
            "form.elements.description.value = 'Typed into the form.';"
            "form.elements.priority.value = 'urgent';"
            "form.requestSubmit()"
        )
        await wait_for(lambda: board.store.list_tasks()[1] == 1, what="the task on the board")
        (task,) = board.store.list_tasks()[0]
        assert (task["title"], task["description"], task["priority"], task["task_list_id"]) == (
            "Added from the page",
            "Typed into the form.",
            "urgent",
            "default",
        )
        await page.wait_for(card_in("review", task["id"]), what="the added card in Review")
    assert scene.starts(task["id"]) == [task["id"]]


async def test_a_message_then_moving_the_card_back_to_todo_stops_the_agent(
    board: BoardHandle, scene: Scene, page: Page
) -> None:
    task = board.create_task("A long job [hang]")
    await signed_in(page, board)
    settings = worker_settings(board.url, board.api_key, scene, concurrency=1)
    async with running_pool(settings):
        await wait_for(lambda: scene.starts(task["id"]), what="the agent to start")
        await page.wait_for(card_in("in_progress", task["id"]), what="the card in progress")
        await page.evaluate(
            f"document.querySelector('[data-task-id={json.dumps(task['id'])}]').click()"
        )
        await page.wait_for("document.getElementById('task-dialog').open", what="the task detail")
        await page.evaluate(
            "document.getElementById('comment-text').value = 'Stop, do it smaller.';"
            "document.getElementById('comment-form').requestSubmit()"
        )
        await page.wait_for(
            "[...document.querySelectorAll('#task-comments li.user pre')]"
            ".some(p => p.textContent === 'Stop, do it smaller.')",
            what="the message among the task's comments",
        )
        await page.evaluate(
            "document.getElementById('move-status').value = 'todo';"
            "document.getElementById('move-form').requestSubmit()"
        )
        await wait_for(
            lambda: any(e[0] == "stop" and e[1] == task["id"] for e in scene.entries()),
            what="the agent to stop",
        )
    comments = board.store.list_comments(task["id"])[0]
    mine = [c for c in comments if c["author_type"] == "user"]
    assert [(c["comment_type"], c["content"]) for c in mine] == [
        ("human_message", "Stop, do it smaller.")
    ]
