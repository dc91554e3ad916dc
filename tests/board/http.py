"""Requests to a local board over real HTTP, and the board's time as its headers show it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy

from tests.board_support import BoardHandle


class Reply:
    """Status, headers and body (parsed JSON, or text when it is not JSON)."""

    def __init__(self, status: int, headers: CIMultiDictProxy[str], text: str) -> None:
        self.status = status
        self.headers = headers
        self.text = text
        self.is_json = headers.get("Content-Type", "").startswith("application/json")
        self.body: Any = json.loads(text) if self.is_json else text

    def __repr__(self) -> str:
        return f"Reply({self.status}, {self.text[:200]!r})"


async def call(
    http: aiohttp.ClientSession,
    board: BoardHandle,
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> Reply:
    """One request; ``body`` as bytes is sent raw, anything else as JSON."""
    kwargs: dict[str, Any] = {"headers": board.headers if headers is None else headers}
    if isinstance(body, bytes):
        kwargs["data"] = body
        kwargs["headers"] = {**kwargs["headers"], "Content-Type": "application/json"}
    elif body is not None:
        kwargs["json"] = body
    if params is not None:
        kwargs["params"] = params
    async with http.request(method, board.url + path, **kwargs) as response:
        return Reply(response.status, response.headers, await response.text())


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
