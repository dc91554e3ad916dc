"""The owner mark: the first words of a live session's summary, saying who runs which task.

The current release keeps no heartbeats; a run's session, marked this way, is what recovery
(``session_lease.py``) and another worker's handover fence (``handover.py``) read to know
that a slot of some worker runs a task.
"""

from __future__ import annotations

import re
from typing import Final

_OWNER: Final = re.compile(r"^taskinfa-worker (?P<slot>\S+) runs (?P<task>[^\s:]+)")


def owner_mark(slot: str, task_id: str) -> str:
    """The first words of a live session's summary: who runs which task."""
    return f"taskinfa-worker {slot} runs {task_id}"


def marked_owner(summary: str | None) -> tuple[str, str] | None:
    """The (slot, task id) of a session's owner mark; None when it has none."""
    found = _OWNER.match(summary or "")
    return None if found is None else (found["slot"], found["task"])
