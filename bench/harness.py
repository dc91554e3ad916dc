"""What every benchmark part shares: a recording local board, worker processes, measurements.

``BenchBoard`` is the local board (``taskinfa_worker.board``) served from this process with
one extra outermost aiohttp middleware that records every request: when, which route, the
status, the handler's wall and CPU time, and for claims and PATCHes the task and the slot.
Counting at the board is the honest count for several worker processes, and the handler
time is the board's own cost. Tasks are created straight in the store, so setting up a
benchmark costs the measured board no request.

``WorkerProcess`` is ``python -m taskinfa_worker run`` in a child process, exactly as an
operator starts it; memory and CPU are read from its process tree with psutil.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psutil
from aiohttp import web
from aiohttp.typedefs import Handler

from taskinfa_worker.board import BoardStore, options_for
from taskinfa_worker.board.routes import create_app

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PYTHON = sys.executable


def interrupt_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so a part stopped by ``bench`` kills its workers first."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def progress(text: str) -> None:
    """One progress line on stderr (the tables go to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- the recording board ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Hit:
    """One request as the board saw it."""

    start: float  # epoch seconds
    end: float
    method: str
    route: str  # the route template, e.g. /api/tasks/{task_id}/claim
    status: int
    wall: float  # seconds inside the board (auth, rate limit, handler)
    cpu: float  # CPU seconds of this thread meanwhile
    task_id: str | None = None
    who: str | None = None  # the task's assignee after a claim or PATCH; a heartbeat's name
    task_status: str | None = None  # the task's status after a claim or PATCH

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.route.removeprefix('/api')}"


def _answer_field(response: web.StreamResponse, name: str) -> dict[str, Any]:
    body = getattr(response, "body", None)
    if not isinstance(body, bytes | bytearray):
        return {}
    try:
        value = json.loads(body).get(name)
    except (ValueError, AttributeError):
        return {}
    return value if isinstance(value, dict) else {}


def recording_middleware(hits: list[Hit]) -> Any:
    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        start, wall0, cpu0 = time.time(), time.perf_counter(), time.thread_time()
        response = await handler(request)
        wall, cpu = time.perf_counter() - wall0, time.thread_time() - cpu0
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        task_id = request.match_info.get("task_id")
        who = state = None
        if response.status == 200 and (route.endswith("/claim") or request.method == "PATCH"):
            task = _answer_field(response, "task")
            who, state = task.get("assigned_to"), task.get("status")
        elif response.status == 200 and route.endswith("/heartbeat"):
            who = _answer_field(response, "worker").get("name")
        hits.append(
            Hit(
                start,
                time.time(),
                request.method,
                route,
                response.status,
                wall,
                cpu,
                task_id,
                who,
                state,
            )
        )
        return response

    return record


@dataclass
class BenchBoard:
    """A local board in this event loop that records every request it answers."""

    url: str
    api_key: str
    store: BoardStore
    runner: web.AppRunner
    hits: list[Hit] = field(default_factory=list)

    @classmethod
    async def start(cls, folder: Path, *, rate_limit: int = 0, profile: str = "full") -> BenchBoard:
        """A board of ``profile`` (``full``, or the real releases ``v1``, ``v2``), limited to
        ``rate_limit`` requests a minute (0: no limit, whatever the profile's)."""
        folder.mkdir(parents=True, exist_ok=True)
        store = BoardStore(folder / "board.db")
        key = f"tk_bench_{secrets.token_hex(12)}"
        store.add_api_key(key)
        hits: list[Hit] = []
        app = create_app(store, options_for(profile, rate_limit=rate_limit))
        # Outermost: the recorded time includes authentication and the rate limit.
        app.middlewares.insert(0, recording_middleware(hits))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        return cls(f"http://127.0.0.1:{port}/api", key, store, runner, hits)

    async def aclose(self) -> None:
        await self.runner.cleanup()
        self.store.close()

    def add_tasks(self, count: int, title: str = "bench task", **fields: Any) -> list[str]:
        """Create ``todo`` tasks in the store (no HTTP: costs the board's window nothing)."""
        return [
            self.store.create_task(f"{title} {i}", "default", status="todo", **fields)["id"]
            for i in range(count)
        ]

    def statuses(self) -> Counter[str]:
        tasks, _ = self.store.list_tasks(limit=100_000)
        return Counter(task["status"] for task in tasks)

    def count(self, status: str) -> int:
        return self.store.list_tasks(status=status, limit=1)[1]

    def between(self, since: float, until: float = float("inf")) -> list[Hit]:
        return [hit for hit in self.hits if since <= hit.start < until]

    def claims(self) -> dict[str, Hit]:
        """The first successful claim of each task: a claim route's, or a PATCH to
        ``in_progress`` on the profiles without one."""
        found: dict[str, Hit] = {}
        for hit in self.hits:
            claimed = hit.route.endswith("/claim") or hit.task_status == "in_progress"
            if claimed and hit.status == 200 and hit.task_id:
                found.setdefault(hit.task_id, hit)
        return found


def looks_for_work(hit: Hit) -> bool:
    """A worker asking the board for work: its todo list read, or ``/tasks/next``."""
    return hit.endpoint in ("GET /tasks", "GET /tasks/next")


def per_endpoint(hits: Iterable[Hit]) -> dict[str, int]:
    return dict(Counter(hit.endpoint for hit in hits).most_common())


def max_in_window(hits: Sequence[Hit], window: float = 60.0) -> int:
    """The most requests in any ``window`` seconds (the board's sliding window)."""
    times = sorted(hit.start for hit in hits)
    best, first = 0, 0
    for last, moment in enumerate(times):
        while times[first] <= moment - window:
            first += 1
        best = max(best, last - first + 1)
    return best


# --- worker processes ----------------------------------------------------------------------
def worker_env(board: BenchBoard, root: Path, bot_name: str, **settings: Any) -> dict[str, str]:
    """The environment of one worker process: the board, a private folder, given settings."""
    env = {
        "TASKINFA_API_URL": board.url,
        "TASKINFA_API_KEY": board.api_key,
        "BOT_NAME": bot_name,
        "AGENT": "command",
        "WORKSPACE_DIR": str(root / "workspace"),
        "LOG_DIR": str(root / "logs"),
        "LOG_FORMAT": "json",
        # The benchmarks' agents talk to the benchmark through files outside their trees
        # (the scale gate, the chaos ledger), and their pids are read from outside: they
        # run unsandboxed, and bench.sandbox measures what the sandbox costs on its own.
        "SANDBOX": "off",
    }
    env.update({name.upper(): str(value) for name, value in settings.items()})
    return env


class WorkerProcess:
    """``python -m taskinfa_worker run`` in a child process (its output goes to a file)."""

    def __init__(
        self, env: dict[str, str], root: Path, command: Sequence[str] | None = None
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.log = root / "worker.log"
        self._log_file = self.log.open("ab")
        # The worker runs in its own folder, so no .env of the repository applies.
        base = {k: v for k, v in os.environ.items() if not k.startswith(("TASKINFA_", "BOT_"))}
        self.proc = subprocess.Popen(
            list(command or [PYTHON, "-m", "taskinfa_worker", "run"]),
            env={**base, **env, "PYTHONPATH": str(ROOT)},
            cwd=root,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.ps = psutil.Process(self.proc.pid)
        self.started = time.time()
        self._known: dict[int, psutil.Process] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        if self.proc.poll() is None:
            return True
        self._log_file.close()  # idempotent: the process that wrote it is gone
        return False

    def kill_worker_only(self) -> None:
        """SIGKILL the worker process alone (its agents, in their own sessions, live on)."""
        self.proc.kill()
        self.proc.wait()
        self._log_file.close()

    def tree(self) -> list[psutil.Process]:
        """The worker and every live descendant (agents run in their own sessions)."""
        if not self.alive():
            return []
        try:
            procs = [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
        for proc in procs[1:]:
            self._known.setdefault(proc.pid, proc)
        return procs

    def memory(self) -> tuple[float, float]:
        """(RSS of the worker, RSS of its descendants), in MiB."""
        own = children = 0
        for proc in self.tree():
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            if proc.pid == self.pid:
                own = rss
            else:
                children += rss
        return own / 2**20, children / 2**20

    def cpu_seconds(self) -> float:
        """User + system CPU of the worker process itself (not its agents)."""
        times = self.ps.cpu_times()
        return times.user + times.system

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.alive():
            self.proc.send_signal(signum)

    async def wait(self, timeout: float = 60.0) -> int:
        with anyio.fail_after(timeout):
            while self.alive():
                await anyio.sleep(0.05)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the worker and every agent group it started (benchmark teardown)."""
        self.tree()
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        for proc in self._known.values():
            kill_tree_of(proc)
        self._log_file.close()

    async def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (drain) and wait; kill whatever is left after ``timeout``."""
        self.signal(signal.SIGTERM)
        try:
            return await self.wait(timeout)
        except TimeoutError:
            return -1
        finally:
            self.kill()


def kill_tree_of(proc: psutil.Process) -> None:
    """SIGKILL a process we started, and its process group when it leads one.

    psutil's ``is_running`` compares the start time too, so a recycled pid is never hit.
    """
    with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
        if not proc.is_running():
            return
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.kill()


async def wait_for(
    condition: Callable[[], Awaitable[object] | object],
    timeout: float,
    what: str,
    every: float = 0.05,
) -> float:
    """Wait for a condition; returns the epoch time it held. Raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return time.time()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        await anyio.sleep(every)


class MemorySampler:
    """Samples the summed RSS of some worker trees every ``every`` seconds."""

    def __init__(self, workers: Sequence[WorkerProcess], every: float = 0.25) -> None:
        self._workers = workers
        self._every = every
        self.samples: list[tuple[float, float, float]] = []  # (time, workers MiB, agents MiB)

    def sample(self) -> tuple[float, float]:
        own = agents = 0.0
        for worker in self._workers:
            w, a = worker.memory()
            own += w
            agents += a
        self.samples.append((time.time(), own, agents))
        return own, agents

    async def run(self) -> None:
        while True:
            # psutil reads /proc synchronously; 32 trees take a few milliseconds.
            self.sample()
            await anyio.sleep(self._every)

    def peak(self) -> tuple[float, float, float]:
        """(workers, agents, total) at the sample with the largest total."""
        if not self.samples:
            return 0.0, 0.0, 0.0
        _, own, agents = max(self.samples, key=lambda s: s[1] + s[2])
        return own, agents, own + agents


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (share in 0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": statistics.median(values),
        "p90": percentile(values, 0.9),
        "p99": percentile(values, 0.99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, sort_keys=True))
    return path


def read_result(name: str) -> dict[str, Any] | None:
    path = OUT / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data
