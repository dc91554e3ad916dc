"""One name, one live worker: a ``BOT_NAME`` is held by at most one running process.

Two processes under one name would each take the other's running tasks for a crash's
leftovers (recovery fails every task assigned to our slot names), and run them twice. Two
guards, both before recovery runs:

- On one host (one ``LOG_DIR``): ``hold_name`` takes an ``flock`` on
  ``{LOG_DIR}/{BOT_NAME}/worker.lock`` for the process's life. The kernel drops it when the
  process dies, SIGKILL included, so a restart after a crash is never refused.
- Elsewhere (another host or ``LOG_DIR``): ``ensure_name_free`` reads the board's workers.
  A heartbeat under our name that is fresh, and is not the last one our own previous life
  sent (``BeatRecord`` keeps the board's timestamp of it next to the lock), may be another
  live process: we watch it until it either moves on (someone beats: refuse) or goes
  stale (a crash elsewhere: go on). When our previous life died with a beat in flight (or
  its answer was lost), the board's last beat may be that one: it is taken as ours, since
  refusing would stop every restart after such a crash; a namesake elsewhere is then
  found at the next start, not this one.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from pathlib import Path

import anyio
from loguru import logger

from taskinfa_worker.client.api import BoardClient, Lane
from taskinfa_worker.errors import NameTakenError, PreflightError
from taskinfa_worker.settings import Settings
from taskinfa_worker.workspace.locks import FileLock

# The board shows a worker offline after this long without a heartbeat (API contract);
# our own beats are stretched to stay under it, so an older heartbeat is nobody's.
OFFLINE_AFTER = 120.0
# How often a fresh heartbeat under our name is read again while we decide.
WATCH_INTERVAL = 2.0


def hold_name(settings: Settings) -> FileLock:
    """The lock on our name on this host, held until the returned lock is released."""
    folder = settings.bot_log_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(folder / "worker.lock")
        taken = lock.try_acquire()
    except OSError as exc:
        raise PreflightError.unusable_folder("LOG_DIR", settings.log_dir, exc) from None
    if not taken:
        holder = _read_holder(folder / "worker.pid")
        raise NameTakenError(
            f"Another worker{holder} already runs as BOT_NAME={settings.bot_name} with "
            f"LOG_DIR={settings.log_dir}; stop it or give this one another BOT_NAME."
        )
    _write(folder / "worker.pid", f"{os.getpid()} {socket.gethostname()}\n")
    return lock


def _read_holder(path: Path) -> str:
    try:
        pid = path.read_text().split()[0]
    except (OSError, IndexError):
        return ""
    return f" (pid {pid})"


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


PENDING = "pending"


class BeatRecord:
    """The board's timestamp of the last heartbeat this process sent under its name, or
    ``pending`` while a beat is on its way (its answer not yet seen)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def sending(self) -> None:
        self._put(PENDING)

    def save(self, moment: datetime | None) -> None:
        if moment is not None:
            self._put(moment.isoformat())

    def _put(self, text: str) -> None:
        try:
            _write(self.path, text + "\n")
        except OSError as exc:
            logger.debug("heartbeat record not written: {}", exc)

    def is_ours(self, moment: datetime) -> bool:
        """Whether the board's last beat under our name may be our previous life's."""
        try:
            text = self.path.read_text().strip()
        except OSError:
            return False
        if text == PENDING:
            return True
        try:
            return datetime.fromisoformat(text) == moment
        except ValueError:
            return False


async def _last_beat(client: BoardClient, name: str) -> tuple[bool, datetime | None]:
    """(whether the board lists workers, the last heartbeat under ``name``)."""
    workers = await client.list_workers(lane=Lane.NORMAL)
    if workers is None:
        return False, None
    for worker in workers.workers:
        if worker.name == name:
            return True, worker.last_heartbeat
    return True, None


def _age(moment: datetime) -> float:
    return (datetime.now(UTC) - moment).total_seconds()


async def ensure_name_free(client: BoardClient, name: str, record: BeatRecord) -> None:
    """Refuse (``NameTakenError``) when another live process heartbeats under ``name``."""
    listed, seen = await _last_beat(client, name)
    if not listed or seen is None or record.is_ours(seen):
        return  # no heartbeat routes, never seen, or our own previous life's last beat
    if _age(seen) > OFFLINE_AFTER:
        return
    logger.info(
        "{} sent a heartbeat {:.0f} s ago, not from this host's last run: waiting to see "
        "whether another worker is alive under this name",
        name,
        _age(seen),
    )
    while _age(seen) <= OFFLINE_AFTER:
        await anyio.sleep(WATCH_INTERVAL)
        _, latest = await _last_beat(client, name)
        if latest is not None and latest != seen:
            raise NameTakenError(
                f"Another live worker sends heartbeats as BOT_NAME={name} to this board "
                "(from another host or LOG_DIR); stop it or give this one another BOT_NAME."
            )
    logger.info("{}'s last heartbeat went stale: it was a run that ended", name)
