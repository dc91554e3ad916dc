"""Headless Chromium (Debian's system package) driven over the DevTools protocol.

No browser is downloaded: the tests use ``/usr/bin/chromium`` (or ``$CHROMIUM``) and skip
with the reason when it is absent. The protocol is spoken over aiohttp's websocket client
(already a dependency), on 127.0.0.1 only, to one fresh profile per browser.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--window-size=1400,900",
)


def chromium_path() -> str | None:
    """The system Chromium, or None when it is not installed."""
    wanted = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    return wanted if Path(wanted).is_file() else shutil.which("chromium")


class Page:
    """One browser tab: navigate, evaluate JavaScript, wait for a condition, screenshot."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self._socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            future = self._pending.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        await self._socket.send_json({"id": call_id, "method": method, "params": params})
        async with asyncio.timeout(30):
            answer = await future
        if "error" in answer:
            raise AssertionError(f"{method} failed: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited); a thrown error fails."""
        result = await self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def goto(self, url: str) -> None:
        """Load ``url``; the page then has ``shown(id)``: whether that element is visible."""
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", what=f"{url} to load")
        await self.evaluate(
            "window.shown = (id) => document.getElementById(id).checkVisibility(); true"
        )

    async def wait_for(self, expression: str, *, timeout: float = 60.0, what: str = "") -> Any:
        """Evaluate until truthy (every 50 ms); fail naming what was awaited."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(AssertionError):
                value = await self.evaluate(expression)
                if value:
                    return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or expression}")
            await asyncio.sleep(0.05)

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))

    async def aclose(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._socket.close()


@contextlib.asynccontextmanager
async def chromium(binary: str, profile: Path) -> AsyncIterator[Page]:
    """A headless Chromium with a fresh profile, and its first tab; killed afterwards."""
    profile.mkdir(parents=True, exist_ok=True)
    log = (profile.parent / "chromium.log").open("wb")
    process = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its renderers and helpers share its process group
    )
    try:
        port = await _devtools_port(profile / "DevToolsActivePort", process)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as response:
                targets = await response.json()
            tab = next(t for t in targets if t["type"] == "page")
            socket = await http.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0)
            page = Page(socket)
            try:
                await page.send("Page.enable")
                await page.send("Runtime.enable")
                yield page
            finally:
                await page.aclose()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()


async def _devtools_port(active_port: Path, process: subprocess.Popen[bytes]) -> int:
    # Chromium writes the port it chose (--remote-debugging-port=0) into the profile.
    async with asyncio.timeout(60):
        while True:
            if process.poll() is not None:
                log = (active_port.parent.parent / "chromium.log").read_text(errors="replace")
                raise AssertionError(f"chromium exited with {process.returncode}:\n{log}")
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                return int(active_port.read_text().splitlines()[0])
            await asyncio.sleep(0.05)
