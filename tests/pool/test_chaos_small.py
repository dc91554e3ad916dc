"""A small chaos run (``make chaos`` is the big one): faults on the wire, agents that crash,
hang and print garbage, worker processes SIGKILLed and restarted, then a drain.

Every task must end in review or blocked (or todo saying why), no task may ever run twice
at once, and no agent or worker process may be left running. See ``bench/chaos.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import SecretStr

from bench.chaos import ChaosConfig, passed, run_chaos, summary_lines
from bench.chaos_proxy import Faults
from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.pool.recovery import LeaseSweeper
from taskinfa_worker.pool.reporting import TaskReporter
from taskinfa_worker.redact import Redactor
from tests.board_support import BoardHandle
from tests.pool.support import Scene, forward, running_pool, serving, wait_for, worker_settings

SMALL = ChaosConfig(
    seed=7,
    tasks=16,
    workers=2,
    concurrency=2,
    duration=30.0,
    faults=Faults(),  # the same rates as make chaos
    kill_every=(2.0, 4.0),
    restart_after=(0.3, 1.5),
    late_restart_share=0.0,  # the lease path takes LEASE_TIMEOUT: make chaos covers it
    settle=40.0,
    exit_timeout=40.0,
)


async def test_small_chaos_run_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    result = await run_chaos(SMALL, tmp_path)
    report = "\n".join(summary_lines(result))
    details = {
        key: result[key]
        for key in ("duplicates", "problems", "leftover_agents", "workers_alive", "crashes")
    }
    assert passed(result), f"{report}\n{json.dumps(details, indent=1)[:6000]}"
    assert result["agent_runs"] >= SMALL.tasks  # the agents did run
    assert sum(result["faults"].values()) > 0  # and faults were injected
    assert result["person_moves"] > 0  # and a person took running tasks back


# --- a finding of the chaos run, reproduced exactly -------------------------------------------
class HoldingProxy:
    """Between the pool and the board: the first PATCH that sends a task back to todo is
    applied by the board but answered 502 (the answer is lost); the client's retry of it is
    held until the test says so."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removesuffix("/api")
        self.first_applied = asyncio.Event()
        self.release = asyncio.Event()
        self.retry_forwarded = asyncio.Event()
        self.patches = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        is_release = request.method == "PATCH" and b'"todo"' in body
        if is_release:
            self.patches += 1
            if self.patches > 1:
                await self.release.wait()
        elif request.method == "GET" and self.first_applied.is_set():
            # The pool's read-back waits too, so that the other worker's claim comes first.
            await self.release.wait()
        status, payload, content_type = await forward(self.upstream, request, body)
        if is_release and self.patches == 1:
            self.first_applied.set()
            return web.Response(
                status=502, text="<h1>502 Bad Gateway</h1>", content_type="text/html"
            )
        if is_release:
            self.retry_forwarded.set()
        return web.Response(status=status, body=payload, headers={"Content-Type": content_type})


async def test_a_retried_failure_ending_leaves_a_newer_claim_alone(
    board: BoardHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = Scene(tmp_path)
    for name, value in scene.agent_env().items():
        monkeypatch.setenv(name, value)
    proxy = HoldingProxy(board.url)
    async with serving(proxy.handle) as url:
        try:
            task = board.create_task("broken [fail]")
            settings = worker_settings(url, board.api_key, scene, max_attempts=3)
            async with BoardClient(board.url, SecretStr(board.api_key)) as person:
                async with running_pool(settings) as (pool, _):
                    await wait_for(proxy.first_applied.is_set, what="the first failure ending")
                    # Another worker claims the task, back in todo, while the retry waits.
                    assert await person.claim(task["id"], "other-1") is not None
                    proxy.release.set()
                    # The ending's answer was lost; the pool must notice its write landed and
                    # not send it again onto the newer claim.
                    await wait_for(lambda: pool.state.failed == 1, what="the ending to settle")
                    pool.drain()
                assert not proxy.retry_forwarded.is_set()
                final = await person.get_task(task["id"])
            assert final is not None
            assert (final.status, final.assigned_to) == ("in_progress", "other-1")
        finally:
            proxy.release.set()  # never leave a held request waiting


async def test_lease_releases_a_dead_process_task_whose_slot_never_sent_a_heartbeat(
    board: BoardHandle, board_client: BoardClient
) -> None:
    # Process "gone" claimed a task in slot gone-1 and was SIGKILLed before its next
    # heartbeat round: the board knows the process, never the slot. It never comes back
    # under that name (a replaced pod), so only another worker's lease can free the task.
    task = board.create_task("claimed just before a SIGKILL")
    assert await board_client.heartbeat("gone", "idle") is not None
    assert await board_client.claim(task["id"], "gone-1") is not None
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    board.store.backdate(task["id"], "gone", long_ago)
    sweeper = LeaseSweeper(
        board_client, TaskReporter(board_client, Redactor(), 3), {}, 300, "survivor"
    )
    assert await sweeper.sweep()
    final = await board_client.get_task(task["id"])
    assert final is not None
    assert (final.status, final.assigned_to) == ("todo", None)


async def test_a_running_task_moved_back_to_todo_never_runs_twice_in_one_process(
    board: BoardHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = Scene(tmp_path)
    for name, value in scene.agent_env().items():
        monkeypatch.setenv(name, value)
    settings = worker_settings(board.url, board.api_key, scene, concurrency=2)
    task = board.create_task("long [gate]")
    async with BoardClient(board.url, SecretStr(board.api_key)) as person:
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: len(scene.starts(task["id"])) == 1, what="the agent")
            # A person puts the running task back in the queue.
            await person.update_task(task["id"], status="todo", assigned_to=None)
            await wait_for(lambda: len(scene.starts(task["id"])) == 2, what="its next run")
            scene.open_gate()
            await wait_for(lambda: pool.state.completed == 1, what="the task to be done")
            pool.drain()
        scene.assert_no_duplicates()


class ReclaimProxy:
    """The first ending that sends a task back to todo lands but is answered 502; the
    client's read-back before its retry is held until the task has been claimed again."""

    def __init__(self, upstream: str, task_id: str) -> None:
        self.upstream = upstream.removesuffix("/api")
        self.task_path = f"/api/tasks/{task_id}"
        self.ended = asyncio.Event()
        self.claimed_again = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        first_ending = request.method == "PATCH" and b'"todo"' in body and not self.ended.is_set()
        if request.method == "GET" and request.path == self.task_path and self.ended.is_set():
            # Give another slot the chance to claim the task meanwhile (it must not).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.claimed_again.wait(), timeout=1.0)
        status, payload, content_type = await forward(self.upstream, request, body)
        if first_ending:
            self.ended.set()
            return web.Response(status=502, text="<h1>502</h1>", content_type="text/html")
        if request.path == f"{self.task_path}/claim" and status == 200 and self.ended.is_set():
            self.claimed_again.set()
        return web.Response(status=status, body=payload, headers={"Content-Type": content_type})


async def test_a_task_claimed_again_while_its_ending_is_confirmed_keeps_the_pool_alive(
    board: BoardHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scene = Scene(tmp_path)
    for name, value in scene.agent_env().items():
        monkeypatch.setenv(name, value)
    task = board.create_task("broken [fail]")
    proxy = ReclaimProxy(board.url, task["id"])
    async with serving(proxy.handle) as url:
        try:
            settings = worker_settings(url, board.api_key, scene, concurrency=2, max_attempts=2)
            async with running_pool(settings) as (pool, _):
                await wait_for(lambda: pool.state.failed == 2, what="two failed attempts")
                pool.drain()
            assert len(scene.starts(task["id"])) == 2
            scene.assert_no_duplicates()
        finally:
            proxy.claimed_again.set()  # never leave a held request waiting
