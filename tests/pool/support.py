"""Helpers for pool tests: worker settings, in-process pools, worker processes, the ledger."""

from __future__ import annotations

import inspect
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import anyio
from aiohttp import web

from taskinfa_worker.app import build_pool
from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.pool.worker_pool import WorkerPool
from taskinfa_worker.redact import Redactor
from taskinfa_worker.settings import Settings

LEDGER_AGENT = Path(__file__).parents[1] / "fakes" / "ledger_agent.py"
AGENT_COMMAND = (
    f"{shlex.quote(sys.executable)} {shlex.quote(str(LEDGER_AGENT))} "
    "--task {task_id} --workspace {workspace} --prompt {prompt}"
)


@dataclass
class Scene:
    """The files a pool test shares with its fake agents."""

    root: Path

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.txt"

    @property
    def gate(self) -> Path:
        return self.root / "gate"

    def open_gate(self) -> None:
        self.gate.touch()

    def agent_env(self) -> dict[str, str]:
        return {"FAKE_LEDGER": str(self.ledger), "FAKE_GATE": str(self.gate)}

    def entries(self) -> list[list[str]]:
        if not self.ledger.exists():
            return []
        return [line.split() for line in self.ledger.read_text().splitlines() if line]

    def starts(self, task_id: str | None = None) -> list[str]:
        return [e[1] for e in self.entries() if e[0] == "start" and task_id in (None, e[1])]

    def assert_no_duplicates(self) -> None:
        """No task ran twice at once, and none started more often than it stopped."""
        open_runs: dict[str, int] = defaultdict(int)
        entries = self.entries()
        ledger = "\n".join(" ".join(entry) for entry in entries)
        for entry in entries:
            kind, task = entry[0], entry[1]
            if kind == "start":
                assert open_runs[task] == 0, f"{task} started while already running:\n{ledger}"
                open_runs[task] += 1
            else:
                open_runs[task] -= 1
        assert all(count == 0 for count in open_runs.values()), f"{dict(open_runs)}\n{ledger}"


def worker_settings(url: str, key: str, scene: Scene, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "taskinfa_api_url": url,
        "taskinfa_api_key": key,
        "bot_name": "tester",
        "agent": "command",
        "agent_command": AGENT_COMMAND,
        "agent_env_allow": ["FAKE_LEDGER", "FAKE_GATE"],
        "workspace_dir": scene.root / "workspace",
        "log_dir": scene.root / "logs",
        "poll_interval": 0.05,
        "max_poll_interval": 0.2,
        "cancel_check_interval": 0.2,
        "kill_grace": 2.0,
        "rate_limit": 6000,
        "progress_interval": 0.5,
        # Retries at once: tests of spacing set their own wait.
        "retry_backoff": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@asynccontextmanager
async def running_pool(settings: Settings) -> AsyncIterator[tuple[WorkerPool, BoardClient]]:
    """A pool running in this event loop; on exit it is drained and awaited."""
    redactor = Redactor([settings.taskinfa_api_key])
    metrics = Metrics()
    async with BoardClient.from_settings(settings, metrics) as client:
        pool = build_pool(settings, client, metrics, redactor, handle_signals=False)
        async with anyio.create_task_group() as group:
            group.start_soon(pool.run)
            try:
                yield pool, client
            finally:
                pool.stop_now("the test ended.")


async def wait_for(
    condition: Callable[[], Awaitable[object] | object], timeout: float = 60.0, what: str = ""
) -> None:
    """Wait until a condition holds (checked every 50 ms), or fail with what we waited for."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await anyio.sleep(0.05)


class WorkerProcess:
    """`taskinfa-worker run` in a child process, as an operator would start it."""

    def __init__(self, settings_env: dict[str, str], args: list[str], log: Path) -> None:
        env = {**os.environ, **settings_env}
        self.log = log
        self._log_file = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "taskinfa_worker", "run", *args],
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    async def wait(self, timeout: float = 60.0) -> int:
        with anyio.fail_after(timeout):
            while self.proc.poll() is None:
                await anyio.sleep(0.05)
        self._log_file.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log_file.close()


def process_env(url: str, key: str, scene: Scene, **extra: str) -> dict[str, str]:
    env = {
        "TASKINFA_API_URL": url,
        "TASKINFA_API_KEY": key,
        "AGENT": "command",
        "AGENT_COMMAND": AGENT_COMMAND,
        "AGENT_ENV_ALLOW": "FAKE_LEDGER,FAKE_GATE",
        "WORKSPACE_DIR": str(scene.root / "workspace"),
        "LOG_DIR": str(scene.root / "logs"),
        "POLL_INTERVAL": "0.05",
        "MAX_POLL_INTERVAL": "0.2",
        "CANCEL_CHECK_INTERVAL": "0.2",
        "KILL_GRACE": "2",
        "RATE_LIMIT": "6000",
        "LOG_FORMAT": "text",
        "RETRY_BACKOFF": "0",
        **scene.agent_env(),
    }
    env.update(extra)
    return env


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def unanswered_requests(metrics: Metrics) -> float:
    """Board requests that got no HTTP answer (status label 0)."""
    total = 0.0
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "taskinfa_api_requests_total" and sample.labels.get("status") == "0":
                total += sample.value
    return total


# --- proxies between the pool and the board, for faults aimed by a test ---------------------
async def forward(upstream: str, request: web.Request, body: bytes) -> tuple[int, bytes, str]:
    """Send a request on to the board: its status, body and content type."""
    headers = {k: v for k, v in request.headers.items() if k in ("Authorization", "Content-Type")}
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            request.method, upstream + request.path_qs, data=body or None, headers=headers
        ) as answer,
    ):
        content_type = answer.headers.get("Content-Type", "application/json")
        return answer.status, await answer.read(), content_type


@asynccontextmanager
async def serving(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """Serve a proxy on 127.0.0.1; yields its API base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/api"
    finally:
        await runner.cleanup()


@dataclass(frozen=True)
class Seen:
    """One request the pool sent, as a recording proxy passed it on."""

    method: str
    path: str  # below /api, without the query
    query: dict[str, str]
    body: Any  # the JSON body, or None

    @property
    def endpoint(self) -> str:
        return f"{self.method} {self.path}"


@asynccontextmanager
async def recording(board_url: str) -> AsyncIterator[tuple[str, list[Seen]]]:
    """A proxy that passes every request on to the board and keeps it, in the order sent;
    yields its API base URL and the list it fills."""
    upstream = board_url.removesuffix("/api")
    seen: list[Seen] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen.append(
            Seen(
                request.method,
                request.path.removeprefix("/api"),
                dict(request.query),
                await request.json() if body else None,
            )
        )
        status, payload, content_type = await forward(upstream, request, body)
        return web.Response(status=status, body=payload, headers={"Content-Type": content_type})

    async with serving(handle) as url:
        yield url, seen
