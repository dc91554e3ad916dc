"""The HTTP transport under the board client: how one request reaches the board.

Every request passes the shared ``RateLimiter`` in its lane, is timed out on its own, counted
by endpoint and status, and retried only when repeating it is safe: reads, PATCHes and
heartbeats are retried on connection errors, timeouts and 5xx within a per-lane time
budget; comments, creations and claims never are, because the board may have done them
already. A 429 was not processed by the board, so it is waited out and repeated for every
request. What a route means, and what to do when a server lacks it, is ``api.py``'s job.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final, TypeVar
from urllib.parse import quote

import aiohttp
import backoff
from loguru import logger
from pydantic import BaseModel, SecretStr

from taskinfa_worker import __version__
from taskinfa_worker.client.answer import Answer, excerpt
from taskinfa_worker.client.ratelimit import Lane, PauseCause, RateLimiter, parse_retry_after
from taskinfa_worker.errors import (
    ApiError,
    AuthError,
    RateLimitedError,
    ServerError,
    TransportError,
)
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.redact import Redactor

__all__ = [
    "DEFAULT_RETRY_MAX_TIME",
    "MAX_BACKOFF",
    "MAX_RATE_LIMITED",
    "BoardTransport",
]

DEFAULT_RETRY_MAX_TIME: Final[Mapping[Lane, float]] = {
    # Finishing a task must survive the board being away for minutes.
    Lane.CRITICAL: 600.0,
    Lane.NORMAL: 60.0,
    # Background loops try again next cycle anyway: one attempt.
    Lane.BACKGROUND: 0.0,
}
MAX_BACKOFF: Final = 30.0
# 429s one call waits out before it gives up with RateLimitedError.
MAX_RATE_LIMITED: Final = 5

Model = TypeVar("Model", bound=BaseModel)


# Requests in flight at once; the rest wait for a connection. The budget allows far fewer
# requests a second than this carries even to a distant board, and when 256 slots end at
# once, 256 requests in flight fill each turn of the event loop with their callbacks (its
# lag reached 100 ms); a queue for connections holds them without costing the loop.
MAX_IN_FLIGHT = 16


class BoardTransport:
    """One aiohttp session to the board, shared by every request of the process. Close it.

    Requests name an endpoint *template* (``/tasks/{id}``) and the id apart: metrics and
    logs use the template, never a raw id.
    """

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr,
        *,
        limiter: RateLimiter,
        metrics: Metrics | None = None,
        request_timeout: float = 30.0,
        retry_max_time: Mapping[Lane, float] | None = None,
        backoff_factor: float = 1.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.redact = Redactor([api_key])
        """Masks the API key; every text taken from an answer passes it."""
        self.shown_base = self.redact(self.base_url)
        """The base URL as logs and errors may show it."""
        self.limiter = limiter
        self.metrics = metrics
        if metrics is not None:
            limiter.on_pause = self._count_pause
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._retry_max_time = {**DEFAULT_RETRY_MAX_TIME, **(retry_max_time or {})}
        self._backoff_factor = backoff_factor
        self._retrying = self._retrying_attempts()
        self._request_counters: dict[tuple[str, int], Any] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _count_pause(self, cause: PauseCause, seconds: float) -> None:
        assert self.metrics is not None
        self.metrics.rate_limit_pauses.labels(cause=cause.value).inc()
        self.metrics.rate_limit_pause_seconds.labels(cause=cause.value).inc(seconds)

    async def aclose(self) -> None:
        """Close the HTTP session. Idempotent; the transport cannot be used afterwards."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @property
    def backoff_factor(self) -> float:
        """Scales every retry delay (tests make them short)."""
        return self._backoff_factor

    # --- answers --------------------------------------------------------------------------
    # Decoding lives here because its messages must pass the same redactor as the requests'.
    def error(self, answer: Answer) -> ApiError | AuthError:
        """The worker's error for a non-success answer."""
        return answer.error(self.redact)

    def expect_ok(self, answer: Answer) -> None:
        """Raise the worker's error unless the answer is a success."""
        if not answer.ok:
            raise self.error(answer)

    def decode(self, answer: Answer, model: type[Model], field: str | None = None) -> Model:
        """The body (or its ``field``) as ``model``; MalformedResponseError when it is not."""
        data = (
            answer.json_object(self.redact)
            if field is None
            else answer.json_field(field, self.redact)
        )
        return answer.model(model, data, self.redact)

    # --- requests -------------------------------------------------------------------------
    async def request(
        self,
        method: str,
        template: str,
        ident: str | None = None,
        *,
        lane: Lane,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        retry: bool,
    ) -> Answer:
        """Send one request to ``template`` (with ``{id}`` = ``ident``).

        5xx raise ServerError and 401/403 AuthError; other statuses come back as answers.
        With ``retry`` (safe requests only) transport errors, 5xx and lasting 429s are
        retried with exponential backoff and jitter for the lane's time budget. Writes whose
        first attempt may have landed are made certain by ``certain.py`` instead.
        """
        # Ids come from the board; quoting keeps one from reaching another route ("../").
        path = template if ident is None else template.replace("{id}", quote(ident, safe=""))
        retrying = self._retrying.get(lane) if retry else None
        if retrying is None:
            return await self._attempt(method, template, path, lane, json, params)
        answer: Answer = await retrying(method, template, path, lane, json, params)
        return answer

    def _retrying_attempts(self) -> dict[Lane, Any]:
        """``_attempt`` under backoff, one wrapper per lane with a retry budget.

        Built once: a backoff decorator made per request cost more CPU than the request's
        own bookkeeping (each call of a wrapper still starts its own budget and delays).
        """
        wrappers: dict[Lane, Any] = {}
        for lane, budget in self._retry_max_time.items():
            if budget <= 0:
                continue
            wrappers[lane] = backoff.on_exception(
                backoff.expo,
                # RateLimitedError: a 429 storm that outlasted the waits in _send; a task's
                # final update keeps trying for the rest of its budget.
                (TransportError, ServerError, RateLimitedError),
                max_time=budget,
                jitter=backoff.full_jitter,
                logger=None,
                on_backoff=self._log_retry,
                factor=self._backoff_factor,
                max_value=MAX_BACKOFF,
            )(self._attempt)
        return wrappers

    async def _attempt(
        self,
        method: str,
        template: str,
        path: str,
        lane: Lane,
        json: Any,
        params: Mapping[str, str] | None,
    ) -> Answer:
        answer = await self._send(method, template, path, lane, json, params)
        if answer.status >= 500:
            raise self.error(answer)
        return answer

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("BoardClient is closed")
        if self._session is None:
            # Made on first use, inside the running loop, so that the client itself can be
            # built from synchronous code (the CLI).
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=MAX_IN_FLIGHT),
                headers={
                    "Authorization": f"Bearer {self._api_key.get_secret_value()}",
                    "Accept": "application/json",
                    "User-Agent": f"taskinfa-worker/{__version__}",
                },
                timeout=self._timeout,
            )
        return self._session

    @staticmethod
    def _log_retry(details: Mapping[str, Any]) -> None:
        logger.warning(
            "Board request failed ({}); retry {} in {:.1f} s",
            details.get("exception"),
            details.get("tries"),
            details.get("wait", 0.0),
        )

    async def _send(
        self,
        method: str,
        template: str,
        path: str,
        lane: Lane,
        json: Any,
        params: Mapping[str, str] | None,
    ) -> Answer:
        """One request through the rate limiter, with 429s waited out and repeated."""
        session = self._http()
        url = self.base_url + path
        shown_url = self.shown_base + path
        rate_limited = 0
        while True:
            waited = await self.limiter.acquire(lane)
            if waited > 0 and self.metrics is not None:
                self.metrics.rate_limit_wait_seconds.inc(waited)
            started = time.perf_counter()
            try:
                async with session.request(method, url, json=json, params=params) as response:
                    body = await response.read()
                    # The answer's own read-only headers: they outlive the released
                    # connection, no copy needed.
                    answer = Answer(method, shown_url, response.status, body, response.headers)
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._record(method, template, 0, started)
                reason = self.redact(excerpt(str(exc))) or type(exc).__name__
                raise TransportError(f"{method} {shown_url}: no answer ({reason})") from exc
            self._record(method, template, answer.status, started)
            self.limiter.observe(answer.headers, refused=answer.status == 429)
            if answer.status != 429:
                if answer.status in (401, 403):
                    raise self.error(answer)
                return answer
            rate_limited += 1
            if self.metrics is not None:
                self.metrics.api_rate_limited.inc()
            self.limiter.on_rate_limited(self._retry_after(answer))
            if rate_limited > MAX_RATE_LIMITED:
                error = self.error(answer)
                assert isinstance(error, RateLimitedError)
                raise error

    def _retry_after(self, answer: Answer) -> float | None:
        seconds = parse_retry_after(answer.headers.get("Retry-After"), time.time())
        if seconds is not None:
            return seconds
        try:
            hint = answer.json_object(self.redact).get("retryAfter")
        except ApiError:
            return None
        if isinstance(hint, int | float) and not isinstance(hint, bool):
            return parse_retry_after(str(hint), time.time())
        return None

    def _record(self, method: str, template: str, status: int, started: float) -> None:
        elapsed_ms = (time.perf_counter() - started) * 1000
        if self.metrics is not None:
            # The labelled child, found once per endpoint and status (labels() takes a lock
            # and builds its key on every call).
            counter = self._request_counters.get((template, status))
            if counter is None:
                counter = self.metrics.api_requests.labels(endpoint=template, status=str(status))
                self._request_counters[(template, status)] = counter
            counter.inc()
        logger.debug("board {} {} -> {} in {:.0f} ms", method, template, status, elapsed_ms)
