"""The scripted Messages API answers the way the Anthropic API does, so the real CLI tests
fail because of the worker and not because of their stand-in."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.agent.scripted_messages_api import (
    AUTH_FAILURE,
    Failure,
    ScriptedMessagesAPI,
    ToolUse,
    Turn,
    serve,
    working_directory,
    write_file_script,
)

TOOLS = [{"name": "Write", "description": "write a file", "input_schema": {"type": "object"}}]
HEADERS = {"x-api-key": "sk-ant-test-key", "anthropic-version": "2023-06-01"}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def request_body(*, stream: bool, tools: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "claude-opus-5-5",
        "max_tokens": 1024,
        "stream": stream,
        "messages": [{"role": "user", "content": "write hello.txt"}],
    }
    if tools:
        body["tools"] = TOOLS
    return body


async def read_events(response: aiohttp.ClientResponse) -> list[dict[str, Any]]:
    """Parse an SSE body; each event's ``event:`` name must match its data's type."""
    events = []
    for chunk in (await response.text()).split("\n\n"):
        if not chunk.strip():
            continue
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        data = json.loads(lines["data"])
        assert lines["event"] == data["type"]
        events.append(data)
    return events


def assemble(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Rebuild the message from its stream, the way an SDK client does."""
    message: dict[str, Any] = events[0]["message"]
    partial_json: dict[int, str] = {}
    for event in events[1:]:
        if event["type"] == "content_block_start":
            message["content"].append(event["content_block"])
        elif event["type"] == "content_block_delta":
            block = message["content"][event["index"]]
            delta = event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            else:
                partial_json[event["index"]] = (
                    partial_json.get(event["index"], "") + delta["partial_json"]
                )
        elif event["type"] == "content_block_stop" and event["index"] in partial_json:
            message["content"][event["index"]]["input"] = json.loads(partial_json[event["index"]])
        elif event["type"] == "message_delta":
            message["stop_reason"] = event["delta"]["stop_reason"]
            message["usage"]["output_tokens"] = event["usage"]["output_tokens"]
    return message


async def test_streamed_turns_follow_the_script_in_order(
    session: aiohttp.ClientSession,
) -> None:
    write = ToolUse("Write", {"file_path": "/w/hello.txt", "content": "hello"})
    api = ScriptedMessagesAPI([Turn("Writing.", (write,)), Turn("Done")])
    async with serve(api):
        url = f"{api.url}/v1/messages?beta=true"
        async with session.post(url, json=request_body(stream=True), headers=HEADERS) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            events = await read_events(resp)
        async with session.post(url, json=request_body(stream=True), headers=HEADERS) as resp:
            second = assemble(await read_events(resp))

    types = [e["type"] for e in events]
    assert types[0] == "message_start"
    assert types[-2:] == ["message_delta", "message_stop"]
    assert {"content_block_start", "content_block_delta", "content_block_stop"} <= set(types)
    first = assemble(events)
    assert first["content"][0] == {"type": "text", "text": "Writing."}
    tool_use = first["content"][1]
    assert tool_use["type"] == "tool_use"
    assert tool_use["name"] == "Write"
    assert tool_use["input"] == {"file_path": "/w/hello.txt", "content": "hello"}
    assert tool_use["id"].startswith("toolu_")
    assert first["stop_reason"] == "tool_use"
    assert first["usage"]["output_tokens"] == 40
    assert second["content"] == [{"type": "text", "text": "Done"}]
    assert second["stop_reason"] == "end_turn"
    assert [r.kind for r in api.requests] == ["main", "main"]
    assert api.turns == []


async def test_non_streaming_request_gets_plain_json(session: aiohttp.ClientSession) -> None:
    api = ScriptedMessagesAPI([Turn("Hi")])
    async with serve(api):
        url = f"{api.url}/v1/messages"
        async with session.post(url, json=request_body(stream=False), headers=HEADERS) as resp:
            assert resp.status == 200
            message = await resp.json()
    assert message["type"] == "message"
    assert message["content"] == [{"type": "text", "text": "Hi"}]
    assert message["stop_reason"] == "end_turn"
    assert message["model"] == "claude-opus-5-5"


async def test_side_request_without_tools_keeps_the_script(
    session: aiohttp.ClientSession,
) -> None:
    api = ScriptedMessagesAPI([Turn("Main answer")], side_text="A title")
    async with serve(api):
        url = f"{api.url}/v1/messages"
        body = request_body(stream=False, tools=False)
        async with session.post(url, json=body, headers=HEADERS) as resp:
            side = await resp.json()
    assert side["content"] == [{"type": "text", "text": "A title"}]
    assert len(api.turns) == 1
    assert [r.kind for r in api.requests] == ["side"]


async def test_wrong_key_gets_the_anthropic_401_and_is_recorded_without_it(
    session: aiohttp.ClientSession,
) -> None:
    api = ScriptedMessagesAPI([Turn("never sent")], api_key="sk-ant-the-right-one")
    async with serve(api):
        url = f"{api.url}/v1/messages"
        async with session.post(url, json=request_body(stream=True), headers=HEADERS) as resp:
            assert resp.status == 401
            body = await resp.json()
        right = {**HEADERS, "x-api-key": "sk-ant-the-right-one"}
        async with session.post(url, json=request_body(stream=False), headers=right) as resp:
            assert resp.status == 200
    assert body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
    }
    assert [(r.kind, r.status) for r in api.requests] == [("rejected", 401), ("main", 200)]
    assert api.requests[0].headers["x-api-key"] == "[REDACTED]"
    assert "sk-ant-test-key" not in repr(api.requests)


async def test_fail_all_and_scripted_failures(session: aiohttp.ClientSession) -> None:
    overloaded = Failure(529, "overloaded_error", "Overloaded")
    api = ScriptedMessagesAPI([overloaded, Turn("after")])
    async with serve(api):
        url = f"{api.url}/v1/messages"
        statuses = []
        for _ in range(3):  # the scripted 529, the turn, then nothing left
            async with session.post(url, json=request_body(stream=False), headers=HEADERS) as r:
                statuses.append((r.status, (await r.json()).get("type")))
        api.fail_all = AUTH_FAILURE
        async with session.post(url, json=request_body(stream=False), headers=HEADERS) as r:
            statuses.append((r.status, (await r.json())["error"]["type"]))
    assert statuses == [
        (529, "error"),
        (200, "message"),
        (400, "error"),
        (401, "authentication_error"),
    ]


async def test_probe_and_unknown_paths(session: aiohttp.ClientSession) -> None:
    api = ScriptedMessagesAPI()
    async with serve(api):
        async with session.head(f"{api.url}/api/hello") as resp:
            assert resp.status == 200
        async with session.get(f"{api.url}/v1/models") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["type"] == "not_found_error"
    assert [(r.method, r.path, r.kind) for r in api.requests] == [
        ("HEAD", "/api/hello", "other"),
        ("GET", "/v1/models", "other"),
    ]
    assert api.message_requests == []


async def test_cwd_placeholder_becomes_the_clis_working_directory(
    session: aiohttp.ClientSession,
) -> None:
    api = ScriptedMessagesAPI(write_file_script("notes.txt", content="hi"))
    body = request_body(stream=False)
    # Where Claude Code 2.1.330 says where it runs: a system message after the prompt.
    environment = "# Environment\n - Primary working directory: /work/ws/task 1\n - Platform: linux"
    body["messages"].append({"role": "system", "content": [{"type": "text", "text": environment}]})
    async with serve(api):
        async with session.post(f"{api.url}/v1/messages", json=body, headers=HEADERS) as resp:
            message = await resp.json()
    assert working_directory(body) == "/work/ws/task 1"
    assert message["content"][1]["input"] == {
        "file_path": "/work/ws/task 1/notes.txt",
        "content": "hi",
    }
