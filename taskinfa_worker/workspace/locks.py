"""Locks that hold across slots of one process and across processes sharing the volume.

``flock`` locks belong to an open file description, so a lock is held exactly as long as
its file stays open, and the kernel drops it when a process dies: a crashed worker never
leaves a lock behind, only the file. Acquiring polls with ``LOCK_NB`` instead of blocking
in a thread, so waiting can be cancelled (a thread blocked in ``flock`` could not be, and
would take the lock later for nobody).

Lock files are deleted only by a holder (``release(unlink=True)``). Whoever opens a lock
file may find, once it holds the lock, that the file was unlinked in between; it then
compares inodes, drops that lock and tries again on the new file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from taskinfa_worker.errors import WorkspaceError

_POLL_START = 0.02
_POLL_MAX = 0.5


class FileLock:
    """An exclusive ``flock`` on one file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never waits."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this object")
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            if self._same_file(fd):
                self._fd = fd
                return True
            os.close(fd)  # unlinked by its last holder meanwhile: lock the new file

    async def acquire(self, timeout: float) -> None:
        """Wait for the lock (cancellable); ``WorkspaceError`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        delay = _POLL_START
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                raise WorkspaceError(
                    f"waited {timeout:g} s for {self.path.name}, held by another worker"
                )
            await anyio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    def release(self, *, unlink: bool = False) -> None:
        """Drop the lock (and first delete its file, while still holding it)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if unlink:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        finally:
            os.close(fd)

    def _same_file(self, fd: int) -> bool:
        try:
            current = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        opened = os.fstat(fd)
        return (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino)


class KeyedLocks:
    """One lock per key (a project's mirror): an ``anyio.Lock`` for the slots of this
    process, then a ``FileLock`` for other processes on the same volume.

    The in-process lock comes first so slots of one process queue fairly instead of polling
    the file; locks of different keys are independent, so a hung fetch of one project never
    delays another project.
    """

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._locks: dict[str, anyio.Lock] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str, timeout: float) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, anyio.Lock())
        try:
            with anyio.fail_after(timeout):
                await lock.acquire()
        except TimeoutError:
            raise WorkspaceError(
                f"waited {timeout:g} s for the repository cache {key}, busy in this worker"
            ) from None
        try:
            file_lock = FileLock(self._folder / f"{key}.lock")
            await file_lock.acquire(timeout)
            try:
                yield
            finally:
                file_lock.release()
        finally:
            lock.release()

    def try_hold_file(self, key: str) -> FileLock | None:
        """The file lock of ``key`` if free right now (for pruning), else None."""
        if key in self._locks and self._locks[key].locked():
            return None
        lock = FileLock(self._folder / f"{key}.lock")
        return lock if lock.try_acquire() else None
