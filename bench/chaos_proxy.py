"""A fault-injecting HTTP proxy between the workers and the board (127.0.0.1, aiohttp).

Each request draws, from one seeded RNG, at most one fault and independently an added
latency:

    error_before   5xx (500/502/503/504, HTML or JSON) without reaching the board
    error_after    the board did the work, the worker gets a 502 instead of its answer
    rate_limit     429 with Retry-After (1–2 s), without reaching the board
    drop_before    the connection is cut before the board sees the request
    drop_after     the board did the work, the connection is cut before the answer
    garbled_after  the board did the work, the worker gets a 200 whose body is not JSON
    latency        0..max_latency seconds before forwarding

Tests aim faults instead of drawing them: ``aim(method, path, body)`` names the fault for
one request (each aimed fault is used once, then the request passes).

The ``_after`` kinds are the nasty ones: a claim, comment or PATCH that happened although
the worker could not tell. ``counts`` says how many of each were injected.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields

import aiohttp
from aiohttp import web

FORWARDED_HEADERS = ("Authorization", "Content-Type", "Accept", "User-Agent")
RETURNED_HEADERS = (
    "Content-Type",
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "WWW-Authenticate",
    "Allow",
)


@dataclass(frozen=True)
class Faults:
    """Probabilities per request (the first five are exclusive; latency is independent)."""

    error_before: float = 0.03
    error_after: float = 0.03
    rate_limit: float = 0.03
    drop_before: float = 0.02
    drop_after: float = 0.02
    garbled_after: float = 0.01
    latency: float = 0.3
    max_latency: float = 0.2

    def exclusive(self) -> list[tuple[str, float]]:
        return [
            (f.name, getattr(self, f.name))
            for f in fields(self)
            if f.name not in ("latency", "max_latency")
        ]


class _Dropped(Exception):
    """Raised inside the handler after the transport was cut."""


Aim = Callable[[str, str, bytes], str | None]
NO_FAULTS = Faults(**{f.name: 0.0 for f in fields(Faults)})


class FaultProxy:
    """Serves on 127.0.0.1 and forwards ``/api/...`` to ``upstream`` (a URL ending in /api)."""

    def __init__(
        self, upstream: str, faults: Faults = NO_FAULTS, seed: int = 0, aim: Aim | None = None
    ) -> None:
        self._upstream = upstream.removesuffix("/api")
        self.faults = faults
        self._rng = random.Random(seed)  # faults, not secrets
        self.counts: Counter[str] = Counter()
        self.clients_gone = 0  # requests whose worker died before the board answered
        self.enabled = True
        self._aim = aim
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/api"
        return self.url

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _draw(self) -> tuple[str | None, float]:
        if not self.enabled:
            return None, 0.0
        f = self.faults
        delay = self._rng.uniform(0, f.max_latency) if self._rng.random() < f.latency else 0.0
        roll = self._rng.random()
        for kind, share in f.exclusive():
            if roll < share:
                return kind, delay
            roll -= share
        return None, delay

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            transport.abort()  # no answer at all: the client sees the connection reset
        raise _Dropped

    def _error(self) -> web.Response:
        status = self._rng.choice((500, 502, 503, 504))
        if self._rng.random() < 0.5:
            return web.Response(
                status=status,
                text=f"<html><body><h1>{status}</h1>proxy error</body></html>",
                content_type="text/html",
            )
        body = {"error": "Upstream failure", "category": "internal"}
        return web.json_response(body, status=status)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        kind, delay = self._draw()
        if self._aim is not None:
            kind = self._aim(request.method, request.path, await request.read())
        if kind is not None:
            self.counts[kind] += 1
        if delay:
            self.counts["latency"] += 1
            await asyncio.sleep(delay)
        try:
            if kind == "rate_limit":
                wait = self._rng.choice((1, 2))
                return web.json_response(
                    {"error": "Too many requests", "retryAfter": wait},
                    status=429,
                    headers={"Retry-After": str(wait)},
                )
            if kind == "error_before":
                return self._error()
            if kind == "drop_before":
                return self._drop(request)
            try:
                answer = await self._forward(request)
            except (ConnectionResetError, aiohttp.ClientError):
                # The worker went away mid-request (SIGKILL): nobody reads this answer.
                self.clients_gone += 1
                return web.Response(status=502)
            if kind == "error_after":
                return self._error()
            if kind == "drop_after":
                return self._drop(request)
            if kind == "garbled_after" and 200 <= answer.status < 300:
                return web.Response(status=200, text="<html>OK</html>", content_type="text/html")
            return answer
        except _Dropped:
            # aiohttp must not try to answer on the cut connection.
            raise asyncio.CancelledError from None

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k in FORWARDED_HEADERS if (v := request.headers.get(k)) is not None}
        async with self._session.request(
            request.method,
            self._upstream + request.path_qs,
            data=body or None,
            headers=headers,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            back = {k: v for k in RETURNED_HEADERS if (v := upstream.headers.get(k)) is not None}
        content_type = back.pop("Content-Type", None)
        response = web.Response(status=upstream.status, body=payload, headers=back)
        if content_type:
            response.headers["Content-Type"] = content_type
        return response
