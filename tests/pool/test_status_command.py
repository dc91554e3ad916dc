"""`taskinfa-worker status` as an operator runs it beside a worker process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import anyio
import pytest
from pydantic import SecretStr

from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.settings import Settings
from tests.pool.support import Scene, WorkerProcess, process_env, wait_for


def status_env(scene: Scene) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    return {**base, "BOT_NAME": "watched", "LOG_DIR": str(scene.root / "logs")}


async def status(scene: Scene, *args: str) -> tuple[int, str]:
    argv = [sys.executable, "-m", "taskinfa_worker", "status", *args]
    with anyio.fail_after(60):
        done = await anyio.run_process(argv, env=status_env(scene), check=False)
    return done.returncode, done.stdout.decode() + done.stderr.decode()


@pytest.mark.slow
async def test_status_shows_elapsed_time_then_says_when_the_worker_is_gone(
    board: Any, scene: Scene
) -> None:
    async with BoardClient(board.url, SecretStr(board.api_key)) as client:
        task = await client.create_task("long one [gate]", "default")
    worker = WorkerProcess(
        process_env(board.url, board.api_key, scene, BOT_NAME="watched"),
        ["--concurrency", "2"],
        scene.root / "worker.log",
    )
    try:
        await wait_for(lambda: scene.starts(task.id), what="the agent to start")
        code, text = await status(scene)
        assert code == 0, text
        assert "NOT RUNNING" not in text
        assert re.search(rf"^watched-\d +working +{task.id} +since \S+ \(for \S+", text, re.M)
        assert re.search(r"^watched-\d +idle +- +since \S+ \(for \S+", text, re.M)
        worker.proc.kill()  # SIGKILL: the status file stays as it was
        await worker.wait()
    finally:
        worker.kill()
    code, text = await status(scene)
    assert code == 1
    first = text.splitlines()[0]
    assert first.startswith(f"# NOT RUNNING: the worker watched (pid {worker.proc.pid})")


@pytest.mark.slow
async def test_status_watch_shows_it_again_until_interrupted(board: Any, scene: Scene) -> None:
    worker = WorkerProcess(
        process_env(board.url, board.api_key, scene, BOT_NAME="watched"),
        [],
        scene.root / "worker.log",
    )
    log = scene.root / "watch.log"
    try:
        await wait_for(lambda: (scene.root / "logs" / "watched" / "status.log").exists())
        with log.open("wb") as out:
            watch = subprocess.Popen(
                [sys.executable, "-m", "taskinfa_worker", "status", "--watch", "0.1"],
                env=status_env(scene),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
            try:
                await wait_for(
                    lambda: log.read_text().count("# taskinfa-worker watched") >= 3,
                    what="three refreshes",
                )
            finally:
                watch.kill()
                watch.wait()
    finally:
        worker.kill()
