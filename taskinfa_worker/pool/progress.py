"""What the board hears about a running task: throttled progress, a summary, an error report.

``ProgressReporter`` collects the agent's ``Activity`` (cheap, synchronous ``record``) and
posts at most one progress comment per ``interval()`` seconds, only when something
happened; the pool's interval function stretches with the shared request budget.
``summary_text`` and ``failure_text`` write the final comments. All text passes through the
Redactor when one is given (the pool redacts again before posting: harmless twice).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import anyio
from loguru import logger

from taskinfa_worker.agent.job import Activity, AgentOutcome
from taskinfa_worker.agent.prompt import fence
from taskinfa_worker.errors import BoardError
from taskinfa_worker.redact import Redactor

# A progress comment lists at most this many files and tools.
MAX_FILES_LISTED = 10
MAX_TOOLS_LISTED = 8
# The agent's latest remark in a progress comment is cut to this length.
NOTE_CHARS = 300
# The final result text in the summary comment; the transcript has all of it.
RESULT_CHARS = 3000
# The end of stderr in an error comment.
STDERR_LINES = 15
STDERR_CHARS = 1500
FILES_IN_SUMMARY = 30
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
    ) -> None:
        self._post = post
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
        if not (self._tools or self._files or self._note):
            return None
        text = self._redact(progress_text(self._tools, list(self._files), self._note))
        self._tools = Counter()
        self._files = {}
        self._note = None
        return text

    async def run(self) -> None:
        """Post progress until cancelled: at most one comment per ``interval()`` seconds."""
        while True:
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
        listed = tools.most_common(MAX_TOOLS_LISTED)
        shown = ", ".join(f"{name} ×{count}" for name, count in listed)
        if len(tools) > MAX_TOOLS_LISTED:
            shown += ", …"
        noun = "tool call" if calls == 1 else "tool calls"
        lines.append(f"Working: {calls} {noun} since the last update ({shown}).")
    else:
        lines.append("Working.")
    if files:
        lines.append(f"Files: {_some(files, MAX_FILES_LISTED)}")
    if note:
        flat = " ".join(note.split())
        if len(flat) > NOTE_CHARS:
            flat = flat[:NOTE_CHARS] + "…"
        lines.append(f"Latest: {flat}")
    return "\n".join(lines)


def summary_text(
    outcome: AgentOutcome, files_changed: Sequence[str], *, redactor: Redactor | None = None
) -> str:
    """The summary comment of a successful run."""
    facts = _facts(outcome)
    header = "Finished" + (f": {facts}." if facts else ".")
    parts = [header]
    result = outcome.result_text.strip()
    if result:
        parts.append(_trim_start(result, RESULT_CHARS))
    if files_changed:
        parts.append(
            f"Files changed ({len(files_changed)}): {_some(files_changed, FILES_IN_SUMMARY)}"
        )
    else:
        parts.append("No files changed.")
    return (redactor or _identity)("\n\n".join(parts))


def failure_text(outcome: AgentOutcome, *, redactor: Redactor | None = None) -> str:
    """The error comment of a failed run: why, exit code, the end of stderr."""
    reason = outcome.reason.strip() or "The agent failed without saying why."
    parts = [f"Attempt failed: {reason}"]
    facts = []
    if outcome.exit_code is not None:
        facts.append(f"exit code {outcome.exit_code}")
    if stats := _facts(outcome):
        facts.append(stats)
    if facts:
        parts.append("(" + ", ".join(facts) + ")")
    tail = _tail(outcome.stderr_tail)
    if tail:
        parts.append("End of stderr:\n" + fence(tail))
    return (redactor or _identity)("\n\n".join(parts))


def format_duration(milliseconds: int) -> str:
    seconds = max(0, round(milliseconds / 1000))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _facts(outcome: AgentOutcome) -> str:
    facts = []
    if outcome.duration_ms is not None:
        facts.append(format_duration(outcome.duration_ms))
    if outcome.num_turns is not None:
        facts.append(f"{outcome.num_turns} turn" + ("" if outcome.num_turns == 1 else "s"))
    if outcome.cost_usd is not None:
        facts.append(f"${outcome.cost_usd:.2f}")
    return ", ".join(facts)


def _some(items: Sequence[str], limit: int) -> str:
    shown = ", ".join(items[:limit])
    if len(items) > limit:
        shown += f" (+{len(items) - limit} more)"
    return shown


def _trim_start(text: str, limit: int) -> str:
    """The beginning of ``text``, cut at a line end when one is near the limit."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    newline = cut.rfind("\n")
    if newline > limit * 0.7:
        cut = cut[:newline]
    return cut.rstrip() + f"\n… ({len(text) - len(cut)} more characters in the transcript)"


def _tail(text: str) -> str:
    """The last lines of ``text`` (the end is what explains a failure)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    tail = "\n".join(lines[-STDERR_LINES:])
    return tail if len(tail) <= STDERR_CHARS else "…" + tail[-STDERR_CHARS:]
