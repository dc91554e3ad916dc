"""No process outlives its task: the child subreaper, the sweep of a run's leftovers, and
the zombie janitor.

Claude Code's Bash tool starts commands in their own session, so killing the CLI's process
group does not reach them; when their parent dies they re-parent to the nearest *child
subreaper* (else to PID 1). The worker makes itself that subreaper once at start
(``become_subreaper``), so such orphans stay visible as its own children.

Each run puts a unique marker variable in its agent's environment. At the end of every run
``sweep_run`` finds, by that marker (and by the agent's process group and session), every
process the run left behind, wherever it re-parented: SIGTERM, a grace period, SIGKILL, then
reap those that are our children — each by its own pid, never ``waitpid(-1)``, which would
steal the exit statuses asyncio's child watcher waits for. Being the subreaper also bounds
what a sweep reads: every leftover is below the worker, so it reads the worker's own tree
(``procfs.family``), not every process of the machine.

A sandboxed run has one process of its own that is not the agent's: bwrap's init, pid 1 of
the run's PID namespace. bwrap's outer process exits as soon as the agent does, while that
init is still ending (it dies with its parent), so a sweep can find it alive: it gets
``SANDBOX_EXIT_WAIT`` to exit, waited for by a pidfd, before it counts as left behind.

Orphans that exit on their own while the worker is their parent become zombies nobody waits
for; the ``ZombieJanitor`` thread (started by ``become_subreaper``) reaps a child of ours
that has stayed a zombie for several seconds: asyncio and ``subprocess`` reap their own
children within milliseconds of their exit, so such a zombie is an orphan.

Linux only (``/proc``); elsewhere every function here is a harmless no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
from loguru import logger

from taskinfa_worker.agent.procfs import (
    HAVE_PROC,
    ProcInfo,
    Seen,
    children,
    family,
    have_children_files,
    owned_by_us,
    read_proc,
    scan,
    started_from,
)

__all__ = [
    "JANITOR",
    "LIVE_SESSIONS",
    "SCANS",
    "ProcInfo",
    "Seen",
    "SharedScans",
    "ZombieJanitor",
    "become_subreaper",
    "identity",
    "is_subreaper",
    "kill_owned_now",
    "read_proc",
    "run_processes",
    "scan",
    "sweep_leftovers",
    "sweep_run",
]

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37

# Polling period while waiting for signalled processes to die or to become reapable.
_POLL = 0.05
# After SIGKILL a process dies as soon as the kernel schedules it; this only bounds a
# process stuck in uninterruptible sleep (D state), which nothing can kill.
_KILL_WAIT = 5.0
# How long to wait for killed processes' zombies to re-parent to us so we can reap them.
_REAP_WAIT = 2.0
# A marked process may fork while we kill its relatives; scan again this many times.
_SWEEP_ROUNDS = 5
# bwrap's init ends within milliseconds of the agent (it dies with bwrap's outer process,
# which exits when the agent does); one still running after this is stopped and counted.
SANDBOX_EXIT_WAIT = 1.0
# A child of ours that stayed a zombie this long is an orphan: asyncio and subprocess reap
# their own children as soon as they exit (only an event loop blocked this long would
# still owe a wait, and that is a bug of its own).
ZOMBIE_AGE = 3.0
# How often the janitor thread reads the worker's children from /proc.
JANITOR_INTERVAL = 1.0


def become_subreaper() -> bool:
    """Make this process the child subreaper of everything it starts (Linux ``prctl``).

    Call once at start; calling again is harmless. Returns whether it is in effect
    (False on other systems, where orphans go to PID 1 and the marker sweep still kills
    them).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = _libc()
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            error = ctypes.get_errno()
            logger.warning("cannot become child subreaper: {}", os.strerror(error))
            return False
    except (OSError, AttributeError) as exc:
        logger.warning("cannot become child subreaper: {}", exc)
        return False
    # Orphans now come to us: someone has to reap those that exit on their own.
    JANITOR.start()
    return True


@functools.cache
def _libc() -> ctypes.CDLL:
    # Loaded once: every sweep asks whether the worker is (still) the subreaper.
    return ctypes.CDLL(None, use_errno=True)


def is_subreaper() -> bool:
    """Whether the kernel has this process as a child subreaper (False off Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = _libc()
        flag = ctypes.c_int(0)
        if libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    return flag.value != 0


# Sessions of agents that are running now (each agent leads its own session): their
# processes belong to a live run, so a sweep of another run does not read their
# environments. A run's session leaves the set when its sweep starts.
LIVE_SESSIONS: set[int] = set()


def sweep_reads_tree() -> bool:
    """Whether a sweep reads the worker's own tree (see ``sweep_scan``), not the machine."""
    return is_subreaper() and have_children_files()


def sweep_scan() -> list[Seen]:
    """What a run's sweep looks through.

    While the worker is the child subreaper, everything a run leaves behind re-parents to
    it, so its own tree is enough, without live agents and what runs below them (nothing
    of another run is there): a read of a few processes per run instead of every process
    of the machine. Without the subreaper (prctl refused) orphans go to PID 1, and only a
    scan of the whole machine finds them by their marker.
    """
    if sweep_reads_tree():
        return family(prune=frozenset(LIVE_SESSIONS))
    return scan()


class SharedScans:
    """One scan of ``/proc`` serves every sweep that asks while it is waiting for one.

    256 runs ending together used to make 256 scans, each reading every process, in up
    to 40 threads fighting the event loop for the GIL (loop lag p99 ~280 ms). A caller
    never gets a scan that was already under way when it asked (it could predate the fork
    it must see): it waits for the next one, which serves everyone who asked meanwhile.
    So a burst of any size costs at most two scans.
    """

    def __init__(
        self,
        take: Callable[[], list[Seen]] = sweep_scan,
        *,
        in_thread: Callable[[], bool] = lambda: not sweep_reads_tree(),
    ) -> None:
        self._take = take
        self._in_thread = in_thread
        self._loop: object = None
        self._next: _Batch | None = None
        self._scanning = False
        self._scan_done: anyio.Event | None = None

    async def snapshot(self) -> list[Seen]:
        self._follow_loop()
        if self._next is None:
            self._next = _Batch()
        batch = self._next
        while not batch.done.is_set():
            if self._scanning and self._scan_done is not None:
                await self._scan_done.wait()
                continue
            await self._scan_next()
        return batch.result

    def _follow_loop(self) -> None:
        # One instance per process, events per event loop: a new loop (the tests make one
        # per test) starts afresh rather than wait on an event of a loop that is gone.
        loop = anyio.lowlevel.current_token()
        if loop != self._loop:
            self._loop = loop
            self._next, self._scanning, self._scan_done = None, False, None

    async def _scan_next(self) -> None:
        batch, self._next = self._next, None
        assert batch is not None
        self._scanning = True
        self._scan_done = done = anyio.Event()
        try:
            if self._in_thread():
                batch.result = await anyio.to_thread.run_sync(self._take)
            else:
                # The worker's own tree without its live agents: a few reads, cheaper on
                # the loop than a trip to a thread (which costs the GIL handed back and
                # forth for every syscall the thread makes while the loop is busy).
                batch.result = self._take()
        finally:
            self._scanning = False
            batch.done.set()  # on an error: an empty result (the janitor catches up)
            done.set()


class _Batch:
    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: list[Seen] = []


SCANS = SharedScans()


def run_processes(
    snapshot: list[Seen],
    marker_entry: bytes,
    leader: int | None,
    *,
    since: int | None = None,
    skip_sessions: frozenset[int] = frozenset(),
) -> list[ProcInfo]:
    """Live processes of one run: carrying its marker, or in its leader's group or session.

    The leader must already be reaped: its pid is then no one's group or session any more
    unless one of its descendants still holds it. ``since`` (the leader's start, in clock
    ticks) and ``skip_sessions`` (other runs that are still running) rule processes out
    before their environments are read: nothing started before the run is the run's, and a
    live run's session holds only that run's processes.
    """
    ids = set() if leader is None or _reused(leader) else {leader}
    found = []
    for seen in snapshot:
        info = seen.info
        if info.zombie or info.sid in skip_sessions:
            continue
        if since is not None and info.start < since:
            continue
        if info.pgid in ids or info.sid in ids:
            if owned_by_us(info.pid):
                found.append(info)
            continue
        environ = seen.environ()
        if environ is not None and marker_entry in environ:
            found.append(info)
    return found


def _reused(leader: int) -> bool:
    """Whether the (already reaped) leader's pid belongs to a new process, e.g. another
    run's agent: its group and session are then not ours, and only the marker counts."""
    return read_proc(leader) is not None


def zombie_children(snapshot: list[Seen]) -> list[ProcInfo]:
    """Zombie children of ours."""
    me = os.getpid()
    return [seen.info for seen in snapshot if seen.info.zombie and seen.info.ppid == me]


def zombie_children_in(snapshot: list[Seen], ids: set[int]) -> list[int]:
    """Zombie children of ours whose process group or session is one of ``ids``."""
    ids = ids - {os.getpgrp(), os.getsid(0)}  # never our own group or session
    return [info.pid for info in zombie_children(snapshot) if info.pgid in ids or info.sid in ids]


def _our_children() -> list[Seen]:
    """This process's children (the janitor's round: a zombie child of ours is one of
    them), without reading the rest of the machine where the kernel lists children."""
    if not have_children_files():
        return scan()
    return [Seen(info) for pid in children(os.getpid()) if (info := read_proc(pid)) is not None]


def _alive(info: ProcInfo) -> bool:
    now = read_proc(info.pid)
    return now is not None and now.start == info.start and not now.zombie


def _signal(info: ProcInfo, signum: int) -> None:
    # Check identity right before the signal: a pid freed since the scan may be reused.
    if not _alive(info):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(info.pid, signum)


def reap(pid: int) -> bool:
    """Collect the exit status of one exited child of ours; True when it is gone for us."""
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True  # not our child (any more): someone else reaps it
    return done == pid


def _settle(infos: list[ProcInfo]) -> list[ProcInfo]:
    """Reap what can be reaped; return the processes still to wait for.

    A dead process is settled once it has disappeared, or is a zombie whose parent is
    neither us nor one of the processes we wait for (that parent, e.g. PID 1, reaps it).
    A zombie whose parent we are killing too will re-parent to us, so we keep waiting.
    """
    me = os.getpid()
    pending_pids = {info.pid for info in infos}
    pending = []
    for info in infos:
        now = read_proc(info.pid)
        if now is None or now.start != info.start:
            continue
        if not now.zombie:
            pending.append(info)
        elif now.ppid == me:
            if not reap(info.pid):
                pending.append(info)
        elif now.ppid in pending_pids:
            pending.append(info)
    return pending


async def _wait_settled(infos: list[ProcInfo], timeout: float) -> list[ProcInfo]:
    pending = _settle(infos)
    with anyio.move_on_after(timeout):
        while pending:
            await anyio.sleep(_POLL)
            pending = _settle(pending)
    return pending


async def _exit_of(info: ProcInfo) -> None:
    """Return once the process has exited (a zombie, or gone); at once where the kernel
    has no pidfds (Linux < 5.3): it is then not waited for."""
    try:
        pidfd = os.pidfd_open(info.pid)
    except OSError:
        return
    try:
        if _alive(info):  # checked once the pidfd holds the pid: it still names this process
            await anyio.wait_readable(pidfd)
    finally:
        os.close(pidfd)


async def _without_ending_sandbox(found: list[ProcInfo], sandbox: str) -> list[ProcInfo]:
    """``found`` without the processes of the ``sandbox`` executable that exit on their own
    within ``SANDBOX_EXIT_WAIT`` (reaped here when they are our zombies): bwrap's init,
    ending with the agent, is not something the agent left behind."""
    own = [info for info in found if started_from(info.pid, sandbox)]
    if not own:
        return found
    with anyio.move_on_after(SANDBOX_EXIT_WAIT):
        for info in own:
            await _exit_of(info)
    still = {(info.pid, info.start) for info in _settle(own)}
    ended = {(info.pid, info.start) for info in own} - still
    return [info for info in found if (info.pid, info.start) not in ended]


async def sweep_run(
    marker_entry: bytes,
    leader: int | None,
    grace: float,
    *,
    since: int | None = None,
    sandbox: str | None = None,
) -> int:
    """Stop and reap every process one run left behind; returns how many were signalled.

    Call after the run's leader process has exited and been reaped. SIGTERM, ``grace``
    seconds, SIGKILL; repeated while marked processes keep appearing (a dying parent may
    have forked). Run it under a shield: it must finish even when the run is cancelled.
    ``since``: the leader's start (``ProcInfo.start``), when known. ``sandbox``: the
    executable the run was sandboxed with (bwrap), whose own processes get a moment to end.
    """
    if leader is not None:
        LIVE_SESSIONS.discard(leader)  # its session's members, if any, are leftovers now

    def find(snapshot: list[Seen]) -> list[ProcInfo]:
        others = frozenset(LIVE_SESSIONS)
        return run_processes(snapshot, marker_entry, leader, since=since, skip_sessions=others)

    return await _sweep(SCANS.snapshot, find, leader, grace, sandbox=sandbox)


async def _sweep(
    take_snapshot: Callable[[], Awaitable[list[Seen]]],
    find: Callable[[list[Seen]], list[ProcInfo]],
    leader: int | None,
    grace: float,
    *,
    sandbox: str | None = None,
) -> int:
    """SIGTERM, grace, SIGKILL and reap what ``find`` finds, until it finds nothing."""
    if not HAVE_PROC:
        return 0
    signalled: dict[tuple[int, int], ProcInfo] = {}
    snapshot = await take_snapshot()
    for _ in range(_SWEEP_ROUNDS):
        found = find(snapshot)
        if sandbox is not None and found:
            found = await _without_ending_sandbox(found, sandbox)
        if not found:
            break
        for info in found:
            signalled[(info.pid, info.start)] = info
            _signal(info, signal.SIGTERM)
        survivors = [info for info in await _wait_settled(found, grace) if _alive(info)]
        for info in survivors:
            _signal(info, signal.SIGKILL)
        stuck = [info for info in await _wait_settled(survivors, _KILL_WAIT) if _alive(info)]
        if stuck:
            logger.warning(
                "processes {} survived SIGKILL (uninterruptible sleep?)", [i.pid for i in stuck]
            )
            break
        snapshot = await take_snapshot()
    unreaped = await _wait_settled(list(signalled.values()), _REAP_WAIT)
    # Members of the run's groups and sessions that died before the scan (SIGTERM to the
    # group, or on their own) and re-parented to us as zombies: reap them now. With nothing
    # found alive, the first scan saw every such zombie: nothing of the run was left to die.
    if signalled:
        snapshot = await take_snapshot()
    ids = {i for info in signalled.values() for i in (info.pid, info.pgid, info.sid)}
    if leader is not None and not _reused(leader):
        ids.add(leader)
    for pid in zombie_children_in(snapshot, ids):
        reap(pid)
    if unreaped:
        logger.warning("leftover processes not reaped yet: {}", [i.pid for i in unreaped])
    if signalled:
        logger.info(
            "stopped {} process(es) left behind by the agent: {}",
            len(signalled),
            sorted(info.pid for info in signalled.values()),
        )
    return len(signalled)


def identity(pid: int) -> str | None:
    """``"<pid> <start>"``: names a process for good (a reused pid has another start)."""
    info = read_proc(pid)
    return None if info is None else f"{pid} {info.start}"


def orphaned_agents(snapshot: list[Seen], owner_var: bytes, bot_name: str) -> list[ProcInfo]:
    """Agent processes of workers named ``bot_name`` that are no longer alive.

    The owner variable holds ``"<bot name> <worker pid> <worker start>"``; a process whose
    worker still runs (another process with the same name, by mistake) is left alone.
    """
    prefix = owner_var + b"="
    found = []
    for seen in snapshot:
        environ = seen.environ()
        if environ is None:
            continue
        value = next((e[len(prefix) :] for e in environ if e.startswith(prefix)), None)
        parts = value.decode(errors="replace").split() if value else []
        if len(parts) != 3 or parts[0] != bot_name:
            continue
        owner = read_proc(int(parts[1])) if parts[1].isdigit() else None
        if owner is not None and str(owner.start) == parts[2] and not owner.zombie:
            continue  # its worker is alive
        found.append(seen.info)
    return found


async def sweep_leftovers(owner_var: bytes, bot_name: str, grace: float) -> int:
    """At start: stop what an earlier life of this worker left running.

    A worker killed with SIGKILL cannot stop its agents, and they run in sessions of their
    own; left alone they would go on working on tasks that recovery hands to a new run.
    Every agent carries its worker's name and identity, so the restarted worker (same
    ``BOT_NAME``) finds them wherever they re-parented.
    """
    if not HAVE_PROC:
        return 0

    async def take_snapshot() -> list[Seen]:
        return await anyio.to_thread.run_sync(scan)

    def find(snapshot: list[Seen]) -> list[ProcInfo]:
        return orphaned_agents(snapshot, owner_var, bot_name)

    return await _sweep(take_snapshot, find, None, grace)


def kill_owned_now(owner_entry: bytes) -> int:
    """SIGKILL every agent process of this worker, at once (the worker exits right after)."""
    if not HAVE_PROC:
        return 0
    found = run_processes(scan(), owner_entry, None)  # live runs included: all must go
    for info in found:
        _signal(info, signal.SIGKILL)
    return len(found)


class ZombieJanitor:
    """Reaps zombie children of ours that nobody else waits for (see the module docstring).

    One per process (``JANITOR``), a daemon thread once started: it must keep working while
    the worker is idle, and it only reads ``/proc`` and calls ``waitpid`` on single pids.
    """

    def __init__(self, age: float = ZOMBIE_AGE, interval: float = JANITOR_INTERVAL) -> None:
        self._age = age
        self._interval = interval
        self._lock = threading.Lock()
        self._first_seen: dict[tuple[int, int], float] = {}
        self._thread: threading.Thread | None = None
        self.reaped = 0

    def start(self) -> None:
        """Start the janitor thread (once; later calls do nothing)."""
        with self._lock:
            if self._thread is not None or not HAVE_PROC:
                return
            self._thread = threading.Thread(
                target=self._loop, name="taskinfa-zombie-janitor", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                self.tend()
            except Exception:
                logger.exception("zombie janitor pass failed")
            time.sleep(self._interval)

    def tend(self) -> list[int]:
        """One pass over /proc; returns the pids reaped."""
        if not HAVE_PROC:
            return []
        with self._lock:
            now = time.monotonic()
            reaped = []
            seen = {}
            for info in zombie_children(_our_children()):
                key = (info.pid, info.start)
                first = self._first_seen.get(key, now)
                if now - first >= self._age and reap(info.pid):
                    reaped.append(info.pid)
                else:
                    seen[key] = first
            self._first_seen = seen
            self.reaped += len(reaped)
        if reaped:
            logger.debug("reaped orphaned zombie(s) {}", reaped)
        return reaped


JANITOR = ZombieJanitor()
