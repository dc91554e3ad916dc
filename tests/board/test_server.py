"""Running the board: serve_board's output, the API key printed once and kept as a hash
across restarts, and ``taskinfa-worker board`` as a real process."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from taskinfa_worker.board import serve_board
from taskinfa_worker.errors import ConfigError

LISTENING = re.compile(r"^Board listening on (http://127\.0\.0\.1:(\d+)/api)$", re.MULTILINE)
GENERATED = re.compile(r"^Generated API key \(shown once\): (tk_\S+)$", re.MULTILINE)


async def status_with_key(http: aiohttp.ClientSession, url: str, key: str) -> int:
    async with http.get(f"{url}/tasks/next", headers={"Authorization": f"Bearer {key}"}) as r:
        return r.status


@contextlib.asynccontextmanager
async def serving(
    capsys: pytest.CaptureFixture[str], db: Path, api_key: str | None = None
) -> AsyncIterator[tuple[str, str]]:
    """Run serve_board in this loop; yield its URL and everything it printed."""
    task = asyncio.create_task(serve_board(db, "127.0.0.1", 0, api_key, rate_limit=0))
    printed = ""
    try:
        async with asyncio.timeout(10):
            # Wait for the ready line (printing is the only signal serve_board gives).
            while not LISTENING.search(printed):
                if task.done():
                    task.result()
                printed += capsys.readouterr().out
                await asyncio.sleep(0.005)
        match = LISTENING.search(printed)
        assert match is not None
        yield match.group(1), printed
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_key_is_generated_once_and_survives_a_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], http: aiohttp.ClientSession
) -> None:
    db = tmp_path / "board.db"
    async with serving(capsys, db) as (url, printed):
        keys = GENERATED.findall(printed)
        assert len(keys) == 1
        key = keys[0]
        assert printed.index("Generated API key") < printed.index("Board listening")
        assert await status_with_key(http, url, key) == 200
        assert await status_with_key(http, url, "tk_not_it") == 401

    async with serving(capsys, db) as (url, printed):
        assert "Generated API key" not in printed
        assert key not in printed
        assert "only its hash is kept" in printed
        assert await status_with_key(http, url, key) == 200

    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    assert key.encode() not in on_disk


async def test_given_key_is_used_and_never_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], http: aiohttp.ClientSession
) -> None:
    db = tmp_path / "board.db"
    async with serving(capsys, db, api_key="tk_test_chosen_by_me") as (url, printed):
        assert "tk_test_chosen_by_me" not in printed
        assert "Generated API key" not in printed
        assert await status_with_key(http, url, "tk_test_chosen_by_me") == 200
    # A later start without --api-key does not mint a second key: one is stored.
    async with serving(capsys, db) as (url, printed):
        assert "Generated API key" not in printed
        assert await status_with_key(http, url, "tk_test_chosen_by_me") == 200


async def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--api-key"):
        await serve_board(tmp_path / "b.db", "127.0.0.1", 0, "  ", rate_limit=0)
    with pytest.raises(ConfigError, match="--rate-limit"):
        await serve_board(tmp_path / "b.db", "127.0.0.1", 0, None, rate_limit=-1)


@pytest.mark.parametrize("serve", [["board"], ["board", "serve"]], ids=["bare", "serve"])
async def test_board_command_runs_as_a_process(
    tmp_path: Path, http: aiohttp.ClientSession, serve: list[str]
) -> None:
    command = [sys.executable, "-m", "taskinfa_worker", *serve, "--db", str(tmp_path / "b.db")]
    # The profile decides the routes; a flag given with it (--rate-limit) overrides it.
    command += ["--port", "0", "--profile", "v2", "--rate-limit", "7"]
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    printed = ""
    try:
        async with asyncio.timeout(60):
            while not LISTENING.search(printed):
                line = await process.stdout.readline()
                if not line:
                    _, err = await process.communicate()
                    pytest.fail(f"board exited: {printed}{err.decode()}")
                printed += line.decode()
        listening = LISTENING.search(printed)
        generated = GENERATED.search(printed)
        assert listening is not None
        assert generated is not None
        url, key = listening.group(1), generated.group(1)
        headers = {"Authorization": f"Bearer {key}"}
        async with http.get(f"{url}/tasks/next", headers=headers) as response:
            assert response.status == 200
            assert response.headers["X-RateLimit-Limit"] == "7"
        async with http.post(f"{url}/tasks/x/claim", headers=headers, json={}) as response:
            assert response.status == 404  # no release has the claim route
        async with http.get(f"{url}/workers", headers=headers) as response:
            assert response.status == 404  # v2 has no /workers
        async with http.get(f"{url}/sessions", headers=headers) as response:
            assert response.status == 200  # ... but sessions
        assert "Behaving as the v2 release" in printed
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            _, err = await process.communicate()
    assert process.returncode == 0, err.decode()
