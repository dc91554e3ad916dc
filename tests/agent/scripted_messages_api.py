"""A scripted stand-in for the Anthropic Messages API, so the real Claude Code CLI runs offline.

The test gives a queue of turns (text and tool calls); each main-loop request of the CLI
takes the next one and gets it back as a streamed (SSE) or plain JSON message. Everything is
recorded, so a test can count requests ("no retry storm") and read what the CLI sent.

What Claude Code 2.1.330 sends in ``-p`` mode (watched with the request log below):

- ``POST /v1/messages?beta=true`` once per turn, always ``stream: true``, always with tools,
  ``x-api-key`` set, ``x-stainless-retry-count: 0`` even on retries (the CLI retries by
  itself: a 401, 429, 500 or 529 is sent again ``CLAUDE_CODE_MAX_RETRIES`` times, 10 by
  default, with backoff up to ~35 s between tries).
- ``HEAD /api/hello`` first, a reachability probe, unless
  ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1``. It gets a 200.
- Nothing else: no count_tokens, no /v1/models, no OAuth or profile calls with an API key.

Side requests that are not the agent loop (a newer version might name sessions or detect
topics with a small model) would offer no tools: they get a short generic text and do not
consume the script (``is_side_request``). Non-streaming requests get plain JSON.

Run ``python -m tests.agent.scripted_messages_api [NAME]`` to get a server on a random port that
answers a write-a-file script and prints every request it gets: handy when a new CLI version asks
for something new.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_ids = itertools.count(1)


@dataclass(frozen=True)
class ToolUse:
    """One tool call the scripted model makes, e.g. ``ToolUse("Write", {...})``.

    ``{cwd}`` in a string of ``input`` becomes the CLI's working directory (read from the
    request), so a script can name files in a workspace the test does not know in advance.
    """

    name: str
    input: Mapping[str, Any]


@dataclass(frozen=True)
class Turn:
    """One assistant message: optional text, then tool calls (``stop_reason`` follows)."""

    text: str | None = None
    tool_uses: tuple[ToolUse, ...] = ()
    input_tokens: int = 1200
    output_tokens: int = 40

    @property
    def stop_reason(self) -> str:
        return "tool_use" if self.tool_uses else "end_turn"


@dataclass(frozen=True)
class Failure:
    """An API error answer instead of a message (status and the Anthropic error body)."""

    status: int
    error_type: str
    message: str

    def body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.error_type, "message": self.message}}


AUTH_FAILURE = Failure(401, "authentication_error", "invalid x-api-key")
SCRIPT_EXHAUSTED = Failure(400, "invalid_request_error", "scripted API: no scripted turn left")


@dataclass(frozen=True)
class RecordedRequest:
    """What the CLI sent, minus the credentials."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: Any
    kind: str  # "main", "side", "rejected" or "other"
    status: int

    @property
    def model(self) -> str | None:
        return self.body.get("model") if isinstance(self.body, dict) else None


_SECRET_HEADERS = {"x-api-key", "authorization", "cookie"}


def is_side_request(body: Mapping[str, Any]) -> bool:
    """A request that is not a turn of the agent loop.

    The agent loop always offers tools. Claude Code 2.1.330 sent no side request in ``-p``
    mode with an API key; older versions asked a small model, without tools, for a session
    title or a quota check, and such a request must not eat a scripted turn.
    """
    return not body.get("tools")


@dataclass
class ScriptedMessagesAPI:
    """The server state: the remaining script, the rules, and the request log."""

    turns: list[Turn | Failure] = field(default_factory=list)
    # When set, requests with another key (x-api-key or Bearer token) get a 401.
    api_key: str | None = None
    # Answer everything with this failure (e.g. ``AUTH_FAILURE``), script untouched.
    fail_all: Failure | None = None
    side_text: str = "Scripted side answer"
    requests: list[RecordedRequest] = field(default_factory=list)
    url: str = ""  # http://127.0.0.1:PORT once started
    # Set whenever a request was recorded, so a test can wait for one without sleeping.
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, *turns: Turn | Failure) -> None:
        self.turns.extend(turns)

    @property
    def main_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind == "main"]

    @property
    def side_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.kind == "side"]

    @property
    def message_requests(self) -> list[RecordedRequest]:
        """Every POST /v1/messages, whatever its answer."""
        return [r for r in self.requests if r.path == "/v1/messages"]

    # --- HTTP -------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)
        app.router.add_route("HEAD", "/api/hello", self._hello)
        app.router.add_route("*", "/{tail:.*}", self._other)
        return app

    def _record(self, request: web.Request, body: Any, kind: str, status: int) -> None:
        headers = {
            k.lower(): ("[REDACTED]" if k.lower() in _SECRET_HEADERS else v)
            for k, v in request.headers.items()
        }
        self.requests.append(
            RecordedRequest(
                request.method, request.path, request.query_string, headers, body, kind, status
            )
        )
        self.changed.set()

    def _auth_failure(self, request: web.Request) -> Failure | None:
        if self.fail_all is not None:
            return self.fail_all
        if self.api_key is None:
            return None
        given = request.headers.get("x-api-key")
        if given is None:
            bearer = request.headers.get("authorization", "")
            given = bearer.removeprefix("Bearer ").strip() or None
        return None if given == self.api_key else AUTH_FAILURE

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            self._record(request, await request.text(), "other", 400)
            error = Failure(400, "invalid_request_error", "scripted API: body is not JSON")
            return web.json_response(error.body(), status=400)
        if not isinstance(body, dict):
            body = {}
        failure = self._auth_failure(request)
        if failure is not None:
            self._record(request, body, "rejected", failure.status)
            return web.json_response(failure.body(), status=failure.status)
        if is_side_request(body):
            self._record(request, body, "side", 200)
            return await self._answer(request, body, Turn(self.side_text, (), 50, 5))
        turn = self.turns.pop(0) if self.turns else SCRIPT_EXHAUSTED
        if isinstance(turn, Failure):
            self._record(request, body, "main", turn.status)
            return web.json_response(turn.body(), status=turn.status)
        self._record(request, body, "main", 200)
        return await self._answer(request, body, turn)

    async def _count_tokens(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body, "other", 200)
        return web.json_response({"input_tokens": 100})

    async def _hello(self, request: web.Request) -> web.Response:
        self._record(request, None, "other", 200)
        return web.Response()

    async def _other(self, request: web.Request) -> web.Response:
        text = await request.text()
        self._record(request, text, "other", 404)
        error = Failure(404, "not_found_error", f"scripted API: no {request.path}")
        return web.json_response(error.body(), status=404)

    async def _answer(
        self, request: web.Request, body: Mapping[str, Any], turn: Turn
    ) -> web.StreamResponse:
        message = _message(body, turn)
        if not body.get("stream"):
            return web.json_response(message, headers={"request-id": f"req_{next(_ids)}"})
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "request-id": f"req_{next(_ids)}",
            }
        )
        await response.prepare(request)
        for event in _stream_events(message):
            await response.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        await response.write_eof()
        return response


_CWD = re.compile(r"Primary working directory: (.+)")


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def working_directory(body: Mapping[str, Any]) -> str | None:
    """The CLI's working directory, from the environment section it sends with every turn."""
    for text in _strings(body):
        match = _CWD.search(text)
        if match:
            return match.group(1).strip()
    return None


def _fill(value: Any, cwd: str | None) -> Any:
    if isinstance(value, str):
        return value.replace("{cwd}", cwd) if cwd is not None else value
    if isinstance(value, Mapping):
        return {key: _fill(item, cwd) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, cwd) for item in value]
    return value


def _message(body: Mapping[str, Any], turn: Turn) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if turn.text is not None:
        content.append({"type": "text", "text": turn.text})
    cwd = working_directory(body)
    for tool_use in turn.tool_uses:
        content.append(
            {
                "type": "tool_use",
                "id": f"toolu_scripted{next(_ids):06d}",
                "name": tool_use.name,
                "input": _fill(tool_use.input, cwd),
            }
        )
    return {
        "id": f"msg_scripted{next(_ids):06d}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "claude-sonnet-4-5"),
        "content": content,
        "stop_reason": turn.stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": turn.input_tokens,
            "output_tokens": turn.output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def _stream_events(message: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """The SSE events of one message, split the way the real API splits them."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None}
    start["usage"] = {**usage, "output_tokens": 1}
    yield {"type": "message_start", "message": start}
    yield {"type": "ping"}
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            }
            text = block["text"]
            for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
                if piece:
                    yield {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "text_delta", "text": piece},
                    }
        else:
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {**block, "input": {}},
            }
            partial = json.dumps(block["input"])
            for piece in (partial[: len(partial) // 2], partial[len(partial) // 2 :]):
                yield {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece},
                }
        yield {"type": "content_block_stop", "index": index}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]},
    }
    yield {"type": "message_stop"}


@asynccontextmanager
async def serve(api: ScriptedMessagesAPI) -> AsyncIterator[ScriptedMessagesAPI]:
    """Serve ``api`` on 127.0.0.1 (random port) for the duration of the block."""
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        api.url = f"http://127.0.0.1:{port}"
        yield api
    finally:
        await runner.cleanup()


def write_file_script(
    name: str = "hello.txt", content: str = "hello", final: str = "Done: wrote hello.txt"
) -> list[Turn | Failure]:
    """The smallest useful agent run: one Write tool call (``{cwd}/name``), then a final text."""
    write = ToolUse("Write", {"file_path": f"{{cwd}}/{name}", "content": content})
    return [Turn(f"I'll write {name}.", (write,)), Turn(final)]


async def _main() -> None:  # pragma: no cover - manual exploration aid
    import sys

    api = ScriptedMessagesAPI(write_file_script(*sys.argv[1:2]))
    async with serve(api):
        print(f"Scripted Messages API on {api.url}", flush=True)
        seen = 0
        while True:
            await api.changed.wait()
            api.changed.clear()
            for req in api.requests[seen:]:
                print(json.dumps({**req.__dict__, "headers": dict(req.headers)}), flush=True)
            seen = len(api.requests)


if __name__ == "__main__":  # pragma: no cover
    asyncio.run(_main())
