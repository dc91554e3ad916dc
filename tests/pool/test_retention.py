"""Log retention while the pool runs: real files in LOG_DIR, a real pool, the local board."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from taskinfa_worker.agent.transcript import Transcript
from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.pool.registry import RunningTasks
from taskinfa_worker.pool.retention import LogRetention, transcript_folder
from taskinfa_worker.pool.state import PoolState
from taskinfa_worker.redact import Redactor
from tests.pool.support import Scene, running_pool, wait_for, worker_settings

KIB = 1024
DAY = 86400.0


def old_file(path: Path, size: int, age: float) -> Path:
    """A file of ``size`` bytes last written ``age`` seconds ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


async def test_the_oldest_go_while_the_worker_keeps_working(board: Any, scene: Scene) -> None:
    settings = worker_settings(
        board.url,
        board.api_key,
        scene,
        concurrency=2,
        log_retention_mb=1,
        log_retention_days=14,
        log_retention_interval=0.05,
    )
    logs = settings.bot_log_dir
    # Earlier runs' transcripts and rotated logs: 8 x 200 KiB = 1.6 MiB, over the 1 MiB cap,
    # from 9 hours old to 1 hour old (all within the age cap), oldest first.
    earlier = [
        old_file(
            transcript_folder(logs, f"task_old{i}") / "attempt-1.jsonl", 200 * KIB, 3600.0 * (9 - i)
        )
        for i in range(6)
    ]
    earlier += [
        old_file(logs / f"worker.2026-01-0{i}_00-00-00_000000.log", 200 * KIB, 3600.0 * (3 - i))
        for i in range(1, 3)
    ]
    expired = old_file(transcript_folder(logs, "task_ancient") / "attempt-1.jsonl", 10, 30 * DAY)
    # The live files are never deleted, however old they look.
    live_log = old_file(logs / "worker.log", 10 * KIB, 30 * DAY)

    async with BoardClient.from_settings(settings) as client:
        gated = await client.create_task("held [gate]", "default", description="[gate]")
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: gated.id in pool.running, what="the gated task runs")
            running_folder = transcript_folder(logs, gated.id)
            await wait_for(lambda: any(running_folder.glob("*.jsonl")), what="its transcript")
            (running,) = running_folder.glob("*.jsonl")
            stamp = time.time() - 30 * DAY
            os.utime(running, (stamp, stamp))  # looks expired, but its task still runs

            await wait_for(lambda: not expired.exists(), what="the expired transcript gone")
            await wait_for(lambda: folder_size(logs) <= 1024 * KIB, what="under the cap")
            # Oldest first: `earlier` runs from the oldest file to the newest, so what went
            # is a prefix of it and what stayed the rest.
            gone = [path for path in earlier if not path.exists()]
            assert gone, "nothing of the 1.6 MiB was pruned"
            assert gone == earlier[: len(gone)]
            assert len(gone) < len(earlier), "more went than the cap asks"
            # Its emptied task folder goes too, right after the file (the pruning thread
            # may be between the two when the file is seen gone).
            await wait_for(lambda: not expired.parent.exists(), what="its emptied folder gone")
            assert live_log.exists()
            assert running.exists()

            # The worker goes on: the held task and two new ones reach review.
            more = [
                await client.create_task(f"after {i}", "default", description="do it")
                for i in range(2)
            ]
            scene.open_gate()
            await wait_for(lambda: pool.state.completed == 3, what="three completions")
        for task in [gated, *more]:
            current = await client.get_task(task.id)
            assert current is not None
            assert current.status == "review"
            assert any(transcript_folder(logs, task.id).glob("*.jsonl")), task.id


def test_a_transcript_whose_folder_the_retention_takes_meanwhile_is_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retention's thread removes an empty task folder between the run's mkdir and its
    open (seen in a fresh-clone CI run: a task reached review with no transcript)."""
    logs = tmp_path / "logs" / "tester"
    retention = LogRetention(
        logs,
        RunningTasks(PoolState("tester", []), Metrics()),
        live=set(),
        max_bytes=1 << 20,
        max_age=3600.0,
        interval=1.0,
    )
    path = transcript_folder(logs, "task_new") / "attempt-1.jsonl"
    real_open = Path.open
    raced: list[Path] = []

    def open_after_a_round(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == path and not raced:
            raced.append(self)
            retention.prune_now(set())  # the round, between the mkdir and the open
            assert not self.parent.exists()
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_after_a_round)
    with Transcript(path, Redactor()) as transcript:
        transcript.note("start", attempt=1)
    monkeypatch.undo()
    assert raced
    assert json.loads(path.read_text().splitlines()[0])["type"] == "taskinfa_start"
