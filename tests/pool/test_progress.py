"""Progress comments (throttled, only when something happened) and the final comments."""

from __future__ import annotations

import time

import anyio
import pytest

from taskinfa_worker.agent.job import Activity, AgentOutcome
from taskinfa_worker.errors import ServerError
from taskinfa_worker.pool.progress import (
    RESULT_CHARS,
    ProgressReporter,
    failure_text,
    format_duration,
    summary_text,
)
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


def test_summary_text() -> None:
    outcome = AgentOutcome(
        success=True,
        result_text="Added the route.\n\nTests pass.",
        num_turns=12,
        cost_usd=0.4213,
        duration_ms=192_000,
    )
    text = summary_text(outcome, ["src/app.py", "tests/test_app.py"])
    assert text == (
        "Finished: 3m 12s, 12 turns, $0.42.\n\n"
        "Added the route.\n\nTests pass.\n\n"
        "Files changed (2): src/app.py, tests/test_app.py"
    )
    bare = summary_text(AgentOutcome(success=True), [])
    assert bare == "Finished.\n\nNo files changed."


def test_summary_trims_long_results_and_file_lists() -> None:
    result = "\n".join(f"paragraph {i} " + "x" * 80 for i in range(200))
    outcome = AgentOutcome(success=True, result_text=result, num_turns=1)
    text = summary_text(outcome, [f"f{i}" for i in range(100)])
    assert "1 turn," not in text
    assert "1 turn." in text
    assert "more characters in the transcript" in text
    assert "(+70 more)" in text
    assert len(text) < RESULT_CHARS + 1000


def test_failure_text() -> None:
    stderr = "\n".join(f"noise {i}" for i in range(100)) + "\nError: sk-ant-api03-secretsecret"
    outcome = AgentOutcome(
        success=False,
        reason="Claude Code exited with code 1 without a result",
        exit_code=1,
        duration_ms=5_000,
        stderr_tail=stderr,
    )
    text = failure_text(outcome, redactor=Redactor())
    assert text.startswith("Attempt failed: Claude Code exited with code 1 without a result")
    assert "(exit code 1, 5s)" in text
    assert "noise 99" in text
    assert "noise 10\n" not in text
    assert "sk-ant-api03" not in text
    assert "```text\n" in text
    assert failure_text(AgentOutcome(success=False)) == (
        "Attempt failed: The agent failed without saying why."
    )


@pytest.mark.parametrize(
    ("ms", "text"), [(0, "0s"), (59_400, "59s"), (61_000, "1m 01s"), (3_725_000, "1h 02m")]
)
def test_format_duration(ms: int, text: str) -> None:
    assert format_duration(ms) == text
