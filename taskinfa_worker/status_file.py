"""``status.log``: what each slot is doing, one line per slot, for people and the CLI.

The seed's operators run ``cat /var/log/worker/status.log``; here the file lives at
``{LOG_DIR}/{BOT_NAME}/status.log`` (``Settings.status_file``). The pool calls
``StatusWriter.changed()`` whenever a slot changes, and the writer replaces the whole file
atomically (temporary file + ``os.replace``), so a reader never sees half a file. Writes
are coalesced: at most one every ``STATUS_WRITE_INTERVAL``, however many slots change (with
256 slots ending at once, one write per change rendered 256 lines 256 times and held the
event loop for hundreds of milliseconds).

The same text is rendered from a JSON snapshot (``snapshot``), which the health server's
``/status`` route returns and ``status.json`` beside the file keeps, so
``taskinfa-worker status`` prints the same table whichever source it reads, with each
slot's elapsed time as of the reading, and can tell from the snapshot's host and pid
whether the worker that wrote it still runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from taskinfa_worker.pool.reporting import format_duration
from taskinfa_worker.pool.state import PoolState

__all__ = ["StatusFile", "StatusWriter", "render", "snapshot"]

TITLE_WIDTH = 60
# The shortest time between two writes of the file. People read it by hand and the CLI
# shows elapsed times in seconds, so a fifth of a second is as good as every change.
STATUS_WRITE_INTERVAL = 0.2


def snapshot(state: PoolState, now: float | None = None) -> dict[str, Any]:
    """The pool's state as JSON-ready data (the ``/status`` body)."""
    return {
        "bot_name": state.bot_name,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started_at": state.started_at,
        "updated_at": time.time() if now is None else now,
        "draining": state.draining,
        "board_ready": state.board_ready,
        "completed": state.completed,
        "failed": state.failed,
        "released": state.released,
        "worker_faults": state.worker_faults,
        "worker_fault": state.worker_fault,
        "busy": state.busy,
        "slots": [
            {
                "name": slot.name,
                "status": slot.status,
                "task_id": slot.task_id,
                "task_title": slot.task_title,
                "since": slot.since,
            }
            for slot in state.slots
        ],
    }


def render(data: Mapping[str, Any], now: float | None = None) -> str:
    """The status text: two header lines, then one line per slot.

    ``name  status  task id  since <UTC time> (for <elapsed>)  title`` with the elapsed
    time as of ``now`` (default: when the snapshot was taken) and the title trimmed to
    ``TITLE_WIDTH`` characters and put on one line.
    """
    slots: list[Mapping[str, Any]] = list(data.get("slots", []))
    at = now if now is not None else data.get("updated_at")
    fault = data.get("worker_fault")
    flags = [
        "draining" if data.get("draining") else "",
        _board_flag(data),
        f"worker fault: {_one_line(fault, 200)}" if fault else "",
    ]
    lines = [
        f"# taskinfa-worker {data.get('bot_name', '?')}  pid {data.get('pid', '?')}  "
        f"started {_when(data.get('started_at'))}  updated {_when(data.get('updated_at'))}",
        f"# {data.get('busy', 0)}/{len(slots)} slots busy  completed {data.get('completed', 0)}"
        f"  failed {data.get('failed', 0)}  released {data.get('released', 0)}  "
        + "  ".join(flag for flag in flags if flag),
    ]
    name_width = max((len(str(slot.get("name", ""))) for slot in slots), default=0)
    task_width = max((len(str(slot.get("task_id") or "-")) for slot in slots), default=1)
    for slot in slots:
        task_id = str(slot.get("task_id") or "-")
        line = (
            f"{slot.get('name', '?')!s:<{name_width}}  {slot.get('status', '?')!s:<8}  "
            f"{task_id:<{task_width}}  since {_when(slot.get('since'))}{_elapsed(slot, at)}"
        )
        title = _one_line(slot.get("task_title"))
        lines.append(f"{line}  {title}" if title else line)
    return "\n".join(lines) + "\n"


def _board_flag(data: Mapping[str, Any]) -> str:
    return "board ready" if data.get("board_ready") else "board not ready"


def _when(timestamp: Any) -> str:
    if not isinstance(timestamp, int | float):
        return "?"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _elapsed(slot: Mapping[str, Any], now: Any) -> str:
    since = slot.get("since")
    if not isinstance(since, int | float) or not isinstance(now, int | float):
        return ""
    return f" (for {format_duration(int(max(0.0, now - since) * 1000))})"


def _one_line(title: Any, width: int = TITLE_WIDTH) -> str:
    if not title:
        return ""
    # A title is user text: newlines or tabs would break the one-line-per-slot layout.
    text = " ".join(str(title).split())
    return text if len(text) <= width else text[: width - 1] + "…"


class StatusFile:
    """The status file of one worker process."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def data_path(self) -> Path:
        """``status.json``: the snapshot the text was rendered from."""
        return self.path.with_suffix(".json")

    def write(self, state: PoolState) -> None:
        """Replace the file (and its snapshot) with the current state, atomically."""
        data = snapshot(state)
        self._replace(self.data_path, json.dumps(data) + "\n")
        self.write_text(render(data))

    def write_text(self, text: str) -> None:
        self._replace(self.path, text)

    def read_data(self) -> dict[str, Any] | None:
        """The last snapshot, or None when there is none (or it cannot be read)."""
        try:
            data = json.loads(self.data_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    @staticmethod
    def _replace(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The temporary file must be in the same directory: os.replace is only atomic
        # within one filesystem.
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            # mkstemp creates 0600; operators and log shippers read this file.
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    def read(self) -> str:
        """The file's text; ``FileNotFoundError`` when no worker has written it."""
        return self.path.read_text(encoding="utf-8")

    def age(self, now: float | None = None) -> float:
        """Seconds since the file was last written."""
        return (time.time() if now is None else now) - self.path.stat().st_mtime


class StatusWriter:
    """Writes the pool's state to its status file soon after it changes, coalescing changes.

    ``changed`` is cheap and may be called on every slot change; ``run`` (a background task)
    writes the first change at once and later ones at most every ``interval``; ``flush``
    writes what is pending, for the last state when the pool stops.
    """

    def __init__(
        self,
        file: StatusFile,
        state: Callable[[], PoolState],
        interval: float = STATUS_WRITE_INTERVAL,
    ) -> None:
        self._file = file
        self._state = state
        self._interval = interval
        self._pending = False
        self._wake = anyio.Event()

    def changed(self) -> None:
        self._pending = True
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            self.flush()
            await anyio.sleep(self._interval)

    def flush(self) -> None:
        if self._pending:
            self._pending = False
            self._file.write(self._state())
