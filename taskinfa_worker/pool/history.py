"""What a task's earlier runs left on the board: the last error, and what people wrote since.

A task comes back (a person sent it from ``review`` to ``todo``, or an attempt failed) with
its story in its comments. One read of them gives the next run both things it needs:

- the newest error report, for the retry's prompt (from the notes of the failed attempt
  when its comment was lost);
- what people (``author_type: user``) wrote since the task's work was last delivered (the
  worker's newest summary comment), oldest first, so "also handle the empty case" reaches
  the agent. A failed attempt does not close them: the retry does the same work, and a
  message written while the failed attempt ran never reached it. Neither did one written
  while the delivered run itself went on (after its start note, before its summary): those
  are kept too, where the run's start note is among the comments. They are bounded: each
  message is cut, and only the newest fit the total.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from loguru import logger

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.models import Comment, CommentPage, CommentType, Task, newest_first
from taskinfa_worker.errors import BoardError
from taskinfa_worker.pool.reporting import STARTED

COMMENTS_READ = 50
MESSAGE_CHARS = 2000
MESSAGES_CHARS = 6000
PERSON = "user"
CHAT_REPLY = "(re: "
"""How a worker's answer to a person's chat message names it (``chat.py``): such a reply
is part of the conversation, not the end of a run, so people's messages before it still
reach the task's next run."""


@dataclass(frozen=True)
class TaskHistory:
    previous_error: str | None = None
    people: tuple[Comment, ...] = ()  # oldest first
    known: tuple[Comment, ...] | None = None
    """Every comment read at the run's start (None when none were read): what was on the
    board before the run, so its end can tell a message written while it ran (``chat.py``)."""


def cut_message(text: str) -> str:
    """One person's message as a prompt may carry it: at most ``MESSAGE_CHARS``, marked."""
    content = text.strip()
    return content if len(content) <= MESSAGE_CHARS else content[:MESSAGE_CHARS] + " … [cut]"


def delivers_a_round(comment: Comment) -> bool:
    """Whether ``comment`` is the summary of a run that delivered the task's work (a chat
    reply is not: it answers, the task's work goes on)."""
    return (
        comment.author_type != PERSON
        and comment.comment_type == CommentType.SUMMARY
        and CHAT_REPLY not in comment.content
    )


def came_back(task: Task) -> bool:
    """Whether the task ran before (it failed, or it went to review and was sent back)."""
    return task.error_count > 0 or task.loop_count > 0


async def read_history(
    client: BoardClient, task: Task, known: CommentPage | None = None
) -> TaskHistory:
    """The task's history; empty for a first run, or when the comments cannot be read.
    ``known``: the task's comments as just read by someone else (the handover fence), so
    they are not read twice."""
    if not came_back(task):
        return TaskHistory(known=None if known is None else tuple(known.comments))
    page = known
    if page is None:
        try:
            page = await client.list_comments(task.id, limit=COMMENTS_READ)
        except BoardError as exc:
            logger.warning("the history of {} was not read: {}", task.id, exc)
            page = CommentPage()
    return replace(history_of(page.comments, task), known=tuple(page.comments))


def history_of(comments: list[Comment], task: Task | None = None) -> TaskHistory:
    """The history in ``comments`` (in any order; sorted newest first here), and in the
    notes of ``task`` when its last error comment was lost."""
    newest = newest_first(comments)
    previous_error = next((c.content for c in newest if c.comment_type == CommentType.ERROR), None)
    people: list[Comment] = []
    during: list[Comment] = []  # written while the delivered run went on, newest first
    delivered = False
    for comment in newest:
        if comment.author_type == PERSON:
            (during if delivered else people).append(comment)
        elif delivered and comment.content.startswith(STARTED):
            people += during  # that run never read them: they are for the next one
            break
        elif delivers_a_round(comment):
            if delivered:
                break  # no start note of the delivered run: what came before was for it
            delivered = True
    failed_before = task is not None and task.error_count > 0
    notes = (task.completion_notes or "") if task is not None else ""
    if previous_error is None and failed_before and notes.startswith("Failed:"):
        previous_error = notes  # the failed attempt wrote the same words into the notes
    return TaskHistory(previous_error, tuple(reversed(_bounded(people))))


def _bounded(newest: list[Comment]) -> list[Comment]:
    """The newest messages that fit ``MESSAGES_CHARS``, each cut as a prompt carries it."""
    kept: list[Comment] = []
    room = MESSAGES_CHARS
    for comment in newest:
        content = cut_message(comment.content)
        if len(content) > room:
            break
        room -= len(content)
        kept.append(comment.model_copy(update={"content": content}))
    return kept
