"""A task's history: the last error, and what people wrote since the last run ended."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from taskinfa_worker.client.models import Comment, Task
from taskinfa_worker.pool.history import MESSAGE_CHARS, MESSAGES_CHARS, history_of

START = datetime(2026, 1, 1, tzinfo=UTC)


def comment(minute: int, content: str, *, person: bool, kind: str = "progress") -> Comment:
    return Comment(
        id=f"c{minute}",
        task_id="t",
        author="Dana" if person else "bot-1",
        author_type="user" if person else "bot",
        content=content,
        comment_type=kind,
        created_at=START + timedelta(minutes=minute),
    )


def test_only_what_people_wrote_after_the_last_run_ended_oldest_first() -> None:
    comments = [
        comment(1, "before the first run", person=True),
        comment(2, "Started by bot-1", person=False),
        comment(3, "Failed: tests broke", person=False, kind="error"),
        comment(4, "Finished.", person=False, kind="summary"),
        comment(5, "also the empty case", person=True),
        comment(6, "and a test for it", person=True),
    ]
    history = history_of(list(reversed(comments)))  # the board sends newest first
    assert [c.content for c in history.people] == ["also the empty case", "and a test for it"]
    assert history.previous_error == "Failed: tests broke"
    assert history_of(comments).people == history.people  # whatever order the server uses


def test_messages_are_bounded_keeping_the_newest() -> None:
    many = [comment(i, f"{i} " + "x" * (MESSAGE_CHARS * 2), person=True) for i in range(10)]
    history = history_of(many)
    assert sum(len(c.content) for c in history.people) <= MESSAGES_CHARS + 100
    assert history.people[-1].content.startswith("9 ")
    assert all(c.content.endswith("[cut]") for c in history.people)


def test_the_previous_error_comes_from_the_notes_when_its_comment_was_lost() -> None:
    task = Task(
        id="t", title="x", status="in_progress", error_count=1, completion_notes="Failed: boom"
    )
    assert history_of([], task).previous_error == "Failed: boom"
    said = [comment(1, "Failed: the comment says more", person=False, kind="error")]
    assert history_of(said, task).previous_error == "Failed: the comment says more"
    assert history_of([], task.model_copy(update={"error_count": 0})).previous_error is None


def test_a_chat_reply_does_not_end_the_history_of_the_next_run() -> None:
    comments = [
        comment(1, "Finished.", person=False, kind="summary"),
        comment(2, "why this way?", person=True, kind="human_message"),
        comment(3, "Because it is simpler.\n\n(re: c2)", person=False, kind="summary"),
        comment(4, "then also handle the empty case", person=True),
    ]
    history = history_of(comments)
    assert [c.content for c in history.people] == [
        "why this way?",
        "then also handle the empty case",
    ]


def test_a_message_written_while_an_attempt_failed_reaches_the_retry() -> None:
    """The failed attempt never saw it (it came while the agent ran); the retry does the same
    work, so it gets it, with the error."""
    comments = [
        comment(1, "Finished.", person=False, kind="summary"),
        comment(2, "please do it on the v2 API", person=True),
        comment(3, "Started by bot-1", person=False),
        comment(4, "use the new client, too", person=True, kind="human_message"),
        comment(5, "Failed: tests broke", person=False, kind="error"),
    ]
    history = history_of(comments)
    assert [c.content for c in history.people] == [
        "please do it on the v2 API",
        "use the new client, too",
    ]
    assert history.previous_error == "Failed: tests broke"


def test_a_message_written_while_the_delivered_run_went_on_reaches_the_next_run() -> None:
    """Its run never read it (a board without the chat, where nobody answers it): once a
    person sends the task back, the next run does."""
    comments = [
        comment(1, "before the run: it had this one", person=True),
        comment(2, "Started by bot-1 (attempt 1 of 3).\n\nreading the code", person=False),
        comment(3, "and keep the old flag working", person=True),
        comment(4, "Finished.", person=False, kind="summary"),
        comment(5, "looks good, but see above", person=True),
    ]
    history = history_of(comments)
    assert [c.content for c in history.people] == [
        "and keep the old flag working",
        "looks good, but see above",
    ]
    # Without the run's start note nothing tells which came during it: only what came after.
    without_start = [c for c in comments if not c.content.startswith("Started by")]
    assert [c.content for c in history_of(without_start).people] == ["looks good, but see above"]
