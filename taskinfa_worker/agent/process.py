"""Supervising one agent process: start it, read it, bound it, stop it, leave nothing behind.

The agent runs in its own session and process group (``start_new_session``). Its stdout and
stderr are read in chunks and cut into lines of any length; each line goes to a handler
as it arrives. The run ends when the process exits, or is stopped when it

- runs longer than the task timeout (wall clock),
- prints nothing at all for the stall timeout,
- printed its result but does not exit within ``RESULT_GRACE``,
- or when the caller cancels it.

Stopping is SIGTERM to the group, ``kill_grace`` seconds, SIGKILL, and the process is always
reaped, under a shield when cancelled (trio's ``_subprocess.py`` and anyio's
``Process.aclose`` do the same). Afterwards ``sweep_run`` stops whatever the run left behind
outside the group (see ``reaper``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import anyio
import anyio.abc
from loguru import logger

from taskinfa_worker.agent.reaper import LIVE_SESSIONS, read_proc, sweep_run
from taskinfa_worker.agent.sandbox import SandboxLayout
from taskinfa_worker.agent.stream import LineSplitter
from taskinfa_worker.errors import AgentUnavailableError
from taskinfa_worker.processes import signal_group

# The kernel refuses a single argument over 128 KiB (MAX_ARG_STRLEN); agents get longer
# texts another way. The margin leaves room for the rest of the argument.
MAX_ARG_BYTES = 100 * 1024
# Claude Code exits within about a second of printing its result. One that is still running
# 5 s later waits on something that will not come (a hung MCP server, a child holding a
# pipe); the result already says how the task went, so it is stopped and counted as such.
RESULT_GRACE = 5.0
# Bytes asked of a pipe per read. Lines are reassembled by LineSplitter.
READ_CHUNK = 256 * 1024
# Once the process tree is gone its pipes reach EOF at once; a writer we could not kill
# (another user's process that inherited the pipe) is not waited for longer than this.
DRAIN_TIMEOUT = 2.0
# stderr kept for the failure comment: the end is what explains a failure.
STDERR_TAIL_BYTES = 16 * 1024
# A missing agent executable is the worker's fault: every task would fail the same way.
AGENT_FIX = "install the agent on this worker's PATH, or fix CLAUDE_BIN or AGENT_COMMAND"


# Every agent starts through the exec shim that makes it die with the worker (Linux only).
DEATHSIG_SHIM = Path(__file__).with_name("deathsig.py")


def launch_argv(
    executable: str,
    args: Sequence[str],
    sandbox: SandboxLayout | None = None,
    search_path: str = os.defpath,
) -> list[str]:
    """The argv that starts ``executable`` (found on ``search_path`` beforehand, so that a
    missing one is a clear AgentError), inside the sandbox when there is one, under the
    parent-death shim where the kernel has it (the shim arms the signal, then execs bwrap
    or the agent)."""
    if sandbox is None:
        command = [executable, *args]
    else:
        command = sandbox.command(executable, args, search_path)
    if sys.platform != "linux":
        return command
    # -I: nothing from the environment or the working folder; -S: no site-packages, which
    # the shim does not need (stdlib only) and which halved its start (~50 -> ~28 ms).
    return [sys.executable, "-I", "-S", str(DEATHSIG_SHIM), str(os.getpid()), *command]


class ProcessEnd(Enum):
    """Why the process is no longer running."""

    EXITED = "exited"  # on its own
    TIMEOUT = "timeout"  # task timeout (wall clock)
    STALL = "stall"  # no output for the stall timeout
    AFTER_RESULT = "after_result"  # printed its result, did not exit
    CANCELLED = "cancelled"  # the caller cancelled the run


@dataclass(frozen=True)
class ProcessSpec:
    """What to run. ``argv`` is a list: no shell ever sees it."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    marker: str  # "NAME=value" present in env: identifies the run's processes
    stdin: bytes | None = None  # None: /dev/null (an open, silent stdin makes claude wait)
    sandbox: SandboxLayout | None = None  # None: run as the worker's user sees things


@dataclass(frozen=True)
class Limits:
    timeout: float
    stall_timeout: float
    kill_grace: float
    result_grace: float = RESULT_GRACE


@dataclass(frozen=True)
class ProcessRun:
    """How the run ended."""

    exit_code: int | None  # negative: killed by that signal
    ending: ProcessEnd
    duration: float
    stderr_tail: str
    leftovers: int  # processes the sweep had to stop


LineHandler = Callable[[bytes], None]


class Supervisor:
    """Runs one process to its end under ``Limits``; see the module docstring."""

    def __init__(
        self,
        spec: ProcessSpec,
        limits: Limits,
        *,
        on_stdout: LineHandler,
        on_stderr: LineHandler,
    ) -> None:
        self._spec = spec
        self._limits = limits
        self._on_stdout = on_stdout
        self._on_stderr = on_stderr
        self._stderr_tail: deque[bytes] = deque()
        self._stderr_tail_size = 0
        self._started = 0.0
        self._last_output = 0.0
        self._result_at: float | None = None
        self._returncode: int | None = None
        self._wakeup = anyio.Event()
        self._drained = 0
        self._pipes_closed = anyio.Event()
        self.pid: int | None = None
        self._leader_start: int | None = None

    def result_seen(self) -> None:
        """The agent printed its final result: from now on it gets ``result_grace``."""
        if self._result_at is None:
            self._result_at = time.monotonic()
            self._wakeup.set()

    async def run(self) -> ProcessRun:
        """Start the process and supervise it to the end (raises AgentError if it cannot
        start). Cancelling this stops and reaps the whole tree before re-raising."""
        process = await self._start()
        self.pid = process.pid
        LIVE_SESSIONS.add(process.pid)  # it leads its own session (until its sweep)
        started = read_proc(process.pid)  # nothing older than the agent is of its run
        self._leader_start = None if started is None else started.start
        ending = ProcessEnd.CANCELLED
        swept = False
        leftovers = 0
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._wait_exit, process)
                assert process.stdout is not None
                assert process.stderr is not None
                group.start_soon(self._pump, process.stdout, self._on_stdout)
                group.start_soon(self._pump, process.stderr, self._stderr_line)
                if self._spec.stdin is not None and process.stdin is not None:
                    group.start_soon(self._feed, process.stdin, self._spec.stdin)
                ending = await self._watch()
                with anyio.CancelScope(shield=True):
                    if ending is not ProcessEnd.EXITED:
                        await self._terminate(process, ending)
                    leftovers = await self._sweep(process.pid)
                    swept = True
                with anyio.move_on_after(DRAIN_TIMEOUT):
                    await self._pipes_closed.wait()
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if self._returncode is None:
                    await self._terminate(process, ProcessEnd.CANCELLED)
                if not swept:
                    leftovers = await self._sweep(process.pid)
                await process.aclose()
        return ProcessRun(
            exit_code=self._returncode,
            ending=ending,
            duration=time.monotonic() - self._started,
            stderr_tail=b"".join(self._stderr_tail).decode("utf-8", "replace"),
            leftovers=leftovers,
        )

    async def _start(self) -> anyio.abc.Process:
        spec = self._spec
        self._started = self._last_output = time.monotonic()
        search_path = spec.env.get("PATH", os.defpath)
        executable = shutil.which(spec.argv[0], path=search_path)
        if executable is None:
            raise AgentUnavailableError(
                f"cannot start {spec.argv[0]!r}: not found or not executable", fix=AGENT_FIX
            )
        try:
            return await anyio.open_process(
                launch_argv(executable, spec.argv[1:], spec.sandbox, search_path),
                stdin=subprocess.PIPE if spec.stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=spec.cwd,
                env=dict(spec.env),
                start_new_session=True,
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.filename is not None:  # the executable, or the working directory
                reason += f": {exc.filename}"
            raise AgentUnavailableError(
                f"cannot start {spec.argv[0]!r}: {reason}", fix=AGENT_FIX
            ) from exc

    async def _watch(self) -> ProcessEnd:
        """Wait for the process to exit, or for a limit to be reached."""
        limits = self._limits
        deadline = self._started + limits.timeout
        while self._returncode is None:
            now = time.monotonic()
            if now >= deadline:
                return ProcessEnd.TIMEOUT
            if self._result_at is not None and now >= self._result_at + limits.result_grace:
                return ProcessEnd.AFTER_RESULT
            stall_at = self._last_output + limits.stall_timeout
            if now >= stall_at:
                return ProcessEnd.STALL
            wake = min(deadline, stall_at)
            if self._result_at is not None:
                wake = min(wake, self._result_at + limits.result_grace)
            with anyio.move_on_after(wake - now):
                await self._wakeup.wait()
            if self._wakeup.is_set() and self._returncode is None:
                self._wakeup = anyio.Event()
        return ProcessEnd.EXITED

    async def _wait_exit(self, process: anyio.abc.Process) -> None:
        self._returncode = await process.wait()
        self._wakeup.set()

    async def _pump(self, stream: anyio.abc.ByteReceiveStream, handle: LineHandler) -> None:
        splitter = LineSplitter()
        try:
            while True:
                try:
                    chunk = await stream.receive(READ_CHUNK)
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                    break
                self._last_output = time.monotonic()
                for line in splitter.feed(chunk):
                    _safely(handle, line)
            last = splitter.finish()
            if last is not None:
                _safely(handle, last)
        finally:
            self._drained += 1
            if self._drained == 2:
                self._pipes_closed.set()

    async def _feed(self, stream: anyio.abc.ByteSendStream, data: bytes) -> None:
        try:
            await stream.send(data)
            await stream.aclose()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            # The process exited without reading everything; its exit says the rest.
            logger.debug("agent stdin closed early: {}", exc)

    def _stderr_line(self, line: bytes) -> None:
        self._on_stderr(line)
        piece = line[-STDERR_TAIL_BYTES:] + b"\n"
        self._stderr_tail.append(piece)
        self._stderr_tail_size += len(piece)
        while self._stderr_tail_size > STDERR_TAIL_BYTES and len(self._stderr_tail) > 1:
            self._stderr_tail_size -= len(self._stderr_tail.popleft())

    async def _terminate(self, process: anyio.abc.Process, ending: ProcessEnd) -> None:
        """SIGTERM the group, wait ``kill_grace``, SIGKILL; returns once reaped."""
        logger.info(
            "stopping agent pid {} ({}): SIGTERM, SIGKILL after {}s",
            process.pid,
            ending.value,
            self._limits.kill_grace,
        )
        signal_group(process, signal.SIGTERM)
        with anyio.move_on_after(self._limits.kill_grace):
            self._returncode = await process.wait()
            return
        signal_group(process, signal.SIGKILL)
        self._returncode = await process.wait()

    async def _sweep(self, leader: int) -> int:
        try:
            return await sweep_run(
                self._spec.marker.encode(),
                leader,
                self._limits.kill_grace,
                since=self._leader_start,
                sandbox=None if self._spec.sandbox is None else self._spec.sandbox.bwrap,
            )
        except Exception:
            # Never let cleanup hide the run's own result; the janitor catches up later.
            logger.exception("sweeping the agent's leftover processes failed")
            return 0


def _safely(handle: LineHandler, line: bytes) -> None:
    try:
        handle(line)
    except Exception:
        # A bug in reading one line must not leave the agent unsupervised: log it, go on.
        logger.exception("handling a line of agent output failed")


def interrupted(exc: BaseException) -> str:
    """How a run that raised ended, for the transcript: cancelled, or an error."""
    return "cancelled" if isinstance(exc, anyio.get_cancelled_exc_class()) else "error"
