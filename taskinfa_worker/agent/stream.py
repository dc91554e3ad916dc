"""Reading Claude Code's stream-json output: lines of any length, events of any kind.

``LineSplitter`` cuts a byte stream into lines without a length limit (a Read of a 5 MB
file arrives as one ~11 MB line, which ``StreamReader.readline`` refuses). Memory holds one
line at a time: each line goes to the transcript as soon as it is complete and only the few
facts the worker needs (session, result, API errors) are kept.

``ClaudeStream`` interprets the lines: it tolerates anything it does not understand (non-JSON
output, unknown event types and fields, wrong types), turns tool calls into ``Activity`` for
the progress comments, and keeps the final ``result`` event.
"""

from __future__ import annotations

import codecs
import json
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from taskinfa_worker.agent.job import Activity
from taskinfa_worker.agent.transcript import Transcript

# Tool input keys that name a file or folder the tool works on (Read, Write, Edit,
# MultiEdit, NotebookEdit, Glob, Grep, LS).
_PATH_KEYS = ("file_path", "notebook_path", "path")
# Assistant text shown in progress comments is cut to this many characters.
_TEXT_LIMIT = 500
# API error messages kept for the failure reason and auth detection.
_API_ERRORS_KEPT = 5


# A memory guard, not a format limit: a line longer than this (real ones reach ~11 MB when
# the agent reads a 5 MB file) is handed on in pieces of this size, which do not parse, so
# an agent printing endless bytes without a newline cannot exhaust the worker's memory.
MAX_LINE_BYTES = 128 * 1024 * 1024

# Lines at least this long that are ``user`` events (tool results, the only events that
# reach megabytes: a Read of a big file) go to the transcript unparsed.
SKIM_BYTES = 256 * 1024
# How a user event starts: the CLI writes ``type`` first (JSON.stringify, no spaces; any
# spacing is accepted). Only the line's first bytes are searched.
_USER_EVENT_START = re.compile(rb'\{\s*"type"\s*:\s*"user"')
_START_BYTES = 64
# Pieces of a long line checked for UTF-8 at a time (small, so the check allocates little).
_UTF8_PIECE = 1024 * 1024


class LineSplitter:
    """Splits a byte stream into lines (without the newline), however long they are.

    Only the new chunk is searched for a newline, so a line arriving in many chunks costs
    linear time; its pieces are joined once, when it ends.
    """

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self._parts: list[bytes] = []
        self._max_line = max_line
        self.pending = 0  # bytes of the unfinished line

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines completed by ``chunk``."""
        lines = []
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            piece = chunk[start:end]
            if self._parts:
                self._parts.append(piece)
                piece = b"".join(self._parts)
                self._parts = []
                self.pending = 0
            lines.append(piece)
            start = end + 1
        if start < len(chunk):
            self._parts.append(chunk[start:])
            self.pending += len(chunk) - start
            if self.pending >= self._max_line:
                lines.append(b"".join(self._parts))
                self._parts = []
                self.pending = 0
        return lines

    def finish(self) -> bytes | None:
        """The last line when the stream ended without a newline."""
        if not self._parts:
            return None
        line = b"".join(self._parts)
        self._parts = []
        self.pending = 0
        return line


@dataclass(frozen=True)
class ResultEvent:
    """The final ``result`` event of a run, fields checked and typed."""

    is_error: bool
    subtype: str
    text: str  # ``result``, or the ``errors`` joined (error_* subtypes carry no result)
    errors: tuple[str, ...] = ()
    num_turns: int | None = None
    cost_usd: float | None = None
    duration_ms: int | None = None
    session_id: str | None = None
    api_error_status: int | None = None
    permission_denials: int = 0

    @classmethod
    def parse(cls, event: dict[str, Any]) -> ResultEvent:
        errors = tuple(_text(item) for item in _list(event.get("errors")))
        result = event.get("result")
        text = result if isinstance(result, str) else "\n".join(e for e in errors if e)
        return cls(
            # A missing or odd is_error counts as an error: success must be stated.
            is_error=event.get("is_error") is not False,
            subtype=str(event.get("subtype") or ""),
            text=text,
            errors=errors,
            num_turns=_int(event.get("num_turns")),
            cost_usd=_float(event.get("total_cost_usd")),
            duration_ms=_int(event.get("duration_ms")),
            session_id=_str(event.get("session_id")),
            api_error_status=_int(event.get("api_error_status")),
            permission_denials=len(_list(event.get("permission_denials"))),
        )


class ClaudeStream:
    """Consumes stdout lines of ``claude -p --output-format stream-json --verbose``."""

    def __init__(
        self,
        transcript: Transcript,
        *,
        workspace: Path,
        on_activity: Callable[[Activity], None] = lambda _activity: None,
        on_result: Callable[[], None] = lambda: None,
    ) -> None:
        self._transcript = transcript
        self._workspace = workspace
        self._on_activity = on_activity
        self._on_result = on_result
        self.session_id: str | None = None
        self.model: str | None = None
        self.result: ResultEvent | None = None
        self.api_errors: deque[str] = deque(maxlen=_API_ERRORS_KEPT)
        self.lines = 0
        self.unparsed_lines = 0
        self.tool_calls = 0

    def feed_line(self, line: bytes) -> None:
        """Handle one line of stdout (without its newline)."""
        line = line.rstrip(b"\r")
        if not line.strip():
            return
        self.lines += 1
        if _is_skimmed(line):
            # A big tool result: nothing in it for the worker, and parsing it would hold
            # two more copies of the line (its text and its objects) at once.
            self._transcript.raw(line)
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text = line.decode("utf-8", "replace")
            line = text.encode("utf-8")  # the transcript holds valid UTF-8 only
        try:
            event = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
            event = None
        if not isinstance(event, dict):
            # Warnings, stack traces, or a newer format: keep it, but do not interpret it.
            self.unparsed_lines += 1
            self._transcript.note("stdout", text=text)
            return
        del text  # the bytes are written; the decoded copy of a big line can go now
        self._transcript.raw(line)
        self._handle(event)

    def _handle(self, event: dict[str, Any]) -> None:
        session_id = _str(event.get("session_id"))
        if session_id:
            self.session_id = session_id
        kind = event.get("type")
        if kind == "system":
            self._system(event)
        elif kind == "assistant":
            self._assistant(event)
        elif kind == "result":
            self.result = ResultEvent.parse(event)
            self._on_result()
        # user, stream_event and types of newer versions: nothing the worker needs.

    def _system(self, event: dict[str, Any]) -> None:
        subtype = event.get("subtype")
        if subtype == "init":
            self.model = _str(event.get("model"))
        elif subtype == "api_retry":
            status = event.get("error_status")
            error = _text(event.get("error"))
            self.api_errors.append(f"API error {status}: {error}" if status else error)

    def _assistant(self, event: dict[str, Any]) -> None:
        message = event.get("message")
        content = _list(message.get("content")) if isinstance(message, dict) else []
        if event.get("is_api_error_message") or event.get("error"):
            # A synthetic message: the API call failed and the CLI says why in its text.
            words = [_text(block.get("text")) for block in _blocks(content, "text")]
            self.api_errors.append(" ".join([_text(event.get("error")), *words]).strip())
            return
        for block in content:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "tool_use":
                self.tool_calls += 1
                name = _str(block.get("name")) or "tool"
                self._emit(Activity(tool=name, files=self._files(block.get("input"))))
            elif block.get("type") == "text":
                said = _text(block.get("text")).strip()
                if said:
                    self._emit(Activity(text=said[:_TEXT_LIMIT]))

    def _files(self, tool_input: Any) -> tuple[str, ...]:
        if not isinstance(tool_input, dict):
            return ()
        files = []
        for key in _PATH_KEYS:
            value = tool_input.get(key)
            if isinstance(value, str) and value:
                files.append(self._relative(value))
        return tuple(files)

    def _relative(self, value: str) -> str:
        path = Path(value)
        if path.is_absolute():
            try:
                return str(path.relative_to(self._workspace)) or "."
            except ValueError:
                return value
        return value

    def _emit(self, activity: Activity) -> None:
        try:
            self._on_activity(activity)
        except Exception:
            # The progress reporter is the pool's; its bug must not fail the task.
            logger.exception("activity callback failed")


def _is_skimmed(line: bytes) -> bool:
    """A big, complete user event in valid UTF-8, safe to keep without parsing it.

    The start and the closing brace are checked so that a piece of an over-long line
    (``MAX_LINE_BYTES``) or a truncated line still goes through the parser and, failing
    it, into a note, like any other non-JSON output.
    """
    if len(line) < SKIM_BYTES or not _USER_EVENT_START.match(line[:_START_BYTES]):
        return False
    if not line.endswith(b"}"):
        return False
    return line.isascii() or _is_utf8(line)


def _is_utf8(data: bytes) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(data)
    try:
        for start in range(0, len(data), _UTF8_PIECE):
            decoder.decode(view[start : start + _UTF8_PIECE])
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _blocks(content: Iterable[Any], kind: str) -> list[dict[str, Any]]:
    return [b for b in content if isinstance(b, dict) and b.get("type") == kind]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in ("message", "text", "error"):
            if isinstance(value.get(key), str):
                return str(value[key])
    return json.dumps(value, ensure_ascii=False, default=str)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
