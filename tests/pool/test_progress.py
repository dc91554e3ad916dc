"""Progress comments: throttled, only when something happened, redacted."""

from __future__ import annotations

import time

import anyio

from taskinfa_worker.agent.job import Activity
from taskinfa_worker.errors import ServerError
from taskinfa_worker.pool.progress import ProgressReporter
from taskinfa_worker.redact import MASK, Redactor


class Board:
    """Collects posted comments, with the time each was posted."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[tuple[float, str]] = []
        self.fail_first = fail_first
        self.attempts = 0
        self.changed = anyio.Event()

    async def post(self, text: str) -> None:
        self.attempts += 1
        self.changed.set()
        self.changed = anyio.Event()
        if self.attempts <= self.fail_first:
            raise ServerError(503, "POST", "/comments", "busy")
        self.posts.append((time.monotonic(), text))

    async def wait_posts(self, count: int) -> None:
        with anyio.fail_after(10):
            while len(self.posts) < count:
                await self.changed.wait()


async def drive(reporter: ProgressReporter, board: Board, steps: list[list[Activity]]) -> None:
    """Record each step's activity, waiting for a post after each."""
    async with anyio.create_task_group() as group:
        group.start_soon(reporter.run)
        for count, step in enumerate(steps, start=1):
            for activity in step:
                reporter.record(activity)
            await board.wait_posts(count)
        group.cancel_scope.cancel()


def test_take_summarises_tools_files_and_the_latest_note() -> None:
    reporter = ProgressReporter(post=Board().post, interval=lambda: 60.0)
    assert reporter.take() is None
    for activity in [
        Activity(tool="Edit", files=("a.py",)),
        Activity(tool="Edit", files=("a.py",)),
        Activity(tool="Read", files=("b.py",)),
        Activity(text="first thought"),
        Activity(text="Now running\n the   tests"),
    ]:
        reporter.record(activity)
    text = reporter.take()
    assert text == (
        "Working: 3 tool calls since the last update (Edit ×2, Read ×1).\n"
        "Files: a.py, b.py\n"
        "Latest: Now running the tests"
    )
    assert reporter.take() is None  # forgotten once taken
    reporter.record(Activity())  # nothing in it: nothing happened
    assert reporter.take() is None


def test_long_lists_are_cut() -> None:
    reporter = ProgressReporter(post=Board().post, interval=lambda: 60.0)
    for i in range(25):
        reporter.record(Activity(tool=f"Tool{i}", files=(f"f{i}.py",)))
    reporter.record(Activity(text="x" * 1000))
    text = reporter.take()
    assert text is not None
    assert "(+15 more)" in text
    assert "…" in text
    assert len(text) < 1000


async def test_posts_at_most_once_per_interval() -> None:
    board = Board()
    reporter = ProgressReporter(post=board.post, interval=lambda: 0.2)
    steps = [[Activity(tool="Bash")] * 3, [Activity(tool="Read", files=("x",))]]
    await drive(reporter, board, steps)
    (first_at, first), (second_at, second) = board.posts
    assert first.startswith("Working: 3 tool calls")
    assert second.startswith("Working: 1 tool call ")
    assert "Files: x" in second
    assert second_at - first_at >= 0.2
    assert reporter.posted == 2


async def test_nothing_is_posted_when_nothing_happened() -> None:
    board = Board()
    reporter = ProgressReporter(post=board.post, interval=lambda: 0.05)
    with anyio.move_on_after(0.5):
        await reporter.run()
    assert board.attempts == 0


async def test_the_interval_is_asked_again_and_stretches() -> None:
    board = Board()
    intervals = iter([0.05, 0.3, 0.3, 0.3, 0.3, 0.3])
    asked: list[float] = []

    def interval() -> float:
        asked.append(next(intervals, 0.3))
        return asked[-1]

    started = time.monotonic()
    reporter = ProgressReporter(post=board.post, interval=interval)
    await drive(reporter, board, [[Activity(tool="Bash")]])
    assert len(asked) >= 2  # checked again after the first sleep
    assert board.posts[0][0] - started >= 0.3


async def test_a_failed_post_is_logged_and_the_loop_goes_on() -> None:
    board = Board(fail_first=1)
    reporter = ProgressReporter(post=board.post, interval=lambda: 0.05)
    async with anyio.create_task_group() as group:
        group.start_soon(reporter.run)
        reporter.record(Activity(tool="Edit"))
        with anyio.fail_after(10):
            while board.attempts < 1:
                await board.changed.wait()
        reporter.record(Activity(tool="Write"))
        await board.wait_posts(1)
        group.cancel_scope.cancel()
    assert board.attempts == 2
    assert [text for _, text in board.posts] == [
        "Working: 1 tool call since the last update (Write ×1)."
    ]


async def test_progress_is_redacted() -> None:
    board = Board()
    reporter = ProgressReporter(
        post=board.post, interval=lambda: 0.05, redactor=Redactor(["hunter2-secret"])
    )
    await drive(reporter, board, [[Activity(text="the password is hunter2-secret")]])
    assert "hunter2-secret" not in board.posts[0][1]
    assert MASK in board.posts[0][1]
