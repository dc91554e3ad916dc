"""Reading processes from ``/proc``: one process's stat line, the whole machine, or the
worker's own tree.

A sweep runs at the end of every run, so how much it reads is paid once per task: these
reads use plain ``os.open``/``os.read`` on string paths (a ``pathlib`` path and a buffered
file object cost more than the read itself), and a sweep reads only the worker's own
descendants (``family``), not every process of the machine (``scan``). That is enough
while the worker is the child subreaper: whatever a run leaves behind, wherever it
re-parents, stays below the worker.

Linux only; where ``/proc`` is missing every reader here finds nothing.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Collection
from dataclasses import dataclass

PROC = "/proc"
HAVE_PROC = os.path.isdir(PROC)
_UID = os.getuid()
# Big enough for any stat line and most children lists in one read; longer files (an
# environment) take more reads.
_CHUNK = 4096
# A children file is not a snapshot: a child that exits while it is read can make the
# kernel skip the next one. Reading it again until two reads agree (at most this many
# times) leaves a process unseen only if it was skipped in every read.
_CHILDREN_READS = 3
# How much of the file name a process was started from the kernel keeps as its name.
_COMM_LEN = 15


@dataclass(frozen=True, slots=True)
class ProcInfo:
    """One process as ``/proc/<pid>/stat`` shows it; (pid, start) identifies it for good."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    start: int  # clock ticks after boot: a reused pid has a different start

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def read_file(path: str) -> bytes | None:
    """A whole (``/proc``) file, or None when it cannot be read (gone, not ours)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, _CHUNK)
        if len(data) < _CHUNK:  # procfs answers short only at the end of the file
            return data
        parts = [data]
        while chunk := os.read(fd, 64 * 1024):
            parts.append(chunk)
        return b"".join(parts)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_proc(pid: int) -> ProcInfo | None:
    """The process's stat line, or None when it no longer exists."""
    raw = read_file(f"{PROC}/{pid}/stat")
    if raw is None:
        return None
    # The command name is in parentheses and may itself contain spaces and parentheses.
    end = raw.rfind(b")")
    fields = raw[end + 2 :].split()
    try:
        return ProcInfo(
            pid=pid,
            state=fields[0].decode(),
            ppid=int(fields[1]),
            pgid=int(fields[2]),
            sid=int(fields[3]),
            start=int(fields[19]),
        )
    except (IndexError, ValueError):
        return None


def owned_by_us(pid: int) -> bool:
    try:
        return os.stat(f"{PROC}/{pid}").st_uid == _UID
    except OSError:
        return False


def started_from(pid: int, executable: str) -> bool:
    """Whether the process's name (``/proc/<pid>/comm``: what the kernel kept of the file
    name it was started from) is that of ``executable``; False once it is gone."""
    raw = read_file(f"{PROC}/{pid}/comm")
    name = os.path.basename(executable).encode()[:_COMM_LEN]
    return raw is not None and raw.rstrip(b"\n") == name


def environ_of(pid: int) -> frozenset[bytes] | None:
    """The process's starting environment's entries (None: gone, or not ours to read)."""
    raw = read_file(f"{PROC}/{pid}/environ")
    return None if raw is None else frozenset(raw.split(b"\0"))


class Seen:
    """One process in a snapshot: its stat line, and its starting environment when asked for.

    The environment is the expensive part (a file read, and a stat for the owner), so a
    snapshot reads only stat lines and a sweep reads the environments of the few processes
    that could be its run's: not zombies, not live runs' sessions, none older than the run.
    """

    __slots__ = ("_environ", "_read", "info")

    def __init__(self, info: ProcInfo) -> None:
        self.info = info
        self._environ: frozenset[bytes] | None = None
        self._read = False

    def environ(self) -> frozenset[bytes] | None:
        """Its starting environment's entries; None for a zombie or a process not ours."""
        if not self._read:
            self._read = True
            if not self.info.zombie and owned_by_us(self.info.pid):
                self._environ = environ_of(self.info.pid)
        return self._environ


def pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir(PROC) if name.isdigit()]
    except OSError:
        return []


def scan() -> list[Seen]:
    """Every process of the machine, its stat line only (blocking: call it in a thread)."""
    me = os.getpid()
    return [Seen(info) for pid in pids() if pid != me and (info := read_proc(pid)) is not None]


def _children_once(pid: int) -> set[int] | None:
    """The children of every thread of ``pid`` (a child belongs to the thread that forked
    it; orphans to the thread group's leader); None when ``pid`` has no task folder.

    For this process, only the main thread's: the worker starts its children from the
    event loop's thread, and the kernel hands orphans to the thread group's leader, so the
    anyio worker threads (up to 40) have none a sweep or the janitor looks for.
    """
    if pid == os.getpid():
        raw = read_file(f"{PROC}/{pid}/task/{pid}/children")
        return None if raw is None else {int(child) for child in raw.split()}
    try:
        tids = os.listdir(f"{PROC}/{pid}/task")
    except OSError:
        return None
    found: set[int] = set()
    for tid in tids:
        raw = read_file(f"{PROC}/{pid}/task/{tid}/children")
        if raw:
            found.update(int(child) for child in raw.split())
    return found


def children(pid: int) -> set[int]:
    """``pid``'s children, read until two reads agree (see ``_CHILDREN_READS``)."""
    seen = _children_once(pid) or set()
    for _ in range(_CHILDREN_READS - 1):
        again = _children_once(pid) or set()
        if again == seen:
            return seen
        seen |= again  # a pid read once and gone since is dropped when its stat is read
    return seen


@functools.cache
def have_children_files() -> bool:
    """Whether the kernel lists children (``CONFIG_PROC_CHILDREN``, on in common kernels)."""
    me = os.getpid()
    return os.path.exists(f"{PROC}/{me}/task/{me}/children")


def family(prune: Collection[int] = ()) -> list[Seen]:
    """Every descendant of this process, stat lines only (blocking: call it in a thread).

    ``prune``: processes left out with everything below them (live agents: nothing of
    another run is there, see ``reaper.sweep_scan``), so that a sweep among 256 running
    agents reads a handful of processes, not 256 stat lines and their trees.
    A process that re-parents to us while the tree is read (its parent died meanwhile) is
    caught by reading our own children again at the end, until no new one shows.
    """
    me = os.getpid()
    prune = frozenset(prune)
    found: dict[int, Seen] = {}

    def walk(roots: set[int]) -> None:
        frontier = [pid for pid in roots if pid not in found]
        while frontier:
            pid = frontier.pop()
            if pid in found or pid in prune or (info := read_proc(pid)) is None:
                continue
            found[pid] = Seen(info)
            if not info.zombie:  # a zombie's children have moved on
                frontier.extend(children(pid))

    walk(children(me))
    for _ in range(_CHILDREN_READS):
        newcomers = children(me) - found.keys() - prune
        if not newcomers:
            break
        walk(newcomers)
    return list(found.values())
