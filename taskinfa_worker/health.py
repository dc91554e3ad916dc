"""The health port: ``/healthz``, ``/readyz``, ``/metrics`` and ``/status``.

- ``/healthz`` 200 ``ok`` whenever the event loop answers: liveness. It stays 200 while the
  pool drains, so a long drain is never mistaken for a hang.
- ``/readyz`` 200 only when the board has accepted our key (``PoolState.board_ready``), the
  pool is not draining and no fault of the worker paused its claims (``worker_fault``);
  otherwise 503 with the reason. Invalid settings never get
  this far: the process exits before the server starts.
- ``/metrics`` the Prometheus text exposition of ``Metrics``.
- ``/status`` the pool's slots as JSON (``status_file.snapshot``), read by
  ``taskinfa-worker status``. Task titles can be private (a customer's name, an incident),
  and the port listens on every address so the kubelet can probe it: titles are shown
  only as ``settings.status_titles`` allows, by default to loopback peers alone, which is
  where ``taskinfa-worker status`` asks from (``kubectl exec``, ``docker compose exec``).

Served on ``settings.health_host:settings.health_port`` by the process's own event loop;
off when ``health_port`` is unset. Port 0 binds a free port, reported by ``HealthServer.port``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from aiohttp import web

from taskinfa_worker.errors import PreflightError
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.pool.state import PoolState
from taskinfa_worker.settings import Settings
from taskinfa_worker.status_file import snapshot

__all__ = ["HealthServer", "port_problem", "readiness", "serve_health", "shows_titles"]

TitlePolicy = Literal["local", "all", "none"]

# Probes hold no long connections; a short shutdown keeps a keep-alive client from
# delaying the process's exit.
SHUTDOWN_TIMEOUT = 2.0
# What Metrics.render() (prometheus_client.generate_latest) produces. Not CONTENT_TYPE_LATEST:
# newer prometheus_client releases point that at format 1.0.0 while generate_latest still
# writes 0.0.4, which is also what every Prometheus version reads.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def readiness(state: PoolState) -> str | None:
    """Why the worker is not ready, or None when it is."""
    if state.worker_fault is not None:
        return f"worker fault, not taking new tasks: {state.worker_fault}"
    if state.draining:
        return "draining: not taking new tasks"
    if not state.board_ready:
        return "board not ready: no request has been accepted with our key yet"
    return None


def shows_titles(policy: TitlePolicy, remote: str | None) -> bool:
    """Whether a ``/status`` request from peer address ``remote`` may see task titles."""
    if policy != "local":
        return policy == "all"
    if remote is None:
        return False
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:  # not an IP peer: nothing says it is local
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket reports 127.0.0.1 as ::ffff:...
    return address.is_loopback


class HealthServer:
    """An aiohttp server for the four routes; ``start()`` then ``stop()``."""

    def __init__(
        self,
        state: PoolState,
        metrics: Metrics,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        status_titles: TitlePolicy = "local",
    ) -> None:
        self.state = state
        self.status_titles: TitlePolicy = status_titles
        self.metrics = metrics
        self.host = host
        self.port = port  # the bound port once started (useful with port 0)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host  # noqa: S104
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/status", self._status)
        return app

    async def start(self) -> None:
        # No access log: probes every few seconds would bury the worker's own lines.
        runner = web.AppRunner(
            self.app(), access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        reason = readiness(self.state)
        if reason is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {reason}\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        # Gauges read from the state at scrape time, so they are right even between events.
        self.metrics.slots_total.set(len(self.state.slots))
        self.metrics.slots_busy.set(self.state.busy)
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )

    async def _status(self, request: web.Request) -> web.Response:
        data = snapshot(self.state)
        if not shows_titles(self.status_titles, request.remote):
            for slot in data["slots"]:
                slot["task_title"] = None
        return web.json_response(data)


def port_unusable(settings: Settings, exc: OSError) -> PreflightError:
    """The one sentence for a health port that cannot be served (an operator's choice)."""
    # The errno's own words: socket.create_server appends the address to strerror.
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return PreflightError(
        f"HEALTH_PORT {settings.health_port} on {settings.health_host} cannot be used "
        f"({reason}); pick a free port or unset HEALTH_PORT."
    )


def port_problem(settings: Settings) -> PreflightError | None:
    """Why the health port could not be served now, or None (free, or the port is off).

    Bound and let go at once, the way the server binds it (``SO_REUSEADDR``, so a port
    left in TIME_WAIT by a previous run counts as free, as it is for the server)."""
    if settings.health_port is None:
        return None
    try:
        with socket.create_server((settings.health_host, settings.health_port)):
            pass
    except OSError as exc:
        return port_unusable(settings, exc)
    return None


@asynccontextmanager
async def serve_health(
    settings: Settings, state: PoolState, metrics: Metrics
) -> AsyncIterator[HealthServer | None]:
    """Serve the health port for the duration of the block.

    Yields the running ``HealthServer``, or None when ``settings.health_port`` is unset
    (the port is off). A port that cannot be bound raises ``PreflightError`` naming
    ``HEALTH_PORT`` at entry (``run`` checks it before, with ``port_problem``; this is for a
    port taken in between).
    """
    if settings.health_port is None:
        yield None
        return
    server = HealthServer(
        state,
        metrics,
        host=settings.health_host,
        port=settings.health_port,
        status_titles=settings.status_titles,
    )
    try:
        await server.start()
    except OSError as exc:
        raise port_unusable(settings, exc) from None
    try:
        yield server
    finally:
        await server.stop()
