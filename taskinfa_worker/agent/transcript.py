"""The run's transcript: every line the agent printed, redacted, written as it arrives.

One JSON object per line (``.jsonl``). Claude Code's own stream-json lines are written as
they came (after redaction); anything else (stderr, non-JSON stdout, the worker's own notes)
is wrapped in an object whose ``type`` starts with ``taskinfa_`` so that it can never be
mistaken for an event of the CLI.

Writing is best effort: a full disk must not fail the task, so the first write error is
logged and the transcript stops there.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from loguru import logger

from taskinfa_worker.redact import Redactor

OPEN_TRIES = 3
"""Tries at creating the transcript when its folder vanishes in between (log retention)."""


class Transcript:
    """Appends redacted lines to ``path`` (parent folders are created)."""

    def __init__(self, path: Path, redactor: Redactor) -> None:
        self.path = path
        self._redact = redactor
        self._file: IO[bytes] | None = None
        self._failed = False

    def __enter__(self) -> Transcript:
        try:
            self._file = self._open()
        except OSError as exc:
            self._fail(exc)
        return self

    def _open(self) -> IO[bytes]:
        # The log retention's round removes empty task folders from a thread: it may take
        # this one between the mkdir and the open. Once more then, and it holds a file.
        # Line buffering would flush on every line; the OS buffer is enough, and ``close``
        # flushes at the end of the run. Binary: the agent's lines are written as the bytes
        # they came in (after redaction), without a decode and an encode copy of a 10 MB line.
        for _ in range(OPEN_TRIES - 1):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                return self.path.open("ab")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self.path.open("ab")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                self._fail(exc)
            self._file = None

    def raw(self, line: bytes) -> None:
        """A JSON line exactly as the agent printed it (valid UTF-8; redacted)."""
        self._write(self._redact.redact_bytes(line))

    def note(self, kind: str, **fields: Any) -> None:
        """A line of our own: ``{"type": "taskinfa_<kind>", ...}`` (redacted)."""
        record = {"type": f"taskinfa_{kind}", **fields}
        text = json.dumps(record, ensure_ascii=False, default=str)
        self._write(self._redact(text).encode("utf-8", "replace"))

    def _write(self, line: bytes) -> None:
        if self._file is None:
            return
        try:
            self._file.write(line)
            self._file.write(b"\n")
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        if not self._failed:
            logger.warning("transcript {} not written: {}", self.path, exc)
        self._failed = True
        file, self._file = self._file, None
        if file is not None:
            with contextlib.suppress(OSError):
                file.close()
