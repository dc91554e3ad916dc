"""Retention for ``{LOG_DIR}/{BOT_NAME}``: transcripts and rotated logs kept under a cap.

The folder holds ``worker.log`` (rotated by loguru into ``worker.<time>.log``), ``status.log``
and one folder of transcripts per task (``<task id>/attempt-<n>-<time>.jsonl``). Left alone
it grows with every task, while the volume under it is capped (the Kubernetes ``logs``
emptyDir is 1 GiB): once it is full every task fails on the worker's side. So one upkeep
round, every ``LOG_RETENTION_INTERVAL`` seconds while the pool runs, deletes

1. every file older than ``LOG_RETENTION_DAYS`` (by modification time), then
2. the oldest files until the folder is under ``LOG_RETENTION_MB``.

Never deleted: the live ``worker.log`` and ``status.log``, and the transcripts of tasks
running in this process (their files are open and still growing). Only this bot's folder is
pruned: another process with another ``BOT_NAME`` may share ``LOG_DIR``.
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio
from loguru import logger

from taskinfa_worker.pool.registry import RunningTasks

__all__ = ["LogRetention", "transcript_folder", "transcript_path"]


def transcript_folder(bot_log_dir: Path, task_id: str) -> Path:
    """Where a task's transcripts go: one folder per task, its id made safe as a name."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", task_id)[:100].strip(".")
    return bot_log_dir / (name or "task")


def transcript_path(bot_log_dir: Path, task_id: str, kind: str) -> Path:
    """A new transcript of the task: ``kind`` (``attempt-2``, ``answer-<message>``) and the
    time it starts, so that the retention sweep and a reader find them in order."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return transcript_folder(bot_log_dir, task_id) / f"{kind}-{stamp}.jsonl"


@dataclass(frozen=True)
class _File:
    path: Path
    size: int
    mtime: float


class LogRetention:
    """One pruning round at a time over one bot's log folder (an ``Upkeep`` round)."""

    def __init__(
        self,
        folder: Path,
        running: RunningTasks,
        *,
        live: set[Path],
        max_bytes: int,
        max_age: float,
        interval: float,
    ) -> None:
        self.folder = folder
        self._running = running
        self._live = live  # worker.log and status.log: written to all the time
        self.max_bytes = max_bytes
        self.max_age = max_age
        self._interval = interval

    def interval(self) -> float:
        return self._interval

    async def prune(self) -> bool:
        """One round, in a thread: a folder of many files takes a while to list."""
        protected = {transcript_folder(self.folder, run.task.id) for run in self._running}
        removed = await anyio.to_thread.run_sync(self.prune_now, protected)
        if removed:
            logger.info("log retention: removed {} old file(s) from {}", removed, self.folder)
        return True  # never "unsupported": the loop runs as long as the pool

    def prune_now(self, protected: set[Path], now: float | None = None) -> int:
        """Delete what is over the age or the size cap; returns how many files went."""
        now = time.time() if now is None else now
        files = _listing(self.folder)
        total = sum(file.size for file in files)
        removable = sorted(
            (file for file in files if not self._kept(file.path, protected)),
            key=lambda file: file.mtime,
        )
        removed = 0
        for file in removable:
            too_old = now - file.mtime > self.max_age
            if not too_old and total <= self.max_bytes:
                break  # oldest first: everything after this one is newer still
            if _unlink(file.path):
                total -= file.size
                removed += 1
        _remove_empty_folders(self.folder, protected)
        return removed

    def _kept(self, path: Path, protected: set[Path]) -> bool:
        if path in self._live:
            return True
        return any(path.is_relative_to(folder) for folder in protected)


def _listing(folder: Path) -> list[_File]:
    files: list[_File] = []
    for path in folder.rglob("*"):
        try:
            stat = path.lstat()
        except OSError:  # gone meanwhile (a rotation, another round)
            continue
        if path.is_file() and not path.is_symlink():
            files.append(_File(path, stat.st_size, stat.st_mtime))
    return files


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        # One file that cannot go must not stop the round, nor the pool.
        logger.warning("log retention: {} not removed: {}", path, exc)
        return False
    return True


def _remove_empty_folders(folder: Path, protected: set[Path]) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink() and child not in protected:
            with contextlib.suppress(OSError):  # rmdir only succeeds on an empty folder
                child.rmdir()
