"""The current release's async chat: which person's message this worker answers, and who
of several workers on one key answers it.

The dashboard lists the tasks whose newest comment is a person's ``human_message``
(``GET /tasks/pending-messages``). A message is for this worker when its task was run by a
taskinfa-worker: one of a run's notes (its start, summary, failure, release or stop; an
earlier answer's claim) is among its recent comments. That holds across replicas and
restarts, whose names differ: any process on the key may answer, and exactly one does.
Tasks only Taskinfa's own orchestrator ran carry no such note and are left to it. A task
in ``todo`` waits: its next run has the message in its prompt's history. A message written
while the task runs here is not in that run's prompt, and the run's summary, posted after
it, hides it from the list; so when a run ends in an answerable column, its slot reads the
comments once more and answers a message the run never saw (``after_run``) before it claims
anything else.

Never two answers to one message. The real release has no atomic way to take anything, so
the claim is a comment:

1. a worker that would answer posts ``Answering: <slot> takes the message <id>.``;
2. it waits ``SETTLE`` seconds, then reads the task's comments again;
3. the claim with the earliest ``(created_at, id)`` for that message wins; the others
   stand down.

Why exactly one wins: the board stamps a comment with its own clock (to the second). When
a worker reads after ``SETTLE`` (2 s) past its claim's answer, the board's clock has moved
past the claim's second, so every claim stamped in that second or earlier has been
written and is in the read; any claim written later is stamped later and loses to it. So
the earliest claim's owner sees itself first, and every other claimant sees that earlier
claim. The claim is also the task's newest comment, so the dashboard stops listing the
task: the race lasts one poll at most.

A worker that stops while it answers posts why (``answering.py``); one killed outright
leaves its claim in ``chat-claims`` under its log folder, and its restart under the same
``BOT_NAME`` says on the task that the answer was lost (``ChatClaims``). In neither case
is the message answered twice or tried again without a person.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import anyio
from loguru import logger

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.models import Comment, CommentType, Task, TaskStatus, newest_first
from taskinfa_worker.errors import BoardError, ServerError, TransportError
from taskinfa_worker.pool import budget
from taskinfa_worker.pool.history import (
    CHAT_REPLY,
    COMMENTS_READ,
    MESSAGES_CHARS,
    PERSON,
    TaskHistory,
    cut_message,
    delivers_a_round,
)
from taskinfa_worker.pool.reporting import RUN_NOTES

HUMAN_MESSAGE: Final = "human_message"
TAKING: Final = "Answering: "
SETTLE: Final = 2.0
"""Seconds between posting a claim and reading who won (past the board's 1 s stamps)."""
RESTARTED: Final = (
    "The worker was stopped while answering this message and has restarted; nothing was "
    "changed. Ask again."
)
RECENT_SHOWN: Final = 12
"""The most earlier comments the answering agent sees besides the message."""
# A task in these columns has no run that would see the message otherwise.
ANSWERABLE: Final = frozenset(
    {TaskStatus.REVIEW, TaskStatus.DONE, TaskStatus.BACKLOG, TaskStatus.BLOCKED}
)
_CLAIM: Final = re.compile(r"^Answering: (?P<slot>\S+) takes the message (?P<id>\S+)\.$")


def claim_text(slot: str, message_id: str) -> str:
    return f"{TAKING}{slot} takes the message {message_id}."


def reference(message_id: str) -> str:
    """The last line of an answer or an error about a message: which message it was."""
    return f"{CHAT_REPLY}{message_id})"


def _stamp(comment: Comment) -> float:
    return comment.created_at.timestamp() if comment.created_at else 0.0


def _claimed(comment: Comment) -> re.Match[str] | None:
    return _CLAIM.match(comment.content.strip()) if comment.author_type != PERSON else None


def claims_a_message(comment: Comment) -> bool:
    """Whether ``comment`` is a worker's claim on a message: an answer starts with it, as a
    run starts with its start note (the handover fence reads both)."""
    return _claimed(comment) is not None


def waiting_message(comments: Sequence[Comment]) -> Comment | None:
    """The person's newest ``human_message`` when nothing of a worker's came after it (and
    no worker has claimed it); None otherwise."""
    newest = newest_first(comments)
    message = _newest_message(newest)
    if message is None:
        return None
    for comment in newest:
        if comment.author_type == PERSON:
            continue
        if _settles(comment, message) or _stamp(comment) > _stamp(message):
            return None  # claimed, answered, or a run came after it
    return message


def unseen_message(comments: Sequence[Comment], history: TaskHistory) -> Comment | None:
    """The person's newest ``human_message`` when the run that read ``history`` at its start
    never saw it and no worker has claimed or answered it; None otherwise.

    Unseen: not among the prompt's messages, and no round of the task's work was delivered
    after it before this run began (a message the run read at its start but left out of its
    prompt was for that round). A message written while the run went on was not read."""
    newest = newest_first(comments)
    message = _newest_message(newest)
    if message is None or message.id in {c.id for c in history.people}:
        return None
    if any(_settles(c, message) for c in comments):
        return None
    for before in history.known or ():
        if delivers_a_round(before) and _stamp(before) > _stamp(message):
            return None
    return message


def _newest_message(newest: Sequence[Comment]) -> Comment | None:
    """The first person's ``human_message`` of ``newest`` (sorted newest first)."""
    return next(
        (c for c in newest if c.author_type == PERSON and c.comment_type == HUMAN_MESSAGE), None
    )


def _settles(comment: Comment, message: Comment) -> bool:
    """Whether ``comment`` is a worker's claim on ``message`` or a reply naming it."""
    if comment.author_type == PERSON:
        return False
    claim = _claimed(comment)
    return (claim is not None and claim["id"] == message.id) or reference(
        message.id
    ) in comment.content


def ran_here(comments: Sequence[Comment]) -> bool:
    """Whether a taskinfa-worker ran the task (or answered on it) within its recent notes."""
    return any(
        c.author_type != PERSON and (c.content.startswith(RUN_NOTES) or _claimed(c) is not None)
        for c in comments
    )


def first_claim(comments: Sequence[Comment], message_id: str) -> Comment | None:
    """The claim on ``message_id`` that wins: the earliest by the board's stamp, then id."""
    claims = [c for c in comments if (m := _claimed(c)) is not None and m["id"] == message_id]
    return min(claims, key=lambda c: (_stamp(c), c.id), default=None)


def answered_on(comments: Sequence[Comment], message_id: str) -> bool:
    """Whether a worker's answer or error about ``message_id`` is among ``comments``: one
    naming it, or a summary or error stamped after its claim's second (a delivered change's
    summary, which comes at least ``SETTLE`` later; the run's own summary may share the
    claim's second)."""
    claim = first_claim(comments, message_id)
    for c in comments:
        if c.author_type == PERSON:
            continue
        if reference(message_id) in c.content:
            return True
        ending = c.comment_type in (CommentType.SUMMARY, CommentType.ERROR)
        if claim is not None and ending and _stamp(c) > _stamp(claim):
            return True
    return False


def conversation(comments: Sequence[Comment], message: Comment) -> tuple[Comment, ...]:
    """What came before ``message``, oldest first, for the agent's prompt: people's words and
    the worker's summaries and errors (not its progress chatter or claims), each cut as
    history.py cuts people's messages, the newest kept within ``MESSAGES_CHARS``."""
    kept: list[Comment] = []
    room = MESSAGES_CHARS
    for comment in newest_first(comments):
        if comment.id == message.id or _stamp(comment) > _stamp(message):
            continue
        if comment.author_type != PERSON and comment.comment_type not in (
            CommentType.SUMMARY,
            CommentType.ERROR,
        ):
            continue
        content = cut_message(comment.content)
        if len(content) > room or len(kept) == RECENT_SHOWN:
            break
        room -= len(content)
        kept.append(comment.model_copy(update={"content": content}))
    return tuple(reversed(kept))


@dataclass(frozen=True)
class ChatTurn:
    """A message this worker won the claim on: one answer to give, in one slot."""

    task: Task
    message: Comment  # its content already cut to what a prompt carries
    before: tuple[Comment, ...]  # the conversation before it, oldest first
    claim: Comment


class ChatClaims:
    """This process's claims not yet answered, on disk (one ``task message`` a line), so a
    restart after a kill can tell the person that the answer was lost."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def entries(self) -> list[tuple[str, str]]:
        with contextlib.suppress(FileNotFoundError):
            lines = self._path.read_text(encoding="utf-8").splitlines()
            return [(a, b) for a, _, b in (line.partition(" ") for line in lines) if a and b]
        return []

    def add(self, task_id: str, message_id: str) -> None:
        self._write([*self.entries(), (task_id, message_id)])

    def remove(self, task_id: str, message_id: str) -> None:
        self._write([e for e in self.entries() if e != (task_id, message_id)])

    def _write(self, entries: list[tuple[str, str]]) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        partial = self._path.with_suffix(".tmp")
        partial.write_text("".join(f"{a} {b}\n" for a, b in entries), encoding="utf-8")
        partial.replace(self._path)


class ChatDesk:
    """Finds messages to answer (one poll per round) and claims one for a free slot."""

    def __init__(
        self,
        client: BoardClient,
        claims: ChatClaims,
        *,
        enabled: bool,
        poll_floor: float,
        busy: Callable[[str], bool],
        on_found: Callable[[], None] = lambda: None,
    ) -> None:
        self._client = client
        self._claims = claims
        self._enabled = enabled
        self._poll_floor = poll_floor
        self._busy = busy  # whether this process runs the task now
        self._on_found = on_found
        self._waiting: list[str] = []  # task ids, in the board's order
        self._taking: set[str] = set()  # task ids a slot of ours is taking up now

    @property
    def active(self) -> bool:
        """Whether messages may still be answered (on, and the board has the route)."""
        return self._enabled and self._client.chat.supported is not False

    def interval(self) -> float:
        return budget.chat_poll_interval(self._poll_floor, self._client.limiter)

    async def poll(self) -> bool:
        """One look at the pending messages; False once the board has shown it has none."""
        if not self.active:
            return False
        tasks = await self._client.chat.pending()  # a board error: run_upkeep's to log
        if tasks is None:
            return False
        waiting = [
            t.id
            for t in tasks
            if t.status in ANSWERABLE and not self._busy(t.id) and t.id not in self._taking
        ]
        self._waiting = list(dict.fromkeys(waiting))  # the release may list a task twice
        if self._waiting:
            self._on_found()
        return True

    def next_waiting(self) -> str | None:
        """The next task the last poll found with a message waiting (no request)."""
        return self._waiting.pop(0) if self._waiting and self.active else None

    async def take_up(
        self,
        slot: str,
        task_id: str,
        pick: Callable[[Sequence[Comment]], Comment | None] = waiting_message,
    ) -> ChatTurn | None:
        """The message on ``task_id`` that ``pick`` finds among its comments, when this
        slot wins the claim on it."""
        self._taking.add(task_id)  # a poll meanwhile must not hand it to a second slot
        try:
            return await self._claim(slot, task_id, pick)
        except BoardError as exc:
            logger.warning("the message on {} was not taken up: {}", task_id, exc)
            return None
        finally:
            self._taking.discard(task_id)

    async def after_run(self, slot: str, task_id: str, history: TaskHistory) -> ChatTurn | None:
        """The message a run that just ended never saw (``history``: what it read at its
        start), claimed for ``slot``; None when there is none (one read of the comments)."""
        if not self.active:
            return None
        return await self.take_up(slot, task_id, lambda c: unseen_message(c, history))

    async def _claim(
        self, slot: str, task_id: str, pick: Callable[[Sequence[Comment]], Comment | None]
    ) -> ChatTurn | None:
        page = await self._client.list_comments(task_id, limit=COMMENTS_READ)
        message = pick(page.comments)
        if message is None:
            return None
        if not ran_here(page.comments):
            logger.debug("{}: a message on a task no taskinfa-worker ran; left alone", task_id)
            return None
        task = await self._client.get_task(task_id)
        if task is None or task.status not in ANSWERABLE or self._busy(task_id):
            return None
        # Noted before it is posted: a kill between the two must not leave a claim
        # nobody settles.
        self._claims.add(task_id, message.id)
        try:
            posted = await self._client.add_comment(
                task_id,
                author=slot,
                content=claim_text(slot, message.id),
                comment_type=CommentType.PROGRESS,
            )
        except (TransportError, ServerError) as exc:
            # It may be on the board: the read after the settle tells.
            logger.warning("the claim on {} got no clear answer ({}); reading back", task_id, exc)
        except BaseException:
            self._claims.remove(task_id, message.id)
            raise
        else:
            if posted is None:  # no comments route: nowhere to answer either
                self._claims.remove(task_id, message.id)
                return None
        await anyio.sleep(SETTLE)
        page = await self._client.list_comments(task_id, limit=COMMENTS_READ)
        winner = first_claim(page.comments, message.id)
        # By author, not by id: a claim whose answer was lost is ours all the same, and a
        # slot name is one live slot's (one BOT_NAME, one live process).
        if winner is None or winner.author != slot:
            self._claims.remove(task_id, message.id)
            who = winner.author if winner is not None else "another worker"
            logger.info("{}: {} answers the message {}", task_id, who, message.id)
            return None
        logger.info("{}: answering {}'s message {}", task_id, message.author, message.id)
        shown = message.model_copy(update={"content": cut_message(message.content)})
        return ChatTurn(task, shown, conversation(page.comments, message), winner)

    async def recover(self, author: str) -> int:
        """At start: the claims an earlier life of this process left unanswered (it was
        killed while answering) are settled with a note that the answer was lost. Returns
        how many; a claim whose task cannot be read now stays for the next start."""
        settled = 0
        for task_id, message_id in self._claims.entries():
            try:
                page = await self._client.list_comments(task_id, limit=COMMENTS_READ)
                if not answered_on(page.comments, message_id):
                    await self._client.add_note(
                        task_id,
                        author=author,
                        content=f"{RESTARTED}\n\n{reference(message_id)}",
                        comment_type=CommentType.ERROR,
                    )
                    settled += 1
            except BoardError as exc:
                logger.warning("the unanswered message on {} stays noted: {}", task_id, exc)
                continue
            self._claims.remove(task_id, message_id)
        return settled

    def answered(self, turn: ChatTurn) -> None:
        """The turn's answer (or its error) is on the board: the claim is settled."""
        self._claims.remove(turn.task.id, turn.message.id)
