"""A broken worker must not break the board: its faults cost the task nothing.

The agent executable is missing, the repository host cannot be reached, or the board
does not take the run's ending: every task would fail the same way, so the task goes back
to todo without an attempt counted, with a comment saying the worker is at fault and what
to fix, and the pool stops claiming.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from pydantic import SecretStr

from taskinfa_worker.app import build_pool
from taskinfa_worker.client.api import BoardClient
from taskinfa_worker.errors import EXIT_WORKER_FAULT
from taskinfa_worker.health import readiness
from taskinfa_worker.metrics import Metrics
from taskinfa_worker.redact import Redactor
from tests.pool.support import Scene, forward, running_pool, serving, wait_for, worker_settings


async def comments(client: BoardClient, task_id: str) -> list[str]:
    return [c.content for c in (await client.list_comments(task_id, limit=100)).comments]


async def test_a_missing_agent_releases_the_task_without_an_attempt_and_pauses_claims(
    board: Any, scene: Scene, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-agent"
    settings = worker_settings(
        board.url, board.api_key, scene, agent_command=f"{missing} {{task_id}}", concurrency=1
    )
    async with BoardClient.from_settings(settings) as client:
        first = await client.create_task("first", "default")
        second = await client.create_task("second", "default")
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: pool.state.worker_faults == 1, what="a worker fault")
            reason = readiness(pool.state)
            assert reason is not None
            assert "worker fault" in reason
            assert "no-such-agent" in reason
        task = await client.get_task(first.id)
        assert task is not None
        assert (task.status, task.assigned_to, task.error_count) == ("todo", None, 0)
        notes = await comments(client, first.id)
        released = [n for n in notes if n.startswith("Released:")]
        assert len(released) == 1
        assert "is at fault, not the task" in released[0]
        assert "To fix on the worker: install the agent" in released[0]
        assert "No attempt was counted" in released[0]
        # Claims stopped: the other task was never touched.
        untouched = await client.get_task(second.id)
        assert untouched is not None
        assert (untouched.status, untouched.error_count) == ("todo", 0)
        assert await comments(client, second.id) == []
        assert pool.state.failed == 0


async def test_a_missing_agent_with_exit_when_idle_exits_with_status_4(
    board: Any, scene: Scene, tmp_path: Path
) -> None:
    settings = worker_settings(
        board.url,
        board.api_key,
        scene,
        agent_command=f"{tmp_path / 'gone'} {{task_id}}",
        exit_when_idle=True,
    )
    async with BoardClient.from_settings(settings, Metrics()) as client:
        tasks = [await client.create_task(f"task {i}", "default") for i in range(3)]
        pool = build_pool(settings, client, Metrics(), Redactor(), handle_signals=False)
        with anyio.fail_after(60):
            code = await pool.run()
        assert code == EXIT_WORKER_FAULT
        for task in tasks:
            final = await client.get_task(task.id)
            assert final is not None
            assert (final.status, final.error_count) == ("todo", 0)  # nothing blocked
        assert pool.state.worker_faults == 1


@pytest.mark.parametrize(
    ("line", "code"), [("no-such-program-7f3a", 127), ('"$0.d/not-executable"', 126)]
)
async def test_an_agent_whose_program_cannot_run_is_the_workers_fault(
    board: Any, scene: Scene, tmp_path: Path, line: str, code: int
) -> None:
    """The agent starts but a program it runs is missing (a version manager's shim under
    the sandbox, a tool not installed): exit 127 or 126 would fail every task alike."""
    agent = tmp_path / "agent.sh"
    (tmp_path / "agent.sh.d").mkdir()
    (tmp_path / "agent.sh.d" / "not-executable").write_text("echo hi\n")
    agent.write_text(f'#!/bin/sh\necho working\n{line} "$1"\n')
    agent.chmod(0o755)
    settings = worker_settings(
        board.url, board.api_key, scene, agent_command=f"{agent} {{task_id}}", concurrency=1
    )
    async with BoardClient.from_settings(settings) as client:
        first = await client.create_task("first", "default")
        second = await client.create_task("second", "default")
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: pool.state.worker_faults == 1, what="a worker fault")
        task = await client.get_task(first.id)
        assert task is not None
        assert (task.status, task.assigned_to, task.error_count) == ("todo", None, 0)
        released = [n for n in await comments(client, first.id) if n.startswith("Released:")]
        assert len(released) == 1
        assert f"exited with code {code}" in released[0]
        assert "is at fault, not the task" in released[0]
        assert "not a version manager's shim" in released[0]
        untouched = await client.get_task(second.id)
        assert untouched is not None
        assert (untouched.status, untouched.error_count) == ("todo", 0)
        assert pool.state.failed == 0


async def test_an_unreachable_repository_host_is_the_workers_fault(
    board: Any, scene: Scene
) -> None:
    # `.invalid` never resolves (RFC 2606): git fails on DNS, as when the network is down.
    settings = worker_settings(board.url, board.api_key, scene, max_attempts=1)
    async with BoardClient.from_settings(settings) as client:
        project = await client.create_task_list(
            "remote", repository_url="https://git.example.invalid/team/repo.git"
        )
        task = await client.create_task("clone me", project.id)
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: pool.state.worker_faults == 1, what="a worker fault")
        final = await client.get_task(task.id)
        assert final is not None
        assert (final.status, final.error_count) == ("todo", 0)  # not blocked at 1 attempt
        released = [n for n in await comments(client, task.id) if n.startswith("Released:")]
        assert "network and DNS" in released[0]
        assert scene.starts() == []  # the agent never ran


async def test_a_task_of_its_own_fault_still_counts_attempts(board: Any, scene: Scene) -> None:
    # The contrast: the agent ran and failed, which is the task's (it ends blocked).
    settings = worker_settings(board.url, board.api_key, scene, max_attempts=1)
    async with BoardClient.from_settings(settings) as client:
        task = await client.create_task("broken [fail]", "default")
        async with running_pool(settings) as (pool, _):
            await wait_for(lambda: pool.state.failed == 1, what="a failed attempt")
            assert readiness(pool.state) is None
        final = await client.get_task(task.id)
        assert final is not None
        assert (final.status, final.error_count) == ("blocked", 1)
        assert pool.state.worker_faults == 0


class EndingFaults:
    """Between the pool and the board: the PATCHes that carry ``needle`` (an ending) are
    answered ``status`` by the proxy, ``times`` times (None: always); the rest go through."""

    def __init__(self, upstream: str, needle: bytes, status: int, times: int | None) -> None:
        self.upstream = upstream.removesuffix("/api")
        self.needle = needle
        self.status = status
        self.left = times
        self.refused = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.method == "PATCH" and self.needle in body and self.left != 0:
            self.refused += 1
            if self.left is not None:
                self.left -= 1
            return web.json_response({"error": "the board is failing"}, status=self.status)
        status, payload, content_type = await forward(self.upstream, request, body)
        return web.Response(status=status, body=payload, headers={"Content-Type": content_type})


@pytest.mark.parametrize(
    ("title", "needle", "final_status", "attempts"),
    [("plain work", b'"review"', "review", 0), ("broken [fail]", b'"error_count"', "todo", 1)],
    ids=["success", "failure"],
)
async def test_a_board_down_while_the_ending_is_written_adds_no_attempt(
    board: Any, scene: Scene, title: str, needle: bytes, final_status: str, attempts: int
) -> None:
    proxy = EndingFaults(board.url, needle, 503, times=3)
    async with serving(proxy.handle) as url:
        # A long retry backoff: the failed task is not claimed again before the pool stops,
        # so what the board holds is this one run's ending.
        settings = worker_settings(url, board.api_key, scene, max_attempts=2, retry_backoff=600)
        async with BoardClient(board.url, SecretStr(board.api_key)) as person:
            task = await person.create_task(title, "default")
            async with running_pool(settings) as (pool, _):
                await wait_for(lambda: pool.state.completed + pool.state.failed == 1, what="an end")
                assert readiness(pool.state) is None
            final = await person.get_task(task.id)
    assert proxy.refused == 3
    assert final is not None
    # The ending the agent earned, once the board took it: the board's trouble cost nothing.
    assert (final.status, final.error_count) == (final_status, attempts)
    assert len(scene.starts(task.id)) == 1
    assert pool.state.worker_faults == 0


async def test_a_board_that_refuses_the_ending_is_not_the_tasks_fault(
    board: Any, scene: Scene
) -> None:
    # 422: an answer no retry changes (not a 400 the reporter can answer with less).
    proxy = EndingFaults(board.url, b'"review"', 422, times=None)
    async with serving(proxy.handle) as url:
        settings = worker_settings(url, board.api_key, scene, max_attempts=1)
        async with BoardClient(board.url, SecretStr(board.api_key)) as person:
            task = await person.create_task("plain work", "default")
            async with running_pool(settings) as (pool, _):
                await wait_for(lambda: pool.state.worker_faults == 1, what="a worker fault")
                reason = readiness(pool.state)
                assert reason is not None
                assert "the board did not take a write of this run" in reason
            final = await person.get_task(task.id)
            notes = await comments(person, task.id)
    assert final is not None
    # Back in todo, no attempt counted, not blocked although MAX_ATTEMPTS is 1.
    assert (final.status, final.assigned_to, final.error_count) == ("todo", None, 0)
    (released,) = [n for n in notes if n.startswith("Released:")]
    assert "is at fault, not the task" in released
    assert "422" in released
    assert "To fix on the worker: read the board's log" in released
    assert pool.state.failed == 0
