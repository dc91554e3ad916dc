"""The handover fence: a task taken from a run that may still be alive waits for it to stop.

A person can send a running task back to ``todo``; another worker may claim it within one
poll, while the first worker's agent goes on until that worker's next takeaway check (up to
``cancel_check_interval``). Two agents would then work on one task at once. So before its
agent starts, a claimed task whose last run never ended is fenced:

- the last run is the newest "Started by <slot>" note; it ended if an ending note follows it
  (a summary, an error, a release, a stop note). Where the board has ``/workers`` or
  sessions, a run posts no start note until its first progress comment (``runner.py``):
  its slot's heartbeat, or its session's owner mark, both sent at the claim, name the task
  instead. So there a live slot (not ours) that the board shows on the task is a run too,
  unless that slot posted an ending note since the board last heard it (its heartbeat
  moves on, its session ends, a moment after the ending);
- an unended run is waited for until its stop note appears (the old worker posts it once its
  agent is stopped and reaped), its worker's heartbeat goes stale past the lease, or the
  bound passes: two takeaway checks and a kill grace, time enough for a live worker with the
  same settings to notice and stop.

Which tasks are checked cannot come from ``started_at``/``completed_at``: the real
releases set each only the first time (``COALESCE``), so once a task has been in review its
``completed_at`` stays later than its ``started_at`` through every run after. Any task that
was ever started (``started_at`` set) or that came back (a run counted in ``loop_count`` or
``error_count``, for a board that leaves ``started_at`` out) is checked.

Cheap where nothing can be running: a task never started costs nothing. One that was costs
one read of its comments, which the run's history reuses (a task that came back reads them
anyway, ``history.py``), and one read of ``/workers`` or, on the current release, of the
active sessions: one request more per re-run when its last run ended. The fence protects
across processes; within one process the dispatcher never claims a task this process still
runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
from loguru import logger

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.client.models import (
    Comment,
    CommentPage,
    CommentType,
    Task,
    newest_first,
)
from taskinfa_worker.errors import BoardError
from taskinfa_worker.pool.chat import claims_a_message
from taskinfa_worker.pool.history import COMMENTS_READ, came_back
from taskinfa_worker.pool.owner_mark import marked_owner
from taskinfa_worker.pool.recovery import age, owning_worker
from taskinfa_worker.pool.reporting import RELEASED, STARTED, STOPPED
from taskinfa_worker.settings import Settings

POLL = 2.0  # seconds between looks while fenced
_ENDINGS = (CommentType.SUMMARY, CommentType.ERROR)


def may_still_run(offered: Task | None) -> bool:
    """Whether a run of the task may have begun (the fence's other signals must tell).

    Not from ``completed_at`` against ``started_at``: real boards set both only once, so
    they cannot say whether the latest run ended (module docstring).
    """
    return offered is not None and (offered.started_at is not None or came_back(offered))


def unended_run(comments: Sequence[Comment]) -> str | None:
    """The slot of the task's newest run when no ending note follows its start note. An
    answer to a person's message counts as a run: its claim starts it, its reply or its
    error note ends it (a person may send the task to ``todo`` while it is answered)."""
    for comment in newest_first(comments):
        if comment.author_type == "user":
            continue
        if _ends_a_run(comment):
            return None
        if comment.content.startswith(STARTED) or claims_a_message(comment):
            return comment.author
    return None


def fence_bound(settings: Settings) -> float:
    return 2 * settings.cancel_check_interval + settings.kill_grace + POLL


@dataclass(frozen=True)
class Handover:
    waited: float = 0.0  # seconds
    comments: CommentPage | None = None  # the task's comments as last read, if they were


async def wait_for_handover(
    client: BoardClient, offered: Task | None, settings: Settings, own_slot: str
) -> Handover:
    """Wait until an earlier run of the task has provably stopped (or the bound passed)."""
    if not may_still_run(offered):
        return Handover()
    assert offered is not None
    started = time.monotonic()
    deadline = started + fence_bound(settings)
    announced = False
    while True:
        slot: str | None = "an unknown slot"
        try:
            page = await client.list_comments(offered.id, limit=COMMENTS_READ)
            slot = await _earlier_run(client, offered.id, page, settings.lease_timeout, own_slot)
            if slot is None:
                return Handover(time.monotonic() - started, page)
        except BoardError as exc:  # cannot tell: keep waiting, within the bound
            logger.warning("handover check of {} failed: {}", offered.id, exc)
        if not announced:
            announced = True
            logger.info(
                "{}: its earlier run in {} may still be working; waiting up to {:.0f} s for "
                "it to stop before starting the agent",
                offered.id,
                slot,
                deadline - started,
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            logger.warning(
                "{}: the earlier run in {} did not say it stopped within {:.0f} s; starting",
                offered.id,
                slot,
                time.monotonic() - started,
            )
            return Handover(time.monotonic() - started)
        await anyio.sleep(min(POLL, remaining))


async def _earlier_run(
    client: BoardClient, task_id: str, page: CommentPage, lease_timeout: float, own_slot: str
) -> str | None:
    """The slot of a run of ``task_id`` that may still be alive, or None.

    From the task's notes (where the board has comments), and from the heartbeats (where
    it has ``/workers``): a live slot that still reports the task as its own.
    """
    notes = page.comments if client.comments_supported is not False else []
    workers = await client.list_workers()  # None: the board has no /workers
    by_name = {} if workers is None else {w.name: w for w in workers.workers}
    now = datetime.now(UTC)
    slot = unended_run(notes)
    if slot is not None:
        # Without heartbeats the bound is the only safe answer: the run counts as alive.
        worker = owning_worker(slot, by_name)
        if workers is None or (
            worker is not None and age(worker.last_heartbeat, now) <= lease_timeout
        ):
            return slot
    # Runs the board names: (slot, when it last said so) from heartbeats, or from sessions.
    named: list[tuple[str, datetime | None]] = [
        (w.name, w.last_heartbeat)
        for w in by_name.values()
        if w.status == "working" and w.current_task_id == task_id
    ]
    if workers is None:
        named = await _sessions_naming(client, task_id)
    for name, said in named:
        fresh = age(said, now) <= lease_timeout
        # Our own slot says so since its claim.
        if fresh and name != own_slot and not _ended_since(notes, name, said):
            return name
    return None


async def _sessions_naming(client: BoardClient, task_id: str) -> list[tuple[str, datetime | None]]:
    """(slot, last sign of life) of the active sessions whose owner mark names the task."""
    sessions = await client.sessions.find(status="active")
    named = []
    for session in sessions or ():
        owner = marked_owner(session.summary)
        if owner is not None and owner[1] == task_id:
            named.append((owner[0], session.last_sign_of_life))
    return named


def _ended_since(notes: Sequence[Comment], slot: str, said: datetime | None) -> bool:
    """Whether the slot posted an ending note after the board last heard it name the task
    (that run is over; its heartbeat or session moves on a moment later)."""
    return any(
        note.author == slot
        and _ends_a_run(note)
        and note.created_at is not None
        and said is not None
        and note.created_at > said
        for note in notes
    )


def _ends_a_run(note: Comment) -> bool:
    return note.comment_type in _ENDINGS or note.content.startswith((RELEASED, STOPPED))
