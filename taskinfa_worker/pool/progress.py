"""What the board hears while a task runs: throttled progress comments.

``ProgressReporter`` collects the agent's ``Activity`` (cheap, synchronous ``record``) and
posts at most one progress comment per ``interval()`` seconds, only when something
happened; the pool's interval function stretches with the shared request budget. Given an
``opening`` (the run's "Started by" note, where the runner defers it), the first comment
is posted one interval after the start whether or not anything happened, and begins with
it: a run shorter than that posts no start note at all. The text
passes through the Redactor when one is given (the reporter redacts again before posting:
harmless twice). A task's ending and its texts are ``reporting``'s.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import anyio
from loguru import logger

from taskinfa_worker.agent.job import Activity
from taskinfa_worker.errors import BoardError
from taskinfa_worker.redact import Redactor

# A progress comment lists at most this many files and tools.
MAX_FILES_LISTED = 10
MAX_TOOLS_LISTED = 8
# The agent's latest remark in a progress comment is cut to this length.
NOTE_CHARS = 300
# A floor under interval(), so that a zero can never turn the loop into a busy one.
MIN_INTERVAL = 0.05


def _identity(text: str) -> str:
    return text


class ProgressReporter:
    """Throttled progress comments from the agent's activity."""

    def __init__(
        self,
        post: Callable[[str], Awaitable[None]],
        interval: Callable[[], float],
        *,
        redactor: Redactor | None = None,
        clock: Callable[[], float] = time.monotonic,
        opening: str | None = None,
    ) -> None:
        self._post = post
        self._opening = opening
        self._interval = interval
        self._redact: Callable[[str], str] = redactor or _identity
        self._clock = clock
        self._tools: Counter[str] = Counter()
        self._files: dict[str, None] = {}  # insertion-ordered set
        self._note: str | None = None
        self._changed = anyio.Event()
        # The pool announces the start itself; the first progress comes an interval later.
        self._last_post = clock()
        self.posted = 0

    def record(self, activity: Activity) -> None:
        """Note one activity of the agent (called from the stream reader: cheap)."""
        if activity.tool:
            self._tools[activity.tool] += 1
        for path in activity.files:
            self._files.setdefault(path, None)
        if activity.text:
            self._note = activity.text
        if activity.tool or activity.files or activity.text:
            self._changed.set()

    def take(self) -> str | None:
        """The progress text for everything recorded since the last one (and forget it);
        None when nothing happened."""
        self._changed = anyio.Event()
        opening, self._opening = self._opening, None
        if not (self._tools or self._files or self._note):
            return opening
        text = self._redact(progress_text(self._tools, list(self._files), self._note))
        self._tools = Counter()
        self._files = {}
        self._note = None
        return text if opening is None else f"{opening}\n\n{text}"

    async def run(self) -> None:
        """Post progress until cancelled: at most one comment per ``interval()`` seconds."""
        while True:
            if self._opening is None:  # the opening is due after an interval, news or not
                await self._changed.wait()
            # Not polling: the interval may stretch while we wait (more slots busy), so the
            # deadline is computed again after each sleep.
            while (wait := self._next_post() - self._clock()) > 0:  # noqa: ASYNC110
                await anyio.sleep(wait)
            text = self.take()
            if text is None:
                continue
            self._last_post = self._clock()
            try:
                await self._post(text)
            except BoardError as exc:
                # Progress is a courtesy: the next one will say more. Nothing else is lost.
                logger.warning("progress comment not posted: {}", exc)
            else:
                self.posted += 1

    def _next_post(self) -> float:
        return self._last_post + max(self._interval(), MIN_INTERVAL)


def progress_text(tools: Counter[str], files: Sequence[str], note: str | None) -> str:
    """One progress comment: tool counts, files touched, the agent's latest remark."""
    lines = []
    if tools:
        calls = sum(tools.values())
        common = tools.most_common(MAX_TOOLS_LISTED)
        shown = ", ".join(f"{name} ×{count}" for name, count in common)
        if len(tools) > MAX_TOOLS_LISTED:
            shown += ", …"
        noun = "tool call" if calls == 1 else "tool calls"
        lines.append(f"Working: {calls} {noun} since the last update ({shown}).")
    else:
        lines.append("Working.")
    if files:
        lines.append(f"Files: {listed(files, MAX_FILES_LISTED)}")
    if note:
        flat = " ".join(note.split())
        if len(flat) > NOTE_CHARS:
            flat = flat[:NOTE_CHARS] + "…"
        lines.append(f"Latest: {flat}")
    return "\n".join(lines)


def listed(items: Sequence[str], limit: int) -> str:
    shown = ", ".join(items[:limit])
    if len(items) > limit:
        shown += f" (+{len(items) - limit} more)"
    return shown
